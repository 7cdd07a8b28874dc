/* SQLite implementation of the desired-state store (see store.h). */
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/deadline.h"

struct store {
        sqlite3 *db;
        pthread_mutex_t lock;
};

static const char schema_v1[] =
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS workloads ("
        "  name TEXT PRIMARY KEY, kind INTEGER NOT NULL, spec BLOB NOT NULL,"
        "  generation INTEGER NOT NULL, created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS volumes ("
        "  name TEXT PRIMARY KEY, size_bytes INTEGER NOT NULL, backend TEXT NOT NULL,"
        "  created_ns INTEGER NOT NULL);"
        /* added after v1 shipped; CREATE IF NOT EXISTS runs at every open, so old stores get it */
        "CREATE TABLE IF NOT EXISTS workload_history ("
        "  name TEXT PRIMARY KEY, created_ns INTEGER NOT NULL, generation INTEGER NOT NULL,"
        "  restarts INTEGER NOT NULL, last_exit_code INTEGER NOT NULL,"
        "  last_exit_reason TEXT NOT NULL, last_exit_ns INTEGER NOT NULL);";

static int64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int db_error(struct store *st, struct cap_error *err, const char *what)
{
        return cap_error_set(err, -EIO, CAP_INTERNAL, "store: %s: %s", what, sqlite3_errmsg(st->db));
}

static int exec_sql(struct store *st, const char *sql, struct cap_error *err)
{
        char *msg = NULL;
        if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
                int r = cap_error_set(err, -EIO, CAP_INTERNAL, "store: %s", msg ? msg : "exec failed");
                sqlite3_free(msg);
                return r;
        }
        return 0;
}

/* Refuses a store that a newer Capsule left in a format this version cannot read (see
 * CAPSULE_PERM_COMPAT): opening it would misread it, and writing it could lose what that version
 * stored. FAILED_PRECONDITION naming both formats. */
static int perm_format_check(struct store *st, struct cap_error *err)
{
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(st->db, "SELECT value FROM meta WHERE key = 'perm_compat';", -1, &q,
                               NULL) != SQLITE_OK)
                return db_error(st, err, "read perm_compat");
        int64_t compat = 0;
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW)
                compat = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return db_error(st, err, "read perm_compat");
        if (compat > CAPSULE_PERM_FORMAT)
                return cap_error_set(err, -EPROTO, CAP_FAILED_PRECONDITION,
                                     "written by a newer Capsule: only a Capsule that reads /perm "
                                     "format %lld or newer can use it, this version reads format "
                                     "%d (boot the newer slot again)",
                                     (long long)compat, CAPSULE_PERM_FORMAT);
        return 0;
}

int store_open(const char *dir, struct store **out, struct cap_error *err)
{
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return cap_error_errno(err, -errno, "store: create %s", dir);
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/state.db", dir) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "store: out of memory");
        struct store *st = calloc(1, sizeof(*st));
        if (!st)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "store: out of memory");
        pthread_mutex_init(&st->lock, NULL);
        if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                            NULL) != SQLITE_OK) {
                int r = cap_error_set(err, -EIO, CAP_INTERNAL, "store: open %s: %s", path,
                                      st->db ? sqlite3_errmsg(st->db) : "out of memory");
                store_close(st);
                return r;
        }
        sqlite3_busy_timeout(st->db, 5000);
        int r = exec_sql(st, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", err);
        if (r == 0)
                r = exec_sql(st, "BEGIN IMMEDIATE;", err);
        if (r == 0) {
                r = exec_sql(st, schema_v1, err);
                if (r == 0)
                        r = perm_format_check(st, err);
                char sql[320];
                snprintf(sql, sizeof(sql),
                         "INSERT INTO meta VALUES ('schema_version', '%d'), ('perm_compat', '%d') "
                         "ON CONFLICT(key) DO UPDATE SET value = "
                         "MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER));",
                         CAPSULE_PERM_FORMAT, CAPSULE_PERM_COMPAT);
                if (r == 0)
                        r = exec_sql(st, sql, err);
                if (r == 0)
                        r = exec_sql(st, "COMMIT;", err);
                else
                        exec_sql(st, "ROLLBACK;", NULL);
        }
        if (r < 0) {
                cap_error_prefix(err, "open %s", path);
                store_close(st);
                return r;
        }
        *out = st;
        return 0;
}

void store_close(struct store *st)
{
        if (!st)
                return;
        if (st->db)
                sqlite3_close(st->db);
        pthread_mutex_destroy(&st->lock);
        free(st);
}

