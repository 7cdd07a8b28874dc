/* microVM process lifecycle: start (double fork, own session, cgroup, stderr to qemu.log), adopt,
 * stop, remove, list (see vm.h). Safe to call from capsuled's multi-threaded process: between fork
 * and exec the children only make async-signal-safe calls on data prepared before the fork. */
#include "vm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "tools.h"
#include "common/fs.h"
#include "common/names.h"
#include "qmp.h"

static void sleep_ms(int ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
}

int vm_state_paths(const char *state_dir, struct vm_state_paths *p, struct cap_error *err)
{
        memset(p, 0, sizeof(*p));
        if (!state_dir || state_dir[0] != '/')
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "microVM state directory: want an absolute path");
        if ((size_t)snprintf(p->qmp, sizeof(p->qmp), "%s/" VM_STATE_QMP, state_dir) >=
            sizeof(p->qmp))
                return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT,
                                     "%s/" VM_STATE_QMP ": longer than a unix socket path may be "
                                     "(107 bytes)",
                                     state_dir);
        if ((size_t)snprintf(p->dir, sizeof(p->dir), "%s", state_dir) >= sizeof(p->dir) ||
            (size_t)snprintf(p->pidfile, sizeof(p->pidfile), "%s/" VM_STATE_PIDFILE, state_dir) >=
                sizeof(p->pidfile) ||
            (size_t)snprintf(p->console, sizeof(p->console), "%s/" VM_STATE_CONSOLE, state_dir) >=
                sizeof(p->console) ||
            (size_t)snprintf(p->qemu_log, sizeof(p->qemu_log), "%s/" VM_STATE_QEMU_LOG,
                             state_dir) >= sizeof(p->qemu_log) ||
            (size_t)snprintf(p->config, sizeof(p->config), "%s/" VM_STATE_CONFIG, state_dir) >=
                sizeof(p->config))
                return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT, "%s: path too long",
                                     state_dir);
        return 0;
}

void vm_config_use_state_paths(struct vm_config *cfg, const struct vm_state_paths *p)
{
        cfg->qmp_socket = p->qmp;
        cfg->pidfile = p->pidfile;
        cfg->console_path = p->console;
}

/* Reads a small file whole (at most max bytes), NUL-terminated. */
static int read_small_file(const char *path, size_t max, char **out)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        _cleanup_free_ char *buf = malloc(max + 1);
        if (!buf)
                return -ENOMEM;
        size_t len = 0;
        while (len < max) {
                ssize_t n = read(fd, buf + len, max - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = '\0';
        *out = TAKE_PTR(buf);
        return (int)len;
}

static int read_pidfile(const char *path, pid_t *pid)
{
        _cleanup_free_ char *s = NULL;
        int r = read_small_file(path, 32, &s);
        if (r < 0)
                return r;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v <= 1 || v > INT32_MAX || (*end && *end != '\n'))
                return -EBADMSG;
        *pid = (pid_t)v;
        return 0;
}

/* The config file: "key=value" lines; name and generation are read back. */
static int config_read(const char *path, char *name, size_t name_len, uint64_t *generation)
{
        _cleanup_free_ char *s = NULL;
        int r = read_small_file(path, 256 * 1024, &s);
        if (r < 0)
                return r;
        bool have_name = false;
        *generation = 0;
        for (char *line = s, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                if (strncmp(line, "name=", 5) == 0 && name_is_valid(line + 5)) {
                        snprintf(name, name_len, "%s", line + 5);
                        have_name = true;
                } else if (strncmp(line, "generation=", 11) == 0) {
                        *generation = strtoull(line + 11, NULL, 10);
                }
        }
        return have_name ? 0 : -EBADMSG;
}

static int write_file_atomic(const char *path, const char *data, struct cap_error *err)
{
        char tmp[PATH_MAX];
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
                return cap_error_set(err, -ENAMETOOLONG, CAP_INTERNAL, "%s: too long", path);
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return cap_error_errno(err, -errno, "create %s", tmp);
        size_t len = strlen(data);
        for (size_t off = 0; off < len;) {
                ssize_t n = write(fd, data + off, len - off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        int e = -errno;
                        unlink(tmp);
                        return cap_error_errno(err, e, "write %s", tmp);
                }
                off += (size_t)n;
        }
        if (fsync(fd) < 0 || rename(tmp, path) < 0) {
                int e = -errno;
                unlink(tmp);
                return cap_error_errno(err, e, "write %s", path);
        }
        return 0;
}

