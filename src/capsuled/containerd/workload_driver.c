/* The containerd driver behind the workload driver interface (driver/driver.h): a thin adapter
 * from its ops to driver.h's ctrd_* calls. What is container-specific lives here: the OCI runtime
 * spec (spec.c), the shim's log writer URI, the network wait between task creation and start,
 * exec over FIFOs, OOM events from containerd and the cgroup SPEC_CGROUP_PARENT/NAME; and debug
 * containers (privileged, host or target namespaces, the host's / at /host) whose main process
 * the exec ops drive. */
#include "workload_driver.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "driver.h"
#include "driver/driver.h"
#include "spec.h"

/* Debug containers' cgroups, apart from the workloads' (SPEC_CGROUP_PARENT) so that nothing
 * that walks those counts them. */
#define DEBUG_CGROUP_PARENT "/capsule-debug"

struct ctrd_driver {
        struct workload_driver base;
        struct ctrd *c;
        char *log_writer;
        struct ctrd_events *events;
        driver_event_fn fn;
        void *ud;
};

static struct ctrd_driver *of(struct workload_driver *d)
{
        return d->state;
}

/* Percent-encodes a path for use inside a binary:// URI query value. */
static char *uri_escape(const char *s)
{
        size_t n = strlen(s);
        char *out = malloc(n * 3 + 1), *o = out;
        if (!out)
                return NULL;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || strchr("/-_.~", *p))
                        *o++ = (char)*p;
                else
                        o += sprintf(o, "%%%02X", *p);
        }
        *o = '\0';
        return out;
}

/* ctrd_run.before_start: the network's plugins ran while the container and its task were being
 * created; the workload's process starts only once its network is up. */
static int network_wait(void *ud, struct cap_error *err)
{
        const struct driver_run *run = ud;
        struct driver_network net = {0};
        return run->network_wait(run->network_wait_ud, &net, err);
}

struct gen_in_rootfs {
        struct spec_options *so;
        char **json;
        struct cap_error *err;
};

/* ctrd_image_with_rootfs's callback: the spec, with user names read from the image. */
static int gen_in_rootfs(const char *rootfs, void *ud)
{
        struct gen_in_rootfs *g = ud;
        g->so->rootfs = rootfs;
        int r = spec_generate(g->so, g->json, g->err);
        g->so->rootfs = NULL;
        return r;
}

