/* `capsulectl get -w`: the workload table, then every row that changes, like `kubectl get -w`.
 * A thread follows System.Events and pokes a pipe on each event; the main thread re-lists on a
 * poke, or every 2 s when nothing comes (older capsules, a broken event stream), and prints the
 * workloads whose state differs from what it printed last (deleted ones with STATUS Deleted).
 * SIGINT and SIGTERM end it with exit 0 (read from a signalfd, so no handler state; blocked in
 * every thread, gRPC's included, so they must be blocked before the client is made). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "capsule/v1/system.pb-c.h"
#include "capsule/v1/workloads.pb-c.h"
#include "capsulectl.h"
#include "common/cleanup.h"
#include "common/manifest.h"
#include "rpc/rpc.h"

#define WATCH_POLL_MS 2000

/* What was printed last for one workload. */
struct seen {
        char *name;
        char *kind;
        char *state; /* its JSON: any field that changes makes it differ */
        bool present;
};

struct seen_set {
        struct seen *v;
        size_t n, cap;
};

struct events_feed {
        struct rpc_stream *s;
        int poke_fd; /* write end of the pipe */
};

static void *events_main(void *arg)
{
        struct events_feed *f = arg;
        struct cap_error err = {0};
        ProtobufCMessage *m;
        while (rpc_stream_recv(f->s, &m, &err) == 1) {
                protobuf_c_message_free_unpacked(m, NULL);
                ssize_t w = write(f->poke_fd, "e", 1);
                (void)w; /* a full pipe already holds a poke */
        }
        return NULL;
}

static void seen_free(struct seen_set *ss)
{
        for (size_t i = 0; i < ss->n; i++) {
                free(ss->v[i].name);
                free(ss->v[i].kind);
                free(ss->v[i].state);
        }
        free(ss->v);
}

static struct seen *seen_find(struct seen_set *ss, const char *name)
{
        for (size_t i = 0; i < ss->n; i++)
                if (strcmp(ss->v[i].name, name) == 0)
                        return &ss->v[i];
        return NULL;
}

static struct seen *seen_add(struct seen_set *ss, const char *name, const char *kind)
{
        if (ss->n == ss->cap) {
                size_t cap = ss->cap ? ss->cap * 2 : 16;
                struct seen *v = realloc(ss->v, cap * sizeof(*v));
                if (!v)
                        return NULL;
                ss->v = v;
                ss->cap = cap;
        }
        struct seen *s = &ss->v[ss->n];
        *s = (struct seen){.name = strdup(name), .kind = strdup(kind)};
        if (!s->name || !s->kind) {
                free(s->name);
                free(s->kind);
                return NULL;
        }
        ss->n++;
        return s;
}

static void print_workload(struct ctl *ctl, const Capsule__V1__Workload *w, struct json_object *o)
{
        if (ctl->output == CTL_OUT_TABLE)
                ctl_workload_table_row(ctl->out, w);
        else
                ctl_print_structured(ctl, o);
}

/* Lists the workloads and prints those that changed since the last call (all on the first). */
static int relist(struct ctl *ctl, struct rpc_client *c, const char *name, struct seen_set *ss,
                  bool first)
{
        Capsule__V1__ListRequest req = CAPSULE__V1__LIST_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.Workloads/List", &req.base,
                      &capsule__v1__list_response__descriptor, &resp, ctl->timeout_ms, &err) < 0) {
                ctl_print_error(ctl, "get -w: list", &err);
                return -EIO;
        }
        Capsule__V1__ListResponse *l = (Capsule__V1__ListResponse *)resp;
        if (first && ctl->output == CTL_OUT_TABLE)
                ctl_workload_table_header(ctl->out);
        for (size_t i = 0; i < ss->n; i++)
                ss->v[i].present = false;
        for (size_t i = 0; i < l->n_workloads; i++) {
                const Capsule__V1__Workload *w = l->workloads[i];
                if (!w->spec || (name && strcmp(w->spec->name, name) != 0))
                        continue;
                struct json_object *o = ctl_workload_json(w);
                const char *state = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
                struct seen *s = seen_find(ss, w->spec->name);
                if (!s)
                        s = seen_add(ss, w->spec->name, manifest_workload_kind_name(w->spec->kind));
                if (s && (!s->state || strcmp(s->state, state) != 0)) {
                        print_workload(ctl, w, o);
                        free(s->state);
                        s->state = strdup(state);
                }
                if (s)
                        s->present = true;
                json_object_put(o);
        }
        for (size_t i = 0; i < ss->n; i++) {
                struct seen *s = &ss->v[i];
                if (s->present || !s->state)
                        continue;
                if (ctl->output == CTL_OUT_TABLE)
                        fprintf(ctl->out, "%-20s %-10s %-9s\n", s->name, s->kind, "Deleted");
                else {
                        struct json_object *o = json_object_new_object();
                        json_object_object_add(o, "name", json_object_new_string(s->name));
                        json_object_object_add(o, "deleted", json_object_new_boolean(1));
                        ctl_print_structured(ctl, o);
                        json_object_put(o);
                }
                free(s->state);
                s->state = NULL;
        }
        fflush(ctl->out);
        protobuf_c_message_free_unpacked(resp, NULL);
        return 0;
}

