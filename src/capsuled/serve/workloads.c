/* capsule.v1.Workloads handlers: Apply, Get, List, Delete, Restart, Logs; System.Events.
 * Desired state goes to the store; the reconciler (reconcile/) makes it so. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capsule/v1/system.pb-c.h"
#include "capsule/v1/workloads.pb-c.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "common/manifest.h"
#include "common/names.h"
#include "driver/driver.h"
#include "logs/logs.h"
#include "reconcile/reconciler.h"
#include "serve/cgstats.h"
#include "serve/events.h"
#include "serve.h"

#define DELETE_WAIT_MS 60000

static struct serve_ctx *ctx_of(struct rpc_call *call)
{
        return rpc_call_method(call)->userdata;
}

Capsule__V1__Workload *
serve_workload_message(struct serve_ctx *ctx, const struct store_workload *w, struct cap_error *err)
{
        Capsule__V1__Workload *m = malloc(sizeof(*m));
        if (!m) {
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        capsule__v1__workload__init(m);
        m->spec = capsule__v1__workload_spec__unpack(NULL, w->spec_len, w->spec);
        m->status = reconciler_status(ctx->rec, w->name);
        struct workload_driver *drv =
            m->spec ? driver_for_kind(&ctx->drivers, m->spec->kind, NULL) : NULL;
        if (m->status && m->status->phase == CAPSULE__V1__PHASE__RUNNING && drv) {
                char cg[300];
                struct cgroup_stats st;
                struct timespec now;
                /* the driver says which cgroup accounts for the workload */
                if (drv->ops->cgroup_path(drv, w->name, cg, sizeof(cg)) == 0 &&
                    cgroup_stats_read("/sys/fs/cgroup", cg, &st) == 0) {
                        clock_gettime(CLOCK_REALTIME, &now);
                        m->status->memory_bytes = st.memory_bytes;
                        m->status->cpu_usage_usec = st.cpu_usage_usec;
                        m->status->pids = st.pids;
                        m->status->stats_unix_nano = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
                }
        }
        if (m->status && drv && drv->ops->describe)
                drv->ops->describe(drv, w->name, m->status);
        m->generation = w->generation;
        m->created_unix_nano = w->created_ns;
        m->updated_unix_nano = w->updated_ns;
        if (!m->spec || !m->status) {
                capsule__v1__workload__free_unpacked(m, NULL);
                cap_error_set(err, -EIO, CAP_INTERNAL, "workload %s: stored spec does not decode",
                              w->name);
                return NULL;
        }
        return m;
}

