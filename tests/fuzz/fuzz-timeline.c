/* libFuzzer target for the boot timeline parser (src/common/timeline.c): any bytes parse or fail
 * without crashing, with oracles: at most TIMELINE_MAX phases, each name terminated, printable and
 * non-empty, each end at or after its start; what parsed writes back (timeline_write's format)
 * to text that parses to the same phases. Replayed over tests/fuzz/corpus/timeline. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond)                                                                               \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-timeline: oracle failed: %s\n", #cond);              \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct timeline t = {0};
        struct cap_error err = {0};
        int r = timeline_parse((const char *)data, size, &t, &err);
        ORACLE(t.n <= TIMELINE_MAX);
        if (r < 0) {
                ORACLE(err.msg[0] != '\0');
                return 0;
        }
        static char text[TIMELINE_MAX * 80];
        size_t off = 0;
        for (size_t i = 0; i < t.n; i++) {
                const struct timeline_phase *p = &t.phases[i];
                size_t len = strnlen(p->name, sizeof(p->name));
                ORACLE(len > 0 && len < sizeof(p->name));
                for (size_t k = 0; k < len; k++)
                        ORACLE((unsigned char)p->name[k] >= 0x20 && p->name[k] != 0x7f);
                ORACLE(p->start_ms >= 0 && p->end_ms >= p->start_ms);
                off += (size_t)snprintf(text + off, sizeof(text) - off, "%lld %lld %s\n",
                                        (long long)p->start_ms, (long long)p->end_ms, p->name);
                ORACLE(off < sizeof(text));
        }
        struct timeline again = {0};
        ORACLE(timeline_parse(text, off, &again, &err) == 0);
        ORACLE(again.n == t.n && memcmp(again.phases, t.phases, sizeof(t.phases[0]) * t.n) == 0);
        return 0;
}
