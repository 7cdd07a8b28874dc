/* Unit tests for the root disk backends' pure half (src/capsuled/microvm/rootdisk*.c): the LV
 * names of caches and VM disks, size arguments, `lvs --reportformat json` parsing, which LVs the
 * start-up cleanup removes, and the cache sizing rules. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "microvm/rootdisk.h"
#include "test.h"

#define KEY "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

TEST(names)
{
        char b[128];
        CHECK(vm_rootdisk_lvm_cache_lv(KEY, b, sizeof(b)) == 0);
        CHECK_STR_EQ(b, "vmimg-" KEY);
        CHECK_STR_EQ(vm_rootdisk_lvm_key_of(b), KEY);
        CHECK(vm_rootdisk_lvm_vm_of(b) == NULL);
        CHECK(vm_rootdisk_lvm_vm_lv("web-1", b, sizeof(b)) == 0);
        CHECK_STR_EQ(b, "vmroot-web-1");
        CHECK_STR_EQ(vm_rootdisk_lvm_vm_of(b), "web-1");
        CHECK(vm_rootdisk_lvm_key_of(b) == NULL);
        /* bad keys and names make no LV name */
        CHECK(vm_rootdisk_lvm_cache_lv("ABCDEF0123456", b, sizeof(b)) == -EINVAL);
        CHECK(vm_rootdisk_lvm_cache_lv("abc", b, sizeof(b)) == -EINVAL);
        CHECK(vm_rootdisk_lvm_cache_lv(KEY "0", b, sizeof(b)) == -EINVAL); /* 65 digits */
        CHECK(vm_rootdisk_lvm_vm_lv("", b, sizeof(b)) == -EINVAL);
        CHECK(vm_rootdisk_lvm_vm_lv("Web", b, sizeof(b)) == -EINVAL);
        CHECK(vm_rootdisk_lvm_vm_lv("a/b", b, sizeof(b)) == -EINVAL);
        CHECK(vm_rootdisk_lvm_vm_lv("-x", b, sizeof(b)) == -EINVAL);
        CHECK(vm_rootdisk_lvm_vm_lv("web", b, 8) == -ENOSPC);
        /* other LVs of the VG are not ours */
        CHECK(vm_rootdisk_lvm_vm_of("vol-data") == NULL);
        CHECK(vm_rootdisk_lvm_vm_of("vmroot-") == NULL);
        CHECK(vm_rootdisk_lvm_key_of("vmimg-xyz") == NULL);
        CHECK(vm_rootdisk_lvm_key_of("pool") == NULL);
        CHECK(vm_rootdisk_key_ok("0123456789ab"));
        CHECK(!vm_rootdisk_key_ok("0123456789a"));
        CHECK(!vm_rootdisk_key_ok(NULL));
}

TEST(size_arg)
{
        char b[32];
        CHECK(vm_rootdisk_lvm_size_arg(64ull << 20, b, sizeof(b)) == 0);
        CHECK_STR_EQ(b, "67108864b");
        CHECK(vm_rootdisk_lvm_size_arg((64ull << 20) + 1, b, sizeof(b)) == 0);
        CHECK_STR_EQ(b, "68157440b"); /* up to whole MiB */
        CHECK(vm_rootdisk_lvm_size_arg(1, b, sizeof(b)) == 0);
        CHECK_STR_EQ(b, "1048576b");
        CHECK(vm_rootdisk_lvm_size_arg(0, b, sizeof(b)) == -EINVAL);
        CHECK(vm_rootdisk_lvm_size_arg(UINT64_MAX, b, sizeof(b)) == -EINVAL);
        CHECK(vm_rootdisk_lvm_size_arg(1ull << 40, b, 4) == -ENOSPC);
}

/* `lvs --reportformat json --units b --nosuffix -o lv_name,lv_size,lv_tags,origin,pool_lv
 * capsule` (lvm2 2.03) on a Capsule with a volume, a cache, a half-made cache and two VM disks. */
