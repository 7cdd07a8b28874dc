/* The containerd driver (see driver.h): image unpacking, the container lifecycle, workload
 * listing for adoption, exec, task events, and image import helpers, built on client.c.
 *
 * Unpacking follows containerd's own unpacker: chain ids from the config's diff_ids; for each
 * missing layer, Prepare a temporary active snapshot on the parent chain, Diff.Apply the layer
 * blob onto its mounts, Commit it under the chain id. A label on the config blob
 * (containerd.io/gc.ref.snapshot.overlayfs = top chain id) keeps the snapshots from GC. */
#include "driver.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "github.com/containerd/containerd/api/events/task.pb-c.h"
#include "github.com/containerd/containerd/api/services/events/v1/events.pb-c.h"
#include "rpc/rpc.h"
#include "spec.h"

#define MAX_MANIFEST_BYTES (4u << 20)
#define MAX_CONFIG_BYTES (8u << 20)
#define MAX_LAYERS 128
#define KILL_WAIT_MS 10000

#if defined(__x86_64__)
#define CTRD_ARCH "amd64"
#elif defined(__aarch64__)
#define CTRD_ARCH "arm64"
#else
#define CTRD_ARCH "unknown"
#endif

struct ctrd {
        struct ctrd_client *client; /* leased clients share its connection (op_lease) */
};

static void json_putp(json_object **j)
{
        if (*j)
                json_object_put(*j);
}
#define _cleanup_json_ _cleanup_(json_putp)

static void msg_free(void *p)
{
        ProtobufCMessage **m = p;
        if (*m)
                protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_msg_ _cleanup_(msg_free)

/* Nanoseconds since the epoch; 0 for absent or pre-1970 times (Go's zero time is year 1). */
static int64_t ts_ns(const Google__Protobuf__Timestamp *ts)
{
        if (!ts || ts->seconds <= 0 || ts->seconds > INT64_MAX / 1000000000LL - 1)
                return 0;
        return ts->seconds * 1000000000LL + ts->nanos;
}

static bool is_status(const struct cap_error *err, enum cap_status s)
{
        return err->status == s;
}

void ctrd_sha256_digest(const void *data, size_t len, char out[72])
{
        unsigned char md[32];
        unsigned int mdlen = 0;
        EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
        strcpy(out, "sha256:");
        for (unsigned i = 0; i < 32; i++)
                sprintf(out + 7 + 2 * i, "%02x", md[i]);
}

struct ctrd *ctrd_connect(const char *sock, struct cap_error *err)
{
        struct ctrd *c = calloc(1, sizeof(*c));
        _cleanup_free_ char *version = NULL;
        if (!c) {
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        c->client = ctrd_client_new(sock, err);
        if (!c->client || ctrd_version(c->client, &version, err) < 0 ||
            ctrd_namespace_ensure(c->client, err) < 0) {
                cap_error_prefix(err, "connect to containerd at %s", sock);
                ctrd_free(c);
                return NULL;
        }
        log_debug("containerd: connected sock=%s version=%s", sock, version);
        return c;
}

void ctrd_free(struct ctrd *c)
{
        if (!c)
                return;
        ctrd_client_free(c->client);
        free(c);
}

struct ctrd_client *ctrd_client(struct ctrd *c)
{
        return c->client;
}

/* ---- images ---- */

static const char *jget_str(json_object *o, const char *key)
{
        json_object *v = NULL;
        if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        return NULL;
}

static json_object *jget(json_object *o, const char *key, json_type type)
{
        json_object *v = NULL;
        if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, type))
                return v;
        return NULL;
}

static bool is_index_type(const char *mt)
{
        return strcmp(mt, "application/vnd.oci.image.index.v1+json") == 0 ||
               strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json") == 0;
}

static int read_json(struct ctrd_client *cl, const char *digest, size_t max, char **raw,
                     json_object **out, struct cap_error *err)
{
        size_t len = 0;
        _cleanup_free_ char *data = NULL;
        int r = ctrd_content_read(cl, digest, max, &data, &len, err);
        if (r < 0)
                return r;
        enum json_tokener_error jerr;
        json_tokener *tok = json_tokener_new();
        if (!tok)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        *out = json_tokener_parse_ex(tok, data, (int)len);
        jerr = json_tokener_get_error(tok);
        json_tokener_free(tok);
        if (!*out || jerr != json_tokener_success) {
                json_putp(out);
                *out = NULL;
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "blob %s: bad JSON: %s",
                                     digest, json_tokener_error_desc(jerr));
        }
        if (raw)
                *raw = TAKE_PTR(data);
        return 0;
}

