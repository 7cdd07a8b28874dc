/* containerd client: typed wrappers over src/rpc for the containerd calls Capsule uses (see
 * client.h). Requests are built on the stack from the generated *_INIT initialisers; responses
 * come back as protobuf-c messages owned by the caller or are copied into plain values. */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "github.com/containerd/containerd/api/services/diff/v1/diff.pb-c.h"
#include "github.com/containerd/containerd/api/services/events/v1/events.pb-c.h"
#include "github.com/containerd/containerd/api/services/leases/v1/leases.pb-c.h"
#include "github.com/containerd/containerd/api/services/namespaces/v1/namespace.pb-c.h"
#include "github.com/containerd/containerd/api/services/version/v1/version.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "rpc/rpc.h"

#define CHUNK_SIZE (1u << 20)

struct ctrd_client {
        struct rpc_client *rpc;
        char *sock;
};

struct ctrd_writer {
        struct rpc_stream *stream;
        char *ref;
        char *expected;
        int64_t total;
        int64_t offset;
};

/* Map entries of every generated map<string,string> share this layout. */
struct kv_entry {
        ProtobufCMessage base;
        char *key;
        char *value;
};

/* Builds the entry-pointer array of a map<string,string> field in one allocation (free() it). */
static void *labels_build(const ProtobufCMessageDescriptor *entry_desc, const struct ctrd_label *l,
                          size_t n)
{
        if (n == 0)
                return NULL;
        void **ptrs = calloc(1, n * (sizeof(void *) + sizeof(struct kv_entry)));
        if (!ptrs)
                return NULL;
        struct kv_entry *e = (struct kv_entry *)(ptrs + n);
        for (size_t i = 0; i < n; i++) {
                protobuf_c_message_init(entry_desc, &e[i]);
                e[i].key = (char *)l[i].key;
                e[i].value = (char *)(l[i].value ? l[i].value : "");
                ptrs[i] = &e[i];
        }
        return ptrs;
}

