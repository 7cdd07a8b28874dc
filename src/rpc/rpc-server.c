/* The rpc server: dispatches gRPC calls to registered protobuf-c handlers (see rpc.h).
 *
 * Threading model. One completion queue per server, drained by a small pool of threads
 * (opts.pool_threads, default 3). Every gRPC event carries a `struct rpc_tag` whose callback runs
 * on a pool thread; callbacks never block, except that unary handlers run inline there (the
 * common case: short lookups in the store; no thread creation per call, which is what makes
 * unary calls cheap). Handlers that may block for long get their own thread: every streaming
 * handler (`logs --follow` may last hours) and unary methods flagged RPC_METHOD_BLOCKING (image
 * pull, update push). Those threads block in rpc_call_send/recv on a per-call condition variable
 * that the pool thread signals when the batch completes, so a thousand idle log followers cost a
 * thousand sleeping threads but no pool capacity; their number is capped
 * (opts.max_stream_threads) and excess calls get RESOURCE_EXHAUSTED instead of exhausting memory.
 *
 * Call lifecycle. Calls are requested generically (grpc_server_request_call), so unknown paths
 * are answered UNIMPLEMENTED without registering each method with gRPC. For a call that gets its
 * own handler thread, RECV_CLOSE_ON_SERVER is started as soon as it is dispatched so a client
 * cancel is seen at once (it flips rpc_call_cancelled, fails pending sends and fires the cancel
 * eventfd); inline unary calls request it with the final batch instead (two batches per call,
 * like a hand-written core server). A call context is reference counted: one reference per
 * outstanding batch plus one for the phase that owns it (request, handler); the last unref
 * releases the grpc_call and all buffers.
 *
 * Shutdown: shutdown-and-notify, wait up to the grace period, cancel all calls, wait for the
 * notification, join handler threads, wait for every call context to be freed, destroy the
 * server, shut down and drain the queue, join the pool, release gRPC. */
#include "rpc-internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc_posix.h>
#include <grpc/support/alloc.h>

#include "common/cleanup.h"
#include "common/deadline.h"
#include "common/log.h"

#define DEFAULT_POOL_THREADS 3
#define DEFAULT_MAX_STREAM_THREADS 256

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct rpc_tag {
        void (*fn)(struct rpc_tag *tag, bool ok);
};

/* A handler thread; joined when reaped or at shutdown. */
struct rpc_thread {
        pthread_t tid;
        bool done;
        struct rpc_thread *next;
};

struct rpc_server {
        grpc_server *server;
        grpc_completion_queue *cq;
        struct rpc_server_opts opts;
        struct rpc_method *methods;
        size_t n_methods;
        /* per method (same index as methods): ended calls by final status, updated atomically */
        uint64_t (*counts)[RPC_STATUS_CODES];
        pthread_t *pool;
        unsigned n_pool;
        /* per pool thread: CLOCK_MONOTONIC ms since it runs a callback, 0 while it waits for the
         * queue (read by rpc_server_stuck_ms; __atomic) */
        int64_t *busy_since;
        unsigned next_pool_slot; /* __atomic: each pool thread takes one slot at start */
        bool started;
        struct rpc_tag shutdown_tag;

        pthread_mutex_t lock; /* protects the fields below */
        pthread_cond_t cond;  /* CLOCK_MONOTONIC */
        bool shutting_down, shutdown_done;
        unsigned live_calls;     /* call contexts allocated, including pending requests */
        unsigned stream_threads; /* running own-thread handlers */
        struct rpc_thread *threads;
};

struct rpc_call {
        struct rpc_server *srv;
        grpc_call *call;
        grpc_call_details details;
        grpc_metadata_array req_md;
        const struct rpc_method *method;
        struct rpc_tag t_new, t_close, t_req, t_send, t_recv, t_final;
        int close_cancelled; /* written by RECV_CLOSE_ON_SERVER */
        bool close_started;  /* RECV_CLOSE_ON_SERVER requested (pool thread only) */
        grpc_byte_buffer *recv_buf;
        grpc_byte_buffer *final_buf; /* response of the final batch, destroyed on completion */
        grpc_slice final_details;
        ProtobufCMessage *req;
        struct rpc_thread *thread;

        pthread_mutex_t send_lock, recv_lock; /* serialise user sends / receives */
        bool initial_md_sent;                 /* under send_lock (or after the handler) */
        unsigned responses_sent;              /* under send_lock */

