/* Manifest parsing and validation (see manifest.h).
 *
 * libyaml's event parser feeds a small tree builder (aliases are refused, so no "billion laughs";
 * depth and node count are capped), then each document's tree is converted into a spec with type
 * checks, and the spec goes through the same semantic validator that checks specs arriving over
 * gRPC (manifest_workload_validate). A "source map" remembers the line and the YAML index of every
 * converted item, so validator errors still point at the right line. Rendering back to YAML and
 * normalisation live in manifest-render.c. */
#include "manifest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "cleanup.h"
#include "names.h"

#define MAX_DEPTH 32
#define MAX_NODES 200000 /* per document */
#define MAX_STRING 65536 /* any single string value */
#define MAX_LIST 1024    /* command, args, env */
#define MAX_PORTS 256
#define MAX_MOUNTS 64
#define MAX_IMAGE 1024
#define MAX_PATH 4096
#define MAX_USER 256

/* ---------------------------------------------------------------------------------------------
 * Error list */

void manifest_errors_init(struct manifest_errors *errs)
{
        memset(errs, 0, sizeof(*errs));
}

void manifest_errors_free(struct manifest_errors *errs)
{
        if (!errs)
                return;
        for (size_t i = 0; i < errs->n; i++)
                free(errs->msgs[i]);
        free(errs->msgs);
        memset(errs, 0, sizeof(*errs));
}

static void errors_vadd(struct manifest_errors *errs, const char *fmt, va_list ap)
{
        if (!errs)
                return;
        if (errs->n >= MANIFEST_MAX_ERRORS) {
                errs->dropped++;
                return;
        }
        if (errs->n == errs->cap) {
                size_t cap = errs->cap ? errs->cap * 2 : 8;
                char **m = realloc(errs->msgs, cap * sizeof(*m));
                if (!m) {
                        errs->dropped++;
                        return;
                }
                errs->msgs = m;
                errs->cap = cap;
        }
        char *s = NULL;
        if (vasprintf(&s, fmt, ap) < 0) {
                errs->dropped++;
                return;
        }
        errs->msgs[errs->n++] = s;
}

void manifest_errors_add(struct manifest_errors *errs, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        errors_vadd(errs, fmt, ap);
        va_end(ap);
}

size_t manifest_errors_count(const struct manifest_errors *errs)
{
        return errs ? errs->n + errs->dropped : 0;
}

void manifest_errors_print(const struct manifest_errors *errs, FILE *f)
{
        for (size_t i = 0; i < errs->n; i++)
                fprintf(f, "%s\n", errs->msgs[i]);
        if (errs->dropped)
                fprintf(f, "... and %zu more errors\n", errs->dropped);
}

char *manifest_errors_join(const struct manifest_errors *errs, const char *sep)
{
        size_t len = 1, seplen = strlen(sep);
        for (size_t i = 0; i < errs->n; i++)
                len += strlen(errs->msgs[i]) + seplen;
        len += 64;
        char *s = malloc(len), *p = s;
        if (!s)
                return NULL;
        *p = '\0';
        for (size_t i = 0; i < errs->n; i++)
                p += sprintf(p, "%s%s", i ? sep : "", errs->msgs[i]);
        if (errs->dropped)
                sprintf(p, "%s... and %zu more errors", errs->n ? sep : "", errs->dropped);
        return s;
}

const char *manifest_kind_name(enum manifest_kind kind)
{
        switch (kind) {
        case MANIFEST_KIND_CONTAINER:
                return "Container";
        case MANIFEST_KIND_MICROVM:
                return "MicroVM";
        case MANIFEST_KIND_VOLUME:
                return "Volume";
        }
        return "unknown";
}

int manifest_parse_quantity(const char *text, uint64_t *bytes, struct cap_error *err)
{
        return quantity_parse_bytes(text, bytes, err);
}

int manifest_parse_cpus(const char *text, double *cpus, struct cap_error *err)
{
        return quantity_parse_cpus(text, cpus, err);
}

/* ---------------------------------------------------------------------------------------------
 * YAML tree: built from libyaml events, one document at a time. */

enum ynode_type { YN_SCALAR, YN_SEQ, YN_MAP };

struct ynode {
        enum ynode_type type;
        bool plain; /* scalar written plain and untagged: may mean null, a boolean or a number */
        int line;
        char *str; /* scalar text (NUL-terminated; may contain NULs, see len) */
        size_t len;
        struct ynode **kids; /* SEQ: items; MAP: key, value, key, value, ... */
        size_t n, cap;
};

static void ynode_free(struct ynode *n)
{
        if (!n)
                return;
        for (size_t i = 0; i < n->n; i++)
                ynode_free(n->kids[i]);
        free(n->kids);
        free(n->str);
        free(n);
}

static int ynode_append(struct ynode *parent, struct ynode *kid)
{
        if (parent->n == parent->cap) {
                size_t cap = parent->cap ? parent->cap * 2 : 4;
                struct ynode **k = realloc(parent->kids, cap * sizeof(*k));
                if (!k)
                        return -ENOMEM;
                parent->kids = k;
                parent->cap = cap;
        }
        parent->kids[parent->n++] = kid;
        return 0;
}

static bool ynode_is_null(const struct ynode *n)
{
        if (n->type != YN_SCALAR || !n->plain)
                return false;
        return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
               strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

static bool str_is_bool(const char *s, bool *v)
{
        static const char *const t[] = {"true", "True", "TRUE"}, *const f[] = {"false", "False",
                                                                               "FALSE"};
        for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
                if (strcmp(s, t[i]) == 0)
                        return *v = true, true;
                if (strcmp(s, f[i]) == 0)
                        return *v = false, true;
        }
        return false;
}

static bool str_is_number(const char *s)
{
        char *end;
        if (!*s)
                return false;
        errno = 0;
        (void)strtod(s, &end);
        return *end == '\0' && !strchr(s, 'x') && !strchr(s, 'X') && !strpbrk(s, "nN");
}

/* "a mapping", "a list", "null", "a boolean", "a number" or "a string": for type errors. */
static const char *ynode_what(const struct ynode *n)
{
        bool b;
        if (n->type == YN_MAP)
                return "a mapping";
        if (n->type == YN_SEQ)
                return "a list";
        if (ynode_is_null(n))
                return "null";
        if (n->plain && str_is_bool(n->str, &b))
                return "a boolean";
        if (n->plain && str_is_number(n->str))
                return "a number";
        return "a string";
}

/* ---------------------------------------------------------------------------------------------
 * Conversion context and typed getters */

struct conv {
        const char *file;
        int doc;
        int doc_line;
        struct manifest_errors *errs;
        int nerr;
        bool oom;
};

static void cfail(struct conv *c, int line, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void cfail(struct conv *c, int line, const char *path, const char *fmt, ...)
{
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        manifest_errors_add(c->errs, "%s: document %d (line %d): %s%s%s", c->file, c->doc,
                            line ? line : c->doc_line, path ? path : "", path && *path ? ": " : "",
                            msg);
        c->nerr++;
}

static char *cstrdup(struct conv *c, const char *s)
{
        char *d = strdup(s);
        if (!d && !c->oom) {
                c->oom = true;
                cfail(c, 0, NULL, "out of memory");
        }
        return d;
}

/* Prints a scalar for messages, bounded and with quotes. */
#define SFMT "\"%.60s%s\""
#define SARG(n) (n)->str, ((n)->len > 60 ? "..." : "")

/* A string value; returns a malloc'd copy or NULL after reporting. */
static char *get_string(struct conv *c, const struct ynode *n, const char *path, size_t max)
{
        if (n->type != YN_SCALAR || ynode_is_null(n)) {
                cfail(c, n->line, path, "expected a string, got %s", ynode_what(n));
                return NULL;
        }
        if (memchr(n->str, '\0', n->len)) {
                cfail(c, n->line, path, "must not contain NUL characters");
                return NULL;
        }
        if (n->len > max) {
                cfail(c, n->line, path, "longer than %zu bytes", max);
                return NULL;
        }
        return cstrdup(c, n->str);
}

static int get_bool(struct conv *c, const struct ynode *n, const char *path, bool *out)
{
        if (n->type == YN_SCALAR && n->plain && str_is_bool(n->str, out))
                return 0;
        cfail(c, n->line, path, "expected true or false, got %s", ynode_what(n));
        return -EINVAL;
}

/* An unsigned integer written plain (8080, not "8080"). */
static int get_uint32(struct conv *c, const struct ynode *n, const char *path, uint32_t *out)
{
        if (n->type != YN_SCALAR || !n->plain || n->len == 0 ||
            strspn(n->str, "0123456789") != n->len) {
                cfail(c, n->line, path, "expected a number, got %s", ynode_what(n));
                return -EINVAL;
        }
        if (n->len > 9) {
                cfail(c, n->line, path, SFMT ": too large", SARG(n));
                return -EINVAL;
        }
        *out = (uint32_t)strtoul(n->str, NULL, 10);
        return 0;
}

/* A quantity may be written as a number (1, 0.5, 268435456) or a string ("256Mi", "500m"). */
static const char *get_quantity_text(struct conv *c, const struct ynode *n, const char *path)
{
        if (n->type != YN_SCALAR || ynode_is_null(n) || memchr(n->str, '\0', n->len)) {
                cfail(c, n->line, path, "expected a quantity, got %s", ynode_what(n));
                return NULL;
        }
        return n->str;
}

static int levenshtein_close(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b);
        if (la > 32 || lb > 32)
                return 0;
        unsigned d[33][33];
        for (size_t i = 0; i <= la; i++)
                d[i][0] = (unsigned)i;
        for (size_t j = 0; j <= lb; j++)
                d[0][j] = (unsigned)j;
        for (size_t i = 1; i <= la; i++)
                for (size_t j = 1; j <= lb; j++) {
                        unsigned sub = d[i - 1][j - 1] + ((a[i - 1] | 32) != (b[j - 1] | 32));
                        unsigned del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
                        d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
                }
        return d[la][lb] <= 2;
}