/* From an index, the digest of the manifest for linux/CTRD_ARCH. */
static int index_pick(json_object *index, struct ctrd_descriptor *out, struct cap_error *err)
{
        json_object *ms = jget(index, "manifests", json_type_array);
        for (size_t i = 0; ms && i < json_object_array_length(ms); i++) {
                json_object *m = json_object_array_get_idx(ms, i);
                json_object *p = jget(m, "platform", json_type_object);
                const char *os = jget_str(p, "os"), *arch = jget_str(p, "architecture");
                const char *digest = jget_str(m, "digest"), *mt = jget_str(m, "mediaType");
                if (!os || !arch || !digest || strcmp(os, "linux") != 0 ||
                    strcmp(arch, CTRD_ARCH) != 0)
                        continue;
                out->digest = strdup(digest);
                out->media_type = strdup(mt ? mt : "application/vnd.oci.image.manifest.v1+json");
                json_object *sz = jget(m, "size", json_type_int);
                out->size = sz ? json_object_get_int64(sz) : 0;
                if (!out->digest || !out->media_type) {
                        ctrd_descriptor_clear(out);
                        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                }
                return 0;
        }
        return cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "no manifest for linux/%s in the index",
                             CTRD_ARCH);
}

/* chain[0] = diff[0]; chain[i] = sha256(chain[i-1] + " " + diff[i]). */
static void chain_next(const char *parent, const char *diff_id, char out[72])
{
        if (!parent) {
                snprintf(out, 72, "%s", diff_id);
                return;
        }
        char buf[200];
        int n = snprintf(buf, sizeof(buf), "%s %s", parent, diff_id);
        ctrd_sha256_digest(buf, (size_t)n, out);
}

/* Makes the files a layer unpack wrote into a snapshot durable (syncfs of the filesystem holding
 * the snapshot's directory) before the snapshot is committed: containerd's Diff.Apply does not
 * sync, and a power cut after an acknowledged push or pull must not leave an image whose files
 * are empty. The directory is the bind mount's source (first layer) or overlay's upperdir. */
static int snapshot_sync(const struct ctrd_mounts *mounts, struct cap_error *err)
{
        for (size_t i = 0; i < mounts->n; i++) {
                const Containerd__Types__Mount *m = mounts->v[i];
                const char *dir = NULL;
                if (m->type && strcmp(m->type, "bind") == 0)
                        dir = m->source;
                for (size_t j = 0; !dir && j < m->n_options; j++)
                        if (strncmp(m->options[j], "upperdir=", 9) == 0)
                                dir = m->options[j] + 9;
                if (!dir || dir[0] != '/')
                        continue;
                _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0 || syncfs(fd) < 0)
                        return cap_error_errno(err, -errno, "sync unpacked layer %s", dir);
                return 0;
        }
        return 0;
}

/* Unpacks one layer onto parent under the name chain (already known to be missing). */
static int unpack_layer(struct ctrd_client *cl, const struct ctrd_descriptor *layer,
                        const char *parent, const char *chain, const char *want_diff_id,
                        struct cap_error *err)
{
        struct ctrd_mounts mounts = {0};
        _cleanup_free_ char *diff_id = NULL;
        char key[128];
        unsigned rnd = (unsigned)getpid() ^ (unsigned)(uintptr_t)&mounts;
        snprintf(key, sizeof(key), "capsule-extract-%08x-%s", rnd, chain);
        int r = ctrd_snapshot_prepare(cl, key, parent, &mounts, err);
        if (r < 0)
                return r;
        r = ctrd_diff_apply(cl, layer, &mounts, &diff_id, err);
        if (r == 0)
                r = snapshot_sync(&mounts, err);
        ctrd_mounts_clear(&mounts);
        if (r == 0 && strcmp(diff_id, want_diff_id) != 0)
                r = cap_error_set(err, -EINVAL, CAP_DATA_LOSS,
                                  "layer %s: diff id %s, config says %s", layer->digest, diff_id,
                                  want_diff_id);
        if (r == 0) {
                r = ctrd_snapshot_commit(cl, chain, key, err);
                if (r < 0 && is_status(err, CAP_ALREADY_EXISTS)) {
                        cap_error_clear(err); /* unpacked concurrently by someone else */
                        r = 1;
                }
        }
        if (r != 0) {
                struct cap_error e2 = {0};
                ctrd_snapshot_remove(cl, key, &e2);
        }
        return r < 0 ? r : 0;
}