        pthread_mutex_t lock; /* protects the fields below */
        pthread_cond_t cond;
        unsigned refs;
        bool closed; /* RECV_CLOSE_ON_SERVER completed: the client is gone or the call is over */
        bool send_done, send_ok, recv_done, recv_ok;
        int cancel_fd;
};

static void call_unref(struct rpc_call *c);

/* ---- call contexts ------------------------------------------------------------------------ */

static void on_new_call(struct rpc_tag *t, bool ok);
static void on_close(struct rpc_tag *t, bool ok);
static void on_request_msg(struct rpc_tag *t, bool ok);
static void on_send(struct rpc_tag *t, bool ok);
static void on_recv(struct rpc_tag *t, bool ok);
static void on_final(struct rpc_tag *t, bool ok);

static struct rpc_call *call_new(struct rpc_server *srv)
{
        struct rpc_call *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->srv = srv;
        c->refs = 1;
        c->cancel_fd = -1;
        c->final_details = grpc_empty_slice();
        c->t_new.fn = on_new_call;
        c->t_close.fn = on_close;
        c->t_req.fn = on_request_msg;
        c->t_send.fn = on_send;
        c->t_recv.fn = on_recv;
        c->t_final.fn = on_final;
        grpc_call_details_init(&c->details);
        grpc_metadata_array_init(&c->req_md);
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->cond, NULL);
        pthread_mutex_init(&c->send_lock, NULL);
        pthread_mutex_init(&c->recv_lock, NULL);
        pthread_mutex_lock(&srv->lock);
        srv->live_calls++;
        pthread_mutex_unlock(&srv->lock);
        return c;
}

static void call_ref(struct rpc_call *c)
{
        pthread_mutex_lock(&c->lock);
        c->refs++;
        pthread_mutex_unlock(&c->lock);
}

static void call_unref(struct rpc_call *c)
{
        pthread_mutex_lock(&c->lock);
        unsigned left = --c->refs;
        pthread_mutex_unlock(&c->lock);
        if (left)
                return;
        struct rpc_server *srv = c->srv;
        if (c->call)
                grpc_call_unref(c->call);
        grpc_call_details_destroy(&c->details);
        grpc_metadata_array_destroy(&c->req_md);
        if (c->recv_buf)
                grpc_byte_buffer_destroy(c->recv_buf);
        if (c->final_buf)
                grpc_byte_buffer_destroy(c->final_buf);
        grpc_slice_unref(c->final_details);
        if (c->req)
                protobuf_c_message_free_unpacked(c->req, NULL);
        if (c->cancel_fd >= 0)
                close(c->cancel_fd);
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->send_lock);
        pthread_mutex_destroy(&c->recv_lock);
        free(c);
        pthread_mutex_lock(&srv->lock);
        srv->live_calls--;
        pthread_cond_broadcast(&srv->cond);
        pthread_mutex_unlock(&srv->lock);
}

/* Starts a batch that holds a reference on the call until its tag completes. */
static bool call_batch(struct rpc_call *c, const grpc_op *ops, size_t n, struct rpc_tag *tag)
{
        call_ref(c);
        grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
        if (e != GRPC_CALL_OK) {
                log_warn("rpc: start batch on %s: grpc_call_error %d",
                         c->method ? c->method->path : "call", (int)e);
                call_unref(c);
                return false;
        }
        return true;
}

/* Starts RECV_CLOSE_ON_SERVER on its own, so that a cancel is seen while a handler runs. */
static bool call_watch_close(struct rpc_call *c)
{
        grpc_op op = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
        op.data.recv_close_on_server.cancelled = &c->close_cancelled;
        c->close_started = true;
        return call_batch(c, &op, 1, &c->t_close);
}

/* Ends the call: initial metadata if not sent yet, the response message `msg` (owned, may be
 * NULL) and the status, plus RECV_CLOSE_ON_SERVER when it was not started early (inline unary
 * calls and refused calls: nobody waits for a cancel there, and one batch fewer per call is
 * measurable). Asynchronous; completion drops the batch's reference. */
