/* `capsulectl apply`, `diff` and `delete`: manifests in, desired state out.
 * Manifests are parsed and validated here first (every problem reported, nothing sent on error);
 * Volume documents are applied before the workloads that mount them. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "capsule/v1/volumes.pb-c.h"
#include "capsule/v1/workloads.pb-c.h"
#include "capsulectl.h"
#include "common/cleanup.h"
#include "common/manifest.h"
#include "rpc/rpc.h"

/* Parses every -f argument (files, directories of YAML files, or "-") into one checked set. */
static int load_manifests(struct ctl *ctl, char **paths, size_t n, struct manifest_set *set)
{
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        int rc = 0;
        for (size_t i = 0; i < n; i++) {
                struct stat st;
                if (strcmp(paths[i], "-") != 0 && stat(paths[i], &st) == 0 && S_ISDIR(st.st_mode)) {
                        struct dirent **ents = NULL;
                        int ne = scandir(paths[i], &ents, NULL, alphasort);
                        if (ne < 0) {
                                manifest_errors_add(&errs, "%s: %s", paths[i], strerror(errno));
                                rc = -1;
                                continue;
                        }
                        for (int k = 0; k < ne; k++) {
                                const char *nm = ents[k]->d_name;
                                size_t l = strlen(nm);
                                bool yaml = (l > 5 && strcmp(nm + l - 5, ".yaml") == 0) ||
                                            (l > 4 && strcmp(nm + l - 4, ".yml") == 0);
                                if (yaml && nm[0] != '.') {
                                        _cleanup_free_ char *p = NULL;
                                        struct manifest_set one = {0};
                                        if (asprintf(&p, "%s/%s", paths[i], nm) < 0 ||
                                            manifest_parse_file(p, &one, &errs) < 0)
                                                rc = -1;
                                        else
                                                manifest_set_append(set, &one);
                                        manifest_set_free(&one);
                                }
                                free(ents[k]);
                        }
                        free(ents);
                        continue;
                }
                struct manifest_set one = {0};
                if (manifest_parse_file(paths[i], &one, &errs) < 0)
                        rc = -1;
                else
                        manifest_set_append(set, &one);
                manifest_set_free(&one);
        }
        if (rc == 0 && n > 1 && manifest_set_check(set, &errs) < 0)
                rc = -1;
        if (rc < 0) {
                fprintf(ctl->err, "capsulectl: the manifests have %zu problem(s); nothing was applied:\n",
                        manifest_errors_count(&errs));
                manifest_errors_print(&errs, ctl->err);
        }
        manifest_errors_free(&errs);
        return rc;
}

struct volume_names {
        char **names;
        size_t n;
};

static bool volume_exists(const char *name, void *ud)
{
        struct volume_names *v = ud;
        for (size_t i = 0; i < v->n; i++)
                if (strcmp(v->names[i], name) == 0)
                        return true;
        return false;
}

/* Fetches the capsule's volume names (for the mount check). */
static int fetch_volumes(struct ctl *ctl, struct rpc_client *c, struct volume_names *out)
{
        Capsule__V1__VolumeListRequest req = CAPSULE__V1__VOLUME_LIST_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.Volumes/List", &req.base, &capsule__v1__volume_list_response__descriptor,
                      &resp, ctl->timeout_ms, &err) < 0) {
                ctl_print_error(ctl, "list volumes", &err);
                return -1;
        }
        Capsule__V1__VolumeListResponse *r = (Capsule__V1__VolumeListResponse *)resp;
        out->names = calloc(r->n_volumes + 1, sizeof(char *));
        for (size_t i = 0; out->names && i < r->n_volumes; i++)
                out->names[out->n++] = strdup(r->volumes[i]->name);
        protobuf_c_message_free_unpacked(resp, NULL);
        return out->names ? 0 : -1;
}

static void volume_names_free(struct volume_names *v)
{
        for (size_t i = 0; i < v->n; i++)
                free(v->names[i]);
        free(v->names);
}

static const char *kind_word(const struct manifest_doc *d)
{
        return d->kind == MANIFEST_KIND_VOLUME ? "volume" : d->kind == MANIFEST_KIND_MICROVM ? "microvm" : "container";
}

