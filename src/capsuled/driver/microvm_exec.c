/* Exec into a microVM, behind the driver interface's exec ops (driver.h), so serve/exec.c treats
 * both kinds alike: the process runs in the VM, started by capsule-guest's own Exec
 * (capsule.guest.v1, over vsock), and this side pumps the FIFOs serve made to and from that
 * stream. Two threads per exec: `out` copies the guest's stdout, stderr and exit code to the
 * output FIFOs (closing them at the exit, which is the EOF serve's pump waits for); `in` copies
 * the stdin FIFO to the guest and half-closes the guest's stdin at its EOF. Cancelling the guest
 * stream (exec_kill, or a delete before the exit) makes the guest kill the process. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "capsule/guest/v1/guest.pb-c.h"
#include "common/log.h"
#include "driver.h"
#include "microvm.h"
#include "microvm/driver.h"
#include "rpc/rpc.h"
#include "common/deadline.h"

struct driver_exec {
        struct rpc_client *client;
        struct rpc_stream *guest;
        pthread_mutex_t send_lock; /* the guest stream's sends: stdin (in) vs resize/close */
        pthread_mutex_t lock;      /* exited, exit_status */
        pthread_cond_t cond;
        bool exited;
        uint32_t exit_status;
        bool stdin_closed;
        int out_fd, err_fd, in_fd;
        int wake[2]; /* in's poll: written to end it */
        pthread_t out, in;
        bool out_started, in_started;
};

static int guest_send(struct driver_exec *x, Capsule__Guest__V1__ExecRequest *g, struct cap_error *err)
{
        pthread_mutex_lock(&x->send_lock);
        int r = rpc_stream_send(x->guest, &g->base, err);
        pthread_mutex_unlock(&x->send_lock);
        return r;
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
        while (fd >= 0 && n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return; /* nobody reads any more: drop */
                p += w;
                n -= (size_t)w;
        }
}

static void set_exited(struct driver_exec *x, uint32_t status)
{
        pthread_mutex_lock(&x->lock);
        if (!x->exited) {
                x->exited = true;
                x->exit_status = status;
        }
        pthread_cond_broadcast(&x->cond);
        pthread_mutex_unlock(&x->lock);
}

static void *out_main(void *arg)
{
        struct driver_exec *x = arg;
        ProtobufCMessage *m = NULL;
        struct cap_error err = {0};
        uint32_t status = 255; /* the stream ended without an exit code: the guest went away */
        while (rpc_stream_recv(x->guest, &m, &err) == 1) {
                Capsule__Guest__V1__ExecResponse *g = (Capsule__Guest__V1__ExecResponse *)m;
                bool done = false;
                switch (g->msg_case) {
                case CAPSULE__GUEST__V1__EXEC_RESPONSE__MSG_STDOUT:
                        write_all(x->out_fd, g->stdout.data, g->stdout.len);
                        break;
                case CAPSULE__GUEST__V1__EXEC_RESPONSE__MSG_STDERR:
                        write_all(x->err_fd >= 0 ? x->err_fd : x->out_fd, g->stderr.data, g->stderr.len);
                        break;
                case CAPSULE__GUEST__V1__EXEC_RESPONSE__MSG_EXIT_CODE:
                        status = (uint32_t)g->exit_code;
                        done = true;
                        break;
                default: break;
                }
                protobuf_c_message_free_unpacked(m, NULL);
                if (done) {
                        pthread_mutex_lock(&x->send_lock);
                        rpc_stream_close_send(x->guest, &err); /* the guest then ends the call */
                        pthread_mutex_unlock(&x->send_lock);
                        break;
                }
        }
        /* EOF on the output FIFOs: serve's pump drains them and then sends the exit code */
        if (x->out_fd >= 0)
                close(x->out_fd);
        if (x->err_fd >= 0)
                close(x->err_fd);
        x->out_fd = x->err_fd = -1;
        set_exited(x, status);
        return NULL;
}

