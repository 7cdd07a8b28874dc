/* Resource use of a container from its cgroup: cgroup v2 (the OS) or v1 (a development host with
 * per-controller hierarchies), whichever the files say. */
#pragma once

#include <stdint.h>

struct cgroup_stats {
        uint64_t memory_bytes;   /* memory.current / memory.usage_in_bytes */
        uint64_t cpu_usage_usec; /* cpu.stat usage_usec / cpuacct.usage (ns) / 1000 */
        uint32_t pids;           /* pids.current */
};

/* Reads the stats of cgroup `path` ("/capsule/web") under `root` ("/sys/fs/cgroup"; tests pass a
 * directory of their own). Returns 0 when at least the memory figure was found, -ENOENT if the
 * cgroup does not exist. */
int cgroup_stats_read(const char *root, const char *path, struct cgroup_stats *out);
