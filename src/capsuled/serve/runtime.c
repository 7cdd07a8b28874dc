/* Runtime glue: what a workload's container needs besides the container itself (its image, its
 * volumes, its network), in one place, so the reconciler stays about desired vs actual state;
 * and what an image delete frees besides the image (the microVM root disk cache). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "containerd/driver.h"
#include "driver/microvm.h"
#include "images/images.h"
#include "images/reference.h"
#include "images/registry.h"
#include "net/cni.h"
#include "serve.h"
#include "serve/events.h"
#include "volume/volume.h"

int serve_image_ensure(struct serve_ctx *ctx, const char *image, Capsule__V1__PullPolicy policy,
                       char **digest, char **config_json, char **chain_id, struct cap_error *err)
{
        if (!ctx->image_store)
                return cap_error_set(err, -ENOTCONN, CAP_FAILED_PRECONDITION, "no container runtime");
        /* present (pulled on first use per policy), then unpacked under its normalised name */
        if (images_ensure(&ctx->images, image, policy, NULL, digest, err) < 0)
                return err->code;
        char *name = NULL;
        if (image_ref_normalize(image, &name, err) < 0)
                return err->code;
        int r = ctrd_image_ensure_unpacked(ctx->image_store, name, config_json, chain_id, err);
        free(name);
        return r;
}

int serve_image_pull(struct serve_ctx *ctx, const char *image, Capsule__V1__PullPolicy policy,
                     const struct images_pull_hooks *hooks, struct cap_error *err)
{
        if (!ctx->image_store)
                return cap_error_set(err, -ENOTCONN, CAP_FAILED_PRECONDITION, "no container runtime");
        return images_ensure(&ctx->images, image, policy, hooks, NULL, err);
}

/* The download deadlines (docs/workloads.md, "Image pulls"): from the environment of
 * `capsuled serve`, read once; a value that is not a whole number from 1 to 10^6 is ignored
 * with a warning naming the variable. */
static struct {
        long low_speed_bytes, stall_timeout_s, blob_timeout_s;
} pull_limits;
static pthread_once_t pull_limits_once = PTHREAD_ONCE_INIT;

static long env_limit(const char *var)
{
        const char *v = getenv(var);
        if (!v || !*v)
                return 0;
        char *end = NULL;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (errno || *end || n < 1 || n > 1000000) {
                log_warn("%s=\"%.40s\": not a whole number from 1 to 1000000; using the default", var, v);
                return 0;
        }
        return n;
}

static void pull_limits_read(void)
{
        pull_limits.low_speed_bytes = env_limit("CAPSULE_PULL_LOW_SPEED");
        pull_limits.stall_timeout_s = env_limit("CAPSULE_PULL_STALL_SECONDS");
        pull_limits.blob_timeout_s = env_limit("CAPSULE_PULL_BLOB_TIMEOUT_SECONDS");
}

void *serve_registries_get(void *ud, struct registry_opts *o)
{
        pthread_once(&pull_limits_once, pull_limits_read);
        struct serve_config_ref *cfg = serve_config_get(ud);
        *o = (struct registry_opts){.insecure = cfg->c.insecure_registries,
                                    .n_insecure = cfg->c.n_insecure_registries,
                                    .ca_pem = cfg->c.registry_ca_pem,
                                    .auth = cfg->c.registry_auth,
                                    .n_auth = cfg->c.n_registry_auth,
                                    .low_speed_bytes = pull_limits.low_speed_bytes,
                                    .stall_timeout_s = pull_limits.stall_timeout_s,
                                    .blob_timeout_s = pull_limits.blob_timeout_s};
        return cfg;
}

void serve_registries_put(void *ud, void *hold)
{
        serve_config_put(ud, hold);
}

/* Attaches every mounted volume (recording the use, so `volume rm` is refused) and collects what
 * the driver attaches: the host directory to bind into a container, or the block device (image
 * file in host mode) that becomes a microVM's disk, which the VM then holds alone. */
