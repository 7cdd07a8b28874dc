/* capsule.v1.Updates handlers (Push, Status, Commit, Rollback) and the glue between serve and the
 * update engine (update/updater.h): where the ESP is (on a Capsule: checked with fsck.fat, mounted
 * read-only at /run/capsule/esp and remounted read-write only for each change), the health checks a
 * tentative boot must pass (those of `capsulectl health` plus "workloads": every desired workload
 * reconciled), the persistent keys (the store's meta table on /perm), events (type "update") and
 * the reboot (SIGINT to PID 1).
 *
 * For tests, `capsuled serve --update-sysroot DIR` runs the engine in host mode against DIR
 * standing in for the machine: DIR/esp (the ESP), DIR/proc/cmdline, DIR/efivars/
 * LoaderEntrySelected, DIR/version, DIR/dev/disk/by-partlabel/slot_{a,b} (files), and a reboot
 * writes DIR/reboot-requested instead. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "capsule/v1/updates.pb-c.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "events.h"
#include "reconcile/reconciler.h"
#include "serve.h"
#include "update/updater.h"
#include "volume/spawn.h"

#define ESP_DIR "/run/capsule/esp"
#define VERSION_FILE "/usr/lib/capsule/version"

static struct serve_ctx *ctx_of(struct rpc_call *call)
{
        return rpc_call_method(call)->userdata;
}

/* ---- hooks ---- */

static int hook_state_get(void *ud, const char *key, char **value)
{
        struct serve_ctx *ctx = ud;
        struct cap_error err = {0};
        *value = NULL;
        if (store_meta_get(ctx->store, key, value, &err) < 0)
                return err.code;
        return *value ? 0 : -ENOENT;
}

static int hook_state_set(void *ud, const char *key, const char *value, struct cap_error *err)
{
        struct serve_ctx *ctx = ud;
        return store_meta_set(ctx->store, key, value, err);
}

static void hook_event(void *ud, const char *action, const char *message)
{
        struct serve_ctx *ctx = ud;
        events_publish(ctx->events, "update", "os", action, "%s", message);
}

/* Every desired workload reconciled to its desired state: running, or (restart other than
 * always) exited. */
static void workloads_check(struct serve_ctx *ctx, struct updater_check *c)
{
        snprintf(c->name, sizeof(c->name), "workloads");
        struct store_workload *ws = NULL;
        size_t n = 0;
        struct cap_error err = {0};
        if (store_list_workloads(ctx->store, &ws, &n, &err) < 0) {
                c->state = UPDATE_CHECK_PENDING;
                snprintf(c->detail, sizeof(c->detail), "store: %s", err.msg);
                return;
        }
        size_t ok = 0;
        c->detail[0] = '\0';
        for (size_t i = 0; i < n; i++) {
                Capsule__V1__WorkloadSpec *spec =
                    capsule__v1__workload_spec__unpack(NULL, ws[i].spec_len, ws[i].spec);
                Capsule__V1__WorkloadStatus *st = reconciler_status(ctx->rec, ws[i].name);
                bool done = false;
                if (st && st->phase == CAPSULE__V1__PHASE__RUNNING)
                        done = true;
                else if (st && spec && st->phase == CAPSULE__V1__PHASE__EXITED &&
                         spec->restart != CAPSULE__V1__RESTART_POLICY__ALWAYS)
                        done = true;
                if (done)
                        ok++;
                else if (!c->detail[0])
                        snprintf(c->detail, sizeof(c->detail), "%s is %s%s%s", ws[i].name,
                                 st ? protobuf_c_enum_descriptor_get_value(
                                          &capsule__v1__phase__descriptor, (int)st->phase)
                                          ->name
                                    : "unknown",
                                 st && st->message && *st->message ? ": " : "",
                                 st && st->message ? st->message : "");
                if (st)
                        capsule__v1__workload_status__free_unpacked(st, NULL);
                if (spec)
                        capsule__v1__workload_spec__free_unpacked(spec, NULL);
        }
        store_workloads_free(ws, n);
        c->state = ok == n ? UPDATE_CHECK_OK : UPDATE_CHECK_PENDING;
        if (ok == n)
                snprintf(c->detail, sizeof(c->detail), "%zu of %zu workloads reconciled", ok, n);
}

static size_t hook_checks(void *ud, struct updater_check *out, size_t max)
{
        struct serve_ctx *ctx = ud;
        struct serve_check hc[UPDATER_MAX_CHECKS];
        size_t n = serve_health_collect(ctx, hc, max > 1 ? max - 1 : 0);
        for (size_t i = 0; i < n; i++) {
                snprintf(out[i].name, sizeof(out[i].name), "%s", hc[i].name);
                snprintf(out[i].detail, sizeof(out[i].detail), "%s", hc[i].msg);
                out[i].state = hc[i].ok ? UPDATE_CHECK_OK : UPDATE_CHECK_PENDING;
                /* a test image's failing check is definitive: no point in waiting */
                if (strcmp(hc[i].name, "test-fail-health") == 0)
                        out[i].state = UPDATE_CHECK_FAILED;
        }
        if (n < max)
                workloads_check(ctx, &out[n++]);
        return n;
}

