/* The commit decision of a tentative boot (see commit.h): pure, so every row of its table is a
 * unit test (tests/unit/test-update-slot.c). */
#include "commit.h"

#include <stdio.h>
#include <string.h>

#include "slot.h"

const char *update_decision_kind_name(enum update_decision_kind kind)
{
        switch (kind) {
        case UPDATE_NOTHING:
                return "nothing";
        case UPDATE_WAIT:
                return "wait";
        case UPDATE_COMMIT:
                return "commit";
        case UPDATE_ROLLBACK:
                return "rollback";
        }
        return "?";
}

/* Appends "name (detail)" of every check in state to buf, comma-separated. */
static void list_checks(const struct update_commit_input *in, enum update_check_state state,
                        char *buf, size_t size)
{
        size_t off = strlen(buf);
        bool first = true;
        for (size_t i = 0; i < in->n_checks && off < size; i++) {
                const struct update_check *c = &in->checks[i];
                if (c->state != state)
                        continue;
                int n = snprintf(buf + off, size - off, "%s%s%s%s%s", first ? "" : ", ",
                                 c->name ? c->name : "?", c->detail ? " (" : "",
                                 c->detail ? c->detail : "", c->detail ? ")" : "");
                if (n < 0)
                        return;
                off += (size_t)n;
                first = false;
        }
}

void update_commit_decide(const struct update_commit_input *in, struct update_decision *out)
{
        unsigned window =
            in->commit_window_sec ? in->commit_window_sec : UPDATE_COMMIT_WINDOW_DEFAULT;
        memset(out, 0, sizeof(*out));
        out->deadline = in->boot_time + (int64_t)window;
        struct update_entry e;
        if (!in->tentative) {
                out->kind = UPDATE_NOTHING;
                snprintf(out->reason, sizeof(out->reason),
                         "not a tentative boot: the booted entry is already blessed");
                return;
        }
        if (!in->booted_entry || update_entry_parse(in->booted_entry, &e) < 0) {
                out->kind = UPDATE_ROLLBACK;
                snprintf(out->reason, sizeof(out->reason),
                         "tentative boot, but the booted entry %s%s%s is not a Capsule slot",
                         in->booted_entry ? "\"" : "(unknown",
                         in->booted_entry ? in->booted_entry : ")", in->booted_entry ? "\"" : "");
                return;
        }
        bool failed = false, pending = false;
        for (size_t i = 0; i < in->n_checks; i++) {
                failed = failed || in->checks[i].state == UPDATE_CHECK_FAILED;
                pending = pending || in->checks[i].state == UPDATE_CHECK_PENDING;
        }
        if (failed) {
                out->kind = UPDATE_ROLLBACK;
                snprintf(out->reason, sizeof(out->reason),
                         "slot %s: health check failed: ", e.slot);
                list_checks(in, UPDATE_CHECK_FAILED, out->reason, sizeof(out->reason));
                return;
        }
        if (!pending) {
                out->kind = UPDATE_COMMIT;
                snprintf(out->reason, sizeof(out->reason), "slot %s: all %zu health checks passed",
                         e.slot, in->n_checks);
                return;
        }
        int64_t elapsed = in->now > in->boot_time ? in->now - in->boot_time : 0;
        if (elapsed >= (int64_t)window) {
                out->kind = UPDATE_ROLLBACK;
                snprintf(out->reason, sizeof(out->reason),
                         "slot %s: the commit window of %us elapsed; still waiting for: ", e.slot,
                         window);
        } else {
                out->kind = UPDATE_WAIT;
                snprintf(out->reason, sizeof(out->reason),
                         "slot %s: %llds left in the commit window; waiting for: ", e.slot,
                         (long long)((int64_t)window - elapsed));
        }
        list_checks(in, UPDATE_CHECK_PENDING, out->reason, sizeof(out->reason));
}