static int attach_volumes(struct serve_ctx *ctx, const Capsule__V1__WorkloadSpec *spec,
                          struct serve_workload_env *env, struct cap_error *err)
{
        if (spec->n_mounts == 0)
                return 0;
        if (!ctx->volumes)
                return cap_error_set(err, -ENODEV, CAP_UNAVAILABLE, "volumes are not available");
        env->volume_sources = calloc(spec->n_mounts, sizeof(char *));
        if (!env->volume_sources)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        for (size_t i = 0; i < spec->n_mounts; i++) {
                const char *vol = spec->mounts[i]->volume;
                int r = spec->kind == CAPSULE__V1__WORKLOAD_KIND__MICROVM
                            ? volume_attach_disk(ctx->volumes, vol, spec->name, &env->volume_sources[i], err)
                            : volume_attach(ctx->volumes, vol, spec->name, &env->volume_sources[i], err);
                if (r < 0)
                        return cap_error_prefix(err, "mounts[%zu]", i);
                env->n_volume_sources++;
        }
        return 0;
}

/* Starts setting up (or re-adopting: CNI results are cached per container id) the workload's
 * network namespace and published ports, and writes its /etc/hosts (without its own address
 * until attach_end, unless adopted) and /etc/resolv.conf: everything the container's spec names
 * exists when this returns. */
static int network_begin(struct serve_ctx *ctx, const Capsule__V1__WorkloadSpec *spec,
                         struct serve_workload_env *env, struct cap_error *err)
{
        if (!ctx->cni)
                return 0;
        const char *name = spec->name;
        struct cni_port *ports = calloc(spec->n_ports + 1, sizeof(*ports));
        if (!ports)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        for (size_t i = 0; i < spec->n_ports; i++)
                ports[i] = (struct cni_port){
                        .host_port = (uint16_t)spec->ports[i]->host_port,
                        .container_port = (uint16_t)spec->ports[i]->workload_port,
                        .protocol = spec->ports[i]->protocol,
                        .host_ip = spec->ports[i]->host_ip,
                };
        /* the container id is the workload name (see containerd/driver.h) */
        int r = cni_setup_begin(ctx->cni, name, name, ports, spec->n_ports, &env->net_job, err);
        free(ports);
        if (r < 0)
                return r;
        env->netns_path = strdup(cni_setup_netns(env->net_job));
        if (!env->netns_path)
                r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        if (r == 0)
                r = cni_write_etc(ctx->cni, name, cni_setup_adopted_ip(env->net_job),
                                  &env->hosts_path, &env->resolv_conf_path, err);
        if (r < 0) {
                struct cni_attachment a;
                struct cap_error ignored = {0};
                if (cni_setup_end(env->net_job, &a, &ignored) == 0)
                        cni_attachment_free(&a);
                env->net_job = NULL;
                cni_teardown(ctx->cni, name, name, &ignored);
        }
        return r;
}

/* After a failed attach: forgets the volume attachments and frees env. */
static void attach_undo(struct serve_ctx *ctx, const Capsule__V1__WorkloadSpec *spec,
                        struct serve_workload_env *env)
{
        if (ctx->volumes)
                volume_detach_all(ctx->volumes, spec->name);
        serve_workload_env_free(env);
}

int serve_workload_attach_begin(struct serve_ctx *ctx, const Capsule__V1__WorkloadSpec *spec,
                                struct serve_workload_env *env, struct cap_error *err)
{
        memset(env, 0, sizeof(*env));
        int r = attach_volumes(ctx, spec, env, err);
        if (r == 0)
                r = network_begin(ctx, spec, env, err);
        if (r < 0)
                attach_undo(ctx, spec, env);
        return r;
}

int serve_workload_attach_end(struct serve_ctx *ctx, const Capsule__V1__WorkloadSpec *spec,
                              struct serve_workload_env *env, struct cap_error *err)
{
        if (!env->net_job)
                return 0;
        struct cni_attachment a;
        int r = cni_setup_end(env->net_job, &a, err); /* undoes the network on failure */
        env->net_job = NULL;
        if (r < 0)
                return r;
        env->ip = a.ip;
        env->prefix_len = a.prefix_len;
        env->gateway = a.gateway;
        a.ip = a.gateway = NULL;
        cni_attachment_free(&a);
        /* in place: the container's bind mount of hosts keeps following it */
        char *hosts = NULL, *resolv = NULL;
        r = cni_write_etc(ctx->cni, spec->name, env->ip, &hosts, &resolv, err);
        free(hosts);
        free(resolv);
        if (r < 0) {
                struct cap_error ignored = {0};
                cni_teardown(ctx->cni, spec->name, spec->name, &ignored);
        }
        return r;
}

