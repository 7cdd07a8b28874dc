/* libFuzzer target for image references (images/reference.c): image_ref_parse and
 * image_ref_normalize on the input as a C string, with oracles for every accepted reference:
 *   - parse + image_ref_string gives what image_ref_normalize gives;
 *   - the normalised string parses again and normalises to itself (a fixed point), with the
 *     same domain, repository, tag and digest;
 *   - image_ref_name is the normalised string's prefix, and a digest is a valid one.
 * Any broken oracle aborts. Built with -fsanitize=fuzzer when -Dfuzz=true; otherwise
 * fuzz-replay.c drives it over tests/fuzz/corpus/reference as a unit test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "images/reference.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-reference: oracle failed: %s: ", #cond);             \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fputc('\n', stderr);                                                       \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static int str_eq(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check(const char *s)
{
        struct cap_error err = {0};
        struct image_ref r, again;
        char *norm = NULL, *norm2 = NULL;
        int rn = image_ref_normalize(s, &norm, &err);
        if (image_ref_parse(s, &r, &err) < 0) {
                ORACLE(rn < 0, "normalize accepts what parse rejects: \"%s\"", s);
                ORACLE(err.code < 0 && err.msg[0], "failure without a message");
                return;
        }
        ORACLE(rn == 0 && norm, "normalize rejects what parse accepts: \"%s\": %s", s, err.msg);
        ORACLE(r.domain && r.repository && (r.tag || r.digest), "missing parts: \"%s\"", s);
        char *str = image_ref_string(&r);
        ORACLE(str && strcmp(str, norm) == 0, "string \"%s\" vs normalize \"%s\"", str, norm);
        char *name = image_ref_name(&r);
        ORACLE(name && strncmp(norm, name, strlen(name)) == 0, "name \"%s\" of \"%s\"", name, norm);
        ORACLE(!r.digest || image_digest_valid(r.digest), "digest \"%s\"", r.digest);

        ORACLE(image_ref_parse(norm, &again, &err) == 0, "\"%s\" -> \"%s\" rejected: %s", s, norm,
               err.msg);
        ORACLE(str_eq(r.domain, again.domain) && str_eq(r.repository, again.repository) &&
                   str_eq(r.tag, again.tag) && str_eq(r.digest, again.digest),
               "\"%s\" -> \"%s\" parses differently", s, norm);
        ORACLE(image_ref_normalize(norm, &norm2, &err) == 0 && strcmp(norm, norm2) == 0,
               "\"%s\" -> \"%s\" -> \"%s\"", s, norm, norm2 ? norm2 : "(error)");
        free(norm2);
        free(name);
        free(str);
        free(norm);
        image_ref_clear(&again);
        image_ref_clear(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s = malloc(size + 1);
        if (!s)
                return 0;
        memcpy(s, data, size);
        s[size] = '\0';
        check(s);
        free(s);
        return 0;
}
