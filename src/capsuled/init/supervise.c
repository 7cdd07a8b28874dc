/* Supervision of PID 1's long-running children: containerd, the DHCP client and `capsuled serve`.
 *
 * Each service runs in its own session with stdin on /dev/null and stdout/stderr on a pipe that
 * PID 1 forwards line by line to /dev/kmsg ("init: containerd: ..."), so the console and
 * `capsulectl dmesg` show everything with kernel timestamps. A service that exits is restarted
 * after a backoff of 1 s, doubling up to 30 s; the backoff resets once a run lasted 60 s.
 * Images built with --debug-shell (marker /etc/capsule-debug-shell) also get a busybox shell on
 * the console; production images have neither the marker nor a shell. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../common/cleanup.h"
#include "../../common/log.h"
#include "init.h"

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000
#define STABLE_MS 60000
#define LIVENESS_CHILD_FD 3
#define LIVENESS_TIMEOUT_MS_DEFAULT 60000
#define LIVENESS_STARTUP_FACTOR 5 /* the first sign of life may take this many timeouts */
#define LIVENESS_KILLS_TO_REBOOT 3
#define LIVENESS_REBOOT_WINDOW_MS (10 * 60 * 1000)

struct service {
        const char *name;
        const char *const *argv;
        int oom_score_adj;
        bool close_stdin;    /* dhcpcd 9.4.1 (privsep) polls fd 0: give it none */
        bool on_console;     /* stdio on /dev/console as controlling terminal (debug shell) */
        const char *only_if; /* registered only when this path exists */
        int stop_extra_ms;   /* at shutdown, more time than the others to stop */
        bool liveness;       /* gets a liveness pipe ($CAPSULE_LIVENESS_FD, serve/liveness.c) */
        int live_fd;         /* read end of it, -1 if none */
        bool live_seen;      /* a sign of life came since the last start */
        bool live_killed;    /* killed for want of one; not reaped yet */
        int64_t alive_at;    /* monotonic ms of the last sign of life (or of the start) */
        pid_t pid;
        int out_fd;         /* read end of the child's stdout/stderr pipe, -1 if none */
        int64_t started_at; /* monotonic ms of the last start */
        int64_t down_since; /* monotonic ms since when it is not running, 0 while running */
        int64_t next_start; /* monotonic ms of the next start attempt, 0 if none pending */
        int backoff_ms;
        unsigned restarts;
        char line[1024];
        size_t line_len;
};

static const char *const containerd_argv[] = {"/usr/bin/containerd", "--config",
                                              "/etc/containerd/config.toml", NULL};
static const char *const dhcpcd_argv[] = {"/usr/sbin/dhcpcd",
                                          "-B",
                                          "-f",
                                          "/run/capsule/dhcpcd.conf",
                                          "-c",
                                          "/usr/libexec/capsule/dhcp-hook",
                                          NULL};
static const char *const chronyd_argv[] = {"/usr/sbin/chronyd", "-d", "-u", "_chrony", "-f",
                                           INIT_CHRONY_CONF,    NULL};
static const char *const debug_shell_argv[] = {"/usr/bin/busybox", "sh", "-l", NULL};
static const char *const serve_argv[] = {"/usr/bin/capsuled",
                                         "serve",
                                         "--root",
                                         INIT_STATE_DIR,
                                         "--machine-config",
                                         INIT_MACHINE_CONFIG,
                                         "--listen",
                                         "0.0.0.0:50000",
                                         "--containerd",
                                         "/run/containerd/containerd.sock",
                                         "--os",
                                         NULL};

/* The supervisor's whole state: the services, in start order (stopped in reverse). */
static struct supervisor {
        struct service services[5];
        size_t n;
} sup = {
    .services =
        {
            {.name = "containerd", .argv = containerd_argv, .oom_score_adj = -999},
            {.name = "dhcpcd", .argv = dhcpcd_argv, .oom_score_adj = -999, .close_stdin = true},
            {.name = "chronyd",
             .argv = chronyd_argv,
             .oom_score_adj = -900,
             .only_if = INIT_CHRONY_CONF},
            {.name = "capsuled-serve",
             .argv = serve_argv,
             .oom_score_adj = -900,
             .liveness = true,
             /* it stops every workload first (all at once: one 10 s grace period, then their
              * SIGKILLs), see serve.c */
             .stop_extra_ms = 15000},
            {.name = "debug-shell",
             .argv = debug_shell_argv,
             .on_console = true,
             .only_if = "/etc/capsule-debug-shell"},
        },
    .n = 5,
};

