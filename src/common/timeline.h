/* The boot timeline (`capsulectl health --boot`, bench/boot): named phases with their start and
 * end in milliseconds since the kernel started (CLOCK_BOOTTIME), like systemd-analyze's blame.
 *
 * PID 1 records its phases (kernel, mounts, modules, /perm, network, services) and rewrites
 * TIMELINE_PATH atomically after each one; `capsuled serve` reads that file and adds its own phases
 * (libraries loaded, store and containerd, volumes, reconciler, API answering) from memory. The
 * file is one phase per line, "START_MS END_MS NAME\n", at most TIMELINE_MAX lines; the parser
 * is strict (it reads a file another process writes) and fuzzed (tests/fuzz/fuzz-timeline.c). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define TIMELINE_PATH "/run/capsule/boot-timeline"
#define TIMELINE_MAX 32
#define TIMELINE_NAME_MAX 47

struct timeline_phase {
        int64_t start_ms, end_ms; /* since the kernel started */
        char name[TIMELINE_NAME_MAX + 1];
};

struct timeline {
        struct timeline_phase phases[TIMELINE_MAX];
        size_t n;
};

/* Milliseconds since the kernel started (CLOCK_BOOTTIME). */
int64_t timeline_now_ms(void);
/* Appends phase NAME from start_ms to now; a full timeline or an empty/overlong name is ignored
 * (the timeline is for reading, never a reason to fail a boot). */
void timeline_add(struct timeline *t, const char *name, int64_t start_ms, int64_t end_ms);
/* Writes t to path atomically (temporary file + rename). 0 or -errno. */
int timeline_write(const struct timeline *t, const char *path);
/* Parses the file's text into out (appending). INVALID_ARGUMENT naming the line on a malformed
 * line, a name with control characters, an end before its start, or more than TIMELINE_MAX. */
int timeline_parse(const char *text, size_t len, struct timeline *out, struct cap_error *err);
/* Reads and parses path; -ENOENT (no error set) when it does not exist. */
int timeline_read(const char *path, struct timeline *out, struct cap_error *err);
