/* Root disks of microVMs, from an OCI image's unpacked rootfs.
 *
 * Two steps, so that starting a second VM of an image costs no copy:
 *   1. the cache: once per image digest (its hex is the KEY), the rootfs directory becomes an ext4
 *      filesystem (`mkfs.ext4 -d`), made crash-safe (a half-made cache is never used);
 *   2. the VM's disk: each run of VM NAME gets its own copy-on-write copy of the cache, grown to
 *      the manifest's `disk:` size (resize2fs), so the VM's writes never touch the cache.
 * Two backends behind struct vm_rootdisk_ops:
 *   - file (host mode, rootdisk.c): the cache is ROOT/vm-images/KEY.ext4 (a temp file renamed into
 *     place), the VM's disk ROOT/vms/NAME/root.ext4 (FICLONE reflink where the filesystem has it,
 *     else a sparse copy);
 *   - lvm-thin (on a Capsule, rootdisk_lvm.c): the cache is the thin LV VG/vmimg-KEY in the pool
 *     volumes use (tagged capsule_incomplete until mkfs finished), the VM's disk a thin snapshot
 *     VG/vmroot-NAME of it (lvextend + resize2fs when `disk:` is larger).
 * At start (cleanup) each backend discards half-made caches and the disks of VMs that no longer
 * run, so a crash at any step is repaired by the next start.
 * A cache goes when its image does (cache_remove, driven by vmd_rootdisk_collect in driver.c, the
 * same for both backends): first it stops being a cache (the file is renamed to a temp name, the
 * LV is tagged capsule_incomplete again), then its space is freed; a crash in between leaves a
 * leftover that no one trusts and the next start's cleanup removes. */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* One VM's root disk as vm_disk_create made it. */
struct vm_rootdisk_disk {
        char path[PATH_MAX]; /* what QEMU opens: a file or /dev/VG/vmroot-NAME */
        char what[192];      /* for describe: the file, or "VG/vmroot-NAME" */
        char origin[192];    /* the cache it was cloned from: a file, or "VG/vmimg-KEY" */
        uint64_t bytes;      /* its size */
        bool shared;         /* copy-on-write (thin snapshot, reflink): nothing was copied */
};

struct vm_rootdisk;

/* bool is_running(name, ud): whether VM NAME runs now (its disk must stay). */
typedef bool (*vm_rootdisk_running_fn)(const char *name, void *ud);
/* One whole cache, as cache_list reports it: its KEY and size. */
typedef int (*vm_rootdisk_cache_fn)(const char *key, uint64_t bytes, void *ud);

struct vm_rootdisk_ops {
        /* The cache of KEY: 1 with *bytes when it exists whole, 0 when not. */
        int (*cache_find)(struct vm_rootdisk *rd, const char *key, uint64_t *bytes,
                          struct cap_error *err);
        /* Builds the cache of KEY from rootfs_dir (at least min_bytes). A half-made one of an
         * earlier attempt is replaced. */
        int (*cache_build)(struct vm_rootdisk *rd, const char *key, const char *rootfs_dir,
                           uint64_t min_bytes, struct cap_error *err);
        /* Gives VM NAME (state directory dir) its own writable disk of KEY's cache, grown to
         * size_bytes (0: the cache's size), replacing the disk of an earlier run. */
        int (*vm_disk_create)(struct vm_rootdisk *rd, const char *key, const char *name,
                              const char *dir, uint64_t size_bytes, struct vm_rootdisk_disk *out,
                              struct cap_error *err);
        /* Removes VM NAME's disk; 0 when there is none. */
        int (*vm_disk_remove)(struct vm_rootdisk *rd, const char *name, const char *dir,
                              struct cap_error *err);
        /* Calls fn for every whole cache (half-made ones are not listed); stops at fn's error. */
        int (*cache_list)(struct vm_rootdisk *rd, vm_rootdisk_cache_fn fn, void *ud,
                          struct cap_error *err);
        /* Removes KEY's cache, crash-safe: it stops being a whole cache in one atomic step
         * (rename / tag), then its space is freed. what (len bytes) names what was removed.
         * 0 when there was none. The caller makes sure no VM disk depends on it. */
        int (*cache_remove)(struct vm_rootdisk *rd, const char *key, char *what, size_t len,
                            struct cap_error *err);
        /* At start: removes half-made caches and the disks of VMs that do not run. */
        int (*cleanup)(struct vm_rootdisk *rd, vm_rootdisk_running_fn is_running, void *ud,
                       struct cap_error *err);
        /* How many whole caches and VM disks exist now (health). */
        int (*census)(struct vm_rootdisk *rd, size_t *caches, size_t *disks, struct cap_error *err);
        void (*free)(struct vm_rootdisk *rd);
};

struct vm_rootdisk {
        const char *name; /* "file" or "lvm-thin" */
        char where[256];  /* "ROOT/vm-images" or "VG/POOL" (logs, health) */
        const struct vm_rootdisk_ops *ops;
};

