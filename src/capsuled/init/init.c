/* capsuled as PID 1 (the init role, design §2): small, boring, and never parsing network input.
 *
 * Boot: early mounts -> /dev/kmsg logging -> kernel modules (/etc/capsule/modules) -> /perm (LVM,
 * first-boot setup) -> network config -> watchdog -> supervised services, in this order:
 *   containerd      /usr/bin/containerd --config /etc/containerd/config.toml  (root /perm/containerd)
 *   dhcpcd          /usr/sbin/dhcpcd -B -f /run/capsule/dhcpcd.conf -c /usr/libexec/capsule/dhcp-hook
 *   capsuled-serve  /usr/bin/capsuled serve --root /perm/capsule
 *                     --machine-config /perm/capsule/machine.yaml --listen 0.0.0.0:50000
 *                     --containerd /run/containerd/containerd.sock
 * then a main loop that reaps every child, restarts services with backoff, forwards their output to
 * /dev/kmsg and pets the watchdog.
 *
 * Contract with `capsuled serve` (and anything else that wants the machine down):
 *   kill(1, SIGINT)   -> clean reboot     (also what the kernel sends on Ctrl-Alt-Del)
 *   kill(1, SIGTERM)  -> clean poweroff   (SIGUSR2 and SIGPWR are accepted as poweroff too)
 *   kill(1, SIGUSR1)  -> clean reboot
 * serve should answer the RPC first and then signal; PID 1 stops serve (SIGTERM, 10 s grace, then
 * SIGKILL), then the other services and every remaining process, syncs, unmounts and reboots.
 * serve gets stdin /dev/null, stdout/stderr forwarded to the kernel log, PATH=/usr/sbin:/usr/bin:
 * /sbin:/bin, cwd /, its own session, oom_score_adj -900; it is restarted 1 s after a crash
 * (doubling to 30 s, reset after 60 s of uptime). It starts together with containerd and waits
 * (up to 30 s) for containerd's socket itself, so its start overlaps containerd's. /perm is mounted (or a tmpfs fallback, logged as "perm: ... tmpfs") before
 * serve starts; LV perm and thin pool capsule/pool exist; the ESP is NOT mounted (serve mounts the
 * partition named EFI itself for updates). The slot booted is capsule.slot= in /proc/cmdline. If
 * serve stays down for 5 minutes the watchdog is no longer petted and the machine resets.
 * serve also gets a liveness pipe (fd 3, $CAPSULE_LIVENESS_FD; serve/liveness.c): a byte every
 * 2 s while its store and API answer. Silent for 60 s ($CAPSULE_LIVENESS_TIMEOUT on the kernel
 * command line; 5x that before the first byte) -> PID 1 kills it with SIGKILL and it restarts;
 * 3 such kills within 10 minutes -> a clean reboot.
 * PID 1 also logs "init: stats: rss pid1=...kB NAME=...kB" 30 s after boot and hourly. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/klog.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "build-id.h"
#include "../../common/log.h"
#include "../../common/timeline.h"
#include "../capsuled.h"
#include "init.h"

#define SERVE_DOWN_LIMIT_MS (5 * 60 * 1000)
#define WATCHDOG_PET_MS 5000
#define STATS_FIRST_MS 30000            /* idle memory report, for bench/boot */
#define STATS_EVERY_MS (60 * 60 * 1000)
#define CONSOLE_LOGLEVEL 7 /* show INFO (6) and more severe on the console */

static int signals_setup(void)
{
        sigset_t set;
        sigemptyset(&set);
        int handled[] = {SIGCHLD, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGPWR, SIGHUP};
        for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
                sigaddset(&set, handled[i]);
        if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
                return -errno;
        signal(SIGPIPE, SIG_IGN);
        /* Ctrl-Alt-Del: SIGINT to PID 1 instead of an immediate reboot */
        reboot(RB_DISABLE_CAD);
        int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
        return fd < 0 ? -errno : fd;
}

static void reap_children(void)
{
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
                supervise_child_exited(pid, status);
}