static void *reboot_later(void *arg)
{
        struct serve_ctx *ctx = arg;
        sleep(1); /* the RPC's answer first */
        if (ctx->update_sysroot[0]) {
                char path[4200];
                snprintf(path, sizeof(path), "%s/reboot-requested", ctx->update_sysroot);
                FILE *f = fopen(path, "we");
                if (f)
                        fclose(f);
                log_info("update: reboot requested (test sysroot: %s)", path);
                return NULL;
        }
        if (kill(1, SIGINT) < 0)
                log_error("update: reboot: signal PID 1: %s", strerror(errno));
        return NULL;
}

static void hook_reboot(void *ud, const char *why)
{
        struct serve_ctx *ctx = ud;
        log_info("update: rebooting: %s", why);
        events_publish(ctx->events, "update", "os", "rebooting", "%s", why);
        pthread_t t;
        if (pthread_create(&t, NULL, reboot_later, ctx) != 0) {
                log_error("update: reboot: cannot start thread");
                return;
        }
        pthread_detach(t);
}

/* ---- start ---- */

#define ESP_FLAGS (MS_NODEV | MS_NOSUID | MS_NOEXEC | MS_NOATIME)

/* FAT has no journal: a power cut while it was being changed can leave a file whose clusters
 * are marked free, or lost ones. fsck.fat -a repairs that before the first mount (the ESP is
 * otherwise read-only, see esp_writable). Missing fsck.fat is only a warning. */
static void esp_fsck(const char *dev)
{
        struct cap_error err = {0};
        struct spawn_result res = {0};
        const char *argv[] = {"fsck.fat", "-a", "-w", dev, NULL};
        struct spawn_opts o = {.timeout_ms = 60000};
        if (spawn_run(argv, &o, &res, &err) < 0)
                log_warn("update: fsck.fat %s: %s", dev, err.msg);
        else if (res.exit_code == 1)
                log_warn("update: fsck.fat repaired the ESP %s: %s", dev, res.out ? res.out : "");
        else if (res.exit_code != 0)
                log_error("update: fsck.fat %s: exit %d: %s", dev, res.exit_code,
                          res.errout ? res.errout : "");
        spawn_result_free(&res);
}

/* Remounting read-only flushes every dirty inode and FAT sector and marks the FAT clean. */
static int hook_esp_writable(void *ud, bool rw, struct cap_error *err)
{
        (void)ud;
        if (mount(NULL, ESP_DIR, NULL, MS_REMOUNT | ESP_FLAGS | (rw ? 0 : MS_RDONLY), "umask=077") <
            0)
                return cap_error_errno(err, -errno, "remount the ESP %s %s", ESP_DIR,
                                       rw ? "read-write" : "read-only");
        return 0;
}

/* Mounts the ESP read-only; changes remount it read-write for their duration (esp_writable). */
static int esp_mount(struct cap_error *err)
{
        char dev[512];
        if (update_slot_find_partition("", "EFI", dev, sizeof(dev), err) < 0)
                return err->code;
        if (mkdir("/run/capsule", 0755) < 0 && errno != EEXIST)
                return cap_error_errno(err, -errno, "mkdir /run/capsule");
        if (mkdir(ESP_DIR, 0700) < 0 && errno != EEXIST)
                return cap_error_errno(err, -errno, "mkdir %s", ESP_DIR);
        struct stat mnt, parent;
        if (stat(ESP_DIR, &mnt) == 0 && stat("/run/capsule", &parent) == 0 &&
            mnt.st_dev != parent.st_dev) {
                /* mounted by an earlier serve of this boot (never fsck a mounted FAT) */
                return hook_esp_writable(NULL, false, err);
        }
        esp_fsck(dev);
        if (mount(dev, ESP_DIR, "vfat", ESP_FLAGS | MS_RDONLY, "umask=077") < 0)
                return cap_error_errno(err, -errno, "mount ESP %s on %s", dev, ESP_DIR);
        return 0;
}

