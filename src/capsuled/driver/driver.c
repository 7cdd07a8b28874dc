/* The driver table (driver.h): which driver runs which kind of workload, and the answers for
 * kinds or operations a capsule does not have. */
#include "driver.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int driver_kind_index(Capsule__V1__WorkloadKind kind)
{
        switch (kind) {
        case CAPSULE__V1__WORKLOAD_KIND__MICROVM:
                return 1;
        case CAPSULE__V1__WORKLOAD_KIND__CONTAINER:
        case CAPSULE__V1__WORKLOAD_KIND__WORKLOAD_KIND_UNSPECIFIED:
                return 0;
        default:
                return -1;
        }
}

struct workload_driver *driver_for_kind(const struct driver_table *t,
                                        Capsule__V1__WorkloadKind kind, const char **why)
{
        int i = driver_kind_index(kind);
        if (i < 0) {
                if (why)
                        *why = "unknown workload kind";
                return NULL;
        }
        if (!t->by_kind[i] && why)
                *why = t->unavailable[i][0] ? t->unavailable[i] : "no driver for this kind";
        return t->by_kind[i];
}

void driver_table_free(struct driver_table *t)
{
        for (size_t i = 0; i < DRIVER_KINDS; i++)
                if (t->by_kind[i])
                        t->by_kind[i]->ops->free(t->by_kind[i]);
        memset(t, 0, sizeof(*t));
}

int driver_exec_start(struct workload_driver *d, const struct driver_exec_req *req,
                      struct driver_exec **x, uint32_t *pid, struct cap_error *err)
{
        if (!d->ops->exec_start)
                return cap_error_set(err, -ENOTSUP, CAP_FAILED_PRECONDITION,
                                     "exec in %s: exec is not supported for a %s", req->name,
                                     d->noun);
        return d->ops->exec_start(d, req, x, pid, err);
}
