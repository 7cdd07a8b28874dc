/* OCI distribution API v2 client (pull only) over libcurl. One curl easy handle per pull; the
 * bearer token obtained after the first 401 is reused for the following requests. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/pki.h"
#include "registry.h"

#define ACCEPT_MANIFESTS                                                                           \
        "Accept: " MT_OCI_INDEX ", " MT_OCI_MANIFEST ", " MT_DOCKER_LIST ", " MT_DOCKER_MANIFEST
#define ERRBODY_MAX 4096
#define MAX_LAYERS 256

struct session {
        const struct registry_opts *o;
        const struct image_ref *ref;
        CURL *h;
        char *base;                       /* "https://host" */
        char *refstr;                     /* for messages */
        char *auth;                       /* "Authorization: Bearer ..." once we have a token */
        const struct registry_cred *cred; /* this host's credentials, or NULL */
        bool token_request;               /* perform(): send cred as HTTP Basic auth */
        bool insecure;
        uint64_t fetched;
        uint64_t layers_done, layers_total; /* progress */
};

/* One response: either buffered (manifests, tokens, error bodies) or streamed into a sink. */
struct resp {
        long status;
        char content_type[128];
        char *challenge; /* WWW-Authenticate */
        /* buffered */
        char *buf;
        size_t len, max;
        bool overflow;
        /* streamed */
        const struct blob_sink *sink;
        struct blob_hash *hash;
        uint64_t expect;
        struct cap_error *err;
        CURL *h;
        bool sink_failed;
        const struct session *s; /* progress: s->layers_done + what this blob got so far */
        char errbuf[ERRBODY_MAX + 1];
        size_t errlen;
};

int registry_global_init(struct cap_error *err)
{
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return cap_error_set(err, -EIO, CAP_INTERNAL, "curl_global_init failed");
        return 0;
}

bool registry_is_insecure(const struct registry_opts *o, const char *host)
{
        for (size_t i = 0; i < o->n_insecure; i++)
                if (o->insecure[i] && strcasecmp(o->insecure[i], host) == 0)
                        return true;
        return false;
}

/* ---- WWW-Authenticate ---- */

static char *param(const char *h, const char *key)
{
        size_t kl = strlen(key);
        for (const char *p = h; (p = strcasestr(p, key)); p += kl) {
                if (p != h && p[-1] != ' ' && p[-1] != ',')
                        continue;
                const char *v = p + kl;
                while (*v == ' ')
                        v++;
                if (*v != '=')
                        continue;
                v++;
                while (*v == ' ')
                        v++;
                if (*v == '"') {
                        const char *e = strchr(++v, '"');
                        return e ? strndup(v, (size_t)(e - v)) : NULL;
                }
                size_t n = strcspn(v, ", \r\n");
                return strndup(v, n);
        }
        return NULL;
}

int registry_parse_challenge(const char *header, char **realm, char **service, char **scope)
{
        *realm = *service = *scope = NULL;
        while (header && isspace((unsigned char)*header))
                header++;
        if (!header || strncasecmp(header, "Bearer ", 7) != 0)
                return -EINVAL;
        const char *rest = header + 7;
        *realm = param(rest, "realm");
        *service = param(rest, "service");
        *scope = param(rest, "scope");
        if (!*realm) {
                free(*service);
                free(*scope);
                *service = *scope = NULL;
                return -EINVAL;
        }
        return 0;
}

