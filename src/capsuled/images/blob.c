/* sha256 hashing with OpenSSL's EVP interface, media type predicates and blob_sink_put. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "blob.h"

int blob_hash_init(struct blob_hash *h, struct cap_error *err)
{
        h->size = 0;
        h->md = EVP_MD_CTX_new();
        if (!h->md || EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1) {
                blob_hash_free(h);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "sha256: cannot initialise");
        }
        return 0;
}

void blob_hash_update(struct blob_hash *h, const void *data, size_t len)
{
        if (len)
                EVP_DigestUpdate(h->md, data, len);
        h->size += len;
}

void blob_hash_final(struct blob_hash *h, char out[72])
{
        unsigned char md[32];
        unsigned int n = 0;
        EVP_DigestFinal_ex(h->md, md, &n);
        memcpy(out, "sha256:", 7);
        for (unsigned i = 0; i < 32; i++)
                snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
        blob_hash_free(h);
}

void blob_hash_free(struct blob_hash *h)
{
        EVP_MD_CTX_free(h->md);
        h->md = NULL;
}

int blob_digest(const void *data, size_t len, char out[72], struct cap_error *err)
{
        struct blob_hash h;
        if (blob_hash_init(&h, err) < 0)
                return err->code;
        blob_hash_update(&h, data, len);
        blob_hash_final(&h, out);
        return 0;
}

bool blob_is_index(const char *mt)
{
        return mt && (strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0);
}

bool blob_is_manifest(const char *mt)
{
        return mt && (strcmp(mt, MT_OCI_MANIFEST) == 0 || strcmp(mt, MT_DOCKER_MANIFEST) == 0);
}

bool blob_is_layer(const char *mt)
{
        static const char *const known[] = {
            MT_OCI_LAYER,
            MT_OCI_LAYER_GZIP,
            MT_OCI_LAYER_ZSTD,
            MT_DOCKER_LAYER,
            MT_DOCKER_LAYER_GZIP,
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"};
        for (size_t i = 0; mt && i < sizeof(known) / sizeof(known[0]); i++)
                if (strcmp(mt, known[i]) == 0)
                        return true;
        return false;
}

int blob_sink_put(const struct blob_sink *s, const struct blob_desc *d, const void *data,
                  size_t len, struct cap_error *err)
{
        char dg[72];
        if (blob_digest(data, len, dg, err) < 0)
                return err->code;
        if (strcmp(dg, d->digest) != 0 || len != d->size)
                return cap_error_set(err, -EBADMSG, CAP_INVALID_ARGUMENT,
                                     "blob %s: content does not match its digest or size",
                                     d->digest);
        bool exists = false;
        if (s->ops->begin(s->ud, d, &exists, err) < 0)
                return err->code;
        if (exists)
                return 0;
        if (s->ops->write(s->ud, data, len, err) < 0) {
                s->ops->abort(s->ud);
                return err->code;
        }
        return s->ops->commit(s->ud, d, err);
}
