/* Filesystems for PID 1 in the microVM: the early API filesystems, the root disk at /newroot with
 * the volumes and the same API filesystems inside it (so the workload sees a normal root), the
 * files under /etc the workload expects, and the unmounting at power off. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fs.h"
#include "common/log.h"
#include "guest.h"

struct mnt {
        const char *src, *target, *type;
        unsigned long flags;
        const char *data;
};

static const struct mnt api_mounts[] = {
        {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
        {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
        {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
        {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666"},
        {"shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
        {"cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
        {"run", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
};

/* Mounts m under prefix ("" or "/newroot"); an already mounted target (EBUSY) is fine. */
static int mount_one(const char *prefix, const struct mnt *m, struct cap_error *err)
{
        char target[4096];
        snprintf(target, sizeof(target), "%s%s", prefix, m->target);
        int r = mkdir_p(target, 0755);
        if (r < 0)
                return cap_error_errno(err, r, "mkdir %s", target);
        struct stat st, up;
        char parent[4200];
        snprintf(parent, sizeof(parent), "%s/..", target);
        if (stat(target, &st) == 0 && stat(parent, &up) == 0 && st.st_dev != up.st_dev)
                return 0; /* already a mount point (the probe check mounted /proc early) */
        if (mount(m->src, target, m->type, m->flags, m->data) < 0 && errno != EBUSY)
                return cap_error_errno(err, -errno, "mount %s on %s", m->type, target);
        return 0;
}

int mounts_early(struct cap_error *err)
{
        for (size_t i = 0; i < ARRAY_SIZE(api_mounts); i++) {
                int r = mount_one("", &api_mounts[i], err);
                if (r < 0)
                        return r;
        }
        /* /dev/ptmx must be the devpts instance's */
        if (unlink("/dev/ptmx") < 0 && errno != ENOENT)
                log_warn("unlink /dev/ptmx: %s", strerror(errno));
        if (symlink("pts/ptmx", "/dev/ptmx") < 0 && errno != EEXIST)
                log_warn("symlink /dev/ptmx: %s", strerror(errno));
        return 0;
}

/* "/dev/vdc" or "vdc" -> "/dev/vdc" */
static void device_path(const char *dev, char *buf, size_t size)
{
        if (strncmp(dev, "/dev/", 5) == 0)
                snprintf(buf, size, "%s", dev);
        else
                snprintf(buf, size, "/dev/%s", dev);
}

/* Block devices appear asynchronously after virtio_blk loads: wait up to 5 s. */
static int wait_device(const char *path, struct cap_error *err)
{
        for (int i = 0; i < 100; i++) {
                struct stat st;
                if (stat(path, &st) == 0 && S_ISBLK(st.st_mode))
                        return 0;
                usleep(50000);
        }
        return cap_error_set(err, -ENODEV, CAP_UNAVAILABLE, "%s: no such block device", path);
}

int mounts_newroot(const char *root, const char *root_dev, const RunConfig *rc,
                   struct cap_error *err)
{
        int r = mkdir_p(root, 0755);
        if (r < 0)
                return cap_error_errno(err, r, "mkdir %s", root);
        if ((r = wait_device(root_dev, err)) < 0)
                return cap_error_prefix(err, "root disk");
        if (mount(root_dev, root, "ext4", 0, NULL) < 0)
                return cap_error_errno(err, -errno, "mount root disk %s (ext4) on %s", root_dev,
                                       root);
        for (size_t i = 0; i < rc->n_volumes; i++) {
                const Capsule__Guest__V1__VolumeMount *v = rc->volumes[i];
                char dev[256], target[4096];
                device_path(v->device, dev, sizeof(dev));
                snprintf(target, sizeof(target), "%s%s", root, v->path);
                if ((r = wait_device(dev, err)) < 0)
                        return cap_error_prefix(err, "volume %s", v->path);
                if ((r = mkdir_p(target, 0755)) < 0)
                        return cap_error_errno(err, r, "volume %s: mkdir %s", v->path, target);
                unsigned long fl = MS_NOSUID | MS_NODEV | (v->read_only ? MS_RDONLY : 0);
                if (mount(dev, target, "ext4", fl, NULL) < 0)
                        return cap_error_errno(err, -errno, "volume %s: mount %s (ext4)", v->path,
                                               dev);
                log_info("volume %s mounted on %s%s", dev, v->path, v->read_only ? " (ro)" : "");
        }
        for (size_t i = 0; i < ARRAY_SIZE(api_mounts); i++) {
                if (strcmp(api_mounts[i].type, "devtmpfs") == 0) {
                        /* the same /dev (bind), so devices and ptys match the guest's */
                        char target[4096];
                        snprintf(target, sizeof(target), "%s/dev", root);
                        if ((r = mkdir_p(target, 0755)) < 0)
                                return cap_error_errno(err, r, "mkdir %s", target);
                        if (mount("/dev", target, NULL, MS_BIND | MS_REC, NULL) < 0)
                                return cap_error_errno(err, -errno, "bind /dev on %s", target);
                        continue;
                }
                if (strncmp(api_mounts[i].target, "/dev/", 5) == 0)
                        continue; /* came with the recursive bind of /dev */
                if ((r = mount_one(root, &api_mounts[i], err)) < 0)
                        return r;
        }
        return 0;
}