static void call_finish(struct rpc_call *c, grpc_byte_buffer *msg, enum cap_status status,
                        const char *details)
{
        grpc_op ops[4];
        size_t n = 0;
        if (c->method && (unsigned)status < RPC_STATUS_CODES) /* the one place calls end */
                __atomic_fetch_add(&c->srv->counts[c->method - c->srv->methods][status], 1,
                                   __ATOMIC_RELAXED);
        memset(ops, 0, sizeof(ops));
        if (!c->initial_md_sent) {
                ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
                c->initial_md_sent = true;
        }
        if (msg) {
                c->final_buf = msg;
                ops[n].op = GRPC_OP_SEND_MESSAGE;
                ops[n++].data.send_message.send_message = msg;
        }
        if (status != CAP_OK && details && *details)
                c->final_details = grpc_slice_from_copied_string(details);
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = (grpc_status_code)status;
        ops[n++].data.send_status_from_server.status_details =
            status != CAP_OK ? &c->final_details : NULL;
        if (!c->close_started) {
                c->close_started = true;
                ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
                ops[n++].data.recv_close_on_server.cancelled = &c->close_cancelled;
        }
        call_batch(c, ops, n, &c->t_final);
}

/* Ends the call with the handler's error (OK-with-error becomes INTERNAL). */
static void call_finish_error(struct rpc_call *c, const struct cap_error *err)
{
        enum cap_status st = err->status == CAP_OK ? CAP_INTERNAL : err->status;
        call_finish(c, NULL, st, err->msg[0] ? err->msg : cap_status_name(st));
}

static void on_final(struct rpc_tag *t, bool ok)
{
        call_unref(container_of(t, struct rpc_call, t_final));
}

static void on_close(struct rpc_tag *t, bool ok)
{
        struct rpc_call *c = container_of(t, struct rpc_call, t_close);
        pthread_mutex_lock(&c->lock);
        c->closed = true;
        if (c->cancel_fd >= 0) {
                uint64_t one = 1;
                if (write(c->cancel_fd, &one, sizeof(one)) < 0)
                        log_debug("rpc: cancel eventfd: %m");
        }
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        call_unref(c);
}

static void on_send(struct rpc_tag *t, bool ok)
{
        struct rpc_call *c = container_of(t, struct rpc_call, t_send);
        pthread_mutex_lock(&c->lock);
        c->send_done = true;
        c->send_ok = ok;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        call_unref(c);
}

static void on_recv(struct rpc_tag *t, bool ok)
{
        struct rpc_call *c = container_of(t, struct rpc_call, t_recv);
        pthread_mutex_lock(&c->lock);
        c->recv_done = true;
        c->recv_ok = ok;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        call_unref(c);
}

/* ---- handlers ----------------------------------------------------------------------------- */

/* Runs a unary handler and ends the call with its response or error. */
static void run_unary(struct rpc_call *c)
{
        const struct rpc_method *m = c->method;
        struct cap_error err = {0};
        ProtobufCMessage *resp = malloc(m->resp_desc->sizeof_message);
        if (!resp) {
                call_finish(c, NULL, CAP_RESOURCE_EXHAUSTED, "out of memory");
                return;
        }
        protobuf_c_message_init(m->resp_desc, resp);
        int r = m->unary(c, c->req, resp, &err);
        if (r < 0)
                call_finish_error(c, &err);
        else
                call_finish(c, rpc_pack(resp), CAP_OK, NULL);
        protobuf_c_message_free_unpacked(resp, NULL);
}

static void run_stream(struct rpc_call *c)
{
        struct cap_error err = {0};
        int r = c->method->stream(c, c->req, &err);
        if (r < 0)
                call_finish_error(c, &err);
        else if (c->method->kind == RPC_CLIENT_STREAM && c->responses_sent == 0)
                call_finish(c, NULL, CAP_INTERNAL, "handler sent no response");
        else
                call_finish(c, NULL, CAP_OK, NULL);
}

static void *handler_thread(void *arg)
{
        struct rpc_call *c = arg;
        struct rpc_server *srv = c->srv;
        struct rpc_thread *th = c->thread;
        if (c->method->kind == RPC_UNARY)
                run_unary(c);
        else
                run_stream(c);
        call_unref(c);
        pthread_mutex_lock(&srv->lock);
        th->done = true;
        srv->stream_threads--;
        pthread_cond_broadcast(&srv->cond);
        pthread_mutex_unlock(&srv->lock);
        return NULL;
}

/* Joins finished handler threads; with srv->lock held. */
static void reap_threads_locked(struct rpc_server *srv)
{
        for (struct rpc_thread **p = &srv->threads; *p;) {
                struct rpc_thread *th = *p;
                if (!th->done) {
                        p = &th->next;
                        continue;
                }
                pthread_join(th->tid, NULL);
                *p = th->next;
                free(th);
        }
}