/* Walks a mapping: reports non-string, duplicate and unknown keys (with a "did you mean" hint),
 * and stores the value node of each known key in vals[] (NULL when absent). */
static void map_fields(struct conv *c, const struct ynode *map, const char *path,
                       const char *const *keys, size_t nkeys, const struct ynode **vals)
{
        for (size_t k = 0; k < nkeys; k++)
                vals[k] = NULL;
        for (size_t i = 0; i + 1 < map->n; i += 2) {
                const struct ynode *key = map->kids[i];
                char kpath[256];
                if (key->type != YN_SCALAR || ynode_is_null(key) || memchr(key->str, 0, key->len)) {
                        cfail(c, key->line, path, "keys must be strings, got %s", ynode_what(key));
                        continue;
                }
                snprintf(kpath, sizeof(kpath), "%s%s%.60s", path, *path ? "." : "", key->str);
                size_t k = 0;
                while (k < nkeys && strcmp(keys[k], key->str) != 0)
                        k++;
                if (k < nkeys) {
                        if (vals[k])
                                cfail(c, key->line, kpath, "duplicate key (first at line %d)",
                                      vals[k]->line);
                        else
                                vals[k] = map->kids[i + 1];
                        continue;
                }
                const char *hint = NULL;
                for (size_t j = 0; j < nkeys && !hint; j++)
                        if (levenshtein_close(key->str, keys[j]))
                                hint = keys[j];
                if (hint)
                        cfail(c, key->line, kpath, "unknown field (did you mean \"%s\"?)", hint);
                else
                        cfail(c, key->line, kpath, "unknown field");
        }
}

/* ---------------------------------------------------------------------------------------------
 * Workload fields, the source map, and the shared validator */

enum wfield {
        WF_KIND,
        WF_NAME,
        WF_IMAGE,
        WF_COMMAND,
        WF_ARGS,
        WF_ENV,
        WF_PORTS,
        WF_MOUNTS,
        WF_RESTART,
        WF_RESOURCES,
        WF_PULL,
        WF_WORKDIR,
        WF_USER,
        WF_PRIVILEGED,
        WF_ACCEL,
        WF_DISK,
        WF__KEYS, /* fields below are not top-level keys */
        WF_CPUS = WF__KEYS,
        WF_MEMORY,
        WF__N,
};

static const char *const wfield_names[WF__N] = {
    [WF_KIND] = "kind",           [WF_NAME] = "name",
    [WF_IMAGE] = "image",         [WF_COMMAND] = "command",
    [WF_ARGS] = "args",           [WF_ENV] = "env",
    [WF_PORTS] = "ports",         [WF_MOUNTS] = "mounts",
    [WF_RESTART] = "restart",     [WF_RESOURCES] = "resources",
    [WF_PULL] = "pullPolicy",     [WF_WORKDIR] = "workingDir",
    [WF_USER] = "user",           [WF_PRIVILEGED] = "privileged",
    [WF_ACCEL] = "accel",         [WF_DISK] = "disk",
    [WF_CPUS] = "resources.cpus", [WF_MEMORY] = "resources.memory",
};

static bool wfield_indexed(enum wfield f)
{
        return f == WF_COMMAND || f == WF_ARGS || f == WF_PORTS || f == WF_MOUNTS;
}

/* Where the validator reports: paths and lines depend on whether the spec came from YAML. */
struct vsink {
        void *ud;
        void (*path)(void *ud, enum wfield f, size_t idx, const char *sub, char *buf, size_t size);
        void (*emit)(void *ud, enum wfield f, size_t idx, const char *text);
        int nerr;
};

static void vfail(struct vsink *s, enum wfield f, size_t idx, const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void vfail(struct vsink *s, enum wfield f, size_t idx, const char *sub, const char *fmt, ...)
{
        char path[192], msg[768], text[1024];
        va_list ap;
        s->path(s->ud, f, idx, sub, path, sizeof(path));
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(text, sizeof(text), "%s: %s", path, msg);
        s->emit(s->ud, f, idx, text);
        s->nerr++;
}

static void vfail_name(struct vsink *s, enum wfield f, size_t idx, const char *sub,
                       const char *value)
{
        char path[192];
        struct cap_error e = {0};
        s->path(s->ud, f, idx, sub, path, sizeof(path));
        if (!value || !*value) {
                vfail(s, f, idx, sub, "required field is missing");
                return;
        }
        if (name_check(path, value, &e) == 0)
                return;
        s->emit(s->ud, f, idx, e.msg);
        s->nerr++;
}

static bool has_control(const char *s, bool space_too)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f || (space_too && *s == ' '))
                        return true;
        return false;
}

