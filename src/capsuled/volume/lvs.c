/* See lvs.h. lvm2 has no stable C API, so both LVM backends read `lvs --reportformat json`: this
 * file turns that text into rows once, and each backend keeps only the fields it asked for. */
#include "lvs.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

/* "1234", "1234B" (--units b without --nosuffix) -> 1234; "" or junk -> -EINVAL. */
static int parse_bytes(const char *s, uint64_t *out)
{
        if (!s || !*s)
                return -EINVAL;
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || (*end && strcmp(end, "B") != 0))
                return -EINVAL;
        *out = v;
        return 0;
}

static const char *json_str(struct json_object *o, const char *key)
{
        struct json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

bool lvs_tag_listed(const char *tags, const char *tag)
{
        size_t tl = strlen(tag);
        for (const char *p = tags; p && *p;) {
                const char *comma = strchr(p, ',');
                size_t l = comma ? (size_t)(comma - p) : strlen(p);
                if (l == tl && strncmp(p, tag, l) == 0)
                        return true;
                p = comma ? comma + 1 : NULL;
        }
        return false;
}

static void row_free(struct lvs_row *r)
{
        free(r->lv_name);
        free(r->lv_tags);
        free(r->pool_lv);
        free(r->origin);
}

void lvs_rows_free(struct lvs_row *rows, size_t n)
{
        for (size_t i = 0; i < n; i++)
                row_free(&rows[i]);
        free(rows);
}

static char *dup_or_empty(const char *s)
{
        return strdup(s ? s : "");
}

static int parse_row(struct json_object *o, struct lvs_row *row, struct cap_error *err)
{
        *row = (struct lvs_row){0};
        const char *name = json_str(o, "lv_name");
        if (!name || !*name)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "lvs: an entry without lv_name");
        const char *size = json_str(o, "lv_size");
        if (size && parse_bytes(size, &row->size_bytes) < 0)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "lvs: %s: bad lv_size \"%s\"",
                                     name, size);
        row->has_size = size != NULL;
        const char *pct = json_str(o, "data_percent");
        row->data_percent = pct && *pct ? strtod(pct, NULL) : 0;
        row->lv_name = strdup(name);
        row->lv_tags = dup_or_empty(json_str(o, "lv_tags"));
        row->pool_lv = dup_or_empty(json_str(o, "pool_lv"));
        row->origin = dup_or_empty(json_str(o, "origin"));
        if (!row->lv_name || !row->lv_tags || !row->pool_lv || !row->origin) {
                row_free(row);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        return 0;
}

int lvs_parse(const char *json, struct lvs_row **out, size_t *n, struct cap_error *err)
{
        *out = NULL;
        *n = 0;
        struct json_object *root = json_tokener_parse(json);
        struct json_object *report = NULL;
        if (!root || !json_object_object_get_ex(root, "report", &report) ||
            !json_object_is_type(report, json_type_array)) {
                json_object_put(root);
                return cap_error_set(err, -EINVAL, CAP_INTERNAL,
                                     "lvs: unexpected output (no \"report\" array)");
        }
        struct lvs_row *rows = NULL;
        size_t count = 0;
        int r = 0;
        for (size_t i = 0; r == 0 && i < json_object_array_length(report); i++) {
                struct json_object *arr = NULL;
                if (!json_object_object_get_ex(json_object_array_get_idx(report, i), "lv", &arr) ||
                    !json_object_is_type(arr, json_type_array))
                        continue;
                for (size_t j = 0; r == 0 && j < json_object_array_length(arr); j++) {
                        struct lvs_row *nr = realloc(rows, (count + 1) * sizeof(*rows));
                        if (!nr) {
                                r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                                break;
                        }
                        rows = nr;
                        if ((r = parse_row(json_object_array_get_idx(arr, j), &rows[count], err)) == 0)
                                count++;
                }
        }
        json_object_put(root);
        if (r < 0) {
                lvs_rows_free(rows, count);
                return r;
        }
        *out = rows;
        *n = count;
        return 0;
}
