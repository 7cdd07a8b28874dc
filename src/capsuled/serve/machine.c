/* System.ApplyMachineConfig: replace the machine config of a running capsule.
 *
 * The new text is checked whole (machine_config_parse: fields and PEM, with line numbers; the
 * server certificate against its key and against pki.ca) and written atomically over the file
 * capsuled was started with; the operator's text is kept as sent, comments included. The
 * registries section takes effect at once: pulls take a reference to the live config
 * (serve_config_get/put) and a new one replaces it. Everything else (hostname, API address,
 * certificates, network, NTP servers, the commit window) is read by PID 1 and serve at start, so it
 * waits for the next boot, and the answer says so; the update keys are live too (Updates.Push reads
 * the live config), so a key rotation needs no reboot, and so is pki.revoked (the authorizer reads
 * the live config on every call): a revocation takes effect when the apply returns. A different
 * pki.ca is refused unless asked for: it would make every client certificate, the caller's
 * included, useless. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capsule/v1/system.pb-c.h"
#include "common/log.h"
#include "common/pki.h"
#include "events.h"
#include "serve.h"

#define MAX_CONFIG_BYTES (1u << 20)

static pthread_mutex_t apply_lock = PTHREAD_MUTEX_INITIALIZER;

int serve_config_init(struct serve_ctx *ctx, const char *path, struct cap_error *err)
{
        struct serve_config_ref *ref = calloc(1, sizeof(*ref));
        if (!ref)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        ref->refs = 1;
        if (machine_config_load(path, &ref->c, err) < 0) {
                free(ref);
                return err->code;
        }
        pthread_mutex_init(&ctx->live_lock, NULL);
        ctx->machine_config_path = path;
        ctx->live = ref;
        return 0;
}

struct serve_config_ref *serve_config_get(struct serve_ctx *ctx)
{
        pthread_mutex_lock(&ctx->live_lock);
        struct serve_config_ref *ref = ctx->live;
        ref->refs++;
        pthread_mutex_unlock(&ctx->live_lock);
        return ref;
}

void serve_config_put(struct serve_ctx *ctx, struct serve_config_ref *ref)
{
        if (!ref)
                return;
        pthread_mutex_lock(&ctx->live_lock);
        bool last = --ref->refs == 0;
        pthread_mutex_unlock(&ctx->live_lock);
        if (last) {
                machine_config_free(&ref->c);
                free(ref);
        }
}

void serve_config_fini(struct serve_ctx *ctx)
{
        if (!ctx->live)
                return;
        serve_config_put(ctx, ctx->live);
        ctx->live = NULL;
        pthread_mutex_destroy(&ctx->live_lock);
}

static bool str_eq(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool strv_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
        if (na != nb)
                return false;
        for (size_t i = 0; i < na; i++)
                if (!str_eq(a[i], b[i]))
                        return false;
        return true;
}

static bool registries_eq(const struct machine_config *a, const struct machine_config *b)
{
        if (!strv_eq(a->insecure_registries, a->n_insecure_registries, b->insecure_registries,
                     b->n_insecure_registries) ||
            !str_eq(a->registry_ca_pem, b->registry_ca_pem) ||
            a->n_registry_auth != b->n_registry_auth)
                return false;
        for (size_t i = 0; i < a->n_registry_auth; i++) {
                const struct registry_cred *x = &a->registry_auth[i], *y = &b->registry_auth[i];
                if (!str_eq(x->host, y->host) || !str_eq(x->username, y->username) ||
                    !str_eq(x->password, y->password))
                        return false;
        }
        return true;
}

/* The sections of b that differ from a, in the order of the file. */
static size_t config_changes(const struct machine_config *a, const struct machine_config *b,
                             const char *out[10])
{
        size_t n = 0;
        if (!str_eq(a->hostname, b->hostname))
                out[n++] = "hostname";
        if (!str_eq(a->listen, b->listen))
                out[n++] = "api";
        if (!str_eq(a->ca_pem, b->ca_pem) || !str_eq(a->cert_pem, b->cert_pem) ||
            !str_eq(a->key_pem, b->key_pem))
                out[n++] = "pki";
        if (!machine_config_revoked_equal(a, b))
                out[n++] = "pki.revoked";
        if (!registries_eq(a, b))
                out[n++] = "registries";
        if (a->dhcp != b->dhcp || !str_eq(a->address, b->address) ||
            !str_eq(a->gateway, b->gateway) || !strv_eq(a->dns, a->n_dns, b->dns, b->n_dns))
                out[n++] = "network";
        if (!machine_config_updates_equal(a, b))
                out[n++] = "updates";
        if (a->ntp_servers_set != b->ntp_servers_set ||
            !strv_eq(a->ntp_servers, a->n_ntp_servers, b->ntp_servers, b->n_ntp_servers))
                out[n++] = "time";
        if (a->metrics_off != b->metrics_off ||
            a->metrics_insecure_http != b->metrics_insecure_http ||
            !str_eq(a->metrics_listen, b->metrics_listen))
                out[n++] = "metrics";
        return n;
}

