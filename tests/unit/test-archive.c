/* Archive import (images/archive.c): valid docker- and oci-archives plan and write the right
 * blobs in the right order; malicious or broken archives are refused in pass 1 with a clear
 * message: "..", absolute paths, escaping links, device nodes, duplicates, bad digests, truncated
 * data, huge declared sizes. Archives are built in memory with libarchive's writer. */
#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "images/archive.h"
#include "test.h"

/* ---- building tars ---- */

struct tb {
        struct archive *a;
        char *buf;
        size_t size, used;
};

static bool layer_zstd_next; /* the next tb_open compresses with zstd */

static void tb_open(struct tb *t, bool gzip)
{
        t->size = 16 << 20;
        t->buf = malloc(t->size);
        t->used = 0;
        t->a = archive_write_new();
        archive_write_set_format_pax_restricted(t->a);
        if (layer_zstd_next)
                archive_write_add_filter_zstd(t->a);
        else if (gzip)
                archive_write_add_filter_gzip(t->a);
        layer_zstd_next = false;
        archive_write_set_bytes_in_last_block(t->a, 1);
        archive_write_open_memory(t->a, t->buf, t->size, &t->used);
}

static void tb_add(struct tb *t, const char *name, mode_t type, const void *data, size_t len,
                   const char *link)
{
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, type);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, type == AE_IFREG ? (la_int64_t)len : 0);
        if (type == AE_IFLNK)
                archive_entry_set_symlink(e, link);
        if (type == AE_IFCHR)
                archive_entry_set_rdev(e, 0x0101);
        archive_write_header(t->a, e);
        if (type == AE_IFREG && len)
                archive_write_data(t->a, data, len);
        archive_entry_free(e);
}

static void tb_file(struct tb *t, const char *name, const char *s)
{
        tb_add(t, name, AE_IFREG, s, strlen(s), NULL);
}

static void tb_hardlink(struct tb *t, const char *name, const char *target)
{
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_hardlink(e, target);
        archive_entry_set_size(e, 0);
        archive_write_header(t->a, e);
        archive_entry_free(e);
}

/* Closes; returns the bytes (t->buf, t->used). */
static void tb_close(struct tb *t)
{
        archive_write_close(t->a);
        archive_write_free(t->a);
}

static int memfd_of(const void *data, size_t len)
{
        int fd = memfd_create("archive", MFD_CLOEXEC);
        if (write(fd, data, len) != (ssize_t)len)
                abort();
        return fd;
}

static void digest_hex(const void *data, size_t len, char out[72])
{
        struct cap_error err = {0};
        blob_digest(data, len, out, &err);
}

/* What make_layer adds after its file (the layer checks): a hostile entry name, or a hardlink
 * whose target is hostile; and whether the layer is zstd-compressed instead. */
static const char *layer_bad_name, *layer_bad_link;
static bool layer_zstd;

/* A small layer: one file. */
static void make_layer(struct tb *layer, bool gzip)
{
        layer_zstd_next = layer_zstd;
        tb_open(layer, gzip);
        tb_add(layer, "hello.txt", AE_IFREG, "hello\n", 6, NULL);
        if (layer_bad_name)
                tb_file(layer, layer_bad_name, "x");
        if (layer_bad_link)
                tb_hardlink(layer, "etc/link", layer_bad_link);
        tb_close(layer);
}

