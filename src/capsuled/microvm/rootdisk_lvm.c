/* The LVM thin root disk backend (on a Capsule, design §7): the cache of an image is the thin LV
 * VG/vmimg-KEY in the thin pool PID 1 made for workload storage (init/perm.c; volumes live there
 * too as vol-NAME), and each run of VM NAME gets the thin snapshot VG/vmroot-NAME of it. A thin
 * snapshot shares every block with its origin until written, so a second VM of an image copies
 * nothing, and the VM's writes go to its snapshot only.
 *
 * Crash safety: lvcreate sets the tag capsule_incomplete in the metadata commit that creates the
 * cache LV, and the tag is removed only after mkfs.ext4 -d filled it, so a cache without the tag
 * is always whole; cleanup (at every start of `capsuled serve`) removes tagged caches. A snapshot
 * needs no tag: it is made fresh for every run, and cleanup removes the snapshot of every VM that
 * does not run (a crash between lvcreate and the grow, or a deleted VM whose lvremove never ran).
 *
 * Removing a cache (when its image is deleted) mirrors the build: the tag goes back on first (one
 * metadata commit: from then on it is no cache), then lvremove; a crash between leaves a tagged
 * LV that the next start's cleanup removes like a half-made one.
 *
 * Thin snapshots carry LVM's activation-skip flag by default; lvcreate -kn makes them without it
 * (and -K activates one that has it). Caches are deactivated once built: only snapshots are ever
 * open. It drives the lvm2 tools through spawn.c and the image's /etc/lvm/lvm.conf (no udev), and
 * reads their reports with lvs.c, as volume/lvm.c does. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/fault.h"
#include "common/log.h"
#include "rootdisk.h"
#include "tools.h"
#include "volume/lvs.h"
#include "volume/spawn.h"

#define MIB (1024ull * 1024ull)

/* ---- pure helpers ---------------------------------------------------------------------------- */

/* An LVM-safe workload name: a DNS label (what names.c allows), at most 63. */
static bool vm_name_ok(const char *name)
{
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > 63 || name[0] == '-' || name[n - 1] == '-')
                return false;
        return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

