/* The file volume backend (host mode): each volume is a sparse ext4 image DIR/NAME.img,
 * attached to a loop device (autoclear, so unmounting frees it) and mounted at DIR/NAME.
 * The size is enforced by the filesystem. A create formats DIR/NAME.img.tmp and renames it into
 * place, so DIR/NAME.img always holds a whole filesystem; leftover .tmp files are discarded when
 * the backend is opened. The creating store's id is written to DIR/NAME.owner (fsynced) before
 * that rename, so a whole image always has its owner file. Grows extend the file, tell the loop device (LOOP_SET_CAPACITY) and run
 * resize2fs: online when mounted (the kernel wants CAP_SYS_RESOURCE), offline otherwise. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fault.h"
#include "common/log.h"
#include "spawn.h"
#include "volume.h"

struct file_backend {
        struct volume_backend base;
        char *dir; /* absolute, canonical */
};

#define FB(b) ((struct file_backend *)(b))

static char *vol_file(struct volume_backend *b, const char *name, const char *suffix)
{
        char *p = NULL;
        if (asprintf(&p, "%s/%s%s", FB(b)->dir, name, suffix) < 0)
                return NULL;
        return p;
}

static char *file_path(struct volume_backend *b, const char *name)
{
        return vol_file(b, name, "");
}

static int oom(struct cap_error *err)
{
        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
        char *w = s;
        for (char *r = s; *r; r++) {
                if (r[0] == '\\' && isdigit((unsigned char)r[1]) && isdigit((unsigned char)r[2]) &&
                    isdigit((unsigned char)r[3])) {
                        *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                        r += 3;
                } else {
                        *w++ = *r;
                }
        }
        *w = 0;
}

/* Finds the topmost mount at `target` in /proc/self/mountinfo; fills the mount source (the
 * device, e.g. /dev/loop3). Returns 1 if mounted, 0 if not, negative on error. */
static int find_mount(const char *target, char *source, size_t source_len, struct cap_error *err)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return cap_error_errno(err, -errno, "open /proc/self/mountinfo");
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        int found = 0;
        while (getline(&line, &cap, f) > 0) {
                /* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
                char *save = NULL, *fields[5], *tok = NULL;
                int i;
                for (i = 0; i < 5; i++) {
                        tok = strtok_r(i == 0 ? line : NULL, " ", &save);
                        if (!tok)
                                break;
                        fields[i] = tok;
                }
                if (i < 5)
                        continue;
                unescape_octal(fields[4]);
                if (strcmp(fields[4], target) != 0)
                        continue;
                char *src = NULL;
                while ((tok = strtok_r(NULL, " ", &save)))
                        if (strcmp(tok, "-") == 0) {
                                strtok_r(NULL, " ", &save); /* fstype */
                                src = strtok_r(NULL, " ", &save);
                                break;
                        }
                if (src) {
                        unescape_octal(src);
                        snprintf(source, source_len, "%s", src);
                }
                found = 1;
        }
        return found;
}

/* Reads /sys/block/loopN/loop/backing_file for a /dev/loopN source. */
static int loop_backing_file(const char *dev, char *out, size_t len)
{
        const char *base = strrchr(dev, '/');
        base = base ? base + 1 : dev;
        if (strncmp(base, "loop", 4) != 0)
                return -EINVAL;
        char p[128];
        snprintf(p, sizeof(p), "/sys/block/%s/loop/backing_file", base);
        _cleanup_fclose_ FILE *f = fopen(p, "re");
        if (!f || !fgets(out, (int)len, f))
                return -errno ? -errno : -EIO;
        out[strcspn(out, "\n")] = 0;
        return 0;
}

/* Attaches img_fd to a free loop device with autoclear; returns the open loop fd. */
static int loop_attach(int img_fd, const char *img, char *dev, size_t dev_len,
                       struct cap_error *err)
{
        _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
                return cap_error_errno(err, -errno, "open /dev/loop-control");
        for (int attempt = 0; attempt < 32; attempt++) {
                int n = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (n < 0)
                        return cap_error_errno(err, -errno, "LOOP_CTL_GET_FREE");
                snprintf(dev, dev_len, "/dev/loop%d", n);
                int lfd = open(dev, O_RDWR | O_CLOEXEC);
                if (lfd < 0 && errno == ENOENT && mknod(dev, S_IFBLK | 0660, makedev(7, n)) == 0)
                        lfd = open(dev, O_RDWR | O_CLOEXEC);
                if (lfd < 0)
                        return cap_error_errno(err, -errno, "open %s", dev);
                struct loop_config cfg = {.fd = (unsigned)img_fd};
                cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
                snprintf((char *)cfg.info.lo_file_name, LO_NAME_SIZE, "%s", img);
                if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0)
                        return lfd;
                int e = errno;
                close(lfd);
                if (e != EBUSY) /* EBUSY: someone else took it between GET_FREE and CONFIGURE */
                        return cap_error_errno(err, -e, "LOOP_CONFIGURE %s", dev);
        }
        return cap_error_set(err, -EBUSY, CAP_UNAVAILABLE, "no free loop device after 32 attempts");
}

