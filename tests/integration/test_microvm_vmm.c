/* The microVM VMM layer against a real QEMU under TCG (src/capsuled/microvm/): root disk cache and
 * clones, vm_start -> marker on the console, adoption from a fresh process, vm_list, vm_stop,
 * vm_remove, a guest that exits, a missing kernel, and the accel probe (answer, cache, timing).
 * Boots the Debian cloud kernel (env CAPSULE_KERNEL, else SOURCE/out/cache/kernel-*-cloud-amd64)
 * with a tiny busybox initramfs written here; exits 77 when QEMU, the kernel or busybox is absent.
 * usage: test-microvm-vmm SOURCE_DIR */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/cleanup.h"
#include "microvm/accel.h"
#include "microvm/rootdisk.h"
#include "microvm/tools.h"
#include "microvm/vm.h"
#include "test.h"
#include "volume/spawn.h"

#define MARKER "CAPSULE-TEST-MARKER"
#define BOOT_TIMEOUT_MS 90000

struct ctx {
        char tmp[64];
        char qemu[PATH_MAX];
        char kernel[PATH_MAX];
        char initrd[PATH_MAX];
        char cache_img[PATH_MAX];
        char disk1[PATH_MAX];
        char runcfg[PATH_MAX];
        bool have_modules;
};

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void skip(const char *why)
{
        printf("SKIP: %s\n", why);
        exit(77);
}

/* ---- a newc cpio writer for the test initramfs ---- */

static void cpio_entry(FILE *f, unsigned ino, const char *name, unsigned mode, unsigned rmaj,
                       unsigned rmin, const void *data, size_t len)
{
        size_t namesize = strlen(name) + 1;
        fprintf(f, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ino, mode, 0, 0, 1,
                0, (unsigned)len, 0, 0, rmaj, rmin, (unsigned)namesize, 0);
        fwrite(name, 1, namesize, f);
        for (size_t pad = (4 - (110 + namesize) % 4) % 4; pad; pad--)
                fputc(0, f);
        if (len)
                fwrite(data, 1, len, f);
        for (size_t pad = (4 - len % 4) % 4; pad; pad--)
                fputc(0, f);
}

static const char init_script[] =
    "#!/bin/busybox sh\n"
    "B=/bin/busybox\n"
    "$B mount -t proc proc /proc\n"
    "$B mount -t sysfs sys /sys\n"
    "CMD=\" $($B cat /proc/cmdline) \"\n"
    "case \"$CMD\" in *' capsule.probe=1 '*) $B echo CAPSULE-PROBE-OK; $B poweroff -f;; esac\n"
    "for m in virtio_ring virtio virtio_mmio virtio_blk; do\n"
    "  [ -f /m/$m.ko ] && $B insmod /m/$m.ko\n"
    "done\n"
    "$B echo \"" MARKER " disks: $($B ls /sys/block | $B tr '\\n' ' ')\"\n"
    "case \"$CMD\" in *' capsule.test=exit '*) $B reboot -f;; esac\n"
    "exec $B sleep 3600\n";

static int read_whole(const char *path, char **data, size_t *len)
{
        _cleanup_fclose_ FILE *in = fopen(path, "re");
        if (!in)
                return -errno;
        struct stat st;
        if (fstat(fileno(in), &st) < 0)
                return -errno;
        _cleanup_free_ char *buf = malloc((size_t)st.st_size + 1);
        if (!buf || fread(buf, 1, (size_t)st.st_size, in) != (size_t)st.st_size)
                return -EIO;
        *data = TAKE_PTR(buf);
        *len = (size_t)st.st_size;
        return 0;
}

/* The kernel's modules: KERNEL/../../lib/modules/VER (an extracted package) or /lib/modules/VER. */
static void modules_dir(const char *kernel, char *out, size_t len)
{
        const char *base = strrchr(kernel, '/');
        base = base ? base + 1 : kernel;
        const char *ver = strncmp(base, "vmlinuz-", 8) == 0 ? base + 8 : "";
        snprintf(out, len, "%.*s/../lib/modules/%s", (int)(base - kernel), kernel, ver);
        if (access(out, F_OK) < 0)
                snprintf(out, len, "/lib/modules/%s", ver);
}

