/* The A/B update engine of `capsuled serve` (design §9, docs/updates.md): what the Updates RPCs
 * and the tentative boot do, over the pieces in bundle.h, slot.h and commit.h.
 *
 *   push      a bundle streams in; the inactive slot is prepared (made empty) only once the
 *             signature and the manifest passed, each part is written while hashed, and the
 *             one-try loader entry (capsule-X+1-0.conf) comes last, as the default;
 *   boot      at start: was this boot tentative (LoaderEntrySelected carries a counter)? If not,
 *             did an update whose one try is spent fail (the fallback boot records why)?
 *   decide    in a tentative boot, the health checks and update_commit_decide(): commit (bless
 *             the entry, record the slot as last good) or roll back (record why, make the last
 *             good entry the default, reboot);
 *   rollback  on request: from a tentative boot back to the last good slot; from a committed
 *             boot to the other slot only if it holds a good (blessed) version, tentatively.
 *
 * It knows nothing of gRPC or serve_ctx: paths, persistence (the store's meta table), events,
 * health checks and the reboot are parameters, so host tests run it against a directory that
 * stands in for the machine (a FAT ESP is a plain directory, a slot partition a file). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "bundle.h"
#include "commit.h"
#include "common/error.h"
#include "slot.h"

#define UPDATER_MAX_CHECKS 16

/* Where things are. On a Capsule root is "" and esp the ESP mounted read-write. */
struct updater_paths {
        const char *root;           /* prefix for /dev and /sys (partition lookup) */
        const char *esp;            /* the mounted ESP */
        const char *cmdline;        /* /proc/cmdline: capsule.slot= */
        const char *entry_selected; /* efivarfs LoaderEntrySelected */
        const char *version_file;   /* /usr/lib/capsule/version: the running OS version */
};

/* One health check as the tentative boot sees it. */
struct updater_check {
        char name[32];
        enum update_check_state state;
        char detail[256];
};

struct updater_hooks {
        /* Persistent key/value (the store's meta table on /perm). get: 0 and a malloc'd value,
         * or -ENOENT. */
        int (*state_get)(void *ud, const char *key, char **value);
        int (*state_set)(void *ud, const char *key, const char *value, struct cap_error *err);
        /* An event ("update", "updater", action, message). */
        void (*event)(void *ud, const char *action, const char *message);
        /* Fills up to max checks; returns how many. */
        size_t (*checks)(void *ud, struct updater_check *out, size_t max);
        /* Makes the ESP writable (rw true) or read-only again, flushed and clean (rw false).
         * Every change to the ESP happens between the two, so that a power cut at any other
         * time (most of a push streams the root image) finds a clean FAT. NULL: always writable. */
        int (*esp_writable)(void *ud, bool rw, struct cap_error *err);
        /* Reboots the machine (asynchronously: returns at once). */
        void (*reboot)(void *ud, const char *why);
        void *ud;
};

struct updater_config {
        struct updater_paths paths;
        struct updater_hooks hooks;
        const char *arch;           /* uname -m */
        unsigned commit_window_sec; /* updates.commitWindow */
        /* The window starts at the boot (CLOCK_BOOTTIME 0), or, for tests that stand in for a
         * boot by starting serve, at updater_new. */
        bool window_from_start;
};

/* What `update status` shows. */
struct updater_status {
        char booted_slot[2], default_slot[2], last_good_slot[2];
        char booted_entry[64];
        char running_version[BUNDLE_VERSION_MAX + 1];
        char slot_version[2][BUNDLE_VERSION_MAX + 1]; /* a, b: from their loader entries */
        char slot_state[2][16]; /* "good", "tentative", "pending", "failed", "empty" */
        bool tentative;         /* this boot is tentative and not decided yet */
        int64_t commit_deadline_unix;
        char last_rollback_reason[512];
        int64_t last_rollback_unix;
        char message[512]; /* what the tentative boot waits for, or how it ended */
};

struct updater;

/* Reads the boot (slot, entry, tentative or not) and finishes what an earlier boot left: a
 * spent one-try entry of the other slot means its update failed (recorded as the last rollback,
 * its entry removed, the booted entry made the default). NULL with err when updates cannot work
 * here (no capsule.slot=, no ESP, no slot partitions): the RPCs then answer FAILED_PRECONDITION
 * with that reason. */
struct updater *updater_new(const struct updater_config *cfg, struct cap_error *err);
/* In a tentative boot, starts the thread that decides commit or rollback (first check at once,
 * then every 2 s and whenever updater_kick is called). */
int updater_start(struct updater *u, struct cap_error *err);
void updater_kick(struct updater *u);
/* Stops the thread. NULL is fine. */
void updater_free(struct updater *u);

void updater_status(struct updater *u, struct updater_status *out);

/* A push: begin, feed the bundle's bytes, then finish (or free to abandon). One at a time. */
struct updater_push;
struct updater_push_opts {
        const char *const *trusted_keys;
        size_t n_trusted_keys;
        bool allow_downgrade;
        const char *who; /* for the log and events: the client's identity */
};
int updater_push_begin(struct updater *u, const struct updater_push_opts *o,
                       struct updater_push **out, struct cap_error *err);
int updater_push_feed(struct updater_push *p, const void *buf, size_t len, struct cap_error *err);
/* The end of the stream: checks it was whole, writes the one-try entry. version/slot get what
 * was installed. */
int updater_push_finish(struct updater_push *p, char *version, size_t vsize, char *slot,
                        struct cap_error *err);
/* Abandons (or releases after finish); a push that did not finish leaves the slot empty. */
void updater_push_free(struct updater_push *p);
uint64_t updater_push_bytes(const struct updater_push *p);

/* Commits the tentative boot now. FAILED_PRECONDITION when this boot is not tentative. */
int updater_commit(struct updater *u, const char *why, struct cap_error *err);
/* Rolls back (see above); on success the reboot was requested and *slot is where it goes. */
int updater_rollback(struct updater *u, const char *why, char *slot, struct cap_error *err);

/* Pure helpers (unit-tested). */
/* The value of capsule.slot= in a kernel command line, "" when absent. */
void updater_cmdline_slot(const char *cmdline, char *slot, size_t size);
/* The `version` line of a loader entry's text, "" when absent. */
void updater_entry_version(const char *text, char *buf, size_t size);
/* The `default` of loader.conf's text, "" when absent. */
void updater_loader_default(const char *text, char *buf, size_t size);