static int file_mount(struct volume_backend *b, const char *name, struct cap_error *err)
{
        _cleanup_free_ char *img = vol_file(b, name, ".img");
        _cleanup_free_ char *dir = file_path(b, name);
        if (!img || !dir)
                return oom(err);
        char src[256] = "", backing[PATH_MAX];
        int m = find_mount(dir, src, sizeof(src), err);
        if (m < 0)
                return m;
        if (m == 1) {
                if (loop_backing_file(src, backing, sizeof(backing)) == 0 &&
                    strcmp(backing, img) == 0)
                        return 0;
                return cap_error_set(err, -EEXIST, CAP_FAILED_PRECONDITION,
                                     "%s is already mounted from %s, not from %s", dir, src, img);
        }
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return cap_error_errno(err, -errno, "mkdir %s", dir);
        _cleanup_close_ int fd = open(img, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "open %s", img);
        char dev[64];
        _cleanup_close_ int lfd = loop_attach(fd, img, dev, sizeof(dev), err);
        if (lfd < 0)
                return lfd;
        /* The mount keeps the loop device; closing lfd afterwards (autoclear) frees it on umount,
         * or right away if the mount fails. */
        if (mount(dev, dir, "ext4", MS_NOSUID | MS_NODEV, NULL) < 0)
                return cap_error_errno(err, -errno, "mount %s (%s) on %s", img, dev, dir);
        return 0;
}

static int file_unmount(struct volume_backend *b, const char *name, struct cap_error *err)
{
        _cleanup_free_ char *dir = file_path(b, name);
        if (!dir)
                return oom(err);
        char src[256];
        for (;;) {
                int m = find_mount(dir, src, sizeof(src), err);
                if (m <= 0)
                        return m;
                if (umount2(dir, UMOUNT_NOFOLLOW) < 0) {
                        if (errno == EBUSY)
                                return cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                                     "%s is busy: a process still uses it", dir);
                        return cap_error_errno(err, -errno, "umount %s", dir);
                }
        }
}

/* Writes DIR/NAME.owner durably (temp file, fsync, rename; the directory is fsynced later). */
static int owner_write(struct volume_backend *b, const char *name, const char *owner,
                       struct cap_error *err)
{
        _cleanup_free_ char *path = vol_file(b, name, ".owner");
        _cleanup_free_ char *tmp = vol_file(b, name, ".owner.tmp");
        if (!path || !tmp)
                return oom(err);
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return cap_error_errno(err, -errno, "create %s", tmp);
        size_t len = strlen(owner);
        if (write(fd, owner, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) < 0)
                return cap_error_errno(err, errno ? -errno : -EIO, "write %s", tmp);
        if (rename(tmp, path) < 0)
                return cap_error_errno(err, -errno, "rename %s", tmp);
        return 0;
}

static int file_owner(struct volume_backend *b, const char *name, char **owner,
                      struct cap_error *err)
{
        *owner = NULL;
        _cleanup_free_ char *img = vol_file(b, name, ".img");
        _cleanup_free_ char *path = vol_file(b, name, ".owner");
        if (!img || !path)
                return oom(err);
        if (access(img, F_OK) < 0)
                return cap_error_errno(err, -errno, "%s", img);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return errno == ENOENT ? 0 : cap_error_errno(err, -errno, "open %s", path);
        char buf[128];
        if (!fgets(buf, sizeof(buf), f))
                return 0;
        buf[strcspn(buf, "\n")] = '\0';
        if (buf[0] && !(*owner = strdup(buf)))
                return oom(err);
        return 0;
}

