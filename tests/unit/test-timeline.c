/* The boot timeline (src/common/timeline.c): what PID 1 writes serve reads back; bad phases are
 * dropped on add; a malformed file is refused naming the line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "timeline.h"
#include "test.h"

TEST(write_then_read)
{
        struct timeline t = {0};
        timeline_add(&t, "kernel", 0, 2614);
        timeline_add(&t, "init: kernel modules", 2614, 3900);
        timeline_add(&t, "", 1, 2);             /* empty name: dropped */
        timeline_add(&t, "bad\nname", 1, 2);    /* control character: dropped */
        timeline_add(&t, "backwards", 9, 3);    /* ends before it starts: dropped */
        CHECK(t.n == 2);
        char path[] = "/tmp/capsule-timeline-XXXXXX";
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        close(fd);
        CHECK(timeline_write(&t, path) == 0);
        struct timeline back = {0};
        struct cap_error err = {0};
        CHECK(timeline_read(path, &back, &err) == 0);
        CHECK(back.n == 2);
        CHECK_STR_EQ(back.phases[1].name, "init: kernel modules");
        CHECK(back.phases[1].start_ms == 2614 && back.phases[1].end_ms == 3900);
        unlink(path);
        CHECK(timeline_read(path, &back, &err) == -ENOENT);
        CHECK(timeline_now_ms() > 0);
}

TEST(full_timeline_drops_more)
{
        struct timeline t = {0};
        for (int i = 0; i < TIMELINE_MAX + 5; i++)
                timeline_add(&t, "phase", i, i + 1);
        CHECK(t.n == TIMELINE_MAX);
}

static void expect_bad(const char *text, const char *want)
{
        struct timeline t = {0};
        struct cap_error err = {0};
        CHECK(timeline_parse(text, strlen(text), &t, &err) < 0);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.msg, want);
}

TEST(malformed)
{
        expect_bad("1 2 ok\n3 x name\n", "line 2: expected \"START_MS END_MS NAME\"");
        expect_bad("5 3 backwards\n", "line 1: ends before it starts");
        expect_bad("1 2 no end", "line 1: no end of line");
        expect_bad("1 2 \x01\n", "line 1: the name must be 1 to 47 printable characters");
        expect_bad("1 2 \n", "line 1: the name must be");
        expect_bad("-1 2 negative\n", "line 1: expected");
        expect_bad("1234567890123 1234567890124 too long\n", "line 1: expected");
        char many[TIMELINE_MAX * 16 + 32] = "";
        for (int i = 0; i <= TIMELINE_MAX; i++)
                strcat(many, "1 2 p\n");
        expect_bad(many, "more than 32 phases");
}

int main(void)
{
        RUN(write_then_read);
        RUN(full_timeline_drops_more);
        RUN(malformed);
        return test_summary();
}
