/* capsule-guest's bounded log ring (src/capsule-guest/logring.c): wrap-around, drop counting,
 * tail, timestamps, close and follow. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logring.h"
#include "test.h"

static int next(struct logring *r, uint64_t *seq, char *out, size_t size)
{
        struct logring_chunk *c = NULL;
        int k = logring_next(r, seq, 0, &c);
        if (k == 1) {
                size_t n = c->len < size - 1 ? c->len : size - 1;
                memcpy(out, c->data, n);
                out[n] = '\0';
                free(c);
        }
        return k;
}

TEST(append_and_read)
{
        struct logring r;
        CHECK(logring_init(&r, 1024) == 0);
        CHECK(logring_append(&r, LOGRING_STDOUT, "out\n", 4, 0) == 0);
        CHECK(logring_append(&r, LOGRING_STDERR, "err\n", 4, 0) == 0);
        uint64_t seq = logring_tail_seq(&r, 0);
        struct logring_chunk *a = NULL, *b = NULL, *c = NULL;
        CHECK(logring_next(&r, &seq, 0, &a) == 1);
        CHECK(logring_next(&r, &seq, 0, &b) == 1);
        CHECK(logring_next(&r, &seq, 0, &c) == 0);
        CHECK(a && a->stream == LOGRING_STDOUT && a->len == 4 && memcmp(a->data, "out\n", 4) == 0);
        CHECK(b && b->stream == LOGRING_STDERR);
        CHECK(a && b && a->time_ns < b->time_ns);
        free(a);
        free(b);
        logring_destroy(&r);
}

TEST(wrap_and_drop)
{
        struct logring r;
        CHECK(logring_init(&r, 100) == 0);
        char chunk[30];
        for (int i = 0; i < 200; i++) { /* also grows past the first chunk array */
                memset(chunk, 'a' + i % 26, sizeof(chunk));
                CHECK(logring_append(&r, LOGRING_STDOUT, chunk, sizeof(chunk), 0) == 0);
        }
        /* 3 chunks of 30 fit in 100: 197 whole chunks dropped */
        CHECK(logring_dropped(&r) == 197 * 30);
        uint64_t seq = 0; /* far behind: resumes at the oldest held */
        char buf[64];
        int n = 0;
        while (next(&r, &seq, buf, sizeof(buf)) == 1)
                n++;
        CHECK(n == 3);
        CHECK(buf[0] == 'a' + 199 % 26);
        /* a chunk bigger than the ring keeps its tail */
        char big[250];
        memset(big, 'x', sizeof(big));
        big[249] = 'E';
        CHECK(logring_append(&r, LOGRING_STDERR, big, sizeof(big), 0) == 0);
        CHECK(logring_dropped(&r) == 197 * 30 + 90 + 150);
        seq = logring_tail_seq(&r, 0);
        struct logring_chunk *c = NULL;
        CHECK(logring_next(&r, &seq, 0, &c) == 1);
        CHECK(c && c->len == 100 && c->data[99] == 'E');
        free(c);
        logring_destroy(&r);
}

TEST(tail)
{
        struct logring r;
        CHECK(logring_init(&r, 1 << 20) == 0);
        char line[16];
        for (int i = 0; i < 10; i++) {
                int n = snprintf(line, sizeof(line), "line %d\n", i);
                logring_append(&r, LOGRING_STDOUT, line, (size_t)n, 0);
        }
        uint64_t seq = logring_tail_seq(&r, 3);
        char buf[32];
        CHECK(next(&r, &seq, buf, sizeof(buf)) == 1);
        CHECK_STR_EQ(buf, "line 7\n");
        seq = logring_tail_seq(&r, 100);
        CHECK(next(&r, &seq, buf, sizeof(buf)) == 1);
        CHECK_STR_EQ(buf, "line 0\n");
        logring_destroy(&r);
}

TEST(timestamps_ordered)
{
        struct logring r;
        CHECK(logring_init(&r, 4096) == 0);
        logring_append(&r, LOGRING_STDOUT, "a", 1, 5000);
        logring_append(&r, LOGRING_STDOUT, "b", 1, 4000); /* clock stepped back */
        logring_append(&r, LOGRING_STDOUT, "c", 1, 5000);
        logring_append(&r, LOGRING_STDOUT, "d", 1, 0);
        uint64_t seq = 0;
        int64_t last = 0;
        struct logring_chunk *c;
        while (logring_next(&r, &seq, 0, &c) == 1) {
                CHECK(c->time_ns > last);
                last = c->time_ns;
                free(c);
        }
        logring_destroy(&r);
}

static void *late_writer(void *arg)
{
        usleep(50000);
        logring_append(arg, LOGRING_STDOUT, "late", 4, 0);
        usleep(50000);
        logring_close(arg);
        return NULL;
}

TEST(follow_and_close)
{
        struct logring r;
        CHECK(logring_init(&r, 4096) == 0);
        pthread_t t;
        CHECK(pthread_create(&t, NULL, late_writer, &r) == 0);
        uint64_t seq = logring_tail_seq(&r, 0);
        struct logring_chunk *c = NULL;
        int k;
        while ((k = logring_next(&r, &seq, 1000, &c)) == 0)
                ;
        CHECK(k == 1 && c && c->len == 4);
        free(c);
        CHECK(!logring_drained(&r));
        while ((k = logring_next(&r, &seq, 1000, &c)) == 0)
                ;
        CHECK(k == -EPIPE);
        CHECK(logring_drained(&r));
        pthread_join(t, NULL);
        CHECK(logring_append(&r, LOGRING_STDOUT, "after", 5, 0) == 0); /* ignored */
        CHECK(logring_next(&r, &seq, 0, &c) == -EPIPE);
        logring_destroy(&r);
}

int main(void)
{
        RUN(append_and_read);
        RUN(wrap_and_drop);
        RUN(tail);
        RUN(timestamps_ordered);
        RUN(follow_and_close);
        return test_summary();
}
