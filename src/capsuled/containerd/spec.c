/* OCI runtime spec generation (see spec.h).
 *
 * The spec is built as a json-c tree: process (argv from Docker's Entrypoint/Cmd rules, merged
 * env, cwd, user, capabilities, rlimits), root, hostname, mounts (standard kernel filesystems,
 * then volumes parent-first, then /etc files), and linux (namespaces, resources, masked and
 * read-only paths, seccomp). Every json_object built here has exactly one owner: the tree. */
#include "spec.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common/cleanup.h"
#include "spec_seccomp.h"

#define SPEC_DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define SPEC_CPU_PERIOD 100000
#define SPEC_MAX_EXTRA_GIDS 32

static void json_putp(json_object **j)
{
        if (*j)
                json_object_put(*j);
}
#define _cleanup_json_ _cleanup_(json_putp)

/* Docker's default capability set. */
static const char *const default_caps[] = {
    "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
    "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
    "CAP_KILL",    "CAP_AUDIT_WRITE",
};

/* Every capability up to Linux 5.9; runc ignores those the running kernel lacks. */
static const char *const all_caps[] = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};

static const char *const masked_paths[] = {
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
};

static const char *const readonly_paths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

static json_object *jstr(const char *s)
{
        return json_object_new_string(s ? s : "");
}

static json_object *jstr_array(const char *const *v, size_t n)
{
        json_object *a = json_object_new_array();
        for (size_t i = 0; i < n; i++)
                json_object_array_add(a, jstr(v[i]));
        return a;
}

/* Options are given as one comma-separated string for readability: "nosuid,noexec,nodev". */
static json_object *jopts(const char *csv)
{
        json_object *a = json_object_new_array();
        const char *p = csv;
        while (p && *p) {
                const char *c = strchr(p, ',');
                size_t len = c ? (size_t)(c - p) : strlen(p);
                json_object_array_add(a, json_object_new_string_len(p, (int)len));
                p = c ? c + 1 : NULL;
        }
        return a;
}

static json_object *jmount(const char *dest, const char *type, const char *source, const char *opts)
{
        json_object *m = json_object_new_object();
        json_object_object_add(m, "destination", jstr(dest));
        json_object_object_add(m, "type", jstr(type));
        json_object_object_add(m, "source", jstr(source));
        json_object_object_add(m, "options", jopts(opts));
        return m;
}

/* The image's "config" object (borrowed from root), or NULL. */
static json_object *image_config_section(json_object *root)
{
        json_object *c = NULL;
        if (!root || !json_object_is_type(root, json_type_object))
                return NULL;
        if (json_object_object_get_ex(root, "config", &c))
                return json_object_is_type(c, json_type_object) ? c : NULL;
        return root;
}

static const char *image_string(json_object *cfg, const char *key)
{
        json_object *v = NULL;
        if (cfg && json_object_object_get_ex(cfg, key, &v) &&
            json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        return NULL;
}

static json_object *image_array(json_object *cfg, const char *key)
{
        json_object *v = NULL;
        if (cfg && json_object_object_get_ex(cfg, key, &v) &&
            json_object_is_type(v, json_type_array))
                return v;
        return NULL;
}

/* Docker's rules: command replaces Entrypoint, args replaces Cmd; a command without args drops
 * the image's Cmd (it belonged to the old entrypoint). */
static int build_args(const Capsule__V1__WorkloadSpec *w, json_object *cfg, json_object **out,
                      struct cap_error *err)
{
        json_object *args = json_object_new_array();
        json_object *ep = image_array(cfg, "Entrypoint"), *cmd = image_array(cfg, "Cmd");

        if (w->n_command > 0) {
                for (size_t i = 0; i < w->n_command; i++)
                        json_object_array_add(args, jstr(w->command[i]));
        } else if (ep) {
                for (size_t i = 0; i < json_object_array_length(ep); i++)
                        json_object_array_add(
                            args, jstr(json_object_get_string(json_object_array_get_idx(ep, i))));
        }
        if (w->n_args > 0) {
                for (size_t i = 0; i < w->n_args; i++)
                        json_object_array_add(args, jstr(w->args[i]));
        } else if (w->n_command == 0 && cmd) {
                for (size_t i = 0; i < json_object_array_length(cmd); i++)
                        json_object_array_add(
                            args, jstr(json_object_get_string(json_object_array_get_idx(cmd, i))));
        }
        if (json_object_array_length(args) == 0) {
                json_object_put(args);
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "command: the image has no Entrypoint or Cmd and the manifest "
                                     "sets neither command nor args");
        }
        *out = args;
        return 0;
}

