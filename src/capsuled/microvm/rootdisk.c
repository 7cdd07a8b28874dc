/* Root disks, the part both backends share (sizes, measuring the rootfs) and the file backend:
 * mkfs.ext4 -d into a cache file, reflink or sparse copy per VM, grown with resize2fs (see
 * rootdisk.h; the LVM thin backend is rootdisk_lvm.c). */
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
#include "common/fault.h"
#include "common/fs.h"
#include "common/log.h"
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

uint64_t vm_rootdisk_inodes(uint64_t files, uint64_t bytes)
{
        uint64_t inodes = files * 2 + 4096;
        if (inodes < bytes / 16384)
                inodes = bytes / 16384;
        return inodes;
}

bool vm_rootdisk_key_ok(const char *key)
{
        size_t n = key ? strlen(key) : 0;
        return n >= 12 && n <= 64 && strspn(key, "0123456789abcdef") == n;
}

int vm_rootdisk_origin_key(const char *origin, char *buf, size_t len)
{
        const char *base = strrchr(origin, '/');
        base = base ? base + 1 : origin;
        size_t pl = strlen(VM_ROOTDISK_LV_CACHE), n = strlen(base);
        if (strncmp(base, VM_ROOTDISK_LV_CACHE, pl) == 0) {
                base += pl;
                n -= pl;
        } else if (n > 5 && strcmp(base + n - 5, ".ext4") == 0) {
                n -= 5;
        } else {
                return -EINVAL;
        }
        if (n >= len)
                return -EINVAL;
        memcpy(buf, base, n);
        buf[n] = '\0';
        return vm_rootdisk_key_ok(buf) ? 0 : -EINVAL;
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

int vm_rootdisk_measure(const char *rootfs_dir, uint64_t *bytes, uint64_t *inodes,
                        struct cap_error *err)
{
        int dfd = open(rootfs_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return cap_error_errno(err, -errno, "open rootfs %s", rootfs_dir);
        struct tree_usage u = {0};
        int r = tree_measure(dfd, 0, &u);
        if (r < 0)
                return cap_error_errno(err, r, "measure %s", rootfs_dir);
        *bytes = u.bytes;
        *inodes = u.inodes;
        return 0;
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
        uint64_t files = 0, bytes = 0;
        if ((r = vm_rootdisk_measure(rootfs_dir, &bytes, &files, err)) < 0)
                return cap_error_prefix(err, "root disk cache");
        uint64_t size = vm_rootdisk_image_size(bytes, min_bytes);
        char tmp[PATH_MAX], size_arg[32], inodes_arg[32];
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", cache_path, (int)getpid()) >=
            sizeof(tmp))
                return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT, "%s: too long",
                                     cache_path);
        snprintf(size_arg, sizeof(size_arg), "%" PRIu64 "k", size / 1024);
        snprintf(inodes_arg, sizeof(inodes_arg), "%" PRIu64, vm_rootdisk_inodes(files, size));
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

/* ---- the file backend ---------------------------------------------------------------------- */

struct file_rootdisk {
        struct vm_rootdisk base;
        char images[PATH_MAX]; /* ROOT/vm-images: KEY.ext4 */
        char vms[PATH_MAX];    /* ROOT/vms: NAME/root.ext4 */
};

#define FR(rd) ((struct file_rootdisk *)(rd))
#define FILE_VM_DISK "root.ext4"

static int file_cache_path(struct vm_rootdisk *rd, const char *key, char *buf, size_t len,
                           struct cap_error *err)
{
        if (!vm_rootdisk_key_ok(key))
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "bad image key \"%s\"", key);
        if ((size_t)snprintf(buf, len, "%s/%s.ext4", FR(rd)->images, key) >= len)
                return cap_error_set(err, -ENAMETOOLONG, CAP_INTERNAL, "%s: path too long",
                                     FR(rd)->images);
        return 0;
}

static int file_cache_find(struct vm_rootdisk *rd, const char *key, uint64_t *bytes,
                           struct cap_error *err)
{
        char path[PATH_MAX];
        int r = file_cache_path(rd, key, path, sizeof(path), err);
        if (r < 0)
                return r;
        struct stat st;
        if (stat(path, &st) < 0)
                return errno == ENOENT ? 0 : cap_error_errno(err, -errno, "stat %s", path);
        *bytes = (uint64_t)st.st_size;
        return 1;
}

