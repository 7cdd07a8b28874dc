/* Volumes: named, sized ext4 filesystems that workloads mount (design §8).
 *
 * Two layers:
 *   - a backend (struct volume_backend) that owns the storage of one volume: create + format,
 *     mount at a directory, grow, delete. The file backend (host mode, file.c) keeps a sparse
 *     ext4 image per volume, loop-mounted; the LVM thin backend (on a Capsule, lvm.c) keeps a
 *     thin LV per volume. Volume names are DNS labels, so they are valid file and LV names as
 *     they are.
 *   - the volume manager (struct volumes, volume.c): the store's rows are the truth of which
 *     volumes exist and how large they should be; the manager makes the backend match them
 *     (volumes_recover at start), orders every change so that a crash at any point is repaired
 *     at the next start, and tracks which workloads use a volume so that it is not deleted
 *     under them. All its functions are thread-safe (one lock; they are short or rare).
 *
 * Test seams (read from the environment, documented in docs/cli.md#volumes):
 *   CAPSULE_FAULT=[powercut:]volume-after-lvcreate|volume-after-mkfs|volume-after-rename|
 *                 volume-after-store|volume-restore-after-begin|volume-restore-after-replace
 *       crash (or cut the power, on a Capsule) at that step of a create (common/fault.h);
 *   CAPSULE_TEST_ATTACH=VOLUME:WORKLOAD[,...]  mark volumes attached at start, for host-mode
 *       tests that have no reconciler yet. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct store;

/* Size rules, checked on create and resize (INVALID_ARGUMENT naming "size_bytes"). */
#define VOLUME_MIN_BYTES (16ull << 20) /* ext4 with a journal needs a few MiB; 16 MiB is useful */
#define VOLUME_MAX_BYTES (16ull << 40) /* 16 TiB: ext4 limit with 4 KiB blocks without 64bit */

struct volume_backend;

/* Storage operations on one volume. All return 0 or negative with err filled. */
struct volume_backend_ops {
        /* Creates and formats an empty volume of `size` bytes; not mounted yet. A crash inside
         * leaves either a whole volume or nothing that list() reports (half-made volumes are
         * discarded when the backend is opened again). -EEXIST if it exists. `owner` (the
         * creating store's id, [0-9a-f]+) is recorded with the storage in the same step that
         * makes it whole, so owner() of a whole volume always answers it. */
        int (*create)(struct volume_backend *b, const char *name, uint64_t size,
                      const char *owner, struct cap_error *err);
        /* The owner recorded at create (malloc'd), or *owner = NULL for storage made before
         * owners were recorded. -ENOENT when absent. */
        int (*owner)(struct volume_backend *b, const char *name, char **owner,
                     struct cap_error *err);
        /* Unmounts (if mounted) and destroys the volume and its data. Missing volume: 0. */
        int (*remove)(struct volume_backend *b, const char *name, struct cap_error *err);
        /* Grows to new_size (>= the current size; smaller is -EINVAL). Online when mounted: the
         * backend must then support it (can_grow_online), else -EPERM. Offline when unmounted.
         * Idempotent: growing to the current size finishes an interrupted grow. */
        int (*resize)(struct volume_backend *b, const char *name, uint64_t new_size,
                      struct cap_error *err);
        /* Mounts the volume at path() if it is not mounted there yet (idempotent). */
        int (*mount)(struct volume_backend *b, const char *name, struct cap_error *err);
        /* Unmounts it if mounted (idempotent); -EBUSY (FAILED_PRECONDITION) when in use. */
        int (*unmount)(struct volume_backend *b, const char *name, struct cap_error *err);
        /* size: the storage's size in bytes; used: bytes used by the filesystem when mounted,
         * else the storage's allocated bytes. -ENOENT when absent. */
        int (*stat)(struct volume_backend *b, const char *name, uint64_t *size, uint64_t *used,
                    bool *mounted, struct cap_error *err);
        /* The directory where the volume is (or would be) mounted: bind this into containers.
         * malloc'd; NULL only when out of memory. */
        char *(*path)(struct volume_backend *b, const char *name);
        /* The volume's storage as a disk for a microVM (the LV's block device, activated; or the
         * image file), malloc'd in *path. The caller unmounts it first: one kernel at a time
         * may mount an ext4 filesystem. -ENOENT when absent. */
        int (*disk)(struct volume_backend *b, const char *name, char **path, struct cap_error *err);
        /* Names of every complete volume the backend holds (malloc'd array of malloc'd strings). */
        int (*list)(struct volume_backend *b, char ***names, size_t *n, struct cap_error *err);
        /* A read-only view of the volume's files for a backup, in *dir (malloc'd), and in
         * *consistency how consistent it is: "snapshot" (a point-in-time copy; LVM thin
         * snapshot) or "live" (the mounted volume itself, read while workloads write). in_vm: a
         * microVM has it as its disk (not mounted here); a backend that cannot copy it then
         * answers FAILED_PRECONDITION. Undo with snapshot_release. */
        int (*snapshot)(struct volume_backend *b, const char *name, bool in_vm, char **dir,
                        const char **consistency, struct cap_error *err);
        void (*snapshot_release)(struct volume_backend *b, const char *name, const char *dir);
        /* Replaces the storage of `name` with that of `from` (a whole volume made by create),
         * both unmounted by this call; `from` is gone afterwards and `name` is left unmounted. A
         * crash inside leaves `name` with either its old or its new storage. */
        int (*replace)(struct volume_backend *b, const char *name, const char *from,
                       struct cap_error *err);
        /* Whether resize() works while mounted here (ext4 online grow needs CAP_SYS_RESOURCE). */
        bool (*can_grow_online)(struct volume_backend *b);
        void (*free)(struct volume_backend *b);
};