static int file_create(struct volume_backend *b, const char *name, uint64_t size,
                       const char *owner, struct cap_error *err)
{
        _cleanup_free_ char *img = vol_file(b, name, ".img");
        _cleanup_free_ char *tmp = vol_file(b, name, ".img.tmp");
        if (!img || !tmp)
                return oom(err);
        if (access(img, F_OK) == 0)
                return cap_error_set(err, -EEXIST, CAP_ALREADY_EXISTS, "%s exists", img);
        if (unlink(tmp) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "unlink %s", tmp);
        int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return cap_error_errno(err, -errno, "create %s", tmp);
        if (ftruncate(fd, (off_t)size) < 0) {
                int r = cap_error_errno(err, -errno, "size %s", tmp);
                close(fd);
                unlink(tmp);
                return r;
        }
        /* 4 KiB blocks whatever the size (grows stay in range), no root reservation (the size
         * the operator asked for is what workloads get), root-owned top directory. */
        const char *mkfs[] = {"mkfs.ext4",      "-q", "-F", "-b", "4096", "-m", "0", "-E",
                              "root_owner=0:0", tmp,  NULL};
        int r = spawn_check(mkfs, NULL, err);
        if (r == 0) {
                fault_point("volume-after-mkfs");
                if (fsync(fd) < 0)
                        r = cap_error_errno(err, -errno, "fsync %s", tmp);
        }
        close(fd);
        if (r == 0)
                r = owner_write(b, name, owner, err);
        if (r == 0 && rename(tmp, img) < 0)
                r = cap_error_errno(err, -errno, "rename %s", tmp);
        if (r < 0) {
                unlink(tmp);
                return r;
        }
        _cleanup_close_ int dfd = open(FB(b)->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0)
                return cap_error_errno(err, -errno, "fsync %s", FB(b)->dir);
        fault_point("volume-after-rename");
        return 0;
}

