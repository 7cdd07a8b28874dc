/* Workload networking: network namespaces + the CNI plugin chain (see cni.h for the contract;
 * cni-json.c builds the configs and parses results). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cni.h"
#include "common/cleanup.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/names.h"
#include "volume/spawn.h"

#define NSFS_MAGIC_NUMBER 0x6e736673

static int oom(struct cap_error *err)
{
        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

static int64_t cni_mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dup_or_null(const char *s, bool *failed)
{
        char *d = strdup(s);
        if (!d)
                *failed = true;
        return d;
}

int cni_config_init(struct cni_config *c, const char *root, bool os_mode, struct cap_error *err)
{
        memset(c, 0, sizeof(*c));
        bool failed = false;
        c->plugin_dir = dup_or_null("/usr/lib/cni", &failed);
        c->network_name = dup_or_null("capsule", &failed);
        c->bridge = dup_or_null("capsule0", &failed);
        c->subnet = dup_or_null("10.88.0.0/16", &failed);
        if (os_mode)
                c->netns_dir = dup_or_null("/run/capsule/netns", &failed);
        else if (asprintf(&c->netns_dir, "%s/netns", root) < 0)
                c->netns_dir = NULL, failed = true;
        /* On a Capsule the IPAM leases and the ADD cache live as long as what they describe
         * (netns, veths, iptables rules): until the next boot. Kept on /perm they would outlive
         * a reboot and make the first ADD after it fail with "duplicate allocation". */
        if (os_mode)
                c->state_dir = dup_or_null("/run/capsule/cni", &failed);
        else if (asprintf(&c->state_dir, "%s/cni", root) < 0)
                c->state_dir = NULL, failed = true;
        if (failed) {
                cni_config_free(c);
                return oom(err);
        }
        return 0;
}

struct cni_config *cni_config_new(const char *root, bool os_mode, struct cap_error *err)
{
        struct cni_config *c = malloc(sizeof(*c));
        if (!c) {
                oom(err);
                return NULL;
        }
        if (cni_config_init(c, root, os_mode, err) < 0) {
                free(c);
                return NULL;
        }
        return c;
}

void cni_config_destroy(struct cni_config *c)
{
        cni_config_free(c);
        free(c);
}

void cni_config_free(struct cni_config *c)
{
        if (!c)
                return;
        free(c->plugin_dir);
        free(c->netns_dir);
        free(c->state_dir);
        free(c->network_name);
        free(c->bridge);
        free(c->subnet);
        memset(c, 0, sizeof(*c));
}

char *cni_netns_path(const struct cni_config *c, const char *workload)
{
        char *p = NULL;
        return asprintf(&p, "%s/%s", c->netns_dir, workload) < 0 ? NULL : p;
}

/* Container ids end up in file names, iptables comments and plugin environments: keep them to
 * [A-Za-z0-9_.-] (containerd's own rule), 1-128 characters, not starting with a dot. */
static int check_container_id(const char *id, struct cap_error *err)
{
        size_t n = strlen(id);
        bool ok = n > 0 && n <= 128 && id[0] != '.' &&
                  strspn(id, "abcdefghijklmnopqrstuvwxyz"
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "0123456789_.-") == n;
        if (ok)
                return 0;
        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                             "container id \"%s\": expected 1-128 of A-Z a-z 0-9 _ . -", id);
}

static char *cache_path(const struct cni_config *c, const char *container_id)
{
        char *p = NULL;
        return asprintf(&p, "%s/cache/%s.json", c->state_dir, container_id) < 0 ? NULL : p;
}

/* ---- Network namespaces ------------------------------------------------------------------------
 */

static bool is_netns_mount(const char *path)
{
        struct statfs s;
        return statfs(path, &s) == 0 && (unsigned long)s.f_type == NSFS_MAGIC_NUMBER;
}

/* Like `ip netns add`: the directory becomes a shared mount so that unmounting a namespace file
 * here also unmounts the copies that containers' mount namespaces took. */
static int netns_dir_prepare(const char *dir, struct cap_error *err)
{
        int r = mkdir_p(dir, 0755);
        if (r < 0)
                return cap_error_errno(err, r, "mkdir %s", dir);
        if (mount("", dir, "none", MS_SHARED | MS_REC, NULL) == 0)
                return 0;
        if (errno != EINVAL)
                return cap_error_errno(err, -errno, "make %s shared", dir);
        if (mount(dir, dir, "none", MS_BIND | MS_REC, NULL) < 0 ||
            mount("", dir, "none", MS_SHARED | MS_REC, NULL) < 0)
                return cap_error_errno(err, -errno, "bind-mount %s on itself", dir);
        return 0;
}

