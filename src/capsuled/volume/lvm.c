/* The LVM thin volume backend (on a Capsule, design §8): each volume NAME is a thin LV
 * VG/vol-NAME in the thin pool VG/POOL that PID 1 made on the PERM partition (init/perm.c),
 * formatted ext4 and mounted at MOUNT_DIR/NAME (/run/capsule/volumes/NAME on a Capsule: a tmpfs
 * directory, so volume mounts never nest under /perm and a stale mount point cannot survive a
 * reboot). The "vol-" prefix keeps volume LVs apart from perm/pool and from the names LVM
 * reserves (snapshot*, pvmove*).
 *
 * It drives the lvm2 command-line tools with --reportformat json (there is no stable C API; lvs.c
 * parses the report),
 * through spawn.c (an argv, never a shell) and the image's /etc/lvm/lvm.conf (no udev, no
 * monitoring, no devices file), like perm.c.
 *
 * Crash safety mirrors the file backend: lvcreate sets the LV tag "capsule_incomplete" in the same
 * metadata commit that creates the LV, and the tag is removed only after mkfs succeeded, so an LV
 * without the tag always holds a whole filesystem. list() never reports tagged LVs and opening the
 * backend removes them (creations that never finished and were never acknowledged). Grows are
 * lvextend then resize2fs; both are idempotent, so a grow a crash interrupted is finished by the
 * next resize() (the manager's recovery calls it at every start). The same lvcreate also sets
 * "capsule_owner_ID" (the creating store's id), which owner() reports.
 *
 * PID 1 activates only LV perm; each volume LV (and with it the pool) is activated here when it is
 * mounted, so an LV that cannot be activated costs that volume only. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/cleanup.h"
#include "common/fault.h"
#include "common/log.h"
#include "lvs.h"
#include "spawn.h"
#include "volume.h"

#define LV_PREFIX "vol-"
#define TAG_INCOMPLETE "capsule_incomplete"
#define TAG_SNAPSHOT "capsule_snapshot"
#define SNAP_PREFIX "snap-"
#define TAG_OWNER_PREFIX "capsule_owner_"

struct lvm_backend {
        struct volume_backend base;
        char *vg, *pool, *mount_dir;
};

#define LB(b) ((struct lvm_backend *)(b))

static int oom(struct cap_error *err)
{
        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

/* ---- Pure helpers (unit-tested in tests/unit/test-volume-lvm.c) ------------------------------ */

int volume_lvm_size_arg(uint64_t bytes, char *buf, size_t len)
{
        /* LVM rounds a size up to whole extents itself; "b" means bytes. */
        int n = snprintf(buf, len, "%llub", (unsigned long long)bytes);
        return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

const char *volume_lvm_volume_name(const char *lv_name)
{
        size_t l = strlen(LV_PREFIX);
        if (strncmp(lv_name, LV_PREFIX, l) != 0 || !lv_name[l])
                return NULL;
        return lv_name + l;
}

/* The ID of the first tag "capsule_owner_ID" (malloc'd), NULL when there is none. */
static char *tag_owner(const char *tags)
{
        size_t pl = strlen(TAG_OWNER_PREFIX);
        for (const char *p = tags; p && *p;) {
                const char *comma = strchr(p, ',');
                size_t l = comma ? (size_t)(comma - p) : strlen(p);
                if (l > pl && strncmp(p, TAG_OWNER_PREFIX, pl) == 0)
                        return strndup(p + pl, l - pl);
                p = comma ? comma + 1 : NULL;
        }
        return NULL;
}

void volume_lvm_lvs_free(struct volume_lvm_lv *lvs, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(lvs[i].lv_name);
                free(lvs[i].pool_lv);
                free(lvs[i].owner);
        }
        free(lvs);
}

int volume_lvm_parse_lvs(const char *json, struct volume_lvm_lv **out, size_t *n,
                         struct cap_error *err)
{
        *out = NULL;
        *n = 0;
        struct lvs_row *rows = NULL;
        size_t count = 0;
        int r = lvs_parse(json, &rows, &count, err);
        if (r < 0)
                return r;
        struct volume_lvm_lv *lvs = count ? calloc(count, sizeof(*lvs)) : NULL;
        if (count && !lvs) {
                lvs_rows_free(rows, count);
                return oom(err);
        }
        for (size_t i = 0; i < count; i++) {
                struct lvs_row *row = &rows[i];
                lvs[i] = (struct volume_lvm_lv){
                    .lv_name = row->lv_name,
                    .pool_lv = row->pool_lv,
                    .size_bytes = row->size_bytes,
                    .data_percent = row->data_percent,
                    .incomplete = lvs_tag_listed(row->lv_tags, TAG_INCOMPLETE),
                    .snapshot = lvs_tag_listed(row->lv_tags, TAG_SNAPSHOT),
                    .owner = tag_owner(row->lv_tags),
                };
                row->lv_name = row->pool_lv = NULL; /* now lvs[i]'s */
        }
        lvs_rows_free(rows, count);
        *out = lvs;
        *n = count;
        return 0;
}