int store_ping(struct store *st, int timeout_ms)
{
        struct timespec until = deadline_in_ms(CLOCK_REALTIME, timeout_ms);
        int r = pthread_mutex_timedlock(&st->lock, &until);
        if (r != 0)
                return -r;
        r = sqlite3_exec(st->db, "SELECT 1;", NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
        pthread_mutex_unlock(&st->lock);
        return r;
}

void store_fault_hold_lock(struct store *st)
{
        pthread_mutex_lock(&st->lock);
}

int store_check(struct store *st, struct cap_error *err)
{
        pthread_mutex_lock(&st->lock);
        sqlite3_stmt *s = NULL;
        int r = 0;
        if (sqlite3_prepare_v2(st->db, "PRAGMA quick_check;", -1, &s, NULL) != SQLITE_OK) {
                r = db_error(st, err, "quick_check");
        } else if (sqlite3_step(s) != SQLITE_ROW) {
                r = db_error(st, err, "quick_check");
        } else {
                const char *res = (const char *)sqlite3_column_text(s, 0);
                if (!res || strcmp(res, "ok") != 0)
                        r = cap_error_set(err, -EIO, CAP_DATA_LOSS, "store: quick_check: %s", res ? res : "?");
        }
        sqlite3_finalize(s);
        pthread_mutex_unlock(&st->lock);
        return r;
}

/* Prepares sql; on failure fills err and returns NULL. */
static sqlite3_stmt *prepare(struct store *st, const char *sql, struct cap_error *err)
{
        sqlite3_stmt *s = NULL;
        if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) {
                db_error(st, err, "prepare");
                return NULL;
        }
        return s;
}

int store_put_workload(struct store *st, const char *name, int kind, const uint8_t *spec, size_t len,
                       enum store_put_result *result, uint64_t *generation, struct cap_error *err)
{
        int r = 0;
        sqlite3_stmt *s = NULL;
        pthread_mutex_lock(&st->lock);
        if ((r = exec_sql(st, "BEGIN IMMEDIATE;", err)) < 0)
                goto out;
        s = prepare(st, "SELECT spec, generation FROM workloads WHERE name = ?;", err);
        if (!s) {
                r = -EIO;
                goto rollback;
        }
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        int step = sqlite3_step(s);
        uint64_t gen = 0;
        enum store_put_result res;
        if (step == SQLITE_ROW) {
                const void *old = sqlite3_column_blob(s, 0);
                size_t old_len = (size_t)sqlite3_column_bytes(s, 0);
                gen = (uint64_t)sqlite3_column_int64(s, 1);
                res = (old_len == len && (len == 0 || memcmp(old, spec, len) == 0)) ? STORE_UNCHANGED
                                                                                      : STORE_CONFIGURED;
        } else if (step == SQLITE_DONE) {
                res = STORE_CREATED;
        } else {
                r = db_error(st, err, "select workload");
                goto rollback;
        }
        sqlite3_finalize(s);
        s = NULL;
        if (res == STORE_UNCHANGED) {
                exec_sql(st, "ROLLBACK;", NULL);
                goto done;
        }
        int64_t now = now_ns();
        if (res == STORE_CREATED) {
                gen = 1;
                s = prepare(st, "INSERT INTO workloads (name, kind, spec, generation, created_ns, updated_ns) "
                                "VALUES (?1, ?2, ?3, ?4, ?5, ?5);", err);
        } else {
                gen++;
                s = prepare(st, "UPDATE workloads SET kind = ?2, spec = ?3, generation = ?4, updated_ns = ?5 "
                                "WHERE name = ?1;", err);
        }
        if (!s) {
                r = -EIO;
                goto rollback;
        }
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, kind);
        sqlite3_bind_blob(s, 3, spec, (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, (sqlite3_int64)gen);
        sqlite3_bind_int64(s, 5, now);
        if (sqlite3_step(s) != SQLITE_DONE) {
                r = db_error(st, err, "write workload");
                goto rollback;
        }
        if ((r = exec_sql(st, "COMMIT;", err)) < 0)
                goto rollback;
done:
        if (result)
                *result = res;
        if (generation)
                *generation = gen;
        goto out;
rollback:
        exec_sql(st, "ROLLBACK;", NULL);
out:
        sqlite3_finalize(s);
        pthread_mutex_unlock(&st->lock);
        return r;
}

