/* libFuzzer target for capsule-guest's kernel command line parser (src/capsule-guest/cmdline.c):
 * any bytes parse without crashing, with oracles: counts stay in bounds, strings are terminated,
 * an accepted ip has a prefix <= 32 and formats back to text that parses to the same address, and
 * parsing is deterministic. Replayed over tests/fuzz/corpus/guest-cmdline without -Dfuzz=true. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond)                                                                               \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-guest-cmdline: oracle failed: %s\n", #cond);         \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct guest_cmdline a, b;
        guest_cmdline_parse((const char *)data, size, &a);
        guest_cmdline_parse((const char *)data, size, &b);
        ORACLE(memcmp(&a, &b, sizeof(a)) == 0);
        ORACLE(a.n_dns <= GUEST_CMDLINE_MAX_DNS);
        ORACLE(a.n_warnings <= GUEST_CMDLINE_MAX_WARNINGS);
        ORACLE(memchr(a.hostname, '\0', sizeof(a.hostname)) != NULL);
        for (size_t i = 0; i < a.n_warnings; i++)
                ORACLE(memchr(a.warnings[i], '\0', sizeof(a.warnings[i])) != NULL);
        if (a.has_ip) {
                ORACLE(a.prefix <= 32);
                char text[64], line[80];
                guest_cmdline_ip_string(&a, text, sizeof(text));
                int n = snprintf(line, sizeof(line), "capsule.ip=%s", text);
                guest_cmdline_parse(line, (size_t)n, &b);
                ORACLE(b.has_ip && b.ip.s_addr == a.ip.s_addr && b.prefix == a.prefix);
        }
        return 0;
}
