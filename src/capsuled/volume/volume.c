/* The volume manager (see volume.h): the store says which volumes exist and how large they should
 * be; this file makes the backend match, in an order that a crash anywhere can be repaired from.
 *
 *   create: backend create (format into a temp name, rename; the storage records this store's
 *           id as its owner) -> store row -> mount. A crash before the row leaves storage the
 *           store does not know but owns: never acknowledged, removed by volumes_recover.
 *           After the row: recover mounts it.
 *   resize: store row (new desired size) -> backend grow. A crash in between: recover grows.
 *   delete: unmount -> delete the row -> backend remove. A crash after the row: recover removes
 *           the storage (owned by this store); before: the volume is still there.
 * Storage without a row that this store does not own is never removed: the store was lost or
 * replaced (or /perm fell back to a tmpfs), and the data is the operator's. It is adopted.
 * Attachments (which workloads use a volume) are kept in memory and set by the reconciler. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/names.h"
#include "common/quantity.h"
#include "store/store.h"
#include "volume.h"

struct attachment {
        char *volume;
        char *workload;
        bool disk; /* a microVM's disk: it holds the volume alone, unmounted here */
};

struct volumes {
        struct store *store;
        char *store_id; /* recorded as the owner of the storage this store creates */
        struct volume_backend *backend;
        pthread_mutex_t lock;
        struct attachment *att;
        size_t n_att;
};

