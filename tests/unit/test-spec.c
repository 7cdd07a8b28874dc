/* Unit tests for the OCI runtime spec generator (src/capsuled/containerd/spec.c): Docker's
 * entrypoint/cmd rules, env merging, users, privileged vs default, resources and mounts, and the
 * seccomp allow-list of spec_seccomp.c (its shape, filters and capability-gated groups). */
#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "spec.h"
#include "spec_seccomp.h"
#include "test.h"

#define WL_INIT CAPSULE__V1__WORKLOAD_SPEC__INIT

static json_object *gen(const struct spec_options *o)
{
        struct cap_error err = {0};
        char *s = NULL;
        int r = spec_generate(o, &s, &err);
        if (r < 0) {
                fprintf(stderr, "  spec_generate: %s\n", err.msg);
                return NULL;
        }
        json_object *j = json_tokener_parse(s);
        free(s);
        return j;
}

static json_object *at(json_object *j, const char *path)
{
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", path);
        char *save = NULL;
        for (char *k = strtok_r(buf, ".", &save); k && j; k = strtok_r(NULL, ".", &save)) {
                json_object *n = NULL;
                if (json_object_is_type(j, json_type_array))
                        n = json_object_array_get_idx(j, (size_t)atoi(k));
                else if (!json_object_object_get_ex(j, k, &n))
                        n = NULL;
                j = n;
        }
        return j;
}

/* Joins a JSON string array with spaces, for compact comparisons. */
static const char *joined(json_object *a)
{
        static char buf[1024];
        buf[0] = '\0';
        for (size_t i = 0; a && i < json_object_array_length(a); i++) {
                if (i)
                        strncat(buf, " ", sizeof(buf) - strlen(buf) - 1);
                strncat(buf, json_object_get_string(json_object_array_get_idx(a, i)),
                        sizeof(buf) - strlen(buf) - 1);
        }
        return buf;
}

static bool array_has(json_object *a, const char *s)
{
        for (size_t i = 0; a && i < json_object_array_length(a); i++)
                if (strcmp(json_object_get_string(json_object_array_get_idx(a, i)), s) == 0)
                        return true;
        return false;
}

static json_object *find_mount(json_object *spec, const char *dest)
{
        json_object *m = at(spec, "mounts");
        for (size_t i = 0; m && i < json_object_array_length(m); i++) {
                json_object *e = json_object_array_get_idx(m, i);
                if (strcmp(json_object_get_string(at(e, "destination")), dest) == 0)
                        return e;
        }
        return NULL;
}

TEST(entrypoint_cmd_table)
{
        static const struct {
                const char *image;
                const char *cmd[3], *args[3];
                const char *want;
        } cases[] = {
            {"{\"config\":{\"Entrypoint\":[\"/ep\"],\"Cmd\":[\"c1\",\"c2\"]}}",
             {0},
             {0},
             "/ep c1 c2"},
            {"{\"config\":{\"Entrypoint\":[\"/ep\"],\"Cmd\":[\"c1\"]}}", {"/x"}, {0}, "/x"},
            {"{\"config\":{\"Entrypoint\":[\"/ep\"],\"Cmd\":[\"c1\"]}}",
             {0},
             {"a1", "a2"},
             "/ep a1 a2"},
            {"{\"config\":{\"Entrypoint\":[\"/ep\"],\"Cmd\":[\"c1\"]}}", {"/x"}, {"a1"}, "/x a1"},
            {"{\"config\":{\"Cmd\":[\"sh\",\"-c\",\"true\"]}}", {0}, {0}, "sh -c true"},
            {"{\"config\":{\"Cmd\":[\"sh\"]}}", {0}, {"ls"}, "ls"},
            {"{\"Entrypoint\":[\"/bare\"]}", {0}, {0}, "/bare"},
            {NULL, {"/only"}, {0}, "/only"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                Capsule__V1__WorkloadSpec w = WL_INIT;
                char *cmd[3] = {0}, *args[3] = {0};
                w.name = "web";
                for (size_t k = 0; k < 3 && cases[i].cmd[k]; k++)
                        cmd[w.n_command++] = (char *)cases[i].cmd[k];
                for (size_t k = 0; k < 3 && cases[i].args[k]; k++)
                        args[w.n_args++] = (char *)cases[i].args[k];
                w.command = cmd;
                w.args = args;
                struct spec_options o = {.workload = &w, .image_config_json = cases[i].image};
                json_object *s = gen(&o);
                CHECK(s != NULL);
                CHECK_STR_EQ(joined(at(s, "process.args")), cases[i].want);
                json_object_put(s);
        }
}

TEST(no_command_is_invalid)
{
        Capsule__V1__WorkloadSpec w = WL_INIT;
        w.name = "web";
        struct spec_options o = {.workload = &w, .image_config_json = "{\"config\":{}}"};
        struct cap_error err = {0};
        char *s = NULL;
        CHECK(spec_generate(&o, &s, &err) < 0);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.msg, "command");
        o.image_config_json = "{not json";
        CHECK(spec_generate(&o, &s, &err) < 0);
        CHECK_CONTAINS(err.msg, "image config");
}