static int env_key_len(const char *kv)
{
        const char *eq = strchr(kv, '=');
        return eq ? (int)(eq - kv) : (int)strlen(kv);
}

/* Index in the array of the "KEY=..." entry, or -1. */
static int env_find(json_object *env, const char *key, int keylen)
{
        for (size_t i = 0; i < json_object_array_length(env); i++) {
                const char *kv = json_object_get_string(json_object_array_get_idx(env, i));
                if (env_key_len(kv) == keylen && strncmp(kv, key, (size_t)keylen) == 0)
                        return (int)i;
        }
        return -1;
}

/* Sets KEY=VALUE (kv is "KEY=VALUE"): replaced in place if present, appended otherwise. */
static void env_set(json_object *env, const char *kv)
{
        int i = env_find(env, kv, env_key_len(kv));
        if (i >= 0)
                json_object_array_put_idx(env, (size_t)i, jstr(kv));
        else
                json_object_array_add(env, jstr(kv));
}

static int cmp_env_entry(const void *a, const void *b)
{
        const Capsule__V1__WorkloadSpec__EnvEntry *x =
            *(Capsule__V1__WorkloadSpec__EnvEntry *const *)a;
        const Capsule__V1__WorkloadSpec__EnvEntry *y =
            *(Capsule__V1__WorkloadSpec__EnvEntry *const *)b;
        return strcmp(x->key, y->key);
}

/* Image env first, then the manifest's (sorted by key, so the spec is deterministic); the
 * manifest wins. A default PATH when neither sets one, as Docker does. */
static json_object *build_env(const Capsule__V1__WorkloadSpec *w, json_object *cfg)
{
        json_object *env = json_object_new_array();
        json_object *img = image_array(cfg, "Env");
        for (size_t i = 0; img && i < json_object_array_length(img); i++) {
                const char *kv = json_object_get_string(json_object_array_get_idx(img, i));
                if (kv && *kv)
                        env_set(env, kv);
        }
        if (w->n_env > 0) {
                Capsule__V1__WorkloadSpec__EnvEntry **sorted = calloc(w->n_env, sizeof(*sorted));
                if (sorted) {
                        memcpy(sorted, w->env, w->n_env * sizeof(*sorted));
                        qsort(sorted, w->n_env, sizeof(*sorted), cmp_env_entry);
                }
                for (size_t i = 0; i < w->n_env; i++) {
                        const Capsule__V1__WorkloadSpec__EnvEntry *e =
                            sorted ? sorted[i] : w->env[i];
                        _cleanup_free_ char *kv = NULL;
                        if (asprintf(&kv, "%s=%s", e->key, e->value ? e->value : "") >= 0)
                                env_set(env, kv);
                }
                free(sorted);
        }
        if (env_find(env, "PATH", 4) < 0)
                json_object_array_add(env, jstr(SPEC_DEFAULT_PATH));
        return env;
}

static bool parse_u32(const char *s, uint32_t *out)
{
        char *end = NULL;
        if (!s || !*s || *s == '-' || *s == '+')
                return false;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || *end || v > UINT32_MAX)
                return false;
        *out = (uint32_t)v;
        return true;
}

/* Opens rootfs/etc/<file> for reading with every path component, symlinks included, resolved
 * inside rootfs (openat2 RESOLVE_IN_ROOT): an image's /etc/passwd that is a symlink to
 * "/etc/shadow" or "../../etc/passwd" names a file of the image, never one of the host. NULL
 * with errno set (ENOSYS: a kernel without openat2, older than 5.6). */
static FILE *open_in_rootfs(const char *rootfs, const char *file)
{
        _cleanup_close_ int root = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
                return NULL;
        char rel[64];
        snprintf(rel, sizeof(rel), "etc/%s", file);
        struct open_how how = {
            .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
            .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
        };
        int fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof(how));
        if (fd < 0)
                return NULL;
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                errno = EINVAL; /* a FIFO or device would block or read the host */
                return NULL;
        }
        FILE *f = fdopen(fd, "re");
        if (!f)
                close(fd);
        return f;
}