bool vm_pid_is_vm(pid_t pid, const char *name)
{
        char path[64], exe[PATH_MAX];
        snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
        ssize_t n = readlink(path, exe, sizeof(exe) - 1);
        if (n < 0)
                return false; /* gone, a zombie, or not ours to look at */
        exe[n] = '\0';
        const char *base = strrchr(exe, '/');
        base = base ? base + 1 : exe;
        if (strncmp(base, "qemu-system-", 12) != 0)
                return false;
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        _cleanup_free_ char *cmd = NULL;
        int len = read_small_file(path, 256 * 1024, &cmd);
        if (len <= 0)
                return false;
        char want[80];
        if ((size_t)snprintf(want, sizeof(want), "capsule-%s", name) >= sizeof(want))
                return false;
        bool prev_name = false;
        for (const char *a = cmd; a < cmd + len; a += strlen(a) + 1) {
                if (prev_name && strcmp(a, want) == 0)
                        return true;
                prev_name = strcmp(a, "-name") == 0;
        }
        return false;
}

static bool pid_alive(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        _cleanup_free_ char *s = NULL;
        if (read_small_file(path, 1024, &s) < 0)
                return false;
        const char *rp = strrchr(s, ')');
        return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

static int pidfd_open_pid(pid_t pid)
{
#ifdef SYS_pidfd_open
        int fd = (int)syscall(SYS_pidfd_open, pid, 0);
        return fd < 0 ? -errno : fd;
#else
        return -ENOSYS;
#endif
}

/* Waits on pidfd (or pid by polling /proc when fd < 0). */
static int wait_exit(int pidfd, pid_t pid, int timeout_ms)
{
        int64_t deadline = vm_now_ms() + timeout_ms;
        for (;;) {
                int64_t left = deadline - vm_now_ms();
                if (pidfd >= 0) {
                        struct pollfd p = {.fd = pidfd, .events = POLLIN};
                        int r = poll(&p, 1, left > 0 ? (int)left : 0);
                        if (r > 0)
                                return 0;
                        if (r < 0 && errno != EINTR)
                                return -errno;
                } else {
                        if (!pid_alive(pid))
                                return 0;
                        sleep_ms(left > 20 ? 20 : (int)(left > 0 ? left : 0));
                }
                if (left <= 0)
                        return -ETIMEDOUT;
        }
}

int vm_pid_wait_exit(pid_t pid, int timeout_ms)
{
        int fd = pidfd_open_pid(pid);
        if (fd == -ESRCH)
                return 0;
        int r = wait_exit(fd, pid, timeout_ms);
        if (fd >= 0)
                close(fd);
        return r;
}

/* The last lines of QEMU's stderr, one line, for an error message. */
static void qemu_log_tail(const char *path, char *out, size_t len)
{
        _cleanup_free_ char *s = NULL;
        out[0] = '\0';
        int n = read_small_file(path, 64 * 1024, &s);
        if (n <= 0)
                return;
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
                s[--n] = '\0';
        const char *start = s;
        if ((size_t)n >= len)
                start = s + n - (len - 1);
        snprintf(out, len, "%s", start);
        for (char *c = out; *c; c++)
                if (*c == '\n')
                        *c = ' ';
}

/* What the grandchild reports through the status pipe when it cannot exec. */
struct child_report {
        int step; /* 1 = setsid/fork, 2 = cgroup, 3 = stdio, 4 = exec, 5 = netns, 9 = pid */
        int value;
};

static void write_report(int fd, int step, int value)
{
        struct child_report rep = {step, value};
        ssize_t n = write(fd, &rep, sizeof(rep));
        (void)n;
}

static size_t fmt_uint(char *buf, unsigned v)
{
        char tmp[16];
        size_t n = 0;
        do {
                tmp[n++] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        for (size_t i = 0; i < n; i++)
                buf[i] = tmp[n - 1 - i];
        buf[n] = '\n';
        return n + 1;
}

/* In the grandchild: async-signal-safe calls only. Never returns. */
static void exec_qemu(char **argv, int report_fd, int log_fd, int null_fd, int cgroup_fd,
                      int console_fd, int netns_fd)
{
        if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) < 0) {
                write_report(report_fd, 5, errno);
                _exit(127);
        }
        if (cgroup_fd >= 0) {
                char buf[16];
                size_t n = fmt_uint(buf, (unsigned)getpid());
                if (write(cgroup_fd, buf, n) != (ssize_t)n) {
                        write_report(report_fd, 2, errno);
                        _exit(127);
                }
        }
        if (dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0) {
                write_report(report_fd, 3, errno);
                _exit(127);
        }
        /* Nothing of the caller's leaks into QEMU but the console fd it was asked to use. */
        (void)syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
        if (console_fd >= 0 && fcntl(console_fd, F_SETFD, 0) < 0) {
                write_report(report_fd, 3, errno);
                _exit(127);
        }
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        static const int sigs[] = {SIGPIPE, SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1};
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
                sigaction(sigs[i], &dfl, NULL);
        execv(argv[0], argv);
        write_report(report_fd, 4, errno);
        _exit(127);
}

