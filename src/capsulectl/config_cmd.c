/* `capsulectl config contexts|use-context|merge`: look at and edit the client config (the file
 * named by --config, $CAPSULECONFIG or ~/.config/capsule/config). Edits are atomic rewrites. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capsulectl.h"
#include "common/cleanup.h"
#include "common/pki.h"

static const char config_usage[] =
    "usage: capsulectl config contexts\n"
    "       capsulectl config use-context NAME\n"
    "       capsulectl config merge FILE [--force] [--use]\n"
    "\n"
    "Looks at and edits the client config: --config FILE, else $CAPSULECONFIG, else\n"
    "~/.config/capsule/config.\n"
    "  contexts      list the contexts (-o json|yaml for machines)\n"
    "  use-context   make NAME the current context\n"
    "  merge         add the contexts of another client config (e.g. one from `gen cert`)\n"
    "`capsulectl config SUBCOMMAND --help` for details.\n"
    "\n"
    "Examples:\n"
    "  capsulectl config contexts\n"
    "  capsulectl config use-context lab\n";

static bool have_path(struct ctl *ctl, const char *verb)
{
        if (ctl->config_path && *ctl->config_path)
                return true;
        fprintf(stderr,
                "capsulectl config %s: no client config path: pass --config FILE or set "
                "$CAPSULECONFIG\n",
                verb);
        return false;
}

/* Facts about a context's client certificate for display; fields stay empty when unreadable. */
struct cert_facts {
        char user[80], role[40], expires[32], serial[MACHINE_SERIAL_MAX_HEX + 1];
        long days_left;
        bool ok;
};

static void cert_facts(const char *cert_pem, struct cert_facts *f)
{
        struct pki_cert_info info;
        struct cap_error err = {0};
        memset(f, 0, sizeof(*f));
        if (pki_cert_info(cert_pem, &info, &err) < 0 ||
            pki_cert_days_left(cert_pem, &f->days_left, &err) < 0) {
                snprintf(f->expires, sizeof(f->expires), "invalid");
                return;
        }
        snprintf(f->user, sizeof(f->user), "%s", info.cn ? info.cn : "");
        snprintf(f->role, sizeof(f->role), "%s", info.o ? info.o : "");
        if (machine_serial_canon(info.serial_hex, f->serial) < 0)
                f->serial[0] = '\0';
        struct tm tm;
        gmtime_r(&info.not_after, &tm);
        strftime(f->expires, sizeof(f->expires), "%Y-%m-%dT%H:%M:%SZ", &tm);
        pki_cert_info_free(&info);
        f->ok = true;
}

static const char contexts_usage[] =
    "usage: capsulectl config contexts\n"
    "\n"
    "Lists the contexts of the client config: name, endpoint(s), whether it is the current one,\n"
    "and its certificate's user, role, expiry and serial (what `gen cert --revoke` takes).\n"
    "-o json|yaml prints the same as data.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl config contexts\n";

