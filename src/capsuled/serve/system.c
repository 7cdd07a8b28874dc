/* capsule.v1.System handlers: Version, Health, Reboot.
 * Reboot contract with PID 1 (src/capsuled/init/): SIGINT to PID 1 = reboot, SIGTERM = power off. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "capsule/v1/system.pb-c.h"
#include "common/cleanup.h"
#include "common/log.h"
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
static char *booted_slot(void)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/cmdline", "re");
        char line[4096];
        if (!f || !fgets(line, sizeof(line), f))
                return strdup("");
        for (char *tok = strtok(line, " \n"); tok; tok = strtok(NULL, " \n"))
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
        r->slot = ctx->os_mode ? booted_slot() : strdup("");
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

int system_health(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err)
{
        struct serve_ctx *ctx = ctx_of(call);
        Capsule__V1__HealthResponse *r = (Capsule__V1__HealthResponse *)resp;
        r->checks = calloc(4, sizeof(*r->checks));
        if (!r->checks)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        bool all_ok = true;
        char msg[512];

        struct cap_error serr = {0};
        bool ok = store_check(ctx->store, &serr) == 0;
        snprintf(msg, sizeof(msg), "%s", ok ? "state.db ok" : serr.msg);
        r->checks[r->n_checks++] = check_new("store", ok, msg);
        all_ok &= ok;

        if (ctx->containerd_sock) {
                ok = containerd_reachable(ctx->containerd_sock, msg, sizeof(msg));
                r->checks[r->n_checks++] = check_new("containerd", ok, msg);
                all_ok &= ok;
        }
        if (ctx->os_mode) {
                struct stat root_st, perm_st;
                ok = stat("/", &root_st) == 0 && stat("/perm", &perm_st) == 0 && root_st.st_dev != perm_st.st_dev;
                r->checks[r->n_checks++] = check_new("perm", ok, ok ? "/perm mounted" : "/perm is not mounted");
                all_ok &= ok;
        }
        for (size_t i = 0; i < r->n_checks; i++)
                if (!r->checks[i])
                        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        r->ok = all_ok;
        r->boot_uptime_seconds = boot_uptime_seconds();
        r->slot = ctx->os_mode ? booted_slot() : strdup("");
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
                return cap_error_set(err, -EOPNOTSUPP, CAP_FAILED_PRECONDITION,
                                     "reboot is only available on a Capsule (capsuled serve runs in host mode)");
        struct rpc_peer peer = {0};
        rpc_call_peer(call, &peer, NULL);
        log_info("%s requested by cn=%s", r->poweroff ? "poweroff" : "reboot", peer.cn);
        pthread_t t;
        if (pthread_create(&t, NULL, signal_init_later, (void *)(intptr_t)(r->poweroff ? SIGTERM : SIGINT)) != 0)
                return cap_error_set(err, -EAGAIN, CAP_INTERNAL, "reboot: cannot start thread");
        pthread_detach(t);
        return 0;
}