static void close_guest_stdin(struct driver_exec *x)
{
        pthread_mutex_lock(&x->lock);
        bool was = x->stdin_closed;
        x->stdin_closed = true;
        pthread_mutex_unlock(&x->lock);
        if (was)
                return;
        Capsule__Guest__V1__ExecRequest g = CAPSULE__GUEST__V1__EXEC_REQUEST__INIT;
        g.msg_case = CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_CLOSE_STDIN;
        g.close_stdin = true;
        struct cap_error err = {0};
        guest_send(x, &g, &err);
}

static void *in_main(void *arg)
{
        struct driver_exec *x = arg;
        uint8_t buf[32 * 1024];
        for (;;) {
                struct pollfd p[2] = {{.fd = x->in_fd, .events = POLLIN}, {.fd = x->wake[0], .events = POLLIN}};
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[1].revents)
                        return NULL; /* exec_delete */
                ssize_t n = read(x->in_fd, buf, sizeof(buf));
                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (n <= 0)
                        break; /* serve closed its end: the client's stdin ended */
                Capsule__Guest__V1__ExecRequest g = CAPSULE__GUEST__V1__EXEC_REQUEST__INIT;
                g.msg_case = CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_STDIN;
                g.stdin.data = buf;
                g.stdin.len = (size_t)n;
                struct cap_error err = {0};
                if (guest_send(x, &g, &err) < 0)
                        return NULL;
        }
        close_guest_stdin(x);
        return NULL;
}

static void exec_free(struct driver_exec *x)
{
        if (x->in_started) {
                if (write(x->wake[1], "x", 1) < 0) { /* in_main returns at its next poll */
                }
                pthread_join(x->in, NULL);
        }
        pthread_mutex_lock(&x->lock);
        bool running = !x->exited;
        pthread_mutex_unlock(&x->lock);
        if (x->guest && running)
                rpc_stream_cancel(x->guest); /* the guest kills the process */
        if (x->out_started)
                pthread_join(x->out, NULL);
        for (int *fd = &x->out_fd; fd <= &x->in_fd; fd++)
                if (*fd >= 0)
                        close(*fd);
        for (int i = 0; i < 2; i++)
                if (x->wake[i] >= 0)
                        close(x->wake[i]);
        rpc_stream_free(x->guest);
        rpc_client_free(x->client);
        pthread_mutex_destroy(&x->send_lock);
        pthread_mutex_destroy(&x->lock);
        pthread_cond_destroy(&x->cond);
        free(x);
}