static int put_name(char *buf, size_t len, const char *prefix, const char *rest)
{
        int n = snprintf(buf, len, "%s%s", prefix, rest);
        return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

int vm_rootdisk_lvm_cache_lv(const char *key, char *buf, size_t len)
{
        return vm_rootdisk_key_ok(key) ? put_name(buf, len, VM_ROOTDISK_LV_CACHE, key) : -EINVAL;
}

int vm_rootdisk_lvm_vm_lv(const char *name, char *buf, size_t len)
{
        return vm_name_ok(name) ? put_name(buf, len, VM_ROOTDISK_LV_VM, name) : -EINVAL;
}

const char *vm_rootdisk_lvm_key_of(const char *lv_name)
{
        size_t l = strlen(VM_ROOTDISK_LV_CACHE);
        if (strncmp(lv_name, VM_ROOTDISK_LV_CACHE, l) != 0 || !vm_rootdisk_key_ok(lv_name + l))
                return NULL;
        return lv_name + l;
}

const char *vm_rootdisk_lvm_vm_of(const char *lv_name)
{
        size_t l = strlen(VM_ROOTDISK_LV_VM);
        if (strncmp(lv_name, VM_ROOTDISK_LV_VM, l) != 0 || !vm_name_ok(lv_name + l))
                return NULL;
        return lv_name + l;
}

int vm_rootdisk_lvm_size_arg(uint64_t bytes, char *buf, size_t len)
{
        if (bytes == 0 || bytes > UINT64_MAX - MIB)
                return -EINVAL;
        bytes = (bytes + MIB - 1) / MIB * MIB;
        int n = snprintf(buf, len, "%" PRIu64 "b", bytes);
        return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/* Copies s into buf; false when it does not fit. */
static bool copy_field(const char *s, char *buf, size_t len)
{
        size_t l = strlen(s);
        if (l >= len)
                return false;
        memcpy(buf, s, l + 1);
        return true;
}

/* The report parsed by volume/lvs.c, kept in fixed-size rows: lv_size is required and no field
 * may be longer than the row keeps. */
int vm_rootdisk_lvm_parse_lvs(const char *json, struct vm_rootdisk_lv **out, size_t *n,
                              struct cap_error *err)
{
        *out = NULL;
        *n = 0;
        struct lvs_row *rows = NULL;
        size_t count = 0;
        int r = lvs_parse(json, &rows, &count, err);
        if (r < 0)
                return r;
        struct vm_rootdisk_lv *lvs = count ? calloc(count, sizeof(*lvs)) : NULL;
        if (count && !lvs)
                r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        for (size_t i = 0; r == 0 && i < count; i++) {
                const struct lvs_row *row = &rows[i];
                struct vm_rootdisk_lv *lv = &lvs[i];
                if (!copy_field(row->lv_name, lv->name, sizeof(lv->name)) ||
                    !copy_field(row->origin, lv->origin, sizeof(lv->origin)) ||
                    !copy_field(row->pool_lv, lv->pool, sizeof(lv->pool)))
                        r = cap_error_set(err, -EINVAL, CAP_INTERNAL,
                                          "lvs: %s: a field is too long", row->lv_name);
                else if (!row->has_size)
                        r = cap_error_set(err, -EINVAL, CAP_INTERNAL, "lvs: %s: bad lv_size \"\"",
                                          row->lv_name);
                lv->size_bytes = row->size_bytes;
                lv->incomplete = lvs_tag_listed(row->lv_tags, VM_ROOTDISK_TAG_INCOMPLETE);
        }
        lvs_rows_free(rows, count);
        if (r < 0) {
                free(lvs);
                return r;
        }
        *out = lvs;
        *n = count;
        return 0;
}

const char *vm_rootdisk_lvm_discard_reason(const struct vm_rootdisk_lv *lv,
                                           vm_rootdisk_running_fn is_running, void *ud)
{
        if (vm_rootdisk_lvm_key_of(lv->name))
                return lv->incomplete ? "a cache build that did not finish" : NULL;
        const char *vm = vm_rootdisk_lvm_vm_of(lv->name);
        if (vm && !(is_running && is_running(vm, ud)))
                return "its microVM does not run";
        return NULL;
}

/* ---- running the lvm2 tools ----------------------------------------------------------------- */

struct lvm_rootdisk {
        struct vm_rootdisk base;
        char vg[128];
        char pool[128];
};

#define LR(rd) ((struct lvm_rootdisk *)(rd))


static int report(struct vm_rootdisk *rd, struct vm_rootdisk_lv **lvs, size_t *n,
                  struct cap_error *err)
{
        _cleanup_free_ char *out = NULL;
        const char *args[] = {"lvs",      "--reportformat",
                              "json",     "--units",
                              "b",        "--nosuffix",
                              "-o",       "lv_name,lv_size,lv_tags,origin,pool_lv",
                              LR(rd)->vg, NULL};
        int r = spawn_lvm(args, &out, err);
        return r < 0 ? r : vm_rootdisk_lvm_parse_lvs(out, lvs, n, err);
}

/* LV `name` of the VG: 1 and *lv filled, 0 when absent. */
static int find(struct vm_rootdisk *rd, const char *name, struct vm_rootdisk_lv *lv,
                struct cap_error *err)
{
        struct vm_rootdisk_lv *lvs = NULL;
        size_t n = 0;
        int r = report(rd, &lvs, &n, err);
        if (r < 0)
                return r;
        int found = 0;
        for (size_t i = 0; i < n && !found; i++)
                if (strcmp(lvs[i].name, name) == 0) {
                        *lv = lvs[i];
                        found = 1;
                }
        free(lvs);
        return found;
}

static void lv_ref(struct vm_rootdisk *rd, const char *lv, bool dev, char *buf, size_t len)
{
        snprintf(buf, len, "%s%s/%s", dev ? "/dev/" : "", LR(rd)->vg, lv);
}

static int lv_remove(struct vm_rootdisk *rd, const char *lv, struct cap_error *err)
{
        char ref[300];
        lv_ref(rd, lv, false, ref, sizeof(ref));
        const char *args[] = {"lvremove", "-f", ref, NULL};
        return spawn_lvm(args, NULL, err);
}

/* Makes sure the LV's device node exists: -K activates a snapshot that has activation skip. */
static int lv_activate(struct vm_rootdisk *rd, const char *lv, struct cap_error *err)
{
        char ref[300], dev[300];
        lv_ref(rd, lv, false, ref, sizeof(ref));
        lv_ref(rd, lv, true, dev, sizeof(dev));
        struct stat st;
        if (stat(dev, &st) == 0 && S_ISBLK(st.st_mode))
                return 0;
        const char *args[] = {"lvchange", "-ay", "-K", ref, NULL};
        int r = spawn_lvm(args, NULL, err);
        if (r == 0 && stat(dev, &st) < 0)
                r = cap_error_errno(err, -errno, "stat %s", dev);
        return r;
}

static int dev_bytes(const char *dev, uint64_t *bytes, struct cap_error *err)
{
        _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || ioctl(fd, BLKGETSIZE64, bytes) < 0)
                return cap_error_errno(err, -errno, "size of %s", dev);
        return 0;
}

/* ---- the backend ---------------------------------------------------------------------------- */

static int lvm_cache_find(struct vm_rootdisk *rd, const char *key, uint64_t *bytes,
                          struct cap_error *err)
{
        char lvname[128];
        if (vm_rootdisk_lvm_cache_lv(key, lvname, sizeof(lvname)) < 0)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "bad image key \"%s\"", key);
        struct vm_rootdisk_lv lv;
        int r = find(rd, lvname, &lv, err);
        if (r == 1 && lv.incomplete)
                return 0;
        if (r == 1)
                *bytes = lv.size_bytes;
        return r;
}

