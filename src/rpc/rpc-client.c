/* The rpc client: a channel to one target, unary calls and streams of protobuf-c messages
 * (see rpc.h).
 *
 * Every call gets its own pluck completion queue and the calling thread waits for exactly the tag
 * it started (grpc_completion_queue_pluck), the model of gRPC's own synchronous API: no
 * background thread, no shared queue to dispatch from, and any number of threads may run calls on
 * one client. A stream keeps at most one outstanding batch per operation kind: sends (serialised
 * by send_lock), receives (recv_lock), initial metadata and the status, which is requested when
 * the stream opens so the final status is kept whichever side ends the call; send and receive
 * threads pluck different tags, so bidi streams may send and receive concurrently. */
#include "rpc-internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/grpc_posix.h>
#include <grpc/support/alloc.h>

#include "common/cleanup.h"

/* Idle pluck queues kept for reuse by unary calls: creating and destroying one per call costs
 * more than the rest of the client side of a call on loopback. */
#define CQ_CACHE 8

struct rpc_client {
        grpc_channel *ch;
        bool shared_ch; /* borrowed from another client (rpc_client_share): not destroyed here */
        grpc_metadata *md;
        size_t n_md;
        pthread_mutex_t cq_lock;
        grpc_completion_queue *cq_cache[CQ_CACHE];
        size_t n_cq_cache;
        char *peer_cert_pem; /* the server's certificate, from the first call that got an answer
                              * over TLS (under cq_lock) */
};

struct rpc_stream {
        struct rpc_client *c;
        grpc_call *call;
        grpc_completion_queue *cq;
        const ProtobufCMessageDescriptor *resp_desc;
        char *method;
        pthread_mutex_t send_lock, recv_lock, status_lock;
        bool send_closed;                /* under send_lock */
        bool imd_started;                /* RECV_INITIAL_METADATA outstanding until free */
        bool status_started, got_status; /* under status_lock */
        grpc_metadata_array imd, trailing;
        grpc_status_code status;
        grpc_slice details;
        /* distinct addresses used as pluck tags */
        char tag_send, tag_recv, tag_status, tag_imd;
};

static gpr_timespec forever(void)
{
        return gpr_inf_future(GPR_CLOCK_REALTIME);
}

/* ---- channels ----------------------------------------------------------------------------- */

static void cq_free(grpc_completion_queue *cq)
{
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
}

/* A pluck queue with nothing pending, from the cache or new. */
static grpc_completion_queue *cq_get(struct rpc_client *c)
{
        grpc_completion_queue *cq = NULL;
        pthread_mutex_lock(&c->cq_lock);
        if (c->n_cq_cache > 0)
                cq = c->cq_cache[--c->n_cq_cache];
        pthread_mutex_unlock(&c->cq_lock);
        return cq ? cq : grpc_completion_queue_create_for_pluck(NULL);
}

/* Returns a queue whose every tag has been plucked. */
static void cq_put(struct rpc_client *c, grpc_completion_queue *cq)
{
        pthread_mutex_lock(&c->cq_lock);
        if (c->n_cq_cache < CQ_CACHE) {
                c->cq_cache[c->n_cq_cache++] = cq;
                cq = NULL;
        }
        pthread_mutex_unlock(&c->cq_lock);
        if (cq)
                cq_free(cq);
}

