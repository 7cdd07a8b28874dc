/* The stopper: stops (and removes) workloads on threads of its own, many at once, so that one
 * workload's grace period never delays another workload's stop or start. A stop is mostly waiting
 * (for the workload to exit after SIGTERM, or for its grace period to end), so a thread per stop
 * is cheap; the number of threads is still bounded (STOPPER_PARALLEL, or what the caller sets for
 * a shutdown) and the rest queue. At most one job per workload NAME is queued or running.
 * The reconciler hands it deletes, orphans, replacements and restarts (reconciler.c); it calls
 * the drivers only through their ops tables, so containers and microVMs stop alike. */
#pragma once

#include <stdbool.h>

#include "common/error.h"

struct workload_driver;
struct stopper;

/* Enough for the homelab's "50 workloads" to be stopped within one grace period. */
#define STOPPER_PARALLEL 64

enum stopper_flags {
        STOPPER_REMOVE = 1u << 0, /* after the stop, remove the container or microVM */
        STOPPER_DETACH = 1u << 1, /* and release its network and volumes (for done to do) */
};

/* Called on the job's thread after the stop and removal (whatever the outcome), while the job
 * still counts as busy: release what the workload held here. */
typedef void (*stopper_release_fn)(const char *name, struct workload_driver *drv, unsigned flags,
                                   void *ud);
/* Called on the job's thread once the job is gone (not busy, stopper_epoch advanced). */
typedef void (*stopper_finished_fn)(void *ud);

struct stopper *stopper_new(stopper_release_fn release, stopper_finished_fn finished, void *ud,
                            struct cap_error *err);
/* Queues "stop NAME through drv: SIGTERM (a microVM: its guest's Stop), grace_ms, SIGKILL" with
 * flags. grace_ms 0 kills at once. -EALREADY if a job for NAME is queued or running (nothing is
 * queued then). */
int stopper_submit(struct stopper *s, const char *name, struct workload_driver *drv, int grace_ms,
                   unsigned flags, struct cap_error *err);
/* Counts finished jobs: a listing of workloads taken before the count changed may show what a
 * job has since removed. */
unsigned long stopper_epoch(struct stopper *s);
/* True while a job for NAME is queued or running. */
bool stopper_busy(struct stopper *s, const char *name);
/* Waits until no job for NAME is queued or running: 0, or -ETIMEDOUT after timeout_ms. */
int stopper_wait(struct stopper *s, const char *name, int timeout_ms);
/* Waits until no job at all is queued or running. */
void stopper_drain(struct stopper *s);
/* How many jobs may run at once from now on (at least 1). */
void stopper_set_parallel(struct stopper *s, unsigned n);
/* Drops queued jobs, waits for running ones, frees s. */
void stopper_free(struct stopper *s);