static int apply_volume(struct ctl *ctl, struct rpc_client *c, const struct manifest_doc *d)
{
        Capsule__V1__VolumeCreateRequest req = CAPSULE__V1__VOLUME_CREATE_REQUEST__INIT;
        req.name = d->volume_name;
        req.size_bytes = d->volume_size;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.Volumes/Create", &req.base, &capsule__v1__volume_create_response__descriptor,
                      &resp, ctl->timeout_ms, &err) < 0) {
                char what[128];
                snprintf(what, sizeof(what), "volume/%s", d->volume_name);
                ctl_print_error(ctl, what, &err);
                return -1;
        }
        Capsule__V1__VolumeCreateResponse *r = (Capsule__V1__VolumeCreateResponse *)resp;
        fprintf(ctl->out, "volume/%s %s\n", d->volume_name, r->created ? "created" : "unchanged");
        protobuf_c_message_free_unpacked(resp, NULL);
        return 0;
}

static int apply_workload(struct ctl *ctl, struct rpc_client *c, const struct manifest_doc *d, bool dry_run)
{
        Capsule__V1__ApplyRequest req = CAPSULE__V1__APPLY_REQUEST__INIT;
        req.spec = d->workload;
        req.dry_run = dry_run;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.Workloads/Apply", &req.base, &capsule__v1__apply_response__descriptor, &resp,
                      ctl->timeout_ms, &err) < 0) {
                char what[128];
                snprintf(what, sizeof(what), "%s/%s", kind_word(d), d->workload->name);
                ctl_print_error(ctl, what, &err);
                return -1;
        }
        Capsule__V1__ApplyResponse *r = (Capsule__V1__ApplyResponse *)resp;
        const char *word = r->result == CAPSULE__V1__APPLY_RESULT__CREATED      ? "created"
                           : r->result == CAPSULE__V1__APPLY_RESULT__CONFIGURED ? "configured"
                                                                                 : "unchanged";
        fprintf(ctl->out, "%s/%s %s%s\n", kind_word(d), d->workload->name, word, dry_run ? " (dry run)" : "");
        protobuf_c_message_free_unpacked(resp, NULL);
        return 0;
}

/* Collects -f arguments; returns the count or -1 on a usage error. */
static int parse_files(struct ctl *ctl, int argc, char **argv, const char *usage, char ***files, bool *dry_run,
                       bool *prune)
{
        static const struct option opts[] = {
                {"filename", required_argument, NULL, 'f'}, {"dry-run", no_argument, NULL, 'd'},
                {"prune", no_argument, NULL, 'p'}, {NULL, 0, NULL, 0},
        };
        int c, n = 0;
        *files = calloc((size_t)argc + 1, sizeof(char *));
        while ((c = getopt_long(argc, argv, "f:", opts, NULL)) != -1) {
                if (c == 'f')
                        (*files)[n++] = optarg;
                else if (c == 'd' && dry_run)
                        *dry_run = true;
                else if (c == 'p' && prune)
                        *prune = true;
                else {
                        fputs(usage, ctl->err);
                        return -1;
                }
        }
        if (optind < argc) {
                fprintf(ctl->err, "capsulectl %s: unexpected argument \"%s\"\n%s", argv[0], argv[optind], usage);
                return -1;
        }
        if (n == 0) {
                fprintf(ctl->err, "capsulectl %s: -f FILE is required\n%s", argv[0], usage);
                return -1;
        }
        return n;
}

static int delete_workloads(struct ctl *ctl, struct rpc_client *c, const char *const *names, size_t n,
                            int64_t grace_ms, bool force);

