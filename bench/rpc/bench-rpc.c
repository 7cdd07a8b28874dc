/* bench-rpc: what src/rpc costs over bare gRPC C core.
 *
 * In one process, over mutual TLS on loopback with the same throwaway PKI and the same payload
 * (capsule.v1 System/Version: unpack the request, fill a VersionResponse, pack it), it runs
 *   (a) Capsule's rpc layer: rpc_server + rpc_client, `/capsule.v1.System/Version`;
 *   (b) a bare server and client written directly on the core API (completion queue state
 *       machine on the server, one pluck queue reused by the client),
 * alternating blocks of sequential calls so both see the same machine load, then prints p50/p99
 * latency and calls/s of each and the ratio. Usage: bench-rpc [calls per side, default 5000]. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "build-id.h"
#include "capsule/v1/system.pb-c.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "rpc-test-pki.h"
#include "rpc.h"

#define METHOD "/capsule.v1.System/Version"
#define BLOCK 500
#define WARMUP 200

static double now_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void fill_version(Capsule__V1__VersionResponse *r, bool dup)
{
        r->version = dup ? strdup(CAPSULE_VERSION) : CAPSULE_VERSION;
        r->build = dup ? strdup(CAPSULE_BUILD) : CAPSULE_BUILD;
        r->hostname = dup ? strdup("capsule-bench") : "capsule-bench";
        r->mode = dup ? strdup("host") : "host";
        r->kernel = dup ? strdup("6.1.0-bench") : "6.1.0-bench";
        r->uptime_seconds = 12345;
        r->boot_uptime_seconds = 67890;
}

/* ---- (a) Capsule's rpc layer -------------------------------------------------------------- */

static int version_handler(struct rpc_call *call, const ProtobufCMessage *req,
                           ProtobufCMessage *resp, struct cap_error *err)
{
        fill_version((Capsule__V1__VersionResponse *)resp, true);
        return 0;
}

/* Like capsuled's authorizer: reads the verified peer's role from its certificate. */
static int authorize_peer(struct rpc_call *call, const struct rpc_method *m, void *ud,
                          struct cap_error *err)
{
        struct rpc_peer peer;
        if (rpc_call_peer(call, &peer, err) < 0)
                return -1;
        if (!peer.verified || strcmp(peer.org, "capsule:admin") != 0)
                return cap_error_set(err, -EPERM, CAP_PERMISSION_DENIED, "not admin");
        return 0;
}

static const struct rpc_method methods[] = {
    {.path = METHOD,
     .kind = RPC_UNARY,
     .req_desc = &capsule__v1__version_request__descriptor,
     .resp_desc = &capsule__v1__version_response__descriptor,
     .unary = version_handler},
};

/* ---- (b) bare gRPC core ------------------------------------------------------------------- */

struct bare_call {
        grpc_call *call;
        grpc_call_details details;
        grpc_metadata_array md;
        grpc_byte_buffer *in, *out;
        int state, cancelled;
};

struct bare_server {
        grpc_server *server;
        grpc_completion_queue *cq;
        pthread_t threads[2];
        int port;
        int shutdown_tag;
};

static void bare_request(struct bare_server *b)
{
        struct bare_call *c = calloc(1, sizeof(*c));
        grpc_call_details_init(&c->details);
        grpc_metadata_array_init(&c->md);
        if (grpc_server_request_call(b->server, &c->call, &c->details, &c->md, b->cq, b->cq, c) !=
            GRPC_CALL_OK)
                abort();
}

static void bare_free(struct bare_call *c)
{
        if (c->call)
                grpc_call_unref(c->call);
        if (c->in)
                grpc_byte_buffer_destroy(c->in);
        if (c->out)
                grpc_byte_buffer_destroy(c->out);
        grpc_call_details_destroy(&c->details);
        grpc_metadata_array_destroy(&c->md);
        free(c);
}

