/* capsulectl's one progress display for long transfers (image push and pull, update push, volume
 * restore), on stderr. On a terminal: a line redrawn in place at most 10 times a second (bytes,
 * share, rate, time left). Elsewhere: nothing (a script's stderr stays clean), or, in lines mode
 * (update push), one plain line per tenth of the total plus a last one at 100%, in the shape
 * "[##########..........]  50%    12.0/24.0 MiB    8.1 MiB/s ETA 1s" that scripts and the update
 * tests read. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ctl_progress {
        const char *label;
        double t0, last;
        bool tty;        /* stderr is a terminal: redraw in place */
        bool lines;      /* not a terminal, and plain lines were asked for */
        bool drawn;      /* something was written */
        int last_decile; /* lines mode: the last tenth reported */
};

/* lines: print plain lines when stderr is not a terminal (else print nothing there). */
void ctl_progress_init(struct ctl_progress *p, const char *label, bool lines);
/* total 0: unknown yet (no share, no time left; no lines in lines mode). */
void ctl_progress_update(struct ctl_progress *p, uint64_t done, uint64_t total);
/* The transfer finished: the last draw then a newline on a terminal, the 100% line in lines mode. */
void ctl_progress_end(struct ctl_progress *p, uint64_t done, uint64_t total);
/* The transfer failed: ends a line drawn in place, adds nothing else. */
void ctl_progress_abort(struct ctl_progress *p);

/* Pure, for tests: the terminal text ("push  12.3/45.6 MiB  27%  8.1 MiB/s  0:04 left") and a
 * plain line without its newline ("[#####...............]  27%    12.3/45.6 MiB    8.1 MiB/s ETA
 * 4s"; final: ETA 0s). */
void ctl_progress_format(char *buf, size_t len, const char *label, uint64_t done, uint64_t total,
                         double secs);
void ctl_progress_format_line(char *buf, size_t len, uint64_t done, uint64_t total, double secs,
                              bool final);
