/* Image archives (`image push`): docker-archive (`docker save`: manifest.json, <id>.json configs,
 * layer tars; also the newer blobs/sha256 layout) and oci-archive (oci-layout, index.json,
 * blobs/sha256/...), optionally gzip/xz/zstd-compressed, read with libarchive from a seekable
 * file (the spooled upload).
 *
 * Import is two passes so that nothing is written before everything is checked:
 *   1. archive_plan_open() reads every entry once: sanitises it (no "..", absolute paths, links
 *      leaving the archive, device nodes, duplicates, oversized entries), hashes it (and, for
 *      gzip data, its uncompressed form), keeps the small JSON files; then parses the format,
 *      checks every blob's digest and size against its manifest/index (and layer diff_ids
 *      against the config) and, for docker-archives, builds an OCI manifest. Any failure here
 *      leaves no trace.
 *   2. archive_plan_write() streams the blobs into a blob_sink (re-hashing as they flow), layers
 *      first, then configs, then manifests with their GC reference labels.
 * The caller creates the image records last. Pure code apart from reading the fd: fuzzed by
 * tests/fuzz/fuzz-archive.c, unit-tested by tests/unit/test-archive.c. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "blob.h"
#include "common/error.h"

struct archive_limits {
        uint64_t max_entry_bytes; /* largest entry (declared or actual); 0 = 4 GiB */
        uint64_t
            max_inflated_bytes;  /* largest uncompressed size of a gzip layer hashed; 0 = 32 GiB */
        uint64_t max_meta_bytes; /* total JSON kept in memory; 0 = 64 MiB */
        size_t max_entries;      /* 0 = 65536 */
};

/* One image record to create. */
struct archive_image {
        char *name;       /* normalised reference */
        char *media_type; /* of the target manifest */
        char digest[72];  /* the manifest digest */
        uint64_t manifest_size;
        uint64_t total_size; /* manifest + config + layers */
};

struct archive_plan;

/* Pass 1 on fd (seekable; read from offset 0). name_override: tag the (single) image with this
 * reference instead of the archive's names; NULL/"" = use the archive's. Status codes:
 * INVALID_ARGUMENT for malformed or unsafe archives and names, RESOURCE_EXHAUSTED for limits. */
int archive_plan_open(int fd, const char *name_override, const struct archive_limits *lim,
                      struct archive_plan **out, struct cap_error *err);
/* "docker-archive" or "oci-archive". */
const char *archive_plan_format(const struct archive_plan *p);
size_t archive_plan_n_images(const struct archive_plan *p);
const struct archive_image *archive_plan_image(const struct archive_plan *p, size_t i);
/* Number of distinct blobs the plan writes and their total size. */
size_t archive_plan_n_blobs(const struct archive_plan *p, uint64_t *total_bytes);
/* Pass 2: writes every blob into sink (fd re-read from offset 0). May be called again: blobs the
 * sink already holds are skipped. */
int archive_plan_write(struct archive_plan *p, int fd, const struct blob_sink *sink,
                       struct cap_error *err);
void archive_plan_free(struct archive_plan *p);
