/* The capsule's figures as Prometheus text (metrics/expo.h): the control plane, every workload
 * (state, restarts, last exit, CPU, memory, processes), volumes, images and the API calls the rpc
 * layer counted by method. One function renders the page for both ways to read it: the metrics
 * endpoint (metrics/http.c, GET /metrics) and System.Metrics (`capsulectl metrics`).
 *
 * A part that cannot be read (containerd down, volumes unavailable) leaves its families out and
 * says so in capsule_collector_ok, so that the rest of the page still gets scraped. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "build-id.h"
#include "capsule/v1/images.pb-c.h"
#include "capsule/v1/system.pb-c.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "metrics/expo.h"
#include "serve.h"
#include "reconcile/reconciler.h"
#include "volume/volume.h"

#define NS_PER_SEC 1e9

static double unix_seconds(int64_t ns)
{
        return (double)ns / NS_PER_SEC;
}

/* The machine's boot time (unix seconds) from /proc/stat's btime; 0 when unknown. */
static double boot_time(void)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/stat", "re");
        char line[256];
        unsigned long long t = 0;
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "btime %llu", &t) == 1)
                        break;
        return (double)t;
}

/* When the control plane started, in unix seconds. */
static double serve_start_time(const struct serve_ctx *ctx)
{
        struct timespec now_rt, now_mono;
        clock_gettime(CLOCK_REALTIME, &now_rt);
        clock_gettime(CLOCK_MONOTONIC, &now_mono);
        double up = (double)(now_mono.tv_sec - ctx->started.tv_sec) +
                    (double)(now_mono.tv_nsec - ctx->started.tv_nsec) / NS_PER_SEC;
        return (double)now_rt.tv_sec + (double)now_rt.tv_nsec / NS_PER_SEC - up;
}

static void render_capsule(struct serve_ctx *ctx, struct expo *e)
{
        _cleanup_free_ char *slot = ctx->os_mode ? serve_booted_slot() : strdup("");
        const char *info[] = {"version",  CAPSULE_VERSION,
                              "build",    CAPSULE_BUILD,
                              "hostname", ctx->mcfg.hostname ? ctx->mcfg.hostname : "",
                              "mode",     ctx->os_mode ? "os" : "host",
                              "slot",     slot ? slot : "",
                              NULL};
        expo_family(e, "capsule_info", EXPO_GAUGE,
                    "Always 1; the labels say which Capsule this is: version, build, hostname, "
                    "mode (os or host), booted slot.");
        expo_sample(e, info, 1);
        expo_family(e, "capsule_boot_time_seconds", EXPO_GAUGE,
                    "When the machine booted, in seconds since the Unix epoch.");
        expo_sample(e, NULL, boot_time());
        expo_family(e, "capsule_serve_start_time_seconds", EXPO_GAUGE,
                    "When the control plane (capsuled serve) started, in seconds since the Unix "
                    "epoch.");
        expo_sample(e, NULL, serve_start_time(ctx));
        if (ctx->rec) {
                uint64_t passes;
                double last;
                reconciler_pass_stats(ctx->rec, &passes, &last);
                expo_family(e, "capsule_reconcile_passes_total", EXPO_COUNTER,
                            "Reconcile passes finished since serve started.");
                expo_sample_u64(e, NULL, passes);
                expo_family(e, "capsule_reconcile_last_pass_seconds", EXPO_GAUGE,
                            "How long the last reconcile pass took (every workload listed, "
                            "compared and, if needed, started).");
                expo_sample(e, NULL, last);
        }
}

static const char *phase_name(Capsule__V1__Phase p)
{
        switch (p) {
        case CAPSULE__V1__PHASE__PENDING:
                return "pending";
        case CAPSULE__V1__PHASE__PULLING:
                return "pulling";
        case CAPSULE__V1__PHASE__CREATING:
                return "creating";
        case CAPSULE__V1__PHASE__RUNNING:
                return "running";
        case CAPSULE__V1__PHASE__EXITED:
                return "exited";
        case CAPSULE__V1__PHASE__BACKOFF:
                return "backoff";
        case CAPSULE__V1__PHASE__FAILED:
                return "failed";
        case CAPSULE__V1__PHASE__STOPPING:
                return "stopping";
        default:
                return "unknown";
        }
}

