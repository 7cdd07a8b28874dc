/* Machine config and client config (see config.h): strict YAML parsing with libyaml's document
 * API, serialization with its emitter (PEM as literal block scalars), and atomic saves.
 *
 * Parsing is strict because these files carry keys and a typo must not silently fall back to a
 * default: an unknown field is an error naming its path and line ("machine.yaml:7: unknown field
 * \"api.lisen\""), and so is a missing required one. Saving formats the text, parses it back to
 * validate it, then writes it with config_write_file_atomic(). */
#include "config.h"
#include "fs.h"
#include "config_crypto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "cleanup.h"
#include "names.h"

#define CONFIG_MAX_FILE (1 << 20)
#define DEFAULT_LISTEN "0.0.0.0:50000"
#define MACHINE_MAX_DNS 3 /* resolv.conf's MAXNS */
/* Returned by field handlers for a key they do not know. */
#define FIELD_UNKNOWN 1

/* ---- small helpers ---- */

static void free_secret(char *s)
{
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
}

static void free_strv(char **v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

int config_read_file(const char *path, char **out, size_t *len, struct cap_error *err)
{
        bool is_stdin = strcmp(path, "-") == 0;
        _cleanup_close_ int fd = is_stdin ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "open %s", path);
        _cleanup_free_ char *buf = malloc(CONFIG_MAX_FILE + 1);
        if (!buf)
                return cap_error_errno(err, -ENOMEM, "read %s", path);
        size_t got = 0;
        for (;;) {
                ssize_t n = read(fd, buf + got, CONFIG_MAX_FILE + 1 - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return cap_error_errno(err, -errno, "read %s", path);
                if (n == 0)
                        break;
                got += (size_t)n;
                if (got > CONFIG_MAX_FILE)
                        return cap_error_set(err, -EFBIG, CAP_INVALID_ARGUMENT,
                                             "%s: larger than %d bytes", path, CONFIG_MAX_FILE);
        }
        buf[got] = '\0';
        *out = TAKE_PTR(buf);
        *len = got;
        return 0;
}

/* ---- parsing ---- */

struct yparse {
        const char *name; /* file name for messages */
        yaml_document_t doc;
        struct cap_error *err;
};

/* Sets err to "<file>:<line>: <message>" for node n (n may be NULL) and returns the code. */
static int __attribute__((format(printf, 3, 4)))
fail_at(struct yparse *p, const yaml_node_t *n, const char *fmt, ...)
{
        char msg[768];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (n)
                return cap_error_set(p->err, -EINVAL, CAP_INVALID_ARGUMENT, "%s:%zu: %s", p->name,
                                     (size_t)n->start_mark.line + 1, msg);
        return cap_error_set(p->err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: %s", p->name, msg);
}

/* Loads exactly one YAML document from buf into p->doc. */
static int yparse_load(struct yparse *p, const char *buf, size_t len)
{
        yaml_parser_t parser;
        if (!yaml_parser_initialize(&parser))
                return cap_error_errno(p->err, -ENOMEM, "%s: YAML parser", p->name);
        yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
        int r = 0;
        if (!yaml_parser_load(&parser, &p->doc)) {
                r = cap_error_set(p->err, -EINVAL, CAP_INVALID_ARGUMENT,
                                  "%s:%zu:%zu: invalid YAML: %s%s%s", p->name,
                                  (size_t)parser.problem_mark.line + 1,
                                  (size_t)parser.problem_mark.column + 1,
                                  parser.problem ? parser.problem : "syntax error",
                                  parser.context ? " " : "", parser.context ? parser.context : "");
                yaml_parser_delete(&parser);
                return r;
        }
        if (!yaml_document_get_root_node(&p->doc)) {
                r = fail_at(p, NULL, "empty document");
        } else {
                yaml_document_t extra;
                if (!yaml_parser_load(&parser, &extra)) {
                        r = cap_error_set(p->err, -EINVAL, CAP_INVALID_ARGUMENT,
                                          "%s:%zu: invalid YAML: %s", p->name,
                                          (size_t)parser.problem_mark.line + 1,
                                          parser.problem ? parser.problem : "syntax error");
                } else {
                        yaml_node_t *more = yaml_document_get_root_node(&extra);
                        if (more)
                                r = fail_at(p, more, "only one YAML document is allowed");
                        yaml_document_delete(&extra);
                }
        }
        if (r < 0)
                yaml_document_delete(&p->doc);
        yaml_parser_delete(&parser);
        return r;
}

static yaml_node_t *node_get(struct yparse *p, int id)
{
        return yaml_document_get_node(&p->doc, id);
}

/* A plain empty, "~" or "null" scalar means "not set". */
static bool scalar_is_null(const yaml_node_t *n)
{
        if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
                return false;
        const char *v = (const char *)n->data.scalar.value;
        return !*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0;
}

static int take_str(struct yparse *p, yaml_node_t *n, const char *path, char **out)
{
        if (n->type != YAML_SCALAR_NODE)
                return fail_at(p, n, "%s: expected a string", path);
        if (scalar_is_null(n))
                return 0;
        if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
                return fail_at(p, n, "%s: contains a NUL byte", path);
        *out = strdup((const char *)n->data.scalar.value);
        return *out ? 0 : cap_error_errno(p->err, -ENOMEM, "%s", p->name);
}

static int take_int(struct yparse *p, yaml_node_t *n, const char *path, int *out)
{
        if (n->type != YAML_SCALAR_NODE)
                return fail_at(p, n, "%s: expected an integer", path);
        const char *v = (const char *)n->data.scalar.value;
        char *end = NULL;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < INT_MIN || x > INT_MAX)
                return fail_at(p, n, "%s: expected an integer, got \"%.40s\"", path, v);
        *out = (int)x;
        return 0;
}

static int take_bool(struct yparse *p, yaml_node_t *n, const char *path, bool *out)
{
        const char *v = n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : "";
        if (strcmp(v, "true") == 0)
                *out = true;
        else if (strcmp(v, "false") == 0)
                *out = false;
        else
                return fail_at(p, n, "%s: expected true or false", path);
        return 0;
}

static int take_strv(struct yparse *p, yaml_node_t *n, const char *path, char ***out, size_t *n_out)
{
        if (scalar_is_null(n))
                return 0;
        if (n->type != YAML_SEQUENCE_NODE)
                return fail_at(p, n, "%s: expected a list of strings", path);
        size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        *out = calloc(count + 1, sizeof(char *));
        if (!*out)
                return cap_error_errno(p->err, -ENOMEM, "%s", p->name);
        *n_out = count;
        for (size_t i = 0; i < count; i++) {
                char item[300];
                snprintf(item, sizeof(item), "%s[%zu]", path, i);
                yaml_node_t *v = node_get(p, n->data.sequence.items.start[i]);
                int r = take_str(p, v, item, &(*out)[i]);
                if (r < 0)
                        return r;
                if (!(*out)[i])
                        return fail_at(p, v, "%s: must not be empty", item);
        }
        return 0;
}

typedef int (*field_fn)(struct yparse *p, const char *key, yaml_node_t *value, const char *path,
                        void *obj);

/* Calls fn for every key of the mapping n (at path prefix, "" for the root); rejects non-mappings,
 * duplicate keys and keys fn does not know. */
static int map_walk(struct yparse *p, yaml_node_t *n, const char *prefix, field_fn fn, void *obj)
{
        if (n->type != YAML_MAPPING_NODE)
                return fail_at(p, n, "%s: expected a mapping", *prefix ? prefix : "document");
        for (yaml_node_pair_t *pair = n->data.mapping.pairs.start; pair < n->data.mapping.pairs.top;
             pair++) {
                yaml_node_t *k = node_get(p, pair->key), *v = node_get(p, pair->value);
                if (k->type != YAML_SCALAR_NODE)
                        return fail_at(p, k, "%s: keys must be strings",
                                       *prefix ? prefix : "document");
                const char *key = (const char *)k->data.scalar.value;
                char path[300];
                snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", key);
                for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < pair; q++) {
                        yaml_node_t *kq = node_get(p, q->key);
                        if (kq->type == YAML_SCALAR_NODE &&
                            strcmp((const char *)kq->data.scalar.value, key) == 0)
                                return fail_at(p, k, "duplicate field \"%s\"", path);
                }
                int r = fn(p, key, v, path, obj);
                if (r == FIELD_UNKNOWN)
                        return fail_at(p, k, "unknown field \"%s\"", path);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int require(struct yparse *p, const yaml_node_t *where, const void *value, const char *path)
{
        if (value)
                return 0;
        return fail_at(p, where, "missing required field \"%s\"", path);
}

/* Light sanity check so that a swapped or truncated PEM is reported with its field name. */
static int check_pem(struct yparse *p, const yaml_node_t *where, const char *pem, const char *path,
                     const char *kind)
{
        if (!pem)
                return 0;
        char begin[64];
        snprintf(begin, sizeof(begin), "-----BEGIN %s", kind);
        if (!strstr(pem, begin) || !strstr(pem, "-----END "))
                return fail_at(p, where, "%s: expected a PEM block (\"%s-----\")", path, begin);
        return 0;
}

/* ---- machine config ---- */

struct updates_parse;

struct machine_parse {
        struct machine_config *c;
        yaml_node_t *pki, *network, *registries;
        struct updates_parse *updates;
};

/* ---- checks of values that end up in files other programs read (dhcpcd.conf, resolv.conf,
 * chrony's config, HTTP headers): a newline there would inject a directive. */

static bool has_control_char(const char *s)
{
        for (; s && *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return true;
        return false;
}

/* Refuses control characters in a plain string field (path names it). */
static int check_plain(struct yparse *p, const yaml_node_t *v, const char *path, const char *s)
{
        if (has_control_char(s))
                return fail_at(p, v, "%s: \"%.80s\" contains a control character (newline, tab...)",
                               path, s);
        return 0;
}

/* AF_INET or AF_INET6 for an IP address, 0 for anything else. */
static int ip_family(const char *s)
{
        unsigned char bin[16];
        if (inet_pton(AF_INET, s, bin) == 1)
                return AF_INET;
        if (inet_pton(AF_INET6, s, bin) == 1)
                return AF_INET6;
        return 0;
}

static int check_ip(struct yparse *p, const yaml_node_t *v, const char *path, const char *s)
{
        int r = check_plain(p, v, path, s);
        if (r < 0)
                return r;
        if (!ip_family(s))
                return fail_at(p, v, "%s: \"%.80s\" is not an IP address", path, s);
        return 0;
}

/* "ADDRESS/PREFIX": an IPv4 address with a prefix of 1-32 or an IPv6 one with 1-128. Returns
 * the family or a negative error. */
static int check_cidr(struct yparse *p, const yaml_node_t *v, const char *path, const char *s)
{
        int r = check_plain(p, v, path, s);
        if (r < 0)
                return r;
        const char *slash = strchr(s, '/');
        char addr[INET6_ADDRSTRLEN + 1];
        size_t n = slash ? (size_t)(slash - s) : 0;
        int family = 0;
        if (slash && n < sizeof(addr)) {
                memcpy(addr, s, n);
                addr[n] = '\0';
                family = ip_family(addr);
        }
        if (!family)
                return fail_at(p, v,
                               "%s: \"%.80s\" is not ADDRESS/PREFIX (e.g. \"192.168.1.10/24\" or "
                               "\"fd00::10/64\")",
                               path, s);
        int max = family == AF_INET ? 32 : 128;
        char *end = NULL;
        errno = 0;
        long prefix = strtol(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end || errno || prefix < 1 || prefix > max)
                return fail_at(p, v, "%s: \"%.80s\": %s needs a prefix 1-%d", path, s,
                               family == AF_INET ? "IPv4" : "IPv6", max);
        return family;
}

static int machine_api_field(struct yparse *p, const char *key, yaml_node_t *v, const char *path,
                             void *obj)
{
        struct machine_config *c = ((struct machine_parse *)obj)->c;
        if (strcmp(key, "listen") == 0) {
                free(c->listen);
                c->listen = NULL;
                int r = take_str(p, v, path, &c->listen);
                if (r < 0 || !c->listen)
                        return r;
                if (!machine_listen_ok(c->listen))
                        return fail_at(p, v,
                                       "%s: \"%.80s\" is not IP:PORT or [IPV6]:PORT with a port of "
                                       "1-65535 (e.g. \"0.0.0.0:50000\")",
                                       path, c->listen);
                return 0;
        }
        return FIELD_UNKNOWN;
}

bool machine_listen_ok(const char *addr)
{
        const char *colon = addr ? strrchr(addr, ':') : NULL;
        if (!colon || colon == addr)
                return false;
        char host[64];
        size_t hl = (size_t)(colon - addr);
        const char *h = addr;
        int family = AF_INET;
        if (addr[0] == '[') {
                if (hl < 3 || addr[hl - 1] != ']')
                        return false;
                h++;
                hl -= 2;
                family = AF_INET6;
        }
        if (hl >= sizeof(host))
                return false;
        memcpy(host, h, hl);
        host[hl] = '\0';
        unsigned char bin[16];
        if (inet_pton(family, host, bin) != 1)
                return false;
        char *end = NULL;
        errno = 0;
        long port = strtol(colon + 1, &end, 10);
        return colon[1] >= '0' && colon[1] <= '9' && !*end && !errno && port >= 1 && port <= 65535;
}

static int machine_metrics_field(struct yparse *p, const char *key, yaml_node_t *v,
                                 const char *path, void *obj)
{
        struct machine_config *c = ((struct machine_parse *)obj)->c;
        if (strcmp(key, "enabled") == 0) {
                bool on = true;
                int r = take_bool(p, v, path, &on);
                c->metrics_off = !on;
                return r;
        }
        if (strcmp(key, "insecureHTTP") == 0)
                return take_bool(p, v, path, &c->metrics_insecure_http);
        if (strcmp(key, "listen") != 0)
                return FIELD_UNKNOWN;
        free(c->metrics_listen);
        c->metrics_listen = NULL;
        int r = take_str(p, v, path, &c->metrics_listen);
        if (r < 0)
                return r;
        if (c->metrics_listen && !machine_listen_ok(c->metrics_listen))
                return fail_at(p, v,
                               "%s: \"%.80s\" is not IP:PORT or [IPV6]:PORT with a port of "
                               "1-65535 (e.g. \"0.0.0.0:50001\")",
                               path, c->metrics_listen);
        return 0;
}

int machine_serial_canon(const char *s, char out[MACHINE_SERIAL_MAX_HEX + 1])
{
        size_t n = strlen(s);
        if (n == 0 || n > MACHINE_SERIAL_MAX_HEX || strspn(s, "0123456789abcdefABCDEF") != n)
                return -EINVAL;
        while (n > 1 && *s == '0') {
                s++;
                n--;
        }
        for (size_t i = 0; i <= n; i++)
                out[i] = (char)(s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 'A' : s[i]);
        return 0;
}

bool machine_serial_revoked(const struct machine_config *c, const char *serial)
{
        char canon[MACHINE_SERIAL_MAX_HEX + 1];
        if (!serial || machine_serial_canon(serial, canon) < 0)
                return false;
        for (size_t i = 0; i < c->n_revoked_serials; i++)
                if (strcmp(c->revoked_serials[i], canon) == 0)
                        return true;
        return false;
}

bool machine_config_revoked_equal(const struct machine_config *a, const struct machine_config *b)
{
        if (a->n_revoked_serials != b->n_revoked_serials)
                return false;
        for (size_t i = 0; i < a->n_revoked_serials; i++)
                if (strcmp(a->revoked_serials[i], b->revoked_serials[i]) != 0)
                        return false;
        return true;
}

/* pki.revoked: a list of 1-40 hex digit serials, at most MACHINE_REVOKED_MAX, no repeats;
 * kept in canonical form. */
static int machine_pki_revoked(struct yparse *p, yaml_node_t *v, const char *path,
                               struct machine_config *c)
{
        if (v->type == YAML_SEQUENCE_NODE) {
                size_t count = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
                if (count > MACHINE_REVOKED_MAX)
                        return fail_at(p, v, "%s: %zu serials, at most %d", path, count,
                                       MACHINE_REVOKED_MAX);
        }
        int r = take_strv(p, v, path, &c->revoked_serials, &c->n_revoked_serials);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c->n_revoked_serials; i++) {
                yaml_node_t *item = node_get(p, v->data.sequence.items.start[i]);
                char canon[MACHINE_SERIAL_MAX_HEX + 1];
                if (machine_serial_canon(c->revoked_serials[i], canon) < 0)
                        return fail_at(p, item,
                                       "%s[%zu]: \"%.60s\" is not a certificate serial (1-%d hex "
                                       "digits, as `capsulectl gen cert` prints it)",
                                       path, i, c->revoked_serials[i], MACHINE_SERIAL_MAX_HEX);
                strcpy(c->revoked_serials[i], canon); /* never longer than the original */
                for (size_t j = 0; j < i; j++)
                        if (strcmp(c->revoked_serials[j], canon) == 0)
                                return fail_at(p, item, "%s[%zu]: serial %s is already at %s[%zu]",
                                               path, i, canon, path, j);
        }
        return 0;
}

static int machine_pki_field(struct yparse *p, const char *key, yaml_node_t *v, const char *path,
                             void *obj)
{
        struct machine_config *c = ((struct machine_parse *)obj)->c;
        if (strcmp(key, "revoked") == 0)
                return machine_pki_revoked(p, v, path, c);
        if (strcmp(key, "ca") == 0)
                return take_str(p, v, path, &c->ca_pem);
        if (strcmp(key, "cert") == 0)
                return take_str(p, v, path, &c->cert_pem);
        if (strcmp(key, "key") == 0)
                return take_str(p, v, path, &c->key_pem);
        return FIELD_UNKNOWN;
}

static int registry_cred_field(struct yparse *p, const char *key, yaml_node_t *v, const char *path,
                               void *obj)
{
        struct registry_cred *x = obj;
        if (strcmp(key, "host") == 0)
                return take_str(p, v, path, &x->host);
        if (strcmp(key, "username") == 0)
                return take_str(p, v, path, &x->username);
        if (strcmp(key, "password") == 0)
                return take_str(p, v, path, &x->password);
        return FIELD_UNKNOWN;
}

static int machine_registry_auth(struct yparse *p, yaml_node_t *v, const char *path,
                                 struct machine_config *c)
{
        if (scalar_is_null(v))
                return 0;
        if (v->type != YAML_SEQUENCE_NODE)
                return fail_at(p, v, "%s: expected a list of {host, username, password}", path);
        size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
        c->registry_auth = calloc(n + 1, sizeof(*c->registry_auth));
        if (!c->registry_auth)
                return cap_error_errno(p->err, -ENOMEM, "%s", p->name);
        c->n_registry_auth = n;
        for (size_t i = 0; i < n; i++) {
                char item[64], f[3][96];
                snprintf(item, sizeof(item), "%s[%zu]", path, i);
                yaml_node_t *it = node_get(p, v->data.sequence.items.start[i]);
                struct registry_cred *x = &c->registry_auth[i];
                int r = map_walk(p, it, item, registry_cred_field, x);
                if (r < 0)
                        return r;
                const char *names[] = {"host", "username", "password"};
                const char *vals[] = {x->host, x->username, x->password};
                for (size_t k = 0; k < ARRAY_SIZE(names); k++) {
                        snprintf(f[k], sizeof(f[k]), "%s.%s", item, names[k]);
                        if ((r = require(p, it, vals[k], f[k])) < 0)
                                return r;
                }
                if (!*x->host || strpbrk(x->host, "/ \t"))
                        return fail_at(p, it,
                                       "%s: a registry host (\"registry.lan:5000\"), "
                                       "not \"%s\"",
                                       f[0], x->host);
                for (size_t k = 0; k < ARRAY_SIZE(names); k++)
                        if ((r = check_plain(p, it, f[k], vals[k])) < 0)
                                return r;
                if (strchr(x->username, ':'))
                        return fail_at(p, it, "%s: may not contain ':'", f[1]);
                for (size_t j = 0; j < i; j++)
                        if (strcasecmp(c->registry_auth[j].host, x->host) == 0)
                                return fail_at(p, it, "%s: duplicate host \"%s\"", f[0], x->host);
        }
        return 0;
}

static int machine_registries_field(struct yparse *p, const char *key, yaml_node_t *v,
                                    const char *path, void *obj)
{
        struct machine_config *c = ((struct machine_parse *)obj)->c;
        if (strcmp(key, "insecure") == 0) {
                int r = take_strv(p, v, path, &c->insecure_registries, &c->n_insecure_registries);
                for (size_t i = 0; r >= 0 && i < c->n_insecure_registries; i++) {
                        char item[300];
                        snprintf(item, sizeof(item), "%s[%zu]", path, i);
                        r = check_plain(p, v, item, c->insecure_registries[i]);
                        if (r >= 0 && strchr(c->insecure_registries[i], ' '))
                                r = fail_at(p, v, "%s: \"%.80s\": a registry host has no spaces",
                                            item, c->insecure_registries[i]);
                }
                return r;
        }
        if (strcmp(key, "ca") == 0) {
                ((struct machine_parse *)obj)->registries = v;
                return take_str(p, v, path, &c->registry_ca_pem);
        }
        if (strcmp(key, "auth") == 0)
                return machine_registry_auth(p, v, path, c);
        return FIELD_UNKNOWN;
}

static int machine_network_field(struct yparse *p, const char *key, yaml_node_t *v,
                                 const char *path, void *obj)
{
        struct machine_config *c = ((struct machine_parse *)obj)->c;
        if (strcmp(key, "dhcp") == 0)
                return take_bool(p, v, path, &c->dhcp);
        int r;
        if (strcmp(key, "address") == 0) {
                if ((r = take_str(p, v, path, &c->address)) < 0 || !c->address)
                        return r;
                return check_cidr(p, v, path, c->address) < 0 ? p->err->code : 0;
        }
        if (strcmp(key, "gateway") == 0) {
                if ((r = take_str(p, v, path, &c->gateway)) < 0 || !c->gateway)
                        return r;
                return check_ip(p, v, path, c->gateway);
        }
        if (strcmp(key, "dns") == 0) {
                if ((r = take_strv(p, v, path, &c->dns, &c->n_dns)) < 0)
                        return r;
                if (c->n_dns > MACHINE_MAX_DNS)
                        return fail_at(p, v,
                                       "%s: at most %d servers (resolv.conf uses no more than %d)",
                                       path, MACHINE_MAX_DNS, MACHINE_MAX_DNS);
                for (size_t i = 0; i < c->n_dns; i++) {
                        char item[300];
                        snprintf(item, sizeof(item), "%s[%zu]", path, i);
                        if ((r = check_ip(p, v, item, c->dns[i])) < 0)
                                return r;
                }
                return 0;
        }
        return FIELD_UNKNOWN;
}

int ntp_server_split(const char *entry, char *host, size_t host_len, unsigned *port)
{
        const char *h = entry, *end, *colon;
        *port = 123;
        if (*h == '[') {
                end = strchr(h, ']');
                if (!end || end == h + 1)
                        return -EINVAL;
                h++;
                colon = end[1] == ':' ? end + 1 : NULL;
                if (!colon && end[1])
                        return -EINVAL;
        } else {
                colon = strchr(h, ':');
                if (colon && strchr(colon + 1, ':'))
                        return -EINVAL; /* a bare IPv6 address: write it as [addr] */
                end = colon ? colon : h + strlen(h);
        }
        size_t n = (size_t)(end - h);
        if (n == 0 || n >= host_len)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                char ch = h[i];
                bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                          (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' ||
                          (entry[0] == '[' && ch == ':');
                if (!ok)
                        return -EINVAL;
        }
        if (colon) {
                char *e;
                errno = 0;
                unsigned long p = strtoul(colon + 1, &e, 10);
                if (!colon[1] || *e || errno || p == 0 || p > 65535)
                        return -EINVAL;
                *port = (unsigned)p;
        }
        memcpy(host, h, n);
        host[n] = '\0';
        return 0;
}

static int machine_time_field(struct yparse *p, const char *key, yaml_node_t *v, const char *path,
                              void *obj)
{
        struct machine_config *c = ((struct machine_parse *)obj)->c;
        if (strcmp(key, "servers") != 0)
                return FIELD_UNKNOWN;
        int r = take_strv(p, v, path, &c->ntp_servers, &c->n_ntp_servers);
        if (r < 0)
                return r;
        c->ntp_servers_set = true;
        if (c->n_ntp_servers > 8)
                return fail_at(p, v, "%s: at most 8 servers", path);
        for (size_t i = 0; i < c->n_ntp_servers; i++) {
                char host[256];
                unsigned port;
                if (ntp_server_split(c->ntp_servers[i], host, sizeof(host), &port) < 0)
                        return fail_at(p, v,
                                       "%s[%zu]: \"%s\" is not HOST, HOST:PORT or [IPV6]:PORT",
                                       path, i, c->ntp_servers[i]);
        }
        return 0;
}

/* updates.commitWindow: one or more NUMBER UNIT pairs ("30s", "5m", "1h30m"), s, m or h. */
static int parse_duration(const char *s, unsigned long *out)
{
        unsigned long total = 0;
        if (!*s)
                return -EINVAL;
        while (*s) {
                char *end = NULL;
                if (*s < '0' || *s > '9')
                        return -EINVAL;
                errno = 0;
                unsigned long n = strtoul(s, &end, 10);
                if (errno || end == s || n > 10000000)
                        return -EINVAL;
                unsigned long unit = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : 0;
                if (!unit)
                        return -EINVAL;
                total += n * unit;
                if (total > 100000000)
                        return -EINVAL;
                s = end + 1;
        }
        *out = total;
        return 0;
}

static void format_duration(unsigned sec, char *buf, size_t size)
{
        if (sec % 3600 == 0)
                snprintf(buf, size, "%uh", sec / 3600);
        else if (sec % 60 == 0)
                snprintf(buf, size, "%um", sec / 60);
        else
                snprintf(buf, size, "%us", sec);
}

struct updates_parse {
        char **trusted; /* updates.trustedKeys as written */
        size_t n_trusted;
        yaml_node_t *node;
};

static int machine_updates_field(struct yparse *p, const char *key, yaml_node_t *v,
                                 const char *path, void *obj)
{
        struct machine_parse *mp = obj;
        struct machine_config *c = mp->c;
        if (strcmp(key, "publicKey") == 0)
                return take_str(p, v, path, &c->update_pubkey_pem);
        if (strcmp(key, "trustedKeys") == 0)
                return take_strv(p, v, path, &mp->updates->trusted, &mp->updates->n_trusted);
        if (strcmp(key, "commitWindow") == 0) {
                _cleanup_free_ char *text = NULL;
                unsigned long sec = 0;
                int r = take_str(p, v, path, &text);
                if (r < 0)
                        return r;
                if (!text || parse_duration(text, &sec) < 0)
                        return fail_at(p, v, "%s: \"%s\" is not a duration like 30s, 5m or 1h",
                                       path, text ? text : "");
                if (sec < MACHINE_COMMIT_WINDOW_MIN || sec > MACHINE_COMMIT_WINDOW_MAX)
                        return fail_at(p, v, "%s: %s is outside 30s to 24h", path, text);
                c->update_commit_window_sec = (unsigned)sec;
                return 0;
        }
        return FIELD_UNKNOWN;
}

/* One PEM Ed25519 public key and nothing else, else an error naming path. */
static int check_ed25519_pem(struct yparse *p, const yaml_node_t *where, const char *pem,
                             const char *path)
{
        char msg[200];
        int r = config_check_ed25519_pem(pem, msg, sizeof(msg));
        if (r == -ENOMEM)
                return cap_error_errno(p->err, -ENOMEM, "%s", p->name);
        return r < 0 ? fail_at(p, where, "%s: %s", path, msg) : 0;
}

/* Checks every key and builds c->update_trusted_keys: publicKey first, then trustedKeys. */
static int machine_updates_validate(struct yparse *p, struct machine_parse *mp, yaml_node_t *root)
{
        struct machine_config *c = mp->c;
        struct updates_parse *u = mp->updates;
        yaml_node_t *where = u->node ? u->node : root;
        int r;
        if (!c->update_commit_window_sec)
                c->update_commit_window_sec = MACHINE_COMMIT_WINDOW_DEFAULT;
        if (c->update_pubkey_pem &&
            (r = check_ed25519_pem(p, where, c->update_pubkey_pem, "updates.publicKey")) < 0)
                return r;
        c->update_trusted_keys = calloc(u->n_trusted + 2, sizeof(char *));
        if (!c->update_trusted_keys)
                return cap_error_errno(p->err, -ENOMEM, "%s", p->name);
        if (c->update_pubkey_pem &&
            !(c->update_trusted_keys[c->n_update_trusted_keys++] = strdup(c->update_pubkey_pem)))
                return cap_error_errno(p->err, -ENOMEM, "%s", p->name);
        for (size_t i = 0; i < u->n_trusted; i++) {
                char path[64];
                snprintf(path, sizeof(path), "updates.trustedKeys[%zu]", i);
                if ((r = check_ed25519_pem(p, where, u->trusted[i], path)) < 0)
                        return r;
                for (size_t j = 0; j < i; j++)
                        if (strcmp(u->trusted[j], u->trusted[i]) == 0)
                                return fail_at(p, where, "%s: the same key as [%zu]", path, j);
        }
        for (size_t i = 0; i < u->n_trusted; i++) {
                if (c->update_pubkey_pem && strcmp(c->update_pubkey_pem, u->trusted[i]) == 0)
                        continue; /* publicKey repeated in the list while migrating */
                c->update_trusted_keys[c->n_update_trusted_keys++] = TAKE_PTR(u->trusted[i]);
        }
        return 0;
}

static bool str_same(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool machine_config_updates_equal(const struct machine_config *a, const struct machine_config *b)
{
        unsigned wa = a->update_commit_window_sec ? a->update_commit_window_sec
                                                  : MACHINE_COMMIT_WINDOW_DEFAULT;
        unsigned wb = b->update_commit_window_sec ? b->update_commit_window_sec
                                                  : MACHINE_COMMIT_WINDOW_DEFAULT;
        if (wa != wb || a->n_update_trusted_keys != b->n_update_trusted_keys ||
            !str_same(a->update_pubkey_pem, b->update_pubkey_pem))
                return false;
        for (size_t i = 0; i < a->n_update_trusted_keys; i++)
                if (!str_same(a->update_trusted_keys[i], b->update_trusted_keys[i]))
                        return false;
        return true;
}

static int machine_field(struct yparse *p, const char *key, yaml_node_t *v, const char *path,
                         void *obj)
{
        struct machine_parse *mp = obj;
        struct machine_config *c = mp->c;
        if (strcmp(key, "version") == 0)
                return take_int(p, v, path, &c->version);
        if (strcmp(key, "hostname") == 0)
                return take_str(p, v, path, &c->hostname);
        if (strcmp(key, "api") == 0)
                return map_walk(p, v, path, machine_api_field, obj);
        if (strcmp(key, "pki") == 0) {
                mp->pki = v;
                return map_walk(p, v, path, machine_pki_field, obj);
        }
        if (strcmp(key, "registries") == 0)
                return map_walk(p, v, path, machine_registries_field, obj);
        if (strcmp(key, "network") == 0) {
                mp->network = v;
                return map_walk(p, v, path, machine_network_field, obj);
        }
        if (strcmp(key, "updates") == 0) {
                mp->updates->node = v;
                return map_walk(p, v, path, machine_updates_field, obj);
        }
        if (strcmp(key, "time") == 0)
                return map_walk(p, v, path, machine_time_field, obj);
        if (strcmp(key, "metrics") == 0)
                return map_walk(p, v, path, machine_metrics_field, obj);
        return FIELD_UNKNOWN;
}

static int machine_validate(struct yparse *p, struct machine_parse *mp, yaml_node_t *root)
{
        struct machine_config *c = mp->c;
        yaml_node_t *pki = mp->pki ? mp->pki : root;
        int r;
        if (c->version != 1)
                return fail_at(p, root, "version: unsupported version %d (expected 1)", c->version);
        if ((r = require(p, root, c->hostname, "hostname")) < 0)
                return r;
        if (name_check("hostname", c->hostname, p->err) < 0)
                return cap_error_prefix(p->err, "%s", p->name);
        if ((r = require(p, root, mp->pki, "pki")) < 0 ||
            (r = require(p, pki, c->ca_pem, "pki.ca")) < 0 ||
            (r = require(p, pki, c->cert_pem, "pki.cert")) < 0 ||
            (r = require(p, pki, c->key_pem, "pki.key")) < 0 ||
            (r = check_pem(p, pki, c->ca_pem, "pki.ca", "CERTIFICATE")) < 0 ||
            (r = check_pem(p, pki, c->cert_pem, "pki.cert", "CERTIFICATE")) < 0 ||
            (r = check_pem(p, pki, c->key_pem, "pki.key", "")) < 0 ||
            (r = machine_updates_validate(p, mp, root)) < 0)
                return r;
        if (c->registry_ca_pem) {
                char msg[1024];
                if (config_check_certs_pem(c->registry_ca_pem, msg, sizeof(msg)) < 0)
                        return fail_at(p, mp->registries, "registries.ca: %s", msg);
        }
        if (!c->listen && !(c->listen = strdup(DEFAULT_LISTEN)))
                return cap_error_errno(p->err, -ENOMEM, "%s", p->name);
        if (!c->metrics_listen && !(c->metrics_listen = strdup(MACHINE_METRICS_LISTEN)))
                return cap_error_errno(p->err, -ENOMEM, "%s", p->name);
        if (!c->dhcp && !c->address)
                return fail_at(p, mp->network ? mp->network : root,
                               "network.address: required when network.dhcp is false");
        if (c->address && c->gateway) {
                char a[INET6_ADDRSTRLEN + 1];
                snprintf(a, sizeof(a), "%.*s", (int)strcspn(c->address, "/"), c->address);
                if (ip_family(a) != ip_family(c->gateway))
                        return fail_at(p, mp->network,
                                       "network.gateway: \"%s\" is not the same family as "
                                       "network.address \"%s\"",
                                       c->gateway, c->address);
        }
        return 0;
}

int machine_config_parse(const char *name, const char *buf, size_t len, struct machine_config *out,
                         struct cap_error *err)
{
        memset(out, 0, sizeof(*out));
        out->version = 1;
        out->dhcp = true;
        struct yparse p = {.name = name ? name : "machine config", .err = err};
        int r = yparse_load(&p, buf, len);
        if (r < 0)
                return r;
        yaml_node_t *root = yaml_document_get_root_node(&p.doc);
        struct updates_parse up = {0};
        struct machine_parse mp = {.c = out, .updates = &up};
        r = map_walk(&p, root, "", machine_field, &mp);
        if (r >= 0)
                r = machine_validate(&p, &mp, root);
        free_strv(up.trusted, up.n_trusted);
        yaml_document_delete(&p.doc);
        if (r < 0)
                machine_config_free(out);
        return r;
}

int machine_config_load(const char *path, struct machine_config *out, struct cap_error *err)
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = config_read_file(path, &buf, &len, err);
        if (r < 0) {
                memset(out, 0, sizeof(*out));
                return r;
        }
        r = machine_config_parse(path, buf, len, out, err);
        explicit_bzero(buf, len);
        return r;
}

void machine_config_free(struct machine_config *c)
{
        if (!c)
                return;
        free(c->hostname);
        free(c->listen);
        free(c->metrics_listen);
        free(c->ca_pem);
        free(c->cert_pem);
        free_secret(c->key_pem);
        free_strv(c->insecure_registries, c->n_insecure_registries);
        free(c->registry_ca_pem);
        for (size_t i = 0; i < c->n_registry_auth; i++) {
                free(c->registry_auth[i].host);
                free(c->registry_auth[i].username);
                free_secret(c->registry_auth[i].password);
        }
        free(c->registry_auth);
        free(c->address);
        free(c->gateway);
        free_strv(c->dns, c->n_dns);
        free(c->update_pubkey_pem);
        free_strv(c->update_trusted_keys, c->n_update_trusted_keys);
        free_strv(c->ntp_servers, c->n_ntp_servers);
        free_strv(c->revoked_serials, c->n_revoked_serials);
        memset(c, 0, sizeof(*c));
}

/* ---- client config ---- */

struct client_parse {
        struct client_config *c;
        struct client_context *ctx; /* the context being parsed */
};

static int context_field(struct yparse *p, const char *key, yaml_node_t *v, const char *path,
                         void *obj)
{
        struct client_context *x = ((struct client_parse *)obj)->ctx;
        if (strcmp(key, "name") == 0)
                return take_str(p, v, path, &x->name);
        if (strcmp(key, "endpoint") == 0)
                return take_str(p, v, path, &x->endpoint);
        if (strcmp(key, "endpoints") == 0) {
                int r = take_strv(p, v, path, &x->endpoints, &x->n_endpoints);
                if (r >= 0 && x->n_endpoints == 0)
                        r = fail_at(p, v, "%s: must list at least one HOST:PORT", path);
                return r;
        }
        if (strcmp(key, "ca") == 0)
                return take_str(p, v, path, &x->ca_pem);
        if (strcmp(key, "cert") == 0)
                return take_str(p, v, path, &x->cert_pem);
        if (strcmp(key, "key") == 0)
                return take_str(p, v, path, &x->key_pem);
        return FIELD_UNKNOWN;
}

/* "HOST:PORT" or "[IPV6]:PORT": a host without commas or blanks, a port of 1-65535. */
static bool endpoint_ok(const char *e)
{
        const char *colon = strrchr(e, ':');
        if (!colon || colon == e || strpbrk(e, ", \t\n") || !colon[1] ||
            strspn(colon + 1, "0123456789") != strlen(colon + 1) || strlen(colon + 1) > 5)
                return false;
        long port = strtol(colon + 1, NULL, 10);
        return port >= 1 && port <= 65535;
}

static int endpoints_validate(struct yparse *p, const yaml_node_t *n,
                              const struct client_context *x, const char *path)
{
        if (x->endpoint && x->endpoints)
                return fail_at(p, n, "%s: endpoint and endpoints are both set; keep one", path);
        if (!x->endpoint && !x->endpoints)
                return fail_at(p, n, "missing required field \"%s.endpoint\" (or \"%s.endpoints\", "
                               "a list)", path, path);
        for (size_t i = 0; i < x->n_endpoints; i++) {
                if (!endpoint_ok(x->endpoints[i]))
                        return fail_at(p, n, "%s.endpoints[%zu]: \"%s\" is not HOST:PORT (one "
                                       "endpoint per item, a port of 1-65535)", path, i,
                                       x->endpoints[i]);
                for (size_t j = 0; j < i; j++)
                        if (strcmp(x->endpoints[j], x->endpoints[i]) == 0)
                                return fail_at(p, n, "%s.endpoints[%zu]: duplicate endpoint \"%s\"",
                                               path, i, x->endpoints[i]);
        }
        return 0;
}

static int context_validate(struct yparse *p, const yaml_node_t *n, const struct client_context *x,
                            const char *path)
{
        char f[5][320];
        const char *names[] = {"name", "endpoint", "ca", "cert", "key"};
        const void *vals[] = {x->name, x->endpoint, x->ca_pem, x->cert_pem, x->key_pem};
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
                snprintf(f[i], sizeof(f[i]), "%s.%s", path, names[i]);
                int r = i == 1 ? endpoints_validate(p, n, x, path) : require(p, n, vals[i], f[i]);
                if (r < 0)
                        return r;
        }
        if (name_check(f[0], x->name, p->err) < 0)
                return cap_error_prefix(p->err, "%s:%zu", p->name, (size_t)n->start_mark.line + 1);
        int r;
        if ((r = check_pem(p, n, x->ca_pem, f[2], "CERTIFICATE")) < 0 ||
            (r = check_pem(p, n, x->cert_pem, f[3], "CERTIFICATE")) < 0 ||
            (r = check_pem(p, n, x->key_pem, f[4], "")) < 0)
                return r;
        return 0;
}

static int client_contexts(struct yparse *p, yaml_node_t *v, const char *path,
                           struct client_parse *cp)
{
        struct client_config *c = cp->c;
        if (scalar_is_null(v))
                return 0;
        if (v->type != YAML_SEQUENCE_NODE)
                return fail_at(p, v, "%s: expected a list of contexts", path);
        size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
        c->contexts = calloc(n + 1, sizeof(*c->contexts));
        if (!c->contexts)
                return cap_error_errno(p->err, -ENOMEM, "%s", p->name);
        c->n_contexts = n;
        for (size_t i = 0; i < n; i++) {
                char item[64];
                snprintf(item, sizeof(item), "%s[%zu]", path, i);
                yaml_node_t *it = node_get(p, v->data.sequence.items.start[i]);
                cp->ctx = &c->contexts[i];
                int r = map_walk(p, it, item, context_field, cp);
                if (r >= 0)
                        r = context_validate(p, it, cp->ctx, item);
                if (r < 0)
                        return r;
                for (size_t j = 0; j < i; j++)
                        if (strcmp(c->contexts[j].name, cp->ctx->name) == 0)
                                return fail_at(p, it, "%s.name: duplicate context \"%s\"", item,
                                               cp->ctx->name);
        }
        return 0;
}

static int client_field(struct yparse *p, const char *key, yaml_node_t *v, const char *path,
                        void *obj)
{
        struct client_parse *cp = obj;
        if (strcmp(key, "currentContext") == 0)
                return take_str(p, v, path, &cp->c->current_context);
        if (strcmp(key, "contexts") == 0)
                return client_contexts(p, v, path, cp);
        return FIELD_UNKNOWN;
}

int client_config_parse(const char *name, const char *buf, size_t len, struct client_config *out,
                        struct cap_error *err)
{
        memset(out, 0, sizeof(*out));
        struct yparse p = {.name = name ? name : "client config", .err = err};
        int r = yparse_load(&p, buf, len);
        if (r < 0)
                return r;
        yaml_node_t *root = yaml_document_get_root_node(&p.doc);
        struct client_parse cp = {.c = out};
        r = map_walk(&p, root, "", client_field, &cp);
        if (r >= 0 && out->current_context && !client_config_find(out, out->current_context))
                r = fail_at(&p, root, "currentContext: no context named \"%s\" in contexts",
                            out->current_context);
        yaml_document_delete(&p.doc);
        if (r < 0)
                client_config_free(out);
        return r;
}

int client_config_load(const char *path, struct client_config *out, struct cap_error *err)
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = config_read_file(path, &buf, &len, err);
        if (r < 0) {
                memset(out, 0, sizeof(*out));
                return r;
        }
        r = client_config_parse(path, buf, len, out, err);
        explicit_bzero(buf, len);
        return r;
}

