/* Internals shared by the rpc layer's files (rpc-common.c, rpc-server.c, rpc-client.c): gRPC
 * library reference counting, credentials from struct rpc_tls, protobuf <-> byte buffer, and
 * gRPC status -> struct cap_error. Not for use outside src/rpc/. */
#pragma once

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "rpc.h"

#define RPC_DEFAULT_MAX_RECV (16u * 1024 * 1024)

/* grpc_init() with Capsule's log routing installed first; pair with rpc_grpc_unref(). */
void rpc_grpc_ref(void);
void rpc_grpc_unref(void);

grpc_server_credentials *rpc_server_creds(const struct rpc_tls *tls);
grpc_channel_credentials *rpc_channel_creds(const struct rpc_tls *tls);

/* Packs msg into a new byte buffer (caller destroys it). NULL on allocation failure. */
grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg);
/* Unpacks buf as desc; NULL (with err) if it does not decode. Does not consume buf. */
ProtobufCMessage *rpc_unpack(grpc_byte_buffer *buf, const ProtobufCMessageDescriptor *desc,
                             struct cap_error *err);

/* Fills err from a gRPC status and details slice; returns the negative code (0 for OK). */
int rpc_status_error(struct cap_error *err, grpc_status_code status, grpc_slice details,
                     const char *method);

/* Sets O_NONBLOCK on fd. */
int rpc_fd_nonblock(int fd, struct cap_error *err);

/* True for "unix:/path" and "unix-abstract:name". */
bool rpc_is_unix_address(const char *addr);
/* Checks a listen/dial address: "host:port", "[v6]:port", "unix:/path" or "unix-abstract:name". */
int rpc_check_address(const char *addr, struct cap_error *err);

gpr_timespec rpc_deadline(int timeout_ms);

/* The gRPC call behind a server call (for rpc-peer.c). */
grpc_call *rpc_call_grpc(struct rpc_call *c);