struct netns_job {
        const char *path;
        int err;
        const char *step;
};

/* Brings up `lo` in the calling thread's network namespace (what the CNI loopback plugin does,
 * without exec'ing it); the kernel gives it 127.0.0.1/8 and ::1 as it comes up. */
static int loopback_up(void)
{
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        struct ifreq ifr = {0};
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
        int r = 0;
        if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
                r = -errno;
        } else if (!(ifr.ifr_flags & IFF_UP)) {
                ifr.ifr_flags |= IFF_UP;
                if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
                        r = -errno;
        }
        close(fd);
        return r;
}

/* Runs on its own short-lived thread: a network namespace is per thread, so unshare() here leaves
 * the rest of capsuled where it was. The bind mount keeps the namespace alive after the thread. */
static void *netns_thread(void *arg)
{
        struct netns_job *j = arg;
        if (unshare(CLONE_NEWNET) < 0) {
                j->err = -errno;
                j->step = "unshare(CLONE_NEWNET)";
        } else if (mount("/proc/thread-self/ns/net", j->path, "none", MS_BIND, NULL) < 0) {
                j->err = -errno;
                j->step = "bind-mount /proc/thread-self/ns/net";
        } else if ((j->err = loopback_up()) < 0) {
                j->step = "bring up lo";
                umount2(j->path, MNT_DETACH);
        }
        return NULL;
}

/* Creates the namespace file with `lo` up in it. */
static int netns_create(const char *dir, const char *path, struct cap_error *err)
{
        int r = netns_dir_prepare(dir, err);
        if (r < 0)
                return r;
        int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
        if (fd < 0)
                return cap_error_errno(err, -errno, "create %s", path);
        close(fd);
        struct netns_job j = {.path = path};
        pthread_t t;
        int e = pthread_create(&t, NULL, netns_thread, &j);
        if (e != 0) {
                j.err = -e;
                j.step = "pthread_create";
        } else {
                pthread_join(t, NULL);
        }
        if (j.err) {
                unlink(path);
                return cap_error_errno(err, j.err, "network namespace %s: %s", path, j.step);
        }
        return 0;
}

static int netns_remove(const char *path, struct cap_error *err)
{
        if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                return cap_error_errno(err, -errno, "umount %s", path);
        if (unlink(path) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "unlink %s", path);
        return 0;
}

/* ---- Running plugins ----------------------------------------------------------------------------
 */

