/* `capsulectl completion bash|zsh|fish` prints a shell completion script; the scripts ask the
 * hidden `capsulectl __complete WORDS...` (the words typed after `capsulectl`, the last one being
 * the word under the cursor) for candidates, one per line. Verbs, sub-verbs and options come from
 * the verb table in main.c; workload, volume and image names from the live capsule (List with a
 * 2 s deadline, errors silenced: completion never prints anything but candidates). */
#include <stdlib.h>
#include <string.h>

#include "capsule/v1/images.pb-c.h"
#include "capsule/v1/volumes.pb-c.h"
#include "capsule/v1/workloads.pb-c.h"
#include "capsulectl.h"
#include "common/cleanup.h"
#include "rpc/rpc.h"

#define COMPLETE_TIMEOUT_MS 2000

static const char bash_script[] =
    "# bash completion for capsulectl. Load it with: source <(capsulectl completion bash)\n"
    "_capsulectl()\n"
    "{\n"
    "    local IFS=$'\\n'\n"
    "    COMPREPLY=($(capsulectl __complete \"${COMP_WORDS[@]:1:COMP_CWORD}\" 2>/dev/null))\n"
    "    return 0\n"
    "}\n"
    "complete -o default -F _capsulectl capsulectl\n";

static const char zsh_script[] =
    "#compdef capsulectl\n"
    "# zsh completion for capsulectl. Load it with: source <(capsulectl completion zsh)\n"
    "_capsulectl() {\n"
    "  local -a cands\n"
    "  cands=(\"${(@f)$(capsulectl __complete \"${(@)words[2,CURRENT]}\" 2>/dev/null)}\")\n"
    "  if (( ${#cands} )) && [[ -n \"${cands[1]}\" ]]; then\n"
    "    compadd -a cands\n"
    "  else\n"
    "    _files\n"
    "  fi\n"
    "}\n"
    "compdef _capsulectl capsulectl\n";

static const char fish_script[] =
    "# fish completion for capsulectl. Load it with: capsulectl completion fish | source\n"
    "function __capsulectl_complete\n"
    "    set -l words (commandline -opc) (commandline -ct)\n"
    "    capsulectl __complete $words[2..-1] 2>/dev/null\n"
    "end\n"
    "complete -c capsulectl -f -a '(__capsulectl_complete)'\n";

static const char completion_usage[] =
    "usage: capsulectl completion bash|zsh|fish\n\n"
    "Prints a completion script for the shell. It completes verbs, sub-verbs (image push|pull|\n"
    "ls|rm, volume create|ls|resize|rm, update push|status|commit|rollback, ...), options, and\n"
    "the names of the workloads, volumes\n"
    "and images of the capsule the line targets (asked live, 2 s at most).\n\n"
    "Examples:\n"
    "  source <(capsulectl completion bash)          # add to ~/.bashrc\n"
    "  capsulectl completion zsh > \"${fpath[1]}/_capsulectl\"\n"
    "  capsulectl completion fish | source\n";

int cmd_completion(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, completion_usage))
                return CTL_EXIT_OK;
        if (argc != 2) {
                fprintf(ctl->err, "capsulectl completion: expected one of bash, zsh, fish\n%s",
                        completion_usage);
                return CTL_EXIT_USAGE;
        }
        if (strcmp(argv[1], "bash") == 0)
                fputs(bash_script, ctl->out);
        else if (strcmp(argv[1], "zsh") == 0)
                fputs(zsh_script, ctl->out);
        else if (strcmp(argv[1], "fish") == 0)
                fputs(fish_script, ctl->out);
        else {
                fprintf(ctl->err, "capsulectl completion: unknown shell \"%s\"\n%s", argv[1],
                        completion_usage);
                return CTL_EXIT_USAGE;
        }
        return CTL_EXIT_OK;
}

static void candidate(struct ctl *ctl, const char *cur, const char *word)
{
        if (strncmp(word, cur, strlen(cur)) == 0)
                fprintf(ctl->out, "%s\n", word);
}

