/* Unit tests for src/common/config.c: round trips, strictness (unknown and missing fields with
 * their line), malformed YAML, file modes and saves that fail without clobbering the old file. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "common/cleanup.h"
#include "common/config.h"
#include "common/pki.h"
#include "test.h"

#define CA "-----BEGIN CERTIFICATE-----\nMIIBCA\nAAAA==\n-----END CERTIFICATE-----\n"
#define CERT "-----BEGIN CERTIFICATE-----\nMIIBSERVER\n-----END CERTIFICATE-----\n"
#define KEY "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----\n"
/* Ed25519 public keys (updates.publicKey / updates.trustedKeys), and a P-256 one to refuse */
#define PUB                                                                                        \
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAV+Ql46cmqa42XhcSWJhWTygOD7xyto3bhn0v2D0gYvc=\n"   \
        "-----END PUBLIC KEY-----\n"
#define PUB2                                                                                       \
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEANLwOo9ZEFZPKANT1i2lVEpDXX3PJZ9l/FwSh989NF6I=\n"   \
        "-----END PUBLIC KEY-----\n"
#define PUB_P256                                                                                   \
        "-----BEGIN PUBLIC KEY-----\n"                                                             \
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMEOhKvVn1jiSFU7uuHiRyBWOXVt+\n"                        \
        "RFg2efPlb4OwUbf01lExM1weJxI57xg0Suf0NTtJAqNdm71zH++TS6vr5w==\n"                            \
        "-----END PUBLIC KEY-----\n"

static char dir[64];

static char *path_in(const char *name)
{
        static char buf[8][128];
        static int i;
        i = (i + 1) % 8;
        snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
        return buf[i];
}

static char *slurp(const char *path)
{
        FILE *f = fopen(path, "r");
        if (!f)
                return NULL;
        char *buf = calloc(1, 1 << 16);
        size_t n = fread(buf, 1, (1 << 16) - 1, f);
        buf[n] = '\0';
        fclose(f);
        return buf;
}

static int count_entries(const char *d)
{
        DIR *dp = opendir(d);
        int n = 0;
        for (struct dirent *e; dp && (e = readdir(dp));)
                n += e->d_name[0] != '.' || (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."));
        if (dp)
                closedir(dp);
        return n;
}

static void machine_fill(struct machine_config *m)
{
        static char *regs[] = {"127.0.0.1:5000", "registry.lan"};
        static char *dns[] = {"1.1.1.1", "9.9.9.9"};
        *m = (struct machine_config){
            .version = 1,
            .hostname = "home",
            .listen = "0.0.0.0:50000",
            .ca_pem = CA,
            .cert_pem = CERT,
            .key_pem = KEY,
            .insecure_registries = regs,
            .n_insecure_registries = 2,
            .dhcp = false,
            .address = "192.168.1.10/24",
            .gateway = "192.168.1.1",
            .dns = dns,
            .n_dns = 2,
            .update_pubkey_pem = PUB,
        };
}

TEST(machine_round_trip)
{
        struct machine_config m, back;
        struct cap_error err = {0};
        machine_fill(&m);
        const char *p = path_in("machine.yaml");
        CHECK(machine_config_save(p, &m, &err) == 0);
        struct stat st;
        CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0600);
        char *text = slurp(p);
        CHECK_CONTAINS(text, "ca: |\n    -----BEGIN CERTIFICATE-----\n");
        CHECK_CONTAINS(text, "hostname: home\n");
        free(text);
        CHECK(machine_config_load(p, &back, &err) == 0);
        CHECK(back.version == 1);
        CHECK_STR_EQ(back.hostname, "home");
        CHECK_STR_EQ(back.listen, "0.0.0.0:50000");
        CHECK_STR_EQ(back.ca_pem, CA);
        CHECK_STR_EQ(back.cert_pem, CERT);
        CHECK_STR_EQ(back.key_pem, KEY);
        CHECK(back.n_insecure_registries == 2);
        CHECK(back.n_insecure_registries == 2 &&
              strcmp(back.insecure_registries[1], "registry.lan") == 0);
        CHECK(!back.dhcp);
        CHECK_STR_EQ(back.address, "192.168.1.10/24");
        CHECK_STR_EQ(back.gateway, "192.168.1.1");
        CHECK(back.n_dns == 2 && strcmp(back.dns[0], "1.1.1.1") == 0);
        CHECK_STR_EQ(back.update_pubkey_pem, PUB);
        CHECK(back.n_update_trusted_keys == 1);
        CHECK_STR_EQ(back.update_trusted_keys[0], PUB);
        CHECK(back.update_commit_window_sec == MACHINE_COMMIT_WINDOW_DEFAULT);
        machine_config_free(&back);
        CHECK(back.hostname == NULL);
}

TEST(machine_defaults)
{
        const char *y =
            "hostname: box\npki:\n  ca: |\n    -----BEGIN CERTIFICATE-----\n    x\n"
            "    -----END CERTIFICATE-----\n  cert: \"-----BEGIN CERTIFICATE-----\\n"
            "-----END CERTIFICATE-----\\n\"\n  key: |\n    -----BEGIN EC PRIVATE KEY-----\n"
            "    -----END EC PRIVATE KEY-----\n";
        struct machine_config m;
        struct cap_error err = {0};
        CHECK(machine_config_parse("m.yaml", y, strlen(y), &m, &err) == 0);
        CHECK(m.version == 1);
        CHECK(m.dhcp);
        CHECK_STR_EQ(m.listen, "0.0.0.0:50000");
        CHECK_STR_EQ(m.ca_pem, "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
        CHECK(m.update_pubkey_pem == NULL && m.n_dns == 0);
        CHECK(m.n_update_trusted_keys == 0);
        CHECK(m.update_commit_window_sec == MACHINE_COMMIT_WINDOW_DEFAULT);
        machine_config_free(&m);
        if (err.msg[0])
                fprintf(stderr, "  %s\n", err.msg);
}

static void expect_machine_error(const char *yaml, const char *want1, const char *want2)
{
        struct machine_config m;
        struct cap_error err = {0};
        CHECK(machine_config_parse("machine.yaml", yaml, strlen(yaml), &m, &err) < 0);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.msg, want1);
        if (want2)
                CHECK_CONTAINS(err.msg, want2);
        CHECK(m.hostname == NULL && m.ca_pem == NULL);
}

