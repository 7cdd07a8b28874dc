/* The microVM driver (see driver.h): per-run disks, the console into the workload's log, QEMU
 * in the workload's network namespace, vsock CIDs, the exit watcher, listing for adoption. */
#include "driver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/close_range.h>
#include <linux/vm_sockets.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "accel.h"
#include "capsule/guest/v1/guest.pb-c.h"
#include "common/cleanup.h"
#include "common/deadline.h"
#include "common/fault.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/names.h"
#include "net/vmnet.h"
#include "rootdisk.h"
#include "rpc/rpc.h"
#include "runspec.h"
#include "tools.h"
#include "vm.h"

#define VMD_MAX_TRACKED 256
#define VMD_DEFAULT_MEMORY_MIB 256
#define VMD_GUEST_STOP_GRACE_S 10
#define VMD_LOG_TAIL (256 * 1024)
#define VMD_IMAGE_FILE "image" /* "sha256:HEX": the cache this VM's root disk comes from */

struct tracked {
        char name[64];
        pid_t pid;
};

struct vmd {
        char root[PATH_MAX];
        char qemu[PATH_MAX];
        char kernel[PATH_MAX];
        char initrd[PATH_MAX];
        char log_writer[PATH_MAX];
        char accel_cache[PATH_MAX];
        char cgroup_root[PATH_MAX]; /* "" = none */
        struct vm_rootdisk *rootdisk;
        bool vsock;
        void (*exit_fn)(const char *name, void *ud);
        void *exit_ud;
        pthread_mutex_t lock;       /* tracked, CID allocation */
        pthread_mutex_t cache_lock; /* root disk cache builds */
        /* a VM's claim on a cache (its "image" file) vs. removing caches (vmd_rootdisk_collect) */
        pthread_mutex_t ref_lock;
        struct tracked tracked[VMD_MAX_TRACKED];
        size_t n_tracked;
        pthread_t watcher;
        bool stopping;
        pthread_cond_t cond;
};

static int64_t real_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void state_dir(const struct vmd *d, const char *name, char *buf, size_t len)
{
        snprintf(buf, len, "%s/vms/%s", d->root, name);
}

/* Small state files (one line each), written whole with a rename. */
static int put_file(const char *dir, const char *file, const char *text, struct cap_error *err)
{
        char path[PATH_MAX], tmp[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, file);
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return cap_error_errno(err, -errno, "create %s", tmp);
        size_t n = strlen(text);
        if (write(fd, text, n) != (ssize_t)n)
                return cap_error_errno(err, -EIO, "write %s", tmp);
        if (rename(tmp, path) < 0)
                return cap_error_errno(err, -errno, "rename %s", tmp);
        return 0;
}

static bool get_file(const char *dir, const char *file, char *buf, size_t len)
{
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, file);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t n = read(fd, buf, len - 1);
        if (n < 0)
                return false;
        buf[n] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        return true;
}

int vmd_exit_code_from_log(const char *text, size_t len)
{
        const size_t ml = strlen(RUNCONFIG_EXIT_MARKER);
        int code = -1;
        for (size_t i = 0; i + ml <= len; i++) {
                if (memcmp(text + i, RUNCONFIG_EXIT_MARKER, ml) != 0)
                        continue;
                size_t j = i + ml;
                int v = 0, digits = 0;
                while (j < len && text[j] >= '0' && text[j] <= '9' && digits < 4)
                        v = v * 10 + (text[j++] - '0'), digits++;
                if (digits && (j == len || text[j] == '\n' || text[j] == '\r') && v <= 255)
                        code = v;
                i = j - 1;
        }
        return code;
}

