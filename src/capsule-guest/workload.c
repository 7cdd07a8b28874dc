/* Processes capsule-guest starts: the generic spawn (fork, session, chroot, ids, PATH lookup,
 * exec) shared by the workload and Exec, the child table the reaper fills (PID 1 reaps every
 * zombie, ours and orphans), and the workload itself with its output pump into the log ring and
 * the console. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/deadline.h"
#include "common/log.h"
#include "guest.h"

/* How long the pump keeps reading after the workload exited, for output still in the pipes (a
 * background grandchild holding them open must not keep Logs --follow open forever). */
#define PUMP_DRAIN_MS 1500

enum spawn_stage { STAGE_SETSID = 1, STAGE_CTTY, STAGE_DUP, STAGE_CHROOT, STAGE_CHDIR,
                   STAGE_GROUPS, STAGE_GID, STAGE_UID, STAGE_EXEC };

int64_t guest_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int guest_exit_code(int status)
{
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return 255;
}

static const char *env_get(char *const *envp, const char *key)
{
        size_t n = strlen(key);
        for (; envp && *envp; envp++)
                if (strncmp(*envp, key, n) == 0 && (*envp)[n] == '=')
                        return *envp + n + 1;
        return NULL;
}

char **guest_env_merge(char *const *base, size_t n_base, char *const *extra, size_t n_extra)
{
        char **env = calloc(n_base + n_extra + 2, sizeof(*env));
        if (!env)
                return NULL;
        size_t n = 0;
        char *const *lists[2] = {base, extra};
        size_t counts[2] = {n_base, n_extra};
        for (int l = 0; l < 2; l++) {
                for (size_t i = 0; i < counts[l]; i++) {
                        const char *e = lists[l][i];
                        const char *eq = strchr(e, '=');
                        size_t klen = eq ? (size_t)(eq - e) : strlen(e);
                        size_t j = 0;
                        while (j < n && !(strncmp(env[j], e, klen) == 0 && env[j][klen] == '='))
                                j++;
                        char *copy = strdup(e);
                        if (!copy) {
                                guest_env_free(env);
                                return NULL;
                        }
                        if (j < n)
                                free(env[j]);
                        else
                                n++;
                        env[j] = copy;
                }
        }
        if (!env_get(env, "PATH")) {
                env[n] = strdup("PATH=" GUEST_DEFAULT_PATH);
                if (!env[n]) {
                        guest_env_free(env);
                        return NULL;
                }
        }
        return env;
}

void guest_env_free(char **env)
{
        for (char **e = env; e && *e; e++)
                free(*e);
        free(env);
}

/* ---- child table ---- */

static struct guest_child *child_find(struct guest_ctx *g, pid_t pid)
{
        for (size_t i = 0; i < GUEST_MAX_CHILDREN; i++)
                if (g->children[i].pid == pid)
                        return &g->children[i];
        return NULL;
}

static void record_workload_exit(struct guest_ctx *g, int status)
{
        g->wl.exited = true;
        g->wl.exit_code = guest_exit_code(status);
        g->wl.exited_ns = guest_now_ns();
        log_info("workload pid %d exited with code %d", (int)g->wl.pid, g->wl.exit_code);
        if (g->console_fd >= 0)
                dprintf(g->console_fd, RUNCONFIG_EXIT_MARKER "%d\n", g->wl.exit_code);
}

void guest_reap(struct guest_ctx *g)
{
        for (;;) {
                int status;
                pid_t pid = waitpid(-1, &status, WNOHANG);
                if (pid < 0 && errno == EINTR)
                        continue;
                if (pid <= 0)
                        return; /* 0: none exited; ECHILD: no children at all */
                pthread_mutex_lock(&g->lock);
                struct guest_child *c = child_find(g, pid);
                if (c) {
                        c->done = true;
                        c->status = status;
                }
                if (g->wl.pid == pid && !g->wl.exited) {
                        record_workload_exit(g, status);
                        if (c)
                                c->pid = 0; /* nobody waits on the workload's slot */
                }
                pthread_cond_broadcast(&g->changed);
                pthread_mutex_unlock(&g->lock);
        }
}

int guest_child_wait(struct guest_ctx *g, pid_t pid, int timeout_ms, int *status)
{
        struct timespec deadline;
        if (timeout_ms >= 0)
                deadline = deadline_in_ms(CLOCK_MONOTONIC, timeout_ms);
        pthread_mutex_lock(&g->lock);
        struct guest_child *c = child_find(g, pid);
        int r = 0;
        while (c && !c->done) {
                if (timeout_ms < 0)
                        pthread_cond_wait(&g->changed, &g->lock);
                else if (pthread_cond_timedwait(&g->changed, &g->lock, &deadline) == ETIMEDOUT)
                        break;
        }
        if (c && c->done) {
                *status = c->status;
                c->pid = 0;
                c->done = false;
                r = 1;
        }
        pthread_mutex_unlock(&g->lock);
        return r;
}