static void write_file(const char *root, const char *rel, const char *text)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s%s", root, rel);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                                      0644);
        if (fd < 0) {
                log_warn("write %s: %s", path, strerror(errno));
                return;
        }
        size_t len = strlen(text);
        if (write(fd, text, len) != (ssize_t)len)
                log_warn("write %s: %s", path, strerror(errno));
}

void mounts_write_etc(const char *root, const char *hostname, const struct guest_cmdline *c)
{
        char etc[4096];
        snprintf(etc, sizeof(etc), "%s/etc", root);
        int r = mkdir_p(etc, 0755);
        if (r < 0) {
                log_warn("mkdir %s: %s", etc, strerror(-r));
                return;
        }
        char buf[1024];
        if (hostname[0]) {
                snprintf(buf, sizeof(buf), "%s\n", hostname);
                write_file(root, "/etc/hostname", buf);
        }
        char ip[INET_ADDRSTRLEN] = "";
        if (c->has_ip && !inet_ntop(AF_INET, &c->ip, ip, sizeof(ip)))
                ip[0] = '\0';
        int n = snprintf(buf, sizeof(buf), "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
        if (hostname[0])
                snprintf(buf + n, sizeof(buf) - (size_t)n, "%s\t%s\n", ip[0] ? ip : "127.0.1.1",
                         hostname);
        write_file(root, "/etc/hosts", buf);
        if (c->n_dns) {
                n = 0;
                for (size_t i = 0; i < c->n_dns; i++) {
                        char a[INET_ADDRSTRLEN];
                        if (inet_ntop(AF_INET, &c->dns[i], a, sizeof(a)))
                                n += snprintf(buf + n, sizeof(buf) - (size_t)n, "nameserver %s\n",
                                              a);
                }
                write_file(root, "/etc/resolv.conf", buf);
        }
}

/* Mount points under root from /proc/self/mountinfo, deepest (longest) first. */
void mounts_unmount_all(const char *root)
{
        for (;;) { /* one mount per round, until none is left or one cannot go */
                _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
                if (!f) {
                        log_warn("open /proc/self/mountinfo: %s", strerror(errno));
                        return;
                }
                char line[4096], best[4096] = "";
                size_t rl = strlen(root);
                while (fgets(line, sizeof(line), f)) {
                        char mp[4096];
                        if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
                                continue;
                        if (strncmp(mp, root, rl) != 0 || (mp[rl] != '\0' && mp[rl] != '/'))
                                continue;
                        if (strlen(mp) > strlen(best))
                                snprintf(best, sizeof(best), "%s", mp);
                }
                if (!best[0])
                        return;
                if (umount2(best, 0) < 0) {
                        log_warn("umount %s: %s; detaching it", best, strerror(errno));
                        if (umount2(best, MNT_DETACH) < 0) {
                                log_warn("umount -l %s: %s", best, strerror(errno));
                                return;
                        }
                }
        }
}
