/* Root disks of microVMs, from an OCI image's unpacked rootfs.
 *
 * Two steps, so that starting a second VM of an image costs no copy:
 *   1. cache_build: once per image digest, the rootfs directory becomes an ext4 image
 *      (`mkfs.ext4 -d`), written to a temp file and renamed into place.
 *   2. clone: each VM gets its own copy-on-write copy of that image (FICLONE reflink where the
 *      filesystem has it, else a sparse copy), grown to the manifest's `disk:` size (resize2fs).
 * This is the file backend. On a Capsule the same two steps become a thin LV + a thin snapshot of
 * it (design §7); that backend plugs in as another struct vm_rootdisk_ops. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

struct vm_rootdisk_ops {
        const char *name;
        /* Builds the cached image of rootfs_dir at cache (at least min_bytes). 0 and nothing done
         * when cache already exists. */
        int (*cache_build)(const char *rootfs_dir, const char *cache, uint64_t min_bytes,
                           struct cap_error *err);
        /* Gives a VM its own writable copy of cache at disk, grown to size_bytes (0 = the
         * image's size). *reflinked (may be NULL): whether the copy shares extents. */
        int (*clone)(const char *cache, const char *disk, uint64_t size_bytes, bool *reflinked,
                     struct cap_error *err);
};

/* Root disks as files (host mode, and any filesystem; reflinks on btrfs/XFS). */
extern const struct vm_rootdisk_ops vm_rootdisk_file_ops;

/* The size cache_build picks: rootfs bytes * 1.3 + 64 MiB, at least min_bytes, rounded to MiB. */
uint64_t vm_rootdisk_image_size(uint64_t rootfs_bytes, uint64_t min_bytes);

int vm_rootdisk_cache_build(const char *rootfs_dir, const char *cache_path, uint64_t min_bytes,
                            struct cap_error *err);
int vm_rootdisk_clone(const char *cache_path, const char *vm_disk_path, uint64_t size_bytes,
                      bool *reflinked, struct cap_error *err);