/* ---- curl plumbing ---- */

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
        struct resp *r = ud;
        size_t len = size * n;
        if (len > 13 && strncasecmp(data, "Content-Type:", 13) == 0) {
                const char *v = data + 13;
                while (*v == ' ')
                        v++;
                size_t vl = strcspn(v, ";\r\n");
                snprintf(r->content_type, sizeof(r->content_type), "%.*s", (int)vl, v);
        } else if (len > 17 && strncasecmp(data, "WWW-Authenticate:", 17) == 0) {
                free(r->challenge);
                r->challenge = strndup(data + 17, strcspn(data + 17, "\r\n"));
        } else if (len > 5 && strncmp(data, "HTTP/", 5) == 0) {
                /* A new response (redirect or retry): forget the previous one's headers. */
                r->content_type[0] = '\0';
        }
        return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
        struct resp *r = ud;
        size_t len = size * n;
        long status = 0;
        curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &status);
        if (r->sink && status / 100 == 2) {
                if (r->hash->size + len > r->expect) {
                        r->sink_failed = true;
                        cap_error_set(r->err, -EBADMSG, CAP_DATA_LOSS,
                                      "blob larger than its descriptor says");
                        return 0;
                }
                blob_hash_update(r->hash, data, len);
                if (r->sink->ops->write(r->sink->ud, data, len, r->err) < 0) {
                        r->sink_failed = true;
                        return 0;
                }
                if (r->s && r->s->o->progress)
                        r->s->o->progress(r->s->o->progress_ud, r->s->layers_done + r->hash->size,
                                          r->s->layers_total);
                return len;
        }
        if (r->sink || !r->buf || status / 100 != 2) {
                size_t k = ERRBODY_MAX - r->errlen < len ? ERRBODY_MAX - r->errlen : len;
                memcpy(r->errbuf + r->errlen, data, k);
                r->errlen += k;
                r->errbuf[r->errlen] = '\0';
                return len;
        }
        if (r->len + len > r->max) {
                r->overflow = true;
                return 0;
        }
        memcpy(r->buf + r->len, data, len);
        r->len += len;
        r->buf[r->len] = '\0';
        return len;
}

static void resp_reset(struct resp *r)
{
        free(r->challenge);
        r->challenge = NULL;
        r->status = 0;
        r->content_type[0] = '\0';
        r->len = 0;
        r->overflow = false;
        r->errlen = 0;
        r->errbuf[0] = '\0';
        if (r->buf)
                r->buf[0] = '\0';
}

/* Copies the registry's error message ({"errors":[{"message":...}]}) into out. */
static void registry_message(const char *body, char *out, size_t size)
{
        out[0] = '\0';
        struct json_object *o = body && *body ? json_tokener_parse(body) : NULL, *errs, *msg;
        if (o && json_object_object_get_ex(o, "errors", &errs) &&
            json_object_is_type(errs, json_type_array) && json_object_array_length(errs) > 0 &&
            json_object_object_get_ex(json_object_array_get_idx(errs, 0), "message", &msg))
                snprintf(out, size, "%s", json_object_get_string(msg));
        json_object_put(o);
}

static enum cap_status http_status(long s)
{
        if (s == 404)
                return CAP_NOT_FOUND;
        if (s == 401)
                return CAP_UNAUTHENTICATED;
        if (s == 403)
                return CAP_PERMISSION_DENIED;
        if (s == 429 || s >= 500)
                return CAP_UNAVAILABLE;
        return CAP_UNKNOWN;
}

static int http_error(struct session *s, struct resp *r, const char *what, struct cap_error *err)
{
        char msg[256], hint[160] = "";
        registry_message(r->errbuf, msg, sizeof(msg));
        if (!*msg)
                snprintf(msg, sizeof(msg), "%s failed", what);
        if (r->status == 401 && s->cred)
                snprintf(hint, sizeof(hint),
                         ": check the username and password for %s under registries.auth",
                         s->ref->domain);
        else if (r->status == 401)
                snprintf(
                    hint, sizeof(hint),
                    ": if %s needs a login, add it under registries.auth in the machine config",
                    s->ref->domain);
        return cap_error_set(err, -EIO, http_status(r->status), "pull %s: %s (%ld)%s", s->refstr,
                             msg, r->status, hint);
}

const struct registry_cred *registry_cred_for(const struct registry_opts *o, const char *host)
{
        for (size_t i = 0; i < o->n_auth; i++)
                if (o->auth[i].host && strcasecmp(o->auth[i].host, host) == 0)
                        return &o->auth[i];
        return NULL;
}