struct volume_backend {
        const char *name; /* "file" or "lvm-thin": stored with each volume */
        const struct volume_backend_ops *ops;
};

/* The file backend (host mode): volumes under DIR (created if missing) as DIR/NAME.img,
 * mounted at DIR/NAME, owner in DIR/NAME.owner. Discards half-created images (DIR/NAME.img.tmp)
 * and owner files without an image on open. */
int volume_file_backend_new(const char *dir, struct volume_backend **out, struct cap_error *err);

/* The LVM thin backend (on a Capsule, lvm.c): each volume NAME is a thin LV VG/vol-NAME in the
 * thin pool VG/POOL, ext4, mounted at MOUNT_DIR/NAME (created if missing). Fails (UNAVAILABLE)
 * when the VG or the pool is missing. Removes half-created LVs (tag capsule_incomplete) on open. */
int volume_lvm_backend_new(const char *vg, const char *pool, const char *mount_dir,
                           struct volume_backend **out, struct cap_error *err);

/* ---- The volume manager ---------------------------------------------------------------------- */

struct volumes;

struct volume_info {
        char *name;
        uint64_t size_bytes; /* the desired size (store); the filesystem has it once grown */
        uint64_t used_bytes;
        char **attached_to; /* workload names, sorted */
        size_t n_attached;
        char *backend;
        int64_t created_ns;
        bool mounted;
        bool disk; /* the disk of a microVM (attached_to[0]), not mounted on this host */
};

/* Takes ownership of backend (also on failure). Does not touch storage: call volumes_recover. */
int volumes_open(struct store *st, struct volume_backend *backend, struct volumes **out,
                 struct cap_error *err);
void volumes_close(struct volumes *v);

