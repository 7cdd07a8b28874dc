/* Unit tests for the root disk backends' pure half (src/capsuled/microvm/rootdisk*.c): the LV
 * names of caches and VM disks, size arguments, `lvs --reportformat json` parsing, which LVs the
 * start-up cleanup removes, and the cache sizing rules; the cache KEY of a VM disk's origin; the
 * file backend's cache removal and its crash leftover on a temp directory. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

TEST(origin_key)
{
        char k[80];
        CHECK(vm_rootdisk_origin_key("/var/lib/capsule/vm-images/" KEY ".ext4", k, sizeof(k)) == 0);
        CHECK_STR_EQ(k, KEY);
        CHECK(vm_rootdisk_origin_key("capsule/vmimg-" KEY, k, sizeof(k)) == 0);
        CHECK_STR_EQ(k, KEY);
        CHECK(vm_rootdisk_origin_key(KEY ".ext4", k, sizeof(k)) == 0);
        CHECK(vm_rootdisk_origin_key("/x/" KEY ".ext4.tmp.rm", k, sizeof(k)) == -EINVAL);
        CHECK(vm_rootdisk_origin_key("/x/" KEY ".ext4.tmp.12", k, sizeof(k)) == -EINVAL);
        CHECK(vm_rootdisk_origin_key("capsule/vmroot-web", k, sizeof(k)) == -EINVAL);
        CHECK(vm_rootdisk_origin_key("/x/NOTHEX.ext4", k, sizeof(k)) == -EINVAL);
        CHECK(vm_rootdisk_origin_key("/x/.ext4", k, sizeof(k)) == -EINVAL);
        CHECK(vm_rootdisk_origin_key("", k, sizeof(k)) == -EINVAL);
        CHECK(vm_rootdisk_origin_key("/x/" KEY ".ext4", k, 10) == -EINVAL); /* buf too short */
}

static int count_key(const char *key, uint64_t bytes, void *ud)
{
        CHECK_STR_EQ(key, KEY);
        CHECK(bytes == 4096);
        (*(int *)ud)++;
        return 0;
}

static void touch(const char *path, off_t size)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK(fd >= 0);
        CHECK(ftruncate(fd, size) == 0);
        close(fd);
}

/* The file backend: a cache is listed, removed (gone, its temp name too), a second remove is a
 * no-op; a crash between the two steps leaves KEY.ext4.tmp.rm, which is no cache and which
 * cleanup removes. */
TEST(file_cache_remove)
{
        char tmpl[] = "/tmp/test-rootdisk-XXXXXX", images[PATH_MAX], vms[PATH_MAX], p[PATH_MAX];
        CHECK(mkdtemp(tmpl) != NULL);
        snprintf(images, sizeof(images), "%s/vm-images", tmpl);
        snprintf(vms, sizeof(vms), "%s/vms", tmpl);
        struct vm_rootdisk *rd = NULL;
        struct cap_error err = {0};
        CHECK(vm_rootdisk_file_open(images, vms, &rd, &err) == 0);
        snprintf(p, sizeof(p), "%s/%s.ext4", images, KEY);
        touch(p, 4096);
        char half[PATH_MAX + 16];
        snprintf(half, sizeof(half), "%s.tmp.77", p); /* a build in progress: not listed */
        touch(half, 1);
        int n = 0;
        CHECK(rd->ops->cache_list(rd, count_key, &n, &err) == 0);
        CHECK(n == 1);
        char what[300];
        CHECK(rd->ops->cache_remove(rd, KEY, what, sizeof(what), &err) == 0);
        CHECK_STR_EQ(what, p);
        CHECK(access(p, F_OK) < 0);
        snprintf(half, sizeof(half), "%s.tmp.rm", p);
        CHECK(access(half, F_OK) < 0);
        uint64_t bytes = 0;
        CHECK(rd->ops->cache_find(rd, KEY, &bytes, &err) == 0);
        CHECK(rd->ops->cache_remove(rd, KEY, what, sizeof(what), &err) == 0); /* none: 0 */
        /* what a crash after step 1 leaves: not a cache, removed at the next start */
        touch(half, 4096);
        n = 0;
        CHECK(rd->ops->cache_list(rd, count_key, &n, &err) == 0);
        CHECK(n == 0);
        CHECK(rd->ops->cache_find(rd, KEY, &bytes, &err) == 0);
        CHECK(rd->ops->cleanup(rd, NULL, NULL, &err) == 0);
        CHECK(access(half, F_OK) < 0);
        snprintf(half, sizeof(half), "%s.tmp.77", p);
        CHECK(access(half, F_OK) < 0);
        vm_rootdisk_free(rd);
        CHECK(rmdir(images) == 0);
        CHECK(rmdir(tmpl) == 0);
}

int main(void)
{
        RUN(names);
        RUN(size_arg);
        RUN(parse_and_cleanup);
        RUN(parse_bad);
        RUN(sizes);
        RUN(origin_key);
        RUN(file_cache_remove);
        return test_summary();
}
