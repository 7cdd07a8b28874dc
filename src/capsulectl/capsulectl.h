/* capsulectl: shared state of one invocation and the helpers every verb uses.
 * Each verb lives in its own file (version.c, health.c, gen.c, ...) and is listed in main.c. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "common/config.h"
#include "common/error.h"

struct rpc_client;

enum ctl_output { CTL_OUT_TABLE = 0, CTL_OUT_YAML, CTL_OUT_JSON };

/* Exit codes: 0 ok, 1 error, 2 usage. */
enum { CTL_EXIT_OK = 0, CTL_EXIT_ERROR = 1, CTL_EXIT_USAGE = 2 };

struct ctl {
        const char *config_path;  /* --config, $CAPSULECONFIG or the default */
        const char *context_name; /* --context */
        const char *endpoint;     /* --capsule / $CAPSULE_HOST override */
        enum ctl_output output;   /* -o */
        int timeout_ms;           /* --timeout, per unary call */
        struct client_config cfg; /* loaded lazily by ctl_load_config */
        bool cfg_loaded;
        char *config_path_owned;
        struct rpc_client *client; /* made lazily by ctl_client */
};

struct ctl_verb {
        const char *name;
        int (*run)(struct ctl *ctl, int argc, char **argv); /* argv[0] is the verb */
        const char *summary;
};

/* Loads the client config once; prints a helpful error and returns <0 when it cannot. */
int ctl_load_config(struct ctl *ctl);
/* The connected API client (mTLS from the selected context); prints the error and returns NULL. */
struct rpc_client *ctl_client(struct ctl *ctl);
/* Prints "capsulectl: <msg>" plus a hint of what to do next for well-known failures. */
void ctl_print_error(struct ctl *ctl, const char *what, const struct cap_error *err);
/* Prints obj as JSON or YAML according to -o (for table output the verb prints itself). */
void ctl_print_structured(struct ctl *ctl, struct json_object *obj);
/* True when argv holds -h/--help; then prints usage to stdout. */
bool ctl_wants_help(int argc, char **argv, const char *usage);
/* Formats a duration in seconds like kubectl: 45s, 3m12s, 5h2m, 3d4h. */
void ctl_format_age(long long seconds, char *buf, size_t len);

/* "1.5Gi", "24Ki", "512" for usage figures (rounded; volume.c). */
void ctl_human_bytes(uint64_t b, char *buf, size_t len);

/* Frees what ctl holds (client, config). */
void ctl_cleanup(struct ctl *ctl);

/* Verbs. */
int cmd_version(struct ctl *ctl, int argc, char **argv);
int cmd_health(struct ctl *ctl, int argc, char **argv);
int cmd_gen(struct ctl *ctl, int argc, char **argv);
int cmd_config(struct ctl *ctl, int argc, char **argv);
int cmd_volume(struct ctl *ctl, int argc, char **argv); /* volume.c */
int cmd_image(struct ctl *ctl, int argc, char **argv);  /* image.c */

/* Workload rendering (workload_view.c). */
#include "capsule/v1/workloads.pb-c.h"
const char *ctl_phase_name(Capsule__V1__Phase p);
void ctl_format_time(int64_t unix_nano, char *buf, size_t len);
void ctl_workload_table_header(void);
void ctl_workload_table_row(const Capsule__V1__Workload *w);
struct json_object *ctl_workload_json(const Capsule__V1__Workload *w);

int cmd_apply(struct ctl *ctl, int argc, char **argv);
int cmd_diff(struct ctl *ctl, int argc, char **argv);
int cmd_get(struct ctl *ctl, int argc, char **argv);
int cmd_describe(struct ctl *ctl, int argc, char **argv);
int cmd_delete(struct ctl *ctl, int argc, char **argv);
int cmd_logs(struct ctl *ctl, int argc, char **argv);
int cmd_restart(struct ctl *ctl, int argc, char **argv);
int cmd_exec(struct ctl *ctl, int argc, char **argv);
int cmd_events(struct ctl *ctl, int argc, char **argv);
int cmd_reboot(struct ctl *ctl, int argc, char **argv);
int cmd_dmesg(struct ctl *ctl, int argc, char **argv);
int cmd_machine_config(struct ctl *ctl, int argc, char **argv);
int cmd_top(struct ctl *ctl, int argc, char **argv);
