/* Internal interfaces of capsuled's PID 1 role, one small module each:
 *   mounts.c     early mounts and kernel modules
 *   perm.c       the PERM partition: LVM first-boot setup (crash-safe), activation, /perm mount
 *   network.c    loopback, hostname, DHCP client config, resolv.conf from the machine config
 *   supervise.c  supervised services (containerd, dhcpcd, capsuled serve): restart backoff, output
 *                forwarded to /dev/kmsg
 *   shutdown.c   clean poweroff/reboot
 *   watchdog.c   /dev/watchdog petting
 *   run.c        fork/exec of short helper commands (modprobe, lvm, mkfs) with a timeout
 * PID 1 parses no network input: everything it reads comes from the image, the kernel or the disk.
 */
#pragma once

#include "../../common/fs.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <sys/types.h>

#define INIT_PATH "/usr/sbin:/usr/bin:/sbin:/bin"
#define INIT_PERM_DIR "/perm"
#define INIT_STATE_DIR "/perm/capsule"
#define INIT_MACHINE_CONFIG "/perm/capsule/machine.yaml"
#define INIT_IMAGE_MACHINE_CONFIG "/etc/capsule/machine.yaml"
#define INIT_CHRONY_CONF "/run/capsule/chrony.conf" /* absent when NTP is off */
/* NTP servers from the DHCP lease (capsule-dhcp-hook), when time.servers is not set */
#define INIT_CHRONY_SOURCES_DIR "/run/capsule/chrony/sources.d"
#define INIT_CHRONY_UID 101                         /* _chrony in the image's /etc/passwd */
#define INIT_MODULES_FILE "/etc/capsule/modules"

/* ---- run.c ---- */
/* Runs argv (argv[0] an absolute path) with stdin /dev/null; waits up to timeout_ms. Output
 * (stdout+stderr) is captured into out (NUL-terminated, truncated) when out is non-NULL, else
 * forwarded to the log. Returns the exit status (0..255), or negative errno / -ETIMEDOUT. */
int run_cmd(char *const argv[], int timeout_ms, char *out, size_t out_size);
/* Monotonic clock in milliseconds. */
int64_t now_ms(void);
/* Records a boot phase from start_ms (CLOCK_BOOTTIME ms, common/timeline.h) to now in the boot
 * timeline (`capsulectl health --boot`). */
void init_boot_phase(const char *name, int64_t start_ms);

/* ---- mounts.c ---- */
/* proc, sys, dev, devpts, /dev/shm, /run, /tmp, cgroup2, bpf. Logs and continues on failure. */
int mounts_early(void);
/* Loads every module named in INIT_MODULES_FILE (one per line, '#' comments) with one modprobe. */
int modules_load(void);
/* mkdir -p, mode 0755. */

/* ---- perm.c ---- */
/* Finds the "perm" GPT partition, creates or activates VG capsule (LV perm + thin pool), mounts it
 * at /perm and installs the machine config. On failure /perm is a tmpfs (degraded, state is lost
 * at reboot) and a negative value is returned. */
int perm_setup(void);
/* Writes "/dev/<name>" of the partition whose GPT name is partname into dev. */
int perm_find_partition(const char *partname, char *dev, size_t dev_size);

/* ---- network.c ---- */
/* Brings lo up, sets the hostname, writes /run/capsule/dhcpcd.conf and /etc/resolv.conf from the
 * machine config (a minimal line-based read of the keys PID 1 needs; serve owns full parsing). */
int network_setup(void);

/* ---- supervise.c ---- */
struct service;
/* Registers the default services and starts them. */
int supervise_start_all(void);
/* Handles the exit of pid (called for every reaped child). Returns true if it was a service. */
bool supervise_child_exited(pid_t pid, int status);
/* Starts services whose backoff expired. Returns the ms until the next pending start, or -1. */
int supervise_tick(void);
/* Adds readable service output fds to pfds (up to max); returns how many were added. */
size_t supervise_poll_fds(struct pollfd *pfds, size_t max);
/* Forwards available output of the service owning fd to /dev/kmsg. */
void supervise_drain(int fd);
/* Kills `capsuled serve` (it then restarts) when its liveness pipe stayed silent for the liveness
 * timeout (serve/liveness.c); true when that happened 3 times in 10 minutes: reboot. */
bool supervise_check_liveness(void);
/* True if `capsuled serve` has been down for longer than limit_ms. */
bool supervise_serve_down_for(int64_t limit_ms);
/* Logs the resident memory of PID 1 and of each running service ("stats: rss pid1=...kB ..."). */
void supervise_log_stats(void);
/* Stops every service: SIGTERM in reverse start order, each waited up to grace_ms, then SIGKILL. */
void supervise_stop_all(int grace_ms);

/* ---- watchdog.c ---- */
int watchdog_open(void);
void watchdog_pet(void);
/* Magic close: disarms the hardware watchdog (used right before reboot(2)). */
void watchdog_close(void);

/* ---- shutdown.c ---- */
enum shutdown_action { SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT };
/* Never returns. */
void shutdown_system(enum shutdown_action action) __attribute__((noreturn));
