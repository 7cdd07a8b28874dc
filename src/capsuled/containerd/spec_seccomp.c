/* The seccomp allow-list of unprivileged containers (see spec_seccomp.h).
 *
 * The coverage is that of the default profile Docker and containerd ship, so that images built
 * for them run unchanged: everything an ordinary program needs (files, memory, threads, signals,
 * time, sockets, SysV and POSIX IPC, epoll, inotify, AIO), the 32-bit x86 names of the same
 * calls, and no more. What is left out is refused with EPERM: io_uring (its own syscall surface,
 * a frequent source of kernel bugs), keyrings (not namespaced), userfaultfd, kexec, module
 * loading, mounts and new namespaces, tracing other processes, BPF, perf, clocks, swap, reboot.
 * A few are unlocked by the capability the kernel itself would check, when the workload holds it.
 *
 * Stricter than Docker's in two places, as Capsule was before: ptrace, process_vm_readv/writev
 * and kcmp need CAP_SYS_PTRACE (Docker allows them on kernels >= 4.8), and name_to_handle_at
 * needs CAP_DAC_READ_SEARCH like open_by_handle_at. The libseccomp behind runc skips names it
 * does not know, so new syscalls can be listed before every host knows them. */
#include "spec_seccomp.h"

#include <errno.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <stdbool.h>
#include <sys/personality.h>
#include <sys/socket.h>

#include "common/cleanup.h"

/* What a container that lacks the capabilities of an entry gets for that syscall. */
enum seccomp_limit {
        SECCOMP_DENY = 0,        /* nothing: the default action, EPERM */
        SECCOMP_CLONE_NO_NS,     /* clone without any CLONE_NEW* flag */
        SECCOMP_ENOSYS,          /* ENOSYS, so that libc falls back (clone3 -> clone) */
        SECCOMP_PERSONALITY,     /* the personalities in seccomp_personalities only */
        SECCOMP_SOCKET_FAMILIES, /* any address family but AF_ALG and AF_VSOCK */
};

#define CAP(c) (1ULL << (c))
/* No capability lifts the limit: the argument filter always applies. */
#define SECCOMP_NOCAP (1ULL << 63)

struct seccomp_syscall {
        const char *name;
        uint64_t caps; /* 0: every container; else allowed to one holding any of these */
        enum seccomp_limit limit;
};

/* clang-format off */
#define ALL(n) {n, 0, SECCOMP_DENY}
#define WITH(c, n) {n, (c), SECCOMP_DENY}