/* Reads rootfs/etc/<file> looking for a line whose field 0 (name) or field 2 (id) matches. On a
 * match copies the line into buf and returns 1; 0 if absent; negative on read errors other than
 * a missing file. */
static int db_lookup(const char *rootfs, const char *file, const char *name, const uint32_t *id,
                     char *buf, size_t bufsz)
{
        _cleanup_fclose_ FILE *f = open_in_rootfs(rootfs, file);
        if (!f)
                return errno == ENOENT ? 0 : -errno;
        char line[1024];
        while (fgets(line, sizeof(line), f)) {
                char copy[1024];
                snprintf(copy, sizeof(copy), "%s", line);
                char *save = NULL, *n = strtok_r(copy, ":\n", &save);
                strtok_r(NULL, ":\n", &save);
                char *idf = strtok_r(NULL, ":\n", &save);
                uint32_t v;
                if (!n)
                        continue;
                if ((name && strcmp(n, name) == 0) ||
                    (id && idf && parse_u32(idf, &v) && v == *id)) {
                        snprintf(buf, bufsz, "%s", line);
                        return 1;
                }
        }
        return 0;
}

/* Field idx (0-based, ':'-separated) of a passwd/group line, copied into out. */
static void db_field(const char *line, int idx, char *out, size_t outsz)
{
        const char *p = line;
        for (int i = 0; i < idx && p; i++) {
                p = strchr(p, ':');
                if (p)
                        p++;
        }
        out[0] = '\0';
        if (!p)
                return;
        size_t len = strcspn(p, ":\n");
        snprintf(out, outsz, "%.*s", (int)(len < outsz ? len : outsz - 1), p);
}

/* Groups in rootfs/etc/group listing `user` as a member. */
static void supplementary_gids(const char *rootfs, const char *user, uint32_t primary,
                               uint32_t *extra, size_t *n_extra)
{
        size_t cap = *n_extra, n = 0;
        *n_extra = 0;
        if (!rootfs || !user)
                return;
        _cleanup_fclose_ FILE *f = open_in_rootfs(rootfs, "group");
        char line[1024];
        while (f && n < cap && fgets(line, sizeof(line), f)) {
                char gidstr[32], members[900];
                uint32_t gid;
                db_field(line, 2, gidstr, sizeof(gidstr));
                db_field(line, 3, members, sizeof(members));
                if (!parse_u32(gidstr, &gid) || gid == primary)
                        continue;
                char *save = NULL;
                for (char *m = strtok_r(members, ",", &save); m; m = strtok_r(NULL, ",", &save))
                        if (strcmp(m, user) == 0) {
                                extra[n++] = gid;
                                break;
                        }
        }
        *n_extra = n;
}

