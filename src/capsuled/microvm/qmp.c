/* QMP client (see qmp.h): a line reader with poll() timeouts over a unix stream socket, the
 * message parser, and the handful of commands the microVM driver uses. */
#include "qmp.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "tools.h"

#define QMP_LINE_MAX (1u << 20)

struct qmp {
        int fd;
        int timeout_ms;
        long long next_id;
        unsigned events;
        char *buf; /* bytes read but not yet returned as lines */
        size_t len, cap;
};

unsigned qmp_event_bit(const char *name)
{
        if (strcmp(name, "SHUTDOWN") == 0)
                return QMP_EVENT_SHUTDOWN;
        if (strcmp(name, "POWERDOWN") == 0)
                return QMP_EVENT_POWERDOWN;
        if (strcmp(name, "STOP") == 0)
                return QMP_EVENT_STOP;
        if (strcmp(name, "RESET") == 0)
                return QMP_EVENT_RESET;
        return 0;
}

void qmp_msg_release(struct qmp_msg *msg)
{
        if (msg->obj)
                json_object_put(msg->obj);
        memset(msg, 0, sizeof(*msg));
}

static const char *get_str(struct json_object *o, const char *key)
{
        struct json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

int qmp_parse_message(const char *line, struct qmp_msg *msg, struct cap_error *err)
{
        memset(msg, 0, sizeof(*msg));
        msg->id = -1;
        enum json_tokener_error jerr;
        struct json_object *o = json_tokener_parse_verbose(line, &jerr);
        if (!o)
                return cap_error_set(err, -EPROTO, CAP_INTERNAL, "QMP: bad JSON: %s",
                                     json_tokener_error_desc(jerr));
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return cap_error_set(err, -EPROTO, CAP_INTERNAL, "QMP: message is not an object");
        }
        msg->obj = o;
        struct json_object *v;
        if (json_object_object_get_ex(o, "id", &v) && json_object_is_type(v, json_type_int))
                msg->id = json_object_get_int64(v);
        if (json_object_object_get_ex(o, "QMP", &v)) {
                msg->kind = QMP_MSG_GREETING;
        } else if (json_object_object_get_ex(o, "return", &v)) {
                msg->kind = QMP_MSG_RETURN;
                msg->ret = v;
        } else if (json_object_object_get_ex(o, "error", &v) &&
                   json_object_is_type(v, json_type_object)) {
                msg->kind = QMP_MSG_ERROR;
                msg->error_class = get_str(v, "class");
                msg->error_desc = get_str(v, "desc");
                if (!msg->error_class)
                        msg->error_class = "GenericError";
                if (!msg->error_desc)
                        msg->error_desc = "(no description)";
        } else if ((msg->event = get_str(o, "event"))) {
                msg->kind = QMP_MSG_EVENT;
        } else {
                qmp_msg_release(msg);
                return cap_error_set(err, -EPROTO, CAP_INTERNAL, "QMP: unknown message kind");
        }
        return 0;
}

/* Returns the next line (without "\r\n", malloc'd) waiting until the deadline. -ETIMEDOUT on
 * timeout, -ECONNRESET when QEMU closed the connection. */
static int read_line(struct qmp *q, int64_t deadline, char **line, struct cap_error *err)
{
        static const size_t chunk = 4096;
        for (;;) {
                char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
                if (nl) {
                        size_t n = (size_t)(nl - q->buf);
                        size_t keep = n > 0 && q->buf[n - 1] == '\r' ? n - 1 : n;
                        char *l = strndup(q->buf, keep);
                        if (!l)
                                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                        q->len -= n + 1;
                        memmove(q->buf, nl + 1, q->len);
                        *line = l;
                        return 0;
                }
                if (q->len >= QMP_LINE_MAX)
                        return cap_error_set(err, -EMSGSIZE, CAP_INTERNAL,
                                             "QMP: message longer than %u bytes", QMP_LINE_MAX);
                int64_t left = deadline - vm_now_ms();
                if (left <= 0)
                        return cap_error_set(err, -ETIMEDOUT, CAP_DEADLINE_EXCEEDED,
                                             "QMP: no reply within %d ms", q->timeout_ms);
                struct pollfd p = {.fd = q->fd, .events = POLLIN};
                int r = poll(&p, 1, (int)left);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return cap_error_errno(err, -errno, "QMP: poll");
                }
                if (r == 0)
                        continue;
                if (q->cap - q->len < chunk + 1) {
                        char *b = realloc(q->buf, q->cap + chunk + 1);
                        if (!b)
                                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
                        q->buf = b;
                        q->cap += chunk + 1;
                }
                ssize_t n = read(q->fd, q->buf + q->len, chunk);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return cap_error_errno(err, -errno, "QMP: read");
                }
                if (n == 0)
                        return cap_error_set(err, -ECONNRESET, CAP_UNAVAILABLE,
                                             "QMP: QEMU closed the connection");
                q->len += (size_t)n;
        }
}

/* Reads messages until one that is not an event; events are recorded on the way. */
static int read_reply(struct qmp *q, struct qmp_msg *msg, struct cap_error *err)
{
        int64_t deadline = vm_now_ms() + q->timeout_ms;
        for (;;) {
                _cleanup_free_ char *line = NULL;
                int r = read_line(q, deadline, &line, err);
                if (r < 0)
                        return r;
                if (!*line)
                        continue;
                if ((r = qmp_parse_message(line, msg, err)) < 0)
                        return r;
                if (msg->kind != QMP_MSG_EVENT)
                        return 0;
                q->events |= qmp_event_bit(msg->event);
                qmp_msg_release(msg);
        }
}

