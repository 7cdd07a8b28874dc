/* The metrics endpoint's HTTP/1.1 server (see http.h). Sockets are non-blocking and every wait
 * is a poll() bounded by the connection's deadline, for TLS (SSL_accept/read/write asking to
 * wait) and plain HTTP alike; a stop eventfd wakes the accept loop. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/cleanup.h"
#include "common/deadline.h"
#include "common/log.h"
#include "common/pki.h"
#include "common/thread.h"

struct metrics_http {
        int fd, stop_fd;
        SSL_CTX *tls; /* NULL: plain HTTP */
        metrics_render_fn render;
        void *render_ud;
        bool (*revoked)(void *ud, const char *serial_hex);
        void *revoked_ud;
        pthread_t thread;
        bool thread_started;
        pthread_mutex_t lock; /* protects active */
        pthread_cond_t idle;
        unsigned active; /* connections being served, each on its own detached thread */
};

/* A connection handed to its thread. */
struct conn_job {
        struct metrics_http *h;
        int fd;
        char peer[INET6_ADDRSTRLEN + 16];
};

/* One connection being served. */
struct conn {
        int fd;
        SSL *ssl;
        struct timespec deadline;
        int stop_fd;
};

static long ms_left(const struct timespec *dl)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (dl->tv_sec - now.tv_sec) * 1000 + (dl->tv_nsec - now.tv_nsec) / 1000000;
        return ms > 0 ? ms : 0;
}

/* Waits until fd is ready for events; -ETIMEDOUT past the deadline, -ECANCELED on stop. */
static int conn_wait(struct conn *c, short events)
{
        for (;;) {
                long left = ms_left(&c->deadline);
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd p[2] = {{.fd = c->fd, .events = events},
                                      {.fd = c->stop_fd, .events = POLLIN}};
                int r = poll(p, 2, (int)left);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (p[1].revents)
                        return -ECANCELED;
                if (r > 0)
                        return 0;
        }
}

/* After an SSL call returned r <= 0: waits as it asks (0) or fails. */
static int tls_want(struct conn *c, int r)
{
        switch (SSL_get_error(c->ssl, r)) {
        case SSL_ERROR_WANT_READ:
                return conn_wait(c, POLLIN);
        case SSL_ERROR_WANT_WRITE:
                return conn_wait(c, POLLOUT);
        case SSL_ERROR_ZERO_RETURN:
                return -ECONNRESET;
        default:
                return -EPROTO;
        }
}

/* Reads what is there (at least one byte): count, 0 at end of stream, negative on failure. */
static ssize_t conn_read(struct conn *c, char *buf, size_t len)
{
        for (;;) {
                int r;
                if (c->ssl) {
                        r = SSL_read(c->ssl, buf, (int)len);
                        if (r > 0)
                                return r;
                        int w = tls_want(c, r);
                        if (w == -ECONNRESET)
                                return 0;
                        if (w < 0)
                                return w;
                        continue;
                }
                ssize_t n = read(c->fd, buf, len);
                if (n >= 0)
                        return n;
                if (errno != EAGAIN && errno != EINTR)
                        return -errno;
                if ((r = conn_wait(c, POLLIN)) < 0)
                        return r;
        }
}

static int conn_write(struct conn *c, const char *buf, size_t len)
{
        while (len) {
                ssize_t n;
                if (c->ssl) {
                        int r = SSL_write(c->ssl, buf, (int)(len > (1u << 30) ? (1u << 30) : len));
                        if (r <= 0) {
                                int w = tls_want(c, r);
                                if (w < 0)
                                        return w;
                                continue;
                        }
                        n = r;
                } else {
                        n = send(c->fd, buf, len, MSG_NOSIGNAL);
                        if (n < 0) {
                                if (errno != EAGAIN && errno != EINTR)
                                        return -errno;
                                int w = conn_wait(c, POLLOUT);
                                if (w < 0)
                                        return w;
                                continue;
                        }
                }
                buf += n;
                len -= (size_t)n;
        }
        return 0;
}

/* The client certificate's subject O (its Capsule role), CN and serial (upper-case hex, no leading
 * zeros). */
static void peer_identity(SSL *ssl, char *org, size_t org_len, char *cn, size_t cn_len,
                          char *serial, size_t serial_len)
{
        org[0] = cn[0] = serial[0] = '\0';
        X509 *cert = SSL_get1_peer_certificate(ssl);
        if (!cert)
                return;
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;
        if (hex && strlen(hex) < serial_len) /* without leading zeros, as gen cert prints it */
                snprintf(serial, serial_len, "%s", hex + strspn(hex, "0") - (hex[strspn(hex, "0")] == '\0'));
        OPENSSL_free(hex);
        BN_free(bn);
        X509_NAME *name = X509_get_subject_name(cert);
        int first = X509_NAME_get_index_by_NID(name, NID_organizationName, -1);
        /* several O attributes: no role rather than a guess, as the API decides */
        if (first >= 0 && X509_NAME_get_index_by_NID(name, NID_organizationName, first) < 0)
                X509_NAME_get_text_by_NID(name, NID_organizationName, org, (int)org_len);
        X509_NAME_get_text_by_NID(name, NID_commonName, cn, (int)cn_len);
        X509_free(cert);
}

