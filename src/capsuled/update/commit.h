/* The commit decision of a tentative boot (design §9, docs/updates.md), as a pure function.
 *
 * After an update the new slot boots once from a counting entry. capsuled then runs health checks
 * (API up, containerd up, workloads reconciled) and asks this function, every time a check
 * changes or a timer fires, what to do: commit (bless the entry, make it the default), wait, or
 * roll back (reboot; systemd-boot falls back to the last good slot because the one try is spent).
 * Times are seconds on one clock; callers should use CLOCK_BOOTTIME (boot_time 0, now the uptime)
 * so that an NTP step during the window does not shorten or stretch it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum update_check_state {
        UPDATE_CHECK_PENDING = 0, /* not healthy yet (still starting) */
        UPDATE_CHECK_OK,
        UPDATE_CHECK_FAILED, /* definitively broken: no point in waiting */
};

struct update_check {
        const char *name; /* "api", "containerd", "workloads" */
        enum update_check_state state;
        const char *detail; /* why it is pending or failed; may be NULL */
};

enum update_decision_kind {
        UPDATE_NOTHING = 0, /* not a tentative boot: nothing to commit */
        UPDATE_WAIT,
        UPDATE_COMMIT,
        UPDATE_ROLLBACK,
};

struct update_commit_input {
        const char *booted_entry; /* LoaderEntrySelected, NULL when unknown */
        bool tentative;           /* the booted slot's entry still carries a boot counter */
        const struct update_check *checks;
        size_t n_checks;
        int64_t now, boot_time;     /* seconds */
        unsigned commit_window_sec; /* 0: the default (300) */
};

struct update_decision {
        enum update_decision_kind kind;
        int64_t deadline; /* boot_time + window: when WAIT turns into ROLLBACK */
        char reason[512]; /* for the log and UpdateStatus.message */
};

#define UPDATE_COMMIT_WINDOW_DEFAULT 300

/* Decides, in this order: not tentative -> NOTHING; booted entry unknown or not one of ours ->
 * ROLLBACK; a check FAILED -> ROLLBACK naming it; all checks OK (also when there are none) ->
 * COMMIT; the window elapsed -> ROLLBACK naming the checks still pending; else WAIT. */
void update_commit_decide(const struct update_commit_input *in, struct update_decision *out);
const char *update_decision_kind_name(enum update_decision_kind kind);
