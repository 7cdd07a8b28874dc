/* Line-prefixing output streams: a FILE whose every line reaches another FILE with a prefix
 * ("[node] ", "web | "), written whole under a lock so that lines from several threads
 * interleave but never mix. Used by fleet runs of streaming verbs and by `logs A B`. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "capsulectl.h"

struct prefixer {
        FILE *dest;
        char *prefix;
        pthread_mutex_t *lock;
        char *line; /* the unfinished line */
        size_t len, cap;
};

static void emit(struct prefixer *p, const char *data, size_t len)
{
        if (p->lock)
                pthread_mutex_lock(p->lock);
        fputs(p->prefix, p->dest);
        fwrite(data, 1, len, p->dest);
        fflush(p->dest);
        if (p->lock)
                pthread_mutex_unlock(p->lock);
}

static ssize_t prefixer_write(void *cookie, const char *buf, size_t size)
{
        struct prefixer *p = cookie;
        size_t done = 0;
        while (done < size) {
                const char *nl = memchr(buf + done, '\n', size - done);
                size_t take = nl ? (size_t)(nl - (buf + done)) + 1 : size - done;
                if (p->len + take > p->cap) {
                        size_t cap = (p->len + take) * 2;
                        char *n = realloc(p->line, cap);
                        if (!n) {
                                errno = ENOMEM;
                                return done ? (ssize_t)done : -1;
                        }
                        p->line = n;
                        p->cap = cap;
                }
                memcpy(p->line + p->len, buf + done, take);
                p->len += take;
                done += take;
                if (nl) {
                        emit(p, p->line, p->len);
                        p->len = 0;
                }
        }
        return (ssize_t)size;
}

static int prefixer_close(void *cookie)
{
        struct prefixer *p = cookie;
        if (p->len > 0) {
                char *n = realloc(p->line, p->len + 1);
                if (n) {
                        p->line = n;
                        p->line[p->len++] = '\n';
                }
                emit(p, p->line, p->len);
        }
        free(p->line);
        free(p->prefix);
        free(p);
        return 0;
}

FILE *ctl_prefix_stream(FILE *dest, const char *prefix, pthread_mutex_t *lock)
{
        struct prefixer *p = calloc(1, sizeof(*p));
        if (!p)
                return NULL;
        p->dest = dest;
        p->lock = lock;
        p->prefix = strdup(prefix);
        if (!p->prefix) {
                free(p);
                return NULL;
        }
        cookie_io_functions_t io = {.write = prefixer_write, .close = prefixer_close};
        FILE *f = fopencookie(p, "w", io);
        if (!f) {
                free(p->prefix);
                free(p);
                return NULL;
        }
        /* unbuffered: the prefixer assembles lines itself, so each reaches dest when complete */
        setvbuf(f, NULL, _IONBF, 0);
        return f;
}
