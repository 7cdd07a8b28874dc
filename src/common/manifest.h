/* Manifests: the YAML files operators write (`capsulectl apply -f web.yaml`), turned into the
 * protobuf-c specs the API takes, and rendered back as canonical YAML (`get -o yaml`, `diff`).
 *
 * A file holds one or more documents separated by `---`; each has `kind: Container`, `MicroVM` or
 * `Volume`. Parsing is strict and reports every problem it finds, each naming the file, the
 * document (1-based, counting every `---` section), the line and the field path:
 *   web.yaml: document 2 (line 14): ports[1]: "80800:80": host port 80800 out of range 1-65535
 * Field paths are the manifest's own keys (flat, no "spec." prefix); list indexes are 0-based.
 *
 * Specs produced here are heap-allocated like unpacked messages (unset strings point at
 * protobuf_c_empty_string, absent resources are NULL): protobuf_c_message_free_unpacked(spec,
 * NULL) frees one. They are normalised (see manifest_workload_normalize). The same validation rules
 * are available for specs that arrive over gRPC: manifest_workload_validate. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "capsule/v1/workloads.pb-c.h"
#include "error.h"
#include "quantity.h"

#define MANIFEST_MAX_BYTES (1024 * 1024) /* per file */
#define MANIFEST_MAX_DOCS 1000           /* per file */
#define MANIFEST_MAX_ERRORS 100          /* further errors are counted, not kept */

enum manifest_kind {
        MANIFEST_KIND_CONTAINER = 1,
        MANIFEST_KIND_MICROVM = 2,
        MANIFEST_KIND_VOLUME = 3,
};

struct manifest_doc {
        enum manifest_kind kind;
        char *file;                          /* file name given to manifest_parse, for messages */
        int index;                           /* 1-based document index in the file */
        int line;                            /* 1-based line where the document's mapping starts */
        Capsule__V1__WorkloadSpec *workload; /* Container and MicroVM */
        int *port_lines;                     /* [workload->n_ports]: line of each port entry */
        int *mount_lines;                    /* [workload->n_mounts]: line of each mount entry */
        char *volume_name;                   /* Volume */
        uint64_t volume_size;
};

struct manifest_set {
        struct manifest_doc *docs;
        size_t n;
};

/* A growable list of complete, human-readable error lines. */
struct manifest_errors {
        char **msgs;
        size_t n, cap;
        size_t dropped; /* errors beyond MANIFEST_MAX_ERRORS (or lost to ENOMEM) */
};