static const char *const guest_modules[] = {"drivers/virtio/virtio_ring", "drivers/virtio/virtio",
                                            "drivers/virtio/virtio_mmio",
                                            "drivers/block/virtio_blk"};

/* Adds the virtio modules the test guest loads to see its disks; false when one is missing. */
static bool cpio_add_modules(FILE *f, unsigned *ino, const char *kernel)
{
        char dir[PATH_MAX];
        modules_dir(kernel, dir, sizeof(dir));
        cpio_entry(f, (*ino)++, "m", 040755, 0, 0, NULL, 0);
        for (size_t i = 0; i < ARRAY_SIZE(guest_modules); i++) {
                char path[PATH_MAX + 64], name[64];
                snprintf(path, sizeof(path), "%s/kernel/%s.ko", dir, guest_modules[i]);
                _cleanup_free_ char *data = NULL;
                size_t len = 0;
                if (read_whole(path, &data, &len) < 0) {
                        printf("  no %s: the guest will not see its disks\n", path);
                        return false;
                }
                snprintf(name, sizeof(name), "m/%s.ko", strrchr(guest_modules[i], '/') + 1);
                cpio_entry(f, (*ino)++, name, 0100644, 0, 0, data, len);
        }
        return true;
}

static int build_initramfs(const char *path, const char *kernel, bool *have_modules)
{
        _cleanup_free_ char *bb = NULL;
        size_t bb_len = 0;
        int r = read_whole("/bin/busybox", &bb, &bb_len);
        if (r < 0)
                return r;
        _cleanup_fclose_ FILE *f = fopen(path, "we");
        if (!f)
                return -errno;
        unsigned ino = 1;
        static const char *const dirs[] = {"bin", "dev", "proc", "sys"};
        for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
                cpio_entry(f, ino++, dirs[i], 040755, 0, 0, NULL, 0);
        cpio_entry(f, ino++, "dev/console", 020600, 5, 1, NULL, 0);
        cpio_entry(f, ino++, "bin/busybox", 0100755, 0, 0, bb, bb_len);
        *have_modules = cpio_add_modules(f, &ino, kernel);
        cpio_entry(f, ino++, "init", 0100755, 0, 0, init_script, strlen(init_script));
        cpio_entry(f, 0, "TRAILER!!!", 0, 0, 0, NULL, 0);
        return fflush(f) == 0 ? 0 : -errno;
}

/* ---- helpers ---- */

static bool file_contains(const char *path, const char *needle)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return false;
        char line[4096];
        while (fgets(line, sizeof(line), f))
                if (strstr(line, needle))
                        return true;
        return false;
}

/* The first line of path containing needle (static buffer of the caller), or "". */
static const char *line_with(const char *path, const char *needle, char *line, size_t len)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        while (f && fgets(line, (int)len, f))
                if (strstr(line, needle)) {
                        line[strcspn(line, "\r\n")] = '\0';
                        return line;
                }
        return "";
}

static bool wait_for_marker(const char *path, const char *needle, int timeout_ms)
{
        double end = now_s() + timeout_ms / 1000.0;
        while (now_s() < end) {
                if (file_contains(path, needle))
                        return true;
                usleep(20000);
        }
        return false;
}

static long vm_rss_kib(pid_t pid)
{
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, "VmRSS:", 6) == 0)
                        return strtol(line + 6, NULL, 10);
        return -1;
}

/* QEMU processes whose -name is capsule-<name>. */
static int count_vm_processes(const char *name)
{
        DIR *d = opendir("/proc");
        if (!d)
                return -1;
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_name[0] >= '1' && de->d_name[0] <= '9' &&
                    vm_pid_is_vm((pid_t)atoi(de->d_name), name))
                        n++;
        closedir(d);
        return n;
}