static long elapsed_ms(const struct timespec *t0)
{
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

static int oom(struct cap_error *err)
{
        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

static bool attached_locked(struct volumes *v, const char *volume, const char *workload)
{
        for (size_t i = 0; i < v->n_att; i++)
                if (strcmp(v->att[i].volume, volume) == 0 &&
                    (!workload || strcmp(v->att[i].workload, workload) == 0))
                        return true;
        return false;
}

/* The attachment of `volume` as some microVM's disk, or NULL. */
static struct attachment *disk_holder_locked(struct volumes *v, const char *volume)
{
        for (size_t i = 0; i < v->n_att; i++)
                if (v->att[i].disk && strcmp(v->att[i].volume, volume) == 0)
                        return &v->att[i];
        return NULL;
}

static int attach_locked(struct volumes *v, const char *volume, const char *workload, bool disk)
{
        if (attached_locked(v, volume, workload))
                return 0;
        struct attachment *na = realloc(v->att, (v->n_att + 1) * sizeof(*na));
        if (!na)
                return -ENOMEM;
        v->att = na;
        na[v->n_att].volume = strdup(volume);
        na[v->n_att].workload = strdup(workload);
        na[v->n_att].disk = disk;
        if (!na[v->n_att].volume || !na[v->n_att].workload) {
                free(na[v->n_att].volume);
                free(na[v->n_att].workload);
                return -ENOMEM;
        }
        v->n_att++;
        return 0;
}

static void detach_locked(struct volumes *v, const char *volume, const char *workload)
{
        for (size_t i = 0; i < v->n_att;) {
                if ((!volume || strcmp(v->att[i].volume, volume) == 0) &&
                    strcmp(v->att[i].workload, workload) == 0) {
                        free(v->att[i].volume);
                        free(v->att[i].workload);
                        v->att[i] = v->att[--v->n_att];
                } else {
                        i++;
                }
        }
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "web, worker" for error messages; malloc'd. */
static char *users_locked(struct volumes *v, const char *volume)
{
        size_t len = 1;
        for (size_t i = 0; i < v->n_att; i++)
                if (strcmp(v->att[i].volume, volume) == 0)
                        len += strlen(v->att[i].workload) + 2;
        char *s = calloc(1, len);
        if (!s)
                return NULL;
        for (size_t i = 0; i < v->n_att; i++)
                if (strcmp(v->att[i].volume, volume) == 0) {
                        if (*s)
                                strcat(s, ", ");
                        strcat(s, v->att[i].workload);
                }
        return s;
}

static void test_attach(void *ud, const char *vol, const char *wl)
{
        if (attach_locked(ud, vol, wl, false) == 0)
                log_warn("volumes: CAPSULE_TEST_ATTACH: volume %s attached to %s (test seam)", vol,
                         wl);
}

int volumes_open(struct store *st, struct volume_backend *backend, struct volumes **out,
                 struct cap_error *err)
{
        struct volumes *v = calloc(1, sizeof(*v));
        if (!v) {
                backend->ops->free(backend);
                return oom(err);
        }
        v->store = st;
        v->backend = backend;
        pthread_mutex_init(&v->lock, NULL);
        int r = store_id(st, &v->store_id, err);
        if (r < 0) {
                volumes_close(v);
                return cap_error_prefix(err, "volumes");
        }
        const char *ta = getenv("CAPSULE_TEST_ATTACH");
        if (ta && *ta && volume_parse_attach_list(ta, test_attach, v) < 0)
                log_warn("volumes: CAPSULE_TEST_ATTACH=%s: expected VOLUME:WORKLOAD[,...]; ignored",
                         ta);
        *out = v;
        return 0;
}

void volumes_close(struct volumes *v)
{
        if (!v)
                return;
        for (size_t i = 0; i < v->n_att; i++) {
                free(v->att[i].volume);
                free(v->att[i].workload);
        }
        free(v->att);
        free(v->store_id);
        v->backend->ops->free(v->backend);
        pthread_mutex_destroy(&v->lock);
        free(v);
}

void volume_info_free(struct volume_info *vi)
{
        if (!vi)
                return;
        free(vi->name);
        free(vi->backend);
        for (size_t i = 0; i < vi->n_attached; i++)
                free(vi->attached_to[i]);
        free(vi->attached_to);
        memset(vi, 0, sizeof(*vi));
}

void volume_infos_free(struct volume_info *vis, size_t n)
{
        for (size_t i = 0; i < n; i++)
                volume_info_free(&vis[i]);
        free(vis);
}

/* Fills *out from a store row plus the backend's usage and our attachments. */
static int info_locked(struct volumes *v, const struct store_volume *row, struct volume_info *out,
                       struct cap_error *err)
{
        memset(out, 0, sizeof(*out));
        out->name = strdup(row->name);
        out->backend = strdup(row->backend);
        out->size_bytes = row->size_bytes;
        out->created_ns = row->created_ns;
        if (!out->name || !out->backend)
                goto nomem;
        for (size_t i = 0; i < v->n_att; i++) {
                if (strcmp(v->att[i].volume, row->name) != 0)
                        continue;
                char **na = realloc(out->attached_to, (out->n_attached + 1) * sizeof(*na));
                if (!na)
                        goto nomem;
                out->attached_to = na;
                if (!(na[out->n_attached] = strdup(v->att[i].workload)))
                        goto nomem;
                out->n_attached++;
                out->disk |= v->att[i].disk;
        }
        if (out->n_attached > 1)
                qsort(out->attached_to, out->n_attached, sizeof(char *), cmp_str);
        uint64_t size = 0;
        struct cap_error ignored = {0};
        if (strcmp(row->backend, v->backend->name) == 0)
                v->backend->ops->stat(v->backend, row->name, &size, &out->used_bytes, &out->mounted,
                                      &ignored);
        return 0;
nomem:
        volume_info_free(out);
        return oom(err);
}

/* For `name`, which the store has no row for. 1: this store made its storage and never
 * acknowledged it (a create or delete a crash interrupted), the caller may remove it. 0: it was
 * made by another store or before owners were recorded; it has been adopted (row added with the
 * storage's size, data kept). -ENOENT: there is no (whole) storage. Other negative: error. */
static int orphan_settle_locked(struct volumes *v, const char *name, struct cap_error *err)
{
        const struct volume_backend_ops *ops = v->backend->ops;
        _cleanup_free_ char *owner = NULL;
        int r = ops->owner(v->backend, name, &owner, err);
        if (r < 0)
                return r;
        if (owner && strcmp(owner, v->store_id) == 0)
                return 1;
        uint64_t size = 0, used = 0;
        bool mounted = false;
        if ((r = ops->stat(v->backend, name, &size, &used, &mounted, err)) < 0)
                return r;
        if ((r = store_put_volume(v->store, name, size, v->backend->name, err)) < 0)
                return r;
        char sz[QUANTITY_BUF_SIZE];
        log_warn("volumes: adopted %s (%s, data kept): its storage was made by %s%s, not by this "
                 "store (%s); the store was lost or replaced. `capsulectl volume rm %s` deletes it",
                 name, quantity_format_bytes(size, sz, sizeof(sz)),
                 owner ? "store " : "a store that recorded no owner", owner ? owner : "",
                 v->store_id, name);
        return 0;
}

int volume_create(struct volumes *v, const char *name, uint64_t size, bool *created,
                  struct volume_info *out, struct cap_error *err)
{
        *created = false;
        if (name_check("name", name, err) < 0 || volume_check_size("size_bytes", size, err) < 0)
                return err->code;
        const struct volume_backend_ops *ops = v->backend->ops;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pthread_mutex_lock(&v->lock);
        struct store_volume row = {0};
        struct cap_error gerr = {0};
        int r = store_get_volume(v->store, name, &row, &gerr);
        if (r == 0) {
                char have[QUANTITY_BUF_SIZE], want[QUANTITY_BUF_SIZE];
                if (row.size_bytes != size) {
                        r = cap_error_set(
                            err, -EEXIST, CAP_ALREADY_EXISTS,
                            "volume \"%s\" already exists with size %s (asked %s); to grow it run "
                            "`capsulectl volume resize %s --size %s`",
                            name, quantity_format_bytes(row.size_bytes, have, sizeof(have)),
                            quantity_format_bytes(size, want, sizeof(want)), name, want);
                } else {
                        r = ops->mount(v->backend, name, err);
                        if (r == 0 && out)
                                r = info_locked(v, &row, out, err);
                }
                goto out;
        }
        if (r != -ENOENT) {
                *err = gerr;
                goto out;
        }
        /* Storage without a row: our own unacknowledged leftover is removed; another store's
         * volume is adopted, and then answers like any existing volume. */
        r = orphan_settle_locked(v, name, err);
        if (r == 0) {
                pthread_mutex_unlock(&v->lock);
                store_volume_free(&row);
                return volume_create(v, name, size, created, out, err);
        }
        if (r == -ENOENT)
                cap_error_clear(err);
        else if (r < 0)
                goto out;
        r = ops->remove(v->backend, name, err);
        if (r == 0)
                r = ops->create(v->backend, name, size, v->store_id, err);
        if (r < 0)
                goto out;
        r = store_put_volume(v->store, name, size, v->backend->name, err);
        if (r < 0) {
                struct cap_error ignored = {0};
                ops->remove(v->backend, name, &ignored);
                goto out;
        }
        fault_point("volume-after-store");
        r = ops->mount(v->backend, name, err);
        if (r < 0) {
                struct cap_error ignored = {0};
                if (store_delete_volume(v->store, name, &ignored) == 0)
                        ops->remove(v->backend, name, &ignored);
                goto out;
        }
        *created = true;
        char sz[QUANTITY_BUF_SIZE];
        log_info("volume created name=%s size=%s backend=%s ms=%ld", name,
                 quantity_format_bytes(size, sz, sizeof(sz)), v->backend->name, elapsed_ms(&t0));
        if (out) {
                store_volume_free(&row);
                r = store_get_volume(v->store, name, &row, err);
                if (r == 0)
                        r = info_locked(v, &row, out, err);
        }
out:
        store_volume_free(&row);
        pthread_mutex_unlock(&v->lock);
        if (r < 0 && err->status != CAP_ALREADY_EXISTS)
                cap_error_prefix(err, "create volume \"%s\"", name);
        return r;
}

int volume_delete(struct volumes *v, const char *name, struct cap_error *err)
{
        if (name_check("name", name, err) < 0)
                return err->code;
        const struct volume_backend_ops *ops = v->backend->ops;
        pthread_mutex_lock(&v->lock);
        struct store_volume row = {0};
        int r = store_get_volume(v->store, name, &row, err);
        if (r < 0)
                goto out;
        if (attached_locked(v, name, NULL)) {
                _cleanup_free_ char *users = users_locked(v, name);
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                  "volume \"%s\" is in use by %s", name,
                                  users ? users : "a workload");
                goto out;
        }
        if (strcmp(row.backend, v->backend->name) != 0) {
                r = cap_error_set(err, -EXDEV, CAP_FAILED_PRECONDITION,
                                  "volume \"%s\" lives on the %s backend, "
                                  "this capsuled runs %s",
                                  name, row.backend, v->backend->name);
                goto out;
        }
        r = ops->unmount(v->backend, name, err);
        if (r == 0)
                r = store_delete_volume(v->store, name, err);
        if (r == 0) {
                log_info("volume deleted name=%s", name);
                /* The volume is gone for the API now; leftovers are retried at the next start. */
                if (ops->remove(v->backend, name, err) < 0) {
                        log_warn("volume %s: removing its storage: %s (retried at next start)",
                                 name, err->msg);
                        cap_error_clear(err);
                }
        }
out:
        store_volume_free(&row);
        pthread_mutex_unlock(&v->lock);
        if (r < 0 && err->status != CAP_NOT_FOUND && err->status != CAP_FAILED_PRECONDITION)
                cap_error_prefix(err, "delete volume \"%s\"", name);
        return r;
}

/* Grows storage to `size`; when the backend cannot grow it while mounted, unmounts around the
 * grow (callers make sure no workload uses it then). A no-op when already grown. */
static int grow_locked(struct volumes *v, const char *name, uint64_t size, struct cap_error *err)
{
        const struct volume_backend_ops *ops = v->backend->ops;
        int r = ops->resize(v->backend, name, size, err);
        if (r != -EPERM)
                return r;
        cap_error_clear(err);
        r = ops->unmount(v->backend, name, err);
        if (r < 0)
                return r;
        r = ops->resize(v->backend, name, size, err);
        struct cap_error merr = {0};
        int m = ops->mount(v->backend, name, &merr);
        if (r == 0 && m < 0) {
                *err = merr;
                r = m;
        }
        return r;
}

int volume_resize(struct volumes *v, const char *name, uint64_t size, struct volume_info *out,
                  struct cap_error *err)
{
        if (name_check("name", name, err) < 0 || volume_check_size("size_bytes", size, err) < 0)
                return err->code;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pthread_mutex_lock(&v->lock);
        struct store_volume row = {0};
        char have[QUANTITY_BUF_SIZE], want[QUANTITY_BUF_SIZE];
        int r = store_get_volume(v->store, name, &row, err);
        if (r < 0)
                goto out;
        quantity_format_bytes(row.size_bytes, have, sizeof(have));
        quantity_format_bytes(size, want, sizeof(want));
        if (size < row.size_bytes) {
                r = cap_error_set(err, -EINVAL, CAP_FAILED_PRECONDITION,
                                  "volume \"%s\" is %s: it cannot shrink to %s (volumes only grow)",
                                  name, have, want);
                goto out;
        }
        if (size > row.size_bytes) {
                const struct attachment *vm = disk_holder_locked(v, name);
                if (vm) {
                        r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                          "volume \"%s\" is the disk of microVM %s, whose kernel has it "
                                          "mounted: stop or delete %s first, then resize",
                                          name, vm->workload, vm->workload);
                        goto out;
                }
                if (attached_locked(v, name, NULL) &&
                    !v->backend->ops->can_grow_online(v->backend)) {
                        _cleanup_free_ char *users = users_locked(v, name);
                        r = cap_error_set(
                            err, -EBUSY, CAP_FAILED_PRECONDITION,
                            "volume \"%s\" is in use by %s and this host cannot grow a mounted "
                            "filesystem (capsuled lacks CAP_SYS_RESOURCE): stop the workload first",
                            name, users ? users : "a workload");
                        goto out;
                }
                r = store_put_volume(v->store, name, size, row.backend, err);
                if (r < 0)
                        goto out;
                r = grow_locked(v, name, size, err);
                if (r < 0) {
                        cap_error_prefix(
                            err,
                            "grow to %s (the volume and its data are intact; the grow is "
                            "retried at the next start)",
                            want);
                        goto out;
                }
                log_info("volume resized name=%s from=%s to=%s ms=%ld", name, have, want,
                         elapsed_ms(&t0));
                row.size_bytes = size;
        }
        if (out)
                r = info_locked(v, &row, out, err);
out:
        store_volume_free(&row);
        pthread_mutex_unlock(&v->lock);
        if (r < 0 && err->status != CAP_NOT_FOUND && err->status != CAP_FAILED_PRECONDITION)
                cap_error_prefix(err, "resize volume \"%s\"", name);
        return r;
}

int volume_get(struct volumes *v, const char *name, struct volume_info *out, struct cap_error *err)
{
        pthread_mutex_lock(&v->lock);
        struct store_volume row = {0};
        int r = store_get_volume(v->store, name, &row, err);
        if (r == 0)
                r = info_locked(v, &row, out, err);
        store_volume_free(&row);
        pthread_mutex_unlock(&v->lock);
        return r;
}

int volume_list(struct volumes *v, struct volume_info **out, size_t *n, struct cap_error *err)
{
        pthread_mutex_lock(&v->lock);
        struct store_volume *rows = NULL;
        size_t nrows = 0;
        int r = store_list_volumes(v->store, &rows, &nrows, err);
        struct volume_info *vis = NULL;
        if (r == 0 && nrows && !(vis = calloc(nrows, sizeof(*vis))))
                r = oom(err);
        size_t i = 0;
        for (; r == 0 && i < nrows; i++)
                r = info_locked(v, &rows[i], &vis[i], err);
        store_volumes_free(rows, nrows);
        pthread_mutex_unlock(&v->lock);
        if (r < 0) {
                volume_infos_free(vis, i);
                return r;
        }
        *out = vis;
        *n = nrows;
        return 0;
}

int volume_attach(struct volumes *v, const char *name, const char *workload, char **path,
                  struct cap_error *err)
{
        if (path)
                *path = NULL;
        if (name_check("volume", name, err) < 0 || name_check("workload", workload, err) < 0)
                return err->code;
        pthread_mutex_lock(&v->lock);
        struct store_volume row = {0};
        int r = store_get_volume(v->store, name, &row, err);
        const struct attachment *vm = r == 0 ? disk_holder_locked(v, name) : NULL;
        if (vm && strcmp(vm->workload, workload) != 0)
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                  "volume \"%s\" is in use by microVM %s as its disk: one kernel at a "
                                  "time may mount it (delete %s, or mount another volume)",
                                  name, vm->workload, vm->workload);
        if (r == 0 && attached_locked(v, name, VOLUME_RESTORE_HOLDER))
                r = cap_error_set(err, -EBUSY, CAP_UNAVAILABLE,
                                  "volume \"%s\" is being restored from a backup; try again when "
                                  "the restore has finished",
                                  name);
        if (r == 0)
                r = v->backend->ops->mount(v->backend, name, err);
        if (r == 0 && attach_locked(v, name, workload, false) < 0)
                r = oom(err);
        if (r == 0 && path && !(*path = v->backend->ops->path(v->backend, name)))
                r = oom(err);
        store_volume_free(&row);
        pthread_mutex_unlock(&v->lock);
        if (r < 0 && err->status != CAP_NOT_FOUND)
                cap_error_prefix(err, "attach volume \"%s\" to %s", name, workload);
        return r;
}