static void context_free(struct client_context *x)
{
        free(x->name);
        free(x->endpoint);
        free_strv(x->endpoints, x->n_endpoints);
        free(x->ca_pem);
        free(x->cert_pem);
        free_secret(x->key_pem);
        memset(x, 0, sizeof(*x));
}

void client_config_free(struct client_config *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < c->n_contexts; i++)
                context_free(&c->contexts[i]);
        free(c->contexts);
        free(c->current_context);
        memset(c, 0, sizeof(*c));
}

const struct client_context *client_config_find(const struct client_config *c, const char *name)
{
        if (!c)
                return NULL;
        if (!name)
                name = c->current_context;
        if (!name)
                return c->n_contexts == 1 ? &c->contexts[0] : NULL;
        for (size_t i = 0; i < c->n_contexts; i++)
                if (c->contexts[i].name && strcmp(c->contexts[i].name, name) == 0)
                        return &c->contexts[i];
        return NULL;
}

char *client_config_default_path(void)
{
        const char *env = getenv("CAPSULECONFIG");
        if (env && *env)
                return strdup(env);
        const char *home = getenv("HOME");
        if (!home || !*home) {
                struct passwd *pw = getpwuid(getuid());
                home = pw ? pw->pw_dir : NULL;
        }
        if (!home)
                return NULL;
        char *path = NULL;
        if (asprintf(&path, "%s/.config/capsule/config", home) < 0)
                return NULL;
        return path;
}

