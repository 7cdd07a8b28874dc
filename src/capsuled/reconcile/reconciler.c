/* Implementation of the reconciler (see reconciler.h). One thread runs the passes; a pass works
 * on up to RECONCILE_PARALLEL workloads at once (each on one thread at a time). Stops (deletes,
 * orphans, replacements, restarts) are handed to the stopper (stopper.h), which runs them beside
 * each other and beside the passes: a pass never waits out a grace period, and a workload with a
 * stop in flight is left alone (STOPPING) until the stopper's finished callback kicks a pass.
 * Image pulls run on threads of their own, one per image (pulls.c-like table below): a pass that
 * finds a workload's image absent starts (or joins) its pull and moves on, and the pull's end
 * kicks a pass, so a slow registry holds up only the workloads of its images.
 * Driver operations run without the state lock, status updates take it briefly. It calls the
 * drivers only through their ops tables (driver/driver.h): nothing here knows what kind a
 * workload is. */
#include "reconciler.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/manifest.h"
#include "common/thread.h"
#include "driver/driver.h"
#include "images/images.h"
#include "images/reference.h"
#include "logs/logs.h"
#include "reconcile/stopper.h"
#include "serve/events.h"
#include "serve/serve.h"
#include "store/store.h"

#define MAX_EVENTS_KEPT 10

/* What the reconciler knows about one workload. */
struct wl_state {
        char name[64];
        Capsule__V1__Phase phase;
        uint32_t pid;
        int64_t started_ns;
        int64_t run_started_mono;   /* for the 10-minute backoff reset */
        uint32_t restarts;
        int32_t last_exit_code;
        char last_exit_reason[160];
        int64_t last_exit_ns;
        char ip[64];
        char message[512];
        char last_error[512];       /* why the last start failed ("" after a good start) */
        int64_t next_try_mono_ns;   /* backoff deadline, 0 = none */
        uint32_t backoff_s;
        uint64_t observed_generation;
        char image_digest[80];
        bool oom;                   /* an OOM event was seen for the current run */
        bool force_restart;
        bool seen;                  /* mark for the pass */
        bool history_loaded;        /* restarts and last exit read back from the store */
        struct image_pull *pull;    /* the pull it waits for or waited for last (or NULL) */
        unsigned long pull_seq;     /* which run of that pull it waits for, 0 = none */
        struct wl_state *next;
};

/* The pull of one image (by normalised name), on a thread of its own; kept (and reused by the
 * image's next pull) until the reconciler is freed, so wl_state.pull stays valid. Fields under
 * reconciler.lock except done/total. */
struct image_pull {
        struct reconciler *r;
        char *name;                 /* normalised reference */
        char *ref;                  /* as the spec wrote it: what the thread pulls */
        Capsule__V1__PullPolicy policy;
        unsigned long seq;          /* this run's number (unique over the reconciler) */
        bool running;
        int rc;                     /* of the last finished run */
        char error[512];
        _Atomic uint64_t done, total; /* layer bytes, as the registry client reports them */
        pthread_mutex_t unpack_lock; /* one unpack of this image at a time */
        struct image_pull *next;
};

struct reconciler {
        struct serve_ctx *ctx;
        pthread_t thread;
        bool started;
        pthread_mutex_t lock;
        pthread_cond_t cond;      /* kicks and pass completion */
        bool kicked, stopping;
        uint64_t passes_started, passes_done;
        int64_t last_pass_ns; /* how long the last finished pass took (reconciler_pass_stats) */
        struct wl_state *states;
        struct workload_driver *subscribed[DRIVER_KINDS]; /* exit events flow from these */
        struct stopper *stopper;
        struct image_pull *pulls;
        unsigned long pull_seq;   /* the last run number handed out */
        unsigned pull_threads;    /* pull threads alive (reconciler_free waits for 0) */
        atomic_bool pull_cancel;  /* shutting down: pulls end at once */
};

static int64_t mono_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t real_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Under r->lock. */
static struct wl_state *state_get(struct reconciler *r, const char *name, bool create)
{
        for (struct wl_state *s = r->states; s; s = s->next)
                if (strcmp(s->name, name) == 0)
                        return s;
        if (!create)
                return NULL;
        struct wl_state *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        snprintf(s->name, sizeof(s->name), "%s", name);
        s->phase = CAPSULE__V1__PHASE__PENDING;
        s->next = r->states;
        r->states = s;
        return s;
}

static void set_phase(struct reconciler *r, struct wl_state *s, Capsule__V1__Phase phase, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void set_phase(struct reconciler *r, struct wl_state *s, Capsule__V1__Phase phase, const char *fmt, ...)
{
        pthread_mutex_lock(&r->lock);
        s->phase = phase;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->message, sizeof(s->message), fmt, ap);
        va_end(ap);
        pthread_mutex_unlock(&r->lock);
}

/* A driver's exit, OOM or resync event (on its thread): note an OOM, then look again. */
static void on_driver_event(const struct driver_event *ev, void *ud)
{
        struct reconciler *r = ud;
        if (ev->kind == DRIVER_EVENT_OOM && ev->name) {
                pthread_mutex_lock(&r->lock);
                struct wl_state *s = state_get(r, ev->name, false);
                if (s)
                        s->oom = true;
                pthread_mutex_unlock(&r->lock);
        }
        reconciler_kick(r);
}

/* The stopper's release callback (on its thread, the stop still busy): release the network and
 * volumes of a deleted or replaced workload. */
static void on_stopped(const char *name, struct workload_driver *drv, unsigned flags, void *ud)
{
        struct reconciler *r = ud;
        (void)drv;
        if (flags & STOPPER_DETACH)
                serve_workload_detached(r->ctx, name);
}

/* Once a stop is over: look again (a replacement or restart starts, a pass whose listing
 * predates the end of the stop is followed by one that does not). */
static void on_stop_finished(void *ud)
{
        reconciler_kick(ud);
}