/* The file backend: caches in images_dir (created if missing), VM disks in their state dirs;
 * vms_dir is where those are (ROOT/vms), for the census. */
int vm_rootdisk_file_open(const char *images_dir, const char *vms_dir, struct vm_rootdisk **out,
                          struct cap_error *err);
/* The LVM thin backend in pool VG/POOL; UNAVAILABLE when there is no such pool. */
int vm_rootdisk_lvm_open(const char *vg, const char *pool, struct vm_rootdisk **out,
                         struct cap_error *err);
void vm_rootdisk_free(struct vm_rootdisk *rd);

/* ---- shared by both backends ------------------------------------------------------------- */

/* The size a cache gets: rootfs bytes * 1.3 + 64 MiB, at least min_bytes, rounded to MiB. */
uint64_t vm_rootdisk_image_size(uint64_t rootfs_bytes, uint64_t min_bytes);
/* mkfs.ext4's -N for an image of `bytes` holding `files` inodes: as many again as the image has
 * (small-file images run out of inodes long before blocks), at least one per 16 KiB. */
uint64_t vm_rootdisk_inodes(uint64_t files, uint64_t bytes);
/* Bytes and inodes a directory tree needs (allocated blocks + a little per entry). */
int vm_rootdisk_measure(const char *rootfs_dir, uint64_t *bytes, uint64_t *inodes,
                        struct cap_error *err);
/* Whether KEY can name a cache: 12..64 lowercase hex digits. */
bool vm_rootdisk_key_ok(const char *key);
/* The KEY of a cache from a VM disk's origin as vm_disk_create reported it ("DIR/KEY.ext4" or
 * "VG/vmimg-KEY") into buf; -EINVAL when origin names no cache. */
int vm_rootdisk_origin_key(const char *origin, char *buf, size_t len);
/* The crash-test point between the two steps of a cache removal (CAPSULE_FAULT, fault.h). */
#define VM_ROOTDISK_FAULT_REMOVE "rootdisk-cache-remove"

/* ---- the file backend's two steps, on paths (also used by the VMM integration test) -------- */

/* Builds the cached image of rootfs_dir at cache_path (at least min_bytes): a temp file renamed
 * into place. 0 and nothing done when cache_path exists. */
int vm_rootdisk_cache_build(const char *rootfs_dir, const char *cache_path, uint64_t min_bytes,
                            struct cap_error *err);
/* Gives a VM its own writable copy of cache_path at vm_disk_path, grown to size_bytes (0 = the
 * image's size). *reflinked (may be NULL): whether the copy shares extents. */
int vm_rootdisk_clone(const char *cache_path, const char *vm_disk_path, uint64_t size_bytes,
                      bool *reflinked, struct cap_error *err);

/* ---- lvm-thin's pure half (unit-tested in tests/unit/test-microvm-rootdisk.c) --------------- */

#define VM_ROOTDISK_LV_CACHE "vmimg-"
#define VM_ROOTDISK_LV_VM "vmroot-"
#define VM_ROOTDISK_TAG_INCOMPLETE "capsule_incomplete"

/* "vmimg-KEY" / "vmroot-NAME" into buf; -EINVAL for a bad key or name, -ENOSPC if buf is short. */
int vm_rootdisk_lvm_cache_lv(const char *key, char *buf, size_t len);
int vm_rootdisk_lvm_vm_lv(const char *name, char *buf, size_t len);
/* The KEY of "vmimg-KEY" / the NAME of "vmroot-NAME"; NULL for any other LV. */
const char *vm_rootdisk_lvm_key_of(const char *lv_name);
const char *vm_rootdisk_lvm_vm_of(const char *lv_name);
/* An exact size for lvcreate -V / lvextend -L, rounded up to MiB: "68157440b". */
int vm_rootdisk_lvm_size_arg(uint64_t bytes, char *buf, size_t len);

/* One row of `lvs --reportformat json --units b --nosuffix -o lv_name,lv_size,lv_tags,origin,
 * pool_lv VG`. */
struct vm_rootdisk_lv {
        char name[128];
        char origin[128]; /* "" when not a snapshot */
        char pool[128];   /* "" when not a thin LV */
        uint64_t size_bytes;
        bool incomplete; /* tagged capsule_incomplete */
};
/* Parses that report; INTERNAL naming what is wrong with malformed output. *out is malloc'd. */
int vm_rootdisk_lvm_parse_lvs(const char *json, struct vm_rootdisk_lv **out, size_t *n,
                              struct cap_error *err);

/* What cleanup does with an LV of the pool: keep it, or remove it and why (a static string). */
const char *vm_rootdisk_lvm_discard_reason(const struct vm_rootdisk_lv *lv,
                                           vm_rootdisk_running_fn is_running, void *ud);