int spec_resolve_user(const char *rootfs, const char *user, uint32_t *uid, uint32_t *gid,
                      uint32_t *extra_gids, size_t *n_extra, struct cap_error *err)
{
        char u[256] = "", g[256] = "", line[1024], field[256], name_buf[256];
        bool have_gid = false;
        const char *uname = NULL;
        size_t cap = n_extra ? *n_extra : 0;

        if (n_extra)
                *n_extra = 0;
        *uid = 0;
        *gid = 0;
        if (!user || !*user)
                user = "0";
        const char *colon = strchr(user, ':');
        snprintf(u, sizeof(u), "%.*s", colon ? (int)(colon - user) : (int)strlen(user), user);
        if (colon)
                snprintf(g, sizeof(g), "%s", colon + 1);
        if (!*u)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "user: empty user in `%s`",
                                     user);

        if (parse_u32(u, uid)) {
                /* A numeric uid: its primary group comes from passwd if it is listed there. */
                if (rootfs && db_lookup(rootfs, "passwd", NULL, uid, line, sizeof(line)) > 0) {
                        db_field(line, 3, field, sizeof(field));
                        have_gid = parse_u32(field, gid);
                        db_field(line, 0, name_buf, sizeof(name_buf));
                        uname = name_buf;
                }
        } else {
                int r = rootfs ? db_lookup(rootfs, "passwd", u, NULL, line, sizeof(line)) : 0;
                if (r < 0)
                        return cap_error_set(
                            err, r, CAP_INVALID_ARGUMENT,
                            "user: `%s`: cannot read the image's /etc/passwd: %s%s", u,
                            strerror(-r),
                            r == -ENOSYS ? " (openat2 needs Linux 5.6 or later)" : "");
                if (r == 0)
                        return cap_error_set(err, -ENOENT, CAP_INVALID_ARGUMENT,
                                             "user: `%s` not found in the image's /etc/passwd", u);
                db_field(line, 2, field, sizeof(field));
                if (!parse_u32(field, uid))
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "user: bad uid for `%s` in /etc/passwd", u);
                db_field(line, 3, field, sizeof(field));
                have_gid = parse_u32(field, gid);
                uname = u;
        }
        if (*g) {
                if (!parse_u32(g, gid)) {
                        int r =
                            rootfs ? db_lookup(rootfs, "group", g, NULL, line, sizeof(line)) : 0;
                        if (r < 0)
                                return cap_error_set(
                                    err, r, CAP_INVALID_ARGUMENT,
                                    "user: group `%s`: cannot read the image's /etc/group: %s", g,
                                    strerror(-r));
                        if (r == 0)
                                return cap_error_set(
                                    err, -ENOENT, CAP_INVALID_ARGUMENT,
                                    "user: group `%s` not found in the image's /etc/group", g);
                        db_field(line, 2, field, sizeof(field));
                        if (!parse_u32(field, gid))
                                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                                     "user: bad gid for `%s` in /etc/group", g);
                }
        } else if (!have_gid) {
                *gid = 0;
        }
        if (n_extra && !*g && uname) {
                *n_extra = cap;
                supplementary_gids(rootfs, uname, *gid, extra_gids, n_extra);
        }
        return 0;
}

/* The capabilities the workload's process gets, bit N = capability N (all_caps[N]): Docker's
 * default set, or every one (less those outside privileged_caps when it is set) when privileged.
 * The seccomp profile unlocks syscalls by the same set. */
static uint64_t spec_caps(bool privileged, uint64_t privileged_caps)
{
        uint64_t m = 0;
        for (size_t i = 0; i < ARRAY_SIZE(all_caps); i++) {
                bool on = false;
                if (privileged)
                        on = !privileged_caps || (privileged_caps & (1ULL << i));
                for (size_t d = 0; !privileged && d < ARRAY_SIZE(default_caps); d++)
                        on = on || strcmp(all_caps[i], default_caps[d]) == 0;
                if (on)
                        m |= 1ULL << i;
        }
        return m;
}

static json_object *build_caps(uint64_t mask)
{
        const char *caps[ARRAY_SIZE(all_caps)];
        size_t n = 0;
        for (size_t i = 0; i < ARRAY_SIZE(all_caps); i++)
                if (mask & (1ULL << i))
                        caps[n++] = all_caps[i];
        json_object *c = json_object_new_object();
        json_object_object_add(c, "bounding", jstr_array(caps, n));
        json_object_object_add(c, "effective", jstr_array(caps, n));
        json_object_object_add(c, "permitted", jstr_array(caps, n));
        return c;
}

static int build_process(const struct spec_options *o, json_object *cfg, json_object **out,
                         struct cap_error *err)
{
        const Capsule__V1__WorkloadSpec *w = o->workload;
        _cleanup_json_ json_object *p = json_object_new_object();
        json_object *args = NULL;
        int r = build_args(w, cfg, &args, err);
        if (r < 0)
                return r;
        json_object_object_add(p, "terminal", json_object_new_boolean(o->terminal));
        json_object_object_add(p, "args", args);
        json_object_object_add(p, "env", build_env(w, cfg));