/* Double fork: the intermediate child starts a session, forks QEMU and exits, so QEMU is
 * reparented to PID 1 (or the nearest subreaper) and outlives us. Returns QEMU's pid. */
static int spawn_detached(char **argv, int log_fd, int cgroup_fd, int console_fd, int netns_fd,
                          pid_t *pid, struct cap_error *err)
{
        _cleanup_close_ int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd < 0)
                return cap_error_errno(err, -errno, "open /dev/null");
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return cap_error_errno(err, -errno, "pipe");
        _cleanup_close_ int rd = pipefd[0];
        _cleanup_close_ int wr = pipefd[1];
        pid_t mid = fork();
        if (mid < 0)
                return cap_error_errno(err, -errno, "fork");
        if (mid == 0) {
                if (setsid() < 0) {
                        write_report(wr, 1, errno);
                        _exit(127);
                }
                pid_t g = fork();
                if (g < 0) {
                        write_report(wr, 1, errno);
                        _exit(127);
                }
                if (g == 0)
                        exec_qemu(argv, wr, log_fd, null_fd, cgroup_fd, console_fd, netns_fd);
                write_report(wr, 9, (int)g);
                _exit(0);
        }
        close(TAKE_FD(wr));
        int status;
        while (waitpid(mid, &status, 0) < 0)
                if (errno != EINTR)
                        return cap_error_errno(err, -errno, "waitpid");
        pid_t g = 0;
        struct child_report rep;
        ssize_t n;
        while ((n = read(rd, &rep, sizeof(rep))) != 0) {
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return cap_error_errno(err, -errno, "read spawn status");
                }
                if (n != sizeof(rep))
                        return cap_error_set(err, -EPROTO, CAP_INTERNAL, "short spawn report");
                static const char *const steps[] = {"", "setsid/fork", "join cgroup",
                                                    "redirect stdio", "exec", "join netns"};
                if (rep.step == 9)
                        g = rep.value;
                else if (rep.step >= 1 && rep.step <= 5)
                        return cap_error_errno(err, -rep.value, "%s %s", steps[rep.step],
                                               rep.step == 4 ? argv[0] : "");
        }
        if (g <= 0)
                return cap_error_set(err, -ECHILD, CAP_INTERNAL, "QEMU's pid was not reported");
        *pid = g;
        return 0;
}