static int context_copy(struct client_context *dst, const struct client_context *src)
{
        memset(dst, 0, sizeof(*dst));
        const char *const from[] = {src->name, src->endpoint, src->ca_pem, src->cert_pem,
                                    src->key_pem};
        char **to[] = {&dst->name, &dst->endpoint, &dst->ca_pem, &dst->cert_pem, &dst->key_pem};
        for (size_t i = 0; i < ARRAY_SIZE(to); i++) {
                if (from[i] && !(*to[i] = strdup(from[i]))) {
                        context_free(dst);
                        return -ENOMEM;
                }
        }
        if (src->n_endpoints) {
                dst->endpoints = calloc(src->n_endpoints + 1, sizeof(char *));
                if (!dst->endpoints) {
                        context_free(dst);
                        return -ENOMEM;
                }
                dst->n_endpoints = src->n_endpoints;
                for (size_t i = 0; i < src->n_endpoints; i++)
                        if (!(dst->endpoints[i] = strdup(src->endpoints[i]))) {
                                context_free(dst);
                                return -ENOMEM;
                        }
        }
        return 0;
}

char *client_context_endpoints_line(const struct client_context *x)
{
        if (!x->n_endpoints)
                return x->endpoint ? strdup(x->endpoint) : NULL;
        size_t len = 1;
        for (size_t i = 0; i < x->n_endpoints; i++)
                len += strlen(x->endpoints[i]) + 1;
        char *line = calloc(1, len);
        for (size_t i = 0; line && i < x->n_endpoints; i++) {
                if (i)
                        strcat(line, ",");
                strcat(line, x->endpoints[i]);
        }
        return line;
}