static void child_setup_console(void)
{
        int fd = open("/dev/console", O_RDWR | O_NOCTTY);
        if (fd < 0 || ioctl(fd, TIOCSCTTY, 1) < 0)
                _exit(126);
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
}

static void child_setup(int out_fd, bool close_stdin, bool on_console)
{
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        setsid();
        if (on_console) {
                child_setup_console();
                if (chdir("/") < 0)
                        _exit(126);
                return;
        }
        dup2(out_fd, STDOUT_FILENO);
        dup2(out_fd, STDERR_FILENO);
        if (close_stdin) {
                close(STDIN_FILENO);
        } else {
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (null >= 0)
                        dup2(null, STDIN_FILENO);
        }
        if (chdir("/") < 0)
                _exit(126);
}

static void set_oom_score_adj(pid_t pid, int value)
{
        char path[64], v[16];
        snprintf(path, sizeof(path), "/proc/%d/oom_score_adj", pid);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
        int n = snprintf(v, sizeof(v), "%d", value);
        if (fd < 0 || write(fd, v, (size_t)n) != n)
                log_warn("%s: oom_score_adj: %s", path, strerror(errno));
}

static int service_start(struct service *s)
{
        int p[2], lp[2] = {-1, -1};
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        if (s->liveness && pipe2(lp, O_CLOEXEC) < 0) {
                int e = -errno;
                close(p[0]);
                close(p[1]);
                return e;
        }
        pid_t pid = fork();
        if (pid < 0) {
                int e = -errno;
                close(p[0]);
                close(p[1]);
                if (lp[0] >= 0) {
                        close(lp[0]);
                        close(lp[1]);
                }
                return e;
        }
        if (pid == 0) {
                child_setup(p[1], s->close_stdin, s->on_console);
                /* the liveness pipe's write end as fd LIVENESS_CHILD_FD, kept across exec */
                if (lp[1] >= 0 && (lp[1] == LIVENESS_CHILD_FD
                                       ? fcntl(lp[1], F_SETFD, 0)
                                       : dup2(lp[1], LIVENESS_CHILD_FD)) < 0)
                        _exit(126);
                /* CAPSULE_FAULT comes from the kernel command line, for crash tests only
                 * (common/fault.h); nothing else of PID 1's environment is passed on. */
                char fault[256] = "";
                const char *f = getenv("CAPSULE_FAULT");
                if (f)
                        snprintf(fault, sizeof(fault), "CAPSULE_FAULT=%s", f);
                char live[64] = "";
                if (lp[1] >= 0)
                        snprintf(live, sizeof(live), "CAPSULE_LIVENESS_FD=%d", LIVENESS_CHILD_FD);
                char *envp[6] = {"PATH=" INIT_PATH, "HOME=/root", "TMPDIR=/tmp"};
                size_t k = 3;
                if (f)
                        envp[k++] = fault;
                if (live[0])
                        envp[k++] = live;
                envp[k] = NULL;
                execve(s->argv[0], (char *const *)s->argv, envp);
                dprintf(STDERR_FILENO, "exec %s: %s\n", s->argv[0], strerror(errno));
                _exit(127);
        }
        close(p[1]);
        if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0)
                log_warn("%s: O_NONBLOCK: %s", s->name, strerror(errno));
        if (s->live_fd >= 0)
                close(s->live_fd);
        s->live_fd = -1;
        if (lp[0] >= 0) {
                close(lp[1]);
                if (fcntl(lp[0], F_SETFL, O_NONBLOCK) < 0)
                        log_warn("%s: O_NONBLOCK: %s", s->name, strerror(errno));
                s->live_fd = lp[0];
        }
        s->live_seen = false;
        s->live_killed = false;
        s->alive_at = now_ms();
        if (s->out_fd >= 0)
                close(s->out_fd);
        s->out_fd = p[0];
        s->line_len = 0;
        s->pid = pid;
        s->started_at = now_ms();
        s->down_since = 0;
        s->next_start = 0;
        set_oom_score_adj(pid, s->oom_score_adj);
        log_info("started %s (pid %d)", s->name, pid);
        return 0;
}

static void service_schedule(struct service *s, int delay_ms)
{
        s->next_start = now_ms() + delay_ms;
}

