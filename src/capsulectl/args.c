/* Command-line plumbing shared by every verb: global options anywhere on the line (lifted out of
 * argv before the verb parses its own), the unknown-option check against the verb's option table,
 * the list of capsules an invocation targets, and --since times. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capsulectl.h"
#include "common/cleanup.h"

enum global_id { G_CONFIG, G_CONTEXT, G_CAPSULE, G_OUTPUT, G_TIMEOUT };

static const struct ctl_opt globals[] = {
    [G_CONFIG] = {"config", 0, true},   [G_CONTEXT] = {"context", 0, true},
    [G_CAPSULE] = {"capsule", 0, true}, [G_OUTPUT] = {"output", 'o', true},
    [G_TIMEOUT] = {"timeout", 0, true},
};

static bool opt_listed(const struct ctl_opt *list, const struct ctl_opt *g)
{
        for (; list && list->name; list++)
                if (strcmp(list->name, g->name) == 0 ||
                    (g->short_name && list->short_name == g->short_name))
                        return true;
        return false;
}

/* Matches argv word a against option o: returns the length of "--name" or "-x" that matched
 * (the value may follow as "=V" for long, attached for short), 0 when it does not. */
static size_t opt_match(const char *a, const struct ctl_opt *o)
{
        if (a[0] != '-')
                return 0;
        if (a[1] == '-') {
                size_t l = strlen(o->name);
                if (strncmp(a + 2, o->name, l) == 0 && (a[2 + l] == '\0' || a[2 + l] == '='))
                        return l + 2;
                return 0;
        }
        return o->short_name && a[1] == o->short_name ? 2 : 0;
}

static int set_global(struct ctl *ctl, enum global_id id, const char *v)
{
        char *end;
        long s;
        switch (id) {
        case G_CONFIG:
                ctl->config_path = v;
                return 0;
        case G_CONTEXT:
                ctl->context_name = v;
                return 0;
        case G_CAPSULE:
                ctl->endpoint = v;
                return 0;
        case G_OUTPUT:
                if (strcmp(v, "table") == 0 || strcmp(v, "wide") == 0)
                        ctl->output = CTL_OUT_TABLE;
                else if (strcmp(v, "yaml") == 0)
                        ctl->output = CTL_OUT_YAML;
                else if (strcmp(v, "json") == 0)
                        ctl->output = CTL_OUT_JSON;
                else {
                        fprintf(stderr, "capsulectl: -o %s: expected table, yaml or json\n", v);
                        return -EINVAL;
                }
                return 0;
        case G_TIMEOUT:
                s = strtol(v, &end, 10);
                if (*end || s <= 0 || s > 86400) {
                        fprintf(stderr, "capsulectl: --timeout %s: expected seconds (1-86400)\n",
                                v);
                        return -EINVAL;
                }
                ctl->timeout_ms = (int)s * 1000;
                return 0;
        }
        return -EINVAL;
}

int ctl_global_option(struct ctl *ctl, int argc, char **argv, int *i, const struct ctl_opt *skip)
{
        const char *a = argv[*i];
        for (size_t g = 0; g < ARRAY_SIZE(globals); g++) {
                size_t l = opt_match(a, &globals[g]);
                if (l == 0 || opt_listed(skip, &globals[g]))
                        continue;
                const char *v;
                if (a[l] == '=')
                        v = a + l + 1;
                else if (a[l] != '\0' && a[1] != '-')
                        v = a + l; /* -ojson */
                else if (*i + 1 < argc)
                        v = argv[++*i];
                else {
                        fprintf(stderr, "capsulectl: %s needs a value\n", a);
                        return -EINVAL;
                }
                ++*i;
                return set_global(ctl, (enum global_id)g, v) < 0 ? -EINVAL : 1;
        }
        return 0;
}

/* The verb's option that argv word a is, or NULL. For a group of short options ("-it") every
 * letter must be one; *takes_next says whether the next word is this option's value. */
static bool verb_option(const struct ctl_verb *verb, const char *a, bool *takes_next)
{
        *takes_next = false;
        if (a[1] == '-') {
                for (const struct ctl_opt *o = verb->opts; o && o->name; o++) {
                        size_t l = opt_match(a, o);
                        if (l) {
                                *takes_next = o->has_arg && a[l] == '\0';
                                return true;
                        }
                }
                return false;
        }
        for (const char *c = a + 1; *c; c++) {
                const struct ctl_opt *found = NULL;
                for (const struct ctl_opt *o = verb->opts; o && o->name && !found; o++)
                        if (o->short_name == *c)
                                found = o;
                if (!found)
                        return false;
                if (found->has_arg) {
                        *takes_next = c[1] == '\0';
                        return true;
                }
        }
        return true;
}

