/* Clean poweroff and reboot: stop the services (control plane first, then the DHCP client, then
 * containerd; serve stops every workload itself first, all at once within one grace period,
 * microVMs through their guests), then every remaining process (container shims, workloads, microVMs) with SIGTERM,
 * a grace period and SIGKILL; sync; unmount every disk-backed filesystem (/perm, volumes, overlay
 * snapshots) in reverse mount order, falling back to a read-only remount; deactivate the VG;
 * reboot(2). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../common/cleanup.h"
#include "../../common/log.h"
#include "init.h"

#define SERVICE_GRACE_MS 10000
#define PROCESS_GRACE_MS 5000

/* Sends sig to every process but PID 1 and reaps until none is left or the deadline passed,
 * petting the watchdog meanwhile. */
static bool kill_all_and_wait(int sig, int grace_ms)
{
        if (kill(-1, sig) < 0 && errno == ESRCH)
                return true;
        int64_t deadline = now_ms() + grace_ms;
        while (now_ms() < deadline) {
                watchdog_pet();
                pid_t r = waitpid(-1, NULL, WNOHANG);
                if (r < 0 && errno == ECHILD)
                        return true;
                if (r == 0)
                        usleep(50 * 1000);
        }
        return false;
}

static bool keep_mounted(const char *target)
{
        static const char *const keep[] = {"/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm",
                                           "/run", "/tmp"};
        for (size_t i = 0; i < ARRAY_SIZE(keep); i++)
                if (strcmp(target, keep[i]) == 0)
                        return true;
        return strncmp(target, "/proc/", 6) == 0 || strncmp(target, "/sys/", 5) == 0;
}

/* Unmounts in reverse order of /proc/self/mounts; returns how many could not be unmounted. */
static int unmount_all(void)
{
        static char targets[512][256];
        size_t n = 0;
        {
                _cleanup_fclose_ FILE *f = fopen("/proc/self/mounts", "re");
                if (!f)
                        return -1;
                char line[1024];
                while (n < ARRAY_SIZE(targets) && fgets(line, sizeof(line), f))
                        if (sscanf(line, "%*s %255s", targets[n]) == 1 && !keep_mounted(targets[n]))
                                n++;
        }
        int failed = 0;
        for (size_t i = n; i-- > 0;) {
                if (umount2(targets[i], 0) == 0 || errno == EINVAL || errno == ENOENT)
                        continue;
                int e = errno;
                if (mount(NULL, targets[i], NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
                        failed++;
                log_warn("shutdown: umount %s: %s; remounted read-only, detaching", targets[i],
                         strerror(e));
                umount2(targets[i], MNT_DETACH);
        }
        return failed;
}

void shutdown_system(enum shutdown_action action)
{
        const char *what = action == SHUTDOWN_REBOOT ? "reboot" : "poweroff";
        int64_t t0 = now_ms();
        log_info("shutdown: %s requested", what);
        supervise_stop_all(SERVICE_GRACE_MS);
        watchdog_pet();
        if (!kill_all_and_wait(SIGTERM, PROCESS_GRACE_MS)) {
                log_warn("shutdown: processes left after %d ms, sending SIGKILL", PROCESS_GRACE_MS);
                kill_all_and_wait(SIGKILL, 2000);
        }
        watchdog_pet();
        sync();
        int failed = unmount_all();
        if (run_cmd((char *[]){"/sbin/lvm", "vgchange", "-an", "capsule", NULL}, 20000, NULL, 0) != 0)
                log_warn("shutdown: vgchange -an capsule failed");
        sync();
        log_info("shutdown: %s now (%d unmount failures, %lld ms)", what, failed,
                 (long long)(now_ms() - t0));
        watchdog_close();
        reboot(action == SHUTDOWN_REBOOT ? RB_AUTOBOOT : RB_POWER_OFF);
        /* reboot(2) only returns on error; PID 1 must not exit (the kernel would panic) */
        log_error("shutdown: reboot(2): %s", strerror(errno));
        for (;;)
                pause();
}
