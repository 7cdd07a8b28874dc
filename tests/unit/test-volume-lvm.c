/* Unit tests for the LVM thin volume backend's pure half (src/capsuled/volume/lvm.c): parsing
 * `lvs --reportformat json` output, size arguments and the vol-NAME naming rule. */
#include <errno.h>
#include <stdlib.h>

#include "test.h"
#include "volume/volume.h"

/* Real output of `lvs --reportformat json --units b --nosuffix -o
 * lv_name,lv_size,data_percent,lv_tags,pool_lv capsule` (lvm2 2.03), abridged. */
static const char *report =
    "  {\n"
    "      \"report\": [\n"
    "          {\n"
    "              \"lv\": [\n"
    "                  {\"lv_name\":\"perm\", \"lv_size\":\"1073741824\", \"data_percent\":\"\","
    " \"lv_tags\":\"\", \"pool_lv\":\"\"},\n"
    "                  {\"lv_name\":\"pool\", \"lv_size\":\"2382364672\", "
    "\"data_percent\":\"1.25\","
    " \"lv_tags\":\"\", \"pool_lv\":\"\"},\n"
    "                  {\"lv_name\":\"vol-data\", \"lv_size\":\"67108864\", "
    "\"data_percent\":\"12.50\","
    " \"lv_tags\":\"capsule_owner_0a1b2c\", \"pool_lv\":\"pool\"},\n"
    "                  {\"lv_name\":\"vol-half\", \"lv_size\":\"134217728B\", "
    "\"data_percent\":\"0.00\","
    " \"lv_tags\":\"other,capsule_incomplete\", \"pool_lv\":\"pool\"}\n"
    "              ]\n"
    "          }\n"
    "      ]\n"
    "      ,\n"
    "      \"log\": [\n"
    "      ]\n"
    "  }\n";

TEST(parse_lvs)
{
        struct cap_error err = {0};
        struct volume_lvm_lv *lvs = NULL;
        size_t n = 0;
        CHECK(volume_lvm_parse_lvs(report, &lvs, &n, &err) == 0);
        CHECK(n == 4);
        if (n != 4)
                return;
        CHECK_STR_EQ(lvs[0].lv_name, "perm");
        CHECK(lvs[0].size_bytes == 1073741824ull);
        CHECK(lvs[0].data_percent == 0);
        CHECK_STR_EQ(lvs[0].pool_lv, "");
        CHECK(!lvs[0].incomplete);
        CHECK_STR_EQ(lvs[2].lv_name, "vol-data");
        CHECK(lvs[2].size_bytes == 64ull << 20);
        CHECK(lvs[2].data_percent > 12.49 && lvs[2].data_percent < 12.51);
        CHECK_STR_EQ(lvs[2].pool_lv, "pool");
        CHECK(!lvs[2].incomplete);
        CHECK_STR_EQ(lvs[2].owner, "0a1b2c");
        CHECK(lvs[0].owner == NULL);
        CHECK(lvs[3].owner == NULL); /* "other" is not an owner tag */
        CHECK(lvs[3].size_bytes == 128ull << 20); /* the "B" suffix without --nosuffix */
        CHECK(lvs[3].incomplete);
        volume_lvm_lvs_free(lvs, n);
}

TEST(parse_lvs_empty_and_bad)
{
        struct cap_error err = {0};
        struct volume_lvm_lv *lvs = NULL;
        size_t n = 7;
        CHECK(volume_lvm_parse_lvs("{\"report\":[{\"lv\":[]}]}", &lvs, &n, &err) == 0);
        CHECK(n == 0);
        volume_lvm_lvs_free(lvs, n);
        CHECK(volume_lvm_parse_lvs("", &lvs, &n, &err) == -EINVAL);
        CHECK(err.status == CAP_INTERNAL);
        CHECK(volume_lvm_parse_lvs("{\"report\":{}}", &lvs, &n, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "report");
        CHECK(volume_lvm_parse_lvs("{\"report\":[{\"lv\":[{\"lv_size\":\"1\"}]}]}", &lvs, &n,
                                   &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "lv_name");
        CHECK(volume_lvm_parse_lvs(
                  "{\"report\":[{\"lv\":[{\"lv_name\":\"x\",\"lv_size\":\"1.5g\"}]}]}", &lvs, &n,
                  &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "bad lv_size");
        CHECK(lvs == NULL && n == 0);
}

TEST(size_arg)
{
        char buf[32];
        CHECK(volume_lvm_size_arg(64ull << 20, buf, sizeof(buf)) == 0);
        CHECK_STR_EQ(buf, "67108864b");
        CHECK(volume_lvm_size_arg(VOLUME_MAX_BYTES, buf, sizeof(buf)) == 0);
        CHECK_STR_EQ(buf, "17592186044416b");
        CHECK(volume_lvm_size_arg(VOLUME_MAX_BYTES, buf, 5) == -ENOSPC);
}

TEST(names)
{
        CHECK_STR_EQ(volume_lvm_volume_name("vol-data"), "data");
        CHECK_STR_EQ(volume_lvm_volume_name("vol-vol-x"), "vol-x");
        CHECK(volume_lvm_volume_name("vol-") == NULL);
        CHECK(volume_lvm_volume_name("perm") == NULL);
        CHECK(volume_lvm_volume_name("pool") == NULL);
        CHECK(volume_lvm_volume_name("pool_tdata") == NULL);
}

int main(void)
{
        RUN(parse_lvs);
        RUN(parse_lvs_empty_and_bad);
        RUN(size_arg);
        RUN(names);
        return test_summary();
}
