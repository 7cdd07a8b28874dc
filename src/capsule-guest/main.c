/* capsule-guest: PID 1 inside every Capsule microVM, and the same service as an ordinary process
 * for host tests.
 *
 *   PID 1:     [probe check] -> API mounts, console -> modules -> command line -> run config
 *              (/dev/vda) -> root disk and volumes at /newroot -> hostname, /etc files, network
 *              -> gRPC on vsock -> workload -> reap until it exited and its logs were read (or
 *              2 s) -> power off (pid1_power_off).
 *   host mode: capsule-guest --listen unix:/path --config FILE [--root DIR] [--no-chroot]
 *              -> run config from FILE -> gRPC on the socket -> workload -> reap until SIGTERM.
 * Everything below the startup order (workload, log ring, service) is shared; the PID-1-only
 * parts live in mounts.c, modules.c, netconf.c, vsock.c and the pid1_* functions here. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "guest.h"
#include "rpc.h"

#define PROBE_MARKER "CAPSULE-PROBE-OK\n"
#define CONFIG_DISK "/dev/vda"
#define ROOT_DISK "/dev/vdb"
#define NEWROOT "/newroot"
#define LINGER_AFTER_EXIT_MS 2000

/* ---- shared by both modes ---- */

static int guest_ctx_init(struct guest_ctx *g, RunConfig *rc, struct cap_error *err)
{
        g->rc = rc;
        g->wl.out_fd = g->wl.err_fd = -1;
        if (pthread_mutex_init(&g->lock, NULL) != 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "mutex");
        pthread_condattr_t ca;
        if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) ||
            pthread_cond_init(&g->changed, &ca) != 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "condition variable");
        pthread_condattr_destroy(&ca);
        g->env = guest_env_merge(rc->env, rc->n_env, NULL, 0);
        if (!g->env)
                return cap_error_errno(err, -ENOMEM, "environment");
        int r = logring_init(&g->ring, GUEST_LOG_RING_BYTES);
        if (r < 0)
                return cap_error_errno(err, r, "log ring");
        return 0;
}

static void guest_ctx_free(struct guest_ctx *g)
{
        logring_destroy(&g->ring);
        guest_env_free(g->env);
        runconfig_free(g->rc);
        pthread_mutex_destroy(&g->lock);
        pthread_cond_destroy(&g->changed);
}

/* Blocks the signals the main loop handles (before any thread starts, so every thread inherits
 * the mask) and returns a signalfd for them. */
static int signals_setup(struct cap_error *err)
{
        struct sigaction ign = {.sa_handler = SIG_IGN};
        if (sigaction(SIGPIPE, &ign, NULL) < 0)
                return cap_error_errno(err, -errno, "ignore SIGPIPE");
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGCHLD);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
                return cap_error_errno(err, -errno, "block signals");
        int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
        if (fd < 0)
                return cap_error_errno(err, -errno, "signalfd");
        return fd;
}

/* gRPC server for the Guest service on `listen` ("unix:/p", "vsock:1024", "host:port"). */
static struct rpc_server *serve_start(struct guest_ctx *g, const char *listen,
                                      struct cap_error *err)
{
        struct rpc_server *srv = rpc_server_new(NULL, err);
        if (!srv)
                return NULL;
        int r = guest_service_register(srv, g, err);
        bool vsock = strncmp(listen, "vsock:", 6) == 0;
        if (r >= 0 && !vsock)
                r = rpc_server_listen(srv, listen, NULL, err);
        if (r >= 0)
                r = rpc_server_start(srv, err);
        if (r >= 0 && vsock) {
                char *end;
                unsigned long port = strtoul(listen + 6, &end, 10);
                if (*end || !port || port > 0xffffffffUL)
                        r = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                          "--listen %s: bad vsock port", listen);
                else
                        r = guest_vsock_serve(srv, (unsigned)port, err);
        }
        if (r < 0) {
                rpc_server_shutdown(srv, 0);
                return NULL;
        }
        return srv;
}

/* Reaps and waits until the workload exited; SIGTERM, grace, then SIGKILL. For the main thread,
 * which is the reaper (a Stop RPC uses guest_workload_stop on its own thread instead). */
