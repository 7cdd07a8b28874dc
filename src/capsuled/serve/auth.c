/* Authorization of API calls by role. The role is the verified client certificate's subject O:
 *   capsule:admin  - every method
 *   capsule:reader - only methods without RPC_METHOD_MUTATING (get, list, logs, health, version)
 * A call without a verified certificate, or with another O, is refused, and so is a certificate
 * whose serial the live machine config revokes (pki.revoked; machine-config apply replaces the
 * live config, so a revocation holds from the next call on, without a reboot). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "common/log.h"
#include "serve.h"

int serve_authorize(struct rpc_call *call, const struct rpc_method *method, void *ud, struct cap_error *err)
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
        if (strcmp(peer.org, "capsule:admin") == 0)
                return 0;
        if (strcmp(peer.org, "capsule:reader") == 0) {
                if (!(method->flags & RPC_METHOD_MUTATING))
                        return 0;
                log_info("denied method=%s cn=%s role=%s", method->path, peer.cn, peer.org);
                return cap_error_set(err, -EACCES, CAP_PERMISSION_DENIED,
                                     "%s: role capsule:reader (certificate \"%s\") may not call this method; "
                                     "it needs capsule:admin", method->path, peer.cn);
        }
        log_info("denied method=%s cn=%s role=%s", method->path, peer.cn, peer.org);
        return cap_error_set(err, -EACCES, CAP_PERMISSION_DENIED,
                             "certificate \"%s\" has no Capsule role (O=\"%s\"; expected capsule:admin or "
                             "capsule:reader)", peer.cn, peer.org);
}