/* The exit code the guest printed since this run's start (the log offset recorded at run). */
static int exit_code_of_run(const char *dir)
{
        char log_path[PATH_MAX], off_s[32] = "0";
        if (!get_file(dir, "log", log_path, sizeof(log_path)))
                return -1;
        get_file(dir, "logoff", off_s, sizeof(off_s));
        _cleanup_close_ int fd = open(log_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -1;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -1;
        off_t off = (off_t)strtoll(off_s, NULL, 10);
        if (off > st.st_size) /* rotated meanwhile: the whole current file is this run's */
                off = 0;
        if (st.st_size - off > VMD_LOG_TAIL)
                off = st.st_size - VMD_LOG_TAIL;
        size_t len = (size_t)(st.st_size - off);
        _cleanup_free_ char *buf = malloc(len + 1);
        if (!buf)
                return -1;
        ssize_t n = pread(fd, buf, len, off);
        if (n < 0)
                return -1;
        return vmd_exit_code_from_log(buf, (size_t)n);
}

/* Records the exit of dir's VM once: exit code (255 when the guest never reported one) and time. */
static void record_exit(const char *dir)
{
        char have[64];
        if (get_file(dir, "exit", have, sizeof(have)))
                return;
        char pid_s[32];
        if (get_file(dir, "logwriter.pid", pid_s, sizeof(pid_s))) {
                pid_t w = (pid_t)atoi(pid_s);
                if (w > 0)
                        vm_pid_wait_exit(w, 2000); /* the console's last lines reach the log */
        }
        int code = exit_code_of_run(dir);
        char line[64];
        snprintf(line, sizeof(line), "%d %" PRId64 "\n", code < 0 ? 255 : code, real_ns());
        struct cap_error err = {0};
        if (put_file(dir, "exit", line, &err) < 0)
                log_warn("microvm: %s", err.msg);
}

/* Under d->lock. */
static void track_locked(struct vmd *d, const char *name, pid_t pid)
{
        size_t i = 0;
        while (i < d->n_tracked && strcmp(d->tracked[i].name, name) != 0)
                i++;
        if (i == d->n_tracked && d->n_tracked < VMD_MAX_TRACKED)
                d->n_tracked++;
        if (i < d->n_tracked) {
                snprintf(d->tracked[i].name, sizeof(d->tracked[i].name), "%s", name);
                d->tracked[i].pid = pid;
        }
        pthread_cond_broadcast(&d->cond);
}

static void track(struct vmd *d, const char *name, pid_t pid)
{
        pthread_mutex_lock(&d->lock);
        track_locked(d, name, pid);
        pthread_mutex_unlock(&d->lock);
}

static void untrack(struct vmd *d, const char *name)
{
        pthread_mutex_lock(&d->lock);
        for (size_t i = 0; i < d->n_tracked; i++)
                if (strcmp(d->tracked[i].name, name) == 0) {
                        d->tracked[i] = d->tracked[--d->n_tracked];
                        break;
                }
        pthread_mutex_unlock(&d->lock);
}

/* Every 300 ms: which tracked QEMU processes are gone. Their exit is recorded, then reported. */
static void *watcher_main(void *arg)
{
        struct vmd *d = arg;
        pthread_mutex_lock(&d->lock);
        while (!d->stopping) {
                struct timespec ts = deadline_in_ms(CLOCK_MONOTONIC, 300);
                pthread_cond_timedwait(&d->cond, &d->lock, &ts);
                for (size_t i = 0; i < d->n_tracked && !d->stopping;) {
                        struct tracked t = d->tracked[i];
                        /* pid 0: a run reserving its vsock CID, QEMU not started yet */
                        if (t.pid == 0 || vm_pid_is_vm(t.pid, t.name)) {
                                i++;
                                continue;
                        }
                        d->tracked[i] = d->tracked[--d->n_tracked];
                        pthread_mutex_unlock(&d->lock);
                        char dir[PATH_MAX];
                        state_dir(d, t.name, dir, sizeof(dir));
                        record_exit(dir);
                        log_info("microvm: %s: QEMU (pid %d) ended", t.name, (int)t.pid);
                        if (d->exit_fn)
                                d->exit_fn(t.name, d->exit_ud);
                        pthread_mutex_lock(&d->lock);
                        i = 0;
                }
        }
        pthread_mutex_unlock(&d->lock);
        return NULL;
}

/* Whether VM NAME's QEMU runs (cleanup keeps its root disk). */
static bool vm_running(const char *name, void *ud)
{
        struct vmd *d = ud;
        char dir[PATH_MAX];
        state_dir(d, name, dir, sizeof(dir));
        pid_t pid;
        return vm_adopt(dir, &pid, NULL, 0, &(struct cap_error){0}) == 0;
}

/* The root disk backend: LVM thin in cfg's pool when there is one (a Capsule), else files under
 * ROOT/vm-images; then what a crash or an earlier life left behind is cleaned up. */
static int rootdisk_open(struct vmd *d, const struct vmd_config *cfg, struct cap_error *err)
{
        char images[PATH_MAX], vms[PATH_MAX];
        int r = -ENOENT;
        if (cfg->rootdisk_vg && cfg->rootdisk_pool) {
                r = vm_rootdisk_lvm_open(cfg->rootdisk_vg, cfg->rootdisk_pool, &d->rootdisk, err);
                if (r < 0) {
                        log_warn("microvm: %s; falling back to root disk files under %s/vm-images",
                                 err->msg, d->root);
                        cap_error_clear(err);
                }
        }
        snprintf(images, sizeof(images), "%s/vm-images", d->root);
        snprintf(vms, sizeof(vms), "%s/vms", d->root);
        if (r < 0 && vm_rootdisk_file_open(images, vms, &d->rootdisk, err) < 0)
                return err->code;
        log_info("microvm: root disks: %s (%s)", d->rootdisk->name, d->rootdisk->where);
        struct cap_error cerr = {0};
        if (d->rootdisk->ops->cleanup(d->rootdisk, vm_running, d, &cerr) < 0)
                log_warn("microvm: %s", cerr.msg);
        return 0;
}

struct vmd *vmd_new(const struct vmd_config *cfg, void (*exit_fn)(const char *name, void *ud),
                    void *ud, struct cap_error *err)
{
        _cleanup_free_ struct vmd *d = calloc(1, sizeof(*d));
        if (!d) {
                cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                return NULL;
        }
        snprintf(d->root, sizeof(d->root), "%s", cfg->root);
        snprintf(d->kernel, sizeof(d->kernel), "%s", cfg->kernel ? cfg->kernel : "");
        snprintf(d->initrd, sizeof(d->initrd), "%s", cfg->initrd ? cfg->initrd : "");
        snprintf(d->log_writer, sizeof(d->log_writer), "%s", cfg->log_writer ? cfg->log_writer : "");
        snprintf(d->accel_cache, sizeof(d->accel_cache), "%s", cfg->accel_cache ? cfg->accel_cache : "");
        snprintf(d->cgroup_root, sizeof(d->cgroup_root), "%s", cfg->cgroup_root ? cfg->cgroup_root : "");
        if (vm_tool_find(VM_QEMU_PROGRAM, d->qemu, sizeof(d->qemu), err) < 0 ||
            vm_tool_find("mkfs.ext4", (char[PATH_MAX]){0}, PATH_MAX, err) < 0) {
                err->status = CAP_UNAVAILABLE;
                return NULL;
        }
        if (access(d->kernel, R_OK) < 0 || access(d->initrd, R_OK) < 0) {
                cap_error_set(err, -ENOENT, CAP_UNAVAILABLE,
                              "no guest kernel or initramfs (%s, %s): this capsule's image was built without capsule-guest",
                              d->kernel, d->initrd);
                return NULL;
        }
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/vms", d->root);
        if (mkdir_p(dir, 0700) < 0) {
                cap_error_errno(err, -errno, "create %s", dir);
                return NULL;
        }
        if (rootdisk_open(d, cfg, err) < 0)
                return NULL;
        d->vsock = access("/dev/vhost-vsock", R_OK | W_OK) == 0;
        d->exit_fn = exit_fn;
        d->exit_ud = ud;
        pthread_mutex_init(&d->lock, NULL);
        pthread_mutex_init(&d->cache_lock, NULL);
        pthread_mutex_init(&d->ref_lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&d->cond, &ca);
        pthread_condattr_destroy(&ca);
        if (pthread_create(&d->watcher, NULL, watcher_main, d) != 0) {
                cap_error_set(err, -EAGAIN, CAP_INTERNAL, "microvm: cannot start the exit watcher");
                vm_rootdisk_free(d->rootdisk);
                return NULL;
        }
        return TAKE_PTR(d);
}

void vmd_free(struct vmd *d)
{
        if (!d)
                return;
        pthread_mutex_lock(&d->lock);
        d->stopping = true;
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
        pthread_join(d->watcher, NULL);
        pthread_cond_destroy(&d->cond);
        pthread_mutex_destroy(&d->lock);
        pthread_mutex_destroy(&d->cache_lock);
        pthread_mutex_destroy(&d->ref_lock);
        vm_rootdisk_free(d->rootdisk);
        free(d);
}

bool vmd_has_vsock(const struct vmd *d)
{
        return d->vsock;
}

/* ---- run ------------------------------------------------------------------------------------ */

struct cache_build {
        struct vm_rootdisk *rd;
        const char *key;
        struct cap_error *err;
};

static int build_cache(const char *rootfs, void *ud)
{
        struct cache_build *cb = ud;
        return cb->rd->ops->cache_build(cb->rd, cb->key, rootfs, 0, cb->err);
}

/* The root disk cache of the image (its digest's hex is the key), built when missing; *bytes is
 * its size. */
static int ensure_cache(struct vmd *d, const struct vmd_run *run, const char **key, uint64_t *bytes,
                        struct cap_error *err)
{
        const char *hex = strchr(run->image_digest ? run->image_digest : "", ':');
        hex = hex ? hex + 1 : run->image_digest;
        if (!vm_rootdisk_key_ok(hex))
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "root disk: bad image digest \"%s\"",
                                     run->image_digest ? run->image_digest : "");
        *key = hex;
        /* the VM's claim on the cache first: from here on no collect removes it (under ref_lock,
         * so a collect running now either finishes before or sees the claim) */
        char dir[PATH_MAX], claim[96];
        state_dir(d, run->spec->name, dir, sizeof(dir));
        snprintf(claim, sizeof(claim), "sha256:%s\n", hex);
        pthread_mutex_lock(&d->ref_lock);
        int r = put_file(dir, VMD_IMAGE_FILE, claim, err);
        pthread_mutex_unlock(&d->ref_lock);
        if (r < 0)
                return cap_error_prefix(err, "root disk of %s", run->spec->image);
        struct vm_rootdisk *rd = d->rootdisk;
        pthread_mutex_lock(&d->cache_lock);
        r = rd->ops->cache_find(rd, hex, bytes, err);
        if (r == 0) {
                int64_t t0 = vm_now_ms();
                struct cache_build cb = {.rd = rd, .key = hex, .err = err};
                r = run->with_rootfs(run->with_rootfs_ctx, build_cache, &cb, err);
                if (r == 0)
                        r = rd->ops->cache_find(rd, hex, bytes, err);
                if (r == 0)
                        r = cap_error_set(err, -ENOENT, CAP_INTERNAL, "the cache just built is missing");
                if (r > 0)
                        log_info("microvm: %s: root disk cache of %s built (%s) in %lld ms", run->spec->name,
                                 run->spec->image, rd->name, (long long)(vm_now_ms() - t0));
        }
        pthread_mutex_unlock(&d->cache_lock);
        if (r < 0)
                return cap_error_prefix(err, "root disk of %s", run->spec->image);
        return 0;
}

