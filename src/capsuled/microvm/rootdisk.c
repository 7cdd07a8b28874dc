/* Root disk images as files: mkfs.ext4 -d into a cache, reflink or sparse copy per VM, grown
 * with resize2fs (see rootdisk.h). */
#include "rootdisk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "tools.h"
#include "volume/spawn.h"

#define MIB (1024ull * 1024ull)

uint64_t vm_rootdisk_image_size(uint64_t rootfs_bytes, uint64_t min_bytes)
{
        uint64_t size = rootfs_bytes + rootfs_bytes * 3 / 10 + 64 * MIB;
        if (size < min_bytes)
                size = min_bytes;
        return (size + MIB - 1) / MIB * MIB;
}

struct tree_usage {
        uint64_t bytes;
        uint64_t inodes;
};

/* Sums allocated bytes and counts inodes below dirfd (consumes dirfd). */
static int tree_measure(int dirfd, int depth, struct tree_usage *u)
{
        if (depth > 256) {
                close(dirfd);
                return -ELOOP;
        }
        DIR *d = fdopendir(dirfd);
        if (!d) {
                int e = -errno;
                close(dirfd);
                return e;
        }
        int r = 0;
        struct dirent *de;
        while (r == 0 && (de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                struct stat st;
                if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = -errno;
                        break;
                }
                u->inodes++;
                /* a directory entry, an inode, and the data rounded to blocks */
                u->bytes += (uint64_t)st.st_blocks * 512 + 256;
                if (S_ISDIR(st.st_mode)) {
                        int sub = openat(dirfd, de->d_name,
                                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        r = sub < 0 ? -errno : tree_measure(sub, depth + 1, u);
                }
        }
        closedir(d);
        return r;
}

static int fsync_dir_of(const char *path)
{
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", path);
        _cleanup_close_ int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

static int fsync_path(const char *path)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

int vm_rootdisk_cache_build(const char *rootfs_dir, const char *cache_path, uint64_t min_bytes,
                            struct cap_error *err)
{
        if (access(cache_path, F_OK) == 0)
                return 0;
        char mkfs[PATH_MAX];
        int r = vm_tool_find("mkfs.ext4", mkfs, sizeof(mkfs), err);
        if (r < 0)
                return cap_error_prefix(err, "root disk cache %s", cache_path);
        int dfd = open(rootfs_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return cap_error_errno(err, -errno, "root disk cache: open rootfs %s", rootfs_dir);
        struct tree_usage u = {0};
        if ((r = tree_measure(dfd, 0, &u)) < 0)
                return cap_error_errno(err, r, "root disk cache: measure %s", rootfs_dir);
        uint64_t size = vm_rootdisk_image_size(u.bytes, min_bytes);
        char tmp[PATH_MAX], size_arg[32], inodes_arg[32];
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", cache_path, (int)getpid()) >=
            sizeof(tmp))
                return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT, "%s: too long",
                                     cache_path);
        snprintf(size_arg, sizeof(size_arg), "%" PRIu64 "k", size / 1024);
        /* room for the image's files and as many again: small-file images run out of inodes
         * long before blocks at mkfs's default ratio */
        uint64_t inodes = u.inodes * 2 + 4096;
        if (inodes < size / 16384)
                inodes = size / 16384;
        snprintf(inodes_arg, sizeof(inodes_arg), "%" PRIu64, inodes);
        unlink(tmp);
        const char *const argv[] = {mkfs,
                                    "-q",
                                    "-F",
                                    "-m",
                                    "0",
                                    "-N",
                                    inodes_arg,
                                    "-E",
                                    "root_owner=0:0",
                                    "-L",
                                    "capsule-root",
                                    "-d",
                                    rootfs_dir,
                                    tmp,
                                    size_arg,
                                    NULL};
        if ((r = spawn_check(argv, NULL, err)) < 0) {
                unlink(tmp);
                return cap_error_prefix(err, "root disk cache %s", cache_path);
        }
        if ((r = fsync_path(tmp)) < 0 || (rename(tmp, cache_path) < 0 && (r = -errno)) ||
            (r = fsync_dir_of(cache_path)) < 0) {
                unlink(tmp);
                return cap_error_errno(err, r, "root disk cache: write %s", cache_path);
        }
        return 0;
}

/* Copies src to dst extent by extent, leaving holes as holes. */
static int sparse_copy(int src, int dst, off_t size)
{
        off_t pos = 0;
        while (pos < size) {
                off_t data = lseek(src, pos, SEEK_DATA);
                if (data < 0) {
                        if (errno == ENXIO)
                                break; /* only a hole is left */
                        return -errno;
                }
                off_t hole = lseek(src, data, SEEK_HOLE);
                if (hole < 0)
                        return -errno;
                off_t in = data, out = data;
                while (in < hole) {
                        ssize_t n = copy_file_range(src, &in, dst, &out, (size_t)(hole - in), 0);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP ||
                                      errno == EINVAL)) {
                                char buf[1 << 16];
                                size_t want = (size_t)(hole - in) < sizeof(buf)
                                                  ? (size_t)(hole - in)
                                                  : sizeof(buf);
                                n = pread(src, buf, want, in);
                                if (n > 0 && pwrite(dst, buf, (size_t)n, out) != n)
                                        return errno ? -errno : -EIO;
                                if (n > 0) {
                                        in += n;
                                        out += n;
                                }
                        }
                        if (n < 0)
                                return -errno;
                        if (n == 0)
                                return -EIO; /* source shrank under us */
                }
                pos = hole;
        }
        return ftruncate(dst, size) < 0 ? -errno : 0;
}

