/* A progress bar on stderr for long transfers (image push and pull, update push): bytes, share,
 * rate and time left, redrawn at most 10 times a second, only when stderr is a terminal (a
 * script's stderr stays clean). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ctl_progress {
        const char *label;
        double t0, last;
        bool tty;
        bool drawn;
};

void ctl_progress_init(struct ctl_progress *p, const char *label);
/* total 0: unknown yet (no share, no time left). */
void ctl_progress_update(struct ctl_progress *p, uint64_t done, uint64_t total);
/* The last draw, then a newline (only if something was drawn). */
void ctl_progress_end(struct ctl_progress *p, uint64_t done, uint64_t total);
/* Pure: the bar's text ("12.3/45.6 MiB  27%  8.1 MiB/s  0:04 left"), for tests. */
void ctl_progress_format(char *buf, size_t len, const char *label, uint64_t done, uint64_t total, double secs);