int serve_workload_attach(struct serve_ctx *ctx, const Capsule__V1__WorkloadSpec *spec,
                          struct serve_workload_env *env, struct cap_error *err)
{
        int r = serve_workload_attach_begin(ctx, spec, env, err);
        if (r < 0)
                return r;
        r = serve_workload_attach_end(ctx, spec, env, err);
        if (r < 0)
                attach_undo(ctx, spec, env);
        return r;
}

void serve_workload_env_free(struct serve_workload_env *env)
{
        if (env->net_job) {
                /* abandoned before its end: wait for the plugins; serve_workload_detached undoes */
                struct cni_attachment a;
                struct cap_error ignored = {0};
                if (cni_setup_end(env->net_job, &a, &ignored) == 0)
                        cni_attachment_free(&a);
        }
        for (size_t i = 0; i < env->n_volume_sources; i++)
                free(env->volume_sources[i]);
        free(env->volume_sources);
        free(env->netns_path);
        free(env->ip);
        free(env->gateway);
        free(env->hosts_path);
        free(env->resolv_conf_path);
        memset(env, 0, sizeof(*env));
}

void serve_workload_detached(struct serve_ctx *ctx, const char *name)
{
        struct cap_error err = {0};
        if (ctx->cni && cni_teardown(ctx->cni, name, name, &err) < 0)
                log_warn("workload %s: %s", name, err.msg);
        if (ctx->volumes)
                volume_detach_all(ctx->volumes, name);
}

void serve_workload_ip(struct serve_ctx *ctx, const char *name, char *buf, size_t len)
{
        if (!ctx->cni || cni_cached_ip(ctx->cni, name, buf, len) < 0)
                if (len)
                        buf[0] = '\0';
}

/* ---- microVM root disk caches of deleted images ---------------------------------------------- */

/* One cache removed: the event `image sha256:HEX12 rootdisk-removed`. */
static void rootcache_gone(const struct vmd_cache_gone *g, void *ud)
{
        struct serve_ctx *ctx = ud;
        char name[32];
        snprintf(name, sizeof(name), "sha256:%.12s", g->key);
        events_publish(ctx->events, "image", name, "rootdisk-removed",
                       "microVM root disk cache %s (%s, %" PRIu64 " MiB) removed: %s", g->what,
                       g->backend, g->bytes >> 20, g->why);
}

void serve_rootcache_start(struct serve_ctx *ctx)
{
        struct workload_driver *d =
            ctx->drivers.by_kind[driver_kind_index(CAPSULE__V1__WORKLOAD_KIND__MICROVM)];
        if (!d)
                return;
        microvm_driver_on_cache_gone(d, rootcache_gone, ctx);
}

void serve_rootcache_sweep(struct serve_ctx *ctx)
{
        struct workload_driver *d =
            ctx->drivers.by_kind[driver_kind_index(CAPSULE__V1__WORKLOAD_KIND__MICROVM)];
        if (!d)
                return;
        struct cap_error err = {0};
        int n = microvm_driver_rootdisk_collect(d, "start-time cleanup", &err);
        if (n < 0)
                log_warn("microvm: root disk caches: %s; kept them all", err.msg);
        else
                log_info("microvm: root disk caches: start-time cleanup removed %d", n);
}

void serve_image_deleted(void *ud, const char *name, const char *digest)
{
        struct serve_ctx *ctx = ud;
        struct workload_driver *d =
            ctx->drivers.by_kind[driver_kind_index(CAPSULE__V1__WORKLOAD_KIND__MICROVM)];
        if (!d)
                return;
        char why[320];
        snprintf(why, sizeof(why), "image %s deleted (%.19s)", name, digest);
        struct cap_error err = {0};
        /* the image is gone even when this fails: the next collect (a microVM removal, the next
         * start) removes the cache */
        if (microvm_driver_rootdisk_collect(d, why, &err) < 0)
                log_warn("microvm: root disk cache of %s: %s; kept until the next start", name,
                         err.msg);
}