/* The one table. Order only matters for reading: grouped by what the calls are for. */
static const struct seccomp_syscall seccomp_table[] = {
    /* files and directories */
    ALL("access"), ALL("faccessat"), ALL("faccessat2"), ALL("open"), ALL("openat"), ALL("openat2"),
    ALL("creat"), ALL("close"), ALL("close_range"), ALL("read"), ALL("readv"), ALL("pread64"),
    ALL("preadv"), ALL("preadv2"), ALL("write"), ALL("writev"), ALL("pwrite64"), ALL("pwritev"),
    ALL("pwritev2"), ALL("lseek"), ALL("_llseek"), ALL("dup"), ALL("dup2"), ALL("dup3"),
    ALL("fcntl"), ALL("fcntl64"), ALL("ioctl"), ALL("flock"), ALL("fsync"), ALL("fdatasync"),
    ALL("sync"), ALL("syncfs"), ALL("sync_file_range"), ALL("truncate"), ALL("truncate64"),
    ALL("ftruncate"), ALL("ftruncate64"), ALL("fallocate"), ALL("fadvise64"), ALL("fadvise64_64"),
    ALL("readahead"), ALL("copy_file_range"), ALL("sendfile"), ALL("sendfile64"), ALL("splice"),
    ALL("tee"), ALL("vmsplice"), ALL("stat"), ALL("stat64"), ALL("lstat"), ALL("lstat64"),
    ALL("fstat"), ALL("fstat64"), ALL("fstatat64"), ALL("newfstatat"), ALL("statx"), ALL("statfs"),
    ALL("statfs64"), ALL("fstatfs"), ALL("fstatfs64"), ALL("getdents"), ALL("getdents64"),
    ALL("getcwd"), ALL("chdir"), ALL("fchdir"), ALL("mkdir"), ALL("mkdirat"), ALL("rmdir"),
    ALL("mknod"), ALL("mknodat"), ALL("link"), ALL("linkat"), ALL("symlink"), ALL("symlinkat"),
    ALL("unlink"), ALL("unlinkat"), ALL("rename"), ALL("renameat"), ALL("renameat2"),
    ALL("readlink"), ALL("readlinkat"), ALL("chmod"), ALL("fchmod"), ALL("fchmodat"),
    ALL("fchmodat2"), ALL("chown"), ALL("chown32"), ALL("fchown"), ALL("fchown32"), ALL("fchownat"),
    ALL("lchown"), ALL("lchown32"), ALL("umask"), ALL("utime"), ALL("utimes"), ALL("utimensat"),
    ALL("utimensat_time64"), ALL("futimesat"), ALL("getxattr"), ALL("lgetxattr"), ALL("fgetxattr"),
    ALL("getxattrat"), ALL("setxattr"), ALL("lsetxattr"), ALL("fsetxattr"), ALL("setxattrat"),
    ALL("listxattr"), ALL("llistxattr"), ALL("flistxattr"), ALL("listxattrat"), ALL("removexattr"),
    ALL("lremovexattr"), ALL("fremovexattr"), ALL("removexattrat"), ALL("memfd_create"),
    ALL("memfd_secret"), ALL("cachestat"), ALL("statmount"), ALL("listmount"),
    WITH(CAP(CAP_DAC_READ_SEARCH), "open_by_handle_at"),
    WITH(CAP(CAP_DAC_READ_SEARCH), "name_to_handle_at"), WITH(CAP(CAP_SYS_CHROOT), "chroot"),

    /* waiting for many descriptors, file change notification, asynchronous I/O (not io_uring) */
    ALL("select"), ALL("_newselect"), ALL("pselect6"), ALL("pselect6_time64"), ALL("poll"),
    ALL("ppoll"), ALL("ppoll_time64"), ALL("epoll_create"), ALL("epoll_create1"), ALL("epoll_ctl"),
    ALL("epoll_ctl_old"), ALL("epoll_wait"), ALL("epoll_wait_old"), ALL("epoll_pwait"),
    ALL("epoll_pwait2"), ALL("eventfd"), ALL("eventfd2"), ALL("signalfd"), ALL("signalfd4"),
    ALL("timerfd_create"), ALL("timerfd_settime"), ALL("timerfd_settime64"), ALL("timerfd_gettime"),
    ALL("timerfd_gettime64"), ALL("inotify_init"), ALL("inotify_init1"), ALL("inotify_add_watch"),
    ALL("inotify_rm_watch"), ALL("fanotify_mark"), ALL("io_setup"), ALL("io_destroy"),
    ALL("io_submit"), ALL("io_cancel"), ALL("io_getevents"), ALL("io_pgetevents"),
    ALL("io_pgetevents_time64"), ALL("ioprio_get"), ALL("ioprio_set"), ALL("pipe"), ALL("pipe2"),
    WITH(CAP(CAP_SYS_ADMIN), "fanotify_init"),

    /* processes and threads */
    ALL("execve"), ALL("execveat"), ALL("fork"), ALL("vfork"), ALL("exit"), ALL("exit_group"),
    ALL("wait4"), ALL("waitid"), ALL("waitpid"), ALL("getpid"), ALL("getppid"), ALL("gettid"),
    ALL("getpgid"), ALL("setpgid"), ALL("getpgrp"), ALL("getsid"), ALL("setsid"),
    ALL("set_tid_address"), ALL("set_robust_list"), ALL("get_robust_list"), ALL("rseq"),
    ALL("futex"), ALL("futex_time64"), ALL("futex_waitv"), ALL("futex_wait"), ALL("futex_wake"),
    ALL("futex_requeue"), ALL("prctl"), ALL("arch_prctl"), ALL("set_thread_area"),
    ALL("get_thread_area"), ALL("modify_ldt"), ALL("map_shadow_stack"), ALL("uretprobe"),
    ALL("sched_yield"), ALL("sched_getaffinity"), ALL("sched_setaffinity"), ALL("sched_getattr"),
    ALL("sched_setattr"), ALL("sched_getparam"), ALL("sched_setparam"), ALL("sched_getscheduler"),
    ALL("sched_setscheduler"), ALL("sched_get_priority_max"), ALL("sched_get_priority_min"),
    ALL("sched_rr_get_interval"), ALL("sched_rr_get_interval_time64"), ALL("getpriority"),
    ALL("setpriority"), ALL("getcpu"), ALL("getrlimit"), ALL("ugetrlimit"), ALL("setrlimit"),
    ALL("prlimit64"), ALL("getrusage"), ALL("times"), ALL("pidfd_open"), ALL("pidfd_send_signal"),
    ALL("process_mrelease"), ALL("seccomp"), ALL("landlock_create_ruleset"),
    ALL("landlock_add_rule"), ALL("landlock_restrict_self"), ALL("restart_syscall"),
    {"clone", CAP(CAP_SYS_ADMIN), SECCOMP_CLONE_NO_NS},
    {"clone3", CAP(CAP_SYS_ADMIN), SECCOMP_ENOSYS},
    {"personality", SECCOMP_NOCAP, SECCOMP_PERSONALITY}, WITH(CAP(CAP_SYS_PTRACE), "ptrace"),
    WITH(CAP(CAP_SYS_PTRACE), "process_vm_readv"), WITH(CAP(CAP_SYS_PTRACE), "process_vm_writev"),
    WITH(CAP(CAP_SYS_PTRACE), "kcmp"), WITH(CAP(CAP_SYS_PTRACE), "pidfd_getfd"),
    WITH(CAP(CAP_SYS_PTRACE), "process_madvise"), WITH(CAP(CAP_SYS_NICE), "get_mempolicy"),
    WITH(CAP(CAP_SYS_NICE), "set_mempolicy"), WITH(CAP(CAP_SYS_NICE), "set_mempolicy_home_node"),
    WITH(CAP(CAP_SYS_NICE), "mbind"),

    /* users, groups, capabilities (the kernel checks CAP_SETUID and friends) */
    ALL("getuid"), ALL("getuid32"), ALL("geteuid"), ALL("geteuid32"), ALL("getgid"),
    ALL("getgid32"), ALL("getegid"), ALL("getegid32"), ALL("getresuid"), ALL("getresuid32"),
    ALL("getresgid"), ALL("getresgid32"), ALL("getgroups"), ALL("getgroups32"), ALL("setuid"),
    ALL("setuid32"), ALL("setgid"), ALL("setgid32"), ALL("setreuid"), ALL("setreuid32"),
    ALL("setregid"), ALL("setregid32"), ALL("setresuid"), ALL("setresuid32"), ALL("setresgid"),
    ALL("setresgid32"), ALL("setfsuid"), ALL("setfsuid32"), ALL("setfsgid"), ALL("setfsgid32"),
    ALL("setgroups"), ALL("setgroups32"), ALL("capget"), ALL("capset"),

    /* memory */
    ALL("brk"), ALL("mmap"), ALL("mmap2"), ALL("munmap"), ALL("mremap"), ALL("mprotect"),
    ALL("pkey_mprotect"), ALL("pkey_alloc"), ALL("pkey_free"), ALL("madvise"), ALL("mincore"),
    ALL("msync"), ALL("mlock"), ALL("mlock2"), ALL("mlockall"), ALL("munlock"), ALL("munlockall"),
    ALL("remap_file_pages"), ALL("membarrier"), ALL("mseal"),

    /* signals */
    ALL("kill"), ALL("tkill"), ALL("tgkill"), ALL("rt_sigaction"), ALL("rt_sigprocmask"),
    ALL("sigprocmask"), ALL("rt_sigpending"), ALL("rt_sigsuspend"), ALL("rt_sigtimedwait"),
    ALL("rt_sigtimedwait_time64"), ALL("rt_sigqueueinfo"), ALL("rt_tgsigqueueinfo"),
    ALL("rt_sigreturn"), ALL("sigreturn"), ALL("sigaltstack"), ALL("pause"), ALL("alarm"),

    /* time: reading clocks and sleeping; setting the clock needs CAP_SYS_TIME (adjtimex and
     * clock_adjtime only read it without that capability: the kernel checks) */
    ALL("time"), ALL("gettimeofday"), ALL("clock_gettime"), ALL("clock_gettime64"),
    ALL("clock_getres"), ALL("clock_getres_time64"), ALL("clock_nanosleep"),
    ALL("clock_nanosleep_time64"), ALL("nanosleep"), ALL("adjtimex"), ALL("clock_adjtime"),
    ALL("clock_adjtime64"), ALL("getitimer"), ALL("setitimer"), ALL("timer_create"),
    ALL("timer_delete"), ALL("timer_getoverrun"), ALL("timer_gettime"), ALL("timer_gettime64"),
    ALL("timer_settime"), ALL("timer_settime64"), WITH(CAP(CAP_SYS_TIME), "settimeofday"),
    WITH(CAP(CAP_SYS_TIME), "stime"), WITH(CAP(CAP_SYS_TIME), "clock_settime"),
    WITH(CAP(CAP_SYS_TIME), "clock_settime64"),

    /* sockets (socket itself: every family but AF_ALG and AF_VSOCK) */
    {"socket", SECCOMP_NOCAP, SECCOMP_SOCKET_FAMILIES}, ALL("socketpair"), ALL("socketcall"),
    ALL("bind"), ALL("listen"), ALL("accept"), ALL("accept4"), ALL("connect"), ALL("shutdown"),
    ALL("getsockname"), ALL("getpeername"), ALL("getsockopt"), ALL("setsockopt"), ALL("send"),
    ALL("sendto"), ALL("sendmsg"), ALL("sendmmsg"), ALL("recv"), ALL("recvfrom"), ALL("recvmsg"),
    ALL("recvmmsg"), ALL("recvmmsg_time64"),

    /* SysV and POSIX IPC (the container has its own IPC namespace) */
    ALL("ipc"), ALL("msgget"), ALL("msgsnd"), ALL("msgrcv"), ALL("msgctl"), ALL("semget"),
    ALL("semop"), ALL("semtimedop"), ALL("semtimedop_time64"), ALL("semctl"), ALL("shmget"),
    ALL("shmat"), ALL("shmdt"), ALL("shmctl"), ALL("mq_open"), ALL("mq_unlink"),
    ALL("mq_timedsend"), ALL("mq_timedsend_time64"), ALL("mq_timedreceive"),
    ALL("mq_timedreceive_time64"), ALL("mq_notify"), ALL("mq_getsetattr"),

    /* the system */
    ALL("uname"), ALL("sysinfo"), ALL("getrandom"), WITH(CAP(CAP_SYS_ADMIN), "sethostname"),
    WITH(CAP(CAP_SYS_ADMIN), "setdomainname"), WITH(CAP(CAP_SYS_ADMIN) | CAP(CAP_SYSLOG), "syslog"),
    WITH(CAP(CAP_SYS_ADMIN) | CAP(CAP_BPF), "bpf"),
    WITH(CAP(CAP_SYS_ADMIN) | CAP(CAP_PERFMON), "perf_event_open"),
    WITH(CAP(CAP_SYS_ADMIN), "lookup_dcookie"), WITH(CAP(CAP_SYS_ADMIN), "quotactl"),
    WITH(CAP(CAP_SYS_ADMIN), "quotactl_fd"), WITH(CAP(CAP_SYS_ADMIN), "lsm_get_self_attr"),
    WITH(CAP(CAP_SYS_ADMIN), "lsm_set_self_attr"), WITH(CAP(CAP_SYS_ADMIN), "lsm_list_modules"),
    WITH(CAP(CAP_SYS_BOOT), "reboot"), WITH(CAP(CAP_SYS_PACCT), "acct"),
    WITH(CAP(CAP_SYS_RAWIO), "iopl"), WITH(CAP(CAP_SYS_RAWIO), "ioperm"),
    WITH(CAP(CAP_SYS_TTY_CONFIG), "vhangup"), WITH(CAP(CAP_SYS_MODULE), "init_module"),
    WITH(CAP(CAP_SYS_MODULE), "finit_module"), WITH(CAP(CAP_SYS_MODULE), "delete_module"),

    /* mounts and namespaces */
    WITH(CAP(CAP_SYS_ADMIN), "mount"), WITH(CAP(CAP_SYS_ADMIN), "umount"),
    WITH(CAP(CAP_SYS_ADMIN), "umount2"), WITH(CAP(CAP_SYS_ADMIN), "mount_setattr"),
    WITH(CAP(CAP_SYS_ADMIN), "move_mount"), WITH(CAP(CAP_SYS_ADMIN), "open_tree"),
    WITH(CAP(CAP_SYS_ADMIN), "fsopen"), WITH(CAP(CAP_SYS_ADMIN), "fsconfig"),
    WITH(CAP(CAP_SYS_ADMIN), "fsmount"), WITH(CAP(CAP_SYS_ADMIN), "fspick"),
    WITH(CAP(CAP_SYS_ADMIN), "unshare"), WITH(CAP(CAP_SYS_ADMIN), "setns"),
};
/* clang-format on */

