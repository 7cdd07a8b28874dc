/* Unit tests for the update bundle reader (src/capsuled/update/bundle.c): a good bundle in every
 * chunking, each tar defect (checksum, unsafe name, links, pax/GNU, sizes, order, extra members,
 * signature length), the signature, the manifest's strictness, versions, capacity, hashes and
 * truncation, each refused with the right status and a message naming what failed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "test-update-bundle.h"
#include "test.h"

struct run {
        int rc;
        struct cap_error err;
        struct msink sink;
        const struct bundle_manifest *m;
        int key_index;
};

/* Streams b through a reader in chunks of `chunk` bytes (0: random 1..3000) and finishes it. */
static void run_bundle(const struct tbuf *b, const char *const *keys, size_t n_keys,
                       const char *running, bool downgrade, size_t chunk, struct run *out)
{
        memset(out, 0, sizeof(*out));
        struct bundle_sink sink = msink_sink(&out->sink);
        struct bundle_reader_opts o = {.trusted_keys = keys,
                                       .n_trusted_keys = n_keys,
                                       .arch = "x86_64",
                                       .running_version = running ? running : "0.1.0",
                                       .allow_downgrade = downgrade,
                                       .sink = &sink};
        struct bundle_reader *r = NULL;
        out->rc = bundle_reader_new(&o, &r, &out->err);
        if (out->rc < 0)
                return;
        for (size_t off = 0; off < b->n && out->rc == 0;) {
                size_t n = chunk ? chunk : 1 + (size_t)(rand() % 3000);
                if (n > b->n - off)
                        n = b->n - off;
                out->rc = bundle_reader_feed(r, b->d + off, n, &out->err);
                off += n;
        }
        if (out->rc == 0)
                out->rc = bundle_reader_finish(r, &out->err);
        out->key_index = bundle_reader_key_index(r);
        bundle_reader_free(r);
}

static void expect_fail(const struct run *r, enum cap_status status, const char *want)
{
        CHECK(r->rc < 0);
        CHECK(r->err.status == status);
        CHECK_CONTAINS(r->err.msg, want);
        if (r->rc == 0 || r->err.status != status || !strstr(r->err.msg, want))
                fprintf(stderr, "  got %s: %s\n", cap_status_name(r->err.status), r->err.msg);
        CHECK(r->sink.closed + r->sink.aborted == r->sink.opened);
}

TEST(good_bundle_any_chunking)
{
        EVP_PKEY *k = key_new(), *other = key_new();
        struct tbundle t = {.key = k};
        struct tbuf b = bundle_build(&t);
        const char *keys[] = {key_pub_pem(other), key_pub_pem(k)};
        size_t chunks[] = {1, 7, 511, 512, 513, 4096, 0, 0, 0, b.n};
        for (size_t i = 0; i < ARRAY_SIZE(chunks); i++) {
                struct run r;
                run_bundle(&b, keys, 2, NULL, false, chunks[i], &r);
                CHECK(r.rc == 0);
                if (r.rc)
                        fprintf(stderr, "  chunk %zu: %s\n", chunks[i], r.err.msg);
                CHECK(r.sink.opened == 3 && r.sink.closed == 3 && r.sink.aborted == 0);
                CHECK(r.sink.capacity_calls == 3);
                CHECK(r.key_index == 1);
                for (int p = 0; p < 3; p++)
                        CHECK(r.sink.data[p].n == t.part_len[p] &&
                              memcmp(r.sink.data[p].d, t.parts[p], t.part_len[p]) == 0);
                msink_free(&r.sink);
        }
        free(b.d);
        EVP_PKEY_free(k);
        EVP_PKEY_free(other);
}

