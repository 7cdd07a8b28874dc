/* `accel: auto`: KVM only when this host's KVM can really boot the guest kernel.
 *
 * Opening /dev/kvm or running a few instructions proves nothing (some hosts pass that and then
 * hang a normal kernel, design §14): the probe boots the real kernel + initramfs under KVM with
 * `capsule.probe=1`, and capsule-guest prints VM_ACCEL_PROBE_MARKER on the console and powers off.
 * The answer is cached in a small file keyed by the kernel's boot id, so each boot probes once:
 *   boot_id=<id>\n kvm\n            or    boot_id=<id>\n tcg\t<why>\n */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "qemu.h"

#define VM_ACCEL_PROBE_MARKER "CAPSULE-PROBE-OK"
#define VM_ACCEL_PROBE_TIMEOUT_MS 10000
#define VM_ACCEL_DEFAULT_CACHE "/run/capsule/accel"

struct vm_accel_probe_opts {
        const char *qemu; /* NULL = qemu-system-x86_64 from PATH */
        const char *kernel;
        const char *initrd;
        const char *cache_file; /* NULL = no cache */
        int timeout_ms;         /* 0 = VM_ACCEL_PROBE_TIMEOUT_MS */
        const char *kvm_device; /* NULL = /dev/kvm */
};

/* Decides KVM or TCG (why gets the reason for TCG, "" for KVM). *cached (may be NULL) tells
 * whether the answer came from the cache. Errors only when nothing can be decided (the kernel or
 * QEMU is missing while /dev/kvm is usable). */
int vm_accel_probe_ex(const struct vm_accel_probe_opts *opts, enum vm_accel *out, char *why,
                      size_t why_len, bool *cached, struct cap_error *err);
/* vm_accel_probe_ex with the default timeout and /dev/kvm. */
int vm_accel_probe(const char *qemu, const char *kernel, const char *initrd, const char *cache_file,
                   enum vm_accel *out, char *why, size_t why_len, struct cap_error *err);

/* Boots kernel+initrd under accel with capsule.probe=1 and waits for the marker on the console.
 * 0 when it appeared (*elapsed_ms = QEMU start -> marker); otherwise negative with why filled:
 * -ETIMEDOUT (no marker in time) or -ECHILD (QEMU exited first; why carries its stderr). The
 * QEMU is killed by pid in every case. */
int vm_accel_boot_probe(const char *qemu, const char *kernel, const char *initrd,
                        enum vm_accel accel, int timeout_ms, int64_t *elapsed_ms, char *why,
                        size_t why_len, struct cap_error *err);

/* The cache file. read: 0 on a hit for boot_id; -ENOENT (no file), -ESTALE (another boot),
 * -EBADMSG (unparseable): probe again. */
int vm_accel_cache_read(const char *path, const char *boot_id, enum vm_accel *out, char *why,
                        size_t why_len);
int vm_accel_cache_write(const char *path, const char *boot_id, enum vm_accel accel,
                         const char *why, struct cap_error *err);
/* /proc/sys/kernel/random/boot_id without the newline. */
int vm_boot_id(char *buf, size_t len, struct cap_error *err);

/* `capsuled probe-accel --kernel K --initrd I [--qemu PATH] [--timeout S] [--cache FILE]
 * [--json]`: prints "kvm" or "tcg: <why>" and exits 0; 1 when nothing could be decided. */
int vm_accel_probe_main(int argc, char **argv);