#define PKI_OK                                                                                     \
        "pki:\n  ca: |\n    -----BEGIN CERTIFICATE-----\n    -----END CERTIFICATE-----\n"          \
        "  cert: |\n    -----BEGIN CERTIFICATE-----\n    -----END CERTIFICATE-----\n"              \
        "  key: |\n    -----BEGIN PRIVATE KEY-----\n    -----END PRIVATE KEY-----\n"

TEST(machine_strict)
{
        expect_machine_error("hostname: home\napi:\n  lisen: \"0.0.0.0:1\"\n" PKI_OK,
                             "machine.yaml:3: ", "unknown field \"api.lisen\"");
        expect_machine_error("hostname: home\n" PKI_OK "colour: blue\n",
                             "machine.yaml:12: ", "unknown field \"colour\"");
        expect_machine_error(
            "hostname: home\npki:\n  ca: |\n    -----BEGIN CERTIFICATE-----\n"
            "    -----END CERTIFICATE-----\n  cert: |\n    -----BEGIN CERTIFICATE-----\n"
            "    -----END CERTIFICATE-----\n",
            "machine.yaml:3: ", "missing required field \"pki.key\"");
        expect_machine_error("hostname: home\n", "missing required field \"pki\"", NULL);
        expect_machine_error(PKI_OK, "missing required field \"hostname\"", NULL);
        expect_machine_error("hostname: Home_1\n" PKI_OK,
                             "hostname \"Home_1\": must be a DNS label", NULL);
        expect_machine_error("version: 2\nhostname: home\n" PKI_OK, "unsupported version 2", NULL);
        expect_machine_error("version: one\nhostname: home\n" PKI_OK,
                             "machine.yaml:1: ", "version: expected an integer");
        expect_machine_error("hostname: home\nhostname: away\n" PKI_OK,
                             "machine.yaml:2: ", "duplicate field \"hostname\"");
        expect_machine_error("hostname: home\nnetwork: {dhcp: maybe}\n" PKI_OK,
                             "network.dhcp: expected true or false", NULL);
        expect_machine_error("hostname: home\nnetwork: {dhcp: false}\n" PKI_OK,
                             "network.address: required when network.dhcp is false", NULL);
        expect_machine_error("hostname: home\npki: [a, b]\n",
                             "machine.yaml:2: ", "pki: expected a mapping");
        expect_machine_error("hostname: home\npki:\n  ca: hello\n  cert: x\n  key: y\n",
                             "pki.ca: expected a PEM block", NULL);
        expect_machine_error("- a\n- b\n", "document: expected a mapping", NULL);
        expect_machine_error("hostname: home\nregistries: {insecure: [[x]]}\n" PKI_OK,
                             "registries.insecure[0]: expected a string", NULL);
}

/* Every network field that lands in dhcpcd.conf, resolv.conf or chrony's config is checked at
 * load: addresses with inet_pton, prefix lengths in range, no newlines or control characters
 * anywhere (a newline would inject directives). */
TEST(machine_network_validated)
{
#define NET(x) "hostname: home\nnetwork:\n  dhcp: false\n" x PKI_OK
        struct machine_config m;
        struct cap_error err = {0};
        const char *ok = NET("  address: 192.168.1.10/24\n  gateway: 192.168.1.1\n"
                             "  dns: [1.1.1.1, \"2606:4700::1111\"]\n");
        CHECK(machine_config_parse("machine.yaml", ok, strlen(ok), &m, &err) == 0);
        machine_config_free(&m);
        const char *ok6 = NET("  address: \"fd00::10/64\"\n  gateway: \"fd00::1\"\n");
        CHECK(machine_config_parse("machine.yaml", ok6, strlen(ok6), &m, &err) == 0);
        machine_config_free(&m);

        expect_machine_error(NET("  address: 192.168.1.10\n"), "machine.yaml:4: ",
                             "network.address: \"192.168.1.10\" is not ADDRESS/PREFIX");
        expect_machine_error(NET("  address: 192.168.1.300/24\n"),
                             "network.address: ", "is not ADDRESS/PREFIX");
        expect_machine_error(NET("  address: 192.168.1.10/33\n"),
                             "network.address: \"192.168.1.10/33\"", "prefix 1-32");
        expect_machine_error(NET("  address: \"fd00::1/129\"\n"),
                             "network.address: ", "prefix 1-128");
        expect_machine_error(NET("  address: \"10.0.0.2/24\\nstatic routers=6.6.6.6\"\n"),
                             "network.address: ", "control character");
        expect_machine_error(
            NET("  address: 10.0.0.2/24\n  gateway: 10.0.0.1x\n"),
            "machine.yaml:5: ", "network.gateway: \"10.0.0.1x\" is not an IP address");
        expect_machine_error(NET("  address: 10.0.0.2/24\n  gateway: \"fd00::1\"\n"),
                             "network.gateway: ", "not the same family as network.address");
        expect_machine_error(
            NET("  address: 10.0.0.2/24\n  dns: [1.1.1.1, \"8.8.8.8\\nsearch evil\"]\n"),
            "network.dns[1]: ", "control character");
        expect_machine_error(NET("  address: 10.0.0.2/24\n  dns: [dns.lan]\n"),
                             "network.dns[0]: \"dns.lan\" is not an IP address", NULL);
        expect_machine_error(
            NET("  address: 10.0.0.2/24\n  dns: [1.1.1.1, 1.0.0.1, 9.9.9.9, 8.8.8.8]\n"),
            "network.dns: at most 3 servers", NULL);
        /* with DHCP the static fields are not used, but still must not carry junk */
        expect_machine_error("hostname: home\nnetwork: {dhcp: true, gateway: nope}\n" PKI_OK,
                             "network.gateway: \"nope\" is not an IP address", NULL);
        expect_machine_error("hostname: home\napi: {listen: \"0.0.0.0:5000\\n0\"}\n" PKI_OK,
                             "api.listen: ", "is not IP:PORT");
        expect_machine_error("hostname: home\ntime: {servers: [\"ntp.lan\\nallow all\"]}\n" PKI_OK,
                             "time.servers[0]: ", "is not HOST");
        expect_machine_error("hostname: home\nregistries: {insecure: [\"reg.lan\\tx\"]}\n" PKI_OK,
                             "registries.insecure[0]: ", "control character");
        expect_machine_error(
            "hostname: home\nregistries: {auth: [{host: r.lan, username: \"a\\r\\nX: y\", "
            "password: p}]}\n" PKI_OK,
            "registries.auth[0].username: ", "control character");
#undef NET
}

