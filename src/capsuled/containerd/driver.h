/* The containerd driver: what the reconciler needs to run Capsule containers in containerd.
 *
 * Everything lives in containerd's namespace "capsule". A workload NAME is one containerd
 * container whose id is NAME itself (names are DNS labels, so valid containerd ids), labelled
 * capsule.workload=NAME and capsule.generation=N; its writable snapshot (overlayfs) has key NAME.
 * A new generation replaces the container: stop, remove, run. Images are unpacked into committed
 * snapshots named by their chain ids, as `ctr` does, so containers of one image share layers.
 * All functions are safe to call from several threads (one gRPC channel, thread-safe). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "common/error.h"

#define CTRD_LABEL_WORKLOAD "capsule.workload"
#define CTRD_LABEL_GENERATION "capsule.generation"
#define CTRD_LABEL_IMAGE "capsule.image"
/* Debug containers (`capsulectl debug`) are labelled capsule.debug=TARGET ("(host)" for the
 * host's namespaces) instead of capsule.workload, and their ids start with CTRD_DEBUG_PREFIX (a '.' is
 * never in a workload name): they are never listed, adopted or removed as workloads. */
#define CTRD_LABEL_DEBUG "capsule.debug"
#define CTRD_DEBUG_PREFIX "debug."

struct ctrd;

/* Connects to containerd at `sock` (a path), checks that it answers (Version) and creates the
 * namespace. UNAVAILABLE when containerd is not up. */
struct ctrd *ctrd_connect(const char *sock, struct cap_error *err);
void ctrd_free(struct ctrd *c);
/* The underlying typed client, for calls the driver does not wrap. */
struct ctrd_client *ctrd_client(struct ctrd *c);

/* For an image already in the content store: resolves ref (an index picks linux/<this arch>),
 * unpacks missing layers into snapshots and returns the image config JSON and the top chain id
 * (both malloc'd). Idempotent and cheap when already unpacked. NOT_FOUND if the image is absent. */
int ctrd_image_ensure_unpacked(struct ctrd *c, const char *ref, char **config_json, char **chain_id,
                               struct cap_error *err);

/* Mounts the image's unpacked rootfs read-only at a temporary directory (a View snapshot), calls
 * fn(rootfs, ud) and unmounts and removes it again: for reading /etc/passwd and /etc/group when
 * the manifest names a user. Returns fn's result, or negative if mounting failed. */
typedef int (*ctrd_rootfs_fn)(const char *rootfs, void *ud);
int ctrd_image_with_rootfs(struct ctrd *c, const char *chain_id, ctrd_rootfs_fn fn, void *ud,
                           struct cap_error *err);

struct ctrd_run {
        const char *name; /* workload name = container id = snapshot key */
        uint64_t generation;
        const char *image;     /* ref, recorded as label and container image */
        const char *spec_json; /* from spec_generate() */
        const char *chain_id;  /* from ctrd_image_ensure_unpacked() */
        /* Where the shim writes the output: a FIFO, an existing regular file, or "file:///path"
         * (the shim creates it; stdout and stderr then share it). NULL: discarded. */
        const char *stdout_path;
        const char *stderr_path;
        const char *stdin_path; /* a FIFO, or NULL: none */
        bool terminal; /* must match the spec's process.terminal */
        /* NULL: a workload's (capsule.workload=name, capsule.generation, capsule.image) */
        const struct ctrd_label *labels;
        size_t n_labels;
        /* Called once the task exists and before it starts (NULL: none), e.g. to finish the
         * network its namespace joins; failing it fails the run. */
        int (*before_start)(void *ud, struct cap_error *err);
        void *before_start_ud;
};

/* Prepares the snapshot, creates the container and its task, calls before_start, starts the task;
 * returns the pid. On failure removes what it created. ALREADY_EXISTS if a container NAME exists
 * (remove it first). */
int ctrd_container_run(struct ctrd *c, const struct ctrd_run *run, uint32_t *pid,
                       struct cap_error *err);

/* SIGTERM, waits up to grace_ms, then SIGKILL to every process of the container, and waits for
 * the exit. Returns 0 (with the exit status if exit_status is non-NULL) also when nothing runs. */
int ctrd_container_stop(struct ctrd *c, const char *name, int grace_ms, uint32_t *exit_status,
                        struct cap_error *err);

/* Deletes the task (killing it if it still runs), the container and its snapshot. Whatever is
 * already gone is skipped: removing twice succeeds. */
int ctrd_container_remove(struct ctrd *c, const char *name, struct cap_error *err);

/* Whether a container id is a debug container's. */
bool ctrd_is_debug_id(const char *id);
/* Removes every debug container (task, container, snapshot) left by an earlier capsuled serve:
 * their sessions ended with it. Returns how many, or negative. */
int ctrd_debug_cleanup(struct ctrd *c, struct cap_error *err);

enum ctrd_task_state {
        CTRD_TASK_NONE = 0, /* container without a task */
        CTRD_TASK_CREATED,
        CTRD_TASK_RUNNING,
        CTRD_TASK_STOPPED,
        CTRD_TASK_PAUSED,
        CTRD_TASK_UNKNOWN,
};
const char *ctrd_task_state_name(enum ctrd_task_state s);

