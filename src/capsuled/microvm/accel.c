/* KVM-or-TCG decision with a boot probe and a per-boot cache (see accel.h). */
#include "accel.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/cleanup.h"
#include "common/fs.h"
#include "tools.h"

int vm_boot_id(char *buf, size_t len, struct cap_error *err)
{
        static const char path[] = "/proc/sys/kernel/random/boot_id";
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return cap_error_errno(err, -errno, "open %s", path);
        if (!fgets(buf, (int)len, f))
                return cap_error_set(err, -EIO, CAP_INTERNAL, "read %s: empty", path);
        buf[strcspn(buf, "\n")] = '\0';
        return 0;
}

int vm_accel_cache_read(const char *path, const char *boot_id, enum vm_accel *out, char *why,
                        size_t why_len)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        char l1[128], l2[1024];
        if (!fgets(l1, sizeof(l1), f) || !fgets(l2, sizeof(l2), f))
                return -EBADMSG;
        l1[strcspn(l1, "\n")] = '\0';
        l2[strcspn(l2, "\n")] = '\0';
        if (strncmp(l1, "boot_id=", 8) != 0 || !l1[8])
                return -EBADMSG;
        if (strcmp(l1 + 8, boot_id) != 0)
                return -ESTALE;
        if (strcmp(l2, "kvm") == 0) {
                *out = VM_ACCEL_KVM;
                if (why_len)
                        why[0] = '\0';
                return 0;
        }
        if (strncmp(l2, "tcg\t", 4) == 0 && l2[4]) {
                *out = VM_ACCEL_TCG;
                snprintf(why, why_len, "%s", l2 + 4);
                return 0;
        }
        return -EBADMSG;
}

int vm_accel_cache_write(const char *path, const char *boot_id, enum vm_accel accel,
                         const char *why, struct cap_error *err)
{
        char dir[PATH_MAX], tmp[PATH_MAX];
        if ((size_t)snprintf(dir, sizeof(dir), "%s", path) >= sizeof(dir) ||
            (size_t)snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) >= sizeof(tmp))
                return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT, "%s: too long",
                                     path);
        int r = mkdir_p(dirname(dir), 0755);
        if (r < 0)
                return cap_error_errno(err, r, "accel cache: create directory of %s", path);
        _cleanup_fclose_ FILE *f = fopen(tmp, "we");
        if (!f)
                return cap_error_errno(err, -errno, "accel cache: create %s", tmp);
        /* a reason is one line: tabs and newlines become spaces */
        char clean[1000];
        snprintf(clean, sizeof(clean), "%s", why && *why ? why : "unknown");
        for (char *c = clean; *c; c++)
                if (*c == '\n' || *c == '\t' || *c == '\r')
                        *c = ' ';
        if (accel == VM_ACCEL_KVM)
                fprintf(f, "boot_id=%s\nkvm\n", boot_id);
        else
                fprintf(f, "boot_id=%s\ntcg\t%s\n", boot_id, clean);
        if (fflush(f) != 0 || fsync(fileno(f)) < 0) {
                r = -errno;
                unlink(tmp);
                return cap_error_errno(err, r, "accel cache: write %s", tmp);
        }
        if (rename(tmp, path) < 0) {
                r = -errno;
                unlink(tmp);
                return cap_error_errno(err, r, "accel cache: rename to %s", path);
        }
        return 0;
}

/* Tracks whether the marker has gone by in a byte stream split across reads. */
struct marker_scan {
        char tail[sizeof(VM_ACCEL_PROBE_MARKER) * 2 + 4096];
        size_t len;
};