static int unpack_manifest(struct ctrd *c, struct ctrd_client *cl, json_object *manifest,
                           char **config_json, char **chain_out, struct cap_error *err)
{
        json_object *cfgd = jget(manifest, "config", json_type_object);
        json_object *layers = jget(manifest, "layers", json_type_array);
        const char *cfg_digest = jget_str(cfgd, "digest");
        if (!cfg_digest || !layers)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "manifest without config or layers");
        _cleanup_json_ json_object *config = NULL;
        _cleanup_free_ char *raw = NULL;
        int r = read_json(cl, cfg_digest, MAX_CONFIG_BYTES, &raw, &config, err);
        if (r < 0)
                return cap_error_prefix(err, "config");
        json_object *diffs =
            jget(jget(config, "rootfs", json_type_object), "diff_ids", json_type_array);
        size_t n = json_object_array_length(layers);
        if (!diffs || json_object_array_length(diffs) != n || n == 0 || n > MAX_LAYERS)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "config %s: %zu diff_ids for %zu layers", cfg_digest,
                                     diffs ? json_object_array_length(diffs) : 0, n);
        char chain[72] = "", parent[72] = "";
        for (size_t i = 0; i < n; i++) {
                json_object *l = json_object_array_get_idx(layers, i);
                const char *diff_id = json_object_get_string(json_object_array_get_idx(diffs, i));
                if (!diff_id || strncmp(diff_id, "sha256:", 7) != 0)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "config: bad diff_id %zu", i);
                chain_next(i ? parent : NULL, diff_id, chain);
                r = ctrd_snapshot_stat(cl, chain, err);
                if (r < 0 && !is_status(err, CAP_NOT_FOUND))
                        return r;
                if (r < 0) {
                        cap_error_clear(err);
                        json_object *sz = jget(l, "size", json_type_int);
                        struct ctrd_descriptor d = {
                            .media_type = (char *)jget_str(l, "mediaType"),
                            .digest = (char *)jget_str(l, "digest"),
                            .size = sz ? json_object_get_int64(sz) : 0,
                        };
                        if (!d.media_type || !d.digest)
                                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                                     "manifest: bad layer %zu", i);
                        r = unpack_layer(cl, &d, i ? parent : NULL, chain, diff_id, err);
                        if (r < 0)
                                return cap_error_prefix(err, "unpack layer %zu/%zu", i + 1, n);
                }
                memcpy(parent, chain, sizeof(chain));
        }
        r = ctrd_content_set_label(c->client, cfg_digest,
                                   "containerd.io/gc.ref.snapshot." CTRD_SNAPSHOTTER, chain, err);
        if (r < 0)
                return r;
        *chain_out = strdup(chain);
        *config_json = TAKE_PTR(raw);
        if (!*chain_out)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        return 0;
}

/* containerd collects any snapshot or blob that nothing references and no lease holds, at any
 * moment (its GC runs after removals and on a timer). Whatever we create before something else
 * references it (a snapshot before its container, a view while it is mounted, an unpack's
 * layers before the image's gc.ref labels point at them) is made under such a lease. */
struct op_lease {
        char *id;
        struct ctrd_client *cl;
};

static int op_lease_begin(struct ctrd *c, int expire_s, struct op_lease *l, struct cap_error *err)
{
        *l = (struct op_lease){0};
        int r = ctrd_lease_create(c->client, expire_s, &l->id, err);
        if (r < 0)
                return cap_error_prefix(err, "containerd lease");
        l->cl = ctrd_client_leased(c->client, l->id, err);
        if (!l->cl) {
                struct cap_error e2 = {0};
                ctrd_lease_delete(c->client, l->id, &e2);
                free(l->id);
                l->id = NULL;
                return -ENOMEM;
        }
        return 0;
}

/* Ends the lease: what it held and nothing else references becomes garbage. */
static void op_lease_end(struct ctrd *c, struct op_lease *l)
{
        struct cap_error e2 = {0};
        ctrd_client_free(l->cl);
        if (l->id && ctrd_lease_delete(c->client, l->id, &e2) < 0)
                log_warn("containerd: delete lease %s: %s (it expires by itself)", l->id, e2.msg);
        free(l->id);
        *l = (struct op_lease){0};
}

int ctrd_image_ensure_unpacked(struct ctrd *c, const char *ref, char **config_json, char **chain_id,
                               struct cap_error *err)
{
        struct ctrd_descriptor target = {0}, picked = {0};
        _cleanup_json_ json_object *top = NULL;
        _cleanup_json_ json_object *manifest = NULL;
        struct op_lease lease = {0};
        int r;

        *config_json = NULL;
        *chain_id = NULL;
        r = ctrd_image_get(c->client, ref, &target, err);
        if (r < 0)
                return r;
        r = read_json(c->client, target.digest, MAX_MANIFEST_BYTES, NULL, &top, err);
        if (r < 0)
                goto out;
        json_object *m = top;
        if (is_index_type(target.media_type) || jget(top, "manifests", json_type_array)) {
                r = index_pick(top, &picked, err);
                if (r < 0)
                        goto out;
                r = read_json(c->client, picked.digest, MAX_MANIFEST_BYTES, NULL, &manifest, err);
                if (r < 0)
                        goto out;
                m = manifest;
        }
        /* The unpack runs under a lease so half-made snapshots are not collected meanwhile. */
        r = op_lease_begin(c, 3600, &lease, err);
        if (r < 0)
                goto out;
        r = unpack_manifest(c, lease.cl, m, config_json, chain_id, err);
out:
        op_lease_end(c, &lease);
        ctrd_descriptor_clear(&target);
        ctrd_descriptor_clear(&picked);
        if (r < 0) {
                free(*config_json);
                free(*chain_id);
                *config_json = *chain_id = NULL;
                return cap_error_prefix(err, "image %s", ref);
        }
        return 0;
}

/* Mounts one snapshotter mount at dir: "ro"/"bind"/"rbind" become flags, the rest mount data. */
static int mount_one(const Containerd__Types__Mount *m, const char *dir, struct cap_error *err)
{
        unsigned long flags = 0;
        size_t cap = 1;
        for (size_t i = 0; i < m->n_options; i++)
                cap += strlen(m->options[i]) + 1;
        _cleanup_free_ char *data = calloc(1, cap);
        if (!data)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        for (size_t i = 0; i < m->n_options; i++) {
                const char *o = m->options[i];
                if (strcmp(o, "ro") == 0)
                        flags |= MS_RDONLY;
                else if (strcmp(o, "bind") == 0)
                        flags |= MS_BIND;
                else if (strcmp(o, "rbind") == 0)
                        flags |= MS_BIND | MS_REC;
                else if (strcmp(o, "rw") != 0) {
                        if (*data)
                                strcat(data, ",");
                        strcat(data, o);
                }
        }
        if (mount(m->source, dir, m->type, flags, *data ? data : NULL) < 0)
                return cap_error_errno(err, -errno, "mount %s (%s) at %s", m->source, m->type, dir);
        return 0;
}

