/* `capsulectl debug [--image IMG] [--target WORKLOAD] [-- CMD...]`: a privileged debug container
 * on the capsule, as `talosctl debug` gives: the host's (or a Container workload's) pid, net, ipc
 * and uts namespaces, the host's / at /host, removed when the session ends. Streams like
 * `exec -i` (and `-t` when stdin is a terminal) through the same session code (exec.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capsule/v1/workloads.pb-c.h"
#include "capsulectl.h"

#define DEBUG_DEFAULT_IMAGE "busybox"

static const char debug_usage[] =
    "usage: capsulectl debug [--image IMG] [--target WORKLOAD] [-e K=V]... [-- CMD [ARG...]]\n\n"
    "Starts a privileged debug container on the capsule and attaches this terminal to it (a\n"
    "terminal when stdin is one, like exec -it; otherwise stdin is passed through). It runs in\n"
    "the host's pid, network, ipc and uts namespaces, or with --target in those of a running\n"
    "Container workload; the host's root filesystem is mounted read-write at /host. It has every\n"
    "capability and no seccomp filter. The container is removed when the session ends. Admin\n"
    "role only; every use is an event (capsulectl events). The image must be present on the\n"
    "capsule (it is never pulled): capsulectl image push ARCHIVE first. Exits with CMD's exit\n"
    "code.\n\n"
    "Options:\n"
    "  --image IMG         image to run (default: busybox, i.e. docker.io/library/busybox:latest)\n"
    "  --target WORKLOAD   join this Container workload's namespaces instead of the host's\n"
    "                      (default: the host's; MicroVMs: use capsulectl exec)\n"
    "  -e, --env K=V       extra environment variable, may be repeated (default: the image's)\n\n"
    "Examples:\n"
    "  capsulectl debug --image busybox -- sh\n"
    "  capsulectl debug -- cat /host/etc/os-release\n"
    "  capsulectl debug --target web -- netstat -tln\n";

int cmd_debug(struct ctl *ctl, int argc, char **argv)
{
        const char *image = DEBUG_DEFAULT_IMAGE, *target = NULL;
        char **env = calloc((size_t)argc + 1, sizeof(char *));
        size_t n_env = 0;
        int i = 1;
        if (!env)
                return CTL_EXIT_ERROR;
        for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
                const char *a = argv[i];
                if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                        fputs(debug_usage, ctl->out);
                        free(env);
                        return CTL_EXIT_OK;
                } else if (strcmp(a, "--image") == 0 && i + 1 < argc) {
                        image = argv[++i];
                } else if (strncmp(a, "--image=", 8) == 0) {
                        image = a + 8;
                } else if (strcmp(a, "--target") == 0 && i + 1 < argc) {
                        target = argv[++i];
                } else if (strncmp(a, "--target=", 9) == 0) {
                        target = a + 9;
                } else if ((strcmp(a, "-e") == 0 || strcmp(a, "--env") == 0) && i + 1 < argc &&
                           strchr(argv[i + 1], '=')) {
                        env[n_env++] = argv[++i];
                } else if (strncmp(a, "--env=", 6) == 0 && strchr(a + 6, '=')) {
                        env[n_env++] = (char *)a + 6;
                } else {
                        fprintf(ctl->err, "capsulectl debug: unexpected argument %s\n%s", a,
                                debug_usage);
                        free(env);
                        return CTL_EXIT_USAGE;
                }
        }
        if (!*image || (target && !*target)) {
                fprintf(ctl->err, "capsulectl debug: --%s needs a value\n%s",
                        *image ? "target" : "image", debug_usage);
                free(env);
                return CTL_EXIT_USAGE;
        }
        if (ctl->n_nodes > 1) {
                fprintf(ctl->err,
                        "capsulectl debug: needs one capsule (this line names %zu); pick one "
                        "with --capsule HOST:PORT\n",
                        ctl->n_nodes);
                free(env);
                return CTL_EXIT_USAGE;
        }
        bool tty = isatty(STDIN_FILENO);
        Capsule__V1__DebugStart st = CAPSULE__V1__DEBUG_START__INIT;
        st.image = (char *)image;
        st.target = (char *)(target ? target : "");
        st.command = i < argc ? &argv[i + 1] : NULL;
        st.n_command = i < argc ? (size_t)(argc - i - 1) : 0;
        st.tty = tty;
        st.stdin = true;
        st.env = env;
        st.n_env = n_env;
        if (tty)
                ctl_terminal_size(&st.rows, &st.cols);
        Capsule__V1__ExecRequest q = CAPSULE__V1__EXEC_REQUEST__INIT;
        q.msg_case = CAPSULE__V1__EXEC_REQUEST__MSG_DEBUG;
        q.debug = &st;
        int rc = ctl_exec_session(ctl, "debug", "/capsule.v1.Workloads/Debug", &q, true, tty);
        free(env);
        return rc;
}