/* Runs sql (binding `param` as ?1 when non-NULL) and collects every row into a malloc'd array
 * of elem_size-byte records filled by fill(). On failure frees what it collected. */
static int query_rows(struct store *st, const char *sql, const char *param, size_t elem_size,
                      int (*fill)(sqlite3_stmt *, void *), void (*free_rows)(void *, size_t), void **out,
                      size_t *n, struct cap_error *err)
{
        int r = 0;
        char *rows = NULL;
        size_t count = 0, cap = 0;
        pthread_mutex_lock(&st->lock);
        sqlite3_stmt *s = prepare(st, sql, err);
        if (!s) {
                r = -EIO;
                goto out;
        }
        if (param)
                sqlite3_bind_text(s, 1, param, -1, SQLITE_STATIC);
        int step;
        while ((step = sqlite3_step(s)) == SQLITE_ROW) {
                if (count == cap) {
                        cap = cap ? cap * 2 : 8;
                        char *nr = realloc(rows, cap * elem_size);
                        if (!nr) {
                                r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "store: out of memory");
                                goto out;
                        }
                        rows = nr;
                }
                if (fill(s, rows + count * elem_size) < 0) {
                        r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "store: out of memory");
                        goto out;
                }
                count++;
        }
        if (step != SQLITE_DONE)
                r = db_error(st, err, "query");
out:
        sqlite3_finalize(s);
        pthread_mutex_unlock(&st->lock);
        if (r < 0) {
                free_rows(rows, count);
                return r;
        }
        *out = rows;
        *n = count;
        return 0;
}

/* The single row of a by-name query into *one, or NOT_FOUND naming what and name. */
static int query_one(struct store *st, const char *sql, const char *what, const char *name, size_t elem_size,
                     int (*fill)(sqlite3_stmt *, void *), void (*free_rows)(void *, size_t), void *one,
                     struct cap_error *err)
{
        void *rows = NULL;
        size_t n = 0;
        int r = query_rows(st, sql, name, elem_size, fill, free_rows, &rows, &n, err);
        if (r < 0)
                return r;
        if (n == 0) {
                free(rows);
                return cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "%s \"%s\" not found", what, name);
        }
        memcpy(one, rows, elem_size);
        free(rows); /* n is 1: the name is the primary key */
        return 0;
}

static int fill_workload(sqlite3_stmt *s, void *row)
{
        struct store_workload *w = row;
        memset(w, 0, sizeof(*w));
        w->name = strdup((const char *)sqlite3_column_text(s, 0));
        w->kind = sqlite3_column_int(s, 1);
        w->spec_len = (size_t)sqlite3_column_bytes(s, 2);
        w->spec = malloc(w->spec_len ? w->spec_len : 1);
        if (!w->name || !w->spec) {
                store_workload_free(w);
                return -ENOMEM;
        }
        if (w->spec_len)
                memcpy(w->spec, sqlite3_column_blob(s, 2), w->spec_len);
        w->generation = (uint64_t)sqlite3_column_int64(s, 3);
        w->created_ns = sqlite3_column_int64(s, 4);
        w->updated_ns = sqlite3_column_int64(s, 5);
        return 0;
}

#define WORKLOAD_COLUMNS "name, kind, spec, generation, created_ns, updated_ns"

static void free_workload_rows(void *rows, size_t n)
{
        store_workloads_free(rows, n);
}

int store_get_workload(struct store *st, const char *name, struct store_workload *out, struct cap_error *err)
{
        return query_one(st, "SELECT " WORKLOAD_COLUMNS " FROM workloads WHERE name = ?;", "workload", name,
                         sizeof(*out), fill_workload, free_workload_rows, out, err);
}

int store_list_workloads(struct store *st, struct store_workload **out, size_t *n, struct cap_error *err)
{
        return query_rows(st, "SELECT " WORKLOAD_COLUMNS " FROM workloads ORDER BY name;", NULL, sizeof(**out),
                          fill_workload, free_workload_rows, (void **)out, n, err);
}

/* Runs a single-statement write with one text parameter; -ENOENT when no row changed. */
static int delete_by_name(struct store *st, const char *sql, const char *what, const char *name,
                          struct cap_error *err)
{
        int r = 0;
        pthread_mutex_lock(&st->lock);
        sqlite3_stmt *s = prepare(st, sql, err);
        if (!s) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE)
                r = db_error(st, err, "delete");
        else if (sqlite3_changes(st->db) == 0)
                r = cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "%s \"%s\" not found", what, name);
