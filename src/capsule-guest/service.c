/* capsule.guest.v1.Guest, served over vsock (PID 1) or a unix socket (host mode): Status, Logs
 * (from the log ring, optionally following), Exec (a process in the workload's root, with pipes
 * or a pty, stdin in, output out, exit code last) and Stop (SIGTERM, grace, SIGKILL).
 *
 * Exec uses two threads: the handler reads the client's messages (stdin, resize, close_stdin)
 * until the client half-closes; a pump thread sends the output and then the exit code. A client
 * that cancels gets its process killed. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "capsule/guest/v1/guest.pb-c.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "guest.h"
#include "rpc.h"

#define LOGS_POLL_MS 200

static struct guest_ctx *ctx_of(struct rpc_call *call)
{
        return rpc_call_method(call)->userdata;
}

/* ---- Status ---- */

static int guest_status(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                        struct cap_error *err)
{
        struct guest_ctx *g = ctx_of(call);
        Capsule__Guest__V1__StatusResponse *r = (Capsule__Guest__V1__StatusResponse *)resp;
        pthread_mutex_lock(&g->lock);
        r->ready = g->ready;
        r->pid = (uint32_t)g->wl.pid;
        r->running = g->wl.pid > 0 && !g->wl.exited;
        r->exited = g->wl.exited;
        r->exit_code = g->wl.exit_code;
        r->started_unix_nano = g->wl.started_ns;
        r->exited_unix_nano = g->wl.exited_ns;
        pthread_mutex_unlock(&g->lock);
        r->log_dropped_bytes = logring_dropped(&g->ring);
        r->ip_address = strdup(g->ip);
        if (!r->ip_address)
                return cap_error_errno(err, -ENOMEM, "status");
        return 0;
}

/* ---- Logs ---- */

static int guest_logs(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        struct guest_ctx *g = ctx_of(call);
        const Capsule__Guest__V1__LogsRequest *q = (const Capsule__Guest__V1__LogsRequest *)req;
        if (q->tail < 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "tail: must not be negative (got %lld)", (long long)q->tail);
        uint64_t seq = logring_tail_seq(&g->ring, (uint64_t)q->tail);
        for (;;) {
                struct logring_chunk *c = NULL;
                int r = logring_next(&g->ring, &seq, q->follow ? LOGS_POLL_MS : 0, &c);
                if (r == -EPIPE)
                        return 0; /* the workload's output ended and everything was sent */
                if (r < 0)
                        return cap_error_errno(err, r, "logs");
                if (r == 0) {
                        if (!q->follow)
                                return 0;
                        if (rpc_call_cancelled(call))
                                return cap_error_set(err, -ECANCELED, CAP_CANCELLED,
                                                     "logs: cancelled");
                        continue;
                }
                Capsule__Guest__V1__LogChunk m = CAPSULE__GUEST__V1__LOG_CHUNK__INIT;
                m.data.data = c->data;
                m.data.len = c->len;
                m.stream = c->stream == LOGRING_STDOUT ? "stdout" : "stderr";
                m.time_unix_nano = c->time_ns;
                r = rpc_call_send(call, &m.base, err);
                free(c);
                if (r < 0)
                        return r;
        }
}

/* ---- Stop ---- */

static int guest_stop(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                      struct cap_error *err)
{
        struct guest_ctx *g = ctx_of(call);
        const Capsule__Guest__V1__StopRequest *q = (const Capsule__Guest__V1__StopRequest *)req;
        unsigned grace = q->grace_seconds;
        if (!grace && g->rc)
                grace = g->rc->stop_grace_seconds;
        if (!grace)
                grace = GUEST_DEFAULT_STOP_GRACE_S;
        log_info("stop requested (grace %us)", grace);
        if (!guest_workload_stop(g, grace))
                return cap_error_set(err, -ETIMEDOUT, CAP_INTERNAL,
                                     "stop: the workload did not exit after SIGKILL");
        return 0;
}

/* ---- Exec ---- */

