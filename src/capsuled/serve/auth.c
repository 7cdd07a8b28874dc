/* Authorization of API calls by role. The role is the verified client certificate's subject O:
 *   capsule:admin  - every method
 *   capsule:reader - only methods without RPC_METHOD_MUTATING (get, list, logs, health, version)
 * A call without a verified certificate, or with another O, is refused. */
#include <errno.h>
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
