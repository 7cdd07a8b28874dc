/* capsulectl: the operator CLI. Global options, then a verb:
 *   capsulectl [--config FILE] [--context NAME] [--capsule HOST:PORT] [-o table|yaml|json] VERB ...
 * Each verb is a function in its own file, listed in `verbs` below. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capsulectl.h"
#include "rpc/rpc.h"

static const struct ctl_verb verbs[] = {
    {"apply", cmd_apply, "Apply manifests (-f FILE|DIR|-): create or update workloads and volumes"},
    {"diff", cmd_diff, "Show how manifests differ from what the capsule runs"},
    {"get", cmd_get, "List workloads, or show one"},
    {"describe", cmd_describe, "Show a workload's spec, status, last exit and events"},
    {"delete", cmd_delete, "Delete workloads (by NAME or -f FILE)"},
    {"logs", cmd_logs, "Print a workload's output (-f to follow)"},
    {"exec", cmd_exec, "Run a command in a workload (-it for a terminal)"},
    {"restart", cmd_restart, "Restart a workload now"},
    {"events", cmd_events, "Stream the capsule's events"},
    {"top", cmd_top, "Show CPU, memory and processes of running workloads"},
    {"image", cmd_image, "Manage images (image push|pull|ls|rm)"},
    {"volume", cmd_volume, "Manage volumes (volume create|ls|resize|rm)"},
    {"version", cmd_version, "Print the client and server versions"},
    {"health", cmd_health, "Check the capsule's health"},
    {"dmesg", cmd_dmesg, "Print the capsule's kernel log (-f to follow)"},
    {"reboot", cmd_reboot, "Reboot (or --poweroff) the capsule cleanly"},
    {"machine-config", cmd_machine_config,
     "Replace the capsule's machine config (machine-config apply -f)"},
    {"gen", cmd_gen, "Generate configs and certificates (gen config, gen cert)"},
    {"config", cmd_config, "Manage client contexts (config contexts, config use-context)"},
};

static void usage(FILE *f)
{
        fprintf(f, "capsulectl: drive a Capsule over its gRPC API.\n\n"
                   "usage: capsulectl [global options] VERB [args]\n\n"
                   "Verbs:\n");
        for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
                fprintf(f, "  %-15s %s\n", verbs[i].name, verbs[i].summary);
        fprintf(f, "\nGlobal options:\n"
                   "  --config FILE        client config (default $CAPSULECONFIG or "
                   "~/.config/capsule/config)\n"
                   "  --context NAME       context to use (default: the config's current context)\n"
                   "  --capsule HOST:PORT  endpoint override (also $CAPSULE_HOST)\n"
                   "  -o, --output FMT     table (default), yaml or json\n"
                   "  --timeout SECONDS    per-call deadline (default 30)\n"
                   "  -h, --help           this help; `capsulectl VERB --help` for a verb\n");
}

int main(int argc, char **argv)
{
        struct ctl ctl = {.timeout_ms = 30000};
        static const struct option opts[] = {
            {"config", required_argument, NULL, 'c'},
            {"context", required_argument, NULL, 'x'},
            {"capsule", required_argument, NULL, 'e'},
            {"output", required_argument, NULL, 'o'},
            {"timeout", required_argument, NULL, 't'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        int c;
        /* '+' stops at the first non-option: the verb. */
        while ((c = getopt_long(argc, argv, "+o:h", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        ctl.config_path = optarg;
                        break;
                case 'x':
                        ctl.context_name = optarg;
                        break;
                case 'e':
                        ctl.endpoint = optarg;
                        break;
                case 'o':
                        if (strcmp(optarg, "table") == 0 || strcmp(optarg, "wide") == 0)
                                ctl.output = CTL_OUT_TABLE;
                        else if (strcmp(optarg, "yaml") == 0)
                                ctl.output = CTL_OUT_YAML;
                        else if (strcmp(optarg, "json") == 0)
                                ctl.output = CTL_OUT_JSON;
                        else {
                                fprintf(stderr, "capsulectl: -o %s: expected table, yaml or json\n",
                                        optarg);
                                return CTL_EXIT_USAGE;
                        }
                        break;
                case 't': {
                        char *end;
                        long s = strtol(optarg, &end, 10);
                        if (*end || s <= 0 || s > 86400) {
                                fprintf(stderr,
                                        "capsulectl: --timeout %s: expected seconds (1-86400)\n",
                                        optarg);
                                return CTL_EXIT_USAGE;
                        }
                        ctl.timeout_ms = (int)s * 1000;
                        break;
                }
                case 'h':
                        usage(stdout);
                        return CTL_EXIT_OK;
                default:
                        usage(stderr);
                        return CTL_EXIT_USAGE;
                }
        }
        if (optind >= argc) {
                usage(stderr);
                return CTL_EXIT_USAGE;
        }
        if (!ctl.endpoint) {
                const char *h = getenv("CAPSULE_HOST");
                if (h && *h)
                        ctl.endpoint = h;
        }
        if (!ctl.config_path) {
                ctl.config_path_owned = client_config_default_path();
                ctl.config_path = ctl.config_path_owned;
        }
        int vi = optind;
        const char *verb = argv[vi];
        int rc = CTL_EXIT_USAGE;
        bool found = false;
        for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
                if (strcmp(verbs[i].name, verb) == 0) {
                        optind = 0; /* full getopt re-initialisation for the verb's own options */
                        rc = verbs[i].run(&ctl, argc - vi, argv + vi);
                        found = true;
                        break;
                }
        }
        if (!found) {
                fprintf(stderr,
                        "capsulectl: unknown verb \"%s\"; run `capsulectl --help` for the list\n",
                        verb);
                rc = CTL_EXIT_USAGE;
        }
        ctl_cleanup(&ctl);
        return rc;
}
