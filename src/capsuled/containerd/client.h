/* A thin typed client for containerd's gRPC API (1.6), over src/rpc.
 *
 * One function per containerd call we use, in the namespace "capsule" (every call carries the
 * `containerd-namespace` header). Calls that must be protected from containerd's garbage collector
 * (content writes, unpacking, snapshots before their container) run on a ctrd_client_leased: it
 * sends `containerd-lease` too. Results are returned as the generated protobuf-c messages where
 * they are rich (free them with protobuf_c_message_free_unpacked), as plain values where they are
 * simple. Errors keep the gRPC status: err->status == CAP_NOT_FOUND means "no such object". */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "github.com/containerd/containerd/api/services/containers/v1/containers.pb-c.h"
#include "github.com/containerd/containerd/api/services/content/v1/content.pb-c.h"
#include "github.com/containerd/containerd/api/services/images/v1/images.pb-c.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.pb-c.h"
#include "github.com/containerd/containerd/api/services/tasks/v1/tasks.pb-c.h"
#include "github.com/containerd/containerd/api/types/mount.pb-c.h"

#define CTRD_NAMESPACE "capsule"
#define CTRD_SNAPSHOTTER "overlayfs"
#define CTRD_RUNTIME "io.containerd.runc.v2"
#define CTRD_SPEC_TYPE_URL "types.containerd.io/opencontainers/runtime-spec/1/Spec"
#define CTRD_PROCESS_TYPE_URL "types.containerd.io/opencontainers/runtime-spec/1/Process"
#define CTRD_TIMEOUT_MS 30000

struct ctrd_client;

/* A key/value pair for labels. */
struct ctrd_label {
        const char *key;
        const char *value;
};

/* A content descriptor (OCI). Strings are owned by the struct when filled by this module: free
 * with ctrd_descriptor_clear(). */
struct ctrd_descriptor {
        char *media_type;
        char *digest;
        int64_t size;
};
void ctrd_descriptor_clear(struct ctrd_descriptor *d);

/* Rootfs mounts as returned by the snapshotter (owns the message). */
struct ctrd_mounts {
        ProtobufCMessage *owner;
        size_t n;
        Containerd__Types__Mount **v;
};
void ctrd_mounts_clear(struct ctrd_mounts *m);

/* Connects to containerd's socket path (not yet: errors surface on the first call). Calls under a
 * lease go through ctrd_client_leased. */
struct ctrd_client *ctrd_client_new(const char *sock, struct cap_error *err);
/* A client on c's connection whose calls run under lease_id: what they create (snapshots, blobs)
 * is not garbage-collected until the lease ends. c must outlive it. */
struct ctrd_client *ctrd_client_leased(struct ctrd_client *c, const char *lease_id,
                                       struct cap_error *err);
void ctrd_client_free(struct ctrd_client *c);
const char *ctrd_client_socket(const struct ctrd_client *c);

int ctrd_version(struct ctrd_client *c, char **version, struct cap_error *err);
/* Creates the "capsule" namespace if it does not exist. */
int ctrd_namespace_ensure(struct ctrd_client *c, struct cap_error *err);

/* ---- leases ---- */
/* Creates a lease that expires after expire_s seconds (0: never) and returns its id. */
int ctrd_lease_create(struct ctrd_client *c, int expire_s, char **id, struct cap_error *err);
int ctrd_lease_delete(struct ctrd_client *c, const char *id, struct cap_error *err);
/* Runs containerd's garbage collection now and waits for it (deletes an empty lease with sync). */
int ctrd_gc_now(struct ctrd_client *c, struct cap_error *err);

/* ---- content ---- */
/* Size of a blob; NOT_FOUND when absent. */
int ctrd_content_info(struct ctrd_client *c, const char *digest, int64_t *size,
                      struct cap_error *err);
/* Reads a whole blob into memory (refused with OUT_OF_RANGE above max_size). */
int ctrd_content_read(struct ctrd_client *c, const char *digest, size_t max_size, char **data,
                      size_t *len, struct cap_error *err);
/* Sets one label on a blob (e.g. containerd.io/gc.ref.snapshot.overlayfs). */
int ctrd_content_set_label(struct ctrd_client *c, const char *digest, const char *key,
                           const char *value, struct cap_error *err);

/* Streams a blob into the content store (Content.Write). Use a leased client. expected digest
 * and total size are checked by containerd at commit. If the blob already exists, open returns 0
 * and sets *exists: do not write. */
struct ctrd_writer;
int ctrd_writer_open(struct ctrd_client *c, const char *ref, const char *expected, int64_t total,
                     struct ctrd_writer **w, bool *exists, struct cap_error *err);
int ctrd_writer_write(struct ctrd_writer *w, const void *data, size_t len, struct cap_error *err);
/* Commits with labels (may be NULL/0) and frees the writer, success or not. */
int ctrd_writer_commit(struct ctrd_writer *w, const struct ctrd_label *labels, size_t n_labels,
                       struct cap_error *err);
/* Abandons and frees the writer (NULL is a no-op). */
void ctrd_writer_abort(struct ctrd_writer *w);
/* Convenience: the whole blob from memory. Returns 0 when written, 1 when it already existed
 * (labels then not applied: use ctrd_content_set_label). */
int ctrd_content_write(struct ctrd_client *c, const char *ref, const char *expected,
                       const void *data, size_t len, const struct ctrd_label *labels,
                       size_t n_labels, struct cap_error *err);

