/* Error reporting shared by every Capsule program.
 *
 * Fallible functions return int (0 on success, a negative errno-style value on failure) and fill
 * a struct cap_error with a human message and a gRPC-compatible status code. Callers add context
 * on the way up with cap_error_prefix(): "create volume `data`: lvcreate: exit 5: ...". */
#pragma once

#include <stdarg.h>

/* Numeric values are gRPC's status codes, so handlers can return them unchanged. */
enum cap_status {
        CAP_OK = 0,
        CAP_CANCELLED = 1,
        CAP_UNKNOWN = 2,
        CAP_INVALID_ARGUMENT = 3,
        CAP_DEADLINE_EXCEEDED = 4,
        CAP_NOT_FOUND = 5,
        CAP_ALREADY_EXISTS = 6,
        CAP_PERMISSION_DENIED = 7,
        CAP_RESOURCE_EXHAUSTED = 8,
        CAP_FAILED_PRECONDITION = 9,
        CAP_ABORTED = 10,
        CAP_OUT_OF_RANGE = 11,
        CAP_UNIMPLEMENTED = 12,
        CAP_INTERNAL = 13,
        CAP_UNAVAILABLE = 14,
        CAP_DATA_LOSS = 15,
        CAP_UNAUTHENTICATED = 16,
};

struct cap_error {
        int code;             /* negative errno-style value, 0 if none */
        enum cap_status status;
        char msg[1024];
};

/* Sets the error and returns -abs(code) (or -EINVAL when code is 0), for `return cap_error_set(...)`. */
int cap_error_set(struct cap_error *err, int code, enum cap_status status, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Like cap_error_set with status derived from code, appending strerror(-code). */
int cap_error_errno(struct cap_error *err, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* Prepends "context: " to the message; keeps code and status. Returns err->code. */
int cap_error_prefix(struct cap_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cap_error_clear(struct cap_error *err);
const char *cap_status_name(enum cap_status status);
