/* A microVM's run config (capsule.guest.v1.RunConfig, the guest's /dev/vda) from the OCI runtime
 * spec containerd/spec.c generates for the same workload: one resolution of entrypoint, command,
 * environment, working directory and user for both kinds of workload. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "runconfig.h"

/* One volume as the guest sees it: the virtio-blk device and where to mount it. */
struct vm_runspec_volume {
        const char *device; /* "/dev/vdc" */
        const char *path;   /* the manifest's mount path */
        bool read_only;
};

/* Reads process.args/env/cwd/user of spec_json into a new RunConfig (runconfig_free) with the
 * hostname, volumes and stop grace period, and validates it (INVALID_ARGUMENT naming the rule). */
int vm_runconfig_from_spec(const char *spec_json, const char *hostname,
                           const struct vm_runspec_volume *volumes, size_t n_volumes,
                           uint32_t stop_grace_seconds, RunConfig **out, struct cap_error *err);
