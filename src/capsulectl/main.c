/* capsulectl: the operator CLI.
 *   capsulectl [global options] VERB [args and options, global options allowed anywhere]
 * Each verb is a function in its own file, listed in `ctl_verbs` below with its options (for
 * lifting global options out of argv, the unknown-option check and completion). Global options
 * are parsed once here: before the verb, and after it up to "--" (args.c); the verb's own parser
 * never sees them. With several capsules (--capsule a,b or a context with several endpoints) the
 * verb runs once per capsule (fleet.c). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capsulectl.h"
#include "rpc/rpc.h"

static const struct ctl_opt opts_none[] = {{0}};
static const struct ctl_opt opts_apply[] = {{"filename", 'f', true}, {"dry-run", 0, false}, {"prune", 0, false}, {0}};
static const struct ctl_opt opts_diff[] = {{"filename", 'f', true}, {0}};
static const struct ctl_opt opts_get[] = {{"watch", 'w', false}, {0}};
static const struct ctl_opt opts_delete[] = {
    {"filename", 'f', true}, {"volumes", 0, false}, {"grace", 0, true}, {"force", 0, false}, {0}};
static const struct ctl_opt opts_logs[] = {
    {"follow", 'f', false}, {"tail", 0, true}, {"timestamps", 0, false}, {"since", 0, true}, {0}};
static const struct ctl_opt opts_exec[] = {
    {"stdin", 'i', false}, {"tty", 't', false}, {"env", 'e', true}, {0}};
static const struct ctl_opt opts_debug[] = {
    {"image", 0, true}, {"target", 0, true}, {"env", 'e', true}, {0}};
static const struct ctl_opt opts_image[] = {{"name", 0, true}, {0}};
static const struct ctl_opt opts_volume[] = {{"size", 0, true}, {"file", 'f', true}, {0}};
/* `volume backup -o FILE`: there -o names the backup file, it is not the global output format */
static const struct ctl_opt opts_volume_backup[] = {{"output", 'o', true}, {0}};
static const struct ctl_opt opts_update[] = {
    {"no-reboot", 0, false}, {"allow-downgrade", 0, false}, {0}};
static const struct ctl_opt opts_version[] = {{"client", 0, false}, {0}};
static const struct ctl_opt opts_dmesg[] = {{"follow", 'f', false}, {0}};
static const struct ctl_opt opts_reboot[] = {{"poweroff", 0, false}, {0}};
static const struct ctl_opt opts_health[] = {{"boot", 0, false}, {0}};
static const struct ctl_opt opts_machine_config[] = {
    {"file", 'f', true}, {"dry-run", 0, false}, {"replace-ca", 0, false}, {0}};
/* gen has its own -o/--output and --context: they are not the global ones there */
static const struct ctl_opt opts_gen[] = {
    {"endpoint", 0, true}, {"output-dir", 'o', true}, {"output", 'o', true}, {"force", 0, false},
    {"key-type", 0, true}, {"role", 0, true},         {"name", 0, true},     {"secrets", 0, true},
    {"days", 0, true},     {"context", 0, true},      {"expired", 0, false}, {"pem", 0, false},
    {"revoke", 0, true},   {"renew", 0, true},        {0}};
static const struct ctl_opt opts_config[] = {{"force", 0, false}, {"use", 0, false}, {0}};

static const char *const subs_image[] = {"push", "pull", "ls", "rm", NULL};
static const char *const subs_volume[] = {"create", "ls",     "resize", "rm",
                                          "backup", "restore", NULL};
static const char *const subs_update[] = {"push", "status", "commit", "rollback", NULL};
static const char *const subs_gen[] = {"config", "cert", NULL};
static const char *const subs_config[] = {"contexts", "use-context", "merge", NULL};
static const char *const subs_machine_config[] = {"apply", NULL};
static const char *const subs_completion[] = {"bash", "zsh", "fish", NULL};