int client_config_add(struct client_config *c, const struct client_context *ctx, bool replace,
                      struct cap_error *err)
{
        int r = name_check("context name", ctx->name, err);
        if (r < 0)
                return r;
        struct client_context copy;
        if (context_copy(&copy, ctx) < 0)
                return cap_error_errno(err, -ENOMEM, "add context");
        struct client_context *old = (struct client_context *)client_config_find(c, ctx->name);
        if (old) {
                if (!replace) {
                        context_free(&copy);
                        return cap_error_set(err, -EEXIST, CAP_ALREADY_EXISTS,
                                             "a context named \"%s\" already exists", ctx->name);
                }
                context_free(old);
                *old = copy;
                return 0;
        }
        struct client_context *grown = realloc(c->contexts, (c->n_contexts + 1) * sizeof(*grown));
        if (!grown) {
                context_free(&copy);
                return cap_error_errno(err, -ENOMEM, "add context");
        }
        c->contexts = grown;
        c->contexts[c->n_contexts++] = copy;
        if (!c->current_context && !(c->current_context = strdup(ctx->name)))
                return cap_error_errno(err, -ENOMEM, "add context");
        return 0;
}

int client_config_use(struct client_config *c, const char *name, struct cap_error *err)
{
        bool found = false;
        for (size_t i = 0; i < c->n_contexts; i++)
                found = found || strcmp(c->contexts[i].name, name) == 0;
        if (!found) {
                char known[512] = "";
                size_t off = 0;
                for (size_t i = 0; i < c->n_contexts && off < sizeof(known); i++)
                        off += (size_t)snprintf(known + off, sizeof(known) - off, "%s%s",
                                                i ? ", " : "", c->contexts[i].name);
                return cap_error_set(err, -ENOENT, CAP_NOT_FOUND,
                                     "no context named \"%s\" (known: %s)", name,
                                     c->n_contexts ? known : "none");
        }
        char *dup = strdup(name);
        if (!dup)
                return cap_error_errno(err, -ENOMEM, "use context");
        free(c->current_context);
        c->current_context = dup;
        return 0;
}