/* Runs one plugin. ADD/CHECK/DEL per the CNI spec; *result (malloc'd) gets ADD's stdout. */
static int run_plugin(const struct cni_config *c, const char *type, const char *command,
                      const char *container_id, const char *netns, const char *ifname,
                      const char *config, char **result, struct cap_error *err)
{
        if (!name_is_valid(type))
                return cap_error_set(err, -EINVAL, CAP_INTERNAL,
                                     "CNI plugin type \"%s\" is not a plain name", type);
        _cleanup_free_ char *bin = NULL, *e_cmd = NULL, *e_id = NULL, *e_ns = NULL, *e_if = NULL,
                            *e_path = NULL;
        if (asprintf(&bin, "%s/%s", c->plugin_dir, type) < 0 ||
            asprintf(&e_cmd, "CNI_COMMAND=%s", command) < 0 ||
            asprintf(&e_id, "CNI_CONTAINERID=%s", container_id) < 0 ||
            asprintf(&e_ns, "CNI_NETNS=%s", netns ? netns : "") < 0 ||
            asprintf(&e_if, "CNI_IFNAME=%s", ifname) < 0 ||
            asprintf(&e_path, "CNI_PATH=%s", c->plugin_dir) < 0)
                return oom(err);
        const char *envp[] = {e_cmd, e_id, e_ns, e_if, e_path, "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                              NULL};
        const char *argv[] = {bin, NULL};
        struct spawn_opts o = {.envp = envp,
                               .input = config,
                               .input_len = strlen(config),
                               .timeout_ms = c->timeout_ms > 0 ? c->timeout_ms : 30000};
        struct spawn_result res;
        int64_t t0 = cni_mono_ms();
        int r = spawn_run(argv, &o, &res, err);
        log_debug("cni: %s %s %s: %lld ms", type, command, container_id,
                  (long long)(cni_mono_ms() - t0));
        if (r == 0 && res.exit_code != 0) {
                cni_error_parse(type, res.exit_code, res.out, res.errout, err);
                r = err->code;
        }
        if (r == 0 && result)
                *result = TAKE_PTR(res.out);
        spawn_result_free(&res);
        if (r < 0)
                cap_error_prefix(err, "%s", command);
        return r;
}

/* The cache: what teardown and adoption need, written atomically after a successful ADD. */
static int cache_write(const struct cni_config *c, const char *container_id, const char *workload,
                       const struct cni_port *ports, size_t n_ports, const char *result,
                       struct cap_error *err)
{
        _cleanup_free_ char *path = cache_path(c, container_id), *tmp = NULL, *dir = NULL;
        if (!path || asprintf(&tmp, "%s.tmp", path) < 0 ||
            asprintf(&dir, "%s/cache", c->state_dir) < 0)
                return oom(err);
        int r = mkdir_p(dir, 0700);
        if (r < 0)
                return cap_error_errno(err, r, "mkdir %s", dir);
        struct json_object *o = json_object_new_object(), *pa = json_object_new_array();
        json_object_object_add(o, "containerId", json_object_new_string(container_id));
        json_object_object_add(o, "workload", json_object_new_string(workload));
        for (size_t i = 0; i < n_ports; i++) {
                struct json_object *p = json_object_new_object();
                json_object_object_add(p, "hostPort", json_object_new_int(ports[i].host_port));
                json_object_object_add(p, "containerPort",
                                       json_object_new_int(ports[i].container_port));
                json_object_object_add(
                    p, "protocol",
                    json_object_new_string(ports[i].protocol ? ports[i].protocol : "tcp"));
                json_object_object_add(
                    p, "hostIP", json_object_new_string(ports[i].host_ip ? ports[i].host_ip : ""));
                json_object_array_add(pa, p);
        }
        json_object_object_add(o, "ports", pa);
        json_object_object_add(o, "result", json_tokener_parse(result));
        const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        FILE *f = fopen(tmp, "we");
        r = 0;
        if (!f || fputs(text, f) < 0 || fflush(f) != 0 || fsync(fileno(f)) < 0)
                r = cap_error_errno(err, -errno, "write %s", tmp);
        if (f && fclose(f) != 0 && r == 0)
                r = cap_error_errno(err, -errno, "write %s", tmp);
        if (r == 0 && rename(tmp, path) < 0)
                r = cap_error_errno(err, -errno, "rename %s", tmp);
        json_object_put(o);
        return r;
}

struct cached {
        char *result;           /* JSON text of the final ADD result */
        struct cni_port *ports; /* host_ip/protocol point into json */
        size_t n_ports;
        struct json_object *json;
};

static void cached_free(struct cached *k)
{
        free(k->result);
        free(k->ports);
        json_object_put(k->json);
        memset(k, 0, sizeof(*k));
}

/* Returns 1 with *k filled when a cache exists for container_id, 0 when not. */
static int cache_read(const struct cni_config *c, const char *container_id, struct cached *k)
{
        memset(k, 0, sizeof(*k));
        _cleanup_free_ char *path = cache_path(c, container_id);
        if (!path)
                return 0;
        k->json = json_object_from_file(path);
        if (!k->json)
                return 0;
        struct json_object *res, *ports;
        if (json_object_object_get_ex(k->json, "result", &res) && res)
                k->result = strdup(json_object_to_json_string_ext(res, JSON_C_TO_STRING_PLAIN));
        if (json_object_object_get_ex(k->json, "ports", &ports) &&
            json_object_is_type(ports, json_type_array)) {
                size_t n = json_object_array_length(ports);
                k->ports = calloc(n ? n : 1, sizeof(*k->ports));
                for (size_t i = 0; k->ports && i < n; i++) {
                        struct json_object *p = json_object_array_get_idx(ports, i), *v;
                        struct cni_port *cp = &k->ports[k->n_ports++];
                        if (json_object_object_get_ex(p, "hostPort", &v))
                                cp->host_port = (uint16_t)json_object_get_int(v);
                        if (json_object_object_get_ex(p, "containerPort", &v))
                                cp->container_port = (uint16_t)json_object_get_int(v);
                        if (json_object_object_get_ex(p, "protocol", &v))
                                cp->protocol = json_object_get_string(v);
                        if (json_object_object_get_ex(p, "hostIP", &v))
                                cp->host_ip = json_object_get_string(v);
                }
        }
        return 1;
}

int cni_cached_ip(const struct cni_config *c, const char *container_id, char *buf, size_t len)
{
        if (len)
                buf[0] = 0;
        struct cached k;
        struct cni_attachment a = {0};
        struct cap_error err = {0};
        int r = -ENOENT;
        if (check_container_id(container_id, &err) < 0)
                return -EINVAL;
        if (cache_read(c, container_id, &k) == 1 && k.result &&
            cni_result_parse(k.result, &a, &err) == 0) {
                snprintf(buf, len, "%s", a.ip);
                r = 0;
        }
        cni_attachment_free(&a);
        cached_free(&k);
        return r;
}

/* Writes text into path in place (truncate + write): bind mounts of it keep seeing it. */
static int write_in_place(const char *path, const char *text, struct cap_error *err)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
                return cap_error_errno(err, -errno, "open %s", path);
        size_t len = strlen(text);
        int r = 0;
        if (ftruncate(fd, 0) < 0 || write(fd, text, len) != (ssize_t)len)
                r = cap_error_errno(err, -errno, "write %s", path);
        close(fd);
        return r;
}