int supervise_start_all(void)
{
        int failed = 0;
        for (size_t i = 0; i < sup.n; i++) {
                struct service *s = &sup.services[i];
                s->out_fd = -1;
                s->live_fd = -1;
                s->backoff_ms = BACKOFF_MIN_MS;
                s->down_since = now_ms();
                if (s->only_if && access(s->only_if, F_OK) < 0) {
                        s->argv = NULL;
                        continue;
                }
                if (access(s->argv[0], X_OK) < 0) {
                        log_error("%s: %s missing, not supervised", s->name, s->argv[0]);
                        s->argv = NULL;
                        continue;
                }
                if (service_start(s) < 0) {
                        failed++;
                        service_schedule(s, s->backoff_ms);
                }
        }
        return failed ? -EIO : 0;
}

static void describe_status(int status, char *buf, size_t size)
{
        if (WIFEXITED(status))
                snprintf(buf, size, "exit %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
                snprintf(buf, size, "signal %s", strsignal(WTERMSIG(status)));
        else
                snprintf(buf, size, "status 0x%x", status);
}

bool supervise_child_exited(pid_t pid, int status)
{
        for (size_t i = 0; i < sup.n; i++) {
                struct service *s = &sup.services[i];
                if (s->pid != pid || pid <= 0)
                        continue;
                if (s->out_fd >= 0)
                        supervise_drain(s->out_fd);
                int64_t ran = now_ms() - s->started_at;
                if (ran >= STABLE_MS)
                        s->backoff_ms = BACKOFF_MIN_MS;
                char why[64];
                describe_status(status, why, sizeof(why));
                s->pid = 0;
                s->down_since = now_ms();
                s->restarts++;
                log_warn("%s (pid %d) stopped: %s after %lld ms; restart #%u in %d ms", s->name,
                         pid, why, (long long)ran, s->restarts, s->backoff_ms);
                service_schedule(s, s->backoff_ms);
                s->backoff_ms =
                    s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
                return true;
        }
        return false;
}

int supervise_tick(void)
{
        int64_t now = now_ms(), next = -1;
        for (size_t i = 0; i < sup.n; i++) {
                struct service *s = &sup.services[i];
                if (!s->argv || s->pid || !s->next_start)
                        continue;
                if (s->next_start <= now) {
                        if (service_start(s) < 0) {
                                log_error("%s: start failed: %s", s->name, strerror(errno));
                                service_schedule(s, s->backoff_ms);
                        }
                        continue;
                }
                if (next < 0 || s->next_start - now < next)
                        next = s->next_start - now;
        }
        return (int)next;
}

size_t supervise_poll_fds(struct pollfd *pfds, size_t max)
{
        size_t k = 0;
        for (size_t i = 0; i < sup.n && k < max; i++) {
                if (sup.services[i].out_fd >= 0)
                        pfds[k++] = (struct pollfd){.fd = sup.services[i].out_fd, .events = POLLIN};
                if (sup.services[i].live_fd >= 0 && k < max)
                        pfds[k++] = (struct pollfd){.fd = sup.services[i].live_fd, .events = POLLIN};
        }
        return k;
}

/* Reads the signs of life waiting on s's liveness pipe. */
static void drain_liveness(struct service *s)
{
        char buf[256];
        ssize_t n;
        while ((n = read(s->live_fd, buf, sizeof(buf))) > 0) {
                if (!s->live_seen)
                        log_info("%s (pid %d): first sign of life after %lld ms", s->name, s->pid,
                                 (long long)(now_ms() - s->started_at));
                s->live_seen = true;
                s->alive_at = now_ms();
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                close(s->live_fd);
                s->live_fd = -1;
        }
}

/* The liveness timeout: $CAPSULE_LIVENESS_TIMEOUT seconds (kernel command line, for tests on a
 * slow emulator or a quick e2e), else LIVENESS_TIMEOUT_MS_DEFAULT. */
static int64_t liveness_timeout_ms(void)
{
        const char *v = getenv("CAPSULE_LIVENESS_TIMEOUT");
        char *end;
        long sec = v ? strtol(v, &end, 10) : 0;
        if (v && *v && *end == '\0' && sec >= 5 && sec <= 3600)
                return (int64_t)sec * 1000;
        return LIVENESS_TIMEOUT_MS_DEFAULT;
}

bool supervise_check_liveness(void)
{
        static int64_t kills[LIVENESS_KILLS_TO_REBOOT];
        static unsigned n_kills;
        int64_t now = now_ms(), timeout = liveness_timeout_ms();
        for (size_t i = 0; i < sup.n; i++) {
                struct service *s = &sup.services[i];
                if (!s->liveness || !s->argv || !s->pid || s->live_killed)
                        continue;
                int64_t limit = s->live_seen ? timeout : timeout * LIVENESS_STARTUP_FACTOR;
                if (now - s->alive_at <= limit)
                        continue;
                log_error("%s (pid %d) gave no sign of life for %lld s (%s; limit %lld s): killing "
                          "it, it restarts",
                          s->name, s->pid, (long long)(now - s->alive_at) / 1000,
                          s->live_seen ? "it stopped answering" : "none since it started",
                          (long long)limit / 1000);
                kill(s->pid, SIGKILL);
                s->live_killed = true;
                kills[n_kills++ % LIVENESS_KILLS_TO_REBOOT] = now;
                if (n_kills >= LIVENESS_KILLS_TO_REBOOT) {
                        int64_t oldest = kills[n_kills % LIVENESS_KILLS_TO_REBOOT];
                        if (now - oldest <= LIVENESS_REBOOT_WINDOW_MS) {
                                log_error("%s killed %d times in %lld s for want of a sign of life: "
                                          "rebooting",
                                          s->name, LIVENESS_KILLS_TO_REBOOT,
                                          (long long)(now - oldest) / 1000);
                                return true;
                        }
                }
        }
        return false;
}

static void emit_line(struct service *s)
{
        s->line[s->line_len] = '\0';
        if (s->line_len)
                log_info("%s: %s", s->name, s->line);
        s->line_len = 0;
}

void supervise_drain(int fd)
{
        struct service *s = NULL;
        for (size_t i = 0; i < sup.n; i++) {
                if (sup.services[i].live_fd == fd) {
                        drain_liveness(&sup.services[i]);
                        return;
                }
                if (sup.services[i].out_fd == fd)
                        s = &sup.services[i];
        }
        if (!s)
                return;
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0) {
                for (ssize_t i = 0; i < n; i++) {
                        if (buf[i] == '\n' || s->line_len == sizeof(s->line) - 1)
                                emit_line(s);
                        if (buf[i] != '\n')
                                s->line[s->line_len++] = buf[i];
                }
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                /* writer side closed (service exited): flush and stop polling it */
                emit_line(s);
                close(s->out_fd);
                s->out_fd = -1;
        }
}