/* Builds a bundle, lets edit() change it, runs it and checks the failure. */
static void expect_bundle(void (*edit)(struct tbuf *b, struct tbundle *t), enum cap_status status,
                          const char *want)
{
        EVP_PKEY *k = key_new();
        struct tbundle t = {.key = k};
        struct tbuf b = bundle_build(&t);
        if (edit)
                edit(&b, &t);
        const char *keys[] = {key_pub_pem(k)};
        struct run r;
        run_bundle(&b, keys, 1, NULL, false, 0, &r);
        expect_fail(&r, status, want);
        msink_free(&r.sink);
        free(b.d);
        EVP_PKEY_free(k);
}

static void edit_checksum(struct tbuf *b, struct tbundle *t)
{
        b->d[0] = 'M'; /* the name changes, the checksum does not */
}

static void edit_first_member(struct tbuf *b, struct tbundle *t, const char *name, char type)
{
        unsigned char h[512];
        uint64_t size = 0;
        sscanf((const char *)b->d + 124, "%11llo", (unsigned long long *)&size);
        tar_header(h, name, size, type);
        memcpy(b->d, h, 512);
}

static void edit_dotdot(struct tbuf *b, struct tbundle *t)
{
        edit_first_member(b, t, "../x", '0');
}
static void edit_absolute(struct tbuf *b, struct tbundle *t)
{
        edit_first_member(b, t, "/manifest.json", '0');
}
static void edit_symlink(struct tbuf *b, struct tbundle *t)
{
        edit_first_member(b, t, "manifest.json", '2');
}
static void edit_hardlink(struct tbuf *b, struct tbundle *t)
{
        edit_first_member(b, t, "manifest.json", '1');
}
static void edit_pax(struct tbuf *b, struct tbundle *t)
{
        edit_first_member(b, t, "manifest.json", 'x');
}
static void edit_gnu_longname(struct tbuf *b, struct tbundle *t)
{
        edit_first_member(b, t, "manifest.json", 'L');
}
static void edit_not_first(struct tbuf *b, struct tbundle *t)
{
        edit_first_member(b, t, "vmlinuz", '0');
}
static void edit_gnu_magic(struct tbuf *b, struct tbundle *t)
{
        memcpy(b->d + 257, "ustar  \0", 8);
        tar_checksum(b->d);
}
static void edit_prefix(struct tbuf *b, struct tbundle *t)
{
        memcpy(b->d + 345, "dir", 3);
        tar_checksum(b->d);
}
static void edit_size_base256(struct tbuf *b, struct tbundle *t)
{
        memset(b->d + 124, 0, 12);
        b->d[124] = 0x80;
        b->d[135] = 0x10;
        tar_checksum(b->d);
}
static void edit_size_garbage(struct tbuf *b, struct tbundle *t)
{
        memcpy(b->d + 124, "0000000009x", 11);
        tar_checksum(b->d);
}
static void edit_size_huge(struct tbuf *b, struct tbundle *t)
{
        memcpy(b->d + 124, "77777777777", 11);
        tar_checksum(b->d);
}

TEST(tar_defects)
{
        expect_bundle(edit_checksum, CAP_INVALID_ARGUMENT, "bad checksum");
        expect_bundle(edit_dotdot, CAP_INVALID_ARGUMENT, "\"../x\": unsafe name");
        expect_bundle(edit_absolute, CAP_INVALID_ARGUMENT, "unsafe name");
        expect_bundle(edit_symlink, CAP_INVALID_ARGUMENT, "is a symbolic link");
        expect_bundle(edit_hardlink, CAP_INVALID_ARGUMENT, "is a hard link");
        expect_bundle(edit_pax, CAP_INVALID_ARGUMENT, "pax extended header");
        expect_bundle(edit_gnu_longname, CAP_INVALID_ARGUMENT, "GNU long name");
        expect_bundle(edit_not_first, CAP_INVALID_ARGUMENT,
                      "member \"vmlinuz\" where manifest.json was expected");
        expect_bundle(edit_gnu_magic, CAP_INVALID_ARGUMENT, "not a POSIX ustar header");
        expect_bundle(edit_prefix, CAP_INVALID_ARGUMENT, "directory prefix");
        expect_bundle(edit_size_base256, CAP_INVALID_ARGUMENT, "bad size field");
        expect_bundle(edit_size_garbage, CAP_INVALID_ARGUMENT, "bad size field");
        expect_bundle(edit_size_huge, CAP_INVALID_ARGUMENT, "bytes (1 to 65536 allowed)");
}

