/* fork/exec of helper programs with captured output (see spawn.h). */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"

#define OUT_MAX (1u << 20)
#define ERR_MAX (64u << 10)

static const char *const default_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};

char *spawn_find(const char *name, struct cap_error *err)
{
        if (name[0] == '/') {
                char *p = strdup(name);
                if (!p)
                        cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return p;
        }
        static const char *const dirs[] = {"/usr/sbin", "/usr/bin", "/sbin", "/bin"};
        for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
                char *p = NULL;
                if (asprintf(&p, "%s/%s", dirs[i], name) < 0) {
                        cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                        return NULL;
                }
                if (access(p, X_OK) == 0)
                        return p;
                free(p);
        }
        cap_error_set(err, -ENOENT, CAP_FAILED_PRECONDITION,
                      "%s: not installed (looked in /usr/sbin, /usr/bin, /sbin, /bin)", name);
        return NULL;
}

void spawn_result_free(struct spawn_result *res)
{
        if (!res)
                return;
        free(res->out);
        free(res->errout);
        res->out = res->errout = NULL;
}

struct sink {
        char *buf;
        size_t len, max;
};

static int sink_read(struct sink *s, int fd)
{
        char tmp[16384];
        ssize_t n = read(fd, tmp, sizeof(tmp));
        if (n < 0)
                return errno == EINTR || errno == EAGAIN ? 1 : -errno;
        if (n == 0)
                return 0;
        size_t keep = s->len + (size_t)n > s->max ? s->max - s->len : (size_t)n;
        if (keep) {
                char *nb = realloc(s->buf, s->len + keep + 1);
                if (!nb)
                        return -ENOMEM;
                memcpy(nb + s->len, tmp, keep);
                s->buf = nb;
                s->len += keep;
                s->buf[s->len] = 0;
        }
        return 1;
}

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Pumps stdin/stdout/stderr until both outputs close or the deadline passes. */
static int pump(int *in_fd, const char *input, size_t input_len, int out_fd, int err_fd,
                struct sink *out, struct sink *errs, int64_t deadline)
{
        size_t written = 0;
        int fds[3] = {*in_fd, out_fd, err_fd};
        while (fds[1] >= 0 || fds[2] >= 0) {
                struct pollfd p[3];
                int n = 0, idx[3];
                for (int i = 0; i < 3; i++) {
                        if (fds[i] < 0)
                                continue;
                        p[n] = (struct pollfd){.fd = fds[i], .events = i == 0 ? POLLOUT : POLLIN};
                        idx[n++] = i;
                }
                int left = (int)(deadline - now_ms());
                if (left <= 0)
                        return -ETIMEDOUT;
                int r = poll(p, (nfds_t)n, left);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                for (int k = 0; k < n; k++) {
                        int i = idx[k];
                        if (!p[k].revents)
                                continue;
                        if (i == 0) {
                                ssize_t w = p[k].revents & POLLOUT ? write(fds[0], input + written,
                                                                           input_len - written)
                                                                   : -1;
                                if (w > 0)
                                        written += (size_t)w;
                                if (w < 0 || written == input_len) {
                                        close(fds[0]);
                                        fds[0] = *in_fd = -1;
                                }
                                continue;
                        }
                        int rr = sink_read(i == 1 ? out : errs, fds[i]);
                        if (rr < 0 && rr != -ENOMEM)
                                return rr;
                        if (rr <= 0) {
                                fds[i] = -1; /* closed by the caller */
                        }
                }
        }
        return 0;
}

