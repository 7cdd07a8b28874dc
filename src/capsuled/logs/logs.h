/* Workload logs: one file per workload, ROOT/logs/NAME.log, plus one rotated file NAME.log.1.
 *
 * Writing: containerd's shim starts `capsule-log-writer log-writer PATH` (writer.c as a libc-only
 * program; `capsuled log-writer PATH` where it is not installed) for each task (a binary:// log
 * URI): the task's stdout and stderr arrive on fds 3 and 4; fd 5 is closed to say "ready". The writer
 * lives beside the shim, not in `capsuled serve`, so logs keep flowing while the control plane
 * restarts. Each record is one line:
 *     2026-11-29T21:57:32.262123456Z stdout F the line's text
 * F = a full line (the newline is implied), P = a partial line (longer than LOGS_MAX_LINE, or the
 * stream ended without a newline). When NAME.log passes the size cap it is renamed NAME.log.1
 * (replacing the older one) and a new NAME.log begins: at most two files per workload. A new run
 * of the workload appends, so the previous run's lines stay.
 *
 * Reading: logs_read() parses both files in order for Workloads.Logs (tail, follow). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define LOGS_MAX_LINE (16 * 1024)
#define LOGS_DEFAULT_CAP (10 * 1024 * 1024)

/* Entry point of `capsuled log-writer PATH [CAP_BYTES]` and of capsule-log-writer (writer.c);
 * argv[0] is "log-writer". */
int logwriter_main(int argc, char **argv);

/* ROOT/logs/NAME.log (malloc'd). */
char *logs_path(const char *root, const char *name);
/* Removes both files of a workload (missing files are fine). */
int logs_remove(const char *root, const char *name, struct cap_error *err);

struct log_record {
        int64_t time_ns;
        const char *stream; /* "stdout" or "stderr" */
        const char *data;   /* the text, with "\n" appended for full lines */
        size_t len;
};

/* Called for each record; non-zero stops the walk and is returned by logs_read. */
typedef int (*log_record_fn)(const struct log_record *rec, void *ud);

struct logs_follow {
        /* Called between polls while following; return true to stop (client gone, object deleted). */
        bool (*should_stop)(void *ud);
        void *ud;
};

/* Emits the last `tail` records (tail < 0: all) of NAME.log.1 + NAME.log, then, when follow is
 * non-NULL, keeps emitting new records as they are written (across rotation) until should_stop.
 * A workload with no log file yet yields nothing (and is followed until its file appears). */
int logs_read(const char *path, int64_t tail, const struct logs_follow *follow, log_record_fn fn, void *ud,
              struct cap_error *err);
