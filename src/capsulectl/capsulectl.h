/* capsulectl: shared state of one invocation and the helpers every verb uses.
 * Each verb lives in its own file (version.c, health.c, gen.c, ...) and is listed in main.c. */
#pragma once

#include <pthread.h>
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
        const char *endpoint;     /* --capsule / $CAPSULE_HOST override (may list several) */
        enum ctl_output output;   /* -o */
        int timeout_ms;           /* --timeout, per unary call */
        struct client_config cfg; /* loaded lazily by ctl_load_config */
        bool cfg_loaded;
        char *config_path_owned;
        struct rpc_client *client; /* made lazily by ctl_client */
        FILE *out;                 /* where verbs print results (stdout, or a fleet buffer) */
        FILE *err;                 /* where verbs print errors (stderr, or a fleet buffer) */
        const char *node;          /* the one capsule this ctl talks to in a fleet run */
        size_t n_nodes;            /* how many capsules the invocation targets (0 or 1: one) */
        pthread_mutex_t *parse_lock; /* fleet runs: held while the verb parses argv (getopt) */
};

/* An option of a verb (or of one of its sub-verbs), for argv lifting and completion. */
struct ctl_opt {
        const char *name; /* long name without "--" */
        char short_name;  /* 0 when none */
        bool has_arg;
};

/* How a verb runs against several capsules (--capsule a,b or a context with several endpoints). */
enum ctl_fleet {
        CTL_FLEET_LOCAL = 0, /* does not talk to a capsule: runs once */
        CTL_FLEET_TABLE,     /* results gathered, one table with a NODE column / a list */
        CTL_FLEET_LINES,     /* streams: every line prefixed "[node] " as it comes */
};

/* What a verb's NAME arguments are, for completion. */
enum ctl_names { CTL_NAMES_NONE = 0, CTL_NAMES_WORKLOADS, CTL_NAMES_VOLUMES, CTL_NAMES_IMAGES };

struct ctl_verb {
        const char *name;
        int (*run)(struct ctl *ctl, int argc, char **argv); /* argv[0] is the verb */
        const char *summary;
        const struct ctl_opt *opts; /* the verb's own options (all sub-verbs), {0}-terminated */
        const char *const *subs;    /* sub-verbs, NULL-terminated; NULL when none */
        enum ctl_names names;
        enum ctl_fleet fleet;
        bool hidden; /* not listed nor completed (__complete) */
        bool raw;    /* argv is handed over untouched (no global options lifted) */
};

/* The verb table (main.c). */
extern const struct ctl_verb ctl_verbs[];
extern const size_t ctl_n_verbs;
const struct ctl_verb *ctl_verb_find(const char *name);

/* Parses the global option argv[*i] (with its value argv[*i + 1] when separate) into ctl.
 * Returns 1 and advances *i past it when it was one, 0 when argv[*i] is not a global option
 * (or is one of `skip`, the verb's own options of the same name), -EINVAL after printing the
 * problem when its value is bad or missing. */
int ctl_global_option(struct ctl *ctl, int argc, char **argv, int *i, const struct ctl_opt *skip);
/* Removes the global options after the verb (argv[0]) from argv, applying them to ctl, up to
 * "--"; checks that every other option is one the verb knows. Returns 0, or CTL_EXIT_USAGE after
 * printing the problem. */
int ctl_lift_globals(struct ctl *ctl, const struct ctl_verb *verb, int *argc, char **argv);
/* The capsules the invocation targets: the --capsule / $CAPSULE_HOST list, else the context's
 * `endpoints` list or its `endpoint` (comma-separated). Returns the count (0 when unknown: the verb reports why); *nodes
 * is a malloc'd NULL-terminated array of malloc'd strings. */
size_t ctl_nodes(struct ctl *ctl, char ***nodes);
void ctl_nodes_free(char **nodes);
/* Runs verb once per node, in parallel (one thread and channel each), and merges the output as
 * verb->fleet says. Returns the exit code (non-zero when any capsule failed). */
int ctl_fleet_run(struct ctl *ctl, const struct ctl_verb *verb, char **nodes, size_t n, int argc,
                  char **argv);
/* Called by ctl_client: the verb is done with argv, other fleet threads may parse theirs. */
void ctl_parse_done(struct ctl *ctl);

/* A stream that writes every line to dest prefixed with prefix, whole lines at a time under
 * lock (which may be NULL), flushing dest each line. Closing it writes an unfinished last line.
 * NULL (errno set) on failure. */