static struct rpc_client *client_new(const char *target, int fd, const struct rpc_client_opts *o,
                                     struct cap_error *err)
{
        struct rpc_client_opts defaults = {0};
        if (!o)
                o = &defaults;
        struct rpc_client *c = calloc(1, sizeof(*c));
        if (!c) {
                if (fd >= 0)
                        close(fd);
                cap_error_errno(err, -ENOMEM, "rpc client");
                return NULL;
        }
        size_t max_recv = o->max_recv_bytes && o->max_recv_bytes <= INT32_MAX
                              ? o->max_recv_bytes
                              : RPC_DEFAULT_MAX_RECV;
        int keepalive = o->keepalive_ms > 0 && o->keepalive_ms < 5000 ? 5000 : o->keepalive_ms;
        grpc_arg args[8];
        size_t n = 0;
        args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                               .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                               .value.integer = (int)max_recv};
        if (keepalive > 0) {
                args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                                       .key = GRPC_ARG_KEEPALIVE_TIME_MS,
                                       .value.integer = keepalive};
                args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                                       .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                                       .value.integer = keepalive < 20000 ? keepalive : 20000};
                args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                                       .key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
                                       .value.integer = 1};
                args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                                       .key = GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA,
                                       .value.integer = 0};
        }
        if (o->tls && o->tls->server_name)
                args[n++] = (grpc_arg){.type = GRPC_ARG_STRING,
                                       .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                                       .value.string = (char *)o->tls->server_name};
        grpc_channel_args chargs = {.num_args = n, .args = args};

        pthread_mutex_init(&c->cq_lock, NULL);
        rpc_grpc_ref();
        if (fd >= 0) {
                grpc_channel_credentials *creds = grpc_insecure_credentials_create();
                char name[32];
                snprintf(name, sizeof(name), "fd:%d", fd);
                c->ch = grpc_channel_create_from_fd(name, fd, creds, &chargs);
                grpc_channel_credentials_release(creds);
        } else {
                grpc_channel_credentials *creds = rpc_channel_creds(o->tls);
                c->ch = grpc_channel_create(target, creds, &chargs);
                grpc_channel_credentials_release(creds);
        }
        if (!c->ch) {
                rpc_grpc_unref();
                pthread_mutex_destroy(&c->cq_lock);
                free(c);
                cap_error_set(err, -EIO, CAP_UNAVAILABLE, "cannot create channel to %s",
                              target ? target : "fd");
                return NULL;
        }
        return c;
}

struct rpc_client *rpc_client_new_opts(const char *target, const struct rpc_client_opts *opts,
                                       struct cap_error *err)
{
        if (rpc_check_address(target, err) < 0)
                return NULL;
        const struct rpc_tls *tls = opts ? opts->tls : NULL;
        if (tls && !tls->cert_pem != !tls->key_pem) {
                cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                              "client TLS: give both certificate and key, or neither");
                return NULL;
        }
        return client_new(target, -1, opts, err);
}

struct rpc_client *rpc_client_new(const char *target, const struct rpc_tls *tls,
                                  struct cap_error *err)
{
        struct rpc_client_opts opts = {.tls = tls};
        return rpc_client_new_opts(target, &opts, err);
}

struct rpc_client *rpc_client_new_fd(int fd, const struct rpc_client_opts *opts,
                                     struct cap_error *err)
{
        if (opts && opts->tls) {
                close(fd);
                cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "fd channels are plaintext only");
                return NULL;
        }
        if (rpc_fd_nonblock(fd, err) < 0) {
                close(fd);
                return NULL;
        }
        return client_new(NULL, fd, opts, err);
}

struct rpc_client *rpc_client_share(struct rpc_client *c, struct cap_error *err)
{
        struct rpc_client *s = calloc(1, sizeof(*s));
        if (!s || (c->n_md && !(s->md = calloc(c->n_md, sizeof(*s->md))))) {
                free(s);
                cap_error_errno(err, -ENOMEM, "rpc client");
                return NULL;
        }
        s->ch = c->ch;
        s->shared_ch = true;
        for (size_t i = 0; i < c->n_md; i++) {
                s->md[i].key = grpc_slice_ref(c->md[i].key);
                s->md[i].value = grpc_slice_ref(c->md[i].value);
        }
        s->n_md = c->n_md;
        pthread_mutex_init(&s->cq_lock, NULL);
        rpc_grpc_ref();
        return s;
}

