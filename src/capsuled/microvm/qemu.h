/* QEMU command lines for Capsule's microVMs: a struct vm_config (what the VM is) becomes the argv
 * of `qemu-system-x86_64 -M microvm ...` (virtio-mmio devices only, direct kernel boot, no
 * firmware). Pure code: no I/O, so every flag is unit-tested (tests/unit/test-microvm-qemu.c). The
 * process lifecycle around this argv is in vm.c, the KVM/TCG choice in accel.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Linux x86's COMMAND_LINE_SIZE: a longer -append is truncated by the kernel, so it is refused. */
#define VM_CMDLINE_MAX 2048
#define VM_MAX_DISKS 24 /* vda..vdx: virtio-mmio slots of the microvm machine */
#define VM_MAX_DNS 3
#define VM_DEFAULT_TB_SIZE_MIB 64
/* Guest TSC frequency handed to the kernel under TCG, else it hangs calibrating the TSC (§13). */
#define VM_TCG_TSC_KHZ "2400000"

enum vm_accel {
        VM_ACCEL_TCG = 0,
        VM_ACCEL_KVM = 1,
};

/* One virtio-blk device; disks[0] is /dev/vda in the guest, disks[1] /dev/vdb, ... */
struct vm_disk {
        const char *path; /* file or block device */
        const char *id;   /* drive id and virtio serial: [a-z0-9-]{1,20}; NULL = "disk<N>" */
        bool read_only;
        const char *cache; /* "writeback" (NULL), "none" (O_DIRECT, block devices), "unsafe" */
};

/* A tap device on the host (created and bridged by the caller) and the guest NIC's MAC. */
struct vm_net {
        const char *tap; /* NULL = no network */
        const char *mac; /* "52:54:00:xx:xx:xx" */
};

/* Guest network configuration, passed on the kernel command line to capsule-guest. */
struct vm_ipconf {
        const char *addr; /* "10.88.0.5/16"; NULL = none of capsule.ip/gw/dns */
        const char *gw;
        const char *dns[VM_MAX_DNS];
        size_t n_dns;
        const char *hostname; /* NULL = the VM's name */
};

struct vm_config {
        const char *name; /* workload name, a DNS label: QEMU's -name is "capsule-<name>" */
        const char *qemu; /* absolute path of qemu-system-x86_64 */
        const char *kernel;
        const char *initrd;
        const char *cmdline_extra; /* appended to the kernel command line; may be NULL */
        enum vm_accel accel;
        unsigned cpus;        /* 1..64 */
        unsigned memory_mib;  /* 16..1048576 */
        unsigned tb_size_mib; /* TCG translation cache; 0 = VM_DEFAULT_TB_SIZE_MIB */
        const struct vm_disk *disks;
        size_t n_disks;
        struct vm_net net;
        uint32_t vsock_cid;       /* 0 = no vsock device; else >= 3 */
        const char *qmp_socket;   /* NULL = no QMP monitor */
        const char *console_path; /* serial console appended to this file ... */
        int console_fd;      /* ... or written to this inherited fd (>= 0 wins over the path) */
        const char *pidfile; /* NULL = none */
        struct vm_ipconf ip;
};

/* A config with every field empty, console_fd -1 and accel TCG: fill in what the VM needs. */
void vm_config_init(struct vm_config *cfg);

/* QEMU's -name for a VM, "capsule-<name>": vm_adopt looks for it in /proc/PID/cmdline. */
int qemu_name_arg(const char *name, char *buf, size_t len, struct cap_error *err);

/* QEMU option-value escaping: every ',' doubled, so "a,b" survives "file=a,,b,format=raw". */
char *qemu_opt_escape(const char *value);

/* The guest kernel command line (console, panic, TCG's tsc_early_khz, capsule.* network keys,
 * cmdline_extra). Fails with E2BIG past VM_CMDLINE_MAX bytes. Caller frees *out. */
int qemu_build_cmdline(const struct vm_config *cfg, char **out, struct cap_error *err);

/* Validates cfg and builds a NULL-terminated argv (argv[0] = cfg->qemu); free: qemu_argv_free. */
int qemu_build_argv(const struct vm_config *cfg, char ***argv_out, struct cap_error *err);
void qemu_argv_free(char **argv);
static inline void qemu_argv_freep(char ***argv)
{
        qemu_argv_free(*argv);
}

/* argv as one POSIX-shell-quoted line (for logs, `describe` and the VM's config file). */
char *qemu_argv_render(char *const *argv);