static void complete_options(struct ctl *ctl, const struct ctl_verb *verb, const char *cur)
{
        static const char *const globals[] = {"--config", "--context", "--capsule",
                                              "--output", "--timeout", "--help"};
        for (size_t i = 0; i < ARRAY_SIZE(globals); i++)
                candidate(ctl, cur, globals[i]);
        for (const struct ctl_opt *o = verb ? verb->opts : NULL; o && o->name; o++) {
                char buf[64];
                snprintf(buf, sizeof(buf), "--%s", o->name);
                candidate(ctl, cur, buf);
        }
}

/* Prints the names of the live capsule's workloads, volumes or images starting with cur. */
static void complete_names(struct ctl *ctl, enum ctl_names what, const char *cur)
{
        char **nodes = NULL;
        if (ctl_nodes(ctl, &nodes) > 0)
                ctl->node = nodes[0];
        ctl->timeout_ms = COMPLETE_TIMEOUT_MS;
        struct rpc_client *c = ctl_client(ctl);
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (!c)
                goto out;
        if (what == CTL_NAMES_WORKLOADS) {
                Capsule__V1__ListRequest req = CAPSULE__V1__LIST_REQUEST__INIT;
                if (rpc_unary(c, "/capsule.v1.Workloads/List", &req.base,
                              &capsule__v1__list_response__descriptor, &resp, ctl->timeout_ms,
                              &err) < 0)
                        goto out;
                Capsule__V1__ListResponse *l = (Capsule__V1__ListResponse *)resp;
                for (size_t i = 0; i < l->n_workloads; i++)
                        if (l->workloads[i]->spec)
                                candidate(ctl, cur, l->workloads[i]->spec->name);
        } else if (what == CTL_NAMES_VOLUMES) {
                Capsule__V1__VolumeListRequest req = CAPSULE__V1__VOLUME_LIST_REQUEST__INIT;
                if (rpc_unary(c, "/capsule.v1.Volumes/List", &req.base,
                              &capsule__v1__volume_list_response__descriptor, &resp,
                              ctl->timeout_ms, &err) < 0)
                        goto out;
                Capsule__V1__VolumeListResponse *l = (Capsule__V1__VolumeListResponse *)resp;
                for (size_t i = 0; i < l->n_volumes; i++)
                        candidate(ctl, cur, l->volumes[i]->name);
        } else if (what == CTL_NAMES_IMAGES) {
                Capsule__V1__ImageListRequest req = CAPSULE__V1__IMAGE_LIST_REQUEST__INIT;
                if (rpc_unary(c, "/capsule.v1.Images/List", &req.base,
                              &capsule__v1__image_list_response__descriptor, &resp, ctl->timeout_ms,
                              &err) < 0)
                        goto out;
                Capsule__V1__ImageListResponse *l = (Capsule__V1__ImageListResponse *)resp;
                for (size_t i = 0; i < l->n_images; i++)
                        candidate(ctl, cur, l->images[i]->name);
        }
out:
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        ctl->node = NULL;
        ctl_nodes_free(nodes);
}

/* Where the cursor is, from the words before it. */
struct line_state {
        const struct ctl_verb *verb;
        const char *sub;
        bool after_dashdash;
        bool value_of_output; /* previous word is -o/--output (the global one) */
        bool value_of_option; /* previous word is a verb option taking a value */
        const char *option;   /* that option, as typed */
};

/* Verb options whose values are names on the capsule. */
static const struct {
        const char *verb, *option;
        enum ctl_names names;
} named_values[] = {
    {"debug", "--target", CTL_NAMES_WORKLOADS},
    {"debug", "--image", CTL_NAMES_IMAGES},
};

static enum ctl_names option_names(const struct line_state *st)
{
        for (size_t i = 0; st->verb && st->option && i < ARRAY_SIZE(named_values); i++)
                if (strcmp(st->verb->name, named_values[i].verb) == 0 &&
                    strcmp(st->option, named_values[i].option) == 0)
                        return named_values[i].names;
        return CTL_NAMES_NONE;
}

static bool takes_value(const struct ctl_verb *verb, const char *w)
{
        for (const struct ctl_opt *o = verb ? verb->opts : NULL; o && o->name; o++) {
                char lng[64];
                snprintf(lng, sizeof(lng), "--%s", o->name);
                if (o->has_arg && (strcmp(w, lng) == 0 || (o->short_name && w[0] == '-' &&
                                                           w[1] == o->short_name && !w[2])))
                        return true;
        }
        return false;
}

