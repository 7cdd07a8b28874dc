/* capsule.v1.Workloads/Exec: runs a command in a running workload, streaming stdin in and
 * stdout/stderr out, with an optional TTY (resize supported), and ends with the exit code. The
 * process is started and waited for through the exec ops of the workload's driver
 * (driver/driver.h), connected to FIFOs made here.
 *
 * capsule.v1.Workloads/Debug is the same session around another process: the main process of a
 * privileged debug container (`capsulectl debug`) that the container driver creates for the
 * session (debug_start) and removes when it ends (exec_delete), whatever ends it. Each use is
 * an event (who, image, target; start and end with the exit code). Leftovers of a serve that
 * died mid-session are removed at the next start (serve_debug_cleanup).
 *
 * Three threads per exec: this handler reads the client's messages (stdin, resize, half-close);
 * a pump thread copies the process's output FIFOs to the client; a waiter thread waits for the
 * process to exit. The pump sends the exit code once the output is drained. A client that
 * half-closes only ends stdin; a client that cancels kills the process. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "capsule/v1/workloads.pb-c.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "common/names.h"
#include "containerd/driver.h"
#include "driver/driver.h"
#include "events.h"
#include "serve.h"

#define EXEC_DRAIN_MS 2000

static atomic_uint exec_counter;

struct exec_session {
        struct serve_ctx *ctx;
        struct rpc_call *call;
        struct workload_driver *drv; /* the workload's kind's */
        struct driver_exec *x;       /* the process, once started */
        char name[64];
        char exec_id[32];
        char dir[4096];
        char stdin_path[4200], stdout_path[4200], stderr_path[4200];
        int stdin_fd, stdout_fd, stderr_fd;
        bool tty;
        atomic_bool exited;
        uint32_t exit_status;
        pthread_t pump, waiter;
        bool pump_started, waiter_started;
        /* Debug sessions */
        bool debug;
        char image[512];
        char target[64]; /* "" for the host's namespaces */
        char who[256];   /* the client certificate's CN */
};

static void *waiter_thread(void *arg)
{
        struct exec_session *s = arg;
        struct cap_error err = {0};
        uint32_t status = 255;
        if (s->drv->ops->exec_wait(s->drv, s->x, 0, &status, &err) < 0)
                log_warn("exec %s/%s: wait: %s", s->name, s->exec_id, err.msg);
        s->exit_status = status;
        atomic_store(&s->exited, true);
        return NULL;
}

static int send_output(struct exec_session *s, bool is_stderr, const uint8_t *data, size_t len)
{
        Capsule__V1__ExecResponse r = CAPSULE__V1__EXEC_RESPONSE__INIT;
        if (is_stderr) {
                r.msg_case = CAPSULE__V1__EXEC_RESPONSE__MSG_STDERR;
                r.stderr.data = (uint8_t *)data;
                r.stderr.len = len;
        } else {
                r.msg_case = CAPSULE__V1__EXEC_RESPONSE__MSG_STDOUT;
                r.stdout.data = (uint8_t *)data;
                r.stdout.len = len;
        }
        struct cap_error err = {0};
        return rpc_call_send(s->call, &r.base, &err);
}

