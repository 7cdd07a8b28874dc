/* The control plane's shared context: one per `capsuled serve` process, passed to every handler
 * as the method's userdata. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "capsule/v1/workloads.pb-c.h"
#include "common/config.h"
#include "common/manifest.h"
#include "common/timeline.h"
#include "driver/driver.h"
#include "images/images.h"
#include "rpc/rpc.h"
#include "store/store.h"

struct ctrd;
struct vmd;
struct event_bus;
struct reconciler;
struct volumes;
struct cni_config;
struct cni_setup_job;
struct metrics_http;
struct updater;

/* An image built with mkimage/build.sh --test-fail-health carries this file: its health check
 * "test-fail-health" always fails, so a tentative boot of it rolls back (tests only). */
#define SERVE_TEST_FAIL_HEALTH "/etc/capsule/test-fail-health"

/* A machine config shared by reference: the live one can be replaced while pulls use the old. */
struct serve_config_ref {
        unsigned refs; /* under serve_ctx.live_lock */
        struct machine_config c;
};

#define SERVE_MAX_RESERVED 8

struct serve_ctx {
        const char *root;            /* --root: state directory */
        const char *containerd_sock; /* --containerd, NULL when not configured */
        bool os_mode;                /* true when started by PID 1 on a Capsule (--os) */
        struct machine_config mcfg;  /* as loaded at start (what the API, PKI and network use) */
        const char *machine_config_path;
        pthread_mutex_t live_lock;
        struct serve_config_ref *live; /* the config on disk now: its registries are in effect */
        struct store *store;
        struct timespec started; /* CLOCK_MONOTONIC at start */
        struct timeline boot;    /* serve's own start phases, complete before the API answers */
        struct rpc_server *server;
        char self_exe[4096];   /* this binary, for the shim's log-writer (binary:// URI) */
        char log_writer[4096]; /* what the shim runs as log writer: capsule-log-writer, or self_exe
                                */
        /* The workload drivers, one per kind (driver/driver.h): only the reconciler runs,
         * stops and lists workloads, through them; exec and `top` use their exec and cgroup
         * ops. A kind without a driver has the reason in drivers.unavailable. */
        struct driver_table drivers;
        /* containerd's content and image store (containerd/driver.h), for images/ and the
         * microVM driver's root disks; NULL without --containerd. The container driver uses
         * the same connection. */
        struct ctrd *image_store;
        struct event_bus *events;
        struct reconciler *rec;
        /* volumes + networking (src/capsuled/volume, src/capsuled/net): set up in run() */
        struct volumes *volumes; /* NULL if volumes failed to start (API answers UNAVAILABLE) */
        struct cni_config *cni;  /* CNI network for workloads (net/cni.h) */
        struct images_env images; /* what images/ works with (userdata of the Images methods) */
        struct metrics_http *metrics; /* the metrics endpoint (metrics/http.h), NULL when off */
        struct liveness *liveness;    /* sign of life to PID 1 (liveness.c), NULL when not asked */
        /* A/B updates (update/updater.h; updates.c): NULL when this capsule cannot update, with
         * the reason in updater_error (host mode, no ESP, no slot partitions). */
        struct updater *updater;
        char updater_error[512];
        char update_sysroot[4096]; /* --update-sysroot (tests): stands in for /, "" on a Capsule */
        /* Host ports serve listens on (configured and bound, API and metrics): Apply refuses a
         * workload that publishes one. Entries are written before n_reserved counts them. */
        struct manifest_reserved_port reserved[SERVE_MAX_RESERVED];
        _Atomic size_t n_reserved;
};

/* Records that serve listens on addr's TCP port ("IP:PORT", "[IPV6]:PORT" or a bare port
 * number; unix: addresses and port 0 are ignored) so that no workload may publish it. */
void serve_reserve_port(struct serve_ctx *ctx, const char *addr, int port, const char *what);

/* ---- runtime glue (runtime.c): where images, volumes and networking meet the reconciler ---- */