struct ctrd_workload {
        const char *id;      /* container id */
        const char *name;    /* capsule.workload label */
        uint64_t generation; /* capsule.generation label (0 if absent or bad) */
        const char *image;
        enum ctrd_task_state state;
        uint32_t pid;
        uint32_t exit_status; /* valid when STOPPED */
        int64_t exited_at_ns;
};
/* Calls fn for every container labelled capsule.workload, for adoption and orphan removal. A
 * non-zero return from fn stops the walk and is returned. */
typedef int (*ctrd_workload_fn)(const struct ctrd_workload *w, void *ud);
int ctrd_list_workloads(struct ctrd *c, ctrd_workload_fn fn, void *ud, struct cap_error *err);

/* Starts an extra process in a running container (Tasks.Exec + Start) with the container's
 * process settings (user, cwd, env + env_extra, capabilities) and argv. exec_id names it (unique
 * per container, e.g. "exec-<n>"). stdio: FIFOs (stdin may be NULL); tty: terminal mode, then
 * only stdout carries output. Returns the pid. Wait with ctrd_exec_wait, then ctrd_exec_delete. */
struct ctrd_exec_req {
        const char *name;
        const char *exec_id;
        const char *const *argv;
        const char *const *env_extra;
        bool tty;
        const char *stdin_path;
        const char *stdout_path;
        const char *stderr_path;
};
int ctrd_exec(struct ctrd *c, const struct ctrd_exec_req *req, uint32_t *pid,
              struct cap_error *err);
int ctrd_exec_resize(struct ctrd *c, const char *name, const char *exec_id, uint32_t cols,
                     uint32_t rows, struct cap_error *err);
int ctrd_exec_close_stdin(struct ctrd *c, const char *name, const char *exec_id,
                          struct cap_error *err);
/* Waits for the exec'd process (timeout_ms 0 = forever) and returns its exit status. */
int ctrd_exec_wait(struct ctrd *c, const char *name, const char *exec_id, int timeout_ms,
                   uint32_t *exit_status, struct cap_error *err);
int ctrd_exec_delete(struct ctrd *c, const char *name, const char *exec_id, struct cap_error *err);

/* Task events, delivered on the subscription's own thread. */
enum ctrd_event_kind {
        CTRD_EVENT_EXIT,         /* a process exited (init: exec_id == container_id) */
        CTRD_EVENT_OOM,          /* the container hit its memory limit */
        CTRD_EVENT_RESUBSCRIBED, /* the stream broke and was re-opened: events may have been lost,
                                    resync with ctrd_list_workloads */
};
struct ctrd_event {
        enum ctrd_event_kind kind;
        const char *container_id;
        const char *exec_id;
        uint32_t pid;
        uint32_t exit_status;
        int64_t time_ns;
};
typedef void (*ctrd_event_fn)(const struct ctrd_event *ev, void *ud);
struct ctrd_events;
/* Subscribes to the namespace's task exit/OOM events; reconnects (every second) if containerd
 * goes away. Returns once the first subscription is open. */
struct ctrd_events *ctrd_events_subscribe(struct ctrd *c, ctrd_event_fn fn, void *ud,
                                          struct cap_error *err);
/* Stops the thread (no callbacks after it returns) and frees. NULL is a no-op. Not from fn. */
void ctrd_events_stop(struct ctrd_events *ev);

/* ---- image import (side-loading, for `image push`) ---- */
/* An import holds a lease, so blobs written but not yet referenced by an image survive GC. */
struct ctrd_import;
int ctrd_import_begin(struct ctrd *c, struct ctrd_import **imp, struct cap_error *err);
/* The leased client, for streaming big blobs with ctrd_writer_open/write/commit. */
struct ctrd_client *ctrd_import_client(struct ctrd_import *imp);
/* Writes one blob (digest "sha256:<hex>", verified by containerd). For manifests and indexes,
 * pass the labels from ctrd_gc_labels so that the blobs they reference are kept. */
int ctrd_import_blob(struct ctrd_import *imp, const char *digest, const void *data, size_t len,
                     const struct ctrd_label *labels, size_t n_labels, struct cap_error *err);
/* Creates (or repoints) image `name` at target, then releases the lease and frees imp. */
int ctrd_import_finish(struct ctrd_import *imp, const char *name,
                       const struct ctrd_descriptor *target, struct cap_error *err);
/* Releases the lease (unreferenced blobs become garbage) and frees. NULL is a no-op. */
void ctrd_import_abort(struct ctrd_import *imp);

/* The containerd.io/gc.ref.content.* labels for a manifest (config, l.N) or an index (m.N) JSON,
 * which keep the referenced blobs alive. Free with ctrd_labels_free. */
int ctrd_gc_labels(const char *json, size_t len, struct ctrd_label **labels, size_t *n,
                   struct cap_error *err);
void ctrd_labels_free(struct ctrd_label *labels, size_t n);

/* "sha256:<hex>" of data into out (at least 72 bytes). */
void ctrd_sha256_digest(const void *data, size_t len, char out[72]);