static int file_remove(struct volume_backend *b, const char *name, struct cap_error *err)
{
        int r = file_unmount(b, name, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *img = vol_file(b, name, ".img");
        _cleanup_free_ char *tmp = vol_file(b, name, ".img.tmp");
        _cleanup_free_ char *dir = file_path(b, name);
        _cleanup_free_ char *owner = vol_file(b, name, ".owner");
        if (!img || !tmp || !dir || !owner)
                return oom(err);
        if (unlink(img) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "unlink %s", img);
        if (unlink(owner) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "unlink %s", owner);
        if (unlink(tmp) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "unlink %s", tmp);
        if (rmdir(dir) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "rmdir %s", dir);
        return 0;
}

/* The filesystem's size from the ext4 superblock at byte 1024 of the image. */
static int ext4_fs_bytes(int fd, uint64_t *bytes)
{
        uint8_t sb[1024];
        if (pread(fd, sb, sizeof(sb), 1024) != (ssize_t)sizeof(sb))
                return -EIO;
        return volume_ext4_fs_bytes(sb, bytes);
}

static bool have_cap_sys_resource(void)
{
        struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
        struct __user_cap_data_struct d[2] = {0};
        if (syscall(SYS_capget, &h, d) < 0)
                return false;
        return d[CAP_SYS_RESOURCE / 32].effective & (1u << (CAP_SYS_RESOURCE % 32));
}

static bool file_can_grow_online(struct volume_backend *b)
{
        return have_cap_sys_resource();
}

static int file_resize(struct volume_backend *b, const char *name, uint64_t new_size,
                       struct cap_error *err)
{
        _cleanup_free_ char *img = vol_file(b, name, ".img");
        _cleanup_free_ char *dir = file_path(b, name);
        if (!img || !dir)
                return oom(err);
        _cleanup_close_ int fd = open(img, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "open %s", img);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return cap_error_errno(err, -errno, "stat %s", img);
        if ((uint64_t)st.st_size > new_size)
                return cap_error_set(err, -EINVAL, CAP_FAILED_PRECONDITION,
                                     "%s is larger than %llu bytes: "
                                     "volumes can only grow",
                                     img, (unsigned long long)new_size);
        uint64_t fs_bytes = 0;
        int r = ext4_fs_bytes(fd, &fs_bytes);
        if (r < 0)
                return cap_error_errno(err, r, "%s: read the ext4 superblock", img);
        /* resize2fs may leave off a last block group too small to be useful: 1 MiB of slack. */
        if ((uint64_t)st.st_size == new_size && fs_bytes + (1u << 20) >= new_size)
                return 0;
        char src[256];
        int m = find_mount(dir, src, sizeof(src), err);
        if (m < 0)
                return m;
        if (m == 1 && !have_cap_sys_resource())
                return cap_error_set(err, -EPERM, CAP_FAILED_PRECONDITION,
                                     "%s is mounted and this host "
                                     "cannot grow a mounted ext4 (no CAP_SYS_RESOURCE)",
                                     img);
        if ((uint64_t)st.st_size < new_size &&
            (ftruncate(fd, (off_t)new_size) < 0 || fsync(fd) < 0))
                return cap_error_errno(err, -errno, "grow %s", img);
        if (m == 1) {
                _cleanup_close_ int lfd = open(src, O_RDONLY | O_CLOEXEC);
                if (lfd < 0 || ioctl(lfd, LOOP_SET_CAPACITY, 0) < 0)
                        return cap_error_errno(err, -errno, "LOOP_SET_CAPACITY %s", src);
                const char *argv[] = {"resize2fs", src, NULL};
                struct spawn_result res;
                r = spawn_run(argv, NULL, &res, err);
                if (r == 0 && res.exit_code != 0) {
                        bool eperm = strstr(res.errout, "Permission denied") != NULL;
                        r = cap_error_set(err, eperm ? -EPERM : -EIO,
                                          eperm ? CAP_FAILED_PRECONDITION : CAP_INTERNAL,
                                          "resize2fs %s (online): exit %d: %s", src, res.exit_code,
                                          res.errout);
                }
                spawn_result_free(&res);
                return r;
        }
        /* Offline: resize2fs wants a freshly checked filesystem. e2fsck -p exits 1 when it fixed
         * something harmless (e.g. an orphan list after a crash); 4 and up are real problems. */
        const char *fsck[] = {"e2fsck", "-f", "-p", img, NULL};
        struct spawn_result res;
        r = spawn_run(fsck, NULL, &res, err);
        if (r == 0 && res.exit_code >= 4)
                r = cap_error_set(err, -EIO, CAP_INTERNAL, "e2fsck %s: exit %d: %s", img,
                                  res.exit_code, res.errout);
        spawn_result_free(&res);
        if (r < 0)
                return r;
        const char *resize[] = {"resize2fs", img, NULL};
        return spawn_check(resize, NULL, err);
}

static int file_stat(struct volume_backend *b, const char *name, uint64_t *size, uint64_t *used,
                     bool *mounted, struct cap_error *err)
{
        _cleanup_free_ char *img = vol_file(b, name, ".img");
        _cleanup_free_ char *dir = file_path(b, name);
        if (!img || !dir)
                return oom(err);
        struct stat st;
        if (stat(img, &st) < 0)
                return cap_error_errno(err, -errno, "stat %s", img);
        *size = (uint64_t)st.st_size;
        *used = (uint64_t)st.st_blocks * 512;
        char src[256];
        int m = find_mount(dir, src, sizeof(src), err);
        if (m < 0)
                return m;
        *mounted = m == 1;
        struct statvfs vfs;
        if (m == 1 && statvfs(dir, &vfs) == 0)
                *used = (uint64_t)(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize;
        return 0;
}

static int file_list(struct volume_backend *b, char ***names, size_t *n, struct cap_error *err)
{
        DIR *d = opendir(FB(b)->dir);
        if (!d)
                return cap_error_errno(err, -errno, "open %s", FB(b)->dir);
        char **out = NULL;
        size_t count = 0;
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                if (l <= 4 || strcmp(de->d_name + l - 4, ".img") != 0)
                        continue;
                char **no = realloc(out, (count + 1) * sizeof(*out));
                char *s = strndup(de->d_name, l - 4);
                if (!no || !s) {
                        free(s);
                        if (no)
                                out = no;
                        r = oom(err);
                        break;
                }
                out = no;
                out[count++] = s;
        }
        closedir(d);
        if (r < 0) {
                for (size_t i = 0; i < count; i++)
                        free(out[i]);
                free(out);
                return r;
        }
        *names = out;
        *n = count;
        return 0;
}

static void file_free(struct volume_backend *b)
{
        if (!b)
                return;
        free(FB(b)->dir);
        free(b);
}

static int file_disk(struct volume_backend *b, const char *name, char **path, struct cap_error *err)
{
        char *img = vol_file(b, name, ".img");
        if (!img)
                return oom(err);
        struct stat st;
        if (stat(img, &st) < 0) {
                int r = errno == ENOENT ? cap_error_set(err, -ENOENT, CAP_NOT_FOUND,
                                                        "volume \"%s\" has no storage (%s)", name, img)
                                        : cap_error_errno(err, -errno, "stat %s", img);
                free(img);
                return r;
        }
        *path = img;
        return 0;
}

/* ---- Backup views and restore swaps ------------------------------------------------------- */

/* Host mode reads the live mount: files are copied one by one while workloads may write, so a
 * file written during the backup can be caught half-way, and files written together can be
 * caught apart (see docs/operations.md). The host's ext4 has no reflinks (FICLONE) to copy the
 * image instantly. A microVM's disk is not mounted here: refused. */
static int file_snapshot(struct volume_backend *b, const char *name, bool in_vm, char **dir,
                         const char **consistency, struct cap_error *err)
{
        if (in_vm)
                return cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                     "file volumes held by a microVM cannot be copied while it "
                                     "runs; stop the microVM first");
        int r = file_mount(b, name, err);
        if (r < 0)
                return r;
        if (!(*dir = file_path(b, name)))
                return oom(err);
        *consistency = "live";
        return 0;
}