int volume_attach_disk(struct volumes *v, const char *name, const char *workload, char **disk,
                       struct cap_error *err)
{
        *disk = NULL;
        if (name_check("volume", name, err) < 0 || name_check("workload", workload, err) < 0)
                return err->code;
        const struct volume_backend_ops *ops = v->backend->ops;
        pthread_mutex_lock(&v->lock);
        struct store_volume row = {0};
        int r = store_get_volume(v->store, name, &row, err);
        if (r == 0 && strcmp(row.backend, v->backend->name) != 0)
                r = cap_error_set(err, -EXDEV, CAP_FAILED_PRECONDITION,
                                  "volume \"%s\" lives on the %s backend, this capsuled runs %s", name,
                                  row.backend, v->backend->name);
        bool mine = r == 0 && attached_locked(v, name, workload);
        if (r == 0 && !mine && attached_locked(v, name, NULL)) {
                _cleanup_free_ char *users = users_locked(v, name);
                const struct attachment *vm = disk_holder_locked(v, name);
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                  "volume \"%s\" is in use by %s%s: a microVM needs its volume alone "
                                  "(its own kernel mounts the filesystem; two writers would corrupt it)",
                                  name, vm ? "microVM " : "", users ? users : "a workload");
        }
        if (r == 0 && mine && !disk_holder_locked(v, name))
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                  "volume \"%s\" is mounted on this host for %s", name, workload);
        /* unmounted here before the VM's kernel mounts it (a no-op when already unmounted) */
        if (r == 0 && !mine)
                r = ops->unmount(v->backend, name, err);
        if (r == 0)
                r = ops->disk(v->backend, name, disk, err);
        if (r == 0 && !mine && attach_locked(v, name, workload, true) < 0) {
                free(*disk);
                *disk = NULL;
                r = oom(err);
        }
        store_volume_free(&row);
        pthread_mutex_unlock(&v->lock);
        if (r < 0 && err->status != CAP_NOT_FOUND && err->status != CAP_FAILED_PRECONDITION)
                cap_error_prefix(err, "attach volume \"%s\" to %s", name, workload);
        return r;
}