/* --prune: deletes the workloads the capsule has that set does not declare. */
static int prune_undeclared(struct ctl *ctl, struct rpc_client *c, const struct manifest_set *set, bool dry_run)
{
        Capsule__V1__ListRequest req = CAPSULE__V1__LIST_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.Workloads/List", &req.base, &capsule__v1__list_response__descriptor, &resp,
                      ctl->timeout_ms, &err) < 0) {
                ctl_print_error(ctl, "prune: list workloads", &err);
                return -1;
        }
        const Capsule__V1__ListResponse *l = (const Capsule__V1__ListResponse *)resp;
        int rc = 0;
        _cleanup_free_ const char **doomed = calloc(l->n_workloads + 1, sizeof(char *));
        size_t n_doomed = 0;
        for (size_t i = 0; doomed && i < l->n_workloads; i++) {
                const char *name = l->workloads[i]->spec ? l->workloads[i]->spec->name : NULL;
                if (!name)
                        continue;
                bool declared = false;
                for (size_t j = 0; j < set->n && !declared; j++)
                        declared = set->docs[j].kind != MANIFEST_KIND_VOLUME &&
                                   strcmp(set->docs[j].workload->name, name) == 0;
                if (declared)
                        continue;
                if (dry_run)
                        fprintf(ctl->out, "workload/%s deleted (dry run: not declared)\n", name);
                else
                        doomed[n_doomed++] = name;
        }
        if (!doomed || delete_workloads(ctl, c, doomed, n_doomed, 0, false) < 0)
                rc = -1;
        protobuf_c_message_free_unpacked(resp, NULL);
        return rc;
}

static const char apply_usage[] =
    "usage: capsulectl apply -f FILE|DIR|- [-f ...] [--prune] [--dry-run]\n"
    "\n"
    "Stores the manifests' objects as the desired state; the capsule makes it so. Prints\n"
    "created, configured or unchanged per object. Volumes are created before the workloads\n"
    "that mount them. Every manifest is validated first: on any error nothing is applied.\n"
    "With several capsules (--capsule a,b) every capsule gets the manifests; each line says which.\n"
    "\n"
    "Options:\n"
    "  -f, --filename FILE   a manifest file, a directory of *.yaml/*.yml, or - for standard\n"
    "                        input; may be repeated (required, no default)\n"
    "  --prune               also delete the workloads the capsule has and the manifests do not\n"
    "                        declare, so that a directory is the whole desired state; volumes\n"
    "                        are never pruned (their data stays: `volume rm`). Use with\n"
    "                        --dry-run first to see what would go (default: off)\n"
    "  --dry-run             validate and show what would change, store nothing (default: off)\n"
    "\n"
    "Examples:\n"
    "  capsulectl apply -f examples/web.yaml\n"
    "  capsulectl apply -f site/ --dry-run\n"
    "  capsulectl apply -f site/ --prune --dry-run\n";

int cmd_apply(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, apply_usage))
                return CTL_EXIT_OK;
        _cleanup_free_ char **files = NULL;
        bool dry_run = false, prune = false;
        int nf = parse_files(ctl, argc, argv, apply_usage, &files, &dry_run, &prune);
        if (nf < 0)
                return CTL_EXIT_USAGE;
        struct manifest_set set = {0};
        if (load_manifests(ctl, files, (size_t)nf, &set) < 0)
                return CTL_EXIT_ERROR;
        int rc = CTL_EXIT_ERROR;
        struct volume_names vols = {0};
        struct rpc_client *c = ctl_client(ctl);
        if (!c || fetch_volumes(ctl, c, &vols) < 0)
                goto out;
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        if (manifest_check_mounts(&set, volume_exists, &vols, &errs) < 0) {
                fprintf(ctl->err, "capsulectl: nothing was applied:\n");
                manifest_errors_print(&errs, ctl->err);
                manifest_errors_free(&errs);
                goto out;
        }
        manifest_errors_free(&errs);
        rc = CTL_EXIT_OK;
        for (size_t i = 0; i < set.n; i++)
                if (set.docs[i].kind == MANIFEST_KIND_VOLUME && !dry_run && apply_volume(ctl, c, &set.docs[i]) < 0)
                        rc = CTL_EXIT_ERROR;
        for (size_t i = 0; i < set.n; i++)
                if (set.docs[i].kind != MANIFEST_KIND_VOLUME && apply_workload(ctl, c, &set.docs[i], dry_run) < 0)
                        rc = CTL_EXIT_ERROR;
        /* pruned only after every declared object applied: a failed apply keeps what runs */
        if (prune && rc == CTL_EXIT_OK && prune_undeclared(ctl, c, &set, dry_run) < 0)
                rc = CTL_EXIT_ERROR;
out:
        volume_names_free(&vols);
        manifest_set_free(&set);
        return rc;
}

/* ---- diff ------------------------------------------------------------------------------------ */