static const char *report =
    "  {\n"
    "      \"report\": [\n"
    "          {\n"
    "              \"lv\": [\n"
    "                  {\"lv_name\":\"perm\", \"lv_size\":\"1073741824\", \"lv_tags\":\"\","
    " \"origin\":\"\", \"pool_lv\":\"\"},\n"
    "                  {\"lv_name\":\"pool\", \"lv_size\":\"2382364672\", \"lv_tags\":\"\","
    " \"origin\":\"\", \"pool_lv\":\"\"},\n"
    "                  {\"lv_name\":\"vol-data\", \"lv_size\":\"67108864\","
    " \"lv_tags\":\"capsule_incomplete\", \"origin\":\"\", \"pool_lv\":\"pool\"},\n"
    "                  {\"lv_name\":\"vmimg-" KEY "\", \"lv_size\":\"71303168\", \"lv_tags\":\"\","
    " \"origin\":\"\", \"pool_lv\":\"pool\"},\n"
    "                  {\"lv_name\":\"vmimg-aaaaaaaaaaaa\", \"lv_size\":\"71303168B\","
    " \"lv_tags\":\"x,capsule_incomplete\", \"origin\":\"\", \"pool_lv\":\"pool\"},\n"
    "                  {\"lv_name\":\"vmroot-web\", \"lv_size\":\"268435456\", \"lv_tags\":\"\","
    " \"origin\":\"vmimg-" KEY "\", \"pool_lv\":\"pool\"},\n"
    "                  {\"lv_name\":\"vmroot-gone\", \"lv_size\":\"71303168\", \"lv_tags\":\"\","
    " \"origin\":\"vmimg-" KEY "\", \"pool_lv\":\"pool\"}\n"
    "              ]\n"
    "          }\n"
    "      ]\n"
    "  }\n";

static bool only_web_runs(const char *name, void *ud)
{
        (*(int *)ud)++;
        return strcmp(name, "web") == 0;
}

TEST(parse_and_cleanup)
{
        struct cap_error err = {0};
        struct vm_rootdisk_lv *lvs = NULL;
        size_t n = 0;
        CHECK(vm_rootdisk_lvm_parse_lvs(report, &lvs, &n, &err) == 0);
        CHECK(n == 7);
        if (n != 7)
                return;
        CHECK_STR_EQ(lvs[3].name, "vmimg-" KEY);
        CHECK(lvs[3].size_bytes == 68ull << 20);
        CHECK(!lvs[3].incomplete);
        CHECK(lvs[4].incomplete && lvs[4].size_bytes == 68ull << 20);
        CHECK_STR_EQ(lvs[5].origin, "vmimg-" KEY);
        CHECK_STR_EQ(lvs[5].pool, "pool");
        CHECK_STR_EQ(lvs[0].pool, "");
        int asked = 0;
        /* perm, pool and volumes are never touched, even a half-made volume (volume/lvm.c's) */
        for (size_t i = 0; i < 3; i++)
                CHECK(vm_rootdisk_lvm_discard_reason(&lvs[i], only_web_runs, &asked) == NULL);
        CHECK(vm_rootdisk_lvm_discard_reason(&lvs[3], only_web_runs, &asked) == NULL);
        CHECK_CONTAINS(vm_rootdisk_lvm_discard_reason(&lvs[4], only_web_runs, &asked),
                       "did not finish");
        CHECK(vm_rootdisk_lvm_discard_reason(&lvs[5], only_web_runs, &asked) == NULL);
        CHECK_CONTAINS(vm_rootdisk_lvm_discard_reason(&lvs[6], only_web_runs, &asked),
                       "does not run");
        CHECK(asked == 2); /* asked about VM disks only */
        CHECK_CONTAINS(vm_rootdisk_lvm_discard_reason(&lvs[5], NULL, NULL), "does not run");
        free(lvs);
}

TEST(parse_bad)
{
        struct cap_error err = {0};
        struct vm_rootdisk_lv *lvs = NULL;
        size_t n = 9;
        CHECK(vm_rootdisk_lvm_parse_lvs("{\"report\":[{\"lv\":[]}]}", &lvs, &n, &err) == 0);
        CHECK(n == 0);
        free(lvs);
        CHECK(vm_rootdisk_lvm_parse_lvs("not json", &lvs, &n, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "no \"report\" array");
        CHECK(vm_rootdisk_lvm_parse_lvs("{\"report\":[{\"lv\":[{\"lv_size\":\"1\"}]}]}", &lvs, &n,
                                        &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "without lv_name");
        CHECK(vm_rootdisk_lvm_parse_lvs(
                  "{\"report\":[{\"lv\":[{\"lv_name\":\"vmroot-a\",\"lv_size\":\"12k\"}]}]}", &lvs,
                  &n, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "vmroot-a: bad lv_size \"12k\"");
}

TEST(sizes)
{
        const uint64_t mib = 1ull << 20;
        /* 10 MiB of files: 13 MiB + 64 MiB */
        CHECK(vm_rootdisk_image_size(10 * mib, 0) == 77 * mib);
        CHECK(vm_rootdisk_image_size(10 * mib, 512 * mib) == 512 * mib);
        CHECK(vm_rootdisk_image_size(1, 0) == 65 * mib); /* rounded up to MiB */
        /* inodes: the image's files twice over plus 4096, at least one per 16 KiB */
        CHECK(vm_rootdisk_inodes(100, 64 * mib) == 4296);
        CHECK(vm_rootdisk_inodes(100, 1024 * mib) == 65536);
}

int main(void)
{
        RUN(names);
        RUN(size_arg);
        RUN(parse_and_cleanup);
        RUN(parse_bad);
        RUN(sizes);
        return test_summary();
}
