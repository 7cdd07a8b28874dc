/* capsule.v1.System handlers: Version, Health, Reboot.
 * Reboot contract with PID 1 (src/capsuled/init/): SIGINT to PID 1 = reboot, SIGTERM = power off.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/timex.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "build-id.h"
#include "capsule/v1/system.pb-c.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "driver/driver.h"
#include "driver/microvm.h"
#include "microvm/driver.h"
#include "serve.h"

static struct serve_ctx *ctx_of(struct rpc_call *call)
{
        return rpc_call_method(call)->userdata;
}

static int64_t boot_uptime_seconds(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return ts.tv_sec;
}

/* The booted slot ("a"/"b") from capsule.slot= on the kernel command line; "" when absent. */
char *serve_booted_slot(void)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/cmdline", "re");
        char line[4096], *save = NULL;
        if (!f || !fgets(line, sizeof(line), f))
                return strdup("");
        for (char *tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
                if (strncmp(tok, "capsule.slot=", 13) == 0)
                        return strdup(tok + 13);
        return strdup("");
}

int system_version(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        Capsule__V1__VersionResponse *r = (Capsule__V1__VersionResponse *)resp;
        struct timespec now;
        struct utsname u;
        clock_gettime(CLOCK_MONOTONIC, &now);
        uname(&u);
        r->version = strdup(CAPSULE_VERSION);
        r->build = strdup(CAPSULE_BUILD);
        r->uptime_seconds = now.tv_sec - ctx->started.tv_sec;
        r->hostname = strdup(ctx->mcfg.hostname ? ctx->mcfg.hostname : "");
        r->mode = strdup(ctx->os_mode ? "os" : "host");
        r->kernel = strdup(u.release);
        r->slot = ctx->os_mode ? serve_booted_slot() : strdup("");
        r->boot_uptime_seconds = boot_uptime_seconds();
        if (!r->version || !r->build || !r->hostname || !r->mode || !r->kernel || !r->slot)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        return 0;
}

static Capsule__V1__HealthCheck *check_new(const char *name, bool ok, const char *msg)
{
        Capsule__V1__HealthCheck *c = malloc(sizeof(*c));
        if (!c)
                return NULL;
        capsule__v1__health_check__init(c);
        c->name = strdup(name);
        c->ok = ok;
        c->message = strdup(msg);
        if (!c->name || !c->message) {
                protobuf_c_message_free_unpacked(&c->base, NULL);
                return NULL;
        }
        return c;
}

/* containerd answers on its socket (a connect, not yet an API call: the driver adds that). */
static bool containerd_reachable(const char *sock, char *msg, size_t len)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(sock) >= sizeof(sa.sun_path)) {
                snprintf(msg, len, "socket path too long");
                return false;
        }
        strcpy(sa.sun_path, sock);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                snprintf(msg, len, "%s: %s", sock, strerror(errno));
                return false;
        }
        snprintf(msg, len, "%s", sock);
        return true;
}

/* /perm must be the persistent ext4 LV, not missing and not PID 1's tmpfs fallback. */
static void perm_check(char *msg, size_t len, bool *ok)
{
        struct stat root_st, perm_st;
        struct statfs fs;
        *ok = false;
        if (stat("/", &root_st) < 0 || stat("/perm", &perm_st) < 0 ||
            root_st.st_dev == perm_st.st_dev) {
                snprintf(msg, len, "/perm is not mounted");
                return;
        }
        if (statfs("/perm", &fs) < 0) {
                snprintf(msg, len, "/perm: %s", strerror(errno));
                return;
        }
        if (fs.f_type != EXT4_SUPER_MAGIC) {
                snprintf(msg, len,
                         "/perm is not the persistent volume (filesystem 0x%lx; tmpfs fallback?): "
                         "state will not survive a reboot",
                         (unsigned long)fs.f_type);
                return;
        }
        unsigned long long free_mb =
            (unsigned long long)fs.f_bavail * (unsigned long long)fs.f_bsize >> 20;
        snprintf(msg, len, "/perm ext4, %llu MiB free", free_mb);
        *ok = true;
}

/* The kernel's clock status, which chronyd keeps: synchronised or not. Unsynchronised counts as a
 * failure only after 10 minutes of uptime (NTP needs the network first); with NTP off
 * (time.servers: [] in the config PID 1 booted with) the clock is the operator's business. */