TEST(env_merge)
{
        Capsule__V1__WorkloadSpec w = WL_INIT;
        Capsule__V1__WorkloadSpec__EnvEntry e1 = CAPSULE__V1__WORKLOAD_SPEC__ENV_ENTRY__INIT,
                                            e2 = CAPSULE__V1__WORKLOAD_SPEC__ENV_ENTRY__INIT;
        e1.key = "TZ";
        e1.value = "Europe/Paris";
        e2.key = "A";
        e2.value = "manifest";
        Capsule__V1__WorkloadSpec__EnvEntry *env[] = {&e1, &e2};
        char *secret[] = {"A"}; /* secret only in API output: the process gets the value */
        w.name = "web";
        w.env = env;
        w.n_env = 2;
        w.secret_env = secret;
        w.n_secret_env = 1;
        struct spec_options o = {
            .workload = &w,
            .image_config_json =
                "{\"config\":{\"Cmd\":[\"x\"],\"Env\":[\"PATH=/img/bin\",\"A=image\",\"B=b=c\"]}}",
        };
        json_object *s = gen(&o);
        CHECK_STR_EQ(joined(at(s, "process.env")),
                     "PATH=/img/bin A=manifest B=b=c TZ=Europe/Paris");
        json_object_put(s);

        o.image_config_json = "{\"config\":{\"Cmd\":[\"x\"]}}";
        w.n_env = 0;
        s = gen(&o);
        CHECK_CONTAINS(joined(at(s, "process.env")), "PATH=/usr/local/sbin:");
        json_object_put(s);
}

TEST(cwd_and_user)
{
        Capsule__V1__WorkloadSpec w = WL_INIT;
        w.name = "web";
        struct spec_options o = {
            .workload = &w,
            .image_config_json =
                "{\"config\":{\"Cmd\":[\"x\"],\"WorkingDir\":\"/srv\",\"User\":\"33:44\"}}",
        };
        json_object *s = gen(&o);
        CHECK_STR_EQ(json_object_get_string(at(s, "process.cwd")), "/srv");
        CHECK(json_object_get_int(at(s, "process.user.uid")) == 33);
        CHECK(json_object_get_int(at(s, "process.user.gid")) == 44);
        json_object_put(s);

        w.working_dir = "/app";
        w.user = "1000";
        s = gen(&o);
        CHECK_STR_EQ(json_object_get_string(at(s, "process.cwd")), "/app");
        CHECK(json_object_get_int(at(s, "process.user.uid")) == 1000);
        CHECK(json_object_get_int(at(s, "process.user.gid")) == 0);
        json_object_put(s);

        w.working_dir = "relative";
        struct cap_error err = {0};
        char *out = NULL;
        CHECK(spec_generate(&o, &out, &err) < 0);
        CHECK_CONTAINS(err.msg, "workingDir");
        w.working_dir = NULL;
        w.user = "nginx";
        CHECK(spec_generate(&o, &out, &err) < 0);
        CHECK_CONTAINS(err.msg, "nginx");
}

