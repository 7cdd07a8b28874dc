/* Helpers shared by the update tests: build ustar bundles in memory (with any defect a test
 * wants), Ed25519 keys and signatures, and a sink that keeps parts in memory. */
#pragma once

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/cleanup.h"
#include "update/bundle.h"

struct tbuf {
        unsigned char *d;
        size_t n, cap;
};

static inline void tbuf_put(struct tbuf *b, const void *p, size_t n)
{
        if (b->n + n > b->cap) {
                b->cap = (b->n + n) * 2 + 4096;
                b->d = realloc(b->d, b->cap);
                if (!b->d)
                        abort();
        }
        memcpy(b->d + b->n, p, n);
        b->n += n;
}

static inline void tbuf_zeros(struct tbuf *b, size_t n)
{
        unsigned char z[512] = {0};
        while (n > 0) {
                size_t k = n < sizeof(z) ? n : sizeof(z);
                tbuf_put(b, z, k);
                n -= k;
        }
}

/* Fills the checksum of a header block. */
static inline void tar_checksum(unsigned char *h)
{
        unsigned sum = 0;
        memset(h + 148, ' ', 8);
        for (int i = 0; i < 512; i++)
                sum += h[i];
        snprintf((char *)h + 148, 8, "%06o", sum);
        h[155] = ' ';
}

static inline void tar_header(unsigned char *h, const char *name, uint64_t size, char type)
{
        memset(h, 0, 512);
        snprintf((char *)h, 100, "%s", name);
        snprintf((char *)h + 100, 8, "%07o", 0644);
        snprintf((char *)h + 108, 8, "%07o", 0);
        snprintf((char *)h + 116, 8, "%07o", 0);
        snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
        snprintf((char *)h + 136, 12, "%011o", 0);
        h[156] = (unsigned char)type;
        memcpy(h + 257,
               "ustar\0"
               "00",
               8);
        tar_checksum(h);
}

static inline void tar_member(struct tbuf *b, const char *name, const void *data, size_t len)
{
        unsigned char h[512];
        tar_header(h, name, len, '0');
        tbuf_put(b, h, 512);
        tbuf_put(b, data, len);
        tbuf_zeros(b, (512 - len % 512) % 512);
}

static inline void tar_end(struct tbuf *b)
{
        tbuf_zeros(b, 1024);
}

static inline EVP_PKEY *key_new(void)
{
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        if (!k)
                abort();
        return k;
}

/* The public key as PEM (static buffer per call slot). */
static inline char *key_pub_pem(EVP_PKEY *k)
{
        static char buf[4][256];
        static int i;
        i = (i + 1) % 4;
        BIO *bio = BIO_new(BIO_s_mem());
        PEM_write_bio_PUBKEY(bio, k);
        int n = BIO_read(bio, buf[i], sizeof(buf[i]) - 1);
        buf[i][n > 0 ? n : 0] = '\0';
        BIO_free(bio);
        return buf[i];
}

static inline void key_sign(EVP_PKEY *k, const void *msg, size_t len, unsigned char sig[64])
{
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        size_t n = 64;
        if (!ctx || EVP_DigestSignInit(ctx, NULL, NULL, NULL, k) != 1 ||
            EVP_DigestSign(ctx, sig, &n, msg, len) != 1 || n != 64)
                abort();
        EVP_MD_CTX_free(ctx);
}

