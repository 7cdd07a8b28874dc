/* Verified blobs: the sha256 hasher, OCI media types, and the sink through which the archive
 * importer and the registry client hand blobs to a content store.
 *
 * Producers (archive.c, registry.c) only ever call a sink with data they verify while it flows:
 * begin(descriptor) -> write()* -> commit() once the bytes hashed to the descriptor's digest and
 * size, or abort() on any failure. The containerd content store (content.c) is one sink; tests
 * use a directory or memory sink. Children are written before their parents (layers and config,
 * then the manifest), so a store that tracks references never sees a dangling one. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/error.h"

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_OCI_LAYER "application/vnd.oci.image.layer.v1.tar"
#define MT_OCI_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define MT_OCI_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define MT_DOCKER_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define MT_DOCKER_LAYER "application/vnd.docker.image.rootfs.diff.tar"

/* Manifests, indexes and configs are small: refuse bigger ones (memory bound). */
#define BLOB_META_MAX (4u << 20)

/* A streaming sha256. */
struct blob_hash {
        EVP_MD_CTX *md;
        uint64_t size;
};
int blob_hash_init(struct blob_hash *h, struct cap_error *err);
void blob_hash_update(struct blob_hash *h, const void *data, size_t len);
/* Writes "sha256:<64 hex>" into out (72 bytes incl. NUL) and frees the context. */
void blob_hash_final(struct blob_hash *h, char out[72]);
void blob_hash_free(struct blob_hash *h);
/* One-shot digest of a buffer. */
int blob_digest(const void *data, size_t len, char out[72], struct cap_error *err);

/* True for the manifest/index/layer media types we understand. */
bool blob_is_index(const char *media_type);
bool blob_is_manifest(const char *media_type);
bool blob_is_layer(const char *media_type);

struct blob_label {
        const char *key;
        const char *value;
};

struct blob_desc {
        const char *media_type;
        const char *digest; /* sha256:... */
        uint64_t size;
        const struct blob_label *labels; /* set on the blob at commit (GC references, ...) */
        size_t n_labels;
};

struct blob_sink_ops {
        /* Starts a blob. Sets *exists (and writes nothing) when the store already holds it. */
        int (*begin)(void *ud, const struct blob_desc *d, bool *exists, struct cap_error *err);
        int (*write)(void *ud, const void *data, size_t len, struct cap_error *err);
        /* The producer verified digest and size; the store makes the blob visible. On failure the
         * store discards the blob itself (abort is not called after commit). */
        int (*commit)(void *ud, const struct blob_desc *d, struct cap_error *err);
        void (*abort)(void *ud);
};

struct blob_sink {
        const struct blob_sink_ops *ops;
        void *ud;
};

/* Writes a whole in-memory blob (verified here) to the sink. */
int blob_sink_put(const struct blob_sink *s, const struct blob_desc *d, const void *data,
                  size_t len, struct cap_error *err);