static int file_cache_build(struct vm_rootdisk *rd, const char *key, const char *rootfs_dir,
                            uint64_t min_bytes, struct cap_error *err)
{
        char path[PATH_MAX];
        int r = file_cache_path(rd, key, path, sizeof(path), err);
        return r < 0 ? r : vm_rootdisk_cache_build(rootfs_dir, path, min_bytes, err);
}

static int file_vm_disk_create(struct vm_rootdisk *rd, const char *key, const char *name,
                               const char *dir, uint64_t size_bytes, struct vm_rootdisk_disk *out,
                               struct cap_error *err)
{
        (void)name;
        char cache[PATH_MAX];
        int r = file_cache_path(rd, key, cache, sizeof(cache), err);
        if (r < 0)
                return r;
        memset(out, 0, sizeof(*out));
        if ((size_t)snprintf(out->path, sizeof(out->path), "%s/" FILE_VM_DISK, dir) >=
            sizeof(out->path))
                return cap_error_set(err, -ENAMETOOLONG, CAP_INTERNAL, "%s: path too long", dir);
        if ((r = vm_rootdisk_clone(cache, out->path, size_bytes, &out->shared, err)) < 0)
                return r;
        struct stat st;
        if (stat(out->path, &st) < 0)
                return cap_error_errno(err, -errno, "stat %s", out->path);
        out->bytes = (uint64_t)st.st_size;
        snprintf(out->what, sizeof(out->what), "%s", out->path);
        snprintf(out->origin, sizeof(out->origin), "%s", cache);
        return 0;
}

static int file_vm_disk_remove(struct vm_rootdisk *rd, const char *name, const char *dir,
                               struct cap_error *err)
{
        (void)rd, (void)name;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/" FILE_VM_DISK, dir);
        if (unlink(path) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "remove %s", path);
        return 0;
}

/* The name a cache takes while it is removed: a temp name (cleanup removes it, nothing uses it). */
#define FILE_CACHE_REMOVING ".tmp.rm"

/* Step 1 renames KEY.ext4 away (one atomic, fsync'd directory change: from then on there is no
 * cache of KEY), step 2 unlinks the renamed file. A crash between leaves KEY.ext4.tmp.rm, which
 * the next start's cleanup removes as any temp file. */
static int file_cache_remove(struct vm_rootdisk *rd, const char *key, char *what, size_t len,
                             struct cap_error *err)
{
        char path[PATH_MAX], gone[PATH_MAX + 16];
        int r = file_cache_path(rd, key, path, sizeof(path), err);
        if (r < 0)
                return r;
        snprintf(what, len, "%s", path);
        snprintf(gone, sizeof(gone), "%s" FILE_CACHE_REMOVING, path);
        if (rename(path, gone) < 0)
                return errno == ENOENT ? 0 : cap_error_errno(err, -errno, "rename %s", path);
        if ((r = fsync_dir_of(path)) < 0)
                return cap_error_errno(err, r, "fsync the directory of %s", path);
        fault_point(VM_ROOTDISK_FAULT_REMOVE);
        if (unlink(gone) < 0)
                return cap_error_errno(err, -errno, "remove %s", gone);
        return 0;
}

/* "KEY.ext4.tmp.PID": a cache build or a clone a crash interrupted. */
static bool is_temp_name(const char *n)
{
        return strstr(n, ".tmp.") != NULL;
}

/* Calls fn(dirfd, entry) for each entry of dir but . and .. */
static int dir_each(const char *dir, void (*fn)(int dfd, const char *entry, void *ud), void *ud)
{
        DIR *d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        struct dirent *de;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        fn(dirfd(d), de->d_name, ud);
        closedir(d);
        return 0;
}

static void drop_temp(int dfd, const char *entry, void *ud)
{
        (void)ud;
        if (is_temp_name(entry) && unlinkat(dfd, entry, 0) == 0)
                log_warn("microvm: root disks: removed %s (a %s a crash interrupted)", entry,
                         strstr(entry, FILE_CACHE_REMOVING) ? "cache removal" : "build");
}

struct vm_walk {
        vm_rootdisk_running_fn is_running;
        void *ud;
        size_t disks;
};