int spawn_run(const char *const *argv, const struct spawn_opts *opts, struct spawn_result *res,
              struct cap_error *err)
{
        static const struct spawn_opts none = {0};
        if (!opts)
                opts = &none;
        memset(res, 0, sizeof(*res));
        _cleanup_free_ char *path = spawn_find(argv[0], err);
        if (!path)
                return err->code;
        int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1};
        int r = 0;
        pid_t pid = -1;
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        if ((opts->input && pipe2(in, O_CLOEXEC) < 0) || pipe2(out, O_CLOEXEC) < 0 ||
            pipe2(errp, O_CLOEXEC) < 0) {
                r = cap_error_errno(err, -errno, "%s: pipe", argv[0]);
                goto out;
        }
        if (opts->input)
                posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        else
                posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
        posix_spawn_file_actions_addclosefrom_np(&fa, 3);
        /* capsuled blocks SIGTERM/SIGINT and ignores SIGPIPE: give the child the defaults back. */
        sigset_t empty, defaults;
        sigemptyset(&empty);
        sigemptyset(&defaults);
        sigaddset(&defaults, SIGPIPE);
        sigaddset(&defaults, SIGTERM);
        sigaddset(&defaults, SIGINT);
        posix_spawnattr_setsigmask(&attr, &empty);
        posix_spawnattr_setsigdefault(&attr, &defaults);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        int e = posix_spawn(&pid, path, &fa, &attr, (char *const *)argv,
                            (char *const *)(opts->envp ? opts->envp : default_env));
        if (e != 0) {
                pid = -1;
                r = cap_error_errno(err, -e, "%s: exec", argv[0]);
                goto out;
        }
        if (in[0] >= 0) {
                close(in[0]);
                in[0] = -1;
        }
        close(out[1]);
        close(errp[1]);
        out[1] = errp[1] = -1;
        if (in[1] >= 0)
                fcntl(in[1], F_SETFL, O_NONBLOCK);
        struct sink so = {.max = OUT_MAX}, se = {.max = ERR_MAX};
        int64_t deadline = now_ms() + (opts->timeout_ms > 0 ? opts->timeout_ms : 120000);
        r = pump(&in[1], opts->input, opts->input_len, out[0], errp[0], &so, &se, deadline);
        res->out = so.buf ? so.buf : strdup("");
        res->errout = se.buf ? se.buf : strdup("");
        if (res->errout)
                for (size_t l = strlen(res->errout);
                     l && (res->errout[l - 1] == '\n' || res->errout[l - 1] == '\r'); l--)
                        res->errout[l - 1] = 0;
        if (r < 0) {
                kill(pid, SIGKILL);
                cap_error_errno(err, r, "%s", argv[0]);
                if (r == -ETIMEDOUT)
                        err->status = CAP_DEADLINE_EXCEEDED;
        }
        int st;
        while (waitpid(pid, &st, 0) < 0) {
                if (errno != EINTR) {
                        st = 0;
                        if (r == 0)
                                r = cap_error_errno(err, -errno, "%s: wait", argv[0]);
                        break;
                }
        }
        res->exit_code = WIFEXITED(st)     ? WEXITSTATUS(st)
                         : WIFSIGNALED(st) ? 128 + WTERMSIG(st)
                                           : 255;
        if (r == 0 && (!res->out || !res->errout))
                r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
out:
        for (int i = 0; i < 2; i++) {
                if (in[i] >= 0)
                        close(in[i]);
                if (out[i] >= 0)
                        close(out[i]);
                if (errp[i] >= 0)
                        close(errp[i]);
        }
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        return r;
}

int spawn_check(const char *const *argv, const struct spawn_opts *opts, struct cap_error *err)
{
        struct spawn_result res;
        int r = spawn_run(argv, opts, &res, err);
        if (r == 0 && res.exit_code != 0)
                r = cap_error_set(
                    err, -EIO, CAP_INTERNAL, "%s: exit %d: %s", argv[0], res.exit_code,
                    res.errout && *res.errout ? res.errout : (res.out ? res.out : ""));
        spawn_result_free(&res);
        return r;
}

static const char *const lvm_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LVM_SUPPRESS_FD_WARNINGS=1", NULL};

int spawn_lvm(const char *const *args, char **out, struct cap_error *err)
{
        const char *argv[24] = {"lvm"};
        size_t i = 0;
        for (; args[i] && i + 2 < sizeof(argv) / sizeof(argv[0]); i++)
                argv[i + 1] = args[i];
        argv[i + 1] = NULL;
        struct spawn_opts opts = {.envp = lvm_env, .timeout_ms = 300000};
        struct spawn_result res;
        int r = spawn_run(argv, &opts, &res, err);
        if (r == 0 && res.exit_code != 0)
                r = cap_error_set(err, -EIO, CAP_INTERNAL, "%s: exit %d: %s", args[0], res.exit_code, res.errout);
        if (r == 0 && out) {
                *out = res.out;
                res.out = NULL;
        }
        spawn_result_free(&res);
        return r;
}
