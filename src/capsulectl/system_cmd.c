/* `capsulectl reboot` and `capsulectl dmesg`: machine-level verbs. */
#include <getopt.h>
#include <string.h>

#include "capsule/v1/system.pb-c.h"
#include "capsulectl.h"
#include "rpc/rpc.h"

static const char reboot_usage[] =
        "usage: capsulectl reboot [--poweroff]\n\n"
        "Reboots (or powers off) the capsule cleanly: workloads are stopped with a grace period,\n"
        "disks synced and unmounted. Workloads start again after the reboot.\n\n"
        "example: capsulectl reboot\n";

int cmd_reboot(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, reboot_usage))
                return CTL_EXIT_OK;
        Capsule__V1__RebootRequest req = CAPSULE__V1__REBOOT_REQUEST__INIT;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--poweroff") == 0)
                        req.poweroff = true;
                else {
                        fprintf(stderr, "capsulectl reboot: unexpected argument \"%s\"\n%s", argv[i], reboot_usage);
                        return CTL_EXIT_USAGE;
                }
        }
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.System/Reboot", &req.base, &capsule__v1__reboot_response__descriptor, &resp,
                      ctl->timeout_ms, &err) < 0) {
                ctl_print_error(ctl, "reboot", &err);
                return CTL_EXIT_ERROR;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        printf("%s requested; `capsulectl health` answers again once it is back\n",
               req.poweroff ? "power off" : "reboot");
        return CTL_EXIT_OK;
}

static const char dmesg_usage[] =
        "usage: capsulectl dmesg [-f]\n\n"
        "Prints the capsule's kernel log (PID 1's and the services' lines included).\n"
        "  -f, --follow   keep printing new lines until interrupted\n\n"
        "example: capsulectl dmesg -f\n";

int cmd_dmesg(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, dmesg_usage))
                return CTL_EXIT_OK;
        Capsule__V1__DmesgRequest req = CAPSULE__V1__DMESG_REQUEST__INIT;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--follow") == 0)
                        req.follow = true;
                else {
                        fprintf(stderr, "capsulectl dmesg: unexpected argument \"%s\"\n%s", argv[i], dmesg_usage);
                        return CTL_EXIT_USAGE;
                }
        }
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        struct cap_error err = {0};
        struct rpc_stream *s = rpc_stream_open(c, "/capsule.v1.System/Dmesg", &capsule__v1__dmesg_line__descriptor,
                                               req.follow ? 0 : ctl->timeout_ms, &err);
        if (!s || rpc_stream_send(s, &req.base, &err) < 0 || rpc_stream_close_send(s, &err) < 0) {
                ctl_print_error(ctl, "dmesg", &err);
                rpc_stream_free(s);
                return CTL_EXIT_ERROR;
        }
        ProtobufCMessage *m;
        int r;
        while ((r = rpc_stream_recv(s, &m, &err)) == 1) {
                Capsule__V1__DmesgLine *l = (Capsule__V1__DmesgLine *)m;
                if (ctl->output == CTL_OUT_TABLE) {
                        printf("[%5lld.%06lld] %s\n", (long long)(l->time_usec / 1000000),
                               (long long)(l->time_usec % 1000000), l->message);
                } else {
                        struct json_object *o = json_object_new_object();
                        json_object_object_add(o, "timeUsec", json_object_new_int64(l->time_usec));
                        json_object_object_add(o, "priority", json_object_new_int((int)l->priority));
                        json_object_object_add(o, "message", json_object_new_string(l->message));
                        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                        json_object_put(o);
                }
                if (req.follow)
                        fflush(stdout);
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (r < 0)
                ctl_print_error(ctl, "dmesg", &err);
        rpc_stream_free(s);
        return r < 0 ? CTL_EXIT_ERROR : CTL_EXIT_OK;
}