/* The lowest CID >= 3 no running VM of ours holds. Under d->lock. */
static uint32_t cid_allocate(struct vmd *d)
{
        uint32_t cid = 3;
        for (bool clash = true; clash; cid++) {
                clash = false;
                for (size_t i = 0; i < d->n_tracked && !clash; i++) {
                        char dir[PATH_MAX], s[32];
                        state_dir(d, d->tracked[i].name, dir, sizeof(dir));
                        clash = get_file(dir, "cid", s, sizeof(s)) && (uint32_t)atoi(s) == cid;
                }
                if (!clash)
                        return cid;
        }
        return cid;
}

/* Starts the log writer the console pipe feeds (detached, like QEMU: it outlives us and ends at
 * the pipe's EOF, when QEMU exits). Returns the pipe's write end for QEMU in *console_fd. */
static int spawn_log_writer(struct vmd *d, const char *log_path, const char *dir, int *console_fd,
                            struct cap_error *err)
{
        int p[2], rep[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return cap_error_errno(err, -errno, "pipe");
        if (pipe2(rep, O_CLOEXEC) < 0) {
                close(p[0]);
                close(p[1]);
                return cap_error_errno(err, -errno, "pipe");
        }
        pid_t mid = fork();
        if (mid < 0) {
                int e = -errno;
                close(p[0]), close(p[1]), close(rep[0]), close(rep[1]);
                return cap_error_errno(err, e, "fork");
        }
        if (mid == 0) {
                if (setsid() < 0)
                        _exit(127);
                pid_t g = fork();
                if (g == 0) {
                        int null = open("/dev/null", O_RDWR);
                        int in = fcntl(p[0], F_DUPFD, 10);
                        if (null < 0 || in < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
                            dup2(null, 2) < 0 || dup2(in, 3) < 0 || dup2(null, 4) < 0 ||
                            dup2(null, 5) < 0)
                                _exit(127);
                        syscall(SYS_close_range, 6U, ~0U, 0U);
                        execl(d->log_writer, d->log_writer, "log-writer", log_path, (char *)NULL);
                        _exit(127);
                }
                ssize_t k = write(rep[1], &g, sizeof(g));
                (void)k;
                _exit(g > 0 ? 0 : 127);
        }
        close(p[0]);
        close(rep[1]);
        int status;
        while (waitpid(mid, &status, 0) < 0 && errno == EINTR)
                ;
        pid_t g = 0;
        ssize_t k = read(rep[0], &g, sizeof(g));
        close(rep[0]);
        if (k != (ssize_t)sizeof(g) || g <= 0) {
                close(p[1]);
                return cap_error_set(err, -ECHILD, CAP_INTERNAL, "console log writer did not start");
        }
        char s[32];
        snprintf(s, sizeof(s), "%d\n", (int)g);
        if (put_file(dir, "logwriter.pid", s, err) < 0) {
                close(p[1]);
                return err->code;
        }
        *console_fd = p[1];
        return 0;
}

/* cgroup v2: the cpu, memory and pids figures of DIR/NAME need those controllers enabled in
 * DIR's parent and DIR (runc does the same for containers). Best effort: accounting only. */
static void cgroup_enable_controllers(const char *dir)
{
        char parent[PATH_MAX], path[PATH_MAX];
        snprintf(parent, sizeof(parent), "%s", dir);
        char *slash = strrchr(parent, '/');
        if (slash)
                *slash = '\0';
        if (mkdir_p(dir, 0755) < 0)
                return;
        const char *levels[] = {parent, dir};
        for (size_t i = 0; i < 2; i++) {
                snprintf(path, sizeof(path), "%s/cgroup.subtree_control", levels[i]);
                _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                static const char *const ctl[] = {"+cpu", "+memory", "+pids"};
                for (size_t k = 0; k < 3; k++)
                        if (write(fd, ctl[k], strlen(ctl[k])) < 0)
                                log_debug("microvm: %s: %s: %s", path, ctl[k], strerror(errno));
        }
}

static int choose_accel(struct vmd *d, const char *want, enum vm_accel *accel,
                        struct cap_error *err)
{
        if (want && strcmp(want, "kvm") == 0) {
                *accel = VM_ACCEL_KVM;
                return 0;
        }
        if (want && strcmp(want, "tcg") == 0) {
                *accel = VM_ACCEL_TCG;
                return 0;
        }
        char why[256];
        return vm_accel_probe(d->qemu, d->kernel, d->initrd, d->accel_cache[0] ? d->accel_cache : NULL,
                              accel, why, sizeof(why), err);
}

int vmd_run(struct vmd *d, const struct vmd_run *run, uint32_t *pid, struct cap_error *err)
{
        const Capsule__V1__WorkloadSpec *spec = run->spec;
        char dir[PATH_MAX];
        state_dir(d, spec->name, dir, sizeof(dir));
        pid_t running;
        if (vm_adopt(dir, &running, NULL, 0, &(struct cap_error){0}) == 0)
                return cap_error_set(err, -EEXIST, CAP_ALREADY_EXISTS, "microVM %s already runs (pid %d)",
                                     spec->name, (int)running);
        /* what an earlier run left (not running: checked above) */
        vm_remove(dir, &(struct cap_error){0});
        if (mkdir_p(dir, 0700) < 0)
                return cap_error_errno(err, -errno, "create %s", dir);

        enum vm_accel accel;
        int r = choose_accel(d, spec->accel, &accel, err);
        if (r < 0)
                return cap_error_prefix(err, "accel");
        char run_disk[PATH_MAX];
        const char *key = NULL;
        uint64_t cache_bytes = 0;
        if ((r = ensure_cache(d, run, &key, &cache_bytes, err)) < 0)
                return r;
        if (spec->disk_bytes && spec->disk_bytes < cache_bytes)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "disk: %" PRIu64 " MiB is smaller than the image's root filesystem (%" PRIu64
                                     " MiB)", spec->disk_bytes >> 20, cache_bytes >> 20);
        struct vm_rootdisk_disk root;
        if ((r = d->rootdisk->ops->vm_disk_create(d->rootdisk, key, spec->name, dir, spec->disk_bytes, &root,
                                                   err)) < 0)
                return cap_error_prefix(err, "root disk");
        char line[sizeof(root.what) + sizeof(root.origin) + 64];
        snprintf(line, sizeof(line), "%s %s %s %s\n", d->rootdisk->name, root.shared ? "shared" : "copy", root.what,
                 root.origin);
        if ((r = put_file(dir, "rootdisk", line, err)) < 0)
                return r;