TEST(user_names_from_rootfs)
{
        char dir[] = "/tmp/test-spec-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        char path[512];
        snprintf(path, sizeof(path), "%s/etc", dir);
        CHECK(mkdir(path, 0755) == 0);
        snprintf(path, sizeof(path), "%s/etc/passwd", dir);
        FILE *f = fopen(path, "w");
        fputs("root:x:0:0:root:/root:/bin/sh\nnginx:x:101:102:nginx:/:/sbin/nologin\n", f);
        fclose(f);
        snprintf(path, sizeof(path), "%s/etc/group", dir);
        f = fopen(path, "w");
        fputs("root:x:0:\nnginx:x:102:\nwww:x:33:nginx,other\naudio:x:29:other\n", f);
        fclose(f);

        uint32_t uid, gid, extra[8];
        size_t n = 8;
        struct cap_error err = {0};
        CHECK(spec_resolve_user(dir, "nginx", &uid, &gid, extra, &n, &err) == 0);
        CHECK(uid == 101 && gid == 102);
        CHECK(n == 1 && extra[0] == 33);
        n = 8;
        CHECK(spec_resolve_user(dir, "101:www", &uid, &gid, extra, &n, &err) == 0);
        CHECK(uid == 101 && gid == 33 && n == 0);
        n = 8;
        CHECK(spec_resolve_user(dir, "nginx:audio", &uid, &gid, extra, &n, &err) == 0);
        CHECK(uid == 101 && gid == 29);
        CHECK(spec_resolve_user(dir, "ghost", &uid, &gid, NULL, NULL, &err) < 0);
        CHECK(spec_resolve_user(dir, "0:nogroup", &uid, &gid, NULL, NULL, &err) < 0);
        CHECK(spec_resolve_user(NULL, "", &uid, &gid, NULL, NULL, &err) == 0 && uid == 0 &&
              gid == 0);

        snprintf(path, sizeof(path), "rm -rf '%s'", dir);
        CHECK(system(path) == 0);
}

/* An image's /etc/passwd or /etc/group that is a symlink (absolute, or climbing with "..") is
 * resolved inside the image root (openat2 RESOLVE_IN_ROOT): the host's files are never read. */
TEST(user_files_stay_in_the_image)
{
        static const char *const targets[] = {"/etc/passwd", "../../../../../../etc/passwd"};
        for (size_t t = 0; t < 2; t++) {
                char dir[] = "/tmp/test-spec-XXXXXX";
                CHECK(mkdtemp(dir) != NULL);
                char path[512];
                snprintf(path, sizeof(path), "%s/etc", dir);
                CHECK(mkdir(path, 0755) == 0);
                snprintf(path, sizeof(path), "%s/etc/passwd", dir);
                CHECK(symlink(targets[t], path) == 0);
                snprintf(path, sizeof(path), "%s/etc/group", dir);
                CHECK(symlink(t ? "../../../../etc/group" : "/etc/group", path) == 0);
                uint32_t uid = 1, gid = 1;
                struct cap_error err = {0};
                /* the host has "nobody" and "root"; the image has neither */
                CHECK(spec_resolve_user(dir, "nobody", &uid, &gid, NULL, NULL, &err) < 0);
                CHECK(err.status == CAP_INVALID_ARGUMENT);
                CHECK_CONTAINS(err.msg, "user: ");
                CHECK(uid != 65534);
                err = (struct cap_error){0};
                CHECK(spec_resolve_user(dir, "0:root", &uid, &gid, NULL, NULL, &err) < 0);
                snprintf(path, sizeof(path), "rm -rf '%s'", dir);
                CHECK(system(path) == 0);
        }
}