struct reconciler *reconciler_new(struct serve_ctx *ctx, struct cap_error *err)
{
        struct reconciler *r = calloc(1, sizeof(*r));
        if (!r) {
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        r->ctx = ctx;
        pthread_mutex_init(&r->lock, NULL);
        atomic_init(&r->pull_cancel, false);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&r->cond, &ca);
        pthread_condattr_destroy(&ca);
        r->stopper = stopper_new(on_stopped, on_stop_finished, r, err);
        if (!r->stopper) {
                reconciler_free(r);
                return NULL;
        }
        return r;
}

/* ---- one workload ------------------------------------------------------------------------- */

/* What actually runs for a workload, as its driver lists it. */
struct actual {
        char name[64];
        struct workload_driver *drv; /* whose it is */
        uint64_t generation;
        enum driver_state state;
        uint32_t pid;
        uint32_t exit_status;
        int64_t exited_at_ns;
        bool matched;
};

struct actual_list {
        struct actual *v;
        size_t n, cap;
        struct workload_driver *drv; /* the driver being listed */
};

static int collect_actual(const struct driver_workload *w, void *ud)
{
        struct actual_list *l = ud;
        if (l->n == l->cap) {
                size_t nc = l->cap ? l->cap * 2 : 16;
                struct actual *nv = realloc(l->v, nc * sizeof(*nv));
                if (!nv)
                        return -ENOMEM;
                l->v = nv;
                l->cap = nc;
        }
        struct actual *a = &l->v[l->n++];
        memset(a, 0, sizeof(*a));
        snprintf(a->name, sizeof(a->name), "%s", w->name);
        a->drv = l->drv;
        a->generation = w->generation;
        a->state = w->state;
        a->pid = w->pid;
        a->exit_status = w->exit_status;
        a->exited_at_ns = w->exited_at_ns;
        return 0;
}

static struct actual *find_actual(struct actual_list *l, const char *name)
{
        for (size_t i = 0; i < l->n; i++)
                if (strcmp(l->v[i].name, name) == 0)
                        return &l->v[i];
        return NULL;
}

/* Hands the graceful stop of either kind (SIGTERM, through the guest agent for a microVM, grace,
 * SIGKILL) and then the removal to the stopper; with detach, its network and volume attachments
 * are released afterwards. Returns at once; a stop already in flight for name is left as it is. */
static void stop_workload_async(struct reconciler *r, const char *name, struct workload_driver *drv,
                                int grace_ms, bool detach)
{
        struct cap_error err = {0};
        unsigned flags = STOPPER_REMOVE | (detach ? STOPPER_DETACH : 0);
        if (stopper_submit(r->stopper, name, drv, grace_ms, flags, &err) < 0 && err.code != -EALREADY)
                log_warn("stop %s: %s", name, err.msg);
}

/* Removes a workload's container or microVM. With detach, also its network and volume
 * attachments (for deletes and replacements); restarts of the same generation keep them, so the
 * workload keeps its address. */
static void remove_workload(struct reconciler *r, const char *name, struct workload_driver *drv,
                            bool detach)
{
        struct cap_error err = {0};
        if (drv->ops->remove(drv, name, &err) < 0)
                log_warn("remove %s %s: %s", drv->noun, name, err.msg);
        if (detach)
                serve_workload_detached(r->ctx, name);
}

struct network_wait {
        struct serve_ctx *ctx;
        const Capsule__V1__WorkloadSpec *spec;
        struct serve_workload_env *env;
        bool done;
        int64_t waited_ns;
};

/* driver_run.network_wait: the network's plugins ran while the driver was creating the
 * workload; its process starts only once its network is up. Once done, answers again. */
static int network_wait(void *ud, struct driver_network *net, struct cap_error *err)
{
        struct network_wait *nw = ud;
        if (!nw->done) {
                int64_t t = mono_ns();
                int r = serve_workload_attach_end(nw->ctx, nw->spec, nw->env, err);
                nw->waited_ns = mono_ns() - t;
                if (r < 0)
                        return r;
                nw->done = true;
        }
        *net = (struct driver_network){.ip = nw->env->ip,
                                       .prefix_len = nw->env->prefix_len,
                                       .gateway = nw->env->gateway};
        return 0;
}

/* Records that generation of the workload runs as pid. */
static void mark_running(struct reconciler *r, struct wl_state *s, const Capsule__V1__WorkloadSpec *spec,
                         uint64_t generation, uint32_t pid, const char *ip)
{
        pthread_mutex_lock(&r->lock);
        s->phase = CAPSULE__V1__PHASE__RUNNING;
        s->pid = pid;
        s->started_ns = real_ns();
        s->run_started_mono = mono_ns();
        s->observed_generation = generation;
        s->oom = false;
        snprintf(s->ip, sizeof(s->ip), "%s", ip ? ip : "");
        s->message[0] = '\0';
        s->last_error[0] = '\0';
        pthread_mutex_unlock(&r->lock);
        events_publish(r->ctx->events, "workload", spec->name, "started", "pid %u generation %llu", pid,
                       (unsigned long long)generation);
}

/* ---- image pulls ------------------------------------------------------------------------- */

/* Under r->lock: the pull record of the image name, made if absent (NULL: out of memory). */
static struct image_pull *pull_get(struct reconciler *r, const char *name)
{
        for (struct image_pull *ip = r->pulls; ip; ip = ip->next)
                if (strcmp(ip->name, name) == 0)
                        return ip;
        struct image_pull *ip = calloc(1, sizeof(*ip));
        if (!ip || !(ip->name = strdup(name))) {
                free(ip);
                return NULL;
        }
        ip->r = r;
        atomic_init(&ip->done, 0);
        atomic_init(&ip->total, 0);
        pthread_mutex_init(&ip->unpack_lock, NULL);
        ip->next = r->pulls;
        r->pulls = ip;
        return ip;
}

static void pull_progress(void *ud, uint64_t done, uint64_t total)
{
        struct image_pull *ip = ud;
        atomic_store(&ip->total, total);
        atomic_store(&ip->done, done);
}

