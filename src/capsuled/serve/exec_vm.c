/* capsule.v1.Workloads/Exec into a microVM: the call is relayed to capsule-guest's own Exec
 * (capsule.guest.v1, over vsock), which runs the command in the VM's workload root with a TTY or
 * pipes. Two threads: this handler forwards the client's stdin, resizes and half-close to the
 * guest; a pump forwards the guest's stdout, stderr and exit code to the client. A client that goes
 * away cancels the guest call (the guest then kills the process). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "capsule/guest/v1/guest.pb-c.h"
#include "capsule/v1/workloads.pb-c.h"
#include "common/log.h"
#include "microvm/driver.h"
#include "serve.h"

struct vm_exec {
        struct rpc_call *call;
        struct rpc_stream *guest;
        bool client_gone;
        int exit_code;
        bool exited;
};

/* Guest -> client. Ends after the exit code (then half-closes the guest stream, which ends it). */
static void *vm_exec_pump(void *arg)
{
        struct vm_exec *x = arg;
        ProtobufCMessage *m = NULL;
        struct cap_error err = {0};
        while (rpc_stream_recv(x->guest, &m, &err) == 1) {
                Capsule__Guest__V1__ExecResponse *g = (Capsule__Guest__V1__ExecResponse *)m;
                Capsule__V1__ExecResponse r = CAPSULE__V1__EXEC_RESPONSE__INIT;
                switch (g->msg_case) {
                case CAPSULE__GUEST__V1__EXEC_RESPONSE__MSG_STDOUT:
                        r.msg_case = CAPSULE__V1__EXEC_RESPONSE__MSG_STDOUT;
                        r.stdout = g->stdout;
                        break;
                case CAPSULE__GUEST__V1__EXEC_RESPONSE__MSG_STDERR:
                        r.msg_case = CAPSULE__V1__EXEC_RESPONSE__MSG_STDERR;
                        r.stderr = g->stderr;
                        break;
                case CAPSULE__GUEST__V1__EXEC_RESPONSE__MSG_EXIT_CODE:
                        r.msg_case = CAPSULE__V1__EXEC_RESPONSE__MSG_EXIT_CODE;
                        r.exit_code = g->exit_code;
                        x->exit_code = g->exit_code;
                        x->exited = true;
                        break;
                default: break;
                }
                struct cap_error serr = {0};
                if (r.msg_case != CAPSULE__V1__EXEC_RESPONSE__MSG__NOT_SET && !x->client_gone &&
                    rpc_call_send(x->call, &r.base, &serr) < 0)
                        x->client_gone = true;
                protobuf_c_message_free_unpacked(m, NULL);
                if (x->exited) {
                        rpc_stream_close_send(x->guest, &serr);
                        break;
                }
        }
        return NULL;
}

int serve_exec_vm(struct serve_ctx *ctx, struct rpc_call *call, const Capsule__V1__ExecStart *st,
                  struct cap_error *err)
{
        if (!ctx->vmd)
                return cap_error_set(err, -ENOTSUP, CAP_FAILED_PRECONDITION,
                                     "exec %s: microVMs are not available on this capsule: %s", st->name,
                                     ctx->vmd_error);
        struct rpc_client *c = vmd_guest_client(ctx->vmd, st->name, err);
        if (!c)
                return cap_error_prefix(err, "exec %s", st->name);
        struct vm_exec x = {.call = call};
        x.guest = rpc_stream_open(c, "/capsule.guest.v1.Guest/Exec",
                                  &capsule__guest__v1__exec_response__descriptor, 0, err);
        int rc = 0;
        if (!x.guest) {
                rc = cap_error_prefix(err, "exec %s: guest agent", st->name);
                goto out;
        }
        Capsule__Guest__V1__ExecStart gs = CAPSULE__GUEST__V1__EXEC_START__INIT;
        gs.command = st->command;
        gs.n_command = st->n_command;
        gs.tty = st->tty;
        gs.stdin = st->stdin;
        gs.env = st->env;
        gs.n_env = st->n_env;
        gs.rows = st->rows;
        gs.cols = st->cols;
        Capsule__Guest__V1__ExecRequest gr = CAPSULE__GUEST__V1__EXEC_REQUEST__INIT;
        gr.msg_case = CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_START;
        gr.start = &gs;
        if ((rc = rpc_stream_send(x.guest, &gr.base, err)) < 0) {
                cap_error_prefix(err, "exec %s: guest agent", st->name);
                goto out;
        }
        log_info("exec name=%s (microVM) tty=%d argv0=%s", st->name, st->tty, st->command[0]);
        pthread_t pump;
        if (pthread_create(&pump, NULL, vm_exec_pump, &x) != 0) {
                rc = cap_error_set(err, -EAGAIN, CAP_INTERNAL, "exec: cannot start thread");
                goto out;
        }
        ProtobufCMessage *m = NULL;
        struct cap_error rerr = {0};
        int r;
        while ((r = rpc_call_recv(call, &m, &rerr)) == 1) {
                Capsule__V1__ExecRequest *q = (Capsule__V1__ExecRequest *)m;
                Capsule__Guest__V1__ExecRequest g = CAPSULE__GUEST__V1__EXEC_REQUEST__INIT;
                Capsule__Guest__V1__WindowSize ws = CAPSULE__GUEST__V1__WINDOW_SIZE__INIT;
                switch (q->msg_case) {
                case CAPSULE__V1__EXEC_REQUEST__MSG_STDIN:
                        g.msg_case = CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_STDIN;
                        g.stdin = q->stdin;
                        break;
                case CAPSULE__V1__EXEC_REQUEST__MSG_RESIZE:
                        if (q->resize) {
                                ws.rows = q->resize->rows;
                                ws.cols = q->resize->cols;
                                g.msg_case = CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_RESIZE;
                                g.resize = &ws;
                        }
                        break;
                case CAPSULE__V1__EXEC_REQUEST__MSG_CLOSE_STDIN:
                        g.msg_case = CAPSULE__GUEST__V1__EXEC_REQUEST__MSG_CLOSE_STDIN;
                        g.close_stdin = true;
                        break;
                default: break;
                }
                struct cap_error serr = {0};
                if (g.msg_case != CAPSULE__GUEST__V1__EXEC_REQUEST__MSG__NOT_SET)
                        rpc_stream_send(x.guest, &g.base, &serr);
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (r < 0 && !x.exited) {
                x.client_gone = true;
                rpc_stream_cancel(x.guest); /* the client went away: the guest kills the process */
        }
        pthread_join(pump, NULL);
        struct cap_error ferr = {0};
        if (!x.exited && !x.client_gone && rpc_stream_finish(x.guest, &ferr) < 0)
                rc = cap_error_set(err, -EIO, ferr.status ? ferr.status : CAP_UNAVAILABLE, "exec %s: guest agent: %s",
                                   st->name, ferr.msg);
out:
        rpc_stream_free(x.guest);
        rpc_client_free(c);
        return rc;
}