int rpc_client_add_metadata(struct rpc_client *c, const char *key, const char *value,
                            struct cap_error *err)
{
        for (const char *p = key; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "metadata key `%s` must be lower-case", key);
        grpc_metadata *md = realloc(c->md, (c->n_md + 1) * sizeof(*md));
        if (!md)
                return cap_error_errno(err, -ENOMEM, "metadata");
        c->md = md;
        memset(&md[c->n_md], 0, sizeof(*md));
        md[c->n_md].key = grpc_slice_from_copied_string(key);
        md[c->n_md].value = grpc_slice_from_copied_string(value);
        c->n_md++;
        return 0;
}

void rpc_client_free(struct rpc_client *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < c->n_md; i++) {
                grpc_slice_unref(c->md[i].key);
                grpc_slice_unref(c->md[i].value);
        }
        free(c->md);
        if (!c->shared_ch)
                grpc_channel_destroy(c->ch);
        for (size_t i = 0; i < c->n_cq_cache; i++)
                cq_free(c->cq_cache[i]);
        pthread_mutex_destroy(&c->cq_lock);
        free(c->peer_cert_pem);
        free(c);
        rpc_grpc_unref();
}

static grpc_call *client_call(struct rpc_client *c, const char *method, grpc_completion_queue *cq,
                              int timeout_ms)
{
        grpc_slice m = grpc_slice_from_copied_string(method);
        grpc_call *call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m,
                                                   NULL, rpc_deadline(timeout_ms), NULL);
        grpc_slice_unref(m);
        return call;
}

/* Keeps the server's certificate (gRPC's x509_pem_cert of the call's auth context) once. */
static void keep_peer_cert(struct rpc_client *c, grpc_call *call)
{
        pthread_mutex_lock(&c->cq_lock);
        bool have = c->peer_cert_pem != NULL;
        pthread_mutex_unlock(&c->cq_lock);
        if (have)
                return;
        grpc_auth_context *ctx = grpc_call_auth_context(call);
        if (!ctx)
                return;
        grpc_auth_property_iterator it =
            grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
        const grpc_auth_property *prop = grpc_auth_property_iterator_next(&it);
        char *pem = prop ? strndup(prop->value, prop->value_length) : NULL;
        grpc_auth_context_release(ctx);
        pthread_mutex_lock(&c->cq_lock);
        if (!c->peer_cert_pem) {
                c->peer_cert_pem = pem;
                pem = NULL;
        }
        pthread_mutex_unlock(&c->cq_lock);
        free(pem);
}

char *rpc_client_peer_cert_pem(struct rpc_client *c)
{
        pthread_mutex_lock(&c->cq_lock);
        char *pem = c->peer_cert_pem ? strdup(c->peer_cert_pem) : NULL;
        pthread_mutex_unlock(&c->cq_lock);
        return pem;
}

/* ---- unary -------------------------------------------------------------------------------- */

int rpc_unary(struct rpc_client *c, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int timeout_ms,
              struct cap_error *err)
{
        *resp = NULL;
        grpc_completion_queue *cq = cq_get(c);
        grpc_call *call = client_call(c, method, cq, timeout_ms);
        grpc_byte_buffer *out = rpc_pack(req), *in = NULL;
        grpc_metadata_array imd, tmd;
        grpc_metadata_array_init(&imd);
        grpc_metadata_array_init(&tmd);
        grpc_status_code status = GRPC_STATUS_UNKNOWN;
        grpc_slice details = grpc_empty_slice();
        grpc_op ops[6];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].data.send_initial_metadata.count = c->n_md;
        ops[0].data.send_initial_metadata.metadata = c->md;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = out;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &imd;
        ops[4].op = GRPC_OP_RECV_MESSAGE;
        ops[4].data.recv_message.recv_message = &in;
        ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[5].data.recv_status_on_client.trailing_metadata = &tmd;
        ops[5].data.recv_status_on_client.status = &status;
        ops[5].data.recv_status_on_client.status_details = &details;

        int r;
        grpc_call_error e = grpc_call_start_batch(call, ops, ARRAY_SIZE(ops), ops, NULL);
        if (e != GRPC_CALL_OK) {
                r = cap_error_set(err, -EIO, CAP_INTERNAL, "%s: start call: error %d", method,
                                  (int)e);
        } else {
                grpc_completion_queue_pluck(cq, ops, forever(), NULL);
                if (status == GRPC_STATUS_OK)
                        keep_peer_cert(c, call);
                r = rpc_status_error(err, status, details, method);
                if (r == 0 && !in)
                        r = cap_error_set(err, -EBADMSG, CAP_INTERNAL,
                                          "%s: server sent OK without a response", method);
                if (r == 0) {
                        *resp = rpc_unpack(in, resp_desc, err);
                        if (!*resp)
                                r = cap_error_prefix(err, "%s: response", method);
                }
        }
        if (in)
                grpc_byte_buffer_destroy(in);
        grpc_byte_buffer_destroy(out);
        grpc_slice_unref(details);
        grpc_metadata_array_destroy(&imd);
        grpc_metadata_array_destroy(&tmd);
        grpc_call_unref(call);
        if (e == GRPC_CALL_OK)
                cq_put(c, cq);
        else
                cq_free(cq);
        return r;
}