int ctl_lift_globals(struct ctl *ctl, const struct ctl_verb *verb, int *argc, char **argv)
{
        int in = 1, out = 1;
        while (in < *argc) {
                const char *a = argv[in];
                if (strcmp(a, "--") == 0)
                        break;
                if (a[0] != '-' || a[1] == '\0') {
                        argv[out++] = argv[in++];
                        continue;
                }
                if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                        argv[out++] = argv[in++];
                        continue;
                }
                int r = ctl_global_option(ctl, *argc, argv, &in, verb->opts);
                if (r < 0)
                        return CTL_EXIT_USAGE;
                if (r > 0)
                        continue;
                bool takes_next;
                if (!verb_option(verb, a, &takes_next)) {
                        fprintf(stderr, "capsulectl %s: unknown option \"%s\"\n\n", verb->name, a);
                        /* then the verb's own usage, as its parser would have printed it */
                        FILE *saved = ctl->out;
                        char *help_argv[] = {(char *)verb->name, "--help", NULL};
                        ctl->out = stderr;
                        optind = 0;
                        verb->run(ctl, 2, help_argv);
                        ctl->out = saved;
                        return CTL_EXIT_USAGE;
                }
                argv[out++] = argv[in++];
                if (takes_next && in < *argc)
                        argv[out++] = argv[in++];
        }
        while (in < *argc)
                argv[out++] = argv[in++];
        argv[out] = NULL;
        *argc = out;
        return 0;
}

/* Splits a comma-separated endpoint list, skipping empty items. */
static size_t split_nodes(const char *list, char ***nodes)
{
        size_t n = 0, cap = 1;
        for (const char *p = list; *p; p++)
                cap += *p == ',';
        char **v = calloc(cap + 1, sizeof(char *));
        if (!v)
                return 0;
        const char *p = list;
        while (*p) {
                size_t l = strcspn(p, ",");
                size_t s = 0;
                while (s < l && p[s] == ' ')
                        s++;
                size_t e = l;
                while (e > s && p[e - 1] == ' ')
                        e--;
                if (e > s && !(v[n++] = strndup(p + s, e - s))) {
                        ctl_nodes_free(v);
                        return 0;
                }
                p += l + (p[l] == ',');
        }
        *nodes = v;
        return n;
}

size_t ctl_nodes(struct ctl *ctl, char ***nodes)
{
        *nodes = NULL;
        if (ctl->endpoint)
                return split_nodes(ctl->endpoint, nodes);
        /* The context's endpoint(s), if the config loads; otherwise the verb reports why. */
        if (!ctl->cfg_loaded) {
                struct cap_error err = {0};
                if (client_config_load(ctl->config_path, &ctl->cfg, &err) < 0)
                        return 0;
                ctl->cfg_loaded = true;
        }
        const struct client_context *cx = client_config_find(&ctl->cfg, ctl->context_name);
        if (!cx)
                return 0;
        /* `endpoints: [a, b]` and `endpoint: "a,b"` read as `--capsule a,b` does */
        char *line = client_context_endpoints_line(cx);
        size_t n = line ? split_nodes(line, nodes) : 0;
        free(line);
        return n;
}

void ctl_nodes_free(char **nodes)
{
        for (size_t i = 0; nodes && nodes[i]; i++)
                free(nodes[i]);
        free(nodes);
}

/* Parses "1h30m", "10m", "45s", "2d": a sum of number+unit pairs. */
int ctl_parse_duration(const char *s, int64_t *ns)
{
        int64_t total = 0;
        if (!*s)
                return -EINVAL;
        while (*s) {
                char *end;
                errno = 0;
                long long v = strtoll(s, &end, 10);
                if (end == s || v < 0 || errno || *s == '+' || *s == '-')
                        return -EINVAL;
                int64_t unit; /* in ns */
                size_t len = 1;
                switch (*end) {
                case 's':
                        unit = 1000000000LL;
                        break;
                case 'm':
                        if (end[1] == 's') {
                                unit = 1000000LL;
                                len = 2;
                        } else {
                                unit = 60 * 1000000000LL;
                        }
                        break;
                case 'h':
                        unit = 3600 * 1000000000LL;
                        break;
                case 'd':
                        unit = 86400 * 1000000000LL;
                        break;
                default:
                        return -EINVAL;
                }
                /* at most 100 years, in total too */
                const int64_t max = 100LL * 365 * 86400 * 1000000000LL;
                if (v > max / unit || total > max - v * unit)
                        return -EINVAL;
                total += v * unit;
                s = end + len;
        }
        *ns = total;
        return 0;
}

/* Parses RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM). */
static int parse_rfc3339(const char *s, int64_t *ns)
{
        struct tm tm = {0};
        const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                p = strptime(s, "%Y-%m-%d %H:%M:%S", &tm);
        if (!p)
                return -EINVAL;
        int64_t frac = 0, scale = 100000000;
        if (*p == '.') {
                for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
                        frac += scale > 0 ? (*p - '0') * scale : 0;
        }
        long off = 0;
        if (*p == 'Z' || *p == 'z') {
                p++;
        } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
                int hh = atoi(p + 1), mm = atoi(p + 4);
                off = (hh * 3600L + mm * 60L) * (*p == '+' ? 1 : -1);
                p += 6;
        } else {
                return -EINVAL;
        }
        if (*p)
                return -EINVAL;
        time_t t = timegm(&tm);
        if (t == (time_t)-1)
                return -EINVAL;
        *ns = ((int64_t)t - off) * 1000000000LL + frac;
        return 0;
}

int ctl_parse_since(const char *s, int64_t now_unix_nano, int64_t *out)
{
        int64_t v;
        if (ctl_parse_duration(s, &v) == 0) {
                *out = now_unix_nano - v;
                return 0;
        }
        if (parse_rfc3339(s, &v) == 0) {
                *out = v;
                return 0;
        }
        return -EINVAL;
}