static const Capsule__V1__Phase phases[] = {
    CAPSULE__V1__PHASE__PENDING, CAPSULE__V1__PHASE__PULLING,  CAPSULE__V1__PHASE__CREATING,
    CAPSULE__V1__PHASE__RUNNING, CAPSULE__V1__PHASE__EXITED,   CAPSULE__V1__PHASE__BACKOFF,
    CAPSULE__V1__PHASE__FAILED,  CAPSULE__V1__PHASE__STOPPING,
};

static const char *kind_name(Capsule__V1__WorkloadKind k)
{
        return k == CAPSULE__V1__WORKLOAD_KIND__MICROVM ? "microvm" : "container";
}

struct workloads {
        Capsule__V1__Workload **w;
        size_t n;
};

static void workloads_free(struct workloads *ws)
{
        for (size_t i = 0; i < ws->n; i++)
                capsule__v1__workload__free_unpacked(ws->w[i], NULL);
        free(ws->w);
}

/* Every stored workload with its status; false if the store cannot be read. */
static bool workloads_collect(struct serve_ctx *ctx, struct workloads *ws)
{
        struct store_workload *rows = NULL;
        size_t n = 0;
        struct cap_error err = {0};
        *ws = (struct workloads){0};
        if (!ctx->rec || store_list_workloads(ctx->store, &rows, &n, &err) < 0) {
                log_warn("metrics: workloads: %s", err.msg[0] ? err.msg : "no reconciler");
                return false;
        }
        ws->w = calloc(n ? n : 1, sizeof(*ws->w));
        bool ok = ws->w != NULL;
        for (size_t i = 0; ok && i < n; i++) {
                struct cap_error werr = {0};
                Capsule__V1__Workload *m = serve_workload_message(ctx, &rows[i], &werr);
                if (m)
                        ws->w[ws->n++] = m;
                else
                        log_warn("metrics: workload %s: %s", rows[i].name, werr.msg);
        }
        store_workloads_free(rows, n);
        return ok;
}

static bool is_running(const Capsule__V1__Workload *w)
{
        return w->status->phase == CAPSULE__V1__PHASE__RUNNING && w->status->stats_unix_nano;
}