/* ---- spawn ---- */

/* In the child: execve each PATH candidate like execvp; returns the most telling errno. */
static int exec_search(const char *file, char *const *argv, char *const *envp, const char *path)
{
        if (strchr(file, '/')) {
                execve(file, argv, envp);
                return errno;
        }
        int best = ENOENT;
        size_t flen = strlen(file);
        for (const char *p = path;; p++) {
                const char *end = strchrnul(p, ':');
                char buf[PATH_MAX];
                size_t dlen = (size_t)(end - p);
                if (dlen == 0) {
                        dlen = 1; /* empty entry = current directory */
                        p = ".";
                }
                if (dlen + 1 + flen + 1 <= sizeof(buf)) {
                        memcpy(buf, p, dlen);
                        buf[dlen] = '/';
                        memcpy(buf + dlen + 1, file, flen + 1);
                        execve(buf, argv, envp);
                        if (errno == EACCES)
                                best = EACCES;
                        else if (errno != ENOENT && errno != ENOTDIR)
                                return errno;
                }
                if (*end == '\0')
                        break;
                p = end;
        }
        return best;
}

static _Noreturn void child_fail(int errfd, int stage, int e)
{
        int msg[2] = {stage, e};
        ssize_t k = write(errfd, msg, sizeof(msg));
        (void)k; /* nothing more a dying child can do */
        _exit(127);
}

/* Runs in the forked child: only async-signal-safe calls (the parent has threads). */
static _Noreturn void child_run(const struct guest_ctx *g, const struct guest_spawn *s,
                                const char *path, int null_fd, int errfd)
{
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        for (int sig = 1; sig < NSIG; sig++)
                sigaction(sig, &dfl, NULL); /* EINVAL for SIGKILL/SIGSTOP/RT internals: fine */
        if (setsid() < 0)
                child_fail(errfd, STAGE_SETSID, errno);
        if (s->ctty_fd >= 0 && ioctl(s->ctty_fd, TIOCSCTTY, 0) < 0)
                child_fail(errfd, STAGE_CTTY, errno);
        int fds[3] = {s->stdin_fd, s->stdout_fd, s->stderr_fd};
        for (int i = 0; i < 3; i++)
                if (dup2(fds[i] >= 0 ? fds[i] : null_fd, i) < 0)
                        child_fail(errfd, STAGE_DUP, errno);
        /* everything else we inherited (gRPC sockets, other pipes) closes on exec */
        if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) < 0) {
                for (int fd = 3; fd < 1024; fd++)
                        if (fd != errfd)
                                fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
        if (s->chroot && (chroot(g->root) < 0 || chdir("/") < 0))
                child_fail(errfd, STAGE_CHROOT, errno);
        if (chdir(s->cwd && s->cwd[0] ? s->cwd : "/") < 0)
                child_fail(errfd, STAGE_CHDIR, errno);
        if (s->set_ids) {
                if (setgroups(s->n_groups, s->groups) < 0)
                        child_fail(errfd, STAGE_GROUPS, errno);
                if (setgid(s->gid) < 0)
                        child_fail(errfd, STAGE_GID, errno);
                if (setuid(s->uid) < 0)
                        child_fail(errfd, STAGE_UID, errno);
        }
        child_fail(errfd, STAGE_EXEC, exec_search(s->argv[0], s->argv, s->envp, path));
}

static const char *stage_name(int stage)
{
        switch (stage) {
        case STAGE_SETSID: return "setsid";
        case STAGE_CTTY: return "set controlling terminal";
        case STAGE_DUP: return "set up stdio";
        case STAGE_CHROOT: return "chroot";
        case STAGE_CHDIR: return "chdir";
        case STAGE_GROUPS: return "setgroups";
        case STAGE_GID: return "setgid";
        case STAGE_UID: return "setuid";
        default: return "exec";
        }
}

