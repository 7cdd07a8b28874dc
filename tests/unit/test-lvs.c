/* Unit tests for the shared `lvs --reportformat json` parser (src/capsuled/volume/lvs.c): the
 * fields of both backends' reports, absent fields, the accepted lv_size forms, and the errors. */
#include <errno.h>
#include <stdlib.h>

#include "test.h"
#include "volume/lvs.h"

/* Two report sections, the second without "lv" (lvm2 adds "pv"/"vg" ones when asked): the fields
 * volume/lvm.c asks for in the first rows, microvm/rootdisk_lvm.c's in the last. */
static const char *report =
    "{\"report\":[{\"lv\":["
    "{\"lv_name\":\"perm\",\"lv_size\":\"1073741824\",\"data_percent\":\"\",\"lv_tags\":\"\","
    "\"pool_lv\":\"\"},"
    "{\"lv_name\":\"vol-a\",\"lv_size\":\"67108864B\",\"data_percent\":\"12.50\","
    "\"lv_tags\":\"capsule_owner_x,capsule_incomplete\",\"pool_lv\":\"pool\"},"
    "{\"lv_name\":\"vmroot-web\",\"lv_size\":\"71303168\",\"lv_tags\":\"\","
    "\"origin\":\"vmimg-k\",\"pool_lv\":\"pool\"},"
    "{\"lv_name\":\"bare\"}"
    "]},{\"pv\":[]}],\"log\":[]}";

TEST(parse)
{
        struct cap_error err = {0};
        struct lvs_row *rows = NULL;
        size_t n = 0;
        CHECK(lvs_parse(report, &rows, &n, &err) == 0);
        CHECK(n == 4);
        if (n != 4)
                return;
        CHECK_STR_EQ(rows[0].lv_name, "perm");
        CHECK(rows[0].has_size && rows[0].size_bytes == 1ull << 30);
        CHECK(rows[0].data_percent == 0);
        CHECK_STR_EQ(rows[0].origin, "");
        CHECK(rows[1].size_bytes == 64ull << 20); /* the "B" suffix */
        CHECK(rows[1].data_percent > 12.49 && rows[1].data_percent < 12.51);
        CHECK_STR_EQ(rows[1].pool_lv, "pool");
        CHECK(lvs_tag_listed(rows[1].lv_tags, "capsule_incomplete"));
        CHECK(lvs_tag_listed(rows[1].lv_tags, "capsule_owner_x"));
        CHECK(!lvs_tag_listed(rows[1].lv_tags, "capsule_owner"));
        CHECK_STR_EQ(rows[2].origin, "vmimg-k");
        CHECK(rows[2].size_bytes == 68ull << 20);
        CHECK_STR_EQ(rows[3].lv_name, "bare"); /* absent fields: "" and no size */
        CHECK(!rows[3].has_size && rows[3].size_bytes == 0);
        CHECK_STR_EQ(rows[3].lv_tags, "");
        CHECK_STR_EQ(rows[3].pool_lv, "");
        lvs_rows_free(rows, n);
}

TEST(errors)
{
        struct cap_error err = {0};
        struct lvs_row *rows = NULL;
        size_t n = 5;
        CHECK(lvs_parse("{\"report\":[{\"lv\":[]}]}", &rows, &n, &err) == 0);
        CHECK(n == 0 && rows == NULL);
        CHECK(lvs_parse("", &rows, &n, &err) == -EINVAL);
        CHECK(err.status == CAP_INTERNAL);
        CHECK_CONTAINS(err.msg, "no \"report\" array");
        CHECK(lvs_parse("{\"report\":{}}", &rows, &n, &err) == -EINVAL);
        CHECK(lvs_parse("{\"report\":[{\"lv\":[{\"lv_name\":\"a\"},{\"lv_size\":\"1\"}]}]}", &rows,
                        &n, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "without lv_name");
        CHECK(rows == NULL && n == 0); /* the good first row is not returned */
        const char *bad[] = {"1.5g", "", "B", "12k", "99999999999999999999999"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char json[128];
                snprintf(json, sizeof(json),
                         "{\"report\":[{\"lv\":[{\"lv_name\":\"x\",\"lv_size\":\"%s\"}]}]}", bad[i]);
                CHECK(lvs_parse(json, &rows, &n, &err) == -EINVAL);
                CHECK_CONTAINS(err.msg, "x: bad lv_size");
        }
}

TEST(tags)
{
        CHECK(lvs_tag_listed("a,b,c", "b"));
        CHECK(lvs_tag_listed("b", "b"));
        CHECK(!lvs_tag_listed("ab,bc", "b"));
        CHECK(!lvs_tag_listed("", "b"));
        CHECK(!lvs_tag_listed(NULL, "b"));
}

int main(void)
{
        RUN(parse);
        RUN(errors);
        RUN(tags);
        return test_summary();
}