static void *pull_thread(void *arg)
{
        struct image_pull *ip = arg;
        struct reconciler *r = ip->r;
        struct images_pull_hooks hooks = {.progress = pull_progress, .progress_ud = ip,
                                          .cancel = &r->pull_cancel};
        struct cap_error err = {0};
        int64_t t0 = mono_ns();
        int rc = serve_image_pull(r->ctx, ip->ref, ip->policy, &hooks, &err);
        if (rc < 0)
                log_warn("reconcile: pulling %s failed after %lld ms: %s", ip->name,
                         (long long)(mono_ns() - t0) / 1000000, err.msg);
        else
                log_info("reconcile: pulled %s in %lld ms", ip->name, (long long)(mono_ns() - t0) / 1000000);
        pthread_mutex_lock(&r->lock);
        ip->rc = rc;
        snprintf(ip->error, sizeof(ip->error), "%s", rc < 0 ? err.msg : "");
        ip->running = false;
        pthread_mutex_unlock(&r->lock);
        reconciler_kick(r); /* its workloads go on in the next pass */
        pthread_mutex_lock(&r->lock);
        r->pull_threads--;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        return NULL;
}

/* Under r->lock: starts a run of ip's pull for spec's image. Returns 0 or fills err. */
static int pull_start(struct reconciler *r, struct image_pull *ip, const Capsule__V1__WorkloadSpec *spec,
                      struct cap_error *err)
{
        char *ref = strdup(spec->image);
        if (!ref)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        free(ip->ref);
        ip->ref = ref;
        ip->policy = spec->pull_policy;
        ip->seq = ++r->pull_seq;
        ip->rc = 0;
        ip->error[0] = '\0';
        atomic_store(&ip->done, 0);
        atomic_store(&ip->total, 0);
        int e = thread_start_detached(pull_thread, ip);
        if (e != 0)
                return cap_error_set(err, -e, CAP_INTERNAL, "image %s: cannot start its pull thread", ip->name);
        ip->running = true;
        r->pull_threads++;
        return 0;
}

#define IMAGE_PULLING 1 /* image_ready: a pull is under way, its end kicks a pass */

/* Makes sure spec's image is present and unpacked without waiting for a registry: present ones
 * are unpacked here (one unpack of an image at a time); for absent ones (or pullPolicy Always) a
 * pull of the image is started, or joined when one is under way, and IMAGE_PULLING returned.
 * The next look after the pull's end takes its outcome. Returns 0, IMAGE_PULLING or fills err. */