static char *etc_dir(const struct cni_config *c, const char *workload)
{
        char *p = NULL;
        return asprintf(&p, "%s/etc/%s", c->state_dir, workload) < 0 ? NULL : p;
}

int cni_write_etc(const struct cni_config *c, const char *workload, const char *ip,
                  char **hosts_path, char **resolv_conf_path, struct cap_error *err)
{
        *hosts_path = *resolv_conf_path = NULL;
        if (name_check("workload", workload, err) < 0)
                return err->code;
        _cleanup_free_ char *dir = etc_dir(c, workload), *hosts = NULL, *resolv = NULL;
        _cleanup_free_ char *host_text = NULL, *resolv_text = NULL, *hosts_text = NULL;
        if (!dir || asprintf(&hosts, "%s/hosts", dir) < 0 ||
            asprintf(&resolv, "%s/resolv.conf", dir) < 0)
                return oom(err);
        int r = mkdir_p(dir, 0755);
        if (r < 0)
                return cap_error_errno(err, r, "mkdir %s", dir);
        FILE *f = fopen("/etc/resolv.conf", "re");
        size_t n = 0;
        if (f) {
                if (getdelim(&host_text, &n, 0, f) < 0) {
                        free(host_text);
                        host_text = NULL;
                }
                fclose(f);
        }
        resolv_text = cni_resolv_conf(host_text ? host_text : "");
        hosts_text = cni_hosts_file(workload, ip);
        if (!resolv_text || !hosts_text)
                return oom(err);
        r = write_in_place(hosts, hosts_text, err);
        if (r == 0)
                r = write_in_place(resolv, resolv_text, err);
        if (r < 0)
                return r;
        *hosts_path = TAKE_PTR(hosts);
        *resolv_conf_path = TAKE_PTR(resolv);
        return 0;
}

static void remove_etc(const struct cni_config *c, const char *workload)
{
        _cleanup_free_ char *dir = etc_dir(c, workload), *a = NULL, *b = NULL;
        if (!dir || asprintf(&a, "%s/hosts", dir) < 0 || asprintf(&b, "%s/resolv.conf", dir) < 0)
                return;
        unlink(a);
        unlink(b);
        rmdir(dir);
}

/* ---- Sweeping what a half-done setup left -------------------------------------------------------
 */

/* Deletes nat rules whose comment names this container id (bridge's ipMasq rule, portmap's jump)
 * and the per-container CNI- chains they jump to. */