int ctrd_image_with_rootfs(struct ctrd *c, const char *chain_id, ctrd_rootfs_fn fn, void *ud,
                           struct cap_error *err)
{
        struct ctrd_mounts mounts = {0};
        struct cap_error e2 = {0};
        char key[128], dir[256];
        const char *tmpdir = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/capsule-rootfs-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
        if (!mkdtemp(dir))
                return cap_error_errno(err, -errno, "image rootfs: mkdtemp");
        snprintf(key, sizeof(key), "capsule-view-%s", strrchr(dir, '-') + 1);
        struct op_lease lease;
        int r = op_lease_begin(c, 600, &lease, err);
        if (r < 0) {
                rmdir(dir);
                return r;
        }
        r = ctrd_snapshot_view(lease.cl, key, chain_id, &mounts, err);
        if (r == 0 && mounts.n != 1)
                r = cap_error_set(err, -EINVAL, CAP_INTERNAL,
                                  "image rootfs: %zu mounts, expected 1", mounts.n);
        if (r == 0)
                r = mount_one(mounts.v[0], dir, err);
        if (r == 0) {
                r = fn(dir, ud);
                if (umount2(dir, MNT_DETACH) < 0)
                        log_warn("containerd: umount %s: %s", dir, strerror(errno));
        }
        ctrd_mounts_clear(&mounts);
        ctrd_snapshot_remove(c->client, key, &e2);
        op_lease_end(c, &lease);
        rmdir(dir);
        return r;
}

/* ---- containers ---- */

/* Prepares the container's snapshot and creates the container record (which from then on holds
 * the snapshot), under a lease so the snapshot is not collected in between. */
static int container_create(struct ctrd *c, const struct ctrd_run *run, struct ctrd_mounts *mounts,
                            struct cap_error *err)
{
        struct cap_error e2 = {0};
        struct op_lease lease;
        char gen[32];
        snprintf(gen, sizeof(gen), "%llu", (unsigned long long)run->generation);
        int r = op_lease_begin(c, 600, &lease, err);
        if (r < 0)
                return cap_error_prefix(err, "container %s", run->name);
        r = ctrd_snapshot_prepare(lease.cl, run->name, run->chain_id, mounts, err);
        if (r < 0 && is_status(err, CAP_ALREADY_EXISTS)) {
                /* A leftover from an interrupted run or remove: it may hold another image. */
                Containerd__Services__Containers__V1__Container *ct = NULL;
                if (ctrd_container_get(c->client, run->name, &ct, &e2) == 0) {
                        protobuf_c_message_free_unpacked(&ct->base, NULL);
                        r = cap_error_set(err, -EEXIST, CAP_ALREADY_EXISTS,
                                          "container %s already exists", run->name);
                        goto out;
                }
                cap_error_clear(err);
                if (ctrd_snapshot_remove(c->client, run->name, err) < 0) {
                        r = cap_error_prefix(err, "container %s: stale snapshot", run->name);
                        goto out;
                }
                r = ctrd_snapshot_prepare(lease.cl, run->name, run->chain_id, mounts, err);
        }
        if (r < 0) {
                cap_error_prefix(err, "container %s", run->name);
                goto out;
        }

        struct ctrd_label labels[] = {
            {CTRD_LABEL_WORKLOAD, run->name},
            {CTRD_LABEL_GENERATION, gen},
            {CTRD_LABEL_IMAGE, run->image ? run->image : ""},
        };
        struct ctrd_container_create cc = {
            .id = run->name,
            .image = run->image,
            .spec_json = run->spec_json,
            .snapshot_key = run->name,
            .labels = run->labels ? run->labels : labels,
            .n_labels = run->labels ? run->n_labels : ARRAY_SIZE(labels),
        };
        r = ctrd_container_create(lease.cl, &cc, err);
        if (r < 0) {
                bool exists = is_status(err, CAP_ALREADY_EXISTS);
                ctrd_mounts_clear(mounts);
                if (!exists)
                        ctrd_snapshot_remove(c->client, run->name, &e2);
        }
out:
        op_lease_end(c, &lease);
        return r;
}

int ctrd_container_run(struct ctrd *c, const struct ctrd_run *run, uint32_t *pid,
                       struct cap_error *err)
{
        struct ctrd_mounts mounts = {0};
        struct cap_error e2 = {0};
        int r = container_create(c, run, &mounts, err);
        if (r < 0)
                return r;
        struct ctrd_stdio io = {.stdin_path = run->stdin_path,
                                .stdout_path = run->stdout_path,
                                .stderr_path = run->stderr_path,
                                .terminal = run->terminal};
        r = ctrd_task_create(c->client, run->name, &mounts, &io, NULL, err);
        ctrd_mounts_clear(&mounts);
        if (r == 0 && run->before_start)
                r = run->before_start(run->before_start_ud, err);
        if (r == 0)
                r = ctrd_task_start(c->client, run->name, NULL, pid, err);
        if (r < 0) {
                ctrd_container_remove(c, run->name, &e2);
                return r;
        }
        return 0;
}