int workloads_apply(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                    struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        const Capsule__V1__ApplyRequest *rq = (const Capsule__V1__ApplyRequest *)req;
        Capsule__V1__ApplyResponse *rs = (Capsule__V1__ApplyResponse *)resp;
        if (!rq->spec)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "spec: required");

        struct manifest_errors errs;
        manifest_errors_init(&errs);
        const char *prefix = rq->spec->name && *rq->spec->name ? rq->spec->name : NULL;
        int r = manifest_workload_validate(rq->spec, prefix, &errs);
        if (manifest_check_reserved_ports(rq->spec, prefix, ctx->reserved,
                                          atomic_load(&ctx->n_reserved), &errs) < 0)
                r = -EINVAL;
        if (r < 0) {
                _cleanup_free_ char *msg = manifest_errors_join(&errs, "; ");
                manifest_errors_free(&errs);
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s",
                                     msg ? msg : "invalid spec");
        }
        manifest_errors_free(&errs);

        /* every mounted volume must exist (capsulectl applies Volume documents first) */
        for (size_t i = 0; i < rq->spec->n_mounts; i++) {
                struct store_volume v;
                struct cap_error verr = {0};
                if (store_get_volume(ctx->store, rq->spec->mounts[i]->volume, &v, &verr) < 0) {
                        if (verr.status == CAP_NOT_FOUND)
                                return cap_error_set(
                                    err, -EINVAL, CAP_INVALID_ARGUMENT,
                                    "%s: mounts[%zu].volume: volume \"%s\" does not exist; "
                                    "create it with `capsulectl volume create` or declare "
                                    "it (kind: Volume) in the same apply",
                                    rq->spec->name, i, rq->spec->mounts[i]->volume);
                        *err = verr;
                        return verr.code;
                }
                store_volume_free(&v);
        }

        Capsule__V1__WorkloadSpec *spec = manifest_workload_copy(rq->spec);
        if (!spec || manifest_workload_normalize(spec) < 0) {
                if (spec)
                        capsule__v1__workload_spec__free_unpacked(spec, NULL);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        size_t len = capsule__v1__workload_spec__get_packed_size(spec);
        uint8_t *buf = malloc(len ? len : 1);
        if (!buf) {
                capsule__v1__workload_spec__free_unpacked(spec, NULL);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        capsule__v1__workload_spec__pack(spec, buf);

        enum store_put_result result = STORE_UNCHANGED;
        uint64_t generation = 0;
        if (rq->dry_run) {
                struct store_workload old;
                struct cap_error gerr = {0};
                if (store_get_workload(ctx->store, spec->name, &old, &gerr) == 0) {
                        bool same = old.spec_len == len && memcmp(old.spec, buf, len) == 0;
                        result = same ? STORE_UNCHANGED : STORE_CONFIGURED;
                        generation = same ? old.generation : old.generation + 1;
                        store_workload_free(&old);
                } else if (gerr.status == CAP_NOT_FOUND) {
                        result = STORE_CREATED;
                        generation = 1;
                } else {
                        *err = gerr;
                        r = gerr.code;
                }
        } else {
                r = store_put_workload(ctx->store, spec->name, spec->kind, buf, len, &result,
                                       &generation, err);
        }
        free(buf);
        if (r < 0) {
                capsule__v1__workload_spec__free_unpacked(spec, NULL);
                return r;
        }
        if (!rq->dry_run && result != STORE_UNCHANGED) {
                events_publish(ctx->events, "workload", spec->name,
                               result == STORE_CREATED ? "created" : "configured",
                               "generation %llu", (unsigned long long)generation);
                reconciler_kick(ctx->rec);
        }
        rs->result = result == STORE_CREATED      ? CAPSULE__V1__APPLY_RESULT__CREATED
                     : result == STORE_CONFIGURED ? CAPSULE__V1__APPLY_RESULT__CONFIGURED
                                                  : CAPSULE__V1__APPLY_RESULT__UNCHANGED;
        rs->generation = generation;
        rs->workload = malloc(sizeof(*rs->workload));
        if (!rs->workload) {
                capsule__v1__workload_spec__free_unpacked(spec, NULL);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        capsule__v1__workload__init(rs->workload);
        rs->workload->spec = spec;
        rs->workload->generation = generation;
        rs->workload->status = reconciler_status(ctx->rec, spec->name);
        if (!rs->workload->status)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        /* the store has the real values (what was packed above); only the answer is redacted */
        return serve_redact_workload(call, rs->workload, err);
}

int workloads_get(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        const Capsule__V1__GetRequest *rq = (const Capsule__V1__GetRequest *)req;
        Capsule__V1__GetResponse *rs = (Capsule__V1__GetResponse *)resp;
        if (name_check("name", rq->name, err) < 0)
                return err->code;
        struct store_workload w;
        if (store_get_workload(ctx->store, rq->name, &w, err) < 0)
                return err->code;
        rs->workload = serve_workload_message(ctx, &w, err);
        store_workload_free(&w);
        if (!rs->workload)
                return err->code;
        return serve_redact_workload(call, rs->workload, err);
}

int workloads_list(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        Capsule__V1__ListResponse *rs = (Capsule__V1__ListResponse *)resp;
        struct store_workload *ws = NULL;
        size_t n = 0;
        if (store_list_workloads(ctx->store, &ws, &n, err) < 0)
                return err->code;
        int r = 0;
        rs->workloads = calloc(n ? n : 1, sizeof(*rs->workloads));
        if (!rs->workloads)
                r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        for (size_t i = 0; r == 0 && i < n; i++) {
                Capsule__V1__Workload *m = serve_workload_message(ctx, &ws[i], err);
                if (!m)
                        r = err->code;
                else
                        rs->workloads[rs->n_workloads++] = m;
                if (m && serve_redact_workload(call, m, err) < 0)
                        r = err->code;
        }
        store_workloads_free(ws, n);
        return r;
}

/* DeleteRequest's grace: 0 = the default, force = none; anything else within bounds. */
static int delete_grace_ms(const Capsule__V1__DeleteRequest *rq, int *grace_ms, struct cap_error *err)
{
        if (rq->grace_ms < 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "grace_ms: %lld is negative (0 is the default of %d ms; force "
                                     "kills at once)",
                                     (long long)rq->grace_ms, RECONCILE_STOP_GRACE_MS);
        if (rq->grace_ms > RECONCILE_STOP_GRACE_MAX_MS)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "grace_ms: %lld is above the maximum of %d (1 h)",
                                     (long long)rq->grace_ms, RECONCILE_STOP_GRACE_MAX_MS);
        *grace_ms = rq->force ? 0 : rq->grace_ms ? (int)rq->grace_ms : RECONCILE_STOP_GRACE_MS;
        return 0;
}

/* Delete: out of the desired state at once, then stopped (SIGTERM, the grace period, SIGKILL) and
 * removed on the reconciler's stopper, beside every other delete; waits until it is gone (its
 * grace period plus DELETE_WAIT_MS), else answers still_stopping. */
int workloads_delete(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                     struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        const Capsule__V1__DeleteRequest *rq = (const Capsule__V1__DeleteRequest *)req;
        Capsule__V1__DeleteResponse *rs = (Capsule__V1__DeleteResponse *)resp;
        int grace_ms = 0;
        if (name_check("name", rq->name, err) < 0 || delete_grace_ms(rq, &grace_ms, err) < 0)
                return err->code;
        struct store_workload w;
        if (store_get_workload(ctx->store, rq->name, &w, err) < 0)
                return err->code;
        Capsule__V1__WorkloadKind kind = (Capsule__V1__WorkloadKind)w.kind;
        store_workload_free(&w);
        /* the stop first: no pass may restart it between the store delete and the stop */
        if (reconciler_delete_begin(ctx->rec, rq->name, kind, grace_ms, err) < 0)
                return err->code;
        if (store_delete_workload(ctx->store, rq->name, err) < 0)
                return err->code; /* its stop goes on; the next pass starts it again */
        events_publish(ctx->events, "workload", rq->name, "deleted",
                       "removed from the desired state");
        /* wait for the stop and removal, so `delete` means gone */
        int wait_ms = grace_ms + DELETE_WAIT_MS;
        if (reconciler_delete_wait(ctx->rec, rq->name, wait_ms) < 0) {
                log_warn("delete %s: removal still in progress after %d ms", rq->name, wait_ms);
                rs->still_stopping = true;
        }
        struct cap_error lerr = {0};
        if (logs_remove(ctx->root, rq->name, &lerr) < 0)
                log_warn("delete %s: %s", rq->name, lerr.msg);
        return 0;
}

int workloads_restart(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                      struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        const Capsule__V1__RestartRequest *rq = (const Capsule__V1__RestartRequest *)req;
        if (name_check("name", rq->name, err) < 0)
                return err->code;
        struct store_workload w;
        if (store_get_workload(ctx->store, rq->name, &w, err) < 0)
                return err->code;
        store_workload_free(&w);
        return reconciler_restart(ctx->rec, rq->name, err);
}

/* ---- Logs ---------------------------------------------------------------------------------- */

struct logs_stream {
        struct rpc_call *call;
        struct serve_ctx *ctx;
        const char *name;
        struct cap_error *err;
        int polls;
};

static int send_record(const struct log_record *rec, void *ud)
{
        struct logs_stream *ls = ud;
        Capsule__V1__LogChunk c = CAPSULE__V1__LOG_CHUNK__INIT;
        c.data.data = (uint8_t *)rec->data;
        c.data.len = rec->len;
        c.stream = (char *)rec->stream;
        c.time_unix_nano = rec->time_ns;
        return rpc_call_send(ls->call, &c.base, ls->err) < 0 ? -ECANCELED : 0;
}

static bool logs_should_stop(void *ud)
{
        struct logs_stream *ls = ud;
        if (rpc_call_cancelled(ls->call))
                return true;
        /* every ~2 s: stop following a workload that was deleted */
        if (++ls->polls % 10 == 0) {
                struct store_workload w;
                if (store_get_workload(ls->ctx->store, ls->name, &w, NULL) < 0)
                        return true;
                store_workload_free(&w);
        }
        return false;
}

int workloads_logs(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        const Capsule__V1__LogsRequest *rq = (const Capsule__V1__LogsRequest *)req;
        if (name_check("name", rq->name, err) < 0)
                return err->code;
        struct store_workload w;
        if (store_get_workload(ctx->store, rq->name, &w, err) < 0)
                return err->code;
        store_workload_free(&w);
        _cleanup_free_ char *path = logs_path(ctx->root, rq->name);
        if (!path)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        struct logs_stream ls = {.call = call, .ctx = ctx, .name = rq->name, .err = err};
        struct logs_follow follow = {.should_stop = logs_should_stop, .ud = &ls};
        int r = logs_read(path, rq->tail, rq->follow ? &follow : NULL, send_record, &ls, err);
        if (r == -ECANCELED)
                return 0; /* the client went away */
        return r < 0 ? r : 0;
}

/* ---- System.Events --------------------------------------------------------------------------- */

int system_events(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        uint64_t after = events_last_seq(ctx->events);
        struct event_rec batch[32];
        while (!rpc_call_cancelled(call)) {
                size_t n = events_read(ctx->events, after, batch, 32, 1000);
                for (size_t i = 0; i < n; i++) {
                        Capsule__V1__Event e = CAPSULE__V1__EVENT__INIT;
                        e.time_unix_nano = batch[i].time_ns;
                        e.type = batch[i].type;
                        e.name = batch[i].name;
                        e.action = batch[i].action;
                        e.message = batch[i].message;
                        if (rpc_call_send(call, &e.base, err) < 0)
                                return 0;
                        after = batch[i].seq;
                }
        }
        return 0;
}
