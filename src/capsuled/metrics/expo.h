/* Prometheus text exposition (format 0.0.4) into a growing buffer: families with their HELP and
 * TYPE lines, then samples with labels escaped as the format says. The writer checks names and
 * that every sample belongs to the family just started, so that a mistake in a collector shows
 * as an error instead of a page Prometheus rejects. Pure logic: no I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum expo_type {
        EXPO_COUNTER,
        EXPO_GAUGE,
};

struct expo {
        char *buf; /* NUL-terminated text so far (NULL until the first write) */
        size_t len, cap;
        char family[128]; /* the family samples go to */
        int error;        /* first error (-ENOMEM, -EINVAL), sticky; 0 = none */
        char why[160];    /* what was wrong, for the log */
};

void expo_init(struct expo *e);
void expo_free(struct expo *e);
/* Starts a family: "# HELP name help" (help escaped: backslash, newline) and "# TYPE name type".
 * Names are [a-zA-Z_:][a-zA-Z0-9_:]*. */
void expo_family(struct expo *e, const char *name, enum expo_type type, const char *help);
/* One sample of the current family. labels: NULL or a NULL-terminated list of name, value
 * pairs ({"workload", "web", "state", "running", NULL}); values are escaped (backslash,
 * double quote, newline). NaN and infinities are written as NaN, +Inf, -Inf. */
void expo_sample(struct expo *e, const char *const *labels, double value);
/* The same with an exact integer value (counters beyond 2^53 stay exact). */
void expo_sample_u64(struct expo *e, const char *const *labels, uint64_t value);
/* True for a valid metric name; label names are the same without ':'. */
bool expo_name_ok(const char *name, bool label);
/* Appends text (a help or label value) escaped for the format: `\` -> `\\`, newline -> `\n`,
 * and when quoted also `"` -> `\"`. */
void expo_escape(struct expo *e, const char *s, bool quoted);