static void stop_and_reap(struct guest_ctx *g, unsigned grace_s)
{
        guest_workload_signal(g, SIGTERM);
        int64_t start = guest_now_ns(), grace = (int64_t)grace_s * 1000000000;
        bool killed = false;
        for (;;) {
                guest_reap(g);
                if (guest_workload_wait(g, 0))
                        return;
                int64_t el = guest_now_ns() - start;
                if (!killed && el > grace) {
                        log_warn("workload still running after %us: SIGKILL", grace_s);
                        guest_workload_signal(g, SIGKILL);
                        killed = true;
                }
                if (el > grace + 5000000000LL)
                        return;
                usleep(20000);
        }
}

static unsigned stop_grace(const struct guest_ctx *g)
{
        return g->rc->stop_grace_seconds ? g->rc->stop_grace_seconds : GUEST_DEFAULT_STOP_GRACE_S;
}

/* The PID 1 duty loop: reaps every child and handles signals. Returns when the guest should end:
 * on SIGTERM/SIGINT (both modes; the workload is then stopped), or, as PID 1, once the workload
 * exited and a Logs call read its output to the end, or LINGER_AFTER_EXIT_MS passed. */
static void guest_run_loop(struct guest_ctx *g, int sigfd)
{
        int64_t exited_at = 0;
        for (;;) {
                struct pollfd p = {.fd = sigfd, .events = POLLIN};
                if (poll(&p, 1, 200) < 0 && errno != EINTR) {
                        log_error("poll: %s", strerror(errno));
                        return;
                }
                bool stop = false;
                struct signalfd_siginfo si;
                while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
                                stop = true;
                guest_reap(g);
                if (stop) {
                        log_info("signal received: stopping the workload");
                        stop_and_reap(g, stop_grace(g));
                        return;
                }
                if (!g->pid1 || !guest_workload_wait(g, 0))
                        continue;
                if (!exited_at)
                        exited_at = guest_now_ns();
                if (logring_drained(&g->ring) ||
                    guest_now_ns() - exited_at > (int64_t)LINGER_AFTER_EXIT_MS * 1000000)
                        return;
        }
}

/* ---- PID 1 ---- */

/* The KVM/TCG probe: with capsule.probe=1 print the marker and power off, before anything else.
 * Mounts only /proc (to read the command line) and devtmpfs (for /dev/console). */
static void pid1_probe_check(void)
{
        if (mkdir("/proc", 0755) < 0 && errno != EEXIST)
                return;
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                return;
        char buf[4096];
        _cleanup_close_ int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf)) : -1;
        if (n <= 0)
                return;
        struct guest_cmdline c;
        guest_cmdline_parse(buf, (size_t)n, &c);
        if (!c.probe)
                return;
        if (mkdir("/dev", 0755) < 0 && errno != EEXIST)
                return;
        if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 && errno != EBUSY)
                return;
        static const char *consoles[] = {"/dev/console", "/dev/ttyS0", "/dev/hvc0"};
        for (size_t i = 0; i < ARRAY_SIZE(consoles); i++) {
                int con = open(consoles[i], O_WRONLY | O_NOCTTY | O_CLOEXEC);
                if (con < 0)
                        continue;
                bool ok = write(con, PROBE_MARKER, strlen(PROBE_MARKER)) ==
                          (ssize_t)strlen(PROBE_MARKER);
                close(con);
                if (ok)
                        break;
        }
        sync();
        reboot(RB_POWER_OFF);
        reboot(RB_AUTOBOOT); /* no ACPI power-off: QEMU runs with -no-reboot */
        for (;;)
                pause();
}

/* stdin /dev/null, stdout and stderr the console (the kernel may have given us nothing). */
static int pid1_console(void)
{
        int con = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (con < 0)
                return -errno;
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || dup2(null, 0) < 0 || dup2(con, 1) < 0 || dup2(con, 2) < 0) {
                int e = errno;
                close(con);
                if (null >= 0)
                        close(null);
                return -e;
        }
        close(con);
        close(null);
        return 0;
}

/* The shutdown sequence: stop serving, end every remaining process, sync, unmount the volumes
 * and the root disk, power off. Never returns. */