/* A Wait that ran out of time: gRPC's DEADLINE_EXCEEDED, or containerd noticing its context's
 * deadline first and answering UNKNOWN "context deadline exceeded". */
static bool is_timeout(const struct cap_error *err)
{
        return err->status == CAP_DEADLINE_EXCEEDED ||
               (err->status == CAP_UNKNOWN && strstr(err->msg, "deadline exceeded"));
}

/* Waits for the init process; NOT_FOUND (no task) counts as exited. */
static int wait_exit(struct ctrd *c, const char *name, int timeout_ms, uint32_t *status,
                     struct cap_error *err)
{
        int r = ctrd_task_wait(c->client, name, NULL, timeout_ms, status, err);
        if (r < 0 && is_status(err, CAP_NOT_FOUND)) {
                cap_error_clear(err);
                return 0;
        }
        return r;
}

int ctrd_container_stop(struct ctrd *c, const char *name, int grace_ms, uint32_t *exit_status,
                        struct cap_error *err)
{
        uint32_t st = 0;
        _cleanup_msg_ Containerd__Services__Tasks__V1__GetResponse *task = NULL;
        int r = ctrd_task_get(c->client, name, NULL, &task, err);
        if (r < 0 && is_status(err, CAP_NOT_FOUND)) {
                cap_error_clear(err);
                return 0;
        }
        if (r < 0)
                return cap_error_prefix(err, "stop %s", name);
        if (task->process && task->process->status == CONTAINERD__V1__TYPES__STATUS__STOPPED) {
                if (exit_status)
                        *exit_status = task->process->exit_status;
                return 0;
        }
        if (grace_ms > 0) {
                r = ctrd_task_kill(c->client, name, NULL, SIGTERM, false, err);
                if (r < 0 && !is_status(err, CAP_NOT_FOUND) && !is_status(err, CAP_FAILED_PRECONDITION))
                        return cap_error_prefix(err, "stop %s: SIGTERM", name);
                cap_error_clear(err);
                r = wait_exit(c, name, grace_ms, &st, err);
        } else {
                /* forced: no grace period, SIGKILL at once */
                r = cap_error_set(err, -ETIMEDOUT, CAP_DEADLINE_EXCEEDED, "no grace period");
        }
        if (r < 0 && (grace_ms <= 0 || is_timeout(err))) {
                cap_error_clear(err);
                if (grace_ms > 0)
                        log_info("containerd: %s did not stop within %d ms: SIGKILL", name, grace_ms);
                r = ctrd_task_kill(c->client, name, NULL, SIGKILL, true, err);
                if (r < 0 && !is_status(err, CAP_NOT_FOUND) &&
                    !is_status(err, CAP_FAILED_PRECONDITION))
                        return cap_error_prefix(err, "stop %s: SIGKILL", name);
                cap_error_clear(err);
                r = wait_exit(c, name, KILL_WAIT_MS, &st, err);
        }
        if (r < 0)
                return cap_error_prefix(err, "stop %s", name);
        if (exit_status)
                *exit_status = st;
        return 0;
}

int ctrd_container_remove(struct ctrd *c, const char *name, struct cap_error *err)
{
        int r = ctrd_task_delete(c->client, name, NULL, err);
        if (r < 0 && !is_status(err, CAP_NOT_FOUND)) {
                /* Still running (or created but never started): kill it, then delete. */
                cap_error_clear(err);
                struct cap_error e2 = {0};
                ctrd_task_kill(c->client, name, NULL, SIGKILL, true, &e2);
                wait_exit(c, name, KILL_WAIT_MS, NULL, &e2);
                r = ctrd_task_delete(c->client, name, NULL, err);
        }
        if (r < 0 && !is_status(err, CAP_NOT_FOUND))
                return cap_error_prefix(err, "remove %s: task", name);
        cap_error_clear(err);
        r = ctrd_container_delete(c->client, name, err);
        if (r < 0 && !is_status(err, CAP_NOT_FOUND))
                return cap_error_prefix(err, "remove %s: container", name);
        cap_error_clear(err);
        r = ctrd_snapshot_remove(c->client, name, err);
        if (r < 0 && !is_status(err, CAP_NOT_FOUND))
                return cap_error_prefix(err, "remove %s: snapshot", name);
        cap_error_clear(err);
        return 0;
}

bool ctrd_is_debug_id(const char *id)
{
        return id && strncmp(id, CTRD_DEBUG_PREFIX, strlen(CTRD_DEBUG_PREFIX)) == 0;
}