/* ---- emitting ---- */

struct yout {
        yaml_emitter_t e;
        bool failed;
        char *buf;
        size_t len, cap;
};

static int yout_write(void *data, unsigned char *bytes, size_t size)
{
        struct yout *o = data;
        if (o->len + size + 1 > o->cap) {
                size_t cap = o->cap ? o->cap * 2 : 4096;
                while (cap < o->len + size + 1)
                        cap *= 2;
                char *b = realloc(o->buf, cap);
                if (!b)
                        return 0;
                o->buf = b;
                o->cap = cap;
        }
        memcpy(o->buf + o->len, bytes, size);
        o->len += size;
        o->buf[o->len] = '\0';
        return 1;
}

static void yout_emit(struct yout *o, yaml_event_t *ev, int ok)
{
        if (o->failed)
                return;
        if (!ok || !yaml_emitter_emit(&o->e, ev))
                o->failed = true;
}

/* True for strings a YAML reader might take for something other than a string. */
static bool needs_quotes(const char *s)
{
        static const char *const words[] = {"true", "false", "yes", "no", "on",
                                            "off",  "null",  "y",   "n"};
        if (!name_is_valid(s) || strspn(s, "0123456789-") == strlen(s))
                return true;
        for (size_t i = 0; i < ARRAY_SIZE(words); i++)
                if (strcmp(s, words[i]) == 0)
                        return true;
        return false;
}