/* registries.ca: real certificates round-trip and load into a store; anything else is refused at
 * load time, naming the field and its line. */
TEST(machine_registry_ca)
{
        struct cap_error err = {0};
        struct pki_pair a = {0}, b = {0};
        CHECK(pki_ca_create("reg-a", NULL, &a, &err) == 0);
        CHECK(pki_ca_create("reg-b", NULL, &b, &err) == 0);
        char *both = NULL;
        CHECK(asprintf(&both, "%s%s", a.cert_pem, b.cert_pem) > 0);
        struct machine_config m, back;
        machine_fill(&m);
        m.registry_ca_pem = both;
        const char *p = path_in("machine-ca.yaml");
        CHECK(machine_config_save(p, &m, &err) == 0);
        CHECK(machine_config_load(p, &back, &err) == 0);
        CHECK_STR_EQ(back.registry_ca_pem, both);
        CHECK(back.n_insecure_registries == 2);
        machine_config_free(&back);

        X509_STORE *st = X509_STORE_new();
        size_t n = 0;
        CHECK(pki_certs_load(both, st, &n, &err) == 0 && n == 2);
        CHECK(pki_certs_load(a.cert_pem, st, &n, &err) == 0 && n == 1); /* already there: fine */
        X509_STORE_free(st);
        CHECK(pki_certs_load("hello", NULL, &n, &err) < 0 && n == 0);
        CHECK_CONTAINS(err.msg, "no \"-----BEGIN CERTIFICATE-----\" block found");

        expect_machine_error("hostname: home\n" PKI_OK "registries:\n  ca: |\n"
                             "    -----BEGIN CERTIFICATE-----\n    MIIBad\n"
                             "    -----END CERTIFICATE-----\n",
                             "machine.yaml:13: ", "registries.ca: certificate 1: not a valid PEM");
        expect_machine_error("hostname: home\n" PKI_OK "registries: {ca: nope}\n",
                             "registries.ca: no \"-----BEGIN CERTIFICATE-----\" block found", NULL);
        free(both);
        pki_pair_free(&a);
        pki_pair_free(&b);
}

/* registries.auth: credentials per host round-trip; incomplete, duplicate or odd entries are
 * refused naming the entry. */
TEST(machine_registry_auth)
{
        struct cap_error err = {0};
        struct registry_cred creds[] = {
            {.host = "registry.lan:5000", .username = "alice", .password = "wonder land"},
            {.host = "ghcr.io", .username = "bob", .password = "t0k:en#1"},
        };
        struct machine_config m, back;
        machine_fill(&m);
        m.registry_auth = creds;
        m.n_registry_auth = 2;
        const char *p = path_in("machine-auth.yaml");
        CHECK(machine_config_save(p, &m, &err) == 0);
        CHECK(machine_config_load(p, &back, &err) == 0);
        CHECK(back.n_registry_auth == 2);
        if (back.n_registry_auth == 2) {
                CHECK_STR_EQ(back.registry_auth[0].host, "registry.lan:5000");
                CHECK_STR_EQ(back.registry_auth[0].password, "wonder land");
                CHECK_STR_EQ(back.registry_auth[1].username, "bob");
                CHECK_STR_EQ(back.registry_auth[1].password, "t0k:en#1");
        }
        CHECK(back.n_insecure_registries == 2);
        machine_config_free(&back);

        expect_machine_error("hostname: home\n" PKI_OK
                             "registries:\n  auth:\n    - {host: a.lan, username: u}\n",
                             "machine.yaml:14: ", "registries.auth[0].password");
        expect_machine_error("hostname: home\n" PKI_OK "registries:\n  auth:\n"
                             "    - {host: a.lan, username: u, password: p}\n"
                             "    - {host: A.lan, username: v, password: q}\n",
                             "registries.auth[1].host: duplicate host \"A.lan\"", NULL);
        expect_machine_error(
            "hostname: home\n" PKI_OK
            "registries:\n  auth:\n    - {host: a.lan/x, username: u, password: p}\n",
            "registries.auth[0].host: a registry host", NULL);
        expect_machine_error(
            "hostname: home\n" PKI_OK
            "registries:\n  auth:\n    - {host: a, username: u, password: p, x: 1}\n",
            "registries.auth[0].x", "unknown field");
        expect_machine_error("hostname: home\n" PKI_OK "registries: {auth: {host: a}}\n",
                             "registries.auth: expected a list", NULL);
}

/* time.servers: absent (default pool), a list, or [] (NTP off) round-trip; entries are HOST,
 * HOST:PORT or [IPV6]:PORT. */
