/* The metrics endpoint: a small HTTP/1.1 server on its own thread that answers `GET /metrics`
 * with the text a render callback produces, 404 for any other path, 405 for other methods.
 * Over TLS (OpenSSL) with the Capsule's server certificate and a required client certificate
 * signed by the Capsule CA with a Capsule role (any role; a verified one without a role gets
 * 403, and so does a revoked one, see metrics_http_opts.revoked), or plain HTTP when the machine
 * config says so (a trusted LAN). One request per connection (Connection: close), each connection
 * on a thread of its own (at most METRICS_HTTP_MAX_CONNS at once; more are closed at once): a
 * request is at most 8 KiB and each connection gets METRICS_HTTP_DEADLINE_MS from accept to the
 * last byte sent, so a slow or silent client cannot hold the endpoint. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

#define METRICS_HTTP_DEADLINE_MS 5000
#define METRICS_HTTP_MAX_REQUEST 8192
#define METRICS_HTTP_MAX_CONNS 8

/* Produces the page: *text malloc'd (the server frees it), *len its length. Negative: 500. */
typedef int (*metrics_render_fn)(void *ud, char **text, size_t *len);

struct metrics_http_opts {
        const char *listen;   /* "host:port" (IPv4, or [IPv6]:port); port 0 picks one */
        bool insecure_http;   /* plain HTTP, no client certificates */
        const char *ca_pem;   /* verifies clients (TLS) */
        const char *cert_pem; /* the server's identity (TLS) */
        const char *key_pem;
        metrics_render_fn render;
        void *render_ud;
        /* TLS: true when the client certificate with this serial (upper-case hex) is revoked;
         * such a client gets 403 naming the serial. NULL: none is. Called with every request. */
        bool (*revoked)(void *ud, const char *serial_hex);
        void *revoked_ud;
};

struct metrics_http;

/* Binds, and starts the serving thread. Returns the server (and the bound port in *port), or
 * NULL with err naming what failed (the address, the TLS material). */
struct metrics_http *metrics_http_start(const struct metrics_http_opts *o, int *port,
                                        struct cap_error *err);
/* Stops the thread (a connection being served is cut) and frees everything. NULL: no-op. */
void metrics_http_stop(struct metrics_http *h);

/* The request head's verdict, for the server and its unit test: 200 for GET /metrics (a query
 * string is ignored), 404 for another path, 405 for another method, 400 for anything that is
 * not an HTTP/1.x request line. head is the bytes up to the blank line. */
int metrics_http_route(const char *head, size_t len);