static void file_snapshot_release(struct volume_backend *b, const char *name, const char *dir)
{
        (void)b;
        (void)name;
        (void)dir;
}

/* rename(FROM.img, NAME.img) replaces the image atomically; FROM's owner file and mount
 * directory go (an owner file left without its image is discarded at the next open). */
static int file_replace(struct volume_backend *b, const char *name, const char *from,
                        struct cap_error *err)
{
        int r = file_unmount(b, name, err);
        if (r == 0)
                r = file_unmount(b, from, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *img = vol_file(b, name, ".img");
        _cleanup_free_ char *fimg = vol_file(b, from, ".img");
        _cleanup_free_ char *fowner = vol_file(b, from, ".owner");
        _cleanup_free_ char *fdir = file_path(b, from);
        if (!img || !fimg || !fowner || !fdir)
                return oom(err);
        if (rename(fimg, img) < 0)
                return cap_error_errno(err, -errno, "rename %s", fimg);
        _cleanup_close_ int dfd = open(FB(b)->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0)
                return cap_error_errno(err, -errno, "fsync %s", FB(b)->dir);
        unlink(fowner);
        rmdir(fdir);
        return 0;
}

static const struct volume_backend_ops file_ops = {
    .snapshot = file_snapshot,
    .snapshot_release = file_snapshot_release,
    .replace = file_replace,
    .create = file_create,
    .owner = file_owner,
    .remove = file_remove,
    .resize = file_resize,
    .mount = file_mount,
    .unmount = file_unmount,
    .stat = file_stat,
    .path = file_path,
    .disk = file_disk,
    .list = file_list,
    .can_grow_online = file_can_grow_online,
    .free = file_free,
};

static bool has_suffix(const char *s, size_t l, const char *suffix)
{
        size_t sl = strlen(suffix);
        return l > sl && strcmp(s + l - sl, suffix) == 0;
}

/* Whether DIR/NAME.owner (name = "NAME.owner") has no DIR/NAME.img beside it. */
static bool owner_without_image(int dfd, const char *name, size_t l)
{
        char img[512];
        if (!has_suffix(name, l, ".owner") || l - 6 + 5 >= sizeof(img))
                return false;
        snprintf(img, sizeof(img), "%.*s.img", (int)(l - 6), name);
        return faccessat(dfd, img, F_OK, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT;
}

/* Removes DIR/NAME.img.tmp and DIR/NAME.owner(.tmp) files without an image: creations that never
 * finished and were never acknowledged, or deletes that a crash interrupted. */
static void discard_partial(const char *dir)
{
        DIR *d = opendir(dir);
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                if (has_suffix(de->d_name, l, ".img.tmp") || has_suffix(de->d_name, l, ".owner.tmp") ||
                    owner_without_image(dirfd(d), de->d_name, l)) {
                        log_warn("volumes: discarding half-created %s/%s", dir, de->d_name);
                        if (unlinkat(dirfd(d), de->d_name, 0) < 0)
                                log_warn("volumes: unlink %s/%s: %s", dir, de->d_name,
                                         strerror(errno));
                }
        }
        closedir(d);
}

int volume_file_backend_new(const char *dir, struct volume_backend **out, struct cap_error *err)
{
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return cap_error_errno(err, -errno, "volumes: mkdir %s", dir);
        struct file_backend *fb = calloc(1, sizeof(*fb));
        if (!fb)
                return oom(err);
        fb->dir = realpath(dir, NULL);
        if (!fb->dir) {
                int r = cap_error_errno(err, -errno, "volumes: %s", dir);
                free(fb);
                return r;
        }
        fb->base.name = "file";
        fb->base.ops = &file_ops;
        discard_partial(fb->dir);
        *out = &fb->base;
        return 0;
}