static int sha256_file(const char *path, unsigned char out[32])
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(md);
                return -EIO;
        }
        char buf[1 << 16];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
                EVP_DigestUpdate(md, buf, n);
        unsigned len = 32;
        EVP_DigestFinal_ex(md, out, &len);
        EVP_MD_CTX_free(md);
        return 0;
}

static char *run_out(const char *const *argv, int *exit_code)
{
        struct spawn_result res = {0};
        struct cap_error err = {0};
        char *out = NULL;
        if (spawn_run(argv, NULL, &res, &err) == 0) {
                out = res.out;
                res.out = NULL;
                *exit_code = res.exit_code;
        } else {
                fprintf(stderr, "  %s: %s\n", argv[0], err.msg);
                *exit_code = -1;
        }
        spawn_result_free(&res);
        return out;
}

static int write_text(const char *path, const char *text)
{
        _cleanup_fclose_ FILE *f = fopen(path, "we");
        if (!f)
                return -errno;
        fputs(text, f);
        return fflush(f) == 0 ? 0 : -errno;
}

static struct ctx C;

static void setup(const char *source_dir)
{
        struct cap_error err = {0};
        if (vm_tool_find(VM_QEMU_PROGRAM, C.qemu, sizeof(C.qemu), &err) < 0)
                skip(err.msg);
        const char *k = getenv("CAPSULE_KERNEL");
        if (k && *k) {
                snprintf(C.kernel, sizeof(C.kernel), "%s", k);
        } else {
                char pat[PATH_MAX];
                snprintf(pat, sizeof(pat), "%s/out/cache/kernel-*-cloud-amd64/boot/vmlinuz-*",
                         source_dir);
                glob_t g;
                if (glob(pat, 0, NULL, &g) != 0 || g.gl_pathc == 0) {
                        printf(
                            "SKIP: no kernel: set CAPSULE_KERNEL or run `mkimage/fetch-kernel.sh "
                            "cloud out/cache` (looked for %s)\n",
                            pat);
                        exit(77);
                }
                snprintf(C.kernel, sizeof(C.kernel), "%s", g.gl_pathv[g.gl_pathc - 1]);
                globfree(&g);
        }
        if (access(C.kernel, R_OK) < 0)
                skip("kernel not readable");
        if (access("/bin/busybox", X_OK) < 0)
                skip("no /bin/busybox (Debian package busybox-static) for the test initramfs");
        snprintf(C.tmp, sizeof(C.tmp), "/tmp/cvm-XXXXXX");
        if (!mkdtemp(C.tmp)) {
                perror("mkdtemp");
                exit(1);
        }
        snprintf(C.initrd, sizeof(C.initrd), "%s/init.cpio", C.tmp);
        if (build_initramfs(C.initrd, C.kernel, &C.have_modules) < 0) {
                perror("build initramfs");
                exit(1);
        }
        printf("kernel %s, qemu %s, work dir %s\n", C.kernel, C.qemu, C.tmp);
}

/* ---- tests ---- */