static _Noreturn void pid1_power_off(struct guest_ctx *g, struct rpc_server *srv)
{
        log_info("shutting down");
        if (srv)
                rpc_server_shutdown(srv, 1000);
        if (g && g->wl.pid > 0)
                guest_workload_join(g);
        if (kill(-1, SIGTERM) == 0) {
                for (int i = 0; i < 100 && waitpid(-1, NULL, WNOHANG) >= 0; i++)
                        usleep(20000);
                if (kill(-1, SIGKILL) < 0 && errno != ESRCH)
                        log_warn("kill: %s", strerror(errno));
                while (waitpid(-1, NULL, WNOHANG) > 0)
                        ;
        }
        sync();
        mounts_unmount_all(NEWROOT);
        sync();
        log_info("power off");
        if (reboot(RB_POWER_OFF) < 0)
                log_error("power off: %s", strerror(errno));
        if (reboot(RB_AUTOBOOT) < 0)
                log_error("reboot: %s", strerror(errno));
        for (;;)
                pause();
}

/* Milliseconds since the kernel started (CLOCK_BOOTTIME), for the boot timeline. */
static long boot_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* The boot timeline, logged in one line once the workload runs (`capsulectl logs` shows where a
 * VM's start goes): the kernel up to /init, then each stage of capsule-guest. */
enum boot_stage { BOOT_INIT, BOOT_MODULES, BOOT_ROOT, BOOT_NETWORK, BOOT_AGENT, BOOT_WORKLOAD, BOOT_N };
static long boot_marks[BOOT_N];

static void boot_mark(enum boot_stage s)
{
        boot_marks[s] = boot_ms();
}

static void boot_timeline_log(void)
{
        const long *m = boot_marks;
        log_info("boot: kernel %ld ms, modules %ld ms, run config and disks %ld ms, network %ld ms, "
                 "agent %ld ms, workload %ld ms: %ld ms from kernel start",
                 m[BOOT_INIT], m[BOOT_MODULES] - m[BOOT_INIT], m[BOOT_ROOT] - m[BOOT_MODULES],
                 m[BOOT_NETWORK] - m[BOOT_ROOT], m[BOOT_AGENT] - m[BOOT_NETWORK],
                 m[BOOT_WORKLOAD] - m[BOOT_AGENT], m[BOOT_WORKLOAD]);
}

/* Machine setup up to a readable run config and a mounted root: returns the config or NULL. */
static RunConfig *pid1_setup(struct guest_cmdline *c)
{
        struct cap_error err = {0};
        if (mounts_early(&err) < 0)
                log_error("%s", err.msg); /* carry on: maybe enough is there */
        int r = pid1_console();
        if (r < 0)
                log_error("open /dev/console: %s", strerror(-r));
        log_set_component("capsule-guest");
        struct utsname u;
        if (uname(&u) == 0) {
                char dir[512];
                snprintf(dir, sizeof(dir), "/lib/modules/%s", u.release);
                if (modules_load_all(dir, &err) < 0)
                        log_error("%s", err.msg);
        }
        boot_mark(BOOT_MODULES);
        char buf[4096];
        _cleanup_close_ int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf)) : -1;
        guest_cmdline_parse(buf, n > 0 ? (size_t)n : 0, c);
        for (size_t i = 0; i < c->n_warnings; i++)
                log_warn("kernel command line: %s", c->warnings[i]);
        RunConfig *rc = NULL;
        for (int i = 0; i < 100; i++) { /* virtio_blk may still be probing */
                cap_error_clear(&err);
                r = runconfig_read_file(CONFIG_DISK, &rc, &err);
                if (r != -ENOENT && r != -ENXIO)
                        break;
                usleep(50000);
        }
        if (r < 0) {
                log_error("run config: %s", err.msg);
                return NULL;
        }
        if (mounts_newroot(NEWROOT, ROOT_DISK, rc, &err) < 0) {
                log_error("%s", err.msg);
                runconfig_free(rc);
                return NULL;
        }
        boot_mark(BOOT_ROOT);
        return rc;
}

