/* The workload driver interface: one ops table per kind of workload (containerd for
 * `kind: Container`, the microVM driver for `kind: MicroVM`), so that the reconciler, the restart
 * policy, events, logs, exec and `top` never ask which kind a workload is.
 *
 * A driver runs one generation of a workload at a time under the workload's NAME and reports
 * what actually runs (list), when it exits (subscribe_exits), and how to reach it (exec, where
 * its resources are accounted). Everything kind-neutral stays with the caller:
 *   - images: the reconciler makes sure the image is present and unpacked (containerd's image
 *     store serves both kinds) and passes its digest, config and chain id in struct driver_run;
 *   - volumes and network: the reconciler attaches the volumes and begins the network (one CNI
 *     namespace per workload) before run, passes the resulting paths, and a network_wait
 *     callback the driver calls once before the workload's process starts (so the CNI plugins
 *     run while the driver creates the container or VM); detaching is the reconciler's too;
 *   - logs: every driver writes the workload's output to the file logs_path(root, NAME) with the
 *     log writer (logs/logs.h) so that Workloads.Logs reads files for both kinds and the output
 *     keeps flowing while the control plane restarts.
 * The reconciler alone calls run/stop/remove/list/subscribe; serve/exec.c calls the exec ops and
 * serve/workloads.c cgroup_path. All ops may be called from several threads at once.
 * containerd/workload_driver.c is the first implementation. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsule/v1/workloads.pb-c.h"
#include "common/error.h"

struct workload_driver;

/* The network of a run, known once network_wait returned (strings owned by the caller). */
struct driver_network {
        const char *ip; /* "10.88.0.5"; NULL: no network */
        int prefix_len;
        const char *gateway; /* NULL if unknown */
};

/* One generation of a workload to start. Strings are the caller's, valid during run. */
struct driver_run {
        const Capsule__V1__WorkloadSpec *spec; /* spec->name is the workload's NAME */
        uint64_t generation;
        /* the image, present and unpacked */
        const char *image_digest;      /* "sha256:..." of the manifest */
        const char *image_config_json; /* its OCI config */
        const char *image_chain_id;    /* chain id of its top layer (the unpacked snapshot) */
        /* host attachments, begun by the caller */
        const char *const *volume_sources; /* [spec->n_mounts]: host dir (container) or disk (VM) */
        const char *netns_path;            /* NULL: a new, empty network namespace */
        const char *hosts_path;            /* /etc/hosts and /etc/resolv.conf to bind, or NULL */
        const char *resolv_conf_path;
        const char *log_path; /* the workload's log file (logs_path) */
        /* Finishes the network and fills *net; the driver calls it before the workload's
         * process starts (again: the same answer). NULL: no network. Failing it fails the run. */
        int (*network_wait)(void *ud, struct driver_network *net, struct cap_error *err);
        void *network_wait_ud;
};

enum driver_state {
        DRIVER_STATE_CREATED, /* exists, never started */
        DRIVER_STATE_RUNNING,
        DRIVER_STATE_EXITED, /* exit_status and exited_at_ns are valid */
        DRIVER_STATE_UNKNOWN,
};

/* What actually runs, as a driver lists it (strings valid during the callback). */
struct driver_workload {
        const char *name;
        uint64_t generation; /* 0 if unknown */
        enum driver_state state;
        uint32_t pid;
        uint32_t exit_status;
        int64_t exited_at_ns; /* 0: unknown */
        const char *disk_volumes; /* volumes it holds alone as disks (microVMs), space-separated;
                                   * NULL or "" for none */
};
typedef int (*driver_workload_fn)(const struct driver_workload *w, void *ud);

enum driver_event_kind {
        DRIVER_EVENT_EXIT,   /* the workload's main process ended (not an exec'd one) */
        DRIVER_EVENT_OOM,    /* it hit its memory limit; an EXIT follows */
        DRIVER_EVENT_RESYNC, /* events may have been lost (stream re-opened): list again */
};
struct driver_event {
        enum driver_event_kind kind;
        const char *name; /* NULL for RESYNC */
        uint32_t exit_status;
        int64_t time_ns;
};
/* Called on a thread of the driver's; must not call unsubscribe_exits. */
typedef void (*driver_event_fn)(const struct driver_event *ev, void *ud);

/* An extra process in a running workload (Workloads.Exec). The caller makes the FIFOs and opens
 * its ends; the driver connects the process to them (containerd's shim opens them itself; a
 * microVM's driver pumps them to and from its guest agent's Exec stream). */
struct driver_exec_req {
        const char *name;    /* the workload */
        const char *exec_id; /* unique among the workload's execs */
        const char *const *argv;
        const char *const *env_extra; /* added to the workload's own environment */
        bool tty;                     /* then only stdout carries output */
        const char *stdin_path;       /* NULL: no stdin */
        const char *stdout_path;
        const char *stderr_path; /* NULL when tty */
        uint32_t cols, rows;     /* initial terminal size (0: unset) */
};
struct driver_exec;

/* A debug container (Workloads.Debug): a privileged container of an image, in the host's
 * namespaces or joining a running workload's, with the host's "/" at host_root. Its main process
 * is the session: the exec ops drive it like an exec'd one, and exec_delete removes the whole
 * container. Strings are the caller's, valid during debug_start. */