/* mkfs.ext4 -d: the rootfs into the whole LV. Inode tables and the journal are written now
 * (lazy_*_init=0), once into the cache, not by each guest's ext4lazyinit into its snapshot. */
static int format_cache(const char *dev, const char *rootfs_dir, uint64_t inodes,
                        struct cap_error *err)
{
        char mkfs[PATH_MAX], n[32];
        int r = vm_tool_find("mkfs.ext4", mkfs, sizeof(mkfs), err);
        if (r < 0)
                return r;
        snprintf(n, sizeof(n), "%" PRIu64, inodes);
        const char *const argv[] = {
            mkfs,
            "-q",
            "-F",
            "-b",
            "4096",
            "-m",
            "0",
            "-N",
            n,
            "-E",
            "root_owner=0:0,nodiscard,lazy_itable_init=0,lazy_journal_init=0",
            "-L",
            "capsule-root",
            "-d",
            rootfs_dir,
            dev,
            NULL};
        struct spawn_opts opts = {.timeout_ms = 600000};
        return spawn_check(argv, &opts, err);
}

static int lvm_cache_build(struct vm_rootdisk *rd, const char *key, const char *rootfs_dir,
                           uint64_t min_bytes, struct cap_error *err)
{
        char lvname[128], ref[300], dev[300], pool[300], sz[32];
        if (vm_rootdisk_lvm_cache_lv(key, lvname, sizeof(lvname)) < 0)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "bad image key \"%s\"", key);
        lv_ref(rd, lvname, false, ref, sizeof(ref));
        lv_ref(rd, lvname, true, dev, sizeof(dev));
        struct vm_rootdisk_lv lv;
        int r = find(rd, lvname, &lv, err);
        if (r < 0)
                return r;
        if (r == 1 && !lv.incomplete)
                return 0;
        if (r == 1 && (r = lv_remove(rd, lvname, err)) < 0) /* a half-made one: start again */
                return r;
        uint64_t bytes = 0, files = 0;
        if ((r = vm_rootdisk_measure(rootfs_dir, &bytes, &files, err)) < 0)
                return r;
        uint64_t size = vm_rootdisk_image_size(bytes, min_bytes);
        vm_rootdisk_lvm_size_arg(size, sz, sizeof(sz));
        snprintf(pool, sizeof(pool), "%s/%s", LR(rd)->vg, LR(rd)->pool);
        int64_t t0 = vm_now_ms();
        /* the tag in the metadata commit that creates the LV */
        const char *create[] = {
            "lvcreate", "-y",   "--thin", "-V", sz, "--addtag", VM_ROOTDISK_TAG_INCOMPLETE,
            "-n",       lvname, pool,     NULL};
        if ((r = spawn_lvm(create, NULL, err)) < 0)
                return r;
        int64_t t1 = vm_now_ms();
        if ((r = lv_activate(rd, lvname, err)) < 0 ||
            (r = format_cache(dev, rootfs_dir, vm_rootdisk_inodes(files, size), err)) < 0) {
                struct cap_error ignored = {0};
                lv_remove(rd, lvname, &ignored); /* else the next start removes it */
                return r;
        }
        int64_t t2 = vm_now_ms();
        const char *done[] = {"lvchange", "--deltag", VM_ROOTDISK_TAG_INCOMPLETE, ref, NULL};
        if ((r = spawn_lvm(done, NULL, err)) < 0)
                return r;
        const char *off[] = {"lvchange", "-an", ref, NULL};
        struct cap_error ignored = {0};
        if (spawn_lvm(off, NULL, &ignored) < 0) /* harmless: snapshots work from an active origin */
                log_warn("microvm: root disks: deactivate %s: %s", ref, ignored.msg);
        log_info("microvm: root disks: built cache %s (%s, %" PRIu64 " files): lvcreate %lld ms, "
                 "mkfs.ext4 -d %lld ms, lvchange %lld ms",
                 ref, sz, files, (long long)(t1 - t0), (long long)(t2 - t1),
                 (long long)(vm_now_ms() - t2));
        return 0;
}

