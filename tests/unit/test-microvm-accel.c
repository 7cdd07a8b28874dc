/* `accel: auto` (src/capsuled/microvm/accel.c) without booting anything: the per-boot cache file
 * (hit, another boot, garbage), and the decision when /dev/kvm is missing or not openable. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "microvm/accel.h"
#include "test.h"

static void write_text(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        if (!f)
                return;
        fputs(text, f);
        fclose(f);
}

TEST(cache_roundtrip)
{
        char dir[] = "/tmp/test-microvm-accel-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        char path[128];
        snprintf(path, sizeof(path), "%s/run/capsule/accel", dir); /* parent dirs created */
        enum vm_accel a = VM_ACCEL_KVM;
        char why[256];
        CHECK(vm_accel_cache_read(path, "boot-1", &a, why, sizeof(why)) == -ENOENT);
        CHECK(vm_accel_cache_write(path, "boot-1", VM_ACCEL_TCG, "no /dev/kvm\tsecond\nline",
                                   NULL) == 0);
        CHECK(vm_accel_cache_read(path, "boot-1", &a, why, sizeof(why)) == 0);
        CHECK(a == VM_ACCEL_TCG);
        CHECK_STR_EQ(why, "no /dev/kvm second line");
        CHECK(vm_accel_cache_read(path, "boot-2", &a, why, sizeof(why)) == -ESTALE);
        CHECK(vm_accel_cache_write(path, "boot-2", VM_ACCEL_KVM, NULL, NULL) == 0);
        CHECK(vm_accel_cache_read(path, "boot-2", &a, why, sizeof(why)) == 0);
        CHECK(a == VM_ACCEL_KVM);
        CHECK_STR_EQ(why, "");
        static const char *const garbage[] = {"",
                                              "kvm\n",
                                              "boot_id=boot-2\n",
                                              "boot_id=boot-2\nmaybe\n",
                                              "boot_id=\nkvm\n",
                                              "boot_id=boot-2\ntcg\t\n"};
        for (size_t i = 0; i < ARRAY_SIZE(garbage); i++) {
                write_text(path, garbage[i]);
                CHECK(vm_accel_cache_read(path, "boot-2", &a, why, sizeof(why)) == -EBADMSG);
        }
        unlink(path);
        snprintf(path, sizeof(path), "%s/run/capsule", dir);
        rmdir(path);
        snprintf(path, sizeof(path), "%s/run", dir);
        rmdir(path);
        rmdir(dir);
}

TEST(probe_decisions_without_kvm)
{
        char dir[] = "/tmp/test-microvm-accel-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        char cache[128], dev[128], boot_id[64];
        snprintf(cache, sizeof(cache), "%s/accel", dir);
        snprintf(dev, sizeof(dev), "%s/kvm", dir);
        CHECK(vm_boot_id(boot_id, sizeof(boot_id), NULL) == 0);
        struct vm_accel_probe_opts o = {.kernel = "/nonexistent/vmlinuz",
                                        .initrd = "/nonexistent/initrd",
                                        .cache_file = cache,
                                        .kvm_device = dev};
        enum vm_accel a = VM_ACCEL_KVM;
        char why[256];
        bool cached = true;
        CHECK(vm_accel_probe_ex(&o, &a, why, sizeof(why), &cached, NULL) == 0);
        CHECK(a == VM_ACCEL_TCG && !cached);
        char want[160];
        snprintf(want, sizeof(want), "no %s", dev);
        CHECK_STR_EQ(why, want);
        /* the answer is cached for this boot; the second call reads it */
        CHECK(vm_accel_probe_ex(&o, &a, why, sizeof(why), &cached, NULL) == 0);
        CHECK(a == VM_ACCEL_TCG && cached);
        CHECK_STR_EQ(why, want);
        /* an answer from another boot is not trusted */
        write_text(cache, "boot_id=some-other-boot\nkvm\n");
        CHECK(vm_accel_probe_ex(&o, &a, why, sizeof(why), &cached, NULL) == 0);
        CHECK(a == VM_ACCEL_TCG && !cached);
        /* garbage: probe again and rewrite */
        write_text(cache, "\x01\x02garbage");
        CHECK(vm_accel_probe_ex(&o, &a, why, sizeof(why), &cached, NULL) == 0);
        CHECK(a == VM_ACCEL_TCG && !cached);
        CHECK(vm_accel_cache_read(cache, boot_id, &a, why, sizeof(why)) == 0);
        /* a device node that does not open read-write (a directory stands in for it) */
        unlink(cache);
        CHECK(mkdir(dev, 0700) == 0);
        CHECK(vm_accel_probe_ex(&o, &a, why, sizeof(why), &cached, NULL) == 0);
        CHECK(a == VM_ACCEL_TCG);
        CHECK_CONTAINS(why, "Is a directory");
        rmdir(dev);
        unlink(cache);
        rmdir(dir);
}

/* Runs vm_accel_probe_main with argv, capturing what it prints into out. */
static int run_main(char **argv, char *out, size_t len)
{
        int argc = 0;
        while (argv[argc])
                argc++;
        FILE *tmp = tmpfile();
        CHECK(tmp != NULL);
        fflush(stdout);
        int saved = dup(1);
        dup2(fileno(tmp), 1);
        int rc = vm_accel_probe_main(argc, argv);
        fflush(stdout);
        dup2(saved, 1);
        close(saved);
        rewind(tmp);
        size_t n = fread(out, 1, len - 1, tmp);
        out[n] = '\0';
        fclose(tmp);
        return rc;
}

TEST(cli)
{
        char dir[] = "/tmp/test-microvm-accel-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        char cache[128], boot_id[64], text[256], out[512];
        snprintf(cache, sizeof(cache), "%s/accel", dir);
        CHECK(vm_boot_id(boot_id, sizeof(boot_id), NULL) == 0);
        /* answered from the cache: no kernel is booted */
        snprintf(text, sizeof(text), "boot_id=%s\ntcg\tno /dev/kvm\n", boot_id);
        write_text(cache, text);
        char *plain[] = {"probe-accel", "--kernel", "/k", "--initrd", "/i", "--cache", cache, NULL};
        CHECK(run_main(plain, out, sizeof(out)) == 0);
        CHECK_STR_EQ(out, "tcg: no /dev/kvm\n");
        char *json[] = {"probe-accel", "--kernel", "/k",     "--initrd", "/i",
                        "--cache",     cache,      "--json", NULL};
        CHECK(run_main(json, out, sizeof(out)) == 0);
        CHECK_CONTAINS(out, "\"accel\":\"tcg\"");
        CHECK_CONTAINS(out, "\"reason\":\"no /dev/kvm\"");
        CHECK_CONTAINS(out, "\"cached\":true");
        snprintf(text, sizeof(text), "boot_id=%s\nkvm\n", boot_id);
        write_text(cache, text);
        CHECK(run_main(plain, out, sizeof(out)) == 0);
        CHECK_STR_EQ(out, "kvm\n");
        char *bad[] = {"probe-accel", "--kernel", "/k", NULL};
        CHECK(run_main(bad, out, sizeof(out)) == 2);
        char *badt[] = {"probe-accel", "--kernel", "/k", "--initrd", "/i", "--timeout", "x", NULL};
        CHECK(run_main(badt, out, sizeof(out)) == 2);
        unlink(cache);
        rmdir(dir);
}

int main(void)
{
        RUN(cache_roundtrip);
        RUN(probe_decisions_without_kvm);
        RUN(cli);
        return test_summary();
}
