/* Implementation of struct cap_error helpers (see error.h). */
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static enum cap_status status_from_errno(int code)
{
        switch (code < 0 ? -code : code) {
        case ENOENT: return CAP_NOT_FOUND;
        case EEXIST: return CAP_ALREADY_EXISTS;
        case EINVAL: return CAP_INVALID_ARGUMENT;
        case EACCES:
        case EPERM: return CAP_PERMISSION_DENIED;
        case EBUSY: return CAP_FAILED_PRECONDITION;
        case ENOSPC:
        case ENOMEM:
        case E2BIG:
        case EFBIG: return CAP_RESOURCE_EXHAUSTED;
        case ETIMEDOUT: return CAP_DEADLINE_EXCEEDED;
        case ECONNREFUSED:
        case EAGAIN: return CAP_UNAVAILABLE;
        case ENOSYS:
        case EOPNOTSUPP: return CAP_UNIMPLEMENTED;
        case ECANCELED: return CAP_CANCELLED;
        default: return CAP_INTERNAL;
        }
}

int cap_error_set(struct cap_error *err, int code, enum cap_status status, const char *fmt, ...)
{
        int c = code == 0 ? -EINVAL : (code < 0 ? code : -code);
        if (err) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
                va_end(ap);
                err->code = c;
                err->status = status;
        }
        return c;
}

int cap_error_errno(struct cap_error *err, int code, const char *fmt, ...)
{
        int c = code == 0 ? -EIO : (code < 0 ? code : -code);
        if (err) {
                char buf[sizeof(err->msg)];
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(buf, sizeof(buf), fmt, ap);
                va_end(ap);
                snprintf(err->msg, sizeof(err->msg), "%s: %s", buf, strerror(-c));
                err->code = c;
                err->status = status_from_errno(c);
        }
        return c;
}

int cap_error_prefix(struct cap_error *err, const char *fmt, ...)
{
        if (!err)
                return -EINVAL;
        char ctx[512], old[sizeof(err->msg)];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx, sizeof(ctx), fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof(old));
        snprintf(err->msg, sizeof(err->msg), "%s: %s", ctx, old);
        if (err->code == 0)
                err->code = -EIO;
        if (err->status == CAP_OK)
                err->status = CAP_INTERNAL;
        return err->code;
}

void cap_error_clear(struct cap_error *err)
{
        if (err) {
                err->code = 0;
                err->status = CAP_OK;
                err->msg[0] = '\0';
        }
}

const char *cap_status_name(enum cap_status s)
{
        static const char *const names[] = {
                "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                "UNAUTHENTICATED",
        };
        if ((unsigned)s < sizeof(names) / sizeof(names[0]))
                return names[s];
        return "UNKNOWN";
}