#define W CTL_NAMES_WORKLOADS
const struct ctl_verb ctl_verbs[] = {
    {"apply", cmd_apply, "Apply manifests (-f FILE|DIR|-): create or update workloads and volumes",
     opts_apply, NULL, 0, CTL_FLEET_TABLE, false, false},
    {"diff", cmd_diff, "Show how manifests differ from what the capsule runs", opts_diff, NULL, 0,
     CTL_FLEET_TABLE, false, false},
    {"get", cmd_get, "List workloads, or show one (-w to watch)", opts_get, NULL, W,
     CTL_FLEET_TABLE, false, false},
    {"describe", cmd_describe, "Show a workload's spec, status, last exit and events", opts_none,
     NULL, W, CTL_FLEET_TABLE, false, false},
    {"delete", cmd_delete, "Delete workloads (by NAME or -f FILE)", opts_delete, NULL, W,
     CTL_FLEET_TABLE, false, false},
    {"logs", cmd_logs, "Print workloads' output (-f to follow, --since)", opts_logs, NULL, W,
     CTL_FLEET_LINES, false, false},
    {"exec", cmd_exec, "Run a command in a workload (-it for a terminal)", opts_exec, NULL, W,
     CTL_FLEET_LINES, false, false},
    {"debug", cmd_debug, "Start a privileged debug container (host's namespaces, / at /host)",
     opts_debug, NULL, 0, CTL_FLEET_LINES, false, false},
    {"cp", cmd_cp, "Copy files into or out of a workload (tar through exec)", opts_none, NULL, W,
     CTL_FLEET_LINES, false, false},
    {"restart", cmd_restart, "Restart a workload now", opts_none, NULL, W, CTL_FLEET_TABLE, false,
     false},
    {"events", cmd_events, "Stream the capsule's events", opts_none, NULL, 0, CTL_FLEET_LINES,
     false, false},
    {"top", cmd_top, "Show CPU, memory and processes of running workloads", opts_none, NULL, W,
     CTL_FLEET_TABLE, false, false},
    {"image", cmd_image, "Manage images (image push|pull|ls|rm)", opts_image, subs_image,
     CTL_NAMES_IMAGES, CTL_FLEET_TABLE, false, false},
    {"volume", cmd_volume, "Manage volumes (volume create|ls|resize|rm|backup|restore)", opts_volume, subs_volume,
     CTL_NAMES_VOLUMES, CTL_FLEET_TABLE, false, false},
    {"update", cmd_update, "A/B OS updates (update push|status|commit|rollback)", opts_update,
     subs_update, 0, CTL_FLEET_TABLE, false, false},
    {"version", cmd_version, "Print the client and server versions", opts_version, NULL, 0,
     CTL_FLEET_TABLE, false, false},
    {"health", cmd_health, "Check the capsule's health", opts_health, NULL, 0, CTL_FLEET_TABLE, false,
     false},
    {"metrics", cmd_metrics, "Print the capsule's metrics (Prometheus text format)", opts_none,
     NULL, 0, CTL_FLEET_LINES, false, false},
    {"dmesg", cmd_dmesg, "Print the capsule's kernel log (-f to follow)", opts_dmesg, NULL, 0,
     CTL_FLEET_LINES, false, false},
    {"reboot", cmd_reboot, "Reboot (or --poweroff) the capsule cleanly", opts_reboot, NULL, 0,
     CTL_FLEET_TABLE, false, false},
    {"machine-config", cmd_machine_config,
     "Replace the capsule's machine config (machine-config apply -f)", opts_machine_config,
     subs_machine_config, 0, CTL_FLEET_TABLE, false, false},
    {"gen", cmd_gen, "Generate configs and certificates (gen config, gen cert)", opts_gen, subs_gen,
     0, CTL_FLEET_LOCAL, false, false},
    {"config", cmd_config, "Manage client contexts (config contexts, config use-context)",
     opts_config, subs_config, 0, CTL_FLEET_LOCAL, false, false},
    {"completion", cmd_completion, "Print a shell completion script (bash, zsh or fish)", opts_none,
     subs_completion, 0, CTL_FLEET_LOCAL, false, false},
    {"__complete", cmd_complete_words, "Completion candidates for WORDS (used by the scripts)",
     opts_none, NULL, 0, CTL_FLEET_LOCAL, true, true},
};
#undef W
const size_t ctl_n_verbs = sizeof(ctl_verbs) / sizeof(ctl_verbs[0]);

const struct ctl_verb *ctl_verb_find(const char *name)
{
        for (size_t i = 0; i < ctl_n_verbs; i++)
                if (strcmp(ctl_verbs[i].name, name) == 0)
                        return &ctl_verbs[i];
        return NULL;
}