static bool marker_feed(struct marker_scan *m, const char *data, size_t n)
{
        const size_t keep = sizeof(VM_ACCEL_PROBE_MARKER) - 1;
        while (n) {
                size_t take = sizeof(m->tail) - 1 - m->len;
                if (take > n)
                        take = n;
                memcpy(m->tail + m->len, data, take);
                m->len += take;
                m->tail[m->len] = '\0';
                if (memmem(m->tail, m->len, VM_ACCEL_PROBE_MARKER, keep))
                        return true;
                if (m->len > keep) {
                        memmove(m->tail, m->tail + m->len - keep, keep);
                        m->len = keep;
                }
                data += take;
                n -= take;
        }
        return false;
}

static int spawn_probe(char **argv, int console_wr, int err_wr, pid_t *pid, struct cap_error *err)
{
        _cleanup_close_ int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd < 0)
                return cap_error_errno(err, -errno, "open /dev/null");
        pid_t p = fork();
        if (p < 0)
                return cap_error_errno(err, -errno, "fork");
        if (p == 0) {
                if (dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 || dup2(err_wr, 2) < 0)
                        _exit(127);
                (void)syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
                if (fcntl(console_wr, F_SETFD, 0) < 0)
                        _exit(127);
                sigset_t all;
                sigemptyset(&all);
                sigprocmask(SIG_SETMASK, &all, NULL);
                struct sigaction dfl = {.sa_handler = SIG_DFL};
                sigaction(SIGPIPE, &dfl, NULL);
                execv(argv[0], argv);
                static const char msg[] = "accel probe: exec failed\n";
                ssize_t n = write(2, msg, sizeof(msg) - 1);
                (void)n;
                _exit(127);
        }
        *pid = p;
        return 0;
}

/* Reads the console and stderr pipes until the marker, EOF of both, or the deadline. */
static int watch_probe(int con_fd, int err_fd, int64_t deadline, char *errbuf, size_t errcap)
{
        struct marker_scan scan = {0};
        size_t elen = 0;
        struct pollfd p[2] = {{.fd = con_fd, .events = POLLIN}, {.fd = err_fd, .events = POLLIN}};
        for (;;) {
                if (p[0].fd < 0 && p[1].fd < 0)
                        return -ECHILD;
                int64_t left = deadline - vm_now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                int r = poll(p, 2, (int)left);
                if (r < 0 && errno != EINTR)
                        return -errno;
                char buf[4096];
                for (int i = 0; r > 0 && i < 2; i++) {
                        if (p[i].fd < 0 || !p[i].revents)
                                continue;
                        ssize_t n = read(p[i].fd, buf, sizeof(buf));
                        if (n <= 0) {
                                if (n < 0 && errno == EINTR)
                                        continue;
                                p[i].fd = -1;
                                continue;
                        }
                        if (i == 0 && marker_feed(&scan, buf, (size_t)n))
                                return 0;
                        if (i == 1 && elen + 1 < errcap) {
                                size_t c =
                                    (size_t)n < errcap - 1 - elen ? (size_t)n : errcap - 1 - elen;
                                memcpy(errbuf + elen, buf, c);
                                elen += c;
                                errbuf[elen] = '\0';
                        }
                }
        }
}

