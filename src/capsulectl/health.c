/* `capsulectl health`: the capsule's own checks (store, containerd, perm, ...). Exit 1 if unhealthy. */
#include "capsule/v1/system.pb-c.h"
#include "capsulectl.h"
#include "rpc/rpc.h"

static const char usage[] =
    "usage: capsulectl health\n"
    "\n"
    "Asks the capsule to run its health checks and prints each one. Exits 1 when any fails.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl health\n"
    "  capsulectl health -o json\n";

int cmd_health(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, usage))
                return CTL_EXIT_OK;
        if (argc > 1) {
                fprintf(ctl->err, "capsulectl health: unexpected argument \"%s\"\n%s", argv[1], usage);
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
        Capsule__V1__HealthResponse *h = (Capsule__V1__HealthResponse *)resp;
        if (ctl->output == CTL_OUT_TABLE) {
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
                ctl_print_structured(ctl, o);
                json_object_put(o);
        }
        int rc = h->ok ? CTL_EXIT_OK : CTL_EXIT_ERROR;
        protobuf_c_message_free_unpacked(resp, NULL);
        return rc;
}
