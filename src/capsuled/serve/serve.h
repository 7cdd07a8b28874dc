/* The control plane's shared context: one per `capsuled serve` process, passed to every handler
 * as the method's userdata. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/config.h"
#include "rpc/rpc.h"
#include "store/store.h"

struct serve_ctx {
        const char *root;           /* --root: state directory */
        const char *containerd_sock; /* --containerd, NULL when not configured */
        bool os_mode;               /* true when started by PID 1 on a Capsule (--os) */
        struct machine_config mcfg;
        struct store *store;
        struct timespec started;    /* CLOCK_MONOTONIC at start */
        struct rpc_server *server;
};

/* Role check for every call (auth.c): admin may call anything, reader only non-mutating methods. */
int serve_authorize(struct rpc_call *call, const struct rpc_method *method, void *ud, struct cap_error *err);

/* Registers every capsule.v1 method; unimplemented ones answer UNIMPLEMENTED (services.c). */
int serve_register_services(struct serve_ctx *ctx, struct rpc_server *srv, struct cap_error *err);

/* capsule.v1.System handlers (system.c). */
int system_version(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                   struct cap_error *err);
int system_health(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err);
int system_reboot(struct rpc_call *call, const ProtobufCMessage *req, ProtobufCMessage *resp,
                  struct cap_error *err);
