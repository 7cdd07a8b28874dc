/* `capsuled serve`: the control plane. Loads the machine config, opens the store, serves the
 * capsule.v1 API over mutual TLS and runs until SIGTERM/SIGINT, then shuts down cleanly.
 * On a Capsule PID 1 starts it with --os; on a development host it runs alone ("host mode"). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../capsuled.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "containerd/driver.h"
#include "metrics/http.h"
#include "containerd/spec.h"
#include "containerd/workload_driver.h"
#include "driver/microvm.h"
#include "microvm/driver.h"
#include "reconcile/reconciler.h"
#include "serve.h"
#include "liveness.h"
#include "net/cni.h"
#include "volume/service.h"
#include "volume/volume.h"
#include "serve/events.h"

/* The thin pool PID 1 makes on the PERM partition (init/perm.c). */
#define VM_ROOTDISK_VG "capsule"
#define VM_ROOTDISK_POOL "pool"

static const char usage[] =
    "usage: capsuled serve --root DIR --machine-config FILE [options]\n\n"
    "  --root DIR              state directory (store, logs, volumes); created if missing\n"
    "  --machine-config FILE   machine.yaml written by `capsulectl gen config`\n"
    "  --listen ADDR           API address, host:port or unix:/path (default: the machine\n"
    "                          config's api.listen, else 0.0.0.0:50000); port 0 picks one\n"
    "  --containerd SOCK       containerd's socket (enables the container driver)\n"
    "  --port-file FILE        write the bound TCP port to FILE once listening\n"
    "  --metrics-listen ADDR   metrics endpoint address, IP:PORT (default: the machine\n"
    "                          config's metrics.listen, else 0.0.0.0:50001); port 0 picks one;\n"
    "                          serves it even when the config says metrics.enabled: false\n"
    "  --metrics-port-file FILE  write the metrics endpoint's bound port to FILE\n"
    "  --os                    running on a Capsule under PID 1 (enables reboot, perm checks;\n"
    "                          implies --stop-workloads-on-exit 10000)\n"
    "  --stop-workloads-on-exit GRACE_MS\n"
    "                          on SIGTERM/SIGINT, stop every workload at once (SIGTERM,\n"
    "                          GRACE_MS, SIGKILL) before exiting, as for a poweroff or reboot;\n"
    "                          0 (the default without --os): leave them running\n"
    "  --vm-kernel FILE        guest kernel for microVMs (default on a Capsule:\n"
    "                          /usr/lib/capsule/vmlinuz)\n"
    "  --vm-initrd FILE        guest initramfs with capsule-guest (default on a Capsule:\n"
    "                          /usr/lib/capsule/guest-initramfs.img)\n"
    "  --log-level LEVEL       debug, info (default), warn or error\n"
    "  --update-sysroot DIR    tests only: run A/B updates against DIR standing in for the\n"
    "                          machine (DIR/esp, DIR/proc/cmdline, DIR/efivars/, DIR/version,\n"
    "                          DIR/dev/disk/by-partlabel/slot_a|slot_b; see serve/updates.c)\n";

struct serve_opts {
        const char *root, *machine_config, *listen, *containerd, *port_file;
        const char *metrics_listen, *metrics_port_file;
        const char *vm_kernel, *vm_initrd;
        const char *update_sysroot;
        bool os_mode;
        int stop_on_exit_ms; /* -1: the default (10000 with --os, else 0) */
        enum log_level level;
};

