/* Update bundles (docs/updates.md): a POSIX ustar archive whose members are, in this order,
 *   manifest.json, manifest.json.sig (raw 64-byte Ed25519 signature over manifest.json's bytes),
 *   then vmlinuz, initrd and rootfs.sqfs in the order manifest.json lists them.
 *
 * This module reads one as a stream: the caller feeds bytes in arbitrary chunks as they arrive
 * (a gRPC client stream) and the reader parses tar headers itself, verifies the signature against
 * the trusted keys before parsing the manifest, checks architecture, version and sizes, and only
 * then hands each part to a sink while hashing it; a part whose sha256 differs is aborted, never
 * closed. It does no I/O of its own (the sink does), so it is unit-tested and fuzzed directly. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define BUNDLE_FORMAT 1
#define BUNDLE_MANIFEST_NAME "manifest.json"
#define BUNDLE_SIG_NAME "manifest.json.sig"
#define BUNDLE_MANIFEST_MAX (64 * 1024)
#define BUNDLE_SIG_LEN 64
#define BUNDLE_N_PARTS 3
/* The largest size a ustar header can carry in octal (11 digits): 8 GiB - 1. */
#define BUNDLE_PART_MAX ((UINT64_C(1) << 33) - 1)
#define BUNDLE_VERSION_MAX 63
/* After the end-of-archive blocks only zero padding may follow, at most this much. */
#define BUNDLE_TRAILER_MAX (1024 * 1024)

/* The part names, in the order bundle.sh writes them. */
extern const char *const bundle_part_names[BUNDLE_N_PARTS];

struct bundle_part {
        char name[16];       /* one of bundle_part_names */
        uint64_t size;       /* bytes */
        uint8_t sha256[32];  /* from the manifest */
        char sha256_hex[65]; /* lowercase, as written in the manifest */
};

struct bundle_manifest {
        int format;                                    /* BUNDLE_FORMAT */
        char version[BUNDLE_VERSION_MAX + 1];          /* "0.2.0" */
        char arch[32];                                 /* "x86_64" (uname -m) */
        char min_from_version[BUNDLE_VERSION_MAX + 1]; /* "" when absent */
        /* What this version keeps on /perm (store/store.h's CAPSULE_PERM_FORMAT and _COMPAT):
         * the format it writes and the oldest format a reader must know; 1 and 1 when absent. */
        int64_t perm_format, perm_compat;
        struct bundle_part parts[BUNDLE_N_PARTS];      /* in archive order */
        size_t n_parts;
};

/* Parses and validates manifest.json: strict JSON, every field checked, unknown fields refused
 * with their name, exactly the three parts (each once). INVALID_ARGUMENT naming the field. */
int bundle_manifest_parse(const char *buf, size_t len, struct bundle_manifest *out,
                          struct cap_error *err);

/* Versions: MAJOR.MINOR.PATCH (decimal, no leading zeros, at most 9 digits) with an optional
 * "-SUFFIX" of dot-separated [0-9A-Za-z-] identifiers (numeric ones without leading zeros), at
 * most BUNDLE_VERSION_MAX characters in all. Ordered as semver 2.0: numbers first; a
 * version with a suffix is older than the same without ("0.2.0-rc.1" < "0.2.0"); suffixes compare
 * identifier by identifier, numeric ones numerically and below alphanumeric ones (ASCII order),
 * and a shorter list of equal identifiers is older. */
bool bundle_version_is_valid(const char *v);
/* Sets *cmp to <0, 0 or >0. -EINVAL when either is not a valid version. */
int bundle_version_compare(const char *a, const char *b, int *cmp);

/* Where the parts go. Every callback returns 0 or a negative errno and fills err; the reader adds
 * the part's name to the message. */
struct bundle_sink {
        /* The room for part (the slot partition for the root image, the ESP for the others); called
         * for every part, in archive order, after the signature and manifest checks and before
         * the first open. A part larger than *bytes is refused (RESOURCE_EXHAUSTED). */
        int (*capacity)(void *ctx, const struct bundle_part *part, uint64_t *bytes,
                        struct cap_error *err);
        int (*open)(void *ctx, const struct bundle_part *part, struct cap_error *err);
        int (*write)(void *ctx, const struct bundle_part *part, const void *buf, size_t len,
                     struct cap_error *err);
        /* Called once the part's size and sha256 matched: make it durable (fsync, rename). */
        int (*close)(void *ctx, const struct bundle_part *part, struct cap_error *err);
        /* Called instead of close for an opened part that failed (hash mismatch, truncated
         * stream, a write error, bundle_reader_free before the end): discard what was written. */
        void (*abort)(void *ctx, const struct bundle_part *part);
        void *ctx;
};

struct bundle_reader_opts {
        const char *const *trusted_keys; /* PEM Ed25519 public keys ("BEGIN PUBLIC KEY") */
        size_t n_trusted_keys;
        const char *arch;            /* expected architecture, e.g. uname(2)'s machine */
        const char *running_version; /* the version booted now */
        bool allow_downgrade;        /* accept a version not newer than the running one */
        int64_t perm_format;         /* the /perm format the running version reads */
        const struct bundle_sink *sink;
};

struct bundle_reader;

/* Copies what it needs from opts (the sink is referenced, not copied). A trusted key that does
 * not parse or is not Ed25519 is an INVALID_ARGUMENT naming "trusted key N". */
int bundle_reader_new(const struct bundle_reader_opts *opts, struct bundle_reader **out,
                      struct cap_error *err);
/* Feeds the next len bytes. After an error every later call returns the same error (and the
 * part being written was aborted). Errors:
 *   INVALID_ARGUMENT     malformed tar (checksum, type, name, size, order) or manifest
 *   PERMISSION_DENIED    no trusted key, or the signature verifies with none of them
 *   FAILED_PRECONDITION  wrong architecture, not newer (without allow_downgrade), below
 *                        min_from_version, a perm_compat above opts.perm_format (the running
 *                        version could not read /perm after a rollback)
 *   RESOURCE_EXHAUSTED   a part larger than the sink's capacity
 *   DATA_LOSS            a part whose sha256 differs from the manifest's */
int bundle_reader_feed(struct bundle_reader *r, const void *buf, size_t len, struct cap_error *err);
/* The end of the stream: 0 when the whole archive (through its end-of-archive blocks) was read
 * and every part closed; DATA_LOSS ("truncated") otherwise. */
int bundle_reader_finish(struct bundle_reader *r, struct cap_error *err);
/* The verified manifest, or NULL before the signature and manifest checks passed. */
const struct bundle_manifest *bundle_reader_manifest(const struct bundle_reader *r);
/* Index into opts.trusted_keys of the key that verified the signature, or -1. */
int bundle_reader_key_index(const struct bundle_reader *r);
/* Aborts a part still open. NULL is fine. */
void bundle_reader_free(struct bundle_reader *r);

/* Checks that pem holds exactly one Ed25519 public key. INVALID_ARGUMENT naming what. */
int bundle_key_check(const char *pem, const char *what, struct cap_error *err);
