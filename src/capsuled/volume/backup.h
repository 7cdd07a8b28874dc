/* A volume's files as a tar stream (`capsulectl volume backup` / `restore`), apart from RPC and
 * storage so that it is unit-tested (tests/unit/test-volume-backup.c).
 *
 * Format: pax, numeric owners (no user or group names: the uids inside a volume belong to the
 * workloads, not to this host), extended attributes as pax records. The first entry is
 * VOLUME_BACKUP_META, a small text file ("capsule-volume-backup 1", "name=...",
 * "size_bytes=..."): restore reads the recorded size from it before it creates anything. The
 * last entry is VOLUME_BACKUP_END: a stream that lacks it was cut short, even at an entry
 * boundary (where tar itself cannot tell), and is refused. Neither is restored as a file.
 *
 * Extraction treats the stream as untrusted: every path is checked (no absolute paths, no "..",
 * nothing but regular files, directories, symbolic links and hard links inside the archive;
 * devices and FIFOs refused), writes through symbolic links are refused, sizes are bounded. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

#define VOLUME_BACKUP_META ".capsule-backup"
#define VOLUME_BACKUP_END ".capsule-backup-end"
#define VOLUME_BACKUP_META_MAX 4096

/* Receives the tar bytes as they are made; 0 or negative with err filled (stops the backup). */
typedef int (*volume_tar_out_fn)(void *ud, const void *buf, size_t len, struct cap_error *err);

/* Archives the tree at DIR (the volume's root; lost+found left out) as the backup of volume
 * NAME of size SIZE_BYTES, through out(). Sockets, devices and FIFOs are skipped (logged).
 * *entries: files, directories and links written. */
int volume_tar_write(const char *dir, const char *name, uint64_t size_bytes, volume_tar_out_fn out,
                     void *ud, uint64_t *entries, struct cap_error *err);

/* Gives the next bytes of the stream: returns their count with *buf set, 0 at the end, negative
 * with err filled on failure (a cancelled upload). */
typedef ssize_t (*volume_tar_in_fn)(void *ud, const void **buf, struct cap_error *err);

struct volume_tar_reader;

/* Opens a backup stream and reads its VOLUME_BACKUP_META entry: *size_bytes is the recorded size.
 * INVALID_ARGUMENT when the stream is not a Capsule volume backup. */
int volume_tar_reader_open(volume_tar_in_fn in, void *ud, uint64_t *size_bytes,
                           struct volume_tar_reader **out, struct cap_error *err);
/* Extracts every following entry under DEST (an empty directory) until VOLUME_BACKUP_END, which
 * must be followed by the end of the archive. Regular file data beyond max_bytes in total is
 * RESOURCE_EXHAUSTED; an unsafe entry INVALID_ARGUMENT naming it. On failure DEST holds part
 * of the tree: the caller discards it. */
int volume_tar_extract(struct volume_tar_reader *r, const char *dest, uint64_t max_bytes,
                       uint64_t *entries, struct cap_error *err);
void volume_tar_reader_free(struct volume_tar_reader *r);

/* Pure: 0 when PATH (an entry's name or a hard link's target) stays inside the archive: not
 * empty, not absolute, no ".." component; else INVALID_ARGUMENT naming field and path. */
int volume_tar_check_path(const char *field, const char *path, struct cap_error *err);
/* Pure: parses the META text; INVALID_ARGUMENT unless it is version 1 with a size_bytes. */
int volume_tar_parse_meta(const char *text, uint64_t *size_bytes, struct cap_error *err);