struct exec_session {
        struct guest_ctx *g;
        struct rpc_call *call;
        pid_t pid;
        bool tty;
        int master_fd;          /* tty: the pty master (output and input) */
        int out_fd, err_fd;     /* pipes: output read ends */
        int stdin_fd;           /* pipes: stdin write end, -1 when closed or not requested */
        atomic_bool finished;   /* the pump sent the exit code */
};

static int exec_send(struct exec_session *s, int which, const uint8_t *data, size_t len,
                     int exit_code)
{
        Capsule__Guest__V1__ExecResponse m = CAPSULE__GUEST__V1__EXEC_RESPONSE__INIT;
        if (which == 1) {
                m.msg_case = CAPSULE__GUEST__V1__EXEC_RESPONSE__MSG_STDOUT;
                m.stdout = (ProtobufCBinaryData){.len = len, .data = (uint8_t *)data};
        } else if (which == 2) {
                m.msg_case = CAPSULE__GUEST__V1__EXEC_RESPONSE__MSG_STDERR;
                m.stderr = (ProtobufCBinaryData){.len = len, .data = (uint8_t *)data};
        } else {
                m.msg_case = CAPSULE__GUEST__V1__EXEC_RESPONSE__MSG_EXIT_CODE;
                m.exit_code = exit_code;
        }
        struct cap_error err = {0};
        return rpc_call_send(s->call, &m.base, &err);
}

static void *exec_pump(void *arg)
{
        struct exec_session *s = arg;
        struct pollfd pfd[2] = {{.fd = s->tty ? s->master_fd : s->out_fd, .events = POLLIN},
                                {.fd = s->tty ? -1 : s->err_fd, .events = POLLIN}};
        uint8_t buf[32768];
        bool client_gone = false;
        while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
                int n = poll(pfd, 2, -1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        break;
                for (int i = 0; i < 2; i++) {
                        if (pfd[i].fd < 0 || !pfd[i].revents)
                                continue;
                        ssize_t k = read(pfd[i].fd, buf, sizeof(buf));
                        if (k < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (k <= 0) { /* EOF, or EIO on a pty whose slave side is gone */
                                pfd[i].fd = -1;
                                continue;
                        }
                        if (!client_gone && exec_send(s, i + 1, buf, (size_t)k, 0) < 0)
                                client_gone = true; /* keep draining so the process is not stuck */
                }
        }
        int status = 0;
        guest_child_wait(s->g, s->pid, -1, &status);
        if (!client_gone)
                exec_send(s, 3, NULL, 0, guest_exit_code(status));
        atomic_store(&s->finished, true);
        return NULL;
}

static void write_all(int fd, const uint8_t *p, size_t len)
{
        while (len > 0) {
                ssize_t w = write(fd, p, len);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return; /* the process closed its stdin: drop the rest */
                p += w;
                len -= (size_t)w;
        }
}

/* Opens a pty pair sized rows x cols: *master and *slave (both O_CLOEXEC). */
static int open_pty(int *master, int *slave, unsigned rows, unsigned cols, struct cap_error *err)
{
        _cleanup_close_ int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (m < 0)
                return cap_error_errno(err, -errno, "exec: open pty");
        char name[64];
        if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof(name)) != 0)
                return cap_error_errno(err, -errno, "exec: set up pty");
        int sl = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (sl < 0)
                return cap_error_errno(err, -errno, "exec: open %s", name);
        if (rows && cols) {
                struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
                if (ioctl(m, TIOCSWINSZ, &ws) < 0)
                        log_warn("exec: TIOCSWINSZ: %s", strerror(errno));
        }
        *master = TAKE_FD(m);
        *slave = sl;
        return 0;
}