static void render_workloads(const struct workloads *ws, struct expo *e)
{
        expo_family(e, "capsule_workload_info", EXPO_GAUGE,
                    "Always 1, per workload: its kind and image.");
        for (size_t i = 0; i < ws->n; i++) {
                const Capsule__V1__WorkloadSpec *s = ws->w[i]->spec;
                const char *l[] = {"workload", s->name,
                                   "kind",     kind_name(s->kind),
                                   "image",    s->image ? s->image : "",
                                   NULL};
                expo_sample(e, l, 1);
        }
        expo_family(e, "capsule_workload_state", EXPO_GAUGE,
                    "1 for the state the workload is in, 0 for the others (pending, pulling, "
                    "creating, running, exited, backoff, failed, stopping).");
        for (size_t i = 0; i < ws->n; i++)
                for (size_t k = 0; k < sizeof(phases) / sizeof(phases[0]); k++) {
                        const char *l[] = {"workload", ws->w[i]->spec->name, "state",
                                           phase_name(phases[k]), NULL};
                        expo_sample(e, l, ws->w[i]->status->phase == phases[k]);
                }
        expo_family(
            e, "capsule_workload_restarts_total", EXPO_COUNTER,
            "Restarts by the restart policy of the workload's current generation (kept across "
            "restarts of the control plane; 0 again when a new spec is applied).");
        for (size_t i = 0; i < ws->n; i++) {
                const char *l[] = {"workload", ws->w[i]->spec->name, NULL};
                expo_sample_u64(e, l, ws->w[i]->status->restarts);
        }
        expo_family(e, "capsule_workload_last_exit_code", EXPO_GAUGE,
                    "Exit code of the workload's last exit (workloads that exited at least once).");
        for (size_t i = 0; i < ws->n; i++) {
                const char *l[] = {"workload", ws->w[i]->spec->name, NULL};
                if (ws->w[i]->status->last_exit_unix_nano)
                        expo_sample(e, l, ws->w[i]->status->last_exit_code);
        }
        expo_family(e, "capsule_workload_last_exit_time_seconds", EXPO_GAUGE,
                    "When the workload last exited, in seconds since the Unix epoch.");
        for (size_t i = 0; i < ws->n; i++) {
                const char *l[] = {"workload", ws->w[i]->spec->name, NULL};
                if (ws->w[i]->status->last_exit_unix_nano)
                        expo_sample(e, l, unix_seconds(ws->w[i]->status->last_exit_unix_nano));
        }
        expo_family(e, "capsule_workload_start_time_seconds", EXPO_GAUGE,
                    "When the running workload started, in seconds since the Unix epoch.");
        for (size_t i = 0; i < ws->n; i++) {
                const char *l[] = {"workload", ws->w[i]->spec->name, NULL};
                if (ws->w[i]->status->phase == CAPSULE__V1__PHASE__RUNNING &&
                    ws->w[i]->status->started_unix_nano)
                        expo_sample(e, l, unix_seconds(ws->w[i]->status->started_unix_nano));
        }
        expo_family(e, "capsule_workload_cpu_seconds_total", EXPO_COUNTER,
                    "CPU time the running workload used (its cgroup), in seconds.");
        for (size_t i = 0; i < ws->n; i++) {
                const char *l[] = {"workload", ws->w[i]->spec->name, NULL};
                if (is_running(ws->w[i]))
                        expo_sample(e, l, (double)ws->w[i]->status->cpu_usage_usec / 1e6);
        }
        expo_family(e, "capsule_workload_memory_bytes", EXPO_GAUGE,
                    "Memory the running workload uses (its cgroup), in bytes.");
        for (size_t i = 0; i < ws->n; i++) {
                const char *l[] = {"workload", ws->w[i]->spec->name, NULL};
                if (is_running(ws->w[i]))
                        expo_sample_u64(e, l, ws->w[i]->status->memory_bytes);
        }
        expo_family(e, "capsule_workload_processes", EXPO_GAUGE,
                    "Processes (pids) in the running workload's cgroup.");
        for (size_t i = 0; i < ws->n; i++) {
                const char *l[] = {"workload", ws->w[i]->spec->name, NULL};
                if (is_running(ws->w[i]))
                        expo_sample_u64(e, l, ws->w[i]->status->pids);
        }
}

static bool render_volumes(struct serve_ctx *ctx, struct expo *e)
{
        struct volume_info *vs = NULL;
        size_t n = 0;
        struct cap_error err = {0};
        if (!ctx->volumes || volume_list(ctx->volumes, &vs, &n, &err) < 0) {
                log_warn("metrics: volumes: %s", err.msg[0] ? err.msg : "not available");
                return false;
        }
        expo_family(e, "capsule_volume_size_bytes", EXPO_GAUGE, "The volume's size, in bytes.");
        for (size_t i = 0; i < n; i++) {
                const char *l[] = {"volume", vs[i].name, NULL};
                expo_sample_u64(e, l, vs[i].size_bytes);
        }
        expo_family(e, "capsule_volume_used_bytes", EXPO_GAUGE,
                    "Bytes used on the volume (its filesystem when mounted, else its storage).");
        for (size_t i = 0; i < n; i++) {
                const char *l[] = {"volume", vs[i].name, NULL};
                expo_sample_u64(e, l, vs[i].used_bytes);
        }
        expo_family(e, "capsule_volume_attached_workloads", EXPO_GAUGE,
                    "How many workloads have the volume attached.");
        for (size_t i = 0; i < n; i++) {
                const char *l[] = {"volume", vs[i].name, NULL};
                expo_sample_u64(e, l, vs[i].n_attached);
        }
        volume_infos_free(vs, n);
        return true;
}