TEST(machine_time_servers)
{
        struct cap_error err = {0};
        char host[64];
        unsigned port;
        CHECK(ntp_server_split("pool.ntp.org", host, sizeof(host), &port) == 0 && port == 123);
        CHECK_STR_EQ(host, "pool.ntp.org");
        CHECK(ntp_server_split("10.0.2.2:12345", host, sizeof(host), &port) == 0 && port == 12345);
        CHECK_STR_EQ(host, "10.0.2.2");
        CHECK(ntp_server_split("[fd00::1]:124", host, sizeof(host), &port) == 0 && port == 124);
        CHECK_STR_EQ(host, "fd00::1");
        CHECK(ntp_server_split("[fd00::1]", host, sizeof(host), &port) == 0 && port == 123);
        const char *bad[] = {"",     "fd00::1", "a:0",  "a:65536", "a:",    "a b",
                             "a;rm", "[]:1",    "[x]y", "a:1:2",   "host/x"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                CHECK(ntp_server_split(bad[i], host, sizeof(host), &port) < 0);

        static char *servers[] = {"192.168.1.1", "ntp.lan:1123"};
        struct machine_config m, back;
        const char *p = path_in("machine-time.yaml");
        for (int round = 0; round < 3; round++) {
                machine_fill(&m);
                m.ntp_servers_set = round > 0;
                m.ntp_servers = round == 1 ? servers : NULL;
                m.n_ntp_servers = round == 1 ? 2 : 0;
                CHECK(machine_config_save(p, &m, &err) == 0);
                CHECK(machine_config_load(p, &back, &err) == 0);
                CHECK(back.ntp_servers_set == (round > 0));
                CHECK(back.n_ntp_servers == (round == 1 ? 2u : 0u));
                if (round == 1 && back.n_ntp_servers == 2)
                        CHECK_STR_EQ(back.ntp_servers[1], "ntp.lan:1123");
                machine_config_free(&back);
        }
        expect_machine_error("hostname: home\n" PKI_OK "time: {servers: [\"fd00::1\"]}\n",
                             "time.servers[0]: \"fd00::1\" is not HOST, HOST:PORT or [IPV6]:PORT",
                             NULL);
        expect_machine_error("hostname: home\n" PKI_OK "time: {server: [a]}\n", "time.server",
                             "unknown field");
        expect_machine_error("hostname: home\n" PKI_OK
                             "time: {servers: [a, b, c, d, e, f, g, h, i]}\n",
                             "time.servers: at most 8 servers", NULL);
}

/* metrics: defaults, round trip of non-defaults, bad values named with their field. */
TEST(machine_metrics)
{
        struct machine_config m, back;
        struct cap_error err = {0};
        const char *p = path_in("machine-metrics.yaml");
        machine_fill(&m);
        CHECK(machine_config_save(p, &m, &err) == 0);
        char *text = slurp(p);
        CHECK(text && !strstr(text, "metrics")); /* defaults are not written */
        free(text);
        CHECK(machine_config_load(p, &back, &err) == 0);
        CHECK(!back.metrics_off && !back.metrics_insecure_http);
        CHECK_STR_EQ(back.metrics_listen, MACHINE_METRICS_LISTEN);
        machine_config_free(&back);

        machine_fill(&m);
        m.metrics_off = true;
        m.metrics_insecure_http = true;
        m.metrics_listen = "[::1]:9464";
        CHECK(machine_config_save(p, &m, &err) == 0);
        CHECK(machine_config_load(p, &back, &err) == 0);
        CHECK(back.metrics_off && back.metrics_insecure_http);
        CHECK_STR_EQ(back.metrics_listen, "[::1]:9464");
        machine_config_free(&back);

        const char *y = "hostname: home\n" PKI_OK
                        "metrics: {listen: \"192.168.1.10:50001\", insecureHTTP: true}\n";
        CHECK(machine_config_parse("m.yaml", y, strlen(y), &m, &err) == 0);
        CHECK(m.metrics_insecure_http && !m.metrics_off);
        CHECK_STR_EQ(m.metrics_listen, "192.168.1.10:50001");
        machine_config_free(&m);

        expect_machine_error("hostname: home\n" PKI_OK "metrics: {port: 50001}\n",
                             "unknown field \"metrics.port\"", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "metrics: {insecureHTTP: yes}\n",
                             "metrics.insecureHTTP: expected true or false", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "metrics: {enabled: 1}\n",
                             "metrics.enabled: expected true or false", NULL);
        const char *bad[] = {"50001", "host.lan:50001", "0.0.0.0:0", "0.0.0.0:65536",
                             "0.0.0.0:", "::1:50001", "[::1]", "1.2.3.4:5x"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                char yaml[512];
                snprintf(yaml, sizeof(yaml), "hostname: home\n" PKI_OK "metrics: {listen: \"%s\"}\n",
                         bad[i]);
                expect_machine_error(yaml, "metrics.listen: ", "is not IP:PORT");
        }
}

TEST(malformed_yaml)
{
        expect_machine_error("hostname: [home\n" PKI_OK, "machine.yaml:", "invalid YAML");
        expect_machine_error("hostname: home\n  bad indent: x\n", "invalid YAML", NULL);
        expect_machine_error("", "empty document", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "---\nhostname: two\n",
                             "only one YAML document", NULL);
        expect_machine_error("hostname: *nope\n", "invalid YAML", NULL);
        struct client_config c;
        struct cap_error err = {0};
        const char *y = "contexts:\n  - name: a\n    endpoint: \"x\n";
        CHECK(client_config_parse("cc", y, strlen(y), &c, &err) < 0);
        CHECK_CONTAINS(err.msg, "cc:");
        CHECK_CONTAINS(err.msg, "invalid YAML");
        CHECK(machine_config_load(path_in("does-not-exist"), &(struct machine_config){0}, &err) ==
              -ENOENT);
        CHECK_CONTAINS(err.msg, "does-not-exist");
}

static void client_fill(struct client_config *c, struct client_context ctx[2])
{
        ctx[0] = (struct client_context){"home", "192.168.1.10:50000", CA, CERT, KEY};
        ctx[1] = (struct client_context){"lab", "[fd00::1]:50000", CA, CERT, KEY};
        *c = (struct client_config){.current_context = "lab", .contexts = ctx, .n_contexts = 2};
}

/* updates: trustedKeys (a list), the older single publicKey merged into it, commitWindow; every
 * key checked to be one Ed25519 public key, naming its list index. */
static char *indent_pem(const char *pem)
{
        static char buf[4][1024];
        static int k;
        k = (k + 1) % 4;
        size_t n = 0;
        for (const char *p = pem; *p; p++) {
                if (p == pem || p[-1] == '\n')
                        n += (size_t)snprintf(buf[k] + n, sizeof(buf[k]) - n, "      ");
                buf[k][n++] = *p;
        }
        buf[k][n] = '\0';
        return buf[k];
}

TEST(machine_updates)
{
        char y[4096];
        struct machine_config m, back;
        struct cap_error err = {0};
        snprintf(y, sizeof(y),
                 "hostname: home\n" PKI_OK "updates:\n  publicKey: |\n%s  trustedKeys:\n"
                 "    - |\n%s    - |\n%s  commitWindow: 90s\n",
                 indent_pem(PUB), indent_pem(PUB), indent_pem(PUB2));
        CHECK(machine_config_parse("m.yaml", y, strlen(y), &m, &err) == 0);
        if (err.msg[0])
                fprintf(stderr, "  %s\n", err.msg);
        /* publicKey first, its repeat in the list dropped */
        CHECK(m.n_update_trusted_keys == 2);
        CHECK(m.n_update_trusted_keys == 2 && strcmp(m.update_trusted_keys[0], PUB) == 0 &&
              strcmp(m.update_trusted_keys[1], PUB2) == 0);
        CHECK(m.update_commit_window_sec == 90);
        char *text = NULL;
        size_t len = 0;
        CHECK(machine_config_format(&m, &text, &len, &err) == 0);
        CHECK_CONTAINS(text, "commitWindow: 90s");
        CHECK_CONTAINS(text, "trustedKeys:");
        CHECK(text && machine_config_parse("again.yaml", text, len, &back, &err) == 0);
        CHECK(machine_config_updates_equal(&m, &back));
        back.update_commit_window_sec = 300;
        CHECK(!machine_config_updates_equal(&m, &back));
        machine_config_free(&back);
        free(text);
        machine_config_free(&m);

        /* a config written by gen config: trustedKeys only, default window not written */
        char *keys[] = {PUB2, PUB};
        machine_fill(&m);
        m.update_pubkey_pem = NULL;
        m.update_trusted_keys = keys;
        m.n_update_trusted_keys = 2;
        CHECK(machine_config_format(&m, &text, &len, &err) == 0);
        CHECK(text && !strstr(text, "publicKey") && !strstr(text, "commitWindow"));
        CHECK(text && machine_config_parse("gen.yaml", text, len, &back, &err) == 0);
        CHECK(back.n_update_trusted_keys == 2 &&
              strcmp(back.update_trusted_keys[0], PUB2) == 0);
        CHECK(machine_config_updates_equal(&m, &back));
        machine_config_free(&back);
        free(text);

        const char *windows[] = {"5m", "30s", "24h", "1h30m"};
        const unsigned secs[] = {300, 30, 86400, 5400};
        for (size_t i = 0; i < 4; i++) {
                snprintf(y, sizeof(y), "hostname: home\n" PKI_OK "updates: {commitWindow: %s}\n",
                         windows[i]);
                CHECK(machine_config_parse("m.yaml", y, strlen(y), &m, &err) == 0);
                CHECK(m.update_commit_window_sec == secs[i]);
                machine_config_free(&m);
        }
        expect_machine_error("hostname: home\n" PKI_OK "updates: {commitWindow: 29s}\n",
                             "updates.commitWindow: 29s is outside 30s to 24h", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "updates: {commitWindow: 25h}\n",
                             "updates.commitWindow: 25h is outside", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "updates: {commitWindow: 300}\n",
                             "updates.commitWindow: \"300\" is not a duration", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "updates: {commitWindow: 5x}\n",
                             "updates.commitWindow: \"5x\" is not a duration", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "updates: {trustedKeys: [nope]}\n",
                             "updates.trustedKeys[0]: not a PEM public key", NULL);
        snprintf(y, sizeof(y), "hostname: home\n" PKI_OK "updates:\n  trustedKeys:\n    - |\n%s"
                 "    - |\n%s", indent_pem(PUB), indent_pem(PUB_P256));
        expect_machine_error(y, "updates.trustedKeys[1]: not an Ed25519 key", NULL);
        snprintf(y, sizeof(y), "hostname: home\n" PKI_OK "updates:\n  trustedKeys:\n    - |\n%s"
                 "    - |\n%s", indent_pem(PUB), indent_pem(PUB));
        expect_machine_error(y, "updates.trustedKeys[1]: the same key as [0]", NULL);
        char two[1024];
        snprintf(two, sizeof(two), "%s%s", PUB, PUB2);
        snprintf(y, sizeof(y), "hostname: home\n" PKI_OK "updates:\n  trustedKeys:\n    - |\n%s",
                 indent_pem(two));
        expect_machine_error(y, "updates.trustedKeys[0]: more than one key", NULL);
        snprintf(y, sizeof(y), "hostname: home\n" PKI_OK "updates:\n  publicKey: |\n%s",
                 indent_pem(PUB_P256));
        expect_machine_error(y, "updates.publicKey: not an Ed25519 key", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "updates: {keys: []}\n",
                             "unknown field \"updates.keys\"", NULL);
}

TEST(client_round_trip)
{
        struct client_context ctx[2];
        struct client_config c, back;
        struct cap_error err = {0};
        client_fill(&c, ctx);
        const char *p = path_in("sub/dir/capsuleconfig"); /* parents are created */
        CHECK(client_config_save(p, &c, &err) == 0);
        struct stat st;
        CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0600);
        CHECK(stat(path_in("sub/dir"), &st) == 0 && (st.st_mode & 07777) == 0700);
        CHECK(client_config_load(p, &back, &err) == 0);
        CHECK_STR_EQ(back.current_context, "lab");
        CHECK(back.n_contexts == 2);
        const struct client_context *x = client_config_find(&back, NULL);
        CHECK(x && strcmp(x->name, "lab") == 0);
        CHECK(x && strcmp(x->endpoint, "[fd00::1]:50000") == 0);
        x = client_config_find(&back, "home");
        CHECK(x && strcmp(x->key_pem, KEY) == 0 && strcmp(x->ca_pem, CA) == 0);
        CHECK(client_config_find(&back, "nope") == NULL);

        CHECK(client_config_use(&back, "home", &err) == 0);
        CHECK(client_config_use(&back, "nope", &err) == -ENOENT);
        CHECK_CONTAINS(err.msg, "known: home, lab");
        struct client_context extra = {"new", "10.0.0.1:50000", CA, CERT, KEY};
        CHECK(client_config_add(&back, &extra, false, &err) == 0);
        CHECK(client_config_add(&back, &extra, false, &err) == -EEXIST);
        extra.endpoint = "10.0.0.2:50000";
        CHECK(client_config_add(&back, &extra, true, &err) == 0);
        CHECK(back.n_contexts == 3);
        CHECK(client_config_save(p, &back, &err) == 0);
        client_config_free(&back);
        CHECK(client_config_load(p, &back, &err) == 0);
        CHECK_STR_EQ(back.current_context, "home");
        x = client_config_find(&back, "new");
        CHECK(x && strcmp(x->endpoint, "10.0.0.2:50000") == 0);
        client_config_free(&back);

        /* Only one context and no currentContext: it is the one. */
        struct client_config one = {.contexts = ctx, .n_contexts = 1};
        CHECK(client_config_find(&one, NULL) == &ctx[0]);
        struct client_config empty = {0};
        CHECK(client_config_add(&empty, &ctx[1], false, &err) == 0);
        CHECK_STR_EQ(empty.current_context, "lab");
        client_config_free(&empty);
}