static int sweep_iptables(const char *container_id, struct cap_error *err)
{
        const char *save[] = {"iptables-save", "-t", "nat", NULL};
        struct spawn_result res;
        int r = spawn_run(save, NULL, &res, err);
        if (r < 0 || res.exit_code != 0) {
                spawn_result_free(&res);
                return r < 0 ? r
                             : cap_error_set(err, -EIO, CAP_INTERNAL, "iptables-save: exit %d",
                                             res.exit_code);
        }
        _cleanup_free_ char *needle = NULL;
        if (asprintf(&needle, "id: \\\"%s\\\"", container_id) < 0) {
                spawn_result_free(&res);
                return oom(err);
        }
        char *chains[64];
        size_t n_chains = 0;
        char *save_ptr = NULL;
        for (char *line = strtok_r(res.out, "\n", &save_ptr); line;
             line = strtok_r(NULL, "\n", &save_ptr)) {
                if (strncmp(line, "-A ", 3) != 0 || !strstr(line, needle))
                        continue;
                char **w = NULL;
                int n = cni_split_rule(line, &w);
                if (n < 2)
                        continue;
                free(w[0]);
                w[0] = strdup("-D");
                const char **argv = calloc((size_t)n + 5, sizeof(char *)); /* 4 + words + NULL */
                if (w[0] && argv) {
                        argv[0] = "iptables";
                        argv[1] = "-w";
                        argv[2] = "-t";
                        argv[3] = "nat";
                        for (int i = 0; i < n; i++) {
                                argv[4 + i] = w[i];
                                if (i + 1 < n && strcmp(w[i], "-j") == 0 &&
                                    strncmp(w[i + 1], "CNI-", 4) == 0 &&
                                    strncmp(w[i + 1], "CNI-HOSTPORT-", 13) != 0 &&
                                    n_chains < ARRAY_SIZE(chains))
                                        chains[n_chains++] = strdup(w[i + 1]);
                        }
                        struct cap_error e = {0};
                        if (spawn_check(argv, NULL, &e) < 0)
                                log_warn("cni: %s", e.msg);
                        else
                                log_info("cni: removed leftover nat rule for %s: %s", container_id,
                                         line);
                }
                free(argv);
                cni_words_free(w);
        }
        spawn_result_free(&res);
        for (size_t i = 0; i < n_chains; i++) {
                if (!chains[i])
                        continue;
                const char *flush[] = {"iptables", "-w", "-t", "nat", "-F", chains[i], NULL};
                const char *del[] = {"iptables", "-w", "-t", "nat", "-X", chains[i], NULL};
                struct cap_error e = {0};
                if (spawn_check(flush, NULL, &e) == 0)
                        spawn_check(del, NULL, &e);
                free(chains[i]);
        }
        return 0;
}

/* Removes host-local leases (files named after the IP, holding "ID\r\nIFNAME") of container_id. */
static void sweep_leases(const struct cni_config *c, const char *container_id)
{
        _cleanup_free_ char *dir = NULL;
        if (asprintf(&dir, "%s/ipam/%s", c->state_dir, c->network_name) < 0)
                return;
        DIR *d = opendir(dir);
        if (!d)
                return;
        size_t idlen = strlen(container_id);
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.' || strncmp(de->d_name, "last_reserved_ip", 16) == 0 ||
                    strcmp(de->d_name, "lock") == 0)
                        continue;
                int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                char buf[256];
                ssize_t n = read(fd, buf, sizeof(buf) - 1);
                close(fd);
                if (n < 0)
                        continue;
                buf[n] = 0;
                if (strncmp(buf, container_id, idlen) == 0 &&
                    (buf[idlen] == 0 || buf[idlen] == '\r' || buf[idlen] == '\n')) {
                        log_info("cni: removing leftover lease %s/%s of %s", dir, de->d_name,
                                 container_id);
                        unlinkat(dirfd(d), de->d_name, 0);
                }
        }
        closedir(d);
}

/* ---- The network's masquerade rule ----------------------------------------------------------
 */

/* One nat rule per network instead of the bridge plugin's ipMasq (a chain per container, which
 * costs several iptables runs on every setup and teardown): traffic from the subnet leaving by
 * any interface but the bridge is masqueraded. It lives while any namespace of the network does:
 * setup adds it (after creating its namespace), teardown removes it once the last namespace file
 * is gone. Both hold an flock on STATE_DIR/masquerade.lock, so that setups and teardowns running
 * at once (threads or processes) cannot remove it from under a new workload. */
static int masq_lock(const struct cni_config *c, struct cap_error *err)
{
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/masquerade.lock", c->state_dir) < 0)
                return oom(err);
        int r = mkdir_p(c->state_dir, 0700);
        if (r < 0)
                return cap_error_errno(err, r, "mkdir %s", c->state_dir);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
                return cap_error_errno(err, -errno, "open %s", path);
        while (flock(fd, LOCK_EX) < 0) {
                if (errno != EINTR) {
                        r = cap_error_errno(err, -errno, "lock %s", path);
                        close(fd);
                        return r;
                }
        }
        return fd;
}

/* Runs `iptables -t nat OP POSTROUTING <the network's masquerade rule>`; returns its exit code
 * (err filled for a failed -A/-D), or negative when it could not run. */
static int masq_iptables(const struct cni_config *c, const char *op, struct cap_error *err)
{
        _cleanup_free_ char *comment = NULL;
        if (asprintf(&comment, "capsule network %s: masquerade", c->network_name) < 0)
                return oom(err);
        const char *argv[] = {"iptables", "-w", "-t", "nat", op, "POSTROUTING",
                              "-s", c->subnet, "!", "-o", c->bridge,
                              "-m", "comment", "--comment", comment,
                              "-j", "MASQUERADE", NULL};
        struct spawn_result res;
        int r = spawn_run(argv, NULL, &res, err);
        if (r == 0)
                r = res.exit_code;
        if (r > 0 && strcmp(op, "-C") != 0)
                cap_error_set(err, -EIO, CAP_INTERNAL, "iptables %s POSTROUTING: exit %d: %s", op,
                              r, res.errout ? res.errout : "");
        spawn_result_free(&res);
        return r;
}