        const char *cwd =
            (w->working_dir && *w->working_dir) ? w->working_dir : image_string(cfg, "WorkingDir");
        if (!cwd || !*cwd)
                cwd = "/";
        if (cwd[0] != '/')
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "workingDir: `%s` is not an absolute path", cwd);
        json_object_object_add(p, "cwd", jstr(cwd));

        const char *user = (w->user && *w->user) ? w->user : image_string(cfg, "User");
        uint32_t uid, gid, extra[SPEC_MAX_EXTRA_GIDS];
        size_t n_extra = ARRAY_SIZE(extra);
        r = spec_resolve_user(o->rootfs, user, &uid, &gid, extra, &n_extra, err);
        if (r < 0)
                return r;
        json_object *ju = json_object_new_object();
        json_object_object_add(ju, "uid", json_object_new_int64(uid));
        json_object_object_add(ju, "gid", json_object_new_int64(gid));
        if (n_extra > 0) {
                json_object *ag = json_object_new_array();
                for (size_t i = 0; i < n_extra; i++)
                        json_object_array_add(ag, json_object_new_int64(extra[i]));
                json_object_object_add(ju, "additionalGids", ag);
        }
        json_object_object_add(p, "user", ju);
        json_object_object_add(p, "capabilities",
                               build_caps(spec_caps(w->privileged, o->privileged_caps)));

        /* No rlimits: like Docker, the process inherits containerd's (set by PID 1), which also
         * works where raising a hard limit is not permitted. */
        json_object_object_add(p, "noNewPrivileges", json_object_new_boolean(!w->privileged));
        *out = TAKE_PTR(p);
        return 0;
}

static size_t path_depth(const char *p)
{
        size_t d = 0;
        for (; *p; p++)
                if (*p == '/' && p[1] && p[1] != '/')
                        d++;
        return d;
}

static int build_mounts(const struct spec_options *o, json_object **out, struct cap_error *err)
{
        const Capsule__V1__WorkloadSpec *w = o->workload;
        bool priv = w->privileged;
        _cleanup_json_ json_object *m = json_object_new_array();

        json_object_array_add(m, jmount("/proc", "proc", "proc", "nosuid,noexec,nodev"));
        if (priv)
                json_object_array_add(m, jmount("/dev", "bind", "/dev", "rbind,rprivate"));
        else
                json_object_array_add(
                    m, jmount("/dev", "tmpfs", "tmpfs", "nosuid,strictatime,mode=755,size=65536k"));
        json_object_array_add(m, jmount("/dev/pts", "devpts", "devpts",
                                        "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5"));
        json_object_array_add(
            m, jmount("/dev/shm", "tmpfs", "shm", "nosuid,noexec,nodev,mode=1777,size=65536k"));
        json_object_array_add(m, jmount("/dev/mqueue", "mqueue", "mqueue", "nosuid,noexec,nodev"));
        json_object_array_add(m,
                              jmount("/sys", "sysfs", "sysfs",
                                     priv ? "nosuid,noexec,nodev,rw" : "nosuid,noexec,nodev,ro"));
        json_object_array_add(m, jmount("/sys/fs/cgroup", "cgroup", "cgroup",
                                        priv ? "nosuid,noexec,nodev,relatime,rw"
                                             : "nosuid,noexec,nodev,relatime,ro"));

        /* Volumes parent-first, so /data is mounted before /data/cache and does not hide it. */
        size_t order[w->n_mounts + 1];
        for (size_t i = 0; i < w->n_mounts; i++) {
                const Capsule__V1__Mount *vm = w->mounts[i];
                if (!vm->path || vm->path[0] != '/')
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "mounts[%zu].path: `%s` is not an absolute path", i,
                                             vm->path ? vm->path : "");
                if (!o->volume_sources || !o->volume_sources[i] || !*o->volume_sources[i])
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "mounts[%zu]: no host source for volume `%s`", i,
                                             vm->volume ? vm->volume : "");
                size_t j = i;
                for (; j > 0 && path_depth(w->mounts[order[j - 1]]->path) > path_depth(vm->path);
                     j--)
                        order[j] = order[j - 1];
                order[j] = i;
        }
        for (size_t k = 0; k < w->n_mounts; k++) {
                size_t i = order[k];
                json_object_array_add(
                    m, jmount(w->mounts[i]->path, "bind", o->volume_sources[i],
                              w->mounts[i]->read_only ? "rbind,rprivate,ro" : "rbind,rprivate,rw"));
        }
        if (o->hosts_path)
                json_object_array_add(
                    m, jmount("/etc/hosts", "bind", o->hosts_path, "rbind,rprivate,rw"));
        if (o->resolv_conf_path)
                json_object_array_add(m, jmount("/etc/resolv.conf", "bind", o->resolv_conf_path,
                                                "rbind,rprivate,rw"));
        if (o->hostname_path)
                json_object_array_add(
                    m, jmount("/etc/hostname", "bind", o->hostname_path, "rbind,rprivate,rw"));
        /* rslave: mounts the host makes later show up under it; the container's own do not
         * propagate back to the host */
        if (o->host_root)
                json_object_array_add(m, jmount(o->host_root, "bind", "/", "rbind,rslave,rw"));
        *out = TAKE_PTR(m);
        return 0;
}

