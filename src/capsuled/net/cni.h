/* Workload networking with CNI (design §6): one network namespace per workload, created by
 * capsuled, joined to the bridge `capsule0` by Debian's containernetworking-plugins.
 *
 * cni_setup creates the namespace as a bind-mounted nsfs file NETNS_DIR/WORKLOAD (the same
 * layout as `ip netns add`, so `ip netns exec`/`nsenter --net=PATH` work on it) and brings up its
 * `lo` in-process (what the loopback plugin would do), makes sure the network's one masquerade
 * rule exists (nat POSTROUTING: from the subnet, out of anything but the bridge), then runs the
 * "capsule" conflist (bridge + host-local IPAM, then portmap when ports are published) plugin by
 * plugin as libcni does: each plugin gets the previous one's result as prevResult; portmap gets
 * the ports as runtimeConfig.portMappings. The final result is cached in
 * STATE_DIR/cache/CONTAINER_ID.json for DEL/CHECK and for adopting after a restart. The plugins
 * can run in the background (cni_setup_begin/cni_setup_end) while the caller creates the
 * container, which only needs the namespace to exist. cni_teardown runs DEL in reverse order
 * while the namespace still exists, then sweeps what a half-done setup may have left (iptables
 * rules tagged with the container id, host-local leases), then unmounts and removes the
 * namespace file, and removes the masquerade rule once no namespace is left. Both are
 * idempotent.
 *
 * Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and the plugins in plugin_dir. The bridge plugin
 * turns on net.ipv4.ip_forward; portmap sets route_localnet on the bridge so that published
 * ports also answer on 127.0.0.1 of the host. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Where and how workloads are networked. Strings are owned by the struct (cni_config_free). */
struct cni_config {
        char *plugin_dir; /* CNI_PATH: /usr/lib/cni */
        char *netns_dir;  /* namespace files: /run/capsule/netns (OS), ROOT/netns (host mode) */
        char *state_dir; /* host-local leases (STATE_DIR/ipam) and result cache (STATE_DIR/cache) */
        char *network_name; /* CNI network name: "capsule" */
        char *bridge;       /* "capsule0" */
        char *subnet;       /* "10.88.0.0/16" */
        int timeout_ms;     /* per plugin run; 0 = 30 s */
};

/* A published port: host_port on the host forwards to container_port in the workload. */
struct cni_port {
        uint16_t host_port;
        uint16_t container_port;
        const char *protocol; /* "tcp" (NULL too) or "udp" */
        const char *host_ip;  /* NULL or "" = every host address */
};

/* What cni_setup gives the container driver. */
struct cni_attachment {
        char *netns_path; /* join this network namespace (OCI spec namespaces[].path) */
        char *ip;         /* the workload's IPv4 address, "10.88.0.5" */
        int prefix_len;   /* 16 */
        char *gateway;    /* "10.88.0.1", the bridge: the default route */
        char *mac;        /* eth0's MAC address, NULL if the plugin did not say */
};

/* Fills defaults: plugin_dir /usr/lib/cni, network "capsule", bridge capsule0, 10.88.0.0/16;
 * OS mode: netns /run/capsule/netns, state (IPAM leases, ADD cache) /run/capsule/cni, both gone
 * at reboot like the veths and rules they describe; host mode: ROOT/netns, ROOT/cni. */
int cni_config_init(struct cni_config *c, const char *root, bool os_mode, struct cap_error *err);
void cni_config_free(struct cni_config *c);
/* The same, heap-allocated (for struct serve_ctx); destroy frees both. NULL: err filled. */
struct cni_config *cni_config_new(const char *root, bool os_mode, struct cap_error *err);
void cni_config_destroy(struct cni_config *c);

/* Gives `workload` (a DNS label) its network namespace and an address on the bridge, with
 * `ports` published. container_id identifies the attachment to the plugins (leases, iptables
 * comments): use the containerd container id. If this container id is already set up (cached
 * result and namespace present), returns the cached attachment without running plugins
 * (adoption after a restart); a namespace left without a cached result is torn down and set up
 * again. On failure undoes what it did. Free out with cni_attachment_free. */
int cni_setup(const struct cni_config *c, const char *workload, const char *container_id,
              const struct cni_port *ports, size_t n_ports, struct cni_attachment *out,
              struct cap_error *err);

/* cni_setup in two halves, so that the plugins run while the caller does something else:
 * begin checks, adopts or creates the namespace (its path: cni_setup_netns) and starts the plugin
 * chain on a thread; end waits for it and fills out like cni_setup (on failure undoing what was
 * done). Every successful begin must be followed by exactly one end, which frees job. */
