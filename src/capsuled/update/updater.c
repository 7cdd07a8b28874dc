/* The update engine (see updater.h): pushes into the inactive slot, the tentative boot's commit
 * or rollback, and the status, from what is on the ESP (loader entries are the truth of what
 * each slot holds and whether it is blessed) plus a few persistent keys:
 *   update.last_good_slot   the slot of the last committed boot
 *   update.pending          "SLOT VERSION" of an update written and not yet committed or failed
 *   update.rollback_reason  why the last update (or rollback) did not stay, and
 *   update.rollback_unix    when. */
#include "updater.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "store/store.h"

#define KEY_LAST_GOOD "update.last_good_slot"
#define KEY_PENDING "update.pending"
#define KEY_REASON "update.rollback_reason"
#define KEY_REASON_TIME "update.rollback_unix"
#define DECIDE_EVERY_MS 2000

struct updater {
        struct updater_config cfg;
        char *root, *esp, *cmdline, *entry_selected, *version_file, *arch;
        char booted[2];
        char booted_entry[64];
        char running_version[BUNDLE_VERSION_MAX + 1];
        char partition[2][512]; /* slot_a, slot_b */
        pthread_mutex_t lock;
        pthread_cond_t cond;
        pthread_t thread;
        bool thread_started, stop, kicked;
        bool tentative;        /* booted from a counting entry ... */
        bool decided;          /* ... and committed or rolled back since */
        int64_t deadline_unix; /* of the commit window */
        int64_t boot_time;     /* CLOCK_BOOTTIME seconds when the window began */
        char message[512];
        bool pushing;
        bool rebooting; /* a reboot was requested: nothing else may change the slots */
};

static int64_t boottime_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return ts.tv_sec;
}

static int slot_index(const char *slot)
{
        return slot[0] == 'b' ? 1 : 0;
}

/* Reads at most size-1 bytes of path into buf, NUL-terminated; trailing whitespace trimmed.
 * Returns the length or a negative errno. */
static ssize_t read_text(const char *path, char *buf, size_t size)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        size_t n = 0;
        while (n < size - 1) {
                ssize_t r = read(fd, buf + n, size - 1 - n);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (r == 0)
                        break;
                n += (size_t)r;
        }
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\r'))
                n--;
        buf[n] = '\0';
        return (ssize_t)n;
}

/* ---- pure helpers ---- */

void updater_cmdline_slot(const char *cmdline, char *slot, size_t size)
{
        snprintf(slot, size, "%s", "");
        for (const char *p = cmdline; p && *p;) {
                while (*p == ' ' || *p == '\n' || *p == '\t')
                        p++;
                size_t len = strcspn(p, " \n\t");
                if (len > 13 && strncmp(p, "capsule.slot=", 13) == 0)
                        snprintf(slot, size, "%.*s", (int)(len - 13), p + 13);
                p += len;
        }
}

/* The value of the first line "KEY value" of text. */
static void line_value(const char *text, const char *key, char *buf, size_t size)
{
        size_t klen = strlen(key);
        snprintf(buf, size, "%s", "");
        for (const char *p = text; p && *p;) {
                size_t len = strcspn(p, "\n");
                if (len > klen && strncmp(p, key, klen) == 0 &&
                    (p[klen] == ' ' || p[klen] == '\t')) {
                        const char *v = p + klen;
                        while (*v == ' ' || *v == '\t')
                                v++;
                        size_t vlen = (size_t)(p + len - v);
                        while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == ' '))
                                vlen--;
                        snprintf(buf, size, "%.*s", (int)vlen, v);
                        return;
                }
                p += len + (p[len] ? 1 : 0);
        }
}

void updater_entry_version(const char *text, char *buf, size_t size)
{
        line_value(text, "version", buf, size);
}

void updater_loader_default(const char *text, char *buf, size_t size)
{
        line_value(text, "default", buf, size);
}

/* ---- the ESP ---- */

struct slot_entry {
        bool exists;
        char name[256]; /* file name in loader/entries */
        struct update_entry e;
        char version[BUNDLE_VERSION_MAX + 1];
};