static int masq_ensure(const struct cni_config *c, struct cap_error *err)
{
        int fd = masq_lock(c, err);
        if (fd < 0)
                return fd;
        int r = masq_iptables(c, "-C", err);
        if (r > 0)
                r = masq_iptables(c, "-A", err);
        close(fd);
        if (r > 0)
                return err->code;
        return r < 0 ? cap_error_prefix(err, "masquerade rule") : 0;
}

static bool dir_is_empty(const char *path)
{
        DIR *d = opendir(path);
        if (!d)
                return errno == ENOENT;
        struct dirent *de;
        bool empty = true;
        while (empty && (de = readdir(d)))
                empty = strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0;
        closedir(d);
        return empty;
}

/* Removes the masquerade rule when no namespace of the network is left. */
static int masq_release(const struct cni_config *c, struct cap_error *err)
{
        int fd = masq_lock(c, err);
        if (fd < 0)
                return fd;
        int r = 0;
        if (dir_is_empty(c->netns_dir)) {
                /* -C first: -D of a missing rule is not an error worth a warning */
                while (r == 0 && masq_iptables(c, "-C", err) == 0)
                        if (masq_iptables(c, "-D", err) != 0)
                                r = err->code;
        }
        close(fd);
        return r;
}

/* Portmap has nothing to do for a workload that publishes no ports: it is run only for those
 * (and on DEL/CHECK when no record says which ports there were). */
static bool plugin_wanted(const char *type, bool ports_known, size_t n_ports)
{
        return strcmp(type, "portmap") != 0 || !ports_known || n_ports > 0;
}

/* ---- The API ------------------------------------------------------------------------------------
 */

static void keep_first(struct cap_error *first, const struct cap_error *e)
{
        if (first->code == 0 && e->code != 0)
                *first = *e;
}

int cni_teardown(const struct cni_config *c, const char *workload, const char *container_id,
                 struct cap_error *err)
{
        if (name_check("workload", workload, err) < 0)
                return err->code;
        if (check_container_id(container_id, err) < 0)
                return err->code;
        _cleanup_free_ char *netns = cni_netns_path(c, workload);
        _cleanup_free_ char *conflist = cni_conflist_json(c);
        _cleanup_free_ char *cache = cache_path(c, container_id);
        if (!netns || !conflist || !cache)
                return oom(err);
        struct cached k;
        cache_read(c, container_id, &k);
        bool have_ns = is_netns_mount(netns);
        struct cap_error first = {0}, e = {0};
        /* DEL in reverse order; the bridge needs the namespace to find the masqueraded address. */
        for (size_t i = cni_plugin_count(conflist); i-- > 0;) {
                _cleanup_free_ char *type = cni_plugin_type(conflist, i);
                _cleanup_free_ char *conf =
                    cni_plugin_config(conflist, i, k.result, k.ports, k.n_ports);
                if (!type || !conf) {
                        keep_first(&first, &(struct cap_error){.code = -ENOMEM,
                                                               .status = CAP_INTERNAL,
                                                               .msg = "out of memory"});
                        continue;
                }
                if (!plugin_wanted(type, k.json != NULL, k.n_ports))
                        continue;
                cap_error_clear(&e);
                if (run_plugin(c, type, "DEL", container_id, have_ns ? netns : "", "eth0", conf,
                               NULL, &e) < 0) {
                        log_warn("cni: teardown %s: %s", workload, e.msg);
                        keep_first(&first, &e);
                }
        }
        cap_error_clear(&e);
        if (sweep_iptables(container_id, &e) < 0)
                keep_first(&first, &e);
        sweep_leases(c, container_id);
        cap_error_clear(&e);
        if (netns_remove(netns, &e) < 0)
                keep_first(&first, &e);
        cap_error_clear(&e);
        if (masq_release(c, &e) < 0)
                keep_first(&first, &e);
        remove_etc(c, workload);
        if (unlink(cache) < 0 && errno != ENOENT)
                log_warn("cni: unlink %s: %s", cache, strerror(errno));
        cached_free(&k);
        if (first.code) {
                *err = first;
                cap_error_prefix(err, "network teardown of %s", workload);
                return err->code;
        }
        return 0;
}