int guest_spawn(struct guest_ctx *g, const struct guest_spawn *s, pid_t *pid,
                struct cap_error *err)
{
        const char *path = env_get(s->envp, "PATH");
        if (!path)
                path = GUEST_DEFAULT_PATH;
        _cleanup_close_ int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd < 0)
                return cap_error_errno(err, -errno, "open /dev/null");
        int ep[2];
        if (pipe2(ep, O_CLOEXEC) < 0)
                return cap_error_errno(err, -errno, "pipe");
        _cleanup_close_ int err_r = ep[0];
        _cleanup_close_ int err_w = ep[1];

        pthread_mutex_lock(&g->lock);
        struct guest_child *slot = child_find(g, 0);
        if (!slot) {
                pthread_mutex_unlock(&g->lock);
                return cap_error_set(err, -EAGAIN, CAP_RESOURCE_EXHAUSTED,
                                     "too many processes (%d)", GUEST_MAX_CHILDREN);
        }
        pid_t p = fork();
        if (p == 0)
                child_run(g, s, path, null_fd, err_w);
        if (p < 0) {
                int e = errno;
                pthread_mutex_unlock(&g->lock);
                return cap_error_errno(err, -e, "fork");
        }
        slot->pid = p;
        slot->done = false;
        pthread_mutex_unlock(&g->lock);

        cap_closep(&err_w);
        err_w = -1;
        int msg[2];
        ssize_t k;
        do
                k = read(err_r, msg, sizeof(msg));
        while (k < 0 && errno == EINTR);
        if (k == (ssize_t)sizeof(msg)) {
                int status;
                (void)guest_child_wait(g, p, 5000, &status);
                const char *what = msg[0] == STAGE_CHDIR ? (s->cwd && s->cwd[0] ? s->cwd : "/")
                                                         : s->argv[0];
                int r = cap_error_errno(err, -msg[1], "%s \"%s\"", stage_name(msg[0]), what);
                if (msg[0] == STAGE_EXEC && msg[1] == ENOENT)
                        err->status = CAP_NOT_FOUND;
                return r;
        }
        *pid = p;
        return 0;
}

/* ---- the workload ---- */

/* Writes one chunk to the console line by line, as the workload wrote it. */
static void console_echo(int fd, const char *stream, const uint8_t *data, size_t len)
{
        if (fd < 0)
                return;
        char buf[4096];
        size_t off = 0;
        while (off < len) {
                const uint8_t *nl = memchr(data + off, '\n', len - off);
                size_t line = nl ? (size_t)(nl - (data + off)) + 1 : len - off;
                /* as the workload wrote it: the console is the VM's log (`capsulectl logs`),
                 * where a container's output also appears as written */
                (void)stream;
                int h = 0;
                size_t take = line < sizeof(buf) - (size_t)h - 1 ? line : sizeof(buf) - (size_t)h - 1;
                memcpy(buf + h, data + off, take);
                size_t n = (size_t)h + take;
                if (buf[n - 1] != '\n')
                        buf[n++] = '\n';
                ssize_t k = write(fd, buf, n);
                (void)k; /* the console is best-effort: the ring holds the output */
                off += line;
        }
}

static void *pump_thread(void *arg)
{
        struct guest_ctx *g = arg;
        struct pollfd pfd[2] = {{.fd = g->wl.out_fd, .events = POLLIN},
                                {.fd = g->wl.err_fd, .events = POLLIN}};
        static const char *names[2] = {"stdout", "stderr"};
        uint8_t buf[65536];
        int64_t exited_at = 0;
        while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
                int n = poll(pfd, 2, 200);
                if (n < 0 && errno != EINTR) {
                        log_error("workload output: poll: %s", strerror(errno));
                        break;
                }
                for (int i = 0; n > 0 && i < 2; i++) {
                        if (pfd[i].fd < 0 || !pfd[i].revents)
                                continue;
                        ssize_t k = read(pfd[i].fd, buf, sizeof(buf));
                        if (k < 0 && (errno == EINTR || errno == EAGAIN))
                                continue;
                        if (k <= 0) {
                                close(pfd[i].fd);
                                pfd[i].fd = -1;
                                continue;
                        }
                        logring_append(&g->ring, i == 0 ? LOGRING_STDOUT : LOGRING_STDERR, buf,
                                       (size_t)k, 0);
                        console_echo(g->console_fd, names[i], buf, (size_t)k);
                }
                if (n == 0 && !exited_at && guest_workload_wait(g, 0))
                        exited_at = guest_now_ns();
                if (exited_at && guest_now_ns() - exited_at > (int64_t)PUMP_DRAIN_MS * 1000000)
                        break;
        }
        for (int i = 0; i < 2; i++)
                if (pfd[i].fd >= 0)
                        close(pfd[i].fd);
        g->wl.out_fd = g->wl.err_fd = -1;
        logring_close(&g->ring);
        return NULL;
}

