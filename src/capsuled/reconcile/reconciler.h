/* The reconciler: makes the actual workloads (containers, microVMs) match the desired ones
 * (the store), and keeps them so. It reaches them only through the workload drivers of
 * serve_ctx.drivers (driver/driver.h), one per kind; a kind without a driver fails with its reason.
 *
 * Level-triggered: one thread runs a full pass on every kick (Apply, Delete, Restart), on every
 * exit event from a driver, at the earliest backoff deadline, and every RESYNC seconds.
 * Within a pass, up to RECONCILE_PARALLEL workloads are worked on at once, so that workloads
 * applied together start together rather than one after another. Stops (deletes, orphans,
 * replacements, restarts) run on the stopper (stopper.h), up to STOPPER_PARALLEL at once and
 * beside the passes, so that stops never wait one grace period after another.
 * A pass is idempotent: it adopts workloads that already run the desired generation (after a
 * `capsuled serve` restart), replaces those of an older generation or another kind, removes
 * orphans (listed by a driver but not desired), and restarts exited ones according to their restart policy
 * with exponential backoff (1 s doubling to 5 min; reset after 10 min running).
 *
 * Observed status (phase, pid, restarts, last exit, IP, message) lives in memory only: actual
 * state is observed, never stored as truth. */
#pragma once

#include <stdbool.h>

#include "capsule/v1/workloads.pb-c.h"
#include "common/error.h"

struct serve_ctx;
struct reconciler;

#define RECONCILE_RESYNC_SECONDS 10
#define RECONCILE_BACKOFF_MAX_SECONDS 300
#define RECONCILE_BACKOFF_RESET_SECONDS 600
#define RECONCILE_STOP_GRACE_MS 10000
#define RECONCILE_PARALLEL 4
/* Grace periods a Delete may ask for: up to one hour (a database flushing its buffers). */
#define RECONCILE_STOP_GRACE_MAX_MS 3600000
/* At shutdown every workload is stopped at once (up to this many threads). */
#define RECONCILE_SHUTDOWN_PARALLEL 1024

struct reconciler *reconciler_new(struct serve_ctx *ctx, struct cap_error *err);
/* Starts the thread and subscribes to every driver's exit events. */
int reconciler_start(struct reconciler *r, struct cap_error *err);
/* Stops the thread and the subscriptions; workloads keep running (in containerd's shims, as
 * QEMU processes). Frees r. */
void reconciler_free(struct reconciler *r);

/* Asks for a pass soon. Cheap; coalesces. */
void reconciler_kick(struct reconciler *r);
/* How many passes finished, and how long the last one took (listing every driver's workloads,
 * comparing, starting what is missing): the figure bench/scale follows as workloads grow. */
void reconciler_pass_stats(struct reconciler *r, uint64_t *passes, double *last_pass_seconds);
/* Kicks and waits until a pass that started after this call has finished (or timeout_ms). */
int reconciler_sync(struct reconciler *r, int timeout_ms);

/* A malloc'd copy of a workload's observed status (phase PENDING when nothing is known yet). */
Capsule__V1__WorkloadStatus *reconciler_status(struct reconciler *r, const char *name);
/* Stops and starts the workload again now, clearing its backoff. NOT_FOUND if not desired. */
int reconciler_restart(struct reconciler *r, const char *name, struct cap_error *err);
/* Starts stopping a workload that is being deleted: SIGTERM (a microVM: its guest's Stop), grace_ms
 * (0: none, SIGKILL at once), SIGKILL, then removal and release of its network and volumes; on
 * the stopper's threads, beside every other stop (no pass waits for it). Call it before the
 * store delete, so that no pass restarts the workload meanwhile. */
int reconciler_delete_begin(struct reconciler *r, const char *name, Capsule__V1__WorkloadKind kind,
                            int grace_ms, struct cap_error *err);
/* After the store delete: waits until nothing of the workload is left (0) or -ETIMEDOUT. */
int reconciler_delete_wait(struct reconciler *r, const char *name, int timeout_ms);
/* For a poweroff or reboot: ends the passes, then stops every running workload of every driver
 * at once (SIGTERM, grace_ms, SIGKILL) and waits for all; they are not removed (the next boot
 * starts them again). Returns how many were stopped. Call reconciler_free afterwards. */
int reconciler_stop_everything(struct reconciler *r, int grace_ms);
/* Forgets the in-memory status of a deleted workload (after its removal). */
void reconciler_forget(struct reconciler *r, const char *name);