static char **strv_dup(const char *const *v, size_t n)
{
        char **out = calloc(n + 1, sizeof(*out));
        for (size_t i = 0; out && i < n; i++)
                if (!(out[i] = strdup(v[i]))) {
                        for (size_t j = 0; j < i; j++)
                                free(out[j]);
                        free(out);
                        return NULL;
                }
        return out;
}

static int check_new(const Capsule__V1__ApplyMachineConfigRequest *q, struct serve_config_ref *n,
                     struct cap_error *err)
{
        if (q->config.len == 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "config: empty");
        if (q->config.len > MAX_CONFIG_BYTES)
                return cap_error_set(err, -EFBIG, CAP_INVALID_ARGUMENT,
                                     "config: %zu bytes, at most %u", q->config.len,
                                     MAX_CONFIG_BYTES);
        if (machine_config_parse("machine config", (const char *)q->config.data, q->config.len,
                                 &n->c, err) < 0)
                return err->code;
        if (pki_key_matches_cert(n->c.cert_pem, n->c.key_pem, err) < 0)
                return cap_error_prefix(err, "machine config: pki.key does not match pki.cert");
        if (pki_verify(n->c.ca_pem, n->c.cert_pem, PKI_PURPOSE_SERVER, err) < 0) {
                err->status = CAP_INVALID_ARGUMENT;
                return cap_error_prefix(err, "machine config: pki.cert is not a valid server "
                                             "certificate of pki.ca");
        }
        return 0;
}

int system_apply_machine_config(struct rpc_call *call, const ProtobufCMessage *req,
                                ProtobufCMessage *resp, struct cap_error *err)
{
        struct serve_ctx *ctx = rpc_call_method(call)->userdata;
        const Capsule__V1__ApplyMachineConfigRequest *q =
            (const Capsule__V1__ApplyMachineConfigRequest *)req;
        Capsule__V1__ApplyMachineConfigResponse *r =
            (Capsule__V1__ApplyMachineConfigResponse *)resp;
        struct serve_config_ref *n = calloc(1, sizeof(*n));
        if (!n)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        n->refs = 1;
        int rc = check_new(q, n, err);
        if (rc < 0) {
                serve_config_put(ctx, n);
                return rc;
        }
        pthread_mutex_lock(&apply_lock); /* one apply at a time: compare, write, swap */
        struct serve_config_ref *cur = serve_config_get(ctx);
        const char *changed[10];
        size_t nc = config_changes(&cur->c, &n->c, changed);
        bool ca_changed = !str_eq(cur->c.ca_pem, n->c.ca_pem);
        serve_config_put(ctx, cur);
        if (ca_changed && !q->replace_ca) {
                rc =
                    cap_error_set(err, -EPERM, CAP_FAILED_PRECONDITION,
                                  "machine config: pki.ca differs from the capsule's: every client "
                                  "certificate, yours included, would stop working at the next "
                                  "boot; keep the CA, or pass --replace-ca if that is the intent");
                goto out;
        }
        if (nc > 0 && !q->dry_run) {
                rc = config_write_file_atomic(ctx->machine_config_path, q->config.data,
                                              q->config.len, 0600, err);
                if (rc < 0) {
                        cap_error_prefix(err, "save %s", ctx->machine_config_path);
                        goto out;
                }
        }
        /* registries, updates (trusted keys: rotation without a reboot) and pki.revoked (the
         * authorizer checks every call against the live list) are live */
        bool registries = false, later = false;
        const char *live[3];
        size_t n_live = 0;
        for (size_t i = 0; i < nc; i++) {
                if (strcmp(changed[i], "registries") == 0 || strcmp(changed[i], "updates") == 0 ||
                    strcmp(changed[i], "pki.revoked") == 0)
                        live[n_live++] = changed[i];
                else
                        later = true;
        }
        registries = n_live > 0;
        r->changed = strv_dup(changed, nc);
        r->n_changed = r->changed ? nc : 0;
        if (registries && !q->dry_run) {
                r->applied = strv_dup(live, n_live);
                r->n_applied = r->applied ? n_live : 0;
        }
        r->reboot_required = later;
        if (nc > 0 && !q->dry_run) {
                /* From here the file holds the new config; pulls see its registries now. */
                pthread_mutex_lock(&ctx->live_lock);
                struct serve_config_ref *old = ctx->live;
                ctx->live = n;
                pthread_mutex_unlock(&ctx->live_lock);
                serve_config_put(ctx, old);
                n = NULL;
                char what[128] = "";
                for (size_t i = 0; i < nc; i++)
                        snprintf(what + strlen(what), sizeof(what) - strlen(what), "%s%s",
                                 i ? "," : "", changed[i]);
                log_info("machine config: applied (%s changed%s)", what,
                         later ? "; the rest at the next boot" : "");
                events_publish(ctx->events, "system", "machine-config", "applied", "%s", what);
        }
        if ((nc && !r->changed) || (registries && !q->dry_run && !r->applied))
                rc = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
out:
        pthread_mutex_unlock(&apply_lock);
        serve_config_put(ctx, n);
        return rc;
}
