/* Authorization of API calls by role. The role is the verified client certificate's subject O:
 *   capsule:admin    - every method
 *   capsule:operator - workloads, volumes, images, logs, exec, dmesg; not the machine config,
 *                      updates, reboot or the debug container
 *   capsule:reader   - read-only methods (get, list, logs, events, health, version, metrics)
 * Each method's least role is in the table in services.c (SERVE_NEEDS). A call without a verified
 * certificate, or with another O, is refused, and so is a certificate whose serial the live
 * machine config revokes (pki.revoked; machine-config apply replaces the live config, so a
 * revocation holds from the next call on, without a reboot). API output redacts env values here
 * too: secret ones for every role, all of them for a reader. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "common/log.h"
#include "common/pki.h"
#include "serve.h"

const char *serve_role_name(enum serve_role role)
{
        switch (role) {
        case SERVE_ROLE_READER:
                return PKI_ROLE_READER;
        case SERVE_ROLE_OPERATOR:
                return PKI_ROLE_OPERATOR;
        case SERVE_ROLE_ADMIN:
                return PKI_ROLE_ADMIN;
        default:
                return "none";
        }
}

static enum serve_role role_of(const struct rpc_peer *peer)
{
        if (!peer->verified)
                return SERVE_ROLE_NONE;
        if (strcmp(peer->org, PKI_ROLE_ADMIN) == 0)
                return SERVE_ROLE_ADMIN;
        if (strcmp(peer->org, PKI_ROLE_OPERATOR) == 0)
                return SERVE_ROLE_OPERATOR;
        if (strcmp(peer->org, PKI_ROLE_READER) == 0)
                return SERVE_ROLE_READER;
        return SERVE_ROLE_NONE;
}

enum serve_role serve_call_role(struct rpc_call *call)
{
        struct rpc_peer peer;
        struct cap_error err = {0};
        if (rpc_call_peer(call, &peer, &err) < 0)
                return SERVE_ROLE_NONE;
        return role_of(&peer);
}

int serve_redact_workload(struct rpc_call *call, Capsule__V1__Workload *w, struct cap_error *err)
{
        if (!w->spec)
                return 0;
        /* an unknown role never gets here (serve_authorize), but redact everything if it did */
        bool all = serve_call_role(call) < SERVE_ROLE_OPERATOR;
        if (manifest_workload_redact(w->spec, all) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        return 0;
}

int serve_authorize(struct rpc_call *call, const struct rpc_method *method, void *ud,
                    struct cap_error *err)
{
        struct rpc_peer peer;
        if (rpc_call_peer(call, &peer, err) < 0)
                return cap_error_set(err, -EACCES, CAP_UNAUTHENTICATED, "cannot read the client certificate: %s",
                                     err->msg);
        if (!peer.verified)
                return cap_error_set(err, -EACCES, CAP_UNAUTHENTICATED, "a client certificate is required");
        struct serve_ctx *ctx = ud;
        struct serve_config_ref *live = ctx ? serve_config_get(ctx) : NULL;
        if (live && live->c.n_revoked_serials > 0) {
                char serial[128];
                int r = rpc_call_peer_serial(call, serial, sizeof(serial), err);
                bool revoked = r == 0 && machine_serial_revoked(&live->c, serial);
                serve_config_put(ctx, live);
                if (r < 0)
                        return cap_error_set(err, -EACCES, CAP_UNAUTHENTICATED,
                                             "cannot read the client certificate: %s", err->msg);
                if (revoked) {
                        log_info("denied method=%s cn=%s serial=%s: revoked", method->path, peer.cn,
                                 serial);
                        return cap_error_set(err, -EACCES, CAP_UNAUTHENTICATED,
                                             "client certificate \"%s\" (serial %s) is revoked "
                                             "(machine config pki.revoked)",
                                             peer.cn, serial);
                }
        } else {
                serve_config_put(ctx, live);
        }
        enum serve_role role = role_of(&peer), needed = serve_needed_role(method->flags);
        if (role == SERVE_ROLE_NONE) {
                log_info("denied method=%s cn=%s role=%s", method->path, peer.cn, peer.org);
                return cap_error_set(err, -EACCES, CAP_PERMISSION_DENIED,
                                     "certificate \"%s\" has no Capsule role (O=\"%s\"; expected "
                                     "capsule:admin, capsule:operator or capsule:reader)",
                                     peer.cn, peer.org);
        }
        if (role >= needed)
                return 0;
        log_info("denied method=%s cn=%s role=%s", method->path, peer.cn, peer.org);
        return cap_error_set(err, -EACCES, CAP_PERMISSION_DENIED,
                             "%s: role %s (certificate \"%s\") may not call this method; it needs %s%s",
                             method->path, serve_role_name(role), peer.cn, serve_role_name(needed),
                             needed == SERVE_ROLE_ADMIN ? "" : " or above");
}
