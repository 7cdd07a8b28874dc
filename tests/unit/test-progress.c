/* Unit tests for capsulectl's progress text (src/capsulectl/progress.c): the terminal bar and the
 * plain lines update push writes when stderr is not a terminal (tests/e2e/e2e_update.py reads
 * "[##########" and "50%" from them, tests/integration/test_updates.py "100%"). */
#include <string.h>

#include "progress.h"
#include "test.h"

TEST(format)
{
        char b[160];
        ctl_progress_format(b, sizeof(b), "pull", 10u << 20, 40u << 20, 2.0);
        CHECK_STR_EQ(b, "pull  10.0/40.0 MiB  25%  5.0 MiB/s  0:06 left");
        ctl_progress_format(b, sizeof(b), "push", 40u << 20, 40u << 20, 4.0);
        CHECK_STR_EQ(b, "push  40.0/40.0 MiB 100%  10.0 MiB/s");
        ctl_progress_format(b, sizeof(b), NULL, 3u << 20, 0, 0.0); /* total unknown, no time yet */
        CHECK_STR_EQ(b, "3.0 MiB  0.0 MiB/s");
        ctl_progress_format(b, sizeof(b), "x", 1u << 20, 601u << 20, 1.0);
        CHECK_CONTAINS(b, "10:00 left");
        ctl_progress_format(b, 8, "label", 1, 2, 1.0); /* truncated, never overrun */
        CHECK(strlen(b) == 7);
}

TEST(format_line)
{
        char b[160];
        ctl_progress_format_line(b, sizeof(b), 12u << 20, 24u << 20, 2.0, false);
        CHECK_STR_EQ(b, "[##########..........]  50%    12.0/24.0 MiB    6.0 MiB/s ETA 2s");
        ctl_progress_format_line(b, sizeof(b), 24u << 20, 24u << 20, 3.0, true);
        CHECK_STR_EQ(b, "[####################] 100%    24.0/24.0 MiB    8.0 MiB/s ETA 0s");
        ctl_progress_format_line(b, sizeof(b), 1u << 20, 100u << 20, 1.0, false);
        CHECK_STR_EQ(b, "[....................]   1%     1.0/100.0 MiB    1.0 MiB/s ETA 1m39s");
        ctl_progress_format_line(b, sizeof(b), 5u << 20, 0, 0.0, true); /* size unknown */
        CHECK_STR_EQ(b, "[####################] 100%     5.0/0.0 MiB    0.0 MiB/s ETA 0s");
        ctl_progress_format_line(b, 10, 1, 2, 1.0, false); /* truncated, never overrun */
        CHECK(strlen(b) == 9);
}

int main(void)
{
        RUN(format);
        RUN(format_line);
        return test_summary();
}