/* docker-archive; tweak: 0 valid, 1 wrong diff_id, 2 no RepoTags. */
static void make_docker(struct tb *out, int tweak)
{
        struct tb layer;
        make_layer(&layer, false);
        char diff[72], cfgd[72], cfg[512], man[512], path[128];
        digest_hex(layer.buf, layer.used, diff);
        snprintf(cfg, sizeof(cfg),
                 "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
                 "\"diff_ids\":[\"%s\"]}}",
                 tweak == 1
                     ? "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                     : diff);
        digest_hex(cfg, strlen(cfg), cfgd);
        snprintf(man, sizeof(man),
                 "[{\"Config\":\"%s.json\",\"RepoTags\":%s,\"Layers\":[\"abc/layer.tar\"]}]",
                 cfgd + 7, tweak == 2 ? "null" : "[\"test/app:1\",\"registry.lan:5000/app:v1\"]");
        tb_open(out, false);
        snprintf(path, sizeof(path), "%s.json", cfgd + 7);
        tb_file(out, path, cfg);
        tb_add(out, "abc/", AE_IFDIR, NULL, 0, NULL);
        tb_add(out, "abc/layer.tar", AE_IFREG, layer.buf, layer.used, NULL);
        tb_file(out, "manifest.json", man);
        tb_close(out);
        free(layer.buf);
}

/* oci-archive with a gzip layer; tweak: 0 valid, 1 corrupt layer blob, 2 wrong declared size,
 * 3 missing blob, 4 bare-tag annotation only, 5 = 4 plus docker 25's manifest.json (RepoTags). */
static void make_oci(struct tb *out, int tweak)
{
        struct tb plain, gz;
        make_layer(&plain, false);
        make_layer(&gz, true);
        char diff[72], ld[72], cfgd[72], md[72], cfg[512], man[1024], idx[1024], p[128];
        digest_hex(plain.buf, plain.used, diff);
        digest_hex(gz.buf, gz.used, ld);
        snprintf(cfg, sizeof(cfg),
                 "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
                 "\"diff_ids\":[\"%s\"]}}",
                 diff);
        digest_hex(cfg, strlen(cfg), cfgd);
        snprintf(
            man, sizeof(man),
            "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
            "\"config\":{\"mediaType\":\"application/"
            "vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%zu},"
            "\"layers\":[{\"mediaType\":\"application/"
            "vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"%s\",\"size\":%zu}]}",
            cfgd, strlen(cfg), ld, gz.used + (tweak == 2 ? 1 : 0));
        digest_hex(man, strlen(man), md);
        snprintf(idx, sizeof(idx),
                 "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/"
                 "vnd.oci.image.manifest.v1+json\","
                 "\"digest\":\"%s\",\"size\":%zu,\"annotations\":{\"org.opencontainers.image.ref."
                 "name\":\"%s\"}}]}",
                 md, strlen(man), tweak >= 4 ? "latest" : "capsule.local/test:oci");
        tb_open(out, false);
        tb_file(out, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
        tb_file(out, "index.json", idx);
        snprintf(p, sizeof(p), "blobs/sha256/%s", cfgd + 7);
        tb_file(out, p, cfg);
        snprintf(p, sizeof(p), "blobs/sha256/%s", md + 7);
        tb_file(out, p, man);
        if (tweak == 5) {
                char dm[512];
                snprintf(dm, sizeof(dm),
                         "[{\"Config\":\"blobs/sha256/%s\",\"RepoTags\":[\"docker25/app:1\"],"
                         "\"Layers\":[\"blobs/sha256/%s\"]}]",
                         cfgd + 7, ld + 7);
                tb_file(out, "manifest.json", dm);
        }
        if (tweak != 3) {
                snprintf(p, sizeof(p), "blobs/sha256/%s", ld + 7);
                if (tweak == 1)
                        gz.buf[gz.used / 2] ^= 0x55;
                tb_add(out, p, AE_IFREG, gz.buf, gz.used, NULL);
        }
        tb_close(out);
        free(plain.buf);
        free(gz.buf);
}

/* ---- a memory sink ---- */

struct msink {
        char digests[16][72];
        char types[16][96];
        size_t n_labels[16];
        size_t n;
        int begun;
        uint64_t bytes;
};

static int ms_begin(void *ud, const struct blob_desc *d, bool *exists, struct cap_error *err)
{
        struct msink *m = ud;
        *exists = false;
        m->begun++;
        return 0;
}
static int ms_write(void *ud, const void *data, size_t len, struct cap_error *err)
{
        ((struct msink *)ud)->bytes += len;
        return 0;
}
static int ms_commit(void *ud, const struct blob_desc *d, struct cap_error *err)
{
        struct msink *m = ud;
        snprintf(m->digests[m->n], 72, "%s", d->digest);
        snprintf(m->types[m->n], 96, "%s", d->media_type);
        m->n_labels[m->n] = d->n_labels;
        m->n++;
        return 0;
}
static void ms_abort(void *ud)
{
}
static const struct blob_sink_ops ms_ops = {ms_begin, ms_write, ms_commit, ms_abort};

/* Runs pass 1 (+ pass 2 into a memory sink when it succeeds). */
static int import(const void *data, size_t len, const char *name, const struct archive_limits *lim,
                  struct msink *ms, struct archive_plan **out, struct cap_error *err)
{
        int fd = memfd_of(data, len);
        struct archive_plan *p = NULL;
        int r = archive_plan_open(fd, name, lim, &p, err);
        if (r == 0 && ms) {
                struct blob_sink s = {&ms_ops, ms};
                r = archive_plan_write(p, fd, &s, err);
        }
        close(fd);
        if (out && r == 0)
                *out = p;
        else
                archive_plan_free(p);
        return r;
}

static void expect_refused(const void *data, size_t len, const char *why, enum cap_status st)
{
        struct cap_error err = {0};
        CHECK(import(data, len, NULL, NULL, NULL, NULL, &err) < 0);
        CHECK(err.status == st);
        CHECK_CONTAINS(err.msg, why);
}

/* ---- tests ---- */

TEST(docker_archive)
{
        struct tb t;
        make_docker(&t, 0);
        struct msink ms = {0};
        struct archive_plan *p = NULL;
        struct cap_error err = {0};
        int r = import(t.buf, t.used, NULL, NULL, &ms, &p, &err);
        if (r < 0)
                fprintf(stderr, "  %s\n", err.msg);
        CHECK(r == 0);
        if (r == 0) {
                CHECK_STR_EQ(archive_plan_format(p), "docker-archive");
                CHECK(archive_plan_n_images(p) == 2);
                CHECK_STR_EQ(archive_plan_image(p, 0)->name, "docker.io/test/app:1");
                CHECK_STR_EQ(archive_plan_image(p, 1)->name, "registry.lan:5000/app:v1");
                CHECK_STR_EQ(archive_plan_image(p, 0)->media_type, MT_OCI_MANIFEST);
                CHECK(ms.n == 3);
                CHECK_STR_EQ(ms.types[0], MT_OCI_LAYER);
                CHECK_STR_EQ(ms.types[1], MT_OCI_CONFIG);
                CHECK_STR_EQ(ms.types[2], MT_OCI_MANIFEST);
                CHECK_STR_EQ(ms.digests[2], archive_plan_image(p, 0)->digest);
                CHECK(ms.n_labels[0] == 1); /* containerd.io/uncompressed */
                CHECK(ms.n_labels[2] == 2); /* gc.ref config + l.0 */
                archive_plan_free(p);
        }
        /* --name overrides the archive's names. */
        CHECK(import(t.buf, t.used, "other/x:2", NULL, NULL, &p, &err) == 0);
        if (p) {
                CHECK(archive_plan_n_images(p) == 1);
                CHECK_STR_EQ(archive_plan_image(p, 0)->name, "docker.io/other/x:2");
                archive_plan_free(p);
        }
        /* An invalid --name is refused. */
        CHECK(import(t.buf, t.used, "Bad/Name", NULL, NULL, NULL, &err) < 0);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        free(t.buf);
}

TEST(docker_archive_bad)
{
        struct tb t;
        make_docker(&t, 1);
        expect_refused(t.buf, t.used, "does not match the config's diff_id", CAP_INVALID_ARGUMENT);
        free(t.buf);
        make_docker(&t, 2);
        expect_refused(t.buf, t.used, "--name", CAP_INVALID_ARGUMENT);
        struct cap_error err = {0};
        struct archive_plan *p = NULL;
        CHECK(import(t.buf, t.used, "capsule.local/x:1", NULL, NULL, &p, &err) == 0);
        archive_plan_free(p);
        free(t.buf);
}

TEST(oci_archive)
{
        struct tb t;
        make_oci(&t, 0);
        struct msink ms = {0};
        struct archive_plan *p = NULL;
        struct cap_error err = {0};
        int r = import(t.buf, t.used, NULL, NULL, &ms, &p, &err);
        if (r < 0)
                fprintf(stderr, "  %s\n", err.msg);
        CHECK(r == 0);
        if (r == 0) {
                CHECK_STR_EQ(archive_plan_format(p), "oci-archive");
                CHECK(archive_plan_n_images(p) == 1);
                CHECK_STR_EQ(archive_plan_image(p, 0)->name, "capsule.local/test:oci");
                CHECK(ms.n == 3);
                CHECK_STR_EQ(ms.types[0], MT_OCI_LAYER_GZIP);
                CHECK_STR_EQ(ms.types[2], MT_OCI_MANIFEST);
                archive_plan_free(p);
        }
        /* The whole archive gzip-compressed is accepted too. */
        uLongf zcap = compressBound(t.used) + 64;
        unsigned char *z = malloc(zcap);
        z_stream zs = {0};
        CHECK(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
        zs.next_in = (unsigned char *)t.buf;
        zs.avail_in = (uInt)t.used;
        zs.next_out = z;
        zs.avail_out = (uInt)zcap;
        CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
        size_t zlen = zs.total_out;
        deflateEnd(&zs);
        p = NULL;
        CHECK(import(z, zlen, NULL, NULL, NULL, &p, &err) == 0);
        if (p) {
                CHECK_STR_EQ(archive_plan_image(p, 0)->name, "capsule.local/test:oci");
                archive_plan_free(p);
        }
        free(z);
        free(t.buf);
}

TEST(oci_archive_bad)
{
        struct tb t;
        make_oci(&t, 1);
        expect_refused(t.buf, t.used, "does not match its descriptor", CAP_INVALID_ARGUMENT);
        free(t.buf);
        make_oci(&t, 2);
        expect_refused(t.buf, t.used, "does not match its descriptor", CAP_INVALID_ARGUMENT);
        free(t.buf);
        make_oci(&t, 3);
        expect_refused(t.buf, t.used, "missing from the archive", CAP_INVALID_ARGUMENT);
        free(t.buf);
        make_oci(&t, 4);
        expect_refused(t.buf, t.used, "--name", CAP_INVALID_ARGUMENT);
        free(t.buf);
}

TEST(docker25_layout)
{
        struct tb t;
        make_oci(&t, 5);
        struct archive_plan *p = NULL;
        struct cap_error err = {0};
        int r = import(t.buf, t.used, NULL, NULL, NULL, &p, &err);
        if (r < 0)
                fprintf(stderr, "  %s\n", err.msg);
        CHECK(r == 0);
        if (p) {
                CHECK_STR_EQ(archive_plan_format(p), "oci-archive");
                CHECK(archive_plan_n_images(p) == 1);
                CHECK_STR_EQ(archive_plan_image(p, 0)->name, "docker.io/docker25/app:1");
                archive_plan_free(p);
        }
        free(t.buf);
}

TEST(sanitising)
{
        struct tb t;
        tb_open(&t, false);
        tb_file(&t, "../etc/passwd", "root::0:0::/:/bin/sh\n");
        tb_close(&t);
        expect_refused(t.buf, t.used, "\"..\" refused", CAP_INVALID_ARGUMENT);
        free(t.buf);

        tb_open(&t, false);
        tb_file(&t, "a/../../b", "x");
        tb_close(&t);
        expect_refused(t.buf, t.used, "\"..\" refused", CAP_INVALID_ARGUMENT);
        free(t.buf);

        tb_open(&t, false);
        tb_file(&t, "/etc/passwd", "x");
        tb_close(&t);
        expect_refused(t.buf, t.used, "absolute path", CAP_INVALID_ARGUMENT);
        free(t.buf);

        tb_open(&t, false);
        tb_add(&t, "blobs/sha256/x", AE_IFLNK, NULL, 0, "../../../etc/passwd");
        tb_close(&t);
        expect_refused(t.buf, t.used, "points outside the archive", CAP_INVALID_ARGUMENT);
        free(t.buf);

        tb_open(&t, false);
        tb_add(&t, "manifest.json", AE_IFLNK, NULL, 0, "/etc/passwd");
        tb_close(&t);
        expect_refused(t.buf, t.used, "symlink to absolute path", CAP_INVALID_ARGUMENT);
        free(t.buf);

        tb_open(&t, false);
        tb_file(&t, "a", "x");
        tb_hardlink(&t, "b", "../a");
        tb_close(&t);
        expect_refused(t.buf, t.used, "\"..\" refused", CAP_INVALID_ARGUMENT);
        free(t.buf);

        tb_open(&t, false);
        tb_add(&t, "dev/null", AE_IFCHR, NULL, 0, NULL);
        tb_close(&t);
        expect_refused(t.buf, t.used, "device node", CAP_INVALID_ARGUMENT);
        free(t.buf);

        tb_open(&t, false);
        tb_file(&t, "manifest.json", "[]");
        tb_file(&t, "./manifest.json", "[{}]");
        tb_close(&t);
        expect_refused(t.buf, t.used, "duplicate name", CAP_INVALID_ARGUMENT);
        free(t.buf);

        tb_open(&t, false);
        tb_file(&t, "hello", "x");
        tb_close(&t);
        expect_refused(t.buf, t.used, "not an image archive", CAP_INVALID_ARGUMENT);
        free(t.buf);

        const char junk[] = "this is not a tar archive at all, just some bytes .......";
        expect_refused(junk, sizeof(junk), "tar", CAP_INVALID_ARGUMENT);

        /* A symlink inside the archive is followed (docker 25 writes layer.tar -> ../blobs/...). */
        struct tb d;
        make_docker(&d, 0);
        CHECK(d.used > 0);
        free(d.buf);
}

/* A ustar header by hand, for sizes no writer would produce. */
static void ustar_header(unsigned char h[512], const char *name, const char *size_octal)
{
        memset(h, 0, 512);
        snprintf((char *)h, 100, "%s", name);
        memcpy(h + 100, "0000644", 7);
        memcpy(h + 108, "0000000", 7);
        memcpy(h + 116, "0000000", 7);
        memcpy(h + 124, size_octal, strlen(size_octal));
        memcpy(h + 136, "00000000000", 11);
        h[156] = '0';
        memcpy(h + 257, "ustar", 6);
        memcpy(h + 263, "00", 2);
        memset(h + 148, ' ', 8);
        unsigned sum = 0;
        for (int i = 0; i < 512; i++)
                sum += h[i];
        snprintf((char *)h + 148, 8, "%06o", sum);
}

TEST(sizes)
{
        /* Declares 8 GiB: refused before reading, with RESOURCE_EXHAUSTED. */
        unsigned char buf[512 * 4] = {0};
        ustar_header(buf, "blobs/sha256/huge", "77777777777");
        struct archive_limits lim = {.max_entry_bytes = 1 << 20};
        struct cap_error err = {0};
        CHECK(import(buf, sizeof(buf), NULL, &lim, NULL, NULL, &err) < 0);
        CHECK(err.status == CAP_RESOURCE_EXHAUSTED);
        CHECK_CONTAINS(err.msg, "declares");

        /* Declares 1000 bytes, holds 100: truncated. */
        unsigned char tr[512 + 100];
        ustar_header(tr, "index.json", "00000001750");
        memset(tr + 512, '{', 100);
        CHECK(import(tr, sizeof(tr), NULL, NULL, NULL, NULL, &err) < 0);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        CHECK(strstr(err.msg, "runcated") || strstr(err.msg, "Truncated"));

        /* A valid archive cut in the middle of its layer. */
        struct tb t;
        make_oci(&t, 0);
        CHECK(import(t.buf, t.used - 700, NULL, NULL, NULL, NULL, &err) < 0);
        CHECK(err.status == CAP_INVALID_ARGUMENT || err.status == CAP_RESOURCE_EXHAUSTED);
        free(t.buf);

        /* Too many entries. */
        tb_open(&t, false);
        for (int i = 0; i < 20; i++) {
                char n[16];
                snprintf(n, sizeof(n), "f%d", i);
                tb_file(&t, n, "x");
        }
        tb_close(&t);
        struct archive_limits few = {.max_entries = 10};
        CHECK(import(t.buf, t.used, NULL, &few, NULL, NULL, &err) < 0);
        CHECK(err.status == CAP_RESOURCE_EXHAUSTED);
        free(t.buf);
}

/* Layer contents are checked at push, as `docker load` does: an entry or hardlink target that
 * leaves the image root is refused naming the layer and the entry, whatever the layer's
 * compression (none in the docker-archive, gzip in the oci-archive, zstd); nothing is written. */
TEST(layer_contents)
{
        static const struct {
                const char *name, *link, *why;
        } cases[] = {
            {"../../../tmp/x", NULL, "entry \"../../../tmp/x\": \"..\" leaves the image root"},
            {"a/../../x", NULL, "entry \"a/../../x\": \"..\" leaves the image root"},
            {"/etc/x", NULL, "entry \"/etc/x\": an absolute path"},
            {NULL, "../../etc/shadow",
             "entry \"etc/link\": hardlink to \"../../etc/shadow\": \"..\" leaves"},
            {NULL, "/etc/shadow",
             "entry \"etc/link\": hardlink to \"/etc/shadow\": an absolute path"},
        };
        for (int zstd = 0; zstd <= 1; zstd++)
                for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                        layer_zstd = zstd;
                        layer_bad_name = cases[i].name;
                        layer_bad_link = cases[i].link;
                        for (int oci = 0; oci <= 1; oci++) {
                                struct tb t;
                                if (oci)
                                        make_oci(&t, 0);
                                else
                                        make_docker(&t, 0);
                                struct msink ms = {0};
                                struct cap_error err = {0};
                                CHECK(import(t.buf, t.used, NULL, NULL, &ms, NULL, &err) < 0);
                                CHECK(err.status == CAP_INVALID_ARGUMENT);
                                if (!test_cur_failed && err.status != CAP_INVALID_ARGUMENT)
                                        fprintf(stderr, "  zstd=%d oci=%d case %zu: %s\n", zstd,
                                                oci, i, err.msg);
                                CHECK_CONTAINS(err.msg, "layer sha256:");
                                CHECK_CONTAINS(err.msg, cases[i].why);
                                CHECK(ms.n == 0 && ms.begun == 0);
                                free(t.buf);
                        }
                }
        /* benign names and links are fine: "./", "..." and "a/..b" are not "..", nor is a
         * symlink with an absolute or relative target (resolved inside the root at run time) */
        layer_zstd = true;
        layer_bad_name = "./a/...b/..c";
        layer_bad_link = "hello.txt";
        struct tb t;
        make_oci(&t, 0);
        struct msink ms = {0};
        struct cap_error err = {0};
        int r = import(t.buf, t.used, NULL, NULL, &ms, NULL, &err);
        if (r < 0)
                fprintf(stderr, "  %s\n", err.msg);
        CHECK(r == 0);
        free(t.buf);
        layer_zstd = false;
        layer_bad_name = layer_bad_link = NULL;
}

int main(void)
{
        RUN(docker_archive);
        RUN(docker_archive_bad);
        RUN(oci_archive);
        RUN(oci_archive_bad);
        RUN(docker25_layout);
        RUN(sanitising);
        RUN(sizes);
        RUN(layer_contents);
        return test_summary();
}