/* personality(2) values a container may set: the Linux default, 32-bit uname (PER_LINUX32),
 * without address randomisation (as setarch -R does), both, and 0xffffffff, which only asks. */
static const uint64_t seccomp_personalities[] = {
    PER_LINUX, PER_LINUX32, ADDR_NO_RANDOMIZE, PER_LINUX32 | ADDR_NO_RANDOMIZE, 0xffffffffULL,
};

_Static_assert(AF_ALG < AF_VSOCK, "the socket rules allow the families around both");

/* The namespace flags clone() may not carry without CAP_SYS_ADMIN. */
#define SECCOMP_CLONE_NS_FLAGS                                                                     \
        ((uint64_t)(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |     \
                    CLONE_NEWNET | CLONE_NEWCGROUP))

/* The system call ABIs one filter covers: the native one and those a 64-bit kernel also runs
 * (32-bit x86 and x32 binaries on x86_64), so that a 32-bit binary cannot sidestep it. */
static const char *const seccomp_arches[] = {
#if defined(__x86_64__)
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X32",
#elif defined(__aarch64__)
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
#else
#error "name this architecture's system call ABIs for the seccomp filter"
#endif
};

static json_object *seccomp_arg(unsigned index, uint64_t value, uint64_t value_two, const char *op)
{
        json_object *a = json_object_new_object();
        json_object_object_add(a, "index", json_object_new_int((int)index));
        json_object_object_add(a, "value", json_object_new_uint64(value));
        if (value_two)
                json_object_object_add(a, "valueTwo", json_object_new_uint64(value_two));
        json_object_object_add(a, "op", json_object_new_string(op));
        return a;
}