int guest_workload_start(struct guest_ctx *g, struct cap_error *err)
{
        const RunConfig *rc = g->rc;
        int out[2], errp[2];
        if (pipe2(out, O_CLOEXEC) < 0)
                return cap_error_errno(err, -errno, "workload: pipe");
        if (pipe2(errp, O_CLOEXEC) < 0) {
                int e = errno;
                close(out[0]);
                close(out[1]);
                return cap_error_errno(err, -e, "workload: pipe");
        }
        _cleanup_free_ gid_t *groups = calloc(rc->n_additional_gids + 1, sizeof(gid_t));
        _cleanup_free_ char **argv = calloc(rc->n_argv + 1, sizeof(char *)); /* NULL-terminated */
        if (!groups || !argv) {
                close(out[0]);
                close(out[1]);
                close(errp[0]);
                close(errp[1]);
                return cap_error_errno(err, -ENOMEM, "workload");
        }
        memcpy(argv, rc->argv, rc->n_argv * sizeof(char *));
        for (size_t i = 0; i < rc->n_additional_gids; i++)
                groups[i] = rc->additional_gids[i];
        /* ids only as root (host mode as a normal user runs as that user) */
        bool ids = getuid() == 0;
        struct guest_spawn s = {
                .argv = argv, .envp = g->env, .chroot = g->chroot, .cwd = rc->working_dir,
                .set_ids = ids, .uid = rc->uid, .gid = rc->gid, .groups = groups,
                .n_groups = rc->n_additional_gids, .stdin_fd = -1, .stdout_fd = out[1],
                .stderr_fd = errp[1], .ctty_fd = -1,
        };
        pid_t pid;
        /* the pid must be known before the reaper can see it exit */
        pthread_mutex_lock(&g->lock);
        g->wl.started_ns = guest_now_ns();
        pthread_mutex_unlock(&g->lock);
        int r = guest_spawn(g, &s, &pid, err);
        close(out[1]);
        close(errp[1]);
        if (r < 0) {
                close(out[0]);
                close(errp[0]);
                /* as a shell (and docker) would say it: 127 not found, 126 found but not runnable;
                 * recorded, so Status and the host's console marker carry it */
                int code = r == -ENOENT || r == -ENOTDIR ? 127
                           : r == -EACCES || r == -ENOEXEC || r == -EPERM ? 126
                                                                         : 255;
                pthread_mutex_lock(&g->lock);
                record_workload_exit(g, W_EXITCODE(code, 0));
                pthread_mutex_unlock(&g->lock);
                return cap_error_prefix(err, "start workload");
        }
        pthread_mutex_lock(&g->lock);
        g->wl.pid = pid;
        g->wl.out_fd = out[0];
        g->wl.err_fd = errp[0];
        /* it may already have been reaped (slot done) before wl.pid was set */
        struct guest_child *c = child_find(g, pid);
        if (c && c->done && !g->wl.exited)
                record_workload_exit(g, c->status);
        if (c && c->done)
                c->pid = 0;
        g->ready = true;
        pthread_mutex_unlock(&g->lock);
        if (pthread_create(&g->wl.pump, NULL, pump_thread, g) != 0) {
                logring_close(&g->ring);
                return cap_error_set(err, -EAGAIN, CAP_INTERNAL, "workload: cannot start thread");
        }
        g->wl.pump_started = true;
        log_info("workload started: pid %d, %s", (int)pid, rc->argv[0]);
        return 0;
}

void guest_workload_signal(struct guest_ctx *g, int sig)
{
        pthread_mutex_lock(&g->lock);
        pid_t pid = g->wl.exited ? 0 : g->wl.pid;
        pthread_mutex_unlock(&g->lock);
        if (pid > 0 && kill(-pid, sig) < 0 && errno == ESRCH)
                (void)kill(pid, sig); /* it left its process group: signal it alone */
}

bool guest_workload_wait(struct guest_ctx *g, int timeout_ms)
{
        struct timespec deadline;
        deadline = deadline_in_ms(CLOCK_MONOTONIC, timeout_ms > 0 ? timeout_ms : 0);
        pthread_mutex_lock(&g->lock);
        while (timeout_ms > 0 && !g->wl.exited &&
               pthread_cond_timedwait(&g->changed, &g->lock, &deadline) != ETIMEDOUT)
                ;
        bool done = g->wl.exited || g->wl.pid == 0;
        pthread_mutex_unlock(&g->lock);
        return done;
}

bool guest_workload_stop(struct guest_ctx *g, unsigned grace_s)
{
        guest_workload_signal(g, SIGTERM);
        if (guest_workload_wait(g, (int)grace_s * 1000))
                return true;
        log_warn("workload still running after %us: SIGKILL", grace_s);
        guest_workload_signal(g, SIGKILL);
        return guest_workload_wait(g, 5000);
}

void guest_workload_join(struct guest_ctx *g)
{
        if (g->wl.pump_started) {
                pthread_join(g->wl.pump, NULL);
                g->wl.pump_started = false;
        }
}