/* The TLS handshake; refuses certificates without a Capsule role. */
static int conn_handshake(struct metrics_http *h, struct conn *c, char *why, size_t why_len)
{
        c->ssl = SSL_new(h->tls);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
                snprintf(why, why_len, "out of memory");
                return -ENOMEM;
        }
        for (;;) {
                ERR_clear_error();
                int r = SSL_accept(c->ssl);
                if (r == 1)
                        break;
                int w = tls_want(c, r);
                if (w < 0) {
                        unsigned long e = ERR_peek_error();
                        snprintf(why, why_len, "TLS handshake: %s",
                                 e ? ERR_reason_error_string(e) : strerror(-w));
                        return w;
                }
        }
        char org[256], cn[256], serial[128];
        peer_identity(c->ssl, org, sizeof(org), cn, sizeof(cn), serial, sizeof(serial));
        if (!pki_role_is_valid(org)) {
                snprintf(why, why_len, "certificate \"%s\" has no Capsule role (O=\"%s\")", cn,
                         org);
                return -EACCES;
        }
        if (h->revoked && h->revoked(h->revoked_ud, serial)) {
                snprintf(why, why_len,
                         "certificate \"%s\" (serial %s) is revoked (machine config pki.revoked)",
                         cn, serial);
                return -EACCES;
        }
        return 0;
}

int metrics_http_route(const char *head, size_t len)
{
        size_t line = 0; /* the request line ends at CR LF, or a bare LF */
        while (line < len && head[line] != '\r' && head[line] != '\n')
                line++;
        char req[512];
        if (line == 0 || line >= sizeof(req))
                return 400;
        memcpy(req, head, line);
        req[line] = '\0';
        char *sp1 = strchr(req, ' ');
        char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
        if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
            sp1[1] != '/')
                return 400;
        *sp1 = *sp2 = '\0';
        char *path = sp1 + 1;
        char *q = strchr(path, '?');
        if (q)
                *q = '\0';
        if (strcmp(path, "/metrics") != 0)
                return 404;
        return strcmp(req, "GET") == 0 ? 200 : 405;
}

static int respond(struct conn *c, int code, const char *type, const char *body, size_t len)
{
        const char *reason = code == 200   ? "OK"
                             : code == 400 ? "Bad Request"
                             : code == 404 ? "Not Found"
                             : code == 403 ? "Forbidden"
                             : code == 405 ? "Method Not Allowed"
                             : code == 431 ? "Request Header Fields Too Large"
                             : code == 408 ? "Request Timeout"
                                           : "Internal Server Error";
        char head[512];
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                         "Connection: close\r\n\r\n",
                         code, reason, type, len, code == 405 ? "Allow: GET\r\n" : "");
        int r = conn_write(c, head, (size_t)n);
        return r < 0 ? r : conn_write(c, body, len);
}

static int respond_text(struct conn *c, int code, const char *msg)
{
        return respond(c, code, "text/plain; charset=utf-8", msg, strlen(msg));
}

/* Reads the request head (up to the blank line) and answers it; 403 when forbidden. */
static void serve_request(struct metrics_http *h, struct conn *c, const char *peer,
                          const char *forbidden)
{
        char buf[METRICS_HTTP_MAX_REQUEST];
        size_t len = 0;
        for (;;) {
                if (len == sizeof(buf)) {
                        respond_text(c, 431, "request too large\n");
                        return;
                }
                ssize_t n = conn_read(c, buf + len, sizeof(buf) - len);
                if (n == -ETIMEDOUT) {
                        respond_text(c, 408, "request timeout\n");
                        return;
                }
                if (n <= 0)
                        return;
                len += (size_t)n;
                if (memmem(buf, len, "\r\n\r\n", 4) || memmem(buf, len, "\n\n", 2))
                        break;
        }
        if (forbidden) {
                char msg[340];
                snprintf(msg, sizeof(msg), "forbidden: %s\n", forbidden);
                respond_text(c, 403, msg);
                return;
        }
        int code = metrics_http_route(buf, len);
        if (code != 200) {
                log_debug("metrics: %s: answered %d", peer, code);
                respond_text(c, code,
                             code == 404   ? "not found: the metrics are at /metrics\n"
                             : code == 405 ? "method not allowed: use GET\n"
                                           : "bad request\n");
                return;
        }
        char *text = NULL;
        size_t tlen = 0;
        if (h->render(h->render_ud, &text, &tlen) < 0) {
                respond_text(c, 500, "collecting metrics failed; see the capsule's log\n");
                return;
        }
        int r = respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, tlen);
        free(text);
        if (r < 0)
                log_debug("metrics: %s: sending: %s", peer, strerror(-r));
}