/* ---- streams ------------------------------------------------------------------------------ */

/* Runs one batch on the stream and waits for it; returns the batch's success. */
static bool stream_batch(struct rpc_stream *s, const grpc_op *ops, size_t n, void *tag)
{
        if (grpc_call_start_batch(s->call, ops, n, tag, NULL) != GRPC_CALL_OK)
                return false;
        return grpc_completion_queue_pluck(s->cq, tag, forever(), NULL).success != 0;
}

/* Waits for the final status (requested at open) and returns it as an error (0 for OK). */
static int stream_status(struct rpc_stream *s, struct cap_error *err)
{
        pthread_mutex_lock(&s->status_lock);
        if (s->status_started && !s->got_status) {
                grpc_completion_queue_pluck(s->cq, &s->tag_status, forever(), NULL);
                s->got_status = true;
        }
        bool got = s->got_status;
        pthread_mutex_unlock(&s->status_lock);
        if (!got)
                return cap_error_set(err, -EIO, CAP_INTERNAL, "%s: no status", s->method);
        return rpc_status_error(err, s->status, s->details, s->method);
}

/* The error for an operation that failed because the call is over. */
static int stream_ended(struct rpc_stream *s, const char *what, struct cap_error *err)
{
        int r = stream_status(s, err);
        if (r < 0)
                return r;
        return cap_error_set(err, -EPIPE, CAP_FAILED_PRECONDITION, "%s: %s: stream already ended",
                             s->method, what);
}

struct rpc_stream *rpc_stream_open(struct rpc_client *c, const char *method,
                                   const ProtobufCMessageDescriptor *resp_desc, int timeout_ms,
                                   struct cap_error *err)
{
        struct rpc_stream *s = calloc(1, sizeof(*s));
        if (!s || !(s->method = strdup(method))) {
                free(s);
                cap_error_errno(err, -ENOMEM, "open %s", method);
                return NULL;
        }
        s->c = c;
        s->resp_desc = resp_desc;
        s->details = grpc_empty_slice();
        pthread_mutex_init(&s->send_lock, NULL);
        pthread_mutex_init(&s->recv_lock, NULL);
        pthread_mutex_init(&s->status_lock, NULL);
        grpc_metadata_array_init(&s->imd);
        grpc_metadata_array_init(&s->trailing);
        s->cq = grpc_completion_queue_create_for_pluck(NULL);
        s->call = client_call(c, method, s->cq, timeout_ms);

