/* The microVM driver as a workload driver (driver.h): a thin adapter over microvm/driver.h's
 * vmd_* calls, beside containerd/workload_driver.c. What is microVM-specific lives here: the OCI
 * spec as the guest's run config source, the image rootfs for the root disk cache, the network
 * and nameservers handed to the guest, exit events from the QEMU watcher. QEMU's serial console
 * goes through the same log writer as containers, into the workload's log file.
 * Volumes arrive as disks (serve/runtime.c attaches them with volume_attach_disk); exec relays to
 * capsule-guest's Exec (microvm_exec.c). Root disk caches of deleted images are collected here
 * (microvm_driver_rootdisk_collect): containerd says which images exist, vmd which VMs claim a
 * cache. */
#include "microvm.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "containerd/client.h"
#include "containerd/driver.h"
#include "containerd/spec.h"
#include "driver.h"
#include "microvm/driver.h"

struct vm_driver {
        struct workload_driver base;
        struct vmd *vmd;
        struct ctrd *images;
        pthread_mutex_t lock; /* fn, ud */
        driver_event_fn fn;
        void *ud;
        vmd_cache_gone_fn gone_fn; /* set once, before the reconciler runs */
        void *gone_ud;
};

static struct vm_driver *of(struct workload_driver *d)
{
        return d->state;
}

/* vmd's exit callback, from its watcher thread. */
static void vmd_exited(const char *name, void *ud)
{
        struct vm_driver *vd = ud;
        struct driver_event ev = {.kind = DRIVER_EVENT_EXIT, .name = name};
        pthread_mutex_lock(&vd->lock);
        if (vd->fn)
                vd->fn(&ev, vd->ud);
        pthread_mutex_unlock(&vd->lock);
}

struct image_rootfs {
        struct ctrd *ctrd;
        const char *chain_id;
};

/* vmd_run's view of the image: its unpacked rootfs, mounted read-only for the call. */
static int with_image_rootfs(void *ctx, vmd_rootfs_fn fn, void *ud, struct cap_error *err)
{
        struct image_rootfs *ir = ctx;
        return ctrd_image_with_rootfs(ir->ctrd, ir->chain_id, fn, ud, err);
}

/* Up to max nameservers from the resolv.conf CNI wrote for the workload. */
static size_t resolv_nameservers(const char *path, char out[][64], size_t max)
{
        _cleanup_fclose_ FILE *f = path ? fopen(path, "re") : NULL;
        size_t n = 0;
        char line[256];
        while (f && n < max && fgets(line, sizeof(line), f))
                if (sscanf(line, "nameserver %63s", out[n]) == 1)
                        n++;
        return n;
}

static int vm_run(struct workload_driver *d, const struct driver_run *run, uint32_t *pid,
                  struct cap_error *err)
{
        struct vm_driver *vd = of(d);
        const Capsule__V1__WorkloadSpec *spec = run->spec;
        struct driver_network net = {0};
        if (run->network_wait && run->network_wait(run->network_wait_ud, &net, err) < 0)
                return -1;
        _cleanup_free_ char *spec_json = NULL;
        struct spec_options so = {
            .workload = spec, .image_config_json = run->image_config_json, .pids_limit = 4096,
            /* only the process part is used (runspec.c); the disks are attached by vmd_run */
            .volume_sources = run->volume_sources};
        int rc = spec_generate(&so, &spec_json, err);
        if (rc < 0)
                return rc;
        char dns[VM_MAX_DNS][64];
        struct image_rootfs ir = {.ctrd = vd->images, .chain_id = run->image_chain_id};
        struct vmd_run vr = {
            .spec = spec,
            .generation = run->generation,
            .spec_json = spec_json,
            .image_digest = run->image_digest,
            .with_rootfs = with_image_rootfs,
            .with_rootfs_ctx = &ir,
            .volume_disks = run->volume_sources,
            .netns_path = run->netns_path,
            .ip = net.ip,
            .prefix_len = net.prefix_len,
            .gateway = net.gateway,
            .log_path = run->log_path,
        };
        vr.n_dns = resolv_nameservers(run->resolv_conf_path, dns, VM_MAX_DNS);
        for (size_t i = 0; i < vr.n_dns; i++)
                vr.dns[i] = dns[i];
        return vmd_run(vd->vmd, &vr, pid, err);
}

static int vm_stop(struct workload_driver *d, const char *name, int grace_ms, uint32_t *exit_status,
                   struct cap_error *err)
{
        (void)exit_status; /* known later, from the guest's exit line (list) */
        return vmd_stop(of(d)->vmd, name, grace_ms, err);
}

static int vm_remove(struct workload_driver *d, const char *name, struct cap_error *err)
{
        int r = vmd_remove(of(d)->vmd, name, err);
        if (r < 0)
                return r;
        /* the last VM of a deleted image frees its cache */
        char why[128];
        snprintf(why, sizeof(why), "microVM %s removed", name);
        struct cap_error cerr = {0};
        if (microvm_driver_rootdisk_collect(d, why, &cerr) < 0)
                log_warn("microvm: root disk caches: %s", cerr.msg);
        return 0;
}

struct list_ctx {
        driver_workload_fn fn;
        void *ud;
};

static int list_one(const struct vmd_workload *w, void *ud)
{
        struct list_ctx *l = ud;
        struct driver_workload dw = {
            .name = w->name,
            .generation = w->generation,
            .state = w->running ? DRIVER_STATE_RUNNING : DRIVER_STATE_EXITED,
            .pid = w->pid,
            .exit_status = (uint32_t)w->exit_code,
            .exited_at_ns = w->exited_at_ns,
            .disk_volumes = w->volumes,
        };
        return l->fn(&dw, l->ud);
}