        /* the run config: /dev/vda; root /dev/vdb; volumes /dev/vdc... */
        struct vm_disk disks[VM_MAX_DISKS] = {0};
        struct vm_runspec_volume vols[VM_MAX_DISKS];
        char devs[VM_MAX_DISKS][16];
        size_t nv = spec->n_mounts;
        if (nv + 2 > VM_MAX_DISKS)
                return cap_error_set(err, -E2BIG, CAP_INVALID_ARGUMENT, "mounts: at most %d volumes per microVM",
                                     VM_MAX_DISKS - 2);
        for (size_t i = 0; i < nv; i++) {
                snprintf(devs[i], sizeof(devs[i]), "/dev/vd%c", (char)('c' + i));
                vols[i] = (struct vm_runspec_volume){.device = devs[i], .path = spec->mounts[i]->path,
                                                     .read_only = spec->mounts[i]->read_only};
                disks[2 + i] = (struct vm_disk){.path = run->volume_disks[i]};
        }
        /* which volumes this VM holds as disks: claimed again when capsuled restarts and adopts
         * the VM, so that recovery does not mount them under it */
        char held[VM_MAX_DISKS * 64] = "";
        for (size_t i = 0; i < nv; i++)
                snprintf(held + strlen(held), sizeof(held) - strlen(held), "%s%s", i ? " " : "",
                         spec->mounts[i]->volume);
        strcat(held, "\n");
        if ((r = put_file(dir, "volumes", held, err)) < 0)
                return r;
        RunConfig *rc = NULL;
        if ((r = vm_runconfig_from_spec(run->spec_json, spec->name, vols, nv, VMD_GUEST_STOP_GRACE_S, &rc,
                                        err)) < 0)
                return r;
        snprintf(run_disk, sizeof(run_disk), "%s/run.disk", dir);
        r = runconfig_write_file(run_disk, rc, err);
        runconfig_free(rc);
        if (r < 0)
                return r;
        disks[0] = (struct vm_disk){.path = run_disk, .id = "config", .read_only = true};
        disks[1] = (struct vm_disk){.path = root.path, .id = "root"};