static int64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *pump_thread(void *arg)
{
        struct exec_session *s = arg;
        int fds[2] = {s->stdout_fd, s->stderr_fd};
        uint8_t buf[32 * 1024];
        int64_t exited_at = 0;
        bool client_gone = false;
        for (;;) {
                struct pollfd p[2] = {{.fd = fds[0], .events = POLLIN}, {.fd = fds[1], .events = POLLIN}};
                if (fds[0] < 0 && fds[1] < 0)
                        break;
                int n = poll(p, 2, 100);
                if (n < 0 && errno != EINTR)
                        break;
                for (int i = 0; i < 2; i++) {
                        if (fds[i] < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        ssize_t r = read(fds[i], buf, sizeof(buf));
                        if (r > 0) {
                                if (!client_gone && send_output(s, i == 1, buf, (size_t)r) < 0)
                                        client_gone = true;
                        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                                fds[i] = -1; /* EOF: the shim closed its end */
                        }
                }
                if (atomic_load(&s->exited)) {
                        if (!exited_at)
                                exited_at = mono_ms();
                        else if (mono_ms() - exited_at > EXEC_DRAIN_MS)
                                break; /* something else holds the output open */
                }
        }
        pthread_join(s->waiter, NULL);
        s->waiter_started = false;
        if (!client_gone) {
                Capsule__V1__ExecResponse r = CAPSULE__V1__EXEC_RESPONSE__INIT;
                r.msg_case = CAPSULE__V1__EXEC_RESPONSE__MSG_EXIT_CODE;
                r.exit_code = (int32_t)s->exit_status;
                struct cap_error err = {0};
                rpc_call_send(s->call, &r.base, &err);
        }
        return NULL;
}

static int make_fifo(const char *path, struct cap_error *err)
{
        if (mkfifo(path, 0600) < 0 && errno != EEXIST)
                return cap_error_errno(err, -errno, "mkfifo %s", path);
        return 0;
}

static void session_cleanup(struct exec_session *s)
{
        if (s->stdin_fd >= 0)
                close(s->stdin_fd);
        if (s->stdout_fd >= 0)
                close(s->stdout_fd);
        if (s->stderr_fd >= 0)
                close(s->stderr_fd);
        unlink(s->stdin_path);
        unlink(s->stdout_path);
        unlink(s->stderr_path);
        rmdir(s->dir);
}

/* Makes s->dir (under ROOT/run) with the session's FIFOs and opens this side of them: stdout,
 * stderr unless s->tty, stdin if want_stdin. */
static int session_fifos(struct exec_session *s, bool want_stdin, struct cap_error *err)
{
        char run[4200];
        snprintf(run, sizeof(run), "%s/run", s->ctx->root);
        if ((mkdir(run, 0700) < 0 && errno != EEXIST) || mkdir(s->dir, 0700) < 0)
                return cap_error_errno(err, -errno, "exec: mkdir %s", s->dir);
        snprintf(s->stdout_path, sizeof(s->stdout_path), "%s/stdout", s->dir);
        if (make_fifo(s->stdout_path, err) < 0)
                return err->code;
        s->stdout_fd = open(s->stdout_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (!s->tty) {
                snprintf(s->stderr_path, sizeof(s->stderr_path), "%s/stderr", s->dir);
                if (make_fifo(s->stderr_path, err) < 0)
                        return err->code;
                s->stderr_fd = open(s->stderr_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        }
        if (want_stdin) {
                snprintf(s->stdin_path, sizeof(s->stdin_path), "%s/stdin", s->dir);
                if (make_fifo(s->stdin_path, err) < 0)
                        return err->code;
                /* non-blocking: a process that stops reading its stdin must not block this
                 * handler on a full FIFO (see write_stdin) */
                s->stdin_fd = open(s->stdin_path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        }
        if (s->stdout_fd < 0 || (!s->tty && s->stderr_fd < 0) || (want_stdin && s->stdin_fd < 0))
                return cap_error_errno(err, -errno, "exec: open FIFOs in %s", s->dir);
        return 0;
}

/* Validates the start message and starts the process. */
static int exec_begin(struct exec_session *s, const Capsule__V1__ExecStart *st, struct cap_error *err)
{
        struct serve_ctx *ctx = s->ctx;
        if (name_check("name", st->name, err) < 0)
                return err->code;
        if (st->n_command == 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "command: required (e.g. -- sh)");
        struct store_workload w;
        if (store_get_workload(ctx->store, st->name, &w, err) < 0)
                return err->code;
        Capsule__V1__WorkloadSpec *spec =
            capsule__v1__workload_spec__unpack(NULL, w.spec_len, w.spec);
        store_workload_free(&w);
        if (!spec)
                return cap_error_set(err, -EIO, CAP_INTERNAL,
                                     "workload %s: stored spec does not decode", st->name);
        const char *why = NULL;
        s->drv = driver_for_kind(&ctx->drivers, spec->kind, &why);
        capsule__v1__workload_spec__free_unpacked(spec, NULL);
        if (!s->drv)
                return cap_error_set(err, -ENOTCONN, CAP_FAILED_PRECONDITION, "%s", why);
        snprintf(s->name, sizeof(s->name), "%s", st->name);
        snprintf(s->exec_id, sizeof(s->exec_id), "exec-%u-%u", (unsigned)getpid(), atomic_fetch_add(&exec_counter, 1));
        s->tty = st->tty;
        snprintf(s->dir, sizeof(s->dir), "%s/run/exec-%s-%s", ctx->root, s->name, s->exec_id);
        if (session_fifos(s, st->stdin, err) < 0)
                return err->code;

        const char **argv = calloc(st->n_command + 1, sizeof(char *));
        if (!argv)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        for (size_t i = 0; i < st->n_command; i++)
                argv[i] = st->command[i];
        const char **env = calloc(st->n_env + 2, sizeof(char *));
        if (!env) {
                free(argv);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        size_t ne = 0;
        for (size_t i = 0; i < st->n_env; i++)
                env[ne++] = st->env[i];
        if (s->tty)
                env[ne++] = "TERM=xterm";
        struct driver_exec_req req = {
                .name = s->name,
                .exec_id = s->exec_id,
                .argv = argv,
                .env_extra = env,
                .tty = s->tty,
                .stdin_path = st->stdin ? s->stdin_path : NULL,
                .stdout_path = s->stdout_path,
                .stderr_path = s->tty ? NULL : s->stderr_path,
                .cols = st->cols,
                .rows = st->rows,
        };
        uint32_t pid = 0;
        int r = driver_exec_start(s->drv, &req, &s->x, &pid, err);
        free(argv);
        free(env);
        if (r < 0)
                return r;
        log_info("exec name=%s id=%s pid=%u tty=%d argv0=%s", s->name, s->exec_id, pid, s->tty, st->command[0]);
        return 0;
}

/* ---- debug containers ---- */

/* The debug container's id: "debug." and random hex (a '.' is never in a workload name). */
static void debug_id(char *buf, size_t len)
{
        uint32_t rnd = 0;
        if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
                rnd = (uint32_t)getpid() * 2654435761u ^ (uint32_t)time(NULL) ^
                      atomic_fetch_add(&exec_counter, 1);
        snprintf(buf, len, CTRD_DEBUG_PREFIX "%08x", rnd);
}

/* The driver a debug container of the session's target (or the host) is made by: the
 * container driver; a target must be a Container workload. */
static int debug_driver(struct exec_session *s, struct cap_error *err)
{
        struct serve_ctx *ctx = s->ctx;
        const char *why = NULL;
        if (s->target[0]) {
                struct store_workload w;
                if (store_get_workload(ctx->store, s->target, &w, err) < 0)
                        return cap_error_prefix(err, "target");
                Capsule__V1__WorkloadSpec *spec =
                    capsule__v1__workload_spec__unpack(NULL, w.spec_len, w.spec);
                store_workload_free(&w);
                if (!spec)
                        return cap_error_set(err, -EIO, CAP_INTERNAL,
                                             "workload %s: stored spec does not decode", s->target);
                bool vm = spec->kind == CAPSULE__V1__WORKLOAD_KIND__MICROVM;
                capsule__v1__workload_spec__free_unpacked(spec, NULL);
                if (vm)
                        return cap_error_set(err, -EINVAL, CAP_FAILED_PRECONDITION,
                                             "target %s is a MicroVM: a debug container cannot join "
                                             "its namespaces (they are in the VM's own kernel); use "
                                             "`capsulectl exec -it %s -- sh`",
                                             s->target, s->target);
        }
        s->drv = driver_for_kind(&ctx->drivers, CAPSULE__V1__WORKLOAD_KIND__CONTAINER, &why);
        if (!s->drv)
                return cap_error_set(err, -ENOTCONN, CAP_FAILED_PRECONDITION, "%s", why);
        if (!s->drv->ops->debug_start)
                return cap_error_set(err, -ENOTSUP, CAP_FAILED_PRECONDITION,
                                     "debug containers are not supported by the %s driver",
                                     s->drv->name);
        return 0;
}

/* Validates a Debug start message, makes sure the image is here and starts the container. */
static int debug_begin(struct exec_session *s, const Capsule__V1__DebugStart *st, struct cap_error *err)
{
        struct serve_ctx *ctx = s->ctx;
        if (!st->image || !*st->image)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "image: required (an image present on the capsule)");
        if (strlen(st->image) >= sizeof(s->image))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "image: too long");
        snprintf(s->image, sizeof(s->image), "%s", st->image);
        if (st->target && *st->target) {
                if (name_check("target", st->target, err) < 0)
                        return err->code;
                snprintf(s->target, sizeof(s->target), "%s", st->target);
        }
        if (debug_driver(s, err) < 0)
                return err->code;
        _cleanup_free_ char *digest = NULL, *config = NULL, *chain = NULL;
        if (serve_image_ensure(ctx, st->image, CAPSULE__V1__PULL_POLICY__PULL_NEVER, &digest,
                               &config, &chain, err) < 0) {
                if (err->status == CAP_FAILED_PRECONDITION && err->code == -ENOENT)
                        return cap_error_set(err, -ENOENT, CAP_FAILED_PRECONDITION,
                                             "image %s not present on this capsule (debug never "
                                             "pulls): capsulectl image push ARCHIVE, or "
                                             "capsulectl image pull %s, or pick another with --image",
                                             st->image, st->image);
                return cap_error_prefix(err, "image %s", st->image);
        }
        debug_id(s->name, sizeof(s->name));
        s->tty = st->tty;
        snprintf(s->dir, sizeof(s->dir), "%s/run/%s", ctx->root, s->name);
        if (session_fifos(s, st->stdin, err) < 0)
                return err->code;
        const char **argv = calloc(st->n_command + 1, sizeof(char *));
        const char **env = calloc(st->n_env + 2, sizeof(char *));
        if (!argv || !env) {
                free(argv);
                free(env);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        for (size_t i = 0; i < st->n_command; i++)
                argv[i] = st->command[i];
        size_t ne = 0;
        for (size_t i = 0; i < st->n_env; i++)
                env[ne++] = st->env[i];
        if (s->tty)
                env[ne++] = "TERM=xterm";
        struct stat rs;
        struct driver_debug_req req = {
            .id = s->name,
            .image = st->image,
            .image_config_json = config,
            .image_chain_id = chain,
            .target = s->target[0] ? s->target : NULL,
            .host_root = SERVE_DEBUG_HOST_ROOT,
            .resolv_conf_path = stat("/etc/resolv.conf", &rs) == 0 && S_ISREG(rs.st_mode)
                                    ? "/etc/resolv.conf"
                                    : NULL,
            .argv = argv,
            .env_extra = env,
            .tty = s->tty,
            .stdin_path = st->stdin ? s->stdin_path : NULL,
            .stdout_path = s->stdout_path,
            .stderr_path = s->tty ? NULL : s->stderr_path,
            .cols = st->cols,
            .rows = st->rows,
        };
        uint32_t pid = 0;
        int r = s->drv->ops->debug_start(s->drv, &req, &s->x, &pid, err);
        free(argv);
        free(env);
        if (r < 0)
                return r;
        log_info("debug id=%s cn=%s image=%s target=%s pid=%u tty=%d", s->name, s->who, s->image,
                 s->target[0] ? s->target : "(host)", pid, s->tty);
        events_publish(ctx->events, "debug", s->name, "started", "cn=%s image=%s target=%s", s->who,
                       s->image, s->target[0] ? s->target : "(host)");
        return 0;
}

void serve_debug_cleanup(struct serve_ctx *ctx)
{
        struct workload_driver *drv =
            driver_for_kind(&ctx->drivers, CAPSULE__V1__WORKLOAD_KIND__CONTAINER, NULL);
        struct cap_error err = {0};
        if (drv && drv->ops->debug_cleanup) {
                int n = drv->ops->debug_cleanup(drv, &err);
                if (n < 0)
                        log_warn("debug containers: %s", err.msg);
                else if (n > 0)
                        log_info("removed %d debug container%s left by an earlier serve", n,
                                 n == 1 ? "" : "s");
        }
        /* and their FIFO directories */
        char run[4200];
        snprintf(run, sizeof(run), "%s/run", ctx->root);
        DIR *d = opendir(run);
        for (struct dirent *e; d && (e = readdir(d));) {
                if (strncmp(e->d_name, CTRD_DEBUG_PREFIX, strlen(CTRD_DEBUG_PREFIX)) != 0)
                        continue;
                static const char *const fifos[] = {"stdin", "stdout", "stderr"};
                for (size_t i = 0; i < 3; i++) {
                        char p[4400];
                        snprintf(p, sizeof(p), "%s/%s/%s", run, e->d_name, fifos[i]);
                        unlink(p);
                }
                char p[4400];
                snprintf(p, sizeof(p), "%s/%s", run, e->d_name);
                rmdir(p);
        }
        if (d)
                closedir(d);
}

static void close_stdin(struct exec_session *s)
{
        if (s->stdin_fd >= 0) {
                close(s->stdin_fd);
                s->stdin_fd = -1;
                struct cap_error err = {0};
                s->drv->ops->exec_close_stdin(s->drv, s->x, &err);
        }
}

/* Copies client input into the stdin FIFO as the process reads it. The FIFO is ours too (opened
 * read-write so the process never sees EOF early), so a full FIFO never fails a write: wait for
 * room, and drop the input once the process has exited (nothing will read it). */
static void write_stdin(struct exec_session *s, const uint8_t *data, size_t len)
{
        size_t off = 0;
        while (s->stdin_fd >= 0 && off < len) {
                ssize_t w = write(s->stdin_fd, data + off, len - off);
                if (w > 0) {
                        off += (size_t)w;
                        continue;
                }
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0 && errno != EAGAIN)
                        return;
                if (atomic_load(&s->exited))
                        return;
                struct pollfd p = {.fd = s->stdin_fd, .events = POLLOUT};
                poll(&p, 1, 100);
        }
}

/* One Exec or Debug call: the first message starts the process, then stdin and resizes flow
 * in and output out until it exits; whatever ends the call, the process is gone after it. */
static int session_run(struct rpc_call *call, bool debug, struct cap_error *err)
{
        struct exec_session *s = calloc(1, sizeof(*s));
        if (!s)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        s->ctx = rpc_call_method(call)->userdata;
        s->call = call;
        s->debug = debug;
        s->stdin_fd = s->stdout_fd = s->stderr_fd = -1;
        int rc = 0;
        bool started = false;
        const char *what = debug ? "debug" : "exec";
        if (debug) {
                struct rpc_peer peer = {0};
                rpc_call_peer(call, &peer, NULL);
                snprintf(s->who, sizeof(s->who), "%s", peer.cn[0] ? peer.cn : peer.addr);
        }

        ProtobufCMessage *m = NULL;
        int r = rpc_call_recv(call, &m, err);
        if (r <= 0) {
                rc = r < 0 ? r
                           : cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                           "%s: no start message", what);
                goto out;
        }
        Capsule__V1__ExecRequest *first = (Capsule__V1__ExecRequest *)m;
        if (!debug && first->msg_case == CAPSULE__V1__EXEC_REQUEST__MSG_START)
                rc = exec_begin(s, first->start, err);
        else if (debug && first->msg_case == CAPSULE__V1__EXEC_REQUEST__MSG_DEBUG)
                rc = debug_begin(s, first->debug, err);
        else
                rc = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                   "%s: the first message must be %s", what,
                                   debug ? "debug" : "start");
        protobuf_c_message_free_unpacked(m, NULL);
        if (rc < 0) {
                if (debug)
                        events_publish(s->ctx->events, "debug", s->name[0] ? s->name : "-",
                                       "failed", "cn=%s image=%s target=%s: %s", s->who,
                                       s->image[0] ? s->image : "-",
                                       s->target[0] ? s->target : "(host)", err->msg);
                goto out;
        }
        started = true;
        if (pthread_create(&s->waiter, NULL, waiter_thread, s) != 0) {
                rc = cap_error_set(err, -EAGAIN, CAP_INTERNAL, "exec: cannot start thread");
                goto out;
        }
        s->waiter_started = true;
        if (pthread_create(&s->pump, NULL, pump_thread, s) != 0) {
                rc = cap_error_set(err, -EAGAIN, CAP_INTERNAL, "exec: cannot start thread");
                goto out;
        }
        s->pump_started = true;

        /* client messages until it half-closes or goes away */
        struct cap_error rerr = {0};
        while ((r = rpc_call_recv(call, &m, &rerr)) == 1) {
                Capsule__V1__ExecRequest *q = (Capsule__V1__ExecRequest *)m;
                switch (q->msg_case) {
                case CAPSULE__V1__EXEC_REQUEST__MSG_STDIN: write_stdin(s, q->stdin.data, q->stdin.len); break;
                case CAPSULE__V1__EXEC_REQUEST__MSG_RESIZE:
                        if (s->tty && q->resize)
                                s->drv->ops->exec_resize(s->drv, s->x, q->resize->cols,
                                                         q->resize->rows, NULL);
                        break;
                case CAPSULE__V1__EXEC_REQUEST__MSG_CLOSE_STDIN: close_stdin(s); break;
                default: break;
                }
                protobuf_c_message_free_unpacked(m, NULL);
        }
        close_stdin(s);
        /* Half-closed (no more input) is not the end: the process may run on, and the call can
         * still be cancelled meanwhile (the client killed, or the server shutting down, whose
         * cancel can also surface as a half-close), and nobody would end it then. */
        while (r == 0 && !atomic_load(&s->exited) && !rpc_call_cancelled(call)) {
                struct timespec tick = {.tv_nsec = 100 * 1000000L};
                nanosleep(&tick, NULL);
        }
        if ((r < 0 || rpc_call_cancelled(call)) && !atomic_load(&s->exited)) {
                /* the client went away: do not leave its process behind */
                struct cap_error kerr = {0};
                s->drv->ops->exec_kill(s->drv, s->x, SIGKILL, &kerr);
        }
out:
        if (s->pump_started)
                pthread_join(s->pump, NULL);
        else if (s->waiter_started)
                pthread_join(s->waiter, NULL);
        if (started && debug && !s->pump_started && !s->waiter_started) {
                /* no thread waited: kill it before the removal */
                struct cap_error kerr = {0};
                s->drv->ops->exec_kill(s->drv, s->x, SIGKILL, &kerr);
        }
        if (started)
                s->drv->ops->exec_delete(s->drv, s->x);
        if (started && debug) {
                log_info("debug id=%s ended exit=%u", s->name, s->exit_status);
                events_publish(s->ctx->events, "debug", s->name, "ended",
                               "exit code %u (cn=%s image=%s target=%s)", s->exit_status, s->who,
                               s->image, s->target[0] ? s->target : "(host)");
        }
        session_cleanup(s);
        free(s);
        return rc;
}

int workloads_exec(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        (void)req;
        return session_run(call, false, err);
}

int workloads_debug(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        (void)req;
        return session_run(call, true, err);
}
