/* See progress.h. */
#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void ctl_progress_format(char *buf, size_t len, const char *label, uint64_t done, uint64_t total, double secs)
{
        double mib = (double)done / (1 << 20), rate = secs > 0.05 ? mib / secs : 0;
        int n = snprintf(buf, len, "%s%s%.1f", label ? label : "", label ? "  " : "", mib);
        if (total)
                n += snprintf(buf + n, len > (size_t)n ? len - (size_t)n : 0, "/%.1f MiB %3d%%",
                              (double)total / (1 << 20), (int)(done >= total ? 100 : done * 100 / total));
        else
                n += snprintf(buf + n, len > (size_t)n ? len - (size_t)n : 0, " MiB");
        n += snprintf(buf + n, len > (size_t)n ? len - (size_t)n : 0, "  %.1f MiB/s", rate);
        if (total && done < total && rate > 0) {
                long left = (long)(((double)(total - done) / (1 << 20)) / rate + 0.5);
                snprintf(buf + n, len > (size_t)n ? len - (size_t)n : 0, "  %ld:%02ld left", left / 60, left % 60);
        }
}

void ctl_progress_init(struct ctl_progress *p, const char *label)
{
        *p = (struct ctl_progress){.label = label, .t0 = now_s(), .tty = isatty(STDERR_FILENO) == 1};
}

static void draw(struct ctl_progress *p, uint64_t done, uint64_t total)
{
        char line[160];
        ctl_progress_format(line, sizeof(line), p->label, done, total, now_s() - p->t0);
        fprintf(stderr, "\r%-78s", line);
        fflush(stderr);
        p->drawn = true;
}

void ctl_progress_update(struct ctl_progress *p, uint64_t done, uint64_t total)
{
        double now = now_s();
        if (!p->tty || now - p->last < 0.1)
                return;
        p->last = now;
        draw(p, done, total);
}

void ctl_progress_end(struct ctl_progress *p, uint64_t done, uint64_t total)
{
        if (!p->tty)
                return;
        draw(p, done, total);
        fputc('\n', stderr);
}
