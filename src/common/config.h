/* Machine config (machine.yaml, read by capsuled) and client config (capsuleconfig, read by
 * capsulectl). Both are YAML written by `capsulectl gen config`; certificates and keys are PEM
 * inline.
 *
 * machine.yaml:
 *   version: 1
 *   hostname: home
 *   api: {listen: "0.0.0.0:50000"}
 *   pki: {ca: <PEM>, cert: <PEM>, key: <PEM>}
 *   pki.revoked: ["3F2A...", ...]  serials (hex) of client certificates the API refuses; live
 *                                  (machine-config apply makes it effective at once)
 *   registries:
 *     insecure: ["127.0.0.1:5000"]
 *     ca: <PEM, one or more certificates>
 *     auth: [{host: "registry.lan:5000", username: alice, password: s3cret}]
 *   network: {dhcp: true, address: "192.168.1.10/24", gateway: "192.168.1.1", dns: [...]}
 *   updates:
 *     trustedKeys: [<PEM>, ...]   Ed25519 public keys that may sign update bundles (a list, so a
 *                                 new key can be added before bundles are signed with it)
 *     publicKey: <PEM>            the older single-key form, still read: merged into trustedKeys
 *     commitWindow: 5m            how long a tentative boot has to pass its health checks
 *                                 (30s to 24h; default 5m)
 *   time: {servers: ["192.168.1.1", "ntp.lan:123"]}   (absent: pool.ntp.org; [] = no NTP)
 *   metrics:                      the Prometheus endpoint (GET /metrics)
 *     enabled: true               default true
 *     listen: "0.0.0.0:50001"     IP:PORT, default 0.0.0.0:50001
 *     insecureHTTP: false         true: plain HTTP without client certificates (a trusted LAN);
 *                                 default HTTPS with a client certificate of any Capsule role
 *
 * capsuleconfig:
 *   currentContext: home
 *   contexts:
 *     - name: home
 *       endpoint: "192.168.1.10:50000"
 *       ca: <PEM>
 *       cert: <PEM>
 *       key: <PEM> */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Credentials for one registry host (as written in image references: "registry.lan:5000"). */
struct registry_cred {
        char *host;
        char *username;
        char *password;
};

struct machine_config {
        int version;
        char *hostname;
        char *listen;               /* API listen address, default "0.0.0.0:50000" */
        char *ca_pem;               /* CA that signs client certs */
        char *cert_pem;             /* the machine's server certificate */
        char *key_pem;              /* its private key */
        char **insecure_registries; /* host[:port] allowed over plain HTTP */
        size_t n_insecure_registries;
        char *registry_ca_pem; /* extra CAs trusted for registry HTTPS (beside the system's) */
        struct registry_cred *registry_auth;
        size_t n_registry_auth;
        bool dhcp;     /* default true */
        char *address; /* static CIDR, when dhcp is false */
        char *gateway;
        char **dns;
        size_t n_dns;
        /* updates.publicKey as written (older configs; may be NULL): kept so that the config
         * re-renders as it was read, and merged into update_trusted_keys (use that list). */
        char *update_pubkey_pem;
        /* Every Ed25519 public key (PEM) trusted to sign update bundles: publicKey first, then
         * trustedKeys, without repeats. Each was checked to be one Ed25519 key at load. */
        char **update_trusted_keys;
        size_t n_update_trusted_keys;
        unsigned update_commit_window_sec; /* updates.commitWindow, default 300 */
        /* NTP servers ("host" or "host:port"); when time.servers is absent, the default pool */
        char **ntp_servers;
        size_t n_ntp_servers;
        bool ntp_servers_set; /* time.servers given (an empty list turns NTP off) */
        /* metrics: the Prometheus endpoint */
        bool metrics_off;           /* metrics.enabled: false (zero value: on) */
        char *metrics_listen;       /* metrics.listen, default MACHINE_METRICS_LISTEN */
        bool metrics_insecure_http; /* metrics.insecureHTTP, default false */
        /* pki.revoked: serials of revoked client certificates, canonical (upper-case hex without
         * leading zeros, see machine_serial_canon), no repeats, at most MACHINE_REVOKED_MAX */
        char **revoked_serials;
        size_t n_revoked_serials;
};

/* Bounds of pki.revoked: how many serials, and the length of one (RFC 5280: at most 20 octets). */
#define MACHINE_REVOKED_MAX 1024
#define MACHINE_SERIAL_MAX_HEX 40

/* Canonical form of a certificate serial written in hex ("0a1B" -> "A1B"): upper case, no leading
 * zeros ("0" for zero). -EINVAL (out untouched) unless s is 1-40 hex digits; out needs 41 bytes. */