/* ROOT/vms/NAME: the temp files of an interrupted clone, and the disk when NAME does not run. */
static void drop_vm_leftovers(int dfd, const char *entry, void *ud)
{
        struct vm_walk *w = ud;
        _cleanup_close_ int fd =
            openat(dfd, entry, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return;
        DIR *d = fdopendir(fd);
        if (!d)
                return;
        fd = -1; /* the DIR owns it */
        bool running = w->is_running && w->is_running(entry, w->ud);
        struct dirent *de;
        while ((de = readdir(d))) {
                bool tmp = strncmp(de->d_name, FILE_VM_DISK ".tmp.", strlen(FILE_VM_DISK) + 5) == 0;
                bool disk = strcmp(de->d_name, FILE_VM_DISK) == 0;
                if ((tmp || (disk && !running)) && unlinkat(dirfd(d), de->d_name, 0) == 0)
                        log_info("microvm: root disks: removed %s/%s (%s)", entry, de->d_name,
                                 tmp ? "a clone a crash interrupted" : "the VM does not run");
        }
        closedir(d);
}

static int file_cleanup(struct vm_rootdisk *rd, vm_rootdisk_running_fn is_running, void *ud,
                        struct cap_error *err)
{
        struct vm_walk w = {.is_running = is_running, .ud = ud};
        int r = dir_each(FR(rd)->images, drop_temp, NULL);
        if (r == 0)
                r = dir_each(FR(rd)->vms, drop_vm_leftovers, &w);
        return r < 0 ? cap_error_errno(err, r, "root disks: clean up") : 0;
}

/* Whether a directory entry of ROOT/vm-images is a whole cache: KEY.ext4 into key. */
static bool cache_entry_key(const char *entry, char *key, size_t len)
{
        return !is_temp_name(entry) && vm_rootdisk_origin_key(entry, key, len) == 0;
}

static void count_cache(int dfd, const char *entry, void *ud)
{
        (void)dfd;
        char key[80];
        if (cache_entry_key(entry, key, sizeof(key)))
                (*(size_t *)ud)++;
}

struct cache_walk {
        vm_rootdisk_cache_fn fn;
        void *ud;
        int r;
};

static void list_cache(int dfd, const char *entry, void *ud)
{
        struct cache_walk *w = ud;
        char key[80];
        struct stat st;
        if (w->r < 0 || !cache_entry_key(entry, key, sizeof(key)) ||
            fstatat(dfd, entry, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                return;
        w->r = w->fn(key, (uint64_t)st.st_size, w->ud);
}

static int file_cache_list(struct vm_rootdisk *rd, vm_rootdisk_cache_fn fn, void *ud,
                           struct cap_error *err)
{
        struct cache_walk w = {.fn = fn, .ud = ud};
        int r = dir_each(FR(rd)->images, list_cache, &w);
        if (r < 0)
                return cap_error_errno(err, r, "root disks: list %s", FR(rd)->images);
        return w.r < 0 ? cap_error_errno(err, w.r, "root disks: list %s", FR(rd)->images) : 0;
}

static void count_vm_disk(int dfd, const char *entry, void *ud)
{
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/" FILE_VM_DISK, entry);
        if (faccessat(dfd, p, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                (*(size_t *)ud)++;
}

static int file_census(struct vm_rootdisk *rd, size_t *caches, size_t *disks, struct cap_error *err)
{
        *caches = *disks = 0;
        int r = dir_each(FR(rd)->images, count_cache, caches);
        if (r == 0)
                r = dir_each(FR(rd)->vms, count_vm_disk, disks);
        return r < 0 ? cap_error_errno(err, r, "root disks: count") : 0;
}

static void file_free(struct vm_rootdisk *rd)
{
        free(rd);
}

static const struct vm_rootdisk_ops file_ops = {
    .cache_find = file_cache_find,
    .cache_build = file_cache_build,
    .vm_disk_create = file_vm_disk_create,
    .vm_disk_remove = file_vm_disk_remove,
    .cache_list = file_cache_list,
    .cache_remove = file_cache_remove,
    .cleanup = file_cleanup,
    .census = file_census,
    .free = file_free,
};

int vm_rootdisk_file_open(const char *images_dir, const char *vms_dir, struct vm_rootdisk **out,
                          struct cap_error *err)
{
        struct file_rootdisk *f = calloc(1, sizeof(*f));
        if (!f)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        f->base.name = "file";
        f->base.ops = &file_ops;
        snprintf(f->base.where, sizeof(f->base.where), "%s", images_dir);
        snprintf(f->images, sizeof(f->images), "%s", images_dir);
        snprintf(f->vms, sizeof(f->vms), "%s", vms_dir);
        if (mkdir_p(images_dir, 0700) < 0) {
                int e = -errno;
                free(f);
                return cap_error_errno(err, e, "create %s", images_dir);
        }
        *out = &f->base;
        return 0;
}

void vm_rootdisk_free(struct vm_rootdisk *rd)
{
        if (rd)
                rd->ops->free(rd);
}
