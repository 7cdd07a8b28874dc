/* Unit tests for src/capsuled/reconcile/stopper.c: stops run at once up to the bound (a stand-in
 * driver's stop waits until it sees the expected number of stops in flight, so the checks count
 * stops rather than time them), one job per name, waits and their timeout, the grace period and
 * flags reach the driver, release runs while the job is busy and finished after it is gone. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "driver/driver.h"
#include "reconcile/stopper.h"
#include "test.h"

static struct {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int in_flight, max_in_flight, expect; /* a stop waits (up to 2 s) for expect in flight */
        int stops, removes, releases, finished;
        int last_grace;
        bool hold; /* stops block while set */
        bool busy_in_release;
        struct stopper *s;
} fk = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void fk_reset(int expect)
{
        pthread_mutex_lock(&fk.lock);
        fk.in_flight = fk.max_in_flight = fk.stops = fk.removes = fk.releases = fk.finished = 0;
        fk.expect = expect;
        fk.hold = false;
        fk.busy_in_release = false;
        pthread_mutex_unlock(&fk.lock);
}

static int fk_stop(struct workload_driver *d, const char *name, int grace_ms, uint32_t *st,
                   struct cap_error *err)
{
        (void)d, (void)name, (void)st, (void)err;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 2;
        pthread_mutex_lock(&fk.lock);
        fk.stops++;
        fk.last_grace = grace_ms;
        if (++fk.in_flight > fk.max_in_flight)
                fk.max_in_flight = fk.in_flight;
        pthread_cond_broadcast(&fk.cond);
        while ((fk.in_flight < fk.expect || fk.hold) &&
               pthread_cond_timedwait(&fk.cond, &fk.lock, &ts) != ETIMEDOUT)
                ;
        while (fk.hold) /* held on purpose: no timeout */
                pthread_cond_wait(&fk.cond, &fk.lock);
        fk.in_flight--;
        pthread_mutex_unlock(&fk.lock);
        return 0;
}

static int fk_remove(struct workload_driver *d, const char *name, struct cap_error *err)
{
        (void)d, (void)name, (void)err;
        pthread_mutex_lock(&fk.lock);
        fk.removes++;
        pthread_mutex_unlock(&fk.lock);
        return 0;
}

static void fk_release(const char *name, struct workload_driver *drv, unsigned flags, void *ud)
{
        (void)drv, (void)ud;
        bool busy = stopper_busy(fk.s, name);
        pthread_mutex_lock(&fk.lock);
        if (flags & STOPPER_DETACH)
                fk.releases++;
        fk.busy_in_release = busy;
        pthread_mutex_unlock(&fk.lock);
}

static void fk_finished(void *ud)
{
        (void)ud;
        pthread_mutex_lock(&fk.lock);
        fk.finished++;
        pthread_mutex_unlock(&fk.lock);
}

static void fk_set_hold(bool hold)
{
        pthread_mutex_lock(&fk.lock);
        fk.hold = hold;
        pthread_cond_broadcast(&fk.cond);
        pthread_mutex_unlock(&fk.lock);
}

static const struct workload_driver_ops fk_ops = {.stop = fk_stop, .remove = fk_remove};
static struct workload_driver fk_drv = {.name = "fake", .noun = "container", .ops = &fk_ops};

static struct stopper *new_stopper(void)
{
        struct cap_error err = {0};
        fk.s = stopper_new(fk_release, fk_finished, NULL, &err);
        return fk.s;
}

TEST(all_at_once)
{
        struct stopper *s = new_stopper();
        CHECK(s != NULL);
        fk_reset(20);
        struct cap_error err = {0};
        char name[16];
        for (int i = 0; i < 20; i++) {
                snprintf(name, sizeof(name), "w%d", i);
                CHECK(stopper_submit(s, name, &fk_drv, 1000, STOPPER_REMOVE | STOPPER_DETACH, &err) == 0);
        }
        stopper_drain(s);
        /* every stop was in flight at the same moment: none waited for another's grace */
        CHECK(fk.max_in_flight == 20);
        CHECK(fk.stops == 20 && fk.removes == 20 && fk.releases == 20);
        CHECK(fk.busy_in_release);
        stopper_free(s);
        /* finished runs after the job is gone, on the job's thread: all have by now */
        CHECK(fk.finished == 20);
}