static int send_all(int fd, const char *s, size_t len, struct cap_error *err)
{
        while (len) {
                ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return cap_error_errno(err, -errno, "QMP: send");
                }
                s += n;
                len -= (size_t)n;
        }
        return 0;
}

int qmp_execute(struct qmp *q, const char *cmd, struct json_object *args,
                struct json_object **reply, struct cap_error *err)
{
        struct json_object *o = json_object_new_object();
        if (!o)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        long long id = q->next_id++;
        json_object_object_add(o, "execute", json_object_new_string(cmd));
        if (args)
                json_object_object_add(o, "arguments", json_object_get(args));
        json_object_object_add(o, "id", json_object_new_int64(id));
        _cleanup_free_ char *line = NULL;
        int r = asprintf(&line, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        json_object_put(o);
        if (r < 0) {
                line = NULL;
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        if ((r = send_all(q->fd, line, strlen(line), err)) < 0)
                return cap_error_prefix(err, "%s", cmd);
        for (;;) {
                struct qmp_msg msg;
                if ((r = read_reply(q, &msg, err)) < 0)
                        return cap_error_prefix(err, "%s", cmd);
                if (msg.id != id) { /* a stray reply (the greeting, an old command): skip */
                        qmp_msg_release(&msg);
                        continue;
                }
                if (msg.kind == QMP_MSG_ERROR) {
                        r = cap_error_set(err, -EREMOTEIO, CAP_FAILED_PRECONDITION, "%s: %s: %s",
                                          cmd, msg.error_class, msg.error_desc);
                        qmp_msg_release(&msg);
                        return r;
                }
                if (reply)
                        *reply = msg.ret ? json_object_get(msg.ret) : NULL;
                qmp_msg_release(&msg);
                return 0;
        }
}

static int connect_unix(const char *path, int timeout_ms, int *fd_out, struct cap_error *err)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT,
                                     "QMP socket %s: path too long", path);
        strcpy(sa.sun_path, path);
        int64_t deadline = vm_now_ms() + timeout_ms;
        for (;;) {
                _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return cap_error_errno(err, -errno, "QMP: socket");
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                        *fd_out = TAKE_FD(fd);
                        return 0;
                }
                int e = errno;
                if ((e != ENOENT && e != ECONNREFUSED) || vm_now_ms() >= deadline)
                        return cap_error_errno(err, -e, "QMP: connect %s", path);
                struct timespec ts = {.tv_nsec = 20 * 1000000};
                nanosleep(&ts, NULL);
        }
}

int qmp_connect(const char *path, int timeout_ms, struct qmp **out, struct cap_error *err)
{
        if (timeout_ms <= 0)
                timeout_ms = QMP_DEFAULT_TIMEOUT_MS;
        struct qmp *q = calloc(1, sizeof(*q));
        if (!q)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        q->fd = -1;
        q->timeout_ms = timeout_ms;
        q->next_id = 1;
        int r = connect_unix(path, timeout_ms, &q->fd, err);
        if (r < 0) {
                qmp_close(q);
                return r;
        }
        struct qmp_msg msg;
        if ((r = read_reply(q, &msg, err)) < 0) {
                qmp_close(q);
                return cap_error_prefix(err, "QMP greeting from %s", path);
        }
        bool greeting = msg.kind == QMP_MSG_GREETING;
        qmp_msg_release(&msg);
        if (!greeting) {
                qmp_close(q);
                return cap_error_set(err, -EPROTO, CAP_INTERNAL,
                                     "QMP %s: first message is not a greeting", path);
        }
        if ((r = qmp_execute(q, "qmp_capabilities", NULL, NULL, err)) < 0) {
                qmp_close(q);
                return cap_error_prefix(err, "QMP %s", path);
        }
        *out = q;
        return 0;
}

void qmp_close(struct qmp *q)
{
        if (!q)
                return;
        if (q->fd >= 0)
                close(q->fd);
        free(q->buf);
        free(q);
}

unsigned qmp_events(const struct qmp *q)
{
        return q->events;
}

int qmp_query_status(struct qmp *q, char *status, size_t len, bool *running, struct cap_error *err)
{
        struct json_object *ret = NULL;
        int r = qmp_execute(q, "query-status", NULL, &ret, err);
        if (r < 0)
                return r;
        const char *s = ret ? get_str(ret, "status") : NULL;
        struct json_object *v;
        bool run =
            ret && json_object_object_get_ex(ret, "running", &v) && json_object_get_boolean(v);
        if (!s) {
                json_object_put(ret);
                return cap_error_set(err, -EPROTO, CAP_INTERNAL,
                                     "query-status: reply has no status");
        }
        if (status)
                snprintf(status, len, "%s", s);
        if (running)
                *running = run;
        json_object_put(ret);
        return 0;
}

int qmp_quit(struct qmp *q, struct cap_error *err)
{
        struct cap_error e = {0};
        int r = qmp_execute(q, "quit", NULL, NULL, &e);
        if (r == -ECONNRESET || r == -EPIPE)
                return 0; /* QEMU exited before its reply reached us */
        if (r < 0 && err)
                *err = e;
        return r;
}

int qmp_system_powerdown(struct qmp *q, struct cap_error *err)
{
        return qmp_execute(q, "system_powerdown", NULL, NULL, err);
}