TEST(rootdisk)
{
        char rootfs[PATH_MAX], p[PATH_MAX + 64];
        snprintf(rootfs, sizeof(rootfs), "%s/rootfs", C.tmp);
        CHECK(mkdir(rootfs, 0755) == 0);
        snprintf(p, sizeof(p), "%s/etc", rootfs);
        CHECK(mkdir(p, 0755) == 0);
        snprintf(p, sizeof(p), "%s/etc/hostname", rootfs);
        CHECK(write_text(p, "capsule-test\n") == 0);
        for (int i = 0; i < 200; i++) {
                snprintf(p, sizeof(p), "%s/f%03d", rootfs, i);
                CHECK(write_text(p, "some file content in the image\n") == 0);
        }
        /* 32 MiB of incompressible data, so the figures are not all metadata */
        snprintf(p, sizeof(p), "%s/etc/blob", rootfs);
        {
                _cleanup_fclose_ FILE *f = fopen(p, "we");
                CHECK(f != NULL);
                unsigned x = 12345;
                static unsigned buf[16384];
                for (int blk = 0; f && blk < 512; blk++) {
                        for (size_t i = 0; i < ARRAY_SIZE(buf); i++)
                                buf[i] = x = x * 1103515245u + 12345u;
                        CHECK(fwrite(buf, sizeof(buf[0]), ARRAY_SIZE(buf), f) == ARRAY_SIZE(buf));
                }
        }
        snprintf(C.cache_img, sizeof(C.cache_img), "%s/image-sha256-test.ext4", C.tmp);
        struct cap_error err = {0};
        double t0 = now_s();
        CHECK(vm_rootdisk_cache_build(rootfs, C.cache_img, 0, &err) == 0);
        double t_build = now_s() - t0;
        if (err.code)
                fprintf(stderr, "  %s\n", err.msg);
        struct stat st;
        CHECK(stat(C.cache_img, &st) == 0);
        /* 32 MiB * 1.3 + 64 MiB, and a bit for the small files */
        CHECK(st.st_size >= (off_t)(105 << 20) && st.st_size <= (off_t)(110 << 20));
        /* a second build of an existing cache does nothing */
        t0 = now_s();
        CHECK(vm_rootdisk_cache_build(rootfs, C.cache_img, 0, &err) == 0);
        CHECK(now_s() - t0 < 0.1);
        unsigned char before[32], after[32];
        CHECK(sha256_file(C.cache_img, before) == 0);

        char disk2[PATH_MAX];
        snprintf(C.disk1, sizeof(C.disk1), "%s/vm1-root.img", C.tmp);
        snprintf(disk2, sizeof(disk2), "%s/vm2-root.img", C.tmp);
        const uint64_t size = 256ull << 20;
        bool ref1 = false, ref2 = false;
        t0 = now_s();
        CHECK(vm_rootdisk_clone(C.cache_img, C.disk1, size, &ref1, &err) == 0);
        double t_clone1 = now_s() - t0;
        t0 = now_s();
        CHECK(vm_rootdisk_clone(C.cache_img, disk2, size, &ref2, &err) == 0);
        double t_clone2 = now_s() - t0;
        if (err.code)
                fprintf(stderr, "  %s\n", err.msg);
        printf("FIGURE rootdisk: cache build %.3f s (%lld MiB image), clone %.3f s and %.3f s "
               "(grown to 256 MiB, %s)\n",
               t_build, (long long)st.st_size >> 20, t_clone1, t_clone2,
               ref1 ? "reflink" : "sparse copy");

        /* the clone has the grown size */
        int code = 0;
        const char *const dump[] = {"dumpe2fs", "-h", C.disk1, NULL};
        _cleanup_free_ char *hdr = run_out(dump, &code);
        CHECK(code == 0 && hdr);
        const char *bc = hdr ? strstr(hdr, "Block count:") : NULL;
        const char *bs = hdr ? strstr(hdr, "Block size:") : NULL;
        CHECK(bc && bs);
        if (bc && bs)
                CHECK(strtoull(bc + 12, NULL, 10) * strtoull(bs + 11, NULL, 10) == size);
        /* write into clone 1; clone 2 and the cache do not see it */
        const char *const wr[] = {"debugfs", "-w", "-R", "write /proc/version /newfile",
                                  C.disk1,   NULL};
        _cleanup_free_ char *o1 = run_out(wr, &code);
        CHECK(code == 0);
        const char *const ls1[] = {"debugfs", "-R", "ls -l /", C.disk1, NULL};
        const char *const ls2[] = {"debugfs", "-R", "ls -l /", disk2, NULL};
        _cleanup_free_ char *l1 = run_out(ls1, &code);
        _cleanup_free_ char *l2 = run_out(ls2, &code);
        CHECK_CONTAINS(l1, "newfile");
        CHECK_CONTAINS(l2, "f199");
        CHECK(l2 && !strstr(l2, "newfile"));
        const char *const fsck[] = {"e2fsck", "-fn", disk2, NULL};
        _cleanup_free_ char *o2 = run_out(fsck, &code);
        CHECK(code == 0);
        CHECK(sha256_file(C.cache_img, after) == 0);
        CHECK(memcmp(before, after, 32) == 0);
        /* a disk smaller than the image is refused */
        snprintf(p, sizeof(p), "%s/small.img", C.tmp);
        CHECK(vm_rootdisk_clone(C.cache_img, p, 1 << 20, NULL, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "smaller than the image");
        CHECK(access(p, F_OK) < 0);
        unlink(disk2);
}

static void vm_cfg(struct vm_config *c, struct vm_state_paths *paths, const char *name,
                   const char *state_dir, const struct vm_disk *disks, size_t n_disks)
{
        vm_config_init(c);
        struct cap_error err = {0};
        CHECK(vm_state_paths(state_dir, paths, &err) == 0);
        c->name = name;
        c->qemu = C.qemu;
        c->kernel = C.kernel;
        c->initrd = C.initrd;
        c->accel = VM_ACCEL_TCG;
        c->cpus = 1;
        c->memory_mib = 256;
        c->disks = disks;
        c->n_disks = n_disks;
        vm_config_use_state_paths(c, paths);
}

struct list_seen {
        int n;
        bool running;
        uint64_t generation;
};

static int list_cb(const struct vm_info *vm, void *ud)
{
        struct list_seen *s = ud;
        if (strcmp(vm->name, "t1") == 0) {
                s->n++;
                s->running = vm->running;
                s->generation = vm->generation;
        }
        return 0;
}

TEST(lifecycle)
{
        char state[PATH_MAX];
        snprintf(state, sizeof(state), "%s/vms/t1", C.tmp);
        snprintf(C.runcfg, sizeof(C.runcfg), "%s/runconfig.bin", C.tmp);
        CHECK(write_text(C.runcfg, "CAPSULE1 stand-in for the run-config disk\n") == 0);
        struct vm_disk disks[] = {{.path = C.runcfg, .id = "runconfig", .read_only = true},
                                  {.path = C.disk1, .id = "root"}};
        struct vm_config cfg;
        struct vm_state_paths paths;
        vm_cfg(&cfg, &paths, "t1", state, disks, access(C.disk1, F_OK) == 0 ? 2 : 1);
        struct cap_error err = {0};
        struct vm_start_opts opts = {.state_dir = state, .generation = 7};
        pid_t pid = 0;
        double t0 = now_s();
        int r = vm_start(&cfg, &opts, &pid, &err);
        double t_ready = now_s() - t0;
        CHECK(r == 0);
        if (r < 0) {
                fprintf(stderr, "  vm_start: %s\n", err.msg);
                return;
        }
        bool seen = wait_for_marker(paths.console, MARKER, BOOT_TIMEOUT_MS);
        double t_marker = now_s() - t0;
        CHECK(seen);
        char line[512];
        const char *ml = line_with(paths.console, MARKER, line, sizeof(line));
        printf("  console: %s\n", ml);
        if (C.have_modules)
                CHECK_CONTAINS(ml, "disks: vda vdb");
        printf("FIGURE boot: vm_start returned (QMP ready) after %.2f s, marker on the console "
               "after %.2f s (TCG, 1 vCPU, 256 MiB)\n",
               t_ready, t_marker);
        sleep(2);
        printf("FIGURE idle RSS: %ld KiB (QEMU pid %d, -m 256, TCG tb-size=64)\n", vm_rss_kib(pid),
               (int)pid);
        CHECK(file_contains(paths.config, "generation=7"));
        CHECK(file_contains(paths.config, "argv="));

        /* adoption from a process that did not start it */
        pid_t child = fork();
        if (child == 0) {
                struct cap_error e = {0};
                pid_t apid = 0;
                char status[32] = "";
                int ar = vm_adopt(state, &apid, status, sizeof(status), &e);
                if (ar < 0)
                        fprintf(stderr, "  vm_adopt: %s\n", e.msg);
                _exit(ar == 0 && apid == pid && strcmp(status, "running") == 0 ? 0 : 1);
        }
        int ws = -1;
        CHECK(child > 0 && waitpid(child, &ws, 0) == child);
        CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);

        struct list_seen seen_list = {0};
        CHECK(vm_list(C.tmp, list_cb, &seen_list, &err) == 0);
        CHECK(seen_list.n == 1 && seen_list.running && seen_list.generation == 7);

        /* a second start of the same VM is refused */
        pid_t pid2 = 0;
        CHECK(vm_start(&cfg, &opts, &pid2, &err) == -EEXIST);
        CHECK_CONTAINS(err.msg, "already running");
        CHECK(vm_remove(state, &err) == -EBUSY);

        t0 = now_s();
        CHECK(vm_stop(state, 5000, &err) == 0);
        printf("FIGURE stop: QMP quit -> process gone in %.3f s\n", now_s() - t0);
        CHECK(count_vm_processes("t1") == 0);
        CHECK(vm_stop(state, 1000, &err) == 0); /* idempotent */
        pid_t apid;
        CHECK(vm_adopt(state, &apid, NULL, 0, &err) == -ESRCH);
        seen_list = (struct list_seen){0};
        CHECK(vm_list(C.tmp, list_cb, &seen_list, &err) == 0);
        CHECK(seen_list.n == 1 && !seen_list.running);

        CHECK(vm_remove(state, &err) == 0);
        CHECK(access(state, F_OK) < 0 && errno == ENOENT);
        seen_list = (struct list_seen){0};
        CHECK(vm_list(C.tmp, list_cb, &seen_list, &err) == 0);
        CHECK(seen_list.n == 0);
}

