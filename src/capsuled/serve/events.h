/* The event bus: a bounded ring of recent events (workload started/exited, volume created, ...)
 * that handlers publish to and that System.Events streams and `describe` read. Subscribers wait
 * for sequence numbers; a slow subscriber that falls more than the ring behind skips ahead. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define EVENTS_RING 512

struct event_rec {
        uint64_t seq;
        int64_t time_ns;
        char type[16];    /* "workload", "volume", "image", "system" */
        char name[64];
        char action[32];  /* "created", "started", "exited", "backoff", ... */
        char message[256];
};

struct event_bus;

struct event_bus *events_new(void);
void events_free(struct event_bus *bus);
void events_publish(struct event_bus *bus, const char *type, const char *name, const char *action,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Copies events with seq > after into out (at most max), oldest first; returns how many. Waits up
 * to timeout_ms for at least one when none is there (0 = do not wait). */
size_t events_read(struct event_bus *bus, uint64_t after, struct event_rec *out, size_t max, int timeout_ms);
/* The newest sequence number (0 when empty). */
uint64_t events_last_seq(struct event_bus *bus);
/* Up to max most recent events of one object, oldest first. */
size_t events_recent_for(struct event_bus *bus, const char *type, const char *name, struct event_rec *out,
                         size_t max);
/* Wakes every waiting reader (used at shutdown). */
void events_wake_all(struct event_bus *bus);