static void scan_line(struct ctl *ctl, int n, char **w, struct line_state *st)
{
        static const char *const global_values[] = {"--config", "--context", "--capsule",
                                                    "--timeout"};
        for (int i = 0; i < n; i++) {
                const char *a = w[i];
                bool last = i == n - 1;
                if (strcmp(a, "--") == 0) {
                        st->after_dashdash = st->verb != NULL;
                        continue;
                }
                if (st->after_dashdash)
                        continue;
                bool own = st->verb && takes_value(st->verb, a);
                if (!own && (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0)) {
                        if (last)
                                st->value_of_output = true;
                        else
                                i++;
                        continue;
                }
                if (own) {
                        if (last) {
                                st->value_of_option = true;
                                st->option = a;
                        } else
                                i++;
                        continue;
                }
                bool gv = false;
                for (size_t g = 0; g < ARRAY_SIZE(global_values); g++)
                        gv |= strcmp(a, global_values[g]) == 0;
                if (gv) {
                        if (last) {
                                st->value_of_option = true;
                        } else {
                                int k = i;
                                if (ctl_global_option(ctl, n, w, &k, NULL) > 0)
                                        i = k - 1;
                        }
                        continue;
                }
                if (a[0] == '-') {
                        int k = i;
                        if (ctl_global_option(ctl, n, w, &k, st->verb ? st->verb->opts : NULL) > 0)
                                i = k - 1;
                        continue;
                }
                if (!st->verb) {
                        st->verb = ctl_verb_find(a);
                        if (!st->verb || st->verb->hidden)
                                return;
                } else if (st->verb->subs && !st->sub) {
                        st->sub = a;
                }
        }
}

static bool names_wanted(const struct line_state *st)
{
        if (!st->verb || st->verb->names == CTL_NAMES_NONE)
                return false;
        if (!st->verb->subs)
                return true;
        return st->sub && (strcmp(st->sub, "rm") == 0 || strcmp(st->sub, "delete") == 0 ||
                           strcmp(st->sub, "resize") == 0);
}

int cmd_complete_words(struct ctl *ctl, int argc, char **argv)
{
        if (argc < 2)
                return CTL_EXIT_OK;
        _cleanup_fclose_ FILE *devnull = fopen("/dev/null", "w");
        if (devnull)
                ctl->err = devnull; /* silent: completion prints candidates or nothing */
        const char *cur = argv[argc - 1];
        struct line_state st = {0};
        scan_line(ctl, argc - 2, argv + 1, &st);
        if (st.value_of_option && option_names(&st) != CTL_NAMES_NONE) {
                complete_names(ctl, option_names(&st), cur);
                goto done;
        }
        if (st.after_dashdash || st.value_of_option ||
            (!st.verb && argc > 2 && !ctl_verb_find(argv[1]) && argv[1][0] != '-'))
                goto done;
        /* `volume backup -o FILE`: there -o names the backup file, not an output format */
        if (st.value_of_output && st.verb && st.sub && strcmp(st.verb->name, "volume") == 0 &&
            strcmp(st.sub, "backup") == 0)
                goto done;
        if (st.value_of_output) {
                static const char *const fmts[] = {"table", "yaml", "json"};
                for (size_t i = 0; i < ARRAY_SIZE(fmts); i++)
                        candidate(ctl, cur, fmts[i]);
        } else if (cur[0] == '-') {
                complete_options(ctl, st.verb, cur);
        } else if (!st.verb) {
                for (size_t i = 0; i < ctl_n_verbs; i++)
                        if (!ctl_verbs[i].hidden)
                                candidate(ctl, cur, ctl_verbs[i].name);
        } else if (st.verb->subs && !st.sub) {
                for (const char *const *s = st.verb->subs; *s; s++)
                        candidate(ctl, cur, *s);
        } else if (names_wanted(&st)) {
                complete_names(ctl, st.verb->names, cur);
        }
done:
        fflush(ctl->out);
        ctl->err = stderr;
        return CTL_EXIT_OK;
}
