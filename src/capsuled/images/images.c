/* capsule.v1.Images handlers and images_ensure(): glue between the archive importer / registry
 * client (which produce verified blobs), containerd's content store (content.c, under a lease)
 * and containerd's image records. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "archive.h"
#include "capsule/v1/images.pb-c.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "containerd/driver.h"
#include "content.h"
#include "images.h"
#include "reference.h"
#include "registry.h"
#include "store/store.h"

#define LABEL_SIZE "capsule.image.size"

static const struct images_env *env_of(struct rpc_call *call)
{
        return rpc_call_method(call)->userdata;
}

static int need_ctrd(const struct images_env *env, struct cap_error *err)
{
        if (env->ctrd)
                return 0;
        return cap_error_set(err, -ENOTCONN, CAP_FAILED_PRECONDITION,
                             "no container runtime: capsuled runs without --containerd");
}

static int64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double mono_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- which workloads use which image ---- */

struct users {
        char **workload;
        char **image; /* normalised spec.image */
        size_t n;
};

static void users_free(struct users *u)
{
        for (size_t i = 0; i < u->n; i++) {
                free(u->workload[i]);
                free(u->image[i]);
        }
        free(u->workload);
        free(u->image);
        *u = (struct users){0};
}

static int users_load(const struct images_env *env, struct users *u, struct cap_error *err)
{
        struct store_workload *ws = NULL;
        size_t n = 0;
        *u = (struct users){0};
        if (!env->store)
                return 0;
        if (store_list_workloads(env->store, &ws, &n, err) < 0)
                return cap_error_prefix(err, "list workloads");
        u->workload = calloc(n + 1, sizeof(char *));
        u->image = calloc(n + 1, sizeof(char *));
        if (!u->workload || !u->image) {
                store_workloads_free(ws, n);
                users_free(u);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        for (size_t i = 0; i < n; i++) {
                Capsule__V1__WorkloadSpec *spec =
                    capsule__v1__workload_spec__unpack(NULL, ws[i].spec_len, ws[i].spec);
                char *norm = NULL;
                struct cap_error ignored = {0};
                if (spec && spec->image && *spec->image &&
                    image_ref_normalize(spec->image, &norm, &ignored) == 0) {
                        u->workload[u->n] = strdup(ws[i].name);
                        u->image[u->n] = norm;
                        u->n++;
                }
                if (spec)
                        capsule__v1__workload_spec__free_unpacked(spec, NULL);
        }
        store_workloads_free(ws, n);
        return 0;
}

/* Fills img->used_by (malloc'd) with the workloads whose image is `name`. */
static void users_fill(const struct users *u, const char *name, Capsule__V1__Image *img)
{
        for (size_t i = 0; i < u->n; i++) {
                if (!u->workload[i] || strcmp(u->image[i], name) != 0)
                        continue;
                char **nv = realloc(img->used_by, (img->n_used_by + 1) * sizeof(char *));
                if (!nv)
                        return;
                img->used_by = nv;
                if ((img->used_by[img->n_used_by] = strdup(u->workload[i])))
                        img->n_used_by++;
        }
}

static Capsule__V1__Image *image_msg(const char *name, const char *digest, uint64_t size,
                                     int64_t created_ns, const struct users *u)
{
        Capsule__V1__Image *img = malloc(sizeof(*img));
        if (!img)
                return NULL;
        capsule__v1__image__init(img);
        img->name = strdup(name);
        img->digest = strdup(digest);
        if (!img->name || !img->digest) {
                capsule__v1__image__free_unpacked(img, NULL);
                return NULL;
        }
        img->size_bytes = size;
        img->created_unix_nano = created_ns;
        if (u)
                users_fill(u, name, img);
        return img;
}

/* ---- writing images into containerd ---- */

static int put_image(struct ctrd_client *c, const char *name, const char *media_type,
                     const char *digest, uint64_t manifest_size, uint64_t total,
                     struct cap_error *err)
{
        char size[32];
        snprintf(size, sizeof(size), "%" PRIu64, total);
        struct ctrd_label labels[] = {{LABEL_SIZE, size}};
        struct ctrd_descriptor target = {.media_type = (char *)media_type,
                                         .digest = (char *)digest,
                                         .size = (int64_t)manifest_size};
        return ctrd_image_put(c, name, &target, labels, 1, err);
}

/* 0 when the manifest `digest` and every blob it references are in the content store, -ENOENT
 * when one is missing. A blob that existed before an import is skipped, not re-written, and is not
 * covered by the import's lease: the garbage collector may remove it (if nothing referenced it)
 * before the image record does. Checked after the records exist, so one re-run repairs it. */
static int image_complete(struct ctrd_client *c, const char *digest, struct cap_error *err)
{
        char *data = NULL;
        size_t len = 0;
        if (ctrd_content_read(c, digest, BLOB_META_MAX, &data, &len, err) < 0)
                return err->status == CAP_NOT_FOUND ? -ENOENT : err->code;
        struct json_tokener *tok = json_tokener_new();
        struct json_object *m = tok ? json_tokener_parse_ex(tok, data, (int)len) : NULL, *cfg,
                           *layers, *d;
        json_tokener_free(tok);
        free(data);
        int r = 0;
        if (m && json_object_object_get_ex(m, "config", &cfg) &&
            json_object_object_get_ex(cfg, "digest", &d) &&
            ctrd_content_info(c, json_object_get_string(d), NULL, err) < 0)
                r = -ENOENT;
        if (m && json_object_object_get_ex(m, "layers", &layers) &&
            json_object_is_type(layers, json_type_array))
                for (size_t i = 0; r == 0 && i < json_object_array_length(layers); i++)
                        if (json_object_object_get_ex(json_object_array_get_idx(layers, i),
                                                      "digest", &d) &&
                            ctrd_content_info(c, json_object_get_string(d), NULL, err) < 0)
                                r = -ENOENT;
        json_object_put(m);
        if (r < 0 && err->status != CAP_NOT_FOUND)
                return err->code;
        cap_error_clear(err);
        return r;
}

static int import_write(struct ctrd_client *c, struct archive_plan *plan, int fd,
                        struct content_sink *cs, struct cap_error *err)
{
        int r = archive_plan_write(plan, fd, &cs->sink, err);
        for (size_t i = 0; r == 0 && i < archive_plan_n_images(plan); i++) {
                const struct archive_image *im = archive_plan_image(plan, i);
                r = put_image(c, im->name, im->media_type, im->digest, im->manifest_size,
                              im->total_size, err);
        }
        return r;
}

/* Pass 2 of an import plus the image records, under a lease released at the end. */
static int import_plan(const struct images_env *env, struct archive_plan *plan, int fd,
                       struct cap_error *err)
{
        struct ctrd_import *imp = NULL;
        struct content_sink cs = {0};
        if (ctrd_import_begin(env->ctrd, &imp, err) < 0)
                return err->code;
        struct ctrd_client *c = ctrd_import_client(imp);
        int r = content_sink_init(&cs, c, err);
        if (r == 0)
                r = import_write(c, plan, fd, &cs, err);
        for (size_t i = 0; r == 0 && i < archive_plan_n_images(plan); i++) {
                r = image_complete(c, archive_plan_image(plan, i)->digest, err);
                if (r == -ENOENT) {
                        log_warn("image push: blobs of %s vanished during the import (GC); writing "
                                 "them again",
                                 archive_plan_image(plan, i)->name);
                        r = import_write(c, plan, fd, &cs, err);
                        if (r == 0)
                                r = image_complete(c, archive_plan_image(plan, i)->digest, err);
                        if (r == -ENOENT)
                                r = cap_error_set(err, -ENOENT, CAP_ABORTED,
                                                  "blobs of %s vanished during the import",
                                                  archive_plan_image(plan, i)->name);
                }
        }
        content_sink_done(&cs);
        /* The records (if any) now reference the blobs: the lease can go either way. */
        ctrd_import_abort(imp);
        return r;
}

/* ---- Push ---- */

static int spool_open(const char *root, struct cap_error *err)
{
        _cleanup_free_ char *dir = NULL;
        if (asprintf(&dir, "%s/tmp", root) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return cap_error_errno(err, -errno, "spool directory %s", dir);
        int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0)
                return fd;
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/push-XXXXXX", dir) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "spool file in %s", dir);
        unlink(path);
        return fd;
}

static int write_all(int fd, const uint8_t *p, size_t len, struct cap_error *err)
{
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return cap_error_errno(err, -errno, "spool file");
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Receives the header and the chunks into a spool file; returns its fd. */
static int push_receive(struct rpc_call *call, const struct images_env *env, char **name,
                        struct cap_error *err)
{
        uint64_t cap = env->max_archive_bytes ? env->max_archive_bytes : IMAGES_DEFAULT_MAX_ARCHIVE;
        ProtobufCMessage *m = NULL;
        *name = NULL;
        int r = rpc_call_recv(call, &m, err);
        if (r <= 0)
                return r < 0 ? r : cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "no data");
        Capsule__V1__ImagePushRequest *req = (Capsule__V1__ImagePushRequest *)m;
        if (req->msg_case != CAPSULE__V1__IMAGE_PUSH_REQUEST__MSG_HEADER) {
                protobuf_c_message_free_unpacked(m, NULL);
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "the first message must be the header");
        }
        uint64_t total = req->header->total_bytes;
        if (req->header->name && *req->header->name &&
            image_ref_normalize(req->header->name, name, err) < 0) {
                protobuf_c_message_free_unpacked(m, NULL);
                return cap_error_prefix(err, "name");
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (total > cap)
                return cap_error_set(err, -EFBIG, CAP_RESOURCE_EXHAUSTED,
                                     "archive of %" PRIu64
                                     " bytes is larger than the limit of %" PRIu64,
                                     total, cap);
        _cleanup_close_ int fd = spool_open(env->root, err);
        if (fd < 0)
                return fd;
        uint64_t got = 0;
        for (;;) {
                r = rpc_call_recv(call, &m, err);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                req = (Capsule__V1__ImagePushRequest *)m;
                if (req->msg_case != CAPSULE__V1__IMAGE_PUSH_REQUEST__MSG_CHUNK) {
                        protobuf_c_message_free_unpacked(m, NULL);
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "a second header");
                }
                got += req->chunk.len;
                if (got > cap) {
                        protobuf_c_message_free_unpacked(m, NULL);
                        return cap_error_set(err, -EFBIG, CAP_RESOURCE_EXHAUSTED,
                                             "archive larger than the limit of %" PRIu64 " bytes",
                                             cap);
                }
                r = write_all(fd, req->chunk.data, req->chunk.len, err);
                protobuf_c_message_free_unpacked(m, NULL);
                if (r < 0)
                        return r;
        }
        if (total && got != total)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "upload incomplete: got %" PRIu64 " of %" PRIu64 " bytes", got,
                                     total);
        if (got == 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "empty archive");
        return TAKE_FD(fd);
}

