/* Specs back to manifests: normalisation, deep copy, canonical equality and canonical YAML
 * (see manifest.h). `capsulectl get -o yaml`, `describe` and `diff` print what
 * manifest_workload_to_yaml gives, and the server decides "unchanged" with
 * manifest_workload_equal, so both must agree on what "the same spec" means: normalise first. */
#include "manifest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "cleanup.h"

const char *manifest_restart_name(Capsule__V1__RestartPolicy restart)
{
        switch (restart) {
        case CAPSULE__V1__RESTART_POLICY__RESTART_POLICY_UNSPECIFIED:
        case CAPSULE__V1__RESTART_POLICY__ALWAYS:
                return "always";
        case CAPSULE__V1__RESTART_POLICY__ON_FAILURE:
                return "on-failure";
        case CAPSULE__V1__RESTART_POLICY__NEVER:
                return "never";
        default:
                return "unknown";
        }
}

const char *manifest_pull_policy_name(Capsule__V1__PullPolicy pull)
{
        switch (pull) {
        case CAPSULE__V1__PULL_POLICY__PULL_POLICY_UNSPECIFIED:
        case CAPSULE__V1__PULL_POLICY__IF_NOT_PRESENT:
                return "IfNotPresent";
        case CAPSULE__V1__PULL_POLICY__PULL_ALWAYS:
                return "Always";
        case CAPSULE__V1__PULL_POLICY__PULL_NEVER:
                return "Never";
        default:
                return "unknown";
        }
}

const char *manifest_workload_kind_name(Capsule__V1__WorkloadKind kind)
{
        switch (kind) {
        case CAPSULE__V1__WORKLOAD_KIND__WORKLOAD_KIND_UNSPECIFIED:
        case CAPSULE__V1__WORKLOAD_KIND__CONTAINER:
                return "Container";
        case CAPSULE__V1__WORKLOAD_KIND__MICROVM:
                return "MicroVM";
        default:
                return "unknown";
        }
}

/* ---------------------------------------------------------------------------------------------
 * Normalisation, copy, equality */

static bool str_empty(const char *s)
{
        return !s || !*s;
}

/* Replaces a spec string (never freeing protobuf-c's shared empty string). */
static int replace_str(char **field, const char *value)
{
        char *s = strdup(value);
        if (!s)
                return -ENOMEM;
        if (*field && *field != protobuf_c_empty_string)
                free(*field);
        *field = s;
        return 0;
}

static void null_to_empty(char **field)
{
        if (!*field)
                *field = (char *)protobuf_c_empty_string;
}

static int env_cmp(const void *a, const void *b)
{
        const Capsule__V1__WorkloadSpec__EnvEntry *x =
            *(Capsule__V1__WorkloadSpec__EnvEntry *const *)a;
        const Capsule__V1__WorkloadSpec__EnvEntry *y =
            *(Capsule__V1__WorkloadSpec__EnvEntry *const *)b;
        return strcmp(x->key ? x->key : "", y->key ? y->key : "");
}

static int str_cmp(const void *a, const void *b)
{
        const char *x = *(char *const *)a, *y = *(char *const *)b;
        return strcmp(x ? x : "", y ? y : "");
}

bool manifest_env_is_secret(const Capsule__V1__WorkloadSpec *w, const char *key)
{
        for (size_t i = 0; key && i < w->n_secret_env; i++)
                if (w->secret_env[i] && strcmp(w->secret_env[i], key) == 0)
                        return true;
        return false;
}

int manifest_workload_redact(Capsule__V1__WorkloadSpec *w, bool all)
{
        for (size_t i = 0; i < w->n_env; i++)
                if ((all || manifest_env_is_secret(w, w->env[i]->key)) &&
                    replace_str(&w->env[i]->value, MANIFEST_REDACTED) < 0)
                        return -ENOMEM;
        return 0;
}

