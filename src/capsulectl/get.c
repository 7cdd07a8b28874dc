/* `capsulectl get`, `describe`, `logs`, `restart` and `events`: reading workloads and their output. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "capsule/v1/system.pb-c.h"
#include "capsule/v1/workloads.pb-c.h"
#include "capsulectl.h"
#include "common/cleanup.h"
#include "common/manifest.h"
#include "rpc/rpc.h"

static const char get_usage[] =
        "usage: capsulectl get [NAME]\n\n"
        "Lists workloads (NAME KIND STATUS RESTARTS AGE IMAGE PORTS), or one workload.\n"
        "With -o yaml or -o json prints spec and status.\n\n"
        "example: capsulectl get; capsulectl -o yaml get web\n";

/* Fetches one workload (GetResponse) or all (ListResponse). */
static int fetch(struct ctl *ctl, struct rpc_client *c, const char *name, ProtobufCMessage **resp)
{
        struct cap_error err = {0};
        int r;
        if (name) {
                Capsule__V1__GetRequest req = CAPSULE__V1__GET_REQUEST__INIT;
                req.name = (char *)name;
                r = rpc_unary(c, "/capsule.v1.Workloads/Get", &req.base, &capsule__v1__get_response__descriptor, resp,
                              ctl->timeout_ms, &err);
        } else {
                Capsule__V1__ListRequest req = CAPSULE__V1__LIST_REQUEST__INIT;
                r = rpc_unary(c, "/capsule.v1.Workloads/List", &req.base, &capsule__v1__list_response__descriptor,
                              resp, ctl->timeout_ms, &err);
        }
        if (r < 0) {
                ctl_print_error(ctl, name ? name : "list", &err);
                if (err.status == CAP_NOT_FOUND)
                        fprintf(stderr, "hint: `capsulectl get` lists the workloads this capsule has\n");
        }
        return r;
}

