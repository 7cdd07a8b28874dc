/* Implementation of the stopper (see stopper.h). Jobs sit in one list under one lock, queued ones
 * after running ones in no particular order; worker threads are created on demand (detached) up
 * to the parallel bound, each takes queued jobs until none is left and then ends. Job lists are
 * short (the workloads of one capsule), so lookups by name are linear. */
#include "stopper.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/thread.h"
#include "driver/driver.h"

struct stop_job {
        char name[64];
        struct workload_driver *drv;
        int grace_ms;
        unsigned flags;
        bool running;
        struct stop_job *next;
};

struct stopper {
        pthread_mutex_t lock;
        pthread_cond_t cond; /* a job finished or a worker ended (CLOCK_MONOTONIC) */
        struct stop_job *jobs;
        unsigned parallel, workers;
        bool closing;
        unsigned long epoch;
        stopper_release_fn release;
        stopper_finished_fn finished;
        void *ud;
};

struct stopper *stopper_new(stopper_release_fn release, stopper_finished_fn finished, void *ud,
                            struct cap_error *err)
{
        struct stopper *s = calloc(1, sizeof(*s));
        if (!s) {
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        pthread_mutex_init(&s->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&s->cond, &ca);
        pthread_condattr_destroy(&ca);
        s->parallel = STOPPER_PARALLEL;
        s->release = release;
        s->finished = finished;
        s->ud = ud;
        return s;
}

/* Under s->lock. */
static struct stop_job *job_find(struct stopper *s, const char *name)
{
        for (struct stop_job *j = s->jobs; j; j = j->next)
                if (strcmp(j->name, name) == 0)
                        return j;
        return NULL;
}

/* Under s->lock: the first queued job, now marked running, or NULL. */
static struct stop_job *job_take(struct stopper *s)
{
        if (s->closing)
                return NULL;
        for (struct stop_job *j = s->jobs; j; j = j->next)
                if (!j->running) {
                        j->running = true;
                        return j;
                }
        return NULL;
}

static int64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void job_run(struct stopper *s, const struct stop_job *j)
{
        struct cap_error err = {0};
        int64_t t0 = mono_ms();
        if (j->drv->ops->stop(j->drv, j->name, j->grace_ms, NULL, &err) < 0) {
                log_warn("stop %s: %s", j->name, err.msg);
                cap_error_clear(&err);
        }
        int64_t t1 = mono_ms();
        if ((j->flags & STOPPER_REMOVE) && j->drv->ops->remove(j->drv, j->name, &err) < 0)
                log_warn("remove %s %s: %s", j->drv->noun, j->name, err.msg);
        int64_t t2 = mono_ms();
        if (s->release)
                s->release(j->name, j->drv, j->flags, s->ud);
        log_debug("stopped %s: stop %lld ms (grace %d ms), remove %lld ms, release %lld ms", j->name,
                  (long long)(t1 - t0), j->grace_ms, (long long)(t2 - t1), (long long)(mono_ms() - t2));
}

static void *worker(void *arg)
{
        struct stopper *s = arg;
        pthread_mutex_lock(&s->lock);
        for (struct stop_job *j; (j = job_take(s));) {
                pthread_mutex_unlock(&s->lock);
                job_run(s, j);
                pthread_mutex_lock(&s->lock);
                for (struct stop_job **pp = &s->jobs; *pp; pp = &(*pp)->next)
                        if (*pp == j) {
                                *pp = j->next;
                                break;
                        }
                free(j);
                s->epoch++;
                pthread_cond_broadcast(&s->cond);
                if (s->finished) {
                        pthread_mutex_unlock(&s->lock);
                        s->finished(s->ud);
                        pthread_mutex_lock(&s->lock);
                }
        }
        s->workers--;
        pthread_cond_broadcast(&s->cond);
        /* nothing of s is touched after this unlock: stopper_free may free it at once */
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

/* Under s->lock: starts workers while there are more queued jobs than idle hands. */
static void workers_spawn(struct stopper *s)
{
        size_t queued = 0, running = 0;
        for (struct stop_job *j = s->jobs; j; j = j->next) {
                if (j->running)
                        running++;
                else
                        queued++;
        }
        size_t idle = s->workers > running ? s->workers - running : 0;
        while (queued > idle && s->workers < s->parallel) {
                int e = thread_start_detached(worker, s);
                if (e != 0) {
                        /* the workers there are take the queued jobs in turn */
                        log_warn("stopper: cannot start a thread: %s", strerror(e));
                        break;
                }
                s->workers++;
                queued--;
        }
}

int stopper_submit(struct stopper *s, const char *name, struct workload_driver *drv, int grace_ms,
                   unsigned flags, struct cap_error *err)
{
        pthread_mutex_lock(&s->lock);
        if (job_find(s, name)) {
                pthread_mutex_unlock(&s->lock);
                return cap_error_set(err, -EALREADY, CAP_FAILED_PRECONDITION,
                                     "workload %s is already being stopped", name);
        }
        struct stop_job *j = calloc(1, sizeof(*j));
        if (!j) {
                pthread_mutex_unlock(&s->lock);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        snprintf(j->name, sizeof(j->name), "%s", name);
        j->drv = drv;
        j->grace_ms = grace_ms < 0 ? 0 : grace_ms;
        j->flags = flags;
        /* append: jobs start in the order they were asked for */
        struct stop_job **pp = &s->jobs;
        while (*pp)
                pp = &(*pp)->next;
        *pp = j;
        workers_spawn(s);
        if (s->workers == 0) {
                /* not even one thread: nobody would ever run it */
                *pp = NULL;
                free(j);
                pthread_mutex_unlock(&s->lock);
                return cap_error_set(err, -EAGAIN, CAP_INTERNAL, "stop %s: cannot start a thread", name);
        }
        pthread_mutex_unlock(&s->lock);
        return 0;
}

unsigned long stopper_epoch(struct stopper *s)
{
        pthread_mutex_lock(&s->lock);
        unsigned long e = s->epoch;
        pthread_mutex_unlock(&s->lock);
        return e;
}

bool stopper_busy(struct stopper *s, const char *name)
{
        pthread_mutex_lock(&s->lock);
        bool busy = job_find(s, name) != NULL;
        pthread_mutex_unlock(&s->lock);
        return busy;
}

int stopper_wait(struct stopper *s, const char *name, int timeout_ms)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t deadline = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + (int64_t)timeout_ms * 1000000LL;
        ts = (struct timespec){.tv_sec = deadline / 1000000000LL, .tv_nsec = deadline % 1000000000LL};
        int rc = 0;
        pthread_mutex_lock(&s->lock);
        while (job_find(s, name)) {
                if (pthread_cond_timedwait(&s->cond, &s->lock, &ts) == ETIMEDOUT && job_find(s, name)) {
                        rc = -ETIMEDOUT;
                        break;
                }
        }
        pthread_mutex_unlock(&s->lock);
        return rc;
}

void stopper_drain(struct stopper *s)
{
        pthread_mutex_lock(&s->lock);
        while (s->jobs)
                pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
}

void stopper_set_parallel(struct stopper *s, unsigned n)
{
        pthread_mutex_lock(&s->lock);
        s->parallel = n ? n : 1;
        workers_spawn(s);
        pthread_mutex_unlock(&s->lock);
}

void stopper_free(struct stopper *s)
{
        if (!s)
                return;
        pthread_mutex_lock(&s->lock);
        s->closing = true;
        /* queued jobs are dropped (the next serve lists those workloads as orphans again) */
        for (struct stop_job **pp = &s->jobs; *pp;) {
                if (!(*pp)->running) {
                        struct stop_job *dead = *pp;
                        *pp = dead->next;
                        free(dead);
                } else {
                        pp = &(*pp)->next;
                }
        }
        while (s->workers > 0)
                pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s);
}