/* Splits text into lines (pointers into a copy). */
static char **split_lines(char *text, size_t *n)
{
        size_t cap = 16;
        char **v = malloc(cap * sizeof(char *));
        *n = 0;
        for (char *save = NULL, *l = strtok_r(text, "\n", &save); v && l; l = strtok_r(NULL, "\n", &save)) {
                if (*n == cap) {
                        char **nv = realloc(v, (cap *= 2) * sizeof(char *));
                        if (!nv)
                                break;
                        v = nv;
                }
                v[(*n)++] = l;
        }
        return v;
}

/* Prints a line diff (longest common subsequence); returns the number of changed lines. */
static int print_diff(struct ctl *ctl, const char *title, const char *a, const char *b)
{
        _cleanup_free_ char *ca = strdup(a), *cb = strdup(b);
        size_t na, nb;
        _cleanup_free_ char **la = split_lines(ca, &na);
        _cleanup_free_ char **lb = split_lines(cb, &nb);
        _cleanup_free_ unsigned *t = calloc((na + 1) * (nb + 1), sizeof(unsigned));
        if (!la || !lb || !t)
                return -1;
        for (size_t i = na; i-- > 0;)
                for (size_t j = nb; j-- > 0;)
                        t[i * (nb + 1) + j] = strcmp(la[i], lb[j]) == 0
                                                      ? t[(i + 1) * (nb + 1) + j + 1] + 1
                                                      : (t[(i + 1) * (nb + 1) + j] > t[i * (nb + 1) + j + 1]
                                                                 ? t[(i + 1) * (nb + 1) + j]
                                                                 : t[i * (nb + 1) + j + 1]);
        int changed = 0;
        size_t i = 0, j = 0;
        fprintf(ctl->out, "--- %s (live)\n+++ %s (manifest)\n", title, title);
        while (i < na || j < nb) {
                if (i < na && j < nb && strcmp(la[i], lb[j]) == 0) {
                        fprintf(ctl->out, "  %s\n", la[i]);
                        i++, j++;
                } else if (j < nb && (i == na || t[i * (nb + 1) + j + 1] >= t[(i + 1) * (nb + 1) + j])) {
                        fprintf(ctl->out, "+ %s\n", lb[j++]);
                        changed++;
                } else {
                        fprintf(ctl->out, "- %s\n", la[i++]);
                        changed++;
                }
        }
        return changed;
}

/* The capsule shows "<redacted>" for secret env values (and for all of them to a reader): show
 * the manifest's values the same way, so only real differences remain. Re-renders *want; returns
 * how many values were redacted, or -ENOMEM. */
static int diff_redact(const Capsule__V1__WorkloadSpec *local, const Capsule__V1__WorkloadSpec *have,
                       char **want)
{
        Capsule__V1__WorkloadSpec *w = manifest_workload_copy(local);
        if (!w)
                return -ENOMEM;
        int n = 0;
        for (size_t i = 0; i < w->n_env; i++) {
                bool hidden = manifest_env_is_secret(w, w->env[i]->key);
                for (size_t j = 0; !hidden && j < have->n_env; j++)
                        hidden = strcmp(have->env[j]->key, w->env[i]->key) == 0 &&
                                 strcmp(have->env[j]->value, MANIFEST_REDACTED) == 0;
                if (!hidden)
                        continue;
                char *v = strdup(MANIFEST_REDACTED);
                if (!v) {
                        n = -ENOMEM;
                        break;
                }
                free(w->env[i]->value);
                w->env[i]->value = v;
                n++;
        }
        if (n > 0) {
                free(*want);
                *want = manifest_workload_to_yaml(w);
        }
        capsule__v1__workload_spec__free_unpacked(w, NULL);
        return n;
}

/* The texts match but some values were hidden: a dry-run apply tells whether the stored values
 * differ (without showing them). Returns 1 if they do, 0 if not or it cannot tell (said). */
static int diff_secrets(struct ctl *ctl, struct rpc_client *c, const char *title,
                        Capsule__V1__WorkloadSpec *spec)
{
        Capsule__V1__ApplyRequest req = CAPSULE__V1__APPLY_REQUEST__INIT;
        req.spec = spec;
        req.dry_run = true;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.Workloads/Apply", &req.base,
                      &capsule__v1__apply_response__descriptor, &resp, ctl->timeout_ms, &err) < 0) {
                fprintf(stderr, "%s: redacted env values not compared: %s\n", title, err.msg);
                return 0;
        }
        bool differ = ((Capsule__V1__ApplyResponse *)resp)->result !=
                      CAPSULE__V1__APPLY_RESULT__UNCHANGED;
        protobuf_c_message_free_unpacked(resp, NULL);
        if (differ)
                fprintf(ctl->out, "%s: a redacted env value differs (values not shown)\n", title);
        return differ;
}