TEST(cgroup_and_guest_exit)
{
        /* a VM whose guest reboots at once: QEMU (-no-reboot) exits by itself */
        char state[PATH_MAX];
        snprintf(state, sizeof(state), "%s/vms/t2", C.tmp);
        struct vm_config cfg;
        struct vm_state_paths paths;
        vm_cfg(&cfg, &paths, "t2", state, NULL, 0);
        cfg.cmdline_extra = "capsule.test=exit";
        /* cgroup joining, where this host lets us make one (v2 or the v1 cpu hierarchy) */
        char cg[PATH_MAX] = "";
        static const char *const bases[] = {"/sys/fs/cgroup/unified", "/sys/fs/cgroup",
                                            "/sys/fs/cgroup/cpu"};
        for (size_t i = 0; i < ARRAY_SIZE(bases) && !cg[0]; i++) {
                char probe[PATH_MAX];
                snprintf(probe, sizeof(probe), "%s/cgroup.procs", bases[i]);
                if (access(probe, W_OK) < 0)
                        continue;
                snprintf(cg, sizeof(cg), "%s/capsule-test-microvm-%d", bases[i], (int)getpid());
                if (mkdir(cg, 0755) < 0)
                        cg[0] = '\0';
        }
        struct cap_error err = {0};
        struct vm_start_opts opts = {
            .state_dir = state, .generation = 1, .cgroup_dir = cg[0] ? cg : NULL};
        pid_t pid = 0;
        int r = vm_start(&cfg, &opts, &pid, &err);
        CHECK(r == 0);
        if (r < 0)
                fprintf(stderr, "  vm_start: %s\n", err.msg);
        if (r == 0 && cg[0]) {
                char procs[PATH_MAX + 16], want[32];
                snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg);
                snprintf(want, sizeof(want), "%d", (int)pid);
                CHECK(file_contains(procs, want));
                printf("  QEMU pid %d joined %s\n", (int)pid, cg);
        }
        double t0 = now_s();
        CHECK(r < 0 || vm_pid_wait_exit(pid, BOOT_TIMEOUT_MS) == 0);
        if (r == 0)
                printf("FIGURE guest exit: QEMU gone %.2f s after start returned\n", now_s() - t0);
        CHECK(file_contains(paths.console, MARKER));
        CHECK(vm_remove(state, &err) == 0);
        if (cg[0])
                CHECK(rmdir(cg) == 0);
}