int volume_claim_disk(struct volumes *v, const char *name, const char *workload)
{
        pthread_mutex_lock(&v->lock);
        int r = attach_locked(v, name, workload, true);
        pthread_mutex_unlock(&v->lock);
        if (r == 0)
                log_info("volumes: %s is the disk of running microVM %s: left alone", name, workload);
        return r;
}

void volume_detach(struct volumes *v, const char *name, const char *workload)
{
        pthread_mutex_lock(&v->lock);
        detach_locked(v, name, workload);
        pthread_mutex_unlock(&v->lock);
}

void volume_detach_all(struct volumes *v, const char *workload)
{
        pthread_mutex_lock(&v->lock);
        detach_locked(v, NULL, workload);
        pthread_mutex_unlock(&v->lock);
}

static void keep_first(struct cap_error *first, const struct cap_error *e)
{
        if (first->code == 0)
                *first = *e;
}

int volumes_recover(struct volumes *v, struct cap_error *err)
{
        const struct volume_backend_ops *ops = v->backend->ops;
        pthread_mutex_lock(&v->lock);
        struct store_volume *rows = NULL;
        size_t nrows = 0;
        char **names = NULL;
        size_t nnames = 0;
        struct cap_error first = {0}, e = {0};
        int r = store_list_volumes(v->store, &rows, &nrows, err);
        if (r == 0)
                r = ops->list(v->backend, &names, &nnames, err);
        if (r < 0)
                goto out;
        /* Storage the store does not hold: removed when ours (an interrupted create or delete),
         * else adopted. */
        size_t adopted = 0;
        for (size_t i = 0; i < nnames; i++) {
                bool known = false;
                for (size_t j = 0; j < nrows && !known; j++)
                        known = strcmp(rows[j].name, names[i]) == 0;
                if (known)
                        continue;
                cap_error_clear(&e);
                int mine = orphan_settle_locked(v, names[i], &e);
                if (mine == 1) {
                        log_warn("volumes: removing %s: this store made its storage but has no "
                                 "such volume (an interrupted create or delete)",
                                 names[i]);
                        if (ops->remove(v->backend, names[i], &e) < 0)
                                mine = e.code;
                }
                if (mine == 0)
                        adopted++;
                if (mine < 0) {
                        log_error("volumes: %s: %s", names[i], e.msg);
                        keep_first(&first, &e);
                }
        }
        if (adopted > 0) { /* read the rows again, with the adopted ones */
                store_volumes_free(rows, nrows);
                rows = NULL;
                nrows = 0;
                if ((r = store_list_volumes(v->store, &rows, &nrows, err)) < 0)
                        goto out;
        }
        int mounted = 0;
        for (size_t j = 0; j < nrows; j++) {
                struct store_volume *row = &rows[j];
                if (strcmp(row->backend, v->backend->name) != 0) {
                        log_warn("volumes: %s uses backend %s, not %s: skipped", row->name,
                                 row->backend, v->backend->name);
                        continue;
                }
                bool present = false;
                for (size_t i = 0; i < nnames && !present; i++)
                        present = strcmp(names[i], row->name) == 0;
                cap_error_clear(&e);
                if (disk_holder_locked(v, row->name)) {
                        if (!present)
                                log_error("volumes: %s is the disk of a running microVM but its "
                                          "storage is missing",
                                          row->name);
                        continue; /* its VM's kernel has it mounted: no grow, no mount here */
                }
                if (!present) {
                        log_error(
                            "volumes: %s is in the store but its storage is missing: creating it "
                            "empty (its data, if it had any, is lost)",
                            row->name);
                        if (ops->create(v->backend, row->name, row->size_bytes, v->store_id,
                                        &e) < 0)
                                goto failed;
                }
                uint64_t size = 0, used = 0;
                bool is_mounted = false;
                if (ops->stat(v->backend, row->name, &size, &used, &is_mounted, &e) < 0)
                        goto failed;
                if (size <= row->size_bytes) {
                        /* Finishes a grow a crash interrupted (a no-op when complete). */
                        if (grow_locked(v, row->name, row->size_bytes, &e) < 0)
                                goto failed;
                } else {
                        log_warn("volumes: %s: storage (%llu bytes) is larger than the store's "
                                 "size (%llu)",
                                 row->name, (unsigned long long)size,
                                 (unsigned long long)row->size_bytes);
                }
                if (ops->mount(v->backend, row->name, &e) < 0)
                        goto failed;
                mounted++;
                continue;
        failed:
                log_error("volumes: %s: %s", row->name, e.msg);
                keep_first(&first, &e);
        }
        log_info("volumes: recovered backend=%s volumes=%zu mounted=%d", v->backend->name, nrows,
                 mounted);
        if (first.code) {
                *err = first;
                r = first.code;
        }
out:
        store_volumes_free(rows, nrows);
        for (size_t i = 0; i < nnames; i++)
                free(names[i]);
        free(names);
        pthread_mutex_unlock(&v->lock);
        return r;
}