int cmd_get(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, get_usage))
                return CTL_EXIT_OK;
        if (argc > 2) {
                fprintf(stderr, "capsulectl get: at most one NAME\n%s", get_usage);
                return CTL_EXIT_USAGE;
        }
        const char *name = argc == 2 ? argv[1] : NULL;
        struct rpc_client *c = ctl_client(ctl);
        ProtobufCMessage *resp = NULL;
        if (!c || fetch(ctl, c, name, &resp) < 0)
                return CTL_EXIT_ERROR;
        Capsule__V1__Workload **ws;
        size_t n;
        if (name) {
                ws = &((Capsule__V1__GetResponse *)resp)->workload;
                n = 1;
        } else {
                ws = ((Capsule__V1__ListResponse *)resp)->workloads;
                n = ((Capsule__V1__ListResponse *)resp)->n_workloads;
        }
        if (ctl->output == CTL_OUT_TABLE) {
                if (n == 0)
                        printf("No workloads. Deploy one with `capsulectl apply -f FILE`.\n");
                else
                        ctl_workload_table_header();
                for (size_t i = 0; i < n; i++)
                        ctl_workload_table_row(ws[i]);
        } else if (name) {
                struct json_object *o = ctl_workload_json(ws[0]);
                ctl_print_structured(ctl, o);
                json_object_put(o);
        } else {
                struct json_object *o = json_object_new_object(), *arr = json_object_new_array();
                for (size_t i = 0; i < n; i++)
                        json_object_array_add(arr, ctl_workload_json(ws[i]));
                json_object_object_add(o, "workloads", arr);
                ctl_print_structured(ctl, o);
                json_object_put(o);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static const char describe_usage[] =
        "usage: capsulectl describe NAME\n\n"
        "Shows a workload's spec (as YAML), its status (phase, pid, restarts, IP, last exit code and\n"
        "reason, next restart) and its recent events.\n\n"
        "example: capsulectl describe web\n";

int cmd_describe(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, describe_usage))
                return CTL_EXIT_OK;
        if (argc != 2) {
                fprintf(stderr, "capsulectl describe: NAME is required\n%s", describe_usage);
                return CTL_EXIT_USAGE;
        }
        struct rpc_client *c = ctl_client(ctl);
        ProtobufCMessage *resp = NULL;
        if (!c || fetch(ctl, c, argv[1], &resp) < 0)
                return CTL_EXIT_ERROR;
        const Capsule__V1__Workload *w = ((Capsule__V1__GetResponse *)resp)->workload;
        if (ctl->output != CTL_OUT_TABLE) {
                struct json_object *o = ctl_workload_json(w);
                ctl_print_structured(ctl, o);
                json_object_put(o);
                protobuf_c_message_free_unpacked(resp, NULL);
                return CTL_EXIT_OK;
        }
        const Capsule__V1__WorkloadStatus *st = w->status;
        char t[40], age[32];
        printf("Name:          %s\n", w->spec->name);
        printf("Kind:          %s\n", manifest_workload_kind_name(w->spec->kind));
        printf("Generation:    %llu (observed %llu)\n", (unsigned long long)w->generation,
               (unsigned long long)st->observed_generation);
        printf("Image:         %s%s%s%s\n", w->spec->image, *st->image_digest ? " (" : "", st->image_digest,
               *st->image_digest ? ")" : "");
        printf("Status:        %s\n", ctl_phase_name(st->phase));
        if (st->message && *st->message)
                printf("Message:       %s\n", st->message);
        if (st->pid)
                printf("PID:           %u\n", st->pid);
        if (st->started_unix_nano) {
                ctl_format_time(st->started_unix_nano, t, sizeof(t));
                ctl_format_age((long long)time(NULL) - st->started_unix_nano / 1000000000LL, age, sizeof(age));
                printf("Started:       %s (%s ago)\n", t, age);
        }
        printf("Restarts:      %u\n", st->restarts);
        if (st->ip_address && *st->ip_address)
                printf("IP:            %s\n", st->ip_address);
        if (st->last_exit_unix_nano) {
                ctl_format_time(st->last_exit_unix_nano, t, sizeof(t));
                printf("Last exit:     code %d: %s, at %s\n", st->last_exit_code, st->last_exit_reason, t);
        }
        if (st->next_restart_unix_nano) {
                ctl_format_time(st->next_restart_unix_nano, t, sizeof(t));
                printf("Next restart:  %s\n", t);
        }
        _cleanup_free_ char *yaml = manifest_workload_to_yaml(w->spec);
        printf("Spec:\n");
        for (char *save = NULL, *l = yaml ? strtok_r(yaml, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
                printf("  %s\n", l);
        printf("Events:\n");
        if (st->n_events == 0)
                printf("  (none recorded since capsuled started)\n");
        for (size_t i = 0; i < st->n_events; i++) {
                ctl_format_time(st->events[i]->time_unix_nano, t, sizeof(t));
                printf("  %s  %-11s %s\n", t, st->events[i]->reason, st->events[i]->message);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static const char logs_usage[] =
        "usage: capsulectl logs [-f] [--tail N] [--timestamps] NAME\n\n"
        "Prints a workload's output (stdout and stderr, the previous runs' lines included).\n"
        "  -f, --follow     keep printing new lines until interrupted\n"
        "  --tail N         only the last N lines\n"
        "  --timestamps     prefix each line with its RFC 3339 time\n\n"
        "example: capsulectl logs -f --tail 20 web\n";

int cmd_logs(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, logs_usage))
                return CTL_EXIT_OK;
        static const struct option opts[] = {
                {"follow", no_argument, NULL, 'f'}, {"tail", required_argument, NULL, 't'},
                {"timestamps", no_argument, NULL, 'T'}, {NULL, 0, NULL, 0},
        };
        Capsule__V1__LogsRequest req = CAPSULE__V1__LOGS_REQUEST__INIT;
        req.tail = -1;
        bool timestamps = false;
        int ch;
        while ((ch = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
                switch (ch) {
                case 'f': req.follow = true; break;
                case 'T': timestamps = true; break;
                case 't': {
                        char *end;
                        long long v = strtoll(optarg, &end, 10);
                        if (*end || v < 0) {
                                fprintf(stderr, "capsulectl logs: --tail %s: expected a number of lines >= 0\n", optarg);
                                return CTL_EXIT_USAGE;
                        }
                        req.tail = v;
                        break;
                }
                default: fputs(logs_usage, stderr); return CTL_EXIT_USAGE;
                }
        }
        if (optind != argc - 1) {
                fprintf(stderr, "capsulectl logs: NAME is required\n%s", logs_usage);
                return CTL_EXIT_USAGE;
        }
        req.name = argv[optind];
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        struct cap_error err = {0};
        struct rpc_stream *s = rpc_stream_open(c, "/capsule.v1.Workloads/Logs", &capsule__v1__log_chunk__descriptor,
                                               req.follow ? 0 : ctl->timeout_ms, &err);
        if (!s || rpc_stream_send(s, &req.base, &err) < 0 || rpc_stream_close_send(s, &err) < 0) {
                ctl_print_error(ctl, "logs", &err);
                rpc_stream_free(s);
                return CTL_EXIT_ERROR;
        }
        ProtobufCMessage *m;
        int r;
        while ((r = rpc_stream_recv(s, &m, &err)) == 1) {
                Capsule__V1__LogChunk *chunk = (Capsule__V1__LogChunk *)m;
                FILE *out = strcmp(chunk->stream, "stderr") == 0 ? stderr : stdout;
                if (timestamps) {
                        char t[48];
                        time_t sec = (time_t)(chunk->time_unix_nano / 1000000000LL);
                        struct tm tm;
                        gmtime_r(&sec, &tm);
                        strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
                        fprintf(out, "%s.%09lldZ ", t, (long long)(chunk->time_unix_nano % 1000000000LL));
                }
                fwrite(chunk->data.data, 1, chunk->data.len, out);
                if (req.follow)
                        fflush(out);
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (r < 0)
                ctl_print_error(ctl, "logs", &err);
        rpc_stream_free(s);
        return r < 0 ? CTL_EXIT_ERROR : CTL_EXIT_OK;
}

static const char restart_usage[] =
        "usage: capsulectl restart NAME\n\n"
        "Stops the workload (SIGTERM, 10 s grace, SIGKILL) and starts it again now, clearing any\n"
        "restart backoff.\n\n"
        "example: capsulectl restart web\n";

int cmd_restart(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, restart_usage))
                return CTL_EXIT_OK;
        if (argc != 2) {
                fprintf(stderr, "capsulectl restart: NAME is required\n%s", restart_usage);
                return CTL_EXIT_USAGE;
        }
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        Capsule__V1__RestartRequest req = CAPSULE__V1__RESTART_REQUEST__INIT;
        req.name = argv[1];
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.Workloads/Restart", &req.base, &capsule__v1__restart_response__descriptor, &resp,
                      ctl->timeout_ms, &err) < 0) {
                ctl_print_error(ctl, "restart", &err);
                return CTL_EXIT_ERROR;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        printf("workload/%s restarting\n", argv[1]);
        return CTL_EXIT_OK;
}