static bool ip_is_valid(const char *s)
{
        unsigned char buf[16];
        return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* "tcp" for "" so that comparisons see one protocol per meaning. */
static const char *proto_of(const Capsule__V1__PortMapping *p)
{
        return p->protocol && *p->protocol ? p->protocol : "tcp";
}

static bool host_ips_overlap(const char *a, const char *b)
{
        a = a ? a : "";
        b = b ? b : "";
        return !*a || !*b || strcmp(a, b) == 0;
}

static bool ports_clash(const Capsule__V1__PortMapping *a, const Capsule__V1__PortMapping *b)
{
        return a->host_port == b->host_port && strcasecmp(proto_of(a), proto_of(b)) == 0 &&
               host_ips_overlap(a->host_ip, b->host_ip);
}

/* Compares mount paths ignoring repeated and trailing slashes. */
static bool same_path(const char *a, const char *b)
{
        for (;;) {
                while (*a == '/' && (a[1] == '/' || a[1] == '\0'))
                        a++;
                while (*b == '/' && (b[1] == '/' || b[1] == '\0'))
                        b++;
                if (*a != *b)
                        return false;
                if (!*a)
                        return true;
                a++, b++;
        }
}

/* Returns a reason, or NULL if path is an acceptable absolute path. */
static const char *bad_abs_path(const char *p)
{
        if (p[0] != '/')
                return "must be an absolute path";
        if (strlen(p) > MAX_PATH)
                return "too long";
        if (has_control(p, false))
                return "must not contain control characters";
        for (const char *s = p; (s = strstr(s, "..")); s += 2)
                if (s[-1] == '/' && (s[2] == '/' || s[2] == '\0'))
                        return "must not contain \"..\"";
        return NULL;
}

static void validate_strings(struct vsink *s, enum wfield f, char **v, size_t n)
{
        if (n > MAX_LIST)
                vfail(s, f, 0, NULL, "more than %d entries", MAX_LIST);
        for (size_t i = 0; i < n && i < MAX_LIST; i++)
                if (!v[i])
                        vfail(s, f, i, NULL, "null string");
                else if (strlen(v[i]) > MAX_STRING)
                        vfail(s, f, i, NULL, "longer than %d bytes", MAX_STRING);
}

static void validate_env(struct vsink *s, const Capsule__V1__WorkloadSpec *w)
{
        if (w->n_env > MAX_LIST)
                vfail(s, WF_ENV, 0, NULL, "more than %d entries", MAX_LIST);
        for (size_t i = 0; i < w->n_env && i < MAX_LIST; i++) {
                const char *k = w->env[i]->key ? w->env[i]->key : "";
                const char *v = w->env[i]->value ? w->env[i]->value : "";
                if (!*k)
                        vfail(s, WF_ENV, i, NULL, "empty variable name");
                else if (strchr(k, '='))
                        vfail(s, WF_ENV, i, NULL, "variable name \"%.60s\" must not contain '='",
                              k);
                else if (strlen(k) > 1024 || has_control(k, true))
                        vfail(s, WF_ENV, i, NULL,
                              "variable name \"%.60s\" must be at most 1024 characters, without "
                              "spaces or control characters",
                              k);
                if (strlen(v) > MAX_STRING)
                        vfail(s, WF_ENV, i, NULL, "value of \"%.60s\" longer than %d bytes", k,
                              MAX_STRING);
                for (size_t j = 0; j < i && *k; j++)
                        if (w->env[j]->key && strcmp(w->env[j]->key, k) == 0) {
                                vfail(s, WF_ENV, i, NULL, "duplicate variable \"%.60s\"", k);
                                break;
                        }
                if (strcmp(v, MANIFEST_REDACTED) == 0)
                        vfail(s, WF_ENV, i, NULL,
                              "value of \"%.60s\" is \"" MANIFEST_REDACTED "\", what the API shows "
                              "in place of a secret; write the real value",
                              k);
        }
        /* secret_env comes from `secret: true` on env list entries, so from YAML it is always
         * consistent; a spec sent over gRPC may name anything */
        if (w->n_secret_env > MAX_LIST)
                vfail(s, WF_ENV, 0, NULL, "more than %d secret variables", MAX_LIST);
        for (size_t i = 0; i < w->n_secret_env && i < MAX_LIST; i++) {
                const char *k = w->secret_env[i] ? w->secret_env[i] : "";
                bool found = false;
                for (size_t j = 0; j < w->n_env && !found; j++)
                        found = w->env[j]->key && strcmp(w->env[j]->key, k) == 0;
                if (!found)
                        vfail(s, WF_ENV, 0, NULL, "secret_env[%zu]: \"%.60s\" is not a variable in env",
                              i, k);
                for (size_t j = 0; j < i; j++)
                        if (w->secret_env[j] && strcmp(w->secret_env[j], k) == 0) {
                                vfail(s, WF_ENV, 0, NULL, "secret_env[%zu]: \"%.60s\" is listed twice",
                                      i, k);
                                break;
                        }
        }
}

static void validate_ports(struct vsink *s, const Capsule__V1__WorkloadSpec *w)
{
        if (w->n_ports > MAX_PORTS)
                vfail(s, WF_PORTS, 0, NULL, "more than %d ports", MAX_PORTS);
        for (size_t i = 0; i < w->n_ports && i < MAX_PORTS; i++) {
                const Capsule__V1__PortMapping *p = w->ports[i];
                const char *proto = p->protocol ? p->protocol : "";
                const char *ip = p->host_ip ? p->host_ip : "";
                if (p->host_port < 1 || p->host_port > 65535)
                        vfail(s, WF_PORTS, i, "host", "host port %u out of range 1-65535",
                              p->host_port);
                if (p->workload_port < 1 || p->workload_port > 65535)
                        vfail(s, WF_PORTS, i, "port", "port %u out of range 1-65535",
                              p->workload_port);
                if (*proto && strcasecmp(proto, "tcp") != 0 && strcasecmp(proto, "udp") != 0)
                        vfail(s, WF_PORTS, i, "protocol", "\"%.20s\": expected tcp or udp", proto);
                if (*ip && !ip_is_valid(ip))
                        vfail(s, WF_PORTS, i, "hostIP", "\"%.60s\": not an IP address", ip);
                for (size_t j = 0; j < i; j++)
                        if (ports_clash(p, w->ports[j])) {
                                char other[192];
                                s->path(s->ud, WF_PORTS, j, NULL, other, sizeof(other));
                                vfail(s, WF_PORTS, i, NULL, "host port %u/%s is already used by %s",
                                      p->host_port, proto_of(p), other);
                                break;
                        }
        }
}

static void validate_mounts(struct vsink *s, const Capsule__V1__WorkloadSpec *w)
{
        if (w->n_mounts > MAX_MOUNTS)
                vfail(s, WF_MOUNTS, 0, NULL, "more than %d mounts", MAX_MOUNTS);
        for (size_t i = 0; i < w->n_mounts && i < MAX_MOUNTS; i++) {
                const Capsule__V1__Mount *m = w->mounts[i];
                const char *path = m->path ? m->path : "";
                vfail_name(s, WF_MOUNTS, i, "volume", m->volume);
                if (!*path) {
                        vfail(s, WF_MOUNTS, i, "path", "required field is missing");
                        continue;
                }
                const char *why = bad_abs_path(path);
                if (!why && same_path(path, "/"))
                        why = "must not be /";
                if (why) {
                        vfail(s, WF_MOUNTS, i, "path", "\"%.60s\": %s", path, why);
                        continue;
                }
                for (size_t j = 0; j < i; j++)
                        if (w->mounts[j]->path && same_path(w->mounts[j]->path, path)) {
                                char other[192];
                                s->path(s->ud, WF_MOUNTS, j, NULL, other, sizeof(other));
                                vfail(s, WF_MOUNTS, i, "path", "\"%.60s\" is already mounted by %s",
                                      path, other);
                                break;
                        }
        }
}

static void validate_microvm_fields(struct vsink *s, const Capsule__V1__WorkloadSpec *w, bool vm)
{
        const char *accel = w->accel ? w->accel : "";
        if (!vm) {
                if (*accel)
                        vfail(s, WF_ACCEL, 0, NULL, "only valid for kind MicroVM");
                if (w->disk_bytes)
                        vfail(s, WF_DISK, 0, NULL, "only valid for kind MicroVM");
                return;
        }
        if (*accel && strcmp(accel, "auto") != 0 && strcmp(accel, "kvm") != 0 &&
            strcmp(accel, "tcg") != 0)
                vfail(s, WF_ACCEL, 0, NULL, "\"%.20s\": expected auto, kvm or tcg", accel);
}

static void validate_spec(struct vsink *s, const Capsule__V1__WorkloadSpec *w)
{
        bool vm = w->kind == CAPSULE__V1__WORKLOAD_KIND__MICROVM;
        if (w->kind != CAPSULE__V1__WORKLOAD_KIND__CONTAINER && !vm &&
            w->kind != CAPSULE__V1__WORKLOAD_KIND__WORKLOAD_KIND_UNSPECIFIED)
                vfail(s, WF_KIND, 0, NULL, "unknown kind %d", (int)w->kind);
        vfail_name(s, WF_NAME, 0, NULL, w->name);
        const char *image = w->image ? w->image : "";
        if (!*image)
                vfail(s, WF_IMAGE, 0, NULL, "required field is missing");
        else if (strlen(image) > MAX_IMAGE || has_control(image, true) || image[0] == '-')
                vfail(s, WF_IMAGE, 0, NULL,
                      "\"%.60s\": not an image reference (at most %d characters, no spaces or "
                      "control characters, not starting with '-')",
                      image, MAX_IMAGE);
        validate_strings(s, WF_COMMAND, w->command, w->n_command);
        validate_strings(s, WF_ARGS, w->args, w->n_args);
        validate_env(s, w);
        validate_ports(s, w);
        validate_mounts(s, w);
        if (w->restart > CAPSULE__V1__RESTART_POLICY__NEVER || (int)w->restart < 0)
                vfail(s, WF_RESTART, 0, NULL, "unknown restart policy %d", (int)w->restart);
        if (w->pull_policy > CAPSULE__V1__PULL_POLICY__PULL_NEVER || (int)w->pull_policy < 0)
                vfail(s, WF_PULL, 0, NULL, "unknown pull policy %d", (int)w->pull_policy);
        if (w->resources) {
                double cpus = w->resources->cpus;
                if (!isfinite(cpus) || cpus < 0 || cpus > QUANTITY_MAX_CPUS)
                        vfail(s, WF_CPUS, 0, NULL, "%g: out of range 0-%d", cpus,
                              QUANTITY_MAX_CPUS);
        }
        const char *wd = w->working_dir ? w->working_dir : "";
        const char *why = *wd ? bad_abs_path(wd) : NULL;
        if (why)
                vfail(s, WF_WORKDIR, 0, NULL, "\"%.60s\": %s", wd, why);
        const char *user = w->user ? w->user : "";
        if (strlen(user) > MAX_USER || has_control(user, true))
                vfail(s, WF_USER, 0, NULL,
                      "\"%.60s\": at most %d characters, no spaces or control characters", user,
                      MAX_USER);
        validate_microvm_fields(s, w, vm);
}

/* Validation of specs that did not come from YAML: paths use the spec's own indexes. */
struct plain_sink {
        const char *prefix;
        struct manifest_errors *errs;
};

static void plain_path(void *ud, enum wfield f, size_t idx, const char *sub, char *buf, size_t size)
{
        char ix[32] = "";
        if (wfield_indexed(f))
                snprintf(ix, sizeof(ix), "[%zu]", idx);
        snprintf(buf, size, "%s%s%s%s", wfield_names[f], ix, sub ? "." : "", sub ? sub : "");
}

static void plain_emit(void *ud, enum wfield f, size_t idx, const char *text)
{
        struct plain_sink *p = ud;
        if (p->prefix)
                manifest_errors_add(p->errs, "%s: %s", p->prefix, text);
        else
                manifest_errors_add(p->errs, "%s", text);
}

int manifest_workload_validate(const Capsule__V1__WorkloadSpec *spec, const char *prefix,
                               struct manifest_errors *errs)
{
        struct plain_sink p = {prefix, errs};
        struct vsink s = {&p, plain_path, plain_emit, 0};
        validate_spec(&s, spec);
        return s.nerr ? -EINVAL : 0;
}

int manifest_check_reserved_ports(const Capsule__V1__WorkloadSpec *spec, const char *prefix,
                                  const struct manifest_reserved_port *reserved, size_t n,
                                  struct manifest_errors *errs)
{
        struct plain_sink p = {prefix, errs};
        struct vsink s = {&p, plain_path, plain_emit, 0};
        for (size_t i = 0; i < spec->n_ports; i++) {
                const Capsule__V1__PortMapping *pm = spec->ports[i];
                for (size_t j = 0; j < n; j++)
                        if (reserved[j].port == pm->host_port &&
                            strcasecmp(reserved[j].protocol, proto_of(pm)) == 0) {
                                vfail(&s, WF_PORTS, i, "host",
                                      "port %u/%s is used by %s; choose another host port",
                                      pm->host_port, reserved[j].protocol, reserved[j].what);
                                break;
                        }
        }
        return s.nerr ? -EINVAL : 0;
}

/* ---------------------------------------------------------------------------------------------
 * YAML document -> workload spec */

/* Line and YAML index of every converted item, so validator errors point at the source. */
struct srcmap {
        struct conv *c;
        int field_line[WF__N];
        bool failed[WF__N]; /* conversion already reported this field: validator stays quiet */
        int *port_line, *port_yidx;
        int *mount_line, *mount_yidx;
        int *env_line;
        bool env_is_list;
        int *env_yidx;
};

static void srcmap_free(struct srcmap *m)
{
        free(m->port_line);
        free(m->port_yidx);
        free(m->mount_line);
        free(m->mount_yidx);
        free(m->env_line);
        free(m->env_yidx);
}

static int srcmap_line(const struct srcmap *m, enum wfield f, size_t idx)
{
        if (f == WF_PORTS && m->port_line)
                return m->port_line[idx];
        if (f == WF_MOUNTS && m->mount_line)
                return m->mount_line[idx];
        if (f == WF_ENV && m->env_line)
                return m->env_line[idx];
        return m->field_line[f];
}

static void yaml_path(void *ud, enum wfield f, size_t idx, const char *sub, char *buf, size_t size)
{
        struct srcmap *m = ud;
        if (f == WF_PORTS && m->port_yidx)
                idx = (size_t)m->port_yidx[idx];
        else if (f == WF_MOUNTS && m->mount_yidx)
                idx = (size_t)m->mount_yidx[idx];
        if (f == WF_ENV && m->env_is_list && m->env_yidx) {
                snprintf(buf, size, "env[%d]", m->env_yidx[idx]);
                return;
        }
        plain_path(NULL, f, idx, sub, buf, size);
}

static void yaml_emit(void *ud, enum wfield f, size_t idx, const char *text)
{
        struct srcmap *m = ud;
        if (m->failed[f] && !wfield_indexed(f) && f != WF_ENV)
                return;
        cfail(m->c, srcmap_line(m, f, idx), NULL, "%s", text);
}

static int *alloc_lines(struct conv *c, size_t n)
{
        int *v = calloc(n ? n : 1, sizeof(int));
        if (!v && !c->oom) {
                c->oom = true;
                cfail(c, 0, NULL, "out of memory");
        }
        return v;
}

static int convert_string_list(struct conv *c, const struct ynode *n, const char *name, char ***out,
                               size_t *count)
{
        if (n->type != YN_SEQ) {
                if (n->type == YN_SCALAR && !ynode_is_null(n))
                        cfail(c, n->line, name,
                              "expected a list of strings, got a string (write "
                              "[\"...\", \"...\"])");
                else
                        cfail(c, n->line, name, "expected a list of strings, got %s",
                              ynode_what(n));
                return -EINVAL;
        }
        if (n->n > MAX_LIST) {
                cfail(c, n->line, name, "more than %d entries", MAX_LIST);
                return -EINVAL;
        }
        *out = calloc(n->n ? n->n : 1, sizeof(char *));
        if (!*out)
                return c->oom = true, -ENOMEM;
        int r = 0;
        for (size_t i = 0; i < n->n; i++) {
                char path[64];
                snprintf(path, sizeof(path), "%s[%zu]", name, i);
                char *s = get_string(c, n->kids[i], path, MAX_STRING);
                if (!s)
                        r = -EINVAL;
                else
                        (*out)[(*count)++] = s;
        }
        return r;
}

static int env_add(struct conv *c, struct srcmap *m, Capsule__V1__WorkloadSpec *w, char *key,
                   char *value, bool secret, int line, int yidx)
{
        Capsule__V1__WorkloadSpec__EnvEntry *e = malloc(sizeof(*e));
        char *name = secret ? strdup(key) : NULL;
        if (!e || (secret && !name)) {
                free(e);
                free(name);
                free(key);
                free(value);
                return c->oom = true, -ENOMEM;
        }
        for (size_t i = 0; secret && i < w->n_secret_env; i++)
                if (strcmp(w->secret_env[i], key) == 0) /* a duplicate variable: reported once */
                        secret = false;
        if (secret)
                w->secret_env[w->n_secret_env++] = name;
        else
                free(name);
        capsule__v1__workload_spec__env_entry__init(e);
        e->key = key;
        e->value = value;
        m->env_line[w->n_env] = line;
        m->env_yidx[w->n_env] = yidx;
        w->env[w->n_env++] = e;
        return 0;
}

static int convert_env(struct conv *c, struct srcmap *m, const struct ynode *n,
                       Capsule__V1__WorkloadSpec *w)
{
        if (n->type != YN_MAP && n->type != YN_SEQ) {
                cfail(c, n->line, "env",
                      "expected a mapping (NAME: value) or a list of {name, value, secret}, got %s",
                      ynode_what(n));
                return -EINVAL;
        }
        size_t cnt = n->type == YN_MAP ? n->n / 2 : n->n;
        if (cnt > MAX_LIST) {
                cfail(c, n->line, "env", "more than %d entries", MAX_LIST);
                return -EINVAL;
        }
        m->env_is_list = n->type == YN_SEQ;
        w->env = calloc(cnt ? cnt : 1, sizeof(*w->env));
        w->secret_env = calloc(cnt ? cnt : 1, sizeof(*w->secret_env));
        m->env_line = alloc_lines(c, cnt);
        m->env_yidx = alloc_lines(c, cnt);
        if (!w->env || !w->secret_env || !m->env_line || !m->env_yidx)
                return c->oom = true, -ENOMEM;
        int r = 0;
        for (size_t i = 0; i < cnt; i++) {
                char path[96], *key = NULL, *value = NULL;
                bool secret = false;
                const struct ynode *item = n->kids[m->env_is_list ? i : 2 * i];
                if (!m->env_is_list) {
                        const struct ynode *val = n->kids[2 * i + 1];
                        snprintf(path, sizeof(path), "env.%.60s", item->str ? item->str : "");
                        key = get_string(c, item, "env", MAX_STRING);
                        value = key ? get_string(c, val, path, MAX_STRING) : NULL;
                } else {
                        static const char *const keys[] = {"name", "value", "secret"};
                        const struct ynode *v[3];
                        snprintf(path, sizeof(path), "env[%zu]", i);
                        if (item->type != YN_MAP) {
                                cfail(c, item->line, path,
                                      "expected a mapping {name, value, secret}, got %s",
                                      ynode_what(item));
                                r = -EINVAL;
                                continue;
                        }
                        int before = c->nerr;
                        map_fields(c, item, path, keys, 3, v);
                        char p2[112];
                        snprintf(p2, sizeof(p2), "%s.name", path);
                        if (!v[0])
                                cfail(c, item->line, p2, "required field is missing");
                        else
                                key = get_string(c, v[0], p2, MAX_STRING);
                        snprintf(p2, sizeof(p2), "%s.value", path);
                        value = v[1] ? get_string(c, v[1], p2, MAX_STRING) : strdup("");
                        snprintf(p2, sizeof(p2), "%s.secret", path);
                        if (v[2])
                                (void)get_bool(c, v[2], p2, &secret);
                        if (c->nerr != before) {
                                free(key);
                                free(value);
                                r = -EINVAL;
                                continue;
                        }
                }
                if (!key || !value) {
                        free(key);
                        free(value);
                        r = -EINVAL;
                        continue;
                }
                if (env_add(c, m, w, key, value, secret, item->line, (int)i) < 0)
                        return -ENOMEM;
        }
        return r;
}

static int parse_port_number(const char *s, size_t len, uint32_t *out)
{
        if (len == 0 || len > 9)
                return len == 0 ? -EINVAL : -ERANGE;
        for (size_t i = 0; i < len; i++)
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
        uint32_t v = 0;
        for (size_t i = 0; i < len; i++)
                v = v * 10 + (uint32_t)(s[i] - '0');
        *out = v;
        return v >= 1 && v <= 65535 ? 0 : -ERANGE;
}

/* Parses "HOST:PORT[/proto]", "IP:HOST:PORT[/proto]" or "[IPv6]:HOST:PORT[/proto]".
 * Returns NULL or a reason (written to why). */
static const char *parse_port_string(const char *s, Capsule__V1__PortMapping *p, char *why,
                                     size_t size)
{
        const char *end = s + strlen(s), *slash = strrchr(s, '/');
        const char *proto = "tcp";
        if (slash) {
                if (strcasecmp(slash + 1, "tcp") == 0)
                        proto = "tcp";
                else if (strcasecmp(slash + 1, "udp") == 0)
                        proto = "udp";
                else {
                        snprintf(why, size, "unknown protocol \"%.20s\" (expected tcp or udp)",
                                 slash + 1);
                        return why;
                }
                end = slash;
        }
        const char *hp = s;
        char ip[64] = "";
        if (*s == '[') {
                const char *close = memchr(s, ']', (size_t)(end - s));
                if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof(ip))
                        goto malformed;
                memcpy(ip, s + 1, (size_t)(close - s - 1));
                hp = close + 2;
        } else {
                const char *c1 = memchr(s, ':', (size_t)(end - s));
                const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
                if (!c1)
                        goto malformed;
                if (c2) {
                        if ((size_t)(c1 - s) >= sizeof(ip))
                                goto malformed;
                        memcpy(ip, s, (size_t)(c1 - s));
                        hp = c1 + 1;
                }
        }
        if (*s == '[' || *ip) {
                unsigned char buf[16];
                int af = *s == '[' ? AF_INET6 : AF_INET;
                if (inet_pton(af, ip, buf) != 1) {
                        snprintf(why, size, "\"%.60s\" is not an IP%s address", ip,
                                 af == AF_INET6 ? "v6" : "v4");
                        return why;
                }
        }
        const char *colon = memchr(hp, ':', (size_t)(end - hp));
        if (!colon || memchr(colon + 1, ':', (size_t)(end - colon - 1)))
                goto malformed;
        uint32_t host = 0, port = 0;
        int r = parse_port_number(hp, (size_t)(colon - hp), &host);
        if (r == -EINVAL)
                goto malformed;
        if (r == -ERANGE) {
                snprintf(why, size, "host port %.*s out of range 1-65535", (int)(colon - hp), hp);
                return why;
        }
        r = parse_port_number(colon + 1, (size_t)(end - colon - 1), &port);
        if (r == -EINVAL)
                goto malformed;
        if (r == -ERANGE) {
                snprintf(why, size, "port %.*s out of range 1-65535", (int)(end - colon - 1),
                         colon + 1);
                return why;
        }
        p->host_port = host;
        p->workload_port = port;
        p->protocol = strdup(proto);
        p->host_ip = strdup(ip);
        if (!p->protocol || !p->host_ip) {
                snprintf(why, size, "out of memory");
                return why;
        }
        return NULL;
malformed:
        snprintf(why, size, "expected HOST:PORT[/tcp|udp] or IP:HOST:PORT[/tcp|udp]");
        return why;
}

