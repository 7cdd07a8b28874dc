/* `capsulectl update push|status|commit|rollback`: A/B OS updates (docs/updates.md). Push streams
 * a signed bundle in 1 MiB chunks (Updates.Push client stream, through upload.c) with progress on
 * stderr (progress.c: a bar on a terminal, a plain line every 10% elsewhere); the capsule
 * verifies and writes it into the inactive slot and reboots into it, tentatively. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "capsule/v1/updates.pb-c.h"
#include "capsulectl.h"
#include "common/cleanup.h"
#include "rpc/rpc.h"
#include "upload.h"

#define PUSH_CHUNK (1u << 20)

static const char usage[] =
    "usage: capsulectl update push BUNDLE [--no-reboot] [--allow-downgrade]\n"
    "       capsulectl update status\n"
    "       capsulectl update commit\n"
    "       capsulectl update rollback\n"
    "\n"
    "A/B OS updates: the capsule writes a signed bundle into its inactive slot and boots it once,\n"
    "tentatively; a boot that passes its health checks within the commit window is kept, any "
    "other\n"
    "falls back to the last good slot (docs/updates.md).\n"
    "  push      stream a bundle (mkimage/build.sh --version V writes out/capsule-V.bundle)\n"
    "  status    booted and default slot, each slot's version, tentative or committed, the commit\n"
    "            deadline and the last rollback's reason (-o json|yaml)\n"
    "  commit    keep the tentative boot now, without waiting for the checks\n"
    "  rollback  go back to the last good slot\n"
    "`capsulectl update SUBCOMMAND --help` for details.\n"
    "\n"
    "Examples:\n"
    "  capsulectl update push out/capsule-0.2.0.bundle\n"
    "  capsulectl update status\n";

static const char usage_push[] =
    "usage: capsulectl update push BUNDLE [--no-reboot] [--allow-downgrade]\n"
    "\n"
    "Streams BUNDLE to the capsule. It verifies the signature against updates.trustedKeys before\n"
    "it writes anything, checks the architecture and the version, writes each part into the\n"
    "inactive slot while hashing it, adds a one-try loader entry last and reboots into it. Any\n"
    "refusal names its reason and leaves the inactive slot empty (never half-written). Progress\n"
    "goes to stderr: a bar on a terminal, else a line every 10%.\n"
    "\n"
    "Options:\n"
    "  --no-reboot         install only; the next reboot boots the update (default: reboot now)\n"
    "  --allow-downgrade   accept a version not newer than the running one (default: refused)\n"
    "\n"
    "Examples:\n"
    "  capsulectl update push out/capsule-0.2.0.bundle\n"
    "  capsulectl update push capsule-0.1.0.bundle --allow-downgrade --no-reboot\n";

static const char usage_status[] =
    "usage: capsulectl update status\n"
    "\n"
    "Shows the booted slot and version, whether this boot is tentative (and its commit deadline)\n"
    "or committed, the default slot, each slot's version and state (good, tentative, pending,\n"
    "failed, empty), the last good slot and the reason of the last rollback.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl update status -o json\n";

static const char usage_commit[] =
    "usage: capsulectl update commit\n"
    "\n"
    "Keeps the tentative boot now: its loader entry is blessed and made the default, the slot\n"
    "becomes the last good one. Refused (FAILED_PRECONDITION) when the boot is not tentative.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl update commit\n";

static const char usage_rollback[] =
    "usage: capsulectl update rollback\n"
    "\n"
    "In a tentative boot: gives it up and reboots into the last good slot. In a committed boot:\n"
    "reboots into the other slot, tentatively, only if it holds a good (committed) version; it\n"
    "must pass its health checks again, or the capsule comes back here.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl update rollback\n";

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set_chunk(ProtobufCMessage *m, const uint8_t *data, size_t len)
{
        Capsule__V1__UpdatePushRequest *req = (Capsule__V1__UpdatePushRequest *)m;
        req->msg_case = CAPSULE__V1__UPDATE_PUSH_REQUEST__MSG_CHUNK;
        req->chunk.data = (uint8_t *)data;
        req->chunk.len = len;
}

static int push(struct ctl *ctl, int argc, char **argv)
{
        static const struct option opts[] = {{"no-reboot", no_argument, NULL, 'n'},
                                             {"allow-downgrade", no_argument, NULL, 'd'},
                                             {NULL, 0, NULL, 0}};
        bool reboot = true, downgrade = false;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                if (c == 'n')
                        reboot = false;
                else if (c == 'd')
                        downgrade = true;
                else {
                        fputs(usage_push, ctl->err);
                        return CTL_EXIT_USAGE;
                }
        }
        if (optind != argc - 1) {
                fprintf(ctl->err, "capsulectl update push: expected one BUNDLE\n%s", usage_push);
                return CTL_EXIT_USAGE;
        }
        const char *path = argv[optind];
        uint64_t total = 0;
        struct cap_error oerr = {0};
        _cleanup_close_ int fd = ctl_upload_open(path, false, &total, &oerr);
        if (fd < 0) {
                fprintf(ctl->err, "capsulectl update push: %s\n", oerr.msg);
                return CTL_EXIT_ERROR;
        }
        struct rpc_client *cl = ctl_client(ctl);
        if (!cl)
                return CTL_EXIT_ERROR;
        struct cap_error err = {0};
        Capsule__V1__UpdatePushHeader hdr = CAPSULE__V1__UPDATE_PUSH_HEADER__INIT;
        hdr.total_bytes = total;
        hdr.reboot = reboot;
        hdr.allow_downgrade = downgrade;
        Capsule__V1__UpdatePushRequest first = CAPSULE__V1__UPDATE_PUSH_REQUEST__INIT;
        first.msg_case = CAPSULE__V1__UPDATE_PUSH_REQUEST__MSG_HEADER;
        first.header = &hdr;
        Capsule__V1__UpdatePushRequest chunk = CAPSULE__V1__UPDATE_PUSH_REQUEST__INIT;
        const struct ctl_upload up = {
            .method = "/capsule.v1.Updates/Push",
            .response = &capsule__v1__update_push_response__descriptor,
            .header = &first.base,
            .chunk = &chunk.base,
            .set_data = set_chunk,
            .chunk_size = PUSH_CHUNK,
            .progress_label = "push",
            .progress_lines = true,
            .sent_note = "sent; the capsule is finishing the slot...",
        };
        ProtobufCMessage *resp = NULL;
        double t0 = now_s();
        if (ctl_upload_file(cl, &up, fd, path, total, &resp, &err) < 0) {
                ctl_print_error(ctl, "update push", &err);
                return CTL_EXIT_ERROR;
        }
        Capsule__V1__UpdatePushResponse *r = (Capsule__V1__UpdatePushResponse *)resp;
        if (ctl->output == CTL_OUT_TABLE) {
                fprintf(ctl->out, "installed %s in slot %s (%.1f MiB in %.1f s)\n", r->version,
                        r->slot, (double)r->bytes / 1048576.0, now_s() - t0);
                fprintf(ctl->out, "%s\n",
                        r->rebooting ? "rebooting into it (tentative boot); `capsulectl update "
                                       "status` shows whether it commits"
                                     : "not rebooting (--no-reboot): the next boot is tentative");
        } else {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "version", json_object_new_string(r->version));
                json_object_object_add(o, "slot", json_object_new_string(r->slot));
                json_object_object_add(o, "rebooting", json_object_new_boolean(r->rebooting));
                json_object_object_add(o, "bytes", json_object_new_int64((int64_t)r->bytes));
                ctl_print_structured(ctl, o);
                json_object_put(o);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static void format_unix(int64_t t, char *buf, size_t len)
{
        struct tm tm;
        time_t tt = (time_t)t;
        strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&tt, &tm));
}

static int status(struct ctl *ctl, int argc, char **argv)
{
        if (argc != 1) {
                fprintf(ctl->err, "capsulectl update status: unexpected argument \"%s\"\n%s",
                        argv[1], usage_status);
                return CTL_EXIT_USAGE;
        }
        struct rpc_client *cl = ctl_client(ctl);
        if (!cl)
                return CTL_EXIT_ERROR;
        Capsule__V1__UpdateStatusRequest req = CAPSULE__V1__UPDATE_STATUS_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(cl, "/capsule.v1.Updates/Status", &req.base,
                      &capsule__v1__update_status_response__descriptor, &resp, ctl->timeout_ms,
                      &err) < 0) {
                ctl_print_error(ctl, "update status", &err);
                return CTL_EXIT_ERROR;
        }
        Capsule__V1__UpdateStatusResponse *r = (Capsule__V1__UpdateStatusResponse *)resp;
        const char *state = r->tentative ? "tentative" : "committed";
        if (ctl->output != CTL_OUT_TABLE) {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "bootedSlot", json_object_new_string(r->booted_slot));
                json_object_object_add(o, "bootedVersion",
                                       json_object_new_string(r->booted_version));
                json_object_object_add(o, "bootedEntry", json_object_new_string(r->booted_entry));
                json_object_object_add(o, "state", json_object_new_string(state));
                json_object_object_add(o, "tentative", json_object_new_boolean(r->tentative));
                json_object_object_add(o, "commitDeadlineUnix",
                                       json_object_new_int64(r->commit_deadline_unix));
                json_object_object_add(o, "defaultSlot", json_object_new_string(r->default_slot));
                json_object_object_add(o, "lastGoodSlot",
                                       json_object_new_string(r->last_good_slot));
                struct json_object *slots = json_object_new_object();
                const char *v[2] = {r->slot_a_version, r->slot_b_version};
                const char *st[2] = {r->slot_a_state, r->slot_b_state};
                for (int i = 0; i < 2; i++) {
                        struct json_object *so = json_object_new_object();
                        json_object_object_add(so, "version", json_object_new_string(v[i]));
                        json_object_object_add(so, "state", json_object_new_string(st[i]));
                        json_object_object_add(slots, i ? "b" : "a", so);
                }
                json_object_object_add(o, "slots", slots);
                json_object_object_add(o, "lastRollbackReason",
                                       json_object_new_string(r->last_rollback_reason));
                json_object_object_add(o, "lastRollbackUnix",
                                       json_object_new_int64(r->last_rollback_unix));
                json_object_object_add(o, "message", json_object_new_string(r->message));
                ctl_print_structured(ctl, o);
                json_object_put(o);
                protobuf_c_message_free_unpacked(resp, NULL);
                return CTL_EXIT_OK;
        }
        char when[64];
        fprintf(ctl->out, "booted:         slot %s, %s (%s)\n", r->booted_slot, r->booted_version,
                *r->booted_entry ? r->booted_entry : "entry unknown");
        if (r->tentative) {
                format_unix(r->commit_deadline_unix, when, sizeof(when));
                long long left = (long long)r->commit_deadline_unix - (long long)time(NULL);
                fprintf(ctl->out,
                        "state:          tentative: commits by %s (%llds left) or rolls "
                        "back\n",
                        when, left > 0 ? left : 0);
        } else {
                fprintf(ctl->out, "state:          committed\n");
        }
        fprintf(ctl->out, "default:        slot %s\n", *r->default_slot ? r->default_slot : "?");
        fprintf(ctl->out, "last good:      slot %s\n",
                *r->last_good_slot ? r->last_good_slot : "?");
        fprintf(ctl->out, "slot a:         %-12s %s\n",
                *r->slot_a_version ? r->slot_a_version : "-", r->slot_a_state);
        fprintf(ctl->out, "slot b:         %-12s %s\n",
                *r->slot_b_version ? r->slot_b_version : "-", r->slot_b_state);
        if (*r->last_rollback_reason) {
                format_unix(r->last_rollback_unix, when, sizeof(when));
                fprintf(ctl->out, "last rollback:  %s: %s\n", when, r->last_rollback_reason);
        }
        if (*r->message)
                fprintf(ctl->out, "message:        %s\n", r->message);
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static int commit(struct ctl *ctl, int argc, char **argv)
{
        if (argc != 1) {
                fprintf(ctl->err, "capsulectl update commit: unexpected argument \"%s\"\n%s",
                        argv[1], usage_commit);
                return CTL_EXIT_USAGE;
        }
        struct rpc_client *cl = ctl_client(ctl);
        if (!cl)
                return CTL_EXIT_ERROR;
        Capsule__V1__UpdateCommitRequest req = CAPSULE__V1__UPDATE_COMMIT_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(cl, "/capsule.v1.Updates/Commit", &req.base,
                      &capsule__v1__update_commit_response__descriptor, &resp, ctl->timeout_ms,
                      &err) < 0) {
                ctl_print_error(ctl, "update commit", &err);
                return CTL_EXIT_ERROR;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        fprintf(ctl->out, "committed\n");
        return CTL_EXIT_OK;
}

static int rollback(struct ctl *ctl, int argc, char **argv)
{
        if (argc != 1) {
                fprintf(ctl->err, "capsulectl update rollback: unexpected argument \"%s\"\n%s",
                        argv[1], usage_rollback);
                return CTL_EXIT_USAGE;
        }
        struct rpc_client *cl = ctl_client(ctl);
        if (!cl)
                return CTL_EXIT_ERROR;
        Capsule__V1__UpdateRollbackRequest req = CAPSULE__V1__UPDATE_ROLLBACK_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(cl, "/capsule.v1.Updates/Rollback", &req.base,
                      &capsule__v1__update_rollback_response__descriptor, &resp, ctl->timeout_ms,
                      &err) < 0) {
                ctl_print_error(ctl, "update rollback", &err);
                return CTL_EXIT_ERROR;
        }
        Capsule__V1__UpdateRollbackResponse *r = (Capsule__V1__UpdateRollbackResponse *)resp;
        fprintf(ctl->out, "rolling back: rebooting into slot %s\n", r->slot);
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

int cmd_update(struct ctl *ctl, int argc, char **argv)
{
        static const struct {
                const char *name;
                int (*run)(struct ctl *, int, char **);
                const char *usage;
        } subs[] = {
            {"push", push, usage_push},
            {"status", status, usage_status},
            {"commit", commit, usage_commit},
            {"rollback", rollback, usage_rollback},
        };
        if (argc < 2) {
                fputs(usage, ctl->err);
                return CTL_EXIT_USAGE;
        }
        if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
                fputs(usage, stdout);
                return CTL_EXIT_OK;
        }
        for (size_t i = 0; i < ARRAY_SIZE(subs); i++)
                if (strcmp(subs[i].name, argv[1]) == 0) {
                        if (ctl_wants_help(argc - 1, argv + 1, subs[i].usage))
                                return CTL_EXIT_OK;
                        return subs[i].run(ctl, argc - 1, argv + 1);
                }
        fprintf(ctl->err, "capsulectl update: unknown subcommand \"%s\"\n%s", argv[1], usage);
        return CTL_EXIT_USAGE;
}