/* ---- Backup and restore ---------------------------------------------------------------------- */

int volume_backup_begin(struct volumes *v, const char *name, struct volume_backup *out,
                        struct cap_error *err)
{
        *out = (struct volume_backup){0};
        if (name_check("name", name, err) < 0)
                return err->code;
        const struct volume_backend_ops *ops = v->backend->ops;
        pthread_mutex_lock(&v->lock);
        struct store_volume row = {0};
        int r = store_get_volume(v->store, name, &row, err);
        const struct attachment *vm = r == 0 ? disk_holder_locked(v, name) : NULL;
        if (r == 0 && (attached_locked(v, name, VOLUME_BACKUP_HOLDER) ||
                       attached_locked(v, name, VOLUME_RESTORE_HOLDER)))
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                  "volume \"%s\" is busy: a backup or restore of it is running",
                                  name);
        if (r == 0 && strcmp(row.backend, v->backend->name) != 0)
                r = cap_error_set(err, -EXDEV, CAP_FAILED_PRECONDITION,
                                  "volume \"%s\" lives on the %s backend, this capsuled runs %s",
                                  name, row.backend, v->backend->name);
        if (r == 0 && vm && !(out->vm = strdup(vm->workload)))
                r = oom(err);
        if (r == 0)
                r = ops->snapshot(v->backend, name, vm != NULL, &out->dir, &out->consistency, err);
        if (r < 0 && vm && err->status == CAP_FAILED_PRECONDITION)
                cap_error_prefix(err, "volume \"%s\" is the disk of microVM %s", name,
                                 vm->workload);
        if (r == 0 && attach_locked(v, name, VOLUME_BACKUP_HOLDER, false) < 0) {
                ops->snapshot_release(v->backend, name, out->dir);
                r = oom(err);
        }
        if (r == 0) {
                out->name = strdup(name);
                out->size_bytes = row.size_bytes;
                if (!out->name) {
                        detach_locked(v, name, VOLUME_BACKUP_HOLDER);
                        ops->snapshot_release(v->backend, name, out->dir);
                        r = oom(err);
                }
        }
        store_volume_free(&row);
        pthread_mutex_unlock(&v->lock);
        if (r < 0) {
                free(out->dir);
                free(out->vm);
                free(out->name);
                *out = (struct volume_backup){0};
                if (err->status != CAP_NOT_FOUND && err->status != CAP_FAILED_PRECONDITION)
                        cap_error_prefix(err, "back up volume \"%s\"", name);
        }
        return r;
}