int vm_accel_boot_probe(const char *qemu, const char *kernel, const char *initrd,
                        enum vm_accel accel, int timeout_ms, int64_t *elapsed_ms, char *why,
                        size_t why_len, struct cap_error *err)
{
        int con[2], errp[2];
        if (pipe2(con, O_CLOEXEC) < 0)
                return cap_error_errno(err, -errno, "accel probe: pipe");
        _cleanup_close_ int con_rd = con[0];
        _cleanup_close_ int con_wr = con[1];
        if (pipe2(errp, O_CLOEXEC) < 0)
                return cap_error_errno(err, -errno, "accel probe: pipe");
        _cleanup_close_ int err_rd = errp[0];
        _cleanup_close_ int err_wr = errp[1];
        struct vm_config cfg;
        vm_config_init(&cfg);
        cfg.name = "accel-probe";
        cfg.qemu = qemu;
        cfg.kernel = kernel;
        cfg.initrd = initrd;
        cfg.accel = accel;
        cfg.memory_mib = 256;
        cfg.console_fd = con_wr;
        cfg.cmdline_extra = "capsule.probe=1";
        _cleanup_(qemu_argv_freep) char **argv = NULL;
        int r = qemu_build_argv(&cfg, &argv, err);
        if (r < 0)
                return cap_error_prefix(err, "accel probe");
        int64_t t0 = vm_now_ms();
        pid_t pid = 0;
        if ((r = spawn_probe(argv, con_wr, err_wr, &pid, err)) < 0)
                return cap_error_prefix(err, "accel probe");
        close(TAKE_FD(con_wr));
        close(TAKE_FD(err_wr));
        if (timeout_ms <= 0)
                timeout_ms = VM_ACCEL_PROBE_TIMEOUT_MS;
        char errbuf[1024] = "";
        int w = watch_probe(con_rd, err_rd, t0 + timeout_ms, errbuf, sizeof(errbuf));
        if (elapsed_ms)
                *elapsed_ms = vm_now_ms() - t0;
        if (kill(pid, SIGKILL) < 0 && errno != ESRCH)
                return cap_error_errno(err, -errno, "accel probe: kill QEMU pid %d", (int)pid);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        const char *acc = accel == VM_ACCEL_KVM ? "KVM" : "TCG";
        for (char *c = errbuf; *c; c++)
                if (*c == '\n' || *c == '\t')
                        *c = ' ';
        if (w == 0) {
                if (why_len)
                        why[0] = '\0';
                return 0;
        }
        if (w == -ETIMEDOUT && accel == VM_ACCEL_KVM)
                snprintf(why, why_len,
                         "KVM opens but the kernel did not reach init within %d s (this host's "
                         "KVM cannot run a normal kernel)",
                         (timeout_ms + 999) / 1000);
        else if (w == -ETIMEDOUT)
                snprintf(why, why_len, "the kernel did not reach init under TCG within %d s",
                         (timeout_ms + 999) / 1000);
        else if (w == -ECHILD)
                snprintf(why, why_len, "QEMU under %s exited before the guest was up: %s", acc,
                         *errbuf ? errbuf : "(no message)");
        else
                return cap_error_errno(err, w, "accel probe: watching QEMU pid %d", (int)pid);
        return w;
}

/* /dev/kvm must open read-write; the reason otherwise, as the user should read it. */
static bool kvm_device_usable(const char *dev, char *why, size_t why_len)
{
        int fd = open(dev, O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
                close(fd);
                return true;
        }
        if (errno == ENOENT)
                snprintf(why, why_len, "no %s", dev);
        else
                snprintf(why, why_len, "%s: %s", dev, strerror(errno));
        return false;
}