/* Bundles assembled member by member. */
static struct tbuf assemble(EVP_PKEY *k, const char *manifest, size_t sig_len, bool with_parts,
                            const char *extra)
{
        struct tbundle t = {.key = k};
        tbundle_defaults(&t);
        const char *m = manifest ? manifest : bundle_manifest_text(&t);
        unsigned char sig[128] = {0};
        key_sign(k, m, strlen(m), sig);
        struct tbuf b = {0};
        tar_member(&b, "manifest.json", m, strlen(m));
        tar_member(&b, "manifest.json.sig", sig, sig_len);
        for (int i = 0; with_parts && i < 3; i++)
                tar_member(&b, tpart_names[i], t.parts[i], t.part_len[i]);
        if (extra)
                tar_member(&b, extra, "x", 1);
        tar_end(&b);
        return b;
}

static void expect_assembled(struct tbuf b, EVP_PKEY *k, enum cap_status status, const char *want)
{
        const char *keys[] = {key_pub_pem(k)};
        struct run r;
        run_bundle(&b, keys, 1, NULL, false, 0, &r);
        expect_fail(&r, status, want);
        msink_free(&r.sink);
        free(b.d);
}

TEST(tar_members)
{
        EVP_PKEY *k = key_new();
        expect_assembled(assemble(k, NULL, 63, true, NULL), k, CAP_INVALID_ARGUMENT,
                         "an Ed25519 signature is 64");
        expect_assembled(assemble(k, NULL, 65, true, NULL), k, CAP_INVALID_ARGUMENT,
                         "manifest.json.sig is 65 bytes");
        expect_assembled(assemble(k, NULL, 64, true, "extra"), k, CAP_INVALID_ARGUMENT,
                         "unexpected member \"extra\" after the last part");
        expect_assembled(assemble(k, NULL, 64, false, NULL), k, CAP_INVALID_ARGUMENT,
                         "member vmlinuz is missing");
        /* a manifest over 64 KiB */
        char *big = malloc(70000);
        memset(big, ' ', 69999);
        big[0] = '{';
        big[69998] = '}';
        big[69999] = '\0';
        expect_assembled(assemble(k, big, 64, true, NULL), k, CAP_INVALID_ARGUMENT,
                         "manifest.json is 69999 bytes");
        free(big);
        /* parts in another order than the manifest's */
        struct tbundle t = {.key = k};
        tbundle_defaults(&t);
        const char *m = bundle_manifest_text(&t);
        unsigned char sig[64];
        key_sign(k, m, strlen(m), sig);
        struct tbuf b = {0};
        tar_member(&b, "manifest.json", m, strlen(m));
        tar_member(&b, "manifest.json.sig", sig, 64);
        tar_member(&b, "initrd", t.parts[1], t.part_len[1]);
        tar_end(&b);
        expect_assembled(b, k, CAP_INVALID_ARGUMENT,
                         "member \"initrd\" where vmlinuz was expected");
        /* a part whose tar size differs from the manifest's */
        b = (struct tbuf){0};
        tar_member(&b, "manifest.json", m, strlen(m));
        tar_member(&b, "manifest.json.sig", sig, 64);
        tar_member(&b, "vmlinuz", "short", 5);
        tar_end(&b);
        expect_assembled(b, k, CAP_INVALID_ARGUMENT, "part vmlinuz is 5 bytes, the manifest says");
        /* non-zero data after the end of the archive */
        b = assemble(k, NULL, 64, true, NULL);
        tbuf_put(&b, "junk", 4);
        expect_assembled(b, k, CAP_INVALID_ARGUMENT, "data after the end of the archive");
        EVP_PKEY_free(k);
}

