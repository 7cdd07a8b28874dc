/* The life of one microVM's QEMU process, independent of the process that started it.
 *
 * Each VM has a state directory (ROOT/vms/NAME/) holding everything needed to find it again after
 * `capsuled serve` crashed or was upgraded:
 *   qmp.sock     QEMU's QMP control socket
 *   qemu.pid     written by QEMU (-pidfile)
 *   console.log  the guest's serial console (appended across restarts)
 *   qemu.log     QEMU's own stderr ("could not load kernel ..."), truncated at each start
 *   config       name, generation and the QEMU command line, for adoption, vm_list and describe
 * QEMU runs in its own session (double fork + setsid), reparented to PID 1, so it survives us.
 * Identity checks (/proc/PID/exe is a QEMU, /proc/PID/cmdline has `-name capsule-NAME`) keep a
 * recycled pid from ever being adopted or killed. */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "qemu.h"

#define VM_STATE_QMP "qmp.sock"
#define VM_STATE_PIDFILE "qemu.pid"
#define VM_STATE_CONSOLE "console.log"
#define VM_STATE_QEMU_LOG "qemu.log"
#define VM_STATE_CONFIG "config"

#define VM_READY_TIMEOUT_MS 10000

struct vm_state_paths {
        char dir[PATH_MAX];
        char qmp[108]; /* sun_path */
        char pidfile[PATH_MAX];
        char console[PATH_MAX];
        char qemu_log[PATH_MAX];
        char config[PATH_MAX];
};

/* The file names of a state directory; -ENAMETOOLONG when the QMP socket path would not fit. */
int vm_state_paths(const char *state_dir, struct vm_state_paths *p, struct cap_error *err);
/* Points cfg->qmp_socket, pidfile and console_path at p's files (p must outlive cfg). */
void vm_config_use_state_paths(struct vm_config *cfg, const struct vm_state_paths *p);

struct vm_start_opts {
        const char *state_dir;  /* created (0700) if missing */
        uint64_t generation;    /* the workload generation this VM runs, recorded in config */
        const char *cgroup_dir; /* QEMU joins DIR/cgroup.procs before exec; NULL = stay put */
        int ready_timeout_ms;   /* until QMP answers; 0 = VM_READY_TIMEOUT_MS */
        const char *netns_path; /* QEMU runs in this network namespace (its tap is there); NULL = ours */
};

/* Starts QEMU for cfg (whose qmp_socket and pidfile must be the state directory's, see
 * vm_config_use_state_paths) and waits until its QMP socket answers query-status. If QEMU exits
 * first, the error carries QEMU's stderr. -EEXIST when this VM is already running. */
int vm_start(const struct vm_config *cfg, const struct vm_start_opts *opts, pid_t *pid,
             struct cap_error *err);

/* Finds the running VM of state_dir: pidfile, identity checks, QMP query-status. status (may be
 * NULL) gets QEMU's run state ("running", "paused", ...). -ESRCH when it is not running. */
int vm_adopt(const char *state_dir, pid_t *pid, char *status, size_t status_len,
             struct cap_error *err);

/* Stops the VM's QEMU: QMP quit (SIGTERM if QMP does not answer), up to grace_ms for it to exit,
 * then SIGKILL. 0 once no process is left, also when none was running. The guest's own graceful
 * shutdown (guest agent Stop) is the caller's business and comes before this. */
int vm_stop(const char *state_dir, int grace_ms, struct cap_error *err);

/* Deletes the state directory and everything in it. -EBUSY while the VM runs. */
int vm_remove(const char *state_dir, struct cap_error *err);

struct vm_info {
        const char *name;
        const char *state_dir;
        uint64_t generation; /* 0 when the config file is missing or unreadable */
        bool running;
        pid_t pid; /* 0 when not running */
};
/* Calls fn for each VM directory under ROOT/vms (sorted by name); a non-zero return from fn stops
 * the walk and is returned. A missing ROOT/vms is an empty list. */
int vm_list(const char *root, int (*fn)(const struct vm_info *vm, void *ud), void *ud,
            struct cap_error *err);

/* True when pid is alive (not a zombie), its executable is a qemu-system-* and its command line
 * carries `-name capsule-<name>`. */
bool vm_pid_is_vm(pid_t pid, const char *name);

/* Waits up to timeout_ms for pid (not necessarily our child) to exit: pidfd + poll, or /proc
 * polling on kernels without pidfd. 0 when it is gone, -ETIMEDOUT otherwise. */
int vm_pid_wait_exit(pid_t pid, int timeout_ms);
