/* libFuzzer target for the CAPSULE1 run config decoder (src/capsule-guest/runconfig.c): any
 * bytes decode or fail with a message; every accepted config validates, encodes again, and the
 * re-encoded frame decodes to the same bytes (the encoding is a fixed point). Replayed over
 * tests/fuzz/corpus/guest-runconfig without -Dfuzz=true. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond, msg)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-guest-runconfig: oracle failed: %s: %s\n", #cond,   \
                                msg);                                                              \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct cap_error err = {0};
        RunConfig *rc = NULL;
        if (runconfig_decode(data, size, "fuzz", &rc, &err) < 0) {
                ORACLE(err.code < 0 && err.msg[0] && rc == NULL, "failure without a message");
                return 0;
        }
        ORACLE(runconfig_validate(rc, &err) == 0, err.msg);
        uint8_t *b1 = NULL, *b2 = NULL;
        size_t n1 = 0, n2 = 0;
        ORACLE(runconfig_encode(rc, &b1, &n1, &err) == 0, err.msg);
        ORACLE(n1 % RUNCONFIG_SECTOR == 0, "not padded");
        RunConfig *back = NULL;
        ORACLE(runconfig_decode(b1, n1, "encoded", &back, &err) == 0, err.msg);
        ORACLE(runconfig_encode(back, &b2, &n2, &err) == 0, err.msg);
        ORACLE(n1 == n2 && memcmp(b1, b2, n1) == 0, "not a fixed point");
        free(b1);
        free(b2);
        runconfig_free(back);
        runconfig_free(rc);
        return 0;
}