        grpc_op ops[1];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[0].data.recv_status_on_client.trailing_metadata = &s->trailing;
        ops[0].data.recv_status_on_client.status = &s->status;
        ops[0].data.recv_status_on_client.status_details = &s->details;
        s->status_started =
            grpc_call_start_batch(s->call, ops, 1, &s->tag_status, NULL) == GRPC_CALL_OK;
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[0].data.recv_initial_metadata.recv_initial_metadata = &s->imd;
        s->imd_started = grpc_call_start_batch(s->call, ops, 1, &s->tag_imd, NULL) == GRPC_CALL_OK;

        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].data.send_initial_metadata.count = c->n_md;
        ops[0].data.send_initial_metadata.metadata = c->md;
        if (!s->status_started || !s->imd_started || !stream_batch(s, ops, 1, &s->tag_send)) {
                if (stream_ended(s, "open", err) >= 0)
                        cap_error_set(err, -EIO, CAP_INTERNAL, "%s: cannot open stream", method);
                rpc_stream_free(s);
                return NULL;
        }
        return s;
}

int rpc_stream_send(struct rpc_stream *s, const ProtobufCMessage *msg, struct cap_error *err)
{
        pthread_mutex_lock(&s->send_lock);
        if (s->send_closed) {
                pthread_mutex_unlock(&s->send_lock);
                return cap_error_set(err, -EPIPE, CAP_INTERNAL, "%s: send after close_send",
                                     s->method);
        }
        grpc_byte_buffer *buf = rpc_pack(msg);
        grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
        op.data.send_message.send_message = buf;
        bool ok = stream_batch(s, &op, 1, &s->tag_send);
        pthread_mutex_unlock(&s->send_lock);
        grpc_byte_buffer_destroy(buf);
        return ok ? 0 : stream_ended(s, "send", err);
}

int rpc_stream_close_send(struct rpc_stream *s, struct cap_error *err)
{
        pthread_mutex_lock(&s->send_lock);
        bool ok = true;
        if (!s->send_closed) {
                grpc_op op = {.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT};
                ok = stream_batch(s, &op, 1, &s->tag_send);
                s->send_closed = true;
        }
        pthread_mutex_unlock(&s->send_lock);
        return ok ? 0 : stream_ended(s, "close", err);
}

int rpc_stream_recv(struct rpc_stream *s, ProtobufCMessage **msg, struct cap_error *err)
{
        *msg = NULL;
        grpc_byte_buffer *buf = NULL;
        grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
        op.data.recv_message.recv_message = &buf;
        pthread_mutex_lock(&s->recv_lock);
        bool ok = stream_batch(s, &op, 1, &s->tag_recv);
        pthread_mutex_unlock(&s->recv_lock);
        if (!buf) {
                int r = stream_status(s, err);
                if (r == 0 && !ok)
                        r = cap_error_set(err, -EIO, CAP_INTERNAL, "%s: receive failed", s->method);
                return r;
        }
        *msg = rpc_unpack(buf, s->resp_desc, err);
        grpc_byte_buffer_destroy(buf);
        if (!*msg)
                return cap_error_prefix(err, "%s: response", s->method);
        return 1;
}

int rpc_stream_finish(struct rpc_stream *s, struct cap_error *err)
{
        return stream_status(s, err);
}

void rpc_stream_cancel(struct rpc_stream *s)
{
        grpc_call_cancel(s->call, NULL);
}

void rpc_stream_free(struct rpc_stream *s)
{
        if (!s)
                return;
        pthread_mutex_lock(&s->status_lock);
        bool done = s->got_status || !s->status_started;
        pthread_mutex_unlock(&s->status_lock);
        if (!done)
                grpc_call_cancel(s->call, NULL);
        stream_status(s, NULL);
        if (s->imd_started)
                grpc_completion_queue_pluck(s->cq, &s->tag_imd, forever(), NULL);
        grpc_call_unref(s->call);
        cq_free(s->cq);
        grpc_metadata_array_destroy(&s->imd);
        grpc_metadata_array_destroy(&s->trailing);
        grpc_slice_unref(s->details);
        pthread_mutex_destroy(&s->send_lock);
        pthread_mutex_destroy(&s->recv_lock);
        pthread_mutex_destroy(&s->status_lock);
        free(s->method);
        free(s);
}