static void edit_tamper_rootfs(struct tbuf *b, struct tbundle *t)
{
        /* the last part's data starts 2 headers + padding in; flip a byte near the end */
        size_t off = b->n - 10240 + 1; /* inside the record padding? find the last 'A'..'Z' */
        for (off = b->n; off > 0; off--)
                if (b->d[off - 1] >= 'A' && b->d[off - 1] <= 'Z')
                        break;
        b->d[off - 1] ^= 0x20;
}

static void edit_tamper_manifest(struct tbuf *b, struct tbundle *t)
{
        char *v = memmem(b->d, b->n, "0.2.0", 5);
        v[4] = '9';
}

TEST(signature_and_hashes)
{
        expect_bundle(edit_tamper_rootfs, CAP_DATA_LOSS, "part rootfs.sqfs: sha256 mismatch");
        expect_bundle(edit_tamper_manifest, CAP_PERMISSION_DENIED,
                      "does not verify with the trusted key");
        EVP_PKEY *k = key_new(), *other = key_new();
        struct tbundle t = {.key = k};
        struct tbuf b = bundle_build(&t);
        const char *keys[] = {key_pub_pem(other)};
        struct run r;
        run_bundle(&b, keys, 1, NULL, false, 0, &r);
        expect_fail(&r, CAP_PERMISSION_DENIED, "does not verify");
        CHECK(r.sink.opened == 0 && r.sink.capacity_calls == 0);
        msink_free(&r.sink);
        run_bundle(&b, NULL, 0, NULL, false, 0, &r);
        expect_fail(&r, CAP_PERMISSION_DENIED, "trusts no update signing key");
        msink_free(&r.sink);
        /* a bad trusted key is refused when the reader is made */
        const char *bad[] = {key_pub_pem(k), "-----BEGIN PUBLIC KEY-----\nAAAA\n"};
        run_bundle(&b, bad, 2, NULL, false, 0, &r);
        expect_fail(&r, CAP_INVALID_ARGUMENT, "trusted key 1: not a PEM public key");
        /* a hash mismatch aborts the part, never closes it */
        EVP_PKEY_free(other);
        free(b.d);
        EVP_PKEY_free(k);
}

TEST(truncated)
{
        EVP_PKEY *k = key_new();
        struct tbundle t = {.key = k};
        struct tbuf b = bundle_build(&t);
        const char *keys[] = {key_pub_pem(k)};
        /* cut inside the manifest, inside the rootfs, before the end-of-archive blocks */
        size_t cuts[] = {100, 512 * 3, b.n - 10240 - 600, b.n - 10240 - 1024 + 512};
        for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
                struct tbuf cut = {.d = b.d, .n = cuts[i]};
                struct run r;
                run_bundle(&cut, keys, 1, NULL, false, 0, &r);
                expect_fail(&r, CAP_DATA_LOSS, "truncated after");
                msink_free(&r.sink);
        }
        /* the stream ends exactly after the last part: no end-of-archive blocks */
        b.n -= 0;
        struct tbuf b2 = {0};
        tbundle_defaults(&t);
        const char *m = bundle_manifest_text(&t);
        unsigned char sig[64];
        key_sign(k, m, strlen(m), sig);
        tar_member(&b2, "manifest.json", m, strlen(m));
        tar_member(&b2, "manifest.json.sig", sig, 64);
        for (int i = 0; i < 3; i++)
                tar_member(&b2, tpart_names[i], t.parts[i], t.part_len[i]);
        struct run r;
        run_bundle(&b2, keys, 1, NULL, false, 0, &r);
        expect_fail(&r, CAP_DATA_LOSS, "end-of-archive blocks are missing");
        CHECK(r.sink.closed == 3);
        msink_free(&r.sink);
        free(b2.d);
        free(b.d);
        EVP_PKEY_free(k);
}