static void time_check(const struct machine_config *mc, char *msg, size_t len, bool *ok)
{
        struct timex tx = {0};
        int state = adjtimex(&tx);
        bool ntp_on = !(mc->ntp_servers_set && mc->n_ntp_servers == 0);
        bool synced = state >= 0 && state != TIME_ERROR && !(tx.status & STA_UNSYNC);
        time_t now = time(NULL);
        struct tm tm;
        char stamp[32];
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
        if (!ntp_on) {
                *ok = true;
                snprintf(msg, len, "%s, NTP off (time.servers: [])", stamp);
        } else if (synced) {
                *ok = true;
                snprintf(msg, len, "%s, synchronised (NTP, estimated error %ld us)", stamp,
                         (long)tx.esterror);
        } else {
                *ok = boot_uptime_seconds() < 600;
                snprintf(msg, len, "%s, not synchronised %s", stamp,
                         *ok ? "yet" : "after 10 minutes: are time.servers reachable?");
        }
}

size_t serve_health_collect(struct serve_ctx *ctx, struct serve_check *out, size_t max)
{
        size_t n = 0;
        struct cap_error serr = {0};
        if (n < max) {
                out[n] = (struct serve_check){.name = "store"};
                out[n].ok = store_check(ctx->store, &serr) == 0;
                snprintf(out[n].msg, sizeof(out[n].msg), "%s", out[n].ok ? "state.db ok" : serr.msg);
                n++;
        }
        if (ctx->containerd_sock && n < max) {
                out[n] = (struct serve_check){.name = "containerd"};
                out[n].ok = containerd_reachable(ctx->containerd_sock, out[n].msg,
                                                 sizeof(out[n].msg));
                n++;
        }
        if (ctx->os_mode && n + 2 <= max) {
                out[n] = (struct serve_check){.name = "perm"};
                perm_check(out[n].msg, sizeof(out[n].msg), &out[n].ok);
                n++;
                out[n] = (struct serve_check){.name = "time"};
                time_check(&ctx->mcfg, out[n].msg, sizeof(out[n].msg), &out[n].ok);
                n++;
        }
        struct workload_driver *vmdrv = ctx->drivers.by_kind[driver_kind_index(CAPSULE__V1__WORKLOAD_KIND__MICROVM)];
        if (vmdrv && n < max) {
                out[n] = (struct serve_check){.name = "microvm"};
                out[n].ok = vmd_rootdisk_census(microvm_driver_vmd(vmdrv), out[n].msg, sizeof(out[n].msg)) == 0;
                n++;
        }
        /* an image built with mkimage/build.sh --test-fail-health (tests of the rollback only) */
        if (ctx->os_mode && n < max && access(SERVE_TEST_FAIL_HEALTH, F_OK) == 0) {
                out[n] = (struct serve_check){.name = "test-fail-health", .ok = false};
                snprintf(out[n].msg, sizeof(out[n].msg),
                         "this image was built with mkimage/build.sh --test-fail-health (%s): "
                         "for tests of the update rollback only",
                         SERVE_TEST_FAIL_HEALTH);
                n++;
        }
        return n;
}

/* PID 1's phases (its file, on a Capsule) then serve's own. A file that does not parse is left
 * out with a warning: the timeline is for reading, never a reason to fail Health. */
static int boot_timeline_fill(struct serve_ctx *ctx, Capsule__V1__HealthResponse *r)
{
        struct timeline t = {0};
        struct cap_error terr = {0};
        if (ctx->os_mode && timeline_read(TIMELINE_PATH, &t, &terr) < 0 && terr.msg[0]) {
                log_warn("%s", terr.msg);
                t.n = 0;
        }
        for (size_t i = 0; i < ctx->boot.n; i++)
                timeline_add(&t, ctx->boot.phases[i].name, ctx->boot.phases[i].start_ms,
                             ctx->boot.phases[i].end_ms);
        r->boot = calloc(t.n ? t.n : 1, sizeof(*r->boot));
        if (!r->boot)
                return -ENOMEM;
        for (size_t i = 0; i < t.n; i++) {
                Capsule__V1__BootPhase *p = malloc(sizeof(*p));
                if (!p)
                        return -ENOMEM;
                capsule__v1__boot_phase__init(p);
                r->boot[r->n_boot++] = p;
                if (!(p->name = strdup(t.phases[i].name)))
                        return -ENOMEM;
                p->start_ms = t.phases[i].start_ms;
                p->end_ms = t.phases[i].end_ms;
        }
        return 0;
}