int microvm_exec_start(struct workload_driver *d, const struct driver_exec_req *req, struct driver_exec **out,
                       uint32_t *pid, struct cap_error *err)
{
        *out = NULL;
        *pid = 0; /* the process is the guest's; no host pid */
        struct driver_exec *x = calloc(1, sizeof(*x));
        if (!x)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        x->out_fd = x->err_fd = x->in_fd = x->wake[0] = x->wake[1] = -1;
        pthread_mutex_init(&x->send_lock, NULL);
        pthread_mutex_init(&x->lock, NULL);
        pthread_cond_init(&x->cond, NULL);
        int rc = 0;
        if (!(x->client = vmd_guest_client(microvm_driver_vmd(d), req->name, err))) {
                rc = cap_error_prefix(err, "exec %s", req->name);
                goto fail;
        }
        x->guest = rpc_stream_open(x->client, "/capsule.guest.v1.Guest/Exec",
                                   &capsule__guest__v1__exec_response__descriptor, 0, err);
        if (!x->guest) {
                rc = cap_error_prefix(err, "exec %s: guest agent", req->name);
                goto fail;
        }
        /* serve holds the other ends open (read ends non-blocking, stdin read-write): no blocking */
        x->out_fd = open(req->stdout_path, O_WRONLY | O_CLOEXEC);
        if (req->stderr_path)
                x->err_fd = open(req->stderr_path, O_WRONLY | O_CLOEXEC);
        if (req->stdin_path)
                x->in_fd = open(req->stdin_path, O_RDONLY | O_CLOEXEC);
        if (x->out_fd < 0 || (req->stderr_path && x->err_fd < 0) || (req->stdin_path && x->in_fd < 0) ||
            pipe2(x->wake, O_CLOEXEC) < 0) {
                rc = cap_error_errno(err, -errno, "exec %s: open FIFOs", req->name);
                goto fail;
        }
        size_t argc = 0, envc = 0;
        while (req->argv[argc])
                argc++;
        while (req->env_extra && req->env_extra[envc])
                envc++;
        Capsule__Guest__V1__ExecStart gs = CAPSULE__GUEST__V1__EXEC_START__INIT;
        gs.command = (char **)req->argv;
        gs.n_command = argc;
        gs.env = (char **)req->env_extra;
        gs.n_env = envc;
        gs.tty = req->tty;
        gs.stdin = req->stdin_path != NULL;
        gs.rows = req->rows;
        gs.cols = req->cols;
        Capsule__Guest__V1__ExecRequest gr = CAPSULE__GUEST__V1__EXEC_REQUEST__INIT;
        gr.msg_case = CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_START;
        gr.start = &gs;
        if ((rc = guest_send(x, &gr, err)) < 0) {
                cap_error_prefix(err, "exec %s: guest agent", req->name);
                goto fail;
        }
        if (pthread_create(&x->out, NULL, out_main, x) != 0) {
                rc = cap_error_set(err, -EAGAIN, CAP_INTERNAL, "exec: cannot start thread");
                goto fail;
        }
        x->out_started = true;
        if (x->in_fd >= 0) {
                if (pthread_create(&x->in, NULL, in_main, x) != 0) {
                        rc = cap_error_set(err, -EAGAIN, CAP_INTERNAL, "exec: cannot start thread");
                        goto fail;
                }
                x->in_started = true;
        }
        *out = x;
        return 0;
fail:
        exec_free(x);
        return rc;
}

int microvm_exec_resize(struct workload_driver *d, struct driver_exec *x, uint32_t cols, uint32_t rows,
                        struct cap_error *err)
{
        (void)d;
        Capsule__Guest__V1__WindowSize ws = CAPSULE__GUEST__V1__WINDOW_SIZE__INIT;
        ws.rows = rows;
        ws.cols = cols;
        Capsule__Guest__V1__ExecRequest g = CAPSULE__GUEST__V1__EXEC_REQUEST__INIT;
        g.msg_case = CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_RESIZE;
        g.resize = &ws;
        struct cap_error ignored = {0};
        return guest_send(x, &g, err ? err : &ignored);
}

int microvm_exec_close_stdin(struct workload_driver *d, struct driver_exec *x, struct cap_error *err)
{
        (void)d;
        (void)err;
        /* serve closed its end of the stdin FIFO: `in` sees the EOF after the data before it and
         * half-closes then (sending it from here could overtake that data) */
        if (!x->in_started)
                close_guest_stdin(x);
        return 0;
}

int microvm_exec_wait(struct workload_driver *d, struct driver_exec *x, int timeout_ms, uint32_t *exit_status,
                      struct cap_error *err)
{
        (void)d;
        struct timespec until = deadline_in_ms(CLOCK_REALTIME, timeout_ms);
        int r = 0;
        pthread_mutex_lock(&x->lock);
        while (!x->exited && r == 0)
                r = timeout_ms > 0 ? pthread_cond_timedwait(&x->cond, &x->lock, &until)
                                   : pthread_cond_wait(&x->cond, &x->lock);
        if (x->exited)
                *exit_status = x->exit_status;
        bool exited = x->exited;
        pthread_mutex_unlock(&x->lock);
        if (!exited)
                return cap_error_set(err, -ETIMEDOUT, CAP_DEADLINE_EXCEEDED, "exec: still running");
        return 0;
}

int microvm_exec_kill(struct workload_driver *d, struct driver_exec *x, int sig, struct cap_error *err)
{
        (void)d;
        (void)sig; /* the guest's Exec has no signal message: cancelling the call kills it */
        (void)err;
        rpc_stream_cancel(x->guest);
        return 0;
}

void microvm_exec_delete(struct workload_driver *d, struct driver_exec *x)
{
        (void)d;
        if (x)
                exec_free(x);
}