/* slot's loader entry: a blessed one wins over a counting one (there is at most one of each). */
static void find_entry(struct updater *u, const char *slot, struct slot_entry *out)
{
        char dir[4200];
        memset(out, 0, sizeof(*out));
        snprintf(dir, sizeof(dir), "%s/loader/entries", u->esp);
        DIR *d = opendir(dir);
        if (!d)
                return;
        for (struct dirent *de; (de = readdir(d));) {
                struct update_entry e;
                size_t len = strlen(de->d_name);
                if (len < 6 || strcmp(de->d_name + len - 5, ".conf") != 0 ||
                    update_entry_parse(de->d_name, &e) < 0 || strcmp(e.slot, slot) != 0)
                        continue;
                if (out->exists && !out->e.counting)
                        continue;
                out->exists = true;
                out->e = e;
                snprintf(out->name, sizeof(out->name), "%s", de->d_name);
        }
        closedir(d);
        if (out->exists) {
                char path[4500], text[4096];
                snprintf(path, sizeof(path), "%s/%s", dir, out->name);
                if (read_text(path, text, sizeof(text)) >= 0)
                        updater_entry_version(text, out->version, sizeof(out->version));
        }
}

static void read_default(struct updater *u, char *buf, size_t size)
{
        char path[4200], text[8192];
        snprintf(path, sizeof(path), "%s/loader/loader.conf", u->esp);
        if (read_text(path, text, sizeof(text)) < 0)
                text[0] = '\0';
        updater_loader_default(text, buf, size);
}

/* Renames slot's counting entry to the spent name (capsule-X+0-N.conf), so that systemd-boot
 * never picks it by itself again. */
static int spend_entry(struct updater *u, const char *slot, struct cap_error *err)
{
        struct slot_entry se;
        find_entry(u, slot, &se);
        if (!se.exists || !se.e.counting || se.e.tries_left == 0)
                return 0;
        struct update_entry spent = se.e;
        spent.tries_done += spent.tries_left;
        spent.tries_left = 0;
        char name[64], from[4500], to[4500];
        if (update_entry_format(&spent, name, sizeof(name)) < 0)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "entry name");
        snprintf(from, sizeof(from), "%s/loader/entries/%s", u->esp, se.name);
        snprintf(to, sizeof(to), "%s/loader/entries/%s", u->esp, name);
        if (rename(from, to) < 0)
                return cap_error_errno(err, -errno, "rename %s to %s", from, to);
        char dir[4300];
        snprintf(dir, sizeof(dir), "%s/loader/entries", u->esp);
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return cap_error_errno(err, -errno, "fsync %s", dir);
        return 0;
}

/* The ESP writable for one change, then read-only (flushed, clean) again. */
static int esp_rw(struct updater *u, struct cap_error *err)
{
        if (!u->cfg.hooks.esp_writable)
                return 0;
        return u->cfg.hooks.esp_writable(u->cfg.hooks.ud, true, err);
}

static int esp_ro(struct updater *u, int r, struct cap_error *err)
{
        struct cap_error e = {0};
        if (!u->cfg.hooks.esp_writable ||
            u->cfg.hooks.esp_writable(u->cfg.hooks.ud, false, &e) == 0)
                return r;
        log_error("update: %s", e.msg);
        if (r == 0 && err)
                *err = e;
        return r < 0 ? r : e.code;
}

/* ---- persistent state ---- */

static void state_get(struct updater *u, const char *key, char *buf, size_t size)
{
        char *v = NULL;
        snprintf(buf, size, "%s", "");
        if (u->cfg.hooks.state_get && u->cfg.hooks.state_get(u->cfg.hooks.ud, key, &v) == 0 && v)
                snprintf(buf, size, "%s", v);
        free(v);
}

static void state_set(struct updater *u, const char *key, const char *value)
{
        struct cap_error err = {0};
        if (u->cfg.hooks.state_set && u->cfg.hooks.state_set(u->cfg.hooks.ud, key, value, &err) < 0)
                log_error("update: record %s: %s", key, err.msg);
}