static const char diff_usage[] =
    "usage: capsulectl diff -f FILE|DIR|- [-f ...]\n"
    "\n"
    "Shows how the manifests' workloads differ from what the capsule has (as canonical YAML).\n"
    "Exit code 0: no difference; 1: differences (or an error).\n"
    "\n"
    "Options:\n"
    "  -f, --filename FILE   a manifest file, a directory of *.yaml/*.yml, or - for standard\n"
    "                        input; may be repeated (required, no default)\n"
    "\n"
    "Examples:\n"
    "  capsulectl diff -f examples/web.yaml\n";

int cmd_diff(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, diff_usage))
                return CTL_EXIT_OK;
        _cleanup_free_ char **files = NULL;
        int nf = parse_files(ctl, argc, argv, diff_usage, &files, NULL, NULL);
        if (nf < 0)
                return CTL_EXIT_USAGE;
        struct manifest_set set = {0};
        if (load_manifests(ctl, files, (size_t)nf, &set) < 0)
                return CTL_EXIT_ERROR;
        struct rpc_client *c = ctl_client(ctl);
        int rc = CTL_EXIT_OK;
        for (size_t i = 0; c && i < set.n; i++) {
                const struct manifest_doc *d = &set.docs[i];
                if (d->kind == MANIFEST_KIND_VOLUME)
                        continue;
                Capsule__V1__GetRequest req = CAPSULE__V1__GET_REQUEST__INIT;
                req.name = d->workload->name;
                ProtobufCMessage *resp = NULL;
                struct cap_error err = {0};
                _cleanup_free_ char *want = manifest_workload_to_yaml(d->workload);
                char title[128];
                snprintf(title, sizeof(title), "%s/%s", kind_word(d), d->workload->name);
                if (rpc_unary(c, "/capsule.v1.Workloads/Get", &req.base, &capsule__v1__get_response__descriptor, &resp,
                              ctl->timeout_ms, &err) < 0) {
                        if (err.status != CAP_NOT_FOUND) {
                                ctl_print_error(ctl, title, &err);
                                return CTL_EXIT_ERROR;
                        }
                        print_diff(ctl, title, "", want ? want : "");
                        rc = CTL_EXIT_ERROR;
                        continue;
                }
                Capsule__V1__GetResponse *g = (Capsule__V1__GetResponse *)resp;
                _cleanup_free_ char *have = manifest_workload_to_yaml(g->workload->spec);
                int redacted = diff_redact(d->workload, g->workload->spec, &want);
                if (have && want && strcmp(have, want) != 0 && print_diff(ctl, title, have, want) > 0)
                        rc = CTL_EXIT_ERROR;
                else if (have && want && redacted > 0 && diff_secrets(ctl, c, title, d->workload) != 0)
                        rc = CTL_EXIT_ERROR;
                protobuf_c_message_free_unpacked(resp, NULL);
        }
        manifest_set_free(&set);
        return c ? rc : CTL_EXIT_ERROR;
}

/* ---- delete ---------------------------------------------------------------------------------- */

static const char delete_usage[] =
    "usage: capsulectl delete NAME... [--grace DURATION | --force]\n"
    "       capsulectl delete -f FILE|DIR|- [--volumes] [--grace DURATION | --force]\n"
    "\n"
    "Deletes workloads: stops them (SIGTERM, a grace period, SIGKILL; a microVM: its guest's\n"
    "Stop, then QEMU quits), removes their containers and logs, and returns once they are gone.\n"
    "Several workloads are deleted at once: deleting many takes one grace period, not one each.\n"
    "With -f, deletes the workloads of the manifests; their volumes (data!) are kept unless\n"
    "--volumes is given.\n"
    "\n"
    "Options:\n"
    "  -f, --filename FILE   delete the workloads of this manifest (file, directory or -); may be\n"
    "                        repeated (default: the NAMEs given)\n"
    "  --volumes             with -f, also delete the manifests' volumes and their data\n"
    "                        (default: volumes are kept)\n"
    "  --grace DURATION      how long each workload may take to exit after SIGTERM before\n"
    "                        SIGKILL: 500ms, 5s, 2m, at most 1h (default: 10s)\n"
    "  --force               SIGKILL at once, no grace period (same as --grace 0s; default:\n"
    "                        off)\n"
    "\n"
    "Examples:\n"
    "  capsulectl delete web\n"
    "  capsulectl delete web db --grace 30s\n"
    "  capsulectl delete -f examples/web.yaml --volumes\n";