int system_health(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        Capsule__V1__HealthResponse *r = (Capsule__V1__HealthResponse *)resp;
        struct serve_check checks[8];
        size_t n = serve_health_collect(ctx, checks, 8);
        r->checks = calloc(n ? n : 1, sizeof(*r->checks));
        if (!r->checks)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        bool all_ok = true;
        for (size_t i = 0; i < n; i++) {
                if (!(r->checks[r->n_checks++] = check_new(checks[i].name, checks[i].ok,
                                                           checks[i].msg)))
                        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                all_ok &= checks[i].ok;
        }
        r->ok = all_ok;
        if (boot_timeline_fill(ctx, r) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        r->boot_uptime_seconds = boot_uptime_seconds();
        r->slot = ctx->os_mode ? serve_booted_slot() : strdup("");
        if (!r->slot)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        return 0;
}

/* Signals PID 1 after a short delay so the RPC's answer reaches the client first. */
static void *signal_init_later(void *arg)
{
        int sig = (int)(intptr_t)arg;
        sleep(1);
        if (kill(1, sig) < 0)
                log_error("reboot: signal PID 1: %s", strerror(errno));
        return NULL;
}

int system_reboot(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        const Capsule__V1__RebootRequest *r = (const Capsule__V1__RebootRequest *)req;
        if (!ctx->os_mode)
                return cap_error_set(
                    err, -EOPNOTSUPP, CAP_FAILED_PRECONDITION,
                    "reboot is only available on a Capsule (capsuled serve runs in host mode)");
        struct rpc_peer peer = {0};
        rpc_call_peer(call, &peer, NULL);
        log_info("%s requested by cn=%s", r->poweroff ? "poweroff" : "reboot", peer.cn);
        pthread_t t;
        if (pthread_create(&t, NULL, signal_init_later,
                           (void *)(intptr_t)(r->poweroff ? SIGTERM : SIGINT)) != 0)
                return cap_error_set(err, -EAGAIN, CAP_INTERNAL, "reboot: cannot start thread");
        pthread_detach(t);
        return 0;
}

/* Parses one /dev/kmsg record "PRIO,SEQ,USEC,FLAGS[,...];MESSAGE\n[ continuation]" in place. */
static bool kmsg_parse(char *rec, size_t len, Capsule__V1__DmesgLine *line)
{
        rec[len] = '\0';
        char *semi = strchr(rec, ';');
        if (!semi)
                return false;
        *semi = '\0';
        unsigned long long prio = 0, seq = 0, usec = 0;
        if (sscanf(rec, "%llu,%llu,%llu", &prio, &seq, &usec) != 3)
                return false;
        char *msg = semi + 1;
        char *nl = strchr(msg, '\n'); /* continuation lines (" KEY=value") are dropped */
        if (nl)
                *nl = '\0';
        line->priority = (uint32_t)(prio & 7);
        line->time_usec = (int64_t)usec;
        line->message = msg;
        return true;
}

int system_dmesg(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        const Capsule__V1__DmesgRequest *rq = (const Capsule__V1__DmesgRequest *)req;
        _cleanup_close_ int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "open /dev/kmsg");
        int cancel_fd = rpc_call_cancel_fd(call, err);
        if (cancel_fd < 0)
                return err->code;
        char rec[8192 + 1];
        for (;;) {
                ssize_t n = read(fd, rec, sizeof(rec) - 1);
                if (n < 0 && errno == EPIPE)
                        continue; /* overwritten records: skip to the next one */
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        if (!rq->follow)
                                return 0;
                        struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
                                              {.fd = cancel_fd, .events = POLLIN}};
                        if (poll(p, 2, -1) < 0 && errno != EINTR)
                                return cap_error_errno(err, -errno, "poll /dev/kmsg");
                        if (p[1].revents)
                                return 0;
                        continue;
                }
                if (n <= 0)
                        return n < 0 ? cap_error_errno(err, -errno, "read /dev/kmsg") : 0;
                Capsule__V1__DmesgLine line = CAPSULE__V1__DMESG_LINE__INIT;
                if (!kmsg_parse(rec, (size_t)n, &line))
                        continue;
                if (rpc_call_send(call, &line.base, err) < 0)
                        return 0; /* the client went away */
        }
}
