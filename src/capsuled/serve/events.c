/* Implementation of the event bus (see events.h). */
#include "events.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/deadline.h"

struct event_bus {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct event_rec ring[EVENTS_RING];
        uint64_t next_seq; /* seq of the next event; events are 1-based */
};

struct event_bus *events_new(void)
{
        struct event_bus *b = calloc(1, sizeof(*b));
        if (!b)
                return NULL;
        pthread_mutex_init(&b->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&b->cond, &ca);
        pthread_condattr_destroy(&ca);
        b->next_seq = 1;
        return b;
}

void events_free(struct event_bus *b)
{
        if (!b)
                return;
        pthread_cond_destroy(&b->cond);
        pthread_mutex_destroy(&b->lock);
        free(b);
}

void events_publish(struct event_bus *b, const char *type, const char *name, const char *action,
                    const char *fmt, ...)
{
        struct event_rec e = {0};
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        e.time_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        snprintf(e.type, sizeof(e.type), "%s", type);
        snprintf(e.name, sizeof(e.name), "%s", name ? name : "");
        snprintf(e.action, sizeof(e.action), "%s", action);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e.message, sizeof(e.message), fmt, ap);
        va_end(ap);
        log_info("event type=%s name=%s action=%s %s", e.type, e.name, e.action, e.message);
        if (!b)
                return;
        pthread_mutex_lock(&b->lock);
        e.seq = b->next_seq++;
        b->ring[e.seq % EVENTS_RING] = e;
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
}

static size_t copy_after(struct event_bus *b, uint64_t after, struct event_rec *out, size_t max)
{
        uint64_t oldest = b->next_seq > EVENTS_RING ? b->next_seq - EVENTS_RING : 1;
        uint64_t from = after + 1 < oldest ? oldest : after + 1;
        size_t n = 0;
        for (uint64_t s = from; s < b->next_seq && n < max; s++)
                out[n++] = b->ring[s % EVENTS_RING];
        return n;
}

size_t events_read(struct event_bus *b, uint64_t after, struct event_rec *out, size_t max, int timeout_ms)
{
        pthread_mutex_lock(&b->lock);
        size_t n = copy_after(b, after, out, max);
        if (n == 0 && timeout_ms > 0) {
                struct timespec dl = deadline_in_ms(CLOCK_MONOTONIC, timeout_ms);
                pthread_cond_timedwait(&b->cond, &b->lock, &dl);
                n = copy_after(b, after, out, max);
        }
        pthread_mutex_unlock(&b->lock);
        return n;
}

uint64_t events_last_seq(struct event_bus *b)
{
        pthread_mutex_lock(&b->lock);
        uint64_t s = b->next_seq - 1;
        pthread_mutex_unlock(&b->lock);
        return s;
}

size_t events_recent_for(struct event_bus *b, const char *type, const char *name, struct event_rec *out,
                         size_t max)
{
        size_t n = 0;
        pthread_mutex_lock(&b->lock);
        uint64_t oldest = b->next_seq > EVENTS_RING ? b->next_seq - EVENTS_RING : 1;
        /* walk newest to oldest, then reverse */
        for (uint64_t s = b->next_seq; s-- > oldest && n < max;) {
                const struct event_rec *e = &b->ring[s % EVENTS_RING];
                if (strcmp(e->type, type) == 0 && strcmp(e->name, name) == 0)
                        out[n++] = *e;
        }
        pthread_mutex_unlock(&b->lock);
        for (size_t i = 0; i < n / 2; i++) {
                struct event_rec t = out[i];
                out[i] = out[n - 1 - i];
                out[n - 1 - i] = t;
        }
        return n;
}

void events_wake_all(struct event_bus *b)
{
        pthread_mutex_lock(&b->lock);
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
}
