/* The one thin gRPC layer every Capsule program uses: gRPC's C core + protobuf-c.
 *
 * Server: register methods (path, kind, protobuf-c descriptors, handler), listen on TCP, unix
 * sockets or already-connected fds, with or without mutual TLS; handlers get decoded messages and
 * return a struct cap_error that becomes the gRPC status and details. Client: a channel to one
 * target, unary calls and streams (send/recv/close/finish/cancel). Messages are protobuf-c
 * messages; the layer packs and unpacks them.
 *
 * Errors follow the project's rule: functions return 0 (or a count) on success and a negative
 * errno-style value on failure, with err->status set to the gRPC status code and err->msg to the
 * server's details (or gRPC's own message). Every function taking a `struct cap_error *` fills it
 * on failure.
 *
 * Threading is described on each function; the server's dispatch model is explained at the top of
 * rpc-server.c, the client's at the top of rpc-client.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/error.h"

struct rpc_server;
struct rpc_call;
struct rpc_client;
struct rpc_stream;

/* ---- TLS ---------------------------------------------------------------------------------- */

/* TLS material as PEM strings in memory (copied by the functions that take it; may be freed
 * after they return). Server: cert_pem/key_pem are its identity, ca_pem verifies clients.
 * Client: ca_pem verifies the server, cert_pem/key_pem (both or neither) are the client's identity.
 */
struct rpc_tls {
        const char *ca_pem;
        const char *cert_pem;
        const char *key_pem;
        /* Server only: refuse clients without a certificate signed by ca_pem (mutual TLS). */
        bool require_client_cert;
        /* Client only: name checked against the server certificate's SANs instead of the target's
         * host (e.g. "127.0.0.1" when dialling through a forwarded port); NULL = target host. */
        const char *server_name;
};

/* ---- Server ------------------------------------------------------------------------------- */

enum rpc_kind {
        RPC_UNARY,         /* one request, one response */
        RPC_SERVER_STREAM, /* one request, a stream of responses */
        RPC_CLIENT_STREAM, /* a stream of requests, one response */
        RPC_BIDI,          /* streams both ways */
};

/* Method flags: free for the authorizer's use, except where marked. */
enum {
        RPC_METHOD_MUTATING = 1u << 0, /* changes state: refuse to read-only roles */
        /* Framework: run this unary handler on its own thread instead of a completion-queue pool
         * thread, because it may block for long (image pull, update push, reboot). Streaming
         * handlers always get their own thread. */
        RPC_METHOD_BLOCKING = 1u << 1,
};

/* Unary handler. `req` is decoded by the framework and freed after the handler returns; `resp`
 * is a zero-initialised (protobuf_c_message_init) message of the method's resp_desc that the
 * handler fills. Every pointer the handler stores in `resp` must be malloc'd (strdup'd strings,
 * malloc'd repeated arrays and sub-messages, malloc'd bytes data): the framework packs the response
 * and then frees it with protobuf_c_message_free_unpacked(resp, NULL). Return 0 to send `resp`
 * with status OK; return negative with `err` filled to send err->status and err->msg instead (a
 * CAP_OK status with a negative return is sent as INTERNAL). Runs on a pool thread unless the
 * method has RPC_METHOD_BLOCKING: keep it short. */
typedef int (*rpc_unary_fn)(struct rpc_call *call, const ProtobufCMessage *req,
                            ProtobufCMessage *resp, struct cap_error *err);

/* Streaming handler (server-stream, client-stream, bidi), run on its own thread, which may block
 * for as long as it likes (hours for `logs --follow`) provided it notices cancellation: use
 * rpc_call_send/rpc_call_recv (they fail once the client is gone) or watch rpc_call_cancel_fd().
 * `req` is the decoded single request for RPC_SERVER_STREAM (freed by the framework afterwards),
 * NULL for RPC_CLIENT_STREAM and RPC_BIDI (read requests with rpc_call_recv).
 * RPC_CLIENT_STREAM handlers send their one response with rpc_call_send() exactly once before
 * returning 0 (returning 0 without it sends INTERNAL). Return 0 for status OK or negative with
 * `err` filled, as for unary handlers. A handler may hand `call` to helper threads (bidi: one
 * thread receives while another sends) but must join them before it returns: the call is ended
 * and released after the return. */
typedef int (*rpc_stream_fn)(struct rpc_call *call, const ProtobufCMessage *req,
                             struct cap_error *err);

