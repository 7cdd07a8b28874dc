/* capsule.v1.Volumes handlers and the volume manager's start-up in `capsuled serve`
 * (service.c). The handlers take the struct volumes (NULL when volumes failed to start: they
 * answer UNAVAILABLE) as the method's userdata. */
#pragma once

#include <stdbool.h>

#include "rpc/rpc.h"

struct store;
struct volumes;

/* Opens the volume manager into *out (LVM thin backend on a Capsule (os_mode) with its pool,
 * else the file backend under ROOT/volumes) and recovers volumes from the store (mounts them,
 * finishes or discards interrupted changes). claim(v, claim_ud), when not NULL, runs between
 * the two: it claims the volumes running microVMs hold as disks (volume_claim_disk), which
 * recovery must not mount. Returns negative only when volumes are unusable; *out is NULL then. */
int volumes_start(const char *root, bool os_mode, struct store *store, struct volumes **out,
                  void (*claim)(struct volumes *v, void *ud), void *claim_ud);

int volumes_rpc_create(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                       struct cap_error *err);
int volumes_rpc_list(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                     struct cap_error *err);
int volumes_rpc_delete(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                       struct cap_error *err);
/* Backup (server stream) and Restore (client stream), backup_service.c; userdata: serve_ctx. */
int volumes_rpc_backup(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);
int volumes_rpc_restore(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);

struct volume_info;
struct Capsule__V1__Volume;
/* A malloc'd capsule.v1.Volume from vi (the response frees it); NULL when out of memory. */
struct Capsule__V1__Volume *volumes_to_proto(const struct volume_info *vi);

int volumes_rpc_resize(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                       struct cap_error *err);