/* One rule: names (an array, taken), action, errno (0: none), one argument condition or NULL. */
static json_object *seccomp_rule(json_object *names, const char *action, int errno_ret,
                                 json_object *arg)
{
        json_object *r = json_object_new_object();
        json_object_object_add(r, "names", names);
        json_object_object_add(r, "action", json_object_new_string(action));
        if (errno_ret)
                json_object_object_add(r, "errnoRet", json_object_new_int(errno_ret));
        if (arg) {
                json_object *args = json_object_new_array();
                json_object_array_add(args, arg);
                json_object_object_add(r, "args", args);
        }
        return r;
}

static json_object *seccomp_name(const char *name)
{
        json_object *a = json_object_new_array();
        json_object_array_add(a, json_object_new_string(name));
        return a;
}

/* The rules for an entry the workload may not call freely. */
static void seccomp_limited(json_object *rules, const struct seccomp_syscall *s)
{
        switch (s->limit) {
        case SECCOMP_DENY:
                break;
        case SECCOMP_CLONE_NO_NS:
                /* (flags & NS_FLAGS) == 0 */
                json_object_array_add(
                    rules,
                    seccomp_rule(seccomp_name(s->name), "SCMP_ACT_ALLOW", 0,
                                 seccomp_arg(0, SECCOMP_CLONE_NS_FLAGS, 0, "SCMP_CMP_MASKED_EQ")));
                break;
        case SECCOMP_ENOSYS:
                json_object_array_add(
                    rules, seccomp_rule(seccomp_name(s->name), "SCMP_ACT_ERRNO", ENOSYS, NULL));
                break;
        case SECCOMP_PERSONALITY:
                for (size_t i = 0; i < ARRAY_SIZE(seccomp_personalities); i++)
                        json_object_array_add(
                            rules, seccomp_rule(
                                       seccomp_name(s->name), "SCMP_ACT_ALLOW", 0,
                                       seccomp_arg(0, seccomp_personalities[i], 0, "SCMP_CMP_EQ")));
                break;
        case SECCOMP_SOCKET_FAMILIES:
                /* below AF_ALG, between it and AF_VSOCK, above AF_VSOCK */
                json_object_array_add(rules,
                                      seccomp_rule(seccomp_name(s->name), "SCMP_ACT_ALLOW", 0,
                                                   seccomp_arg(0, AF_ALG, 0, "SCMP_CMP_LT")));
                for (int f = AF_ALG + 1; f < AF_VSOCK; f++)
                        json_object_array_add(
                            rules, seccomp_rule(seccomp_name(s->name), "SCMP_ACT_ALLOW", 0,
                                                seccomp_arg(0, (uint64_t)f, 0, "SCMP_CMP_EQ")));
                json_object_array_add(rules,
                                      seccomp_rule(seccomp_name(s->name), "SCMP_ACT_ALLOW", 0,
                                                   seccomp_arg(0, AF_VSOCK, 0, "SCMP_CMP_GT")));
                break;
        }
}