TEST(client_strict)
{
        struct client_config c;
        struct cap_error err = {0};
        const char *y =
            "currentContext: home\ncontexts:\n- name: home\n  endpoint: a:1\n"
            "  ca: |\n    -----BEGIN CERTIFICATE-----\n    -----END CERTIFICATE-----\n"
            "  cert: |\n    -----BEGIN CERTIFICATE-----\n    -----END CERTIFICATE-----\n"
            "  key: |\n    -----BEGIN PRIVATE KEY-----\n    -----END PRIVATE KEY-----\n"
            "  token: abc\n";
        CHECK(client_config_parse("cfg", y, strlen(y), &c, &err) < 0);
        CHECK_CONTAINS(err.msg, "cfg:14: unknown field \"contexts[0].token\"");
        y = "contexts:\n- name: home\n  endpoint: a:1\n";
        CHECK(client_config_parse("cfg", y, strlen(y), &c, &err) < 0);
        CHECK_CONTAINS(err.msg, "cfg:2: missing required field \"contexts[0].ca\"");
        y = "currentContext: away\ncontexts: []\n";
        CHECK(client_config_parse("cfg", y, strlen(y), &c, &err) < 0);
        CHECK_CONTAINS(err.msg, "no context named \"away\"");
        y = "contexts: []\n";
        CHECK(client_config_parse("cfg", y, strlen(y), &c, &err) == 0);
        CHECK(c.n_contexts == 0 && client_config_find(&c, NULL) == NULL);
        client_config_free(&c);
}