/* Hands the call (and its phase reference) to a new handler thread, or ends it. */
static void spawn_handler(struct rpc_call *c)
{
        struct rpc_server *srv = c->srv;
        const char *why = NULL;
        pthread_mutex_lock(&srv->lock);
        reap_threads_locked(srv);
        struct rpc_thread *th = NULL;
        if (srv->stream_threads >= srv->opts.max_stream_threads)
                why = "too many concurrent streams";
        else if (!(th = calloc(1, sizeof(*th))))
                why = "out of memory";
        if (th) {
                c->thread = th;
                int r = pthread_create(&th->tid, NULL, handler_thread, c);
                if (r == 0) {
                        th->next = srv->threads;
                        srv->threads = th;
                        srv->stream_threads++;
                } else {
                        free(th);
                        why = "cannot create handler thread";
                }
        }
        pthread_mutex_unlock(&srv->lock);
        if (why) {
                log_warn("rpc: %s: %s", c->method->path, why);
                call_finish(c, NULL, CAP_RESOURCE_EXHAUSTED, why);
                call_unref(c);
        }
}

/* The single request of a unary or server-streaming call has arrived. */
static void on_request_msg(struct rpc_tag *t, bool ok)
{
        struct rpc_call *c = container_of(t, struct rpc_call, t_req);
        const struct rpc_method *m = c->method;
        struct cap_error err = {0};
        if (!ok || !c->recv_buf) {
                call_finish(c, NULL, CAP_INVALID_ARGUMENT, "missing request message");
                call_unref(c);
                return;
        }
        c->req = rpc_unpack(c->recv_buf, m->req_desc, &err);
        grpc_byte_buffer_destroy(c->recv_buf);
        c->recv_buf = NULL;
        if (!c->req) {
                call_finish_error(c, &err);
                call_unref(c);
                return;
        }
        if (m->kind == RPC_UNARY && !(m->flags & RPC_METHOD_BLOCKING)) {
                run_unary(c);
                call_unref(c);
                return;
        }
        spawn_handler(c);
}

static const struct rpc_method *find_method(struct rpc_server *srv, grpc_slice path)
{
        for (size_t i = 0; i < srv->n_methods; i++)
                if (grpc_slice_str_cmp(path, srv->methods[i].path) == 0)
                        return &srv->methods[i];
        return NULL;
}

static void request_call(struct rpc_server *srv)
{
        struct rpc_call *c = call_new(srv);
        if (!c) {
                log_error("rpc: out of memory; no longer accepting calls");
                return;
        }
        grpc_call_error e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->req_md,
                                                     srv->cq, srv->cq, &c->t_new);
        if (e != GRPC_CALL_OK) {
                log_error("rpc: grpc_server_request_call: error %d", (int)e);
                call_unref(c);
        }
}

static void on_new_call(struct rpc_tag *t, bool ok)
{
        struct rpc_call *c = container_of(t, struct rpc_call, t_new);
        struct rpc_server *srv = c->srv;
        if (!ok) { /* the server is shutting down */
                call_unref(c);
                return;
        }
        pthread_mutex_lock(&srv->lock);
        bool more = !srv->shutting_down;
        pthread_mutex_unlock(&srv->lock);
        if (more)
                request_call(srv);

        const struct rpc_method *m = find_method(srv, c->details.method);
        if (!m) {
                char msg[300];
                snprintf(msg, sizeof(msg), "unknown method %.*s",
                         (int)GRPC_SLICE_LENGTH(c->details.method),
                         (const char *)GRPC_SLICE_START_PTR(c->details.method));
                call_finish(c, NULL, CAP_UNIMPLEMENTED, msg);
                call_unref(c);
                return;
        }
        c->method = m;
        struct cap_error err = {0};
        if (srv->opts.authorize && srv->opts.authorize(c, m, srv->opts.authorize_ud, &err) != 0) {
                if (err.status == CAP_OK)
                        err.status = CAP_PERMISSION_DENIED;
                call_finish_error(c, &err);
                call_unref(c);
                return;
        }
        if ((m->kind == RPC_UNARY && !m->unary) || (m->kind != RPC_UNARY && !m->stream)) {
                char msg[300];
                snprintf(msg, sizeof(msg), "%s is not implemented yet", m->path);
                call_finish(c, NULL, CAP_UNIMPLEMENTED, msg);
                call_unref(c);
                return;
        }
        /* handlers on their own thread may run long: learn of a cancel from the start */
        bool inline_unary = m->kind == RPC_UNARY && !(m->flags & RPC_METHOD_BLOCKING);
        if (!inline_unary && !call_watch_close(c)) {
                call_unref(c);
                return;
        }
        if (m->kind == RPC_UNARY || m->kind == RPC_SERVER_STREAM) {
                grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
                op.data.recv_message.recv_message = &c->recv_buf;
                /* on success the batch's reference becomes on_request_msg's phase reference */
                if (!call_batch(c, &op, 1, &c->t_req))
                        call_finish(c, NULL, CAP_INTERNAL, "cannot read request");
                call_unref(c);
                return;
        }
        spawn_handler(c);
}