static void emit_scalar(struct yout *o, const char *s, yaml_scalar_style_t style)
{
        yaml_event_t ev;
        int ok = yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1,
                                              1, style);
        yout_emit(o, &ev, ok);
}

/* Strings: PEM (anything multi-line) as a literal block, names plain, the rest double-quoted. */
static void emit_str(struct yout *o, const char *s)
{
        if (strchr(s, '\n'))
                emit_scalar(o, s, YAML_LITERAL_SCALAR_STYLE);
        else
                emit_scalar(o, s,
                            needs_quotes(s) ? YAML_DOUBLE_QUOTED_SCALAR_STYLE
                                            : YAML_PLAIN_SCALAR_STYLE);
}

static void emit_key_str(struct yout *o, const char *key, const char *value)
{
        if (!value)
                return;
        emit_scalar(o, key, YAML_PLAIN_SCALAR_STYLE);
        emit_str(o, value);
}

static void emit_map_start(struct yout *o)
{
        yaml_event_t ev;
        yout_emit(
            o, &ev,
            yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE));
}

static void emit_map_end(struct yout *o)
{
        yaml_event_t ev;
        yout_emit(o, &ev, yaml_mapping_end_event_initialize(&ev));
}

static void emit_strv(struct yout *o, const char *key, char **v, size_t n)
{
        if (n == 0)
                return;
        yaml_event_t ev;
        emit_scalar(o, key, YAML_PLAIN_SCALAR_STYLE);
        yout_emit(
            o, &ev,
            yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE));
        for (size_t i = 0; i < n; i++)
                emit_str(o, v[i]);
        yout_emit(o, &ev, yaml_sequence_end_event_initialize(&ev));
}