out:
        sqlite3_finalize(s);
        pthread_mutex_unlock(&st->lock);
        return r;
}

int store_delete_workload(struct store *st, const char *name, struct cap_error *err)
{
        int r = delete_by_name(st, "DELETE FROM workloads WHERE name = ?;", "workload", name, err);
        if (r == 0) {
                /* a leftover row (crash in between) is harmless: it names an older created_ns */
                struct cap_error ignored = {0};
                delete_by_name(st, "DELETE FROM workload_history WHERE name = ?;", "history", name,
                               &ignored);
        }
        return r;
}

int store_put_history(struct store *st, const char *name, const struct store_history *h,
                      struct cap_error *err)
{
        int r = 0;
        pthread_mutex_lock(&st->lock);
        sqlite3_stmt *s = prepare(
            st,
            "INSERT INTO workload_history (name, created_ns, generation, restarts, last_exit_code,"
            " last_exit_reason, last_exit_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
            "ON CONFLICT(name) DO UPDATE SET created_ns = excluded.created_ns,"
            " generation = excluded.generation, restarts = excluded.restarts,"
            " last_exit_code = excluded.last_exit_code, last_exit_reason = excluded.last_exit_reason,"
            " last_exit_ns = excluded.last_exit_ns;",
            err);
        if (!s) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, h->created_ns);
        sqlite3_bind_int64(s, 3, (sqlite3_int64)h->generation);
        sqlite3_bind_int64(s, 4, h->restarts);
        sqlite3_bind_int64(s, 5, h->last_exit_code);
        sqlite3_bind_text(s, 6, h->last_exit_reason ? h->last_exit_reason : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 7, h->last_exit_ns);
        if (sqlite3_step(s) != SQLITE_DONE)
                r = db_error(st, err, "put workload history");
out:
        sqlite3_finalize(s);
        pthread_mutex_unlock(&st->lock);
        return r;
}

int store_get_history(struct store *st, const char *name, struct store_history *out,
                      struct cap_error *err)
{
        memset(out, 0, sizeof(*out));
        int r = 0;
        pthread_mutex_lock(&st->lock);
        sqlite3_stmt *s = prepare(st,
                                  "SELECT created_ns, generation, restarts, last_exit_code,"
                                  " last_exit_reason, last_exit_ns FROM workload_history"
                                  " WHERE name = ?1;",
                                  err);
        if (!s) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) {
                r = cap_error_set(err, -ENOENT, CAP_NOT_FOUND, "no history for \"%s\"", name);
        } else if (rc != SQLITE_ROW) {
                r = db_error(st, err, "get workload history");
        } else {
                out->created_ns = sqlite3_column_int64(s, 0);
                out->generation = (uint64_t)sqlite3_column_int64(s, 1);
                out->restarts = (uint32_t)sqlite3_column_int64(s, 2);
                out->last_exit_code = (int32_t)sqlite3_column_int64(s, 3);
                const unsigned char *reason = sqlite3_column_text(s, 4);
                out->last_exit_ns = sqlite3_column_int64(s, 5);
                if (!(out->last_exit_reason = strdup(reason ? (const char *)reason : "")))
                        r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
out:
        sqlite3_finalize(s);
        pthread_mutex_unlock(&st->lock);
        return r;
}

void store_history_free(struct store_history *h)
{
        free(h->last_exit_reason);
        memset(h, 0, sizeof(*h));
}

void store_workload_free(struct store_workload *w)
{
        if (!w)
                return;
        free(w->name);
        free(w->spec);
        memset(w, 0, sizeof(*w));
}

void store_workloads_free(struct store_workload *ws, size_t n)
{
        for (size_t i = 0; i < n; i++)
                store_workload_free(&ws[i]);
        free(ws);
}

int store_put_volume(struct store *st, const char *name, uint64_t size_bytes, const char *backend,
                     struct cap_error *err)
{
        int r = 0;
        pthread_mutex_lock(&st->lock);
        sqlite3_stmt *s = prepare(st, "INSERT INTO volumes (name, size_bytes, backend, created_ns) "
                                      "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO UPDATE SET "
                                      "size_bytes = excluded.size_bytes, backend = excluded.backend;", err);
        if (!s) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, (sqlite3_int64)size_bytes);
        sqlite3_bind_text(s, 3, backend, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, now_ns());
        if (sqlite3_step(s) != SQLITE_DONE)
                r = db_error(st, err, "write volume");
out:
        sqlite3_finalize(s);
        pthread_mutex_unlock(&st->lock);
        return r;
}