/* LoaderEntrySelected lives in efivarfs (its module is in modules-boot); read-only is enough. */
static void efivarfs_mount(void)
{
        static const char dir[] = "/sys/firmware/efi/efivars";
        if (access(UPDATE_EFIVAR_ENTRY_SELECTED, F_OK) == 0 || access(dir, F_OK) < 0)
                return;
        if (mount("efivarfs", dir, "efivarfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) <
                0 &&
            errno != EBUSY)
                log_warn("update: mount efivarfs on %s: %s (the booted entry is read from the "
                         "ESP instead)",
                         dir, strerror(errno));
}

void serve_updates_start(struct serve_ctx *ctx)
{
        const char *sys = ctx->update_sysroot;
        struct cap_error err = {0};
        if (!ctx->os_mode && !sys[0]) {
                snprintf(ctx->updater_error, sizeof(ctx->updater_error),
                         "updates are only available on a Capsule (capsuled serve runs in host "
                         "mode)");
                return;
        }
        char esp[4200], cmdline[4200], efivar[4200], version[4200];
        if (sys[0]) {
                snprintf(esp, sizeof(esp), "%s/esp", sys);
                snprintf(cmdline, sizeof(cmdline), "%s/proc/cmdline", sys);
                snprintf(efivar, sizeof(efivar), "%s/efivars/LoaderEntrySelected", sys);
                snprintf(version, sizeof(version), "%s/version", sys);
        } else {
                if (esp_mount(&err) < 0) {
                        snprintf(ctx->updater_error, sizeof(ctx->updater_error),
                                 "updates unavailable: %s", err.msg);
                        log_warn("%s", ctx->updater_error);
                        return;
                }
                efivarfs_mount();
                snprintf(esp, sizeof(esp), "%s", ESP_DIR);
                snprintf(cmdline, sizeof(cmdline), "/proc/cmdline");
                snprintf(efivar, sizeof(efivar), "%s", UPDATE_EFIVAR_ENTRY_SELECTED);
                snprintf(version, sizeof(version), "%s", VERSION_FILE);
        }
        struct utsname un;
        uname(&un);
        struct updater_config cfg = {
            .paths = {.root = sys,
                      .esp = esp,
                      .cmdline = cmdline,
                      .entry_selected = efivar,
                      .version_file = version},
            .hooks = {.state_get = hook_state_get,
                      .state_set = hook_state_set,
                      .event = hook_event,
                      .checks = hook_checks,
                      .reboot = hook_reboot,
                      .esp_writable = sys[0] ? NULL : hook_esp_writable,
                      .ud = ctx},
            .arch = un.machine,
            .commit_window_sec = ctx->mcfg.update_commit_window_sec,
            .window_from_start = sys[0] != '\0',
        };
        ctx->updater = updater_new(&cfg, &err);
        if (!ctx->updater) {
                snprintf(ctx->updater_error, sizeof(ctx->updater_error), "updates unavailable: %s",
                         err.msg);
                log_warn("%s", ctx->updater_error);
        }
}

void serve_updates_run(struct serve_ctx *ctx)
{
        struct cap_error err = {0};
        if (ctx->updater && updater_start(ctx->updater, &err) < 0)
                log_error("%s: a tentative boot will not be decided by this serve", err.msg);
}

void serve_updates_stop(struct serve_ctx *ctx)
{
        updater_free(ctx->updater);
        ctx->updater = NULL;
}

static int need_updater(struct serve_ctx *ctx, struct cap_error *err)
{
        if (ctx->updater)
                return 0;
        return cap_error_set(err, -EOPNOTSUPP, CAP_FAILED_PRECONDITION, "%s",
                             ctx->updater_error[0] ? ctx->updater_error : "updates unavailable");
}

static void caller(struct rpc_call *call, char *buf, size_t size)
{
        struct rpc_peer peer = {0};
        rpc_call_peer(call, &peer, NULL);
        snprintf(buf, size, "cn=%s", peer.cn[0] ? peer.cn : peer.addr);
}

/* ---- Push ---- */

/* Receives the stream into p; returns 0 at its end. */
static int push_stream(struct rpc_call *call, struct updater_push *p, uint64_t total,
                       struct cap_error *err)
{
        for (;;) {
                ProtobufCMessage *m = NULL;
                int r = rpc_call_recv(call, &m, err);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                Capsule__V1__UpdatePushRequest *q = (Capsule__V1__UpdatePushRequest *)m;
                if (q->msg_case != CAPSULE__V1__UPDATE_PUSH_REQUEST__MSG_CHUNK) {
                        protobuf_c_message_free_unpacked(m, NULL);
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "a second header in the stream");
                }
                r = updater_push_feed(p, q->chunk.data, q->chunk.len, err);
                protobuf_c_message_free_unpacked(m, NULL);
                if (r < 0)
                        return r;
        }
        uint64_t got = updater_push_bytes(p);
        if (total && got != total)
                return cap_error_set(err, -EPIPE, CAP_DATA_LOSS,
                                     "upload incomplete: got %" PRIu64 " of %" PRIu64 " bytes", got,
                                     total);
        return 0;
}