static void event(struct updater *u, const char *action, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void event(struct updater *u, const char *action, const char *fmt, ...)
{
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        log_info("update: %s: %s", action, msg);
        if (u->cfg.hooks.event)
                u->cfg.hooks.event(u->cfg.hooks.ud, action, msg);
}

static void record_rollback(struct updater *u, const char *reason)
{
        char when[32];
        snprintf(when, sizeof(when), "%lld", (long long)time(NULL));
        state_set(u, KEY_REASON, reason);
        state_set(u, KEY_REASON_TIME, when);
        state_set(u, KEY_PENDING, "");
}

/* ---- boot ---- */

/* A boot that is not tentative: finishes an update whose one try was spent without a commit
 * (the tentative boot panicked, hung, lost power, or rolled back and rebooted). */
static void settle_after_boot(struct updater *u)
{
        const char *other = update_slot_other(u->booted);
        struct slot_entry mine, theirs;
        find_entry(u, u->booted, &mine);
        find_entry(u, other, &theirs);
        char pending[128];
        state_get(u, KEY_PENDING, pending, sizeof(pending));
        if (theirs.exists && theirs.e.counting && theirs.e.tries_left == 0) {
                if (pending[0] == other[0]) {
                        /* the tentative boot never got to say why */
                        char reason[512];
                        snprintf(reason, sizeof(reason),
                                 "slot %s (%s) did not commit: its one boot try ended without a "
                                 "decision (kernel panic, hang and watchdog reset, failed "
                                 "initramfs or power cut); systemd-boot fell back to slot %s",
                                 other, theirs.version[0] ? theirs.version : "?", u->booted);
                        record_rollback(u, reason);
                        event(u, "rolled-back", "%s", reason);
                }
        }
        if (mine.exists && !mine.e.counting) {
                char def[256], last_good[8];
                read_default(u, def, sizeof(def));
                struct cap_error err = {0};
                bool other_pending = theirs.exists && theirs.e.counting &&
                                     theirs.e.tries_left > 0 && theirs.e.tries_done == 0;
                if (strcmp(def, mine.name) != 0 && !other_pending) {
                        int r = esp_rw(u, &err);
                        if (r == 0)
                                r = update_esp_set_default(u->esp, mine.name, &err);
                        if (esp_ro(u, r, &err) < 0)
                                log_error("update: default entry: %s", err.msg);
                }
                state_get(u, KEY_LAST_GOOD, last_good, sizeof(last_good));
                if (strcmp(last_good, u->booted) != 0)
                        state_set(u, KEY_LAST_GOOD, u->booted);
        }
}

struct updater *updater_new(const struct updater_config *cfg, struct cap_error *err)
{
        _cleanup_free_ char *cmdline_text = malloc(8192);
        if (!cmdline_text) {
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        if (read_text(cfg->paths.cmdline, cmdline_text, 8192) < 0)
                cmdline_text[0] = '\0';
        char slot[8];
        updater_cmdline_slot(cmdline_text, slot, sizeof(slot));
        if (!update_slot_is_valid(slot)) {
                cap_error_set(err, -ENOENT, CAP_FAILED_PRECONDITION,
                              "updates need a Capsule booted from slot a or b (no capsule.slot= "
                              "on the kernel command line %s)",
                              cfg->paths.cmdline);
                return NULL;
        }
        char entries[4200];
        snprintf(entries, sizeof(entries), "%s/loader/entries", cfg->paths.esp);
        if (access(entries, F_OK) < 0) {
                cap_error_errno(err, -errno, "updates need the ESP: %s", entries);
                return NULL;
        }
        struct updater *u = calloc(1, sizeof(*u));
        if (!u) {
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        u->cfg = *cfg;
        u->root = strdup(cfg->paths.root ? cfg->paths.root : "");
        u->esp = strdup(cfg->paths.esp);
        u->cmdline = strdup(cfg->paths.cmdline);
        u->entry_selected = strdup(cfg->paths.entry_selected);
        u->version_file = strdup(cfg->paths.version_file);
        u->arch = strdup(cfg->arch);
        pthread_mutex_init(&u->lock, NULL);
        pthread_cond_init(&u->cond, NULL);
        if (!u->root || !u->esp || !u->cmdline || !u->entry_selected || !u->version_file ||
            !u->arch) {
                updater_free(u);
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        u->cfg.paths =
            (struct updater_paths){u->root, u->esp, u->cmdline, u->entry_selected, u->version_file};
        u->cfg.arch = u->arch;
        u->booted[0] = slot[0];
        for (int i = 0; i < 2; i++) {
                struct cap_error perr = {0};
                if (update_slot_find_partition(u->root, i ? "slot_b" : "slot_a", u->partition[i],
                                               sizeof(u->partition[i]), &perr) < 0) {
                        *err = perr;
                        updater_free(u);
                        return NULL;
                }
        }
        if (read_text(u->version_file, u->running_version, sizeof(u->running_version)) <= 0)
                snprintf(u->running_version, sizeof(u->running_version), "%s", CAPSULE_VERSION);
        struct cap_error verr = {0};
        if (update_efivar_read_string(u->entry_selected, u->booted_entry, sizeof(u->booted_entry),
                                      &verr) < 0)
                u->booted_entry[0] = '\0';
        /* The booted slot's entry on the ESP decides: blessed means committed (also after a
         * commit earlier in this boot and a restart of serve, when LoaderEntrySelected still
         * names the counting entry); a counting entry means tentative, whatever name the loader
         * reported (also when it was picked by hand from the menu). Without an entry on the ESP,
         * the name the loader reported decides. */
        struct update_entry e;
        struct slot_entry mine;
        find_entry(u, u->booted, &mine);
        if (mine.exists)
                u->tentative = mine.e.counting;
        else
                u->tentative = u->booted_entry[0] && update_entry_parse(u->booted_entry, &e) == 0 &&
                               e.counting && strcmp(e.slot, u->booted) == 0;
        unsigned window =
            cfg->commit_window_sec ? cfg->commit_window_sec : UPDATE_COMMIT_WINDOW_DEFAULT;
        u->boot_time = cfg->window_from_start ? boottime_s() : 0;
        if (u->tentative) {
                u->deadline_unix = (int64_t)time(NULL) - boottime_s() + u->boot_time + window;
                snprintf(u->message, sizeof(u->message),
                         "tentative boot of slot %s (%s): health checks have until the commit "
                         "window ends",
                         u->booted, u->running_version);
                event(u, "tentative", "booted slot %s (%s) from %s: commit window %u s", u->booted,
                      u->running_version, u->booted_entry, window);
        } else {
                settle_after_boot(u);
        }
        log_info("update: booted slot %s entry %s version %s%s", u->booted,
                 u->booted_entry[0] ? u->booted_entry : "(unknown)", u->running_version,
                 u->tentative ? " (tentative)" : "");
        return u;
}

/* ---- the tentative boot ---- */

/* Under u->lock. */
static int do_commit(struct updater *u, const char *why, struct cap_error *err)
{
        int r = esp_rw(u, err);
        if (r == 0)
                r = update_esp_bless(u->esp, u->booted, err);
        if (esp_ro(u, r, err) < 0)
                return cap_error_prefix(err, "commit");
        u->decided = true;
        state_set(u, KEY_LAST_GOOD, u->booted);
        state_set(u, KEY_PENDING, "");
        snprintf(u->message, sizeof(u->message), "committed %s in slot %s: %s", u->running_version,
                 u->booted, why);
        event(u, "committed", "slot %s (%s): %s", u->booted, u->running_version, why);
        return 0;
}

/* Under u->lock: back to the other slot's good entry, this slot's entry spent, then reboot. */
static int do_rollback_tentative(struct updater *u, const char *why, struct cap_error *err)
{
        const char *other = update_slot_other(u->booted);
        struct slot_entry good;
        find_entry(u, other, &good);
        int r = esp_rw(u, err);
        if (r == 0 && (!good.exists || good.e.counting))
                log_warn("update: slot %s has no good entry; systemd-boot picks what is left",
                         other);
        else if (r == 0)
                r = update_esp_set_default(u->esp, good.name, err);
        if (r == 0)
                r = spend_entry(u, u->booted, err);
        if (esp_ro(u, r, err) < 0)
                return cap_error_prefix(err, "rollback");
        char reason[512];
        snprintf(reason, sizeof(reason), "slot %s (%s) rolled back to slot %s: %s", u->booted,
                 u->running_version, other, why);
        record_rollback(u, reason);
        u->decided = true;
        snprintf(u->message, sizeof(u->message), "%s", reason);
        event(u, "rolled-back", "%s", reason);
        u->rebooting = true;
        if (u->cfg.hooks.reboot)
                u->cfg.hooks.reboot(u->cfg.hooks.ud, reason);
        return 0;
}

static void decide_once(struct updater *u)
{
        struct updater_check checks[UPDATER_MAX_CHECKS];
        size_t n = u->cfg.hooks.checks
                       ? u->cfg.hooks.checks(u->cfg.hooks.ud, checks, UPDATER_MAX_CHECKS)
                       : 0;
        struct update_check in[UPDATER_MAX_CHECKS];
        for (size_t i = 0; i < n; i++)
                in[i] = (struct update_check){checks[i].name, checks[i].state, checks[i].detail};
        pthread_mutex_lock(&u->lock);
        if (u->decided) {
                pthread_mutex_unlock(&u->lock);
                return;
        }
        struct update_commit_input ci = {
            .booted_entry = u->booted_entry,
            .tentative = true,
            .checks = in,
            .n_checks = n,
            .now = boottime_s(),
            .boot_time = u->boot_time,
            .commit_window_sec = u->cfg.commit_window_sec,
        };
        struct update_decision d;
        update_commit_decide(&ci, &d);
        struct cap_error err = {0};
        if (d.kind == UPDATE_COMMIT) {
                if (do_commit(u, "every health check passed", &err) < 0)
                        log_error("update: %s", err.msg);
        } else if (d.kind == UPDATE_ROLLBACK) {
                if (do_rollback_tentative(u, d.reason, &err) < 0)
                        log_error("update: %s", err.msg);
        } else if (d.kind == UPDATE_WAIT) {
                snprintf(u->message, sizeof(u->message), "tentative: %s", d.reason);
        }
        pthread_mutex_unlock(&u->lock);
}

static void *decide_thread(void *arg)
{
        struct updater *u = arg;
        for (;;) {
                decide_once(u);
                pthread_mutex_lock(&u->lock);
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_sec += DECIDE_EVERY_MS / 1000;
                while (!u->stop && !u->kicked && !u->decided &&
                       pthread_cond_timedwait(&u->cond, &u->lock, &ts) == 0)
                        ;
                u->kicked = false;
                bool done = u->stop || u->decided;
                pthread_mutex_unlock(&u->lock);
                if (done)
                        return NULL;
        }
}

int updater_start(struct updater *u, struct cap_error *err)
{
        if (!u->tentative)
                return 0;
        if (pthread_create(&u->thread, NULL, decide_thread, u) != 0)
                return cap_error_set(err, -EAGAIN, CAP_INTERNAL, "update: cannot start thread");
        u->thread_started = true;
        return 0;
}

void updater_kick(struct updater *u)
{
        if (!u)
                return;
        pthread_mutex_lock(&u->lock);
        u->kicked = true;
        pthread_cond_broadcast(&u->cond);
        pthread_mutex_unlock(&u->lock);
}

void updater_free(struct updater *u)
{
        if (!u)
                return;
        if (u->thread_started) {
                pthread_mutex_lock(&u->lock);
                u->stop = true;
                pthread_cond_broadcast(&u->cond);
                pthread_mutex_unlock(&u->lock);
                pthread_join(u->thread, NULL);
        }
        pthread_mutex_destroy(&u->lock);
        pthread_cond_destroy(&u->cond);
        free(u->root);
        free(u->esp);
        free(u->cmdline);
        free(u->entry_selected);
        free(u->version_file);
        free(u->arch);
        free(u);
}

/* ---- status ---- */

void updater_status(struct updater *u, struct updater_status *s)
{
        memset(s, 0, sizeof(*s));
        pthread_mutex_lock(&u->lock);
        s->booted_slot[0] = u->booted[0];
        snprintf(s->booted_entry, sizeof(s->booted_entry), "%s", u->booted_entry);
        snprintf(s->running_version, sizeof(s->running_version), "%s", u->running_version);
        s->tentative = u->tentative && !u->decided;
        s->commit_deadline_unix = s->tentative ? u->deadline_unix : 0;
        snprintf(s->message, sizeof(s->message), "%s", u->message);
        char def[256];
        read_default(u, def, sizeof(def));
        struct update_entry de;
        if (update_entry_parse(def, &de) == 0)
                s->default_slot[0] = de.slot[0];
        for (int i = 0; i < 2; i++) {
                const char *slot = i ? "b" : "a";
                struct slot_entry se;
                find_entry(u, slot, &se);
                snprintf(s->slot_version[i], sizeof(s->slot_version[i]), "%s", se.version);
                const char *state = "empty";
                if (se.exists && !se.e.counting)
                        state = "good";
                else if (se.exists && slot[0] == u->booted[0] && u->tentative && !u->decided)
                        state = "tentative";
                else if (se.exists && se.e.tries_left > 0)
                        state = "pending";
                else if (se.exists)
                        state = "failed";
                snprintf(s->slot_state[i], sizeof(s->slot_state[i]), "%s", state);
        }
        char when[32];
        state_get(u, KEY_LAST_GOOD, s->last_good_slot, sizeof(s->last_good_slot));
        state_get(u, KEY_REASON, s->last_rollback_reason, sizeof(s->last_rollback_reason));
        state_get(u, KEY_REASON_TIME, when, sizeof(when));
        s->last_rollback_unix = strtoll(when, NULL, 10);
        pthread_mutex_unlock(&u->lock);
}

/* ---- commit and rollback on request ---- */

int updater_commit(struct updater *u, const char *why, struct cap_error *err)
{
        pthread_mutex_lock(&u->lock);
        int r;
        if (!u->tentative || u->decided)
                r = cap_error_set(err, -EALREADY, CAP_FAILED_PRECONDITION,
                                  "nothing to commit: this boot (slot %s, %s) is %s", u->booted,
                                  u->running_version,
                                  u->decided ? "already decided" : "not tentative");
        else
                r = do_commit(u, why, err);
        pthread_cond_broadcast(&u->cond);
        pthread_mutex_unlock(&u->lock);
        return r;
}

int updater_rollback(struct updater *u, const char *why, char *slot, struct cap_error *err)
{
        const char *other = update_slot_other(u->booted);
        pthread_mutex_lock(&u->lock);
        int r = 0;
        if (u->rebooting) {
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION, "a reboot is under way");
        } else if (u->pushing) {
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                  "an update push is in progress");
        } else if (u->tentative && !u->decided) {
                r = do_rollback_tentative(u, why, err);
        } else {
                struct slot_entry good;
                find_entry(u, other, &good);
                if (!good.exists || good.e.counting) {
                        r = cap_error_set(
                            err, -ENOENT, CAP_FAILED_PRECONDITION,
                            "slot %s holds no good version to roll back to (%s): only a slot "
                            "that booted and committed is a rollback target",
                            other,
                            !good.exists        ? "it is empty"
                            : good.e.tries_left ? "its update has not booted yet"
                                                : "its last update failed");
                } else {
                        /* the good slot boots once, tentatively, and must commit again */
                        struct update_entry t = {.counting = true, .tries_left = 1};
                        t.slot[0] = other[0];
                        char name[64], from[4500], to[4500];
                        update_entry_format(&t, name, sizeof(name));
                        snprintf(from, sizeof(from), "%s/loader/entries/%s", u->esp, good.name);
                        snprintf(to, sizeof(to), "%s/loader/entries/%s", u->esp, name);
                        r = esp_rw(u, err);
                        if (r == 0 && rename(from, to) < 0)
                                r = cap_error_errno(err, -errno, "rollback: rename %s", from);
                        if (r == 0)
                                r = update_esp_set_default(u->esp, name, err);
                        r = esp_ro(u, r, err);
                        if (r == 0) {
                                char pending[128];
                                snprintf(pending, sizeof(pending), "%s %s", other, good.version);
                                state_set(u, KEY_PENDING, pending);
                                event(u, "rollback",
                                      "slot %s (%s) -> slot %s (%s), tentatively: %s", u->booted,
                                      u->running_version, other, good.version, why);
                                u->decided = true;
                                u->rebooting = true;
                                if (u->cfg.hooks.reboot)
                                        u->cfg.hooks.reboot(u->cfg.hooks.ud, why);
                        }
                }
        }
        if (r == 0 && slot)
                snprintf(slot, 2, "%s", other);
        pthread_mutex_unlock(&u->lock);
        return r;
}

/* ---- push ---- */

struct updater_push {
        struct updater *u;
        struct bundle_reader *r;
        struct bundle_sink sink, inner;
        struct update_slot_writer *w;
        char slot[2];
        uint64_t bytes;
        bool finished, failed;
        char who[128];
};

static int push_capacity(void *ctx, const struct bundle_part *part, uint64_t *bytes,
                         struct cap_error *err)
{
        struct updater_push *p = ctx;
        if (!p->w) {
                /* signature and manifest passed: only now is the inactive slot touched */
                const struct bundle_manifest *m = bundle_reader_manifest(p->r);
                event(p->u, "verified", "bundle %s (%s) signed by trusted key %d; writing slot %s",
                      m ? m->version : "?", m ? m->arch : "?", bundle_reader_key_index(p->r),
                      p->slot);
                struct update_slot_target t = {.esp = p->u->esp,
                                               .slot = p->slot,
                                               .partition = p->u->partition[slot_index(p->slot)]};
                state_set(p->u, KEY_PENDING, "");
                int r = esp_rw(p->u, err);
                if (r == 0)
                        r = update_slot_writer_begin(&t, &p->w, err);
                if ((r = esp_ro(p->u, r, err)) < 0)
                        return r;
                update_slot_writer_sink(p->w, &p->inner);
        }
        return p->inner.capacity(p->inner.ctx, part, bytes, err);
}

/* The parts that go to the ESP (the kernel and initramfs) keep it writable while they stream. */
static bool part_on_esp(const struct bundle_part *part)
{
        return strcmp(part->name, "rootfs.sqfs") != 0;
}

static int push_open(void *ctx, const struct bundle_part *part, struct cap_error *err)
{
        struct updater_push *p = ctx;
        event(p->u, "writing", "%s (%" PRIu64 " bytes) to slot %s", part->name, part->size,
              p->slot);
        if (part_on_esp(part) && esp_rw(p->u, err) < 0)
                return err->code;
        int r = p->inner.open(p->inner.ctx, part, err);
        if (r < 0 && part_on_esp(part))
                esp_ro(p->u, r, err);
        return r;
}

static int push_write(void *ctx, const struct bundle_part *part, const void *buf, size_t len,
                      struct cap_error *err)
{
        struct updater_push *p = ctx;
        return p->inner.write(p->inner.ctx, part, buf, len, err);
}

static int push_close(void *ctx, const struct bundle_part *part, struct cap_error *err)
{
        struct updater_push *p = ctx;
        int r = p->inner.close(p->inner.ctx, part, err);
        return part_on_esp(part) ? esp_ro(p->u, r, err) : r;
}

static void push_abort(void *ctx, const struct bundle_part *part)
{
        struct updater_push *p = ctx;
        p->inner.abort(p->inner.ctx, part);
        if (part_on_esp(part))
                esp_ro(p->u, -EIO, NULL);
}

int updater_push_begin(struct updater *u, const struct updater_push_opts *o,
                       struct updater_push **out, struct cap_error *err)
{
        *out = NULL;
        pthread_mutex_lock(&u->lock);
        int r = 0;
        if (u->rebooting)
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION, "a reboot is under way");
        else if (u->pushing)
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                  "another update push is in progress");
        else if (u->tentative && !u->decided)
                r = cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                  "this boot is tentative (slot %s, %s, not committed yet): "
                                  "`capsulectl update commit` or `update rollback` first, so the "
                                  "last good slot is not overwritten",
                                  u->booted, u->running_version);
        else
                u->pushing = true;
        pthread_mutex_unlock(&u->lock);
        if (r < 0)
                return r;
        struct updater_push *p = calloc(1, sizeof(*p));
        if (!p) {
                pthread_mutex_lock(&u->lock);
                u->pushing = false;
                pthread_mutex_unlock(&u->lock);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        p->u = u;
        p->slot[0] = update_slot_other(u->booted)[0];
        snprintf(p->who, sizeof(p->who), "%s", o->who ? o->who : "");
        p->sink =
            (struct bundle_sink){push_capacity, push_open, push_write, push_close, push_abort, p};
        struct bundle_reader_opts ro = {
            .trusted_keys = o->trusted_keys,
            .n_trusted_keys = o->n_trusted_keys,
            .arch = u->arch,
            .running_version = u->running_version,
            .allow_downgrade = o->allow_downgrade,
            .perm_format = CAPSULE_PERM_FORMAT,
            .sink = &p->sink,
        };
        if (bundle_reader_new(&ro, &p->r, err) < 0) {
                updater_push_free(p);
                return err->code;
        }
        event(u, "receiving", "update bundle from %s for slot %s (running %s in slot %s)",
              p->who[0] ? p->who : "?", p->slot, u->running_version, u->booted);
        *out = p;
        return 0;
}