static int parse_opts(int argc, char **argv, struct serve_opts *o)
{
        static const struct option opts[] = {
            {"root", required_argument, NULL, 'r'},
            {"machine-config", required_argument, NULL, 'm'},
            {"listen", required_argument, NULL, 'l'},
            {"containerd", required_argument, NULL, 'c'},
            {"port-file", required_argument, NULL, 'p'},
            {"metrics-listen", required_argument, NULL, 'M'},
            {"metrics-port-file", required_argument, NULL, 'P'},
            {"os", no_argument, NULL, 'O'},
            {"log-level", required_argument, NULL, 'L'},
            {"vm-kernel", required_argument, NULL, 'K'},
            {"vm-initrd", required_argument, NULL, 'I'},
            {"update-sysroot", required_argument, NULL, 'U'},
            {"stop-workloads-on-exit", required_argument, NULL, 'S'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        int c;
        o->level = LOG_LVL_INFO;
        o->stop_on_exit_ms = -1;
        optind = 0;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 'r':
                        o->root = optarg;
                        break;
                case 'm':
                        o->machine_config = optarg;
                        break;
                case 'l':
                        o->listen = optarg;
                        break;
                case 'c':
                        o->containerd = optarg;
                        break;
                case 'p':
                        o->port_file = optarg;
                        break;
                case 'M':
                        o->metrics_listen = optarg;
                        break;
                case 'P':
                        o->metrics_port_file = optarg;
                        break;
                case 'O':
                        o->os_mode = true;
                        break;
                case 'K':
                        o->vm_kernel = optarg;
                        break;
                case 'I':
                        o->vm_initrd = optarg;
                        break;
                case 'U':
                        o->update_sysroot = optarg;
                        break;
                case 'S': {
                        char *end;
                        errno = 0;
                        long v = strtol(optarg, &end, 10);
                        if (end == optarg || *end || errno || v < 0 || v > RECONCILE_STOP_GRACE_MAX_MS) {
                                fprintf(stderr,
                                        "capsuled serve: --stop-workloads-on-exit %s: expected a grace "
                                        "period in ms from 0 to %d\n",
                                        optarg, RECONCILE_STOP_GRACE_MAX_MS);
                                return -1;
                        }
                        o->stop_on_exit_ms = (int)v;
                        break;
                }
                case 'L':
                        if (strcmp(optarg, "debug") == 0)
                                o->level = LOG_LVL_DEBUG;
                        else if (strcmp(optarg, "info") == 0)
                                o->level = LOG_LVL_INFO;
                        else if (strcmp(optarg, "warn") == 0)
                                o->level = LOG_LVL_WARN;
                        else if (strcmp(optarg, "error") == 0)
                                o->level = LOG_LVL_ERROR;
                        else {
                                fprintf(stderr,
                                        "capsuled serve: --log-level %s: expected debug, info, "
                                        "warn or error\n",
                                        optarg);
                                return -1;
                        }
                        break;
                case 'h':
                        fputs(usage, stdout);
                        exit(0);
                default:
                        fputs(usage, stderr);
                        return -1;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "capsuled serve: unexpected argument \"%s\"\n%s", argv[optind],
                        usage);
                return -1;
        }
        if (!o->root || !o->machine_config) {
                fprintf(stderr, "capsuled serve: --root and --machine-config are required\n%s",
                        usage);
                return -1;
        }
        return 0;
}

/* Why a kind has no driver: the reason a workload of that kind fails with. */
static void driver_unavailable(struct serve_ctx *ctx, Capsule__V1__WorkloadKind kind,
                               const char *why)
{
        int i = driver_kind_index(kind);
        snprintf(ctx->drivers.unavailable[i], sizeof(ctx->drivers.unavailable[i]), "%s", why);
}

/* The container driver, over containerd's connection, when there is one. */
static int containers_start(struct serve_ctx *ctx, struct cap_error *err)
{
        if (!ctx->image_store) {
                driver_unavailable(ctx, CAPSULE__V1__WORKLOAD_KIND__CONTAINER,
                                   "no container runtime: capsuled serve was started without "
                                   "--containerd");
                return 0;
        }
        struct workload_driver *d = containerd_driver_new(ctx->image_store, ctx->log_writer, err);
        if (!d)
                return -1;
        ctx->drivers.by_kind[driver_kind_index(CAPSULE__V1__WORKLOAD_KIND__CONTAINER)] = d;
        return 0;
}