static int fill_volume(sqlite3_stmt *s, void *row)
{
        struct store_volume *v = row;
        memset(v, 0, sizeof(*v));
        v->name = strdup((const char *)sqlite3_column_text(s, 0));
        v->size_bytes = (uint64_t)sqlite3_column_int64(s, 1);
        v->backend = strdup((const char *)sqlite3_column_text(s, 2));
        v->created_ns = sqlite3_column_int64(s, 3);
        if (!v->name || !v->backend) {
                store_volume_free(v);
                return -ENOMEM;
        }
        return 0;
}

#define VOLUME_COLUMNS "name, size_bytes, backend, created_ns"

static void free_volume_rows(void *rows, size_t n)
{
        store_volumes_free(rows, n);
}

int store_get_volume(struct store *st, const char *name, struct store_volume *out, struct cap_error *err)
{
        return query_one(st, "SELECT " VOLUME_COLUMNS " FROM volumes WHERE name = ?;", "volume", name, sizeof(*out),
                         fill_volume, free_volume_rows, out, err);
}

int store_list_volumes(struct store *st, struct store_volume **out, size_t *n, struct cap_error *err)
{
        return query_rows(st, "SELECT " VOLUME_COLUMNS " FROM volumes ORDER BY name;", NULL, sizeof(**out),
                          fill_volume, free_volume_rows, (void **)out, n, err);
}

int store_delete_volume(struct store *st, const char *name, struct cap_error *err)
{
        return delete_by_name(st, "DELETE FROM volumes WHERE name = ?;", "volume", name, err);
}

void store_volume_free(struct store_volume *v)
{
        if (!v)
                return;
        free(v->name);
        free(v->backend);
        memset(v, 0, sizeof(*v));
}

void store_volumes_free(struct store_volume *vs, size_t n)
{
        for (size_t i = 0; i < n; i++)
                store_volume_free(&vs[i]);
        free(vs);
}

int store_meta_get(struct store *st, const char *key, char **value, struct cap_error *err)
{
        int r = 0;
        *value = NULL;
        pthread_mutex_lock(&st->lock);
        sqlite3_stmt *s = prepare(st, "SELECT value FROM meta WHERE key = ?;", err);
        if (!s) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        int step = sqlite3_step(s);
        if (step == SQLITE_ROW) {
                *value = strdup((const char *)sqlite3_column_text(s, 0));
                if (!*value)
                        r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "store: out of memory");
        } else if (step != SQLITE_DONE) {
                r = db_error(st, err, "get meta");
        }
out:
        sqlite3_finalize(s);
        pthread_mutex_unlock(&st->lock);
        return r;
}

int store_meta_set(struct store *st, const char *key, const char *value, struct cap_error *err)
{
        int r = 0;
        pthread_mutex_lock(&st->lock);
        sqlite3_stmt *s = prepare(st, "INSERT INTO meta (key, value) VALUES (?1, ?2) "
                                      "ON CONFLICT(key) DO UPDATE SET value = excluded.value;", err);
        if (!s) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, value, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE)
                r = db_error(st, err, "set meta");
out:
        sqlite3_finalize(s);
        pthread_mutex_unlock(&st->lock);
        return r;
}

int store_id(struct store *st, char **id, struct cap_error *err)
{
        unsigned char raw[16];
        if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
                return cap_error_set(err, -EIO, CAP_INTERNAL, "getrandom: %s", strerror(errno));
        char hex[2 * sizeof(raw) + 1];
        for (size_t i = 0; i < sizeof(raw); i++)
                snprintf(hex + 2 * i, 3, "%02x", raw[i]);
        int r = 0;
        pthread_mutex_lock(&st->lock);
        sqlite3_stmt *s = prepare(st, "INSERT INTO meta (key, value) VALUES ('store_id', ?1) "
                                      "ON CONFLICT(key) DO NOTHING;", err);
        if (!s) {
                r = -EIO;
        } else {
                sqlite3_bind_text(s, 1, hex, -1, SQLITE_STATIC);
                if (sqlite3_step(s) != SQLITE_DONE)
                        r = db_error(st, err, "set store id");
        }
        sqlite3_finalize(s);
        pthread_mutex_unlock(&st->lock);
        if (r < 0)
                return r;
        r = store_meta_get(st, "store_id", id, err);
        if (r == 0 && !*id)
                r = cap_error_set(err, -EIO, CAP_INTERNAL, "store id missing after insert");
        return r;
}