static int image_ready(struct reconciler *r, struct wl_state *s, const Capsule__V1__WorkloadSpec *spec,
                       char **digest, char **config_json, char **chain_id, struct cap_error *err)
{
        _cleanup_free_ char *name = NULL;
        if (image_ref_normalize(spec->image, &name, err) < 0)
                return err->code;
        pthread_mutex_lock(&r->lock);
        struct image_pull *ip = pull_get(r, name);
        if (!ip) {
                pthread_mutex_unlock(&r->lock);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        bool pulled = false;
        if (ip->running) {
                bool joins = s->pull != ip || s->pull_seq != ip->seq;
                s->pull = ip;
                s->pull_seq = ip->seq;
                s->phase = CAPSULE__V1__PHASE__PULLING;
                snprintf(s->message, sizeof(s->message), "pulling %s", spec->image);
                pthread_mutex_unlock(&r->lock);
                if (joins)
                        events_publish(r->ctx->events, "workload", spec->name, "pulling",
                                       "image %s (joining the pull under way)", name);
                return IMAGE_PULLING;
        }
        if (s->pull == ip && s->pull_seq && s->pull_seq == ip->seq) {
                /* the pull it waited for is over */
                s->pull_seq = 0;
                if (ip->rc < 0) {
                        int rc = cap_error_set(err, ip->rc, CAP_UNAVAILABLE, "%s", ip->error);
                        pthread_mutex_unlock(&r->lock);
                        return rc;
                }
                pulled = true;
        }
        pthread_mutex_unlock(&r->lock);

        bool need_pull = !pulled && spec->pull_policy == CAPSULE__V1__PULL_POLICY__PULL_ALWAYS;
        if (!need_pull) {
                pthread_mutex_lock(&ip->unpack_lock);
                int rc = serve_image_ensure(r->ctx, spec->image, CAPSULE__V1__PULL_POLICY__PULL_NEVER, digest,
                                            config_json, chain_id, err);
                pthread_mutex_unlock(&ip->unpack_lock);
                if (rc == 0)
                        return 0;
                if (pulled || rc != -ENOENT || err->status != CAP_FAILED_PRECONDITION ||
                    spec->pull_policy == CAPSULE__V1__PULL_POLICY__PULL_NEVER)
                        return rc;
                cap_error_clear(err);
        }
        pthread_mutex_lock(&r->lock);
        bool started = false;
        if (!ip->running) {
                if (pull_start(r, ip, spec, err) < 0) {
                        pthread_mutex_unlock(&r->lock);
                        return err->code;
                }
                started = true;
        }
        s->pull = ip;
        s->pull_seq = ip->seq;
        s->phase = CAPSULE__V1__PHASE__PULLING;
        snprintf(s->message, sizeof(s->message), "pulling %s", spec->image);
        pthread_mutex_unlock(&r->lock);
        events_publish(r->ctx->events, "workload", spec->name, "pulling", "image %s%s", name,
                       started ? "" : " (joining the pull under way)");
        return IMAGE_PULLING;
}

/* Under r->lock: what status shows while s waits for a pull. */
static void pull_message(const struct wl_state *s, char *out, size_t size)
{
        const struct image_pull *ip = s->pull;
        uint64_t done = atomic_load(&ip->done), total = atomic_load(&ip->total);
        if (total)
                snprintf(out, size, "pulling %s (%.1f of %.1f MiB)", ip->name, (double)done / (1 << 20),
                         (double)total / (1 << 20));
        else
                snprintf(out, size, "pulling %s (fetching its manifest)", ip->name);
}

/* ---- starting a workload ------------------------------------------------------------------ */

/* Creates and starts the workload of spec through drv, setting up its network meanwhile.
 * Returns 0, IMAGE_PULLING (nothing done yet: the image is being pulled) or fills err. */
static int run_workload(struct reconciler *r, struct wl_state *s, struct workload_driver *drv,
                        const Capsule__V1__WorkloadSpec *spec, uint64_t generation,
                        struct cap_error *err)
{
        struct serve_ctx *ctx = r->ctx;
        _cleanup_free_ char *config_json = NULL, *chain_id = NULL, *digest = NULL;
        _cleanup_free_ char *log_path = NULL;

        int64_t t0 = mono_ns();
        int ir = image_ready(r, s, spec, &digest, &config_json, &chain_id, err);
        if (ir == IMAGE_PULLING)
                return IMAGE_PULLING;
        if (ir < 0)
                return cap_error_prefix(err, "image %s", spec->image);
        pthread_mutex_lock(&r->lock);
        snprintf(s->image_digest, sizeof(s->image_digest), "%s", digest ? digest : "");
        pthread_mutex_unlock(&r->lock);

        set_phase(r, s, CAPSULE__V1__PHASE__CREATING, "creating %s", drv->noun);
        int64_t t1 = mono_ns();
        struct serve_workload_env wenv = {0};
        if (serve_workload_attach_begin(ctx, spec, &wenv, err) < 0)
                return -1;
        int64_t t2 = mono_ns();
        log_path = logs_path(ctx->root, spec->name);
        if (!log_path) {
                serve_workload_env_free(&wenv);
                serve_workload_detached(ctx, spec->name);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        struct network_wait nw = {.ctx = ctx, .spec = spec, .env = &wenv};
        struct driver_run run = {
                .spec = spec,
                .generation = generation,
                .image_digest = digest,
                .image_config_json = config_json,
                .image_chain_id = chain_id,
                .volume_sources = (const char *const *)wenv.volume_sources,
                .netns_path = wenv.netns_path,
                .hosts_path = wenv.hosts_path,
                .resolv_conf_path = wenv.resolv_conf_path,
                .log_path = log_path,
                .network_wait = network_wait,
                .network_wait_ud = &nw,
        };
        uint32_t pid = 0;
        int rc = drv->ops->run(drv, &run, &pid, err);
        if (rc < 0 && err->status == CAP_ALREADY_EXISTS) {
                /* a stale one of ours (e.g. half-created before a crash): replace it */
                cap_error_clear(err);
                remove_workload(r, spec->name, drv, false);
                rc = drv->ops->run(drv, &run, &pid, err);
        }
        if (rc < 0) {
                serve_workload_env_free(&wenv);
                serve_workload_detached(ctx, spec->name);
                return rc;
        }
        int64_t t3 = mono_ns();
        log_debug("run %s: image %lld ms, volumes+network start %lld ms, create+start %lld ms "
                  "(of which waiting for the network %lld ms)", spec->name, (long long)(t1 - t0) / 1000000,
                  (long long)(t2 - t1) / 1000000, (long long)(t3 - t2) / 1000000, (long long)nw.waited_ns / 1000000);
        mark_running(r, s, spec, generation, pid, wenv.ip);
        serve_workload_env_free(&wenv);
        return 0;
}

/* Records a finished run once (identified by its exit time). Returns true if it was new. */
static bool record_exit(struct reconciler *r, struct wl_state *s, const struct actual *a)
{
        pthread_mutex_lock(&r->lock);
        bool fresh = a->exited_at_ns != s->last_exit_ns || s->phase == CAPSULE__V1__PHASE__RUNNING;
        if (fresh) {
                s->last_exit_ns = a->exited_at_ns ? a->exited_at_ns : real_ns();
                s->last_exit_code = (int32_t)a->exit_status;
                if (s->oom)
                        snprintf(s->last_exit_reason, sizeof(s->last_exit_reason),
                                 "OOMKilled: exceeded its memory limit (exit code %u)", a->exit_status);
                else if (a->exit_status > 128 && a->exit_status < 128 + 65)
                        snprintf(s->last_exit_reason, sizeof(s->last_exit_reason),
                                 "killed by signal %u (exit code %u)", a->exit_status - 128, a->exit_status);
                else
                        snprintf(s->last_exit_reason, sizeof(s->last_exit_reason), "exited with code %u",
                                 a->exit_status);
                s->pid = 0;
                /* backoff: reset after a long healthy run, else double from 1 s to 5 min */
                int64_t ran_s = s->run_started_mono ? (mono_ns() - s->run_started_mono) / 1000000000LL : 0;
                if (ran_s >= RECONCILE_BACKOFF_RESET_SECONDS)
                        s->backoff_s = 0;
                s->backoff_s = s->backoff_s ? s->backoff_s * 2 : 1;
                if (s->backoff_s > RECONCILE_BACKOFF_MAX_SECONDS)
                        s->backoff_s = RECONCILE_BACKOFF_MAX_SECONDS;
                s->next_try_mono_ns = mono_ns() + (int64_t)s->backoff_s * 1000000000LL;
        }
        pthread_mutex_unlock(&r->lock);
        if (fresh)
                events_publish(r->ctx->events, "workload", s->name, "exited", "%s", s->last_exit_reason);
        return fresh;
}

static bool policy_restarts(Capsule__V1__RestartPolicy p, int32_t code)
{
        switch (p) {
        case CAPSULE__V1__RESTART_POLICY__NEVER: return false;
        case CAPSULE__V1__RESTART_POLICY__ON_FAILURE: return code != 0;
        default: return true;
        }
}

/* Restarts and the last exit survive restarts of capsuled serve (store_history): read back once
 * per process, when they belong to this incarnation and generation of the workload. */
static void history_load(struct reconciler *r, struct wl_state *s, const struct store_workload *w)
{
        struct store_history h;
        struct cap_error err = {0};
        if (store_get_history(r->ctx->store, w->name, &h, &err) < 0) {
                if (err.status != CAP_NOT_FOUND)
                        log_warn("reconcile: %s: reading its history: %s", w->name, err.msg);
                s->history_loaded = true;
                return;
        }
        pthread_mutex_lock(&r->lock);
        if (h.created_ns == w->created_ns && h.generation == w->generation) {
                s->restarts = h.restarts;
                s->last_exit_code = h.last_exit_code;
                s->last_exit_ns = h.last_exit_ns;
                snprintf(s->last_exit_reason, sizeof(s->last_exit_reason), "%s", h.last_exit_reason);
        }
        s->history_loaded = true;
        pthread_mutex_unlock(&r->lock);
        store_history_free(&h);
}

static void history_save(struct reconciler *r, struct wl_state *s, const struct store_workload *w)
{
        char reason[sizeof(s->last_exit_reason)];
        struct store_history h = {.created_ns = w->created_ns, .generation = w->generation,
                                  .last_exit_reason = reason};
        pthread_mutex_lock(&r->lock);
        h.restarts = s->restarts;
        h.last_exit_code = s->last_exit_code;
        h.last_exit_ns = s->last_exit_ns;
        memcpy(reason, s->last_exit_reason, sizeof(reason));
        pthread_mutex_unlock(&r->lock);
        struct cap_error err = {0};
        if (store_put_history(r->ctx->store, w->name, &h, &err) < 0)
                log_warn("reconcile: %s: saving its history: %s", w->name, err.msg);
}

/* Brings one desired workload to its desired state; returns the monotonic time at which it wants
 * another look (0 = none). */
static int64_t reconcile_one(struct reconciler *r, const struct store_workload *w,
                             const Capsule__V1__WorkloadSpec *spec, struct actual *a,
                             unsigned long epoch)
{
        struct cap_error err = {0};
        pthread_mutex_lock(&r->lock);
        struct wl_state *s = state_get(r, w->name, true);
        pthread_mutex_unlock(&r->lock);
        if (!s)
                return 0;
        s->seen = true;
        if (!s->history_loaded)
                history_load(r, s, w);

        const char *why = NULL;
        struct workload_driver *drv = driver_for_kind(&r->ctx->drivers, spec->kind, &why);
        if (!drv) {
                set_phase(r, s, CAPSULE__V1__PHASE__FAILED, "%s", why);
                return 0;
        }
        if (a)
                a->matched = true;
        if (stopper_busy(r->stopper, w->name)) {
                /* a stop is in flight (a delete, replacement or restart): its end kicks a pass */
                pthread_mutex_lock(&r->lock);
                if (s->phase != CAPSULE__V1__PHASE__STOPPING) {
                        s->phase = CAPSULE__V1__PHASE__STOPPING;
                        snprintf(s->message, sizeof(s->message), "stopping");
                }
                pthread_mutex_unlock(&r->lock);
                return 0;
        }
        if (a && stopper_epoch(r->stopper) != epoch)
                return 0; /* a stop ended since the listing: it may be gone; the next pass sees */
        if (a) {
                if (a->generation != w->generation || a->drv != drv) {
                        set_phase(r, s, CAPSULE__V1__PHASE__STOPPING, "replacing generation %llu with %llu",
                                  (unsigned long long)a->generation, (unsigned long long)w->generation);
                        events_publish(r->ctx->events, "workload", w->name, "replacing",
                                       "generation %llu -> %llu", (unsigned long long)a->generation,
                                       (unsigned long long)w->generation);
                        pthread_mutex_lock(&r->lock);
                        s->restarts = 0;
                        s->backoff_s = 0;
                        s->next_try_mono_ns = 0;
                        pthread_mutex_unlock(&r->lock);
                        history_save(r, s, w);
                        /* the new generation starts in the pass after the stopper is done */
                        stop_workload_async(r, w->name, a->drv, RECONCILE_STOP_GRACE_MS, true);
                        return 0;
                } else if (a->state == DRIVER_STATE_RUNNING && !s->force_restart) {
                        if (s->phase != CAPSULE__V1__PHASE__RUNNING) {
                                /* first sight in this process (adoption): record its volume
                                 * attachments and network again; both are idempotent */
                                struct serve_workload_env env;
                                if (serve_workload_attach(r->ctx, spec, &env, &err) < 0)
                                        log_warn("adopt %s: %s", w->name, err.msg);
                                else
                                        serve_workload_env_free(&env);
                        }
                        pthread_mutex_lock(&r->lock);
                        if (s->phase != CAPSULE__V1__PHASE__RUNNING) {
                                /* adopted after a control-plane restart */
                                if (!s->started_ns)
                                        s->started_ns = real_ns();
                                if (!s->run_started_mono)
                                        s->run_started_mono = mono_ns();
                                s->message[0] = '\0';
                        }
                        s->phase = CAPSULE__V1__PHASE__RUNNING;
                        s->pid = a->pid;
                        s->observed_generation = w->generation;
                        if (!s->ip[0])
                                serve_workload_ip(r->ctx, w->name, s->ip, sizeof(s->ip));
                        pthread_mutex_unlock(&r->lock);
                        return 0;
                } else if (s->force_restart) {
                        pthread_mutex_lock(&r->lock);
                        s->force_restart = false;
                        s->backoff_s = 0;
                        s->next_try_mono_ns = 0;
                        s->restarts++;
                        pthread_mutex_unlock(&r->lock);
                        history_save(r, s, w);
                        events_publish(r->ctx->events, "workload", w->name, "restarting", "restart requested");
                        set_phase(r, s, CAPSULE__V1__PHASE__STOPPING, "restarting");
                        /* it starts again in the pass after the stopper is done; it keeps its
                         * network and volumes (no detach), so its address too */
                        stop_workload_async(r, w->name, a->drv, RECONCILE_STOP_GRACE_MS, false);
                        return 0;
                } else {
                        /* the task ended (or never started) */
                        if (record_exit(r, s, a))
                                history_save(r, s, w);
                        if (!policy_restarts(spec->restart, s->last_exit_code)) {
                                set_phase(r, s, CAPSULE__V1__PHASE__EXITED, "%s; restart policy %s",
                                          s->last_exit_reason, manifest_restart_name(spec->restart));
                                return 0;
                        }
                        int64_t now = mono_ns();
                        if (now < s->next_try_mono_ns) {
                                set_phase(r, s, CAPSULE__V1__PHASE__BACKOFF, "%s; restarting in %us",
                                          s->last_exit_reason, s->backoff_s);
                                return s->next_try_mono_ns;
                        }
                        remove_workload(r, w->name, a->drv, false);
                        pthread_mutex_lock(&r->lock);
                        s->restarts++;
                        pthread_mutex_unlock(&r->lock);
                        history_save(r, s, w);
                        a = NULL;
                }
        }
        /* nothing runs: start it, unless a backoff deadline is pending */
        if (s->force_restart) {
                pthread_mutex_lock(&r->lock);
                s->force_restart = false;
                s->next_try_mono_ns = 0;
                pthread_mutex_unlock(&r->lock);
        }
        int64_t now = mono_ns();
        if (s->next_try_mono_ns && now < s->next_try_mono_ns && s->observed_generation == w->generation) {
                set_phase(r, s, CAPSULE__V1__PHASE__BACKOFF, "%s; retrying in %llds",
                          s->last_error[0] ? s->last_error : s->last_exit_reason,
                          (long long)((s->next_try_mono_ns - now) / 1000000000LL + 1));
                return s->next_try_mono_ns;
        }
        int rr = run_workload(r, s, drv, spec, w->generation, &err);
        if (rr == IMAGE_PULLING)
                return 0; /* the pull's end kicks a pass */
        if (rr < 0) {
                pthread_mutex_lock(&r->lock);
                s->backoff_s = s->backoff_s ? s->backoff_s * 2 : 1;
                if (s->backoff_s > RECONCILE_BACKOFF_MAX_SECONDS)
                        s->backoff_s = RECONCILE_BACKOFF_MAX_SECONDS;
                s->next_try_mono_ns = mono_ns() + (int64_t)s->backoff_s * 1000000000LL;
                s->observed_generation = w->generation;
                s->phase = CAPSULE__V1__PHASE__BACKOFF;
                snprintf(s->last_error, sizeof(s->last_error), "%s", err.msg);
                snprintf(s->message, sizeof(s->message), "%s; retrying in %us", err.msg, s->backoff_s);
                pthread_mutex_unlock(&r->lock);
                events_publish(r->ctx->events, "workload", w->name, "failed", "%s", err.msg);
                return s->next_try_mono_ns;
        }
        return 0;
}

/* The workloads of one pass, handed out to up to RECONCILE_PARALLEL threads. */
struct pass_work {
        struct reconciler *r;
        const struct store_workload *ws;
        size_t n;
        struct actual_list *actual;
        unsigned long epoch; /* the stopper's, before the listing */
        atomic_size_t next;
        pthread_mutex_t lock; /* for wake */
        int64_t wake;
};

static void *pass_worker(void *arg)
{
        struct pass_work *pw = arg;
        for (size_t i; (i = atomic_fetch_add(&pw->next, 1)) < pw->n;) {
                const struct store_workload *w = &pw->ws[i];
                Capsule__V1__WorkloadSpec *spec = capsule__v1__workload_spec__unpack(NULL, w->spec_len, w->spec);
                if (!spec) {
                        log_error("reconcile: workload %s: stored spec does not decode", w->name);
                        continue;
                }
                int64_t t = reconcile_one(pw->r, w, spec, find_actual(pw->actual, w->name), pw->epoch);
                capsule__v1__workload_spec__free_unpacked(spec, NULL);
                pthread_mutex_lock(&pw->lock);
                if (t && (!pw->wake || t < pw->wake))
                        pw->wake = t;
                pthread_mutex_unlock(&pw->lock);
        }
        return NULL;
}

/* reconcile_one for every desired workload, several at once (each one's work is mostly waiting
 * on the drivers and the CNI plugins), so that workloads applied together start together.
 * Returns the earliest deadline asked for (0 = none). */
static int64_t reconcile_all(struct reconciler *r, const struct store_workload *ws, size_t n,
                             struct actual_list *actual, unsigned long epoch)
{
        struct pass_work pw = {.r = r, .ws = ws, .n = n, .actual = actual, .epoch = epoch};
        atomic_init(&pw.next, 0);
        pthread_mutex_init(&pw.lock, NULL);
        pthread_t helpers[RECONCILE_PARALLEL - 1];
        size_t n_helpers = 0;
        while (n_helpers < ARRAY_SIZE(helpers) && n_helpers + 1 < n &&
               pthread_create(&helpers[n_helpers], NULL, pass_worker, &pw) == 0)
                n_helpers++;
        pass_worker(&pw); /* this thread works too */
        for (size_t i = 0; i < n_helpers; i++)
                pthread_join(helpers[i], NULL);
        pthread_mutex_destroy(&pw.lock);
        return pw.wake;
}

/* One full pass. Returns the earliest monotonic deadline anyone asked for (0 = none). */
static int64_t reconcile_pass(struct reconciler *r)
{
        struct cap_error err = {0};
        struct store_workload *ws = NULL;
        size_t n = 0;
        int64_t wake = 0;
        if (store_list_workloads(r->ctx->store, &ws, &n, &err) < 0) {
                log_error("reconcile: %s", err.msg);
                return 0;
        }
        struct actual_list actual = {0};
        unsigned long epoch = stopper_epoch(r->stopper);
        for (size_t i = 0; i < DRIVER_KINDS; i++) {
                struct workload_driver *drv = r->ctx->drivers.by_kind[i];
                actual.drv = drv;
                if (drv && drv->ops->list(drv, collect_actual, &actual, &err) < 0) {
                        log_warn("reconcile: list %ss: %s", drv->noun, err.msg);
                        store_workloads_free(ws, n);
                        free(actual.v);
                        return mono_ns() + 2000000000LL; /* driver away: look again soon */
                }
        }
        pthread_mutex_lock(&r->lock);
        for (struct wl_state *s = r->states; s; s = s->next)
                s->seen = false;
        pthread_mutex_unlock(&r->lock);

        int64_t t = reconcile_all(r, ws, n, &actual, epoch);
        if (t && (!wake || t < wake))
                wake = t;
        /* orphans: labelled ours, not desired */
        for (size_t i = 0; i < actual.n; i++) {
                if (actual.v[i].matched)
                        continue;
                if (stopper_busy(r->stopper, actual.v[i].name))
                        continue; /* a delete is stopping it */
                if (stopper_epoch(r->stopper) != epoch)
                        break; /* a stop ended since the listing: the pass it kicked looks again */
                log_info("reconcile: removing orphan %s", actual.v[i].name);
                stop_workload_async(r, actual.v[i].name, actual.v[i].drv, RECONCILE_STOP_GRACE_MS, true);
                events_publish(r->ctx->events, "workload", actual.v[i].name, "removed", "not desired");
        }
        /* forget states of workloads no longer desired */
        pthread_mutex_lock(&r->lock);
        for (struct wl_state **pp = &r->states; *pp;) {
                if (!(*pp)->seen) {
                        struct wl_state *dead = *pp;
                        *pp = dead->next;
                        free(dead);
                } else {
                        pp = &(*pp)->next;
                }
        }
        pthread_mutex_unlock(&r->lock);
        store_workloads_free(ws, n);
        free(actual.v);
        return wake;
}

static void *reconcile_thread(void *arg)
{
        struct reconciler *r = arg;
        int64_t wake = 0;
        pthread_mutex_lock(&r->lock);
        while (!r->stopping) {
                if (!r->kicked) {
                        int64_t deadline = mono_ns() + (int64_t)RECONCILE_RESYNC_SECONDS * 1000000000LL;
                        if (wake && wake < deadline)
                                deadline = wake;
                        struct timespec ts = {.tv_sec = deadline / 1000000000LL, .tv_nsec = deadline % 1000000000LL};
                        pthread_cond_timedwait(&r->cond, &r->lock, &ts);
                        if (r->stopping)
                                break;
                }
                r->kicked = false;
                r->passes_started++;
                pthread_mutex_unlock(&r->lock);
                int64_t t0 = mono_ns();
                wake = reconcile_pass(r);
                int64_t took = mono_ns() - t0;
                pthread_mutex_lock(&r->lock);
                r->passes_done++;
                r->last_pass_ns = took;
                pthread_cond_broadcast(&r->cond);
        }
        pthread_mutex_unlock(&r->lock);
        return NULL;
}

static void unsubscribe_all(struct reconciler *r)
{
        for (size_t i = 0; i < DRIVER_KINDS; i++) {
                if (r->subscribed[i])
                        r->subscribed[i]->ops->unsubscribe_exits(r->subscribed[i]);
                r->subscribed[i] = NULL;
        }
}

int reconciler_start(struct reconciler *r, struct cap_error *err)
{
        for (size_t i = 0; i < DRIVER_KINDS; i++) {
                struct workload_driver *drv = r->ctx->drivers.by_kind[i];
                if (!drv)
                        continue;
                if (drv->ops->subscribe_exits(drv, on_driver_event, r, err) < 0) {
                        unsubscribe_all(r);
                        return cap_error_prefix(err, "subscribe to %s events", drv->name);
                }
                r->subscribed[i] = drv;
        }
        if (pthread_create(&r->thread, NULL, reconcile_thread, r) != 0)
                return cap_error_set(err, -EAGAIN, CAP_INTERNAL, "reconciler: cannot start thread");
        r->started = true;
        reconciler_kick(r);
        return 0;
}

void reconciler_pass_stats(struct reconciler *r, uint64_t *passes, double *last_pass_seconds)
{
        pthread_mutex_lock(&r->lock);
        *passes = r->passes_done;
        *last_pass_seconds = (double)r->last_pass_ns / 1e9;
        pthread_mutex_unlock(&r->lock);
}

/* Ends the passes (idempotent): no workload is started or stopped by a pass after it returns. */
static void passes_end(struct reconciler *r)
{
        if (r->started) {
                pthread_mutex_lock(&r->lock);
                r->stopping = true;
                pthread_cond_broadcast(&r->cond);
                pthread_mutex_unlock(&r->lock);
                pthread_join(r->thread, NULL);
                r->started = false;
        }
}

void reconciler_free(struct reconciler *r)
{
        if (!r)
                return;
        unsubscribe_all(r);
        passes_end(r);
        /* pulls end at once (their transfers check the flag), then their threads */
        atomic_store(&r->pull_cancel, true);
        pthread_mutex_lock(&r->lock);
        while (r->pull_threads)
                pthread_cond_wait(&r->cond, &r->lock);
        pthread_mutex_unlock(&r->lock);
        while (r->pulls) {
                struct image_pull *ip = r->pulls;
                r->pulls = ip->next;
                pthread_mutex_destroy(&ip->unpack_lock);
                free(ip->name);
                free(ip->ref);
                free(ip);
        }
        stopper_free(r->stopper); /* waits for the stops in flight; they kick r */
        while (r->states) {
                struct wl_state *s = r->states;
                r->states = s->next;
                free(s);
        }
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->lock);
        free(r);
}

void reconciler_kick(struct reconciler *r)
{
        pthread_mutex_lock(&r->lock);
        r->kicked = true;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
}

int reconciler_sync(struct reconciler *r, int timeout_ms)
{
        int64_t deadline = mono_ns() + (int64_t)timeout_ms * 1000000LL;
        pthread_mutex_lock(&r->lock);
        /* a pass that starts after now must finish: if one is running, wait for it and one more */
        uint64_t target = r->passes_started + 1;
        r->kicked = true;
        pthread_cond_broadcast(&r->cond);
        int rc = 0;
        while (r->passes_done < target && !r->stopping) {
                struct timespec ts = {.tv_sec = deadline / 1000000000LL, .tv_nsec = deadline % 1000000000LL};
                if (pthread_cond_timedwait(&r->cond, &r->lock, &ts) == ETIMEDOUT) {
                        rc = -ETIMEDOUT;
                        break;
                }
        }
        pthread_mutex_unlock(&r->lock);
        return rc;
}

Capsule__V1__WorkloadStatus *reconciler_status(struct reconciler *r, const char *name)
{
        Capsule__V1__WorkloadStatus *st = malloc(sizeof(*st));
        if (!st)
                return NULL;
        capsule__v1__workload_status__init(st);
        pthread_mutex_lock(&r->lock);
        struct wl_state *s = state_get(r, name, false);
        struct wl_state empty = {.phase = CAPSULE__V1__PHASE__PENDING};
        if (!s)
                s = &empty;
        st->phase = s->phase;
        st->pid = s->pid;
        st->started_unix_nano = s->started_ns;
        st->restarts = s->restarts;
        st->last_exit_code = s->last_exit_code;
        st->last_exit_reason = strdup(s->last_exit_reason);
        st->last_exit_unix_nano = s->last_exit_ns;
        st->ip_address = strdup(s->ip);
        if (s->phase == CAPSULE__V1__PHASE__PULLING && s->pull && s->pull->running) {
                char msg[sizeof(s->message)];
                pull_message(s, msg, sizeof(msg));
                st->message = strdup(msg);
        } else {
                st->message = strdup(s->message);
        }
        st->observed_generation = s->observed_generation;
        st->image_digest = strdup(s->image_digest);
        if (s->next_try_mono_ns && s->phase == CAPSULE__V1__PHASE__BACKOFF)
                st->next_restart_unix_nano = real_ns() + (s->next_try_mono_ns - mono_ns());
        pthread_mutex_unlock(&r->lock);
        struct event_rec recent[MAX_EVENTS_KEPT];
        size_t n = events_recent_for(r->ctx->events, "workload", name, recent, MAX_EVENTS_KEPT);
        st->events = calloc(n ? n : 1, sizeof(*st->events));
        for (size_t i = 0; st->events && i < n; i++) {
                Capsule__V1__WorkloadEvent *e = malloc(sizeof(*e));
                if (!e)
                        break;
                capsule__v1__workload_event__init(e);
                e->time_unix_nano = recent[i].time_ns;
                e->reason = strdup(recent[i].action);
                e->message = strdup(recent[i].message);
                st->events[st->n_events++] = e;
        }
        if (!st->last_exit_reason || !st->ip_address || !st->message || !st->image_digest || !st->events) {
                capsule__v1__workload_status__free_unpacked(st, NULL);
                return NULL;
        }
        return st;
}

int reconciler_restart(struct reconciler *r, const char *name, struct cap_error *err)
{
        pthread_mutex_lock(&r->lock);
        struct wl_state *s = state_get(r, name, true);
        if (s) {
                s->force_restart = true;
                s->next_try_mono_ns = 0;
        }
        pthread_mutex_unlock(&r->lock);
        if (!s)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        reconciler_kick(r);
        return 0;
}

void reconciler_forget(struct reconciler *r, const char *name)
{
        pthread_mutex_lock(&r->lock);
        for (struct wl_state **pp = &r->states; *pp; pp = &(*pp)->next) {
                if (strcmp((*pp)->name, name) == 0) {
                        struct wl_state *dead = *pp;
                        *pp = dead->next;
                        free(dead);
                        break;
                }
        }
        pthread_mutex_unlock(&r->lock);
}

int reconciler_delete_begin(struct reconciler *r, const char *name, Capsule__V1__WorkloadKind kind,
                            int grace_ms, struct cap_error *err)
{
        struct workload_driver *drv = driver_for_kind(&r->ctx->drivers, kind, NULL);
        if (!drv)
                return 0; /* nothing of a kind without a driver runs */
        int rc = stopper_submit(r->stopper, name, drv, grace_ms, STOPPER_REMOVE | STOPPER_DETACH, err);
        if (rc == -EALREADY) {
                /* a replacement or restart is stopping it: the orphan pass after it does the rest */
                cap_error_clear(err);
                return 0;
        }
        return rc;
}

int reconciler_delete_wait(struct reconciler *r, const char *name, int timeout_ms)
{
        int64_t deadline = mono_ns() + (int64_t)timeout_ms * 1000000LL;
        /* a pass that started after the store delete: it sees it as an orphan if anything of it
         * is left (e.g. a replacement was in flight) and hands that to the stopper too */
        if (stopper_wait(r->stopper, name, timeout_ms) < 0)
                return -ETIMEDOUT;
        int left_ms = (int)((deadline - mono_ns()) / 1000000LL);
        if (left_ms <= 0 || reconciler_sync(r, left_ms) < 0)
                return -ETIMEDOUT;
        left_ms = (int)((deadline - mono_ns()) / 1000000LL);
        if (left_ms <= 0 || stopper_wait(r->stopper, name, left_ms) < 0)
                return -ETIMEDOUT;
        return 0;
}

struct stop_everything {
        struct reconciler *r;
        struct workload_driver *drv;
        int grace_ms;
        size_t n;
};

static int stop_one_listed(const struct driver_workload *w, void *ud)
{
        struct stop_everything *se = ud;
        if (w->state != DRIVER_STATE_RUNNING)
                return 0;
        struct cap_error err = {0};
        if (stopper_submit(se->r->stopper, w->name, se->drv, se->grace_ms, 0, &err) == 0)
                se->n++;
        else if (err.code != -EALREADY)
                log_warn("shutdown: stop %s: %s", w->name, err.msg);
        return 0;
}

int reconciler_stop_everything(struct reconciler *r, int grace_ms)
{
        passes_end(r);
        /* every workload at once: a shutdown takes one grace period, whatever their number */
        stopper_set_parallel(r->stopper, RECONCILE_SHUTDOWN_PARALLEL);
        struct stop_everything se = {.r = r, .grace_ms = grace_ms};
        for (size_t i = 0; i < DRIVER_KINDS; i++) {
                struct workload_driver *drv = r->ctx->drivers.by_kind[i];
                struct cap_error err = {0};
                se.drv = drv;
                if (drv && drv->ops->list(drv, stop_one_listed, &se, &err) < 0)
                        log_warn("shutdown: list %ss: %s", drv->noun, err.msg);
        }
        stopper_drain(r->stopper);
        return (int)se.n;
}
