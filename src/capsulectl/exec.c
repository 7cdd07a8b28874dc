/* `capsulectl exec [-i] [-t] NAME -- CMD...`: runs a command in a workload.
 * With -t the local terminal goes to raw mode and window size changes are forwarded; the exit
 * code of the remote command becomes capsulectl's. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "capsule/v1/workloads.pb-c.h"
#include "capsulectl.h"
#include "rpc/rpc.h"

static const char exec_usage[] =
        "usage: capsulectl exec [-i] [-t] [-e K=V]... NAME -- CMD [ARG...]\n\n"
        "Runs CMD inside the running workload NAME and exits with its exit code. Everything after\n"
        "\"--\" is the command, options like -o included. With several capsules (--capsule a,b) it\n"
        "runs on each, output lines prefixed \"[node] \" (not with -i or -t).\n\n"
        "Options:\n"
        "  -i, --stdin     pass this terminal's input to the command (default: none)\n"
        "  -t, --tty       allocate a terminal (raw mode, window resize); use with -i for a shell\n"
        "                  (default: no terminal)\n"
        "  -e, --env K=V   extra environment variable, may be repeated (default: the workload's)\n\n"
        "Examples:\n"
        "  capsulectl exec -it web -- sh\n"
        "  capsulectl exec web -- cat /etc/os-release\n";

static int winch_pipe[2] = {-1, -1};

static void on_winch(int sig)
{
        (void)sig;
        char c = 1;
        ssize_t w = write(winch_pipe[1], &c, 1);
        (void)w;
}

struct pump {
        struct rpc_stream *s;
        bool tty;
        int stop_fd; /* readable when the main thread wants the pump to end */
};

void ctl_terminal_size(uint32_t *rows, uint32_t *cols)
{
        struct winsize ws;
        if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
                *rows = ws.ws_row;
                *cols = ws.ws_col;
        }
}

/* Copies stdin (and window changes) to the stream until EOF, then half-closes. */
static void *stdin_pump(void *arg)
{
        struct pump *p = arg;
        char buf[16 * 1024];
        struct cap_error err = {0};
        for (;;) {
                struct pollfd pf[3] = {{.fd = STDIN_FILENO, .events = POLLIN},
                                       {.fd = winch_pipe[0], .events = POLLIN},
                                       {.fd = p->stop_fd, .events = POLLIN}};
                if (poll(pf, 3, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (pf[2].revents)
                        return NULL;
                if (pf[1].revents & POLLIN) {
                        char c;
                        while (read(winch_pipe[0], &c, 1) == 1)
                                ;
                        Capsule__V1__WindowSize ws = CAPSULE__V1__WINDOW_SIZE__INIT;
                        ctl_terminal_size(&ws.rows, &ws.cols);
                        Capsule__V1__ExecRequest q = CAPSULE__V1__EXEC_REQUEST__INIT;
                        q.msg_case = CAPSULE__V1__EXEC_REQUEST__MSG_RESIZE;
                        q.resize = &ws;
                        if (rpc_stream_send(p->s, &q.base, &err) < 0)
                                return NULL;
                }
                if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0)
                                break;
                        Capsule__V1__ExecRequest q = CAPSULE__V1__EXEC_REQUEST__INIT;
                        q.msg_case = CAPSULE__V1__EXEC_REQUEST__MSG_STDIN;
                        q.stdin.data = (uint8_t *)buf;
                        q.stdin.len = (size_t)n;
                        if (rpc_stream_send(p->s, &q.base, &err) < 0)
                                return NULL;
                }
        }
        rpc_stream_close_send(p->s, &err);
        return NULL;
}

static void write_out(FILE *f, const uint8_t *d, size_t len)
{
        fwrite(d, 1, len, f);
        fflush(f);
}

