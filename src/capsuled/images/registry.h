/* Registry pull: the OCI distribution API v2 over libcurl.
 *
 * GET the manifest (Accept: OCI index/manifest, docker manifest list/v2), pick linux/amd64 from an
 * index, then GET the config and layer blobs, streaming each into a blob_sink while hashing it:
 * a blob is committed only when its sha256 and size match the manifest. Anonymous access,
 * bearer tokens (a 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...` -> GET the
 * token, with the host's username and password if the machine config has them -> retry) and
 * Basic auth (a 401 with `WWW-Authenticate: Basic` -> retry with the host's credentials). HTTPS
 * with the system CA bundle plus the machine config's registries.ca (a private registry's own CA);
 * plain HTTP only for hosts listed as insecure in the machine config. Errors name the reference and
 * the HTTP status: "pull 127.0.0.1:5000/foo:1: manifest unknown (404)". */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blob.h"
#include "common/config.h"
#include "common/error.h"
#include "reference.h"

struct registry_opts {
        char *const *insecure; /* host[:port] reachable over plain HTTP */
        size_t n_insecure;
        const char *ca_pem; /* more CAs to trust for HTTPS, beside the system's (may be NULL) */
        const struct registry_cred *auth; /* credentials per host (machine config) */
        size_t n_auth;
        long connect_timeout_s;  /* 0 = 15 */
        /* A stalled transfer: slower than low_speed_bytes a second (0 = REGISTRY_LOW_SPEED) for
         * stall_timeout_s seconds (0 = REGISTRY_STALL_TIMEOUT) is aborted. */
        long low_speed_bytes;
        long stall_timeout_s;
        /* The total bound of one layer download, in seconds; 0 = registry_blob_deadline(). */
        long blob_timeout_s;
        uint64_t max_blob_bytes; /* 0 = 16 GiB */
        /* When set and true, transfers end at once (CAP_CANCELLED): shutdown. May be NULL. */
        const atomic_bool *cancel;
        /* Called as layer bytes arrive (and for layers already present): done of total, total
         * being every layer's size. NULL: no reports. From the pulling thread. */
        void (*progress)(void *ud, uint64_t done, uint64_t total);
        void *progress_ud;
};

struct registry_result {
        char digest[72]; /* the platform manifest's digest: the image record's target */
        char media_type[96];
        uint64_t manifest_size;
        uint64_t total_size;    /* manifest + config + layers */
        uint64_t bytes_fetched; /* blobs downloaded (not already present) */
};

#define REGISTRY_LOW_SPEED 1024        /* bytes a second: below this a transfer is stalling */
#define REGISTRY_STALL_TIMEOUT 60      /* seconds of stalling before a transfer is aborted */
#define REGISTRY_BLOB_BASE_TIMEOUT 1800 /* seconds: the default total bound of a layer is this */
#define REGISTRY_BLOB_MIN_RATE (1u << 20) /* plus its size at this many bytes a second */

/* The default total bound of downloading a blob of size bytes, in seconds: 30 minutes plus its
 * size at 1 MiB/s (1 GiB: 47 minutes), generous on a slow line yet finite on a trickle. */
long registry_blob_deadline(uint64_t size);

/* Initialise libcurl once per process (curl_global_init), before threads start pulling. */
int registry_global_init(struct cap_error *err);

/* Pulls ref into sink. The sink's labels carry GC references (manifest -> config, layers). */
int registry_pull(const struct registry_opts *o, const struct image_ref *ref,
                  const struct blob_sink *sink, struct registry_result *res, struct cap_error *err);

/* The credentials for host ("registry.lan:5000") in o->auth, or NULL. */
const struct registry_cred *registry_cred_for(const struct registry_opts *o, const char *host);

/* True when host ("127.0.0.1:5000") is in the insecure list. */
bool registry_is_insecure(const struct registry_opts *o, const char *host);

/* Parses a WWW-Authenticate Bearer challenge: realm, service and scope (each malloc'd, NULL when
 * absent). Returns 0, or -EINVAL if it is not a Bearer challenge. Exposed for unit tests. */
int registry_parse_challenge(const char *header, char **realm, char **service, char **scope);