int machine_serial_canon(const char *s, char out[MACHINE_SERIAL_MAX_HEX + 1]);
/* True when serial (any hex form) is in cfg's pki.revoked. */
bool machine_serial_revoked(const struct machine_config *cfg, const char *serial);
/* True when a and b revoke the same serials in the same order. */
bool machine_config_revoked_equal(const struct machine_config *a, const struct machine_config *b);

#define MACHINE_METRICS_LISTEN "0.0.0.0:50001"

/* Checks an "IPV4:PORT" or "[IPV6]:PORT" listen address with a port of 1-65535. */
bool machine_listen_ok(const char *addr);

struct client_context {
        char *name;
        char *endpoint; /* host:port (a comma-separated list is read as several, as --capsule) */
        char *ca_pem;
        char *cert_pem;
        char *key_pem;
        /* `endpoints: [host:port, ...]` instead of endpoint (exactly one of the two is set): a
         * context for a fleet, every verb runs on each capsule as with --capsule a,b */
        char **endpoints;
        size_t n_endpoints;
};

struct client_config {
        char *current_context;
        struct client_context *contexts;
        size_t n_contexts;
};

/* Parses machine.yaml. Unknown fields and missing required ones (pki.*) are errors naming the
 * field. */
/* The default NTP server when time.servers is absent. */
#define MACHINE_DEFAULT_NTP "pool.ntp.org"

/* Splits an NTP server entry ("host", "host:port", "[v6]:port") into host and port (123 when
 * absent). Returns -EINVAL for anything else. */
int ntp_server_split(const char *entry, char *host, size_t host_len, unsigned *port);

int machine_config_load(const char *path, struct machine_config *out, struct cap_error *err);
/* The default and bounds of updates.commitWindow, in seconds. */
#define MACHINE_COMMIT_WINDOW_DEFAULT 300
#define MACHINE_COMMIT_WINDOW_MIN 30
#define MACHINE_COMMIT_WINDOW_MAX 86400
/* True when the updates sections of a and b say the same (same trusted keys in the same order,
 * same commit window). */
bool machine_config_updates_equal(const struct machine_config *a, const struct machine_config *b);
int machine_config_parse(const char *name, const char *buf, size_t len, struct machine_config *out,
                         struct cap_error *err);
/* Writes atomically (temp file + fsync + rename), mode 0600. */
int machine_config_save(const char *path, const struct machine_config *cfg, struct cap_error *err);
void machine_config_free(struct machine_config *cfg);

int client_config_load(const char *path, struct client_config *out, struct cap_error *err);
int client_config_parse(const char *name, const char *buf, size_t len, struct client_config *out,
                        struct cap_error *err);
/* Writes atomically, mode 0600, creating parent directories. */
int client_config_save(const char *path, const struct client_config *cfg, struct cap_error *err);
void client_config_free(struct client_config *cfg);
/* The context called name, or the current one when name is NULL (or the only one when the file
 * has exactly one and no currentContext); NULL if absent. */
const struct client_context *client_config_find(const struct client_config *cfg, const char *name);
/* The context's endpoints as one comma-separated line ("a:50000,b:50000"), for display and for
 * the --capsule list syntax; malloc'd, NULL when out of memory or the context has none. */
char *client_context_endpoints_line(const struct client_context *ctx);
/* Default client config path: $CAPSULECONFIG, else ~/.config/capsule/config. Caller frees. */
char *client_config_default_path(void);
/* Adds a deep copy of ctx. A context of the same name is an ALREADY_EXISTS error unless replace,
 * in which case it is overwritten. Makes it the current context when there was none. */
int client_config_add(struct client_config *cfg, const struct client_context *ctx, bool replace,
                      struct cap_error *err);
/* Makes name the current context; NOT_FOUND (listing the known ones) when there is no such one. */
int client_config_use(struct client_config *cfg, const char *name, struct cap_error *err);

/* Serializes to YAML (PEM as literal block scalars) after checking that the text parses back to
 * a valid config; *out is malloc'd and NUL-terminated. The *_save functions use these. */
int machine_config_format(const struct machine_config *cfg, char **out, size_t *len,
                          struct cap_error *err);
int client_config_format(const struct client_config *cfg, char **out, size_t *len,
                         struct cap_error *err);

/* Reads a config file ("-": standard input) of at most 1 MiB into a NUL-terminated buffer the
 * caller frees; a larger one is refused (INVALID_ARGUMENT, naming the file). */
int config_read_file(const char *path, char **out, size_t *len, struct cap_error *err);

/* Writes data to path atomically: a temp file in the same directory, fsync, rename over path,
 * fsync of the directory. Either path keeps its old contents or it has all of data, never a mix. */
int config_write_file_atomic(const char *path, const void *data, size_t len, unsigned int mode,
                             struct cap_error *err);
/* mkdir -p: creates dir and its missing parents with mode. */
int config_mkdir_p(const char *dir, unsigned int mode, struct cap_error *err);