void manifest_errors_init(struct manifest_errors *errs);
void manifest_errors_free(struct manifest_errors *errs);
/* Appends one formatted line (no trailing newline needed). */
void manifest_errors_add(struct manifest_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Total number of errors, including dropped ones. */
size_t manifest_errors_count(const struct manifest_errors *errs);
/* Prints one error per line, then "... and N more errors" if some were dropped. */
void manifest_errors_print(const struct manifest_errors *errs, FILE *f);
/* All errors joined with sep, malloc'd (NULL on ENOMEM). "" when there are none. */
char *manifest_errors_join(const struct manifest_errors *errs, const char *sep);

/* Parses and validates buf (len bytes; need not be NUL-terminated). On success (0) out holds
 * the non-empty documents in file order, and the cross-document checks (manifest_set_check) have
 * passed. On any error returns -EINVAL (-E2BIG for over MANIFEST_MAX_BYTES, over
 * MANIFEST_MAX_DOCS or nested over 32 levels; -ENOMEM), appends every problem to
 * errs and leaves out empty. out is overwritten: free a previous set first. */
int manifest_parse(const char *filename, const char *buf, size_t len, struct manifest_set *out,
                   struct manifest_errors *errs);
/* Reads path (refusing files over MANIFEST_MAX_BYTES) and parses it; "-" reads stdin. */
int manifest_parse_file(const char *path, struct manifest_set *out, struct manifest_errors *errs);
void manifest_set_free(struct manifest_set *set);
/* Moves every document of src to the end of dst (for `apply -f a.yaml -f b.yaml`); src is left
 * empty. Call manifest_set_check on dst afterwards. */
int manifest_set_append(struct manifest_set *dst, struct manifest_set *src);
/* Cross-document checks: duplicate workload names (Container and MicroVM share one namespace),
 * duplicate volume names, a host port (same protocol and overlapping address) used by two
 * workloads. Returns 0 or -EINVAL after appending to errs. */
int manifest_set_check(const struct manifest_set *set, struct manifest_errors *errs);
/* Every mounted volume must be declared in the set or exist (volume_exists may be NULL: no
 * volume exists). Returns 0 or -EINVAL after appending to errs. */
int manifest_check_mounts(const struct manifest_set *set,
                          bool (*volume_exists)(const char *name, void *ud), void *ud,
                          struct manifest_errors *errs);

/* Validates a spec from any source (e.g. an Apply request). Errors look like
 * "PREFIX: ports[0]: host port 0 out of range 1-65535" (prefix may be NULL). Returns 0 or
 * -EINVAL after appending to errs. */
int manifest_workload_validate(const Capsule__V1__WorkloadSpec *spec, const char *prefix,
                               struct manifest_errors *errs);

/* A host port the capsule itself listens on (its API, its metrics endpoint): no workload may
 * publish it. */
struct manifest_reserved_port {
        uint32_t port;
        const char *protocol; /* "tcp" or "udp" */
        const char *what;     /* e.g. "the capsule API" */
};
/* Refuses spec's host ports that are in reserved[0..n): "PREFIX: ports[1].host: port 50000/tcp
 * is used by the capsule API; choose another host port". Returns 0 or -EINVAL after appending
 * to errs. */
int manifest_check_reserved_ports(const Capsule__V1__WorkloadSpec *spec, const char *prefix,
                                  const struct manifest_reserved_port *reserved, size_t n,
                                  struct manifest_errors *errs);

/* Normalises in place so that equal meaning gives equal bytes when packed:
 *   kind UNSPECIFIED -> CONTAINER; restart UNSPECIFIED -> ALWAYS;
 *   pull_policy UNSPECIFIED -> IF_NOT_PRESENT; port protocol "" -> "tcp" (lower-cased);
 *   accel "" -> "auto" for MicroVMs; env sorted by key (a map has no order), secret_env sorted;
 *   resources.cpus rounded to millicores; resources {0, 0} -> absent; NULL strings -> "".
 * Order of command, args, ports and mounts is kept: it is meaningful. Returns 0 or -ENOMEM. */
int manifest_workload_normalize(Capsule__V1__WorkloadSpec *spec);
/* Deep copy (pack + unpack). NULL on ENOMEM. */
Capsule__V1__WorkloadSpec *manifest_workload_copy(const Capsule__V1__WorkloadSpec *spec);
/* 1 if both specs mean the same after normalisation (compared packed), 0 if not, -ENOMEM. */
int manifest_workload_equal(const Capsule__V1__WorkloadSpec *a, const Capsule__V1__WorkloadSpec *b);

/* What API output shows in place of a secret env value (and of every env value for a reader).
 * A manifest may not use it as a value: re-applying `get -o yaml` output would store it. */
#define MANIFEST_REDACTED "<redacted>"
/* True if env entry `key` is marked secret (spec->secret_env). */
bool manifest_env_is_secret(const Capsule__V1__WorkloadSpec *spec, const char *key);
/* Replaces, in place, the value of every secret env entry (all of them when `all`) with
 * MANIFEST_REDACTED. Returns 0 or -ENOMEM. */
int manifest_workload_redact(Capsule__V1__WorkloadSpec *spec, bool all);

/* Canonical YAML of one workload (normalised view, fixed key order, defaults shown, empty fields
 * left out), parseable by manifest_parse. malloc'd; NULL on ENOMEM. */
char *manifest_workload_to_yaml(const Capsule__V1__WorkloadSpec *spec);
/* Canonical YAML of one volume document. malloc'd; NULL on ENOMEM. */
char *manifest_volume_to_yaml(const char *name, uint64_t size_bytes);

/* Quantity helpers with manifest error text ("\"12Qi\": unknown unit ..."); see quantity.h. */
int manifest_parse_quantity(const char *text, uint64_t *bytes, struct cap_error *err);
int manifest_parse_cpus(const char *text, double *cpus, struct cap_error *err);

const char *manifest_kind_name(enum manifest_kind kind);
/* Manifest words for enum values: "always", "on-failure", "never"; "IfNotPresent", "Always",
 * "Never"; "Container", "MicroVM". UNSPECIFIED gives the default's word; unknown values "unknown"
 * (never NULL). */
const char *manifest_restart_name(Capsule__V1__RestartPolicy restart);
const char *manifest_pull_policy_name(Capsule__V1__PullPolicy pull);
const char *manifest_workload_kind_name(Capsule__V1__WorkloadKind kind);