int images_push(struct rpc_call *call, const ProtobufCMessage *unused, struct cap_error *err)
{
        const struct images_env *env = env_of(call);
        _cleanup_free_ char *name = NULL;
        if (need_ctrd(env, err) < 0)
                return err->code;
        double t0 = mono_s();
        _cleanup_close_ int fd = push_receive(call, env, &name, err);
        if (fd < 0)
                return fd;
        double t1 = mono_s();
        struct archive_plan *plan = NULL;
        struct archive_limits lim = {.max_entry_bytes = env->max_archive_bytes};
        if (archive_plan_open(fd, name, &lim, &plan, err) < 0)
                return err->code;
        int r = import_plan(env, plan, fd, err);
        if (r < 0) {
                archive_plan_free(plan);
                return err->code;
        }
        struct users u;
        if (users_load(env, &u, err) < 0) {
                archive_plan_free(plan);
                return err->code;
        }
        Capsule__V1__ImagePushResponse resp = CAPSULE__V1__IMAGE_PUSH_RESPONSE__INIT;
        size_t n = archive_plan_n_images(plan);
        resp.images = calloc(n, sizeof(*resp.images));
        for (size_t i = 0; resp.images && i < n; i++) {
                const struct archive_image *im = archive_plan_image(plan, i);
                if ((resp.images[resp.n_images] =
                         image_msg(im->name, im->digest, im->total_size, now_ns(), &u)))
                        resp.n_images++;
                log_info("image push: imported name=%s digest=%s format=%s size=%" PRIu64
                         " receive=%.3fs import=%.3fs",
                         im->name, im->digest, archive_plan_format(plan), im->total_size, t1 - t0,
                         mono_s() - t1);
        }
        users_free(&u);
        archive_plan_free(plan);
        r = rpc_call_send(call, &resp.base, err);
        for (size_t i = 0; i < resp.n_images; i++)
                capsule__v1__image__free_unpacked(resp.images[i], NULL);
        free(resp.images);
        return r;
}

