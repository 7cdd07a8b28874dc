/* libFuzzer target for image archives (images/archive.c) and references (images/reference.c).
 * The input is a tar (possibly compressed) handed to archive_plan_open through a memfd, with small
 * limits; oracles that must hold for every accepted input:
 *   - pass 2 (archive_plan_write into a sink that re-verifies digests) succeeds: what pass 1
 *     accepted is consistent, and the plan writes each blob once, children before parents;
 *   - every image name is a normalised reference (normalising it again changes nothing);
 * and for the input's first line as a reference: a normalised reference is a fixed point.
 * Any broken oracle aborts. Built with -fsanitize=fuzzer when -Dfuzz=true; otherwise
 * fuzz-replay.c drives it over tests/fuzz/corpus/archive as a unit test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "images/archive.h"
#include "images/reference.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-archive: oracle failed: %s: ", #cond);               \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fputc('\n', stderr);                                                       \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

struct vsink {
        struct blob_hash h;
        char seen[64][72];
        size_t n;
        uint64_t expect;
};

static int v_begin(void *ud, const struct blob_desc *d, bool *exists, struct cap_error *err)
{
        struct vsink *v = ud;
        *exists = false;
        for (size_t i = 0; i < v->n; i++)
                ORACLE(strcmp(v->seen[i], d->digest) != 0, "blob %s written twice", d->digest);
        v->expect = d->size;
        return blob_hash_init(&v->h, err);
}

static int v_write(void *ud, const void *data, size_t len, struct cap_error *err)
{
        blob_hash_update(&((struct vsink *)ud)->h, data, len);
        return 0;
}

static int v_commit(void *ud, const struct blob_desc *d, struct cap_error *err)
{
        struct vsink *v = ud;
        char got[72];
        uint64_t size = v->h.size;
        blob_hash_final(&v->h, got);
        ORACLE(strcmp(got, d->digest) == 0 && size == d->size, "committed %s but content is %s",
               d->digest, got);
        /* A manifest's references were written before it. */
        for (size_t i = 0; i < d->n_labels; i++)
                if (strncmp(d->labels[i].key, "containerd.io/gc.ref.content.", 29) == 0) {
                        bool found = false;
                        for (size_t k = 0; k < v->n; k++)
                                found |= strcmp(v->seen[k], d->labels[i].value) == 0;
                        ORACLE(found, "%s written before its child %s", d->digest,
                               d->labels[i].value);
                }
        if (v->n < 64)
                snprintf(v->seen[v->n++], 72, "%s", d->digest);
        return 0;
}

static void v_abort(void *ud)
{
        blob_hash_free(&((struct vsink *)ud)->h);
}

static const struct blob_sink_ops v_ops = {v_begin, v_write, v_commit, v_abort};

static void check_reference(const uint8_t *data, size_t size)
{
        char line[600];
        size_t n = 0;
        while (n < size && n < sizeof(line) - 1 && data[n] != '\n' && data[n] != '\0') {
                line[n] = (char)data[n];
                n++;
        }
        line[n] = '\0';
        char *a = NULL, *b = NULL;
        struct cap_error err = {0};
        if (image_ref_normalize(line, &a, &err) == 0) {
                ORACLE(image_ref_normalize(a, &b, &err) == 0, "\"%s\" -> \"%s\" does not parse: %s",
                       line, a, err.msg);
                ORACLE(strcmp(a, b) == 0, "\"%s\" -> \"%s\" -> \"%s\"", line, a, b);
        }
        free(a);
        free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        check_reference(data, size);
        int fd = memfd_create("fuzz-archive", MFD_CLOEXEC);
        if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
                if (fd >= 0)
                        close(fd);
                return 0;
        }
        struct archive_limits lim = {.max_entry_bytes = 1 << 20,
                                     .max_inflated_bytes = 8 << 20,
                                     .max_meta_bytes = 1 << 20,
                                     .max_entries = 256};
        struct archive_plan *p = NULL;
        struct cap_error err = {0};
        if (archive_plan_open(fd, NULL, &lim, &p, &err) == 0) {
                for (size_t i = 0; i < archive_plan_n_images(p); i++) {
                        const struct archive_image *im = archive_plan_image(p, i);
                        char *again = NULL;
                        ORACLE(image_ref_normalize(im->name, &again, &err) == 0 &&
                                   strcmp(again, im->name) == 0,
                               "image name %s is not normalised", im->name);
                        free(again);
                        ORACLE(image_digest_valid(im->digest), "image digest %s", im->digest);
                }
                struct vsink v = {0};
                struct blob_sink s = {&v_ops, &v};
                ORACLE(archive_plan_write(p, fd, &s, &err) == 0,
                       "pass 2 failed after pass 1 accepted: %s", err.msg);
                archive_plan_free(p);
        }
        close(fd);
        return 0;
}
