/* `capsulectl reboot`, `dmesg` and `machine-config apply`: machine-level verbs. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "capsule/v1/system.pb-c.h"
#include "capsulectl.h"
#include "rpc/rpc.h"

static const char reboot_usage[] =
    "usage: capsulectl reboot [--poweroff]\n"
    "\n"
    "Reboots (or powers off) the capsule cleanly: workloads are stopped with a grace period,\n"
    "disks synced and unmounted. Workloads start again after the reboot.\n"
    "\n"
    "Options:\n"
    "  --poweroff   power off instead of rebooting (default: reboot)\n"
    "\n"
    "Examples:\n"
    "  capsulectl reboot\n";

int cmd_reboot(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, reboot_usage))
                return CTL_EXIT_OK;
        Capsule__V1__RebootRequest req = CAPSULE__V1__REBOOT_REQUEST__INIT;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--poweroff") == 0)
                        req.poweroff = true;
                else {
                        fprintf(ctl->err, "capsulectl reboot: unexpected argument \"%s\"\n%s",
                                argv[i], reboot_usage);
                        return CTL_EXIT_USAGE;
                }
        }
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.System/Reboot", &req.base,
                      &capsule__v1__reboot_response__descriptor, &resp, ctl->timeout_ms,
                      &err) < 0) {
                ctl_print_error(ctl, "reboot", &err);
                return CTL_EXIT_ERROR;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        fprintf(ctl->out, "%s requested; `capsulectl health` answers again once it is back\n",
               req.poweroff ? "power off" : "reboot");
        return CTL_EXIT_OK;
}

static const char dmesg_usage[] =
    "usage: capsulectl dmesg [-f]\n"
    "\n"
    "Prints the capsule's kernel log (PID 1's and the services' lines included). With several\n"
    "capsules each line is prefixed \"[node] \".\n"
    "\n"
    "Options:\n"
    "  -f, --follow   keep printing new lines until interrupted (default: print and exit)\n"
    "\n"
    "Examples:\n"
    "  capsulectl dmesg -f\n";

int cmd_dmesg(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, dmesg_usage))
                return CTL_EXIT_OK;
        Capsule__V1__DmesgRequest req = CAPSULE__V1__DMESG_REQUEST__INIT;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--follow") == 0)
                        req.follow = true;
                else {
                        fprintf(ctl->err, "capsulectl dmesg: unexpected argument \"%s\"\n%s", argv[i],
                                dmesg_usage);
                        return CTL_EXIT_USAGE;
                }
        }
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        struct cap_error err = {0};
        struct rpc_stream *s =
            rpc_stream_open(c, "/capsule.v1.System/Dmesg", &capsule__v1__dmesg_line__descriptor,
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
                        fprintf(ctl->out, "[%5lld.%06lld] %s\n", (long long)(l->time_usec / 1000000),
                               (long long)(l->time_usec % 1000000), l->message);
                } else {
                        struct json_object *o = json_object_new_object();
                        json_object_object_add(o, "timeUsec", json_object_new_int64(l->time_usec));
                        json_object_object_add(o, "priority",
                                               json_object_new_int((int)l->priority));
                        json_object_object_add(o, "message", json_object_new_string(l->message));
                        fprintf(ctl->out, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
                        json_object_put(o);
                }
                if (req.follow)
                        fflush(ctl->out);
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (r < 0)
                ctl_print_error(ctl, "dmesg", &err);
        rpc_stream_free(s);
        return r < 0 ? CTL_EXIT_ERROR : CTL_EXIT_OK;
}

static const char machine_config_usage[] =
    "usage: capsulectl machine-config apply -f FILE [--dry-run] [--replace-ca]\n"
    "\n"
    "Replaces the capsule's machine config (the machine.yaml of `capsulectl gen config`, edited).\n"
    "It is checked whole first: fields, certificates, the server certificate against its key and\n"
    "the CA. `registries` (insecure hosts, CAs, logins) take effect at once; hostname, api, pki,\n"
    "network, updates and time at the next boot (`capsulectl reboot`).\n"
    "\n"
    "Options:\n"
    "  -f, --file FILE   the new machine config, - for standard input (required, no default)\n"
    "  --dry-run         check it and show what would change; save nothing (default: off)\n"
    "  --replace-ca      allow a different pki.ca; every client certificate must then be\n"
    "                    re-issued (default: a different CA is refused)\n"
    "\n"
    "Examples:\n"
    "  capsulectl machine-config apply -f ~/capsule-home/machine.yaml --dry-run\n";

static void print_sections(struct ctl *ctl, const char *label, char **v, size_t n)
{
        fprintf(ctl->out, "%s", label);
        for (size_t i = 0; i < n; i++)
                fprintf(ctl->out, "%s%s", i ? ", " : " ", v[i]);
        fprintf(ctl->out, "\n");
}

int cmd_machine_config(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, machine_config_usage))
                return CTL_EXIT_OK;
        if (argc < 2 || strcmp(argv[1], "apply") != 0) {
                fprintf(ctl->err, "capsulectl machine-config: expected `apply`\n%s",
                        machine_config_usage);
                return CTL_EXIT_USAGE;
        }
        Capsule__V1__ApplyMachineConfigRequest req =
            CAPSULE__V1__APPLY_MACHINE_CONFIG_REQUEST__INIT;
        const char *file = NULL;
        for (int i = 2; i < argc; i++) {
                if ((strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--file") == 0) && i + 1 < argc)
                        file = argv[++i];
                else if (strcmp(argv[i], "--dry-run") == 0)
                        req.dry_run = true;
                else if (strcmp(argv[i], "--replace-ca") == 0)
                        req.replace_ca = true;
                else {
                        fprintf(ctl->err,
                                "capsulectl machine-config apply: unexpected argument \"%s\"\n%s",
                                argv[i], machine_config_usage);
                        return CTL_EXIT_USAGE;
                }
        }
        if (!file) {
                fprintf(ctl->err, "capsulectl machine-config apply: -f FILE is required\n%s",
                        machine_config_usage);
                return CTL_EXIT_USAGE;
        }
        size_t len = 0;
        char *text = NULL;
        struct cap_error err = {0};
        if (config_read_file(file, &text, &len, &err) < 0) {
                fprintf(ctl->err, "capsulectl: %s\nnothing was applied\n", err.msg);
                return CTL_EXIT_ERROR;
        }
        /* Checked here first, so that mistakes are reported against the file's own name. */
        struct machine_config check;
        if (machine_config_parse(file, text, len, &check, &err) < 0) {
                fprintf(ctl->err, "capsulectl: %s\nnothing was applied\n", err.msg);
                free(text);
                return CTL_EXIT_ERROR;
        }
        machine_config_free(&check);
        req.config.data = (uint8_t *)text;
        req.config.len = len;
        struct rpc_client *c = ctl_client(ctl);
        if (!c) {
                free(text);
                return CTL_EXIT_ERROR;
        }
        ProtobufCMessage *resp = NULL;
        int r = rpc_unary(c, "/capsule.v1.System/ApplyMachineConfig", &req.base,
                          &capsule__v1__apply_machine_config_response__descriptor, &resp,
                          ctl->timeout_ms, &err);
        explicit_bzero(text, len);
        free(text);
        if (r < 0) {
                ctl_print_error(ctl, "machine-config apply", &err);
                fprintf(ctl->err, "nothing was applied\n");
                return CTL_EXIT_ERROR;
        }
        Capsule__V1__ApplyMachineConfigResponse *a =
            (Capsule__V1__ApplyMachineConfigResponse *)resp;
        if (ctl->output != CTL_OUT_TABLE) {
                struct json_object *o = json_object_new_object(), *ch = json_object_new_array(),
                                   *ap = json_object_new_array();
                for (size_t i = 0; i < a->n_changed; i++)
                        json_object_array_add(ch, json_object_new_string(a->changed[i]));
                for (size_t i = 0; i < a->n_applied; i++)
                        json_object_array_add(ap, json_object_new_string(a->applied[i]));
                json_object_object_add(o, "changed", ch);
                json_object_object_add(o, "applied", ap);
                json_object_object_add(o, "rebootRequired",
                                       json_object_new_boolean(a->reboot_required));
                json_object_object_add(o, "dryRun", json_object_new_boolean(req.dry_run));
                ctl_print_structured(ctl, o);
                json_object_put(o);
        } else if (a->n_changed == 0) {
                fprintf(ctl->out, "unchanged: the capsule already has this machine config\n");
        } else {
                print_sections(ctl, req.dry_run ? "would change:" : "changed:", a->changed,
                               a->n_changed);
                if (a->n_applied)
                        print_sections(ctl, "in effect now:", a->applied, a->n_applied);
                if (a->reboot_required)
                        fprintf(ctl->out, "the rest takes effect at the next boot%s\n",
                               req.dry_run ? "" : " (capsulectl reboot)");
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}
