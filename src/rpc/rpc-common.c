/* Pieces shared by the rpc server and client: gRPC init/shutdown refcounting with log routing,
 * TLS credentials, protobuf packing, status mapping. See rpc.h for the public contract. */
#include "rpc-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/log.h>

#include "common/log.h"

static pthread_mutex_t grpc_ref_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned grpc_refs;

/* gRPC's own messages go through log.h at debug level: they are mostly noise for an operator
 * (failed handshakes of scanners, reconnect attempts) and every real failure reaches the caller
 * as a status. GRPC_VERBOSITY=debug|info|error in the environment still widens what gRPC emits. */
static void grpc_log_to_capsule(gpr_log_func_args *args)
{
        log_debug("grpc: %s (%s:%d)", args->message, args->file, args->line);
}

void rpc_grpc_ref(void)
{
        pthread_mutex_lock(&grpc_ref_lock);
        if (grpc_refs++ == 0) {
                gpr_set_log_function(grpc_log_to_capsule);
                if (!getenv("GRPC_VERBOSITY"))
                        gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
                grpc_init();
        }
        pthread_mutex_unlock(&grpc_ref_lock);
}

/* grpc_init/grpc_shutdown_blocking are paired once per process-wide use count, so a program
 * that frees its last client and server really releases gRPC's threads and memory. */
void rpc_grpc_unref(void)
{
        pthread_mutex_lock(&grpc_ref_lock);
        if (--grpc_refs == 0)
                grpc_shutdown_blocking();
        pthread_mutex_unlock(&grpc_ref_lock);
}

grpc_server_credentials *rpc_server_creds(const struct rpc_tls *tls)
{
        if (!tls)
                return grpc_insecure_server_credentials_create();
        grpc_ssl_pem_key_cert_pair pair = {.private_key = tls->key_pem,
                                           .cert_chain = tls->cert_pem};
        grpc_ssl_client_certificate_request_type req =
            tls->require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
        return grpc_ssl_server_credentials_create_ex(tls->ca_pem, &pair, 1, req, NULL);
}

grpc_channel_credentials *rpc_channel_creds(const struct rpc_tls *tls)
{
        if (!tls)
                return grpc_insecure_credentials_create();
        grpc_ssl_pem_key_cert_pair pair = {.private_key = tls->key_pem,
                                           .cert_chain = tls->cert_pem};
        bool have_pair = tls->cert_pem && tls->key_pem;
        return grpc_ssl_credentials_create_ex(tls->ca_pem, have_pair ? &pair : NULL, NULL, NULL);
}

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg)
{
        size_t n = protobuf_c_message_get_packed_size(msg);
        grpc_slice slice = grpc_slice_malloc(n);
        protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
        grpc_byte_buffer *buf = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);
        return buf;
}

ProtobufCMessage *rpc_unpack(grpc_byte_buffer *buf, const ProtobufCMessageDescriptor *desc,
                             struct cap_error *err)
{
        grpc_byte_buffer_reader reader;
        if (!grpc_byte_buffer_reader_init(&reader, buf)) {
                cap_error_set(err, -EBADMSG, CAP_INTERNAL, "cannot read %s message", desc->name);
                return NULL;
        }
        grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all),
                                                          GRPC_SLICE_START_PTR(all));
        grpc_slice_unref(all);
        if (!msg)
                cap_error_set(err, -EBADMSG, CAP_INVALID_ARGUMENT, "malformed %s message",
                              desc->name);
        return msg;
}

int rpc_status_error(struct cap_error *err, grpc_status_code status, grpc_slice details,
                     const char *method)
{
        if (status == GRPC_STATUS_OK)
                return 0;
        size_t n = GRPC_SLICE_LENGTH(details);
        if (n == 0)
                return cap_error_set(err, -EIO, (enum cap_status)status, "%s: %s", method,
                                     cap_status_name((enum cap_status)status));
        return cap_error_set(err, -EIO, (enum cap_status)status, "%.*s", (int)n,
                             (const char *)GRPC_SLICE_START_PTR(details));
}

int rpc_fd_nonblock(int fd, struct cap_error *err)
{
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return cap_error_errno(err, -errno, "set O_NONBLOCK on fd %d", fd);
        return 0;
}

bool rpc_is_unix_address(const char *addr)
{
        return strncmp(addr, "unix:", 5) == 0 || strncmp(addr, "unix-abstract:", 14) == 0;
}

int rpc_check_address(const char *addr, struct cap_error *err)
{
        if (!addr || !*addr)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "empty address");
        if (rpc_is_unix_address(addr)) {
                if (addr[strlen(addr) - 1] == ':')
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "address `%s`: empty unix socket name", addr);
                return 0;
        }
        /* Anything else must be host:port; gRPC would send unknown schemes ("vsock:3:5000") to
         * DNS and fail much later with a confusing message. */
        const char *colon = strrchr(addr, ':');
        if (strstr(addr, "://") || !colon || colon[1] == '\0' ||
            strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
            (addr[0] != '[' && strchr(addr, ':') != colon))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "address `%s`: expected host:port, [v6addr]:port, "
                                     "unix:/path or unix-abstract:name",
                                     addr);
        return 0;
}

gpr_timespec rpc_deadline(int timeout_ms)
{
        if (timeout_ms <= 0)
                return gpr_inf_future(GPR_CLOCK_MONOTONIC);
        return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                            gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}