/* A context's `endpoints: [...]` (a fleet): parsed, kept through save/load and add, shown as one
 * line; the errors name the field (and the item). */
#define CLIENT_PKI                                                                                 \
        "  ca: |\n    -----BEGIN CERTIFICATE-----\n    -----END CERTIFICATE-----\n"                  \
        "  cert: |\n    -----BEGIN CERTIFICATE-----\n    -----END CERTIFICATE-----\n"                \
        "  key: |\n    -----BEGIN PRIVATE KEY-----\n    -----END PRIVATE KEY-----\n"

static void expect_client_error(const char *y, const char *want)
{
        struct client_config c;
        struct cap_error err = {0};
        CHECK(client_config_parse("cfg", y, strlen(y), &c, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, want);
        CHECK(c.n_contexts == 0 && c.contexts == NULL);
}

TEST(client_endpoints)
{
        struct client_config c, back;
        struct cap_error err = {0};
        const char *y = "contexts:\n- name: pair\n  endpoints: [10.0.0.2:50000, \"[fd00::3]:50000\"]\n"
                        CLIENT_PKI;
        CHECK(client_config_parse("cfg", y, strlen(y), &c, &err) == 0);
        const struct client_context *x = client_config_find(&c, NULL);
        CHECK(x && x->endpoint == NULL && x->n_endpoints == 2);
        if (!x || x->n_endpoints != 2)
                return;
        CHECK_STR_EQ(x->endpoints[0], "10.0.0.2:50000");
        CHECK_STR_EQ(x->endpoints[1], "[fd00::3]:50000");
        char *line = client_context_endpoints_line(x);
        CHECK_STR_EQ(line, "10.0.0.2:50000,[fd00::3]:50000");
        free(line);
        /* saved as a list, read back the same; add copies the list */
        const char *p = path_in("fleetconfig");
        CHECK(client_config_save(p, &c, &err) == 0);
        CHECK(client_config_load(p, &back, &err) == 0);
        x = client_config_find(&back, "pair");
        CHECK(x && x->n_endpoints == 2 && !x->endpoint && strcmp(x->endpoints[1], "[fd00::3]:50000") == 0);
        struct client_context copy = *x;
        copy.name = "pair2";
        CHECK(client_config_add(&c, &copy, false, &err) == 0);
        client_config_free(&back);
        x = client_config_find(&c, "pair2");
        CHECK(x && x->n_endpoints == 2 && strcmp(x->endpoints[0], "10.0.0.2:50000") == 0);
        /* a single endpoint's line is itself */
        struct client_context one = {"one", "a:1", CA, CERT, KEY};
        line = client_context_endpoints_line(&one);
        CHECK_STR_EQ(line, "a:1");
        free(line);
        client_config_free(&c);

        expect_client_error("contexts:\n- name: h\n  endpoint: a:1\n  endpoints: [b:1]\n" CLIENT_PKI,
                            "cfg:2: contexts[0]: endpoint and endpoints are both set");
        expect_client_error("contexts:\n- name: h\n" CLIENT_PKI,
                            "missing required field \"contexts[0].endpoint\" (or "
                            "\"contexts[0].endpoints\"");
        expect_client_error("contexts:\n- name: h\n  endpoints: []\n" CLIENT_PKI,
                            "contexts[0].endpoints: must list at least one HOST:PORT");
        expect_client_error("contexts:\n- name: h\n  endpoints:\n" CLIENT_PKI,
                            "contexts[0].endpoints: must list at least one HOST:PORT");
        expect_client_error("contexts:\n- name: h\n  endpoints: a:1\n" CLIENT_PKI,
                            "contexts[0].endpoints: expected a list of strings");
        expect_client_error("contexts:\n- name: h\n  endpoints: [a:1, \"b:1,c:1\"]\n" CLIENT_PKI,
                            "contexts[0].endpoints[1]: \"b:1,c:1\" is not HOST:PORT");
        expect_client_error("contexts:\n- name: h\n  endpoints: [a:1, \"\"]\n" CLIENT_PKI,
                            "contexts[0].endpoints[1]: \"\" is not HOST:PORT");
        expect_client_error("contexts:\n- name: h\n  endpoints: [a]\n" CLIENT_PKI,
                            "contexts[0].endpoints[0]: \"a\" is not HOST:PORT");
        expect_client_error("contexts:\n- name: h\n  endpoints: [\"a:0\"]\n" CLIENT_PKI,
                            "contexts[0].endpoints[0]: \"a:0\" is not HOST:PORT");
        expect_client_error("contexts:\n- name: h\n  endpoints: [\"a:65536\"]\n" CLIENT_PKI,
                            "is not HOST:PORT");
        expect_client_error("contexts:\n- name: h\n  endpoints: [\":1\"]\n" CLIENT_PKI,
                            "is not HOST:PORT");
        expect_client_error("contexts:\n- name: h\n  endpoints: [a:1, b:2, a:1]\n" CLIENT_PKI,
                            "contexts[0].endpoints[2]: duplicate endpoint \"a:1\"");
        expect_client_error("contexts:\n- name: h\n  endpoints: [{a: 1}]\n" CLIENT_PKI,
                            "contexts[0].endpoints[0]: expected a string");
}

TEST(failed_save_keeps_old_file)
{
        struct machine_config m;
        struct cap_error err = {0};
        machine_fill(&m);
        const char *p = path_in("keep.yaml");
        CHECK(machine_config_save(p, &m, &err) == 0);
        char *before = slurp(p);
        int entries = count_entries(dir);

        /* An invalid config is refused before anything is written. */
        m.hostname = NULL;
        CHECK(machine_config_save(p, &m, &err) < 0);
        CHECK_CONTAINS(err.msg, "missing required field \"hostname\"");
        char *after = slurp(p);
        CHECK_STR_EQ(after, before);
        free(after);

        /* A write that fails half-way (file size limit) leaves the old file and no temp file. */
        machine_fill(&m);
        m.hostname = "changed";
        struct rlimit old, small = {.rlim_cur = 100, .rlim_max = RLIM_INFINITY};
        CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
        small.rlim_max = old.rlim_max;
        void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
        CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
        int r = machine_config_save(p, &m, &err);
        CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
        signal(SIGXFSZ, prev);
        CHECK(r == -EFBIG);
        CHECK_CONTAINS(err.msg, "keep.yaml: write");
        after = slurp(p);
        CHECK_STR_EQ(after, before);
        free(after);
        CHECK(count_entries(dir) == entries);

        /* The target's directory is missing: nothing is created anywhere. */
        CHECK(config_write_file_atomic(path_in("no/such/dir/x"), "x", 1, 0600, &err) == -ENOENT);
        free(before);
}

TEST(read_only_dir_keeps_old_file)
{
        if (geteuid() == 0) {
                test_skip("root ignores directory permissions (the RLIMIT_FSIZE case covers this)");
                return;
        }
        struct machine_config m;
        struct cap_error err = {0};
        machine_fill(&m);
        char ro[128];
        snprintf(ro, sizeof(ro), "%s/ro", dir);
        CHECK(mkdir(ro, 0700) == 0);
        char p[160];
        snprintf(p, sizeof(p), "%s/machine.yaml", ro);
        CHECK(machine_config_save(p, &m, &err) == 0);
        char *before = slurp(p);
        CHECK(chmod(ro, 0500) == 0);
        m.hostname = "changed";
        CHECK(machine_config_save(p, &m, &err) == -EACCES);
        CHECK(chmod(ro, 0700) == 0);
        char *after = slurp(p);
        CHECK_STR_EQ(after, before);
        free(before);
        free(after);
}

TEST(default_path)
{
        char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
        setenv("CAPSULECONFIG", "/etc/capsule/test", 1);
        char *p = client_config_default_path();
        CHECK_STR_EQ(p, "/etc/capsule/test");
        free(p);
        unsetenv("CAPSULECONFIG");
        setenv("HOME", "/home/op", 1);
        p = client_config_default_path();
        CHECK_STR_EQ(p, "/home/op/.config/capsule/config");
        free(p);
        setenv("CAPSULECONFIG", "", 1);
        p = client_config_default_path();
        CHECK_STR_EQ(p, "/home/op/.config/capsule/config");
        free(p);
        unsetenv("CAPSULECONFIG");
        if (old_home) {
                setenv("HOME", old_home, 1);
                free(old_home);
        }
}

static void rm_rf(const char *d)
{
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
        if (system(cmd) != 0)
                fprintf(stderr, "  could not remove %s\n", d);
}

/* pki.revoked: canonical serials, strict checks naming the entry, round trip, equality. */
TEST(machine_revoked)
{
        char canon[MACHINE_SERIAL_MAX_HEX + 1];
        CHECK(machine_serial_canon("00a1B", canon) == 0 && strcmp(canon, "A1B") == 0);
        CHECK(machine_serial_canon("000", canon) == 0 && strcmp(canon, "0") == 0);
        CHECK(machine_serial_canon("", canon) == -EINVAL);
        CHECK(machine_serial_canon("A1:B2", canon) == -EINVAL);
        CHECK(machine_serial_canon("0x1F", canon) == -EINVAL);
        CHECK(machine_serial_canon(" 1F", canon) == -EINVAL);
        char long_ok[42], long_bad[42];
        memset(long_ok, 'F', 40);
        long_ok[40] = '\0';
        memset(long_bad, 'F', 41);
        long_bad[41] = '\0';
        CHECK(machine_serial_canon(long_ok, canon) == 0 && strlen(canon) == 40);
        CHECK(machine_serial_canon(long_bad, canon) == -EINVAL);

        const char *y = "hostname: home\n" PKI_OK "  revoked: [\"00ab\", \"2F377C82DCBDBD27\"]\n";
        struct machine_config m, back;
        struct cap_error err = {0};
        CHECK(machine_config_parse("m.yaml", y, strlen(y), &m, &err) == 0);
        CHECK(m.n_revoked_serials == 2 && strcmp(m.revoked_serials[0], "AB") == 0 &&
              strcmp(m.revoked_serials[1], "2F377C82DCBDBD27") == 0);
        CHECK(machine_serial_revoked(&m, "ab"));
        CHECK(machine_serial_revoked(&m, "000AB"));
        CHECK(machine_serial_revoked(&m, "2f377c82dcbdbd27"));
        CHECK(!machine_serial_revoked(&m, "AC"));
        CHECK(!machine_serial_revoked(&m, "not hex"));
        CHECK(!machine_serial_revoked(&m, NULL));
        char *text = NULL;
        size_t len = 0;
        CHECK(machine_config_format(&m, &text, &len, &err) == 0);
        CHECK_CONTAINS(text, "revoked:");
        CHECK(text && machine_config_parse("again.yaml", text, len, &back, &err) == 0);
        CHECK(machine_config_revoked_equal(&m, &back));
        free(back.revoked_serials[1]);
        back.n_revoked_serials = 1;
        CHECK(!machine_config_revoked_equal(&m, &back));
        machine_config_free(&back);
        free(text);
        machine_config_free(&m);

        /* absent or empty: nothing revoked, nothing written */
        y = "hostname: home\n" PKI_OK "  revoked: []\n";
        CHECK(machine_config_parse("m.yaml", y, strlen(y), &m, &err) == 0);
        CHECK(m.n_revoked_serials == 0 && !machine_serial_revoked(&m, "AB"));
        CHECK(machine_config_format(&m, &text, &len, &err) == 0);
        CHECK(text && !strstr(text, "revoked"));
        free(text);
        machine_config_free(&m);

        expect_machine_error(
            "hostname: home\n" PKI_OK "  revoked: [\"12XY\"]\n",
            "machine.yaml:12: ", "pki.revoked[0]: \"12XY\" is not a certificate serial");
        expect_machine_error("hostname: home\n" PKI_OK "  revoked: [\"AB\", \"a:b\"]\n",
                             "pki.revoked[1]: \"a:b\" is not a certificate serial", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "  revoked: [\"ab\", \"0AB\"]\n",
                             "pki.revoked[1]: serial AB is already at pki.revoked[0]", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "  revoked: AB\n",
                             "pki.revoked: expected a list of strings", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "  revoked: [[AB]]\n",
                             "pki.revoked[0]: expected a string", NULL);
        expect_machine_error("hostname: home\n" PKI_OK "  revoked: [\"\"]\n",
                             "pki.revoked[0]: \"\" is not a certificate serial", NULL);
        /* bounded: MACHINE_REVOKED_MAX serials pass, one more does not */
        size_t cap = 256 + (MACHINE_REVOKED_MAX + 1) * 8;
        char *big = malloc(cap);
        CHECK(big != NULL);
        if (!big)
                return;
        for (int extra = 0; extra <= 1; extra++) {
                size_t n = (size_t)snprintf(big, cap, "hostname: home\n" PKI_OK "  revoked:\n");
                for (int i = 0; i < MACHINE_REVOKED_MAX + extra; i++)
                        n += (size_t)snprintf(big + n, cap - n, "  - %X\n", i + 1);
                int r = machine_config_parse("m.yaml", big, n, &m, &err);
                if (extra) {
                        CHECK(r < 0);
                        CHECK_CONTAINS(err.msg, "pki.revoked: 1025 serials, at most 1024");
                } else {
                        CHECK(r == 0 && m.n_revoked_serials == MACHINE_REVOKED_MAX);
                        machine_config_free(&m);
                }
        }
        free(big);
}

int main(void)
{
        snprintf(dir, sizeof(dir), "/tmp/test-config-XXXXXX");
        if (!mkdtemp(dir)) {
                perror("mkdtemp");
                return 1;
        }
        RUN(machine_round_trip);
        RUN(machine_defaults);
        RUN(machine_strict);
        RUN(machine_network_validated);
        RUN(machine_registry_ca);
        RUN(machine_registry_auth);
        RUN(machine_time_servers);
        RUN(machine_metrics);
        RUN(malformed_yaml);
        RUN(machine_updates);
        RUN(machine_revoked);
        RUN(client_round_trip);
        RUN(client_strict);
        RUN(client_endpoints);
        RUN(failed_save_keeps_old_file);
        RUN(read_only_dir_keeps_old_file);
        RUN(default_path);
        rm_rf(dir);
        return test_summary();
}