void volume_backup_end(struct volumes *v, struct volume_backup *bk)
{
        if (!bk->name)
                return;
        pthread_mutex_lock(&v->lock);
        v->backend->ops->snapshot_release(v->backend, bk->name, bk->dir);
        detach_locked(v, bk->name, VOLUME_BACKUP_HOLDER);
        pthread_mutex_unlock(&v->lock);
        free(bk->dir);
        free(bk->vm);
        free(bk->name);
        *bk = (struct volume_backup){0};
}

/* The temporary volume a restore of NAME extracts into: "NAME.restore" is no DNS label, so it
 * never names a user's volume, and as storage this store owns without a row, volumes_recover
 * removes it after a crash. */
static char *restore_tmp_name(const char *name)
{
        char *t = NULL;
        return asprintf(&t, "%s.restore", name) < 0 ? NULL : t;
}

int volume_restore_begin(struct volumes *v, const char *name, uint64_t size,
                         uint64_t recorded_size, struct volume_restore *out, struct cap_error *err)
{
        *out = (struct volume_restore){0};
        if (name_check("name", name, err) < 0)
                return err->code;
        const struct volume_backend_ops *ops = v->backend->ops;
        pthread_mutex_lock(&v->lock);
        struct store_volume row = {0};
        struct cap_error gerr = {0};
        int r = store_get_volume(v->store, name, &row, &gerr);
        bool exists = r == 0;
        if (r < 0 && r != -ENOENT)
                *err = gerr;
        else
                r = 0;
        if (r == 0 && attached_locked(v, name, NULL)) {
                _cleanup_free_ char *users = users_locked(v, name);
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                  "volume \"%s\" is in use by %s: delete or stop those workloads "
                                  "(or restore into another volume name) first",
                                  name, users ? users : "a workload");
        }
        if (r == 0 && exists && size && size != row.size_bytes) {
                char have[QUANTITY_BUF_SIZE], want[QUANTITY_BUF_SIZE];
                r = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                  "size_bytes: volume \"%s\" exists with size %s, not %s; restore "
                                  "keeps an existing volume's size (omit --size, or resize it "
                                  "first)",
                                  name, quantity_format_bytes(row.size_bytes, have, sizeof(have)),
                                  quantity_format_bytes(size, want, sizeof(want)));
        }
        uint64_t want = exists ? row.size_bytes : size ? size : recorded_size;
        if (r == 0 && !exists)
                r = volume_check_size("size_bytes", want, err);
        if (r == 0 && attach_locked(v, name, VOLUME_RESTORE_HOLDER, false) < 0)
                r = oom(err);
        store_volume_free(&row);
        pthread_mutex_unlock(&v->lock);
        if (r < 0)
                return r;
        out->name = strdup(name);
        out->tmp = restore_tmp_name(name);
        if (!out->name || !out->tmp) {
                r = oom(err);
                goto fail;
        }
        if (!exists) {
                bool created = false;
                if ((r = volume_create(v, name, want, &created, NULL, err)) < 0)
                        goto fail;
                out->created = created;
        }
        pthread_mutex_lock(&v->lock);
        r = ops->remove(v->backend, out->tmp, err);
        if (r == 0)
                r = ops->create(v->backend, out->tmp, want, v->store_id, err);
        if (r == 0)
                r = ops->mount(v->backend, out->tmp, err);
        if (r == 0 && !(out->dir = ops->path(v->backend, out->tmp)))
                r = oom(err);
        pthread_mutex_unlock(&v->lock);
        if (r < 0)
                goto fail;
        out->size_bytes = want;
        return 0;
