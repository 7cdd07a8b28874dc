/* Tests of src/rpc: a server and clients in one process over loopback TCP, a unix socket, a
 * socketpair and mutual TLS, with a test service under /test.Echo/ whose payloads are capsule.v1
 * messages (VersionRequest/VersionResponse for unary, LogChunk for streams). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "capsule/v1/system.pb-c.h"
#include "capsule/v1/workloads.pb-c.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "rpc-test-pki.h"
#include "rpc.h"
#include "test.h"

static struct rpc_test_pki pki;
static struct rpc_server *srv; /* plaintext on TCP and a unix socket, later a socketpair */
static int srv_port;
static char unix_addr[128];
static struct rpc_server *tls_srv; /* mutual TLS on TCP */
static int tls_port;
static atomic_int wait_handler_saw_cancel, wait_handler_running;

/* ---- the test service --------------------------------------------------------------------- */

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Answers version "v1", the peer's CN/O in hostname/mode and the x-test header in build. */
static int echo_unary(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                      struct cap_error *err)
{
        Capsule__V1__VersionResponse *r = (Capsule__V1__VersionResponse *)resp;
        struct rpc_peer peer;
        if (rpc_call_peer(call, &peer, err) < 0)
                return err->code;
        char hdr[64] = "";
        rpc_call_metadata(call, "x-test", hdr, sizeof(hdr));
        r->version = strdup("v1");
        r->hostname = strdup(peer.cn);
        r->mode = strdup(peer.org);
        r->build = strdup(hdr);
        r->kernel = strdup(peer.addr);
        r->uptime_seconds = 42;
        return 0;
}

static int echo_fail(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                     struct cap_error *err)
{
        return cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "volume `data` not found");
}

static int echo_fail_ok_status(struct rpc_call *call, const ProtobufCMessage *req,
                               ProtobufCMessage *resp, struct cap_error *err)
{
        err->status = CAP_OK;
        snprintf(err->msg, sizeof(err->msg), "forgot the status");
        return -EIO;
}

static int echo_slow(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                     struct cap_error *err)
{
        int64_t end = now_ms() + 2000;
        while (!rpc_call_cancelled(call) && now_ms() < end)
                usleep(5000);
        return 0;
}

/* Server stream: req->time_unix_nano messages numbered 0..N-1. */
static int echo_count(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        const Capsule__V1__LogChunk *in = (const Capsule__V1__LogChunk *)req;
        for (int64_t i = 0; i < in->time_unix_nano; i++) {
                Capsule__V1__LogChunk out = CAPSULE__V1__LOG_CHUNK__INIT;
                out.time_unix_nano = i;
                out.stream = "stdout";
                if (rpc_call_send(call, &out.base, err) < 0)
                        return err->code;
        }
        return 0;
}

/* Client stream: sums time_unix_nano of all requests. */
static int echo_sum(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        int64_t sum = 0;
        ProtobufCMessage *m;
        int r;
        while ((r = rpc_call_recv(call, &m, err)) > 0) {
                sum += ((Capsule__V1__LogChunk *)m)->time_unix_nano;
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (r < 0)
                return r;
        Capsule__V1__LogChunk out = CAPSULE__V1__LOG_CHUNK__INIT;
        out.time_unix_nano = sum;
        return rpc_call_send(call, &out.base, err);
}

#define BIDI_TICKS 5

static void *bidi_ticker(void *arg)
{
        struct rpc_call *call = arg;
        for (int i = 0; i < BIDI_TICKS; i++) {
                Capsule__V1__LogChunk out = CAPSULE__V1__LOG_CHUNK__INIT;
                out.stream = "tick";
                struct cap_error err = {0};
                if (rpc_call_send(call, &out.base, &err) < 0)
                        break;
                usleep(1000);
        }
        return NULL;
}

/* Bidi: echoes every request while a second thread sends BIDI_TICKS "tick" messages. */
static int echo_bidi(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        pthread_t ticker;
        if (pthread_create(&ticker, NULL, bidi_ticker, call) != 0)
                return cap_error_set(err, -EAGAIN, CAP_INTERNAL, "thread");
        ProtobufCMessage *m;
        int r;
        while ((r = rpc_call_recv(call, &m, err)) > 0) {
                Capsule__V1__LogChunk *in = (Capsule__V1__LogChunk *)m;
                Capsule__V1__LogChunk out = CAPSULE__V1__LOG_CHUNK__INIT;
                out.stream = "echo";
                out.data = in->data;
                out.time_unix_nano = in->time_unix_nano;
                r = rpc_call_send(call, &out.base, err);
                protobuf_c_message_free_unpacked(m, NULL);
                if (r < 0)
                        break;
        }
        pthread_join(ticker, NULL);
        return r < 0 ? r : 0;
}

/* Server stream that sends one message then waits (like `logs --follow`) for cancellation. */
static int echo_wait(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        Capsule__V1__LogChunk out = CAPSULE__V1__LOG_CHUNK__INIT;
        out.stream = "hello";
        if (rpc_call_send(call, &out.base, err) < 0)
                return err->code;
        int fd = rpc_call_cancel_fd(call, err);
        if (fd < 0)
                return fd;
        atomic_fetch_add(&wait_handler_running, 1);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 20000);
        if (r == 1 && rpc_call_cancelled(call))
                atomic_fetch_add(&wait_handler_saw_cancel, 1);
        atomic_fetch_sub(&wait_handler_running, 1);
        return cap_error_set(err, -ECANCELED, CAP_CANCELLED, "cancelled");
}

