/* The one parser of `lvs --reportformat json --units b --nosuffix -o FIELDS` output, shared by the
 * LVM volume backend (volume/lvm.c) and the microVM LVM root disk backend
 * (microvm/rootdisk_lvm.c), which ask for different FIELDS of the same report. Pure (json-c only):
 * unit-tested in tests/unit/test-lvs.c and fuzzed by tests/fuzz/fuzz-lvs.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* One row ("lv" array entry). Strings are malloc'd; a field the report did not carry is "". */
struct lvs_row {
        char *lv_name; /* never empty */
        char *lv_tags; /* comma-separated */
        char *pool_lv; /* "" when not a thin LV */
        char *origin;  /* "" when not a snapshot */
        uint64_t size_bytes;
        bool has_size;       /* lv_size was reported (and parsed) */
        double data_percent; /* thin LVs: share allocated in the pool; 0 when not reported */
};

/* Parses every "lv" array of every "report" entry. INTERNAL errors name what is wrong: no
 * "report" array, an entry without lv_name, a bad lv_size ("1234" and "1234B" are accepted).
 * On error nothing is returned (*out NULL, *n 0). */
int lvs_parse(const char *json, struct lvs_row **out, size_t *n, struct cap_error *err);
void lvs_rows_free(struct lvs_row *rows, size_t n);

/* Whether tag is one of the comma-separated tags (NULL: none). */
bool lvs_tag_listed(const char *tags, const char *tag);