TEST(default_vs_privileged)
{
        Capsule__V1__WorkloadSpec w = WL_INIT;
        w.name = "web";
        struct spec_options o = {.workload = &w,
                                 .image_config_json = "{\"config\":{\"Cmd\":[\"x\"]}}",
                                 .netns_path = "/run/netns/web"};
        json_object *s = gen(&o);
        CHECK_STR_EQ(json_object_get_string(at(s, "hostname")), "web");
        CHECK_STR_EQ(json_object_get_string(at(s, "root.path")), "rootfs");
        CHECK(json_object_get_boolean(at(s, "process.noNewPrivileges")));
        CHECK(json_object_array_length(at(s, "process.capabilities.bounding")) == 14);
        CHECK(array_has(at(s, "process.capabilities.effective"), "CAP_NET_BIND_SERVICE"));
        CHECK(!array_has(at(s, "process.capabilities.bounding"), "CAP_SYS_ADMIN"));
        CHECK(array_has(at(s, "linux.maskedPaths"), "/proc/kcore"));
        CHECK(array_has(at(s, "linux.readonlyPaths"), "/proc/sys"));
        CHECK_STR_EQ(json_object_get_string(at(s, "linux.seccomp.defaultAction")),
                     "SCMP_ACT_ERRNO");
        CHECK(!json_object_get_boolean(at(s, "linux.resources.devices.0.allow")));
        CHECK_STR_EQ(json_object_get_string(at(s, "linux.namespaces.4.type")), "network");
        CHECK_STR_EQ(json_object_get_string(at(s, "linux.namespaces.4.path")), "/run/netns/web");
        CHECK_STR_EQ(json_object_get_string(at(s, "linux.cgroupsPath")), "/capsule/web");
        CHECK(array_has(at(find_mount(s, "/sys"), "options"), "ro"));
        json_object_put(s);

        w.privileged = true;
        o.netns_path = NULL;
        s = gen(&o);
        CHECK(!json_object_get_boolean(at(s, "process.noNewPrivileges")));
        CHECK(array_has(at(s, "process.capabilities.bounding"), "CAP_SYS_ADMIN"));
        CHECK(at(s, "linux.seccomp") == NULL);
        CHECK(at(s, "linux.maskedPaths") == NULL);
        CHECK(at(s, "linux.readonlyPaths") == NULL);
        CHECK(json_object_get_boolean(at(s, "linux.resources.devices.0.allow")));
        CHECK(at(s, "linux.namespaces.4.path") == NULL);
        CHECK(array_has(at(find_mount(s, "/sys"), "options"), "rw"));
        json_object_put(s);
}

/* Debug containers: the host's namespaces or a process's, no hostname, / at /host, the
 * capabilities of the given bounding set. */
TEST(debug_namespaces_and_host_root)
{
        Capsule__V1__WorkloadSpec w = WL_INIT;
        w.name = "debug.0a1b2c3d";
        w.privileged = true;
        struct spec_options o = {.workload = &w,
                                 .image_config_json = "{\"config\":{\"Cmd\":[\"sh\"]}}",
                                 .cgroups_path = "/capsule-debug/debug.0a1b2c3d",
                                 .host_namespaces = true,
                                 .host_root = "/host",
                                 .privileged_caps = (1ULL << 41) - 1 - (1ULL << 24)};
        json_object *s = gen(&o);
        CHECK(at(s, "hostname") == NULL);
        CHECK(json_object_array_length(at(s, "linux.namespaces")) == 1);
        CHECK_STR_EQ(json_object_get_string(at(s, "linux.namespaces.0.type")), "mount");
        json_object *m = find_mount(s, "/host");
        CHECK(m != NULL);
        CHECK_STR_EQ(json_object_get_string(at(m, "source")), "/");
        CHECK(array_has(at(m, "options"), "rbind"));
        CHECK(array_has(at(m, "options"), "rw"));
        CHECK(array_has(at(s, "process.capabilities.bounding"), "CAP_SYS_ADMIN"));
        CHECK(!array_has(at(s, "process.capabilities.bounding"), "CAP_SYS_RESOURCE"));
        CHECK(json_object_array_length(at(s, "process.capabilities.effective")) == 40);
        CHECK(at(s, "linux.seccomp") == NULL);
        CHECK_STR_EQ(json_object_get_string(at(s, "linux.cgroupsPath")),
                     "/capsule-debug/debug.0a1b2c3d");
        json_object_put(s);

        o.host_namespaces = false;
        o.join_pid = 4242;
        s = gen(&o);
        CHECK(at(s, "hostname") == NULL);
        CHECK(json_object_array_length(at(s, "linux.namespaces")) == 5);
        CHECK_STR_EQ(json_object_get_string(at(s, "linux.namespaces.0.path")), "/proc/4242/ns/pid");
        CHECK_STR_EQ(json_object_get_string(at(s, "linux.namespaces.1.path")), "/proc/4242/ns/ipc");
        CHECK_STR_EQ(json_object_get_string(at(s, "linux.namespaces.2.path")), "/proc/4242/ns/uts");
        CHECK(at(s, "linux.namespaces.3.path") == NULL); /* its own mount namespace */
        CHECK_STR_EQ(json_object_get_string(at(s, "linux.namespaces.4.path")), "/proc/4242/ns/net");
        json_object_put(s);

        CHECK(spec_image_has_command("{\"config\":{\"Cmd\":[\"sh\"]}}"));
        CHECK(spec_image_has_command("{\"Entrypoint\":[\"/init\"]}"));
        CHECK(!spec_image_has_command("{\"config\":{\"Cmd\":[]}}"));
        CHECK(!spec_image_has_command(NULL));
        CHECK(!spec_image_has_command("not json"));
}

