/* Bounded, timestamped ring of workload output chunks (see logring.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/deadline.h"

#include "logring.h"

int logring_init(struct logring *r, size_t capacity)
{
        memset(r, 0, sizeof(*r));
        r->capacity = capacity ? capacity : 1;
        r->cap_chunks = 64;
        r->chunks = calloc(r->cap_chunks, sizeof(*r->chunks));
        if (!r->chunks)
                return -ENOMEM;
        pthread_condattr_t ca;
        if (pthread_condattr_init(&ca) != 0 ||
            pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
            pthread_cond_init(&r->changed, &ca) != 0) {
                free(r->chunks);
                return -ENOMEM;
        }
        pthread_condattr_destroy(&ca);
        if (pthread_mutex_init(&r->lock, NULL) != 0) {
                pthread_cond_destroy(&r->changed);
                free(r->chunks);
                return -ENOMEM;
        }
        return 0;
}

void logring_destroy(struct logring *r)
{
        for (size_t i = 0; i < r->count; i++)
                free(r->chunks[(r->head + i) % r->cap_chunks]);
        free(r->chunks);
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->changed);
        memset(r, 0, sizeof(*r));
}

static int64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void drop_oldest(struct logring *r)
{
        struct logring_chunk *c = r->chunks[r->head];
        r->chunks[r->head] = NULL;
        r->head = (r->head + 1) % r->cap_chunks;
        r->count--;
        r->bytes -= c->len;
        r->dropped_bytes += c->len;
        free(c);
}

static int grow(struct logring *r)
{
        size_t ncap = r->cap_chunks * 2;
        struct logring_chunk **n = calloc(ncap, sizeof(*n));
        if (!n)
                return -ENOMEM;
        for (size_t i = 0; i < r->count; i++)
                n[i] = r->chunks[(r->head + i) % r->cap_chunks];
        free(r->chunks);
        r->chunks = n;
        r->head = 0;
        r->cap_chunks = ncap;
        return 0;
}

int logring_append(struct logring *r, enum logring_stream stream, const void *data, size_t len,
                   int64_t time_ns)
{
        if (len == 0)
                return 0;
        size_t keep = len > r->capacity ? r->capacity : len;
        struct logring_chunk *c = malloc(sizeof(*c) + keep);
        pthread_mutex_lock(&r->lock);
        if (r->closed) {
                pthread_mutex_unlock(&r->lock);
                free(c);
                return 0;
        }
        if (!c) {
                r->dropped_bytes += len;
                pthread_mutex_unlock(&r->lock);
                return -ENOMEM;
        }
        if (r->count == r->cap_chunks && grow(r) < 0) {
                r->dropped_bytes += len;
                pthread_mutex_unlock(&r->lock);
                free(c);
                return -ENOMEM;
        }
        r->dropped_bytes += len - keep;
        while (r->count && r->bytes + keep > r->capacity)
                drop_oldest(r);
        int64_t t = time_ns ? time_ns : now_ns();
        if (t <= r->last_time_ns)
                t = r->last_time_ns + 1;
        r->last_time_ns = t;
        c->seq = r->next_seq++;
        c->time_ns = t;
        c->stream = stream;
        c->len = keep;
        memcpy(c->data, (const uint8_t *)data + (len - keep), keep);
        r->chunks[(r->head + r->count) % r->cap_chunks] = c;
        r->count++;
        r->bytes += keep;
        pthread_cond_broadcast(&r->changed);
        pthread_mutex_unlock(&r->lock);
        return 0;
}

void logring_close(struct logring *r)
{
        pthread_mutex_lock(&r->lock);
        r->closed = true;
        pthread_cond_broadcast(&r->changed);
        pthread_mutex_unlock(&r->lock);
}

uint64_t logring_tail_seq(struct logring *r, uint64_t tail)
{
        pthread_mutex_lock(&r->lock);
        uint64_t first = r->next_seq - r->count;
        uint64_t s = first;
        if (tail && tail < r->count)
                s = r->next_seq - tail;
        pthread_mutex_unlock(&r->lock);
        return s;
}

int logring_next(struct logring *r, uint64_t *seq, int timeout_ms, struct logring_chunk **out)
{
        struct timespec deadline;
        if (timeout_ms > 0)
                deadline = deadline_in_ms(CLOCK_MONOTONIC, timeout_ms);
        pthread_mutex_lock(&r->lock);
        for (;;) {
                uint64_t first = r->next_seq - r->count;
                if (*seq < first)
                        *seq = first; /* fell behind: resume at the oldest chunk held */
                if (*seq < r->next_seq)
                        break;
                if (r->closed) {
                        r->drained = true;
                        pthread_mutex_unlock(&r->lock);
                        return -EPIPE;
                }
                if (timeout_ms <= 0 ||
                    pthread_cond_timedwait(&r->changed, &r->lock, &deadline) == ETIMEDOUT) {
                        pthread_mutex_unlock(&r->lock);
                        return 0;
                }
        }
        const struct logring_chunk *c =
                r->chunks[(r->head + (size_t)(*seq - (r->next_seq - r->count))) % r->cap_chunks];
        struct logring_chunk *copy = malloc(sizeof(*copy) + c->len);
        if (!copy) {
                pthread_mutex_unlock(&r->lock);
                return -ENOMEM;
        }
        memcpy(copy, c, sizeof(*copy) + c->len);
        *seq = c->seq + 1;
        pthread_mutex_unlock(&r->lock);
        *out = copy;
        return 1;
}

uint64_t logring_dropped(struct logring *r)
{
        pthread_mutex_lock(&r->lock);
        uint64_t d = r->dropped_bytes;
        pthread_mutex_unlock(&r->lock);
        return d;
}

bool logring_drained(struct logring *r)
{
        pthread_mutex_lock(&r->lock);
        bool d = r->drained;
        pthread_mutex_unlock(&r->lock);
        return d;
}