int ctrd_debug_cleanup(struct ctrd *c, struct cap_error *err)
{
        _cleanup_msg_ Containerd__Services__Containers__V1__ListContainersResponse *list = NULL;
        int r = ctrd_container_list(c->client, "labels.\"" CTRD_LABEL_DEBUG "\"", &list, err);
        if (r < 0)
                return cap_error_prefix(err, "list debug containers");
        int n = 0;
        for (size_t i = 0; i < list->n_containers; i++) {
                const char *id = list->containers[i]->id;
                if (!ctrd_is_debug_id(id))
                        continue; /* labelled by hand: not ours to remove */
                struct cap_error e2 = {0};
                if (ctrd_container_remove(c, id, &e2) < 0)
                        log_warn("containerd: leftover debug container %s: %s", id, e2.msg);
                else
                        n++;
        }
        return n;
}

const char *ctrd_task_state_name(enum ctrd_task_state s)
{
        static const char *const names[] = {"none",    "created", "running",
                                            "stopped", "paused",  "unknown"};
        return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "unknown";
}

static enum ctrd_task_state state_from(Containerd__V1__Types__Status s)
{
        switch (s) {
        case CONTAINERD__V1__TYPES__STATUS__CREATED:
                return CTRD_TASK_CREATED;
        case CONTAINERD__V1__TYPES__STATUS__RUNNING:
                return CTRD_TASK_RUNNING;
        case CONTAINERD__V1__TYPES__STATUS__STOPPED:
                return CTRD_TASK_STOPPED;
        case CONTAINERD__V1__TYPES__STATUS__PAUSED:
        case CONTAINERD__V1__TYPES__STATUS__PAUSING:
                return CTRD_TASK_PAUSED;
        default:
                return CTRD_TASK_UNKNOWN;
        }
}

static const char *label_of(const Containerd__Services__Containers__V1__Container *ct,
                            const char *key)
{
        for (size_t i = 0; i < ct->n_labels; i++)
                if (strcmp(ct->labels[i]->key, key) == 0)
                        return ct->labels[i]->value;
        return NULL;
}

int ctrd_list_workloads(struct ctrd *c, ctrd_workload_fn fn, void *ud, struct cap_error *err)
{
        _cleanup_msg_ Containerd__Services__Containers__V1__ListContainersResponse *list = NULL;
        int r = ctrd_container_list(c->client, "labels.\"" CTRD_LABEL_WORKLOAD "\"", &list, err);
        if (r < 0)
                return cap_error_prefix(err, "list workloads");
        for (size_t i = 0; i < list->n_containers; i++) {
                const Containerd__Services__Containers__V1__Container *ct = list->containers[i];
                const char *gen = label_of(ct, CTRD_LABEL_GENERATION);
                struct ctrd_workload w = {
                    .id = ct->id,
                    .name = label_of(ct, CTRD_LABEL_WORKLOAD),
                    .generation = gen ? strtoull(gen, NULL, 10) : 0,
                    .image = ct->image,
                };
                _cleanup_msg_ Containerd__Services__Tasks__V1__GetResponse *task = NULL;
                r = ctrd_task_get(c->client, ct->id, NULL, &task, err);
                if (r < 0 && !is_status(err, CAP_NOT_FOUND))
                        return cap_error_prefix(err, "list workloads: task %s", ct->id);
                cap_error_clear(err);
                if (r == 0 && task->process) {
                        w.state = state_from(task->process->status);
                        w.pid = task->process->pid;
                        w.exit_status = task->process->exit_status;
                        w.exited_at_ns = ts_ns(task->process->exited_at);
                }
                r = fn(&w, ud);
                if (r != 0)
                        return r;
        }
        return 0;
}

/* ---- exec ---- */

int ctrd_exec(struct ctrd *c, const struct ctrd_exec_req *req, uint32_t *pid, struct cap_error *err)
{
        Containerd__Services__Containers__V1__Container *ct = NULL;
        _cleanup_free_ char *spec = NULL;
        _cleanup_free_ char *proc = NULL;
        int r = ctrd_container_get(c->client, req->name, &ct, err);
        if (r < 0)
                return cap_error_prefix(err, "exec in %s", req->name);
        if (ct->spec && ct->spec->value.len > 0)
                spec = strndup((const char *)ct->spec->value.data, ct->spec->value.len);
        protobuf_c_message_free_unpacked(&ct->base, NULL);
        if (!spec)
                return cap_error_set(err, -EINVAL, CAP_FAILED_PRECONDITION,
                                     "exec in %s: container has no spec", req->name);
        r = spec_exec_process(spec, req->argv, req->env_extra, req->tty, &proc, err);
        if (r < 0)
                return cap_error_prefix(err, "exec in %s", req->name);
        struct ctrd_stdio io = {.stdin_path = req->stdin_path,
                                .stdout_path = req->stdout_path,
                                .stderr_path = req->tty ? NULL : req->stderr_path,
                                .terminal = req->tty};
        r = ctrd_task_exec(c->client, req->name, req->exec_id, proc, &io, err);
        if (r < 0)
                return r;
        r = ctrd_task_start(c->client, req->name, req->exec_id, pid, err);
        if (r < 0) {
                struct cap_error e2 = {0};
                ctrd_task_delete_process(c->client, req->name, req->exec_id, NULL, &e2);
        }
        return r;
}

int ctrd_exec_resize(struct ctrd *c, const char *name, const char *exec_id, uint32_t cols,
                     uint32_t rows, struct cap_error *err)
{
        return ctrd_task_resize(c->client, name, exec_id, cols, rows, err);
}

