/* Unit tests for capsulectl's progress bar text (src/capsulectl/progress.c). */
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

int main(void)
{
        RUN(format);
        return test_summary();
}
