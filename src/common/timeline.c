/* The boot timeline: see timeline.h. Plain libc, so PID 1 can link it. */
#include "timeline.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"

int64_t timeline_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int name_ok(const char *name, size_t len)
{
        if (len == 0 || len > TIMELINE_NAME_MAX)
                return 0;
        for (size_t i = 0; i < len; i++)
                if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
                        return 0;
        return 1;
}

void timeline_add(struct timeline *t, const char *name, int64_t start_ms, int64_t end_ms)
{
        if (t->n >= TIMELINE_MAX || !name || !name_ok(name, strlen(name)) || start_ms < 0 ||
            end_ms < start_ms)
                return;
        struct timeline_phase *p = &t->phases[t->n++];
        p->start_ms = start_ms;
        p->end_ms = end_ms;
        snprintf(p->name, sizeof(p->name), "%s", name);
}

int timeline_write(const struct timeline *t, const char *path)
{
        char tmp[256];
        if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
                return -ENAMETOOLONG;
        FILE *f = fopen(tmp, "we");
        if (!f)
                return -errno;
        for (size_t i = 0; i < t->n; i++)
                fprintf(f, "%lld %lld %s\n", (long long)t->phases[i].start_ms,
                        (long long)t->phases[i].end_ms, t->phases[i].name);
        int r = ferror(f) ? -EIO : 0;
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

/* A decimal number of at most 12 digits (a boot of 30 years in ms fits) ending at a space. */
static int take_ms(const char **p, const char *end, int64_t *out)
{
        const char *s = *p;
        int64_t v = 0;
        size_t digits = 0;
        while (s < end && *s >= '0' && *s <= '9' && digits < 13) {
                v = v * 10 + (*s - '0');
                s++;
                digits++;
        }
        if (digits == 0 || digits > 12 || s == end || *s != ' ')
                return -1;
        *p = s + 1;
        *out = v;
        return 0;
}

int timeline_parse(const char *text, size_t len, struct timeline *out, struct cap_error *err)
{
        const char *p = text, *end = text + len;
        for (size_t line = 1; p < end; line++) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                if (!nl)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "boot timeline: line %zu: no end of line", line);
                int64_t a, b;
                if (take_ms(&p, nl, &a) < 0 || take_ms(&p, nl, &b) < 0)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "boot timeline: line %zu: expected \"START_MS "
                                             "END_MS NAME\"",
                                             line);
                if (b < a)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "boot timeline: line %zu: ends before it starts",
                                             line);
                size_t nlen = (size_t)(nl - p);
                if (!name_ok(p, nlen))
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "boot timeline: line %zu: the name must be 1 to %d "
                                             "printable characters",
                                             line, TIMELINE_NAME_MAX);
                if (out->n >= TIMELINE_MAX)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "boot timeline: more than %d phases", TIMELINE_MAX);
                struct timeline_phase *ph = &out->phases[out->n++];
                ph->start_ms = a;
                ph->end_ms = b;
                memcpy(ph->name, p, nlen);
                ph->name[nlen] = '\0';
                p = nl + 1;
        }
        return 0;
}

int timeline_read(const char *path, struct timeline *out, struct cap_error *err)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ENOENT : cap_error_errno(err, -errno, "open %s", path);
        char buf[TIMELINE_MAX * 80];
        size_t n = 0;
        for (;;) {
                ssize_t k = read(fd, buf + n, sizeof(buf) - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return cap_error_errno(err, -errno, "read %s", path);
                if (k == 0)
                        break;
                n += (size_t)k;
                if (n == sizeof(buf))
                        return cap_error_set(err, -EFBIG, CAP_INVALID_ARGUMENT,
                                             "%s: larger than %zu bytes", path, sizeof(buf));
        }
        return timeline_parse(buf, n, out, err);
}
