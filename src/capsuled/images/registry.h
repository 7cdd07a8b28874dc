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
        long stall_timeout_s;    /* abort a transfer slower than 1 byte/s for this long; 0 = 60 */
        uint64_t max_blob_bytes; /* 0 = 16 GiB */
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