/* ---- helpers for handlers ----------------------------------------------------------------- */

const struct rpc_method *rpc_call_method(struct rpc_call *call)
{
        return call->method;
}

bool rpc_call_cancelled(struct rpc_call *c)
{
        pthread_mutex_lock(&c->lock);
        bool closed = c->closed;
        pthread_mutex_unlock(&c->lock);
        return closed;
}

int rpc_call_cancel_fd(struct rpc_call *c, struct cap_error *err)
{
        pthread_mutex_lock(&c->lock);
        if (c->cancel_fd < 0)
                c->cancel_fd = eventfd(c->closed ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK);
        int fd = c->cancel_fd, e = errno;
        pthread_mutex_unlock(&c->lock);
        if (fd < 0)
                return cap_error_errno(err, -e, "eventfd");
        return fd;
}

int rpc_call_send(struct rpc_call *c, const ProtobufCMessage *msg, struct cap_error *err)
{
        const struct rpc_method *m = c->method;
        if (m->kind == RPC_UNARY)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL,
                                     "%s: rpc_call_send in a unary handler", m->path);
        pthread_mutex_lock(&c->send_lock);
        if (m->kind == RPC_CLIENT_STREAM && c->responses_sent > 0) {
                pthread_mutex_unlock(&c->send_lock);
                return cap_error_set(err, -EINVAL, CAP_INTERNAL,
                                     "%s: second response on a client-stream call", m->path);
        }
        grpc_byte_buffer *buf = rpc_pack(msg);
        grpc_op ops[2];
        size_t n = 0;
        memset(ops, 0, sizeof(ops));
        if (!c->initial_md_sent)
                ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = buf;
        pthread_mutex_lock(&c->lock);
        c->send_done = false;
        pthread_mutex_unlock(&c->lock);
        bool ok = call_batch(c, ops, n, &c->t_send);
        if (ok) {
                c->initial_md_sent = true;
                pthread_mutex_lock(&c->lock);
                while (!c->send_done)
                        pthread_cond_wait(&c->cond, &c->lock);
                ok = c->send_ok;
                pthread_mutex_unlock(&c->lock);
        }
        if (ok)
                c->responses_sent++;
        pthread_mutex_unlock(&c->send_lock);
        grpc_byte_buffer_destroy(buf);
        if (!ok)
                return cap_error_set(err, -ECANCELED, CAP_CANCELLED,
                                     "%s: call cancelled or client gone", m->path);
        return 0;
}

int rpc_call_recv(struct rpc_call *c, ProtobufCMessage **msg, struct cap_error *err)
{
        const struct rpc_method *m = c->method;
        *msg = NULL;
        if (m->kind != RPC_CLIENT_STREAM && m->kind != RPC_BIDI)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL,
                                     "%s: rpc_call_recv on a single-request call", m->path);
        pthread_mutex_lock(&c->recv_lock);
        grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
        op.data.recv_message.recv_message = &c->recv_buf;
        pthread_mutex_lock(&c->lock);
        c->recv_done = false;
        pthread_mutex_unlock(&c->lock);
        bool ok = call_batch(c, &op, 1, &c->t_recv);
        bool closed = false;
        if (ok) {
                pthread_mutex_lock(&c->lock);
                while (!c->recv_done)
                        pthread_cond_wait(&c->cond, &c->lock);
                ok = c->recv_ok;
                closed = c->closed;
                pthread_mutex_unlock(&c->lock);
        }
        grpc_byte_buffer *buf = c->recv_buf;
        c->recv_buf = NULL;
        pthread_mutex_unlock(&c->recv_lock);
        if (!ok || (!buf && closed)) {
                if (buf)
                        grpc_byte_buffer_destroy(buf);
                return cap_error_set(err, -ECANCELED, CAP_CANCELLED,
                                     "%s: call cancelled or client gone", m->path);
        }
        if (!buf)
                return 0;
        *msg = rpc_unpack(buf, m->req_desc, err);
        grpc_byte_buffer_destroy(buf);
        return *msg ? 1 : err->code;
}