/* ---- Pull ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_rc;
static void curl_init_once(void)
{
        struct cap_error e = {0};
        curl_init_rc = registry_global_init(&e);
}

/* Pulls in flight, by normalised name: one pull of an image at a time (a second waits for the
 * first, then finds its blobs present), any number of different images at once. */
struct flight {
        char *name;
        struct flight *next;
};
static pthread_mutex_t flights_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flights_cond = PTHREAD_COND_INITIALIZER;
static struct flight *flights;

/* Waits until no pull of name is in flight, then holds name. Returns 0 or -ENOMEM. */
static int flight_enter(const char *name)
{
        pthread_mutex_lock(&flights_lock);
        for (;;) {
                struct flight *f = flights;
                while (f && strcmp(f->name, name) != 0)
                        f = f->next;
                if (!f)
                        break;
                pthread_cond_wait(&flights_cond, &flights_lock);
        }
        struct flight *f = calloc(1, sizeof(*f));
        if (!f || !(f->name = strdup(name))) {
                free(f);
                pthread_mutex_unlock(&flights_lock);
                return -ENOMEM;
        }
        f->next = flights;
        flights = f;
        pthread_mutex_unlock(&flights_lock);
        return 0;
}

static void flight_leave(const char *name)
{
        pthread_mutex_lock(&flights_lock);
        for (struct flight **pp = &flights; *pp; pp = &(*pp)->next) {
                if (strcmp((*pp)->name, name) == 0) {
                        struct flight *f = *pp;
                        *pp = f->next;
                        free(f->name);
                        free(f);
                        break;
                }
        }
        pthread_cond_broadcast(&flights_cond);
        pthread_mutex_unlock(&flights_lock);
}