static void serve_conn(struct metrics_http *h, int fd, const char *peer)
{
        struct conn c = {.fd = fd, .stop_fd = h->stop_fd};
        c.deadline = deadline_in_ms(CLOCK_MONOTONIC, METRICS_HTTP_DEADLINE_MS);
        char why[300] = "";
        int r = h->tls ? conn_handshake(h, &c, why, sizeof(why)) : 0;
        if (r < 0)
                log_info("metrics: refused %s: %s", peer, why);
        /* verified, but no role: say so (after reading the request) rather than hang up */
        if (r == 0 || r == -EACCES)
                serve_request(h, &c, peer, r == -EACCES ? why : NULL);
        if (c.ssl) {
                SSL_shutdown(c.ssl);
                SSL_free(c.ssl);
        }
        close(fd);
}

static void *conn_thread(void *arg)
{
        struct conn_job *j = arg;
        struct metrics_http *h = j->h;
        serve_conn(h, j->fd, j->peer);
        free(j);
        pthread_mutex_lock(&h->lock);
        h->active--;
        pthread_cond_broadcast(&h->idle);
        pthread_mutex_unlock(&h->lock);
        return NULL;
}

/* Serves fd on a thread of its own, unless METRICS_HTTP_MAX_CONNS are being served already
 * (then it is closed at once: a client that holds connections open cannot queue the others
 * behind its deadline). */
static void conn_spawn(struct metrics_http *h, int fd, const char *peer)
{
        struct conn_job *j = calloc(1, sizeof(*j));
        pthread_mutex_lock(&h->lock);
        bool full = h->active >= METRICS_HTTP_MAX_CONNS;
        if (!full && j)
                h->active++;
        pthread_mutex_unlock(&h->lock);
        if (full || !j) {
                log_warn("metrics: %s: %s; connection closed", peer,
                         full ? "too many connections" : "out of memory");
                free(j);
                close(fd);
                return;
        }
        j->h = h;
        j->fd = fd;
        snprintf(j->peer, sizeof(j->peer), "%s", peer);
        int e = thread_start_detached(conn_thread, j);
        if (e != 0) {
                log_warn("metrics: %s: thread: %s", peer, strerror(e));
                close(fd);
                free(j);
                pthread_mutex_lock(&h->lock);
                h->active--;
                pthread_cond_broadcast(&h->idle);
                pthread_mutex_unlock(&h->lock);
        }
}

static void *serve_thread(void *arg)
{
        struct metrics_http *h = arg;
        for (;;) {
                struct pollfd p[2] = {{.fd = h->fd, .events = POLLIN},
                                      {.fd = h->stop_fd, .events = POLLIN}};
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        log_error("metrics: poll: %s", strerror(errno));
                        return NULL;
                }
                if (p[1].revents)
                        return NULL;
                struct sockaddr_storage sa;
                socklen_t sl = sizeof(sa);
                int fd = accept4(h->fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warn("metrics: accept: %s", strerror(errno));
                        if (errno == EMFILE || errno == ENFILE)
                                poll(NULL, 0, 100);
                        continue;
                }
                char host[INET6_ADDRSTRLEN] = "?", peer[INET6_ADDRSTRLEN + 16];
                int port = 0;
                if (sa.ss_family == AF_INET) {
                        struct sockaddr_in *in = (struct sockaddr_in *)&sa;
                        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                        port = ntohs(in->sin_port);
                } else if (sa.ss_family == AF_INET6) {
                        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
                        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                        port = ntohs(in6->sin6_port);
                }
                snprintf(peer, sizeof(peer), "%s:%d", host, port);
                conn_spawn(h, fd, peer);
        }
}