int ctrd_exec_close_stdin(struct ctrd *c, const char *name, const char *exec_id,
                          struct cap_error *err)
{
        return ctrd_task_close_stdin(c->client, name, exec_id, err);
}

int ctrd_exec_wait(struct ctrd *c, const char *name, const char *exec_id, int timeout_ms,
                   uint32_t *exit_status, struct cap_error *err)
{
        return ctrd_task_wait(c->client, name, exec_id, timeout_ms, exit_status, err);
}

int ctrd_exec_delete(struct ctrd *c, const char *name, const char *exec_id, struct cap_error *err)
{
        int r = ctrd_task_delete_process(c->client, name, exec_id, NULL, err);
        if (r < 0 && is_status(err, CAP_NOT_FOUND)) {
                cap_error_clear(err);
                return 0;
        }
        return r;
}

/* ---- events ---- */

struct ctrd_events {
        struct ctrd *c;
        ctrd_event_fn fn;
        void *ud;
        pthread_t thread;
        pthread_mutex_t lock;
        struct rpc_stream *stream; /* current subscription, under lock */
        atomic_bool stop;
};

static const char *const event_filters[] = {
    "namespace==" CTRD_NAMESPACE ",topic==\"/tasks/exit\"",
    "namespace==" CTRD_NAMESPACE ",topic==\"/tasks/oom\"",
};

static void deliver(struct ctrd_events *ev, const Containerd__Services__Events__V1__Envelope *env)
{
        const Google__Protobuf__Any *any = env->event;
        if (!any || !any->type_url)
                return;
        int64_t t = ts_ns(env->timestamp);
        if (strcmp(any->type_url, "containerd.events.TaskExit") == 0) {
                Containerd__Events__TaskExit *e =
                    containerd__events__task_exit__unpack(NULL, any->value.len, any->value.data);
                if (!e)
                        return;
                struct ctrd_event out = {.kind = CTRD_EVENT_EXIT,
                                         .container_id = e->container_id,
                                         .exec_id = e->id,
                                         .pid = e->pid,
                                         .exit_status = e->exit_status,
                                         .time_ns = e->exited_at ? ts_ns(e->exited_at) : t};
                ev->fn(&out, ev->ud);
                containerd__events__task_exit__free_unpacked(e, NULL);
        } else if (strcmp(any->type_url, "containerd.events.TaskOOM") == 0) {
                Containerd__Events__TaskOOM *e =
                    containerd__events__task_oom__unpack(NULL, any->value.len, any->value.data);
                if (!e)
                        return;
                struct ctrd_event out = {.kind = CTRD_EVENT_OOM,
                                         .container_id = e->container_id,
                                         .exec_id = e->container_id,
                                         .time_ns = t};
                ev->fn(&out, ev->ud);
                containerd__events__task_oom__free_unpacked(e, NULL);
        }
}

static int events_open(struct ctrd_events *ev, struct cap_error *err)
{
        struct rpc_stream *s =
            ctrd_events_open(ev->c->client, event_filters, ARRAY_SIZE(event_filters), err);
        if (!s)
                return -EIO;
        pthread_mutex_lock(&ev->lock);
        ev->stream = s;
        if (atomic_load(&ev->stop))
                rpc_stream_cancel(s); /* ctrd_events_stop ran while we were opening */
        pthread_mutex_unlock(&ev->lock);
        return 0;
}

static void *events_thread(void *arg)
{
        struct ctrd_events *ev = arg;
        bool first = true;
        while (!atomic_load(&ev->stop)) {
                struct cap_error err = {0};
                if (!first) {
                        if (events_open(ev, &err) < 0) {
                                sleep(1);
                                continue;
                        }
                        struct ctrd_event re = {.kind = CTRD_EVENT_RESUBSCRIBED};
                        if (!atomic_load(&ev->stop))
                                ev->fn(&re, ev->ud);
                }
                first = false;
                for (;;) {
                        Containerd__Services__Events__V1__Envelope *env = NULL;
                        int r = rpc_stream_recv(ev->stream, (ProtobufCMessage **)&env, &err);
                        if (r <= 0)
                                break;
                        if (!atomic_load(&ev->stop))
                                deliver(ev, env);
                        protobuf_c_message_free_unpacked(&env->base, NULL);
                }
                pthread_mutex_lock(&ev->lock);
                rpc_stream_free(ev->stream);
                ev->stream = NULL;
                pthread_mutex_unlock(&ev->lock);
                if (!atomic_load(&ev->stop)) {
                        log_warn("containerd: event stream ended: %s; resubscribing", err.msg);
                        sleep(1);
                }
        }
        return NULL;
}