        /* this run's part of the log starts here */
        struct stat lst;
        char s[64];
        snprintf(s, sizeof(s), "%lld\n", stat(run->log_path, &lst) == 0 ? (long long)lst.st_size : 0LL);
        if ((r = put_file(dir, "logoff", s, err)) < 0 || (r = put_file(dir, "log", run->log_path, err)) < 0)
                return r;

        struct vm_state_paths paths;
        if ((r = vm_state_paths(dir, &paths, err)) < 0)
                return r;
        struct vm_config cfg;
        vm_config_init(&cfg);
        cfg.name = spec->name;
        cfg.qemu = d->qemu;
        cfg.kernel = d->kernel;
        cfg.initrd = d->initrd;
        cfg.accel = accel;
        cfg.cpus = spec->resources && spec->resources->cpus > 0 ? (unsigned)ceil(spec->resources->cpus) : 1;
        cfg.memory_mib = spec->resources && spec->resources->memory_bytes
                             ? (unsigned)(spec->resources->memory_bytes >> 20)
                             : VMD_DEFAULT_MEMORY_MIB;
        cfg.disks = disks;
        cfg.n_disks = nv + 2;
        char mac[18], addr[48];
        if (run->netns_path && run->ip) {
                if ((r = vmnet_attach(run->netns_path, run->ip, run->prefix_len, err)) < 0)
                        return r;
                vmnet_mac(spec->name, mac);
                cfg.net.tap = VMNET_TAP;
                cfg.net.mac = mac;
                snprintf(addr, sizeof(addr), "%s/%d", run->ip, run->prefix_len);
                cfg.ip.addr = addr;
                cfg.ip.gw = run->gateway;
                for (size_t i = 0; i < run->n_dns && i < VM_MAX_DNS; i++)
                        cfg.ip.dns[cfg.ip.n_dns++] = run->dns[i];
        }
        vm_config_use_state_paths(&cfg, &paths);
        pthread_mutex_lock(&d->lock);
        uint32_t cid = d->vsock ? cid_allocate(d) : 0;
        if (cid) {
                snprintf(s, sizeof(s), "%u\n", cid);
                r = put_file(dir, "cid", s, err);
                track_locked(d, spec->name, 0); /* reserves the CID until the pid is known */
        }
        pthread_mutex_unlock(&d->lock);
        cfg.vsock_cid = cid;
        char shape[96];
        snprintf(shape, sizeof(shape), "%u %u %llu\n", cfg.cpus, cfg.memory_mib, (unsigned long long)root.bytes);
        if (r < 0 || (r = put_file(dir, "accel", accel == VM_ACCEL_KVM ? "kvm\n" : "tcg\n", err)) < 0 ||
            (r = put_file(dir, "shape", shape, err)) < 0) {
                untrack(d, spec->name); /* the CID reservation */
                return r;
        }

