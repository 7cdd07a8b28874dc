/* Fleet runs: one verb against several capsules at once, like talosctl -n a,b. Each capsule gets
 * a thread, its own copy of `struct ctl` (own channel, own output streams) and its own copy of
 * argv. Verbs parse argv with getopt (global state), so the threads take turns until their verb
 * asks for its client (ctl_client -> ctl_parse_done); the calls then run in parallel.
 * Results: streaming verbs print lines as they come, prefixed "[node] "; the others are gathered
 * and printed once all are done: one table with a NODE column (json/yaml: a list of
 * {node, result, error}); a failed capsule's errors are printed with its name, and the exit code
 * is non-zero when any capsule failed. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capsulectl.h"
#include "common/cleanup.h"
#include "rpc/rpc.h"

struct fleet_node {
        struct ctl ctl;
        const struct ctl_verb *verb;
        int argc;
        char **argv; /* own copy of the pointers: getopt permutes them */
        char *out_buf, *err_buf;
        size_t out_len, err_len;
        int rc;
        pthread_t th;
        bool started;
};

static void *node_main(void *arg)
{
        struct fleet_node *fn = arg;
        pthread_mutex_lock(fn->ctl.parse_lock);
        optind = 0;
        fn->rc = fn->verb->run(&fn->ctl, fn->argc, fn->argv);
        ctl_parse_done(&fn->ctl);
        fflush(fn->ctl.out);
        fflush(fn->ctl.err);
        return NULL;
}

static int node_setup(struct fleet_node *fn, const struct ctl *parent, const char *node,
                      pthread_mutex_t *print_lock)
{
        fn->ctl = *parent;
        fn->ctl.client = NULL;
        fn->ctl.node = node;
        fn->ctl.config_path_owned = NULL;
        if (fn->verb->fleet == CTL_FLEET_LINES) {
                _cleanup_free_ char *prefix = NULL;
                if (asprintf(&prefix, "[%s] ", node) < 0)
                        return -ENOMEM;
                fn->ctl.out = ctl_prefix_stream(stdout, prefix, print_lock);
                fn->ctl.err = ctl_prefix_stream(stderr, prefix, print_lock);
        } else {
                /* gathered as data, printed in the parent's format once all are done */
                if (parent->output != CTL_OUT_TABLE)
                        fn->ctl.output = CTL_OUT_JSON;
                fn->ctl.out = open_memstream(&fn->out_buf, &fn->out_len);
                fn->ctl.err = open_memstream(&fn->err_buf, &fn->err_len);
        }
        if (!fn->ctl.out || !fn->ctl.err)
                return -errno;
        fn->argv = calloc((size_t)fn->argc + 1, sizeof(char *));
        if (!fn->argv)
                return -ENOMEM;
        return 0;
}

static void node_finish(struct fleet_node *fn)
{
        if (fn->ctl.out)
                fclose(fn->ctl.out);
        if (fn->ctl.err)
                fclose(fn->ctl.err);
        fn->ctl.out = fn->ctl.err = NULL;
        rpc_client_free(fn->ctl.client);
        fn->ctl.client = NULL;
}

/* A table header: upper-case words ("NAME KIND STATUS"), at least two. */
static bool is_header(const char *line, size_t len)
{
        size_t words = 0;
        bool in_word = false;
        for (size_t i = 0; i < len; i++) {
                char c = line[i];
                if (c == ' ') {
                        in_word = false;
                        continue;
                }
                if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '%' || c == '-' ||
                      c == '_'))
                        return false;
                if (!in_word)
                        words++;
                in_word = true;
        }
        return words >= 2;
}

static size_t first_line_len(const char *buf, size_t len)
{
        const char *nl = memchr(buf, '\n', len);
        return nl ? (size_t)(nl - buf) : len;
}

/* Prints every line of buf as "<node padded> line", skipping a first line of `skip` bytes. */
static void print_rows(FILE *f, int width, const char *node, const char *buf, size_t len,
                       size_t skip)
{
        size_t off = skip ? skip + 1 : 0;
        while (off < len) {
                size_t l = first_line_len(buf + off, len - off);
                fprintf(f, "%-*s %.*s\n", width, node, (int)l, buf + off);
                off += l + 1;
        }
}

static void print_table(struct fleet_node *fns, size_t n, char **nodes)
{
        int width = 4;
        for (size_t i = 0; i < n; i++)
                if ((int)strlen(nodes[i]) > width)
                        width = (int)strlen(nodes[i]);
        /* one header when every capsule's output starts with the same one */
        const char *header = NULL;
        size_t hlen = 0;
        bool same = true;
        for (size_t i = 0; i < n && same; i++) {
                if (fns[i].out_len == 0)
                        continue;
                size_t l = first_line_len(fns[i].out_buf, fns[i].out_len);
                if (!is_header(fns[i].out_buf, l))
                        same = false;
                else if (!header)
                        header = fns[i].out_buf, hlen = l;
                else if (l != hlen || memcmp(header, fns[i].out_buf, l) != 0)
                        same = false;
        }
        if (same && header)
                printf("%-*s %.*s\n", width, "NODE", (int)hlen, header);
        for (size_t i = 0; i < n; i++)
                if (fns[i].out_len)
                        print_rows(stdout, width, nodes[i], fns[i].out_buf, fns[i].out_len,
                                   same && header ? hlen : 0);
        fflush(stdout);
}