static int config_contexts(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, contexts_usage))
                return CTL_EXIT_OK;
        if (argc != 1) {
                fprintf(stderr, "capsulectl config contexts: unexpected argument \"%s\"\n%s",
                        argv[1], contexts_usage);
                return CTL_EXIT_USAGE;
        }
        if (!have_path(ctl, "contexts") || ctl_load_config(ctl) < 0)
                return CTL_EXIT_ERROR;
        const struct client_config *cfg = &ctl->cfg;
        const struct client_context *cur = client_config_find(cfg, NULL);
        if (ctl->output != CTL_OUT_TABLE) {
                struct json_object *root = json_object_new_object(),
                                   *list = json_object_new_array();
                json_object_object_add(root, "currentContext",
                                       cur ? json_object_new_string(cur->name) : NULL);
                for (size_t i = 0; i < cfg->n_contexts; i++) {
                        const struct client_context *x = &cfg->contexts[i];
                        struct cert_facts f;
                        cert_facts(x->cert_pem, &f);
                        struct json_object *o = json_object_new_object();
                        json_object_object_add(o, "name", json_object_new_string(x->name));
                        _cleanup_free_ char *line = client_context_endpoints_line(x);
                        json_object_object_add(o, "endpoint",
                                               json_object_new_string(line ? line : ""));
                        struct json_object *eps = json_object_new_array();
                        for (size_t k = 0; k < x->n_endpoints; k++)
                                json_object_array_add(eps,
                                                      json_object_new_string(x->endpoints[k]));
                        if (!x->n_endpoints && x->endpoint)
                                json_object_array_add(eps, json_object_new_string(x->endpoint));
                        json_object_object_add(o, "endpoints", eps);
                        json_object_object_add(o, "current", json_object_new_boolean(x == cur));
                        if (f.ok) {
                                json_object_object_add(o, "user", json_object_new_string(f.user));
                                json_object_object_add(o, "role", json_object_new_string(f.role));
                                json_object_object_add(o, "certNotAfter",
                                                       json_object_new_string(f.expires));
                                json_object_object_add(o, "certDaysLeft",
                                                       json_object_new_int64(f.days_left));
                                json_object_object_add(o, "certSerial",
                                                       json_object_new_string(f.serial));
                        }
                        json_object_array_add(list, o);
                }
                json_object_object_add(root, "contexts", list);
                ctl_print_structured(ctl, root);
                json_object_put(root);
                return CTL_EXIT_OK;
        }
        printf("%-20s %-28s %-8s %-12s %-15s %-22s %s\n", "NAME", "ENDPOINT", "CURRENT", "USER",
               "ROLE", "CERT EXPIRES", "SERIAL");
        for (size_t i = 0; i < cfg->n_contexts; i++) {
                const struct client_context *x = &cfg->contexts[i];
                struct cert_facts f;
                cert_facts(x->cert_pem, &f);
                char left[48];
                if (!f.ok)
                        snprintf(left, sizeof(left), "invalid certificate");
                else if (f.days_left < 0)
                        snprintf(left, sizeof(left), "EXPIRED");
                else
                        snprintf(left, sizeof(left), "in %ldd%s", f.days_left,
                                 f.days_left < PKI_EXPIRY_WARN_DAYS ? " (renew soon)" : "");
                _cleanup_free_ char *line = client_context_endpoints_line(x);
                printf("%-20s %-28s %-8s %-12s %-15s %-22s %s\n", x->name, line ? line : "",
                       x == cur ? "*" : "", f.user, f.role, left, f.serial);
        }
        if (cfg->n_contexts == 0)
                fprintf(stderr, "%s has no contexts; add one with `capsulectl config merge FILE`\n",
                        ctl->config_path);
        return CTL_EXIT_OK;
}

static const char use_usage[] =
    "usage: capsulectl config use-context NAME\n"
    "\n"
    "Makes NAME the current context of the client config.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl config use-context lab\n";

static int config_use_context(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, use_usage))
                return CTL_EXIT_OK;
        if (argc != 2) {
                fprintf(stderr, "capsulectl config use-context: expected exactly one NAME\n%s",
                        use_usage);
                return CTL_EXIT_USAGE;
        }
        if (!have_path(ctl, "use-context") || ctl_load_config(ctl) < 0)
                return CTL_EXIT_ERROR;
        struct cap_error err = {0};
        if (client_config_use(&ctl->cfg, argv[1], &err) < 0) {
                fprintf(stderr,
                        "capsulectl config use-context: %s in %s; list them with "
                        "`capsulectl config contexts`\n",
                        err.msg, ctl->config_path);
                return CTL_EXIT_ERROR;
        }
        if (client_config_save(ctl->config_path, &ctl->cfg, &err) < 0) {
                fprintf(stderr, "capsulectl config use-context: %s\n", err.msg);
                return CTL_EXIT_ERROR;
        }
        const struct client_context *x = client_config_find(&ctl->cfg, argv[1]);
        _cleanup_free_ char *line = x ? client_context_endpoints_line(x) : NULL;
        printf("Switched to context \"%s\" (%s).\n", argv[1], line ? line : "");
        return CTL_EXIT_OK;
}