static int convert_port_object(struct conv *c, const struct ynode *n, const char *path,
                               Capsule__V1__PortMapping *p)
{
        static const char *const keys[] = {"host", "port", "protocol", "hostIP"};
        const struct ynode *v[4];
        int before = c->nerr;
        char kp[96];
        map_fields(c, n, path, keys, 4, v);
        for (int k = 0; k < 2; k++) {
                snprintf(kp, sizeof(kp), "%s.%s", path, keys[k]);
                if (!v[k])
                        cfail(c, n->line, kp, "required field is missing");
                else
                        (void)get_uint32(c, v[k], kp, k == 0 ? &p->host_port : &p->workload_port);
        }
        snprintf(kp, sizeof(kp), "%s.protocol", path);
        char *proto = v[2] ? get_string(c, v[2], kp, 16) : strdup("tcp");
        if (proto && strcasecmp(proto, "tcp") != 0 && strcasecmp(proto, "udp") != 0)
                cfail(c, v[2]->line, kp, "\"%.20s\": expected tcp or udp", proto);
        for (char *q = proto; q && *q; q++)
                *q = (char)(*q | 32);
        p->protocol = proto;
        snprintf(kp, sizeof(kp), "%s.hostIP", path);
        p->host_ip = v[3] ? get_string(c, v[3], kp, 64) : strdup("");
        if (p->host_ip && *p->host_ip && !ip_is_valid(p->host_ip))
                cfail(c, v[3]->line, kp, "\"%.60s\": not an IP address", p->host_ip);
        if (!p->protocol || !p->host_ip)
                return -EINVAL;
        return c->nerr == before ? 0 : -EINVAL;
}

