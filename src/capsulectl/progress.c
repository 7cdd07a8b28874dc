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

void ctl_progress_format(char *buf, size_t len, const char *label, uint64_t done, uint64_t total,
                         double secs)
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

static void format_eta(double s, char *buf, size_t len)
{
        if (s < 0 || s > 99 * 3600)
                snprintf(buf, len, "--");
        else if (s >= 60)
                snprintf(buf, len, "%dm%02ds", (int)s / 60, (int)s % 60);
        else
                snprintf(buf, len, "%ds", (int)s);
}

void ctl_progress_format_line(char *buf, size_t len, uint64_t done, uint64_t total, double secs,
                              bool final)
{
        double rate = secs > 0 ? (double)done / secs : 0;
        char eta[32];
        format_eta(total && rate > 0 ? (double)(total - done) / rate : -1, eta, sizeof(eta));
        int pct = total ? (int)(done * 100 / total) : 100;
        char bar[21];
        int fill = pct * 20 / 100;
        for (int i = 0; i < 20; i++)
                bar[i] = i < fill ? '#' : '.';
        bar[20] = '\0';
        snprintf(buf, len, "[%s] %3d%% %7.1f/%.1f MiB %6.1f MiB/s ETA %s", bar, pct,
                 (double)done / 1048576.0, (double)total / 1048576.0, rate / 1048576.0,
                 final ? "0s" : eta);
}

void ctl_progress_init(struct ctl_progress *p, const char *label, bool lines)
{
        bool tty = isatty(STDERR_FILENO) == 1;
        *p = (struct ctl_progress){.label = label, .t0 = now_s(), .tty = tty, .lines = lines && !tty};
}

static void draw(struct ctl_progress *p, uint64_t done, uint64_t total)
{
        char line[160];
        ctl_progress_format(line, sizeof(line), p->label, done, total, now_s() - p->t0);
        fprintf(stderr, "\r%-78s", line);
        fflush(stderr);
        p->drawn = true;
}

static void put_line(struct ctl_progress *p, uint64_t done, uint64_t total, bool final)
{
        char line[160];
        ctl_progress_format_line(line, sizeof(line), done, total, now_s() - p->t0, final);
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
        p->drawn = true;
}

void ctl_progress_update(struct ctl_progress *p, uint64_t done, uint64_t total)
{
        if (p->lines) {
                int decile = total ? (int)(done * 10 / total) : 0;
                if (decile > p->last_decile && done < total) {
                        put_line(p, done, total, false);
                        p->last_decile = decile;
                }
                return;
        }
        double now = now_s();
        if (!p->tty || now - p->last < 0.1)
                return;
        p->last = now;
        draw(p, done, total);
}

void ctl_progress_end(struct ctl_progress *p, uint64_t done, uint64_t total)
{
        if (p->lines) {
                put_line(p, done, total, true);
                return;
        }
        if (!p->tty)
                return;
        draw(p, done, total);
        fputc('\n', stderr);
}

void ctl_progress_abort(struct ctl_progress *p)
{
        if (p->tty && p->drawn) {
                fputc('\n', stderr);
                fflush(stderr);
        }
}