static int cd_run(struct workload_driver *d, const struct driver_run *run, uint32_t *pid,
                  struct cap_error *err)
{
        struct ctrd_driver *cd = of(d);
        const Capsule__V1__WorkloadSpec *spec = run->spec;
        _cleanup_free_ char *spec_json = NULL, *log_esc = NULL, *exe_esc = NULL, *log_uri = NULL;
        struct spec_options so = {
            .workload = spec,
            .image_config_json = run->image_config_json,
            .volume_sources = run->volume_sources,
            .netns_path = run->netns_path,
            .hosts_path = run->hosts_path,
            .resolv_conf_path = run->resolv_conf_path,
            .pids_limit = 4096,
        };
        int rc;
        if (spec_user_names(&so) && run->image_chain_id) {
                /* a named user: resolved in the image's own /etc/passwd (a read-only view) */
                struct gen_in_rootfs g = {&so, &spec_json, err};
                rc = ctrd_image_with_rootfs(cd->c, run->image_chain_id, gen_in_rootfs, &g, err);
        } else {
                rc = spec_generate(&so, &spec_json, err);
        }
        if (rc < 0)
                return rc;
        log_esc = run->log_path ? uri_escape(run->log_path) : NULL;
        exe_esc = uri_escape(cd->log_writer);
        if (!log_esc || !exe_esc ||
            asprintf(&log_uri, "binary://%s?log-writer=%s", exe_esc, log_esc) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        struct ctrd_run cr = {
            .name = spec->name,
            .generation = run->generation,
            .image = spec->image,
            .spec_json = spec_json,
            .chain_id = run->image_chain_id,
            .stdout_path = log_uri,
            .stderr_path = log_uri,
            .before_start = run->network_wait ? network_wait : NULL,
            .before_start_ud = (void *)run,
        };
        return ctrd_container_run(cd->c, &cr, pid, err);
}

static int cd_stop(struct workload_driver *d, const char *name, int grace_ms, uint32_t *exit_status,
                   struct cap_error *err)
{
        return ctrd_container_stop(of(d)->c, name, grace_ms, exit_status, err);
}

static int cd_remove(struct workload_driver *d, const char *name, struct cap_error *err)
{
        return ctrd_container_remove(of(d)->c, name, err);
}

struct list_ctx {
        driver_workload_fn fn;
        void *ud;
};

static int list_one(const struct ctrd_workload *w, void *ud)
{
        struct list_ctx *l = ud;
        struct driver_workload dw = {
            .name = w->name ? w->name : w->id,
            .generation = w->generation,
            .pid = w->pid,
            .exit_status = w->exit_status,
            .exited_at_ns = w->exited_at_ns,
        };
        switch (w->state) {
        case CTRD_TASK_RUNNING:
                dw.state = DRIVER_STATE_RUNNING;
                break;
        case CTRD_TASK_STOPPED:
                dw.state = DRIVER_STATE_EXITED;
                break;
        case CTRD_TASK_NONE:
        case CTRD_TASK_CREATED:
                dw.state = DRIVER_STATE_CREATED;
                break;
        default:
                dw.state = DRIVER_STATE_UNKNOWN;
                break;
        }
        return l->fn(&dw, l->ud);
}

static int cd_list(struct workload_driver *d, driver_workload_fn fn, void *ud,
                   struct cap_error *err)
{
        struct list_ctx l = {.fn = fn, .ud = ud};
        return ctrd_list_workloads(of(d)->c, list_one, &l, err);
}

static void on_event(const struct ctrd_event *ev, void *ud)
{
        struct ctrd_driver *cd = ud;
        struct driver_event out = {
            .name = ev->container_id, .exit_status = ev->exit_status, .time_ns = ev->time_ns};
        if (ctrd_is_debug_id(ev->container_id))
                return; /* a debug container: its session waits for it, not the reconciler */
        switch (ev->kind) {
        case CTRD_EVENT_EXIT:
                /* exec'd processes exiting do not end the workload */
                if (ev->exec_id && ev->container_id && strcmp(ev->exec_id, ev->container_id) != 0)
                        return;
                out.kind = DRIVER_EVENT_EXIT;
                break;
        case CTRD_EVENT_OOM:
                out.kind = DRIVER_EVENT_OOM;
                break;
        case CTRD_EVENT_RESUBSCRIBED:
                out.kind = DRIVER_EVENT_RESYNC;
                out.name = NULL;
                break;
        default:
                return;
        }
        cd->fn(&out, cd->ud);
}

static int cd_subscribe(struct workload_driver *d, driver_event_fn fn, void *ud,
                        struct cap_error *err)
{
        struct ctrd_driver *cd = of(d);
        if (cd->events)
                return cap_error_set(err, -EBUSY, CAP_INTERNAL, "containerd events: subscribed");
        cd->fn = fn;
        cd->ud = ud;
        cd->events = ctrd_events_subscribe(cd->c, on_event, cd, err);
        return cd->events ? 0 : -EIO;
}

static void cd_unsubscribe(struct workload_driver *d)
{
        struct ctrd_driver *cd = of(d);
        ctrd_events_stop(cd->events);
        cd->events = NULL;
}

/* ---- exec: Tasks.Exec with the caller's FIFOs ---- */

struct driver_exec {
        char name[64];
        char exec_id[64]; /* "" for a debug container's main process */
        bool debug;       /* a debug container: kill kills all, delete removes the container */
};

static int cd_exec_start(struct workload_driver *d, const struct driver_exec_req *req,
                         struct driver_exec **out, uint32_t *pid, struct cap_error *err)
{
        struct ctrd_driver *cd = of(d);
        struct driver_exec *x = calloc(1, sizeof(*x));
        if (!x)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        snprintf(x->name, sizeof(x->name), "%s", req->name);
        snprintf(x->exec_id, sizeof(x->exec_id), "%s", req->exec_id);
        struct ctrd_exec_req cr = {
            .name = req->name,
            .exec_id = req->exec_id,
            .argv = req->argv,
            .env_extra = req->env_extra,
            .tty = req->tty,
            .stdin_path = req->stdin_path,
            .stdout_path = req->stdout_path,
            .stderr_path = req->tty ? NULL : req->stderr_path,
        };
        int r = ctrd_exec(cd->c, &cr, pid, err);
        if (r < 0) {
                free(x);
                return r;
        }
        if (req->tty && req->rows && req->cols)
                ctrd_exec_resize(cd->c, x->name, x->exec_id, req->cols, req->rows, NULL);
        *out = x;
        return 0;
}

static int cd_exec_resize(struct workload_driver *d, struct driver_exec *x, uint32_t cols,
                          uint32_t rows, struct cap_error *err)
{
        return ctrd_exec_resize(of(d)->c, x->name, x->exec_id, cols, rows, err);
}

static int cd_exec_close_stdin(struct workload_driver *d, struct driver_exec *x,
                               struct cap_error *err)
{
        return ctrd_exec_close_stdin(of(d)->c, x->name, x->exec_id, err);
}

static int cd_exec_wait(struct workload_driver *d, struct driver_exec *x, int timeout_ms,
                        uint32_t *exit_status, struct cap_error *err)
{
        return ctrd_exec_wait(of(d)->c, x->name, x->exec_id, timeout_ms, exit_status, err);
}

static int cd_exec_kill(struct workload_driver *d, struct driver_exec *x, int sig,
                        struct cap_error *err)
{
        return ctrd_task_kill(ctrd_client(of(d)->c), x->name, x->exec_id, sig, x->debug, err);
}

static void cd_exec_delete(struct workload_driver *d, struct driver_exec *x)
{
        struct cap_error err = {0};
        if (x && x->debug && ctrd_container_remove(of(d)->c, x->name, &err) < 0)
                log_warn("debug container %s: %s (removed at the next start)", x->name, err.msg);
        else if (x && !x->debug)
                ctrd_exec_delete(of(d)->c, x->name, x->exec_id, &err);
        free(x);
}

/* ---- debug containers: a container whose main process is the session ---- */

/* The pid of a running workload's init (whose namespaces a debug container joins). */
static int target_pid(struct ctrd_driver *cd, const char *target, uint32_t *pid,
                      struct cap_error *err)
{
        Containerd__Services__Tasks__V1__GetResponse *task = NULL;
        int r = ctrd_task_get(ctrd_client(cd->c), target, NULL, &task, err);
        if (r < 0 && err->status == CAP_NOT_FOUND)
                return cap_error_set(err, -ESRCH, CAP_FAILED_PRECONDITION,
                                     "target %s: the workload has no running container", target);
        if (r < 0)
                return cap_error_prefix(err, "target %s", target);
        bool running = task->process &&
                       task->process->status == CONTAINERD__V1__TYPES__STATUS__RUNNING &&
                       task->process->pid > 0;
        if (running)
                *pid = task->process->pid;
        protobuf_c_message_free_unpacked(&task->base, NULL);
        if (!running)
                return cap_error_set(err, -ESRCH, CAP_FAILED_PRECONDITION,
                                     "target %s: the workload is not running", target);
        return 0;
}

/* "K=V" strings as manifest env entries (pointing into kv; free the array and the keys). */
static Capsule__V1__WorkloadSpec__EnvEntry **env_entries(const char *const *kv, size_t *n)
{
        size_t k = 0;
        while (kv && kv[k])
                k++;
        *n = 0;
        Capsule__V1__WorkloadSpec__EnvEntry **v = calloc(k + 1, sizeof(*v) + sizeof(**v));
        if (!v)
                return NULL;
        Capsule__V1__WorkloadSpec__EnvEntry *e = (void *)(v + k + 1);
        for (size_t i = 0; i < k; i++) {
                const char *eq = strchr(kv[i], '=');
                e[i] = (Capsule__V1__WorkloadSpec__EnvEntry)CAPSULE__V1__WORKLOAD_SPEC__ENV_ENTRY__INIT;
                e[i].key = eq ? strndup(kv[i], (size_t)(eq - kv[i])) : strdup(kv[i]);
                e[i].value = (char *)(eq ? eq + 1 : "");
                v[(*n)++] = &e[i];
        }
        return v;
}

static void env_entries_free(Capsule__V1__WorkloadSpec__EnvEntry **v, size_t n)
{
        for (size_t i = 0; v && i < n; i++)
                free(v[i]->key);
        free(v);
}

static int cd_debug_start(struct workload_driver *d, const struct driver_debug_req *req,
                          struct driver_exec **out, uint32_t *pid, struct cap_error *err)
{
        struct ctrd_driver *cd = of(d);
        uint32_t join = 0;
        size_t n_argv = 0, n_env = 0;
        if (!ctrd_is_debug_id(req->id))
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "debug container id %s", req->id);
        if (req->target && target_pid(cd, req->target, &join, err) < 0)
                return err->code;
        while (req->argv && req->argv[n_argv])
                n_argv++;
        if (n_argv == 0 && !spec_image_has_command(req->image_config_json))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "command: image %s has no entrypoint or command: give one "
                                     "after --, e.g. `capsulectl debug --image %s -- sh`",
                                     req->image, req->image);
        Capsule__V1__WorkloadSpec__EnvEntry **env = env_entries(req->env_extra, &n_env);
        if (!env)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        Capsule__V1__WorkloadSpec w = CAPSULE__V1__WORKLOAD_SPEC__INIT;
        w.name = (char *)req->id;
        w.image = (char *)req->image;
        w.command = (char **)req->argv;
        w.n_command = n_argv;
        w.env = env;
        w.n_env = n_env;
        w.user = "0"; /* root, whatever the image says: it is a privileged tool */
        w.privileged = true;
        char cgroup[128];
        snprintf(cgroup, sizeof(cgroup), DEBUG_CGROUP_PARENT "/%s", req->id);
        uint64_t caps = 0;
        for (int cap = 0; cap < 64; cap++) {
                int in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
                if (in < 0)
                        break; /* past the kernel's last capability */
                if (in > 0)
                        caps |= 1ULL << cap;
        }
        struct spec_options so = {
            .workload = &w,
            .privileged_caps = caps,
            .image_config_json = req->image_config_json,
            .resolv_conf_path = req->resolv_conf_path,
            .cgroups_path = cgroup,
            .terminal = req->tty,
            .host_namespaces = req->target == NULL,
            .join_pid = join,
            .host_root = req->host_root,
        };
        _cleanup_free_ char *spec_json = NULL;
        int r = spec_generate(&so, &spec_json, err);
        env_entries_free(env, n_env);
        if (r < 0)
                return cap_error_prefix(err, "debug container");
        struct ctrd_label labels[] = {
            {CTRD_LABEL_DEBUG, req->target ? req->target : "(host)"},
            {CTRD_LABEL_IMAGE, req->image},
        };
        struct ctrd_run cr = {
            .name = req->id,
            .image = req->image,
            .spec_json = spec_json,
            .chain_id = req->image_chain_id,
            .stdin_path = req->stdin_path,
            .stdout_path = req->stdout_path,
            .stderr_path = req->tty ? NULL : req->stderr_path,
            .terminal = req->tty,
            .labels = labels,
            .n_labels = ARRAY_SIZE(labels),
        };
        struct driver_exec *x = calloc(1, sizeof(*x));
        if (!x)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        snprintf(x->name, sizeof(x->name), "%s", req->id);
        x->debug = true;
        r = ctrd_container_run(cd->c, &cr, pid, err);
        if (r < 0) {
                free(x);
                return cap_error_prefix(err, "debug container");
        }
        if (req->tty && req->rows && req->cols)
                ctrd_task_resize(ctrd_client(cd->c), x->name, NULL, req->cols, req->rows, NULL);
        *out = x;
        return 0;
}