/* Opens System.Events; NULL (and the 2 s poll alone) when the capsule does not answer it. */
static struct rpc_stream *events_open(struct ctl *ctl, struct rpc_client *c)
{
        Capsule__V1__EventsRequest req = CAPSULE__V1__EVENTS_REQUEST__INIT;
        struct cap_error err = {0};
        struct rpc_stream *s = rpc_stream_open(c, "/capsule.v1.System/Events",
                                               &capsule__v1__event__descriptor, 0, &err);
        if (!s || rpc_stream_send(s, &req.base, &err) < 0 || rpc_stream_close_send(s, &err) < 0) {
                rpc_stream_free(s);
                return NULL;
        }
        return s;
}

static int watch_loop(struct ctl *ctl, struct rpc_client *c, const char *name, int sig_fd,
                      int poke_fd, struct seen_set *ss)
{
        for (;;) {
                struct pollfd pf[2] = {{.fd = sig_fd, .events = POLLIN},
                                       {.fd = poke_fd, .events = POLLIN}};
                int r = poll(pf, 2, WATCH_POLL_MS);
                if (r < 0 && errno != EINTR) {
                        fprintf(ctl->err, "capsulectl: get -w: poll: %s\n", strerror(errno));
                        return CTL_EXIT_ERROR;
                }
                if (r > 0 && (pf[0].revents & POLLIN)) {
                        /* consumed, so that unblocking the signals later does not deliver it */
                        struct signalfd_siginfo si;
                        ssize_t n = read(sig_fd, &si, sizeof(si));
                        (void)n;
                        return CTL_EXIT_OK;
                }
                if (r > 0 && (pf[1].revents & POLLIN)) {
                        char buf[64];
                        while (read(poke_fd, buf, sizeof(buf)) > 0)
                                ;
                }
                /* a failed re-list is reported and retried at the next tick */
                relist(ctl, c, name, ss, false);
        }
}

int ctl_watch_workloads(struct ctl *ctl, const char *name)
{
        sigset_t mask, old;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        /* blocked before the client exists: gRPC's own threads and the events thread inherit
         * the mask, so the signal can only be taken from the signalfd */
        if (pthread_sigmask(SIG_BLOCK, &mask, &old) != 0)
                return CTL_EXIT_ERROR;
        _cleanup_close_ int sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);
        int pipefd[2] = {-1, -1};
        if (sig_fd < 0 || pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0) {
                fprintf(ctl->err, "capsulectl: get -w: %s\n", strerror(errno));
                pthread_sigmask(SIG_SETMASK, &old, NULL);
                return CTL_EXIT_ERROR;
        }
        _cleanup_close_ int poke_r = pipefd[0];
        _cleanup_close_ int poke_w = pipefd[1];
        struct seen_set ss = {0};
        int rc = CTL_EXIT_ERROR;
        struct rpc_client *c = ctl_client(ctl);
        if (!c || relist(ctl, c, name, &ss, true) < 0)
                goto out;
        struct events_feed feed = {.s = events_open(ctl, c), .poke_fd = poke_w};
        pthread_t th;
        bool th_started = feed.s && pthread_create(&th, NULL, events_main, &feed) == 0;
        rc = watch_loop(ctl, c, name, sig_fd, poke_r, &ss);
        if (feed.s)
                rpc_stream_cancel(feed.s);
        if (th_started)
                pthread_join(th, NULL);
        rpc_stream_free(feed.s);
out:
        seen_free(&ss);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return rc;
}
