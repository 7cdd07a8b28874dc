/* Runtime glue: what a workload's container needs besides the container itself (its image, its
 * volumes, its network), in one place, so the reconciler stays about desired vs actual state. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "containerd/driver.h"
#include "serve.h"

int serve_image_ensure(struct serve_ctx *ctx, const char *image, Capsule__V1__PullPolicy policy,
                       char **config_json, char **chain_id, struct cap_error *err)
{
        if (!ctx->ctrd)
                return cap_error_set(err, -ENOTCONN, CAP_FAILED_PRECONDITION, "no container runtime");
        return ctrd_image_ensure_unpacked(ctx->ctrd, image, config_json, chain_id, err);
}

int serve_workload_attach(struct serve_ctx *ctx, const Capsule__V1__WorkloadSpec *spec,
                          struct serve_workload_env *env, struct cap_error *err)
{
        memset(env, 0, sizeof(*env));
        if (spec->n_mounts > 0)
                return cap_error_set(err, -EOPNOTSUPP, CAP_UNIMPLEMENTED, "volumes are not available yet");
        return 0;
}

void serve_workload_env_free(struct serve_workload_env *env)
{
        for (size_t i = 0; i < env->n_volume_sources; i++)
                free(env->volume_sources[i]);
        free(env->volume_sources);
        free(env->netns_path);
        free(env->ip);
        free(env->hosts_path);
        free(env->resolv_conf_path);
        memset(env, 0, sizeof(*env));
}

void serve_workload_detached(struct serve_ctx *ctx, const char *name)
{
}

void serve_workload_ip(struct serve_ctx *ctx, const char *name, char *buf, size_t len)
{
        if (len)
                buf[0] = '\0';
}