/* Pulls ref into containerd and names it; *name is the normalised reference. */
static int pull(const struct images_env *env, const char *ref, char **name,
                struct registry_result *res, const struct images_pull_hooks *hooks,
                struct cap_error *err)
{
        struct image_ref r;
        *name = NULL;
        if (need_ctrd(env, err) < 0)
                return err->code;
        if (image_ref_parse(ref, &r, err) < 0)
                return err->code;
        pthread_once(&curl_once, curl_init_once);
        if (curl_init_rc < 0) {
                image_ref_clear(&r);
                return cap_error_set(err, -EIO, CAP_INTERNAL, "libcurl initialisation failed");
        }
        if (!(*name = image_ref_string(&r))) {
                image_ref_clear(&r);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        if (flight_enter(*name) < 0) {
                image_ref_clear(&r);
                free(*name);
                *name = NULL;
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        struct registry_opts o = {0};
        void *hold = env->registries_get(env->registries_ud, &o);
        if (hooks) {
                o.progress = hooks->progress;
                o.progress_ud = hooks->progress_ud;
                o.cancel = hooks->cancel;
        }
        struct ctrd_import *imp = NULL;
        struct content_sink cs = {0};
        double t0 = mono_s();
        int rc = ctrd_import_begin(env->ctrd, &imp, err);
        if (rc == 0)
                rc = content_sink_init(&cs, ctrd_import_client(imp), err);
        for (int attempt = 0; rc == 0 && attempt < 2; attempt++) {
                rc = registry_pull(&o, &r, &cs.sink, res, err);
                if (rc == 0)
                        rc = put_image(ctrd_import_client(imp), *name, res->media_type, res->digest,
                                       res->manifest_size, res->total_size, err);
                if (rc == 0)
                        rc = image_complete(ctrd_import_client(imp), res->digest, err);
                if (rc != -ENOENT)
                        break;
                log_warn(
                    "image pull: blobs of %s vanished during the pull (GC); pulling them again",
                    *name);
                rc = attempt == 0 ? 0
                                  : cap_error_set(err, -ENOENT, CAP_ABORTED,
                                                  "blobs of %s vanished during the pull", *name);
        }
        content_sink_done(&cs);
        ctrd_import_abort(imp);
        env->registries_put(env->registries_ud, hold);
        flight_leave(*name);
        image_ref_clear(&r);
        if (rc == 0)
                log_info("image pull: name=%s digest=%s size=%" PRIu64 " fetched=%" PRIu64
                         " time=%.3fs",
                         *name, res->digest, res->total_size, res->bytes_fetched, mono_s() - t0);
        else {
                free(*name);
                *name = NULL;
        }
        return rc;
}

struct pull_progress {
        struct rpc_call *call;
        double last;
        bool gone; /* the client went away: stop sending (the pull itself completes) */
};

/* At most 4 reports a second, and the last one (done == total). */
static void pull_progress(void *ud, uint64_t done, uint64_t total)
{
        struct pull_progress *p = ud;
        double now = mono_s();
        if (p->gone || (now - p->last < 0.25 && done < total))
                return;
        p->last = now;
        Capsule__V1__ImagePullProgress pr = CAPSULE__V1__IMAGE_PULL_PROGRESS__INIT;
        pr.done_bytes = done;
        pr.total_bytes = total;
        Capsule__V1__ImagePullResponse m = CAPSULE__V1__IMAGE_PULL_RESPONSE__INIT;
        m.progress = &pr;
        struct cap_error e = {0};
        if (rpc_call_send(p->call, &m.base, &e) < 0)
                p->gone = true;
}

int images_pull(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        const struct images_env *env = env_of(call);
        const Capsule__V1__ImagePullRequest *in = (const Capsule__V1__ImagePullRequest *)req;
        _cleanup_free_ char *name = NULL;
        struct registry_result res = {0};
        if (!in->reference || !*in->reference)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "reference: required");
        struct pull_progress pp = {.call = call};
        struct images_pull_hooks hooks = {.progress = pull_progress, .progress_ud = &pp};
        if (pull(env, in->reference, &name, &res, &hooks, err) < 0)
                return err->code;
        struct users u;
        if (users_load(env, &u, err) < 0)
                return err->code;
        Capsule__V1__ImagePullResponse out = CAPSULE__V1__IMAGE_PULL_RESPONSE__INIT;
        out.image = image_msg(name, res.digest, res.total_size, now_ns(), &u);
        users_free(&u);
        if (!out.image)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        int r = rpc_call_send(call, &out.base, err);
        capsule__v1__image__free_unpacked(out.image, NULL);
        return r < 0 ? err->code : 0;
}

/* ---- List ---- */

/* Size of an image without our label (e.g. created by ctr): manifest + config + layers. */
static uint64_t image_size(struct ctrd_client *c, const Containerd__Types__Descriptor *t)
{
        char *data = NULL;
        size_t len = 0;
        struct cap_error e = {0};
        uint64_t size = (uint64_t)t->size;
        if (!blob_is_manifest(t->media_type) ||
            ctrd_content_read(c, t->digest, BLOB_META_MAX, &data, &len, &e) < 0)
                return size;
        struct json_tokener *tok = json_tokener_new();
        struct json_object *m = tok ? json_tokener_parse_ex(tok, data, (int)len) : NULL;
        json_tokener_free(tok);
        free(data);
        struct json_object *cfg, *layers, *sz;
        if (m && json_object_object_get_ex(m, "config", &cfg) &&
            json_object_object_get_ex(cfg, "size", &sz))
                size += (uint64_t)json_object_get_int64(sz);
        if (m && json_object_object_get_ex(m, "layers", &layers) &&
            json_object_is_type(layers, json_type_array))
                for (size_t i = 0; i < json_object_array_length(layers); i++)
                        if (json_object_object_get_ex(json_object_array_get_idx(layers, i), "size",
                                                      &sz))
                                size += (uint64_t)json_object_get_int64(sz);
        json_object_put(m);
        return size;
}

int images_list(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                struct cap_error *err)
{
        (void)req;
        return images_list_all(env_of(call), (Capsule__V1__ImageListResponse *)resp, err);
}

int images_list_all(const struct images_env *env, Capsule__V1__ImageListResponse *out,
                    struct cap_error *err)
{
        Containerd__Services__Images__V1__ListImagesResponse *l = NULL;
        if (need_ctrd(env, err) < 0)
                return err->code;
        struct ctrd_client *c = ctrd_client(env->ctrd);
        if (ctrd_image_list(c, NULL, &l, err) < 0)
                return cap_error_prefix(err, "list images");
        struct users u;
        if (users_load(env, &u, err) < 0) {
                protobuf_c_message_free_unpacked(&l->base, NULL);
                return err->code;
        }
        out->images = calloc(l->n_images + 1, sizeof(*out->images));
        for (size_t i = 0; out->images && i < l->n_images; i++) {
                Containerd__Services__Images__V1__Image *im = l->images[i];
                if (!im->target)
                        continue;
                uint64_t size = 0;
                bool labelled = false;
                for (size_t k = 0; k < im->n_labels; k++)
                        if (strcmp(im->labels[k]->key, LABEL_SIZE) == 0) {
                                size = strtoull(im->labels[k]->value, NULL, 10);
                                labelled = true;
                        }
                if (!labelled)
                        size = image_size(c, im->target);
                int64_t created = im->created_at
                                      ? im->created_at->seconds * 1000000000 + im->created_at->nanos
                                      : 0;
                Capsule__V1__Image *img =
                    image_msg(im->name, im->target->digest, size, created, &u);
                if (img)
                        out->images[out->n_images++] = img;
        }
        users_free(&u);
        protobuf_c_message_free_unpacked(&l->base, NULL);
        if (!out->images)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        return 0;
}

/* ---- Delete ---- */

int images_delete(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err)
{
        const struct images_env *env = env_of(call);
        const Capsule__V1__ImageDeleteRequest *in = (const Capsule__V1__ImageDeleteRequest *)req;
        _cleanup_free_ char *name = NULL;
        if (need_ctrd(env, err) < 0)
                return err->code;
        if (!in->reference || !*in->reference)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "reference: required");
        if (image_ref_normalize(in->reference, &name, err) < 0)
                return err->code;
        struct ctrd_client *c = ctrd_client(env->ctrd);
        struct ctrd_descriptor target = {0};
        if (ctrd_image_get(c, name, &target, err) < 0) {
                if (err->status == CAP_NOT_FOUND)
                        return cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "image %s not found",
                                             name);
                return err->code;
        }
        _cleanup_free_ char *digest = TAKE_PTR(target.digest);
        ctrd_descriptor_clear(&target);
        struct users u;
        if (users_load(env, &u, err) < 0)
                return err->code;
        char used[512] = "";
        for (size_t i = 0; i < u.n; i++)
                if (strcmp(u.image[i], name) == 0)
                        snprintf(used + strlen(used), sizeof(used) - strlen(used), "%s%s",
                                 *used ? ", " : "", u.workload[i]);
        users_free(&u);
        if (*used)
                return cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                     "image %s is used by workload(s) %s: delete them first", name,
                                     used);
        if (ctrd_image_delete(c, name, err) < 0) {
                if (err->status == CAP_NOT_FOUND)
                        return cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "image %s not found",
                                             name);
                return cap_error_prefix(err, "delete image %s", name);
        }
        log_info("image delete: name=%s digest=%s", name, digest ? digest : "");
        if (env->deleted)
                env->deleted(env->deleted_ud, name, digest ? digest : "");
        return 0;
}