/* What a workload's container needs from the host besides its image. */
struct serve_workload_env {
        char **volume_sources; /* [spec->n_mounts]: host directory, or a microVM's disk */
        size_t n_volume_sources;
        char *netns_path; /* NULL: a new, empty network namespace */
        char *ip;         /* the workload's address, NULL if none */
        int prefix_len;   /* of ip's network */
        char *gateway;    /* the network's gateway (the bridge), NULL if unknown */
        char *hosts_path;
        char *resolv_conf_path;
        struct cni_setup_job *net_job; /* network setup still running (attach_begin .. _end) */
};

/* MicroVM root disk caches of deleted images (runtime.c): start hooks the events up (before the
 * reconciler runs); sweep, once the API answers (off the boot's critical path), collects what an
 * earlier life left (an image deleted just before a crash); images_env.deleted collects the cache
 * of the deleted image unless a microVM still claims it. */
void serve_rootcache_start(struct serve_ctx *ctx);
void serve_rootcache_sweep(struct serve_ctx *ctx);
void serve_image_deleted(void *ud, const char *name, const char *digest);

/* images_env's registries_get/put: the live machine config's registries, held while in use. */
void *serve_registries_get(void *ud, struct registry_opts *o);
void serve_registries_put(void *ud, void *hold);
/* Makes sure spec's image is present and unpacked (pulling per pull_policy); returns its
 * manifest digest, its OCI config JSON and the chain id of its top layer (all malloc'd). */
int serve_image_ensure(struct serve_ctx *ctx, const char *image, Capsule__V1__PullPolicy policy,
                       char **digest, char **config_json, char **chain_id, struct cap_error *err);
/* Only the pull part of serve_image_ensure (per policy), reporting to hooks (may be NULL): the
 * reconciler runs it on a thread of its own so that no pass waits for a registry. */
struct images_pull_hooks;
int serve_image_pull(struct serve_ctx *ctx, const char *image, Capsule__V1__PullPolicy policy,
                     const struct images_pull_hooks *hooks, struct cap_error *err);
/* Attaches the workload's volumes and sets up its network. On failure undoes what it did. */
int serve_workload_attach(struct serve_ctx *ctx, const Capsule__V1__WorkloadSpec *spec,
                          struct serve_workload_env *env, struct cap_error *err);
/* The same in two halves, so the network's plugins run while the container is created: begin
 * attaches the volumes and starts the network (env's paths all exist when it returns; ip is
 * still NULL); end waits for the network and fills ip. begin undoes itself on failure; end's
 * failure undoes the network only (serve_workload_detached does the rest). */
int serve_workload_attach_begin(struct serve_ctx *ctx, const Capsule__V1__WorkloadSpec *spec,
                                struct serve_workload_env *env, struct cap_error *err);
int serve_workload_attach_end(struct serve_ctx *ctx, const Capsule__V1__WorkloadSpec *spec,
                              struct serve_workload_env *env, struct cap_error *err);
/* Frees env (waiting first for a network setup that was begun and not ended). */
void serve_workload_env_free(struct serve_workload_env *env);
/* Undoes serve_workload_attach for a removed container: network teardown, volume detach.
 * Idempotent; also for workloads attached by an earlier serve process. */
void serve_workload_detached(struct serve_ctx *ctx, const char *name);
/* The address of a running workload's network (for adopted workloads); "" if unknown. */
void serve_workload_ip(struct serve_ctx *ctx, const char *name, char *buf, size_t len);

/* The live machine config (machine.c): init loads it at start, get/put hold it while in use,
 * System.ApplyMachineConfig replaces it. */
int serve_config_init(struct serve_ctx *ctx, const char *path, struct cap_error *err);
struct serve_config_ref *serve_config_get(struct serve_ctx *ctx);
void serve_config_put(struct serve_ctx *ctx, struct serve_config_ref *ref);
void serve_config_fini(struct serve_ctx *ctx);

/* Roles, from the client certificate's O, each allowed what the ones below it are. */
enum serve_role {
        SERVE_ROLE_NONE = 0,  /* no verified certificate, or no Capsule role in it */
        SERVE_ROLE_READER,    /* capsule:reader: read-only; env values redacted */
        SERVE_ROLE_OPERATOR,  /* capsule:operator: workloads, volumes, images, logs, exec */
        SERVE_ROLE_ADMIN,     /* capsule:admin: everything */
};
/* The least role that may call a method, kept in rpc_method.flags (bits 8-9) by the table in
 * services.c. A method that names none needs admin. */
