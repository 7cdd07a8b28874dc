/* capsule-guest's one context struct and the functions the modules offer each other.
 *
 * capsule-guest runs in two modes that share everything below the startup code:
 *   - PID 1 inside a microVM (main.c: pid1_main): mounts, modules, network, the run config from
 *     /dev/vda, the root disk at /newroot, gRPC over AF_VSOCK, power off at the end;
 *   - host mode (`--listen unix:... --root DIR --config FILE`) for tests: none of the machine
 *     setup, gRPC on a unix socket, exits on SIGTERM.
 * The workload (workload.c), its log ring (logring.c), the child table and the gRPC service
 * (service.c) are the same code in both. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cmdline.h"
#include "common/error.h"
#include "logring.h"
#include "runconfig.h"

#define GUEST_LOG_RING_BYTES (1u << 20)
#define GUEST_MAX_CHILDREN 128
#define GUEST_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define GUEST_DEFAULT_STOP_GRACE_S 10

/* A process capsule-guest started and will reap (the workload, each Exec). */
struct guest_child {
        pid_t pid; /* 0 = free slot */
        bool done;
        int status; /* waitpid status once done */
};

struct guest_workload {
        pid_t pid;       /* 0 = not started */
        bool exited;
        int exit_code;   /* 128+signal for signals */
        int64_t started_ns, exited_ns;
        int out_fd, err_fd; /* read ends of its stdout/stderr pipes (owned by the pump) */
        pthread_t pump;
        bool pump_started;
};

struct guest_ctx {
        bool pid1;              /* PID 1 in a microVM (else host mode) */
        const char *root;       /* the workload's root: "/newroot" or --root DIR */
        bool chroot;            /* chroot into root before exec */
        int console_fd;         /* where workload output is echoed (serial console or stderr) */
        RunConfig *rc;
        struct guest_cmdline cmdline;
        char ip[32];            /* "10.88.0.5/16" or "" */
        char **env;             /* the workload's environment (with a default PATH) */

        pthread_mutex_t lock;   /* guards children, wl, ready */
        pthread_cond_t changed; /* broadcast when a child is reaped */
        struct guest_child children[GUEST_MAX_CHILDREN];
        struct guest_workload wl;
        bool ready;

        struct logring ring;
};

/* ---- workload.c: spawning, reaping, the workload ---- */

struct guest_spawn {
        char *const *argv;
        char *const *envp;
        bool chroot;            /* chroot(ctx->root) first */
        const char *cwd;        /* inside the root; NULL or "" = "/" */
        bool set_ids;
        uid_t uid;
        gid_t gid;
        const gid_t *groups;
        size_t n_groups;
        int stdin_fd, stdout_fd, stderr_fd; /* -1 = /dev/null */
        int ctty_fd;            /* pty slave to make the controlling terminal, -1 = none */
};

/* Forks a child in its own session that becomes s->argv[0] (looked up in the envp's PATH like
 * execvp). Returns 0 with *pid once the exec succeeded; if it failed, the child is reaped and the
 * error says which step failed ("chdir /x", "exec \"foo\""). */
int guest_spawn(struct guest_ctx *g, const struct guest_spawn *s, pid_t *pid,
                struct cap_error *err);
/* Waits up to timeout_ms (<0 = forever) for a spawned child; returns 1 and its waitpid status
 * (and frees its slot), 0 on timeout. */
int guest_child_wait(struct guest_ctx *g, pid_t pid, int timeout_ms, int *status);
/* Reaps every exited child (PID 1 duty: orphans too) and records ours. Non-blocking. */
void guest_reap(struct guest_ctx *g);
/* Exit code as a shell reports it: the status, or 128+signal. */
int guest_exit_code(int status);
/* A NULL-terminated copy of base with extra's KEY=VALUE entries overriding or added and PATH
 * defaulted; free with guest_env_free. */
char **guest_env_merge(char *const *base, size_t n_base, char *const *extra, size_t n_extra);
void guest_env_free(char **env);

/* Starts ctx->rc's workload with its output piped into the log ring and the console. */
int guest_workload_start(struct guest_ctx *g, struct cap_error *err);
/* Sends sig to the workload's process group (no-op when not running). */
void guest_workload_signal(struct guest_ctx *g, int sig);
/* Waits up to timeout_ms for the workload to exit; true if it has. */
bool guest_workload_wait(struct guest_ctx *g, int timeout_ms);
/* SIGTERM, up to grace_s seconds, SIGKILL, up to 5 s more. True once it has exited. */
bool guest_workload_stop(struct guest_ctx *g, unsigned grace_s);
/* Joins the output pump (after the workload exited). */
void guest_workload_join(struct guest_ctx *g);
int64_t guest_now_ns(void);

/* ---- service.c: capsule.guest.v1.Guest ---- */
struct rpc_server;
int guest_service_register(struct rpc_server *srv, struct guest_ctx *g, struct cap_error *err);

/* ---- vsock.c ---- */
/* Listens on AF_VSOCK port and hands every accepted connection to srv (on a detached thread). */
int guest_vsock_serve(struct rpc_server *srv, unsigned port, struct cap_error *err);

/* ---- netconf.c (PID 1 only) ---- */
/* lo up; with capsule.ip, the first non-lo interface gets the address, goes up and gets a
 * default route via capsule.gw. */
int guest_network_setup(const struct guest_cmdline *c, struct cap_error *err);

/* ---- mounts.c (PID 1 only) ---- */
int mounts_early(struct cap_error *err);
int mounts_newroot(const char *root, const char *root_dev, const RunConfig *rc,
                   struct cap_error *err);
/* /etc/hostname, /etc/hosts, /etc/resolv.conf under root; best-effort, warnings logged. */
void mounts_write_etc(const char *root, const char *hostname, const struct guest_cmdline *c);
/* Unmounts everything under root (deepest first) and root itself; logs what fails. */
void mounts_unmount_all(const char *root);

/* ---- modules.c (PID 1 only) ---- */
/* Loads every module listed in dir/modules.dep, dependencies first, with finit_module. */
int modules_load_all(const char *dir, struct cap_error *err);
