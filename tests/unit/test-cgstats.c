/* Unit tests for src/capsuled/serve/cgstats.c on fake cgroup trees: v2 (one directory) and v1
 * (per-controller hierarchies, cpuacct in nanoseconds), a missing cgroup, a partial one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fs.h"
#include "serve/cgstats.h"
#include "test.h"

static char root[256];

static void put(const char *rel, const char *text)
{
        char p[512], dir[512];
        snprintf(p, sizeof(p), "%s/%s", root, rel);
        snprintf(dir, sizeof(dir), "%s", p);
        *strrchr(dir, '/') = '\0';
        mkdir_p(dir, 0755);
        FILE *f = fopen(p, "w");
        if (f) {
                fputs(text, f);
                fclose(f);
        }
}

TEST(v2)
{
        put("v2/capsule/web/memory.current", "12582912\n");
        put("v2/capsule/web/cpu.stat",
            "usage_usec 4500123\nuser_usec 4000000\nsystem_usec 500123\n");
        put("v2/capsule/web/pids.current", "3\n");
        char r[300];
        snprintf(r, sizeof(r), "%s/v2", root);
        struct cgroup_stats st;
        CHECK(cgroup_stats_read(r, "/capsule/web", &st) == 0);
        CHECK(st.memory_bytes == 12582912);
        CHECK(st.cpu_usage_usec == 4500123);
        CHECK(st.pids == 3);
        CHECK(cgroup_stats_read(r, "/capsule/absent", &st) == -ENOENT);
}

TEST(v1)
{
        put("v1/memory/capsule/db/memory.usage_in_bytes", "1048576\n");
        put("v1/cpuacct/capsule/db/cpuacct.usage", "2000000999\n");
        put("v1/pids/capsule/db/pids.current", "7\n");
        char r[300];
        snprintf(r, sizeof(r), "%s/v1", root);
        struct cgroup_stats st;
        CHECK(cgroup_stats_read(r, "/capsule/db", &st) == 0);
        CHECK(st.memory_bytes == 1048576);
        CHECK(st.cpu_usage_usec == 2000000);
        CHECK(st.pids == 7);
        /* memory only (no cpuacct/pids hierarchies): the rest stays 0 */
        put("v1/memory/capsule/lone/memory.usage_in_bytes", "4096\n");
        CHECK(cgroup_stats_read(r, "/capsule/lone", &st) == 0);
        CHECK(st.memory_bytes == 4096 && st.cpu_usage_usec == 0 && st.pids == 0);
        CHECK(cgroup_stats_read(r, "/capsule/absent", &st) == -ENOENT);
}

TEST(garbage)
{
        put("bad/capsule/x/memory.current", "max\n");
        char r[300];
        snprintf(r, sizeof(r), "%s/bad", root);
        struct cgroup_stats st;
        CHECK(cgroup_stats_read(r, "/capsule/x", &st) < 0);
}

int main(void)
{
        snprintf(root, sizeof(root), "/tmp/capsule-cgstats-XXXXXX");
        if (!mkdtemp(root))
                return 1;
        RUN(v2);
        RUN(v1);
        RUN(garbage);
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", root);
        return test_summary();
}