/* Starts the process for `start`; fills s's fds and pid. */
static int exec_spawn(struct exec_session *s, const Capsule__Guest__V1__ExecStart *start,
                      struct cap_error *err)
{
        struct guest_ctx *g = s->g;
        size_t n_base = 0; /* g->env is NULL-terminated */
        while (g->env && g->env[n_base])
                n_base++;
        char **env = guest_env_merge(g->env, n_base, start->env, start->n_env);
        if (!env)
                return cap_error_errno(err, -ENOMEM, "exec");
        _cleanup_free_ char **argv = calloc(start->n_command + 1, sizeof(char *));
        _cleanup_free_ gid_t *groups = calloc(g->rc->n_additional_gids + 1, sizeof(gid_t));
        if (!argv || !groups) {
                guest_env_free(env);
                return cap_error_errno(err, -ENOMEM, "exec");
        }
        memcpy(argv, start->command, start->n_command * sizeof(char *));
        for (size_t i = 0; i < g->rc->n_additional_gids; i++)
                groups[i] = g->rc->additional_gids[i];
        int child[3] = {-1, -1, -1}, slave = -1, r;
        if (s->tty) {
                r = open_pty(&s->master_fd, &slave, start->rows, start->cols, err);
                child[0] = child[1] = child[2] = slave;
        } else {
                int in[2] = {-1, -1}, out[2], er[2];
                r = 0;
                if ((start->stdin && pipe2(in, O_CLOEXEC) < 0) || pipe2(out, O_CLOEXEC) < 0)
                        r = cap_error_errno(err, -errno, "exec: pipe");
                else if (pipe2(er, O_CLOEXEC) < 0) {
                        r = cap_error_errno(err, -errno, "exec: pipe");
                        close(out[0]);
                        close(out[1]);
                }
                if (r < 0) {
                        if (in[0] >= 0) {
                                close(in[0]);
                                close(in[1]);
                        }
                } else {
                        child[0] = in[0];
                        s->stdin_fd = in[1];
                        child[1] = out[1];
                        s->out_fd = out[0];
                        child[2] = er[1];
                        s->err_fd = er[0];
                }
        }
        if (r == 0) {
                struct guest_spawn sp = {
                        .argv = argv, .envp = env, .chroot = g->chroot,
                        .cwd = g->rc->working_dir, .set_ids = getuid() == 0, .uid = g->rc->uid,
                        .gid = g->rc->gid, .groups = groups, .n_groups = g->rc->n_additional_gids,
                        .stdin_fd = child[0], .stdout_fd = child[1], .stderr_fd = child[2],
                        .ctty_fd = slave,
                };
                r = guest_spawn(g, &sp, &s->pid, err);
        }
        guest_env_free(env);
        if (s->tty) {
                if (slave >= 0)
                        close(slave);
        } else {
                for (int i = 0; i < 3; i++)
                        if (child[i] >= 0)
                                close(child[i]);
        }
        return r < 0 ? cap_error_prefix(err, "exec") : 0;
}

static void exec_close_stdin(struct exec_session *s)
{
        if (s->tty) {
                static const uint8_t eof = 0x04; /* VEOF at the start of a line ends input */
                if (s->master_fd >= 0)
                        write_all(s->master_fd, &eof, 1);
                return;
        }
        if (s->stdin_fd >= 0) {
                close(s->stdin_fd);
                s->stdin_fd = -1;
        }
}

static void exec_handle(struct exec_session *s, const Capsule__Guest__V1__ExecRequest *q)
{
        switch (q->msg_case) {
        case CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_STDIN:
                if (atomic_load(&s->finished))
                        break;
                if (s->tty && s->master_fd >= 0)
                        write_all(s->master_fd, q->stdin.data, q->stdin.len);
                else if (s->stdin_fd >= 0)
                        write_all(s->stdin_fd, q->stdin.data, q->stdin.len);
                break;
        case CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_RESIZE:
                if (s->tty && q->resize && q->resize->rows && q->resize->cols) {
                        struct winsize ws = {.ws_row = (unsigned short)q->resize->rows,
                                             .ws_col = (unsigned short)q->resize->cols};
                        if (ioctl(s->master_fd, TIOCSWINSZ, &ws) < 0)
                                log_warn("exec: TIOCSWINSZ: %s", strerror(errno));
                }
                break;
        case CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_CLOSE_STDIN: exec_close_stdin(s); break;
        default: break;
        }
}