/* Waits until QMP answers or QEMU exits (then the error carries QEMU's stderr). */
static int wait_ready(const struct vm_state_paths *p, pid_t pid, int timeout_ms,
                      struct cap_error *err)
{
        _cleanup_close_ int pidfd = pidfd_open_pid(pid);
        int64_t deadline = vm_now_ms() + timeout_ms;
        struct cap_error last = {0};
        for (;;) {
                if (wait_exit(pidfd, pid, 0) == 0) {
                        char tail[768];
                        qemu_log_tail(p->qemu_log, tail, sizeof(tail));
                        return cap_error_set(err, -ECHILD, CAP_FAILED_PRECONDITION,
                                             "QEMU exited during start: %s",
                                             *tail ? tail : "(no message; see qemu.log)");
                }
                struct qmp *q = NULL;
                int64_t left = deadline - vm_now_ms();
                int r = qmp_connect(p->qmp, left > 2000 ? 2000 : (left < 250 ? 250 : (int)left), &q,
                                    &last);
                if (r == 0) {
                        r = qmp_query_status(q, NULL, 0, NULL, &last);
                        qmp_close(q);
                        if (r == 0)
                                return 0;
                }
                if (vm_now_ms() >= deadline) {
                        *err = last;
                        return cap_error_prefix(err, "QEMU not ready within %d ms", timeout_ms);
                }
                sleep_ms(20);
        }
}

static int running_pid(const struct vm_state_paths *p, const char *name, pid_t *pid)
{
        if (read_pidfile(p->pidfile, pid) < 0 || !pid_alive(*pid) || !vm_pid_is_vm(*pid, name))
                return -ESRCH;
        return 0;
}