/* Makes storage match the store, at start. Storage the store does not hold is removed only when
 * this store made it (owner = the store's id: a create a crash interrupted before it was
 * acknowledged, or a delete after it was); storage made by another store or with no owner (the
 * store was lost, replaced, or PID 1 fell back to a tmpfs /perm) is adopted: its row is added
 * with its current size and its data is kept, never deleted. Recreates a volume whose row exists but whose
 * storage is missing (logged loudly), finishes interrupted grows, mounts what is not mounted.
 * Idempotent. Continues past per-volume failures; returns the first one. */
int volumes_recover(struct volumes *v, struct cap_error *err);

/* Creates a volume (checked name and size). Same name and size again: *created = false and 0;
 * same name, other size: ALREADY_EXISTS with a hint to resize. out may be NULL. */
int volume_create(struct volumes *v, const char *name, uint64_t size, bool *created,
                  struct volume_info *out, struct cap_error *err);
/* Deletes a volume and its data: NOT_FOUND, or FAILED_PRECONDITION while attached. */
int volume_delete(struct volumes *v, const char *name, struct cap_error *err);
/* Grows a volume (online when the backend can; else only while no workload uses it).
 * Smaller than now: FAILED_PRECONDITION. Same size: no-op. out may be NULL. */
int volume_resize(struct volumes *v, const char *name, uint64_t size, struct volume_info *out,
                  struct cap_error *err);
/* One volume / all volumes ordered by name. Free with volume_info_free / volume_infos_free. */
int volume_get(struct volumes *v, const char *name, struct volume_info *out, struct cap_error *err);
int volume_list(struct volumes *v, struct volume_info **out, size_t *n, struct cap_error *err);
void volume_info_free(struct volume_info *vi);
void volume_infos_free(struct volume_info *vis, size_t n);

/* For the reconciler: records that `workload` uses volume `name` (idempotent), makes sure it is
 * mounted, and returns in *path (malloc'd; may be NULL if not wanted) the directory to
 * bind-mount into the workload. NOT_FOUND when the volume does not exist. Attachments live in
 * memory: after a restart the reconciler attaches again what it adopts. */
int volume_attach(struct volumes *v, const char *name, const char *workload, char **path,
                  struct cap_error *err);
/* For the reconciler, a microVM's mount: the volume becomes the disk of `workload` alone. It is
 * unmounted here (the VM's kernel mounts it), and *disk (malloc'd) is the block device or image
 * file to attach. FAILED_PRECONDITION naming the holders when any other workload uses it (a
 * container mounts it on this host, or another microVM has it as its disk): two kernels writing
 * one ext4 filesystem corrupt it. Idempotent for the same workload. While a microVM holds a
 * volume, volume_attach for any other workload, resize and delete are refused, and
 * volumes_recover neither grows nor mounts it. NOT_FOUND when the volume does not exist. */
int volume_attach_disk(struct volumes *v, const char *name, const char *workload, char **disk,
                       struct cap_error *err);
/* Before volumes_recover: records that a running microVM (adopted after a restart of capsuled)
 * holds `name` as its disk, so recovery leaves its storage alone. No checks; idempotent. */
int volume_claim_disk(struct volumes *v, const char *name, const char *workload);
/* Forgets that `workload` uses volume `name` (no-op if it did not). */
void volume_detach(struct volumes *v, const char *name, const char *workload);
/* Forgets every attachment of `workload` (when it is deleted). */
void volume_detach_all(struct volumes *v, const char *workload);

/* ---- Backup and restore (backup.h has the tar format) -------------------------------------- */

/* Pseudo-workloads that hold a volume while a backup or restore of it runs (they show in
 * attached_to): a restore keeps every workload away, a backup keeps delete away. */
#define VOLUME_BACKUP_HOLDER "(backup)"
#define VOLUME_RESTORE_HOLDER "(restore)"