static inline void sha256_hex(const void *data, size_t len, char out[65])
{
        unsigned char d[32];
        unsigned int n = 0;
        EVP_Digest(data, len, d, &n, EVP_sha256(), NULL);
        for (int i = 0; i < 32; i++)
                snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* What a test bundle holds; fields left 0 take the defaults of bundle_build(). */
struct tbundle {
        const char *version, *arch, *min_from;
        const char *extra; /* more manifest fields, e.g. "\"perm_compat\": 2, " */
        const char *parts[3]; /* contents of vmlinuz, initrd, rootfs.sqfs */
        size_t part_len[3];
        const char *manifest; /* instead of the generated one */
        EVP_PKEY *key;
};

static inline char *bundle_manifest_text(const struct tbundle *t)
{
        static char buf[4096];
        char h[3][65];
        for (int i = 0; i < 3; i++)
                sha256_hex(t->parts[i], t->part_len[i], h[i]);
        char min[128] = "";
        if (t->min_from)
                snprintf(min, sizeof(min), "\"min_from_version\": \"%s\", ", t->min_from);
        snprintf(buf, sizeof(buf),
                 "{\"format\": 1, \"version\": \"%s\", \"arch\": \"%s\", %s%s\"parts\": ["
                 "{\"name\": \"vmlinuz\", \"size\": %zu, \"sha256\": \"%s\"}, "
                 "{\"name\": \"initrd\", \"size\": %zu, \"sha256\": \"%s\"}, "
                 "{\"name\": \"rootfs.sqfs\", \"size\": %zu, \"sha256\": \"%s\"}]}\n",
                 t->version ? t->version : "0.2.0", t->arch ? t->arch : "x86_64", min,
                 t->extra ? t->extra : "",
                 t->part_len[0], h[0], t->part_len[1], h[1], t->part_len[2], h[2]);
        return buf;
}

static const char *const tpart_names[3] = {"vmlinuz", "initrd", "rootfs.sqfs"};

/* Fills default parts (a rootfs of 10000 bytes so the slot header logic is exercised). */
static inline void tbundle_defaults(struct tbundle *t)
{
        static char rootfs[10000];
        for (size_t i = 0; i < sizeof(rootfs); i++)
                rootfs[i] = (char)('A' + i % 26);
        if (!t->parts[0]) {
                t->parts[0] = "kernel image bytes";
                t->parts[1] = "initramfs bytes, a little longer than the kernel";
                t->parts[2] = rootfs;
                t->part_len[0] = strlen(t->parts[0]);
                t->part_len[1] = strlen(t->parts[1]);
                t->part_len[2] = sizeof(rootfs);
        }
}

/* A complete, well-formed bundle signed with t->key. */
static inline struct tbuf bundle_build(struct tbundle *t)
{
        struct tbuf b = {0};
        tbundle_defaults(t);
        const char *m = t->manifest ? t->manifest : bundle_manifest_text(t);
        unsigned char sig[64];
        key_sign(t->key, m, strlen(m), sig);
        tar_member(&b, "manifest.json", m, strlen(m));
        tar_member(&b, "manifest.json.sig", sig, 64);
        for (int i = 0; i < 3; i++)
                tar_member(&b, tpart_names[i], t->parts[i], t->part_len[i]);
        tar_end(&b);
        tbuf_zeros(&b, 10240 - b.n % 10240); /* GNU tar's record padding */
        return b;
}

/* A sink keeping every part in memory. */
struct msink {
        struct tbuf data[3];
        int opened, closed, aborted, capacity_calls;
        uint64_t capacity; /* 0: unlimited */
        int fail_write_at; /* fail the Nth write (1-based), 0: never */
        int writes;
};

static inline int msink_index(const struct bundle_part *p)
{
        for (int i = 0; i < 3; i++)
                if (strcmp(p->name, tpart_names[i]) == 0)
                        return i;
        abort();
}

static inline int msink_capacity(void *ctx, const struct bundle_part *p, uint64_t *bytes,
                                 struct cap_error *err)
{
        struct msink *s = ctx;
        s->capacity_calls++;
        *bytes = s->capacity ? s->capacity : UINT64_MAX;
        return 0;
}

static inline int msink_open(void *ctx, const struct bundle_part *p, struct cap_error *err)
{
        struct msink *s = ctx;
        s->opened++;
        s->data[msink_index(p)].n = 0;
        return 0;
}

static inline int msink_write(void *ctx, const struct bundle_part *p, const void *buf, size_t len,
                              struct cap_error *err)
{
        struct msink *s = ctx;
        if (++s->writes == s->fail_write_at)
                return cap_error_errno(err, -EIO, "write");
        tbuf_put(&s->data[msink_index(p)], buf, len);
        return 0;
}

static inline int msink_close(void *ctx, const struct bundle_part *p, struct cap_error *err)
{
        ((struct msink *)ctx)->closed++;
        return 0;
}

static inline void msink_abort(void *ctx, const struct bundle_part *p)
{
        ((struct msink *)ctx)->aborted++;
}

static inline struct bundle_sink msink_sink(struct msink *s)
{
        return (struct bundle_sink){.capacity = msink_capacity,
                                    .open = msink_open,
                                    .write = msink_write,
                                    .close = msink_close,
                                    .abort = msink_abort,
                                    .ctx = s};
}

static inline void msink_free(struct msink *s)
{
        for (int i = 0; i < 3; i++)
                free(s->data[i].d);
}