struct rpc_method {
        const char *path; /* "/capsule.v1.System/Version" */
        enum rpc_kind kind;
        const ProtobufCMessageDescriptor *req_desc;
        const ProtobufCMessageDescriptor *resp_desc;
        unsigned flags; /* RPC_METHOD_* */
        /* Exactly one of these for the kind (unary for RPC_UNARY, stream otherwise); both NULL
         * registers the method as not implemented yet: callers get UNIMPLEMENTED after
         * authorization. */
        rpc_unary_fn unary;
        rpc_stream_fn stream;
        void *userdata; /* for the handler: rpc_call_method(call)->userdata */
};

/* A method with no handler yet, so a service can declare its whole surface now and fill in
 * handlers later: RPC_METHOD_TODO("/capsule.v1.Volumes/Resize", RPC_UNARY,
 * &capsule__v1__volume_resize_request__descriptor,
 * &capsule__v1__volume_resize_response__descriptor). */
#define RPC_METHOD_TODO(path_, kind_, req_desc_, resp_desc_)                                       \
        {                                                                                          \
                .path = (path_), .kind = (kind_), .req_desc = (req_desc_),                         \
                .resp_desc = (resp_desc_)                                                          \
        }

/* Called on a pool thread before each handler (also for not-yet-implemented methods; not for
 * unknown paths, which always get UNIMPLEMENTED). Return 0 to allow, non-zero with err->status
 * set (e.g. CAP_PERMISSION_DENIED) to refuse; the call then ends with that status and err->msg.
 * Typically calls rpc_call_peer() and checks method->flags. Must be fast and thread-safe. */
typedef int (*rpc_authorize_fn)(struct rpc_call *call, const struct rpc_method *method, void *ud,
                                struct cap_error *err);

/* How long a server waits for a new connection's handshake (TLS with the client certificate). */
#define RPC_HANDSHAKE_TIMEOUT_MS 10000

struct rpc_server_opts {
        unsigned pool_threads;       /* completion-queue threads running unary handlers; 0 = 3 */
        unsigned max_stream_threads; /* concurrent own-thread handlers; beyond: RESOURCE_EXHAUSTED;
                                        0 = 256 */
        size_t max_recv_bytes;       /* largest accepted request message; 0 = 16 MiB */
        rpc_authorize_fn authorize;  /* NULL = allow every call */
        void *authorize_ud;
};

/* Creates a server (not yet listening). opts may be NULL for the defaults. Initialises gRPC
 * (refcounted: every rpc_server/rpc_client holds one reference). The server pings idle
 * connections every 60 s (20 s timeout), so streams of clients that vanished without closing
 * their connection (a laptop gone to sleep during `logs --follow`) get cancelled. */
struct rpc_server *rpc_server_new(const struct rpc_server_opts *opts, struct cap_error *err);

/* Registers methods (copied; path strings must stay valid for the server's life, which string
 * literals and generated descriptors do). Before rpc_server_start only. Duplicate paths fail. */
int rpc_server_add_methods(struct rpc_server *srv, const struct rpc_method *methods, size_t n,
                           struct cap_error *err);
int rpc_server_add_method(struct rpc_server *srv, const struct rpc_method *method,
                          struct cap_error *err);

/* Listens on `addr` before rpc_server_start: "host:port" (IPv4 "127.0.0.1:50000", IPv6
 * "[::1]:0", "0.0.0.0:50000"; port 0 picks a free port), "unix:/path" or "unix-abstract:name". tls
 * NULL = plaintext. Returns the bound TCP port (>0), 0 for unix sockets, or negative on failure.
 * Other schemes (dns:, vsock:, ...) are refused rather than silently resolved. */
int rpc_server_listen(struct rpc_server *srv, const char *addr, const struct rpc_tls *tls,
                      struct cap_error *err);

/* Starts serving: spawns the completion-queue pool. */
int rpc_server_start(struct rpc_server *srv, struct cap_error *err);

/* Serves one already-connected stream socket (socketpair, accepted AF_VSOCK, ...) in plaintext,
 * after rpc_server_start. Sets O_NONBLOCK (gRPC needs it) and takes ownership of fd, even on
 * failure. The connection ends when the peer closes it. */
int rpc_server_add_fd(struct rpc_server *srv, int fd, struct cap_error *err);

/* Stops and frees the server: stops accepting calls, lets running calls finish for up to grace_ms,
 * then cancels the rest (streaming handlers see rpc_call_send/recv fail and the cancel fd fire),
 * waits for every handler thread to return, and tears everything down. NULL is a no-op.
 * Must not be called from a handler. */
void rpc_server_shutdown(struct rpc_server *srv, int grace_ms);

/* ---- Server statistics ------------------------------------------------------------------ */

/* How long every pool thread has been inside a callback (an inline unary handler), in ms, when all
 * of them are (measured from the most recent to start); 0 when at least one waits for work or the
 * server is not started (or srv is NULL). A liveness probe for serve: calls queue up unanswered
 * while it is large. Thread-safe, lock-free. */
