/* Prometheus text exposition writer (see expo.h). */
#include "expo.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void expo_init(struct expo *e)
{
        memset(e, 0, sizeof(*e));
}

void expo_free(struct expo *e)
{
        free(e->buf);
        memset(e, 0, sizeof(*e));
}

static void fail(struct expo *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct expo *e, int code, const char *fmt, ...)
{
        if (e->error)
                return;
        e->error = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->why, sizeof(e->why), fmt, ap);
        va_end(ap);
}

static void put(struct expo *e, const char *s, size_t n)
{
        if (e->error)
                return;
        if (e->len + n + 1 > e->cap) {
                size_t cap = e->cap ? e->cap : 4096;
                while (e->len + n + 1 > cap)
                        cap *= 2;
                char *b = realloc(e->buf, cap);
                if (!b) {
                        fail(e, -ENOMEM, "out of memory");
                        return;
                }
                e->buf = b;
                e->cap = cap;
        }
        memcpy(e->buf + e->len, s, n);
        e->len += n;
        e->buf[e->len] = '\0';
}

static void puts_(struct expo *e, const char *s)
{
        put(e, s, strlen(s));
}

bool expo_name_ok(const char *name, bool label)
{
        if (!name || !*name)
                return false;
        for (const char *p = name; *p; p++) {
                char c = *p;
                bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                             (!label && c == ':');
                if (!alpha && !(p > name && c >= '0' && c <= '9'))
                        return false;
        }
        return true;
}

void expo_escape(struct expo *e, const char *s, bool quoted)
{
        const char *run = s;
        for (; *s; s++) {
                const char *rep = NULL;
                if (*s == '\\')
                        rep = "\\\\";
                else if (*s == '\n')
                        rep = "\\n";
                else if (quoted && *s == '"')
                        rep = "\\\"";
                if (!rep)
                        continue;
                put(e, run, (size_t)(s - run));
                puts_(e, rep);
                run = s + 1;
        }
        put(e, run, (size_t)(s - run));
}

void expo_family(struct expo *e, const char *name, enum expo_type type, const char *help)
{
        if (!expo_name_ok(name, false) || strlen(name) >= sizeof(e->family)) {
                fail(e, -EINVAL, "invalid metric name \"%.80s\"", name ? name : "");
                return;
        }
        snprintf(e->family, sizeof(e->family), "%s", name);
        puts_(e, "# HELP ");
        puts_(e, name);
        puts_(e, " ");
        expo_escape(e, help ? help : "", false);
        puts_(e, "\n# TYPE ");
        puts_(e, name);
        puts_(e, type == EXPO_COUNTER ? " counter\n" : " gauge\n");
}

/* name{labels} and the space before the value */
static void sample_head(struct expo *e, const char *const *labels)
{
        if (!e->family[0]) {
                fail(e, -EINVAL, "sample before any family");
                return;
        }
        puts_(e, e->family);
        if (labels && labels[0]) {
                puts_(e, "{");
                for (size_t i = 0; labels[i]; i += 2) {
                        if (!expo_name_ok(labels[i], true) || strncmp(labels[i], "__", 2) == 0) {
                                fail(e, -EINVAL, "%s: invalid label name \"%.60s\"", e->family,
                                     labels[i]);
                                return;
                        }
                        if (!labels[i + 1]) {
                                fail(e, -EINVAL, "%s: label %s has no value", e->family, labels[i]);
                                return;
                        }
                        if (i)
                                puts_(e, ",");
                        puts_(e, labels[i]);
                        puts_(e, "=\"");
                        expo_escape(e, labels[i + 1], true);
                        puts_(e, "\"");
                }
                puts_(e, "}");
        }
        puts_(e, " ");
}

void expo_sample(struct expo *e, const char *const *labels, double value)
{
        char v[64];
        if (isnan(value))
                snprintf(v, sizeof(v), "NaN");
        else if (isinf(value))
                snprintf(v, sizeof(v), "%s", value > 0 ? "+Inf" : "-Inf");
        else if (value == floor(value) && fabs(value) < 9007199254740992.0)
                snprintf(v, sizeof(v), "%.0f", value);
        else
                for (int prec = 15; prec <= 17; prec++) { /* the shortest that reads back */
                        snprintf(v, sizeof(v), "%.*g", prec, value);
                        if (strtod(v, NULL) == value)
                                break;
                }
        sample_head(e, labels);
        puts_(e, v);
        puts_(e, "\n");
}

void expo_sample_u64(struct expo *e, const char *const *labels, uint64_t value)
{
        char v[32];
        snprintf(v, sizeof(v), "%" PRIu64, value);
        sample_head(e, labels);
        puts_(e, v);
        puts_(e, "\n");
}