/* The microVM driver, or NULL with why filled. */
static struct workload_driver *vms_try_start(struct serve_ctx *ctx, const struct serve_opts *o, char *why,
                                             size_t why_len)
{
        struct cap_error err = {0};
        if (!ctx->image_store) {
                snprintf(why, why_len, "no image store: capsuled serve was started without --containerd");
                return NULL;
        }
        const char *kernel = o->vm_kernel ? o->vm_kernel : (o->os_mode ? "/usr/lib/capsule/vmlinuz" : NULL);
        const char *initrd = o->vm_initrd ? o->vm_initrd
                                          : (o->os_mode ? "/usr/lib/capsule/guest-initramfs.img" : NULL);
        if (!kernel || !initrd) {
                snprintf(why, why_len, "no guest kernel: start capsuled serve with --vm-kernel and --vm-initrd");
                return NULL;
        }
        _cleanup_free_ char *accel_cache = NULL;
        if (asprintf(&accel_cache, "%s/accel-probe", o->os_mode ? "/run/capsule" : o->root) < 0) {
                snprintf(why, why_len, "out of memory");
                return NULL;
        }
        bool v2 = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0;
        struct vmd_config vc = {
            .root = o->root,
            .kernel = kernel,
            .initrd = initrd,
            .log_writer = ctx->log_writer,
            .accel_cache = accel_cache,
            .cgroup_root = v2 ? "/sys/fs/cgroup" SPEC_CGROUP_PARENT : NULL,
            /* on a Capsule: thin LVs in the pool PID 1 made for workload storage (init/perm.c),
             * beside the volumes; in host mode (or without that pool): files under --root */
            .rootdisk_vg = o->os_mode ? VM_ROOTDISK_VG : NULL,
            .rootdisk_pool = o->os_mode ? VM_ROOTDISK_POOL : NULL,
        };
        struct workload_driver *d = microvm_driver_new(&vc, ctx->image_store, &err);
        if (!d) {
                snprintf(why, why_len, "%s", err.msg);
                log_warn("microVMs unavailable: %s", err.msg);
        }
        return d;
}

/* The microVM driver, when this capsule can run microVMs: containerd (images), QEMU, a guest
 * kernel and initramfs. Otherwise the kind has no driver and says why (MicroVM workloads then
 * fail with that reason). */
static void vms_start(struct serve_ctx *ctx, const struct serve_opts *o)
{
        char why[512] = "";
        struct workload_driver *d = vms_try_start(ctx, o, why, sizeof(why));
        if (d) {
                ctx->drivers.by_kind[driver_kind_index(CAPSULE__V1__WORKLOAD_KIND__MICROVM)] = d;
                return;
        }
        char msg[sizeof(why) + 64];
        snprintf(msg, sizeof(msg), "MicroVM workloads are not available on this capsule: %s", why);
        driver_unavailable(ctx, CAPSULE__V1__WORKLOAD_KIND__MICROVM, msg);
}

struct claim_ctx {
        struct volumes *v;
};

static int claim_one(const struct driver_workload *w, void *ud)
{
        struct claim_ctx *c = ud;
        if (w->state != DRIVER_STATE_RUNNING || !w->disk_volumes)
                return 0;
        _cleanup_free_ char *list = strdup(w->disk_volumes);
        char *save = NULL;
        for (char *t = list ? strtok_r(list, " \n", &save) : NULL; t; t = strtok_r(NULL, " \n", &save))
                if (volume_claim_disk(c->v, t, w->name) < 0)
                        return -ENOMEM;
        return 0;
}

/* Before volume recovery: the volumes that running workloads (microVMs adopted after a restart)
 * hold as their disks, so that recovery does not mount them on this host under the VM. */
static void claim_disk_volumes(struct volumes *v, void *ud)
{
        struct driver_table *t = ud;
        struct claim_ctx c = {.v = v};
        for (int i = 0; i < DRIVER_KINDS; i++) {
                struct cap_error err = {0};
                if (t->by_kind[i] && t->by_kind[i]->ops->list(t->by_kind[i], claim_one, &c, &err) < 0)
                        log_error("volumes: listing running workloads: %s", err.msg);
        }
}

