/* The Images service (capsule.v1.Images: Push, Pull, List, Delete) and images_ensure() for the
 * reconciler's pull-on-first-use.
 *
 * Images live in containerd (namespace "capsule"): blobs in its content store, one image record
 * per normalised reference (reference.h). Imports and pulls write blobs under a lease (content.c)
 * and create the records last, then drop the lease: a failure at any point leaves no record and
 * only unreferenced blobs, which containerd's garbage collector removes. */
#pragma once

#include <stdatomic.h>
#include <stdint.h>

#include "capsule/v1/images.pb-c.h"
#include "capsule/v1/workloads.pb-c.h"
#include "common/error.h"
#include "rpc/rpc.h"

struct ctrd;
struct store;
struct registry_opts;

#define IMAGES_DEFAULT_MAX_ARCHIVE (4ull << 30) /* image push spool cap */

/* What the image functions work with, passed down by `capsuled serve` (no serve_ctx here). */
struct images_env {
        const char *root;           /* state directory: uploads are spooled under it */
        struct ctrd *ctrd;          /* containerd's image store; NULL: FAILED_PRECONDITION */
        struct store *store;        /* desired workloads, for used_by and delete checks */
        uint64_t max_archive_bytes; /* image push upload cap; 0 = IMAGES_DEFAULT_MAX_ARCHIVE */
        /* The registries in effect (the live machine config) for a pull: get fills *o (valid
         * until put) and returns what put releases. */
        void *(*registries_get)(void *ud, struct registry_opts *o);
        void (*registries_put)(void *ud, void *hold);
        void *registries_ud;
        /* Called after Images.Delete removed image `name` (digest "sha256:..."), before it
         * answers: serve collects the microVM root disk cache of that digest. May be NULL. */
        void (*deleted)(void *ud, const char *name, const char *digest);
        void *deleted_ud;
};

/* Handlers; userdata is a struct images_env. Push is RPC_CLIENT_STREAM, Pull RPC_SERVER_STREAM
 * (progress, then the image), the others unary. */
int images_push(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);
int images_pull(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err);
int images_list(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                struct cap_error *err);
/* Every image (what Images.List answers) into out, an initialised message the caller frees. */
int images_list_all(const struct images_env *env, Capsule__V1__ImageListResponse *out,
                    struct cap_error *err);
int images_delete(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err);

/* What a pull reports to, and what ends it early (both optional). */
struct images_pull_hooks {
        /* bytes of layers done of total, from the pulling thread */
        void (*progress)(void *ud, uint64_t done, uint64_t total);
        void *progress_ud;
        const atomic_bool *cancel; /* true: the transfer ends at once (CAP_CANCELLED) */
};

/* Makes sure the image `ref` is in containerd according to policy (UNSPECIFIED = IF_NOT_PRESENT:
 * pull when absent; PULL_ALWAYS: pull every time; PULL_NEVER: FAILED_PRECONDITION when absent).
 * Returns the manifest digest (*digest malloc'd; may be NULL if not wanted). The containerd
 * image name is image_ref_normalize(ref). Blocks for the duration of a pull (hooks may be NULL).
 *
 * Pulls are per image: pulls of different images (Images.Pull or this) run side by side, a pull
 * of an image whose pull is in flight waits for that one and then finds its blobs present. */
int images_ensure(const struct images_env *env, const char *ref, Capsule__V1__PullPolicy policy,
                  const struct images_pull_hooks *hooks, char **digest, struct cap_error *err);