static void usage(FILE *f)
{
        fprintf(f, "capsulectl: drive a Capsule over its gRPC API.\n\n"
                   "usage: capsulectl [global options] VERB [args]\n\n"
                   "Verbs:\n");
        for (size_t i = 0; i < ctl_n_verbs; i++)
                if (!ctl_verbs[i].hidden)
                        fprintf(f, "  %-15s %s\n", ctl_verbs[i].name, ctl_verbs[i].summary);
        fprintf(f,
                "\nGlobal options (accepted anywhere on the line, up to \"--\"):\n"
                "  --config FILE        client config (default $CAPSULECONFIG or "
                "~/.config/capsule/config)\n"
                "  --context NAME       context to use (default: the config's current context)\n"
                "  --capsule HOST:PORT[,HOST:PORT...]\n"
                "                       endpoint override (also $CAPSULE_HOST); several run the\n"
                "                       verb on each capsule in parallel\n"
                "  -o, --output FMT     table (default), yaml or json\n"
                "  --timeout SECONDS    per-call deadline (default 30)\n"
                "  -h, --help           this help; `capsulectl VERB --help` for a verb\n\n"
                "Examples:\n"
                "  capsulectl get web -o yaml\n"
                "  capsulectl --capsule 10.0.0.2:50000,10.0.0.3:50000 get\n"
                "  source <(capsulectl completion bash)\n");
}

/* True when argv (after the verb) asks for help before any "--". */
static bool asks_help(int argc, char **argv)
{
        for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
                if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
                        return true;
        return false;
}

static int run(struct ctl *ctl, int argc, char **argv)
{
        int i = 1;
        while (i < argc) {
                if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                        usage(stdout);
                        return CTL_EXIT_OK;
                }
                int r = ctl_global_option(ctl, argc, argv, &i, NULL);
                if (r < 0)
                        return CTL_EXIT_USAGE;
                if (r == 0)
                        break;
        }
        if (i < argc && strcmp(argv[i], "--") == 0)
                i++;
        if (i >= argc) {
                usage(stderr);
                return CTL_EXIT_USAGE;
        }
        if (argv[i][0] == '-') {
                fprintf(stderr, "capsulectl: unknown option \"%s\"\n", argv[i]);
                usage(stderr);
                return CTL_EXIT_USAGE;
        }
        const struct ctl_verb *verb = ctl_verb_find(argv[i]);
        if (!verb) {
                fprintf(stderr,
                        "capsulectl: unknown verb \"%s\"; run `capsulectl --help` for the list\n",
                        argv[i]);
                return CTL_EXIT_USAGE;
        }
        int vargc = argc - i;
        char **vargv = argv + i;
        struct ctl_verb backup_verb;
        if (strcmp(verb->name, "volume") == 0 && vargc > 1 && strcmp(vargv[1], "backup") == 0) {
                backup_verb = *verb;
                backup_verb.opts = opts_volume_backup;
                verb = &backup_verb;
        }
        if (!verb->raw && ctl_lift_globals(ctl, verb, &vargc, vargv) != 0)
                return CTL_EXIT_USAGE;
        if (!ctl->endpoint) {
                const char *h = getenv("CAPSULE_HOST");
                if (h && *h)
                        ctl->endpoint = h;
        }
        if (!ctl->config_path) {
                ctl->config_path_owned = client_config_default_path();
                ctl->config_path = ctl->config_path_owned;
        }
        optind = 0; /* full getopt re-initialisation for the verb's own options */
        if (verb->fleet == CTL_FLEET_LOCAL || asks_help(vargc, vargv))
                return verb->run(ctl, vargc, vargv);
        char **nodes = NULL;
        size_t n = ctl_nodes(ctl, &nodes);
        int rc;
        if (n > 1) {
                ctl->n_nodes = n;
                rc = ctl_fleet_run(ctl, verb, nodes, n, vargc, vargv);
        } else {
                if (n == 1)
                        ctl->node = nodes[0];
                rc = verb->run(ctl, vargc, vargv);
                ctl->node = NULL;
        }
        ctl_nodes_free(nodes);
        return rc;
}

int main(int argc, char **argv)
{
        struct ctl ctl = {.timeout_ms = 30000, .out = stdout, .err = stderr};
        int rc = run(&ctl, argc, argv);
        ctl_cleanup(&ctl);
        return rc;
}