/* ---- pull on first use ---- */

int images_ensure(const struct images_env *env, const char *ref, Capsule__V1__PullPolicy policy,
                  const struct images_pull_hooks *hooks, char **digest, struct cap_error *err)
{
        _cleanup_free_ char *name = NULL;
        if (digest)
                *digest = NULL;
        if (need_ctrd(env, err) < 0)
                return err->code;
        if (image_ref_normalize(ref, &name, err) < 0)
                return err->code;
        if (policy != CAPSULE__V1__PULL_POLICY__PULL_ALWAYS) {
                struct ctrd_descriptor target = {0};
                int r = ctrd_image_get(ctrd_client(env->ctrd), name, &target, err);
                if (r == 0) {
                        if (digest)
                                *digest = TAKE_PTR(target.digest);
                        ctrd_descriptor_clear(&target);
                        return 0;
                }
                if (err->status != CAP_NOT_FOUND)
                        return err->code;
                cap_error_clear(err);
                if (policy == CAPSULE__V1__PULL_POLICY__PULL_NEVER)
                        return cap_error_set(
                            err, -ENOENT, CAP_FAILED_PRECONDITION,
                            "image %s is not present and pullPolicy is Never: push it with "
                            "`capsulectl image push`",
                            name);
        }
        _cleanup_free_ char *pulled = NULL;
        struct registry_result res = {0};
        if (pull(env, ref, &pulled, &res, hooks, err) < 0)
                return err->code;
        if (digest && !(*digest = strdup(res.digest)))
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        return 0;
}