TEST(bounded)
{
        struct stopper *s = new_stopper();
        stopper_set_parallel(s, 4);
        fk_reset(4);
        struct cap_error err = {0};
        char name[16];
        for (int i = 0; i < 10; i++) {
                snprintf(name, sizeof(name), "b%d", i);
                CHECK(stopper_submit(s, name, &fk_drv, 0, 0, &err) == 0);
        }
        stopper_drain(s);
        CHECK(fk.max_in_flight == 4); /* the rest queued, then ran */
        CHECK(fk.stops == 10);
        CHECK(fk.removes == 0 && fk.releases == 0); /* no flags: stop only */
        CHECK(fk.last_grace == 0);
        stopper_free(s);
}

TEST(one_job_per_name_and_waits)
{
        struct stopper *s = new_stopper();
        fk_reset(1);
        fk_set_hold(true);
        struct cap_error err = {0};
        unsigned long e0 = stopper_epoch(s);
        CHECK(stopper_submit(s, "db", &fk_drv, 30000, STOPPER_REMOVE, &err) == 0);
        CHECK(stopper_busy(s, "db"));
        CHECK(!stopper_busy(s, "web"));
        CHECK(stopper_submit(s, "db", &fk_drv, 0, STOPPER_REMOVE, &err) == -EALREADY);
        CHECK_CONTAINS(err.msg, "db is already being stopped");
        CHECK(stopper_wait(s, "db", 50) == -ETIMEDOUT);
        CHECK(stopper_wait(s, "web", 50) == 0);
        CHECK(stopper_epoch(s) == e0);
        fk_set_hold(false);
        CHECK(stopper_wait(s, "db", 10000) == 0);
        CHECK(!stopper_busy(s, "db"));
        CHECK(stopper_epoch(s) == e0 + 1);
        CHECK(fk.stops == 1 && fk.removes == 1 && fk.last_grace == 30000);
        /* the name is free again */
        CHECK(stopper_submit(s, "db", &fk_drv, 5, 0, &err) == 0);
        stopper_drain(s);
        CHECK(fk.stops == 2);
        stopper_free(s);
}

static atomic_bool freed;

static void *free_thread(void *arg)
{
        stopper_free(arg);
        atomic_store(&freed, true);
        return NULL;
}

TEST(free_drops_queued_and_waits_for_running)
{
        struct stopper *s = new_stopper();
        stopper_set_parallel(s, 1);
        fk_reset(1);
        fk_set_hold(true);
        struct cap_error err = {0};
        CHECK(stopper_submit(s, "run", &fk_drv, 0, 0, &err) == 0);
        CHECK(stopper_submit(s, "q1", &fk_drv, 0, 0, &err) == 0);
        CHECK(stopper_submit(s, "q2", &fk_drv, 0, 0, &err) == 0);
        for (int i = 0; i < 500 && fk.stops == 0; i++) /* "run" has started */
                usleep(10000);
        atomic_store(&freed, false);
        pthread_t t;
        CHECK(pthread_create(&t, NULL, free_thread, s) == 0);
        /* free drops the queued jobs at once but waits for the running one (held: s stays) */
        for (int i = 0; i < 500 && stopper_busy(s, "q1"); i++)
                usleep(10000);
        CHECK(!stopper_busy(s, "q1") && !stopper_busy(s, "q2"));
        CHECK(stopper_busy(s, "run"));
        CHECK(!atomic_load(&freed));
        fk_set_hold(false);
        pthread_join(t, NULL);
        CHECK(atomic_load(&freed));
        CHECK(fk.stops == 1);
}

int main(void)
{
        RUN(all_at_once);
        RUN(bounded);
        RUN(one_job_per_name_and_waits);
        RUN(free_drops_queued_and_waits_for_running);
        return test_summary();
}