/* Grows a fresh snapshot to want bytes: lvextend, then resize2fs of its (never mounted) ext4. */
static int grow(struct vm_rootdisk *rd, const char *lvname, uint64_t have, uint64_t want,
                struct cap_error *err)
{
        char ref[300], dev[300], sz[32];
        lv_ref(rd, lvname, false, ref, sizeof(ref));
        lv_ref(rd, lvname, true, dev, sizeof(dev));
        if (vm_rootdisk_lvm_size_arg(want, sz, sizeof(sz)) < 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "disk: bad size %" PRIu64,
                                     want);
        if (want > have) {
                const char *ext[] = {"lvextend", "-y", "-L", sz, ref, NULL};
                int r = spawn_lvm(ext, NULL, err);
                if (r < 0)
                        return r;
        }
        char resize[PATH_MAX];
        int r = vm_tool_find("resize2fs", resize, sizeof(resize), err);
        if (r < 0)
                return r;
        const char *const argv[] = {resize, dev, NULL};
        struct spawn_opts opts = {.timeout_ms = 600000};
        return spawn_check(argv, &opts, err);
}

static int lvm_vm_disk_create(struct vm_rootdisk *rd, const char *key, const char *name,
                              const char *dir, uint64_t size_bytes, struct vm_rootdisk_disk *out,
                              struct cap_error *err)
{
        (void)dir;
        char cache[128], lvname[128], origin[300];
        if (vm_rootdisk_lvm_cache_lv(key, cache, sizeof(cache)) < 0)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "bad image key \"%s\"", key);
        if (vm_rootdisk_lvm_vm_lv(name, lvname, sizeof(lvname)) < 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "name \"%s\": not a valid microVM name", name);
        memset(out, 0, sizeof(*out));
        lv_ref(rd, cache, false, origin, sizeof(origin));
        lv_ref(rd, lvname, true, out->path, sizeof(out->path));
        lv_ref(rd, lvname, false, out->what, sizeof(out->what));
        snprintf(out->origin, sizeof(out->origin), "%s", origin);
        int64_t t0 = vm_now_ms();
        struct vm_rootdisk_lv lv;
        int r = find(rd, lvname, &lv, err);
        if (r == 1) /* an earlier run's: each run starts from the image */
                r = lv_remove(rd, lvname, err);
        if (r < 0)
                return r;
        /* -kn: without the activation-skip flag thin snapshots get, so lvcreate activates it */
        const char *snap[] = {"lvcreate", "-y", "-s", "-kn", "-n", lvname, origin, NULL};
        if ((r = spawn_lvm(snap, NULL, err)) < 0)
                return r;
        int64_t t1 = vm_now_ms();
        uint64_t have = 0;
        if ((r = lv_activate(rd, lvname, err)) == 0 &&
            (r = dev_bytes(out->path, &have, err)) == 0 && size_bytes > have)
                r = grow(rd, lvname, have, size_bytes, err);
        if (r == 0)
                r = dev_bytes(out->path, &out->bytes, err);
        if (r < 0) {
                struct cap_error ignored = {0};
                lv_remove(rd, lvname, &ignored); /* else the next start removes it */
                return r;
        }
        out->shared = true;
        log_info("microvm: %s: root disk %s: thin snapshot of %s (%" PRIu64
                 " MiB): lvcreate %lld ms"
                 "%s, %lld ms in all",
                 name, out->what, origin, out->bytes >> 20, (long long)(t1 - t0),
                 out->bytes > have ? " + lvextend/resize2fs" : "", (long long)(vm_now_ms() - t0));
        return 0;
}

static int lvm_vm_disk_remove(struct vm_rootdisk *rd, const char *name, const char *dir,
                              struct cap_error *err)
{
        (void)dir;
        char lvname[128];
        if (vm_rootdisk_lvm_vm_lv(name, lvname, sizeof(lvname)) < 0)
                return 0; /* no such LV can exist */
        struct vm_rootdisk_lv lv;
        int r = find(rd, lvname, &lv, err);
        if (r == 1 && (r = lv_remove(rd, lvname, err)) == 0)
                log_info("microvm: %s: removed root disk %s/%s", name, LR(rd)->vg, lvname);
        return r < 0 ? r : 0;
}

