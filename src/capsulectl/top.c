/* `capsulectl top`: what running workloads use, from two looks one second apart (the capsule
 * reads each container's cgroup; CPU is the CPU time used between the two, as % of one core). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capsule/v1/workloads.pb-c.h"
#include "capsulectl.h"
#include "rpc/rpc.h"

static const char top_usage[] =
    "usage: capsulectl top [NAME...]\n"
    "\n"
    "Shows the running workloads' resource use: CPU (% of one core over one second), memory\n"
    "(and the limit from `resources.memory`), processes. Not running: -. NAMEs limit the list\n"
    "(default: every workload).\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl top\n"
    "  capsulectl top web -o json\n";

static Capsule__V1__ListResponse *list(struct ctl *ctl, struct rpc_client *c)
{
        Capsule__V1__ListRequest req = CAPSULE__V1__LIST_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.Workloads/List", &req.base,
                      &capsule__v1__list_response__descriptor, &resp, ctl->timeout_ms, &err) < 0) {
                ctl_print_error(ctl, "top", &err);
                return NULL;
        }
        return (Capsule__V1__ListResponse *)resp;
}

static bool wanted(const char *name, int argc, char **argv)
{
        if (argc < 2)
                return true;
        for (int i = 1; i < argc; i++)
                if (strcmp(argv[i], name) == 0)
                        return true;
        return false;
}

static const Capsule__V1__WorkloadStatus *find(const Capsule__V1__ListResponse *l, const char *name)
{
        for (size_t i = 0; i < l->n_workloads; i++)
                if (l->workloads[i]->spec && strcmp(l->workloads[i]->spec->name, name) == 0)
                        return l->workloads[i]->status;
        return NULL;
}

int cmd_top(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, top_usage))
                return CTL_EXIT_OK;
        for (int i = 1; i < argc; i++)
                if (argv[i][0] == '-') {
                        fprintf(ctl->err, "capsulectl top: unexpected option \"%s\"\n%s", argv[i],
                                top_usage);
                        return CTL_EXIT_USAGE;
                }
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        Capsule__V1__ListResponse *a = list(ctl, c);
        if (!a)
                return CTL_EXIT_ERROR;
        usleep(1000 * 1000);
        Capsule__V1__ListResponse *b = list(ctl, c);
        if (!b) {
                protobuf_c_message_free_unpacked(&a->base, NULL);
                return CTL_EXIT_ERROR;
        }
        int rc = CTL_EXIT_OK;
        for (int i = 1; i < argc; i++)
                if (!find(b, argv[i])) {
                        fprintf(ctl->err, "capsulectl: top: workload \"%s\" not found\n", argv[i]);
                        rc = CTL_EXIT_ERROR;
                }
        struct json_object *arr = json_object_new_array();
        if (ctl->output == CTL_OUT_TABLE)
                fprintf(ctl->out, "%-24s %6s %9s %9s %5s\n", "NAME", "CPU%", "MEMORY", "LIMIT", "PIDS");
        for (size_t i = 0; i < b->n_workloads; i++) {
                const Capsule__V1__Workload *w = b->workloads[i];
                if (!w->spec || !w->status || !wanted(w->spec->name, argc, argv))
                        continue;
                const Capsule__V1__WorkloadStatus *now = w->status, *then = find(a, w->spec->name);
                bool have = now->stats_unix_nano > 0;
                double cpu = -1;
                if (have && then && then->stats_unix_nano > 0 &&
                    now->stats_unix_nano > then->stats_unix_nano &&
                    now->cpu_usage_usec >= then->cpu_usage_usec && now->pid == then->pid)
                        cpu = (double)(now->cpu_usage_usec - then->cpu_usage_usec) * 1000.0 *
                              100.0 / (double)(now->stats_unix_nano - then->stats_unix_nano);
                uint64_t limit = w->spec->resources ? w->spec->resources->memory_bytes : 0;
                if (ctl->output != CTL_OUT_TABLE) {
                        struct json_object *o = json_object_new_object();
                        json_object_object_add(o, "name", json_object_new_string(w->spec->name));
                        json_object_object_add(o, "running", json_object_new_boolean(have));
                        if (cpu >= 0)
                                json_object_object_add(o, "cpuPercent",
                                                       json_object_new_double(cpu));
                        if (have) {
                                json_object_object_add(
                                    o, "memoryBytes",
                                    json_object_new_int64((int64_t)now->memory_bytes));
                                json_object_object_add(o, "pids", json_object_new_int(now->pids));
                        }
                        if (limit)
                                json_object_object_add(o, "memoryLimitBytes",
                                                       json_object_new_int64((int64_t)limit));
                        json_object_array_add(arr, o);
                        continue;
                }
                char cpus[16] = "-", mem[16] = "-", lim[16] = "-", pids[16] = "-";
                if (cpu >= 0)
                        snprintf(cpus, sizeof(cpus), "%.1f", cpu);
                if (have) {
                        ctl_human_bytes(now->memory_bytes, mem, sizeof(mem));
                        snprintf(pids, sizeof(pids), "%u", now->pids);
                }
                if (limit)
                        ctl_human_bytes(limit, lim, sizeof(lim));
                fprintf(ctl->out, "%-24s %6s %9s %9s %5s\n", w->spec->name, cpus, mem, lim, pids);
        }
        if (ctl->output != CTL_OUT_TABLE)
                ctl_print_structured(ctl, arr);
        json_object_put(arr);
        protobuf_c_message_free_unpacked(&a->base, NULL);
        protobuf_c_message_free_unpacked(&b->base, NULL);
        return rc;
}