TEST(resources)
{
        Capsule__V1__WorkloadSpec w = WL_INIT;
        Capsule__V1__Resources res = CAPSULE__V1__RESOURCES__INIT;
        w.name = "web";
        res.cpus = 1.5;
        res.memory_bytes = 256ull << 20;
        w.resources = &res;
        struct spec_options o = {.workload = &w,
                                 .image_config_json = "{\"config\":{\"Cmd\":[\"x\"]}}",
                                 .pids_limit = 512};
        json_object *s = gen(&o);
        CHECK(json_object_get_int64(at(s, "linux.resources.cpu.quota")) == 150000);
        CHECK(json_object_get_int64(at(s, "linux.resources.cpu.period")) == 100000);
        CHECK(json_object_get_int64(at(s, "linux.resources.memory.limit")) == 268435456);
        CHECK(json_object_get_int64(at(s, "linux.resources.pids.limit")) == 512);
        json_object_put(s);

        res.cpus = 0;
        res.memory_bytes = 0;
        o.pids_limit = 0;
        s = gen(&o);
        CHECK(at(s, "linux.resources.cpu") == NULL);
        CHECK(at(s, "linux.resources.memory") == NULL);
        CHECK(at(s, "linux.resources.pids") == NULL);
        json_object_put(s);
}

TEST(mounts)
{
        Capsule__V1__WorkloadSpec w = WL_INIT;
        Capsule__V1__Mount m1 = CAPSULE__V1__MOUNT__INIT, m2 = CAPSULE__V1__MOUNT__INIT;
        m1.volume = "cache";
        m1.path = "/data/cache";
        m2.volume = "data";
        m2.path = "/data";
        m2.read_only = true;
        Capsule__V1__Mount *mounts[] = {&m1, &m2};
        const char *sources[] = {"/perm/volumes/cache", "/perm/volumes/data"};
        w.name = "web";
        w.mounts = mounts;
        w.n_mounts = 2;
        struct spec_options o = {.workload = &w,
                                 .image_config_json = "{\"config\":{\"Cmd\":[\"x\"]}}",
                                 .volume_sources = sources,
                                 .hosts_path = "/run/capsule/web/hosts",
                                 .resolv_conf_path = "/run/capsule/web/resolv.conf"};
        json_object *s = gen(&o);
        static const char *const std[] = {"/proc",       "/dev", "/dev/pts",      "/dev/shm",
                                          "/dev/mqueue", "/sys", "/sys/fs/cgroup"};
        for (size_t i = 0; i < ARRAY_SIZE(std); i++)
                CHECK(find_mount(s, std[i]) != NULL);
        json_object *data = find_mount(s, "/data"), *cache = find_mount(s, "/data/cache");
        CHECK_STR_EQ(json_object_get_string(at(data, "source")), "/perm/volumes/data");
        CHECK_STR_EQ(json_object_get_string(at(data, "type")), "bind");
        CHECK(array_has(at(data, "options"), "rbind") && array_has(at(data, "options"), "ro"));
        CHECK(array_has(at(cache, "options"), "rw"));
        /* Parent first: /data must come before /data/cache. */
        json_object *all = at(s, "mounts");
        size_t idata = 0, icache = 0;
        for (size_t i = 0; i < json_object_array_length(all); i++) {
                const char *d =
                    json_object_get_string(at(json_object_array_get_idx(all, i), "destination"));
                if (strcmp(d, "/data") == 0)
                        idata = i;
                if (strcmp(d, "/data/cache") == 0)
                        icache = i;
        }
        CHECK(idata < icache);
        CHECK_STR_EQ(json_object_get_string(at(find_mount(s, "/etc/hosts"), "source")),
                     "/run/capsule/web/hosts");
        CHECK(find_mount(s, "/etc/resolv.conf") != NULL);
        CHECK(find_mount(s, "/etc/hostname") == NULL);
        json_object_put(s);

        struct cap_error err = {0};
        char *out = NULL;
        sources[1] = NULL;
        CHECK(spec_generate(&o, &out, &err) < 0);
        CHECK_CONTAINS(err.msg, "data");
        m1.path = "relative";
        CHECK(spec_generate(&o, &out, &err) < 0);
        CHECK_CONTAINS(err.msg, "mounts[0].path");
}