TEST(preconditions)
{
        EVP_PKEY *k = key_new();
        const char *keys[] = {key_pub_pem(k)};
        struct run r;
        struct tbundle t = {.key = k, .arch = "aarch64"};
        struct tbuf b = bundle_build(&t);
        run_bundle(&b, keys, 1, NULL, false, 0, &r);
        expect_fail(&r, CAP_FAILED_PRECONDITION, "built for aarch64, this capsule is x86_64");
        CHECK(r.sink.opened == 0);
        free(b.d);
        msink_free(&r.sink);

        t = (struct tbundle){.key = k, .version = "0.1.0"};
        b = bundle_build(&t);
        run_bundle(&b, keys, 1, "0.1.0", false, 0, &r);
        expect_fail(&r, CAP_FAILED_PRECONDITION, "is the same as the running 0.1.0");
        msink_free(&r.sink);
        run_bundle(&b, keys, 1, "0.3.0", false, 0, &r);
        expect_fail(&r, CAP_FAILED_PRECONDITION, "older than the running 0.3.0");
        msink_free(&r.sink);
        run_bundle(&b, keys, 1, "0.3.0", true, 0, &r);
        CHECK(r.rc == 0 && r.sink.closed == 3);
        msink_free(&r.sink);
        free(b.d);

        t = (struct tbundle){.key = k, .version = "0.5.0", .min_from = "0.2.0"};
        b = bundle_build(&t);
        run_bundle(&b, keys, 1, "0.1.9", false, 0, &r);
        expect_fail(&r, CAP_FAILED_PRECONDITION, "updates from 0.2.0 or newer");
        msink_free(&r.sink);
        run_bundle(&b, keys, 1, "0.2.0", false, 0, &r);
        CHECK(r.rc == 0);
        msink_free(&r.sink);
        free(b.d);

        /* /perm formats: a newer format older versions still read is fine; one they cannot read
         * is refused before any part is opened (the running version reads format 1 here) */
        t = (struct tbundle){.key = k, .version = "0.6.0",
                             .extra = "\"perm_format\": 3, \"perm_compat\": 1, "};
        b = bundle_build(&t);
        run_bundle(&b, keys, 1, NULL, false, 0, &r);
        CHECK(r.rc == 0 && r.sink.closed == 3);
        msink_free(&r.sink);
        free(b.d);
        t = (struct tbundle){.key = k, .version = "0.6.0",
                             .extra = "\"perm_format\": 2, \"perm_compat\": 2, "};
        b = bundle_build(&t);
        run_bundle(&b, keys, 1, NULL, false, 0, &r);
        expect_fail(&r, CAP_FAILED_PRECONDITION, "reading format 2 or newer");
        CHECK(r.sink.opened == 0);
        msink_free(&r.sink);
        free(b.d);

        /* capacity: refused before any part is opened */
        t = (struct tbundle){.key = k, .version = "0.5.0"};
        b = bundle_build(&t);
        struct msink s = {.capacity = 100};
        struct bundle_sink sink = msink_sink(&s);
        struct bundle_reader_opts o = {.trusted_keys = keys,
                                       .n_trusted_keys = 1,
                                       .arch = "x86_64",
                                       .running_version = "0.2.0",
                                       .sink = &sink};
        struct bundle_reader *rd = NULL;
        struct cap_error err = {0};
        CHECK(bundle_reader_new(&o, &rd, &err) == 0);
        int rc = bundle_reader_feed(rd, b.d, b.n, &err);
        CHECK(rc < 0 && err.status == CAP_RESOURCE_EXHAUSTED);
        CHECK_CONTAINS(err.msg, "part rootfs.sqfs: 10000 bytes do not fit in the 100 bytes");
        CHECK(s.opened == 0);
        /* errors are sticky */
        struct cap_error again = {0};
        CHECK(bundle_reader_feed(rd, "x", 1, &again) == rc && again.status == err.status);
        CHECK(bundle_reader_finish(rd, &again) == rc);
        bundle_reader_free(rd);
        msink_free(&s);

        /* a failing sink write aborts the part */
        s = (struct msink){.fail_write_at = 2};
        sink = msink_sink(&s);
        CHECK(bundle_reader_new(&o, &rd, &err) == 0);
        CHECK(bundle_reader_feed(rd, b.d, b.n, &err) < 0);
        CHECK_CONTAINS(err.msg, "part initrd: write");
        CHECK(s.opened == 2 && s.closed == 1 && s.aborted == 1);
        bundle_reader_free(rd);
        msink_free(&s);

        /* freeing a reader mid-part aborts that part */
        s = (struct msink){0};
        CHECK(bundle_reader_new(&o, &rd, &err) == 0);
        CHECK(bundle_reader_feed(rd, b.d, 512 * 5 + 10, &err) == 0);
        bundle_reader_free(rd);
        CHECK(s.opened == 1 && s.aborted == 1);
        msink_free(&s);
        free(b.d);
        EVP_PKEY_free(k);
}