static int write_config(const struct vm_state_paths *p, const struct vm_config *cfg,
                        uint64_t generation, char **argv, struct cap_error *err)
{
        _cleanup_free_ char *line = qemu_argv_render(argv);
        _cleanup_free_ char *text = NULL;
        if (!line ||
            asprintf(&text,
                     "# capsule microVM state: written by vm_start, read by vm_adopt "
                     "and vm_list\nname=%s\ngeneration=%" PRIu64 "\naccel=%s\nargv=%s\n",
                     cfg->name, generation, cfg->accel == VM_ACCEL_KVM ? "kvm" : "tcg", line) < 0) {
                text = NULL;
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        return write_file_atomic(p->config, text, err);
}

static int start_checks(const struct vm_config *cfg, const struct vm_start_opts *opts,
                        struct vm_state_paths *p, struct cap_error *err)
{
        int r = vm_state_paths(opts->state_dir, p, err);
        if (r < 0)
                return r;
        if (!cfg->qmp_socket || strcmp(cfg->qmp_socket, p->qmp) != 0 || !cfg->pidfile ||
            strcmp(cfg->pidfile, p->pidfile) != 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "QMP socket and pidfile must be the state directory's "
                                     "(vm_config_use_state_paths)");
        if ((r = mkdir_p(p->dir, 0700)) < 0)
                return cap_error_errno(err, r, "create %s", p->dir);
        pid_t old;
        if (name_is_valid(cfg->name) && running_pid(p, cfg->name, &old) == 0)
                return cap_error_set(err, -EEXIST, CAP_ALREADY_EXISTS,
                                     "already running (QEMU pid %d)", (int)old);
        if ((unlink(p->qmp) < 0 && errno != ENOENT) || (unlink(p->pidfile) < 0 && errno != ENOENT))
                return cap_error_errno(err, -errno, "remove stale files in %s", p->dir);
        return 0;
}

int vm_start(const struct vm_config *cfg, const struct vm_start_opts *opts, pid_t *pid,
             struct cap_error *err)
{
        struct vm_state_paths p;
        int r = start_checks(cfg, opts, &p, err);
        if (r < 0)
                return cap_error_prefix(err, "start microVM %s", cfg->name ? cfg->name : "");
        _cleanup_(qemu_argv_freep) char **argv = NULL;
        if ((r = qemu_build_argv(cfg, &argv, err)) < 0 ||
            (r = write_config(&p, cfg, opts->generation, argv, err)) < 0)
                return cap_error_prefix(err, "start microVM %s", cfg->name);
        _cleanup_close_ int log_fd =
            open(p.qemu_log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
        if (log_fd < 0)
                return cap_error_errno(err, -errno, "start microVM %s: create %s", cfg->name,
                                       p.qemu_log);
        _cleanup_close_ int cg_fd = -1;
        if (opts->cgroup_dir) {
                char procs[PATH_MAX];
                snprintf(procs, sizeof(procs), "%s/cgroup.procs", opts->cgroup_dir);
                if ((cg_fd = open(procs, O_WRONLY | O_CLOEXEC)) < 0)
                        return cap_error_errno(err, -errno, "start microVM %s: open %s", cfg->name,
                                               procs);
        }
        _cleanup_close_ int ns_fd = -1;
        if (opts->netns_path && (ns_fd = open(opts->netns_path, O_RDONLY | O_CLOEXEC)) < 0)
                return cap_error_errno(err, -errno, "start microVM %s: open %s", cfg->name,
                                       opts->netns_path);
        pid_t qpid = 0;
        if ((r = spawn_detached(argv, log_fd, cg_fd, cfg->console_fd, ns_fd, &qpid, err)) < 0)
                return cap_error_prefix(err, "start microVM %s", cfg->name);
        int timeout = opts->ready_timeout_ms > 0 ? opts->ready_timeout_ms : VM_READY_TIMEOUT_MS;
        if ((r = wait_ready(&p, qpid, timeout, err)) < 0) {
                if (kill(qpid, SIGKILL) == 0)
                        vm_pid_wait_exit(qpid, 5000);
                return cap_error_prefix(err, "start microVM %s", cfg->name);
        }
        *pid = qpid;
        return 0;
}

int vm_adopt(const char *state_dir, pid_t *pid, char *status, size_t status_len,
             struct cap_error *err)
{
        struct vm_state_paths p;
        int r = vm_state_paths(state_dir, &p, err);
        if (r < 0)
                return r;
        char name[64];
        uint64_t gen;
        if ((r = config_read(p.config, name, sizeof(name), &gen)) < 0)
                return cap_error_errno(err, r, "adopt microVM: read %s", p.config);
        pid_t q;
        if (running_pid(&p, name, &q) < 0)
                return cap_error_set(err, -ESRCH, CAP_NOT_FOUND,
                                     "adopt microVM %s: not running (no live QEMU in %s)", name,
                                     p.pidfile);
        _cleanup_qmp_ struct qmp *qmp = NULL;
        char st[32];
        bool running;
        if ((r = qmp_connect(p.qmp, QMP_DEFAULT_TIMEOUT_MS, &qmp, err)) < 0 ||
            (r = qmp_query_status(qmp, st, sizeof(st), &running, err)) < 0)
                return cap_error_prefix(err, "adopt microVM %s (pid %d)", name, (int)q);
        if (status)
                snprintf(status, status_len, "%s", st);
        *pid = q;
        return 0;
}

/* Signals through the pidfd when there is one (no pid-reuse race), else by pid. */
static int send_signal(int pidfd, pid_t pid, int sig)
{
#ifdef SYS_pidfd_send_signal
        if (pidfd >= 0)
                return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
#endif
        return kill(pid, sig) < 0 ? -errno : 0;
}

int vm_stop(const char *state_dir, int grace_ms, struct cap_error *err)
{
        struct vm_state_paths p;
        int r = vm_state_paths(state_dir, &p, err);
        if (r < 0)
                return r;
        char name[64];
        uint64_t gen;
        if ((r = config_read(p.config, name, sizeof(name), &gen)) < 0)
                return r == -ENOENT ? 0 : cap_error_errno(err, r, "stop microVM: %s", p.config);
        pid_t pid;
        if (read_pidfile(p.pidfile, &pid) < 0)
                return 0;
        _cleanup_close_ int pidfd = pidfd_open_pid(pid);
        if (pidfd == -ESRCH || !vm_pid_is_vm(pid, name))
                return 0; /* not running, or the pid now belongs to someone else */
        struct qmp *q = NULL;
        struct cap_error qerr = {0};
        int to = grace_ms < 2000 ? (grace_ms > 200 ? grace_ms : 200) : 2000;
        if (qmp_connect(p.qmp, to, &q, &qerr) == 0) {
                r = qmp_quit(q, &qerr);
                qmp_close(q);
        } else {
                r = -1;
        }
        if (r < 0)
                send_signal(pidfd, pid, SIGTERM);
        if (wait_exit(pidfd, pid, grace_ms > 0 ? grace_ms : 0) == 0)
                return 0;
        if ((r = send_signal(pidfd, pid, SIGKILL)) < 0 && r != -ESRCH)
                return cap_error_errno(err, r, "stop microVM %s: kill QEMU pid %d", name, (int)pid);
        if (wait_exit(pidfd, pid, 10000) < 0)
                return cap_error_set(err, -ETIMEDOUT, CAP_DEADLINE_EXCEEDED,
                                     "stop microVM %s: QEMU pid %d survived SIGKILL for 10 s", name,
                                     (int)pid);
        return 0;
}

/* Removes everything in dirfd (one level of subdirectories deep is plenty for a state dir). */
static int clear_dir(int dirfd, int depth)
{
        DIR *d = fdopendir(dirfd);
        if (!d) {
                int e = -errno;
                close(dirfd);
                return e;
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (unlinkat(dirfd, de->d_name, 0) == 0)
                        continue;
                if ((errno == EISDIR || errno == EPERM) && depth < 4) {
                        int sub = openat(dirfd, de->d_name,
                                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0 || clear_dir(sub, depth + 1) < 0 ||
                            unlinkat(dirfd, de->d_name, AT_REMOVEDIR) < 0)
                                r = r ? r : -errno;
                        continue;
                }
                r = r ? r : -errno;
        }
        closedir(d);
        return r;
}

int vm_remove(const char *state_dir, struct cap_error *err)
{
        struct vm_state_paths p;
        int r = vm_state_paths(state_dir, &p, err);
        if (r < 0)
                return r;
        char name[64];
        uint64_t gen;
        pid_t pid;
        if (config_read(p.config, name, sizeof(name), &gen) == 0 &&
            running_pid(&p, name, &pid) == 0)
                return cap_error_set(err, -EBUSY, CAP_FAILED_PRECONDITION,
                                     "remove microVM %s: still running (QEMU pid %d)", name,
                                     (int)pid);
        int fd = open(p.dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : cap_error_errno(err, -errno, "remove %s", p.dir);
        if ((r = clear_dir(fd, 0)) < 0)
                return cap_error_errno(err, r, "remove microVM state in %s", p.dir);
        if (rmdir(p.dir) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "remove %s", p.dir);
        return 0;
}

static int cmp_names(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_one(const char *vms, const char *entry, int (*fn)(const struct vm_info *, void *),
                    void *ud)
{
        char dir[PATH_MAX];
        if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", vms, entry) >= sizeof(dir))
                return 0;
        struct stat st;
        if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
                return 0;
        struct vm_state_paths p;
        if (vm_state_paths(dir, &p, NULL) < 0)
                return 0;
        char name[64];
        struct vm_info info = {.name = entry, .state_dir = dir};
        if (config_read(p.config, name, sizeof(name), &info.generation) < 0)
                info.generation = 0;
        pid_t pid;
        if (running_pid(&p, entry, &pid) == 0) {
                info.running = true;
                info.pid = pid;
        }
        return fn(&info, ud);
}

int vm_list(const char *root, int (*fn)(const struct vm_info *vm, void *ud), void *ud,
            struct cap_error *err)
{
        char vms[PATH_MAX];
        if ((size_t)snprintf(vms, sizeof(vms), "%s/vms", root) >= sizeof(vms))
                return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT, "%s: too long",
                                     root);
        DIR *d = opendir(vms);
        if (!d)
                return errno == ENOENT ? 0 : cap_error_errno(err, -errno, "list %s", vms);
        char **names = NULL;
        size_t n = 0;
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!name_is_valid(de->d_name))
                        continue;
                char **nn = realloc(names, (n + 1) * sizeof(*names));
                char *dup = nn ? strdup(de->d_name) : NULL;
                if (nn)
                        names = nn;
                if (!dup) {
                        r = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                        break;
                }
                names[n++] = dup;
        }
        closedir(d);
        if (r == 0 && n)
                qsort(names, n, sizeof(*names), cmp_names);
        for (size_t i = 0; i < n; i++) {
                if (r == 0)
                        r = list_one(vms, names[i], fn, ud);
                free(names[i]);
        }
        free(names);
        return r;
}