static int lvm_cache_list(struct vm_rootdisk *rd, vm_rootdisk_cache_fn fn, void *ud,
                          struct cap_error *err)
{
        struct vm_rootdisk_lv *lvs = NULL;
        size_t n = 0;
        int r = report(rd, &lvs, &n, err);
        for (size_t i = 0; r == 0 && i < n; i++) {
                const char *key = vm_rootdisk_lvm_key_of(lvs[i].name);
                if (key && !lvs[i].incomplete && (r = fn(key, lvs[i].size_bytes, ud)) < 0)
                        cap_error_errno(err, r, "root disks: list %s", rd->where);
        }
        free(lvs);
        return r;
}

static int lvm_cache_remove(struct vm_rootdisk *rd, const char *key, char *what, size_t len,
                            struct cap_error *err)
{
        char lvname[128], ref[300];
        if (vm_rootdisk_lvm_cache_lv(key, lvname, sizeof(lvname)) < 0)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "bad image key \"%s\"", key);
        lv_ref(rd, lvname, false, ref, sizeof(ref));
        snprintf(what, len, "%s", ref);
        struct vm_rootdisk_lv lv;
        int r = find(rd, lvname, &lv, err);
        if (r <= 0)
                return r;
        const char *untrust[] = {"lvchange", "--addtag", VM_ROOTDISK_TAG_INCOMPLETE, ref, NULL};
        if (!lv.incomplete && (r = spawn_lvm(untrust, NULL, err)) < 0)
                return r;
        fault_point(VM_ROOTDISK_FAULT_REMOVE);
        return lv_remove(rd, lvname, err);
}

static int lvm_cleanup(struct vm_rootdisk *rd, vm_rootdisk_running_fn is_running, void *ud,
                       struct cap_error *err)
{
        struct vm_rootdisk_lv *lvs = NULL;
        size_t n = 0;
        int r = report(rd, &lvs, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                const char *why = vm_rootdisk_lvm_discard_reason(&lvs[i], is_running, ud);
                if (!why)
                        continue;
                struct cap_error e = {0};
                if (lv_remove(rd, lvs[i].name, &e) < 0)
                        log_warn("microvm: root disks: remove %s/%s (%s): %s", LR(rd)->vg,
                                 lvs[i].name, why, e.msg);
                else
                        log_info("microvm: root disks: removed %s/%s: %s", LR(rd)->vg, lvs[i].name,
                                 why);
        }
        free(lvs);
        return 0;
}

static int lvm_census(struct vm_rootdisk *rd, size_t *caches, size_t *disks, struct cap_error *err)
{
        struct vm_rootdisk_lv *lvs = NULL;
        size_t n = 0;
        *caches = *disks = 0;
        int r = report(rd, &lvs, &n, err);
        for (size_t i = 0; r == 0 && i < n; i++) {
                if (vm_rootdisk_lvm_key_of(lvs[i].name) && !lvs[i].incomplete)
                        (*caches)++;
                else if (vm_rootdisk_lvm_vm_of(lvs[i].name))
                        (*disks)++;
        }
        free(lvs);
        return r;
}

static void lvm_free(struct vm_rootdisk *rd)
{
        free(rd);
}

static const struct vm_rootdisk_ops lvm_ops = {
    .cache_find = lvm_cache_find,
    .cache_build = lvm_cache_build,
    .vm_disk_create = lvm_vm_disk_create,
    .vm_disk_remove = lvm_vm_disk_remove,
    .cache_list = lvm_cache_list,
    .cache_remove = lvm_cache_remove,
    .cleanup = lvm_cleanup,
    .census = lvm_census,
    .free = lvm_free,
};

int vm_rootdisk_lvm_open(const char *vg, const char *pool, struct vm_rootdisk **out,
                         struct cap_error *err)
{
        struct lvm_rootdisk *l = calloc(1, sizeof(*l));
        if (!l)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        l->base.name = "lvm-thin";
        l->base.ops = &lvm_ops;
        snprintf(l->vg, sizeof(l->vg), "%s", vg);
        snprintf(l->pool, sizeof(l->pool), "%s", pool);
        snprintf(l->base.where, sizeof(l->base.where), "%s/%s", vg, pool);
        struct vm_rootdisk_lv lv;
        int r = find(&l->base, pool, &lv, err);
        if (r == 0)
                r = cap_error_set(err, -ENOENT, CAP_UNAVAILABLE, "no thin pool %s/%s", vg, pool);
        if (r < 0) {
                free(l);
                return cap_error_prefix(err, "root disks: lvm");
        }
        *out = &l->base;
        return 0;
}