static const char merge_usage[] =
    "usage: capsulectl config merge FILE [--force] [--use]\n"
    "\n"
    "Adds the contexts of the client config FILE (e.g. one written by `capsulectl gen cert` or\n"
    "`capsulectl gen config`) to your client config, creating it if needed.\n"
    "\n"
    "Options:\n"
    "  --force   replace contexts that already exist under the same name (default: refuse)\n"
    "  --use     make FILE's current context the current one (default: keep the current one)\n"
    "\n"
    "Examples:\n"
    "  capsulectl config merge alice.capsuleconfig --use\n";

static int config_merge(struct ctl *ctl, int argc, char **argv)
{
        static const struct option opts[] = {
            {"force", no_argument, NULL, 'f'},
            {"use", no_argument, NULL, 'u'},
            {NULL, 0, NULL, 0},
        };
        if (ctl_wants_help(argc, argv, merge_usage))
                return CTL_EXIT_OK;
        bool force = false, use = false;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 'f':
                        force = true;
                        break;
                case 'u':
                        use = true;
                        break;
                default:
                        fputs(merge_usage, stderr);
                        return CTL_EXIT_USAGE;
                }
        }
        if (optind != argc - 1) {
                fprintf(stderr, "capsulectl config merge: expected exactly one FILE\n%s",
                        merge_usage);
                return CTL_EXIT_USAGE;
        }
        if (!have_path(ctl, "merge"))
                return CTL_EXIT_ERROR;
        const char *from = argv[optind];
        struct cap_error err = {0};
        struct client_config src = {0}, dst = {0};
        int rc = CTL_EXIT_ERROR;
        if (client_config_load(from, &src, &err) < 0) {
                fprintf(stderr, "capsulectl config merge: %s\n", err.msg);
                goto out;
        }
        if (client_config_load(ctl->config_path, &dst, &err) < 0 && err.code != -ENOENT) {
                fprintf(stderr, "capsulectl config merge: %s\nhint: fix or move that file first\n",
                        err.msg);
                goto out;
        }
        for (size_t i = 0; i < src.n_contexts; i++) {
                if (client_config_add(&dst, &src.contexts[i], force, &err) < 0) {
                        fprintf(stderr,
                                "capsulectl config merge: %s in %s; pass --force to replace it\n",
                                err.msg, ctl->config_path);
                        goto out;
                }
        }
        const struct client_context *cur = client_config_find(&src, NULL);
        if (use && cur && client_config_use(&dst, cur->name, &err) < 0) {
                fprintf(stderr, "capsulectl config merge: %s\n", err.msg);
                goto out;
        }
        if (client_config_save(ctl->config_path, &dst, &err) < 0) {
                fprintf(stderr, "capsulectl config merge: %s\n", err.msg);
                goto out;
        }
        for (size_t i = 0; i < src.n_contexts; i++) {
                _cleanup_free_ char *line = client_context_endpoints_line(&src.contexts[i]);
                printf("Added context \"%s\" (%s) to %s.\n", src.contexts[i].name,
                       line ? line : "", ctl->config_path);
        }
        printf("Current context: %s\n", dst.current_context ? dst.current_context : "(none)");
        rc = CTL_EXIT_OK;
out:
        client_config_free(&src);
        client_config_free(&dst);
        return rc;
}

int cmd_config(struct ctl *ctl, int argc, char **argv)
{
        if (argc < 2) {
                fputs(config_usage, stderr);
                return CTL_EXIT_USAGE;
        }
        const char *sub = argv[1];
        if (strcmp(sub, "contexts") == 0 || strcmp(sub, "get-contexts") == 0)
                return config_contexts(ctl, argc - 1, argv + 1);
        if (strcmp(sub, "use-context") == 0 || strcmp(sub, "use") == 0)
                return config_use_context(ctl, argc - 1, argv + 1);
        if (strcmp(sub, "merge") == 0)
                return config_merge(ctl, argc - 1, argv + 1);
        if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0) {
                fputs(config_usage, stdout);
                return CTL_EXIT_OK;
        }
        fprintf(stderr, "capsulectl config: unknown subcommand \"%s\"\n%s", sub, config_usage);
        return CTL_EXIT_USAGE;
}