static int copy_image(const char *cache_path, const char *tmp, bool *reflinked,
                      struct cap_error *err)
{
        _cleanup_close_ int src = open(cache_path, O_RDONLY | O_CLOEXEC);
        if (src < 0)
                return cap_error_errno(err, -errno, "open %s", cache_path);
        struct stat st;
        if (fstat(src, &st) < 0)
                return cap_error_errno(err, -errno, "stat %s", cache_path);
        _cleanup_close_ int dst = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (dst < 0)
                return cap_error_errno(err, -errno, "create %s", tmp);
        int r = 0;
        *reflinked = ioctl(dst, FICLONE, src) == 0;
        if (!*reflinked)
                r = sparse_copy(src, dst, st.st_size);
        if (r < 0 || fsync(dst) < 0)
                return cap_error_errno(err, r < 0 ? r : -errno, "copy %s to %s", cache_path, tmp);
        return 0;
}

static int grow(const char *path, uint64_t size_bytes, struct cap_error *err)
{
        struct stat st;
        if (stat(path, &st) < 0)
                return cap_error_errno(err, -errno, "stat %s", path);
        if (size_bytes == 0 || size_bytes == (uint64_t)st.st_size)
                return 0;
        if (size_bytes < (uint64_t)st.st_size)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "disk size %" PRIu64 " bytes is smaller than the image's "
                                     "root filesystem (%lld bytes)",
                                     size_bytes, (long long)st.st_size);
        char resize[PATH_MAX];
        int r = vm_tool_find("resize2fs", resize, sizeof(resize), err);
        if (r < 0)
                return r;
        if (truncate(path, (off_t)size_bytes) < 0)
                return cap_error_errno(err, -errno, "grow %s", path);
        const char *const argv[] = {resize, path, NULL};
        return spawn_check(argv, NULL, err);
}

int vm_rootdisk_clone(const char *cache_path, const char *vm_disk_path, uint64_t size_bytes,
                      bool *reflinked, struct cap_error *err)
{
        char tmp[PATH_MAX];
        bool ref = false;
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", vm_disk_path, (int)getpid()) >=
            sizeof(tmp))
                return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT, "%s: too long",
                                     vm_disk_path);
        size_bytes = (size_bytes + MIB - 1) / MIB * MIB;
        unlink(tmp);
        int r = copy_image(cache_path, tmp, &ref, err);
        if (r == 0)
                r = grow(tmp, size_bytes, err);
        if (r == 0 && (r = fsync_path(tmp)) < 0)
                cap_error_errno(err, r, "fsync %s", tmp);
        if (r == 0 && rename(tmp, vm_disk_path) < 0)
                r = cap_error_errno(err, -errno, "rename %s", vm_disk_path);
        if (r < 0) {
                unlink(tmp);
                return cap_error_prefix(err, "root disk %s", vm_disk_path);
        }
        if (reflinked)
                *reflinked = ref;
        return 0;
}

const struct vm_rootdisk_ops vm_rootdisk_file_ops = {
    .name = "file",
    .cache_build = vm_rootdisk_cache_build,
    .clone = vm_rootdisk_clone,
};