        char cg[PATH_MAX] = "";
        if (d->cgroup_root[0]) {
                cgroup_enable_controllers(d->cgroup_root);
                snprintf(cg, sizeof(cg), "%s/%s", d->cgroup_root, spec->name);
                if (mkdir_p(cg, 0755) < 0) {
                        log_warn("microvm: %s: cgroup %s: %s", spec->name, cg, strerror(errno));
                        cg[0] = '\0';
                }
        }
        int console = -1;
        if ((r = spawn_log_writer(d, run->log_path, dir, &console, err)) < 0) {
                untrack(d, spec->name);
                return r;
        }
        cfg.console_fd = console;
        struct vm_start_opts so = {.state_dir = dir, .generation = run->generation,
                                   .cgroup_dir = cg[0] ? cg : NULL, .netns_path = run->netns_path};
        pid_t qpid = 0;
        r = vm_start(&cfg, &so, &qpid, err);
        close(console);
        if (r < 0) {
                untrack(d, spec->name);
                return r;
        }
        track(d, spec->name, qpid);
        *pid = (uint32_t)qpid;
        log_info("microvm: %s: QEMU pid %d started (generation %llu)", spec->name, (int)qpid,
                 (unsigned long long)run->generation);
        /* crash tests: CAPSULE_FAULT=microvm-started-NAME kills us with this VM just started */
        char point[96];
        snprintf(point, sizeof(point), "microvm-started-%s", spec->name);
        fault_point(point);
        return 0;
}

/* ---- stop, remove, list ----------------------------------------------------------------- */

#define GUEST_CONNECT_TIMEOUT_S 15

struct rpc_client *vmd_guest_client(struct vmd *d, const char *name, struct cap_error *err)
{
        char dir[PATH_MAX], s[32];
        state_dir(d, name, dir, sizeof(dir));
        if (!d->vsock || !get_file(dir, "cid", s, sizeof(s)) || atoi(s) < 3) {
                cap_error_set(err, -ENOTSUP, CAP_FAILED_PRECONDITION,
                              "microVM %s has no guest channel (this host has no /dev/vhost-vsock)", name);
                return NULL;
        }
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                cap_error_errno(err, -errno, "vsock socket");
                return NULL;
        }
        struct sockaddr_vm sa = {.svm_family = AF_VSOCK, .svm_cid = (unsigned)atoi(s),
                                 .svm_port = GUEST_VSOCK_PORT};
        /* The kernel gives up on a vsock connect after 2 s, which a busy guest under TCG (nested,
         * on a loaded host) misses: e2e saw exec fail with ETIMEDOUT right after one succeeded.
         * A gone VM or a closed port still fails at once (reset); only a slow guest waits. */
        struct timeval tv = {.tv_sec = GUEST_CONNECT_TIMEOUT_S};
        if (setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof(tv)) < 0)
                log_warn("microvm: %s: vsock connect timeout: %s", name, strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int e = -errno;
                close(fd);
                cap_error_errno(err, e, "microVM %s: connect to its guest agent (vsock %s:%d)", name, s,
                                GUEST_VSOCK_PORT);
                err->status = CAP_UNAVAILABLE;
                return NULL;
        }
        return rpc_client_new_fd(fd, NULL, err);
}

static void guest_stop(struct vmd *d, const char *name, int grace_ms)
{
        struct cap_error err = {0};
        struct rpc_client *c = vmd_guest_client(d, name, &err);
        if (!c)
                return;
        Capsule__Guest__V1__StopRequest req = CAPSULE__GUEST__V1__STOP_REQUEST__INIT;
        req.grace_seconds = (uint32_t)((grace_ms + 999) / 1000);
        ProtobufCMessage *resp = NULL;
        if (rpc_unary(c, "/capsule.guest.v1.Guest/Stop", &req.base,
                      &capsule__guest__v1__stop_response__descriptor, &resp, grace_ms + 5000, &err) < 0)
                log_warn("microvm: %s: guest stop: %s", name, err.msg);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        rpc_client_free(c);
}

int vmd_stop(struct vmd *d, const char *name, int grace_ms, struct cap_error *err)
{
        char dir[PATH_MAX];
        state_dir(d, name, dir, sizeof(dir));
        pid_t pid;
        if (vm_adopt(dir, &pid, NULL, 0, &(struct cap_error){0}) < 0)
                return 0;
        if (d->vsock && grace_ms > 0) { /* grace 0 (forced): QEMU quits at once */
                guest_stop(d, name, grace_ms);
                vm_pid_wait_exit(pid, 5000); /* the guest powers off once the workload ended */
        }
        int r = vm_stop(dir, 2000, err);
        if (r == 0)
                record_exit(dir);
        return r;
}

int vmd_remove(struct vmd *d, const char *name, struct cap_error *err)
{
        char dir[PATH_MAX];
        state_dir(d, name, dir, sizeof(dir));
        int r = vmd_stop(d, name, 2000, err);
        if (r < 0)
                return r;
        untrack(d, name);
        char s[32];
        if (get_file(dir, "logwriter.pid", s, sizeof(s)) && atoi(s) > 0)
                vm_pid_wait_exit((pid_t)atoi(s), 2000);
        /* the disk first: a crash after it leaves the state directory, and the next remove */
        if ((r = d->rootdisk->ops->vm_disk_remove(d->rootdisk, name, dir, err)) < 0)
                return cap_error_prefix(err, "remove microVM %s", name);
        if (access(dir, F_OK) == 0 && (r = vm_remove(dir, err)) < 0)
                return r;
        if (d->cgroup_root[0]) {
                char cg[PATH_MAX];
                snprintf(cg, sizeof(cg), "%s/%s", d->cgroup_root, name);
                if (rmdir(cg) < 0 && errno != ENOENT)
                        log_warn("microvm: %s: remove cgroup %s: %s", name, cg, strerror(errno));
        }
        return 0;
}