grpc_call *rpc_call_grpc(struct rpc_call *c)
{
        return c->call;
}

int rpc_call_metadata(struct rpc_call *c, const char *key, char *buf, size_t size)
{
        for (size_t i = 0; i < c->req_md.count; i++) {
                const grpc_metadata *md = &c->req_md.metadata[i];
                if (grpc_slice_str_cmp(md->key, key) != 0)
                        continue;
                size_t n = GRPC_SLICE_LENGTH(md->value);
                if (size > 0)
                        snprintf(buf, size, "%.*s", (int)n,
                                 (const char *)GRPC_SLICE_START_PTR(md->value));
                return (int)n;
        }
        return -ENOENT;
}

/* ---- server lifecycle --------------------------------------------------------------------- */

static void on_shutdown(struct rpc_tag *t, bool ok)
{
        struct rpc_server *srv = container_of(t, struct rpc_server, shutdown_tag);
        pthread_mutex_lock(&srv->lock);
        srv->shutdown_done = true;
        pthread_cond_broadcast(&srv->cond);
        pthread_mutex_unlock(&srv->lock);
}

static int64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *pool_main(void *arg)
{
        struct rpc_server *srv = arg;
        unsigned slot = __atomic_fetch_add(&srv->next_pool_slot, 1, __ATOMIC_RELAXED);
        int64_t *busy = &srv->busy_since[slot];
        for (;;) {
                grpc_event ev =
                    grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                        break;
                if (ev.type == GRPC_OP_COMPLETE) {
                        struct rpc_tag *t = ev.tag;
                        __atomic_store_n(busy, mono_ms(), __ATOMIC_RELAXED);
                        t->fn(t, ev.success != 0);
                        __atomic_store_n(busy, 0, __ATOMIC_RELAXED);
                }
        }
        return NULL;
}

int64_t rpc_server_stuck_ms(struct rpc_server *srv)
{
        if (!srv || !__atomic_load_n(&srv->n_pool, __ATOMIC_ACQUIRE))
                return 0;
        int64_t now = mono_ms(), newest = 0;
        for (unsigned i = 0; i < srv->opts.pool_threads; i++) {
                int64_t b = __atomic_load_n(&srv->busy_since[i], __ATOMIC_RELAXED);
                if (b == 0)
                        return 0; /* a thread is free: calls are being served */
                if (b > newest)
                        newest = b;
        }
        return now - newest;
}

struct rpc_server *rpc_server_new(const struct rpc_server_opts *opts, struct cap_error *err)
{
        struct rpc_server *srv = calloc(1, sizeof(*srv));
        if (!srv) {
                cap_error_errno(err, -ENOMEM, "rpc server");
                return NULL;
        }
        if (opts)
                srv->opts = *opts;
        if (!srv->opts.pool_threads)
                srv->opts.pool_threads = DEFAULT_POOL_THREADS;
        if (!srv->opts.max_stream_threads)
                srv->opts.max_stream_threads = DEFAULT_MAX_STREAM_THREADS;
        if (!srv->opts.max_recv_bytes || srv->opts.max_recv_bytes > INT32_MAX)
                srv->opts.max_recv_bytes = RPC_DEFAULT_MAX_RECV;
        pthread_mutex_init(&srv->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&srv->cond, &ca);
        pthread_condattr_destroy(&ca);
        srv->shutdown_tag.fn = on_shutdown;