/* A setup in flight (cni_setup_begin .. cni_setup_end). The plugin chain runs on `thread`;
 * everything it reads is owned here, so the caller's arguments may go away meanwhile. */
struct cni_setup_job {
        const struct cni_config *c;
        char *workload, *container_id, *netns;
        struct cni_port *ports;
        size_t n_ports;
        pthread_t thread;
        bool running;             /* thread started, not joined */
        bool adopted;             /* set up by an earlier run: att holds the cached attachment */
        struct cni_attachment att; /* the result (the thread's, or the adopted one) */
        int r;
        struct cap_error err;
};

static void job_free(struct cni_setup_job *j)
{
        if (!j)
                return;
        for (size_t i = 0; i < j->n_ports; i++) {
                free((char *)j->ports[i].protocol);
                free((char *)j->ports[i].host_ip);
        }
        free(j->ports);
        free(j->workload);
        free(j->container_id);
        free(j->netns);
        cni_attachment_free(&j->att);
        free(j);
}

static struct cni_setup_job *job_new(const struct cni_config *c, const char *workload,
                                     const char *container_id, const struct cni_port *ports,
                                     size_t n_ports)
{
        struct cni_setup_job *j = calloc(1, sizeof(*j));
        if (!j)
                return NULL;
        j->c = c;
        j->workload = strdup(workload);
        j->container_id = strdup(container_id);
        j->netns = cni_netns_path(c, workload);
        j->ports = calloc(n_ports + 1, sizeof(*ports));
        bool failed = !j->workload || !j->container_id || !j->netns || !j->ports;
        for (size_t i = 0; !failed && i < n_ports; i++, j->n_ports++) {
                j->ports[i] = ports[i];
                j->ports[i].protocol = ports[i].protocol ? strdup(ports[i].protocol) : NULL;
                j->ports[i].host_ip = ports[i].host_ip ? strdup(ports[i].host_ip) : NULL;
                failed = (ports[i].protocol && !j->ports[i].protocol) ||
                         (ports[i].host_ip && !j->ports[i].host_ip);
        }
        if (failed) {
                job_free(j);
                return NULL;
        }
        return j;
}

/* The plugin chain (ADD, in order, each given the previous result) and the record of its result.
 * Leaves undoing a failure to cni_setup_end. */
static int setup_chain(struct cni_setup_job *j, struct cap_error *err)
{
        const struct cni_config *c = j->c;
        _cleanup_free_ char *conflist = cni_conflist_json(c);
        if (!conflist)
                return oom(err);
        int r = masq_ensure(c, err);
        char *prev = NULL;
        for (size_t i = 0, n = cni_plugin_count(conflist); r == 0 && i < n; i++) {
                _cleanup_free_ char *type = cni_plugin_type(conflist, i);
                _cleanup_free_ char *conf =
                    cni_plugin_config(conflist, i, prev, j->ports, j->n_ports);
                if (!type || !conf) {
                        r = oom(err);
                        break;
                }
                if (!plugin_wanted(type, true, j->n_ports))
                        continue;
                char *result = NULL;
                r = run_plugin(c, type, "ADD", j->container_id, j->netns, "eth0", conf, &result,
                               err);
                if (r == 0) {
                        free(prev);
                        prev = result;
                }
        }
        if (r == 0 && !prev)
                r = cap_error_set(err, -EIO, CAP_INTERNAL, "CNI chain produced no result");
        if (r == 0)
                r = cni_result_parse(prev, &j->att, err);
        if (r == 0)
                r = cache_write(c, j->container_id, j->workload, j->ports, j->n_ports, prev, err);
        free(prev);
        return r;
}

static void *setup_thread(void *arg)
{
        struct cni_setup_job *j = arg;
        j->r = setup_chain(j, &j->err);
        return NULL;
}