static int yout_begin(struct yout *o)
{
        memset(o, 0, sizeof(*o));
        if (!yaml_emitter_initialize(&o->e))
                return -ENOMEM;
        yaml_emitter_set_output(&o->e, yout_write, o);
        yaml_emitter_set_unicode(&o->e, 1);
        yaml_emitter_set_width(&o->e, -1);
        yaml_event_t ev;
        yout_emit(o, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
        yout_emit(o, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1));
        emit_map_start(o);
        return 0;
}

/* Finishes the document; on success hands the text to *out. */
static int yout_end(struct yout *o, char **out, size_t *len, struct cap_error *err)
{
        yaml_event_t ev;
        emit_map_end(o);
        yout_emit(o, &ev, yaml_document_end_event_initialize(&ev, 1));
        yout_emit(o, &ev, yaml_stream_end_event_initialize(&ev));
        if (!o->failed && !yaml_emitter_flush(&o->e))
                o->failed = true;
        int r = 0;
        if (o->failed || !o->buf)
                r = cap_error_set(err, -EINVAL, CAP_INTERNAL, "format YAML: %s",
                                  o->e.problem ? o->e.problem : "out of memory");
        yaml_emitter_delete(&o->e);
        if (r < 0) {
                free_secret(o->buf);
                return r;
        }
        *out = o->buf;
        *len = o->len;
        return 0;
}

/* updates: publicKey as read (older configs), the other trusted keys, a non-default window. */
static void emit_updates(struct yout *o, const struct machine_config *c)
{
        unsigned window = c->update_commit_window_sec;
        bool custom_window = window && window != MACHINE_COMMIT_WINDOW_DEFAULT;
        size_t n_list = 0;
        for (size_t i = 0; i < c->n_update_trusted_keys; i++)
                n_list += !str_same(c->update_trusted_keys[i], c->update_pubkey_pem);
        if (!c->update_pubkey_pem && !n_list && !custom_window)
                return;
        emit_scalar(o, "updates", YAML_PLAIN_SCALAR_STYLE);
        emit_map_start(o);
        emit_key_str(o, "publicKey", c->update_pubkey_pem);
        if (n_list) {
                yaml_event_t ev;
                emit_scalar(o, "trustedKeys", YAML_PLAIN_SCALAR_STYLE);
                yout_emit(o, &ev,
                          yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                               YAML_BLOCK_SEQUENCE_STYLE));
                for (size_t i = 0; i < c->n_update_trusted_keys; i++)
                        if (!str_same(c->update_trusted_keys[i], c->update_pubkey_pem))
                                emit_str(o, c->update_trusted_keys[i]);
                yout_emit(o, &ev, yaml_sequence_end_event_initialize(&ev));
        }
        if (custom_window) {
                char text[32];
                format_duration(window, text, sizeof(text));
                emit_key_str(o, "commitWindow", text);
        }
        emit_map_end(o);
}

/* metrics: only what differs from the defaults. */
static void emit_metrics(struct yout *o, const struct machine_config *c)
{
        bool listen = c->metrics_listen && strcmp(c->metrics_listen, MACHINE_METRICS_LISTEN) != 0;
        if (!c->metrics_off && !listen && !c->metrics_insecure_http)
                return;
        emit_scalar(o, "metrics", YAML_PLAIN_SCALAR_STYLE);
        emit_map_start(o);
        if (c->metrics_off) {
                emit_scalar(o, "enabled", YAML_PLAIN_SCALAR_STYLE);
                emit_scalar(o, "false", YAML_PLAIN_SCALAR_STYLE);
        }
        if (listen)
                emit_key_str(o, "listen", c->metrics_listen);
        if (c->metrics_insecure_http) {
                emit_scalar(o, "insecureHTTP", YAML_PLAIN_SCALAR_STYLE);
                emit_scalar(o, "true", YAML_PLAIN_SCALAR_STYLE);
        }
        emit_map_end(o);
}

