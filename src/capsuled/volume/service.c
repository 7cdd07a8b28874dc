/* capsule.v1.Volumes handlers: thin glue from the API messages to the volume manager
 * (volume.h). The manager checks names and sizes and picks the status codes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capsule/v1/volumes.pb-c.h"
#include "common/log.h"
#include "store/store.h"
#include "service.h"
#include "volume.h"

/* Where PID 1 puts the thin pool (init/perm.c) and where thin volumes are mounted (a tmpfs, so
 * volume mounts never nest under /perm). */
#define VOLUMES_LVM_VG "capsule"
#define VOLUMES_LVM_POOL "pool"
#define VOLUMES_LVM_MOUNT_DIR "/run/capsule/volumes"

static struct volumes *ctx_volumes(struct rpc_call *call, struct cap_error *err)
{
        struct volumes *v = rpc_call_method(call)->userdata;
        if (!v)
                cap_error_set(err, -ENODEV, CAP_UNAVAILABLE,
                              "volumes are not available on this capsule "
                              "(see capsuled's log for why they failed to start)");
        return v;
}

static int oom(struct cap_error *err)
{
        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

Capsule__V1__Volume *volumes_to_proto(const struct volume_info *vi)
{
        Capsule__V1__Volume *pv = malloc(sizeof(*pv));
        if (!pv)
                return NULL;
        capsule__v1__volume__init(pv);
        pv->name = strdup(vi->name);
        pv->backend = strdup(vi->backend);
        pv->size_bytes = vi->size_bytes;
        pv->used_bytes = vi->used_bytes;
        pv->created_unix_nano = vi->created_ns;
        if (vi->n_attached) {
                pv->attached_to = calloc(vi->n_attached, sizeof(char *));
                if (pv->attached_to)
                        for (size_t i = 0; i < vi->n_attached; i++)
                                if ((pv->attached_to[i] = strdup(vi->attached_to[i])))
                                        pv->n_attached_to++;
        }
        if (!pv->name || !pv->backend || pv->n_attached_to != vi->n_attached) {
                protobuf_c_message_free_unpacked(&pv->base, NULL);
                return NULL;
        }
        return pv;
}

int volumes_rpc_create(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                       struct cap_error *err)
{
        const Capsule__V1__VolumeCreateRequest *in = (const Capsule__V1__VolumeCreateRequest *)req;
        Capsule__V1__VolumeCreateResponse *out = (Capsule__V1__VolumeCreateResponse *)resp;
        struct volumes *v = ctx_volumes(call, err);
        if (!v)
                return err->code;
        struct volume_info vi;
        bool created = false;
        int r = volume_create(v, in->name, in->size_bytes, &created, &vi, err);
        if (r < 0)
                return r;
        out->created = created;
        out->volume = volumes_to_proto(&vi);
        volume_info_free(&vi);
        return out->volume ? 0 : oom(err);
}

int volumes_rpc_list(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                     struct cap_error *err)
{
        Capsule__V1__VolumeListResponse *out = (Capsule__V1__VolumeListResponse *)resp;
        struct volumes *v = ctx_volumes(call, err);
        if (!v)
                return err->code;
        struct volume_info *vis = NULL;
        size_t n = 0;
        int r = volume_list(v, &vis, &n, err);
        if (r < 0)
                return r;
        if (n && !(out->volumes = calloc(n, sizeof(*out->volumes))))
                r = oom(err);
        for (size_t i = 0; r == 0 && i < n; i++) {
                if (!(out->volumes[i] = volumes_to_proto(&vis[i])))
                        r = oom(err);
                else
                        out->n_volumes++;
        }
        volume_infos_free(vis, n);
        return r;
}

int volumes_rpc_delete(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                       struct cap_error *err)
{
        const Capsule__V1__VolumeDeleteRequest *in = (const Capsule__V1__VolumeDeleteRequest *)req;
        struct volumes *v = ctx_volumes(call, err);
        if (!v)
                return err->code;
        return volume_delete(v, in->name, err);
}

int volumes_rpc_resize(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                       struct cap_error *err)
{
        const Capsule__V1__VolumeResizeRequest *in = (const Capsule__V1__VolumeResizeRequest *)req;
        Capsule__V1__VolumeResizeResponse *out = (Capsule__V1__VolumeResizeResponse *)resp;
        struct volumes *v = ctx_volumes(call, err);
        if (!v)
                return err->code;
        struct volume_info vi;
        int r = volume_resize(v, in->name, in->size_bytes, &vi, err);
        if (r < 0)
                return r;
        out->volume = volumes_to_proto(&vi);
        volume_info_free(&vi);
        return out->volume ? 0 : oom(err);
}

/* On a Capsule (--os) with VG capsule and its thin pool: thin LVs (lvm.c); else (host mode, or
 * an OS whose pool could not be made) a sparse file per volume under ROOT/volumes (file.c). */
static int open_backend(const char *root, bool os_mode, struct volume_backend **b,
                        struct cap_error *err)
{
        if (os_mode) {
                int r = volume_lvm_backend_new(VOLUMES_LVM_VG, VOLUMES_LVM_POOL,
                                               VOLUMES_LVM_MOUNT_DIR, b, err);
                if (r == 0) {
                        log_info("volumes: backend lvm-thin (pool %s/%s, mounted under %s)",
                                 VOLUMES_LVM_VG, VOLUMES_LVM_POOL, VOLUMES_LVM_MOUNT_DIR);
                        return 0;
                }
                log_warn("volumes: %s; falling back to file volumes under %s/volumes", err->msg,
                         root);
                cap_error_clear(err);
        }
        char *dir = NULL;
        if (asprintf(&dir, "%s/volumes", root) < 0)
                return -ENOMEM;
        int r = volume_file_backend_new(dir, b, err);
        if (r == 0)
                log_info("volumes: backend file (sparse images under %s)", dir);
        free(dir);
        return r;
}

int volumes_start(const char *root, bool os_mode, struct store *store, struct volumes **out,
                  void (*claim)(struct volumes *v, void *ud), void *claim_ud)
{
        struct cap_error err = {0};
        struct volume_backend *b = NULL;
        *out = NULL;
        int r = open_backend(root, os_mode, &b, &err);
        if (r == 0)
                r = volumes_open(store, b, out, &err);
        if (r < 0) {
                log_error("volumes: %s (the Volumes API answers UNAVAILABLE)",
                          r == -ENOMEM && !err.msg[0] ? "out of memory" : err.msg);
                return r;
        }
        if (claim)
                claim(*out, claim_ud);
        /* Per-volume failures are logged; the others stay usable. */
        if (volumes_recover(*out, &err) < 0)
                log_error("volumes: recovery: %s", err.msg);
        return 0;
}
