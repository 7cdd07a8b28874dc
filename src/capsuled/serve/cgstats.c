/* cgroup figures for `capsulectl top`: plain file reads, no containerd round trip. */
#include "cgstats.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The first unsigned number in the file (or on the line starting with key, for keyed files). */
static int read_u64(const char *root, const char *ctrl, const char *path, const char *file,
                    const char *key, uint64_t *out)
{
        char p[512], line[256];
        snprintf(p, sizeof(p), "%s%s%s%s/%s", root, ctrl ? "/" : "", ctrl ? ctrl : "", path, file);
        FILE *f = fopen(p, "re");
        if (!f)
                return -errno;
        int r = -EINVAL;
        while (fgets(line, sizeof(line), f)) {
                const char *v = line;
                if (key) {
                        size_t kl = strlen(key);
                        if (strncmp(line, key, kl) != 0 || line[kl] != ' ')
                                continue;
                        v = line + kl + 1;
                }
                if (sscanf(v, "%" SCNu64, out) == 1)
                        r = 0;
                break;
        }
        fclose(f);
        return r;
}

int cgroup_stats_read(const char *root, const char *path, struct cgroup_stats *out)
{
        uint64_t v = 0;
        *out = (struct cgroup_stats){0};
        /* cgroup v2: one directory with every controller's files */
        if (read_u64(root, NULL, path, "memory.current", NULL, &out->memory_bytes) == 0) {
                if (read_u64(root, NULL, path, "cpu.stat", "usage_usec", &v) == 0)
                        out->cpu_usage_usec = v;
                if (read_u64(root, NULL, path, "pids.current", NULL, &v) == 0)
                        out->pids = (uint32_t)v;
                return 0;
        }
        /* cgroup v1: one hierarchy per controller */
        int r = read_u64(root, "memory", path, "memory.usage_in_bytes", NULL, &out->memory_bytes);
        if (r < 0)
                return r == -ENOENT ? -ENOENT : r;
        if (read_u64(root, "cpuacct", path, "cpuacct.usage", NULL, &v) == 0 ||
            read_u64(root, "cpu,cpuacct", path, "cpuacct.usage", NULL, &v) == 0)
                out->cpu_usage_usec = v / 1000;
        if (read_u64(root, "pids", path, "pids.current", NULL, &v) == 0)
                out->pids = (uint32_t)v;
        return 0;
}
