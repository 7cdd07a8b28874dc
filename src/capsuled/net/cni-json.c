/* The pure half of the CNI runner (see cni.h): building the network configuration each plugin
 * reads on stdin, parsing plugin results and errors, and splitting iptables-save lines. No I/O,
 * so unit tests (tests/unit/test-cni.c) and fuzzers link this file alone. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cni.h"

#define CNI_VERSION "1.0.0"

void cni_attachment_free(struct cni_attachment *a)
{
        if (!a)
                return;
        free(a->netns_path);
        free(a->ip);
        free(a->gateway);
        free(a->mac);
        memset(a, 0, sizeof(*a));
}

static struct json_object *obj_add(struct json_object *o, const char *k, struct json_object *v)
{
        json_object_object_add(o, k, v);
        return v;
}

char *cni_conflist_json(const struct cni_config *c)
{
        struct json_object *root = json_object_new_object();
        obj_add(root, "cniVersion", json_object_new_string(CNI_VERSION));
        obj_add(root, "name", json_object_new_string(c->network_name));
        struct json_object *plugins = obj_add(root, "plugins", json_object_new_array());

        struct json_object *br = json_object_new_object();
        obj_add(br, "type", json_object_new_string("bridge"));
        obj_add(br, "bridge", json_object_new_string(c->bridge));
        obj_add(br, "isGateway", json_object_new_boolean(1));
        obj_add(br, "ipMasq", json_object_new_boolean(0));
        obj_add(br, "hairpinMode", json_object_new_boolean(1));
        struct json_object *ipam = obj_add(br, "ipam", json_object_new_object());
        obj_add(ipam, "type", json_object_new_string("host-local"));
        struct json_object *ranges = obj_add(ipam, "ranges", json_object_new_array());
        struct json_object *set = json_object_new_array();
        struct json_object *range = json_object_new_object();
        obj_add(range, "subnet", json_object_new_string(c->subnet));
        json_object_array_add(set, range);
        json_object_array_add(ranges, set);
        struct json_object *routes = obj_add(ipam, "routes", json_object_new_array());
        struct json_object *def = json_object_new_object();
        obj_add(def, "dst", json_object_new_string("0.0.0.0/0"));
        json_object_array_add(routes, def);
        char *data_dir = NULL;
        if (asprintf(&data_dir, "%s/ipam", c->state_dir) < 0) {
                json_object_put(root);
                return NULL;
        }
        obj_add(ipam, "dataDir", json_object_new_string(data_dir));
        free(data_dir);
        json_object_array_add(plugins, br);

        struct json_object *pm = json_object_new_object();
        obj_add(pm, "type", json_object_new_string("portmap"));
        struct json_object *caps = obj_add(pm, "capabilities", json_object_new_object());
        obj_add(caps, "portMappings", json_object_new_boolean(1));
        obj_add(pm, "snat", json_object_new_boolean(1));
        json_object_array_add(plugins, pm);

        char *s = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
        json_object_put(root);
        return s;
}

static struct json_object *plugin_at(struct json_object *list, size_t index)
{
        struct json_object *plugins;
        if (!json_object_object_get_ex(list, "plugins", &plugins) ||
            !json_object_is_type(plugins, json_type_array) ||
            index >= json_object_array_length(plugins))
                return NULL;
        struct json_object *p = json_object_array_get_idx(plugins, index);
        return json_object_is_type(p, json_type_object) ? p : NULL;
}

size_t cni_plugin_count(const char *conflist_json)
{
        struct json_object *list = json_tokener_parse(conflist_json), *plugins;
        size_t n = 0;
        if (list && json_object_object_get_ex(list, "plugins", &plugins) &&
            json_object_is_type(plugins, json_type_array))
                n = json_object_array_length(plugins);
        json_object_put(list);
        return n;
}

char *cni_plugin_type(const char *conflist_json, size_t index)
{
        struct json_object *list = json_tokener_parse(conflist_json), *type;
        char *s = NULL;
        struct json_object *p = list ? plugin_at(list, index) : NULL;
        if (p && json_object_object_get_ex(p, "type", &type) &&
            json_object_is_type(type, json_type_string))
                s = strdup(json_object_get_string(type));
        json_object_put(list);
        return s;
}

static bool wants_port_mappings(struct json_object *plugin)
{
        struct json_object *caps, *pm;
        return json_object_object_get_ex(plugin, "capabilities", &caps) &&
               json_object_object_get_ex(caps, "portMappings", &pm) && json_object_get_boolean(pm);
}

char *cni_plugin_config(const char *conflist_json, size_t index, const char *prev_result,
                        const struct cni_port *ports, size_t n_ports)
{
        struct json_object *list = json_tokener_parse(conflist_json);
        struct json_object *name, *version, *prev = NULL;
        struct json_object *p = list ? plugin_at(list, index) : NULL;
        char *s = NULL;
        if (!p || !json_object_object_get_ex(list, "name", &name) ||
            !json_object_object_get_ex(list, "cniVersion", &version))
                goto out;
        if (prev_result && !(prev = json_tokener_parse(prev_result)))
                goto out;
        struct json_object *conf = NULL;
        if (json_object_deep_copy(p, &conf, NULL) != 0)
                goto out;
        obj_add(conf, "cniVersion", json_object_get(version));
        obj_add(conf, "name", json_object_get(name));
        if (prev) {
                obj_add(conf, "prevResult", prev);
                prev = NULL;
        }
        if (wants_port_mappings(p)) {
                struct json_object *rc = obj_add(conf, "runtimeConfig", json_object_new_object());
                struct json_object *pms = obj_add(rc, "portMappings", json_object_new_array());
                for (size_t i = 0; i < n_ports; i++) {
                        struct json_object *m = json_object_new_object();
                        obj_add(m, "hostPort", json_object_new_int(ports[i].host_port));
                        obj_add(m, "containerPort", json_object_new_int(ports[i].container_port));
                        obj_add(
                            m, "protocol",
                            json_object_new_string(ports[i].protocol ? ports[i].protocol : "tcp"));
                        if (ports[i].host_ip && *ports[i].host_ip)
                                obj_add(m, "hostIP", json_object_new_string(ports[i].host_ip));
                        json_object_array_add(pms, m);
                }
        }
        s = strdup(json_object_to_json_string_ext(conf, JSON_C_TO_STRING_PLAIN));
        json_object_put(conf);
out:
        json_object_put(prev);
        json_object_put(list);
        return s;
}

static const char *str_field(struct json_object *o, const char *k)
{
        struct json_object *v;
        if (!o || !json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

int cni_result_parse(const char *result_json, struct cni_attachment *out, struct cap_error *err)
{
        struct json_object *r = json_tokener_parse(result_json), *ips, *ifaces = NULL;
        int rc = 0;
        if (!r || !json_object_is_type(r, json_type_object))
                goto bad;
        json_object_object_get_ex(r, "interfaces", &ifaces);
        if (!json_object_object_get_ex(r, "ips", &ips) ||
            !json_object_is_type(ips, json_type_array))
                goto bad;
        struct json_object *best = NULL;
        int best_if = -1;
        for (size_t i = 0; i < json_object_array_length(ips); i++) {
                struct json_object *ip = json_object_array_get_idx(ips, i), *ifv;
                const char *addr = str_field(ip, "address");
                char host[INET6_ADDRSTRLEN];
                struct in_addr a4;
                if (!addr || strlen(addr) >= sizeof(host))
                        continue;
                snprintf(host, sizeof(host), "%s", addr);
                host[strcspn(host, "/")] = 0;
                if (inet_pton(AF_INET, host, &a4) != 1)
                        continue;
                int idx = -1;
                if (json_object_object_get_ex(ip, "interface", &ifv))
                        idx = json_object_get_int(ifv);
                struct json_object *iface =
                    ifaces && idx >= 0 && (size_t)idx < json_object_array_length(ifaces)
                        ? json_object_array_get_idx(ifaces, (size_t)idx)
                        : NULL;
                bool in_sandbox = str_field(iface, "sandbox") && *str_field(iface, "sandbox");
                if (!best || (in_sandbox && best_if < 0)) {
                        best = ip;
                        best_if = in_sandbox ? idx : -1;
                        if (in_sandbox)
                                break;
                }
        }
        if (!best)
                goto bad;
        const char *addr = str_field(best, "address");
        const char *slash = strchr(addr, '/');
        out->ip = strndup(addr, slash ? (size_t)(slash - addr) : strlen(addr));
        out->prefix_len = slash ? atoi(slash + 1) : 32;
        const char *gw = str_field(best, "gateway");
        out->gateway = gw ? strdup(gw) : NULL;
        if (best_if >= 0) {
                const char *mac =
                    str_field(json_object_array_get_idx(ifaces, (size_t)best_if), "mac");
                out->mac = mac ? strdup(mac) : NULL;
        }
        if (!out->ip)
                rc = cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        json_object_put(r);
        return rc;
bad:
        json_object_put(r);
        return cap_error_set(err, -EINVAL, CAP_INTERNAL, "CNI result has no IPv4 address: %.200s",
                             result_json ? result_json : "(none)");
}

void cni_error_parse(const char *plugin, int exit_code, const char *out, const char *errout,
                     struct cap_error *err)
{
        struct json_object *o = out ? json_tokener_parse(out) : NULL;
        const char *msg = str_field(o, "msg"), *details = str_field(o, "details");
        struct json_object *code;
        int c = o && json_object_object_get_ex(o, "code", &code) ? json_object_get_int(code) : -1;
        if (msg)
                cap_error_set(err, -EIO, CAP_INTERNAL, "CNI plugin %s: %s%s%s (code %d)", plugin,
                              msg, details && *details ? ": " : "", details ? details : "", c);
        else
                cap_error_set(err, -EIO, CAP_INTERNAL, "CNI plugin %s: exit %d: %s", plugin,
                              exit_code, errout && *errout ? errout : (out ? out : ""));
        json_object_put(o);
}

void cni_words_free(char **words)
{
        if (!words)
                return;
        for (char **w = words; *w; w++)
                free(*w);
        free(words);
}

int cni_split_rule(const char *line, char ***words)
{
        size_t cap = 8, n = 0, len = strlen(line);
        char **w = calloc(cap, sizeof(*w));
        char *buf = malloc(len + 1);
        if (!w || !buf)
                goto nomem;
        const char *p = line;
        for (;;) {
                while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
                        p++;
                if (!*p)
                        break;
                size_t b = 0;
                bool quoted = false;
                while (*p && (quoted || (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r'))) {
                        if (*p == '"') {
                                quoted = !quoted;
                                p++;
                        } else if (*p == '\\' && p[1]) {
                                buf[b++] = p[1];
                                p += 2;
                        } else {
                                buf[b++] = *p++;
                        }
                }
                if (quoted) {
                        cni_words_free(w);
                        free(buf);
                        return -EINVAL;
                }
                if (n + 2 > cap) {
                        char **nw = realloc(w, (cap *= 2) * sizeof(*w));
                        if (!nw)
                                goto nomem;
                        w = nw;
                }
                if (!(w[n] = strndup(buf, b)))
                        goto nomem;
                w[++n] = NULL;
        }
        free(buf);
        *words = w;
        return (int)n;
nomem:
        cni_words_free(w);
        free(buf);
        return -ENOMEM;
}

char *cni_resolv_conf(const char *host_text)
{
        size_t cap = strlen(host_text) + 64;
        char *out = malloc(cap);
        if (!out)
                return NULL;
        size_t len = 0;
        int servers = 0;
        const char *p = host_text;
        while (*p) {
                const char *eol = strchr(p, '\n');
                size_t n = eol ? (size_t)(eol - p) : strlen(p);
                char line[512];
                snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) ? n : sizeof(line) - 1),
                         p);
                p += n + (eol ? 1 : 0);
                char word[64] = "", arg[256] = "";
                if (sscanf(line, " %63s %255s", word, arg) < 1 || word[0] == '#' || word[0] == ';')
                        continue;
                if (strcmp(word, "nameserver") == 0) {
                        if (strncmp(arg, "127.", 4) == 0 || strcmp(arg, "::1") == 0 || !*arg)
                                continue;
                        servers++;
                } else if (strcmp(word, "search") != 0 && strcmp(word, "domain") != 0 &&
                           strcmp(word, "options") != 0) {
                        continue;
                }
                len += (size_t)snprintf(out + len, cap - len, "%s\n", line);
        }
        if (!servers)
                len += (size_t)snprintf(out + len, cap - len,
                                        "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        return out;
}

char *cni_hosts_file(const char *workload, const char *ip)
{
        char *s = NULL;
        if (asprintf(&s,
                     "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s%s%s%s",
                     ip && *ip ? ip : "", ip && *ip ? "\t" : "", ip && *ip ? workload : "",
                     ip && *ip ? "\n" : "") < 0)
                return NULL;
        return s;
}
