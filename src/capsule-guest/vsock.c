/* The guest end of the host<->guest channel: gRPC 1.51 cannot listen on AF_VSOCK, so we listen
 * ourselves (port 1024, any CID) and hand every accepted connection to the rpc server as an fd. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "guest.h"
#include "rpc.h"

struct vsock_listener {
        struct rpc_server *srv;
        int fd;
};

static void *accept_thread(void *arg)
{
        struct vsock_listener *l = arg;
        for (;;) {
                int c = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0) {
                        if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                                continue;
                        log_error("vsock: accept: %s", strerror(errno));
                        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM ||
                            errno == ENOBUFS) {
                                sleep(1);
                                continue;
                        }
                        break;
                }
                struct cap_error err = {0};
                if (rpc_server_add_fd(l->srv, c, &err) < 0)
                        log_error("vsock: serve connection: %s", err.msg);
        }
        close(l->fd);
        free(l);
        return NULL;
}

int guest_vsock_serve(struct rpc_server *srv, unsigned port, struct cap_error *err)
{
        _cleanup_close_ int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return cap_error_errno(err, -errno, "vsock: socket");
        struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
                                   .svm_port = port};
        if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
                return cap_error_errno(err, -errno, "vsock: bind port %u", port);
        if (listen(fd, 16) < 0)
                return cap_error_errno(err, -errno, "vsock: listen");
        struct vsock_listener *l = calloc(1, sizeof(*l));
        if (!l)
                return cap_error_errno(err, -ENOMEM, "vsock");
        l->srv = srv;
        l->fd = fd;
        pthread_t t;
        if (pthread_create(&t, NULL, accept_thread, l) != 0) {
                free(l);
                return cap_error_set(err, -EAGAIN, CAP_INTERNAL, "vsock: cannot start thread");
        }
        TAKE_FD(fd);
        int r = pthread_detach(t);
        if (r != 0)
                log_warn("vsock: pthread_detach: %s", strerror(r));
        log_info("listening on vsock port %u", port);
        return 0;
}