fail:
        volume_restore_abort(v, out);
        return r;
}

void volume_restore_abort(struct volumes *v, struct volume_restore *rs)
{
        if (!rs->name)
                goto out;
        struct cap_error e = {0};
        pthread_mutex_lock(&v->lock);
        if (rs->tmp && v->backend->ops->remove(v->backend, rs->tmp, &e) < 0)
                log_warn("volume %s: removing %s: %s (removed at the next start)", rs->name,
                         rs->tmp, e.msg);
        detach_locked(v, rs->name, VOLUME_RESTORE_HOLDER);
        pthread_mutex_unlock(&v->lock);
        if (rs->created && volume_delete(v, rs->name, &e) < 0)
                log_warn("volume %s: removing the volume the failed restore created: %s",
                         rs->name, e.msg);
out:
        free(rs->name);
        free(rs->tmp);
        free(rs->dir);
        *rs = (struct volume_restore){0};
}

int volume_restore_commit(struct volumes *v, struct volume_restore *rs, struct volume_info *out,
                          struct cap_error *err)
{
        const struct volume_backend_ops *ops = v->backend->ops;
        pthread_mutex_lock(&v->lock);
        int r = ops->replace(v->backend, rs->name, rs->tmp, err);
        if (r == 0) {
                fault_point("volume-restore-after-replace");
                r = ops->mount(v->backend, rs->name, err);
        }
        if (r == 0) {
                free(rs->tmp);
                rs->tmp = NULL; /* gone into the volume */
                rs->created = false;
                detach_locked(v, rs->name, VOLUME_RESTORE_HOLDER);
                struct store_volume row = {0};
                if (out && (r = store_get_volume(v->store, rs->name, &row, err)) == 0)
                        r = info_locked(v, &row, out, err);
                store_volume_free(&row);
        }
        pthread_mutex_unlock(&v->lock);
        if (r < 0)
                cap_error_prefix(err, "restore volume \"%s\"", rs->name);
        return r;
}