static int push_failed(struct updater_push *p, struct cap_error *err)
{
        if (!p->failed) {
                p->failed = true;
                event(p->u, "refused", "%s%s", err->msg,
                      p->w ? "; the slot is marked empty" : "; nothing was written");
        }
        return err->code;
}

int updater_push_feed(struct updater_push *p, const void *buf, size_t len, struct cap_error *err)
{
        p->bytes += len;
        if (bundle_reader_feed(p->r, buf, len, err) < 0)
                return push_failed(p, err);
        return 0;
}

int updater_push_finish(struct updater_push *p, char *version, size_t vsize, char *slot,
                        struct cap_error *err)
{
        if (bundle_reader_finish(p->r, err) < 0)
                return push_failed(p, err);
        const struct bundle_manifest *m = bundle_reader_manifest(p->r);
        if (!m || !p->w) {
                cap_error_set(err, -EINVAL, CAP_INTERNAL, "no manifest");
                return push_failed(p, err);
        }
        int r = esp_rw(p->u, err);
        if (r == 0)
                r = update_slot_writer_commit(p->w, m, NULL, err);
        if (esp_ro(p->u, r, err) < 0)
                return push_failed(p, err);
        char pending[128];
        snprintf(pending, sizeof(pending), "%s %s", p->slot, m->version);
        state_set(p->u, KEY_PENDING, pending);
        p->finished = true;
        snprintf(version, vsize, "%s", m->version);
        snprintf(slot, 2, "%s", p->slot);
        event(p->u, "installed",
              "%s in slot %s: one-try entry capsule-%s+1-0.conf is the default; the next boot "
              "is tentative",
              m->version, p->slot, p->slot);
        return 0;
}

uint64_t updater_push_bytes(const struct updater_push *p)
{
        return p->bytes;
}

void updater_push_free(struct updater_push *p)
{
        if (!p)
                return;
        if (!p->finished && !p->failed && p->r) {
                struct cap_error e = {0};
                cap_error_set(&e, -EPIPE, CAP_DATA_LOSS, "the upload ended after %" PRIu64 " bytes",
                              p->bytes);
                push_failed(p, &e);
        }
        bundle_reader_free(p->r);
        update_slot_writer_free(p->w);
        pthread_mutex_lock(&p->u->lock);
        p->u->pushing = false;
        pthread_mutex_unlock(&p->u->lock);
        free(p);
}
