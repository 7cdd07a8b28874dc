/* The microVM driver: runs `kind: MicroVM` workloads for the reconciler, beside the containerd
 * driver and with the same shape (run one generation, stop, remove, list what runs, report exits).
 *
 * A workload NAME is one QEMU process (vm.c) whose state lives in ROOT/vms/NAME: the QMP socket
 * and pidfile (adoption after a restart of `capsuled serve`), the per-run disks and a few small
 * files (generation, vsock CID, the log offset of this run, the exit code once known). Each run:
 *   - root disk: the image's rootfs as ext4, built once per image digest (a thin LV on a Capsule,
 *     a file under ROOT/vm-images in host mode), a copy-on-write clone of it per run (a thin
 *     snapshot or a reflink; rootdisk.h): the VM's writes never touch the cache, and a restart
 *     starts from the image, like a container's fresh snapshot;
 *   - run config disk (/dev/vda): capsule.guest.v1.RunConfig from the workload's OCI spec
 *     (runspec.c), so both kinds resolve entrypoint, env and user the same way;
 *   - console: QEMU's serial console is a pipe into the same log writer containers use, so the
 *     guest's console (kernel, capsule-guest, the workload's output) is the workload's log and
 *     keeps flowing while the control plane restarts. capsule-guest ends it with an exit-code line
 *     (RUNCONFIG_EXIT_MARKER): that is how the exit code is known, with or without vsock;
 *   - network: QEMU runs in the workload's CNI namespace, rewired by net/vmnet.c (tap0 on br0);
 *   - guest channel: vhost-vsock with a CID unique among running VMs, when /dev/vhost-vsock exists
 *     (a Capsule); the graceful Stop goes through capsule-guest's Stop RPC, then QMP quit.
 * A watcher thread notices QEMU exits and calls the exit callback (the reconciler's kick). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsule/v1/workloads.pb-c.h"
#include "common/error.h"
#include "qemu.h"

struct vmd;

struct vmd_config {
        const char *root;       /* state: ROOT/vms, ROOT/vm-images */
        const char *kernel;     /* the guest kernel (the image's own) */
        const char *initrd;     /* the guest initramfs (capsule-guest) */
        const char *log_writer; /* capsule-log-writer (or capsuled): `log-writer PATH` */
        const char *accel_cache; /* probe result cache file */
        const char *cgroup_root; /* cgroup v2 dir under which NAME/ is made; NULL: no cgroup */
        /* root disks as thin LVs in this VG's thin pool; NULL (or no such pool): files under ROOT */
        const char *rootdisk_vg, *rootdisk_pool;
};

/* Checks the programs and files it needs (qemu, kernel, initrd, mkfs.ext4) and starts the exit
 * watcher; exit_fn(name, ud) is called from it when a VM's QEMU ends. UNAVAILABLE naming what is
 * missing. */
struct vmd *vmd_new(const struct vmd_config *cfg, void (*exit_fn)(const char *name, void *ud),
                    void *ud, struct cap_error *err);
void vmd_free(struct vmd *d);

/* Whether the host has a guest channel (/dev/vhost-vsock): exec and graceful stop need it. */
bool vmd_has_vsock(const struct vmd *d);

/* Gives fn(rootfs_dir, ud) the image's unpacked rootfs (mounted read-only for the call). */
typedef int (*vmd_rootfs_fn)(const char *rootfs, void *ud);
typedef int (*vmd_with_rootfs_fn)(void *ctx, vmd_rootfs_fn fn, void *ud, struct cap_error *err);

struct vmd_run {
        const Capsule__V1__WorkloadSpec *spec;
        uint64_t generation;
        const char *spec_json;    /* containerd/spec.c's spec for the same workload */
        const char *image_digest; /* "sha256:..." : the root disk cache key */
        vmd_with_rootfs_fn with_rootfs; /* called only when the cache is missing */
        void *with_rootfs_ctx;
        const char *const *volume_disks; /* [spec->n_mounts]: block device or image of each mount */
        const char *netns_path;   /* NULL: no network */
        const char *ip;           /* "10.88.0.5" */
        int prefix_len;
        const char *gateway;
        const char *dns[VM_MAX_DNS]; /* nameservers for the guest's /etc/resolv.conf */
        size_t n_dns;
        const char *log_path;     /* the workload's log file */
};

