/* Image references: parsing, validation and normalisation of docker-style names.
 *
 *   busybox                      -> docker.io/library/busybox:latest
 *   host:5000/a/b:tag            -> host:5000/a/b:tag
 *   ghcr.io/o/r@sha256:<64 hex>  -> ghcr.io/o/r@sha256:<64 hex>
 *
 * The normalised string is the name of the image record in containerd (what `ctr images ls` and
 * `capsulectl image ls` show). The registry client uses the split form (domain, repository, tag
 * or digest). Pure code: no I/O, unit-tested in tests/unit/test-reference.c. */
#pragma once

#include <stdbool.h>

#include "common/error.h"

#define IMAGE_REF_MAX 512      /* whole reference */
#define IMAGE_REF_NAME_MAX 255 /* domain + "/" + repository, as the distribution spec says */
#define IMAGE_REF_TAG_MAX 128

struct image_ref {
        char *domain;     /* "docker.io", "127.0.0.1:5000", "localhost" */
        char *repository; /* "library/busybox" */
        char *tag;        /* "latest"; NULL only when a digest was given without a tag */
        char *digest;     /* "sha256:<64 hex>" or NULL */
};

/* Parses and normalises s. INVALID_ARGUMENT naming what is wrong (empty, upper case repository,
 * bad tag, unsupported digest algorithm, too long, ...). out is zeroed on failure. */
int image_ref_parse(const char *s, struct image_ref *out, struct cap_error *err);
void image_ref_clear(struct image_ref *r);

/* The normalised string ("domain/repository[:tag][@digest]"), malloc'd; NULL when out of memory. */
char *image_ref_string(const struct image_ref *r);

/* Convenience: parse + string. *out is malloc'd. */
int image_ref_normalize(const char *s, char **out, struct cap_error *err);

/* "domain/repository" without tag or digest, malloc'd. */
char *image_ref_name(const struct image_ref *r);

/* True when s is "sha256:" followed by 64 lower-case hex digits. */
bool image_digest_valid(const char *s);
