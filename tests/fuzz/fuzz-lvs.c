/* libFuzzer target for the `lvs --reportformat json` parser (src/capsuled/volume/lvs.c) that both
 * LVM backends read lvm2's reports with. The input, as a C string, goes to lvs_parse; oracles:
 * a failure sets a message and returns no rows; every accepted row has a non-empty lv_name and
 * non-NULL strings; lv_size parsed means has_size. Each tag of an accepted row is found again by
 * lvs_tag_listed. Any broken oracle aborts. Built with -fsanitize=fuzzer when -Dfuzz=true;
 * otherwise fuzz-replay.c drives it over tests/fuzz/corpus/lvs as a unit test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "volume/lvs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-lvs: oracle failed: %s: ", #cond);                   \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fputc('\n', stderr);                                                       \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static void check_tags(const char *tags)
{
        char *copy = strdup(tags);
        if (!copy)
                abort();
        char *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
                ORACLE(lvs_tag_listed(tags, t), "tag \"%s\" of \"%s\" not found", t, tags);
        free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';
        struct lvs_row *rows = NULL;
        size_t n = 0;
        struct cap_error err = {0};
        if (lvs_parse(text, &rows, &n, &err) < 0) {
                ORACLE(err.code < 0 && err.msg[0], "failure without a message");
                ORACLE(rows == NULL && n == 0, "rows returned with a failure");
        } else {
                for (size_t i = 0; i < n; i++) {
                        ORACLE(rows[i].lv_name && rows[i].lv_name[0], "row %zu without a name", i);
                        ORACLE(rows[i].lv_tags && rows[i].pool_lv && rows[i].origin,
                               "row %zu: a NULL field", i);
                        ORACLE(rows[i].has_size || rows[i].size_bytes == 0,
                               "row %zu: a size without lv_size", i);
                        check_tags(rows[i].lv_tags);
                }
                lvs_rows_free(rows, n);
        }
        free(text);
        return 0;
}