static struct json_object *lines_json(const char *buf, size_t len)
{
        struct json_object *arr = json_object_new_array();
        size_t off = 0;
        while (off < len) {
                size_t l = first_line_len(buf + off, len - off);
                json_object_array_add(arr, json_object_new_string_len(buf + off, (int)l));
                off += l + 1;
        }
        return arr;
}

static void print_structured(struct ctl *ctl, struct fleet_node *fns, size_t n, char **nodes)
{
        struct json_object *list = json_object_new_array();
        for (size_t i = 0; i < n; i++) {
                struct json_object *o = json_object_new_object(), *result = NULL;
                json_object_object_add(o, "node", json_object_new_string(nodes[i]));
                if (fns[i].out_len) {
                        result = json_tokener_parse(fns[i].out_buf);
                        if (!result)
                                result = lines_json(fns[i].out_buf, fns[i].out_len);
                }
                json_object_object_add(o, "result", result);
                if (fns[i].rc != CTL_EXIT_OK && fns[i].err_len) {
                        size_t l = first_line_len(fns[i].err_buf, fns[i].err_len);
                        json_object_object_add(o, "error",
                                               json_object_new_string_len(fns[i].err_buf, (int)l));
                }
                json_object_array_add(list, o);
        }
        ctl_print_structured(ctl, list);
        json_object_put(list);
        fflush(ctl->out);
}

/* Prints the gathered errors, each line prefixed "[node] ". */
static void print_errors(struct fleet_node *fns, size_t n, char **nodes)
{
        for (size_t i = 0; i < n; i++) {
                size_t off = 0;
                while (off < fns[i].err_len) {
                        size_t l = first_line_len(fns[i].err_buf + off, fns[i].err_len - off);
                        fprintf(stderr, "[%s] %.*s\n", nodes[i], (int)l, fns[i].err_buf + off);
                        off += l + 1;
                }
        }
}

static int summarize(struct fleet_node *fns, size_t n, char **nodes)
{
        int rc = CTL_EXIT_OK;
        size_t failed = 0;
        for (size_t i = 0; i < n; i++) {
                if (fns[i].rc != CTL_EXIT_OK)
                        failed++;
                if (fns[i].rc > rc)
                        rc = fns[i].rc;
        }
        if (failed) {
                fprintf(stderr, "capsulectl: %zu of %zu capsules failed:", failed, n);
                for (size_t i = 0; i < n; i++)
                        if (fns[i].rc != CTL_EXIT_OK)
                                fprintf(stderr, " %s", nodes[i]);
                fprintf(stderr, "\n");
        }
        return rc;
}

/* Usage errors are the same on every capsule: print them once, as a single run would. */
static bool all_usage(struct fleet_node *fns, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (fns[i].rc != CTL_EXIT_USAGE)
                        return false;
        return true;
}

int ctl_fleet_run(struct ctl *ctl, const struct ctl_verb *verb, char **nodes, size_t n, int argc,
                  char **argv)
{
        if (ctl_load_config(ctl) < 0)
                return CTL_EXIT_ERROR;
        pthread_mutex_t parse_lock = PTHREAD_MUTEX_INITIALIZER;
        pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
        struct fleet_node *fns = calloc(n, sizeof(*fns));
        if (!fns) {
                fprintf(stderr, "capsulectl: out of memory\n");
                return CTL_EXIT_ERROR;
        }
        int rc = CTL_EXIT_OK;
        for (size_t i = 0; i < n; i++) {
                struct fleet_node *fn = &fns[i];
                fn->verb = verb;
                fn->argc = argc;
                int r = node_setup(fn, ctl, nodes[i], &print_lock);
                if (r < 0) {
                        fprintf(stderr, "capsulectl: %s: %s\n", nodes[i], strerror(-r));
                        rc = CTL_EXIT_ERROR;
                        break;
                }
                memcpy(fn->argv, argv, (size_t)argc * sizeof(char *));
                fn->ctl.parse_lock = &parse_lock;
                r = pthread_create(&fn->th, NULL, node_main, fn);
                if (r != 0) {
                        fprintf(stderr, "capsulectl: %s: thread: %s\n", nodes[i], strerror(r));
                        rc = CTL_EXIT_ERROR;
                        break;
                }
                fn->started = true;
        }
        for (size_t i = 0; i < n; i++)
                if (fns[i].started)
                        pthread_join(fns[i].th, NULL);
        for (size_t i = 0; i < n; i++)
                node_finish(&fns[i]);
        if (rc == CTL_EXIT_OK && verb->fleet == CTL_FLEET_TABLE) {
                if (all_usage(fns, n)) {
                        fwrite(fns[0].err_buf, 1, fns[0].err_len, stderr);
                        rc = CTL_EXIT_USAGE;
                        goto out;
                }
                if (ctl->output == CTL_OUT_TABLE)
                        print_table(fns, n, nodes);
                else
                        print_structured(ctl, fns, n, nodes);
                print_errors(fns, n, nodes);
        }
        if (rc == CTL_EXIT_OK)
                rc = summarize(fns, n, nodes);
out:
        for (size_t i = 0; i < n; i++) {
                free(fns[i].out_buf);
                free(fns[i].err_buf);
                free(fns[i].argv);
        }
        free(fns);
        return rc;
}