/* Writes the port atomically so a reader never sees a partial number. */
static int write_port_file(const char *path, int port, struct cap_error *err)
{
        _cleanup_free_ char *tmp = NULL;
        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        FILE *f = fopen(tmp, "we");
        if (!f)
                return cap_error_errno(err, -errno, "port file %s", tmp);
        fprintf(f, "%d\n", port);
        if (fclose(f) != 0 || rename(tmp, path) < 0)
                return cap_error_errno(err, -errno, "port file %s", path);
        return 0;
}

/* The program containerd's shim runs as each task's log writer: capsule-log-writer beside this
 * binary (build tree) or in /usr/libexec/capsule (image), which starts much faster than
 * capsuled; else capsuled itself (`capsuled log-writer`). */
static void log_writer_find(const char *self_exe, char *buf, size_t len)
{
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", self_exe);
        char *slash = strrchr(dir, '/');
        if (slash)
                *slash = '\0';
        snprintf(buf, len, "%s/capsule-log-writer", dir);
        if (access(buf, X_OK) == 0)
                return;
        snprintf(buf, len, "/usr/libexec/capsule/log-writer");
        if (access(buf, X_OK) == 0)
                return;
        snprintf(buf, len, "%s", self_exe);
}

void serve_reserve_port(struct serve_ctx *ctx, const char *addr, int port, const char *what)
{
        if (addr) {
                const char *colon = strrchr(addr, ':');
                if (strncmp(addr, "unix:", 5) == 0 || !colon)
                        return;
                port = atoi(colon + 1);
        }
        size_t n = atomic_load(&ctx->n_reserved);
        if (port <= 0 || port > 65535 || n >= SERVE_MAX_RESERVED)
                return;
        for (size_t i = 0; i < n; i++)
                if (ctx->reserved[i].port == (uint32_t)port)
                        return;
        ctx->reserved[n] = (struct manifest_reserved_port){(uint32_t)port, "tcp", what};
        atomic_store(&ctx->n_reserved, n + 1);
}

/* metrics/http.c's render callback: the page serve/metrics.c writes. */
static int metrics_render(void *ud, char **text, size_t *len)
{
        struct cap_error err = {0};
        int r = serve_metrics_render(ud, text, len, &err);
        if (r < 0)
                log_error("%s", err.msg);
        return r;
}

/* The metrics endpoint, unless the machine config turns it off. */
/* The metrics endpoint's revocation check: pki.revoked of the live machine config. */
static bool metrics_revoked(void *ud, const char *serial)
{
        struct serve_ctx *ctx = ud;
        struct serve_config_ref *live = serve_config_get(ctx);
        bool r = machine_serial_revoked(&live->c, serial);
        serve_config_put(ctx, live);
        return r;
}

static int metrics_start(struct serve_ctx *ctx, const struct serve_opts *o, struct cap_error *err)
{
        if (ctx->mcfg.metrics_off && !o->metrics_listen) {
                log_info("metrics endpoint off (machine config metrics.enabled: false)");
                return 0;
        }
        const char *listen = o->metrics_listen ? o->metrics_listen : ctx->mcfg.metrics_listen;
        serve_reserve_port(ctx, ctx->mcfg.metrics_listen, 0, "the capsule's metrics endpoint");
        serve_reserve_port(ctx, listen, 0, "the capsule's metrics endpoint");
        struct metrics_http_opts mo = {
            .listen = listen,
            .insecure_http = ctx->mcfg.metrics_insecure_http,
            .ca_pem = ctx->mcfg.ca_pem,
            .cert_pem = ctx->mcfg.cert_pem,
            .key_pem = ctx->mcfg.key_pem,
            .render = metrics_render,
            .render_ud = ctx,
            .revoked = metrics_revoked,
            .revoked_ud = ctx,
        };
        int port = 0;
        ctx->metrics = metrics_http_start(&mo, &port, err);
        if (!ctx->metrics)
                return cap_error_prefix(err, "metrics endpoint %s", listen);
        serve_reserve_port(ctx, NULL, port, "the capsule's metrics endpoint");
        if (o->metrics_port_file && write_port_file(o->metrics_port_file, port, err) < 0)
                return err->code;
        log_info("metrics addr=%s port=%d scheme=%s", listen, port,
                 mo.insecure_http ? "http" : "https");
        return 0;
}