/* New namespaces of every type (network: netns_path when set); a debug container keeps the
 * host's (listing only mount) or joins a process's through /proc/PID/ns. */
static json_object *build_namespaces(const struct spec_options *o)
{
        static const char *const types[] = {"pid", "ipc", "uts", "mount", "network"};
        static const char *const proc_ns[] = {"pid", "ipc", "uts", NULL, "net"};
        json_object *ns = json_object_new_array();
        for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
                bool own = strcmp(types[i], "mount") == 0;
                if (o->host_namespaces && !own)
                        continue;
                json_object *n = json_object_new_object();
                json_object_object_add(n, "type", jstr(types[i]));
                if (o->join_pid > 0 && !own) {
                        char path[64];
                        snprintf(path, sizeof(path), "/proc/%u/ns/%s", o->join_pid, proc_ns[i]);
                        json_object_object_add(n, "path", jstr(path));
                } else if (strcmp(types[i], "network") == 0 && o->netns_path && *o->netns_path) {
                        json_object_object_add(n, "path", jstr(o->netns_path));
                }
                json_object_array_add(ns, n);
        }
        return ns;
}

static json_object *build_resources(const struct spec_options *o)
{
        const Capsule__V1__WorkloadSpec *w = o->workload;
        json_object *res = json_object_new_object();
        json_object *devs = json_object_new_array();
        json_object *d = json_object_new_object();
        /* Deny all; runc adds its default allow-list (null, zero, tty, urandom, ptmx...). */
        json_object_object_add(d, "allow", json_object_new_boolean(w->privileged));
        json_object_object_add(d, "access", jstr("rwm"));
        json_object_array_add(devs, d);
        json_object_object_add(res, "devices", devs);

        if (w->resources && w->resources->cpus > 0) {
                json_object *cpu = json_object_new_object();
                int64_t quota = (int64_t)(w->resources->cpus * SPEC_CPU_PERIOD + 0.5);
                if (quota < 1000)
                        quota = 1000; /* the kernel's minimum is 1 ms */
                json_object_object_add(cpu, "quota", json_object_new_int64(quota));
                json_object_object_add(cpu, "period", json_object_new_uint64(SPEC_CPU_PERIOD));
                json_object_object_add(res, "cpu", cpu);
        }
        if (w->resources && w->resources->memory_bytes > 0) {
                json_object *mem = json_object_new_object();
                json_object_object_add(mem, "limit",
                                       json_object_new_int64((int64_t)w->resources->memory_bytes));
                json_object_object_add(res, "memory", mem);
        }
        if (o->pids_limit > 0) {
                json_object *pids = json_object_new_object();
                json_object_object_add(pids, "limit", json_object_new_int64(o->pids_limit));
                json_object_object_add(res, "pids", pids);
        }
        return res;
}

static json_object *build_linux(const struct spec_options *o)
{
        const Capsule__V1__WorkloadSpec *w = o->workload;
        json_object *l = json_object_new_object();
        _cleanup_free_ char *cg = NULL;
        if (!o->cgroups_path && asprintf(&cg, SPEC_CGROUP_PARENT "/%s", w->name) < 0)
                cg = NULL;
        json_object_object_add(l, "cgroupsPath", jstr(o->cgroups_path ? o->cgroups_path : cg));
        json_object_object_add(l, "namespaces", build_namespaces(o));
        json_object_object_add(l, "resources", build_resources(o));
        if (!w->privileged) {
                json_object_object_add(l, "maskedPaths",
                                       jstr_array(masked_paths, ARRAY_SIZE(masked_paths)));
                json_object_object_add(l, "readonlyPaths",
                                       jstr_array(readonly_paths, ARRAY_SIZE(readonly_paths)));
                json_object_object_add(
                    l, "seccomp",
                    spec_seccomp_profile(spec_caps(w->privileged, o->privileged_caps)));
        }
        return l;
}

static int parse_json(const char *text, const char *what, json_object **out, struct cap_error *err)
{
        enum json_tokener_error jerr = json_tokener_success;
        *out = NULL;
        if (!text || !*text)
                return 0;
        *out = json_tokener_parse_verbose(text, &jerr);
        if (!*out)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: %s", what,
                                     json_tokener_error_desc(jerr));
        return 0;
}

