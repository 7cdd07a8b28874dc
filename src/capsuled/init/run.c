/* Short helper commands of PID 1 (modprobe, lvm, mkfs.ext4, e2fsck): fork/exec with a timeout,
 * output captured for the caller or forwarded to the log. The child is reaped here, by pid, so the
 * main loop's reaper never sees it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../common/log.h"
#include "init.h"

int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void child_exec(char *const argv[], int out_fd)
{
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null >= 0)
                dup2(null, STDIN_FILENO);
        dup2(out_fd, STDOUT_FILENO);
        dup2(out_fd, STDERR_FILENO);
        char *const envp[] = {"PATH=" INIT_PATH, "LVM_SUPPRESS_FD_WARNINGS=1", NULL};
        execve(argv[0], argv, envp);
        dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

/* Reads what the child writes until EOF or the deadline. */
static int collect_output(int fd, int64_t deadline, char *out, size_t out_size, size_t *used)
{
        char buf[1024];
        for (;;) {
                int64_t left = deadline - now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd p = {.fd = fd, .events = POLLIN};
                int r = poll(&p, 1, (int)left);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (r == 0)
                        return -ETIMEDOUT;
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return 0;
                if (out && *used + 1 < out_size) {
                        size_t k = (size_t)n;
                        if (k > out_size - 1 - *used)
                                k = out_size - 1 - *used;
                        memcpy(out + *used, buf, k);
                        *used += k;
                        out[*used] = '\0';
                }
        }
}

static void log_lines(const char *prog, char *text)
{
        char *save = NULL;
        for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                log_info("%s: %s", prog, l);
}

int run_cmd(char *const argv[], int timeout_ms, char *out, size_t out_size)
{
        char local[4096];
        char *buf = out ? out : local;
        size_t size = out ? out_size : sizeof(local);
        size_t used = 0;
        if (size)
                buf[0] = '\0';
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0) {
                int e = -errno;
                close(pipefd[0]);
                close(pipefd[1]);
                return e;
        }
        if (pid == 0)
                child_exec(argv, pipefd[1]);
        close(pipefd[1]);
        int r = collect_output(pipefd[0], now_ms() + timeout_ms, buf, size, &used);
        close(pipefd[0]);
        if (r == -ETIMEDOUT) {
                log_warn("%s: timed out after %d ms, killing", argv[0], timeout_ms);
                kill(pid, SIGKILL);
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (!out && used)
                log_lines(argv[0], buf);
        if (r < 0)
                return r;
        if (WIFSIGNALED(status))
                return -EINTR;
        return WEXITSTATUS(status);
}
