/* `capsulectl get`, `describe`, `logs`, `restart` and `events`: reading workloads and their output. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
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
        "usage: capsulectl get [-w] [NAME]\n\n"
        "Lists workloads (NAME KIND STATUS RESTARTS AGE IMAGE PORTS), or one workload.\n"
        "With -o yaml or -o json prints spec and status. With several capsules (--capsule a,b)\n"
        "one table with a NODE column first.\n\n"
        "Options:\n"
        "  -w, --watch   after the table, print the rows that change (a workload applied,\n"
        "                started, exited, deleted) until interrupted; follows the capsule's\n"
        "                events, re-listing at least every 2 s (default: print once)\n\n"
        "Examples:\n"
        "  capsulectl get\n"
        "  capsulectl get web -o yaml\n"
        "  capsulectl get -w\n";

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
                        fprintf(ctl->err, "hint: `capsulectl get` lists the workloads this capsule has\n");
        }
        return r;
}

int cmd_get(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, get_usage))
                return CTL_EXIT_OK;
        static const struct option opts[] = {{"watch", no_argument, NULL, 'w'}, {NULL, 0, NULL, 0}};
        bool watch = false;
        int ch;
        while ((ch = getopt_long(argc, argv, "w", opts, NULL)) != -1) {
                if (ch != 'w') {
                        fputs(get_usage, ctl->err);
                        return CTL_EXIT_USAGE;
                }
                watch = true;
        }
        if (argc - optind > 1) {
                fprintf(ctl->err, "capsulectl get: at most one NAME\n%s", get_usage);
                return CTL_EXIT_USAGE;
        }
        const char *name = argc - optind == 1 ? argv[optind] : NULL;
        if (watch && ctl->n_nodes > 1) {
                fprintf(ctl->err, "capsulectl get: -w watches one capsule at a time; pick one with "
                                  "--capsule HOST:PORT\n");
                return CTL_EXIT_USAGE;
        }
        if (watch)
                return ctl_watch_workloads(ctl, name);
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
                        fprintf(ctl->out, "No workloads. Deploy one with `capsulectl apply -f FILE`.\n");
                else
                        ctl_workload_table_header(ctl->out);
                for (size_t i = 0; i < n; i++)
                        ctl_workload_table_row(ctl->out, ws[i]);
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
    "usage: capsulectl describe NAME\n"
    "\n"
    "Shows a workload's spec (as YAML), its status (phase, pid, restarts, IP, last exit code and\n"
    "reason, next restart) and its recent events. -o json|yaml prints spec and status as data.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl describe web\n";

int cmd_describe(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, describe_usage))
                return CTL_EXIT_OK;
        if (argc != 2) {
                fprintf(ctl->err, "capsulectl describe: NAME is required\n%s", describe_usage);
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
        fprintf(ctl->out, "Name:          %s\n", w->spec->name);
        fprintf(ctl->out, "Kind:          %s\n", manifest_workload_kind_name(w->spec->kind));
        fprintf(ctl->out, "Generation:    %llu (observed %llu)\n", (unsigned long long)w->generation,
               (unsigned long long)st->observed_generation);
        fprintf(ctl->out, "Image:         %s%s%s%s\n", w->spec->image, *st->image_digest ? " (" : "", st->image_digest,
               *st->image_digest ? ")" : "");
        fprintf(ctl->out, "Status:        %s\n", ctl_phase_name(st->phase));
        if (st->message && *st->message)
                fprintf(ctl->out, "Message:       %s\n", st->message);
        if (st->pid)
                fprintf(ctl->out, "PID:           %u\n", st->pid);
        if (st->started_unix_nano) {
                ctl_format_time(st->started_unix_nano, t, sizeof(t));
                ctl_format_age((long long)time(NULL) - st->started_unix_nano / 1000000000LL, age, sizeof(age));
                fprintf(ctl->out, "Started:       %s (%s ago)\n", t, age);
        }
        fprintf(ctl->out, "Restarts:      %u\n", st->restarts);
        if (st->ip_address && *st->ip_address)
                fprintf(ctl->out, "IP:            %s\n", st->ip_address);
        if (st->last_exit_unix_nano) {
                ctl_format_time(st->last_exit_unix_nano, t, sizeof(t));
                fprintf(ctl->out, "Last exit:     code %d: %s, at %s\n", st->last_exit_code, st->last_exit_reason, t);
        }
        if (st->next_restart_unix_nano) {
                ctl_format_time(st->next_restart_unix_nano, t, sizeof(t));
                fprintf(ctl->out, "Next restart:  %s\n", t);
        }
        if (st->microvm) {
                char mem[32], disk[32], cid[16] = "none";
                ctl_human_bytes(st->microvm->memory_bytes, mem, sizeof(mem));
                ctl_human_bytes(st->microvm->disk_bytes, disk, sizeof(disk));
                if (st->microvm->vsock_cid)
                        snprintf(cid, sizeof(cid), "%u", st->microvm->vsock_cid);
                fprintf(ctl->out, "MicroVM:       accel %s, %u vCPU, memory %s, disk %s, vsock CID %s\n",
                        st->microvm->accel, st->microvm->vcpus, mem, disk, cid);
                fprintf(ctl->out, "Kernel:        %s\n", st->microvm->kernel);
                if (st->microvm->disk && st->microvm->disk[0])
                        fprintf(ctl->out, "Root disk:     %s (%s, %s of %s)\n", st->microvm->disk,
                                st->microvm->disk_backend,
                                st->microvm->disk_shared ? "copy-on-write clone" : "full copy",
                                st->microvm->disk_origin);
        }
        _cleanup_free_ char *yaml = manifest_workload_to_yaml(w->spec);
        fprintf(ctl->out, "Spec:\n");
        for (char *save = NULL, *l = yaml ? strtok_r(yaml, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
                fprintf(ctl->out, "  %s\n", l);
        fprintf(ctl->out, "Events:\n");
        if (st->n_events == 0)
                fprintf(ctl->out, "  (none recorded since capsuled started)\n");
        for (size_t i = 0; i < st->n_events; i++) {
                ctl_format_time(st->events[i]->time_unix_nano, t, sizeof(t));
                fprintf(ctl->out, "  %s  %-11s %s\n", t, st->events[i]->reason, st->events[i]->message);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static const char logs_usage[] =
        "usage: capsulectl logs [-f] [--tail N] [--since WHEN] [--timestamps] NAME [NAME...]\n\n"
        "Prints workloads' output: stdout to stdout, stderr to stderr, the previous runs' lines\n"
        "included. With several NAMEs their lines are interleaved as they come, each prefixed\n"
        "\"NAME | \".\n\n"
        "Options:\n"
        "  -f, --follow        keep printing new lines until interrupted (default: print and exit)\n"
        "  --tail N            only the last N lines of each workload (default: all)\n"
        "  --since WHEN        only lines newer than WHEN: a duration before now (30s, 10m, 2h,\n"
        "                      1d, 1h30m) or an RFC 3339 time (2026-12-04T10:00:00Z)\n"
        "                      (default: all)\n"
        "  --timestamps        prefix each line with its RFC 3339 time (default: off)\n\n"
        "Examples:\n"
        "  capsulectl logs -f --tail 20 web\n"
        "  capsulectl logs web db --since 10m\n";

struct logs_job {
        struct ctl ctl; /* own out/err (prefixed when several), shared client */
        Capsule__V1__LogsRequest req;
        bool timestamps;
        int64_t since; /* unix ns; 0 = all */
        int rc;
        pthread_t th;
};

