/* The Images service (capsule.v1.Images: Push, Pull, List, Delete) and images_ensure() for the
 * reconciler's pull-on-first-use.
 *
 * Images live in containerd (namespace "capsule"): blobs in its content store, one image record
 * per normalised reference (reference.h). Imports and pulls write blobs under a lease (content.c)
 * and create the records last, then drop the lease: a failure at any point leaves no record and
 * only unreferenced blobs, which containerd's garbage collector removes. */
#pragma once

#include <stdint.h>

#include "capsule/v1/workloads.pb-c.h"
#include "common/error.h"
#include "rpc/rpc.h"

struct serve_ctx;

#define IMAGES_DEFAULT_MAX_ARCHIVE (4ull << 30) /* image push spool cap */

/* Handlers; userdata is the struct serve_ctx. Push is RPC_CLIENT_STREAM, the others unary. */
int images_push(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);
int images_pull(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                struct cap_error *err);
int images_list(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                struct cap_error *err);
int images_delete(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err);

/* Makes sure the image `ref` is in containerd according to policy (UNSPECIFIED = IF_NOT_PRESENT:
 * pull when absent; PULL_ALWAYS: pull every time; PULL_NEVER: FAILED_PRECONDITION when absent).
 * Returns the manifest digest (*digest malloc'd; may be NULL if not wanted). The containerd
 * image name is image_ref_normalize(ref). Blocks for the duration of a pull. */
int images_ensure(struct serve_ctx *ctx, const char *ref, Capsule__V1__PullPolicy policy,
                  char **digest, struct cap_error *err);
