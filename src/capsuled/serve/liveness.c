/* serve's sign of life for PID 1 (issue 11 item 14: a deadlocked serve used to be left alone as
 * long as its process existed).
 *
 * When PID 1 starts serve it passes the write end of a pipe and its number in
 * $CAPSULE_LIVENESS_FD. A thread here checks, every LIVENESS_EVERY_MS, what every API call
 * depends on, and writes one byte to the pipe when all of it works:
 *   - the store: its lock taken within LIVENESS_STORE_MS and a trivial query run (store_ping);
 *   - the API: not every rpc pool thread has been inside a handler for LIVENESS_RPC_STUCK_MS
 *     (rpc_server_stuck_ms), i.e. calls are still being picked up.
 * PID 1 (init/supervise.c) kills serve when the bytes stop for its liveness timeout and restarts
 * it; repeated kills reboot the machine. A failing check is logged once when it starts failing
 * and once when it recovers. Without $CAPSULE_LIVENESS_FD (host mode, tests) nothing runs.
 *
 * CAPSULE_FAULT=stall:store (common/fault.h) makes a thread take the store's lock for good
 * LIVENESS_STALL_AFTER_MS after start: the API answers until then and hangs after, as a real
 * deadlock would; the e2e scenario `liveness` uses it. */
#include "liveness.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/deadline.h"
#include "common/fault.h"
#include "common/log.h"

#define LIVENESS_EVERY_MS 2000
#define LIVENESS_STORE_MS 5000
#define LIVENESS_RPC_STUCK_MS 30000
#define LIVENESS_STALL_AFTER_MS 8000

struct liveness {
        struct store *store;
        struct rpc_server *rpc; /* __atomic: set once the API is started */
        int fd;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond; /* CLOCK_MONOTONIC */
        bool stop;
};

/* Sleeps ms or until liveness_stop; returns true when stopping. */
static bool nap(struct liveness *l, int ms)
{
        struct timespec until = deadline_in_ms(CLOCK_MONOTONIC, ms);
        pthread_mutex_lock(&l->lock);
        while (!l->stop && pthread_cond_timedwait(&l->cond, &l->lock, &until) != ETIMEDOUT)
                ;
        bool stop = l->stop;
        pthread_mutex_unlock(&l->lock);
        return stop;
}

static void *stall_main(void *arg)
{
        struct store *st = arg;
        struct timespec ts = {.tv_sec = LIVENESS_STALL_AFTER_MS / 1000};
        nanosleep(&ts, NULL);
        log_warn("liveness: CAPSULE_FAULT=stall:store: holding the store's lock for good (test seam)");
        store_fault_hold_lock(st);
        for (;;)
                pause();
        return NULL;
}

static void *liveness_main(void *arg)
{
        struct liveness *l = arg;
        bool store_bad = false, rpc_bad = false;
        do {
                int r = store_ping(l->store, LIVENESS_STORE_MS);
                if ((r < 0) != store_bad) {
                        store_bad = r < 0;
                        if (store_bad)
                                log_warn("liveness: the store did not answer within %d ms (%s): "
                                         "no sign of life to PID 1 until it does",
                                         LIVENESS_STORE_MS, strerror(-r));
                        else
                                log_info("liveness: the store answers again");
                }
                int64_t stuck = rpc_server_stuck_ms(__atomic_load_n(&l->rpc, __ATOMIC_ACQUIRE));
                if ((stuck >= LIVENESS_RPC_STUCK_MS) != rpc_bad) {
                        rpc_bad = stuck >= LIVENESS_RPC_STUCK_MS;
                        if (rpc_bad)
                                log_warn("liveness: every API thread has been inside a call for "
                                         "%lld ms: no sign of life to PID 1 until one is free",
                                         (long long)stuck);
                        else
                                log_info("liveness: the API picks up calls again");
                }
                if (!store_bad && !rpc_bad && write(l->fd, "+", 1) < 0 && errno != EAGAIN &&
                    errno != EINTR)
                        log_warn("liveness: write to PID 1: %s", strerror(errno));
        } while (!nap(l, LIVENESS_EVERY_MS));
        return NULL;
}

struct liveness *liveness_start(struct store *st)
{
        const char *v = getenv("CAPSULE_LIVENESS_FD");
        if (!v)
                return NULL;
        char *end;
        long fd = strtol(v, &end, 10);
        unsetenv("CAPSULE_LIVENESS_FD"); /* not for serve's children */
        if (*v == '\0' || *end != '\0' || fd < 3 || fd > 1023 || fcntl((int)fd, F_GETFD) < 0) {
                log_warn("liveness: CAPSULE_LIVENESS_FD=%s is not an open descriptor; PID 1 will "
                         "see no sign of life", v);
                return NULL;
        }
        /* never inherited by QEMU, shims or helpers; never blocks serve */
        fcntl((int)fd, F_SETFD, FD_CLOEXEC);
        fcntl((int)fd, F_SETFL, fcntl((int)fd, F_GETFL) | O_NONBLOCK);
        struct liveness *l = calloc(1, sizeof(*l));
        if (!l)
                return NULL;
        l->store = st;
        l->fd = (int)fd;
        pthread_mutex_init(&l->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&l->cond, &ca);
        pthread_condattr_destroy(&ca);
        if (pthread_create(&l->thread, NULL, liveness_main, l) != 0) {
                log_warn("liveness: thread: %s", strerror(errno));
                pthread_cond_destroy(&l->cond);
                pthread_mutex_destroy(&l->lock);
                close(l->fd);
                free(l);
                return NULL;
        }
        log_info("liveness: a sign of life to PID 1 every %d ms while the store and the API answer",
                 LIVENESS_EVERY_MS);
        if (fault_stall("store")) {
                pthread_t t;
                if (pthread_create(&t, NULL, stall_main, st) == 0)
                        pthread_detach(t);
        }
        return l;
}

void liveness_watch_rpc(struct liveness *l, struct rpc_server *srv)
{
        if (l)
                __atomic_store_n(&l->rpc, srv, __ATOMIC_RELEASE);
}

void liveness_stop(struct liveness *l)
{
        if (!l)
                return;
        pthread_mutex_lock(&l->lock);
        l->stop = true;
        pthread_cond_signal(&l->cond);
        pthread_mutex_unlock(&l->lock);
        pthread_join(l->thread, NULL);
        pthread_cond_destroy(&l->cond);
        pthread_mutex_destroy(&l->lock);
        close(l->fd);
        free(l);
}
