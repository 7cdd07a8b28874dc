/* Unit tests for the volume layer's pure rules (src/capsuled/volume/validate.c) and for the
 * spawn helper (src/capsuled/volume/spawn.c) that runs mkfs/resize2fs/CNI plugins. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "volume/spawn.h"
#include "volume/volume.h"

static void put_le32(uint8_t *sb, size_t off, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                sb[off + i] = (uint8_t)(v >> (8 * i));
}

TEST(ext4_superblock)
{
        uint8_t sb[1024];
        memset(sb, 0, sizeof(sb));
        uint64_t bytes = 0;
        CHECK(volume_ext4_fs_bytes(sb, &bytes) == -EINVAL); /* no magic */
        put_le32(sb, 0x38, 0xEF53);
        put_le32(sb, 0x4, 16384); /* blocks */
        put_le32(sb, 0x18, 2);    /* 1024 << 2 = 4 KiB blocks */
        CHECK(volume_ext4_fs_bytes(sb, &bytes) == 0 && bytes == 64ull << 20);
        put_le32(sb, 0x60, 0x80); /* 64bit: high half of the block count counts */
        put_le32(sb, 0x150, 1);
        CHECK(volume_ext4_fs_bytes(sb, &bytes) == 0 && bytes == ((1ull << 32) + 16384) * 4096);
        put_le32(sb, 0x18, 7); /* 128 KiB blocks: not ext4 */
        CHECK(volume_ext4_fs_bytes(sb, &bytes) == -EINVAL);
}

TEST(sizes)
{
        struct cap_error err = {0};
        CHECK(volume_check_size("size_bytes", 16ull << 20, &err) == 0);
        CHECK(volume_check_size("size_bytes", 1ull << 30, &err) == 0);
        CHECK(volume_check_size("size_bytes", VOLUME_MAX_BYTES, &err) == 0);
        CHECK(volume_check_size("size_bytes", 0, &err) == -EINVAL);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        CHECK_STR_EQ(err.msg, "size_bytes: required (e.g. 1Gi)");
        CHECK(volume_check_size("size_bytes", (16ull << 20) - 1, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "size_bytes: ");
        CHECK_CONTAINS(err.msg, "below the minimum of 16Mi");
        CHECK(volume_check_size("size_bytes", VOLUME_MAX_BYTES + 1, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "above the maximum of 16Ti");
}

static char seen[256];

static void collect(void *ud, const char *vol, const char *wl)
{
        (void)ud;
        size_t l = strlen(seen);
        snprintf(seen + l, sizeof(seen) - l, "%s>%s;", vol, wl);
}

TEST(attach_list)
{
        seen[0] = 0;
        CHECK(volume_parse_attach_list("data:web,logs:web,data:worker", collect, NULL) == 3);
        CHECK_STR_EQ(seen, "data>web;logs>web;data>worker;");
        seen[0] = 0;
        CHECK(volume_parse_attach_list("", collect, NULL) == 0);
        CHECK(volume_parse_attach_list("nocolon", collect, NULL) == -EINVAL);
        CHECK(volume_parse_attach_list("Bad:web", collect, NULL) == -EINVAL);
        CHECK(volume_parse_attach_list("ok:../x", collect, NULL) == -EINVAL);
}

TEST(spawn)
{
        struct cap_error err = {0};
        struct spawn_result res;
        const char *cat[] = {"cat", NULL};
        struct spawn_opts o = {.input = "hello\n", .input_len = 6};
        CHECK(spawn_run(cat, &o, &res, &err) == 0);
        CHECK(res.exit_code == 0);
        CHECK_STR_EQ(res.out, "hello\n");
        spawn_result_free(&res);
        /* exit codes, stderr captured and trimmed */
        const char *ls[] = {"ls", "/nonexistent-capsule-path", NULL};
        CHECK(spawn_run(ls, NULL, &res, &err) == 0);
        CHECK(res.exit_code != 0);
        CHECK_CONTAINS(res.errout, "nonexistent-capsule-path");
        CHECK(res.errout[strlen(res.errout) - 1] != '\n');
        spawn_result_free(&res);
        CHECK(spawn_check(ls, NULL, &err) < 0);
        CHECK_CONTAINS(err.msg, "ls: exit 2: ");
        /* the environment is ours, not the parent's */
        const char *env[] = {"CAPSULE_X=42", NULL};
        const char *envp_argv[] = {"env", NULL};
        struct spawn_opts eo = {.envp = env};
        CHECK(spawn_run(envp_argv, &eo, &res, &err) == 0);
        CHECK_STR_EQ(res.out, "CAPSULE_X=42\n");
        spawn_result_free(&res);
        /* missing program, timeout */
        const char *missing[] = {"capsule-no-such-program", NULL};
        CHECK(spawn_run(missing, NULL, &res, &err) == -ENOENT);
        CHECK_CONTAINS(err.msg, "not installed");
        spawn_result_free(&res);
        const char *sleep_argv[] = {"sleep", "5", NULL};
        struct spawn_opts to = {.timeout_ms = 200};
        CHECK(spawn_run(sleep_argv, &to, &res, &err) == -ETIMEDOUT);
        CHECK(err.status == CAP_DEADLINE_EXCEEDED);
        spawn_result_free(&res);
        /* a child that does not read its stdin does not hang or kill us */
        const char *tru[] = {"true", NULL};
        static char big[1 << 20];
        memset(big, 'x', sizeof(big));
        struct spawn_opts bo = {.input = big, .input_len = sizeof(big)};
        CHECK(spawn_run(tru, &bo, &res, &err) == 0);
        CHECK(res.exit_code == 0);
        spawn_result_free(&res);
}

int main(void)
{
        signal(SIGPIPE, SIG_IGN);
        RUN(sizes);
        RUN(ext4_superblock);
        RUN(attach_list);
        RUN(spawn);
        return test_summary();
}