bool supervise_serve_down_for(int64_t limit_ms)
{
        for (size_t i = 0; i < sup.n; i++) {
                struct service *s = &sup.services[i];
                if (strcmp(s->name, "capsuled-serve") == 0)
                        return s->argv && s->pid == 0 && now_ms() - s->down_since > limit_ms;
        }
        return false;
}

/* Reaps children until pid has exited or the deadline passed, petting the watchdog meanwhile.
 * Returns true if pid is gone. */
static bool wait_for(pid_t pid, int64_t deadline)
{
        for (;;) {
                watchdog_pet();
                int status;
                pid_t r = waitpid(-1, &status, WNOHANG);
                if (r == pid || (r < 0 && errno == ECHILD))
                        return true;
                if (r > 0)
                        continue;
                if (kill(pid, 0) < 0 && errno == ESRCH)
                        return true;
                if (now_ms() >= deadline)
                        return false;
                usleep(50 * 1000);
        }
}

void supervise_stop_all(int grace_ms)
{
        for (size_t i = sup.n; i-- > 0;) {
                struct service *s = &sup.services[i];
                s->next_start = 0;
                if (!s->pid)
                        continue;
                int grace = grace_ms + s->stop_extra_ms;
                log_info("stopping %s (pid %d)", s->name, s->pid);
                kill(-s->pid, SIGTERM);
                kill(s->pid, SIGTERM);
                if (!wait_for(s->pid, now_ms() + grace)) {
                        log_warn("%s did not stop within %d ms, killing", s->name, grace);
                        kill(-s->pid, SIGKILL);
                        kill(s->pid, SIGKILL);
                        wait_for(s->pid, now_ms() + 2000);
                }
                if (s->out_fd >= 0)
                        supervise_drain(s->out_fd);
                s->pid = 0;
        }
}

/* VmRSS of pid in kB from /proc/PID/status, or -1. */
static long rss_kb(pid_t pid)
{
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/status", pid);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        long kb = -1;
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
                        break;
        return kb;
}

void supervise_log_stats(void)
{
        char buf[512];
        int n = snprintf(buf, sizeof(buf), "pid1=%ldkB", rss_kb(getpid()));
        for (size_t i = 0; i < sup.n && n > 0 && (size_t)n < sizeof(buf); i++) {
                struct service *s = &sup.services[i];
                if (s->pid)
                        n += snprintf(buf + n, sizeof(buf) - (size_t)n, " %s=%ldkB", s->name,
                                      rss_kb(s->pid));
        }
        log_info("stats: rss %s", buf);
}
