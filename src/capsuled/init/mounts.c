/* Early mounts and kernel modules: the first things PID 1 does, before anything can log to disk.
 * Each mount failure is logged and skipped (a missing /sys/fs/bpf is not fatal; a missing /proc
 * will show up loudly everywhere else). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../common/cleanup.h"
#include "../../common/log.h"
#include "init.h"

struct early_mount {
        const char *source, *target, *type;
        unsigned long flags;
        const char *data;
        bool optional;
};

static const struct early_mount early_mounts[] = {
        {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false},
        {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false},
        {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", false},
        {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666", false},
        {"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", false},
        {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=20%", false},
        {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=20%", false},
        {"cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "nsdelegate", false},
        {"bpf", "/sys/fs/bpf", "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700", true},
};

static bool is_mounted(const char *target)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mounts", "re");
        if (!f)
                return false;
        char line[1024];
        while (fgets(line, sizeof(line), f)) {
                char src[256], mnt[512];
                if (sscanf(line, "%255s %511s", src, mnt) == 2 && strcmp(mnt, target) == 0)
                        return true;
        }
        return false;
}

int mounts_early(void)
{
        int failed = 0;
        for (size_t i = 0; i < ARRAY_SIZE(early_mounts); i++) {
                const struct early_mount *m = &early_mounts[i];
                /* /proc is needed to check the others; /dev may be kept by the kernel (devtmpfs.mount=1) */
                if (i > 0 && is_mounted(m->target))
                        continue;
                if (mkdir_p(m->target, 0755) < 0 && !m->optional)
                        failed++;
                if (mount(m->source, m->target, m->type, m->flags, m->data) < 0) {
                        if (errno == EBUSY)
                                continue;
                        if (!m->optional) {
                                failed++;
                                fprintf(stderr, "init: mount %s on %s: %s\n", m->type, m->target,
                                        strerror(errno));
                        }
                }
        }
        /* well-known /dev links that devtmpfs does not create */
        symlink("/proc/self/fd", "/dev/fd");
        symlink("/proc/self/fd/0", "/dev/stdin");
        symlink("/proc/self/fd/1", "/dev/stdout");
        symlink("/proc/self/fd/2", "/dev/stderr");
        mkdir_p("/run/lock/lvm", 0700);
        mkdir_p("/run/lvm", 0700);
        mkdir_p("/run/capsule", 0755);
        return failed ? -EIO : 0;
}

int modules_load(void)
{
        _cleanup_fclose_ FILE *f = fopen(INIT_MODULES_FILE, "re");
        if (!f) {
                log_warn("modules: %s: %s", INIT_MODULES_FILE, strerror(errno));
                return -errno;
        }
        char *argv[256] = {"/sbin/modprobe", "-a", "-b"};
        size_t argc = 3;
        static char names[256][64];
        char line[128];
        while (fgets(line, sizeof(line), f) && argc < ARRAY_SIZE(argv) - 1) {
                char *s = line + strspn(line, " \t");
                s[strcspn(s, " \t\r\n#")] = '\0';
                if (!*s)
                        continue;
                snprintf(names[argc], sizeof(names[argc]), "%s", s);
                argv[argc] = names[argc];
                argc++;
        }
        argv[argc] = NULL;
        int64_t t0 = now_ms();
        int r = run_cmd(argv, 60000, NULL, 0);
        log_info("modules: loaded %zu modules in %lld ms (modprobe exit %d)", argc - 3,
                 (long long)(now_ms() - t0), r);
        return r == 0 ? 0 : -EIO;
}