static int vm_list(struct workload_driver *d, driver_workload_fn fn, void *ud,
                   struct cap_error *err)
{
        struct list_ctx l = {.fn = fn, .ud = ud};
        return vmd_list(of(d)->vmd, list_one, &l, err);
}

static int vm_subscribe(struct workload_driver *d, driver_event_fn fn, void *ud,
                        struct cap_error *err)
{
        (void)err;
        struct vm_driver *vd = of(d);
        pthread_mutex_lock(&vd->lock);
        vd->fn = fn;
        vd->ud = ud;
        pthread_mutex_unlock(&vd->lock);
        return 0;
}

static void vm_unsubscribe(struct workload_driver *d)
{
        struct vm_driver *vd = of(d);
        pthread_mutex_lock(&vd->lock);
        vd->fn = NULL;
        vd->ud = NULL;
        pthread_mutex_unlock(&vd->lock);
}

/* QEMU runs in cgroup_root/NAME (vmd_config.cgroup_root = the cgroup v2 SPEC_CGROUP_PARENT). */
static int vm_cgroup_path(struct workload_driver *d, const char *name, char *buf, size_t len)
{
        (void)d;
        int n = snprintf(buf, len, SPEC_CGROUP_PARENT "/%s", name);
        return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static void vm_free(struct workload_driver *d)
{
        struct vm_driver *vd = of(d);
        vmd_free(vd->vmd); /* stops the watcher: no vmd_exited after this */
        pthread_mutex_destroy(&vd->lock);
        free(vd);
}

static void vm_describe(struct workload_driver *d, const char *name, Capsule__V1__WorkloadStatus *st)
{
        struct vmd_info vi;
        if (vmd_describe(of(d)->vmd, name, &vi) < 0)
                return;
        Capsule__V1__MicroVMStatus *m = malloc(sizeof(*m));
        if (!m)
                return;
        capsule__v1__micro_vmstatus__init(m);
        m->accel = strdup(vi.accel);
        m->kernel = strdup(vi.kernel);
        m->disk_backend = strdup(vi.disk_backend);
        m->disk = strdup(vi.disk);
        m->disk_origin = strdup(vi.disk_origin);
        m->disk_shared = vi.disk_shared;
        if (!m->accel || !m->kernel || !m->disk_backend || !m->disk || !m->disk_origin) {
                capsule__v1__micro_vmstatus__free_unpacked(m, NULL);
                return;
        }
        m->vcpus = vi.vcpus;
        m->memory_bytes = vi.memory_bytes;
        m->disk_bytes = vi.disk_bytes;
        m->vsock_cid = vi.vsock_cid;
        st->microvm = m;
}

static const struct workload_driver_ops microvm_ops = {
    .run = vm_run,
    .stop = vm_stop,
    .remove = vm_remove,
    .list = vm_list,
    .subscribe_exits = vm_subscribe,
    .unsubscribe_exits = vm_unsubscribe,
    .exec_start = microvm_exec_start,
    .exec_resize = microvm_exec_resize,
    .exec_close_stdin = microvm_exec_close_stdin,
    .exec_wait = microvm_exec_wait,
    .exec_kill = microvm_exec_kill,
    .exec_delete = microvm_exec_delete,
    .cgroup_path = vm_cgroup_path,
    .describe = vm_describe,
    .free = vm_free,
};

struct workload_driver *microvm_driver_new(const struct vmd_config *cfg, struct ctrd *images,
                                           struct cap_error *err)
{
        struct vm_driver *vd = calloc(1, sizeof(*vd));
        if (!vd) {
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        pthread_mutex_init(&vd->lock, NULL);
        vd->images = images;
        vd->vmd = vmd_new(cfg, vmd_exited, vd, err);
        if (!vd->vmd) {
                pthread_mutex_destroy(&vd->lock);
                free(vd);
                return NULL;
        }
        log_info("microVMs: kernel %s, initramfs %s, guest channel %s", cfg->kernel, cfg->initrd,
                 vmd_has_vsock(vd->vmd) ? "vsock" : "none (no /dev/vhost-vsock: no exec)");
        vd->base = (struct workload_driver){.name = "microvm",
                                            .noun = "microVM",
                                            .kind = CAPSULE__V1__WORKLOAD_KIND__MICROVM,
                                            .ops = &microvm_ops,
                                            .state = vd};
        return &vd->base;
}

struct vmd *microvm_driver_vmd(struct workload_driver *d)
{
        return of(d)->vmd;
}

void microvm_driver_on_cache_gone(struct workload_driver *d, vmd_cache_gone_fn fn, void *ud)
{
        of(d)->gone_fn = fn;
        of(d)->gone_ud = ud;
}

int microvm_driver_rootdisk_collect(struct workload_driver *d, const char *why,
                                    struct cap_error *err)
{
        struct vm_driver *vd = of(d);
        Containerd__Services__Images__V1__ListImagesResponse *l = NULL;
        /* without the list nothing is removed: an image that exists must keep its cache */
        if (ctrd_image_list(ctrd_client(vd->images), NULL, &l, err) < 0)
                return cap_error_prefix(err, "list images");
        const char **keep = calloc(l->n_images + 1, sizeof(*keep));
        size_t n = 0;
        for (size_t i = 0; keep && i < l->n_images; i++)
                if (l->images[i]->target && l->images[i]->target->digest)
                        keep[n++] = l->images[i]->target->digest;
        int r = keep ? vmd_rootdisk_collect(vd->vmd, keep, n, why, vd->gone_fn, vd->gone_ud, err)
                     : cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        free(keep);
        protobuf_c_message_free_unpacked(&l->base, NULL);
        return r;
}
