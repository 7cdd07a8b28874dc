/* capsule.v1.Volumes handlers and the volume manager's start-up in `capsuled serve`
 * (service.c). The handlers take the struct serve_ctx as the method's userdata. */
#pragma once

#include "rpc/rpc.h"

struct serve_ctx;

/* Opens the volume manager into ctx->volumes (LVM thin backend on a Capsule with its pool, else
 * the file backend under ROOT/volumes) and recovers
 * volumes from the store (mounts them, finishes or discards interrupted changes). Returns
 * negative only when volumes are unusable; ctx->volumes stays NULL then. */
int volumes_start(struct serve_ctx *ctx);

int volumes_rpc_create(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                       struct cap_error *err);
int volumes_rpc_list(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                     struct cap_error *err);
int volumes_rpc_delete(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                       struct cap_error *err);
int volumes_rpc_resize(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                       struct cap_error *err);