/* The most Delete calls in flight at once (the capsule stops up to 64 workloads at once). */
#define DELETE_PARALLEL 64
#define DELETE_GRACE_MAX_NS (3600LL * 1000000000LL)

/* Deletes of several workloads, run on DELETE_PARALLEL threads, reported in the order asked. */
struct delete_batch {
        struct ctl *ctl;
        struct rpc_client *c;
        const char *const *names;
        size_t n;
        int64_t grace_ms; /* 0: the capsule's default */
        bool force;
        atomic_size_t next;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct delete_result {
                bool done, ok, still_stopping;
                struct cap_error err;
        } *res;
};

static void delete_one(struct delete_batch *b, size_t i)
{
        Capsule__V1__DeleteRequest req = CAPSULE__V1__DELETE_REQUEST__INIT;
        req.name = (char *)b->names[i];
        req.grace_ms = b->grace_ms;
        req.force = b->force;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        /* the capsule waits for the stop: its grace period (10 s by default) plus a margin */
        int64_t wait_ms = (b->grace_ms ? b->grace_ms : 10000) + 90000;
        int timeout_ms = b->ctl->timeout_ms > wait_ms ? b->ctl->timeout_ms : (int)wait_ms;
        int rc = rpc_unary(b->c, "/capsule.v1.Workloads/Delete", &req.base,
                           &capsule__v1__delete_response__descriptor, &resp, timeout_ms, &err);
        pthread_mutex_lock(&b->lock);
        struct delete_result *r = &b->res[i];
        r->ok = rc == 0;
        r->err = err;
        r->still_stopping = resp && ((const Capsule__V1__DeleteResponse *)resp)->still_stopping;
        r->done = true;
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
}

static void *delete_worker(void *arg)
{
        struct delete_batch *b = arg;
        for (size_t i; (i = atomic_fetch_add(&b->next, 1)) < b->n;)
                delete_one(b, i);
        return NULL;
}

/* Deletes names[0..n) at once; prints one line per workload in the order given. Returns 0 when
 * every delete succeeded, else -1 (each failure printed). */
static int delete_workloads(struct ctl *ctl, struct rpc_client *c, const char *const *names, size_t n,
                            int64_t grace_ms, bool force)
{
        if (n == 0)
                return 0;
        struct delete_batch b = {.ctl = ctl, .c = c, .names = names, .n = n, .grace_ms = grace_ms,
                                 .force = force};
        _cleanup_free_ struct delete_result *res = calloc(n, sizeof(*res));
        if (!res) {
                fprintf(ctl->err, "capsulectl delete: out of memory\n");
                return -1;
        }
        b.res = res;
        atomic_init(&b.next, 0);
        pthread_mutex_init(&b.lock, NULL);
        pthread_cond_init(&b.cond, NULL);
        pthread_t th[DELETE_PARALLEL];
        size_t nth = 0;
        while (nth < DELETE_PARALLEL && nth < n && pthread_create(&th[nth], NULL, delete_worker, &b) == 0)
                nth++;
        if (nth == 0)
                delete_worker(&b); /* no thread: one after another, here */
        int rc = 0;
        for (size_t i = 0; i < n; i++) {
                pthread_mutex_lock(&b.lock);
                while (!res[i].done)
                        pthread_cond_wait(&b.cond, &b.lock);
                pthread_mutex_unlock(&b.lock);
                if (!res[i].ok) {
                        char what[128];
                        snprintf(what, sizeof(what), "delete %s", names[i]);
                        ctl_print_error(ctl, what, &res[i].err);
                        rc = -1;
                } else if (res[i].still_stopping) {
                        fprintf(ctl->out, "workload/%s deleted (still stopping)\n", names[i]);
                } else {
                        fprintf(ctl->out, "workload/%s deleted\n", names[i]);
                }
        }
        for (size_t i = 0; i < nth; i++)
                pthread_join(th[i], NULL);
        pthread_cond_destroy(&b.cond);
        pthread_mutex_destroy(&b.lock);
        return rc;
}