static int pid1_main(void)
{
        boot_mark(BOOT_INIT);
        pid1_probe_check();
        struct guest_ctx *g = calloc(1, sizeof(*g));
        if (!g)
                pid1_power_off(NULL, NULL);
        g->pid1 = true;
        g->root = NEWROOT;
        g->chroot = true;
        g->console_fd = 2;
        RunConfig *rc = pid1_setup(&g->cmdline);
        if (!rc)
                pid1_power_off(NULL, NULL);
        struct cap_error err = {0};
        int sigfd = signals_setup(&err);
        if (sigfd < 0 || guest_ctx_init(g, rc, &err) < 0) {
                log_error("%s", err.msg);
                pid1_power_off(NULL, NULL);
        }
        const char *hostname = rc->hostname && rc->hostname[0] ? rc->hostname : g->cmdline.hostname;
        if (hostname[0] && sethostname(hostname, strlen(hostname)) < 0)
                log_warn("sethostname %s: %s", hostname, strerror(errno));
        mounts_write_etc(NEWROOT, hostname, &g->cmdline);
        if (guest_network_setup(&g->cmdline, &err) < 0)
                log_error("network: %s", err.msg);
        guest_cmdline_ip_string(&g->cmdline, g->ip, sizeof(g->ip));
        boot_mark(BOOT_NETWORK);
        char listen[32];
        snprintf(listen, sizeof(listen), "vsock:%d", GUEST_VSOCK_PORT);
        struct rpc_server *srv = serve_start(g, listen, &err);
        if (!srv)
                log_error("serve: %s", err.msg); /* run the workload anyway */
        boot_mark(BOOT_AGENT);
        if (guest_workload_start(g, &err) < 0) {
                log_error("%s", err.msg);
                pid1_power_off(g, srv);
        }
        boot_mark(BOOT_WORKLOAD);
        boot_timeline_log();
        guest_run_loop(g, sigfd);
        pid1_power_off(g, srv);
}

/* ---- host mode ---- */

static void usage(FILE *f)
{
        fprintf(f, "usage: capsule-guest --listen unix:/path/sock --config FILE [--root DIR] "
                   "[--no-chroot]\n"
                   "  Serves capsule.guest.v1.Guest for the workload in FILE (a CAPSULE1 run\n"
                   "  config) as an ordinary process. As PID 1 in a microVM it takes no\n"
                   "  arguments.\n");
}

static int host_main(int argc, char **argv)
{
        const char *listen = NULL, *root = "/", *config = NULL;
        bool no_chroot = false;
        static const struct option longopts[] = {
                {"listen", required_argument, NULL, 'l'}, {"root", required_argument, NULL, 'r'},
                {"config", required_argument, NULL, 'c'}, {"no-chroot", no_argument, NULL, 'n'},
                {"help", no_argument, NULL, 'h'},         {0},
        };
        int o;
        while ((o = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                switch (o) {
                case 'l': listen = optarg; break;
                case 'r': root = optarg; break;
                case 'c': config = optarg; break;
                case 'n': no_chroot = true; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (!listen || !config || optind != argc) {
                usage(stderr);
                return 2;
        }
        log_set_component("capsule-guest");
        struct cap_error err = {0};
        RunConfig *rc = NULL;
        if (runconfig_read_file(config, &rc, &err) < 0) {
                fprintf(stderr, "capsule-guest: %s\n", err.msg);
                return 1;
        }
        _cleanup_free_ struct guest_ctx *g = calloc(1, sizeof(*g));
        if (!g) {
                runconfig_free(rc);
                return 1;
        }
        g->root = root;
        g->chroot = !no_chroot && strcmp(root, "/") != 0;
        if (g->chroot && geteuid() != 0) {
                log_warn("not root: running the workload without chroot into %s", root);
                g->chroot = false;
        }
        g->console_fd = 2;
        int sigfd = signals_setup(&err);
        if (sigfd < 0 || guest_ctx_init(g, rc, &err) < 0) {
                fprintf(stderr, "capsule-guest: %s\n", err.msg);
                return 1;
        }
        struct rpc_server *srv = serve_start(g, listen, &err);
        int rc_exit = 0;
        if (!srv) {
                fprintf(stderr, "capsule-guest: serve %s: %s\n", listen, err.msg);
                rc_exit = 1;
        } else if (guest_workload_start(g, &err) < 0) {
                fprintf(stderr, "capsule-guest: %s\n", err.msg);
                rc_exit = 1;
        } else {
                log_info("serving on %s", listen);
                guest_run_loop(g, sigfd);
        }
        guest_workload_join(g);
        rpc_server_shutdown(srv, 1000);
        guest_reap(g);
        guest_ctx_free(g);
        close(sigfd);
        return rc_exit;
}

int main(int argc, char **argv)
{
        if (getpid() == 1)
                return pid1_main();
        return host_main(argc, argv);
}
