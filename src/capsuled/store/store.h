/* The desired-state store: SQLite at ROOT/state.db (WAL, synchronous=FULL, foreign keys on).
 *
 * It holds what the operator asked for, never what is observed: workloads (their spec as protobuf
 * bytes plus a generation counter), volumes and small key/value metadata. Every write is one
 * transaction, so a crash or power cut leaves either the old or the new state, never a mix.
 * Thread-safe: one connection guarded by a mutex (writes are tiny and rare). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct store;

/* The format of what this version keeps on /perm (the store's schema and the layout around it),
 * and the oldest format a Capsule must read to use /perm after this version ran. A change that
 * older versions still read (a new table, a new optional column) raises only the format; one they
 * cannot read raises the compat too, and a running capsule refuses an update bundle whose
 * perm_compat is above its own CAPSULE_PERM_FORMAT (a rollback could not read /perm back). The
 * store records both (meta keys schema_version and perm_compat, each the highest seen) and refuses
 * to open when perm_compat is above this version's format. mkimage/bundle.sh reads these lines. */
#define CAPSULE_PERM_FORMAT 1
#define CAPSULE_PERM_COMPAT 1

enum store_put_result { STORE_CREATED = 1, STORE_CONFIGURED = 2, STORE_UNCHANGED = 3 };

struct store_workload {
        char *name;
        int kind;            /* capsule.v1.WorkloadKind */
        uint8_t *spec;       /* packed capsule.v1.WorkloadSpec */
        size_t spec_len;
        uint64_t generation;
        int64_t created_ns;
        int64_t updated_ns;
};

struct store_volume {
        char *name;
        uint64_t size_bytes;
        char *backend;
        int64_t created_ns;
};

/* Opens (creating on first use) DIR/state.db and migrates its schema. */
int store_open(const char *dir, struct store **out, struct cap_error *err);
void store_close(struct store *st);
/* PRAGMA quick_check: 0 when the database is sound. */
int store_check(struct store *st, struct cap_error *err);
/* Liveness probe: takes the store's lock within timeout_ms and runs a trivial query. Returns 0,
 * -ETIMEDOUT when the lock stayed held (a stuck call), or -EIO. Cheap: no integrity check. */
int store_ping(struct store *st, int timeout_ms);
/* Test seam only (CAPSULE_FAULT=stall:store, common/fault.h): takes the store's lock and never
 * gives it back, as a deadlocked caller would. */
void store_fault_hold_lock(struct store *st);

/* Inserts or updates a workload. Identical spec bytes → UNCHANGED (generation kept); a different
 * spec bumps the generation. */
int store_put_workload(struct store *st, const char *name, int kind, const uint8_t *spec, size_t len,
                       enum store_put_result *result, uint64_t *generation, struct cap_error *err);
/* -ENOENT (status NOT_FOUND) when absent. The caller frees with store_workload_free. */
int store_get_workload(struct store *st, const char *name, struct store_workload *out, struct cap_error *err);
/* All workloads ordered by name; caller frees with store_workloads_free. */
int store_list_workloads(struct store *st, struct store_workload **out, size_t *n, struct cap_error *err);
/* Deletes the workload and its history. */
int store_delete_workload(struct store *st, const char *name, struct cap_error *err);

/* What the reconciler remembers of a workload's runs across restarts of capsuled serve (actual
 * state is observed from containerd, but a count of past restarts and the last exit are history
 * that containerd no longer has). Valid for the incarnation created_ns and generation only. */
struct store_history {
        int64_t created_ns; /* the workload row's created_ns: a re-created workload starts afresh */
        uint64_t generation;
        uint32_t restarts;
        int32_t last_exit_code;
        int64_t last_exit_ns;
        char *last_exit_reason;
};
int store_put_history(struct store *st, const char *name, const struct store_history *h,
                      struct cap_error *err);
/* -ENOENT (NOT_FOUND) when there is none. Free with store_history_free. */
int store_get_history(struct store *st, const char *name, struct store_history *out,
                      struct cap_error *err);
void store_history_free(struct store_history *h);
void store_workload_free(struct store_workload *w);
void store_workloads_free(struct store_workload *ws, size_t n);

int store_put_volume(struct store *st, const char *name, uint64_t size_bytes, const char *backend,
                     struct cap_error *err);
int store_get_volume(struct store *st, const char *name, struct store_volume *out, struct cap_error *err);
int store_list_volumes(struct store *st, struct store_volume **out, size_t *n, struct cap_error *err);
int store_delete_volume(struct store *st, const char *name, struct cap_error *err);
void store_volume_free(struct store_volume *v);
void store_volumes_free(struct store_volume *vs, size_t n);

/* Small key/value metadata (e.g. "boot_id"); *value is malloc'd, NULL when absent. */
int store_meta_get(struct store *st, const char *key, char **value, struct cap_error *err);
int store_meta_set(struct store *st, const char *key, const char *value, struct cap_error *err);
/* This store's identity: 32 random hex digits made on first use and kept in meta "store_id".
 * Storage made on behalf of this store records it, so that a store that was lost or replaced
 * can tell storage it did not make (and must keep) from its own leftovers. *id is malloc'd. */
int store_id(struct store *st, char **id, struct cap_error *err);
