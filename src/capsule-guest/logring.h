/* The guest's bounded log ring: the workload's stdout/stderr as timestamped chunks, at most
 * `capacity` bytes of data; when full, the oldest whole chunks are dropped and their bytes
 * counted. Readers (the Logs RPC) walk it by sequence number, so a slow reader that falls behind
 * simply resumes at the oldest chunk still held. Thread-safe. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum logring_stream { LOGRING_STDOUT = 1, LOGRING_STDERR = 2 };

struct logring_chunk {
        uint64_t seq;
        int64_t time_ns; /* CLOCK_REALTIME, strictly increasing along the ring */
        enum logring_stream stream;
        size_t len;
        uint8_t data[]; /* len bytes */
};

struct logring {
        pthread_mutex_t lock;
        pthread_cond_t changed;
        size_t capacity;                /* bytes of data held at most */
        size_t bytes;                   /* bytes of data held now */
        struct logring_chunk **chunks;  /* circular: chunks[(head + i) % cap_chunks] */
        size_t head, count, cap_chunks;
        uint64_t next_seq;              /* seq of the next appended chunk */
        int64_t last_time_ns;
        uint64_t dropped_bytes;
        bool closed;                    /* no more chunks will come (the workload's output ended) */
        bool drained;                   /* a reader reached the end after closing */
};

int logring_init(struct logring *r, size_t capacity);
void logring_destroy(struct logring *r);

/* Appends one chunk (copied) stamped with time_ns (0 = now); a chunk larger than the capacity
 * keeps only its last `capacity` bytes. Returns 0 or -ENOMEM (the chunk is then counted as
 * dropped). Ignored after logring_close. */
int logring_append(struct logring *r, enum logring_stream stream, const void *data, size_t len,
                   int64_t time_ns);

/* Marks the end of the output and wakes every waiting reader. */
void logring_close(struct logring *r);

/* The seq a reader starts at to get the last `tail` chunks (0 = everything held). */
uint64_t logring_tail_seq(struct logring *r, uint64_t tail);

/* Copies the first chunk with seq >= *seq into a malloc'd *out (caller frees) and advances *seq
 * past it. Returns 1 with a chunk, 0 if there is none yet, -EPIPE if there is none and the ring
 * is closed (and then marks it drained), -ENOMEM. Waits up to timeout_ms for a chunk or the close
 * (0 = do not wait). */
int logring_next(struct logring *r, uint64_t *seq, int timeout_ms, struct logring_chunk **out);

uint64_t logring_dropped(struct logring *r);
bool logring_drained(struct logring *r);