int64_t rpc_server_stuck_ms(struct rpc_server *srv);

#define RPC_STATUS_CODES 17 /* gRPC status codes 0 (OK) .. 16 (UNAUTHENTICATED) */

/* How often one registered method was called, counted where every call ends (its final status):
 * served calls, calls the authorizer refused and calls of methods without a handler yet. Calls
 * to unknown paths are not counted. */
struct rpc_method_stats {
        const char *path;                     /* the registered path */
        uint64_t calls;                       /* ended calls, any status */
        uint64_t by_status[RPC_STATUS_CODES]; /* of those, how many ended with each status */
};

/* A snapshot of every registered method's counters, in registration order: *out is malloc'd
 * (the caller frees it), *n its length. Thread-safe; for a started server too. */
int rpc_server_stats(struct rpc_server *srv, struct rpc_method_stats **out, size_t *n,
                     struct cap_error *err);

/* ---- Inside a handler: struct rpc_call ---------------------------------------------------- */

/* The registered method being served (its userdata, flags, descriptors). */
const struct rpc_method *rpc_call_method(struct rpc_call *call);

struct rpc_peer {
        char addr[128]; /* gRPC's peer string: "ipv4:127.0.0.1:41234", "unix:", "fd:12" */
        bool verified;  /* a client certificate was presented and verified against the CA */
        char cn[256];   /* client certificate subject CN ("" when not verified) */
        char org[256];  /* subject O: the role, "capsule:admin", "capsule:operator", ... */
};

/* Fills *peer with the caller's address and, over mutual TLS, its verified certificate's subject
 * CN and O (from the subject gRPC extracts once per connection at handshake, so this is cheap
 * enough to call on every call). A subject with several O attributes yields an empty org (no
 * role) rather than a guess. Returns 0; negative only if the certificate cannot be read. */
int rpc_call_peer(struct rpc_call *call, struct rpc_peer *peer, struct cap_error *err);

/* The serial number of the caller's client certificate as upper-case hex ("3F0A..."), parsed from
 * the PEM certificate gRPC keeps (about 0.3 ms: call it only when something needs the serial,
 * e.g. a non-empty revocation list). Negative (CAP_UNAUTHENTICATED) without one. */
int rpc_call_peer_serial(struct rpc_call *call, char *buf, size_t size, struct cap_error *err);

/* Value of the request header `key` (lower-case) into buf; returns its length, or -ENOENT. */
int rpc_call_metadata(struct rpc_call *call, const char *key, char *buf, size_t size);

/* Streaming handlers: sends one message and blocks until gRPC has taken it (flow control: a slow
 * client slows the sender). Fails with CAP_CANCELLED once the client has cancelled or gone away,
 * or its deadline passed. Thread-safe: may run concurrently with rpc_call_recv (bidi), and calls
 * from several threads are serialised. Not for unary handlers (they fill `resp`). */
int rpc_call_send(struct rpc_call *call, const ProtobufCMessage *msg, struct cap_error *err);

/* Client-stream and bidi handlers: receives the next request message. Returns 1 with *msg set
 * (a message of req_desc the caller frees with protobuf_c_message_free_unpacked(*msg, NULL)),
 * 0 when the client has half-closed (no more messages), negative when cancelled or the message is
 * malformed. Thread-safe like rpc_call_send. */
int rpc_call_recv(struct rpc_call *call, ProtobufCMessage **msg, struct cap_error *err);

/* True once the client has cancelled, disconnected or passed its deadline (or the server is
 * shutting down and cancelled the call). Tracked for handlers on their own thread (streaming and
 * RPC_METHOD_BLOCKING); for inline unary handlers, which are meant to be short, it stays false
 * (watching costs a batch per call): flag a unary method BLOCKING if it needs to notice. */
bool rpc_call_cancelled(struct rpc_call *call);

/* An eventfd that becomes readable when the call is cancelled (same scope as
 * rpc_call_cancelled), for handlers that block in poll() on something else (log files, event
 * queues). Owned by the call; do not close or read it. Returns negative on failure. */
int rpc_call_cancel_fd(struct rpc_call *call, struct cap_error *err);

/* ---- Client ------------------------------------------------------------------------------- */

struct rpc_client_opts {
        const struct rpc_tls *tls; /* NULL = plaintext */
        /* Send HTTP/2 keepalive pings every keepalive_ms (at least 5000; also without calls) so
         * a dead peer is noticed; 0 = off (gRPC's default). Use it for long-lived guest channels.
         * Capsule's own servers accept pings every 5 s; Go servers (containerd) by default answer
         * pings more often than every 5 minutes with GOAWAY "too_many_pings": leave it off there.
         */
        int keepalive_ms;
        size_t max_recv_bytes; /* largest accepted response message; 0 = 16 MiB */
};