static const char events_usage[] =
        "usage: capsulectl events\n\n"
        "Streams the capsule's events (workloads started, exited, replaced; volumes; images) as they\n"
        "happen, until interrupted.\n\n"
        "example: capsulectl events\n";

int cmd_events(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, events_usage))
                return CTL_EXIT_OK;
        if (argc != 1) {
                fputs(events_usage, stderr);
                return CTL_EXIT_USAGE;
        }
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        Capsule__V1__EventsRequest req = CAPSULE__V1__EVENTS_REQUEST__INIT;
        struct cap_error err = {0};
        struct rpc_stream *s = rpc_stream_open(c, "/capsule.v1.System/Events", &capsule__v1__event__descriptor, 0, &err);
        if (!s || rpc_stream_send(s, &req.base, &err) < 0 || rpc_stream_close_send(s, &err) < 0) {
                ctl_print_error(ctl, "events", &err);
                rpc_stream_free(s);
                return CTL_EXIT_ERROR;
        }
        ProtobufCMessage *m;
        int r;
        while ((r = rpc_stream_recv(s, &m, &err)) == 1) {
                Capsule__V1__Event *e = (Capsule__V1__Event *)m;
                char t[40];
                ctl_format_time(e->time_unix_nano, t, sizeof(t));
                if (ctl->output != CTL_OUT_TABLE) {
                        struct json_object *o = json_object_new_object();
                        json_object_object_add(o, "time", json_object_new_string(t));
                        json_object_object_add(o, "type", json_object_new_string(e->type));
                        json_object_object_add(o, "name", json_object_new_string(e->name));
                        json_object_object_add(o, "action", json_object_new_string(e->action));
                        json_object_object_add(o, "message", json_object_new_string(e->message));
                        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                        json_object_put(o);
                } else
                        printf("%s  %-8s %-20s %-11s %s\n", t, e->type, e->name, e->action, e->message);
                fflush(stdout);
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (r < 0)
                ctl_print_error(ctl, "events", &err);
        rpc_stream_free(s);
        return r < 0 ? CTL_EXIT_ERROR : CTL_EXIT_OK;
}
