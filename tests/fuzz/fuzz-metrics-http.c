/* libFuzzer target for the metrics endpoint's request router (metrics_http_route in
 * src/capsuled/metrics/http.c), which reads bytes from the network: any input is routed without
 * crashing, to one of 200/400/404/405, deterministically; 200 only for a GET of /metrics.
 * Replayed over tests/fuzz/corpus/metrics-http without -Dfuzz=true. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond)                                                                               \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-metrics-http: oracle failed: %s\n", #cond);          \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size > METRICS_HTTP_MAX_REQUEST)
                return 0;
        /* the server hands the router its buffer as is: no terminating NUL */
        char *buf = malloc(size ? size : 1);
        if (!buf)
                return 0;
        memcpy(buf, data, size);
        int a = metrics_http_route(buf, size);
        int b = metrics_http_route(buf, size);
        ORACLE(a == b);
        ORACLE(a == 200 || a == 400 || a == 404 || a == 405);
        if (a == 200)
                ORACLE(size >= 13 && memcmp(buf, "GET /metrics", 12) == 0 &&
                       (buf[12] == ' ' || buf[12] == '?'));
        free(buf);
        return 0;
}