/* ---- the manifest ---- */

static const char *H = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static char *manifest(const char *top, const char *p0, const char *p1, const char *p2)
{
        static char buf[2048];
        snprintf(buf, sizeof(buf), "{%s\"parts\": [%s%s%s%s%s]}", top, p0, p1 ? ", " : "",
                 p1 ? p1 : "", p2 ? ", " : "", p2 ? p2 : "");
        return buf;
}

static char *part(const char *name, const char *size, const char *sha)
{
        static char buf[6][256];
        static int i;
        i = (i + 1) % 6;
        snprintf(buf[i], sizeof(buf[i]), "{\"name\": \"%s\", \"size\": %s, \"sha256\": \"%s\"}",
                 name, size, sha);
        return buf[i];
}

#define TOP "\"format\": 1, \"version\": \"0.2.0\", \"arch\": \"x86_64\", "

static void expect_manifest(const char *text, const char *want)
{
        struct bundle_manifest m;
        struct cap_error err = {0};
        CHECK(bundle_manifest_parse(text, strlen(text), &m, &err) < 0);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.msg, want);
}

TEST(manifest_parse)
{
        struct bundle_manifest m;
        struct cap_error err = {0};
        const char *ok =
            manifest(TOP "\"min_from_version\": \"0.1.0\", ", part("rootfs.sqfs", "3", H),
                     part("vmlinuz", "1", H), part("initrd", "2", H));
        CHECK(bundle_manifest_parse(ok, strlen(ok), &m, &err) == 0);
        CHECK(m.format == 1 && m.n_parts == 3);
        CHECK_STR_EQ(m.version, "0.2.0");
        CHECK_STR_EQ(m.arch, "x86_64");
        CHECK_STR_EQ(m.min_from_version, "0.1.0");
        CHECK(m.perm_format == 1 && m.perm_compat == 1); /* absent: 1 and 1 */
        CHECK_STR_EQ(m.parts[0].name, "rootfs.sqfs");
        CHECK(m.parts[0].size == 3 && m.parts[0].sha256[0] == 0x01 &&
              m.parts[0].sha256[31] == 0xef);

        char p0[256], p1[256];
        snprintf(p0, sizeof(p0), "%s", part("vmlinuz", "1", H));
        snprintf(p1, sizeof(p1), "%s", part("initrd", "2", H));
        expect_manifest(manifest(TOP "\"colour\": 1, ", p0, p1, part("rootfs.sqfs", "3", H)),
                        "unknown field \"colour\"");
        expect_manifest(manifest(TOP, p0, p1,
                                 "{\"name\": \"rootfs.sqfs\", \"size\": 3, \"sha256\": \"x\", "
                                 "\"mode\": 1}"),
                        "parts[2].sha256");
        expect_manifest(manifest(TOP, p0, p1,
                                 "{\"name\": \"rootfs.sqfs\", \"size\": 3, \"sha256\": \"" /**/
                                 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                                 "\", \"mode\": 1}"),
                        "unknown field \"parts[2].mode\"");
        expect_manifest(manifest(TOP, p0, p1, part("rootfs.sqfs", "3", "0123")),
                        "parts[2].sha256\": expected 64 hex digits");
        expect_manifest(manifest(TOP, p0, p1,
                                 part("rootfs.sqfs", "3",
                                      "0123456789ABCDEF0123456789abcdef0123456789abcdef012345678"
                                      "9abcdef")),
                        "expected 64 lowercase hex digits");
        expect_manifest(manifest(TOP, p0, p1, NULL), "missing part \"rootfs.sqfs\"");
        expect_manifest(manifest(TOP, p0, p1, part("initrd", "2", H)),
                        "parts[2].name\": duplicate part \"initrd\"");
        expect_manifest(manifest(TOP, p0, p1, part("bzImage", "2", H)), "unknown part \"bzImage\"");
        expect_manifest(manifest(TOP, p0, p1, part("rootfs.sqfs", "-1", H)),
                        "parts[2].size\": must be 1 to");
        expect_manifest(manifest(TOP, p0, p1, part("rootfs.sqfs", "0", H)), "must be 1 to");
        expect_manifest(manifest(TOP, p0, p1, part("rootfs.sqfs", "\"3\"", H)),
                        "parts[2].size\": expected an integer");
        expect_manifest(manifest(TOP, p0, p1, part("rootfs.sqfs", "3.0", H)),
                        "expected an integer");
        expect_manifest(manifest(TOP, p0, p1, part("rootfs.sqfs", "8589934592", H)),
                        "must be 1 to 8589934591 bytes");
        expect_manifest(manifest("\"format\": 2, \"version\": \"0.2.0\", \"arch\": \"x86_64\", ",
                                 p0, p1, part("rootfs.sqfs", "3", H)),
                        "unsupported format 2");
        expect_manifest(manifest("\"format\": 1, \"version\": \"v0.2\", \"arch\": \"x86_64\", ", p0,
                                 p1, part("rootfs.sqfs", "3", H)),
                        "field \"version\": \"v0.2\" is not MAJOR.MINOR.PATCH");
        expect_manifest(manifest("\"format\": 1, \"version\": \"0.2.0\", \"arch\": \"X 86\", ", p0,
                                 p1, part("rootfs.sqfs", "3", H)),
                        "field \"arch\"");
        expect_manifest(
            manifest("\"format\": 1, \"arch\": \"x86_64\", ", p0, p1, part("rootfs.sqfs", "3", H)),
            "missing field \"version\"");
        expect_manifest(
            manifest(TOP "\"min_from_version\": \"1\", ", p0, p1, part("rootfs.sqfs", "3", H)),
            "field \"min_from_version\"");
        expect_manifest(
            manifest(TOP "\"version\": \"0.3.0\", ", p0, p1, part("rootfs.sqfs", "3", H)),
            "a field is given twice");
        expect_manifest(manifest(TOP "\"perm_format\": 1, \"perm_compat\": 2, ", p0, p1,
                                 part("rootfs.sqfs", "3", H)),
                        "field \"perm_compat\": 2 is above perm_format 1");
        expect_manifest(
            manifest(TOP "\"perm_format\": \"2\", ", p0, p1, part("rootfs.sqfs", "3", H)),
            "field \"perm_format\": expected an integer");
        expect_manifest(
            manifest(TOP "\"perm_compat\": 0, ", p0, p1, part("rootfs.sqfs", "3", H)),
            "field \"perm_compat\": 0 is not between 1 and 1000000");
        expect_manifest("{\"format\": 1,}", "invalid JSON");
        expect_manifest("{\"format\": 1} {}", "invalid JSON");
        expect_manifest("{\"format\": 1", "unexpected end");
        expect_manifest("[1, 2]", "expected a JSON object");
        expect_manifest("{\"format\": 1, \"version\": \"0.2\\u0000.0\"}", "NUL");
        expect_manifest("", "empty");
        expect_manifest("{\"parts\": 3, \"format\": 1, \"version\": \"0.2.0\", \"arch\": \"x\"}",
                        "field \"parts\": expected a list");
        expect_manifest(manifest(TOP, "{\"name\": \"vmlinuz\", \"size\": 1}", NULL, NULL),
                        "missing field \"parts[0].sha256\"");
}