static void handle_signals(int sfd)
{
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                switch (si.ssi_signo) {
                case SIGCHLD:
                        reap_children();
                        break;
                case SIGINT:
                case SIGUSR1:
                        log_info("signal %s from pid %u", strsignal((int)si.ssi_signo), si.ssi_pid);
                        shutdown_system(SHUTDOWN_REBOOT);
                case SIGTERM:
                case SIGUSR2:
                case SIGPWR:
                        log_info("signal %s from pid %u", strsignal((int)si.ssi_signo), si.ssi_pid);
                        shutdown_system(SHUTDOWN_POWEROFF);
                default:
                        log_info("ignoring signal %s", strsignal((int)si.ssi_signo));
                }
        }
}

/* The boot timeline (common/timeline.h): each phase of boot() as it ends, rewritten to
 * TIMELINE_PATH so `capsulectl health --boot` shows it even when a later phase hangs. */
static struct timeline boot_timeline;

void init_boot_phase(const char *name, int64_t start_ms)
{
        timeline_add(&boot_timeline, name, start_ms, timeline_now_ms());
        int r = timeline_write(&boot_timeline, TIMELINE_PATH);
        if (r < 0)
                log_warn("boot timeline: %s: %s", TIMELINE_PATH, strerror(-r));
}

static void boot_phase(const char *name, int64_t *since)
{
        init_boot_phase(name, *since);
        *since = timeline_now_ms();
}

static void boot(void)
{
        int64_t t0 = now_ms();
        int64_t mark = timeline_now_ms();
        timeline_add(&boot_timeline, "kernel", 0, mark);
        umask(022);
        if (mounts_early() < 0)
                fprintf(stderr, "init: some early mounts failed\n");
        if (log_set_kmsg() < 0)
                fprintf(stderr, "init: /dev/kmsg unavailable, logging to the console\n");
        log_set_component("init");
        klogctl(8 /* SYSLOG_ACTION_CONSOLE_LEVEL */, NULL, CONSOLE_LOGLEVEL);
        log_info("capsuled %s (build %s) starting as PID 1", CAPSULE_VERSION, CAPSULE_BUILD);
        boot_phase("init: early mounts", &mark);
        modules_load();
        boot_phase("init: kernel modules", &mark);
        perm_setup();
        boot_phase("init: /perm (LVM, fsck, mount)", &mark);
        network_setup();
        boot_phase("init: network", &mark);
        watchdog_open();
        supervise_start_all();
        boot_phase("init: start services", &mark);
        log_info("boot: services started %lld ms after PID 1 start", (long long)(now_ms() - t0));
}

static void main_loop(int sfd)
{
        bool unhealthy_logged = false;
        int64_t next_stats = now_ms() + STATS_FIRST_MS;
        for (;;) {
                if (now_ms() >= next_stats) {
                        supervise_log_stats();
                        next_stats = now_ms() + STATS_EVERY_MS;
                }
                int timeout = supervise_tick();
                if (timeout < 0 || timeout > WATCHDOG_PET_MS)
                        timeout = WATCHDOG_PET_MS;
                struct pollfd pfds[12] = {{.fd = sfd, .events = POLLIN}};
                size_t n = 1 + supervise_poll_fds(pfds + 1, 11);
                if (poll(pfds, n, timeout) < 0 && errno != EINTR)
                        log_error("poll: %s", strerror(errno));
                for (size_t i = 1; i < n; i++)
                        if (pfds[i].revents)
                                supervise_drain(pfds[i].fd);
                if (pfds[0].revents)
                        handle_signals(sfd);
                if (supervise_check_liveness())
                        shutdown_system(SHUTDOWN_REBOOT);
                if (!supervise_serve_down_for(SERVE_DOWN_LIMIT_MS)) {
                        watchdog_pet();
                        unhealthy_logged = false;
                } else if (!unhealthy_logged) {
                        log_error("capsuled serve down for %d s: no longer petting the watchdog",
                                  SERVE_DOWN_LIMIT_MS / 1000);
                        unhealthy_logged = true;
                }
        }
}

int init_main(int argc, char **argv)
{
        if (getpid() != 1) {
                fprintf(stderr, "capsuled init: must run as PID 1 (the kernel's init=)\n");
                return 2;
        }
        int sfd = signals_setup();
        if (sfd < 0)
                fprintf(stderr, "init: signals: %s\n", strerror(-sfd));
        boot();
        main_loop(sfd);
        return 0;
}