#define SERVE_NEEDS(role) ((unsigned)(role) << 8)
static inline enum serve_role serve_needed_role(unsigned flags)
{
        unsigned r = (flags >> 8) & 3u;
        return r ? (enum serve_role)r : SERVE_ROLE_ADMIN;
}
/* "capsule:admin" etc. for a role; "none" for SERVE_ROLE_NONE. */
const char *serve_role_name(enum serve_role role);
/* The caller's role (auth.c), SERVE_ROLE_NONE when it has none. */
enum serve_role serve_call_role(struct rpc_call *call);

/* Role check for every call (auth.c): the caller's role must be at least the method's
 * (serve_needed_role); a refusal is PERMISSION_DENIED naming the role and the method. */
int serve_authorize(struct rpc_call *call, const struct rpc_method *method, void *ud,
                    struct cap_error *err);
/* Redacts a Workload message's env for API output (auth.c): secret values for every role, all
 * values for a reader. Returns 0 or negative with err. */
int serve_redact_workload(struct rpc_call *call, Capsule__V1__Workload *w, struct cap_error *err);

/* Registers every capsule.v1 method; unimplemented ones answer UNIMPLEMENTED (services.c). */
int serve_register_services(struct serve_ctx *ctx, struct rpc_server *srv, struct cap_error *err);

/* A Workload message (malloc'd) from a stored row plus the reconciler's status and, when it
 * runs, its cgroup's figures (workloads.c); NULL with err when the stored spec does not decode. */
Capsule__V1__Workload *serve_workload_message(struct serve_ctx *ctx, const struct store_workload *w,
                                              struct cap_error *err);

/* The Prometheus text of this capsule's figures (metrics.c): *text malloc'd. */
int serve_metrics_render(struct serve_ctx *ctx, char **text, size_t *len, struct cap_error *err);
int system_metrics(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err);
/* One health check as `capsulectl health` shows it. */
struct serve_check {
        const char *name;
        bool ok;
        char msg[512];
};
/* The health checks (store, containerd, /perm, time, and test-fail-health on a test image);
 * returns how many were filled (at most max). */
size_t serve_health_collect(struct serve_ctx *ctx, struct serve_check *out, size_t max);

/* A/B updates (updates.c): start makes the update engine (on a Capsule, or with
 * --update-sysroot: the ESP checked and mounted, the boot read), before the API answers; when it
 * cannot run, the reason goes to ctx->updater_error and the Updates RPCs answer it. run starts a
 * tentative boot's decision once the API answers. */
void serve_updates_start(struct serve_ctx *ctx);
void serve_updates_run(struct serve_ctx *ctx);
void serve_updates_stop(struct serve_ctx *ctx);
int updates_push(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);
int updates_status(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err);
int updates_commit(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err);
int updates_rollback(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                     struct cap_error *err);

/* capsule.v1.System handlers (system.c). */
/* The booted slot ("a"/"b") from capsule.slot= on the kernel command line; "" when absent
 * (malloc'd; NULL when out of memory). */
char *serve_booted_slot(void);
int system_version(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err);
int system_health(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err);
int workloads_apply(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                    struct cap_error *err);
int workloads_get(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err);
int workloads_list(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err);
int workloads_delete(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                     struct cap_error *err);
int workloads_restart(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                      struct cap_error *err);
int workloads_logs(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);
int workloads_exec(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);
/* Debug containers (exec.c): the host's "/" appears there in them. */
#define SERVE_DEBUG_HOST_ROOT "/host"
int workloads_debug(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);
/* Removes the debug containers (and their FIFOs) a serve that died mid-session left: at start,
 * before the API answers. */
void serve_debug_cleanup(struct serve_ctx *ctx);
int system_events(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);
int system_dmesg(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);
int system_apply_machine_config(struct rpc_call *call, const ProtobufCMessage *req,
                                ProtobufCMessage *resp, struct cap_error *err);
int system_reboot(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err);