struct ctrd_events *ctrd_events_subscribe(struct ctrd *c, ctrd_event_fn fn, void *ud,
                                          struct cap_error *err)
{
        struct ctrd_events *ev = calloc(1, sizeof(*ev));
        if (!ev) {
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        ev->c = c;
        ev->fn = fn;
        ev->ud = ud;
        pthread_mutex_init(&ev->lock, NULL);
        if (events_open(ev, err) < 0) {
                cap_error_prefix(err, "subscribe to containerd events");
                pthread_mutex_destroy(&ev->lock);
                free(ev);
                return NULL;
        }
        int r = pthread_create(&ev->thread, NULL, events_thread, ev);
        if (r != 0) {
                cap_error_errno(err, -r, "subscribe to containerd events: thread");
                rpc_stream_free(ev->stream);
                pthread_mutex_destroy(&ev->lock);
                free(ev);
                return NULL;
        }
        return ev;
}

void ctrd_events_stop(struct ctrd_events *ev)
{
        if (!ev)
                return;
        atomic_store(&ev->stop, true);
        pthread_mutex_lock(&ev->lock);
        if (ev->stream)
                rpc_stream_cancel(ev->stream);
        pthread_mutex_unlock(&ev->lock);
        pthread_join(ev->thread, NULL);
        pthread_mutex_destroy(&ev->lock);
        free(ev);
}

/* ---- image import ---- */

struct ctrd_import {
        struct ctrd *c;
        struct op_lease lease; /* blobs written but not yet referenced by the image survive GC */
};

int ctrd_import_begin(struct ctrd *c, struct ctrd_import **out, struct cap_error *err)
{
        struct ctrd_import *imp = calloc(1, sizeof(*imp));
        if (!imp)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        imp->c = c;
        if (op_lease_begin(c, 24 * 3600, &imp->lease, err) < 0) {
                free(imp);
                return cap_error_prefix(err, "image import");
        }
        *out = imp;
        return 0;
}

struct ctrd_client *ctrd_import_client(struct ctrd_import *imp)
{
        return imp->lease.cl;
}

int ctrd_import_blob(struct ctrd_import *imp, const char *digest, const void *data, size_t len,
                     const struct ctrd_label *labels, size_t n_labels, struct cap_error *err)
{
        char ref[128];
        snprintf(ref, sizeof(ref), "capsule-import-%s", digest);
        int r = ctrd_content_write(imp->lease.cl, ref, digest, data, len, labels, n_labels, err);
        if (r == 1) {
                /* The blob existed, perhaps without our labels: set them. */
                r = 0;
                for (size_t i = 0; i < n_labels && r == 0; i++)
                        r = ctrd_content_set_label(imp->lease.cl, digest, labels[i].key,
                                                   labels[i].value, err);
        }
        return r < 0 ? cap_error_prefix(err, "import blob %s", digest) : 0;
}

int ctrd_import_finish(struct ctrd_import *imp, const char *name,
                       const struct ctrd_descriptor *target, struct cap_error *err)
{
        int r = ctrd_image_put(imp->lease.cl, name, target, NULL, 0, err);
        ctrd_import_abort(imp);
        return r;
}

void ctrd_import_abort(struct ctrd_import *imp)
{
        if (!imp)
                return;
        op_lease_end(imp->c, &imp->lease);
        free(imp);
}

void ctrd_labels_free(struct ctrd_label *labels, size_t n)
{
        for (size_t i = 0; labels && i < n; i++) {
                free((char *)labels[i].key);
                free((char *)labels[i].value);
        }
        free(labels);
}

static int label_add(struct ctrd_label **l, size_t *n, const char *key, const char *value)
{
        struct ctrd_label *g = realloc(*l, (*n + 1) * sizeof(**l));
        if (!g)
                return -ENOMEM;
        *l = g;
        g[*n].key = strdup(key);
        g[*n].value = strdup(value);
        (*n)++;
        return g[*n - 1].key && g[*n - 1].value ? 0 : -ENOMEM;
}

int ctrd_gc_labels(const char *json, size_t len, struct ctrd_label **labels, size_t *n,
                   struct cap_error *err)
{
        *labels = NULL;
        *n = 0;
        json_tokener *tok = json_tokener_new();
        if (!tok)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        _cleanup_json_ json_object *j = json_tokener_parse_ex(tok, json, (int)len);
        json_tokener_free(tok);
        if (!j || !json_object_is_type(j, json_type_object))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "manifest: bad JSON");
        int r = 0;
        const char *cfg = jget_str(jget(j, "config", json_type_object), "digest");
        if (cfg)
                r = label_add(labels, n, "containerd.io/gc.ref.content.config", cfg);
        static const struct {
                const char *field, *prefix;
        } lists[] = {
            {"layers", "containerd.io/gc.ref.content.l."},
            {"manifests", "containerd.io/gc.ref.content.m."},
        };
        for (size_t k = 0; k < ARRAY_SIZE(lists) && r == 0; k++) {
                json_object *a = jget(j, lists[k].field, json_type_array);
                for (size_t i = 0; a && i < json_object_array_length(a) && r == 0; i++) {
                        const char *d = jget_str(json_object_array_get_idx(a, i), "digest");
                        char key[96];
                        snprintf(key, sizeof(key), "%s%zu", lists[k].prefix, i);
                        if (d)
                                r = label_add(labels, n, key, d);
                }
        }
        if (r < 0) {
                ctrd_labels_free(*labels, *n);
                *labels = NULL;
                *n = 0;
                return cap_error_set(err, r, CAP_INTERNAL, "out of memory");
        }
        return 0;
}
