/* `capsulectl health`: the capsule's own checks (store, containerd, perm, ...). Exit 1 if unhealthy. */
#include <string.h>

#include "capsule/v1/system.pb-c.h"
#include "capsulectl.h"
#include "rpc/rpc.h"

static const char usage[] =
    "usage: capsulectl health [--boot]\n"
    "\n"
    "Asks the capsule to run its health checks and prints each one. Exits 1 when any fails.\n"
    "Warns on stderr (the exit code stays) when the client or the server certificate expires\n"
    "within 30 days.\n"
    "\n"
    "Options:\n"
    "  --boot   print this boot's timeline instead: each phase of PID 1 (kernel, mounts,\n"
    "           modules, /perm, network, services) and of capsuled serve up to the API\n"
    "           answering, with its start (ms since the kernel started) and duration,\n"
    "           like systemd-analyze (default: the checks). Exit status as without it.\n"
    "\n"
    "Examples:\n"
    "  capsulectl health\n"
    "  capsulectl health --boot\n"
    "  capsulectl health -o json      # includes the timeline as \"boot\"\n";

static void print_boot(struct ctl *ctl, const Capsule__V1__HealthResponse *h)
{
        fprintf(ctl->out, "%-46s %9s %9s\n", "PHASE", "START", "DURATION");
        int64_t last = 0;
        for (size_t i = 0; i < h->n_boot; i++) {
                const Capsule__V1__BootPhase *p = h->boot[i];
                fprintf(ctl->out, "%-46s %7lldms %7lldms\n", p->name, (long long)p->start_ms,
                        (long long)(p->end_ms - p->start_ms));
                if (p->end_ms > last)
                        last = p->end_ms;
        }
        if (h->n_boot)
                fprintf(ctl->out, "API answering %lld ms after the kernel started\n",
                        (long long)last);
        else
                fprintf(ctl->out, "no boot timeline (this capsule does not record one)\n");
}

int cmd_health(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, usage))
                return CTL_EXIT_OK;
        bool boot = false;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--boot") == 0) {
                        boot = true;
                        continue;
                }
                fprintf(ctl->err, "capsulectl health: unexpected argument \"%s\"\n%s", argv[i], usage);
                return CTL_EXIT_USAGE;
        }
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        Capsule__V1__HealthRequest req = CAPSULE__V1__HEALTH_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.System/Health", &req.base, &capsule__v1__health_response__descriptor,
                      &resp, ctl->timeout_ms, &err) < 0) {
                ctl_print_error(ctl, "health", &err);
                return CTL_EXIT_ERROR;
        }
        ctl_warn_server_cert(ctl, c);
        Capsule__V1__HealthResponse *h = (Capsule__V1__HealthResponse *)resp;
        if (ctl->output == CTL_OUT_TABLE && boot) {
                print_boot(ctl, h);
        } else if (ctl->output == CTL_OUT_TABLE) {
                fprintf(ctl->out, "%-12s %-6s %s\n", "CHECK", "STATUS", "MESSAGE");
                for (size_t i = 0; i < h->n_checks; i++)
                        fprintf(ctl->out, "%-12s %-6s %s\n", h->checks[i]->name, h->checks[i]->ok ? "ok" : "FAIL",
                               h->checks[i]->message);
                char age[32];
                ctl_format_age(h->boot_uptime_seconds, age, sizeof(age));
                fprintf(ctl->out, "%s: up %s%s%s\n", h->ok ? "healthy" : "UNHEALTHY", age,
                       *h->slot ? ", slot " : "", h->slot);
        } else {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "ok", json_object_new_boolean(h->ok));
                struct json_object *arr = json_object_new_array();
                for (size_t i = 0; i < h->n_checks; i++) {
                        struct json_object *cj = json_object_new_object();
                        json_object_object_add(cj, "name", json_object_new_string(h->checks[i]->name));
                        json_object_object_add(cj, "ok", json_object_new_boolean(h->checks[i]->ok));
                        json_object_object_add(cj, "message", json_object_new_string(h->checks[i]->message));
                        json_object_array_add(arr, cj);
                }
                json_object_object_add(o, "checks", arr);
                json_object_object_add(o, "bootUptimeSeconds", json_object_new_int64(h->boot_uptime_seconds));
                json_object_object_add(o, "slot", json_object_new_string(h->slot));
                struct json_object *bj = json_object_new_array();
                for (size_t i = 0; i < h->n_boot; i++) {
                        struct json_object *pj = json_object_new_object();
                        json_object_object_add(pj, "name", json_object_new_string(h->boot[i]->name));
                        json_object_object_add(pj, "startMs", json_object_new_int64(h->boot[i]->start_ms));
                        json_object_object_add(pj, "endMs", json_object_new_int64(h->boot[i]->end_ms));
                        json_object_array_add(bj, pj);
                }
                json_object_object_add(o, "boot", bj);
                ctl_print_structured(ctl, o);
                json_object_put(o);
        }
        int rc = h->ok ? CTL_EXIT_OK : CTL_EXIT_ERROR;
        protobuf_c_message_free_unpacked(resp, NULL);
        return rc;
}