int machine_config_format(const struct machine_config *c, char **out, size_t *len,
                          struct cap_error *err)
{
        struct yout o;
        if (yout_begin(&o) < 0)
                return cap_error_errno(err, -ENOMEM, "format machine config");
        char version[16];
        snprintf(version, sizeof(version), "%d", c->version ? c->version : 1);
        emit_scalar(&o, "version", YAML_PLAIN_SCALAR_STYLE);
        emit_scalar(&o, version, YAML_PLAIN_SCALAR_STYLE);
        emit_key_str(&o, "hostname", c->hostname);
        emit_scalar(&o, "api", YAML_PLAIN_SCALAR_STYLE);
        emit_map_start(&o);
        emit_key_str(&o, "listen", c->listen ? c->listen : DEFAULT_LISTEN);
        emit_map_end(&o);
        emit_scalar(&o, "pki", YAML_PLAIN_SCALAR_STYLE);
        emit_map_start(&o);
        emit_key_str(&o, "ca", c->ca_pem);
        emit_key_str(&o, "cert", c->cert_pem);
        emit_key_str(&o, "key", c->key_pem);
        emit_strv(&o, "revoked", c->revoked_serials, c->n_revoked_serials);
        emit_map_end(&o);
        if (c->n_insecure_registries || c->registry_ca_pem || c->n_registry_auth) {
                emit_scalar(&o, "registries", YAML_PLAIN_SCALAR_STYLE);
                emit_map_start(&o);
                if (c->n_insecure_registries)
                        emit_strv(&o, "insecure", c->insecure_registries, c->n_insecure_registries);
                emit_key_str(&o, "ca", c->registry_ca_pem);
                if (c->n_registry_auth) {
                        emit_scalar(&o, "auth", YAML_PLAIN_SCALAR_STYLE);
                        yaml_event_t ev;
                        yout_emit(&o, &ev,
                                  yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                                       YAML_BLOCK_SEQUENCE_STYLE));
                        for (size_t i = 0; i < c->n_registry_auth; i++) {
                                emit_map_start(&o);
                                emit_key_str(&o, "host", c->registry_auth[i].host);
                                emit_key_str(&o, "username", c->registry_auth[i].username);
                                emit_key_str(&o, "password", c->registry_auth[i].password);
                                emit_map_end(&o);
                        }
                        yout_emit(&o, &ev, yaml_sequence_end_event_initialize(&ev));
                }
                emit_map_end(&o);
        }
        emit_scalar(&o, "network", YAML_PLAIN_SCALAR_STYLE);
        emit_map_start(&o);
        emit_scalar(&o, "dhcp", YAML_PLAIN_SCALAR_STYLE);
        emit_scalar(&o, c->dhcp ? "true" : "false", YAML_PLAIN_SCALAR_STYLE);
        emit_key_str(&o, "address", c->address);
        emit_key_str(&o, "gateway", c->gateway);
        emit_strv(&o, "dns", c->dns, c->n_dns);
        emit_map_end(&o);
        emit_updates(&o, c);
        if (c->ntp_servers_set) {
                emit_scalar(&o, "time", YAML_PLAIN_SCALAR_STYLE);
                emit_map_start(&o);
                emit_scalar(&o, "servers", YAML_PLAIN_SCALAR_STYLE);
                yaml_event_t ev;
                yout_emit(&o, &ev,
                          yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                               YAML_FLOW_SEQUENCE_STYLE));
                for (size_t i = 0; i < c->n_ntp_servers; i++)
                        emit_str(&o, c->ntp_servers[i]);
                yout_emit(&o, &ev, yaml_sequence_end_event_initialize(&ev));
                emit_map_end(&o);
        }
        emit_metrics(&o, c);
        int r = yout_end(&o, out, len, err);
        if (r < 0)
                return r;
        struct machine_config check;
        r = machine_config_parse("machine config", *out, *len, &check, err);
        machine_config_free(&check);
        if (r < 0) {
                free_secret(*out);
                *out = NULL;
                return cap_error_prefix(err, "refusing to write an invalid config");
        }
        return 0;
}

int client_config_format(const struct client_config *c, char **out, size_t *len,
                         struct cap_error *err)
{
        struct yout o;
        if (yout_begin(&o) < 0)
                return cap_error_errno(err, -ENOMEM, "format client config");
        emit_key_str(&o, "currentContext", c->current_context);
        emit_scalar(&o, "contexts", YAML_PLAIN_SCALAR_STYLE);
        yaml_event_t ev;
        yout_emit(
            &o, &ev,
            yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE));
        for (size_t i = 0; i < c->n_contexts; i++) {
                const struct client_context *x = &c->contexts[i];
                emit_map_start(&o);
                emit_key_str(&o, "name", x->name);
                emit_key_str(&o, "endpoint", x->endpoint);
                emit_strv(&o, "endpoints", x->endpoints, x->n_endpoints);
                emit_key_str(&o, "ca", x->ca_pem);
                emit_key_str(&o, "cert", x->cert_pem);
                emit_key_str(&o, "key", x->key_pem);
                emit_map_end(&o);
        }
        yout_emit(&o, &ev, yaml_sequence_end_event_initialize(&ev));
        int r = yout_end(&o, out, len, err);
        if (r < 0)
                return r;
        struct client_config check;
        r = client_config_parse("client config", *out, *len, &check, err);
        client_config_free(&check);
        if (r < 0) {
                free_secret(*out);
                *out = NULL;
                return cap_error_prefix(err, "refusing to write an invalid config");
        }
        return 0;
}

/* ---- files ---- */

int config_mkdir_p(const char *dir, unsigned int mode, struct cap_error *err)
{
        int r = mkdir_p(dir, (mode_t)mode);
        if (r < 0)
                return cap_error_errno(err, r, "mkdir %s", dir);
        struct stat st;
        if (stat(dir, &st) < 0)
                return cap_error_errno(err, -errno, "stat %s", dir);
        if (!S_ISDIR(st.st_mode))
                return cap_error_set(err, -ENOTDIR, CAP_FAILED_PRECONDITION,
                                     "%s exists and is not a directory", dir);
        return 0;
}

static int write_all(int fd, const char *data, size_t len)
{
        while (len > 0) {
                ssize_t n = write(fd, data, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                data += n;
                len -= (size_t)n;
        }
        return 0;
}

static int fsync_dir(const char *dir)
{
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return fsync(fd) < 0 ? -errno : 0;
}

int config_write_file_atomic(const char *path, const void *data, size_t len, unsigned int mode,
                             struct cap_error *err)
{
        const char *slash = strrchr(path, '/');
        _cleanup_free_ char *dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
        const char *base = slash ? slash + 1 : path;
        if (!dir)
                return cap_error_errno(err, -ENOMEM, "write %s", path);
        if (!*dir) {
                free(dir);
                if (!(dir = strdup("/")))
                        return cap_error_errno(err, -ENOMEM, "write %s", path);
        }
        if (!*base)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: not a file name",
                                     path);
        _cleanup_free_ char *tmp = NULL;
        if (asprintf(&tmp, "%s/.%s.tmp-XXXXXX", dir, base) < 0)
                return cap_error_errno(err, -ENOMEM, "write %s", path);
        int fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "create a temporary file in %s", dir);
        int r = 0;
        const char *step = "chmod";
        if (fchmod(fd, mode) < 0)
                r = -errno;
        if (r == 0 && (step = "write", r = write_all(fd, data, len)) == 0 &&
            (step = "fsync", fsync(fd) < 0))
                r = -errno;
        if (close(fd) < 0 && r == 0) {
                step = "close";
                r = -errno;
        }
        if (r == 0 && (step = "rename", rename(tmp, path) < 0))
                r = -errno;
        if (r < 0) {
                unlink(tmp);
                return cap_error_errno(err, r, "write %s: %s", path, step);
        }
        r = fsync_dir(dir);
        if (r < 0)
                return cap_error_errno(err, r, "write %s: fsync %s", path, dir);
        return 0;
}

int machine_config_save(const char *path, const struct machine_config *cfg, struct cap_error *err)
{
        char *text = NULL;
        size_t len = 0;
        int r = machine_config_format(cfg, &text, &len, err);
        if (r < 0)
                return cap_error_prefix(err, "save %s", path);
        r = config_write_file_atomic(path, text, len, 0600, err);
        free_secret(text);
        return r;
}

int client_config_save(const char *path, const struct client_config *cfg, struct cap_error *err)
{
        char *text = NULL;
        size_t len = 0;
        int r = client_config_format(cfg, &text, &len, err);
        if (r < 0)
                return cap_error_prefix(err, "save %s", path);
        const char *slash = strrchr(path, '/');
        if (slash && slash != path) {
                _cleanup_free_ char *dir = strndup(path, (size_t)(slash - path));
                if (!dir)
                        r = cap_error_errno(err, -ENOMEM, "save %s", path);
                else
                        r = config_mkdir_p(dir, 0700, err);
        }
        if (r >= 0)
                r = config_write_file_atomic(path, text, len, 0600, err);
        free_secret(text);
        return r;
}