static int delete_volume(struct ctl *ctl, struct rpc_client *c, const char *name)
{
        Capsule__V1__VolumeDeleteRequest req = CAPSULE__V1__VOLUME_DELETE_REQUEST__INIT;
        req.name = (char *)name;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.Volumes/Delete", &req.base, &capsule__v1__volume_delete_response__descriptor,
                      &resp, ctl->timeout_ms, &err) < 0) {
                char what[128];
                snprintf(what, sizeof(what), "delete volume %s", name);
                ctl_print_error(ctl, what, &err);
                return -1;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        fprintf(ctl->out, "volume/%s deleted\n", name);
        return 0;
}

int cmd_delete(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, delete_usage))
                return CTL_EXIT_OK;
        static const struct option opts[] = {
                {"filename", required_argument, NULL, 'f'}, {"volumes", no_argument, NULL, 'v'},
                {"grace", required_argument, NULL, 'g'},    {"force", no_argument, NULL, 'F'},
                {NULL, 0, NULL, 0},
        };
        _cleanup_free_ char **files = calloc((size_t)argc + 1, sizeof(char *));
        size_t nf = 0;
        bool volumes = false, force = false, grace_given = false;
        int64_t grace_ns = 0;
        int ch;
        while ((ch = getopt_long(argc, argv, "f:", opts, NULL)) != -1) {
                if (ch == 'f') {
                        files[nf++] = optarg;
                } else if (ch == 'v') {
                        volumes = true;
                } else if (ch == 'F') {
                        force = true;
                } else if (ch == 'g') {
                        grace_given = true;
                        if (ctl_parse_duration(optarg, &grace_ns) < 0) {
                                fprintf(ctl->err,
                                        "capsulectl delete: --grace %s: expected a duration like 500ms, 5s "
                                        "or 2m\n",
                                        optarg);
                                return CTL_EXIT_USAGE;
                        }
                        if (grace_ns > DELETE_GRACE_MAX_NS) {
                                fprintf(ctl->err, "capsulectl delete: --grace %s: above the maximum of 1h\n",
                                        optarg);
                                return CTL_EXIT_USAGE;
                        }
                } else {
                        fputs(delete_usage, ctl->err);
                        return CTL_EXIT_USAGE;
                }
        }
        if ((nf == 0) == (optind >= argc)) {
                fprintf(ctl->err, "capsulectl delete: give either NAME... or -f FILE\n%s", delete_usage);
                return CTL_EXIT_USAGE;
        }
        if (force && grace_given) {
                fprintf(ctl->err, "capsulectl delete: give either --grace or --force, not both\n");
                return CTL_EXIT_USAGE;
        }
        /* --grace 0s is --force; below 1 ms rounds up (0 would mean the default) */
        int64_t grace_ms = grace_given ? (grace_ns + 999999) / 1000000 : 0;
        if (grace_given && grace_ns == 0)
                force = true;
        struct manifest_set set = {0};
        if (nf && load_manifests(ctl, files, nf, &set) < 0)
                return CTL_EXIT_ERROR;
        _cleanup_free_ const char **names = calloc((size_t)argc + set.n + 1, sizeof(char *));
        size_t n = 0;
        for (int i = optind; names && i < argc; i++)
                names[n++] = argv[i];
        for (size_t i = 0; names && i < set.n; i++)
                if (set.docs[i].kind != MANIFEST_KIND_VOLUME)
                        names[n++] = set.docs[i].workload->name;
        struct rpc_client *c = names ? ctl_client(ctl) : NULL;
        int rc = c ? CTL_EXIT_OK : CTL_EXIT_ERROR;
        if (c && delete_workloads(ctl, c, names, n, grace_ms, force) < 0)
                rc = CTL_EXIT_ERROR;
        for (size_t i = 0; c && volumes && i < set.n; i++)
                if (set.docs[i].kind == MANIFEST_KIND_VOLUME && delete_volume(ctl, c, set.docs[i].volume_name) < 0)
                        rc = CTL_EXIT_ERROR;
        manifest_set_free(&set);
        return rc;
}