int vm_accel_probe_ex(const struct vm_accel_probe_opts *o, enum vm_accel *out, char *why,
                      size_t why_len, bool *cached, struct cap_error *err)
{
        char boot_id[64] = "";
        if (cached)
                *cached = false;
        if (o->cache_file && vm_boot_id(boot_id, sizeof(boot_id), NULL) == 0 &&
            vm_accel_cache_read(o->cache_file, boot_id, out, why, why_len) == 0) {
                if (cached)
                        *cached = true;
                return 0;
        }
        enum vm_accel a = VM_ACCEL_TCG;
        if (kvm_device_usable(o->kvm_device ? o->kvm_device : "/dev/kvm", why, why_len)) {
                char qemu[PATH_MAX];
                int r = vm_tool_find(o->qemu ? o->qemu : VM_QEMU_PROGRAM, qemu, sizeof(qemu), err);
                if (r < 0)
                        return cap_error_prefix(err, "accel probe");
                if (!o->kernel || access(o->kernel, R_OK) < 0 ||
                    (o->initrd && access(o->initrd, R_OK) < 0))
                        return cap_error_errno(
                            err, o->kernel ? -errno : -EINVAL, "accel probe: kernel %s / initrd %s",
                            o->kernel ? o->kernel : "(none)", o->initrd ? o->initrd : "(none)");
                r = vm_accel_boot_probe(qemu, o->kernel, o->initrd, VM_ACCEL_KVM, o->timeout_ms,
                                        NULL, why, why_len, err);
                if (r == 0)
                        a = VM_ACCEL_KVM;
                else if (r != -ETIMEDOUT && r != -ECHILD)
                        return r;
        }
        *out = a;
        if (o->cache_file && boot_id[0]) {
                int r = vm_accel_cache_write(o->cache_file, boot_id, a, why, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

int vm_accel_probe(const char *qemu, const char *kernel, const char *initrd, const char *cache_file,
                   enum vm_accel *out, char *why, size_t why_len, struct cap_error *err)
{
        struct vm_accel_probe_opts o = {
            .qemu = qemu, .kernel = kernel, .initrd = initrd, .cache_file = cache_file};
        return vm_accel_probe_ex(&o, out, why, why_len, NULL, err);
}

static void usage(FILE *f)
{
        fprintf(f, "usage: capsuled probe-accel --kernel K --initrd I [--qemu PATH] "
                   "[--timeout S] [--cache FILE] [--json]\n"
                   "Prints `kvm` when a kernel boots under KVM to init, else `tcg: <why>`.\n");
}

int vm_accel_probe_main(int argc, char **argv)
{
        static const struct option longopts[] = {
            {"kernel", required_argument, NULL, 'k'}, {"initrd", required_argument, NULL, 'i'},
            {"qemu", required_argument, NULL, 'q'},   {"timeout", required_argument, NULL, 't'},
            {"cache", required_argument, NULL, 'c'},  {"json", no_argument, NULL, 'j'},
            {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
        };
        struct vm_accel_probe_opts o = {0};
        bool json = false;
        int c;
        optind = 1;
        while ((c = getopt_long(argc, argv, "k:i:q:t:c:jh", longopts, NULL)) != -1) {
                switch (c) {
                case 'k':
                        o.kernel = optarg;
                        break;
                case 'i':
                        o.initrd = optarg;
                        break;
                case 'q':
                        o.qemu = optarg;
                        break;
                case 'c':
                        o.cache_file = optarg;
                        break;
                case 'j':
                        json = true;
                        break;
                case 't': {
                        char *end;
                        double s = strtod(optarg, &end);
                        if (*end || s <= 0 || s > 600) {
                                fprintf(stderr, "probe-accel: --timeout %s: want 0-600 seconds\n",
                                        optarg);
                                return 2;
                        }
                        o.timeout_ms = (int)(s * 1000);
                        break;
                }
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (!o.kernel || !o.initrd || optind != argc) {
                usage(stderr);
                return 2;
        }
        enum vm_accel a;
        char why[1024];
        bool cached;
        struct cap_error err = {0};
        int64_t t0 = vm_now_ms();
        if (vm_accel_probe_ex(&o, &a, why, sizeof(why), &cached, &err) < 0) {
                fprintf(stderr, "probe-accel: %s\n", err.msg);
                return 1;
        }
        int64_t ms = vm_now_ms() - t0;
        if (json) {
                struct json_object *j = json_object_new_object();
                json_object_object_add(j, "accel",
                                       json_object_new_string(a == VM_ACCEL_KVM ? "kvm" : "tcg"));
                json_object_object_add(j, "reason", json_object_new_string(why));
                json_object_object_add(j, "cached", json_object_new_boolean(cached));
                json_object_object_add(j, "elapsed_ms", json_object_new_int64(ms));
                printf("%s\n", json_object_to_json_string_ext(
                                   j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(j);
        } else if (a == VM_ACCEL_KVM) {
                printf("kvm\n");
        } else {
                printf("tcg: %s\n", why);
        }
        return fflush(stdout) == 0 ? 0 : 1;
}