json_object *spec_seccomp_profile(uint64_t caps)
{
        json_object *s = json_object_new_object();
        if (!s)
                return NULL;
        json_object_object_add(s, "defaultAction", json_object_new_string("SCMP_ACT_ERRNO"));
        json_object_object_add(s, "defaultErrnoRet", json_object_new_int(EPERM));
        json_object *arches = json_object_new_array();
        for (size_t i = 0; i < ARRAY_SIZE(seccomp_arches); i++)
                json_object_array_add(arches, json_object_new_string(seccomp_arches[i]));
        json_object_object_add(s, "architectures", arches);

        /* One rule allows every syscall the workload may call freely; the limited ones follow. */
        json_object *rules = json_object_new_array();
        json_object *allowed = json_object_new_array();
        json_object_array_add(rules, seccomp_rule(allowed, "SCMP_ACT_ALLOW", 0, NULL));
        for (size_t i = 0; i < ARRAY_SIZE(seccomp_table); i++) {
                const struct seccomp_syscall *e = &seccomp_table[i];
                if (e->caps == 0 || (e->caps & caps))
                        json_object_array_add(allowed, json_object_new_string(e->name));
                else
                        seccomp_limited(rules, e);
        }
        json_object_object_add(s, "syscalls", rules);
        return s;
}