struct cni_setup_job;
int cni_setup_begin(const struct cni_config *c, const char *workload, const char *container_id,
                    const struct cni_port *ports, size_t n_ports, struct cni_setup_job **job,
                    struct cap_error *err);
const char *cni_setup_netns(const struct cni_setup_job *job);
/* The address when begin adopted an earlier setup (known at once), else NULL. */
const char *cni_setup_adopted_ip(const struct cni_setup_job *job);
int cni_setup_end(struct cni_setup_job *job, struct cni_attachment *out, struct cap_error *err);

/* Runs CHECK on the whole chain for a set-up container (e.g. on resync). */
int cni_check(const struct cni_config *c, const char *workload, const char *container_id,
              struct cap_error *err);

/* Removes the workload's network: DEL on every plugin, leftover rules and leases, the namespace.
 * Idempotent: works on a half set-up or already removed attachment. Returns the first error
 * but always finishes every step it can. */
int cni_teardown(const struct cni_config *c, const char *workload, const char *container_id,
                 struct cap_error *err);

/* Writes the workload's /etc/hosts ("localhost", and WORKLOAD at ip) and /etc/resolv.conf
 * (the host's, see cni_resolv_conf) under STATE_DIR/etc/WORKLOAD/, for the container driver to
 * bind-mount. Rewrites them in place (a bind mount keeps following the same inode). Paths are
 * malloc'd. cni_teardown removes them. */
int cni_write_etc(const struct cni_config *c, const char *workload, const char *ip,
                  char **hosts_path, char **resolv_conf_path, struct cap_error *err);

/* The address recorded by the last successful cni_setup of container_id, into buf ("" and
 * -ENOENT when there is none): for workloads adopted after a restart. */
int cni_cached_ip(const struct cni_config *c, const char *container_id, char *buf, size_t len);

/* The namespace path for a workload (malloc'd), whether it exists or not. */
char *cni_netns_path(const struct cni_config *c, const char *workload);

void cni_attachment_free(struct cni_attachment *a);

/* ---- Pure parts (cni-json.c; unit-tested) -----------------------------------------------------
 */

/* The "capsule" conflist as JSON text (malloc'd): bridge (isGateway, no ipMasq: cni.c keeps one
 * masquerade rule for the whole subnet; host-local on subnet with dataDir STATE_DIR/ipam) and
 * portmap (capabilities.portMappings). */
char *cni_conflist_json(const struct cni_config *c);

/* The stdin config for plugin `index` of conflist_json: the plugin object plus the list's name
 * and cniVersion, prevResult (JSON text, NULL for none) and, for plugins declaring the
 * portMappings capability, runtimeConfig.portMappings from ports. malloc'd; NULL on bad input. */
char *cni_plugin_config(const char *conflist_json, size_t index, const char *prev_result,
                        const struct cni_port *ports, size_t n_ports);
/* Number of plugins in conflist_json and the "type" of plugin `index` (malloc'd). */
size_t cni_plugin_count(const char *conflist_json);
char *cni_plugin_type(const char *conflist_json, size_t index);

/* Parses a CNI 1.0 result: the first IPv4 address of an interface inside the sandbox (or the
 * first IPv4 at all), its gateway and that interface's MAC. */
int cni_result_parse(const char *result_json, struct cni_attachment *out, struct cap_error *err);
/* Parses a CNI error ({"code","msg","details"}) from a failed plugin's stdout into err. */
void cni_error_parse(const char *plugin, int exit_code, const char *out, const char *errout,
                     struct cap_error *err);

/* Splits one iptables-save rule line ("-A CHAIN -m comment --comment \"x y\" -j X") into argv
 * words, honouring iptables-save's double quotes and backslash escapes. Returns the word count
 * (argv NULL-terminated, words malloc'd; free with cni_words_free) or negative. */
int cni_split_rule(const char *line, char ***words);
void cni_words_free(char **words);

/* A workload's resolv.conf from the host's text: loopback name servers (127.0.0.0/8, ::1: a
 * local resolver the workload's namespace cannot reach) are dropped, search/options lines kept;
 * with no name server left, 8.8.8.8 and 8.8.4.4 (as Docker does). malloc'd. */
char *cni_resolv_conf(const char *host_text);
/* The workload's /etc/hosts text. malloc'd. */
char *cni_hosts_file(const char *workload, const char *ip);