/* Advances one call's state machine: new -> read request -> respond -> done. */
static void bare_step(struct bare_server *b, struct bare_call *c, bool ok)
{
        grpc_op ops[4];
        memset(ops, 0, sizeof(ops));
        switch (c->state) {
        case 0:
                if (!ok) {
                        bare_free(c);
                        return;
                }
                bare_request(b);
                ops[0].op = GRPC_OP_RECV_MESSAGE;
                ops[0].data.recv_message.recv_message = &c->in;
                c->state = 1;
                if (grpc_call_start_batch(c->call, ops, 1, c, NULL) != GRPC_CALL_OK)
                        abort();
                return;
        case 1: {
                Capsule__V1__VersionResponse resp = CAPSULE__V1__VERSION_RESPONSE__INIT;
                grpc_byte_buffer_reader reader;
                ProtobufCMessage *req = NULL;
                if (ok && c->in && grpc_byte_buffer_reader_init(&reader, c->in)) {
                        grpc_slice s = grpc_byte_buffer_reader_readall(&reader);
                        grpc_byte_buffer_reader_destroy(&reader);
                        req = protobuf_c_message_unpack(&capsule__v1__version_request__descriptor,
                                                        NULL, GRPC_SLICE_LENGTH(s),
                                                        GRPC_SLICE_START_PTR(s));
                        grpc_slice_unref(s);
                }
                size_t n = 0;
                ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA; /* with the response: one write */
                if (req) {
                        protobuf_c_message_free_unpacked(req, NULL);
                        fill_version(&resp, false);
                        grpc_slice s =
                            grpc_slice_malloc(protobuf_c_message_get_packed_size(&resp.base));
                        protobuf_c_message_pack(&resp.base, GRPC_SLICE_START_PTR(s));
                        c->out = grpc_raw_byte_buffer_create(&s, 1);
                        grpc_slice_unref(s);
                        ops[n].op = GRPC_OP_SEND_MESSAGE;
                        ops[n++].data.send_message.send_message = c->out;
                }
                ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
                ops[n++].data.send_status_from_server.status =
                    req ? GRPC_STATUS_OK : GRPC_STATUS_INVALID_ARGUMENT;
                ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
                ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
                c->state = 2;
                if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK)
                        abort();
                return;
        }
        default:
                bare_free(c);
        }
}

static void *bare_thread(void *arg)
{
        struct bare_server *b = arg;
        for (;;) {
                grpc_event ev =
                    grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                        return NULL;
                if (ev.tag != &b->shutdown_tag)
                        bare_step(b, ev.tag, ev.success);
        }
}