int updates_push(struct rpc_call *call, const ProtobufCMessage *unused, struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        if (need_updater(ctx, err) < 0)
                return err->code;
        ProtobufCMessage *m = NULL;
        int r = rpc_call_recv(call, &m, err);
        if (r <= 0)
                return r < 0 ? r : cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "no data");
        Capsule__V1__UpdatePushRequest *q = (Capsule__V1__UpdatePushRequest *)m;
        if (q->msg_case != CAPSULE__V1__UPDATE_PUSH_REQUEST__MSG_HEADER) {
                protobuf_c_message_free_unpacked(m, NULL);
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "the first message must be the header");
        }
        uint64_t total = q->header->total_bytes;
        bool reboot = q->header->reboot, downgrade = q->header->allow_downgrade;
        protobuf_c_message_free_unpacked(m, NULL);

        char who[300];
        caller(call, who, sizeof(who));
        struct serve_config_ref *live = serve_config_get(ctx);
        struct updater_push_opts o = {
            .trusted_keys = (const char *const *)live->c.update_trusted_keys,
            .n_trusted_keys = live->c.n_update_trusted_keys,
            .allow_downgrade = downgrade,
            .who = who,
        };
        struct updater_push *p = NULL;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r = updater_push_begin(ctx->updater, &o, &p, err);
        char version[BUNDLE_VERSION_MAX + 1] = "", slot[2] = "";
        if (r == 0)
                r = push_stream(call, p, total, err);
        if (r == 0)
                r = updater_push_finish(p, version, sizeof(version), slot, err);
        uint64_t bytes = p ? updater_push_bytes(p) : 0;
        updater_push_free(p); /* an unfinished push reports itself ("refused") */
        serve_config_put(ctx, live);
        if (r < 0)
                return err->code; /* capsulectl says "update push: " */
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        log_info("update push: installed version=%s slot=%s bytes=%" PRIu64
                 " seconds=%.1f MiB/s=%.1f by %s",
                 version, slot, bytes, dt, dt > 0 ? (double)bytes / 1048576.0 / dt : 0.0, who);
        Capsule__V1__UpdatePushResponse resp = CAPSULE__V1__UPDATE_PUSH_RESPONSE__INIT;
        resp.version = version;
        resp.slot = slot;
        resp.rebooting = reboot;
        resp.bytes = bytes;
        r = rpc_call_send(call, &resp.base, err);
        if (reboot) {
                char why[256];
                snprintf(why, sizeof(why),
                         "into %s in slot %s (tentative boot), after a push by %s", version, slot,
                         who);
                hook_reboot(ctx, why);
        }
        return r;
}

/* ---- Status, Commit, Rollback ---- */

int updates_status(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        if (need_updater(ctx, err) < 0)
                return err->code;
        Capsule__V1__UpdateStatusResponse *r = (Capsule__V1__UpdateStatusResponse *)resp;
        struct updater_status s;
        updater_status(ctx->updater, &s);
        r->booted_slot = strdup(s.booted_slot);
        r->default_slot = strdup(s.default_slot);
        r->booted_version = strdup(s.running_version);
        r->tentative = s.tentative;
        r->commit_deadline_unix = s.commit_deadline_unix;
        r->slot_a_version = strdup(s.slot_version[0]);
        r->slot_b_version = strdup(s.slot_version[1]);
        r->slot_a_state = strdup(s.slot_state[0]);
        r->slot_b_state = strdup(s.slot_state[1]);
        r->last_good_slot = strdup(s.last_good_slot);
        r->message = strdup(s.message);
        r->last_rollback_reason = strdup(s.last_rollback_reason);
        r->last_rollback_unix = s.last_rollback_unix;
        r->booted_entry = strdup(s.booted_entry);
        if (!r->booted_slot || !r->default_slot || !r->booted_version || !r->slot_a_version ||
            !r->slot_b_version || !r->slot_a_state || !r->slot_b_state || !r->last_good_slot ||
            !r->message || !r->last_rollback_reason || !r->booted_entry)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        return 0;
}

int updates_commit(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        if (need_updater(ctx, err) < 0)
                return err->code;
        char who[300], why[400];
        caller(call, who, sizeof(who));
        snprintf(why, sizeof(why), "committed by %s (update commit)", who);
        return updater_commit(ctx->updater, why, err);
}

int updates_rollback(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                     struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        if (need_updater(ctx, err) < 0)
                return err->code;
        Capsule__V1__UpdateRollbackResponse *r = (Capsule__V1__UpdateRollbackResponse *)resp;
        char who[300], why[400], slot[2] = "";
        caller(call, who, sizeof(who));
        snprintf(why, sizeof(why), "rollback requested by %s", who);
        if (updater_rollback(ctx->updater, why, slot, err) < 0)
                return err->code;
        r->slot = strdup(slot);
        return r->slot ? 0 : cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}