/* Streams one workload's log records to job->ctl.out/err. */
static int logs_stream(struct logs_job *job, struct rpc_client *c)
{
        struct ctl *ctl = &job->ctl;
        struct cap_error err = {0};
        struct rpc_stream *s = rpc_stream_open(c, "/capsule.v1.Workloads/Logs", &capsule__v1__log_chunk__descriptor,
                                               job->req.follow ? 0 : ctl->timeout_ms, &err);
        if (!s || rpc_stream_send(s, &job->req.base, &err) < 0 || rpc_stream_close_send(s, &err) < 0) {
                ctl_print_error(ctl, "logs", &err);
                rpc_stream_free(s);
                return CTL_EXIT_ERROR;
        }
        ProtobufCMessage *m;
        int r;
        while ((r = rpc_stream_recv(s, &m, &err)) == 1) {
                Capsule__V1__LogChunk *chunk = (Capsule__V1__LogChunk *)m;
                FILE *out = strcmp(chunk->stream, "stderr") == 0 ? ctl->err : ctl->out;
                if (job->since && chunk->time_unix_nano < job->since) {
                        protobuf_c_message_free_unpacked(m, NULL);
                        continue;
                }
                if (job->timestamps) {
                        char t[48];
                        time_t sec = (time_t)(chunk->time_unix_nano / 1000000000LL);
                        struct tm tm;
                        gmtime_r(&sec, &tm);
                        strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
                        fprintf(out, "%s.%09lldZ ", t, (long long)(chunk->time_unix_nano % 1000000000LL));
                }
                fwrite(chunk->data.data, 1, chunk->data.len, out);
                if (job->req.follow)
                        fflush(out);
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (r < 0)
                ctl_print_error(ctl, "logs", &err);
        rpc_stream_free(s);
        return r < 0 ? CTL_EXIT_ERROR : CTL_EXIT_OK;
}

static void *logs_thread(void *arg)
{
        struct logs_job *job = arg;
        job->rc = logs_stream(job, job->ctl.client);
        return NULL;
}

/* Several workloads: one stream (and thread) each on the same channel, lines prefixed. */
static int logs_many(struct ctl *ctl, struct rpc_client *c, struct logs_job *jobs, size_t n)
{
        pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        int width = 0, rc = CTL_EXIT_OK;
        for (size_t i = 0; i < n; i++)
                if ((int)strlen(jobs[i].req.name) > width)
                        width = (int)strlen(jobs[i].req.name);
        size_t started = 0;
        for (; started < n; started++) {
                struct logs_job *job = &jobs[started];
                _cleanup_free_ char *prefix = NULL;
                if (asprintf(&prefix, "%-*s | ", width, job->req.name) < 0 ||
                    !(job->ctl.out = ctl_prefix_stream(ctl->out, prefix, &lock)) ||
                    !(job->ctl.err = ctl_prefix_stream(ctl->err, prefix, &lock))) {
                        fprintf(ctl->err, "capsulectl: logs %s: %s\n", job->req.name, strerror(errno));
                        rc = CTL_EXIT_ERROR;
                        break;
                }
                job->ctl.client = c;
                int r = pthread_create(&job->th, NULL, logs_thread, job);
                if (r != 0) {
                        fprintf(ctl->err, "capsulectl: logs %s: thread: %s\n", job->req.name, strerror(r));
                        rc = CTL_EXIT_ERROR;
                        break;
                }
        }
        for (size_t i = 0; i < n; i++) {
                if (i < started) {
                        pthread_join(jobs[i].th, NULL);
                        if (jobs[i].rc != CTL_EXIT_OK)
                                rc = jobs[i].rc;
                }
                if (jobs[i].ctl.out)
                        fclose(jobs[i].ctl.out);
                if (jobs[i].ctl.err)
                        fclose(jobs[i].ctl.err);
        }
        return rc;
}

int cmd_logs(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, logs_usage))
                return CTL_EXIT_OK;
        static const struct option opts[] = {
                {"follow", no_argument, NULL, 'f'}, {"tail", required_argument, NULL, 't'},
                {"timestamps", no_argument, NULL, 'T'}, {"since", required_argument, NULL, 's'},
                {NULL, 0, NULL, 0},
        };
        Capsule__V1__LogsRequest req = CAPSULE__V1__LOGS_REQUEST__INIT;
        req.tail = -1;
        bool timestamps = false;
        int64_t since = 0;
        int ch;
        while ((ch = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
                switch (ch) {
                case 'f': req.follow = true; break;
                case 'T': timestamps = true; break;
                case 't': {
                        char *end;
                        long long v = strtoll(optarg, &end, 10);
                        if (*end || v < 0) {
                                fprintf(ctl->err, "capsulectl logs: --tail %s: expected a number of lines >= 0\n", optarg);
                                return CTL_EXIT_USAGE;
                        }
                        req.tail = v;
                        break;
                }
                case 's': {
                        struct timespec now;
                        clock_gettime(CLOCK_REALTIME, &now);
                        if (ctl_parse_since(optarg, (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec, &since) < 0) {
                                fprintf(ctl->err,
                                        "capsulectl logs: --since %s: expected a duration (10m, 1h30m) or an "
                                        "RFC 3339 time (2026-12-04T10:00:00Z)\n",
                                        optarg);
                                return CTL_EXIT_USAGE;
                        }
                        break;
                }
                default: fputs(logs_usage, ctl->err); return CTL_EXIT_USAGE;
                }
        }
        if (optind >= argc) {
                fprintf(ctl->err, "capsulectl logs: NAME is required\n%s", logs_usage);
                return CTL_EXIT_USAGE;
        }
        size_t n = (size_t)(argc - optind);
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        _cleanup_free_ struct logs_job *jobs = calloc(n, sizeof(*jobs));
        if (!jobs)
                return CTL_EXIT_ERROR;
        for (size_t i = 0; i < n; i++) {
                jobs[i].ctl = *ctl;
                jobs[i].req = req;
                jobs[i].req.name = argv[optind + (int)i];
                jobs[i].timestamps = timestamps;
                jobs[i].since = since;
        }
        if (n == 1)
                return logs_stream(&jobs[0], c);
        for (size_t i = 0; i < n; i++)
                jobs[i].ctl.out = jobs[i].ctl.err = NULL;
        return logs_many(ctl, c, jobs, n);
}

static const char restart_usage[] =
    "usage: capsulectl restart NAME\n"
    "\n"
    "Stops the workload (SIGTERM, 10 s grace, SIGKILL) and starts it again now, clearing any\n"
    "restart backoff.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl restart web\n";

int cmd_restart(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, restart_usage))
                return CTL_EXIT_OK;
        if (argc != 2) {
                fprintf(ctl->err, "capsulectl restart: NAME is required\n%s", restart_usage);
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
        fprintf(ctl->out, "workload/%s restarting\n", argv[1]);
        return CTL_EXIT_OK;
}

static const char events_usage[] =
    "usage: capsulectl events\n"
    "\n"
    "Streams the capsule's events (workloads started, exited, replaced; volumes; images) as they\n"
    "happen, until interrupted. -o json prints one JSON object per line. With several capsules\n"
    "each line is prefixed \"[node] \".\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl events\n"
    "  capsulectl events -o json\n";

int cmd_events(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, events_usage))
                return CTL_EXIT_OK;
        if (argc != 1) {
                fputs(events_usage, ctl->err);
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
                        fprintf(ctl->out, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                        json_object_put(o);
                } else
                        fprintf(ctl->out, "%s  %-8s %-20s %-11s %s\n", t, e->type, e->name, e->action, e->message);
                fflush(ctl->out);
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (r < 0)
                ctl_print_error(ctl, "events", &err);
        rpc_stream_free(s);
        return r < 0 ? CTL_EXIT_ERROR : CTL_EXIT_OK;
}