struct volume_backup {
        char *name;
        char *dir;               /* read the files here (read-only view) */
        const char *consistency; /* "snapshot" or "live" (volume_backend_ops.snapshot) */
        uint64_t size_bytes;
        char *vm; /* the microVM holding it as its disk, or NULL */
};
/* Makes a read-only view of volume NAME's files for a backup: a thin snapshot on LVM, the live
 * mount in host mode (where a microVM's disk is refused, FAILED_PRECONDITION naming it).
 * NOT_FOUND; FAILED_PRECONDITION while another backup or a restore of it runs. End it with
 * volume_backup_end, always. */
int volume_backup_begin(struct volumes *v, const char *name, struct volume_backup *out,
                        struct cap_error *err);
void volume_backup_end(struct volumes *v, struct volume_backup *bk);

struct volume_restore {
        char *name;
        char *tmp;  /* the temporary volume extracted into */
        char *dir;  /* where tmp is mounted: extract here */
        uint64_t size_bytes;
        bool created; /* NAME did not exist: made by begin, deleted again by abort */
};
/* Starts a restore of NAME: FAILED_PRECONDITION naming the workloads while any uses it; creates
 * NAME when absent (size, or recorded_size when size is 0); makes and mounts an empty
 * temporary volume of NAME's size. While it runs NAME cannot be attached (UNAVAILABLE). */
int volume_restore_begin(struct volumes *v, const char *name, uint64_t size,
                         uint64_t recorded_size, struct volume_restore *out, struct cap_error *err);
/* Swaps the temporary volume in as NAME (its old data gone) and mounts it. */
int volume_restore_commit(struct volumes *v, struct volume_restore *rs, struct volume_info *out,
                          struct cap_error *err);
/* Discards the temporary volume (and NAME when begin created it): nothing changed. Also frees rs;
 * call it after a commit too (then it only frees). */
void volume_restore_abort(struct volumes *v, struct volume_restore *rs);

/* ---- Pure helpers (validate.c; unit-tested) -------------------------------------------------- */

/* INVALID_ARGUMENT naming `field` unless VOLUME_MIN_BYTES <= size <= VOLUME_MAX_BYTES. */
int volume_check_size(const char *field, uint64_t size, struct cap_error *err);
/* Parses CAPSULE_TEST_ATTACH-style "vol:workload,vol2:workload2" and calls fn for each valid
 * pair; returns the number of pairs or -EINVAL at the first malformed one. */
int volume_parse_attach_list(const char *text,
                             void (*fn)(void *ud, const char *vol, const char *wl), void *ud);

/* The filesystem's size in bytes from an ext4 superblock (the 1024 bytes at offset 1024 of the
 * device or image); -EINVAL when it is not ext4 or is implausible. */
int volume_ext4_fs_bytes(const uint8_t sb[1024], uint64_t *bytes);

/* lvm.c's pure half: one row of `lvs --reportformat json --units b --nosuffix -o
 * lv_name,lv_size,data_percent,lv_tags,pool_lv`. */
struct volume_lvm_lv {
        char *lv_name;
        char *pool_lv; /* "" when not a thin LV */
        uint64_t size_bytes;
        double data_percent; /* thin LVs: share of the size allocated in the pool; else 0 */
        bool incomplete;     /* tagged capsule_incomplete: a create that did not finish */
        bool snapshot;       /* tagged capsule_snapshot: a backup's snapshot (removed at open) */
        char *owner;         /* from the tag capsule_owner_ID; NULL when untagged */
};
/* Parses that report (every "lv" array of every "report" entry); INTERNAL on malformed output. */
int volume_lvm_parse_lvs(const char *json, struct volume_lvm_lv **out, size_t *n,
                         struct cap_error *err);
void volume_lvm_lvs_free(struct volume_lvm_lv *lvs, size_t n);
/* An exact size argument for lvcreate -V / lvextend -L: "67108864b". -ENOSPC if buf is short. */
int volume_lvm_size_arg(uint64_t bytes, char *buf, size_t len);
/* The volume name of LV "vol-NAME", or NULL for any other LV (perm, pool, ...). */
const char *volume_lvm_volume_name(const char *lv_name);