int cni_setup_begin(const struct cni_config *c, const char *workload, const char *container_id,
                    const struct cni_port *ports, size_t n_ports, struct cni_setup_job **job,
                    struct cap_error *err)
{
        *job = NULL;
        if (name_check("workload", workload, err) < 0)
                return err->code;
        if (check_container_id(container_id, err) < 0)
                return err->code;
        struct cni_setup_job *j = job_new(c, workload, container_id, ports, n_ports);
        if (!j)
                return oom(err);
        struct cached k;
        if (is_netns_mount(j->netns)) {
                if (cache_read(c, container_id, &k) == 1 && k.result) {
                        int r = cni_result_parse(k.result, &j->att, err);
                        cached_free(&k);
                        if (r == 0) {
                                j->adopted = true;
                                *job = j;
                                return 0;
                        }
                        cni_attachment_free(&j->att);
                } else {
                        cached_free(&k);
                }
                log_warn(
                    "cni: %s has a network namespace but no usable record of its setup: redoing it",
                    workload);
                struct cap_error ignored = {0};
                cni_teardown(c, workload, container_id, &ignored);
        } else if (access(j->netns, F_OK) == 0) {
                unlink(j->netns); /* a file left by a crash between create and bind-mount */
        }
        _cleanup_free_ char *ipam = NULL;
        int r = asprintf(&ipam, "%s/ipam", c->state_dir) < 0 ? oom(err) : 0;
        if (r == 0 && (r = mkdir_p(ipam, 0700)) < 0)
                cap_error_errno(err, r, "mkdir %s", ipam);
        if (r == 0)
                r = netns_create(c->netns_dir, j->netns, err);
        if (r < 0) {
                job_free(j);
                return cap_error_prefix(err, "network setup of %s", workload);
        }
        int e = pthread_create(&j->thread, NULL, setup_thread, j);
        if (e == 0)
                j->running = true;
        else
                j->r = setup_chain(j, &j->err); /* no thread to spare: run it here */
        *job = j;
        return 0;
}

const char *cni_setup_netns(const struct cni_setup_job *job)
{
        return job->netns;
}

const char *cni_setup_adopted_ip(const struct cni_setup_job *job)
{
        return job->adopted ? job->att.ip : NULL;
}

int cni_setup_end(struct cni_setup_job *job, struct cni_attachment *out, struct cap_error *err)
{
        memset(out, 0, sizeof(*out));
        struct cni_setup_job *j = job;
        if (j->running) {
                pthread_join(j->thread, NULL);
                j->running = false;
        }
        int r = j->r;
        if (r < 0)
                *err = j->err;
        if (r == 0) {
                *out = j->att;
                memset(&j->att, 0, sizeof(j->att));
                if (!(out->netns_path = strdup(j->netns)))
                        r = oom(err);
        }
        if (r < 0) {
                cni_attachment_free(out);
                cap_error_prefix(err, "network setup of %s", j->workload);
                struct cap_error ignored = {0};
                cni_teardown(j->c, j->workload, j->container_id, &ignored);
        } else if (!j->adopted) {
                log_info("cni: %s up netns=%s ip=%s/%d ports=%zu", j->workload, j->netns, out->ip,
                         out->prefix_len, j->n_ports);
        }
        job_free(j);
        return r;
}

int cni_setup(const struct cni_config *c, const char *workload, const char *container_id,
              const struct cni_port *ports, size_t n_ports, struct cni_attachment *out,
              struct cap_error *err)
{
        memset(out, 0, sizeof(*out));
        struct cni_setup_job *job;
        int r = cni_setup_begin(c, workload, container_id, ports, n_ports, &job, err);
        return r < 0 ? r : cni_setup_end(job, out, err);
}

int cni_check(const struct cni_config *c, const char *workload, const char *container_id,
              struct cap_error *err)
{
        if (name_check("workload", workload, err) < 0)
                return err->code;
        if (check_container_id(container_id, err) < 0)
                return err->code;
        _cleanup_free_ char *netns = cni_netns_path(c, workload);
        _cleanup_free_ char *conflist = cni_conflist_json(c);
        if (!netns || !conflist)
                return oom(err);
        if (!is_netns_mount(netns))
                return cap_error_set(err, -ENOENT, CAP_NOT_FOUND,
                                     "network of %s: no namespace at %s", workload, netns);
        struct cached k;
        if (cache_read(c, container_id, &k) != 1 || !k.result) {
                cached_free(&k);
                return cap_error_set(err, -ENOENT, CAP_NOT_FOUND,
                                     "network of %s: no record of its setup", workload);
        }
        int r = 0;
        for (size_t i = 0, n = cni_plugin_count(conflist); r == 0 && i < n; i++) {
                _cleanup_free_ char *type = cni_plugin_type(conflist, i);
                _cleanup_free_ char *conf =
                    cni_plugin_config(conflist, i, k.result, k.ports, k.n_ports);
                if (!type || !conf)
                        r = oom(err);
                /* Debian's portmap 1.1.1 fails CHECK on IPv4-only networks, looking for IPv6
                 * rules it never made (containernetworking/plugins#819, fixed upstream later). */
                else if (strcmp(type, "portmap") != 0)
                        r = run_plugin(c, type, "CHECK", container_id, netns, "eth0", conf, NULL,
                                       err);
        }
        cached_free(&k);
        if (r < 0)
                cap_error_prefix(err, "network check of %s", workload);
        return r;
}
