/* Helpers shared by capsulectl's verbs: config loading, the API connection, error hints, output. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capsulectl.h"
#include "common/pki.h"
#include "rpc/rpc.h"

int ctl_load_config(struct ctl *ctl)
{
        if (ctl->cfg_loaded)
                return 0;
        struct cap_error err = {0};
        if (client_config_load(ctl->config_path, &ctl->cfg, &err) < 0) {
                fprintf(ctl->err, "capsulectl: %s\n", err.msg);
                if (err.status == CAP_NOT_FOUND || err.code == -ENOENT)
                        fprintf(ctl->err, "hint: create one with `capsulectl gen config NAME -o DIR` and "
                                        "point --config or $CAPSULECONFIG at DIR/capsuleconfig\n");
                return -1;
        }
        ctl->cfg_loaded = true;
        return 0;
}

/* Warns on stderr when a certificate (what: "client certificate of context \"home\"") expires
 * within PKI_EXPIRY_WARN_DAYS days or has expired, saying when; hint: what to do about it. */
static void warn_expiry(FILE *errf, const char *what, const char *cert_pem, const char *hint)
{
        struct cap_error err = {0};
        struct pki_cert_info info;
        long days = 0;
        if (!cert_pem || pki_cert_days_left(cert_pem, &days, &err) < 0 ||
            pki_cert_info(cert_pem, &info, &err) < 0)
                return;
        char when[32];
        struct tm tm;
        gmtime_r(&info.not_after, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", &tm);
        const char *cn = info.cn ? info.cn : "";
        if (days < 0)
                fprintf(errf, "capsulectl: warning: the %s (CN %s) expired on %s; %s\n", what, cn,
                        when, hint);
        else if (days < PKI_EXPIRY_WARN_DAYS)
                fprintf(errf,
                        "capsulectl: warning: the %s (CN %s) expires in %ld day%s, on %s; %s\n",
                        what, cn, days, days == 1 ? "" : "s", when, hint);
        pki_cert_info_free(&info);
}

static void warn_cert_expiry(FILE *errf, const struct client_context *cx)
{
        char what[160];
        snprintf(what, sizeof(what), "client certificate of context \"%s\"", cx->name);
        warn_expiry(errf, what, cx->cert_pem,
                    "renew it with `capsulectl gen cert --renew CONFIG --secrets DIR/secrets`");
}

void ctl_warn_server_cert(struct ctl *ctl, struct rpc_client *c)
{
        char *pem = rpc_client_peer_cert_pem(c);
        warn_expiry(ctl->err, "server certificate of the capsule", pem,
                    "put a new one from the same CA into pki.cert/pki.key and install it with "
                    "`capsulectl machine-config apply` (it takes effect at the next boot)");
        free(pem);
}

void ctl_parse_done(struct ctl *ctl)
{
        if (ctl->parse_lock) {
                pthread_mutex_unlock(ctl->parse_lock);
                ctl->parse_lock = NULL;
        }
}

struct rpc_client *ctl_client(struct ctl *ctl)
{
        ctl_parse_done(ctl);
        if (ctl->client)
                return ctl->client;
        if (ctl_load_config(ctl) < 0)
                return NULL;
        const struct client_context *cx = client_config_find(&ctl->cfg, ctl->context_name);
        if (!cx) {
                if (ctl->context_name)
                        fprintf(ctl->err, "capsulectl: context \"%s\" not found in %s; list them with "
                                        "`capsulectl config contexts`\n", ctl->context_name, ctl->config_path);
                else
                        fprintf(ctl->err, "capsulectl: %s has no current context; pick one with "
                                        "`capsulectl config use-context NAME`\n", ctl->config_path);
                return NULL;
        }
        const char *endpoint = ctl->node       ? ctl->node
                               : ctl->endpoint ? ctl->endpoint
                               : cx->endpoint  ? cx->endpoint
                               : cx->n_endpoints ? cx->endpoints[0]
                                                 : NULL;
        if (!endpoint || !*endpoint) {
                fprintf(ctl->err, "capsulectl: context \"%s\" has no endpoint; pass --capsule HOST:PORT\n", cx->name);
                return NULL;
        }
        warn_cert_expiry(ctl->err, cx);
        struct rpc_tls tls = {
                .ca_pem = cx->ca_pem,
                .cert_pem = cx->cert_pem,
                .key_pem = cx->key_pem,
        };
        struct cap_error err = {0};
        ctl->client = rpc_client_new(endpoint, &tls, &err);
        if (!ctl->client)
                ctl_print_error(ctl, "connect", &err);
        return ctl->client;
}

void ctl_print_error(struct ctl *ctl, const char *what, const struct cap_error *err)
{
        FILE *f = ctl->err;
        fprintf(f, "capsulectl: %s: %s (%s)\n", what, err->msg, cap_status_name(err->status));
        const char *m = err->msg;
        if (err->status == CAP_UNAVAILABLE) {
                if (strstr(m, "ssl") || strstr(m, "SSL") || strstr(m, "certificate") || strstr(m, "handshake"))
                        fprintf(f, "hint: the TLS handshake failed: certificate signed by an unknown "
                                        "authority, or an expired certificate. Is --config (%s) pointing at "
                                        "this capsule's capsuleconfig?\n", ctl->config_path);
                else
                        fprintf(f, "hint: is the capsule running and reachable at %s? Check the "
                                        "endpoint with --capsule HOST:PORT or $CAPSULE_HOST\n",
                                ctl->node       ? ctl->node
                                : ctl->endpoint ? ctl->endpoint
                                                : "the context's endpoint");
        } else if (err->status == CAP_PERMISSION_DENIED && strstr(err->msg, "role")) {
                /* (not an update bundle's signature, also PERMISSION_DENIED: its message says) */
                fprintf(f, "hint: your certificate's role does not allow this; ask for an admin "
                                "certificate (`capsulectl gen cert --role admin ...`)\n");
        } else if (err->status == CAP_UNAUTHENTICATED && strstr(err->msg, "is revoked")) {
                fprintf(f, "hint: the capsule's admin revoked this certificate (machine config "
                           "pki.revoked); ask for a new one (`capsulectl gen cert`)\n");
        } else if (err->status == CAP_DEADLINE_EXCEEDED) {
                fprintf(f, "hint: no answer in time; raise --timeout or check the capsule with "
                                "`capsulectl health`\n");
        } else if (err->status == CAP_UNIMPLEMENTED) {
                fprintf(f, "hint: this capsule's version does not implement that call yet\n");
        }
}

static void yaml_scalar(FILE *f, struct json_object *o)
{
        switch (json_object_get_type(o)) {
        case json_type_null: fputs("null", f); break;
        case json_type_boolean: fputs(json_object_get_boolean(o) ? "true" : "false", f); break;
        case json_type_int: fprintf(f, "%lld", (long long)json_object_get_int64(o)); break;
        case json_type_double: fprintf(f, "%g", json_object_get_double(o)); break;
        default: {
                /* JSON string quoting is valid YAML double-quoted style */
                const char *s = json_object_get_string(o);
                bool plain = *s && strcspn(s, ":#{}[],&*!|>'\"%@`\n\\") == strlen(s) && s[0] != ' ' &&
                             s[0] != '-' && s[0] != '?' && s[strlen(s) - 1] != ' ' &&
                             strcmp(s, "true") && strcmp(s, "false") && strcmp(s, "null") &&
                             strcmp(s, "yes") && strcmp(s, "no") && strspn(s, "0123456789.+-eE") != strlen(s);
                if (plain)
                        fputs(s, f);
                else
                        fputs(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                                    JSON_C_TO_STRING_NOSLASHESCAPE), f);
        }
        }
}