/* Answers a `WWW-Authenticate: Basic` challenge with the host's credentials. */
static int use_basic(struct session *s, struct cap_error *err)
{
        if (!s->cred)
                return cap_error_set(err, -EACCES, CAP_UNAUTHENTICATED,
                                     "pull %s: unauthorized (401): %s asks for a username and "
                                     "password; add them under registries.auth in the machine "
                                     "config",
                                     s->refstr, s->ref->domain);
        _cleanup_free_ char *plain = NULL;
        int n = asprintf(&plain, "%s:%s", s->cred->username, s->cred->password);
        if (n < 0) {
                plain = NULL;
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        size_t b64len = 4 * (((size_t)n + 2) / 3);
        _cleanup_free_ char *b64 = malloc(b64len + 1);
        if (!b64) {
                explicit_bzero(plain, (size_t)n);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)plain, n);
        explicit_bzero(plain, (size_t)n);
        if (s->auth)
                explicit_bzero(s->auth, strlen(s->auth));
        free(s->auth);
        if (asprintf(&s->auth, "Authorization: Basic %s", b64) < 0)
                s->auth = NULL;
        explicit_bzero(b64, b64len);
        return s->auth ? 0 : cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

/* libcurl calls this for each new TLS connection, after loading the system CAs: add ours. */
static CURLcode add_cas(CURL *h, void *ssl_ctx, void *ud)
{
        (void)h;
        size_t n;
        struct cap_error e = {0};
        if (pki_certs_load(ud, SSL_CTX_get_cert_store(ssl_ctx), &n, &e) < 0) {
                log_warn("registry: registries.ca: %s", e.msg);
                return CURLE_SSL_CACERT_BADFILE;
        }
        return CURLE_OK;
}

/* libcurl's progress hook (about once a second, and on every chunk): a non-zero return aborts
 * the transfer (shutdown). */
static int on_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
        (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
        return atomic_load((const atomic_bool *)ud) ? 1 : 0;
}

long registry_blob_deadline(uint64_t size)
{
        return REGISTRY_BLOB_BASE_TIMEOUT + (long)(size / REGISTRY_BLOB_MIN_RATE);
}

/* The first libcurl that drops custom Authorization headers on a scheme, host or port change. */
#define CURL_AUTH_SAFE_REDIRECTS 0x075300 /* 7.83.0 */

static int perform(struct session *s, const char *url, const char *accept, struct resp *r,
                   long timeout_s, bool with_auth, struct cap_error *err)
{
        struct curl_slist *hdrs = NULL;
        if (accept)
                hdrs = curl_slist_append(hdrs, accept);
        if (with_auth && s->auth)
                hdrs = curl_slist_append(hdrs, s->auth);
        CURL *h = s->h;
        r->h = h;
        curl_easy_reset(h);
        const char *protos = s->insecure ? "http,https" : "https";
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, protos);
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, protos);
        /* Registries redirect blob downloads to other hosts (CDNs, object stores): those must not
         * get the registry's credentials. Basic credentials (CURLOPT_USERNAME) and, since libcurl
         * 7.83, a hand-made Authorization header are dropped when the scheme, host or port
         * changes unless CURLOPT_UNRESTRICTED_AUTH is on, which it never is here. An older
         * libcurl compares the host only (or not at all): there, requests that carry a header
         * are not redirected automatically. */
        bool follow = !(with_auth && s->auth) ||
                      curl_version_info(CURLVERSION_NOW)->version_num >= CURL_AUTH_SAFE_REDIRECTS;
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(h, CURLOPT_UNRESTRICTED_AUTH, 0L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "capsule/" CAPSULE_VERSION);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT,
                         s->o->connect_timeout_s ? s->o->connect_timeout_s : 15L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT,
                         s->o->low_speed_bytes ? s->o->low_speed_bytes : (long)REGISTRY_LOW_SPEED);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
                         s->o->stall_timeout_s ? s->o->stall_timeout_s : (long)REGISTRY_STALL_TIMEOUT);
        if (s->o->cancel) {
                curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
                curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)s->o->cancel);
                curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        }
        if (timeout_s)
                curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);
        if (s->token_request && s->cred) {
                curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
                curl_easy_setopt(h, CURLOPT_USERNAME, s->cred->username);
                curl_easy_setopt(h, CURLOPT_PASSWORD, s->cred->password);
        }
        if (s->o->ca_pem) {
                curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, add_cas);
                curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, (void *)s->o->ca_pem);
        }
        char cerr[CURL_ERROR_SIZE] = "";
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
        CURLcode c = curl_easy_perform(h);
        curl_slist_free_all(hdrs);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
        if (c != CURLE_OK) {
                if (r->sink_failed)
                        return err->code ? err->code : -EIO;
                if (r->overflow)
                        return cap_error_set(err, -EFBIG, CAP_RESOURCE_EXHAUSTED,
                                             "pull %s: %s: response too large", s->refstr, url);
                const char *hint = "";
                if (c == CURLE_PEER_FAILED_VERIFICATION)
                        hint = " (a registry whose certificate comes from a private CA needs that "
                               "CA under registries.ca in the machine config)";
                else if (c == CURLE_SSL_CONNECT_ERROR && !s->insecure)
                        hint = " (a plain-HTTP registry must be listed under registries.insecure "
                               "in the machine config)";
                if (c == CURLE_ABORTED_BY_CALLBACK)
                        return cap_error_set(err, -ECANCELED, CAP_CANCELLED,
                                             "pull %s: %s: cancelled (shutting down)", s->refstr, url);
                return cap_error_set(err, -EIO,
                                     c == CURLE_OPERATION_TIMEDOUT ? CAP_DEADLINE_EXCEEDED
                                                                   : CAP_UNAVAILABLE,
                                     "pull %s: %s: %s%s", s->refstr, url,
                                     *cerr ? cerr : curl_easy_strerror(c), hint);
        }
        return 0;
}