#define VREQ &capsule__v1__version_request__descriptor
#define VRESP &capsule__v1__version_response__descriptor
#define CHUNK &capsule__v1__log_chunk__descriptor

static const struct rpc_method echo_methods[] = {
    {.path = "/test.Echo/Unary",
     .kind = RPC_UNARY,
     .req_desc = VREQ,
     .resp_desc = VRESP,
     .unary = echo_unary},
    {.path = "/test.Echo/Mutate",
     .kind = RPC_UNARY,
     .req_desc = VREQ,
     .resp_desc = VRESP,
     .flags = RPC_METHOD_MUTATING,
     .unary = echo_unary},
    {.path = "/test.Echo/Fail",
     .kind = RPC_UNARY,
     .req_desc = VREQ,
     .resp_desc = VRESP,
     .unary = echo_fail},
    {.path = "/test.Echo/FailOk",
     .kind = RPC_UNARY,
     .req_desc = VREQ,
     .resp_desc = VRESP,
     .unary = echo_fail_ok_status},
    {.path = "/test.Echo/Slow",
     .kind = RPC_UNARY,
     .req_desc = VREQ,
     .resp_desc = VRESP,
     .flags = RPC_METHOD_BLOCKING,
     .unary = echo_slow},
    {.path = "/test.Echo/Count",
     .kind = RPC_SERVER_STREAM,
     .req_desc = CHUNK,
     .resp_desc = CHUNK,
     .stream = echo_count},
    {.path = "/test.Echo/Sum",
     .kind = RPC_CLIENT_STREAM,
     .req_desc = CHUNK,
     .resp_desc = CHUNK,
     .stream = echo_sum},
    {.path = "/test.Echo/Bidi",
     .kind = RPC_BIDI,
     .req_desc = CHUNK,
     .resp_desc = CHUNK,
     .stream = echo_bidi},
    {.path = "/test.Echo/Wait",
     .kind = RPC_SERVER_STREAM,
     .req_desc = CHUNK,
     .resp_desc = CHUNK,
     .stream = echo_wait},
    RPC_METHOD_TODO("/test.Echo/Todo", RPC_UNARY, VREQ, VRESP),
};

/* Mutating methods need the admin role. */
static int authorize(struct rpc_call *call, const struct rpc_method *m, void *ud,
                     struct cap_error *err)
{
        if (!(m->flags & RPC_METHOD_MUTATING))
                return 0;
        struct rpc_peer peer;
        if (rpc_call_peer(call, &peer, err) < 0)
                return -1;
        if (peer.verified && strcmp(peer.org, "capsule:admin") == 0)
                return 0;
        return cap_error_set(err, -EPERM, CAP_PERMISSION_DENIED, "%s needs role capsule:admin",
                             m->path);
}