TEST(exec_process)
{
        Capsule__V1__WorkloadSpec w = WL_INIT;
        w.name = "web";
        struct spec_options o = {
            .workload = &w,
            .image_config_json = "{\"config\":{\"Cmd\":[\"x\"],\"Env\":[\"A=1\"],\"User\":\"5\"}}"};
        struct cap_error err = {0};
        char *spec = NULL, *proc = NULL;
        CHECK(spec_generate(&o, &spec, &err) == 0);
        const char *argv[] = {"sh", "-c", "echo hi", NULL};
        const char *env[] = {"A=2", "TERM=xterm", NULL};
        CHECK(spec_exec_process(spec, argv, env, true, &proc, &err) == 0);
        json_object *p = json_tokener_parse(proc);
        CHECK_STR_EQ(joined(at(p, "args")), "sh -c echo hi");
        CHECK(json_object_get_boolean(at(p, "terminal")));
        CHECK_CONTAINS(joined(at(p, "env")), "A=2");
        CHECK_CONTAINS(joined(at(p, "env")), "TERM=xterm");
        CHECK(json_object_get_int(at(p, "user.uid")) == 5);
        json_object_put(p);
        free(proc);
        free(spec);
}

/* What the profile does for a call of `name` whose first argument is arg0, read the way runc's
 * libseccomp applies it (the rules for one name never overlap): 0 allowed, else the errno. */
static int seccomp_result(json_object *profile, const char *name, uint64_t arg0)
{
        json_object *rules = at(profile, "syscalls");
        for (size_t i = 0; rules && i < json_object_array_length(rules); i++) {
                json_object *r = json_object_array_get_idx(rules, i);
                if (!array_has(at(r, "names"), name))
                        continue;
                json_object *a = at(r, "args.0");
                if (a) {
                        uint64_t v = json_object_get_uint64(at(a, "value"));
                        const char *op = json_object_get_string(at(a, "op"));
                        bool match = (strcmp(op, "SCMP_CMP_EQ") == 0 && arg0 == v) ||
                                     (strcmp(op, "SCMP_CMP_LT") == 0 && arg0 < v) ||
                                     (strcmp(op, "SCMP_CMP_GT") == 0 && arg0 > v) ||
                                     (strcmp(op, "SCMP_CMP_MASKED_EQ") == 0 &&
                                      (arg0 & v) == json_object_get_uint64(at(a, "valueTwo")));
                        if (!match)
                                continue;
                }
                if (strcmp(json_object_get_string(at(r, "action")), "SCMP_ACT_ALLOW") == 0)
                        return 0;
                return json_object_get_int(at(r, "errnoRet"));
        }
        return json_object_get_int(at(profile, "defaultErrnoRet"));
}

/* Whether any rule names the syscall at all. */
static bool seccomp_mentions(json_object *profile, const char *name)
{
        json_object *rules = at(profile, "syscalls");
        for (size_t i = 0; rules && i < json_object_array_length(rules); i++)
                if (array_has(at(json_object_array_get_idx(rules, i), "names"), name))
                        return true;
        return false;
}