/* Builds the disks and starts the VM of one generation; returns QEMU's pid. ALREADY_EXISTS when
 * NAME already runs (stop and remove it first). */
int vmd_run(struct vmd *d, const struct vmd_run *run, uint32_t *pid, struct cap_error *err);

/* Graceful stop: the guest's Stop (SIGTERM to the workload, grace, SIGKILL, sync, power off) when
 * there is a guest channel, then QMP quit, then SIGKILL. 0 also when nothing runs. */
int vmd_stop(struct vmd *d, const char *name, int grace_ms, struct cap_error *err);

/* Stops if needed and deletes the VM's state directory and disks. Missing: 0. */
int vmd_remove(struct vmd *d, const char *name, struct cap_error *err);

struct vmd_workload {
        const char *name;
        uint64_t generation;
        bool running;
        uint32_t pid;
        int32_t exit_code;    /* when !running: from the guest's exit line, 255 when it never said */
        int64_t exited_at_ns; /* when !running: when the exit was noticed (0: unknown) */
        const char *accel;    /* "kvm" or "tcg" */
        uint32_t vsock_cid;   /* 0: none */
        const char *volumes;  /* the volumes it holds as disks, space-separated ("" for none) */
};
/* Calls fn for every VM state directory (adoption and orphan removal). */
int vmd_list(struct vmd *d, int (*fn)(const struct vmd_workload *w, void *ud), void *ud,
             struct cap_error *err);

/* How a VM was started (for describe). -ENOENT when NAME has no state. */
struct vmd_info {
        char accel[8];
        char kernel[256];
        unsigned vcpus;
        uint64_t memory_bytes;
        uint64_t disk_bytes;
        uint32_t vsock_cid;
        char disk_backend[16]; /* "lvm-thin" or "file" */
        char disk[256];        /* the VM's root disk: "VG/vmroot-NAME" or a file */
        char disk_origin[256]; /* the image cache it is a copy-on-write clone of */
        bool disk_shared;      /* nothing was copied (thin snapshot, reflink) */
};
int vmd_describe(struct vmd *d, const char *name, struct vmd_info *out);

/* One line for health: the root disk backend, how many caches and VM disks it holds now, the VM
 * state directories and the QEMU processes of ours on the host (a delete leaves none of them).
 * Negative (msg says why) when they cannot be counted. */
int vmd_rootdisk_census(struct vmd *d, char *msg, size_t len);

/* A root disk cache vmd_rootdisk_collect removed. */
struct vmd_cache_gone {
        const char *key;     /* the image digest's hex */
        const char *what;    /* the file or "VG/vmimg-KEY" */
        uint64_t bytes;      /* the space it took (the file's or the LV's size) */
        const char *backend; /* "file" or "lvm-thin" */
        const char *why;     /* the caller's why */
};
typedef void (*vmd_cache_gone_fn)(const struct vmd_cache_gone *g, void *ud);

/* Removes the root disk caches that nothing needs any more: those whose key is none of keep[]
 * (the digests, "sha256:HEX", of the images containerd still holds) and that no VM state
 * directory claims (a running VM, or an exited one that may start again: its "image" file, made
 * before its disk). Each removal is crash-safe (rootdisk.h), logged and handed to fn; why (e.g.
 * "image NAME deleted") goes into both. The same for both backends. Returns how many were
 * removed; negative when the caches or claims cannot be read (then nothing was removed). */
int vmd_rootdisk_collect(struct vmd *d, const char *const *keep, size_t n_keep, const char *why,
                         vmd_cache_gone_fn fn, void *ud, struct cap_error *err);

/* A connected, plaintext gRPC client to the guest agent of a running VM (capsule.guest.v1 over
 * vsock). FAILED_PRECONDITION without a guest channel. Free with rpc_client_free. */
struct rpc_client;
struct rpc_client *vmd_guest_client(struct vmd *d, const char *name, struct cap_error *err);

/* The exit code capsule-guest reported in the log text (the last RUNCONFIG_EXIT_MARKER line), or
 * -1 when there is none. Pure: unit-tested. */
int vmd_exit_code_from_log(const char *text, size_t len);