FILE *ctl_prefix_stream(FILE *dest, const char *prefix, pthread_mutex_t *lock);
/* Parses a duration: a number and a unit (ms, s, m, h, d), or several (1m30s); at most 100
 * years. Returns 0 and *ns, or -EINVAL. */
int ctl_parse_duration(const char *s, int64_t *ns);
/* Parses --since: a duration (30s, 10m, 2h, 1d, combinations like 1h30m) before now, or an RFC
 * 3339 time (2026-12-04T10:00:00Z, fractional seconds and +01:00 offsets allowed). Returns the
 * time in Unix nanoseconds, or -EINVAL. */
int ctl_parse_since(const char *s, int64_t now_unix_nano, int64_t *out);

/* Loads the client config once; prints a helpful error and returns <0 when it cannot. */
int ctl_load_config(struct ctl *ctl);
/* The connected API client (mTLS from the selected context); prints the error and returns NULL. */
struct rpc_client *ctl_client(struct ctl *ctl);
/* After a call on c: warns on stderr when the server's certificate expires within
 * PKI_EXPIRY_WARN_DAYS days (the client's own is checked by ctl_client). */
void ctl_warn_server_cert(struct ctl *ctl, struct rpc_client *c);
/* `volume backup` and `volume restore` (volume_backup.c). */
int cmd_volume_backup(struct ctl *ctl, int argc, char **argv);
int cmd_volume_restore(struct ctl *ctl, int argc, char **argv);
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
int cmd_metrics(struct ctl *ctl, int argc, char **argv); /* metrics.c */
int cmd_gen(struct ctl *ctl, int argc, char **argv);
int cmd_config(struct ctl *ctl, int argc, char **argv);
int cmd_volume(struct ctl *ctl, int argc, char **argv); /* volume.c */
int cmd_image(struct ctl *ctl, int argc, char **argv);  /* image.c */
int cmd_update(struct ctl *ctl, int argc, char **argv); /* update.c */

/* Workload rendering (workload_view.c). */
#include "capsule/v1/workloads.pb-c.h"
const char *ctl_phase_name(Capsule__V1__Phase p);
void ctl_format_time(int64_t unix_nano, char *buf, size_t len);
void ctl_workload_table_header(FILE *out);
void ctl_workload_table_row(FILE *out, const Capsule__V1__Workload *w);
struct json_object *ctl_workload_json(const Capsule__V1__Workload *w);

/* `get -w` (watch.c): prints the table, then the rows that change, until SIGINT/SIGTERM (exit 0).
 * name NULL = every workload. Makes ctl's client itself (after blocking the signals). */
int ctl_watch_workloads(struct ctl *ctl, const char *name);

int cmd_apply(struct ctl *ctl, int argc, char **argv);
int cmd_diff(struct ctl *ctl, int argc, char **argv);
int cmd_get(struct ctl *ctl, int argc, char **argv);
int cmd_describe(struct ctl *ctl, int argc, char **argv);
int cmd_delete(struct ctl *ctl, int argc, char **argv);
int cmd_logs(struct ctl *ctl, int argc, char **argv);
int cmd_restart(struct ctl *ctl, int argc, char **argv);
int cmd_exec(struct ctl *ctl, int argc, char **argv);
int cmd_cp(struct ctl *ctl, int argc, char **argv);
int cmd_debug(struct ctl *ctl, int argc, char **argv); /* debug.c */
/* The streaming half of exec and debug (exec.c): sends first (an Exec start or a Debug
 * message) on method, then stdin (if in; raw terminal and window sizes if tty) and prints the
 * output; returns the remote exit code or a CTL_EXIT_ code. */
int ctl_exec_session(struct ctl *ctl, const char *verb, const char *method,
                     const Capsule__V1__ExecRequest *first, bool in, bool tty);
/* This terminal's size (stdin's), left unchanged when it has none. */
void ctl_terminal_size(uint32_t *rows, uint32_t *cols);
int cmd_events(struct ctl *ctl, int argc, char **argv);
int cmd_reboot(struct ctl *ctl, int argc, char **argv);
int cmd_dmesg(struct ctl *ctl, int argc, char **argv);
int cmd_machine_config(struct ctl *ctl, int argc, char **argv);
int cmd_top(struct ctl *ctl, int argc, char **argv);
int cmd_completion(struct ctl *ctl, int argc, char **argv);    /* completion.c */
int cmd_complete_words(struct ctl *ctl, int argc, char **argv); /* __complete, completion.c */