struct list_ctx {
        struct vmd *d;
        int (*fn)(const struct vmd_workload *w, void *ud);
        void *ud;
};

static int list_one(const struct vm_info *vi, void *ud)
{
        struct list_ctx *lc = ud;
        char accel[16] = "", cid[32] = "", exit_s[64] = "", vols[VM_MAX_DISKS * 64] = "";
        get_file(vi->state_dir, "accel", accel, sizeof(accel));
        get_file(vi->state_dir, "volumes", vols, sizeof(vols));
        get_file(vi->state_dir, "cid", cid, sizeof(cid));
        struct vmd_workload w = {.name = vi->name, .generation = vi->generation, .running = vi->running,
                                 .pid = (uint32_t)vi->pid, .accel = accel, .vsock_cid = (uint32_t)atoi(cid),
                                 .volumes = vols};
        if (vi->running) {
                track(lc->d, vi->name, vi->pid); /* adopted: the watcher reports its end */
        } else {
                if (!get_file(vi->state_dir, "exit", exit_s, sizeof(exit_s))) {
                        record_exit(vi->state_dir);
                        get_file(vi->state_dir, "exit", exit_s, sizeof(exit_s));
                }
                long long code = 255, at = 0;
                if (sscanf(exit_s, "%lld %lld", &code, &at) >= 1) {
                        w.exit_code = (int32_t)code;
                        w.exited_at_ns = at;
                } else {
                        w.exit_code = 255;
                }
        }
        return lc->fn(&w, lc->ud);
}

int vmd_list(struct vmd *d, int (*fn)(const struct vmd_workload *w, void *ud), void *ud,
             struct cap_error *err)
{
        struct list_ctx lc = {.d = d, .fn = fn, .ud = ud};
        return vm_list(d->root, list_one, &lc, err);
}

int vmd_describe(struct vmd *d, const char *name, struct vmd_info *out)
{
        char dir[PATH_MAX], shape[96] = "", cid[32] = "";
        state_dir(d, name, dir, sizeof(dir));
        memset(out, 0, sizeof(*out));
        if (!get_file(dir, "accel", out->accel, sizeof(out->accel)))
                return -ENOENT;
        snprintf(out->kernel, sizeof(out->kernel), "%s", d->kernel);
        unsigned cpus = 0, mib = 0;
        unsigned long long disk = 0;
        if (get_file(dir, "shape", shape, sizeof(shape)) && sscanf(shape, "%u %u %llu", &cpus, &mib, &disk) == 3) {
                out->vcpus = cpus;
                out->memory_bytes = (uint64_t)mib << 20;
                out->disk_bytes = disk;
        }
        if (get_file(dir, "cid", cid, sizeof(cid)))
                out->vsock_cid = (uint32_t)atoi(cid);
        char rd[sizeof(out->disk) + sizeof(out->disk_origin) + 64], shared[16] = "";
        if (get_file(dir, "rootdisk", rd, sizeof(rd)) &&
            sscanf(rd, "%15s %15s %255s %255s", out->disk_backend, shared, out->disk, out->disk_origin) == 4)
                out->disk_shared = strcmp(shared, "shared") == 0;
        return 0;
}

/* QEMU processes of ours on this host (by /proc/PID/cmdline's `-name capsule-`), whatever state
 * directories say: what a delete must leave none of. */
static size_t count_qemus(void)
{
        DIR *proc = opendir("/proc");
        size_t n = 0;
        struct dirent *de;
        while (proc && (de = readdir(proc))) {
                if (de->d_name[0] < '1' || de->d_name[0] > '9')
                        continue;
                char path[64], buf[4096];
                snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
                _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
                ssize_t k = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
                if (k <= 0 || !strstr(buf, VM_QEMU_PROGRAM))
                        continue;
                for (ssize_t i = 0; i + 1 < k; i++)
                        if (buf[i] == '\0' && strncmp(buf + i + 1, "capsule-", 8) == 0) {
                                n++;
                                break;
                        }
        }
        if (proc)
                closedir(proc);
        return n;
}

static int count_state(const struct vm_info *vm, void *ud)
{
        size_t *n = ud;
        n[0]++;
        n[1] += vm->running;
        return 0;
}

int vmd_rootdisk_census(struct vmd *d, char *msg, size_t len)
{
        size_t caches = 0, disks = 0, vms[2] = {0, 0};
        struct cap_error err = {0};
        int r = d->rootdisk->ops->census(d->rootdisk, &caches, &disks, &err);
        if (r == 0)
                r = vm_list(d->root, count_state, vms, &err);
        if (r < 0) {
                snprintf(msg, len, "root disks %s (%s): %s", d->rootdisk->name, d->rootdisk->where, err.msg);
                return r;
        }
        size_t q = count_qemus();
        int n = snprintf(msg, len,
                         "root disks %s (%s): %zu image cache%s, %zu VM disk%s; %zu VM state dir%s (%zu running), "
                         "%zu QEMU process%s",
                         d->rootdisk->name, d->rootdisk->where, caches, caches == 1 ? "" : "s", disks,
                         disks == 1 ? "" : "s", vms[0], vms[0] == 1 ? "" : "s", vms[1], q, q == 1 ? "" : "es");
        /* accel: auto's answer for this boot, from the probe's cache (health never probes) */
        char boot_id[64], why[256] = "";
        enum vm_accel acc;
        struct cap_error ignored = {0};
        if (n > 0 && (size_t)n < len) {
                if (d->accel_cache[0] && vm_boot_id(boot_id, sizeof(boot_id), &ignored) == 0 &&
                    vm_accel_cache_read(d->accel_cache, boot_id, &acc, why, sizeof(why)) == 0)
                        snprintf(msg + n, len - (size_t)n, "; accel auto: %s%s%s%s", acc == VM_ACCEL_KVM ? "kvm" : "tcg",
                                 why[0] ? " (" : "", why, why[0] ? ")" : "");
                else
                        snprintf(msg + n, len - (size_t)n,
                                 "; accel auto: not probed yet this boot (the first MicroVM with accel: auto probes)");
        }
        return 0;
}