/* ---- Running the lvm2 tools ------------------------------------------------------------------ */


/* Every LV of the VG. */
static int lvm_report(struct volume_backend *b, struct volume_lvm_lv **lvs, size_t *n,
                      struct cap_error *err)
{
        _cleanup_free_ char *out = NULL;
        const char *args[] = {"lvs",     "--reportformat",
                              "json",    "--units",
                              "b",       "--nosuffix",
                              "-o",      "lv_name,lv_size,data_percent,lv_tags,pool_lv",
                              LB(b)->vg, NULL};
        int r = spawn_lvm(args, &out, err);
        if (r < 0)
                return r;
        return volume_lvm_parse_lvs(out, lvs, n, err);
}

/* Finds volume `name`'s LV: 1 and *lv filled (complete or not), 0 when absent. */
static int lv_find(struct volume_backend *b, const char *name, struct volume_lvm_lv *lv,
                   struct cap_error *err)
{
        struct volume_lvm_lv *lvs = NULL;
        size_t n = 0;
        int r = lvm_report(b, &lvs, &n, err);
        if (r < 0)
                return r;
        int found = 0;
        for (size_t i = 0; i < n; i++) {
                const char *vn = volume_lvm_volume_name(lvs[i].lv_name);
                if (vn && strcmp(vn, name) == 0) {
                        *lv = lvs[i];
                        lv->lv_name = TAKE_PTR(lvs[i].lv_name);
                        lv->pool_lv = TAKE_PTR(lvs[i].pool_lv);
                        lv->owner = TAKE_PTR(lvs[i].owner);
                        found = 1;
                        break;
                }
        }
        volume_lvm_lvs_free(lvs, n);
        return found;
}

static void lv_clear(struct volume_lvm_lv *lv)
{
        free(lv->lv_name);
        free(lv->pool_lv);
        free(lv->owner);
        *lv = (struct volume_lvm_lv){0};
}

/* "VG/vol-NAME" (for the tools) or "/dev/VG/vol-NAME" (the block device). */
static char *lv_ref(struct volume_backend *b, const char *name, bool dev)
{
        char *p = NULL;
        if (asprintf(&p, "%s%s/" LV_PREFIX "%s", dev ? "/dev/" : "", LB(b)->vg, name) < 0)
                return NULL;
        return p;
}

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Mounts ---------------------------------------------------------------------------------- */

static char *lvm_path(struct volume_backend *b, const char *name)
{
        char *p = NULL;
        if (asprintf(&p, "%s/%s", LB(b)->mount_dir, name) < 0)
                return NULL;
        return p;
}

/* Whether something is mounted at `target` (no escaping needed: our paths are DNS labels under a
 * plain directory); fills the mounted device number. 1 mounted, 0 not, negative on error. */
static int find_mount(const char *target, dev_t *devno, struct cap_error *err)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return cap_error_errno(err, -errno, "open /proc/self/mountinfo");
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        int found = 0;
        while (getline(&line, &cap, f) > 0) {
                unsigned maj, min;
                char mnt[4096];
                /* id parent maj:min root mountpoint ... */
                if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mnt) != 3)
                        continue;
                if (strcmp(mnt, target) == 0) {
                        *devno = makedev(maj, min);
                        found = 1; /* keep going: the last one is the topmost */
                }
        }
        return found;
}

/* Makes sure the LV's device node exists (activates the LV when it is not). */
static int lv_activate(struct volume_backend *b, const char *name, struct stat *st,
                       struct cap_error *err)
{
        _cleanup_free_ char *dev = lv_ref(b, name, true);
        _cleanup_free_ char *ref = lv_ref(b, name, false);
        if (!dev || !ref)
                return oom(err);
        if (stat(dev, st) == 0 && S_ISBLK(st->st_mode))
                return 0;
        const char *args[] = {"lvchange", "-ay", "-K", ref, NULL};
        int r = spawn_lvm(args, NULL, err);
        if (r < 0)
                return r;
        if (stat(dev, st) < 0)
                return cap_error_errno(err, -errno, "stat %s", dev);
        return 0;
}