TEST(missing_kernel)
{
        char state[PATH_MAX], missing[PATH_MAX];
        snprintf(state, sizeof(state), "%s/vms/t3", C.tmp);
        snprintf(missing, sizeof(missing), "%s/no-such-vmlinuz", C.tmp);
        struct vm_config cfg;
        struct vm_state_paths paths;
        vm_cfg(&cfg, &paths, "t3", state, NULL, 0);
        cfg.kernel = missing;
        struct cap_error err = {0};
        struct vm_start_opts opts = {.state_dir = state};
        pid_t pid = 0;
        CHECK(vm_start(&cfg, &opts, &pid, &err) < 0);
        printf("  missing kernel -> %s\n", err.msg);
        CHECK_CONTAINS(err.msg, "start microVM t3");
        CHECK_CONTAINS(err.msg, missing);
        CHECK(count_vm_processes("t3") == 0);
        CHECK(vm_remove(state, &err) == 0);
}

TEST(accel_probe)
{
        char cache[PATH_MAX];
        snprintf(cache, sizeof(cache), "%s/run/accel", C.tmp);
        struct vm_accel_probe_opts o = {
            .qemu = C.qemu, .kernel = C.kernel, .initrd = C.initrd, .cache_file = cache};
        enum vm_accel a = VM_ACCEL_KVM;
        char why[1024];
        bool cached = true;
        struct cap_error err = {0};
        double t0 = now_s();
        CHECK(vm_accel_probe_ex(&o, &a, why, sizeof(why), &cached, &err) == 0);
        double t1 = now_s() - t0;
        CHECK(a == VM_ACCEL_TCG); /* this machine's KVM is absent or cannot boot a kernel */
        CHECK(!cached && why[0]);
        printf("FIGURE accel probe: tcg: %s (%.3f s)\n", why, t1);
        t0 = now_s();
        CHECK(vm_accel_probe_ex(&o, &a, why, sizeof(why), &cached, &err) == 0);
        double t2 = now_s() - t0;
        CHECK(a == VM_ACCEL_TCG && cached);
        CHECK(t2 < 0.05);
        printf("FIGURE accel probe (cached): %.4f s\n", t2);

        /* the boot-probe mechanics, under TCG: marker found, and a timeout that kills QEMU */
        int64_t ms = 0;
        CHECK(vm_accel_boot_probe(C.qemu, C.kernel, C.initrd, VM_ACCEL_TCG, 60000, &ms, why,
                                  sizeof(why), &err) == 0);
        printf("FIGURE boot probe under TCG: marker after %" PRId64 " ms\n", ms);
        CHECK(vm_accel_boot_probe(C.qemu, C.kernel, C.initrd, VM_ACCEL_TCG, 500, &ms, why,
                                  sizeof(why), &err) == -ETIMEDOUT);
        CHECK_CONTAINS(why, "did not reach init");
        CHECK(count_vm_processes("accel-probe") == 0);
}

int main(int argc, char **argv)
{
        setvbuf(stdout, NULL, _IOLBF, 0);
        setup(argc > 1 ? argv[1] : ".");
        RUN(rootdisk);
        RUN(lifecycle);
        RUN(cgroup_and_guest_exit);
        RUN(missing_kernel);
        RUN(accel_probe);
        int r = test_summary();
        if (r == 0) {
                const char *const rm[] = {"rm", "-rf", C.tmp, NULL};
                spawn_check(rm, NULL, NULL);
        } else {
                printf("work dir kept: %s\n", C.tmp);
        }
        return r;
}
