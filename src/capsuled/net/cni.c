/* Workload networking: network namespaces + the CNI plugin chain (see cni.h for the contract;
 * cni-json.c builds the configs and parses results). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cni.h"
#include "common/cleanup.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/names.h"
#include "volume/spawn.h"

#define NSFS_MAGIC_NUMBER 0x6e736673
#define LOOPBACK_CONF "{\"cniVersion\":\"1.0.0\",\"name\":\"cni-loopback\",\"type\":\"loopback\"}"

static int oom(struct cap_error *err)
{
        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
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
        if (asprintf(&c->state_dir, "%s/cni", root) < 0)
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
        }
        return NULL;
}

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
        int r = spawn_run(argv, &o, &res, err);
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
                cap_error_clear(&e);
                if (run_plugin(c, type, "DEL", container_id, have_ns ? netns : "", "eth0", conf,
                               NULL, &e) < 0) {
                        log_warn("cni: teardown %s: %s", workload, e.msg);
                        keep_first(&first, &e);
                }
        }
        /* No DEL for loopback: it only downs lo in a namespace that is about to go away. */
        cap_error_clear(&e);
        if (sweep_iptables(container_id, &e) < 0)
                keep_first(&first, &e);
        sweep_leases(c, container_id);
        cap_error_clear(&e);
        if (netns_remove(netns, &e) < 0)
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

int cni_setup(const struct cni_config *c, const char *workload, const char *container_id,
              const struct cni_port *ports, size_t n_ports, struct cni_attachment *out,
              struct cap_error *err)
{
        memset(out, 0, sizeof(*out));
        if (name_check("workload", workload, err) < 0)
                return err->code;
        if (check_container_id(container_id, err) < 0)
                return err->code;
        _cleanup_free_ char *netns = cni_netns_path(c, workload);
        _cleanup_free_ char *conflist = cni_conflist_json(c);
        if (!netns || !conflist)
                return oom(err);
        struct cached k;
        if (is_netns_mount(netns)) {
                if (cache_read(c, container_id, &k) == 1 && k.result) {
                        int r = cni_result_parse(k.result, out, err);
                        cached_free(&k);
                        if (r == 0 && (out->netns_path = strdup(netns)))
                                return 0;
                        cni_attachment_free(out);
                } else {
                        cached_free(&k);
                }
                log_warn(
                    "cni: %s has a network namespace but no usable record of its setup: redoing it",
                    workload);
                struct cap_error ignored = {0};
                cni_teardown(c, workload, container_id, &ignored);
        } else if (access(netns, F_OK) == 0) {
                unlink(netns); /* a file left by a crash between create and bind-mount */
        }
        _cleanup_free_ char *ipam = NULL;
        if (asprintf(&ipam, "%s/ipam", c->state_dir) < 0)
                return oom(err);
        int r = mkdir_p(ipam, 0700);
        if (r < 0)
                return cap_error_errno(err, r, "mkdir %s", ipam);
        r = netns_create(c->netns_dir, netns, err);
        if (r < 0)
                return r;
        r = run_plugin(c, "loopback", "ADD", container_id, netns, "lo", LOOPBACK_CONF, NULL, err);
        char *prev = NULL;
        for (size_t i = 0, n = cni_plugin_count(conflist); r == 0 && i < n; i++) {
                _cleanup_free_ char *type = cni_plugin_type(conflist, i);
                _cleanup_free_ char *conf = cni_plugin_config(conflist, i, prev, ports, n_ports);
                if (!type || !conf) {
                        r = oom(err);
                        break;
                }
                char *result = NULL;
                r = run_plugin(c, type, "ADD", container_id, netns, "eth0", conf, &result, err);
                if (r == 0) {
                        free(prev);
                        prev = result;
                }
        }
        if (r == 0 && !prev)
                r = cap_error_set(err, -EIO, CAP_INTERNAL, "CNI chain produced no result");
        if (r == 0)
                r = cni_result_parse(prev, out, err);
        if (r == 0)
                r = cache_write(c, container_id, workload, ports, n_ports, prev, err);
        if (r == 0 && !(out->netns_path = strdup(netns)))
                r = oom(err);
        free(prev);
        if (r < 0) {
                cni_attachment_free(out);
                cap_error_prefix(err, "network setup of %s", workload);
                struct cap_error ignored = {0};
                cni_teardown(c, workload, container_id, &ignored);
                return r;
        }
        log_info("cni: %s up netns=%s ip=%s/%d ports=%zu", workload, netns, out->ip,
                 out->prefix_len, n_ports);
        return 0;
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