static int exec_first(struct rpc_call *call, Capsule__Guest__V1__ExecRequest **first,
                      struct cap_error *err)
{
        ProtobufCMessage *m = NULL;
        int r = rpc_call_recv(call, &m, err);
        if (r < 0)
                return r;
        if (r == 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "exec: the first message must be start");
        Capsule__Guest__V1__ExecRequest *q = (Capsule__Guest__V1__ExecRequest *)m;
        if (q->msg_case != CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_START || !q->start ||
            q->start->n_command == 0 || !q->start->command[0][0]) {
                protobuf_c_message_free_unpacked(m, NULL);
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "exec: the first message must be start with a command");
        }
        *first = q;
        return 0;
}

static int guest_exec(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        struct guest_ctx *g = ctx_of(call);
        pthread_mutex_lock(&g->lock);
        bool ready = g->ready;
        pthread_mutex_unlock(&g->lock);
        if (!ready)
                return cap_error_set(err, -EAGAIN, CAP_FAILED_PRECONDITION,
                                     "exec: the guest is not ready yet");
        Capsule__Guest__V1__ExecRequest *first = NULL;
        int r = exec_first(call, &first, err);
        if (r < 0)
                return r;
        struct exec_session s = {.g = g, .call = call, .tty = first->start->tty,
                                 .master_fd = -1, .out_fd = -1, .err_fd = -1, .stdin_fd = -1};
        r = exec_spawn(&s, first->start, err);
        protobuf_c_message_free_unpacked(&first->base, NULL);
        if (r < 0)
                return r;
        pthread_t pump;
        if (pthread_create(&pump, NULL, exec_pump, &s) != 0) {
                kill(-s.pid, SIGKILL);
                int st;
                guest_child_wait(g, s.pid, -1, &st);
                r = cap_error_set(err, -EAGAIN, CAP_INTERNAL, "exec: cannot start thread");
                goto out;
        }
        ProtobufCMessage *m;
        struct cap_error rerr = {0};
        while ((r = rpc_call_recv(call, &m, &rerr)) == 1) {
                exec_handle(&s, (Capsule__Guest__V1__ExecRequest *)m);
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (r < 0 && !atomic_load(&s.finished))
                kill(-s.pid, SIGKILL); /* the client went away: do not leave its process */
        else if (!s.tty)
                exec_close_stdin(&s); /* half-close ends stdin */
        pthread_join(pump, NULL);
        r = 0;
out:
        if (s.stdin_fd >= 0)
                close(s.stdin_fd);
        if (s.master_fd >= 0)
                close(s.master_fd);
        if (s.out_fd >= 0)
                close(s.out_fd);
        if (s.err_fd >= 0)
                close(s.err_fd);
        return r;
}

int guest_service_register(struct rpc_server *srv, struct guest_ctx *g, struct cap_error *err)
{
        const struct rpc_method methods[] = {
                {.path = "/capsule.guest.v1.Guest/Status", .kind = RPC_UNARY,
                 .req_desc = &capsule__guest__v1__status_request__descriptor,
                 .resp_desc = &capsule__guest__v1__status_response__descriptor,
                 .unary = guest_status, .userdata = g},
                {.path = "/capsule.guest.v1.Guest/Logs", .kind = RPC_SERVER_STREAM,
                 .req_desc = &capsule__guest__v1__logs_request__descriptor,
                 .resp_desc = &capsule__guest__v1__log_chunk__descriptor,
                 .stream = guest_logs, .userdata = g},
                {.path = "/capsule.guest.v1.Guest/Exec", .kind = RPC_BIDI,
                 .req_desc = &capsule__guest__v1__exec_request__descriptor,
                 .resp_desc = &capsule__guest__v1__exec_response__descriptor,
                 .flags = RPC_METHOD_MUTATING, .stream = guest_exec, .userdata = g},
                {.path = "/capsule.guest.v1.Guest/Stop", .kind = RPC_UNARY,
                 .req_desc = &capsule__guest__v1__stop_request__descriptor,
                 .resp_desc = &capsule__guest__v1__stop_response__descriptor,
                 .flags = RPC_METHOD_MUTATING | RPC_METHOD_BLOCKING, .unary = guest_stop,
                 .userdata = g},
        };
        return rpc_server_add_methods(srv, methods, ARRAY_SIZE(methods), err);
}
