/* seccomp-probe: makes system calls a confined container must be refused, and a few it must be
 * allowed, and prints one line per call: "NAME ok" or "NAME errno=N" (N the errno it got).
 * test_seccomp.py compiles it statically (gcc -static) into a test image and compares the lines
 * with what the profile of src/capsuled/containerd/spec_seccomp.c promises. The 32-bit x86 ABI is
 * reached with int $0x80 from this 64-bit process, to show the filter covers it too. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long r)
{
        if (r < 0)
                printf("%s errno=%d\n", name, errno);
        else
                printf("%s ok\n", name);
}

static void *thread_main(void *arg)
{
        return arg;
}

/* A raw clone(2) with flags, the child exiting at once; the parent reaps it. */
static long clone_with(unsigned long flags)
{
        long pid = syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0);
        if (pid == 0)
                _exit(0);
        if (pid > 0)
                waitpid((pid_t)pid, NULL, 0);
        return pid;
}

#if defined(__x86_64__)
/* A system call through the 32-bit x86 entry point: the result, -errno on failure. */
static long int80(long nr, long a, long b)
{
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b) : "memory");
        return r;
}

static sigjmp_buf int80_fault;

static void on_int80_fault(int sig)
{
        (void)sig;
        siglongjmp(int80_fault, 1);
}

static void report32(const char *name, long r)
{
        if (r < 0 && r > -4096)
                printf("%s errno=%d\n", name, (int)-r);
        else
                printf("%s ok\n", name);
}
#endif

int main(void)
{
        setvbuf(stdout, NULL, _IOLBF, 0);
        /* refused: new namespaces, mounts, keyrings, BPF, io_uring, kexec, modules, tracing */
        report("unshare-user", unshare(CLONE_NEWUSER));
        report("unshare-net", unshare(CLONE_NEWNET));
        report("setns", setns(0, CLONE_NEWNET));
        report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
        report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -2 /* process */, 0));
        report("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, -2 /* process keyring */));
        report("bpf", syscall(SYS_bpf, 0, NULL, 0));
        uint32_t params[30];
        memset(params, 0, sizeof(params));
        report("io_uring_setup", syscall(SYS_io_uring_setup, 4, params));
        report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
        report("init_module", syscall(SYS_init_module, NULL, 0, ""));
        /* PTRACE_PEEKUSER of pid 0, which no process has: ESRCH where ptrace is allowed */
        report("ptrace", syscall(SYS_ptrace, 3 /* PTRACE_PEEKUSER */, 0, NULL, NULL));
        report("userfaultfd", syscall(SYS_userfaultfd, 0));
        report("clone-newuser", clone_with(CLONE_NEWUSER));
        report("clone-newns", clone_with(CLONE_NEWNS));
        struct clone_args ca = {.exit_signal = SIGCHLD};
        long c3 = syscall(SYS_clone3, &ca, sizeof(ca));
        if (c3 == 0)
                _exit(0);
        report("clone3", c3);
        report("personality-read-implies-exec", personality(READ_IMPLIES_EXEC));
        report("socket-vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
        report("socket-alg", socket(38 /* AF_ALG */, SOCK_SEQPACKET, 0));

        /* allowed: ordinary life */
        report("clone-fork", clone_with(0));
        pthread_t t;
        int e = pthread_create(&t, NULL, thread_main, NULL);
        if (e == 0)
                e = pthread_join(t, NULL);
        errno = e;
        report("pthread_create", e ? -1 : 0);
        report("personality-query", personality(0xffffffff));
        report("personality-linux", personality(PER_LINUX));
        report("socket-inet", socket(AF_INET, SOCK_STREAM, 0));
        report("socket-unix", socket(AF_UNIX, SOCK_DGRAM, 0));
#if defined(__x86_64__)
        /* the i386 ABI: getpid is 20, unshare 310, io_uring_setup 425, keyctl 288 there. A kernel
         * booted with ia32_emulation=0 (or without it) faults on int $0x80: say so. */
        struct sigaction sa = {.sa_handler = on_int80_fault};
        sigaction(SIGSEGV, &sa, NULL);
        if (sigsetjmp(int80_fault, 1)) {
                printf("i386 unavailable\n");
                printf("probe done\n");
                return 0;
        }
        report32("i386-getpid", int80(20, 0, 0));
        report32("i386-unshare", int80(310, CLONE_NEWUSER, 0));
        report32("i386-io_uring_setup", int80(425, 4, 0));
        report32("i386-keyctl", int80(288, 0, -2));
#endif
        printf("probe done\n");
        return 0;
}