static int lvm_mount(struct volume_backend *b, const char *name, struct cap_error *err)
{
        _cleanup_free_ char *dir = lvm_path(b, name);
        _cleanup_free_ char *dev = lv_ref(b, name, true);
        if (!dir || !dev)
                return oom(err);
        struct stat st;
        int r = lv_activate(b, name, &st, err);
        if (r < 0)
                return r;
        dev_t mounted;
        int m = find_mount(dir, &mounted, err);
        if (m < 0)
                return m;
        if (m == 1) {
                if (mounted == st.st_rdev)
                        return 0;
                return cap_error_set(err, -EEXIST, CAP_FAILED_PRECONDITION,
                                     "%s is already mounted from device %u:%u, not from %s", dir,
                                     major(mounted), minor(mounted), dev);
        }
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return cap_error_errno(err, -errno, "mkdir %s", dir);
        if (mount(dev, dir, "ext4", MS_NOSUID | MS_NODEV, NULL) < 0)
                return cap_error_errno(err, -errno, "mount %s on %s", dev, dir);
        return 0;
}

static int lvm_unmount(struct volume_backend *b, const char *name, struct cap_error *err)
{
        _cleanup_free_ char *dir = lvm_path(b, name);
        if (!dir)
                return oom(err);
        dev_t devno;
        for (;;) {
                int m = find_mount(dir, &devno, err);
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

/* ---- Create, remove, resize ------------------------------------------------------------------ */

static int lv_remove(struct volume_backend *b, const char *name, struct cap_error *err)
{
        _cleanup_free_ char *ref = lv_ref(b, name, false);
        if (!ref)
                return oom(err);
        const char *args[] = {"lvremove", "-f", ref, NULL};
        return spawn_lvm(args, NULL, err);
}

static int format_lv(const char *dev, struct cap_error *err)
{
        /* As in file.c: 4 KiB blocks, no root reservation, root-owned top directory. A new thin
         * LV reads as zeroes, so mkfs need not discard. */
        const char *mkfs[] = {
            "mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-E", "root_owner=0:0,nodiscard",
            dev,         NULL};
        struct spawn_opts opts = {.timeout_ms = 300000};
        return spawn_check(mkfs, &opts, err);
}

static int lvm_create(struct volume_backend *b, const char *name, uint64_t size,
                      const char *owner, struct cap_error *err)
{
        struct volume_lvm_lv lv = {0};
        int r = lv_find(b, name, &lv, err);
        if (r < 0)
                return r;
        bool incomplete = lv.incomplete;
        lv_clear(&lv);
        if (r == 1 && !incomplete)
                return cap_error_set(err, -EEXIST, CAP_ALREADY_EXISTS,
                                     "LV %s/" LV_PREFIX "%s exists", LB(b)->vg, name);
        if (r == 1 && (r = lv_remove(b, name, err)) < 0) /* a half-made one: start again */
                return r;
        char sz[32], lvname[128], pool[256], owner_tag[128];
        volume_lvm_size_arg(size, sz, sizeof(sz));
        snprintf(owner_tag, sizeof(owner_tag), TAG_OWNER_PREFIX "%s", owner);
        snprintf(lvname, sizeof(lvname), LV_PREFIX "%s", name);
        snprintf(pool, sizeof(pool), "%s/%s", LB(b)->vg, LB(b)->pool);
        int64_t t0 = now_ms();
        /* both tags in the metadata commit that creates the LV */
        const char *create[] = {"lvcreate", "-y",       "--thin",       "-V", sz,     "--addtag",
                                TAG_INCOMPLETE, "--addtag", owner_tag, "-n", lvname, pool,
                                NULL};
        if ((r = spawn_lvm(create, NULL, err)) < 0)
                return r;
        fault_point("volume-after-lvcreate");
        int64_t t1 = now_ms();
        _cleanup_free_ char *dev = lv_ref(b, name, true);
        _cleanup_free_ char *ref = lv_ref(b, name, false);
        if (!dev || !ref)
                return oom(err);
        struct stat st;
        if ((r = lv_activate(b, name, &st, err)) < 0 || (r = format_lv(dev, err)) < 0) {
                struct cap_error ignored = {0};
                lv_remove(b, name, &ignored); /* else the next open or create removes it */
                return r;
        }
        int64_t t2 = now_ms();
        fault_point("volume-after-mkfs");
        const char *done[] = {"lvchange", "--deltag", TAG_INCOMPLETE, ref, NULL};
        if ((r = spawn_lvm(done, NULL, err)) < 0)
                return r;
        fault_point("volume-after-rename");
        log_info("volumes: lvm: created %s (%s): lvcreate %lld ms, mkfs.ext4 %lld ms, "
                 "lvchange %lld ms",
                 ref, sz, (long long)(t1 - t0), (long long)(t2 - t1), (long long)(now_ms() - t2));
        return 0;
}

static int lvm_owner(struct volume_backend *b, const char *name, char **owner,
                     struct cap_error *err)
{
        *owner = NULL;
        struct volume_lvm_lv lv = {0};
        int r = lv_find(b, name, &lv, err);
        if (r == 0 || (r == 1 && lv.incomplete)) /* a half-made LV is not a volume yet */
                r = cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "no LV %s/" LV_PREFIX "%s",
                                  LB(b)->vg, name);
        if (r > 0) {
                *owner = TAKE_PTR(lv.owner);
                r = 0;
        }
        lv_clear(&lv);
        return r;
}

static int lvm_remove(struct volume_backend *b, const char *name, struct cap_error *err)
{
        int r = lvm_unmount(b, name, err);
        if (r < 0)
                return r;
        struct volume_lvm_lv lv = {0};
        r = lv_find(b, name, &lv, err);
        lv_clear(&lv);
        if (r == 1)
                r = lv_remove(b, name, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *dir = lvm_path(b, name);
        if (!dir)
                return oom(err);
        if (rmdir(dir) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "rmdir %s", dir);
        return 0;
}

/* The filesystem's size from the ext4 superblock at byte 1024 of the device. */
static int ext4_fs_bytes(const char *dev, uint64_t *bytes)
{
        _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
        uint8_t sb[1024];
        if (fd < 0 || pread(fd, sb, sizeof(sb), 1024) != (ssize_t)sizeof(sb))
                return -EIO;
        return volume_ext4_fs_bytes(sb, bytes);
}

static int lvm_resize(struct volume_backend *b, const char *name, uint64_t new_size,
                      struct cap_error *err)
{
        struct volume_lvm_lv lv = {0};
        int r = lv_find(b, name, &lv, err);
        uint64_t lv_size = lv.size_bytes;
        lv_clear(&lv);
        if (r < 0)
                return r;
        _cleanup_free_ char *ref = lv_ref(b, name, false);
        _cleanup_free_ char *dev = lv_ref(b, name, true);
        _cleanup_free_ char *dir = lvm_path(b, name);
        if (!ref || !dev || !dir)
                return oom(err);
        if (r == 0)
                return cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "LV %s not found", ref);
        /* LVM rounds sizes up to whole extents: an LV larger by less than an extent is that size.
         */
        if (lv_size > new_size + (4u << 20))
                return cap_error_set(err, -EINVAL, CAP_FAILED_PRECONDITION,
                                     "%s is larger than %llu bytes: volumes can only grow", ref,
                                     (unsigned long long)new_size);
        struct stat st;
        if ((r = lv_activate(b, name, &st, err)) < 0)
                return r;
        uint64_t fs_bytes = 0;
        if ((r = ext4_fs_bytes(dev, &fs_bytes)) < 0)
                return cap_error_errno(err, r, "%s: read the ext4 superblock", dev);
        if (lv_size >= new_size && fs_bytes + (1u << 20) >= lv_size)
                return 0;
        int64_t t0 = now_ms();
        if (lv_size < new_size) {
                char sz[32];
                volume_lvm_size_arg(new_size, sz, sizeof(sz));
                const char *ext[] = {"lvextend", "-L", sz, ref, NULL};
                if ((r = spawn_lvm(ext, NULL, err)) < 0)
                        return r;
        }
        int64_t t1 = now_ms();
        dev_t devno;
        int m = find_mount(dir, &devno, err);
        if (m < 0)
                return m;
        struct spawn_opts opts = {.timeout_ms = 600000};
        if (m == 0) {
                /* Offline: resize2fs wants a freshly checked filesystem; e2fsck -p exits 1 when it
                 * fixed something harmless, 4 and up are real problems. */
                const char *fsck[] = {"e2fsck", "-f", "-p", dev, NULL};
                struct spawn_result res;
                r = spawn_run(fsck, &opts, &res, err);
                if (r == 0 && res.exit_code >= 4)
                        r = cap_error_set(err, -EIO, CAP_INTERNAL, "e2fsck %s: exit %d: %s", dev,
                                          res.exit_code, res.errout);
                spawn_result_free(&res);
                if (r < 0)
                        return r;
        }
        const char *resize[] = {"resize2fs", dev, NULL};
        if ((r = spawn_check(resize, &opts, err)) < 0)
                return r;
        log_info("volumes: lvm: grew %s to %llu bytes (%s): lvextend %lld ms, resize2fs %lld ms",
                 ref, (unsigned long long)new_size, m ? "online" : "offline", (long long)(t1 - t0),
                 (long long)(now_ms() - t1));
        return 0;
}

/* ---- Stat, list ------------------------------------------------------------------------------ */

static int lvm_stat(struct volume_backend *b, const char *name, uint64_t *size, uint64_t *used,
                    bool *mounted, struct cap_error *err)
{
        struct volume_lvm_lv lv = {0};
        int r = lv_find(b, name, &lv, err);
        bool incomplete = lv.incomplete;
        *size = lv.size_bytes;
        *used = (uint64_t)((double)lv.size_bytes * lv.data_percent / 100.0);
        lv_clear(&lv);
        if (r < 0)
                return r;
        if (r == 0 || incomplete)
                return cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "LV %s/" LV_PREFIX "%s not found",
                                     LB(b)->vg, name);
        _cleanup_free_ char *dir = lvm_path(b, name);
        if (!dir)
                return oom(err);
        dev_t devno;
        int m = find_mount(dir, &devno, err);
        if (m < 0)
                return m;
        *mounted = m == 1;
        struct statvfs vfs;
        if (m == 1 && statvfs(dir, &vfs) == 0)
                *used = (uint64_t)(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize;
        return 0;
}

static int lvm_list(struct volume_backend *b, char ***names, size_t *n, struct cap_error *err)
{
        struct volume_lvm_lv *lvs = NULL;
        size_t nlv = 0;
        int r = lvm_report(b, &lvs, &nlv, err);
        if (r < 0)
                return r;
        char **out = calloc(nlv + 1, sizeof(*out));
        size_t count = 0;
        if (!out)
                r = oom(err);
        for (size_t i = 0; r == 0 && i < nlv; i++) {
                const char *vn = volume_lvm_volume_name(lvs[i].lv_name);
                if (!vn || lvs[i].incomplete || strcmp(lvs[i].pool_lv, LB(b)->pool) != 0)
                        continue;
                if (!(out[count] = strdup(vn)))
                        r = oom(err);
                else
                        count++;
        }
        volume_lvm_lvs_free(lvs, nlv);
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

/* capsuled serve runs as root on a Capsule: resize2fs can grow a mounted ext4. */
static bool lvm_can_grow_online(struct volume_backend *b)
{
        (void)b;
        return true;
}

static void lvm_free(struct volume_backend *b)
{
        if (!b)
                return;
        free(LB(b)->vg);
        free(LB(b)->pool);
        free(LB(b)->mount_dir);
        free(b);
}

static int lvm_disk(struct volume_backend *b, const char *name, char **path, struct cap_error *err)
{
        struct stat st;
        int r = lv_activate(b, name, &st, err);
        if (r < 0)
                return r;
        if (!(*path = lv_ref(b, name, true)))
                return oom(err);
        return 0;
}

/* ---- Backup snapshots and restore swaps ------------------------------------------------------ */

/* A thin snapshot of vol-NAME (instant, shares the pool), tagged capsule_snapshot so that a
 * crash leaves nothing behind (removed at the next open), mounted ro,noload (the origin may be a
 * mounted ext4 whose journal is not replayed on the read-only copy) at MOUNT_DIR/.SNAP.
 * A microVM's disk is snapshotted the same way: the copy is crash-consistent. */
static int lvm_snapshot(struct volume_backend *b, const char *name, bool in_vm, char **dir,
                        const char **consistency, struct cap_error *err)
{
        (void)in_vm;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char snap[128], origin[256], ref[256], dev[300];
        snprintf(snap, sizeof(snap), SNAP_PREFIX "%s-%lld", name, (long long)ts.tv_sec);
        snprintf(origin, sizeof(origin), "%s/" LV_PREFIX "%s", LB(b)->vg, name);
        snprintf(ref, sizeof(ref), "%s/%s", LB(b)->vg, snap);
        snprintf(dev, sizeof(dev), "/dev/%s/%s", LB(b)->vg, snap);
        const char *create[] = {"lvcreate", "-y", "-s", "-kn", "--addtag", TAG_SNAPSHOT,
                                "-n",       snap, origin, NULL};
        int r = spawn_lvm(create, NULL, err);
        if (r < 0)
                return r;
        const char *act[] = {"lvchange", "-ay", "-K", ref, NULL};
        _cleanup_free_ char *d = NULL;
        if (asprintf(&d, "%s/.%s", LB(b)->mount_dir, snap) < 0)
                r = oom(err);
        if (r == 0)
                r = spawn_lvm(act, NULL, err);
        if (r == 0 && mkdir(d, 0700) < 0 && errno != EEXIST)
                r = cap_error_errno(err, -errno, "mkdir %s", d);
        if (r == 0 && mount(dev, d, "ext4", MS_RDONLY | MS_NOSUID | MS_NODEV, "noload") < 0)
                r = cap_error_errno(err, -errno, "mount %s on %s", dev, d);
        if (r < 0) {
                struct cap_error ignored = {0};
                const char *rm[] = {"lvremove", "-f", ref, NULL};
                spawn_lvm(rm, NULL, &ignored);
                if (d)
                        rmdir(d);
                return r;
        }
        *dir = TAKE_PTR(d);
        *consistency = "snapshot";
        return 0;
}

/* Unmounts (from MOUNT_DIR/.SNAP) and removes snapshot LV `snap`. */
static int snapshot_remove(struct volume_backend *b, const char *snap, struct cap_error *err)
{
        char ref[256], dir[512];
        snprintf(ref, sizeof(ref), "%s/%s", LB(b)->vg, snap);
        snprintf(dir, sizeof(dir), "%s/.%s", LB(b)->mount_dir, snap);
        if (umount2(dir, UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT)
                log_warn("volumes: umount %s: %s", dir, strerror(errno));
        rmdir(dir);
        const char *rm[] = {"lvremove", "-f", ref, NULL};
        return spawn_lvm(rm, NULL, err);
}

/* At open: the snapshots of backups a crash interrupted. */
static void snapshots_remove_all(struct volume_backend *b, struct volume_lvm_lv *lvs, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (!lvs[i].snapshot || strncmp(lvs[i].lv_name, SNAP_PREFIX, strlen(SNAP_PREFIX)))
                        continue;
                struct cap_error e = {0};
                if (snapshot_remove(b, lvs[i].lv_name, &e) < 0)
                        log_warn("volumes: removing backup snapshot %s: %s", lvs[i].lv_name, e.msg);
                else
                        log_warn("volumes: removed leftover backup snapshot %s/%s", LB(b)->vg,
                                 lvs[i].lv_name);
        }
}

static void lvm_snapshot_release(struct volume_backend *b, const char *name, const char *dir)
{
        (void)name;
        const char *base = strrchr(dir, '/');
        struct cap_error e = {0};
        if (base && base[1] == '.' && snapshot_remove(b, base + 2, &e) < 0)
                log_warn("volumes: removing backup snapshot %s: %s (removed at the next start)",
                         base + 2, e.msg);
}

static int lv_rename(struct volume_backend *b, const char *from, const char *to,
                     struct cap_error *err)
{
        char f[128], t[128];
        snprintf(f, sizeof(f), LV_PREFIX "%s", from);
        snprintf(t, sizeof(t), LV_PREFIX "%s", to);
        const char *args[] = {"lvrename", LB(b)->vg, f, t, NULL};
        return spawn_lvm(args, NULL, err);
}

/* vol-NAME -> vol-NAME.old, vol-FROM -> vol-NAME, remove vol-NAME.old. A crash between the
 * renames leaves vol-NAME.old without vol-NAME: the next open renames it back. */
static int lvm_replace(struct volume_backend *b, const char *name, const char *from,
                       struct cap_error *err)
{
        char old[128];
        snprintf(old, sizeof(old), "%s.old", name);
        int r = lvm_unmount(b, name, err);
        if (r == 0)
                r = lvm_unmount(b, from, err);
        if (r == 0)
                r = lv_rename(b, name, old, err);
        if (r < 0)
                return r;
        if ((r = lv_rename(b, from, name, err)) < 0) {
                struct cap_error ignored = {0};
                lv_rename(b, old, name, &ignored);
                return r;
        }
        struct cap_error e = {0};
        if (lv_remove(b, old, &e) < 0)
                log_warn("volumes: %s (removed at the next start)", e.msg);
        _cleanup_free_ char *dir = lvm_path(b, from);
        if (dir)
                rmdir(dir);
        return 0;
}

static const struct volume_backend_ops lvm_ops = {
    .snapshot = lvm_snapshot,
    .snapshot_release = lvm_snapshot_release,
    .replace = lvm_replace,
    .create = lvm_create,
    .owner = lvm_owner,
    .remove = lvm_remove,
    .resize = lvm_resize,
    .mount = lvm_mount,
    .unmount = lvm_unmount,
    .stat = lvm_stat,
    .path = lvm_path,
    .disk = lvm_disk,
    .list = lvm_list,
    .can_grow_online = lvm_can_grow_online,
    .free = lvm_free,
};

/* Removes LVs tagged incomplete: creations that never finished and were never acknowledged. */
static void discard_partial(struct volume_backend *b, struct volume_lvm_lv *lvs, size_t n)
{
        snapshots_remove_all(b, lvs, n);
        for (size_t i = 0; i < n; i++) {
                const char *on = volume_lvm_volume_name(lvs[i].lv_name);
                size_t ol = on ? strlen(on) : 0;
                if (ol > 4 && strcmp(on + ol - 4, ".old") == 0) {
                        /* a restore's swap cut between its renames: put the old one back */
                        char vol[128];
                        snprintf(vol, sizeof(vol), LV_PREFIX "%.*s", (int)(ol - 4), on);
                        bool have = false;
                        for (size_t j = 0; j < n; j++)
                                have |= strcmp(lvs[j].lv_name, vol) == 0;
                        struct cap_error e = {0};
                        char base[128];
                        snprintf(base, sizeof(base), "%.*s", (int)(ol - 4), on);
                        if (!have && lv_rename(b, on, base, &e) < 0)
                                log_warn("volumes: %s", e.msg);
                        else if (!have)
                                log_warn("volumes: put back %s/%s after an interrupted restore",
                                         LB(b)->vg, vol);
                }
        }
        for (size_t i = 0; i < n; i++) {
                const char *vn = volume_lvm_volume_name(lvs[i].lv_name);
                if (!vn || !lvs[i].incomplete)
                        continue;
                log_warn("volumes: discarding half-created LV %s/%s", LB(b)->vg, lvs[i].lv_name);
                struct cap_error e = {0};
                if (lv_remove(b, vn, &e) < 0)
                        log_warn("volumes: %s", e.msg);
        }
}

int volume_lvm_backend_new(const char *vg, const char *pool, const char *mount_dir,
                           struct volume_backend **out, struct cap_error *err)
{
        struct lvm_backend *lb = calloc(1, sizeof(*lb));
        if (!lb)
                return oom(err);
        lb->base.name = "lvm-thin";
        lb->base.ops = &lvm_ops;
        lb->vg = strdup(vg);
        lb->pool = strdup(pool);
        lb->mount_dir = strdup(mount_dir);
        if (!lb->vg || !lb->pool || !lb->mount_dir) {
                lvm_free(&lb->base);
                return oom(err);
        }
        struct volume_lvm_lv *lvs = NULL;
        size_t n = 0;
        int r = lvm_report(&lb->base, &lvs, &n, err);
        bool have_pool = false;
        for (size_t i = 0; r == 0 && i < n; i++)
                have_pool |= strcmp(lvs[i].lv_name, pool) == 0;
        if (r == 0 && !have_pool)
                r = cap_error_set(err, -ENOENT, CAP_UNAVAILABLE, "no thin pool %s/%s", vg, pool);
        if (r == 0 && mkdir_p(mount_dir, 0755) < 0)
                r = cap_error_errno(err, -errno, "mkdir %s", mount_dir);
        if (r < 0) {
                volume_lvm_lvs_free(lvs, n);
                lvm_free(&lb->base);
                return cap_error_prefix(err, "volumes: lvm");
        }
        discard_partial(&lb->base, lvs, n);
        volume_lvm_lvs_free(lvs, n);
        *out = &lb->base;
        return 0;
}