/* When this process started, in ms since the kernel started (/proc/self/stat's starttime is in
 * clock ticks since boot): the gap to run()'s start is exec and loading the libraries. */
static int64_t process_start_ms(void)
{
        char buf[1024];
        _cleanup_close_ int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
        if (n <= 0)
                return -1;
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        unsigned long long start = 0;
        /* after ") ": state is field 3; starttime is field 22 */
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
                                "%*d %*d %*d %llu", &start) != 1)
                return -1;
        long hz = sysconf(_SC_CLK_TCK);
        return hz > 0 ? (int64_t)(start * 1000ULL / (unsigned long long)hz) : -1;
}

static void boot_phase(struct serve_ctx *ctx, const char *name, int64_t *since)
{
        int64_t now = timeline_now_ms();
        timeline_add(&ctx->boot, name, *since, now);
        *since = now;
}

/* The fd limit: every client connection, containerd stream, log file and FIFO is one, and the
 * kernel's default soft limit (1024) let ~1100 idle TCP connections stop serve from opening its
 * own files. Raised to SERVE_NOFILE (the hard limit too, as root); connections that never finish
 * their TLS handshake are closed after RPC_HANDSHAKE_TIMEOUT_MS, so holding many takes a steady
 * stream of new ones. */
#define SERVE_NOFILE 65536

static void raise_nofile(void)
{
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        rlim_t want = SERVE_NOFILE;
        if (rl.rlim_max < want) {
                struct rlimit up = {want, want};
                if (setrlimit(RLIMIT_NOFILE, &up) == 0)
                        return;
                want = rl.rlim_max; /* not root: as far as the hard limit allows */
        }
        if (rl.rlim_cur < want) {
                rl.rlim_cur = want;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        log_warn("RLIMIT_NOFILE %llu: %s", (unsigned long long)want,
                                 strerror(errno));
        }
}

#define CONTAINERD_WAIT_MS 30000

/* Waits up to timeout_ms for path to exist; the ms waited, or -ETIMEDOUT. */
static int wait_for_path(const char *path, int timeout_ms)
{
        for (int waited = 0;; waited += 20) {
                if (access(path, F_OK) == 0)
                        return waited;
                if (waited >= timeout_ms)
                        return -ETIMEDOUT;
                usleep(20 * 1000);
        }
}