#define NS_FLAGS 0x7E020000ULL /* CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWCGROUP */

/* The default profile: an allow-list refusing with EPERM, for the three x86 ABIs. */
TEST(seccomp_allowlist_shape)
{
        Capsule__V1__WorkloadSpec w = WL_INIT;
        w.name = "web";
        struct spec_options o = {.workload = &w,
                                 .image_config_json = "{\"config\":{\"Cmd\":[\"x\"]}}"};
        json_object *s = gen(&o);
        json_object *p = at(s, "linux.seccomp");
        CHECK(p != NULL);
        CHECK_STR_EQ(json_object_get_string(at(p, "defaultAction")), "SCMP_ACT_ERRNO");
        CHECK(json_object_get_int(at(p, "defaultErrnoRet")) == EPERM);
        CHECK_STR_EQ(joined(at(p, "architectures")),
                     "SCMP_ARCH_X86_64 SCMP_ARCH_X86 SCMP_ARCH_X32");
        CHECK_STR_EQ(json_object_get_string(at(p, "syscalls.0.action")), "SCMP_ACT_ALLOW");
        CHECK(at(p, "syscalls.0.args") == NULL);

        static const char *const allowed[] = {
            "read",       "write",         "openat",      "close",     "execve",       "futex",
            "mmap",       "epoll_wait",    "epoll_pwait", "wait4",     "rt_sigaction", "exit_group",
            "fork",       "vfork",         "pipe2",       "getrandom", "statx",        "setuid",
            "socketpair", "connect",       "sendmsg",     "chroot",    "io_submit",    "arch_prctl",
            "chown32",    "clock_gettime", "sched_yield",
        };
        for (size_t i = 0; i < ARRAY_SIZE(allowed); i++) {
                if (seccomp_result(p, allowed[i], 0) != 0)
                        fprintf(stderr, "  %s refused\n", allowed[i]);
                CHECK(array_has(at(p, "syscalls.0.names"), allowed[i]));
        }
        /* never named: the default action refuses them */
        static const char *const refused[] = {
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "ptrace",
            "process_vm_readv",
            "userfaultfd",
            "perf_event_open",
            "pivot_root",
            "reboot",
            "swapon",
            "settimeofday",
            "clock_settime",
            "syslog",
            "open_by_handle_at",
            "name_to_handle_at",
            "fsopen",
            "open_tree",
            "sethostname",
            "acct",
            "iopl",
        };
        for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
                if (seccomp_mentions(p, refused[i]))
                        fprintf(stderr, "  %s is named\n", refused[i]);
                CHECK(!seccomp_mentions(p, refused[i]));
                CHECK(seccomp_result(p, refused[i], 0) == EPERM);
        }

        /* clone: threads and fork, no new namespaces */
        CHECK(!array_has(at(p, "syscalls.0.names"), "clone"));
        CHECK(seccomp_result(p, "clone", 0x3d0f00) == 0);              /* pthread_create's flags */
        CHECK(seccomp_result(p, "clone", 0x1200011) == 0);             /* fork's */
        CHECK(seccomp_result(p, "clone", 0x10000000) == EPERM);        /* CLONE_NEWUSER */
        CHECK(seccomp_result(p, "clone", 0x40000000 | 0x11) == EPERM); /* CLONE_NEWNET */
        CHECK(seccomp_result(p, "clone", 0x02000000) == EPERM);        /* CLONE_NEWCGROUP */
        for (size_t i = 0; i < json_object_array_length(at(p, "syscalls")); i++) {
                json_object *r = at(p, "syscalls");
                r = json_object_array_get_idx(r, i);
                if (array_has(at(r, "names"), "clone")) {
                        CHECK_STR_EQ(json_object_get_string(at(r, "args.0.op")),
                                     "SCMP_CMP_MASKED_EQ");
                        CHECK(json_object_get_uint64(at(r, "args.0.value")) == NS_FLAGS);
                }
        }
        CHECK(seccomp_result(p, "clone3", 0) == ENOSYS);

        /* personality: the Linux ones and the query only */
        CHECK(seccomp_result(p, "personality", 0) == 0);
        CHECK(seccomp_result(p, "personality", 0xffffffff) == 0);
        CHECK(seccomp_result(p, "personality", 0x0200000) == EPERM); /* ADDR_COMPAT_LAYOUT */
        CHECK(seccomp_result(p, "personality", 0x0400000) == EPERM); /* READ_IMPLIES_EXEC */
        /* socket: every family but AF_ALG (38) and AF_VSOCK (40) */
        CHECK(seccomp_result(p, "socket", 2) == 0);
        CHECK(seccomp_result(p, "socket", 10) == 0);
        CHECK(seccomp_result(p, "socket", 16) == 0); /* netlink */
        CHECK(seccomp_result(p, "socket", 39) == 0);
        CHECK(seccomp_result(p, "socket", 44) == 0);
        CHECK(seccomp_result(p, "socket", 38) == EPERM);
        CHECK(seccomp_result(p, "socket", 40) == EPERM);

        /* every name is allowed once (no duplicates in the allow rule) */
        json_object *names = at(p, "syscalls.0.names");
        for (size_t i = 0; i < json_object_array_length(names); i++)
                for (size_t j = i + 1; j < json_object_array_length(names); j++)
                        CHECK(strcmp(json_object_get_string(json_object_array_get_idx(names, i)),
                                     json_object_get_string(json_object_array_get_idx(names, j))) !=
                              0);
        json_object_put(s);
}