static int bare_start(struct bare_server *b, const struct rpc_test_pki *pki)
{
        grpc_ssl_pem_key_cert_pair pair = {pki->server_key, pki->server_cert};
        grpc_server_credentials *creds = grpc_ssl_server_credentials_create_ex(
            pki->ca, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
        b->server = grpc_server_create(NULL, NULL);
        b->cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(b->server, b->cq, NULL);
        b->port = grpc_server_add_http2_port(b->server, "127.0.0.1:0", creds);
        grpc_server_credentials_release(creds);
        if (b->port <= 0)
                return -1;
        grpc_server_start(b->server);
        for (int i = 0; i < 2; i++) {
                bare_request(b);
                pthread_create(&b->threads[i], NULL, bare_thread, b);
        }
        return 0;
}

static void bare_stop(struct bare_server *b)
{
        grpc_server_shutdown_and_notify(b->server, b->cq, &b->shutdown_tag);
        grpc_server_cancel_all_calls(b->server);
        grpc_server_destroy(b->server);
        grpc_completion_queue_shutdown(b->cq);
        for (int i = 0; i < 2; i++)
                pthread_join(b->threads[i], NULL);
        grpc_completion_queue_destroy(b->cq);
}

struct bare_client {
        grpc_channel *ch;
        grpc_completion_queue *cq;
};

static int bare_client_call(struct bare_client *bc)
{
        Capsule__V1__VersionRequest req = CAPSULE__V1__VERSION_REQUEST__INIT;
        grpc_slice s = grpc_slice_malloc(protobuf_c_message_get_packed_size(&req.base));
        protobuf_c_message_pack(&req.base, GRPC_SLICE_START_PTR(s));
        grpc_byte_buffer *out = grpc_raw_byte_buffer_create(&s, 1), *in = NULL;
        grpc_slice_unref(s);
        grpc_slice method = grpc_slice_from_static_string(METHOD);
        grpc_call *call =
            grpc_channel_create_call(bc->ch, NULL, GRPC_PROPAGATE_DEFAULTS, bc->cq, method, NULL,
                                     gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_metadata_array imd, tmd;
        grpc_metadata_array_init(&imd);
        grpc_metadata_array_init(&tmd);
        grpc_status_code status;
        grpc_slice details;
        grpc_op ops[6];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
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
        if (grpc_call_start_batch(call, ops, 6, ops, NULL) != GRPC_CALL_OK)
                abort();
        grpc_completion_queue_pluck(bc->cq, ops, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        int r = status == GRPC_STATUS_OK && in ? 0 : -1;
        if (in) {
                grpc_byte_buffer_reader reader;
                grpc_byte_buffer_reader_init(&reader, in);
                grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
                grpc_byte_buffer_reader_destroy(&reader);
                ProtobufCMessage *m =
                    protobuf_c_message_unpack(&capsule__v1__version_response__descriptor, NULL,
                                              GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
                grpc_slice_unref(all);
                if (!m)
                        r = -1;
                else
                        protobuf_c_message_free_unpacked(m, NULL);
                grpc_byte_buffer_destroy(in);
        }
        grpc_byte_buffer_destroy(out);
        grpc_slice_unref(details);
        grpc_metadata_array_destroy(&imd);
        grpc_metadata_array_destroy(&tmd);
        grpc_call_unref(call);
        return r;
}

/* ---- measuring ---------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static double pct(const double *sorted, int n, double p)
{
        int i = (int)(p * (n - 1) + 0.5);
        return sorted[i];
}

static int ours_call(struct rpc_client *c)
{
        Capsule__V1__VersionRequest req = CAPSULE__V1__VERSION_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        int r = rpc_unary(c, METHOD, &req.base, &capsule__v1__version_response__descriptor, &resp,
                          30000, &err);
        if (r < 0)
                fprintf(stderr, "rpc_unary: %s\n", err.msg);
        else
                protobuf_c_message_free_unpacked(resp, NULL);
        return r;
}

/* One measured configuration: a way to make one call, and its latencies. */
struct side {
        const char *name;
        int (*call)(void *ud);
        void *ud;
        double *lat;
        double total_us;
};

static int ours_side_call(void *ud)
{
        return ours_call(ud);
}

static int bare_side_call(void *ud)
{
        return bare_client_call(ud);
}

#define THREADS 4

struct worker {
        struct side *side;
        void *ud;
        int calls, failures;
};

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        for (int i = 0; i < w->calls; i++)
                w->failures += w->side->call(w->ud) < 0;
        return NULL;
}

/* Calls/s with THREADS client threads sharing one channel; uds[t] is thread t's client. */
static double throughput(struct side *side, void **uds, int calls, int *failures)
{
        pthread_t t[THREADS];
        struct worker w[THREADS];
        double t0 = now_us();
        for (int i = 0; i < THREADS; i++) {
                w[i] = (struct worker){.side = side, .ud = uds[i], .calls = calls / THREADS};
                pthread_create(&t[i], NULL, worker_main, &w[i]);
        }
        for (int i = 0; i < THREADS; i++) {
                pthread_join(t[i], NULL);
                *failures += w[i].failures;
        }
        return calls / ((now_us() - t0) / 1e6);
}

/* Starts an rpc server (with capsuled-like authorization or none) and a client to it. */
static struct rpc_server *ours_start(const struct rpc_test_pki *pki, bool authorize,
                                     struct rpc_client **client)
{
        struct cap_error err = {0};
        struct rpc_tls stls = {.ca_pem = pki->ca,
                               .cert_pem = pki->server_cert,
                               .key_pem = pki->server_key,
                               .require_client_cert = true};
        struct rpc_tls ctls = {
            .ca_pem = pki->ca, .cert_pem = pki->admin_cert, .key_pem = pki->admin_key};
        struct rpc_server_opts sopts = {.pool_threads = 2,
                                        .authorize = authorize ? authorize_peer : NULL};
        struct rpc_server *srv = rpc_server_new(&sopts, &err);
        int port = -1;
        if (!srv || rpc_server_add_methods(srv, methods, 1, &err) < 0 ||
            (port = rpc_server_listen(srv, "127.0.0.1:0", &stls, &err)) < 0 ||
            rpc_server_start(srv, &err) < 0) {
                fprintf(stderr, "bench-rpc: server: %s\n", err.msg);
                exit(1);
        }
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%d", port);
        *client = rpc_client_new(target, &ctls, &err);
        if (!*client) {
                fprintf(stderr, "bench-rpc: client: %s\n", err.msg);
                exit(1);
        }
        return srv;
}

int main(int argc, char **argv)
{
        int n = argc > 1 ? atoi(argv[1]) : 5000;
        if (n < BLOCK)
                n = BLOCK;
        n -= n % BLOCK;
        log_set_level(LOG_LVL_WARN);
        struct rpc_test_pki pki;
        if (rpc_test_pki_create(&pki) < 0) {
                fprintf(stderr, "bench-rpc: cannot create a test PKI with the openssl CLI\n");
                return 1;
        }
        struct rpc_client *client, *client_auth;
        struct rpc_server *srv = ours_start(&pki, false, &client);
        struct rpc_server *srv_auth = ours_start(&pki, true, &client_auth);

        /* The bare side holds its own gRPC reference (our client/server hold one too). */
        grpc_init();
        struct bare_server bare = {0};
        if (bare_start(&bare, &pki) < 0) {
                fprintf(stderr, "bench-rpc: bare server cannot listen\n");
                return 1;
        }
        grpc_ssl_pem_key_cert_pair pair = {pki.admin_key, pki.admin_cert};
        grpc_channel_credentials *creds = grpc_ssl_credentials_create_ex(pki.ca, &pair, NULL, NULL);
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%d", bare.port);
        struct bare_client bc = {.ch = grpc_channel_create(target, creds, NULL),
                                 .cq = grpc_completion_queue_create_for_pluck(NULL)};
        grpc_channel_credentials_release(creds);

        struct side sides[] = {
            {"capsule rpc layer", ours_side_call, client},
            {"bare gRPC core", bare_side_call, &bc},
            {"rpc + authorizer", ours_side_call, client_auth},
        };
        int failures = 0;
        for (size_t k = 0; k < ARRAY_SIZE(sides); k++) {
                sides[k].lat = calloc((size_t)n, sizeof(double));
                for (int i = 0; i < WARMUP; i++)
                        failures += sides[k].call(sides[k].ud) < 0;
        }
        /* alternate blocks so that every side sees the same background load */
        for (int done = 0; done < n; done += BLOCK) {
                for (size_t k = 0; k < ARRAY_SIZE(sides); k++) {
                        double t0 = now_us();
                        for (int i = done; i < done + BLOCK; i++) {
                                double t = now_us();
                                failures += sides[k].call(sides[k].ud) < 0;
                                sides[k].lat[i] = now_us() - t;
                        }
                        sides[k].total_us += now_us() - t0;
                }
        }
        printf("unary %s over mTLS on loopback, %d sequential calls per side\n", METHOD, n);
        printf("%-24s %10s %10s %10s\n", "", "p50 us", "p99 us", "calls/s");
        double p50[ARRAY_SIZE(sides)], p99[ARRAY_SIZE(sides)], rate[ARRAY_SIZE(sides)];
        for (size_t k = 0; k < ARRAY_SIZE(sides); k++) {
                qsort(sides[k].lat, (size_t)n, sizeof(double), cmp_double);
                p50[k] = pct(sides[k].lat, n, 0.5);
                p99[k] = pct(sides[k].lat, n, 0.99);
                rate[k] = n / (sides[k].total_us / 1e6);
                printf("%-24s %10.1f %10.1f %10.0f\n", sides[k].name, p50[k], p99[k], rate[k]);
                free(sides[k].lat);
        }
        printf("%-24s %10.2f %10.2f %10.2f\n", "ratio rpc/bare", p50[0] / p50[1], p99[0] / p99[1],
               rate[0] / rate[1]);
        printf("%-24s %10.2f %10.2f %10.2f\n", "ratio rpc+authz/bare", p50[2] / p50[1],
               p99[2] / p99[1], rate[2] / rate[1]);

        /* concurrency: THREADS client threads on one channel each side (the bare client gets one
         * pluck queue per thread, as a multi-threaded core user would) */
        struct bare_client bcs[THREADS];
        void *ours_uds[THREADS], *bare_uds[THREADS];
        for (int i = 0; i < THREADS; i++) {
                bcs[i] = (struct bare_client){.ch = bc.ch,
                                              .cq = grpc_completion_queue_create_for_pluck(NULL)};
                ours_uds[i] = client;
                bare_uds[i] = &bcs[i];
        }
        double tp_ours = 0, tp_bare = 0;
        for (int round = 0; round < 2; round++) {
                tp_ours += throughput(&sides[0], ours_uds, n / 2, &failures) / 2;
                tp_bare += throughput(&sides[1], bare_uds, n / 2, &failures) / 2;
        }
        printf("%d client threads, %d calls per side: capsule rpc %.0f calls/s, bare core %.0f "
               "calls/s, ratio %.2f\n",
               THREADS, n, tp_ours, tp_bare, tp_ours / tp_bare);
        for (int i = 0; i < THREADS; i++) {
                grpc_completion_queue_shutdown(bcs[i].cq);
                grpc_completion_queue_destroy(bcs[i].cq);
        }

        grpc_channel_destroy(bc.ch);
        grpc_completion_queue_shutdown(bc.cq);
        grpc_completion_queue_destroy(bc.cq);
        bare_stop(&bare);
        grpc_shutdown_blocking();
        rpc_client_free(client);
        rpc_client_free(client_auth);
        rpc_server_shutdown(srv, 1000);
        rpc_server_shutdown(srv_auth, 1000);
        rpc_test_pki_free(&pki);
        printf("failures: %d\n", failures);
        return failures ? 1 : 0;
}