TEST(version_compare)
{
        static const struct {
                const char *a, *b;
                int cmp;
        } table[] = {
            {"0.1.0", "0.1.0", 0},
            {"0.1.0", "0.2.0", -1},
            {"0.10.0", "0.9.0", 1},
            {"1.0.0", "0.99.99", 1},
            {"0.2.0-rc.1", "0.2.0", -1},
            {"0.2.0-rc.1", "0.2.0-rc.2", -1},
            {"0.2.0-rc.10", "0.2.0-rc.9", 1},
            {"0.2.0-alpha", "0.2.0-beta", -1},
            {"0.2.0-1", "0.2.0-alpha", -1},
            {"0.2.0-rc", "0.2.0-rc.1", -1},
            {"0.2.0", "0.1.9-rc.1", 1},
            {"999999999.0.0", "1.0.0", 1},
        };
        for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
                int cmp = 7, back = 7;
                CHECK(bundle_version_compare(table[i].a, table[i].b, &cmp) == 0);
                CHECK(bundle_version_compare(table[i].b, table[i].a, &back) == 0);
                if (cmp != table[i].cmp || back != -table[i].cmp)
                        fprintf(stderr, "  FAIL %s vs %s: %d (expected %d)\n", table[i].a,
                                table[i].b, cmp, table[i].cmp);
                CHECK(cmp == table[i].cmp && back == -table[i].cmp);
        }
        static const char *const bad[] = {
            "",           "1",           "1.2",    "1.2.3.4",  "01.2.3",         "1.2.3-",
            "1.2.3-a..b", "1.2.3+build", "v1.2.3", "1.2.3-01", "1234567890.0.0", " 1.2.3",
            "1.2.3-a_b"};
        int cmp;
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                CHECK(!bundle_version_is_valid(bad[i]));
                CHECK(bundle_version_compare(bad[i], "1.0.0", &cmp) == -EINVAL);
        }
        CHECK(bundle_version_is_valid("0.0.0"));
        CHECK(bundle_version_is_valid("1.2.3-rc.1.x-y"));
}

TEST(key_check)
{
        struct cap_error err = {0};
        EVP_PKEY *k = key_new();
        CHECK(bundle_key_check(key_pub_pem(k), "key", &err) == 0);
        EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        CHECK(bundle_key_check(key_pub_pem(ec), "trusted key 3", &err) < 0);
        CHECK_CONTAINS(err.msg, "trusted key 3: a EC key, not Ed25519");
        CHECK(bundle_key_check("hello", "k", &err) < 0);
        CHECK_CONTAINS(err.msg, "k: not a PEM public key");
        char two[600];
        snprintf(two, sizeof(two), "%s%s", key_pub_pem(k), key_pub_pem(k));
        CHECK(bundle_key_check(two, "k", &err) < 0);
        CHECK_CONTAINS(err.msg, "more than one key");
        EVP_PKEY_free(ec);
        EVP_PKEY_free(k);
}

int main(void)
{
        srand(42);
        RUN(good_bundle_any_chunking);
        RUN(tar_defects);
        RUN(tar_members);
        RUN(signature_and_hashes);
        RUN(truncated);
        RUN(preconditions);
        RUN(manifest_parse);
        RUN(version_compare);
        RUN(key_check);
        return test_summary();
}
