/* libFuzzer target for the update bundle reader (src/capsuled/update/bundle.c), both halves:
 *   - bundle_manifest_parse on the input: an accepted manifest has a valid version, a known
 *     architecture name, exactly the three parts once each, sizes 1..BUNDLE_PART_MAX, and its
 *     sha256 bytes match its hex; a refused one has a message;
 *   - the streaming tar reader on the same input, split into chunks whose sizes come from the
 *     input's first bytes: it never crashes, the sink sees open/close/abort balanced, nothing is
 *     opened without a verified signature (the trusted key is fixed and nobody can sign the input
 *     with it), and finish either succeeds or gives a message.
 * Any broken oracle aborts. Built with -fsanitize=fuzzer when -Dfuzz=true; otherwise fuzz-replay.c
 * drives it over tests/fuzz/corpus/bundle-manifest as a unit test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "update/bundle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-bundle-manifest: oracle failed: %s: ", #cond);       \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fputc('\n', stderr);                                                       \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

/* An Ed25519 public key whose private half is not kept anywhere. */
#define TRUSTED                                                                                    \
        "-----BEGIN PUBLIC "                                                                       \
        "KEY-----\nMCowBQYDK2VwAyEAV+Ql46cmqa42XhcSWJhWTygOD7xyto3bhn0v2D0gYvc=\n"                 \
        "-----END PUBLIC KEY-----\n"

struct fsink {
        int opened, closed, aborted;
};

static int f_open(void *ctx, const struct bundle_part *p, struct cap_error *err)
{
        ((struct fsink *)ctx)->opened++;
        return 0;
}
static int f_write(void *ctx, const struct bundle_part *p, const void *b, size_t n,
                   struct cap_error *err)
{
        return 0;
}
static int f_close(void *ctx, const struct bundle_part *p, struct cap_error *err)
{
        ((struct fsink *)ctx)->closed++;
        return 0;
}
static void f_abort(void *ctx, const struct bundle_part *p)
{
        ((struct fsink *)ctx)->aborted++;
}

static void check_manifest(const uint8_t *data, size_t size)
{
        struct bundle_manifest m;
        struct cap_error err = {0};
        if (bundle_manifest_parse((const char *)data, size, &m, &err) < 0) {
                ORACLE(err.code < 0 && err.msg[0], "failure without a message");
                return;
        }
        ORACLE(m.format == BUNDLE_FORMAT, "format %d", m.format);
        ORACLE(bundle_version_is_valid(m.version), "version \"%s\"", m.version);
        ORACLE(!m.min_from_version[0] || bundle_version_is_valid(m.min_from_version),
               "min_from_version \"%s\"", m.min_from_version);
        ORACLE(m.arch[0], "empty arch");
        ORACLE(m.n_parts == BUNDLE_N_PARTS, "%zu parts", m.n_parts);
        for (size_t i = 0; i < m.n_parts; i++) {
                ORACLE(m.parts[i].size >= 1 && m.parts[i].size <= BUNDLE_PART_MAX, "size");
                for (size_t j = 0; j < i; j++)
                        ORACLE(strcmp(m.parts[i].name, m.parts[j].name) != 0, "duplicate");
                char hex[65];
                for (int k = 0; k < 32; k++)
                        snprintf(hex + 2 * k, 3, "%02x", m.parts[i].sha256[k]);
                ORACLE(strcmp(hex, m.parts[i].sha256_hex) == 0, "sha256 %s", hex);
        }
        int cmp = 2;
        ORACLE(bundle_version_compare(m.version, m.version, &cmp) == 0 && cmp == 0, "compare");
}

static void check_stream(const uint8_t *data, size_t size)
{
        static const char *const keys[] = {TRUSTED};
        struct fsink s = {0};
        struct bundle_sink sink = {
            .open = f_open, .write = f_write, .close = f_close, .abort = f_abort, .ctx = &s};
        struct bundle_reader_opts o = {.trusted_keys = keys,
                                       .n_trusted_keys = 1,
                                       .arch = "x86_64",
                                       .running_version = "0.1.0",
                                       .sink = &sink};
        struct bundle_reader *r = NULL;
        struct cap_error err = {0};
        ORACLE(bundle_reader_new(&o, &r, &err) == 0, "reader: %s", err.msg);
        size_t step = size ? 1 + data[0] % 97 : 1;
        int rc = 0;
        for (size_t off = 0; off < size && rc == 0;) {
                size_t n = step < size - off ? step : size - off;
                rc = bundle_reader_feed(r, data + off, n, &err);
                off += n;
                step = 1 + (step * 31 + n) % 1500;
        }
        if (rc == 0)
                rc = bundle_reader_finish(r, &err);
        ORACLE(rc < 0 && err.msg[0], "an unsigned input was accepted");
        ORACLE(bundle_reader_manifest(r) == NULL, "manifest verified without a signature");
        bundle_reader_free(r);
        ORACLE(s.opened == 0 && s.closed == 0 && s.aborted == 0, "sink used (%d opened)", s.opened);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        check_manifest(data, size);
        check_stream(data, size);
        return 0;
}
