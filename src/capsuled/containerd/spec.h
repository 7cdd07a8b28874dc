/* OCI runtime spec generation for Capsule containers.
 *
 * Turns an image's OCI config (Entrypoint, Cmd, Env, WorkingDir, User) and a workload manifest
 * (capsule.v1.WorkloadSpec) into the runtime spec JSON that containerd hands to runc. Pure: no
 * syscalls except reading the rootfs' /etc/passwd and /etc/group when the caller asks for user
 * names to be resolved. The defaults follow Docker's: default capabilities, a seccomp allow-list (spec_seccomp.h),
 * no-new-privileges, masked /proc paths; `privileged: true` lifts all of them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsule/v1/workloads.pb-c.h"
#include "common/error.h"

/* Every workload's cgroup is SPEC_CGROUP_PARENT/NAME (under /sys/fs/cgroup, or each v1 hierarchy).
 */
#define SPEC_CGROUP_PARENT "/capsule"

struct spec_options {
        const Capsule__V1__WorkloadSpec *workload; /* required; name becomes the hostname */
        /* The image's OCI config blob ({"config": {...}, ...}) or just its "config" object; NULL
         * when the image has none. */
        const char *image_config_json;
        /* Host path of the unpacked rootfs, to resolve user and group names; NULL: numeric only. */
        const char *rootfs;
        /* Host source of each workload->mounts[i] (same order, n_mounts entries). */
        const char *const *volume_sources;
        /* Existing network namespace to join (e.g. /run/netns/web); NULL: a new, empty one. */
        const char *netns_path;
        /* Files bind-mounted at /etc/hosts, /etc/resolv.conf, /etc/hostname when non-NULL. */
        const char *hosts_path;
        const char *resolv_conf_path;
        const char *hostname_path;
        const char *cgroups_path; /* NULL: SPEC_CGROUP_PARENT "/<name>" */
        int64_t pids_limit;       /* 0: no limit */
        bool terminal;            /* process.terminal (a PTY instead of FIFOs) */
        /* Debug containers: share namespaces instead of making new ones. host_namespaces keeps
         * the host's pid, ipc, uts and network namespaces; join_pid > 0 joins those of that
         * process (a target container's init) instead. Either way no hostname is set (it would
         * rename the host or the target). Only the mount namespace is the container's own. */
        bool host_namespaces;
        uint32_t join_pid;
        /* Privileged: the capabilities to give, bit N = capability N (0: every one known).
         * Debug containers pass capsuled's own bounding set, as Docker's --privileged does: runc
         * cannot grant what the runtime itself lacks (e.g. in a container). */
        uint64_t privileged_caps;
        /* Debug containers: the host's "/" is bind-mounted (recursively, read-write) here. */
        const char *host_root;
};

/* Generates the runtime spec as a JSON string (caller frees). INVALID_ARGUMENT names the field
 * at fault (no command at all, relative working directory, unknown user, missing volume source). */
int spec_generate(const struct spec_options *opts, char **out_json, struct cap_error *err);

/* True when the user to run as (the manifest's, else the image config's) has a name in it, so
 * spec_generate needs opts->rootfs to resolve it. */
bool spec_user_names(const struct spec_options *opts);
/* Whether an image config (as spec_options.image_config_json) names an Entrypoint or a Cmd. */
bool spec_image_has_command(const char *image_config_json);

/* The process part only (args, env, cwd, user, capabilities...), as JSON: for Tasks.Exec. argv
 * NULL-terminated; env "K=V" entries are appended to the image's environment. */
int spec_exec_process(const char *spec_json, const char *const *argv, const char *const *env,
                      bool terminal, char **out_json, struct cap_error *err);

/* Resolves "user[:group]" (names or numbers) against rootfs/etc/passwd and /etc/group (rootfs may
 * be NULL: numbers only). Fills uid, gid and up to *n_extra supplementary gids. */
int spec_resolve_user(const char *rootfs, const char *user, uint32_t *uid, uint32_t *gid,
                      uint32_t *extra_gids, size_t *n_extra, struct cap_error *err);
