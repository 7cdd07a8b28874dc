/* The seccomp profile of unprivileged containers, as the OCI spec's linux.seccomp object.
 *
 * An allow-list: any system call not named is refused with EPERM. It is generated from one table
 * (spec_seccomp.c) that says, for every syscall a container may make, which capabilities unlock
 * it (none: every container) and what a container without them gets instead (nothing, an
 * argument filter, or ENOSYS). Privileged containers get no profile at all. */
#pragma once

#include <stdint.h>

#include <json-c/json.h>

/* caps: the capabilities the workload's process holds, bit N = capability N (CAP_SYS_ADMIN is
 * 21). Returns a new object (caller owns it), NULL when out of memory. */
json_object *spec_seccomp_profile(uint64_t caps);