static int cd_debug_cleanup(struct workload_driver *d, struct cap_error *err)
{
        return ctrd_debug_cleanup(of(d)->c, err);
}

static int cd_cgroup_path(struct workload_driver *d, const char *name, char *buf, size_t len)
{
        (void)d;
        int n = snprintf(buf, len, SPEC_CGROUP_PARENT "/%s", name);
        return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static void cd_free(struct workload_driver *d)
{
        struct ctrd_driver *cd = of(d);
        ctrd_events_stop(cd->events);
        free(cd->log_writer);
        free(cd);
}

static const struct workload_driver_ops containerd_ops = {
    .run = cd_run,
    .stop = cd_stop,
    .remove = cd_remove,
    .list = cd_list,
    .subscribe_exits = cd_subscribe,
    .unsubscribe_exits = cd_unsubscribe,
    .exec_start = cd_exec_start,
    .exec_resize = cd_exec_resize,
    .exec_close_stdin = cd_exec_close_stdin,
    .exec_wait = cd_exec_wait,
    .exec_kill = cd_exec_kill,
    .exec_delete = cd_exec_delete,
    .debug_start = cd_debug_start,
    .debug_cleanup = cd_debug_cleanup,
    .cgroup_path = cd_cgroup_path,
    .free = cd_free,
};

struct workload_driver *containerd_driver_new(struct ctrd *c, const char *log_writer,
                                              struct cap_error *err)
{
        struct ctrd_driver *cd = calloc(1, sizeof(*cd));
        if (cd)
                cd->log_writer = strdup(log_writer);
        if (!cd || !cd->log_writer) {
                free(cd);
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        cd->c = c;
        cd->base = (struct workload_driver){.name = "containerd",
                                            .noun = "container",
                                            .kind = CAPSULE__V1__WORKLOAD_KIND__CONTAINER,
                                            .ops = &containerd_ops,
                                            .state = cd};
        return &cd->base;
}