static int run(struct serve_opts *o)
{
        struct serve_ctx ctx = {
            .root = o->root,
            .containerd_sock = o->containerd,
            .os_mode = o->os_mode,
        };
        struct cap_error err = {0};
        int rc = 1;
        clock_gettime(CLOCK_MONOTONIC, &ctx.started);
        int64_t mark = timeline_now_ms(), exec_ms = process_start_ms();
        if (exec_ms >= 0 && exec_ms <= mark)
                timeline_add(&ctx.boot, "serve: exec, load libraries", exec_ms, mark);

        /* Block the shutdown signals in every thread; the main thread waits for them. */
        sigset_t sigs;
        sigemptyset(&sigs);
        sigaddset(&sigs, SIGTERM);
        sigaddset(&sigs, SIGINT);
        pthread_sigmask(SIG_BLOCK, &sigs, NULL);
        signal(SIGPIPE, SIG_IGN);
        raise_nofile();

        if (machine_config_load(o->machine_config, &ctx.mcfg, &err) < 0 ||
            serve_config_init(&ctx, o->machine_config, &err) < 0) {
                log_error("machine config: %s", err.msg);
                machine_config_free(&ctx.mcfg);
                return 1;
        }
        if (mkdir(o->root, 0700) < 0 && errno != EEXIST) {
                log_error("root %s: %s", o->root, strerror(errno));
                goto out;
        }
        if (store_open(o->root, &ctx.store, &err) < 0) {
                log_error("%s", err.msg);
                goto out;
        }
        /* from here PID 1 hears that serve lives (serve/liveness.c), through the slow recovery too */
        ctx.liveness = liveness_start(ctx.store);
        ssize_t xl = readlink("/proc/self/exe", ctx.self_exe, sizeof(ctx.self_exe) - 1);
        if (xl <= 0) {
                log_error("readlink /proc/self/exe: %s", strerror(errno));
                goto out;
        }
        ctx.self_exe[xl] = '\0';
        log_writer_find(ctx.self_exe, ctx.log_writer, sizeof(ctx.log_writer));
        _cleanup_free_ char *logdir = NULL;
        if (asprintf(&logdir, "%s/logs", o->root) < 0 ||
            (mkdir(logdir, 0700) < 0 && errno != EEXIST)) {
                log_error("logs directory under %s: %s", o->root, strerror(errno));
                goto out;
        }
        ctx.events = events_new();
        if (!ctx.events) {
                log_error("out of memory");
                goto out;
        }
        if (o->containerd && o->os_mode) {
                /* PID 1 starts containerd and serve together: serve's exec, libraries, config
                 * and store overlap containerd's start, and serve waits here for its socket */
                boot_phase(&ctx, "serve: config, store", &mark);
                int waited = wait_for_path(o->containerd, CONTAINERD_WAIT_MS);
                if (waited < 0)
                        log_warn("containerd: %s still missing after %d s; trying anyway",
                                 o->containerd, CONTAINERD_WAIT_MS / 1000);
                boot_phase(&ctx, "serve: waits for containerd.sock", &mark);
        }
        if (o->containerd) {
                ctx.image_store = ctrd_connect(o->containerd, &err);
                if (!ctx.image_store) {
                        log_error("containerd %s: %s", o->containerd, err.msg);
                        goto out;
                }
        }
        if (containers_start(&ctx, &err) < 0) {
                log_error("containers: %s", err.msg);
                goto out;
        }
        serve_debug_cleanup(&ctx);
        boot_phase(&ctx, o->os_mode ? "serve: containerd" : "serve: config, store, containerd", &mark);
        /* The microVM driver before volumes: the VMs that kept running hold their volumes. */
        vms_start(&ctx, o);
        serve_rootcache_start(&ctx);
        /* Volumes and networking (volume/, net/): before the reconciler, which uses them. */
        volumes_start(o->root, o->os_mode, ctx.store, &ctx.volumes, claim_disk_volumes, &ctx.drivers);
        boot_phase(&ctx, "serve: microVMs, volumes", &mark);
        ctx.images = (struct images_env){.root = o->root,
                                         .ctrd = ctx.image_store,
                                         .store = ctx.store,
                                         .registries_get = serve_registries_get,
                                         .registries_put = serve_registries_put,
                                         .registries_ud = &ctx,
                                         .deleted = serve_image_deleted,
                                         .deleted_ud = &ctx};
        ctx.cni = cni_config_new(o->root, o->os_mode, &err);
        if (!ctx.cni) {
                log_error("networking: %s", err.msg);
                goto out;
        }
        ctx.rec = reconciler_new(&ctx, &err);
        if (!ctx.rec || reconciler_start(ctx.rec, &err) < 0) {
                log_error("reconciler: %s", err.msg);
                goto out;
        }
        boot_phase(&ctx, "serve: networking, reconciler", &mark);
        struct rpc_server_opts sopts = {.authorize = serve_authorize, .authorize_ud = &ctx};
        ctx.server = rpc_server_new(&sopts, &err);
        if (!ctx.server || serve_register_services(&ctx, ctx.server, &err) < 0) {
                log_error("server: %s", err.msg);
                goto out;
        }
        const char *listen =
            o->listen ? o->listen : (ctx.mcfg.listen ? ctx.mcfg.listen : "0.0.0.0:50000");
        struct rpc_tls tls = {
            .ca_pem = ctx.mcfg.ca_pem,
            .cert_pem = ctx.mcfg.cert_pem,
            .key_pem = ctx.mcfg.key_pem,
            .require_client_cert = true,
        };
        int port = rpc_server_listen(ctx.server, listen, &tls, &err);
        if (port < 0) {
                log_error("listen %s: %s", listen, err.msg);
                goto out;
        }
        /* the configured ports are the capsule's even when a test binds elsewhere */
        serve_reserve_port(&ctx, ctx.mcfg.listen ? ctx.mcfg.listen : "0.0.0.0:50000", 0,
                           "the capsule API");
        serve_reserve_port(&ctx, listen, 0, "the capsule API");
        if (strncmp(listen, "unix:", 5) != 0)
                serve_reserve_port(&ctx, NULL, port, "the capsule API");
        /* the update engine is ready before the API answers; it decides a tentative boot only
         * once the API answers (below) */
        if (o->update_sysroot)
                snprintf(ctx.update_sysroot, sizeof(ctx.update_sysroot), "%s", o->update_sysroot);
        serve_updates_start(&ctx);
        /* the last phase before the API answers (Health reads ctx.boot from then on) */
        boot_phase(&ctx, "serve: API answering", &mark);
        if (rpc_server_start(ctx.server, &err) < 0) {
                log_error("start: %s", err.msg);
                goto out;
        }
        liveness_watch_rpc(ctx.liveness, ctx.server);
        /* not fatal: the API matters more, and through it the config can be fixed */
        if (metrics_start(&ctx, o, &err) < 0) {
                log_error("%s; serving the API without it", err.msg);
                err = (struct cap_error){0};
        }
        /* the API answers from here on: say so first (capsule-up waits for this line) */
        log_info("serving addr=%s port=%d root=%s mode=%s version=%s", listen, port, o->root,
                 o->os_mode ? "os" : "host", CAPSULE_VERSION);
        /* a tentative boot's checks need the API and the reconciler */
        serve_updates_run(&ctx);
        if (o->port_file && write_port_file(o->port_file, port, &err) < 0) {
                log_error("%s", err.msg);
                goto out;
        }
        /* root disk caches no image and no microVM needs any more (not on the boot's path) */
        serve_rootcache_sweep(&ctx);

        int sig = 0;
        sigwait(&sigs, &sig);
        log_info("shutting down signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        rc = 0;
        int stop_ms = o->stop_on_exit_ms >= 0 ? o->stop_on_exit_ms : o->os_mode ? RECONCILE_STOP_GRACE_MS : 0;
        if (stop_ms > 0) {
                /* a poweroff or reboot: every workload at once, one grace period in all */
                struct timespec t0, t1;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                int n = reconciler_stop_everything(ctx.rec, stop_ms);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                log_info("stopped workloads=%d grace_ms=%d took_ms=%lld", n, stop_ms,
                         (long long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
        }
out:
        liveness_stop(ctx.liveness);
        metrics_http_stop(ctx.metrics);
        rpc_server_shutdown(ctx.server, 2000);
        serve_updates_stop(&ctx);
        reconciler_free(ctx.rec);
        driver_table_free(&ctx.drivers);
        ctrd_free(ctx.image_store);
        events_free(ctx.events);
        volumes_close(ctx.volumes);
        cni_config_destroy(ctx.cni);
        store_close(ctx.store);
        serve_config_fini(&ctx);
        machine_config_free(&ctx.mcfg);
        if (rc == 0)
                log_info("stopped");
        return rc;
}

int serve_main(int argc, char **argv)
{
        struct serve_opts o = {0};
        log_set_component("serve");
        if (parse_opts(argc, argv, &o) < 0)
                return 2;
        log_set_level(o.level);
        return run(&o);
}
