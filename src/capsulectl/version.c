/* `capsulectl version`: client version, and the server's when a capsule answers. */
#include <getopt.h>
#include <string.h>

#include "build-id.h"
#include "capsule/v1/system.pb-c.h"
#include "capsulectl.h"
#include "rpc/rpc.h"

static const char usage[] =
    "usage: capsulectl version [--client]\n"
    "\n"
    "Prints the client version and the server's (version, build, hostname, mode, uptime, slot).\n"
    "Warns on stderr (the exit code stays) when the client or the server certificate expires\n"
    "within 30 days.\n"
    "\n"
    "Options:\n"
    "  --client   print only the client version, do not contact the capsule (default: both)\n"
    "\n"
    "Examples:\n"
    "  capsulectl version\n"
    "  capsulectl version -o json\n";

int cmd_version(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, usage))
                return CTL_EXIT_OK;
        bool client_only = false;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--client") == 0)
                        client_only = true;
                else {
                        fprintf(ctl->err, "capsulectl version: unexpected argument \"%s\"\n%s", argv[i], usage);
                        return CTL_EXIT_USAGE;
                }
        }
        struct json_object *out = json_object_new_object();
        struct json_object *cj = json_object_new_object();
        json_object_object_add(cj, "version", json_object_new_string(CAPSULE_VERSION));
        json_object_object_add(cj, "build", json_object_new_string(CAPSULE_BUILD));
        json_object_object_add(out, "client", cj);
        if (ctl->output == CTL_OUT_TABLE)
                fprintf(ctl->out, "Client: capsulectl %s (build %s)\n", CAPSULE_VERSION, CAPSULE_BUILD);
        int rc = CTL_EXIT_OK;
        if (!client_only) {
                struct rpc_client *c = ctl_client(ctl);
                if (!c) {
                        rc = CTL_EXIT_ERROR;
                        goto out;
                }
                Capsule__V1__VersionRequest req = CAPSULE__V1__VERSION_REQUEST__INIT;
                ProtobufCMessage *resp = NULL;
                struct cap_error err = {0};
                if (rpc_unary(c, "/capsule.v1.System/Version", &req.base,
                              &capsule__v1__version_response__descriptor, &resp, ctl->timeout_ms, &err) < 0) {
                        ctl_print_error(ctl, "version", &err);
                        rc = CTL_EXIT_ERROR;
                        goto out;
                }
                ctl_warn_server_cert(ctl, c);
                Capsule__V1__VersionResponse *v = (Capsule__V1__VersionResponse *)resp;
                if (ctl->output == CTL_OUT_TABLE) {
                        char age[32];
                        ctl_format_age(v->uptime_seconds, age, sizeof(age));
                        fprintf(ctl->out, "Server: capsuled %s (build %s) on %s, %s mode, up %s", v->version, v->build,
                               v->hostname, v->mode, age);
                        if (v->slot && *v->slot)
                                fprintf(ctl->out, ", slot %s", v->slot);
                        fprintf(ctl->out, "\n");
                } else {
                        struct json_object *sj = json_object_new_object();
                        json_object_object_add(sj, "version", json_object_new_string(v->version));
                        json_object_object_add(sj, "build", json_object_new_string(v->build));
                        json_object_object_add(sj, "hostname", json_object_new_string(v->hostname));
                        json_object_object_add(sj, "mode", json_object_new_string(v->mode));
                        json_object_object_add(sj, "uptimeSeconds", json_object_new_int64(v->uptime_seconds));
                        json_object_object_add(sj, "kernel", json_object_new_string(v->kernel));
                        json_object_object_add(sj, "slot", json_object_new_string(v->slot));
                        json_object_object_add(out, "server", sj);
                }
                protobuf_c_message_free_unpacked(resp, NULL);
        }
        if (ctl->output != CTL_OUT_TABLE)
                ctl_print_structured(ctl, out);
out:
        json_object_put(out);
        return rc;
}