bool spec_user_names(const struct spec_options *o)
{
        const Capsule__V1__WorkloadSpec *w = o->workload;
        _cleanup_json_ json_object *img = NULL;
        struct cap_error e = {0};
        const char *user = w && w->user && *w->user ? w->user : NULL;
        if (!user && parse_json(o->image_config_json, "image config", &img, &e) == 0)
                user = image_string(image_config_section(img), "User");
        for (const char *p = user; p && *p; p++)
                if ((*p < '0' || *p > '9') && *p != ':')
                        return true;
        return false;
}

int spec_generate(const struct spec_options *o, char **out_json, struct cap_error *err)
{
        _cleanup_json_ json_object *img = NULL;
        _cleanup_json_ json_object *spec = NULL;
        json_object *part = NULL;
        int r;

        *out_json = NULL;
        if (!o || !o->workload || !o->workload->name || !*o->workload->name)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "name: required");
        r = parse_json(o->image_config_json, "image config", &img, err);
        if (r < 0)
                return r;
        json_object *cfg = image_config_section(img);

        spec = json_object_new_object();
        json_object_object_add(spec, "ociVersion", jstr("1.0.2-dev"));
        r = build_process(o, cfg, &part, err);
        if (r < 0)
                return r;
        json_object_object_add(spec, "process", part);

        json_object *root = json_object_new_object();
        json_object_object_add(root, "path", jstr("rootfs"));
        json_object_object_add(root, "readonly", json_object_new_boolean(false));
        json_object_object_add(spec, "root", root);
        if (!o->host_namespaces && o->join_pid == 0)
                json_object_object_add(spec, "hostname", jstr(o->workload->name));

        r = build_mounts(o, &part, err);
        if (r < 0)
                return r;
        json_object_object_add(spec, "mounts", part);
        json_object_object_add(spec, "linux", build_linux(o));

        const char *s = json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PLAIN |
                                                                 JSON_C_TO_STRING_NOSLASHESCAPE);
        *out_json = s ? strdup(s) : NULL;
        if (!*out_json)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "spec: out of memory");
        return 0;
}

bool spec_image_has_command(const char *image_config_json)
{
        _cleanup_json_ json_object *img = NULL;
        struct cap_error err = {0};
        if (parse_json(image_config_json, "image config", &img, &err) < 0)
                return false;
        json_object *cfg = image_config_section(img);
        json_object *ep = image_array(cfg, "Entrypoint"), *cmd = image_array(cfg, "Cmd");
        return (ep && json_object_array_length(ep) > 0) ||
               (cmd && json_object_array_length(cmd) > 0);
}

int spec_exec_process(const char *spec_json, const char *const *argv, const char *const *env,
                      bool terminal, char **out_json, struct cap_error *err)
{
        _cleanup_json_ json_object *spec = NULL;
        json_object *proc = NULL;
        int r;

        *out_json = NULL;
        if (!argv || !argv[0])
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "command: required");
        r = parse_json(spec_json, "container spec", &spec, err);
        if (r < 0)
                return r;
        if (!spec || !json_object_object_get_ex(spec, "process", &proc) ||
            !json_object_is_type(proc, json_type_object))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "container spec: no process");

        json_object *args = json_object_new_array();
        for (size_t i = 0; argv[i]; i++)
                json_object_array_add(args, jstr(argv[i]));
        json_object_object_add(proc, "args", args);
        json_object_object_add(proc, "terminal", json_object_new_boolean(terminal));
        json_object *jenv = NULL;
        if (!json_object_object_get_ex(proc, "env", &jenv) ||
            !json_object_is_type(jenv, json_type_array)) {
                jenv = json_object_new_array();
                json_object_object_add(proc, "env", jenv);
        }
        for (size_t i = 0; env && env[i]; i++)
                env_set(jenv, env[i]);

        const char *s = json_object_to_json_string_ext(proc, JSON_C_TO_STRING_PLAIN |
                                                                 JSON_C_TO_STRING_NOSLASHESCAPE);
        *out_json = s ? strdup(s) : NULL;
        if (!*out_json)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "exec spec: out of memory");
        return 0;
}