/* "host:port" or "[v6]:port" into a bound, listening, non-blocking socket. */
static int listen_on(const char *addr, int *port, struct cap_error *err)
{
        char host[256];
        const char *colon = strrchr(addr, ':');
        if (!colon || colon == addr || !colon[1])
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "\"%s\": expected HOST:PORT", addr);
        size_t hl = (size_t)(colon - addr);
        const char *h = addr;
        if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') {
                h++;
                hl -= 2;
        }
        if (hl >= sizeof(host))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "\"%s\": host too long",
                                     addr);
        memcpy(host, h, hl);
        host[hl] = '\0';
        char *end = NULL;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p < 0 || p > 65535)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "\"%s\": port must be 0-65535", addr);
        struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                                 .ai_socktype = SOCK_STREAM};
        struct addrinfo *ai = NULL;
        int g = getaddrinfo(host, colon + 1, &hints, &ai);
        if (g != 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "\"%s\": not an IP address and port: %s", addr,
                                     gai_strerror(g));
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        /* an address DHCP has not configured yet binds all the same (and works once it is) */
        if (fd >= 0 && setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof(one)) < 0)
                log_debug("metrics: IP_FREEBIND: %s", strerror(errno));
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0) {
                int e = errno;
                if (fd >= 0)
                        close(fd);
                freeaddrinfo(ai);
                return cap_error_errno(err, -e, "listen %s", addr);
        }
        freeaddrinfo(ai);
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
                int e = errno;
                close(fd);
                return cap_error_errno(err, -e, "getsockname %s", addr);
        }
        *port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                               : ((struct sockaddr_in *)&sa)->sin_port);
        return fd;
}

static int tls_error(struct cap_error *err, const char *what)
{
        unsigned long e = ERR_get_error();
        ERR_clear_error();
        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: %s", what,
                             e ? ERR_reason_error_string(e) : "invalid");
}

/* The server's TLS context: its certificate and key, clients verified against the CA. */
static SSL_CTX *tls_context(const struct metrics_http_opts *o, struct cap_error *err)
{
        if (!o->ca_pem || !o->cert_pem || !o->key_pem) {
                cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                              "TLS needs pki.ca, pki.cert and pki.key");
                return NULL;
        }
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx) {
                tls_error(err, "TLS context");
                return NULL;
        }
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        BIO *b = BIO_new_mem_buf(o->cert_pem, -1);
        X509 *cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        b = BIO_new_mem_buf(o->key_pem, -1);
        EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        int r = 0;
        size_t n_ca = 0;
        if (!cert || SSL_CTX_use_certificate(ctx, cert) != 1)
                r = tls_error(err, "pki.cert");
        else if (!key || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
                 SSL_CTX_check_private_key(ctx) != 1)
                r = tls_error(err, "pki.key");
        else if (pki_certs_load(o->ca_pem, SSL_CTX_get_cert_store(ctx), &n_ca, err) < 0)
                r = cap_error_prefix(err, "pki.ca");
        X509_free(cert);
        EVP_PKEY_free(key);
        if (r < 0) {
                SSL_CTX_free(ctx);
                return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        /* no session resumption: every connection shows (and has checked) its certificate, and
         * OpenSSL refuses resumption with client verification without a session id context */
        static const unsigned char sid[] = "capsule-metrics";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
        return ctx;
}

struct metrics_http *metrics_http_start(const struct metrics_http_opts *o, int *port,
                                        struct cap_error *err)
{
        struct metrics_http *h = calloc(1, sizeof(*h));
        if (!h) {
                cap_error_errno(err, -ENOMEM, "metrics");
                return NULL;
        }
        h->fd = h->stop_fd = -1;
        pthread_mutex_init(&h->lock, NULL);
        pthread_cond_init(&h->idle, NULL);
        h->render = o->render;
        h->render_ud = o->render_ud;
        h->revoked = o->revoked;
        h->revoked_ud = o->revoked_ud;
        if (!o->insecure_http && !(h->tls = tls_context(o, err)))
                goto fail;
        h->fd = listen_on(o->listen, port, err);
        if (h->fd < 0)
                goto fail;
        h->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (h->stop_fd < 0) {
                cap_error_errno(err, -errno, "eventfd");
                goto fail;
        }
        int e = pthread_create(&h->thread, NULL, serve_thread, h);
        if (e != 0) {
                cap_error_errno(err, -e, "metrics thread");
                goto fail;
        }
        h->thread_started = true;
        return h;
fail:
        metrics_http_stop(h);
        return NULL;
}

void metrics_http_stop(struct metrics_http *h)
{
        if (!h)
                return;
        if (h->thread_started) {
                uint64_t one = 1;
                if (write(h->stop_fd, &one, sizeof(one)) != sizeof(one))
                        log_warn("metrics: stop: %s", strerror(errno));
                pthread_join(h->thread, NULL);
        }
        /* connection threads see stop_fd too and end within moments */
        pthread_mutex_lock(&h->lock);
        while (h->active)
                pthread_cond_wait(&h->idle, &h->lock);
        pthread_mutex_unlock(&h->lock);
        pthread_mutex_destroy(&h->lock);
        pthread_cond_destroy(&h->idle);
        if (h->fd >= 0)
                close(h->fd);
        if (h->stop_fd >= 0)
                close(h->stop_fd);
        SSL_CTX_free(h->tls);
        free(h);
}
