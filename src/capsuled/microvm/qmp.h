/* A small QMP (QEMU Machine Protocol) client over QEMU's unix control socket: connect, read the
 * greeting, negotiate capabilities, run commands. Messages are one JSON object per line; events
 * ({"event": ...}) may arrive between a command and its reply: they are skipped and the ones a
 * driver cares about are remembered (qmp_events). Every read has a timeout.
 * QEMU serves one QMP client at a time on a socket: connect, do the work, close. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "common/error.h"

#define QMP_DEFAULT_TIMEOUT_MS 5000

/* Events recorded while waiting for replies. */
#define QMP_EVENT_SHUTDOWN (1u << 0)
#define QMP_EVENT_POWERDOWN (1u << 1)
#define QMP_EVENT_STOP (1u << 2)
#define QMP_EVENT_RESET (1u << 3)

enum qmp_msg_kind {
        QMP_MSG_GREETING,
        QMP_MSG_RETURN,
        QMP_MSG_ERROR,
        QMP_MSG_EVENT,
};

/* One parsed QMP message. obj owns everything; the other pointers borrow from it. */
struct qmp_msg {
        enum qmp_msg_kind kind;
        struct json_object *obj;
        struct json_object *ret; /* QMP_MSG_RETURN: the "return" value */
        const char *event;       /* QMP_MSG_EVENT: its name */
        const char *error_class; /* QMP_MSG_ERROR */
        const char *error_desc;
        long long id; /* the "id" member echoed by QEMU, -1 if none */
};

/* Parses one line from QEMU. Pure; -EPROTO (err says why) on anything that is not QMP. */
int qmp_parse_message(const char *line, struct qmp_msg *msg, struct cap_error *err);
void qmp_msg_release(struct qmp_msg *msg);
/* The QMP_EVENT_* bit for an event name, 0 for events nobody records. */
unsigned qmp_event_bit(const char *name);

struct qmp;

/* Connects to path (retrying while the socket is not there yet, up to timeout_ms), reads the
 * greeting and runs qmp_capabilities. timeout_ms also becomes the per-reply timeout. */
int qmp_connect(const char *path, int timeout_ms, struct qmp **out, struct cap_error *err);
void qmp_close(struct qmp *q);
static inline void qmp_closep(struct qmp **q)
{
        if (*q)
                qmp_close(*q);
}
#define _cleanup_qmp_ __attribute__((cleanup(qmp_closep)))

/* Runs cmd with args (borrowed, may be NULL) and waits for its reply. On success *reply (if not
 * NULL) gets a new reference to the "return" value (json_object_put it). A QMP error reply is
 * -EREMOTEIO with "cmd: ErrorClass: description". */
int qmp_execute(struct qmp *q, const char *cmd, struct json_object *args,
                struct json_object **reply, struct cap_error *err);
/* query-status: status is e.g. "running", "paused", "shutdown", "prelaunch". */
int qmp_query_status(struct qmp *q, char *status, size_t len, bool *running, struct cap_error *err);
/* quit: QEMU exits at once (a closed connection in place of the reply counts as success). */
int qmp_quit(struct qmp *q, struct cap_error *err);
/* system_powerdown: ACPI power button; the guest decides what to do with it. */
int qmp_system_powerdown(struct qmp *q, struct cap_error *err);
/* QMP_EVENT_* bits seen on this connection so far. */
unsigned qmp_events(const struct qmp *q);