static void msg_free(void *p)
{
        ProtobufCMessage **m = p;
        if (*m)
                protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_msg_ _cleanup_(msg_free)

static int call(struct ctrd_client *c, const char *method, const void *req,
                const ProtobufCMessageDescriptor *resp_desc, void *resp, int timeout_ms,
                struct cap_error *err)
{
        ProtobufCMessage *r = NULL;
        int ret = rpc_unary(c->rpc, method, (const ProtobufCMessage *)req, resp_desc, &r,
                            timeout_ms, err);
        if (ret < 0) {
                cap_error_prefix(err, "containerd %s", strrchr(method, '/') + 1);
                return ret;
        }
        if (resp)
                *(ProtobufCMessage **)resp = r;
        else
                protobuf_c_message_free_unpacked(r, NULL);
        return 0;
}

#define EMPTY (&google__protobuf__empty__descriptor)

void ctrd_descriptor_clear(struct ctrd_descriptor *d)
{
        free(d->media_type);
        free(d->digest);
        d->media_type = d->digest = NULL;
        d->size = 0;
}

void ctrd_mounts_clear(struct ctrd_mounts *m)
{
        if (m->owner)
                protobuf_c_message_free_unpacked(m->owner, NULL);
        m->owner = NULL;
        m->n = 0;
        m->v = NULL;
}

struct ctrd_client *ctrd_client_new(const char *sock, struct cap_error *err)
{
        _cleanup_free_ char *target = NULL;
        if (asprintf(&target, "unix:%s", sock) < 0) {
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        struct ctrd_client *c = calloc(1, sizeof(*c));
        if (!c || !(c->sock = strdup(sock))) {
                free(c);
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        c->rpc = rpc_client_new(target, NULL, err);
        if (!c->rpc ||
            rpc_client_add_metadata(c->rpc, "containerd-namespace", CTRD_NAMESPACE, err) < 0) {
                cap_error_prefix(err, "containerd client %s", sock);
                ctrd_client_free(c);
                return NULL;
        }
        return c;
}

struct ctrd_client *ctrd_client_leased(struct ctrd_client *c, const char *lease_id,
                                       struct cap_error *err)
{
        struct ctrd_client *l = calloc(1, sizeof(*l));
        if (!l || !(l->sock = strdup(c->sock))) {
                free(l);
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        l->rpc = rpc_client_share(c->rpc, err);
        if (!l->rpc || rpc_client_add_metadata(l->rpc, "containerd-lease", lease_id, err) < 0) {
                ctrd_client_free(l);
                return NULL;
        }
        return l;
}

void ctrd_client_free(struct ctrd_client *c)
{
        if (!c)
                return;
        rpc_client_free(c->rpc);
        free(c->sock);
        free(c);
}

const char *ctrd_client_socket(const struct ctrd_client *c)
{
        return c->sock;
}

int ctrd_version(struct ctrd_client *c, char **version, struct cap_error *err)
{
        Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
        _cleanup_msg_ Containerd__Services__Version__V1__VersionResponse *resp = NULL;
        int r = call(c, "/containerd.services.version.v1.Version/Version", &req,
                     &containerd__services__version__v1__version_response__descriptor, &resp, 5000,
                     err);
        if (r < 0)
                return r;
        *version = strdup(resp->version);
        return *version ? 0 : cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

int ctrd_namespace_ensure(struct ctrd_client *c, struct cap_error *err)
{
        Containerd__Services__Namespaces__V1__Namespace ns =
            CONTAINERD__SERVICES__NAMESPACES__V1__NAMESPACE__INIT;
        Containerd__Services__Namespaces__V1__CreateNamespaceRequest req =
            CONTAINERD__SERVICES__NAMESPACES__V1__CREATE_NAMESPACE_REQUEST__INIT;
        ns.name = CTRD_NAMESPACE;
        req.namespace_ = &ns;
        int r = call(c, "/containerd.services.namespaces.v1.Namespaces/Create", &req,
                     &containerd__services__namespaces__v1__create_namespace_response__descriptor,
                     NULL, CTRD_TIMEOUT_MS, err);
        if (r < 0 && err->status == CAP_ALREADY_EXISTS) {
                cap_error_clear(err);
                return 0;
        }
        return r;
}

/* ---- leases ---- */

int ctrd_lease_create(struct ctrd_client *c, int expire_s, char **id, struct cap_error *err)
{
        Containerd__Services__Leases__V1__CreateRequest req =
            CONTAINERD__SERVICES__LEASES__V1__CREATE_REQUEST__INIT;
        _cleanup_msg_ Containerd__Services__Leases__V1__CreateResponse *resp = NULL;
        char lid[64], expire[64];
        unsigned long rnd = 0;
        FILE *f = fopen("/dev/urandom", "re");
        if (f) {
                if (fread(&rnd, sizeof(rnd), 1, f) != 1)
                        rnd = (unsigned long)getpid();
                fclose(f);
        }
        snprintf(lid, sizeof(lid), "capsule-%016lx", rnd);
        req.id = lid;
        /* containerd's GC honours this label: a forgotten lease does not pin content forever. */
        struct ctrd_label l[] = {{"containerd.io/gc.expire", expire}};
        if (expire_s > 0) {
                time_t t = time(NULL) + expire_s;
                struct tm tm;
                gmtime_r(&t, &tm);
                strftime(expire, sizeof(expire), "%Y-%m-%dT%H:%M:%SZ", &tm);
                req.labels = labels_build(
                    &containerd__services__leases__v1__create_request__labels_entry__descriptor, l,
                    1);
                req.n_labels = req.labels ? 1 : 0;
        }
        int r = call(c, "/containerd.services.leases.v1.Leases/Create", &req,
                     &containerd__services__leases__v1__create_response__descriptor, &resp,
                     CTRD_TIMEOUT_MS, err);
        free(req.labels);
        if (r < 0)
                return r;
        *id = strdup(resp->lease->id);
        return *id ? 0 : cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

int ctrd_lease_delete(struct ctrd_client *c, const char *id, struct cap_error *err)
{
        Containerd__Services__Leases__V1__DeleteRequest req =
            CONTAINERD__SERVICES__LEASES__V1__DELETE_REQUEST__INIT;
        req.id = (char *)id;
        return call(c, "/containerd.services.leases.v1.Leases/Delete", &req, EMPTY, NULL,
                    CTRD_TIMEOUT_MS, err);
}

int ctrd_gc_now(struct ctrd_client *c, struct cap_error *err)
{
        _cleanup_free_ char *id = NULL;
        int r = ctrd_lease_create(c, 60, &id, err);
        if (r < 0)
                return r;
        Containerd__Services__Leases__V1__DeleteRequest req =
            CONTAINERD__SERVICES__LEASES__V1__DELETE_REQUEST__INIT;
        req.id = id;
        req.sync = true;
        return call(c, "/containerd.services.leases.v1.Leases/Delete", &req, EMPTY, NULL,
                    CTRD_TIMEOUT_MS, err);
}

/* ---- content ---- */

int ctrd_content_info(struct ctrd_client *c, const char *digest, int64_t *size,
                      struct cap_error *err)
{
        Containerd__Services__Content__V1__InfoRequest req =
            CONTAINERD__SERVICES__CONTENT__V1__INFO_REQUEST__INIT;
        _cleanup_msg_ Containerd__Services__Content__V1__InfoResponse *resp = NULL;
        req.digest = (char *)digest;
        int r = call(c, "/containerd.services.content.v1.Content/Info", &req,
                     &containerd__services__content__v1__info_response__descriptor, &resp,
                     CTRD_TIMEOUT_MS, err);
        if (r < 0)
                return r;
        if (size)
                *size = resp->info ? resp->info->size : 0;
        return 0;
}

int ctrd_content_read(struct ctrd_client *c, const char *digest, size_t max_size, char **data,
                      size_t *len, struct cap_error *err)
{
        Containerd__Services__Content__V1__ReadContentRequest req =
            CONTAINERD__SERVICES__CONTENT__V1__READ_CONTENT_REQUEST__INIT;
        int64_t size = 0;
        int r = ctrd_content_info(c, digest, &size, err);
        if (r < 0)
                return r;
        if (size < 0 || (size_t)size > max_size)
                return cap_error_set(err, -EFBIG, CAP_OUT_OF_RANGE,
                                     "blob %s: %lld bytes, more than %zu", digest, (long long)size,
                                     max_size);
        _cleanup_free_ char *buf = malloc((size_t)size + 1);
        if (!buf)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        req.digest = (char *)digest;
        struct rpc_stream *s =
            rpc_stream_open(c->rpc, "/containerd.services.content.v1.Content/Read",
                            &containerd__services__content__v1__read_content_response__descriptor,
                            CTRD_TIMEOUT_MS, err);
        if (!s)
                return cap_error_prefix(err, "containerd Content/Read %s", digest);
        size_t got = 0;
        if (rpc_stream_send(s, &req.base, err) < 0 || rpc_stream_close_send(s, err) < 0)
                goto fail;
        for (;;) {
                Containerd__Services__Content__V1__ReadContentResponse *m = NULL;
                r = rpc_stream_recv(s, (ProtobufCMessage **)&m, err);
                if (r < 0)
                        goto fail;
                if (r == 0)
                        break;
                if (m->offset < 0 || (size_t)m->offset + m->data.len > (size_t)size) {
                        protobuf_c_message_free_unpacked(&m->base, NULL);
                        cap_error_set(err, -EIO, CAP_DATA_LOSS, "read beyond the blob's size");
                        goto fail;
                }
                memcpy(buf + m->offset, m->data.data, m->data.len);
                got += m->data.len;
                protobuf_c_message_free_unpacked(&m->base, NULL);
        }
        if (rpc_stream_finish(s, err) < 0)
                goto fail;
        rpc_stream_free(s);
        if (got != (size_t)size)
                return cap_error_set(err, -EIO, CAP_DATA_LOSS, "blob %s: read %zu of %lld bytes",
                                     digest, got, (long long)size);
        buf[size] = '\0';
        *data = TAKE_PTR(buf);
        *len = (size_t)size;
        return 0;
fail:
        rpc_stream_free(s);
        return cap_error_prefix(err, "containerd Content/Read %s", digest);
}

int ctrd_content_set_label(struct ctrd_client *c, const char *digest, const char *key,
                           const char *value, struct cap_error *err)
{
        Containerd__Services__Content__V1__UpdateRequest req =
            CONTAINERD__SERVICES__CONTENT__V1__UPDATE_REQUEST__INIT;
        Containerd__Services__Content__V1__Info info =
            CONTAINERD__SERVICES__CONTENT__V1__INFO__INIT;
        Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
        struct ctrd_label l = {key, value};
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "labels.%s", key) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        info.digest = (char *)digest;
        info.labels =
            labels_build(&containerd__services__content__v1__info__labels_entry__descriptor, &l, 1);
        info.n_labels = info.labels ? 1 : 0;
        mask.paths = &path;
        mask.n_paths = 1;
        req.info = &info;
        req.update_mask = &mask;
        int r = call(c, "/containerd.services.content.v1.Content/Update", &req,
                     &containerd__services__content__v1__update_response__descriptor, NULL,
                     CTRD_TIMEOUT_MS, err);
        free(info.labels);
        return r;
}

/* One request/response exchange on the Write stream (containerd answers every message). */
static int writer_exchange(struct ctrd_writer *w,
                           Containerd__Services__Content__V1__WriteContentRequest *req,
                           Containerd__Services__Content__V1__WriteContentResponse **resp,
                           struct cap_error *err)
{
        req->ref = w->ref;
        req->expected = w->expected;
        req->total = w->total;
        if (rpc_stream_send(w->stream, &req->base, err) < 0)
                return -EIO;
        int r = rpc_stream_recv(w->stream, (ProtobufCMessage **)resp, err);
        if (r == 0) {
                r = rpc_stream_finish(w->stream, err);
                return r < 0
                           ? r
                           : cap_error_set(err, -EPROTO, CAP_INTERNAL, "write stream ended early");
        }
        return r < 0 ? r : 0;
}

int ctrd_writer_open(struct ctrd_client *c, const char *ref, const char *expected, int64_t total,
                     struct ctrd_writer **out, bool *exists, struct cap_error *err)
{
        *out = NULL;
        *exists = false;
        int r = ctrd_content_info(c, expected, NULL, err);
        if (r == 0) {
                *exists = true;
                return 0;
        }
        if (err->status != CAP_NOT_FOUND)
                return r;
        cap_error_clear(err);

        struct ctrd_writer *w = calloc(1, sizeof(*w));
        if (!w || !(w->ref = strdup(ref)) || !(w->expected = strdup(expected))) {
                ctrd_writer_abort(w);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        w->total = total;
        w->stream = rpc_stream_open(
            c->rpc, "/containerd.services.content.v1.Content/Write",
            &containerd__services__content__v1__write_content_response__descriptor, 0, err);
        if (!w->stream) {
                ctrd_writer_abort(w);
                return cap_error_prefix(err, "containerd Content/Write %s", ref);
        }
        /* STAT tells us where a previous, interrupted ingest of this ref stopped. */
        Containerd__Services__Content__V1__WriteContentRequest req =
            CONTAINERD__SERVICES__CONTENT__V1__WRITE_CONTENT_REQUEST__INIT;
        Containerd__Services__Content__V1__WriteContentResponse *resp = NULL;
        req.action = CONTAINERD__SERVICES__CONTENT__V1__WRITE_ACTION__STAT;
        r = writer_exchange(w, &req, &resp, err);
        if (r < 0) {
                bool already = err->status == CAP_ALREADY_EXISTS;
                ctrd_writer_abort(w);
                if (already) {
                        cap_error_clear(err);
                        *exists = true;
                        return 0;
                }
                return cap_error_prefix(err, "containerd Content/Write %s", ref);
        }
        w->offset = resp->offset;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        if (w->offset != 0) {
                /* A leftover partial ingest: start again from scratch. */
                ctrd_writer_abort(w);
                Containerd__Services__Content__V1__AbortRequest ab =
                    CONTAINERD__SERVICES__CONTENT__V1__ABORT_REQUEST__INIT;
                ab.ref = (char *)ref;
                r = call(c, "/containerd.services.content.v1.Content/Abort", &ab, EMPTY, NULL,
                         CTRD_TIMEOUT_MS, err);
                if (r < 0)
                        return r;
                return ctrd_writer_open(c, ref, expected, total, out, exists, err);
        }
        *out = w;
        return 0;
}

int ctrd_writer_write(struct ctrd_writer *w, const void *data, size_t len, struct cap_error *err)
{
        const uint8_t *p = data;
        while (len > 0) {
                size_t n = len < CHUNK_SIZE ? len : CHUNK_SIZE;
                Containerd__Services__Content__V1__WriteContentRequest req =
                    CONTAINERD__SERVICES__CONTENT__V1__WRITE_CONTENT_REQUEST__INIT;
                Containerd__Services__Content__V1__WriteContentResponse *resp = NULL;
                req.action = CONTAINERD__SERVICES__CONTENT__V1__WRITE_ACTION__WRITE;
                req.offset = w->offset;
                req.data.data = (uint8_t *)p;
                req.data.len = n;
                int r = writer_exchange(w, &req, &resp, err);
                if (r < 0)
                        return cap_error_prefix(err, "containerd Content/Write %s at %lld", w->ref,
                                                (long long)w->offset);
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                w->offset += (int64_t)n;
                p += n;
                len -= n;
        }
        return 0;
}

int ctrd_writer_commit(struct ctrd_writer *w, const struct ctrd_label *labels, size_t n_labels,
                       struct cap_error *err)
{
        Containerd__Services__Content__V1__WriteContentRequest req =
            CONTAINERD__SERVICES__CONTENT__V1__WRITE_CONTENT_REQUEST__INIT;
        Containerd__Services__Content__V1__WriteContentResponse *resp = NULL;
        req.action = CONTAINERD__SERVICES__CONTENT__V1__WRITE_ACTION__COMMIT;
        req.offset = w->offset;
        req.labels = labels_build(
            &containerd__services__content__v1__write_content_request__labels_entry__descriptor,
            labels, n_labels);
        req.n_labels = req.labels ? n_labels : 0;
        int r = writer_exchange(w, &req, &resp, err);
        free(req.labels);
        if (r == 0) {
                protobuf_c_message_free_unpacked(&resp->base, NULL);
                if (rpc_stream_close_send(w->stream, err) == 0) {
                        ProtobufCMessage *m = NULL;
                        while (rpc_stream_recv(w->stream, &m, err) > 0)
                                protobuf_c_message_free_unpacked(m, NULL);
                        r = rpc_stream_finish(w->stream, err);
                }
        }
        if (r < 0 && err->status == CAP_ALREADY_EXISTS) {
                cap_error_clear(err);
                r = 0;
        }
        if (r < 0)
                cap_error_prefix(err, "containerd Content/Write %s: commit", w->ref);
        ctrd_writer_abort(w);
        return r;
}

void ctrd_writer_abort(struct ctrd_writer *w)
{
        if (!w)
                return;
        rpc_stream_free(w->stream);
        free(w->ref);
        free(w->expected);
        free(w);
}

int ctrd_content_write(struct ctrd_client *c, const char *ref, const char *expected,
                       const void *data, size_t len, const struct ctrd_label *labels,
                       size_t n_labels, struct cap_error *err)
{
        struct ctrd_writer *w = NULL;
        bool exists = false;
        int r = ctrd_writer_open(c, ref, expected, (int64_t)len, &w, &exists, err);
        if (r < 0 || exists)
                return r < 0 ? r : 1;
        r = ctrd_writer_write(w, data, len, err);
        if (r < 0) {
                ctrd_writer_abort(w);
                return r;
        }
        return ctrd_writer_commit(w, labels, n_labels, err);
}

/* ---- images ---- */

static int descriptor_copy(struct ctrd_descriptor *d, const Containerd__Types__Descriptor *src,
                           struct cap_error *err)
{
        d->media_type = strdup(src->media_type ? src->media_type : "");
        d->digest = strdup(src->digest ? src->digest : "");
        d->size = src->size;
        if (!d->media_type || !d->digest) {
                ctrd_descriptor_clear(d);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        return 0;
}

int ctrd_image_get(struct ctrd_client *c, const char *name, struct ctrd_descriptor *target,
                   struct cap_error *err)
{
        Containerd__Services__Images__V1__GetImageRequest req =
            CONTAINERD__SERVICES__IMAGES__V1__GET_IMAGE_REQUEST__INIT;
        _cleanup_msg_ Containerd__Services__Images__V1__GetImageResponse *resp = NULL;
        req.name = (char *)name;
        int r = call(c, "/containerd.services.images.v1.Images/Get", &req,
                     &containerd__services__images__v1__get_image_response__descriptor, &resp,
                     CTRD_TIMEOUT_MS, err);
        if (r < 0)
                return cap_error_prefix(err, "image %s", name);
        if (!resp->image || !resp->image->target)
                return cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "image %s: no target", name);
        return descriptor_copy(target, resp->image->target, err);
}

int ctrd_image_put(struct ctrd_client *c, const char *name, const struct ctrd_descriptor *target,
                   const struct ctrd_label *labels, size_t n_labels, struct cap_error *err)
{
        Containerd__Services__Images__V1__Image img = CONTAINERD__SERVICES__IMAGES__V1__IMAGE__INIT;
        Containerd__Types__Descriptor desc = CONTAINERD__TYPES__DESCRIPTOR__INIT;
        desc.media_type = target->media_type;
        desc.digest = target->digest;
        desc.size = target->size;
        img.name = (char *)name;
        img.target = &desc;
        img.labels = labels_build(
            &containerd__services__images__v1__image__labels_entry__descriptor, labels, n_labels);
        img.n_labels = img.labels ? n_labels : 0;

        Containerd__Services__Images__V1__CreateImageRequest creq =
            CONTAINERD__SERVICES__IMAGES__V1__CREATE_IMAGE_REQUEST__INIT;
        creq.image = &img;
        int r = call(c, "/containerd.services.images.v1.Images/Create", &creq,
                     &containerd__services__images__v1__create_image_response__descriptor, NULL,
                     CTRD_TIMEOUT_MS, err);
        if (r < 0 && err->status == CAP_ALREADY_EXISTS) {
                cap_error_clear(err);
                Containerd__Services__Images__V1__UpdateImageRequest ureq =
                    CONTAINERD__SERVICES__IMAGES__V1__UPDATE_IMAGE_REQUEST__INIT;
                ureq.image = &img; /* no mask: replace target and labels */
                r = call(c, "/containerd.services.images.v1.Images/Update", &ureq,
                         &containerd__services__images__v1__update_image_response__descriptor, NULL,
                         CTRD_TIMEOUT_MS, err);
        }
        free(img.labels);
        return r < 0 ? cap_error_prefix(err, "image %s", name) : 0;
}

int ctrd_image_delete(struct ctrd_client *c, const char *name, struct cap_error *err)
{
        Containerd__Services__Images__V1__DeleteImageRequest req =
            CONTAINERD__SERVICES__IMAGES__V1__DELETE_IMAGE_REQUEST__INIT;
        req.name = (char *)name;
        return call(c, "/containerd.services.images.v1.Images/Delete", &req, EMPTY, NULL,
                    CTRD_TIMEOUT_MS, err);
}

int ctrd_image_list(struct ctrd_client *c, const char *filter,
                    Containerd__Services__Images__V1__ListImagesResponse **resp,
                    struct cap_error *err)
{
        Containerd__Services__Images__V1__ListImagesRequest req =
            CONTAINERD__SERVICES__IMAGES__V1__LIST_IMAGES_REQUEST__INIT;
        char *f = (char *)filter;
        if (filter) {
                req.filters = &f;
                req.n_filters = 1;
        }
        return call(c, "/containerd.services.images.v1.Images/List", &req,
                    &containerd__services__images__v1__list_images_response__descriptor, resp,
                    CTRD_TIMEOUT_MS, err);
}

/* ---- snapshots ---- */

/* Prepare, View and Mounts responses share the layout { base, n_mounts, mounts }. */
struct mounts_resp {
        ProtobufCMessage base;
        size_t n_mounts;
        Containerd__Types__Mount **mounts;
};

static void mounts_take(struct ctrd_mounts *m, void *resp)
{
        struct mounts_resp *r = resp;
        m->owner = &r->base;
        m->n = r->n_mounts;
        m->v = r->mounts;
}

int ctrd_snapshot_prepare(struct ctrd_client *c, const char *key, const char *parent,
                          struct ctrd_mounts *mounts, struct cap_error *err)
{
        Containerd__Services__Snapshots__V1__PrepareSnapshotRequest req =
            CONTAINERD__SERVICES__SNAPSHOTS__V1__PREPARE_SNAPSHOT_REQUEST__INIT;
        void *resp = NULL;
        req.snapshotter = CTRD_SNAPSHOTTER;
        req.key = (char *)key;
        req.parent = (char *)(parent ? parent : "");
        int r = call(c, "/containerd.services.snapshots.v1.Snapshots/Prepare", &req,
                     &containerd__services__snapshots__v1__prepare_snapshot_response__descriptor,
                     &resp, CTRD_TIMEOUT_MS, err);
        if (r < 0)
                return cap_error_prefix(err, "snapshot %s", key);
        mounts_take(mounts, resp);
        return 0;
}

int ctrd_snapshot_view(struct ctrd_client *c, const char *key, const char *parent,
                       struct ctrd_mounts *mounts, struct cap_error *err)
{
        Containerd__Services__Snapshots__V1__ViewSnapshotRequest req =
            CONTAINERD__SERVICES__SNAPSHOTS__V1__VIEW_SNAPSHOT_REQUEST__INIT;
        void *resp = NULL;
        req.snapshotter = CTRD_SNAPSHOTTER;
        req.key = (char *)key;
        req.parent = (char *)(parent ? parent : "");
        int r = call(c, "/containerd.services.snapshots.v1.Snapshots/View", &req,
                     &containerd__services__snapshots__v1__view_snapshot_response__descriptor,
                     &resp, CTRD_TIMEOUT_MS, err);
        if (r < 0)
                return cap_error_prefix(err, "snapshot %s", key);
        mounts_take(mounts, resp);
        return 0;
}

int ctrd_snapshot_mounts(struct ctrd_client *c, const char *key, struct ctrd_mounts *mounts,
                         struct cap_error *err)
{
        Containerd__Services__Snapshots__V1__MountsRequest req =
            CONTAINERD__SERVICES__SNAPSHOTS__V1__MOUNTS_REQUEST__INIT;
        void *resp = NULL;
        req.snapshotter = CTRD_SNAPSHOTTER;
        req.key = (char *)key;
        int r = call(c, "/containerd.services.snapshots.v1.Snapshots/Mounts", &req,
                     &containerd__services__snapshots__v1__mounts_response__descriptor, &resp,
                     CTRD_TIMEOUT_MS, err);
        if (r < 0)
                return cap_error_prefix(err, "snapshot %s", key);
        mounts_take(mounts, resp);
        return 0;
}

int ctrd_snapshot_commit(struct ctrd_client *c, const char *name, const char *key,
                         struct cap_error *err)
{
        Containerd__Services__Snapshots__V1__CommitSnapshotRequest req =
            CONTAINERD__SERVICES__SNAPSHOTS__V1__COMMIT_SNAPSHOT_REQUEST__INIT;
        req.snapshotter = CTRD_SNAPSHOTTER;
        req.name = (char *)name;
        req.key = (char *)key;
        return call(c, "/containerd.services.snapshots.v1.Snapshots/Commit", &req, EMPTY, NULL,
                    CTRD_TIMEOUT_MS, err);
}

int ctrd_snapshot_stat(struct ctrd_client *c, const char *key, struct cap_error *err)
{
        Containerd__Services__Snapshots__V1__StatSnapshotRequest req =
            CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_REQUEST__INIT;
        req.snapshotter = CTRD_SNAPSHOTTER;
        req.key = (char *)key;
        return call(c, "/containerd.services.snapshots.v1.Snapshots/Stat", &req,
                    &containerd__services__snapshots__v1__stat_snapshot_response__descriptor, NULL,
                    CTRD_TIMEOUT_MS, err);
}

int ctrd_snapshot_remove(struct ctrd_client *c, const char *key, struct cap_error *err)
{
        Containerd__Services__Snapshots__V1__RemoveSnapshotRequest req =
            CONTAINERD__SERVICES__SNAPSHOTS__V1__REMOVE_SNAPSHOT_REQUEST__INIT;
        req.snapshotter = CTRD_SNAPSHOTTER;
        req.key = (char *)key;
        return call(c, "/containerd.services.snapshots.v1.Snapshots/Remove", &req, EMPTY, NULL,
                    CTRD_TIMEOUT_MS, err);
}

int ctrd_snapshot_list(struct ctrd_client *c,
                       Containerd__Services__Snapshots__V1__ListSnapshotsResponse **out,
                       struct cap_error *err)
{
        /* A server stream of batches: merge them into the first response. */
        Containerd__Services__Snapshots__V1__ListSnapshotsRequest req =
            CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_REQUEST__INIT;
        req.snapshotter = CTRD_SNAPSHOTTER;
        *out = NULL;
        struct rpc_stream *s = rpc_stream_open(
            c->rpc, "/containerd.services.snapshots.v1.Snapshots/List",
            &containerd__services__snapshots__v1__list_snapshots_response__descriptor,
            CTRD_TIMEOUT_MS, err);
        if (!s)
                return cap_error_prefix(err, "containerd Snapshots/List");
        Containerd__Services__Snapshots__V1__ListSnapshotsResponse *all = NULL;
        int r = rpc_stream_send(s, &req.base, err);
        if (r == 0)
                r = rpc_stream_close_send(s, err);
        while (r == 0) {
                Containerd__Services__Snapshots__V1__ListSnapshotsResponse *m = NULL;
                r = rpc_stream_recv(s, (ProtobufCMessage **)&m, err);
                if (r <= 0)
                        break;
                r = 0;
                if (!all) {
                        all = m;
                        continue;
                }
                void *grown = realloc(all->info, (all->n_info + m->n_info) * sizeof(*all->info));
                if (!grown) {
                        protobuf_c_message_free_unpacked(&m->base, NULL);
                        r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                        break;
                }
                /* protobuf-c frees with the default allocator (free), so moving pointers is safe.
                 */
                all->info = grown;
                memcpy(all->info + all->n_info, m->info, m->n_info * sizeof(*m->info));
                all->n_info += m->n_info;
                m->n_info = 0;
                protobuf_c_message_free_unpacked(&m->base, NULL);
        }
        if (r == 0)
                r = rpc_stream_finish(s, err);
        rpc_stream_free(s);
        if (r < 0) {
                if (all)
                        protobuf_c_message_free_unpacked(&all->base, NULL);
                return cap_error_prefix(err, "containerd Snapshots/List");
        }
        if (!all) {
                all = malloc(sizeof(*all));
                if (!all)
                        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                containerd__services__snapshots__v1__list_snapshots_response__init(all);
        }
        *out = all;
        return 0;
}

/* ---- diff ---- */

int ctrd_diff_apply(struct ctrd_client *c, const struct ctrd_descriptor *layer,
                    const struct ctrd_mounts *mounts, char **diff_id, struct cap_error *err)
{
        Containerd__Services__Diff__V1__ApplyRequest req =
            CONTAINERD__SERVICES__DIFF__V1__APPLY_REQUEST__INIT;
        Containerd__Types__Descriptor desc = CONTAINERD__TYPES__DESCRIPTOR__INIT;
        _cleanup_msg_ Containerd__Services__Diff__V1__ApplyResponse *resp = NULL;
        desc.media_type = layer->media_type;
        desc.digest = layer->digest;
        desc.size = layer->size;
        req.diff = &desc;
        req.n_mounts = mounts->n;
        req.mounts = mounts->v;
        int r = call(c, "/containerd.services.diff.v1.Diff/Apply", &req,
                     &containerd__services__diff__v1__apply_response__descriptor, &resp, 0, err);
        if (r < 0)
                return cap_error_prefix(err, "layer %s", layer->digest);
        *diff_id = strdup(resp->applied && resp->applied->digest ? resp->applied->digest : "");
        return *diff_id ? 0 : cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

/* ---- containers ---- */

int ctrd_container_create(struct ctrd_client *c, const struct ctrd_container_create *in,
                          struct cap_error *err)
{
        Containerd__Services__Containers__V1__CreateContainerRequest req =
            CONTAINERD__SERVICES__CONTAINERS__V1__CREATE_CONTAINER_REQUEST__INIT;
        Containerd__Services__Containers__V1__Container ct =
            CONTAINERD__SERVICES__CONTAINERS__V1__CONTAINER__INIT;
        Containerd__Services__Containers__V1__Container__Runtime rt =
            CONTAINERD__SERVICES__CONTAINERS__V1__CONTAINER__RUNTIME__INIT;
        Google__Protobuf__Any spec = GOOGLE__PROTOBUF__ANY__INIT;
        rt.name = CTRD_RUNTIME;
        spec.type_url = CTRD_SPEC_TYPE_URL;
        spec.value.data = (uint8_t *)in->spec_json;
        spec.value.len = strlen(in->spec_json);
        ct.id = (char *)in->id;
        ct.image = (char *)(in->image ? in->image : "");
        ct.runtime = &rt;
        ct.spec = &spec;
        ct.snapshotter = CTRD_SNAPSHOTTER;
        ct.snapshot_key = (char *)(in->snapshot_key ? in->snapshot_key : "");
        ct.labels =
            labels_build(&containerd__services__containers__v1__container__labels_entry__descriptor,
                         in->labels, in->n_labels);
        ct.n_labels = ct.labels ? in->n_labels : 0;
        req.container = &ct;
        int r = call(c, "/containerd.services.containers.v1.Containers/Create", &req,
                     &containerd__services__containers__v1__create_container_response__descriptor,
                     NULL, CTRD_TIMEOUT_MS, err);
        free(ct.labels);
        return r < 0 ? cap_error_prefix(err, "container %s", in->id) : 0;
}

int ctrd_container_get(struct ctrd_client *c, const char *id,
                       Containerd__Services__Containers__V1__Container **out, struct cap_error *err)
{
        Containerd__Services__Containers__V1__GetContainerRequest req =
            CONTAINERD__SERVICES__CONTAINERS__V1__GET_CONTAINER_REQUEST__INIT;
        Containerd__Services__Containers__V1__GetContainerResponse *resp = NULL;
        req.id = (char *)id;
        int r = call(c, "/containerd.services.containers.v1.Containers/Get", &req,
                     &containerd__services__containers__v1__get_container_response__descriptor,
                     &resp, CTRD_TIMEOUT_MS, err);
        if (r < 0)
                return r;
        *out = resp->container;
        resp->container = NULL;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return *out ? 0
                    : cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "container %s: empty answer", id);
}

int ctrd_container_list(struct ctrd_client *c, const char *filter,
                        Containerd__Services__Containers__V1__ListContainersResponse **resp,
                        struct cap_error *err)
{
        Containerd__Services__Containers__V1__ListContainersRequest req =
            CONTAINERD__SERVICES__CONTAINERS__V1__LIST_CONTAINERS_REQUEST__INIT;
        char *f = (char *)filter;
        if (filter) {
                req.filters = &f;
                req.n_filters = 1;
        }
        return call(c, "/containerd.services.containers.v1.Containers/List", &req,
                    &containerd__services__containers__v1__list_containers_response__descriptor,
                    resp, CTRD_TIMEOUT_MS, err);
}

int ctrd_container_delete(struct ctrd_client *c, const char *id, struct cap_error *err)
{
        Containerd__Services__Containers__V1__DeleteContainerRequest req =
            CONTAINERD__SERVICES__CONTAINERS__V1__DELETE_CONTAINER_REQUEST__INIT;
        req.id = (char *)id;
        return call(c, "/containerd.services.containers.v1.Containers/Delete", &req, EMPTY, NULL,
                    CTRD_TIMEOUT_MS, err);
}

/* ---- tasks ---- */

static char *io_path(const char *p)
{
        return (char *)(p ? p : "");
}

int ctrd_task_create(struct ctrd_client *c, const char *id, const struct ctrd_mounts *rootfs,
                     const struct ctrd_stdio *io, uint32_t *pid, struct cap_error *err)
{
        Containerd__Services__Tasks__V1__CreateTaskRequest req =
            CONTAINERD__SERVICES__TASKS__V1__CREATE_TASK_REQUEST__INIT;
        _cleanup_msg_ Containerd__Services__Tasks__V1__CreateTaskResponse *resp = NULL;
        req.container_id = (char *)id;
        req.n_rootfs = rootfs ? rootfs->n : 0;
        req.rootfs = rootfs ? rootfs->v : NULL;
        req.stdin = io_path(io ? io->stdin_path : NULL);
        req.stdout = io_path(io ? io->stdout_path : NULL);
        req.stderr = io_path(io ? io->stderr_path : NULL);
        req.terminal = io && io->terminal;
        int r =
            call(c, "/containerd.services.tasks.v1.Tasks/Create", &req,
                 &containerd__services__tasks__v1__create_task_response__descriptor, &resp, 0, err);
        if (r < 0)
                return cap_error_prefix(err, "task %s", id);
        if (pid)
                *pid = resp->pid;
        return 0;
}

int ctrd_task_start(struct ctrd_client *c, const char *id, const char *exec_id, uint32_t *pid,
                    struct cap_error *err)
{
        Containerd__Services__Tasks__V1__StartRequest req =
            CONTAINERD__SERVICES__TASKS__V1__START_REQUEST__INIT;
        _cleanup_msg_ Containerd__Services__Tasks__V1__StartResponse *resp = NULL;
        req.container_id = (char *)id;
        req.exec_id = io_path(exec_id);
        int r = call(c, "/containerd.services.tasks.v1.Tasks/Start", &req,
                     &containerd__services__tasks__v1__start_response__descriptor, &resp, 0, err);
        if (r < 0)
                return cap_error_prefix(err, "task %s", id);
        if (pid)
                *pid = resp->pid;
        return 0;
}

int ctrd_task_kill(struct ctrd_client *c, const char *id, const char *exec_id, int sig, bool all,
                   struct cap_error *err)
{
        Containerd__Services__Tasks__V1__KillRequest req =
            CONTAINERD__SERVICES__TASKS__V1__KILL_REQUEST__INIT;
        req.container_id = (char *)id;
        req.exec_id = io_path(exec_id);
        req.signal = (uint32_t)sig;
        req.all = all;
        return call(c, "/containerd.services.tasks.v1.Tasks/Kill", &req, EMPTY, NULL,
                    CTRD_TIMEOUT_MS, err);
}

int ctrd_task_delete(struct ctrd_client *c, const char *id, uint32_t *exit_status,
                     struct cap_error *err)
{
        Containerd__Services__Tasks__V1__DeleteTaskRequest req =
            CONTAINERD__SERVICES__TASKS__V1__DELETE_TASK_REQUEST__INIT;
        _cleanup_msg_ Containerd__Services__Tasks__V1__DeleteResponse *resp = NULL;
        req.container_id = (char *)id;
        int r = call(c, "/containerd.services.tasks.v1.Tasks/Delete", &req,
                     &containerd__services__tasks__v1__delete_response__descriptor, &resp,
                     CTRD_TIMEOUT_MS, err);
        if (r < 0)
                return r;
        if (exit_status)
                *exit_status = resp->exit_status;
        return 0;
}

int ctrd_task_delete_process(struct ctrd_client *c, const char *id, const char *exec_id,
                             uint32_t *exit_status, struct cap_error *err)
{
        Containerd__Services__Tasks__V1__DeleteProcessRequest req =
            CONTAINERD__SERVICES__TASKS__V1__DELETE_PROCESS_REQUEST__INIT;
        _cleanup_msg_ Containerd__Services__Tasks__V1__DeleteResponse *resp = NULL;
        req.container_id = (char *)id;
        req.exec_id = (char *)exec_id;
        int r = call(c, "/containerd.services.tasks.v1.Tasks/DeleteProcess", &req,
                     &containerd__services__tasks__v1__delete_response__descriptor, &resp,
                     CTRD_TIMEOUT_MS, err);
        if (r < 0)
                return r;
        if (exit_status)
                *exit_status = resp->exit_status;
        return 0;
}

int ctrd_task_get(struct ctrd_client *c, const char *id, const char *exec_id,
                  Containerd__Services__Tasks__V1__GetResponse **resp, struct cap_error *err)
{
        Containerd__Services__Tasks__V1__GetRequest req =
            CONTAINERD__SERVICES__TASKS__V1__GET_REQUEST__INIT;
        req.container_id = (char *)id;
        req.exec_id = io_path(exec_id);
        return call(c, "/containerd.services.tasks.v1.Tasks/Get", &req,
                    &containerd__services__tasks__v1__get_response__descriptor, resp,
                    CTRD_TIMEOUT_MS, err);
}

int ctrd_task_wait(struct ctrd_client *c, const char *id, const char *exec_id, int timeout_ms,
                   uint32_t *exit_status, struct cap_error *err)
{
        Containerd__Services__Tasks__V1__WaitRequest req =
            CONTAINERD__SERVICES__TASKS__V1__WAIT_REQUEST__INIT;
        _cleanup_msg_ Containerd__Services__Tasks__V1__WaitResponse *resp = NULL;
        req.container_id = (char *)id;
        req.exec_id = io_path(exec_id);
        int r = call(c, "/containerd.services.tasks.v1.Tasks/Wait", &req,
                     &containerd__services__tasks__v1__wait_response__descriptor, &resp, timeout_ms,
                     err);
        /* containerd may see the deadline first and answer UNKNOWN: report it as what it is. */
        if (r < 0 && err->status == CAP_UNKNOWN && strstr(err->msg, "deadline exceeded"))
                err->status = CAP_DEADLINE_EXCEEDED;
        if (r < 0)
                return r;
        if (exit_status)
                *exit_status = resp->exit_status;
        return 0;
}

int ctrd_task_exec(struct ctrd_client *c, const char *id, const char *exec_id,
                   const char *process_json, const struct ctrd_stdio *io, struct cap_error *err)
{
        Containerd__Services__Tasks__V1__ExecProcessRequest req =
            CONTAINERD__SERVICES__TASKS__V1__EXEC_PROCESS_REQUEST__INIT;
        Google__Protobuf__Any spec = GOOGLE__PROTOBUF__ANY__INIT;
        spec.type_url = CTRD_PROCESS_TYPE_URL;
        spec.value.data = (uint8_t *)process_json;
        spec.value.len = strlen(process_json);
        req.container_id = (char *)id;
        req.exec_id = (char *)exec_id;
        req.stdin = io_path(io ? io->stdin_path : NULL);
        req.stdout = io_path(io ? io->stdout_path : NULL);
        req.stderr = io_path(io ? io->stderr_path : NULL);
        req.terminal = io && io->terminal;
        req.spec = &spec;
        int r = call(c, "/containerd.services.tasks.v1.Tasks/Exec", &req, EMPTY, NULL,
                     CTRD_TIMEOUT_MS, err);
        return r < 0 ? cap_error_prefix(err, "exec %s in %s", exec_id, id) : 0;
}

int ctrd_task_resize(struct ctrd_client *c, const char *id, const char *exec_id, uint32_t cols,
                     uint32_t rows, struct cap_error *err)
{
        Containerd__Services__Tasks__V1__ResizePtyRequest req =
            CONTAINERD__SERVICES__TASKS__V1__RESIZE_PTY_REQUEST__INIT;
        req.container_id = (char *)id;
        req.exec_id = io_path(exec_id);
        req.width = cols;
        req.height = rows;
        return call(c, "/containerd.services.tasks.v1.Tasks/ResizePty", &req, EMPTY, NULL,
                    CTRD_TIMEOUT_MS, err);
}

int ctrd_task_close_stdin(struct ctrd_client *c, const char *id, const char *exec_id,
                          struct cap_error *err)
{
        Containerd__Services__Tasks__V1__CloseIORequest req =
            CONTAINERD__SERVICES__TASKS__V1__CLOSE_IOREQUEST__INIT;
        req.container_id = (char *)id;
        req.exec_id = io_path(exec_id);
        req.stdin = true;
        return call(c, "/containerd.services.tasks.v1.Tasks/CloseIO", &req, EMPTY, NULL,
                    CTRD_TIMEOUT_MS, err);
}

/* ---- events ---- */

struct rpc_stream *ctrd_events_open(struct ctrd_client *c, const char *const *filters, size_t n,
                                    struct cap_error *err)
{
        Containerd__Services__Events__V1__SubscribeRequest req =
            CONTAINERD__SERVICES__EVENTS__V1__SUBSCRIBE_REQUEST__INIT;
        req.filters = (char **)filters;
        req.n_filters = n;
        struct rpc_stream *s =
            rpc_stream_open(c->rpc, "/containerd.services.events.v1.Events/Subscribe",
                            &containerd__services__events__v1__envelope__descriptor, 0, err);
        if (!s)
                return NULL;
        if (rpc_stream_send(s, &req.base, err) < 0 || rpc_stream_close_send(s, err) < 0) {
                rpc_stream_free(s);
                cap_error_prefix(err, "containerd Events/Subscribe");
                return NULL;
        }
        return s;
}