static bool is_container(struct json_object *o)
{
        enum json_type t = json_object_get_type(o);
        return (t == json_type_object && json_object_object_length(o) > 0) ||
               (t == json_type_array && json_object_array_length(o) > 0);
}

static void yaml_emit(FILE *f, struct json_object *o, int indent);

/* Emits an object's keys at indent; with first_inline the first key follows a "- " already
 * printed on the current line. */
static void yaml_emit_object(FILE *f, struct json_object *o, int indent, bool first_inline)
{
        bool first = true;
        json_object_object_foreach(o, k, v)
        {
                fprintf(f, "%*s%s:", first && first_inline ? 0 : indent, "", k);
                first = false;
                if (is_container(v)) {
                        fputc('\n', f);
                        yaml_emit(f, v, indent + 2);
                } else {
                        fputc(' ', f);
                        if (json_object_get_type(v) == json_type_object)
                                fputs("{}", f);
                        else if (json_object_get_type(v) == json_type_array)
                                fputs("[]", f);
                        else
                                yaml_scalar(f, v);
                        fputc('\n', f);
                }
        }
}

static void yaml_emit(FILE *f, struct json_object *o, int indent)
{
        if (json_object_get_type(o) == json_type_object) {
                yaml_emit_object(f, o, indent, false);
        } else if (json_object_get_type(o) == json_type_array) {
                size_t n = json_object_array_length(o);
                for (size_t i = 0; i < n; i++) {
                        struct json_object *v = json_object_array_get_idx(o, i);
                        if (json_object_get_type(v) == json_type_object && is_container(v)) {
                                /* "- " then the object's keys, the first on the dash's line */
                                fprintf(f, "%*s- ", indent, "");
                                yaml_emit_object(f, v, indent + 2, true);
                        } else if (is_container(v)) {
                                fprintf(f, "%*s-\n", indent, "");
                                yaml_emit(f, v, indent + 2);
                        } else {
                                fprintf(f, "%*s- ", indent, "");
                                yaml_scalar(f, v);
                                fputc('\n', f);
                        }
                }
        } else {
                fprintf(f, "%*s", indent, "");
                yaml_scalar(f, o);
                fputc('\n', f);
        }
}

void ctl_print_structured(struct ctl *ctl, struct json_object *obj)
{
        if (ctl->output == CTL_OUT_YAML)
                yaml_emit(ctl->out, obj, 0);
        else
                fprintf(ctl->out, "%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY |
                                                                      JSON_C_TO_STRING_SPACED |
                                                                      JSON_C_TO_STRING_NOSLASHESCAPE));
}

bool ctl_wants_help(int argc, char **argv, const char *usage)
{
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0)
                        break;
                if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                        fputs(usage, stdout);
                        return true;
                }
        }
        return false;
}

void ctl_format_age(long long s, char *buf, size_t len)
{
        if (s < 0)
                s = 0;
        if (s < 120)
                snprintf(buf, len, "%llds", s);
        else if (s < 3600)
                snprintf(buf, len, "%lldm%llds", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, len, "%lldh%lldm", s / 3600, (s % 3600) / 60);
        else
                snprintf(buf, len, "%lldd%lldh", s / 86400, (s % 86400) / 3600);
}

void ctl_cleanup(struct ctl *ctl)
{
        if (ctl->client)
                rpc_client_free(ctl->client);
        if (ctl->cfg_loaded)
                client_config_free(&ctl->cfg);
        free(ctl->config_path_owned);
}