int cmd_exec(struct ctl *ctl, int argc, char **argv)
{
        bool in = false, tty = false;
        char **env = calloc((size_t)argc + 1, sizeof(char *));
        size_t n_env = 0;
        const char *name = NULL;
        int i = 1;
        if (!env)
                return CTL_EXIT_ERROR;
        /* options and NAME in any order; the command follows "--" */
        for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
                const char *a = argv[i];
                if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                        fputs(exec_usage, stdout);
                        free(env);
                        return CTL_EXIT_OK;
                } else if ((strcmp(a, "-e") == 0 || strcmp(a, "--env") == 0) && i + 1 < argc &&
                           strchr(argv[i + 1], '=')) {
                        env[n_env++] = argv[++i];
                } else if (strncmp(a, "--env=", 6) == 0 && strchr(a + 6, '=')) {
                        env[n_env++] = (char *)a + 6;
                } else if (strcmp(a, "--stdin") == 0) {
                        in = true;
                } else if (strcmp(a, "--tty") == 0) {
                        tty = true;
                } else if (a[0] == '-' && a[1] && a[1] != '-' && strspn(a + 1, "it") == strlen(a + 1)) {
                        in |= strchr(a, 'i') != NULL;
                        tty |= strchr(a, 't') != NULL;
                } else if (a[0] != '-' && !name) {
                        name = a;
                } else {
                        fprintf(ctl->err, "capsulectl exec: unexpected argument %s\n%s", a, exec_usage);
                        free(env);
                        return CTL_EXIT_USAGE;
                }
        }
        if (!name || i + 1 >= argc) {
                fprintf(ctl->err, "capsulectl exec: expected NAME -- CMD\n%s", exec_usage);
                free(env);
                return CTL_EXIT_USAGE;
        }
        if ((in || tty) && ctl->n_nodes > 1) {
                fprintf(ctl->err, "capsulectl exec: -i and -t need one capsule (this line names %zu); "
                                  "pick one with --capsule HOST:PORT\n", ctl->n_nodes);
                free(env);
                return CTL_EXIT_USAGE;
        }
        char **cmd = &argv[i + 1];
        size_t n_cmd = (size_t)(argc - i - 1);
        if (tty && !isatty(STDIN_FILENO))
                tty = false; /* like docker: no terminal to put in raw mode */

        Capsule__V1__ExecStart st = CAPSULE__V1__EXEC_START__INIT;
        st.name = (char *)name;
        st.command = cmd;
        st.n_command = n_cmd;
        st.tty = tty;
        st.stdin = in;
        st.env = env;
        st.n_env = n_env;
        if (tty)
                ctl_terminal_size(&st.rows, &st.cols);
        Capsule__V1__ExecRequest q = CAPSULE__V1__EXEC_REQUEST__INIT;
        q.msg_case = CAPSULE__V1__EXEC_REQUEST__MSG_START;
        q.start = &st;
        int rc = ctl_exec_session(ctl, "exec", "/capsule.v1.Workloads/Exec", &q, in, tty);
        free(env);
        return rc;
}

int ctl_exec_session(struct ctl *ctl, const char *verb, const char *method,
                     const Capsule__V1__ExecRequest *first, bool in, bool tty)
{
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        struct cap_error err = {0};
        struct rpc_stream *s = rpc_stream_open(c, method, &capsule__v1__exec_response__descriptor,
                                               0, &err);
        if (!s || rpc_stream_send(s, &first->base, &err) < 0) {
                ctl_print_error(ctl, verb, &err);
                rpc_stream_free(s);
                return CTL_EXIT_ERROR;
        }
        if (!in)
                rpc_stream_close_send(s, &err);

        struct termios saved;
        bool raw = false;
        int stop[2] = {-1, -1};
        pthread_t th;
        bool th_started = false;
        struct pump p = {.s = s, .tty = tty};
        if (in) {
                if (pipe2(winch_pipe, O_CLOEXEC | O_NONBLOCK) < 0 || pipe2(stop, O_CLOEXEC) < 0) {
                        fprintf(ctl->err, "capsulectl %s: pipe: %s\n", verb, strerror(errno));
                        rpc_stream_free(s);
                        return CTL_EXIT_ERROR;
                }
                p.stop_fd = stop[0];
                if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
                        struct termios r = saved;
                        cfmakeraw(&r);
                        raw = tcsetattr(STDIN_FILENO, TCSANOW, &r) == 0;
                        signal(SIGWINCH, on_winch);
                }
                th_started = pthread_create(&th, NULL, stdin_pump, &p) == 0;
        }
        int exit_code = -1;
        ProtobufCMessage *m;
        int r;
        while ((r = rpc_stream_recv(s, &m, &err)) == 1) {
                Capsule__V1__ExecResponse *resp = (Capsule__V1__ExecResponse *)m;
                if (resp->msg_case == CAPSULE__V1__EXEC_RESPONSE__MSG_STDOUT)
                        write_out(ctl->out, resp->stdout.data, resp->stdout.len);
                else if (resp->msg_case == CAPSULE__V1__EXEC_RESPONSE__MSG_STDERR)
                        write_out(ctl->err, resp->stderr.data, resp->stderr.len);
                else if (resp->msg_case == CAPSULE__V1__EXEC_RESPONSE__MSG_EXIT_CODE) {
                        exit_code = resp->exit_code;
                        /* the command is done: stop sending, let the server end the call */
                        if (th_started) {
                                ssize_t w = write(stop[1], "x", 1);
                                (void)w;
                                pthread_join(th, NULL);
                                th_started = false;
                        }
                        rpc_stream_close_send(s, &err);
                }
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (th_started) {
                ssize_t w = write(stop[1], "x", 1);
                (void)w;
                pthread_join(th, NULL);
        }
        if (raw)
                tcsetattr(STDIN_FILENO, TCSANOW, &saved);
        if (r < 0)
                ctl_print_error(ctl, verb, &err);
        rpc_stream_free(s);
        for (int k = 0; k < 2; k++) {
                if (stop[k] >= 0)
                        close(stop[k]);
                if (winch_pipe[k] >= 0)
                        close(winch_pipe[k]);
        }
        if (r < 0)
                return CTL_EXIT_ERROR;
        if (exit_code < 0) {
                fprintf(ctl->err, "capsulectl %s: the stream ended without an exit code\n", verb);
                return CTL_EXIT_ERROR;
        }
        return exit_code > 255 ? 255 : exit_code;
}