/* Capability-gated groups follow the capabilities the profile is made for. */
TEST(seccomp_capability_groups)
{
        json_object *p = spec_seccomp_profile(0);
        CHECK(seccomp_result(p, "chroot", 0) == EPERM); /* CAP_SYS_CHROOT */
        json_object_put(p);

        p = spec_seccomp_profile(1ULL << 21); /* CAP_SYS_ADMIN */
        CHECK(seccomp_result(p, "clone", NS_FLAGS) == 0);
        CHECK(seccomp_result(p, "clone3", 0) == 0);
        CHECK(seccomp_result(p, "mount", 0) == 0);
        CHECK(seccomp_result(p, "unshare", 0) == 0);
        CHECK(seccomp_result(p, "setns", 0) == 0);
        CHECK(seccomp_result(p, "bpf", 0) == 0);
        CHECK(seccomp_result(p, "syslog", 0) == 0);
        CHECK(seccomp_result(p, "ptrace", 0) == EPERM);
        CHECK(seccomp_result(p, "kexec_load", 0) == EPERM);
        CHECK(seccomp_result(p, "io_uring_setup", 0) == EPERM);
        CHECK(seccomp_result(p, "keyctl", 0) == EPERM);
        CHECK(seccomp_result(p, "personality", 0x0400000) == EPERM);
        json_object_put(p);

        p = spec_seccomp_profile((1ULL << 19) | (1ULL << 34) | (1ULL << 39) | (1ULL << 25) |
                                 (1ULL << 16)); /* PTRACE, SYSLOG, BPF, TIME, MODULE */
        CHECK(seccomp_result(p, "ptrace", 0) == 0);
        CHECK(seccomp_result(p, "process_vm_readv", 0) == 0);
        CHECK(seccomp_result(p, "syslog", 0) == 0);
        CHECK(seccomp_result(p, "bpf", 0) == 0);
        CHECK(seccomp_result(p, "clock_settime", 0) == 0);
        CHECK(seccomp_result(p, "init_module", 0) == 0);
        CHECK(seccomp_result(p, "perf_event_open", 0) == EPERM);
        CHECK(seccomp_result(p, "mount", 0) == EPERM);
        CHECK(seccomp_result(p, "clone3", 0) == ENOSYS);
        json_object_put(p);
}

int main(void)
{
        RUN(entrypoint_cmd_table);
        RUN(no_command_is_invalid);
        RUN(env_merge);
        RUN(cwd_and_user);
        RUN(user_names_from_rootfs);
        RUN(user_files_stay_in_the_image);
        RUN(default_vs_privileged);
        RUN(debug_namespaces_and_host_root);
        RUN(resources);
        RUN(mounts);
        RUN(exec_process);
        RUN(seccomp_allowlist_shape);
        RUN(seccomp_capability_groups);
        return test_summary();
}