static int normalize_port(Capsule__V1__PortMapping *p)
{
        null_to_empty(&p->host_ip);
        if (str_empty(p->protocol))
                return replace_str(&p->protocol, "tcp");
        for (char *c = p->protocol; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                        *c = (char)(*c - 'A' + 'a');
        return 0;
}

int manifest_workload_normalize(Capsule__V1__WorkloadSpec *w)
{
        if (w->kind == CAPSULE__V1__WORKLOAD_KIND__WORKLOAD_KIND_UNSPECIFIED)
                w->kind = CAPSULE__V1__WORKLOAD_KIND__CONTAINER;
        if (w->restart == CAPSULE__V1__RESTART_POLICY__RESTART_POLICY_UNSPECIFIED)
                w->restart = CAPSULE__V1__RESTART_POLICY__ALWAYS;
        if (w->pull_policy == CAPSULE__V1__PULL_POLICY__PULL_POLICY_UNSPECIFIED)
                w->pull_policy = CAPSULE__V1__PULL_POLICY__IF_NOT_PRESENT;
        null_to_empty(&w->name);
        null_to_empty(&w->image);
        null_to_empty(&w->working_dir);
        null_to_empty(&w->user);
        null_to_empty(&w->accel);
        for (size_t i = 0; i < w->n_env; i++) {
                null_to_empty(&w->env[i]->key);
                null_to_empty(&w->env[i]->value);
        }
        if (w->n_env > 1)
                qsort(w->env, w->n_env, sizeof(*w->env), env_cmp);
        for (size_t i = 0; i < w->n_secret_env; i++)
                null_to_empty(&w->secret_env[i]);
        if (w->n_secret_env > 1)
                qsort(w->secret_env, w->n_secret_env, sizeof(*w->secret_env), str_cmp);
        for (size_t i = 0; i < w->n_ports; i++)
                if (normalize_port(w->ports[i]) < 0)
                        return -ENOMEM;
        for (size_t i = 0; i < w->n_mounts; i++) {
                null_to_empty(&w->mounts[i]->volume);
                null_to_empty(&w->mounts[i]->path);
        }
        if (w->kind == CAPSULE__V1__WORKLOAD_KIND__MICROVM && str_empty(w->accel) &&
            replace_str(&w->accel, "auto") < 0)
                return -ENOMEM;
        if (w->resources) {
                uint64_t milli = quantity_cpus_to_milli(w->resources->cpus);
                if (milli != UINT64_MAX)
                        w->resources->cpus = (double)milli / 1000.0;
                if (w->resources->cpus == 0 && w->resources->memory_bytes == 0) {
                        protobuf_c_message_free_unpacked(&w->resources->base, NULL);
                        w->resources = NULL;
                }
        }
        return 0;
}

Capsule__V1__WorkloadSpec *manifest_workload_copy(const Capsule__V1__WorkloadSpec *spec)
{
        size_t len = capsule__v1__workload_spec__get_packed_size(spec);
        _cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
        if (!buf)
                return NULL;
        capsule__v1__workload_spec__pack(spec, buf);
        return capsule__v1__workload_spec__unpack(NULL, len, buf);
}

/* Normalised copy, packed. */
static uint8_t *pack_normalized(const Capsule__V1__WorkloadSpec *spec, size_t *len)
{
        Capsule__V1__WorkloadSpec *c = manifest_workload_copy(spec);
        if (!c)
                return NULL;
        uint8_t *buf = NULL;
        if (manifest_workload_normalize(c) == 0) {
                *len = capsule__v1__workload_spec__get_packed_size(c);
                buf = malloc(*len ? *len : 1);
                if (buf)
                        capsule__v1__workload_spec__pack(c, buf);
        }
        capsule__v1__workload_spec__free_unpacked(c, NULL);
        return buf;
}

int manifest_workload_equal(const Capsule__V1__WorkloadSpec *a, const Capsule__V1__WorkloadSpec *b)
{
        size_t la = 0, lb = 0;
        _cleanup_free_ uint8_t *pa = pack_normalized(a, &la);
        _cleanup_free_ uint8_t *pb = pack_normalized(b, &lb);
        if (!pa || !pb)
                return -ENOMEM;
        return la == lb && memcmp(pa, pb, la) == 0;
}

/* ---------------------------------------------------------------------------------------------
 * Canonical YAML */

struct out {
        yaml_emitter_t e;
        char *buf;
        size_t len, cap;
        bool failed;
};

static int out_write(void *data, unsigned char *bytes, size_t size)
{
        struct out *o = data;
        if (o->len + size + 1 > o->cap) {
                size_t cap = o->cap ? o->cap : 512;
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

static void emit(struct out *o, yaml_event_t *ev, int init_ok)
{
        if (o->failed) {
                if (init_ok)
                        yaml_event_delete(ev);
                return;
        }
        if (!init_ok || !yaml_emitter_emit(&o->e, ev))
                o->failed = true;
}

/* Strings that a YAML reader could take for null, a boolean or a number are quoted, so that
 * other tools (and YAML 1.1 readers) read back a string. */
static bool looks_typed(const char *s)
{
        static const char *const words[] = {"null", "~",  "true", "false", "yes",
                                            "no",   "on", "off",  "y",     "n"};
        if (!*s)
                return true;
        for (size_t i = 0; i < ARRAY_SIZE(words); i++)
                if (strcasecmp(s, words[i]) == 0)
                        return true;
        const char *p = s;
        if (*p == '+' || *p == '-' || *p == '.')
                p++;
        return *p >= '0' && *p <= '9';
}

static void emit_str_style(struct out *o, const char *s, yaml_scalar_style_t style)
{
        yaml_event_t ev;
        s = s ? s : "";
        int ok = yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1,
                                              1, style);
        emit(o, &ev, ok);
}

/* Words made of these characters read well unquoted; anything else is double-quoted. */
static bool is_simple_word(const char *s)
{
        return s[strspn(
                   s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:@%+=-")] ==
               '\0';
}

static void emit_str(struct out *o, const char *s)
{
        s = s ? s : "";
        emit_str_style(o, s,
                       looks_typed(s) || !is_simple_word(s) ? YAML_DOUBLE_QUOTED_SCALAR_STYLE
                                                            : YAML_ANY_SCALAR_STYLE);
}

static void emit_plain(struct out *o, const char *s)
{
        emit_str_style(o, s, YAML_PLAIN_SCALAR_STYLE);
}

static void emit_map(struct out *o, bool start, bool flow)
{
        yaml_event_t ev;
        int ok = start ? yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                                             flow ? YAML_FLOW_MAPPING_STYLE
                                                                  : YAML_BLOCK_MAPPING_STYLE)
                       : yaml_mapping_end_event_initialize(&ev);
        emit(o, &ev, ok);
}

static void emit_seq(struct out *o, bool start, bool flow)
{
        yaml_event_t ev;
        int ok = start ? yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                              flow ? YAML_FLOW_SEQUENCE_STYLE
                                                                   : YAML_BLOCK_SEQUENCE_STYLE)
                       : yaml_sequence_end_event_initialize(&ev);
        emit(o, &ev, ok);
}

static void emit_kv(struct out *o, const char *key, const char *value)
{
        emit_plain(o, key);
        emit_str(o, value);
}

static void emit_kv_plain(struct out *o, const char *key, const char *value)
{
        emit_plain(o, key);
        emit_plain(o, value);
}

static void emit_list(struct out *o, const char *key, char **v, size_t n)
{
        if (!n)
                return;
        emit_plain(o, key);
        emit_seq(o, true, true);
        for (size_t i = 0; i < n; i++)
                emit_str(o, v[i]);
        emit_seq(o, false, true);
}

static void emit_ports(struct out *o, const Capsule__V1__WorkloadSpec *w)
{
        if (!w->n_ports)
                return;
        emit_plain(o, "ports");
        emit_seq(o, true, false);
        for (size_t i = 0; i < w->n_ports; i++) {
                const Capsule__V1__PortMapping *p = w->ports[i];
                const char *ip = p->host_ip ? p->host_ip : "";
                const char *proto = str_empty(p->protocol) ? "tcp" : p->protocol;
                char text[160];
                snprintf(text, sizeof(text), "%s%.64s%s%s%u:%u/%.8s", strchr(ip, ':') ? "[" : "",
                         ip, strchr(ip, ':') ? "]" : "", *ip ? ":" : "", p->host_port,
                         p->workload_port, proto);
                emit_str_style(o, text, YAML_DOUBLE_QUOTED_SCALAR_STYLE);
        }
        emit_seq(o, false, false);
}

static void emit_mounts(struct out *o, const Capsule__V1__WorkloadSpec *w)
{
        if (!w->n_mounts)
                return;
        emit_plain(o, "mounts");
        emit_seq(o, true, false);
        for (size_t i = 0; i < w->n_mounts; i++) {
                emit_map(o, true, false);
                emit_kv(o, "volume", w->mounts[i]->volume);
                emit_kv(o, "path", w->mounts[i]->path);
                if (w->mounts[i]->read_only)
                        emit_kv_plain(o, "readOnly", "true");
                emit_map(o, false, false);
        }
        emit_seq(o, false, false);
}

/* A map {KEY: value}, or with a secret among them the list form that can mark it:
 * [{name, value, secret: true}]. */
static void emit_env(struct out *o, const Capsule__V1__WorkloadSpec *w)
{
        if (!w->n_env)
                return;
        emit_plain(o, "env");
        if (w->n_secret_env) {
                emit_seq(o, true, false);
                for (size_t i = 0; i < w->n_env; i++) {
                        emit_map(o, true, true);
                        emit_kv(o, "name", w->env[i]->key);
                        emit_kv(o, "value", w->env[i]->value);
                        if (manifest_env_is_secret(w, w->env[i]->key))
                                emit_kv_plain(o, "secret", "true");
                        emit_map(o, false, true);
                }
                emit_seq(o, false, false);
                return;
        }
        emit_map(o, true, false);
        for (size_t i = 0; i < w->n_env; i++) {
                emit_str(o, w->env[i]->key);
                emit_str(o, w->env[i]->value);
        }
        emit_map(o, false, false);
}

static void emit_resources(struct out *o, const Capsule__V1__Resources *r)
{
        char buf[QUANTITY_BUF_SIZE];
        if (!r || (r->cpus == 0 && r->memory_bytes == 0))
                return;
        emit_plain(o, "resources");
        emit_map(o, true, false);
        if (r->cpus != 0)
                emit_kv_plain(o, "cpus", quantity_format_cpus(r->cpus, buf, sizeof(buf)));
        if (r->memory_bytes)
                emit_kv_plain(o, "memory",
                              quantity_format_bytes(r->memory_bytes, buf, sizeof(buf)));
        emit_map(o, false, false);
}

static void emit_start(struct out *o)
{
        yaml_event_t ev;
        emit(o, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
        emit(o, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1));
        emit_map(o, true, false);
}

static char *emit_finish(struct out *o)
{
        yaml_event_t ev;
        emit_map(o, false, false);
        emit(o, &ev, yaml_document_end_event_initialize(&ev, 1));
        emit(o, &ev, yaml_stream_end_event_initialize(&ev));
        if (!o->failed && !yaml_emitter_flush(&o->e))
                o->failed = true;
        yaml_emitter_delete(&o->e);
        if (o->failed) {
                free(o->buf);
                return NULL;
        }
        return o->buf;
}

static bool out_init(struct out *o)
{
        memset(o, 0, sizeof(*o));
        if (!yaml_emitter_initialize(&o->e))
                return false;
        yaml_emitter_set_output(&o->e, out_write, o);
        yaml_emitter_set_unicode(&o->e, 1);
        yaml_emitter_set_width(&o->e, -1);
        yaml_emitter_set_indent(&o->e, 2);
        return true;
}

char *manifest_workload_to_yaml(const Capsule__V1__WorkloadSpec *w)
{
        struct out o;
        char buf[QUANTITY_BUF_SIZE];
        const char *kind = manifest_workload_kind_name(w->kind);
        const char *restart = manifest_restart_name(w->restart);
        const char *pull = manifest_pull_policy_name(w->pull_policy);
        bool vm = w->kind == CAPSULE__V1__WORKLOAD_KIND__MICROVM;
        if (!out_init(&o))
                return NULL;
        emit_start(&o);
        emit_kv_plain(&o, "kind", kind);
        emit_kv(&o, "name", w->name);
        emit_kv(&o, "image", w->image);
        emit_list(&o, "command", w->command, w->n_command);
        emit_list(&o, "args", w->args, w->n_args);
        emit_env(&o, w);
        emit_ports(&o, w);
        emit_mounts(&o, w);
        emit_kv_plain(&o, "restart", restart);
        emit_resources(&o, w->resources);
        emit_kv_plain(&o, "pullPolicy", pull);
        if (!str_empty(w->working_dir))
                emit_kv(&o, "workingDir", w->working_dir);
        if (!str_empty(w->user))
                emit_kv(&o, "user", w->user);
        if (w->privileged)
                emit_kv_plain(&o, "privileged", "true");
        if (vm || !str_empty(w->accel))
                emit_kv(&o, "accel", str_empty(w->accel) ? "auto" : w->accel);
        if (w->disk_bytes)
                emit_kv_plain(&o, "disk", quantity_format_bytes(w->disk_bytes, buf, sizeof(buf)));
        return emit_finish(&o);
}

char *manifest_volume_to_yaml(const char *name, uint64_t size_bytes)
{
        struct out o;
        char buf[QUANTITY_BUF_SIZE];
        if (!out_init(&o))
                return NULL;
        emit_start(&o);
        emit_kv_plain(&o, "kind", "Volume");
        emit_kv(&o, "name", name);
        emit_kv_plain(&o, "size", quantity_format_bytes(size_bytes, buf, sizeof(buf)));
        return emit_finish(&o);
}