        rpc_grpc_ref();
        /* Server-side keepalive finds clients that vanished without closing the connection
         * (a laptop that went to sleep during `logs --follow`); clients may ping every 5 s. */
        grpc_arg args[] = {
            {.type = GRPC_ARG_INTEGER,
             .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
             .value.integer = (int)srv->opts.max_recv_bytes},
            {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS, .value.integer = 60000},
            {.type = GRPC_ARG_INTEGER,
             .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
             .value.integer = 20000},
            {.type = GRPC_ARG_INTEGER,
             .key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
             .value.integer = 1},
            {.type = GRPC_ARG_INTEGER,
             .key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
             .value.integer = 4000},
            /* a connection that has not finished its TLS handshake (with a client certificate)
             * within 10 s is closed, not held for gRPC's default 120 s: idle sockets from anyone
             * who can reach the port cannot pile up to the fd limit */
            {.type = GRPC_ARG_INTEGER,
             .key = GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
             .value.integer = RPC_HANDSHAKE_TIMEOUT_MS},
        };
        grpc_channel_args chargs = {.num_args = ARRAY_SIZE(args), .args = args};
        srv->server = grpc_server_create(&chargs, NULL);
        srv->cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
        return srv;
}

int rpc_server_add_methods(struct rpc_server *srv, const struct rpc_method *methods, size_t n,
                           struct cap_error *err)
{
        if (srv->started)
                return cap_error_set(err, -EBUSY, CAP_INTERNAL, "server already started");
        for (size_t i = 0; i < n; i++) {
                const struct rpc_method *m = &methods[i];
                if (!m->path || m->path[0] != '/' || !m->req_desc || !m->resp_desc)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "method %zu: path and descriptors are required", i);
                if ((m->kind == RPC_UNARY && m->stream) || (m->kind != RPC_UNARY && m->unary))
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "method %s: handler does not match its kind", m->path);
                for (size_t j = 0; j < srv->n_methods; j++)
                        if (strcmp(srv->methods[j].path, m->path) == 0)
                                return cap_error_set(err, -EEXIST, CAP_ALREADY_EXISTS,
                                                     "method %s registered twice", m->path);
                struct rpc_method *a =
                    realloc(srv->methods, (srv->n_methods + 1) * sizeof(*srv->methods));
                if (!a)
                        return cap_error_errno(err, -ENOMEM, "register %s", m->path);
                srv->methods = a;
                uint64_t(*cn)[RPC_STATUS_CODES] =
                    realloc(srv->counts, (srv->n_methods + 1) * sizeof(*srv->counts));
                if (!cn)
                        return cap_error_errno(err, -ENOMEM, "register %s", m->path);
                srv->counts = cn;
                memset(srv->counts[srv->n_methods], 0, sizeof(*srv->counts));
                srv->methods[srv->n_methods++] = *m;
        }
        return 0;
}

int rpc_server_add_method(struct rpc_server *srv, const struct rpc_method *method,
                          struct cap_error *err)
{
        return rpc_server_add_methods(srv, method, 1, err);
}

int rpc_server_stats(struct rpc_server *srv, struct rpc_method_stats **out, size_t *n,
                     struct cap_error *err)
{
        *out = calloc(srv->n_methods ? srv->n_methods : 1, sizeof(**out));
        *n = 0;
        if (!*out)
                return cap_error_errno(err, -ENOMEM, "rpc stats");
        for (size_t i = 0; i < srv->n_methods; i++) {
                struct rpc_method_stats *st = &(*out)[i];
                st->path = srv->methods[i].path;
                for (unsigned k = 0; k < RPC_STATUS_CODES; k++) {
                        st->by_status[k] = __atomic_load_n(&srv->counts[i][k], __ATOMIC_RELAXED);
                        st->calls += st->by_status[k];
                }
        }
        *n = srv->n_methods;
        return 0;
}

int rpc_server_listen(struct rpc_server *srv, const char *addr, const struct rpc_tls *tls,
                      struct cap_error *err)
{
        if (srv->started)
                return cap_error_set(err, -EBUSY, CAP_INTERNAL, "listen %s: server already started",
                                     addr);
        int r = rpc_check_address(addr, err);
        if (r < 0)
                return r;
        if (tls && (!tls->cert_pem || !tls->key_pem || (tls->require_client_cert && !tls->ca_pem)))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "listen %s: TLS needs a certificate and key (and a CA to "
                                     "verify clients)",
                                     addr);
        grpc_server_credentials *creds = rpc_server_creds(tls);
        int port = grpc_server_add_http2_port(srv->server, addr, creds);
        grpc_server_credentials_release(creds);
        if (port <= 0)
                return cap_error_set(err, -EADDRNOTAVAIL, CAP_UNAVAILABLE,
                                     "listen %s: cannot bind (in use, bad address or bad TLS "
                                     "material)",
                                     addr);
        return rpc_is_unix_address(addr) ? 0 : port;
}