/* A channel to `target`: "host:port" (resolved by gRPC, IP literals or names), "unix:/path" or
 * "unix-abstract:name".
 * Does not connect yet: connection errors show up on the first call as CAP_UNAVAILABLE.
 * tls NULL = plaintext. A client is thread-safe: many calls and streams may run at once from any
 * threads. */
struct rpc_client *rpc_client_new(const char *target, const struct rpc_tls *tls,
                                  struct cap_error *err);
/* Same with all options; opts NULL = defaults. */
struct rpc_client *rpc_client_new_opts(const char *target, const struct rpc_client_opts *opts,
                                       struct cap_error *err);
/* A plaintext channel over an already-connected stream socket (e.g. AF_VSOCK to a guest). Sets
 * O_NONBLOCK, takes ownership of fd even on failure. Such a channel cannot reconnect: when calls
 * fail with CAP_UNAVAILABLE, free it and dial again. opts->tls must be NULL. */
struct rpc_client *rpc_client_new_fd(int fd, const struct rpc_client_opts *opts,
                                     struct cap_error *err);

/* Adds a header sent with every call from now on (e.g. "containerd-namespace", "capsule").
 * Keys must be lower-case. Call it before starting calls; not thread-safe against running calls. */
int rpc_client_add_metadata(struct rpc_client *c, const char *key, const char *value,
                            struct cap_error *err);

/* A client on c's channel (no new connection) with a copy of c's metadata, to which more can be
 * added (e.g. a containerd lease for some calls only). c must outlive it. */
struct rpc_client *rpc_client_share(struct rpc_client *c, struct cap_error *err);

/* The server's certificate (PEM, malloc'd) as seen on the first unary call that succeeded over
 * TLS; NULL before that, over plaintext, or when out of memory. For expiry warnings. */
char *rpc_client_peer_cert_pem(struct rpc_client *c);

/* Frees the client. Every stream must have been freed. NULL is a no-op. */
void rpc_client_free(struct rpc_client *c);

/* A unary call: sends `req` to `method` ("/capsule.v1.System/Version") and waits for the answer.
 * timeout_ms > 0 sets a deadline (CAP_DEADLINE_EXCEEDED when passed), 0 = none. On success
 * returns 0 and *resp is a message of resp_desc the caller frees with
 * protobuf_c_message_free_unpacked(*resp, NULL). On failure *resp is NULL, err->status is the
 * gRPC status and err->msg the server's details (or gRPC's transport message). */
int rpc_unary(struct rpc_client *c, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int timeout_ms,
              struct cap_error *err);

/* Opens a streaming call of any kind to `method`; responses are decoded as resp_desc.
 * timeout_ms > 0 sets a deadline for the whole stream, 0 = none. Returns NULL on failure. */
struct rpc_stream *rpc_stream_open(struct rpc_client *c, const char *method,
                                   const ProtobufCMessageDescriptor *resp_desc, int timeout_ms,
                                   struct cap_error *err);

/* Sends one request message; blocks until gRPC has taken it (flow control). Fails when the call
 * has ended (err holds the call's final status if it is known). Sends from several threads are
 * serialised; may run concurrently with rpc_stream_recv. */
int rpc_stream_send(struct rpc_stream *s, const ProtobufCMessage *msg, struct cap_error *err);

/* Half-closes: tells the server no more requests will come. Further sends fail. */
int rpc_stream_close_send(struct rpc_stream *s, struct cap_error *err);

/* Receives the next response. Returns 1 with *msg set (free it with
 * protobuf_c_message_free_unpacked(*msg, NULL)), 0 when the server ended the stream with OK,
 * negative when it ended with an error status (err = status and details) or the message could not
 * be decoded. Thread-safe like rpc_stream_send. */
int rpc_stream_recv(struct rpc_stream *s, ProtobufCMessage **msg, struct cap_error *err);

/* Waits for the call's final status: 0 for OK, negative with err filled otherwise. Call it once
 * rpc_stream_recv returned 0 or negative (or after rpc_stream_cancel): before that it waits for
 * the server to end the stream. May be called more than once. */
int rpc_stream_finish(struct rpc_stream *s, struct cap_error *err);

/* Cancels the call (the server sees it as cancelled; pending and later operations fail with
 * CAP_CANCELLED). Thread-safe, may be called at any time, also concurrently with send/recv. */
void rpc_stream_cancel(struct rpc_stream *s);

/* Frees the stream, cancelling it first if it has not finished. No other thread may be using it.
 * NULL is a no-op. */
void rpc_stream_free(struct rpc_stream *s);