static struct rpc_server *start_server(const char *addr, const struct rpc_tls *tls, int *port,
                                       const char *addr2)
{
        struct cap_error err = {0};
        struct rpc_server_opts opts = {.authorize = authorize};
        struct rpc_server *s = rpc_server_new(&opts, &err);
        if (!s)
                return NULL;
        int p = -1;
        if (rpc_server_add_methods(s, echo_methods, ARRAY_SIZE(echo_methods), &err) < 0 ||
            (p = rpc_server_listen(s, addr, tls, &err)) < 0 ||
            (addr2 && rpc_server_listen(s, addr2, NULL, &err) < 0) ||
            rpc_server_start(s, &err) < 0) {
                fprintf(stderr, "server: %s\n", err.msg);
                rpc_server_shutdown(s, 0);
                return NULL;
        }
        *port = p;
        return s;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static struct rpc_client *plain_client(void)
{
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%d", srv_port);
        struct cap_error err = {0};
        struct rpc_client *c = rpc_client_new(target, NULL, &err);
        CHECK(c != NULL);
        return c;
}

/* Calls a VersionRequest -> VersionResponse method; returns the result, *resp on success. */
static int call_version(struct rpc_client *c, const char *method,
                        Capsule__V1__VersionResponse **resp, int timeout_ms, struct cap_error *err)
{
        Capsule__V1__VersionRequest req = CAPSULE__V1__VERSION_REQUEST__INIT;
        ProtobufCMessage *out = NULL;
        int r = rpc_unary(c, method, &req.base, VRESP, &out, timeout_ms, err);
        *resp = (Capsule__V1__VersionResponse *)out;
        return r;
}

static void free_msg(void *m)
{
        if (m)
                protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- tests -------------------------------------------------------------------------------- */

TEST(unary_tcp)
{
        struct rpc_client *c = plain_client();
        struct cap_error err = {0};
        Capsule__V1__VersionResponse *v = NULL;
        CHECK(call_version(c, "/test.Echo/Unary", &v, 5000, &err) == 0);
        CHECK(v && strcmp(v->version, "v1") == 0 && v->uptime_seconds == 42);
        CHECK(v && strcmp(v->hostname, "") == 0); /* no client certificate */
        CHECK(v && strncmp(v->kernel, "ipv4:127.0.0.1:", 15) == 0);
        free_msg(v);
        rpc_client_free(c);
}

TEST(unary_unix_and_metadata)
{
        struct cap_error err = {0};
        struct rpc_client *c = rpc_client_new(unix_addr, NULL, &err);
        CHECK(c != NULL);
        CHECK(rpc_client_add_metadata(c, "x-test", "hello", &err) == 0);
        CHECK(rpc_client_add_metadata(c, "X-Bad", "x", &err) < 0);
        Capsule__V1__VersionResponse *v = NULL;
        CHECK(call_version(c, "/test.Echo/Unary", &v, 5000, &err) == 0);
        CHECK(v && strcmp(v->version, "v1") == 0);
        CHECK(v && strcmp(v->build, "hello") == 0);
        free_msg(v);
        rpc_client_free(c);
}

/* A shared client uses the parent's channel with metadata of its own; freeing it leaves the
 * parent working. */
TEST(shared_client_metadata)
{
        struct cap_error err = {0};
        struct rpc_client *c = rpc_client_new(unix_addr, NULL, &err);
        CHECK(c != NULL);
        struct rpc_client *s = rpc_client_share(c, &err);
        CHECK(s != NULL);
        CHECK(rpc_client_add_metadata(s, "x-test", "shared", &err) == 0);
        Capsule__V1__VersionResponse *v = NULL;
        CHECK(call_version(s, "/test.Echo/Unary", &v, 5000, &err) == 0);
        CHECK(v && strcmp(v->build, "shared") == 0);
        free_msg(v);
        v = NULL;
        CHECK(call_version(c, "/test.Echo/Unary", &v, 5000, &err) == 0);
        CHECK(v && strcmp(v->build, "") == 0);
        free_msg(v);
        v = NULL;
        rpc_client_free(s);
        CHECK(call_version(c, "/test.Echo/Unary", &v, 5000, &err) == 0);
        CHECK(v && strcmp(v->version, "v1") == 0);
        free_msg(v);
        rpc_client_free(c);
}

TEST(errors)
{
        struct rpc_client *c = plain_client();
        struct cap_error err = {0};
        Capsule__V1__VersionResponse *v = NULL;
        CHECK(call_version(c, "/test.Echo/Fail", &v, 5000, &err) < 0);
        CHECK(v == NULL);
        CHECK(err.status == CAP_NOT_FOUND);
        CHECK_STR_EQ(err.msg, "volume `data` not found");

        CHECK(call_version(c, "/test.Echo/FailOk", &v, 5000, &err) < 0);
        CHECK(err.status == CAP_INTERNAL);
        CHECK_STR_EQ(err.msg, "forgot the status");

        CHECK(call_version(c, "/test.Nope/Nothing", &v, 5000, &err) < 0);
        CHECK(err.status == CAP_UNIMPLEMENTED);
        CHECK_CONTAINS(err.msg, "/test.Nope/Nothing");

        CHECK(call_version(c, "/test.Echo/Todo", &v, 5000, &err) < 0);
        CHECK(err.status == CAP_UNIMPLEMENTED);
        CHECK_CONTAINS(err.msg, "not implemented");

        /* authorizer: no client certificate, mutating method */
        CHECK(call_version(c, "/test.Echo/Mutate", &v, 5000, &err) < 0);
        CHECK(err.status == CAP_PERMISSION_DENIED);
        CHECK_CONTAINS(err.msg, "capsule:admin");

        /* a streaming method called as unary: the server handles it, the client gets a status */
        CHECK(call_version(c, "/test.Echo/Count", &v, 5000, &err) == 0 || err.status != CAP_OK);
        free_msg(v);
        rpc_client_free(c);

        CHECK(rpc_client_new("vsock:3:5000", NULL, &err) == NULL);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        CHECK(rpc_client_new("dns:///x:1", NULL, &err) == NULL);
}

/* The counters rpc_server_stats reports: every ended call by final status, refused and
 * not-yet-implemented ones included, unknown paths not. */
static uint64_t stat_of(const char *path, int status)
{
        struct rpc_method_stats *st = NULL;
        size_t n = 0;
        struct cap_error err = {0};
        uint64_t v = UINT64_MAX;
        if (rpc_server_stats(srv, &st, &n, &err) < 0)
                return v;
        for (size_t i = 0; i < n; i++)
                if (strcmp(st[i].path, path) == 0)
                        v = status < 0 ? st[i].calls : st[i].by_status[status];
        free(st);
        return v;
}

TEST(method_stats)
{
        struct {
                const char *path;
                int status;
                uint64_t before;
                unsigned calls;
        } want[] = {
            {"/test.Echo/Unary", -1, 0, 2},
            {"/test.Echo/Unary", CAP_OK, 0, 2},
            {"/test.Echo/Fail", CAP_NOT_FOUND, 0, 1},
            {"/test.Echo/Fail", CAP_OK, 0, 0},
            {"/test.Echo/Mutate", CAP_PERMISSION_DENIED, 0, 1},
            {"/test.Echo/Todo", CAP_UNIMPLEMENTED, 0, 1},
            {"/test.Echo/Todo", -1, 0, 1},
        };
        for (size_t i = 0; i < ARRAY_SIZE(want); i++)
                want[i].before = stat_of(want[i].path, want[i].status);
        CHECK(stat_of("/test.Nope/Nothing", -1) == UINT64_MAX);
        struct rpc_client *c = plain_client();
        struct cap_error err = {0};
        Capsule__V1__VersionResponse *v = NULL;
        const char *calls[] = {"/test.Echo/Unary", "/test.Echo/Unary", "/test.Echo/Fail",
                               "/test.Echo/Mutate", "/test.Echo/Todo", "/test.Nope/Nothing"};
        for (size_t i = 0; i < ARRAY_SIZE(calls); i++) {
                call_version(c, calls[i], &v, 5000, &err);
                free_msg(v);
                v = NULL;
        }
        rpc_client_free(c);
        for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
                uint64_t now = stat_of(want[i].path, want[i].status);
                if (now - want[i].before != want[i].calls)
                        fprintf(stderr, "  %s status %d: %llu -> %llu\n", want[i].path,
                                want[i].status, (unsigned long long)want[i].before,
                                (unsigned long long)now);
                CHECK(now - want[i].before == want[i].calls);
        }
}

TEST(deadline)
{
        struct rpc_client *c = plain_client();
        struct cap_error err = {0};
        Capsule__V1__VersionResponse *v = NULL;
        int64_t t0 = now_ms();
        CHECK(call_version(c, "/test.Echo/Slow", &v, 100, &err) < 0);
        CHECK(err.status == CAP_DEADLINE_EXCEEDED);
        CHECK(now_ms() - t0 < 1500);
        free_msg(v);
        rpc_client_free(c);
}

TEST(server_stream)
{
        struct rpc_client *c = plain_client();
        struct cap_error err = {0};
        struct rpc_stream *s = rpc_stream_open(c, "/test.Echo/Count", CHUNK, 10000, &err);
        CHECK(s != NULL);
        if (!s) {
                rpc_client_free(c);
                return;
        }
        Capsule__V1__LogChunk req = CAPSULE__V1__LOG_CHUNK__INIT;
        req.time_unix_nano = 500;
        CHECK(rpc_stream_send(s, &req.base, &err) == 0);
        CHECK(rpc_stream_close_send(s, &err) == 0);
        ProtobufCMessage *m;
        int r, n = 0;
        bool in_order = true;
        while ((r = rpc_stream_recv(s, &m, &err)) > 0) {
                in_order &= ((Capsule__V1__LogChunk *)m)->time_unix_nano == n;
                n++;
                free_msg(m);
        }
        CHECK(r == 0);
        CHECK(n == 500);
        CHECK(in_order);
        CHECK(rpc_stream_finish(s, &err) == 0);
        rpc_stream_free(s);
        rpc_client_free(c);
}

TEST(client_stream)
{
        struct rpc_client *c = plain_client();
        struct cap_error err = {0};
        struct rpc_stream *s = rpc_stream_open(c, "/test.Echo/Sum", CHUNK, 10000, &err);
        CHECK(s != NULL);
        if (!s) {
                rpc_client_free(c);
                return;
        }
        for (int i = 1; i <= 100; i++) {
                Capsule__V1__LogChunk req = CAPSULE__V1__LOG_CHUNK__INIT;
                req.time_unix_nano = i;
                CHECK(rpc_stream_send(s, &req.base, &err) == 0);
        }
        CHECK(rpc_stream_close_send(s, &err) == 0);
        ProtobufCMessage *m = NULL;
        CHECK(rpc_stream_recv(s, &m, &err) == 1);
        CHECK(m && ((Capsule__V1__LogChunk *)m)->time_unix_nano == 5050);
        free_msg(m);
        CHECK(rpc_stream_recv(s, &m, &err) == 0);
        CHECK(rpc_stream_finish(s, &err) == 0);
        rpc_stream_free(s);
        rpc_client_free(c);
}

#define BIDI_N 200

static void *bidi_sender(void *arg)
{
        struct rpc_stream *s = arg;
        struct cap_error err = {0};
        uint8_t payload[1000];
        memset(payload, 'x', sizeof(payload));
        for (int i = 0; i < BIDI_N; i++) {
                Capsule__V1__LogChunk req = CAPSULE__V1__LOG_CHUNK__INIT;
                req.time_unix_nano = i;
                req.data.data = payload;
                req.data.len = sizeof(payload);
                if (rpc_stream_send(s, &req.base, &err) < 0)
                        return (void *)1;
        }
        return rpc_stream_close_send(s, &err) < 0 ? (void *)1 : NULL;
}

TEST(bidi)
{
        struct rpc_client *c = plain_client();
        struct cap_error err = {0};
        struct rpc_stream *s = rpc_stream_open(c, "/test.Echo/Bidi", CHUNK, 20000, &err);
        CHECK(s != NULL);
        if (!s) {
                rpc_client_free(c);
                return;
        }
        pthread_t t;
        CHECK(pthread_create(&t, NULL, bidi_sender, s) == 0);
        ProtobufCMessage *m;
        int r, echoes = 0, ticks = 0, bytes = 0;
        while ((r = rpc_stream_recv(s, &m, &err)) > 0) {
                Capsule__V1__LogChunk *ch = (Capsule__V1__LogChunk *)m;
                if (strcmp(ch->stream, "echo") == 0) {
                        echoes++;
                        bytes += (int)ch->data.len;
                } else if (strcmp(ch->stream, "tick") == 0) {
                        ticks++;
                }
                free_msg(m);
        }
        void *sent;
        pthread_join(t, &sent);
        CHECK(sent == NULL);
        CHECK(r == 0);
        CHECK(echoes == BIDI_N);
        CHECK(bytes == BIDI_N * 1000);
        CHECK(ticks == BIDI_TICKS);
        CHECK(rpc_stream_finish(s, &err) == 0);
        rpc_stream_free(s);
        rpc_client_free(c);
}

static bool wait_until(atomic_int *v, int want, int ms)
{
        for (int i = 0; i < ms / 5; i++) {
                if (atomic_load(v) == want)
                        return true;
                usleep(5000);
        }
        return atomic_load(v) == want;
}

TEST(cancel_seen_by_server)
{
        struct rpc_client *c = plain_client();
        struct cap_error err = {0};
        atomic_store(&wait_handler_saw_cancel, 0);
        struct rpc_stream *s = rpc_stream_open(c, "/test.Echo/Wait", CHUNK, 0, &err);
        CHECK(s != NULL);
        if (!s) {
                rpc_client_free(c);
                return;
        }
        Capsule__V1__LogChunk req = CAPSULE__V1__LOG_CHUNK__INIT;
        CHECK(rpc_stream_send(s, &req.base, &err) == 0);
        CHECK(rpc_stream_close_send(s, &err) == 0);
        ProtobufCMessage *m = NULL;
        CHECK(rpc_stream_recv(s, &m, &err) == 1);
        free_msg(m);
        CHECK(wait_until(&wait_handler_running, 1, 5000));
        rpc_stream_cancel(s);
        CHECK(rpc_stream_recv(s, &m, &err) < 0);
        CHECK(err.status == CAP_CANCELLED);
        CHECK(rpc_stream_finish(s, &err) < 0);
        CHECK(err.status == CAP_CANCELLED);
        rpc_stream_free(s);
        CHECK(wait_until(&wait_handler_saw_cancel, 1, 5000));
        CHECK(wait_until(&wait_handler_running, 0, 5000));
        rpc_client_free(c);
}

/* A stream's deadline ends it on both sides. */
TEST(stream_deadline)
{
        struct rpc_client *c = plain_client();
        struct cap_error err = {0};
        atomic_store(&wait_handler_saw_cancel, 0);
        struct rpc_stream *s = rpc_stream_open(c, "/test.Echo/Wait", CHUNK, 300, &err);
        Capsule__V1__LogChunk req = CAPSULE__V1__LOG_CHUNK__INIT;
        CHECK(s && rpc_stream_send(s, &req.base, &err) == 0);
        ProtobufCMessage *m = NULL;
        CHECK(s && rpc_stream_recv(s, &m, &err) == 1);
        free_msg(m);
        int64_t t0 = now_ms();
        CHECK(s && rpc_stream_recv(s, &m, &err) < 0);
        CHECK(err.status == CAP_DEADLINE_EXCEEDED);
        CHECK(now_ms() - t0 < 3000);
        CHECK(s && rpc_stream_send(s, &req.base, &err) < 0);
        CHECK(err.status == CAP_DEADLINE_EXCEEDED);
        rpc_stream_free(s);
        CHECK(wait_until(&wait_handler_saw_cancel, 1, 5000));
        CHECK(wait_until(&wait_handler_running, 0, 5000));
        rpc_client_free(c);
}

struct hammer {
        struct rpc_client *c;
        int ok;
};

static void *hammer_main(void *arg)
{
        struct hammer *h = arg;
        for (int i = 0; i < 100; i++) {
                struct cap_error err = {0};
                Capsule__V1__VersionResponse *v = NULL;
                if (call_version(h->c, "/test.Echo/Unary", &v, 10000, &err) == 0 && v &&
                    strcmp(v->version, "v1") == 0)
                        h->ok++;
                free_msg(v);
        }
        return NULL;
}

/* Many threads on one client, while a stream is open on it. */
TEST(concurrent_calls)
{
        struct rpc_client *c = plain_client();
        struct cap_error err = {0};
        struct rpc_stream *s = rpc_stream_open(c, "/test.Echo/Wait", CHUNK, 0, &err);
        Capsule__V1__LogChunk req = CAPSULE__V1__LOG_CHUNK__INIT;
        CHECK(s && rpc_stream_send(s, &req.base, &err) == 0);
        struct hammer h[4];
        pthread_t t[4];
        for (int i = 0; i < 4; i++) {
                h[i] = (struct hammer){.c = c};
                CHECK(pthread_create(&t[i], NULL, hammer_main, &h[i]) == 0);
        }
        for (int i = 0; i < 4; i++) {
                pthread_join(t[i], NULL);
                CHECK(h[i].ok == 100);
        }
        rpc_stream_free(s);
        rpc_client_free(c);
        CHECK(wait_until(&wait_handler_running, 0, 5000));
}

static struct rpc_client *tls_client(const char *cert, const char *key)
{
        char target[64];
        /* an IP target (a name would go through c-ares, which leaks a few bytes per lookup in
         * Debian 12's libcares 1.18 under valgrind) checked against the DNS SAN via override */
        snprintf(target, sizeof(target), "127.0.0.1:%d", tls_port);
        struct rpc_tls tls = {
            .ca_pem = pki.ca, .cert_pem = cert, .key_pem = key, .server_name = "localhost"};
        struct cap_error err = {0};
        struct rpc_client *c = rpc_client_new(target, &tls, &err);
        CHECK(c != NULL);
        return c;
}

TEST(tls_mutual)
{
        if (!tls_srv) {
                test_skip("no TLS server");
                return;
        }
        struct cap_error err = {0};
        Capsule__V1__VersionResponse *v = NULL;

        struct rpc_client *admin = tls_client(pki.admin_cert, pki.admin_key);
        CHECK(call_version(admin, "/test.Echo/Unary", &v, 5000, &err) == 0);
        CHECK(v && strcmp(v->hostname, "alice") == 0);
        CHECK(v && strcmp(v->mode, "capsule:admin") == 0);
        free_msg(v);
        v = NULL;
        CHECK(call_version(admin, "/test.Echo/Mutate", &v, 5000, &err) == 0);
        free_msg(v);
        v = NULL;
        rpc_client_free(admin);

        struct rpc_client *reader = tls_client(pki.reader_cert, pki.reader_key);
        CHECK(call_version(reader, "/test.Echo/Unary", &v, 5000, &err) == 0);
        CHECK(v && strcmp(v->hostname, "bob") == 0);
        CHECK(v && strcmp(v->mode, "capsule:reader") == 0);
        free_msg(v);
        v = NULL;
        CHECK(call_version(reader, "/test.Echo/Mutate", &v, 5000, &err) < 0);
        CHECK(err.status == CAP_PERMISSION_DENIED);
        rpc_client_free(reader);

        /* two O attributes: no role; escaped characters in the CN come back unescaped */
        struct rpc_client *twoorg = tls_client(pki.twoorg_cert, pki.twoorg_key);
        CHECK(call_version(twoorg, "/test.Echo/Unary", &v, 5000, &err) == 0);
        CHECK(v && strcmp(v->hostname, "eve, \"the\" second") == 0);
        CHECK(v && strcmp(v->mode, "") == 0);
        free_msg(v);
        v = NULL;
        CHECK(call_version(twoorg, "/test.Echo/Mutate", &v, 5000, &err) < 0);
        CHECK(err.status == CAP_PERMISSION_DENIED);
        rpc_client_free(twoorg);

        struct rpc_client *anon = tls_client(NULL, NULL);
        CHECK(call_version(anon, "/test.Echo/Unary", &v, 5000, &err) < 0);
        CHECK(v == NULL);
        CHECK(err.status == CAP_UNAVAILABLE);
        rpc_client_free(anon);

        struct rpc_client *other = tls_client(pki.other_cert, pki.other_key);
        CHECK(call_version(other, "/test.Echo/Unary", &v, 5000, &err) < 0);
        CHECK(v == NULL);
        CHECK(err.status == CAP_UNAVAILABLE);
        rpc_client_free(other);

        /* a client with unusable TLS material fails its calls, it does not crash */
        struct rpc_tls bad = {.ca_pem = "garbage", .cert_pem = "garbage", .key_pem = "garbage"};
        char bad_target[64];
        snprintf(bad_target, sizeof(bad_target), "127.0.0.1:%d", tls_port);
        struct rpc_client *badc = rpc_client_new(bad_target, &bad, &err);
        if (badc) {
                CHECK(call_version(badc, "/test.Echo/Unary", &v, 5000, &err) < 0);
                CHECK(err.status != CAP_OK);
                rpc_client_free(badc);
        }

        /* plaintext client against the TLS port */
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%d", tls_port);
        struct rpc_client *plain = rpc_client_new(target, NULL, &err);
        CHECK(call_version(plain, "/test.Echo/Unary", &v, 5000, &err) < 0);
        CHECK(err.status == CAP_UNAVAILABLE);
        rpc_client_free(plain);
}

TEST(socketpair_fd)
{
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        struct cap_error err = {0};
        CHECK(rpc_server_add_fd(srv, sv[0], &err) == 0);
        struct rpc_client *c = rpc_client_new_fd(sv[1], NULL, &err);
        CHECK(c != NULL);
        if (!c)
                return;
        Capsule__V1__VersionResponse *v = NULL;
        CHECK(call_version(c, "/test.Echo/Unary", &v, 5000, &err) == 0);
        CHECK(v && strcmp(v->version, "v1") == 0);
        free_msg(v);

        struct rpc_stream *s = rpc_stream_open(c, "/test.Echo/Count", CHUNK, 5000, &err);
        Capsule__V1__LogChunk req = CAPSULE__V1__LOG_CHUNK__INIT;
        req.time_unix_nano = 10;
        CHECK(s && rpc_stream_send(s, &req.base, &err) == 0);
        CHECK(s && rpc_stream_close_send(s, &err) == 0);
        ProtobufCMessage *m;
        int n = 0, r;
        while (s && (r = rpc_stream_recv(s, &m, &err)) > 0) {
                n++;
                free_msg(m);
        }
        CHECK(n == 10);
        rpc_stream_free(s);
        rpc_client_free(c);
}

/* A server shut down while a stream is open: the handler is cancelled, shutdown is bounded. */
TEST(shutdown_with_open_stream)
{
        int port;
        struct rpc_server *s2 = start_server("127.0.0.1:0", NULL, &port, NULL);
        CHECK(s2 != NULL);
        if (!s2)
                return;
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%d", port);
        struct cap_error err = {0};
        struct rpc_client *c = rpc_client_new(target, NULL, &err);
        atomic_store(&wait_handler_saw_cancel, 0);
        struct rpc_stream *s = rpc_stream_open(c, "/test.Echo/Wait", CHUNK, 0, &err);
        Capsule__V1__LogChunk req = CAPSULE__V1__LOG_CHUNK__INIT;
        CHECK(s && rpc_stream_send(s, &req.base, &err) == 0);
        ProtobufCMessage *m = NULL;
        CHECK(s && rpc_stream_recv(s, &m, &err) == 1);
        free_msg(m);
        CHECK(wait_until(&wait_handler_running, 1, 5000));
        int64_t t0 = now_ms();
        rpc_server_shutdown(s2, 200);
        CHECK(now_ms() - t0 < 5000);
        CHECK(atomic_load(&wait_handler_saw_cancel) == 1);
        CHECK(atomic_load(&wait_handler_running) == 0);
        CHECK(s && rpc_stream_recv(s, &m, &err) < 0);
        CHECK(err.status == CAP_CANCELLED || err.status == CAP_UNAVAILABLE);
        rpc_stream_free(s);
        /* the server is gone: new calls fail cleanly */
        Capsule__V1__VersionResponse *v = NULL;
        CHECK(call_version(c, "/test.Echo/Unary", &v, 2000, &err) < 0);
        CHECK(err.status == CAP_UNAVAILABLE);
        rpc_client_free(c);
}

/* Request messages above the server's limit are refused with RESOURCE_EXHAUSTED. */
TEST(max_recv_size)
{
        struct cap_error err = {0};
        struct rpc_server_opts opts = {.max_recv_bytes = 4096, .pool_threads = 1};
        struct rpc_server *s2 = rpc_server_new(&opts, &err);
        int port = -1;
        CHECK(s2 && rpc_server_add_methods(s2, echo_methods, ARRAY_SIZE(echo_methods), &err) == 0);
        CHECK(s2 && (port = rpc_server_listen(s2, "127.0.0.1:0", NULL, &err)) > 0);
        CHECK(s2 && rpc_server_start(s2, &err) == 0);
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%d", port);
        struct rpc_client_opts copts = {.keepalive_ms = 10000};
        struct rpc_client *c = rpc_client_new_opts(target, &copts, &err);
        CHECK(c != NULL);
        static uint8_t big[10000];
        Capsule__V1__LogChunk req = CAPSULE__V1__LOG_CHUNK__INIT;
        req.data.data = big;
        req.data.len = sizeof(big);
        ProtobufCMessage *m = NULL;
        CHECK(rpc_unary(c, "/test.Echo/Count", &req.base, CHUNK, &m, 5000, &err) < 0);
        CHECK(err.status == CAP_RESOURCE_EXHAUSTED);
        req.data.len = 100;
        req.time_unix_nano = 0;
        struct rpc_stream *st = rpc_stream_open(c, "/test.Echo/Count", CHUNK, 5000, &err);
        CHECK(st && rpc_stream_send(st, &req.base, &err) == 0);
        CHECK(st && rpc_stream_close_send(st, &err) == 0);
        CHECK(st && rpc_stream_recv(st, &m, &err) == 0);
        rpc_stream_free(st);
        rpc_client_free(c);
        rpc_server_shutdown(s2, 1000);
}

/* Own-thread handlers are capped: the call beyond the cap gets RESOURCE_EXHAUSTED, others go on. */
TEST(stream_thread_cap)
{
        struct cap_error err = {0};
        struct rpc_server_opts opts = {.max_stream_threads = 2};
        struct rpc_server *s2 = rpc_server_new(&opts, &err);
        int port = -1;
        CHECK(s2 && rpc_server_add_methods(s2, echo_methods, ARRAY_SIZE(echo_methods), &err) == 0);
        CHECK(s2 && (port = rpc_server_listen(s2, "127.0.0.1:0", NULL, &err)) > 0);
        CHECK(s2 && rpc_server_start(s2, &err) == 0);
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%d", port);
        struct rpc_client *c = rpc_client_new(target, NULL, &err);
        struct rpc_stream *st[3];
        ProtobufCMessage *m = NULL;
        for (int i = 0; i < 3; i++) {
                Capsule__V1__LogChunk req = CAPSULE__V1__LOG_CHUNK__INIT;
                st[i] = rpc_stream_open(c, "/test.Echo/Wait", CHUNK, 10000, &err);
                CHECK(st[i] && rpc_stream_send(st[i], &req.base, &err) == 0);
                int r = st[i] ? rpc_stream_recv(st[i], &m, &err) : -1;
                free_msg(m);
                m = NULL;
                if (i < 2) {
                        CHECK(r == 1);
                        CHECK(wait_until(&wait_handler_running, i + 1, 5000));
                } else {
                        CHECK(r < 0);
                        CHECK(err.status == CAP_RESOURCE_EXHAUSTED);
                }
        }
        /* unary calls still work while the stream threads are all taken */
        Capsule__V1__VersionResponse *v = NULL;
        CHECK(call_version(c, "/test.Echo/Unary", &v, 5000, &err) == 0);
        free_msg(v);
        for (int i = 0; i < 3; i++)
                rpc_stream_free(st[i]);
        CHECK(wait_until(&wait_handler_running, 0, 5000));
        rpc_client_free(c);
        rpc_server_shutdown(s2, 1000);
}

/* Nothing listens: unary and streams fail with UNAVAILABLE, quickly. */
TEST(no_server)
{
        struct cap_error err = {0};
        char target[64];
        snprintf(target, sizeof(target), "unix:/nonexistent/capsule-%d.sock", (int)getpid());
        struct rpc_client *c = rpc_client_new(target, NULL, &err);
        Capsule__V1__VersionResponse *v = NULL;
        CHECK(call_version(c, "/test.Echo/Unary", &v, 5000, &err) < 0);
        CHECK(err.status == CAP_UNAVAILABLE);
        struct rpc_stream *s = rpc_stream_open(c, "/test.Echo/Count", CHUNK, 5000, &err);
        if (s) {
                ProtobufCMessage *m = NULL;
                CHECK(rpc_stream_recv(s, &m, &err) < 0);
                rpc_stream_free(s);
        }
        CHECK(err.status == CAP_UNAVAILABLE);
        rpc_client_free(c);
}

TEST(server_never_started)
{
        struct cap_error err = {0};
        struct rpc_server *s = rpc_server_new(NULL, &err);
        CHECK(s != NULL);
        CHECK(rpc_server_listen(s, "127.0.0.1:0", NULL, &err) > 0);
        CHECK(rpc_server_listen(s, "vsock:1:2", NULL, &err) < 0);
        CHECK(rpc_server_listen(s, "unix:", NULL, &err) < 0);
        struct rpc_tls bad = {.ca_pem = "garbage",
                              .cert_pem = "garbage",
                              .key_pem = "garbage",
                              .require_client_cert = true};
        CHECK(rpc_server_listen(s, "127.0.0.1:0", &bad, &err) < 0);
        struct rpc_tls half = {.cert_pem = "x"};
        CHECK(rpc_server_listen(s, "127.0.0.1:0", &half, &err) < 0);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        char abstract[64];
        snprintf(abstract, sizeof(abstract), "unix-abstract:capsule-rpc-test-%d", (int)getpid());
        CHECK(rpc_server_listen(s, abstract, NULL, &err) == 0);
        rpc_server_shutdown(s, 0);
}

int main(void)
{
        if (!getenv("CAPSULE_TEST_VERBOSE"))
                log_set_level(LOG_LVL_WARN);
        else
                log_set_level(LOG_LVL_DEBUG);
        char tmp[] = "/tmp/capsule-rpc-test.XXXXXX";
        if (!mkdtemp(tmp))
                return 1;
        snprintf(unix_addr, sizeof(unix_addr), "unix:%s/api.sock", tmp);
        srv = start_server("127.0.0.1:0", NULL, &srv_port, unix_addr);
        if (!srv)
                return 1;
        if (rpc_test_pki_create(&pki) == 0) {
                struct rpc_tls tls = {.ca_pem = pki.ca,
                                      .cert_pem = pki.server_cert,
                                      .key_pem = pki.server_key,
                                      .require_client_cert = true};
                tls_srv = start_server("127.0.0.1:0", &tls, &tls_port, NULL);
        } else {
                fprintf(stderr, "cannot create test PKI (openssl CLI missing?)\n");
        }

        RUN(unary_tcp);
        RUN(unary_unix_and_metadata);
        RUN(shared_client_metadata);
        RUN(errors);
        RUN(method_stats);
        RUN(deadline);
        RUN(server_stream);
        RUN(client_stream);
        RUN(bidi);
        RUN(cancel_seen_by_server);
        RUN(stream_deadline);
        RUN(concurrent_calls);
        RUN(tls_mutual);
        RUN(socketpair_fd);
        RUN(shutdown_with_open_stream);
        RUN(max_recv_size);
        RUN(stream_thread_cap);
        RUN(no_server);
        RUN(server_never_started);

        rpc_server_shutdown(tls_srv, 1000);
        rpc_server_shutdown(srv, 1000);
        rpc_test_pki_free(&pki);
        char sock[160];
        snprintf(sock, sizeof(sock), "%s/api.sock", tmp);
        unlink(sock);
        rmdir(tmp);
        return test_summary();
}