/* ---- root disk caches of deleted images ------------------------------------------------------ */

struct keyset {
        char (*v)[80];
        size_t n, cap;
};

static int keyset_add(struct keyset *s, const char *key)
{
        if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 16;
                char(*nv)[80] = realloc(s->v, cap * sizeof(*nv));
                if (!nv)
                        return -ENOMEM;
                s->v = nv;
                s->cap = cap;
        }
        snprintf(s->v[s->n++], sizeof(s->v[0]), "%s", key);
        return 0;
}

static bool keyset_has(const struct keyset *s, const char *key)
{
        for (size_t i = 0; i < s->n; i++)
                if (strcmp(s->v[i], key) == 0)
                        return true;
        return false;
}

/* The caches VM state directories claim: their "image" file, else (a directory from before
 * that file) the origin in "rootdisk". Every directory counts, running or not: an exited VM of
 * a defined workload starts again from the same cache. */
static int claimed_keys(struct vmd *d, struct keyset *out)
{
        char vms[PATH_MAX];
        snprintf(vms, sizeof(vms), "%s/vms", d->root);
        DIR *dir = opendir(vms);
        if (!dir)
                return errno == ENOENT ? 0 : -errno;
        int r = 0;
        struct dirent *de;
        while (r == 0 && (de = readdir(dir))) {
                if (de->d_name[0] == '.')
                        continue;
                char sd[PATH_MAX], line[600], key[80], a[16], b[16], c[256], origin[256];
                if ((size_t)snprintf(sd, sizeof(sd), "%s/%s", vms, de->d_name) >= sizeof(sd))
                        continue;
                if (get_file(sd, VMD_IMAGE_FILE, line, sizeof(line)) &&
                    strncmp(line, "sha256:", 7) == 0 && vm_rootdisk_key_ok(line + 7))
                        r = keyset_add(out, line + 7);
                else if (get_file(sd, "rootdisk", line, sizeof(line)) &&
                         sscanf(line, "%15s %15s %255s %255s", a, b, c, origin) == 4 &&
                         vm_rootdisk_origin_key(origin, key, sizeof(key)) == 0)
                        r = keyset_add(out, key);
        }
        closedir(dir);
        return r;
}

struct cache_row {
        char key[72];
        uint64_t bytes;
};

struct cache_rows {
        struct cache_row *v;
        size_t n, cap;
};

static int collect_list_one(const char *key, uint64_t bytes, void *ud)
{
        struct cache_rows *rows = ud;
        if (rows->n == rows->cap) {
                size_t cap = rows->cap ? rows->cap * 2 : 16;
                struct cache_row *nv = realloc(rows->v, cap * sizeof(*nv));
                if (!nv)
                        return -ENOMEM;
                rows->v = nv;
                rows->cap = cap;
        }
        struct cache_row *row = &rows->v[rows->n++];
        snprintf(row->key, sizeof(row->key), "%s", key);
        row->bytes = bytes;
        return 0;
}

int vmd_rootdisk_collect(struct vmd *d, const char *const *keep, size_t n_keep, const char *why,
                         vmd_cache_gone_fn fn, void *ud, struct cap_error *err)
{
        struct vm_rootdisk *rd = d->rootdisk;
        struct keyset claimed = {0};
        struct cache_rows caches = {0};
        int removed = 0;
        pthread_mutex_lock(&d->ref_lock);
        int r = claimed_keys(d, &claimed);
        if (r < 0)
                cap_error_errno(err, r, "root disks: read the claims under %s/vms", d->root);
        else
                r = rd->ops->cache_list(rd, collect_list_one, &caches, err);
        for (size_t i = 0; r >= 0 && i < caches.n; i++) {
                const char *key = caches.v[i].key;
                uint64_t bytes = caches.v[i].bytes;
                bool wanted = keyset_has(&claimed, key);
                for (size_t k = 0; k < n_keep && !wanted; k++) {
                        const char *h = strchr(keep[k], ':');
                        wanted = strcmp(h ? h + 1 : keep[k], key) == 0;
                }
                if (wanted)
                        continue;
                char what[300] = "";
                struct cap_error e = {0};
                if (rd->ops->cache_remove(rd, key, what, sizeof(what), &e) < 0) {
                        /* the others still go; the next collect tries this one again */
                        log_warn("microvm: root disks: remove the cache of sha256:%s: %s", key,
                                 e.msg);
                        continue;
                }
                removed++;
                log_info("microvm: root disks: removed the cache of sha256:%s (%s, %" PRIu64
                         " MiB): no image and no microVM uses it (%s)",
                         key, what, bytes >> 20, why);
                struct vmd_cache_gone g = {
                    .key = key, .what = what, .bytes = bytes, .backend = rd->name, .why = why};
                if (fn)
                        fn(&g, ud);
        }
        pthread_mutex_unlock(&d->ref_lock);
        free(claimed.v);
        free(caches.v);
        return r < 0 ? r : removed;
}