/* GET the token named by a Bearer challenge and remember it for the session. */
static int fetch_token(struct session *s, const char *challenge, struct cap_error *err)
{
        _cleanup_free_ char *realm = NULL, *service = NULL, *scope = NULL, *url = NULL,
                            *dscope = NULL;
        if (registry_parse_challenge(challenge, &realm, &service, &scope) < 0)
                return cap_error_set(
                    err, -EACCES, CAP_UNAUTHENTICATED,
                    "pull %s: unauthorized (401) and no Bearer challenge to answer", s->refstr);
        if (!scope && asprintf(&dscope, "repository:%s:pull", s->ref->repository) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        char *es = service ? curl_easy_escape(s->h, service, 0) : NULL;
        char *esc = curl_easy_escape(s->h, scope ? scope : dscope, 0);
        int n = asprintf(&url, "%s%sservice=%s&scope=%s", realm, strchr(realm, '?') ? "&" : "?",
                         es ? es : "", esc ? esc : "");
        curl_free(es);
        curl_free(esc);
        if (n < 0) {
                url = NULL;
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        if (strncmp(realm, "https://", 8) != 0 &&
            !(s->insecure && strncmp(realm, "http://", 7) == 0))
                return cap_error_set(err, -EACCES, CAP_UNAUTHENTICATED,
                                     "pull %s: token realm %s refused (not https)", s->refstr,
                                     realm);
        _cleanup_free_ char *buf = malloc(BLOB_META_MAX + 1);
        if (!buf)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        struct resp r = {.buf = buf, .max = BLOB_META_MAX};
        s->token_request = true;
        int rc = perform(s, url, NULL, &r, 60, false, err);
        s->token_request = false;
        free(r.challenge);
        if (rc < 0)
                return rc;
        if (r.status != 200)
                return http_error(s, &r, "token request", err);
        struct json_object *o = json_tokener_parse(buf), *t;
        const char *tok = NULL;
        if (o && (json_object_object_get_ex(o, "token", &t) ||
                  json_object_object_get_ex(o, "access_token", &t)))
                tok = json_object_get_string(t);
        if (!tok || !*tok) {
                json_object_put(o);
                return cap_error_set(err, -EPROTO, CAP_UNAUTHENTICATED,
                                     "pull %s: token response without a token", s->refstr);
        }
        free(s->auth);
        if (asprintf(&s->auth, "Authorization: Bearer %s", tok) < 0)
                s->auth = NULL;
        json_object_put(o);
        return s->auth ? 0 : cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

/* GET with one bearer-token round trip on 401. */
static int get(struct session *s, const char *url, const char *accept, struct resp *r,
               long timeout_s, struct cap_error *err)
{
        for (int attempt = 0;; attempt++) {
                resp_reset(r);
                int rc = perform(s, url, accept, r, timeout_s, true, err);
                if (rc < 0)
                        return rc;
                if (r->status != 401 || attempt > 0 || !r->challenge)
                        return 0;
                if (r->sink) {
                        /* Nothing of a 401 body reached the sink; start the hash again anyway. */
                        blob_hash_free(r->hash);
                        if (blob_hash_init(r->hash, err) < 0)
                                return err->code;
                }
                const char *c = r->challenge;
                while (isspace((unsigned char)*c))
                        c++;
                if (strncasecmp(c, "Basic", 5) == 0 ? use_basic(s, err) < 0
                                                    : fetch_token(s, r->challenge, err) < 0)
                        return err->code;
        }
}

/* ---- manifests and blobs ---- */

/* GETs a manifest (by tag or digest) into a malloc'd buffer; verifies a digest reference. */
static int get_manifest(struct session *s, const char *tag_or_digest, char **body, size_t *len,
                        char *media_type, size_t mt_size, char digest[72], struct cap_error *err)
{
        _cleanup_free_ char *url = NULL, *buf = malloc(BLOB_META_MAX + 1);
        if (!buf ||
            asprintf(&url, "%s/v2/%s/manifests/%s", s->base, s->ref->repository, tag_or_digest) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        struct resp r = {.buf = buf, .max = BLOB_META_MAX};
        int rc = get(s, url, ACCEPT_MANIFESTS, &r, 60, err);
        if (rc == 0 && r.status != 200)
                rc = http_error(s, &r, "manifest request", err);
        free(r.challenge);
        if (rc < 0)
                return rc;
        if (blob_digest(buf, r.len, digest, err) < 0)
                return err->code;
        if (strncmp(tag_or_digest, "sha256:", 7) == 0 && strcmp(digest, tag_or_digest) != 0)
                return cap_error_set(err, -EBADMSG, CAP_DATA_LOSS,
                                     "pull %s: manifest %s: content has digest %s", s->refstr,
                                     tag_or_digest, digest);
        snprintf(media_type, mt_size, "%s", r.content_type);
        *len = r.len;
        *body = TAKE_PTR(buf);
        return 0;
}

/* Streams a blob into the sink, verified against digest and size while it flows. */
static int get_blob(struct session *s, const struct blob_sink *sink, const struct blob_desc *d,
                    struct cap_error *err)
{
        uint64_t max = s->o->max_blob_bytes ? s->o->max_blob_bytes : (16ull << 30);
        if (d->size > max)
                return cap_error_set(err, -EFBIG, CAP_RESOURCE_EXHAUSTED,
                                     "pull %s: blob %s: %" PRIu64 " bytes, more than the limit",
                                     s->refstr, d->digest, d->size);
        bool exists = false;
        if (sink->ops->begin(sink->ud, d, &exists, err) < 0)
                return err->code;
        if (exists)
                return 0;
        _cleanup_free_ char *url = NULL;
        struct blob_hash h;
        if (asprintf(&url, "%s/v2/%s/blobs/%s", s->base, s->ref->repository, d->digest) < 0) {
                sink->ops->abort(sink->ud);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        if (blob_hash_init(&h, err) < 0) {
                sink->ops->abort(sink->ud);
                return err->code;
        }
        struct resp r = {.sink = sink, .hash = &h, .expect = d->size, .err = err, .s = s};
        long deadline_s = s->o->blob_timeout_s ? s->o->blob_timeout_s : registry_blob_deadline(d->size);
        int rc = get(s, url, NULL, &r, deadline_s, err);
        if (rc == 0 && r.status != 200)
                rc = http_error(s, &r, "blob request", err);
        free(r.challenge);
        if (rc < 0 && err->status == CAP_DEADLINE_EXCEEDED) {
                /* name the registry, the blob and which deadline ran out */
                double took = 0;
                curl_easy_getinfo(s->h, CURLINFO_TOTAL_TIME, &took);
                long slow = s->o->low_speed_bytes ? s->o->low_speed_bytes : (long)REGISTRY_LOW_SPEED;
                long stall = s->o->stall_timeout_s ? s->o->stall_timeout_s : (long)REGISTRY_STALL_TIMEOUT;
                char why[128];
                if (took + 1 >= (double)deadline_s)
                        snprintf(why, sizeof(why), "not done within its deadline of %lds", deadline_s);
                else
                        snprintf(why, sizeof(why), "stalled: less than %ld bytes/s for %lds", slow, stall);
                cap_error_set(err, -ETIMEDOUT, CAP_DEADLINE_EXCEEDED,
                              "pull %s: blob %s from registry %s: %s (%" PRIu64 " of %" PRIu64
                              " bytes received)",
                              s->refstr, d->digest, s->ref->domain, why, h.size, d->size);
        }
        if (rc < 0) {
                blob_hash_free(&h);
                sink->ops->abort(sink->ud);
                if (strncmp(err->msg, "pull ", 5) != 0)
                        cap_error_prefix(err, "pull %s: blob %s", s->refstr, d->digest);
                return err->code;
        }
        uint64_t got_size = h.size;
        char got[72];
        blob_hash_final(&h, got);
        if (strcmp(got, d->digest) != 0 || got_size != d->size) {
                sink->ops->abort(sink->ud);
                return cap_error_set(err, -EBADMSG, CAP_DATA_LOSS,
                                     "pull %s: blob %s: received %" PRIu64
                                     " bytes with digest %s (expected %" PRIu64 ")",
                                     s->refstr, d->digest, got_size, got, d->size);
        }
        s->fetched += got_size;
        return sink->ops->commit(sink->ud, d, err);
}

/* GETs a small blob (the config) into memory, verified. */
static int get_blob_mem(struct session *s, const char *digest, uint64_t size, char **out,
                        struct cap_error *err)
{
        if (size > BLOB_META_MAX)
                return cap_error_set(err, -EFBIG, CAP_RESOURCE_EXHAUSTED,
                                     "pull %s: config %s too large", s->refstr, digest);
        _cleanup_free_ char *url = NULL, *buf = malloc(BLOB_META_MAX + 1);
        if (!buf || asprintf(&url, "%s/v2/%s/blobs/%s", s->base, s->ref->repository, digest) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        struct resp r = {.buf = buf, .max = BLOB_META_MAX};
        int rc = get(s, url, NULL, &r, 60, err);
        if (rc == 0 && r.status != 200)
                rc = http_error(s, &r, "config request", err);
        free(r.challenge);
        if (rc < 0)
                return rc;
        char got[72];
        if (blob_digest(buf, r.len, got, err) < 0)
                return err->code;
        if (strcmp(got, digest) != 0 || r.len != size)
                return cap_error_set(err, -EBADMSG, CAP_DATA_LOSS,
                                     "pull %s: config %s: content has digest %s", s->refstr, digest,
                                     got);
        *out = TAKE_PTR(buf);
        return 0;
}

static void json_putp(struct json_object **o)
{
        json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_putp)

static int parse_desc(struct json_object *o, const char **mt, const char **digest, uint64_t *size)
{
        struct json_object *v;
        *mt = json_object_object_get_ex(o, "mediaType", &v) ? json_object_get_string(v) : NULL;
        *digest = json_object_object_get_ex(o, "digest", &v) ? json_object_get_string(v) : NULL;
        if (!*digest || !image_digest_valid(*digest) || !json_object_object_get_ex(o, "size", &v) ||
            !json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
                return -EINVAL;
        *size = (uint64_t)json_object_get_int64(v);
        return 0;
}

static struct json_object *parse_json(const char *buf, size_t len)
{
        struct json_tokener *tok = json_tokener_new();
        if (!tok)
                return NULL;
        struct json_object *o = json_tokener_parse_ex(tok, buf, (int)len);
        if (json_tokener_get_error(tok) != json_tokener_success) {
                json_object_put(o);
                o = NULL;
        }
        json_tokener_free(tok);
        return o;
}

static const char *manifest_type(const char *content_type, struct json_object *m)
{
        struct json_object *v;
        if (blob_is_index(content_type) || blob_is_manifest(content_type))
                return content_type;
        if (json_object_object_get_ex(m, "mediaType", &v) &&
            json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        if (json_object_object_get_ex(m, "manifests", &v))
                return MT_OCI_INDEX;
        if (json_object_object_get_ex(m, "schemaVersion", &v) && json_object_get_int(v) == 1)
                return "application/vnd.docker.distribution.manifest.v1+json";
        return MT_OCI_MANIFEST;
}

/* The linux/amd64 entry of an index. */
static struct json_object *pick_platform(struct json_object *index)
{
        struct json_object *ms, *pl, *v;
        if (!json_object_object_get_ex(index, "manifests", &ms) ||
            !json_object_is_type(ms, json_type_array))
                return NULL;
        size_t n = json_object_array_length(ms);
        for (size_t i = 0; i < n; i++) {
                struct json_object *d = json_object_array_get_idx(ms, i);
                const char *os = NULL, *arch = NULL;
                if (json_object_object_get_ex(d, "platform", &pl)) {
                        os = json_object_object_get_ex(pl, "os", &v) ? json_object_get_string(v)
                                                                     : NULL;
                        arch = json_object_object_get_ex(pl, "architecture", &v)
                                   ? json_object_get_string(v)
                                   : NULL;
                }
                if (os && arch && strcmp(os, "linux") == 0 && strcmp(arch, "amd64") == 0)
                        return d;
        }
        return n == 1 ? json_object_array_get_idx(ms, 0) : NULL;
}

/* Writes config, layers and finally the manifest (with its GC labels) to the sink. */
static int pull_manifest(struct session *s, const struct blob_sink *sink, const char *body,
                         size_t len, const char *mt, const char *digest,
                         struct registry_result *res, struct cap_error *err)
{
        _cleanup_json_ struct json_object *m = parse_json(body, len);
        struct json_object *cj, *layers, *v;
        const char *cmt, *cdg;
        uint64_t csize;
        if (!m || !json_object_object_get_ex(m, "config", &cj) ||
            !json_object_object_get_ex(m, "layers", &layers) ||
            !json_object_is_type(layers, json_type_array) || parse_desc(cj, &cmt, &cdg, &csize) < 0)
                return cap_error_set(err, -EBADMSG, CAP_INVALID_ARGUMENT,
                                     "pull %s: manifest %s is malformed", s->refstr, digest);
        size_t n = json_object_array_length(layers);
        if (n > MAX_LAYERS)
                return cap_error_set(err, -E2BIG, CAP_INVALID_ARGUMENT,
                                     "pull %s: more than %d layers", s->refstr, MAX_LAYERS);
        _cleanup_free_ char *cfg = NULL;
        if (get_blob_mem(s, cdg, csize, &cfg, err) < 0)
                return err->code;
        _cleanup_json_ struct json_object *cfgj = parse_json(cfg, csize);
        struct json_object *ids = NULL, *rootfs;
        if (cfgj && json_object_object_get_ex(cfgj, "rootfs", &rootfs) &&
            json_object_object_get_ex(rootfs, "diff_ids", &v) &&
            json_object_is_type(v, json_type_array) && json_object_array_length(v) == n)
                ids = v;
        if (!ids)
                return cap_error_set(
                    err, -EBADMSG, CAP_INVALID_ARGUMENT,
                    "pull %s: config %s: rootfs.diff_ids missing or not matching the %zu layers",
                    s->refstr, cdg, n);
        struct blob_desc cd = {
            .media_type = cmt ? cmt : MT_OCI_CONFIG, .digest = cdg, .size = csize};
        if (blob_sink_put(sink, &cd, cfg, csize, err) < 0)
                return cap_error_prefix(err, "pull %s: config", s->refstr);
        uint64_t total = len + csize;
        for (size_t i = 0; i < n; i++) {
                const char *lmt, *ldg;
                uint64_t lsize;
                if (parse_desc(json_object_array_get_idx(layers, i), &lmt, &ldg, &lsize) == 0)
                        s->layers_total += lsize;
        }
        /* GC labels of the manifest: config + every layer. */
        char keys[MAX_LAYERS + 1][48];
        struct blob_label labels[MAX_LAYERS + 1];
        labels[0] = (struct blob_label){"containerd.io/gc.ref.content.config", cdg};
        for (size_t i = 0; i < n; i++) {
                const char *lmt, *ldg;
                uint64_t lsize;
                if (parse_desc(json_object_array_get_idx(layers, i), &lmt, &ldg, &lsize) < 0)
                        return cap_error_set(err, -EBADMSG, CAP_INVALID_ARGUMENT,
                                             "pull %s: layer %zu is malformed", s->refstr, i);
                if (!blob_is_layer(lmt))
                        return cap_error_set(err, -ENOTSUP, CAP_FAILED_PRECONDITION,
                                             "pull %s: layer %s: unsupported media type \"%s\"",
                                             s->refstr, ldg, lmt ? lmt : "");
                struct blob_label ul = {"containerd.io/uncompressed",
                                        json_object_get_string(json_object_array_get_idx(ids, i))};
                struct blob_desc ld = {
                    .media_type = lmt, .digest = ldg, .size = lsize, .labels = &ul, .n_labels = 1};
                if (get_blob(s, sink, &ld, err) < 0)
                        return err->code;
                s->layers_done += lsize;
                if (s->o->progress)
                        s->o->progress(s->o->progress_ud, s->layers_done, s->layers_total);
                snprintf(keys[i + 1], sizeof(keys[i + 1]), "containerd.io/gc.ref.content.l.%zu", i);
                labels[i + 1] = (struct blob_label){keys[i + 1], ldg};
                total += lsize;
        }
        struct blob_desc md = {
            .media_type = mt, .digest = digest, .size = len, .labels = labels, .n_labels = n + 1};
        if (blob_sink_put(sink, &md, body, len, err) < 0)
                return cap_error_prefix(err, "pull %s: manifest", s->refstr);
        snprintf(res->digest, sizeof(res->digest), "%s", digest);
        snprintf(res->media_type, sizeof(res->media_type), "%s", mt);
        res->manifest_size = len;
        res->total_size = total;
        return 0;
}

int registry_pull(const struct registry_opts *o, const struct image_ref *ref,
                  const struct blob_sink *sink, struct registry_result *res, struct cap_error *err)
{
        struct session s = {.o = o, .ref = ref};
        _cleanup_free_ char *body = NULL;
        size_t len = 0;
        char mt_hdr[128], digest[72];
        int rc = -ENOMEM;
        *res = (struct registry_result){0};
        const char *host =
            strcmp(ref->domain, "docker.io") == 0 ? "registry-1.docker.io" : ref->domain;
        s.insecure = registry_is_insecure(o, ref->domain);
        s.cred = registry_cred_for(o, ref->domain);
        s.refstr = image_ref_string(ref);
        s.h = curl_easy_init();
        if (!s.refstr || !s.h ||
            asprintf(&s.base, "%s://%s", s.insecure ? "http" : "https", host) < 0) {
                s.base = NULL;
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                goto out;
        }
        rc = get_manifest(&s, ref->digest ? ref->digest : ref->tag, &body, &len, mt_hdr,
                          sizeof(mt_hdr), digest, err);
        for (int depth = 0; rc == 0; depth++) {
                _cleanup_json_ struct json_object *m = parse_json(body, len);
                if (!m) {
                        rc = cap_error_set(err, -EBADMSG, CAP_INVALID_ARGUMENT,
                                           "pull %s: manifest is not JSON", s.refstr);
                        break;
                }
                const char *mt = manifest_type(mt_hdr, m);
                if (blob_is_manifest(mt)) {
                        char mtc[96];
                        snprintf(mtc, sizeof(mtc), "%s", mt);
                        rc = pull_manifest(&s, sink, body, len, mtc, digest, res, err);
                        break;
                }
                if (!blob_is_index(mt) || depth >= 2) {
                        rc = cap_error_set(
                            err, -ENOTSUP, CAP_FAILED_PRECONDITION,
                            "pull %s: unsupported manifest type \"%s\"%s", s.refstr, mt,
                            strstr(mt, "manifest.v1") ? " (schema 1 is obsolete)" : "");
                        break;
                }
                struct json_object *pick = pick_platform(m);
                const char *pmt, *pdg;
                uint64_t psize;
                if (!pick || parse_desc(pick, &pmt, &pdg, &psize) < 0) {
                        rc = cap_error_set(err, -ENOENT, CAP_NOT_FOUND,
                                           "pull %s: no linux/amd64 image in the index", s.refstr);
                        break;
                }
                char want[72];
                snprintf(want, sizeof(want), "%s", pdg);
                free(body);
                body = NULL;
                rc = get_manifest(&s, want, &body, &len, mt_hdr, sizeof(mt_hdr), digest, err);
                if (rc == 0 && len != psize)
                        rc = cap_error_set(err, -EBADMSG, CAP_DATA_LOSS,
                                           "pull %s: manifest %s: size %zu, index says %" PRIu64,
                                           s.refstr, want, len, psize);
        }
        res->bytes_fetched = s.fetched;
out:
        if (s.h)
                curl_easy_cleanup(s.h);
        free(s.base);
        free(s.refstr);
        free(s.auth);
        return rc;
}