/* ---- images ---- */
int ctrd_image_get(struct ctrd_client *c, const char *name, struct ctrd_descriptor *target,
                   struct cap_error *err);
/* Creates the image record, or updates its target and labels if it exists. */
int ctrd_image_put(struct ctrd_client *c, const char *name, const struct ctrd_descriptor *target,
                   const struct ctrd_label *labels, size_t n_labels, struct cap_error *err);
int ctrd_image_delete(struct ctrd_client *c, const char *name, struct cap_error *err);
/* All images (filter may be NULL); caller frees *resp. */
int ctrd_image_list(struct ctrd_client *c, const char *filter,
                    Containerd__Services__Images__V1__ListImagesResponse **resp,
                    struct cap_error *err);

/* ---- snapshots (overlayfs) ---- */
int ctrd_snapshot_prepare(struct ctrd_client *c, const char *key, const char *parent,
                          struct ctrd_mounts *mounts, struct cap_error *err);
int ctrd_snapshot_view(struct ctrd_client *c, const char *key, const char *parent,
                       struct ctrd_mounts *mounts, struct cap_error *err);
int ctrd_snapshot_mounts(struct ctrd_client *c, const char *key, struct ctrd_mounts *mounts,
                         struct cap_error *err);
int ctrd_snapshot_commit(struct ctrd_client *c, const char *name, const char *key,
                         struct cap_error *err);
/* 0 if it exists, NOT_FOUND otherwise. */
int ctrd_snapshot_stat(struct ctrd_client *c, const char *key, struct cap_error *err);
int ctrd_snapshot_remove(struct ctrd_client *c, const char *key, struct cap_error *err);
int ctrd_snapshot_list(struct ctrd_client *c,
                       Containerd__Services__Snapshots__V1__ListSnapshotsResponse **resp,
                       struct cap_error *err);

/* ---- diff ---- */
/* Applies a layer blob onto mounts; returns the applied (uncompressed) descriptor's digest. */
int ctrd_diff_apply(struct ctrd_client *c, const struct ctrd_descriptor *layer,
                    const struct ctrd_mounts *mounts, char **diff_id, struct cap_error *err);

/* ---- containers ---- */
struct ctrd_container_create {
        const char *id;
        const char *image;        /* informational */
        const char *spec_json;    /* OCI runtime spec */
        const char *snapshot_key; /* in CTRD_SNAPSHOTTER */
        const struct ctrd_label *labels;
        size_t n_labels;
};
int ctrd_container_create(struct ctrd_client *c, const struct ctrd_container_create *req,
                          struct cap_error *err);
int ctrd_container_get(struct ctrd_client *c, const char *id,
                       Containerd__Services__Containers__V1__Container **out,
                       struct cap_error *err);
int ctrd_container_list(struct ctrd_client *c, const char *filter,
                        Containerd__Services__Containers__V1__ListContainersResponse **resp,
                        struct cap_error *err);
int ctrd_container_delete(struct ctrd_client *c, const char *id, struct cap_error *err);

/* ---- tasks ---- */
struct ctrd_stdio {
        const char *stdin_path;  /* FIFO or NULL */
        const char *stdout_path; /* FIFO, existing regular file, or "file:///path"; NULL: discard */
        const char *stderr_path;
        bool terminal;
};
int ctrd_task_create(struct ctrd_client *c, const char *id, const struct ctrd_mounts *rootfs,
                     const struct ctrd_stdio *io, uint32_t *pid, struct cap_error *err);
/* exec_id NULL for the container's init process. */
int ctrd_task_start(struct ctrd_client *c, const char *id, const char *exec_id, uint32_t *pid,
                    struct cap_error *err);
int ctrd_task_kill(struct ctrd_client *c, const char *id, const char *exec_id, int sig, bool all,
                   struct cap_error *err);
/* Deletes the task (init process gone) and returns its exit status. */
int ctrd_task_delete(struct ctrd_client *c, const char *id, uint32_t *exit_status,
                     struct cap_error *err);
int ctrd_task_delete_process(struct ctrd_client *c, const char *id, const char *exec_id,
                             uint32_t *exit_status, struct cap_error *err);
/* The task's (or exec's) process; caller frees *resp. */
int ctrd_task_get(struct ctrd_client *c, const char *id, const char *exec_id,
                  Containerd__Services__Tasks__V1__GetResponse **resp, struct cap_error *err);
/* Blocks until the process exits or timeout_ms passes (DEADLINE_EXCEEDED); 0 = forever. */
int ctrd_task_wait(struct ctrd_client *c, const char *id, const char *exec_id, int timeout_ms,
                   uint32_t *exit_status, struct cap_error *err);
int ctrd_task_exec(struct ctrd_client *c, const char *id, const char *exec_id,
                   const char *process_json, const struct ctrd_stdio *io, struct cap_error *err);
int ctrd_task_resize(struct ctrd_client *c, const char *id, const char *exec_id, uint32_t cols,
                     uint32_t rows, struct cap_error *err);
int ctrd_task_close_stdin(struct ctrd_client *c, const char *id, const char *exec_id,
                          struct cap_error *err);

/* ---- events ---- */
struct rpc_stream;
/* Opens Events.Subscribe with the given filters (containerd filter syntax). */
struct rpc_stream *ctrd_events_open(struct ctrd_client *c, const char *const *filters, size_t n,
                                    struct cap_error *err);