int rpc_server_start(struct rpc_server *srv, struct cap_error *err)
{
        if (srv->started)
                return cap_error_set(err, -EBUSY, CAP_INTERNAL, "server already started");
        grpc_server_start(srv->server);
        srv->started = true;
        srv->pool = calloc(srv->opts.pool_threads, sizeof(*srv->pool));
        srv->busy_since = calloc(srv->opts.pool_threads, sizeof(*srv->busy_since));
        if (!srv->pool || !srv->busy_since)
                return cap_error_errno(err, -ENOMEM, "start server");
        for (unsigned i = 0; i < srv->opts.pool_threads; i++) {
                int r = pthread_create(&srv->pool[i], NULL, pool_main, srv);
                if (r != 0)
                        return cap_error_errno(err, -r, "start server: create thread");
                __atomic_store_n(&srv->n_pool, srv->n_pool + 1, __ATOMIC_RELEASE);
        }
        for (unsigned i = 0; i < srv->opts.pool_threads; i++)
                request_call(srv);
        return 0;
}

int rpc_server_add_fd(struct rpc_server *srv, int fd, struct cap_error *err)
{
        if (!srv->started) {
                close(fd);
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "add fd: server not started");
        }
        int r = rpc_fd_nonblock(fd, err);
        if (r < 0) {
                close(fd);
                return r;
        }
        grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
        grpc_server_add_channel_from_fd(srv->server, fd, creds);
        grpc_server_credentials_release(creds);
        return 0;
}

/* Waits on srv->cond until *flag, or until deadline when given; with srv->lock held. */
static void wait_flag_locked(struct rpc_server *srv, const bool *flag, const struct timespec *dl)
{
        while (!*flag) {
                if (!dl) {
                        pthread_cond_wait(&srv->cond, &srv->lock);
                } else if (pthread_cond_timedwait(&srv->cond, &srv->lock, dl) == ETIMEDOUT) {
                        return;
                }
        }
}

/* Stops a started server: see the top comment. */
static void server_stop(struct rpc_server *srv, int grace_ms)
{
        struct timespec dl = deadline_in_ms(CLOCK_MONOTONIC, grace_ms);
        pthread_mutex_lock(&srv->lock);
        srv->shutting_down = true;
        pthread_mutex_unlock(&srv->lock);
        grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);

        pthread_mutex_lock(&srv->lock);
        wait_flag_locked(srv, &srv->shutdown_done, grace_ms > 0 ? &dl : NULL);
        bool done = srv->shutdown_done || grace_ms <= 0;
        pthread_mutex_unlock(&srv->lock);
        if (!done || grace_ms <= 0)
                grpc_server_cancel_all_calls(srv->server);

        pthread_mutex_lock(&srv->lock);
        wait_flag_locked(srv, &srv->shutdown_done, NULL);
        while (srv->stream_threads > 0)
                pthread_cond_wait(&srv->cond, &srv->lock);
        reap_threads_locked(srv);
        while (srv->live_calls > 0)
                pthread_cond_wait(&srv->cond, &srv->lock);
        pthread_mutex_unlock(&srv->lock);

        grpc_server_destroy(srv->server);
        grpc_completion_queue_shutdown(srv->cq);
        for (unsigned i = 0; i < srv->n_pool; i++)
                pthread_join(srv->pool[i], NULL);
}

void rpc_server_shutdown(struct rpc_server *srv, int grace_ms)
{
        if (!srv)
                return;
        if (srv->n_pool > 0) {
                server_stop(srv, grace_ms);
        } else {
                /* never started (or no pool thread could be created): drain the queue here */
                grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
                grpc_server_cancel_all_calls(srv->server);
                grpc_event ev;
                do {
                        ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                        NULL);
                } while (ev.type == GRPC_OP_COMPLETE && ev.tag != &srv->shutdown_tag);
                grpc_server_destroy(srv->server);
                grpc_completion_queue_shutdown(srv->cq);
                while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                           .type != GRPC_QUEUE_SHUTDOWN)
                        ;
        }
        grpc_completion_queue_destroy(srv->cq);
        free(srv->pool);
        free(srv->busy_since);
        free(srv->methods);
        free(srv->counts);
        pthread_mutex_destroy(&srv->lock);
        pthread_cond_destroy(&srv->cond);
        free(srv);
        rpc_grpc_unref();
}