struct driver_debug_req {
        const char *id; /* the container's id: starts with "debug." (never a workload name) */
        const char *image;
        const char *image_config_json;
        const char *image_chain_id;
        const char *target; /* a running workload of this driver's, or NULL: the host's */
        const char *host_root;
        const char *resolv_conf_path; /* bound at /etc/resolv.conf, or NULL */
        const char *const *argv;      /* NULL or empty: the image's entrypoint and command */
        const char *const *env_extra; /* added to the image's environment */
        bool tty;
        const char *stdin_path; /* NULL: no stdin */
        const char *stdout_path;
        const char *stderr_path; /* NULL when tty */
        uint32_t cols, rows;
};

struct workload_driver_ops {
        /* Creates and starts one generation; returns its pid (the process that stands for it:
         * the container's init, QEMU). ALREADY_EXISTS when NAME exists (stop and remove first). */
        int (*run)(struct workload_driver *d, const struct driver_run *run, uint32_t *pid,
                   struct cap_error *err);
        /* Graceful stop: SIGTERM (or the guest's Stop), grace_ms, SIGKILL, wait. 0 also when
         * nothing runs; *exit_status (if non-NULL) is set when known. */
        int (*stop)(struct workload_driver *d, const char *name, int grace_ms,
                    uint32_t *exit_status, struct cap_error *err);
        /* Deletes what the run left (killing what still runs). Missing: 0. */
        int (*remove)(struct workload_driver *d, const char *name, struct cap_error *err);
        /* Calls fn for every workload of this driver's, running or not (adoption, exits,
         * orphans). A non-zero return from fn stops the walk and is returned. */
        int (*list)(struct workload_driver *d, driver_workload_fn fn, void *ud,
                    struct cap_error *err);
        /* One subscriber per driver; returns once events flow. unsubscribe: no callbacks after
         * it returns; a no-op without a subscription. */
        int (*subscribe_exits)(struct workload_driver *d, driver_event_fn fn, void *ud,
                               struct cap_error *err);
        void (*unsubscribe_exits)(struct workload_driver *d);
        /* Exec: start returns a session (and the pid); wait blocks until the process ends
         * (timeout_ms 0 = forever); delete frees the session and what the driver keeps of it.
         * NULL exec_start: FAILED_PRECONDITION "exec is not supported" for this kind. */
        int (*exec_start)(struct workload_driver *d, const struct driver_exec_req *req,
                          struct driver_exec **x, uint32_t *pid, struct cap_error *err);
        int (*exec_resize)(struct workload_driver *d, struct driver_exec *x, uint32_t cols,
                           uint32_t rows, struct cap_error *err);
        int (*exec_close_stdin)(struct workload_driver *d, struct driver_exec *x,
                                struct cap_error *err);
        int (*exec_wait)(struct workload_driver *d, struct driver_exec *x, int timeout_ms,
                         uint32_t *exit_status, struct cap_error *err);
        int (*exec_kill)(struct workload_driver *d, struct driver_exec *x, int sig,
                         struct cap_error *err);
        void (*exec_delete)(struct workload_driver *d, struct driver_exec *x);
        /* Debug containers (NULL: this kind has none; FAILED_PRECONDITION then). debug_start
         * returns a session for the exec ops (NOT_FOUND / FAILED_PRECONDITION when the target
         * does not run); debug_cleanup removes what sessions of an earlier serve left. */
        int (*debug_start)(struct workload_driver *d, const struct driver_debug_req *req,
                           struct driver_exec **x, uint32_t *pid, struct cap_error *err);
        int (*debug_cleanup)(struct workload_driver *d, struct cap_error *err);
        /* The cgroup (relative to the cgroup root, e.g. "/capsule/web") that accounts for the
         * workload's CPU, memory and pids, for `top` (serve/cgstats.h reads it). -ENOENT: none. */
        int (*cgroup_path)(struct workload_driver *d, const char *name, char *buf, size_t len);
        /* Frees the driver's state (not the workloads: they keep running). */
        /* Kind-specific facts for Get/describe (NULL: none): fills st's fields of its kind. */
        void (*describe)(struct workload_driver *d, const char *name, Capsule__V1__WorkloadStatus *st);
        void (*free)(struct workload_driver *d);
};

struct workload_driver {
        const char *name; /* "containerd", "microvm" */
        const char *noun; /* what one workload is, in messages: "container", "microVM" */
        Capsule__V1__WorkloadKind kind;
        const struct workload_driver_ops *ops;
        void *state; /* the implementation's */
};

/* Index of a kind in a driver table (struct driver_table); -1 for kinds without one. */
#define DRIVER_KINDS 2
int driver_kind_index(Capsule__V1__WorkloadKind kind);

/* The drivers of one capsuled serve: at most one per kind; a NULL slot says why in unavailable. */
struct driver_table {
        struct workload_driver *by_kind[DRIVER_KINDS];
        char unavailable[DRIVER_KINDS][512];
};

/* The driver of kind, or NULL (then *why, if non-NULL, says why: never NULL itself). */
struct workload_driver *driver_for_kind(const struct driver_table *t,
                                        Capsule__V1__WorkloadKind kind, const char **why);
/* Frees every driver in t (NULL slots are skipped) and clears it. */
void driver_table_free(struct driver_table *t);

/* The exec ops with the "not supported" answer for drivers without exec. */
int driver_exec_start(struct workload_driver *d, const struct driver_exec_req *req,
                      struct driver_exec **x, uint32_t *pid, struct cap_error *err);