static int convert_ports(struct conv *c, struct srcmap *m, const struct ynode *n,
                         Capsule__V1__WorkloadSpec *w)
{
        if (n->type != YN_SEQ) {
                cfail(c, n->line, "ports", "expected a list, got %s", ynode_what(n));
                return -EINVAL;
        }
        if (n->n > MAX_PORTS) {
                cfail(c, n->line, "ports", "more than %d ports", MAX_PORTS);
                return -EINVAL;
        }
        w->ports = calloc(n->n ? n->n : 1, sizeof(*w->ports));
        m->port_line = alloc_lines(c, n->n);
        m->port_yidx = alloc_lines(c, n->n);
        if (!w->ports || !m->port_line || !m->port_yidx)
                return c->oom = true, -ENOMEM;
        int r = 0;
        for (size_t i = 0; i < n->n; i++) {
                const struct ynode *item = n->kids[i];
                char path[32], why[160];
                snprintf(path, sizeof(path), "ports[%zu]", i);
                Capsule__V1__PortMapping *p = malloc(sizeof(*p));
                if (!p)
                        return c->oom = true, -ENOMEM;
                capsule__v1__port_mapping__init(p);
                int ok = 0;
                if (item->type == YN_MAP) {
                        ok = convert_port_object(c, item, path, p);
                } else if (item->type == YN_SCALAR && !ynode_is_null(item) &&
                           !memchr(item->str, 0, item->len)) {
                        if (parse_port_string(item->str, p, why, sizeof(why))) {
                                cfail(c, item->line, path, SFMT ": %s", SARG(item), why);
                                ok = -EINVAL;
                        }
                } else {
                        cfail(c, item->line, path,
                              "expected \"HOST:PORT[/proto]\" or {host, port, protocol}, got %s",
                              ynode_what(item));
                        ok = -EINVAL;
                }
                if (ok < 0) {
                        protobuf_c_message_free_unpacked(&p->base, NULL);
                        r = -EINVAL;
                        continue;
                }
                m->port_line[w->n_ports] = item->line;
                m->port_yidx[w->n_ports] = (int)i;
                w->ports[w->n_ports++] = p;
        }
        return r;
}

static int convert_mount(struct conv *c, const struct ynode *n, const char *path,
                         Capsule__V1__Mount *mt)
{
        static const char *const keys[] = {"volume", "path", "readOnly"};
        const struct ynode *v[3];
        char kp[64];
        if (n->type != YN_MAP) {
                cfail(c, n->line, path, "expected a mapping {volume, path, readOnly}, got %s",
                      ynode_what(n));
                return -EINVAL;
        }
        int before = c->nerr;
        map_fields(c, n, path, keys, 3, v);
        for (int k = 0; k < 2; k++) {
                snprintf(kp, sizeof(kp), "%s.%s", path, keys[k]);
                if (!v[k]) {
                        cfail(c, n->line, kp, "required field is missing");
                        continue;
                }
                char *s = get_string(c, v[k], kp, MAX_PATH);
                if (k == 0 && s)
                        mt->volume = s;
                else if (s)
                        mt->path = s;
        }
        if (v[2]) {
                bool ro = false;
                snprintf(kp, sizeof(kp), "%s.readOnly", path);
                if (get_bool(c, v[2], kp, &ro) == 0)
                        mt->read_only = ro;
        }
        return c->nerr == before ? 0 : -EINVAL;
}

static int convert_mounts(struct conv *c, struct srcmap *m, const struct ynode *n,
                          Capsule__V1__WorkloadSpec *w)
{
        if (n->type != YN_SEQ) {
                cfail(c, n->line, "mounts", "expected a list, got %s", ynode_what(n));
                return -EINVAL;
        }
        if (n->n > MAX_MOUNTS) {
                cfail(c, n->line, "mounts", "more than %d mounts", MAX_MOUNTS);
                return -EINVAL;
        }
        w->mounts = calloc(n->n ? n->n : 1, sizeof(*w->mounts));
        m->mount_line = alloc_lines(c, n->n);
        m->mount_yidx = alloc_lines(c, n->n);
        if (!w->mounts || !m->mount_line || !m->mount_yidx)
                return c->oom = true, -ENOMEM;
        int r = 0;
        for (size_t i = 0; i < n->n; i++) {
                char path[32];
                snprintf(path, sizeof(path), "mounts[%zu]", i);
                Capsule__V1__Mount *mt = malloc(sizeof(*mt));
                if (!mt)
                        return c->oom = true, -ENOMEM;
                capsule__v1__mount__init(mt);
                if (convert_mount(c, n->kids[i], path, mt) < 0) {
                        protobuf_c_message_free_unpacked(&mt->base, NULL);
                        r = -EINVAL;
                        continue;
                }
                m->mount_line[w->n_mounts] = n->kids[i]->line;
                m->mount_yidx[w->n_mounts] = (int)i;
                w->mounts[w->n_mounts++] = mt;
        }
        return r;
}