static bool render_images(struct serve_ctx *ctx, struct expo *e)
{
        if (!ctx->image_store)
                return false;
        /* on the heap: images_list_all fills it as the framework's response, freed whole */
        Capsule__V1__ImageListResponse *l = malloc(sizeof(*l));
        struct cap_error err = {0};
        if (!l)
                return false;
        capsule__v1__image_list_response__init(l);
        if (images_list_all(&ctx->images, l, &err) < 0) {
                log_warn("metrics: images: %s", err.msg);
                capsule__v1__image_list_response__free_unpacked(l, NULL);
                return false;
        }
        uint64_t bytes = 0;
        for (size_t i = 0; i < l->n_images; i++)
                bytes += l->images[i]->size_bytes;
        expo_family(e, "capsule_images", EXPO_GAUGE, "Images in the capsule's image store.");
        expo_sample_u64(e, NULL, l->n_images);
        expo_family(e, "capsule_images_bytes", EXPO_GAUGE,
                    "Total size of the images in the image store, in bytes (layers shared by "
                    "images count once per image).");
        expo_sample_u64(e, NULL, bytes);
        expo_family(e, "capsule_image_size_bytes", EXPO_GAUGE, "Size of each image, in bytes.");
        for (size_t i = 0; i < l->n_images; i++) {
                const char *lb[] = {"image", l->images[i]->name, NULL};
                expo_sample_u64(e, lb, l->images[i]->size_bytes);
        }
        capsule__v1__image_list_response__free_unpacked(l, NULL);
        return true;
}

static bool render_api(struct serve_ctx *ctx, struct expo *e)
{
        struct rpc_method_stats *st = NULL;
        size_t n = 0;
        struct cap_error err = {0};
        if (!ctx->server || rpc_server_stats(ctx->server, &st, &n, &err) < 0)
                return false;
        expo_family(e, "capsule_api_calls_total", EXPO_COUNTER,
                    "API calls by method (ended calls, refused ones included).");
        for (size_t i = 0; i < n; i++) {
                const char *l[] = {"method", st[i].path, NULL};
                expo_sample_u64(e, l, st[i].calls);
        }
        expo_family(e, "capsule_api_errors_total", EXPO_COUNTER,
                    "API calls that ended with an error, by method and gRPC status code.");
        for (size_t i = 0; i < n; i++)
                for (unsigned k = 1; k < RPC_STATUS_CODES; k++) {
                        const char *l[] = {"method", st[i].path, "code",
                                           cap_status_name((enum cap_status)k), NULL};
                        if (st[i].by_status[k])
                                expo_sample_u64(e, l, st[i].by_status[k]);
                }
        free(st);
        return true;
}

int serve_metrics_render(struct serve_ctx *ctx, char **text, size_t *len, struct cap_error *err)
{
        struct expo e;
        expo_init(&e);
        render_capsule(ctx, &e);
        struct workloads ws;
        bool ok_workloads = workloads_collect(ctx, &ws);
        if (ok_workloads)
                render_workloads(&ws, &e);
        workloads_free(&ws);
        bool ok_volumes = render_volumes(ctx, &e);
        bool ok_images = render_images(ctx, &e);
        bool ok_api = render_api(ctx, &e);
        const struct {
                const char *name;
                bool ok;
        } parts[] = {{"workloads", ok_workloads},
                     {"volumes", ok_volumes},
                     {"images", ok_images},
                     {"api", ok_api}};
        expo_family(&e, "capsule_collector_ok", EXPO_GAUGE,
                    "1 when this part of the page could be read, 0 when its families are missing "
                    "(for example images without containerd).");
        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
                const char *l[] = {"collector", parts[i].name, NULL};
                expo_sample(&e, l, parts[i].ok);
        }
        if (e.error) {
                int code = e.error;
                cap_error_set(err, code, CAP_INTERNAL, "metrics: %s", e.why);
                expo_free(&e);
                return code;
        }
        *text = e.buf;
        *len = e.len;
        if (!*text && !(*text = strdup("")))
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        return 0;
}

int system_metrics(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err)
{
        (void)req;
        struct serve_ctx *ctx = rpc_call_method(call)->userdata;
        Capsule__V1__MetricsResponse *r = (Capsule__V1__MetricsResponse *)resp;
        size_t len = 0;
        return serve_metrics_render(ctx, &r->text, &len, err);
}