/* Maps a string value onto an enum through a table; reports the allowed words on failure. */
static int convert_word(struct conv *c, const struct ynode *n, const char *path,
                        const char *const *words, size_t nwords, const char *expected)
{
        _cleanup_free_ char *s = get_string(c, n, path, 64);
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < nwords; i++)
                if (strcmp(s, words[i]) == 0)
                        return (int)i;
        cfail(c, n->line, path, SFMT ": expected %s", SARG(n), expected);
        return -EINVAL;
}

static int convert_resources(struct conv *c, struct srcmap *m, const struct ynode *n,
                             Capsule__V1__WorkloadSpec *w)
{
        static const char *const keys[] = {"cpus", "memory"};
        const struct ynode *v[2];
        if (n->type != YN_MAP) {
                cfail(c, n->line, "resources", "expected a mapping {cpus, memory}, got %s",
                      ynode_what(n));
                return -EINVAL;
        }
        map_fields(c, n, "resources", keys, 2, v);
        w->resources = malloc(sizeof(*w->resources));
        if (!w->resources)
                return c->oom = true, -ENOMEM;
        capsule__v1__resources__init(w->resources);
        struct cap_error e = {0};
        const char *t;
        if (v[0] && (t = get_quantity_text(c, v[0], "resources.cpus"))) {
                m->field_line[WF_CPUS] = v[0]->line;
                if (quantity_parse_cpus(t, &w->resources->cpus, &e) < 0)
                        cfail(c, v[0]->line, "resources.cpus", "%s", e.msg);
        }
        if (v[1] && (t = get_quantity_text(c, v[1], "resources.memory"))) {
                m->field_line[WF_MEMORY] = v[1]->line;
                if (quantity_parse_bytes(t, &w->resources->memory_bytes, &e) < 0)
                        cfail(c, v[1]->line, "resources.memory", "%s", e.msg);
        }
        return 0;
}

static int convert_disk(struct conv *c, const struct ynode *n, const char *path, uint64_t *out)
{
        struct cap_error e = {0};
        const char *t = get_quantity_text(c, n, path);
        if (!t)
                return -EINVAL;
        if (quantity_parse_bytes(t, out, &e) < 0) {
                cfail(c, n->line, path, "%s", e.msg);
                return -EINVAL;
        }
        if (*out == 0) {
                cfail(c, n->line, path, SFMT ": must be greater than 0", SARG(n));
                return -EINVAL;
        }
        return 0;
}

static const char *const restart_words[] = {"always", "on-failure", "never"};
static const char *const pull_words[] = {"IfNotPresent", "Always", "Never"};

/* Sets one top-level field from its YAML value. Type errors are reported here; meaning is checked
 * later by validate_spec. */
static void convert_field(struct conv *c, struct srcmap *m, enum wfield f, const struct ynode *n,
                          Capsule__V1__WorkloadSpec *w)
{
        const char *key = wfield_names[f];
        char *s;
        bool b;
        int i;
        m->field_line[f] = n->line;
        switch (f) {
        case WF_NAME:
        case WF_IMAGE:
        case WF_WORKDIR:
        case WF_USER:
        case WF_ACCEL:
                if (!(s = get_string(c, n, key, MAX_STRING)))
                        return;
                if (f == WF_NAME)
                        w->name = s;
                else if (f == WF_IMAGE)
                        w->image = s;
                else if (f == WF_WORKDIR)
                        w->working_dir = s;
                else if (f == WF_USER)
                        w->user = s;
                else
                        w->accel = s;
                return;
        case WF_COMMAND:
                (void)convert_string_list(c, n, key, &w->command, &w->n_command);
                return;
        case WF_ARGS:
                (void)convert_string_list(c, n, key, &w->args, &w->n_args);
                return;
        case WF_ENV:
                (void)convert_env(c, m, n, w);
                return;
        case WF_PORTS:
                (void)convert_ports(c, m, n, w);
                return;
        case WF_MOUNTS:
                (void)convert_mounts(c, m, n, w);
                return;
        case WF_RESTART:
                i = convert_word(c, n, key, restart_words, 3, "always, on-failure or never");
                if (i >= 0)
                        w->restart = (Capsule__V1__RestartPolicy)(i + 1);
                return;
        case WF_PULL:
                i = convert_word(c, n, key, pull_words, 3, "IfNotPresent, Always or Never");
                if (i >= 0)
                        w->pull_policy = (Capsule__V1__PullPolicy)(i + 1);
                return;
        case WF_RESOURCES:
                (void)convert_resources(c, m, n, w);
                return;
        case WF_PRIVILEGED:
                if (get_bool(c, n, key, &b) == 0)
                        w->privileged = b;
                return;
        case WF_DISK:
                (void)convert_disk(c, n, key, &w->disk_bytes);
                return;
        default:
                return;
        }
}

static Capsule__V1__WorkloadSpec *convert_workload(struct conv *c, const struct ynode *root,
                                                   enum manifest_kind kind,
                                                   struct manifest_doc *doc)
{
        const struct ynode *v[WF__KEYS];
        map_fields(c, root, "", wfield_names, WF__KEYS, v);
        Capsule__V1__WorkloadSpec *w = malloc(sizeof(*w));
        if (!w) {
                c->oom = true;
                return NULL;
        }
        capsule__v1__workload_spec__init(w);
        w->kind = kind == MANIFEST_KIND_MICROVM ? CAPSULE__V1__WORKLOAD_KIND__MICROVM
                                                : CAPSULE__V1__WORKLOAD_KIND__CONTAINER;
        struct srcmap m = {.c = c};
        for (int i = 0; i < WF__KEYS; i++)
                m.field_line[i] = 0;
        m.field_line[WF_KIND] = v[WF_KIND]->line;
        int before = c->nerr;
        for (int f = WF_NAME; f < WF__KEYS; f++) {
                if (!v[f])
                        continue;
                if ((f == WF_ACCEL || f == WF_DISK) && kind != MANIFEST_KIND_MICROVM) {
                        cfail(c, v[f]->line, wfield_names[f], "only valid for kind MicroVM");
                        continue;
                }
                int n0 = c->nerr;
                convert_field(c, &m, (enum wfield)f, v[f], w);
                m.failed[f] = c->nerr != n0;
        }
        if (!c->oom) {
                struct vsink s = {&m, yaml_path, yaml_emit, 0};
                validate_spec(&s, w);
        }
        if (c->nerr == before && !c->oom && manifest_workload_normalize(w) < 0)
                c->oom = true;
        if (c->nerr != before || c->oom) {
                srcmap_free(&m);
                protobuf_c_message_free_unpacked(&w->base, NULL);
                return NULL;
        }
        doc->port_lines = TAKE_PTR(m.port_line);
        doc->mount_lines = TAKE_PTR(m.mount_line);
        srcmap_free(&m);
        return w;
}

static int convert_volume(struct conv *c, const struct ynode *root, struct manifest_doc *doc)
{
        static const char *const keys[] = {"kind", "name", "size"};
        const struct ynode *v[3];
        int before = c->nerr;
        map_fields(c, root, "", keys, 3, v);
        if (!v[1])
                cfail(c, 0, "name", "required field is missing");
        else if ((doc->volume_name = get_string(c, v[1], "name", 256))) {
                struct cap_error e = {0};
                if (name_check("name", doc->volume_name, &e) < 0)
                        cfail(c, v[1]->line, NULL, "%s", e.msg);
        }
        if (!v[2])
                cfail(c, 0, "size", "required field is missing");
        else
                (void)convert_disk(c, v[2], "size", &doc->volume_size);
        return c->nerr == before && !c->oom ? 0 : -EINVAL;
}

static void doc_clear(struct manifest_doc *d)
{
        if (d->workload)
                protobuf_c_message_free_unpacked(&d->workload->base, NULL);
        free(d->file);
        free(d->port_lines);
        free(d->mount_lines);
        free(d->volume_name);
        memset(d, 0, sizeof(*d));
}

/* The line number in a message made by cfail ("FILE: document N (line L): ..."). */
static long message_line(const char *msg, size_t file_len)
{
        const char *p = strlen(msg) > file_len ? strstr(msg + file_len, " (line ") : NULL;
        return p ? strtol(p + 7, NULL, 10) : 0;
}

/* Conversion reports type errors before the validator's semantic ones: put a document's errors
 * back in line order (stable), which is how an operator reads them. */
static void sort_errors_by_line(struct conv *c, size_t from)
{
        struct manifest_errors *e = c->errs;
        size_t flen = strlen(c->file);
        if (!e)
                return;
        for (size_t i = from + 1; i < e->n; i++) {
                char *m = e->msgs[i];
                long line = message_line(m, flen);
                size_t j = i;
                while (j > from && message_line(e->msgs[j - 1], flen) > line) {
                        e->msgs[j] = e->msgs[j - 1];
                        j--;
                }
                e->msgs[j] = m;
        }
}

/* Converts one document's tree. Returns 1 with *doc filled, 0 for an empty document, <0 after
 * reporting. */
static int convert_doc(struct conv *c, const struct ynode *root, struct manifest_doc *doc)
{
        if (ynode_is_null(root))
                return 0;
        if (root->type != YN_MAP) {
                cfail(c, root->line, NULL,
                      "a document must be a mapping of fields (kind, name, ...), got %s",
                      ynode_what(root));
                return -EINVAL;
        }
        static const char *const kind_key[] = {"kind"};
        const struct ynode *kn = NULL;
        for (size_t i = 0; i + 1 < root->n; i += 2)
                if (root->kids[i]->type == YN_SCALAR &&
                    strcmp(root->kids[i]->str, kind_key[0]) == 0)
                        kn = root->kids[i + 1];
        if (!kn) {
                cfail(c, root->line, "kind",
                      "required field is missing (expected Container, MicroVM or Volume)");
                return -EINVAL;
        }
        _cleanup_free_ char *kind = get_string(c, kn, "kind", 64);
        if (!kind)
                return -EINVAL;
        memset(doc, 0, sizeof(*doc));
        doc->index = c->doc;
        doc->line = root->line;
        if (strcmp(kind, "Container") == 0)
                doc->kind = MANIFEST_KIND_CONTAINER;
        else if (strcmp(kind, "MicroVM") == 0)
                doc->kind = MANIFEST_KIND_MICROVM;
        else if (strcmp(kind, "Volume") == 0)
                doc->kind = MANIFEST_KIND_VOLUME;
        else {
                cfail(c, kn->line, "kind",
                      SFMT ": unknown kind (expected Container, MicroVM or "
                           "Volume)",
                      SARG(kn));
                return -EINVAL;
        }
        if (!(doc->file = cstrdup(c, c->file)))
                return -ENOMEM;
        int r = 0;
        if (doc->kind == MANIFEST_KIND_VOLUME)
                r = convert_volume(c, root, doc);
        else if (!(doc->workload = convert_workload(c, root, doc->kind, doc)))
                r = -EINVAL;
        if (r < 0) {
                doc_clear(doc);
                return r;
        }
        return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Event loop: libyaml events -> trees -> documents */

struct loader {
        struct conv *c;
        struct ynode *root;
        struct ynode *stack[MAX_DEPTH];
        size_t depth; /* open collections, including skipped ones */
        size_t nodes;
        bool broken; /* this document already failed: skip to its end */
        struct manifest_set *set;
        size_t cap;
};

static void loader_break(struct loader *l)
{
        l->broken = true;
        ynode_free(l->root);
        l->root = NULL;
}

static int loader_add(struct loader *l, const yaml_event_t *ev)
{
        int line = (int)ev->start_mark.line + 1;
        /* Fatal, and checked before anything else: libyaml's scanner does work proportional to
         * the flow nesting level for every token, so 1 MiB of "[" would take minutes. Stopping
         * here keeps the scanner's stacks small. */
        if (ev->type != YAML_SCALAR_EVENT && l->depth >= MAX_DEPTH) {
                cfail(l->c, line, NULL, "nested more than %d levels deep", MAX_DEPTH);
                return -E2BIG;
        }
        if (l->broken)
                goto count;
        if (++l->nodes > MAX_NODES) {
                cfail(l->c, line, NULL, "document has more than %d nodes", MAX_NODES);
                loader_break(l);
                goto count;
        }
        struct ynode *n = calloc(1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        n->line = line;
        if (ev->type == YAML_SCALAR_EVENT) {
                n->type = YN_SCALAR;
                n->plain = ev->data.scalar.plain_implicit &&
                           ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
                n->len = ev->data.scalar.length;
                n->str = malloc(n->len + 1);
                if (!n->str) {
                        free(n);
                        return -ENOMEM;
                }
                memcpy(n->str, ev->data.scalar.value, n->len);
                n->str[n->len] = '\0';
        } else {
                n->type = ev->type == YAML_SEQUENCE_START_EVENT ? YN_SEQ : YN_MAP;
        }
        if (l->depth == 0) {
                ynode_free(l->root);
                l->root = n;
        } else if (ynode_append(l->stack[l->depth - 1], n) < 0) {
                ynode_free(n);
                return -ENOMEM;
        }
        if (n->type != YN_SCALAR)
                l->stack[l->depth] = n;
count:
        if (ev->type != YAML_SCALAR_EVENT)
                l->depth++;
        return 0;
}

static int loader_document_end(struct loader *l)
{
        struct ynode *root = TAKE_PTR(l->root);
        bool broken = l->broken;
        l->broken = false;
        l->nodes = 0;
        l->depth = 0;
        if (broken || !root) {
                ynode_free(root);
                return 0;
        }
        struct manifest_doc doc;
        size_t nerrs = l->c->errs ? l->c->errs->n : 0;
        l->c->doc_line = root->line;
        int r = convert_doc(l->c, root, &doc);
        sort_errors_by_line(l->c, nerrs);
        ynode_free(root);
        if (r <= 0)
                return l->c->oom ? -ENOMEM : 0;
        if (l->set->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 4;
                struct manifest_doc *d = realloc(l->set->docs, cap * sizeof(*d));
                if (!d) {
                        doc_clear(&doc);
                        return -ENOMEM;
                }
                l->set->docs = d;
                l->cap = cap;
        }
        l->set->docs[l->set->n++] = doc;
        return 0;
}

static int loader_event(struct loader *l, const yaml_event_t *ev)
{
        struct conv *c = l->c;
        switch (ev->type) {
        case YAML_DOCUMENT_START_EVENT:
                c->doc++;
                c->doc_line = (int)ev->start_mark.line + 1;
                if (c->doc > MANIFEST_MAX_DOCS) {
                        cfail(c, 0, NULL, "more than %d documents in one file", MANIFEST_MAX_DOCS);
                        return -E2BIG;
                }
                return 0;
        case YAML_DOCUMENT_END_EVENT:
                return loader_document_end(l);
        case YAML_ALIAS_EVENT:
                if (!l->broken)
                        cfail(c, (int)ev->start_mark.line + 1, NULL,
                              "YAML aliases (*%.40s) are not supported: write the value out",
                              (const char *)ev->data.alias.anchor);
                loader_break(l);
                return 0;
        case YAML_SCALAR_EVENT:
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
                return loader_add(l, ev);
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
                if (l->depth > 0)
                        l->depth--;
                return 0;
        default:
                return 0;
        }
}

static int load_stream(struct conv *c, const char *buf, size_t len, struct manifest_set *set)
{
        yaml_parser_t parser;
        struct loader l = {.c = c, .set = set};
        int r = 0;
        if (!yaml_parser_initialize(&parser))
                return -ENOMEM;
        yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
        for (;;) {
                yaml_event_t ev;
                if (!yaml_parser_parse(&parser, &ev)) {
                        if (parser.error == YAML_MEMORY_ERROR) {
                                r = -ENOMEM;
                                break;
                        }
                        char ctx[128] = "";
                        if (parser.context)
                                snprintf(ctx, sizeof(ctx), " (%s at line %zu)", parser.context,
                                         parser.context_mark.line + 1);
                        manifest_errors_add(
                            c->errs,
                            "%s: document %d (line %zu, column %zu): YAML syntax "
                            "error: %s%s",
                            c->file, c->doc ? c->doc : 1, parser.problem_mark.line + 1,
                            parser.problem_mark.column + 1,
                            parser.problem ? parser.problem : "unknown problem", ctx);
                        c->nerr++;
                        break;
                }
                bool end = ev.type == YAML_STREAM_END_EVENT;
                r = loader_event(&l, &ev);
                yaml_event_delete(&ev);
                if (r < 0 || end)
                        break;
        }
        ynode_free(l.root);
        yaml_parser_delete(&parser);
        return r;
}

void manifest_set_free(struct manifest_set *set)
{
        if (!set)
                return;
        for (size_t i = 0; i < set->n; i++)
                doc_clear(&set->docs[i]);
        free(set->docs);
        set->docs = NULL;
        set->n = 0;
}

int manifest_parse(const char *filename, const char *buf, size_t len, struct manifest_set *out,
                   struct manifest_errors *errs)
{
        struct conv c = {.file = filename ? filename : "<input>", .errs = errs};
        memset(out, 0, sizeof(*out));
        if (len > MANIFEST_MAX_BYTES) {
                manifest_errors_add(errs, "%s: larger than the %d-byte limit for a manifest file",
                                    c.file, MANIFEST_MAX_BYTES);
                return -E2BIG;
        }
        int r = load_stream(&c, buf, len, out);
        if (r == 0 && c.nerr == 0 && !c.oom)
                r = manifest_set_check(out, errs);
        if (r == 0 && (c.nerr || c.oom))
                r = c.oom ? -ENOMEM : -EINVAL;
        if (r == -ENOMEM && !c.oom)
                manifest_errors_add(errs, "%s: out of memory", c.file);
        if (r < 0)
                manifest_set_free(out);
        return r;
}

int manifest_parse_file(const char *path, struct manifest_set *out, struct manifest_errors *errs)
{
        bool is_stdin = strcmp(path, "-") == 0;
        FILE *f = is_stdin ? stdin : fopen(path, "re");
        memset(out, 0, sizeof(*out));
        if (!f) {
                int e = errno;
                manifest_errors_add(errs, "%s: %s", path, strerror(e));
                return -e;
        }
        size_t cap = 64 * 1024, len = 0;
        char *buf = malloc(cap);
        int r = 0;
        while (buf) {
                if (len == cap) {
                        if (cap > MANIFEST_MAX_BYTES)
                                break;
                        char *nb = realloc(buf, cap * 2);
                        if (!nb) {
                                free(buf);
                                buf = NULL;
                                break;
                        }
                        buf = nb;
                        cap *= 2;
                }
                size_t got = fread(buf + len, 1, cap - len, f);
                len += got;
                if (got == 0 || len > MANIFEST_MAX_BYTES) /* enough to refuse it */
                        break;
        }
        if (!buf)
                r = -ENOMEM;
        else if (ferror(f))
                r = -EIO;
        if (!is_stdin)
                fclose(f);
        if (r < 0) {
                manifest_errors_add(errs, "%s: %s", path, strerror(-r));
                free(buf);
                return r;
        }
        r = manifest_parse(is_stdin ? "<stdin>" : path, buf, len, out, errs);
        free(buf);
        return r;
}

int manifest_set_append(struct manifest_set *dst, struct manifest_set *src)
{
        if (src->n == 0)
                return 0;
        struct manifest_doc *d = realloc(dst->docs, (dst->n + src->n) * sizeof(*d));
        if (!d)
                return -ENOMEM;
        memcpy(d + dst->n, src->docs, src->n * sizeof(*d));
        dst->docs = d;
        dst->n += src->n;
        free(src->docs);
        src->docs = NULL;
        src->n = 0;
        return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Cross-document checks */

static const char *doc_name(const struct manifest_doc *d)
{
        return d->kind == MANIFEST_KIND_VOLUME ? d->volume_name : d->workload->name;
}

struct port_ref {
        const Capsule__V1__PortMapping *p;
        size_t doc, idx;
};

static int port_ref_cmp(const void *a, const void *b)
{
        const struct port_ref *x = a, *y = b;
        if (x->p->host_port != y->p->host_port)
                return x->p->host_port < y->p->host_port ? -1 : 1;
        int c = strcasecmp(proto_of(x->p), proto_of(y->p));
        if (c)
                return c;
        c = strcmp(x->p->host_ip ? x->p->host_ip : "", y->p->host_ip ? y->p->host_ip : "");
        if (c)
                return c;
        if (x->doc != y->doc)
                return x->doc < y->doc ? -1 : 1;
        return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

static bool same_port_proto(const struct port_ref *a, const struct port_ref *b)
{
        return a->p->host_port == b->p->host_port &&
               strcasecmp(proto_of(a->p), proto_of(b->p)) == 0;
}

static bool same_ip(const struct port_ref *a, const struct port_ref *b)
{
        return strcmp(a->p->host_ip ? a->p->host_ip : "", b->p->host_ip ? b->p->host_ip : "") == 0;
}

/* Two candidates are enough: the first of a group and the first from another document. */
static const struct port_ref *other_doc(const struct port_ref *first, const struct port_ref *second,
                                        const struct port_ref *e)
{
        if (first && first->doc != e->doc)
                return first;
        if (second && second->doc != e->doc)
                return second;
        return NULL;
}

static void report_port_clash(const struct manifest_set *set, const struct port_ref *e,
                              const struct port_ref *o, struct manifest_errors *errs)
{
        if (e->doc < o->doc) { /* report the later document, pointing at the earlier one */
                const struct port_ref *t = e;
                e = o;
                o = t;
        }
        const struct manifest_doc *d = &set->docs[e->doc], *od = &set->docs[o->doc];
        manifest_errors_add(errs,
                            "%s: document %d (line %d): ports[%zu]: host port %u/%s is already "
                            "used by workload \"%s\" (%s document %d)",
                            d->file, d->index, d->port_lines ? d->port_lines[e->idx] : d->line,
                            e->idx, e->p->host_port, proto_of(e->p), od->workload->name, od->file,
                            od->index);
}

/* Sorted by (port, protocol, address): an entry clashes with a wildcard-address entry of the same
 * port from another document, or with an equal-address entry from another document. */
static int check_port_clashes(const struct manifest_set *set, struct manifest_errors *errs)
{
        size_t n = 0, k = 0;
        for (size_t i = 0; i < set->n; i++)
                if (set->docs[i].workload)
                        n += set->docs[i].workload->n_ports;
        if (n < 2)
                return 0;
        struct port_ref *refs = calloc(n, sizeof(*refs));
        if (!refs)
                return -ENOMEM;
        for (size_t i = 0; i < set->n; i++)
                for (size_t j = 0; set->docs[i].workload && j < set->docs[i].workload->n_ports; j++)
                        refs[k++] = (struct port_ref){set->docs[i].workload->ports[j], i, j};
        qsort(refs, n, sizeof(*refs), port_ref_cmp);
        int bad = 0;
        const struct port_ref *wild1 = NULL, *wild2 = NULL, *ip1 = NULL, *ip2 = NULL;
        for (size_t i = 0; i < n; i++) {
                const struct port_ref *e = &refs[i];
                if (i == 0 || !same_port_proto(e, e - 1))
                        wild1 = wild2 = ip1 = ip2 = NULL;
                if (i == 0 || !same_ip(e, e - 1) || !same_port_proto(e, e - 1))
                        ip1 = ip2 = NULL;
                const struct port_ref *o = other_doc(wild1, wild2, e);
                if (!o)
                        o = other_doc(ip1, ip2, e);
                if (o) {
                        report_port_clash(set, e, o, errs);
                        bad = 1;
                }
                bool wild = !e->p->host_ip || !*e->p->host_ip;
                if (wild && !wild1)
                        wild1 = e;
                else if (wild && !wild2 && e->doc != wild1->doc)
                        wild2 = e;
                if (!ip1)
                        ip1 = e;
                else if (!ip2 && e->doc != ip1->doc)
                        ip2 = e;
        }
        free(refs);
        return bad ? -EINVAL : 0;
}

int manifest_set_check(const struct manifest_set *set, struct manifest_errors *errs)
{
        int bad = 0;
        for (size_t i = 0; i < set->n; i++) {
                const struct manifest_doc *d = &set->docs[i];
                bool vol = d->kind == MANIFEST_KIND_VOLUME;
                for (size_t j = 0; j < i; j++) {
                        const struct manifest_doc *o = &set->docs[j];
                        if ((o->kind == MANIFEST_KIND_VOLUME) != vol ||
                            strcmp(doc_name(o), doc_name(d)) != 0)
                                continue;
                        manifest_errors_add(errs,
                                            "%s: document %d (line %d): name: %s \"%s\" is "
                                            "already declared in %s document %d (line %d)",
                                            d->file, d->index, d->line, vol ? "volume" : "workload",
                                            doc_name(d), o->file, o->index, o->line);
                        bad = 1;
                        break;
                }
        }
        int r = check_port_clashes(set, errs);
        if (r == -ENOMEM)
                return r;
        return bad || r ? -EINVAL : 0;
}

int manifest_check_mounts(const struct manifest_set *set,
                          bool (*volume_exists)(const char *name, void *ud), void *ud,
                          struct manifest_errors *errs)
{
        int bad = 0;
        for (size_t i = 0; i < set->n; i++) {
                const struct manifest_doc *d = &set->docs[i];
                if (!d->workload)
                        continue;
                for (size_t j = 0; j < d->workload->n_mounts; j++) {
                        const char *vol = d->workload->mounts[j]->volume;
                        bool found = false;
                        for (size_t k = 0; k < set->n && !found; k++)
                                found = set->docs[k].kind == MANIFEST_KIND_VOLUME &&
                                        strcmp(set->docs[k].volume_name, vol) == 0;
                        if (found || (volume_exists && volume_exists(vol, ud)))
                                continue;
                        manifest_errors_add(errs,
                                            "%s: document %d (line %d): mounts[%zu].volume: "
                                            "volume \"%s\" does not exist and is not declared "
                                            "in this manifest",
                                            d->file, d->index,
                                            d->mount_lines ? d->mount_lines[j] : d->line, j, vol);
                        bad = 1;
                }
        }
        return bad ? -EINVAL : 0;
}
