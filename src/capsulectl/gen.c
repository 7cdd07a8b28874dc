/* `capsulectl gen config|cert`: creates the operator PKI and the configs that carry it.
 *
 *   gen config NAME  -> DIR/secrets/ca.{crt,key}, DIR/secrets/update-signing.key (Ed25519, signs
 *                       update bundles; its public key goes into machine.yaml's
 *                       updates.trustedKeys), DIR/machine.yaml (for capsuled),
 *                       DIR/capsuleconfig (for capsulectl, with an admin certificate)
 *   gen cert         -> a client certificate signed by that CA, by default as a complete
 *                       capsuleconfig so that an operator can hand one file to a user.
 *   gen cert --renew FILE
 *                    -> a fresh certificate with the name and role of the one in client config
 *                       FILE, written as a new client config with FILE's context.
 *   gen cert --revoke SERIAL|FILE
 *                    -> adds the serial to pki.revoked in DIR/machine.yaml; `capsulectl
 *                       machine-config apply` makes the capsule refuse it at once.
 * Nothing is ever overwritten without --force: replacing the CA orphans every certificate. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "capsulectl.h"
#include "common/cleanup.h"
#include "common/names.h"
#include "common/pki.h"

#define DEFAULT_ENDPOINT "127.0.0.1:50000"

struct endpoint {
        char host[256]; /* without brackets */
        int port;
        bool ipv6;
};

/* Parses HOST:PORT, [V6]:PORT or a bare HOST (port 50000). */
static int endpoint_parse(const char *s, struct endpoint *ep, struct cap_error *err)
{
        const char *host = s, *colon;
        size_t hlen;
        memset(ep, 0, sizeof(*ep));
        ep->port = 50000;
        if (s[0] == '[') {
                const char *close = strchr(s, ']');
                if (!close)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "endpoint \"%s\": missing ']'", s);
                host = s + 1;
                hlen = (size_t)(close - host);
                colon = close[1] == ':' ? close + 1 : NULL;
                if (close[1] && !colon)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "endpoint \"%s\": expected [ADDRESS]:PORT", s);
                ep->ipv6 = true;
        } else {
                colon = strrchr(s, ':');
                if (colon && strchr(s, ':') != colon)
                        return cap_error_set(
                            err, -EINVAL, CAP_INVALID_ARGUMENT,
                            "endpoint \"%s\": write IPv6 addresses as [ADDRESS]:PORT", s);
                hlen = colon ? (size_t)(colon - s) : strlen(s);
        }
        if (hlen == 0 || hlen >= sizeof(ep->host))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "endpoint \"%s\": expected HOST:PORT", s);
        memcpy(ep->host, host, hlen);
        ep->host[hlen] = '\0';
        if (colon) {
                char *end = NULL;
                long port = strtol(colon + 1, &end, 10);
                if (!colon[1] || *end || port < 1 || port > 65535)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "endpoint \"%s\": port must be 1-65535", s);
                ep->port = (int)port;
        }
        return 0;
}

static void endpoint_format(const struct endpoint *ep, char *buf, size_t len)
{
        snprintf(buf, len, ep->ipv6 ? "[%s]:%d" : "%s:%d", ep->host, ep->port);
}

static bool file_exists(const char *path)
{
        struct stat st;
        return lstat(path, &st) == 0;
}

static void print_date(char *buf, size_t len, const char *cert_pem)
{
        struct pki_cert_info info;
        struct cap_error err = {0};
        buf[0] = '\0';
        if (pki_cert_info(cert_pem, &info, &err) < 0)
                return;
        struct tm tm;
        gmtime_r(&info.not_after, &tm);
        strftime(buf, len, "%Y-%m-%d", &tm);
        pki_cert_info_free(&info);
}

/* The certificate's serial in canonical hex (as pki.revoked holds it), "" when unreadable. */
static void print_serial(char buf[MACHINE_SERIAL_MAX_HEX + 1], const char *cert_pem)
{
        struct pki_cert_info info;
        struct cap_error err = {0};
        buf[0] = '\0';
        if (pki_cert_info(cert_pem, &info, &err) < 0)
                return;
        if (machine_serial_canon(info.serial_hex, buf) < 0)
                buf[0] = '\0';
        pki_cert_info_free(&info);
}

/* Writes one file, reporting the error; returns 0 or -1. */
static int write_out(const char *path, const char *data, unsigned int mode)
{
        struct cap_error err = {0};
        if (config_write_file_atomic(path, data, strlen(data), mode, &err) < 0) {
                fprintf(stderr, "capsulectl gen: %s\n", err.msg);
                return -1;
        }
        return 0;
}

static int parse_days(const char *s, int *days)
{
        char *end = NULL;
        long d = strtol(s, &end, 10);
        if (!*s || *end || d == 0 || d < -36500 || d > 36500) {
                fprintf(stderr, "capsulectl gen: --days %s: expected a number of days (1-36500)\n",
                        s);
                return -1;
        }
        *days = (int)d;
        return 0;
}

static int parse_key_type(const char *s, enum pki_key_type *kt)
{
        if (strcmp(s, "ecdsa") == 0 || strcmp(s, "p256") == 0)
                *kt = PKI_KEY_EC_P256;
        else if (strcmp(s, "ed25519") == 0)
                *kt = PKI_KEY_ED25519;
        else {
                fprintf(stderr, "capsulectl gen: --key-type %s: expected ecdsa or ed25519\n", s);
                return -1;
        }
        return 0;
}

static const char gen_config_usage[] =
    "usage: capsulectl gen config NAME [--endpoint HOST:PORT] [-o DIR] [--force]\n"
    "\n"
    "Creates a new operator PKI and the configs for the capsule NAME:\n"
    "  DIR/secrets/ca.crt   the CA certificate (10 years)\n"
    "  DIR/secrets/ca.key   the CA private key (mode 0600): keep it safe, it mints certificates\n"
    "  DIR/secrets/update-signing.key\n"
    "                       the Ed25519 key that signs update bundles (mode 0600; mkimage\n"
    "                       --signing-key); machine.yaml trusts its public key\n"
    "  DIR/machine.yaml     machine config for capsuled: hostname, API listen address, the CA\n"
    "                       and the server certificate (5 years) for the endpoint's host\n"
    "  DIR/capsuleconfig    client config: context NAME with an admin certificate (1 year)\n"
    "\n"
    "Options:\n"
    "  --endpoint HOST:PORT  where clients reach the capsule (default " DEFAULT_ENDPOINT ");\n"
    "                        HOST goes into the server certificate, PORT into api.listen\n"
    "  -o, --output-dir DIR  where to write (default .)\n"
    "  --force               overwrite existing files (this replaces the CA: certificates\n"
    "                        issued by the old one stop working) (default: refuse)\n"
    "  --key-type TYPE       ecdsa (P-256, default) or ed25519\n"
    "\n"
    "NAME must be a DNS label (a-z, 0-9, '-').\n"
    "\n"
    "Examples:\n"
    "  capsulectl gen config home --endpoint 192.168.1.10:50000 -o ~/capsule-home\n";

struct gen_paths {
        char ca_crt[PATH_MAX], ca_key[PATH_MAX], machine[PATH_MAX], client[PATH_MAX];
        char secrets[PATH_MAX], update_key[PATH_MAX];
};

/* A BIO's contents as a malloc'd string. */
static char *bio_to_string(BIO *bio)
{
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        if (n <= 0)
                return NULL;
        char *s = malloc((size_t)n + 1);
        if (s) {
                memcpy(s, data, (size_t)n);
                s[n] = '\0';
        }
        return s;
}

/* A new Ed25519 key pair for signing update bundles: PKCS#8 private and SPKI public PEM. */
static int gen_update_key(char **priv_pem, char **pub_pem, struct cap_error *err)
{
        *priv_pem = *pub_pem = NULL;
        EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        BIO *priv = BIO_new(BIO_s_mem()), *pub = BIO_new(BIO_s_mem());
        int r = 0;
        if (!key || !priv || !pub ||
            PEM_write_bio_PrivateKey(priv, key, NULL, NULL, 0, NULL, NULL) != 1 ||
            PEM_write_bio_PUBKEY(pub, key) != 1 || !(*priv_pem = bio_to_string(priv)) ||
            !(*pub_pem = bio_to_string(pub))) {
                r = cap_error_set(err, -EIO, CAP_INTERNAL, "generate the update signing key");
                free(*priv_pem);
                free(*pub_pem);
                *priv_pem = *pub_pem = NULL;
        }
        ERR_clear_error();
        BIO_free(priv);
        BIO_free(pub);
        EVP_PKEY_free(key);
        return r;
}

static int gen_config_files(const char *name, const struct endpoint *ep, enum pki_key_type kt,
                            const struct gen_paths *p)
{
        struct cap_error err = {0};
        struct pki_issue_opts opts = {.key_type = kt};
        struct pki_pair ca = {0}, srv = {0}, admin = {0};
        char *update_priv = NULL, *update_pub = NULL;
        const char *hosts[] = {ep->host};
        int rc = -1;
        if (pki_ca_create(name, &opts, &ca, &err) < 0 ||
            pki_server_issue(&ca, name, hosts, 1, &opts, &srv, &err) < 0 ||
            pki_client_issue(&ca, "admin", PKI_ROLE_ADMIN, &opts, &admin, &err) < 0 ||
            gen_update_key(&update_priv, &update_pub, &err) < 0) {
                fprintf(stderr, "capsulectl gen config: %s\n", err.msg);
                goto out;
        }
        char listen[64], endpoint[300];
        snprintf(listen, sizeof(listen), ep->ipv6 ? "[::]:%d" : "0.0.0.0:%d", ep->port);
        endpoint_format(ep, endpoint, sizeof(endpoint));
        struct machine_config mc = {
            .version = 1,
            .hostname = (char *)name,
            .listen = listen,
            .ca_pem = ca.cert_pem,
            .cert_pem = srv.cert_pem,
            .key_pem = srv.key_pem,
            .dhcp = true,
            .update_trusted_keys = &update_pub,
            .n_update_trusted_keys = 1,
        };
        struct client_context cx = {(char *)name, endpoint, ca.cert_pem, admin.cert_pem,
                                    admin.key_pem};
        struct client_config cc = {
            .current_context = (char *)name, .contexts = &cx, .n_contexts = 1};
        if (config_mkdir_p(p->secrets, 0700, &err) < 0) {
                fprintf(stderr, "capsulectl gen config: %s\n", err.msg);
                goto out;
        }
        if (write_out(p->ca_key, ca.key_pem, 0600) < 0 ||
            write_out(p->ca_crt, ca.cert_pem, 0644) < 0 ||
            write_out(p->update_key, update_priv, 0600) < 0)
                goto out;
        if (machine_config_save(p->machine, &mc, &err) < 0 ||
            client_config_save(p->client, &cc, &err) < 0) {
                fprintf(stderr, "capsulectl gen config: %s\n", err.msg);
                goto out;
        }
        char ca_until[32], srv_until[32], admin_until[32];
        print_date(ca_until, sizeof(ca_until), ca.cert_pem);
        print_date(srv_until, sizeof(srv_until), srv.cert_pem);
        print_date(admin_until, sizeof(admin_until), admin.cert_pem);
        printf("wrote %s  (CA \"%s capsule CA\", valid until %s)\n", p->ca_crt, name, ca_until);
        printf("wrote %s  (CA private key, mode 0600: keep it safe, it mints certificates)\n",
               p->ca_key);
        printf("wrote %s  (update signing key, Ed25519, mode 0600: signs OS update bundles; never "
               "put it into an image)\n",
               p->update_key);
        printf("wrote %s  (machine config: hostname %s, API on %s, server certificate for %s "
               "until %s)\n",
               p->machine, name, listen, ep->host, srv_until);
        printf("wrote %s  (client config: context \"%s\" -> %s, admin certificate until %s)\n",
               p->client, name, endpoint, admin_until);
        char *abs = realpath(p->client, NULL);
        printf(
            "\nNext: give %s to the capsule (bake it into the image or supply it at first boot),\n"
            "then point capsulectl at the new client config:\n"
            "  export CAPSULECONFIG=%s\n"
            "  capsulectl version\n",
            p->machine, abs ? abs : p->client);
        free(abs);
        rc = 0;
out:
        pki_pair_free(&ca);
        pki_pair_free(&srv);
        pki_pair_free(&admin);
        if (update_priv)
                explicit_bzero(update_priv, strlen(update_priv));
        free(update_priv);
        free(update_pub);
        return rc;
}

static int gen_config(struct ctl *ctl, int argc, char **argv)
{
        static const struct option opts[] = {
            {"endpoint", required_argument, NULL, 'e'},
            {"output-dir", required_argument, NULL, 'o'},
            {"force", no_argument, NULL, 'f'},
            {"key-type", required_argument, NULL, 'k'},
            {NULL, 0, NULL, 0},
        };
        if (ctl_wants_help(argc, argv, gen_config_usage))
                return CTL_EXIT_OK;
        const char *endpoint = DEFAULT_ENDPOINT, *dir = ".";
        bool force = false;
        enum pki_key_type kt = PKI_KEY_EC_P256;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
                switch (c) {
                case 'e':
                        endpoint = optarg;
                        break;
                case 'o':
                        dir = optarg;
                        break;
                case 'f':
                        force = true;
                        break;
                case 'k':
                        if (parse_key_type(optarg, &kt) < 0)
                                return CTL_EXIT_USAGE;
                        break;
                default:
                        fputs(gen_config_usage, stderr);
                        return CTL_EXIT_USAGE;
                }
        }
        if (optind != argc - 1) {
                fprintf(stderr, "capsulectl gen config: expected exactly one NAME\n%s",
                        gen_config_usage);
                return CTL_EXIT_USAGE;
        }
        const char *name = argv[optind];
        struct cap_error err = {0};
        struct endpoint ep;
        if (name_check("NAME", name, &err) < 0 || endpoint_parse(endpoint, &ep, &err) < 0) {
                fprintf(stderr, "capsulectl gen config: %s\n", err.msg);
                return CTL_EXIT_USAGE;
        }
        struct gen_paths p;
        snprintf(p.secrets, sizeof(p.secrets), "%s/secrets", dir);
        snprintf(p.ca_crt, sizeof(p.ca_crt), "%s/ca.crt", p.secrets);
        snprintf(p.ca_key, sizeof(p.ca_key), "%s/ca.key", p.secrets);
        snprintf(p.update_key, sizeof(p.update_key), "%s/update-signing.key", p.secrets);
        snprintf(p.machine, sizeof(p.machine), "%s/machine.yaml", dir);
        snprintf(p.client, sizeof(p.client), "%s/capsuleconfig", dir);
        const char *files[] = {p.ca_crt, p.ca_key, p.update_key, p.machine, p.client};
        for (size_t i = 0; i < ARRAY_SIZE(files) && !force; i++) {
                if (file_exists(files[i])) {
                        fprintf(stderr,
                                "capsulectl gen config: %s already exists; pass --force to "
                                "overwrite it (this replaces the CA: certificates it issued "
                                "stop working), or choose another directory with -o DIR\n",
                                files[i]);
                        return CTL_EXIT_ERROR;
                }
        }
        return gen_config_files(name, &ep, kt, &p) < 0 ? CTL_EXIT_ERROR : CTL_EXIT_OK;
}

static const char gen_cert_usage[] =
    "usage: capsulectl gen cert --role reader|operator|admin --name USER --secrets DIR/secrets\n"
    "                           [--days D] [-o FILE] [--endpoint HOST:PORT] [--context NAME] "
    "[--force] [--pem]\n"
    "       capsulectl gen cert --renew CONFIG --secrets DIR/secrets [--days D] [-o FILE] "
    "[--force]\n"
    "       capsulectl gen cert --revoke SERIAL|FILE [--revoke ...] (--secrets DIR/secrets | "
    "-o MACHINE.yaml)\n"
    "\n"
    "Mints a client certificate for USER signed by the CA in DIR/secrets and writes a complete\n"
    "client config (one context) that you can hand to USER: they run\n"
    "`capsulectl --config FILE version` or merge it with `capsulectl config merge FILE`.\n"
    "With --pem it writes PEM files instead, for other TLS clients (Prometheus scraping the\n"
    "metrics endpoint): FILE is then a directory with USER.crt, USER.key and ca.crt.\n"
    "The certificate's serial is printed: --revoke takes it.\n"
    "\n"
    "--renew CONFIG mints a fresh certificate (new key, full validity) with the name and role of\n"
    "the one in the client config CONFIG (its current context, or --context NAME) and writes a\n"
    "new client config with that context's name and endpoint.\n"
    "\n"
    "--revoke adds a certificate's serial to pki.revoked in the machine config (DIR/machine.yaml\n"
    "next to DIR/secrets, or -o FILE); then `capsulectl machine-config apply -f FILE` makes the\n"
    "capsule refuse that certificate at once. SERIAL is the hex serial `gen cert` printed (or\n"
    "`capsulectl config contexts` shows); a FILE (a client config or a PEM certificate)\n"
    "stands for the serial of its certificate.\n"
    "\n"
    "Options:\n"
    "  --role ROLE          reader (read-only: get/list/logs/events/health/version, env\n"
    "                       values redacted), operator (also apply/delete/restart, exec,\n"
    "                       dmesg, images, volumes; not machine config, updates, reboot or\n"
    "                       debug) or admin (everything) (required, no default)\n"
    "  --name USER          the certificate's CN, a DNS label (required, no default)\n"
    "  --secrets DIR        the directory with ca.crt and ca.key (from `capsulectl gen config`)\n"
    "                       (required, no default; with --revoke: where machine.yaml is)\n"
    "  --days D             validity in days (default 365); a negative D makes an already\n"
    "                       expired certificate, and a small one a soon-expiring one, for testing\n"
    "  -o, --output FILE    where to write (default DIR/../capsuleconfig-USER, with --pem\n"
    "                       the directory DIR/../USER, with --revoke the machine config\n"
    "                       DIR/../machine.yaml)\n"
    "  --pem                write USER.crt, USER.key and ca.crt into the directory FILE\n"
    "                       instead of a client config (default: off)\n"
    "  --endpoint HOST:PORT the capsule's endpoint (default: from DIR/../capsuleconfig)\n"
    "  --context NAME       the context's name (default: the capsule's name from the CA; with\n"
    "                       --renew, the context of CONFIG to renew, default its current one)\n"
    "  --force              overwrite FILE if it exists (default: refuse)\n"
    "  --key-type TYPE      ecdsa (P-256, default) or ed25519\n"
    "  --expired            mint an already expired certificate, for tests (default: off)\n"
    "  --renew CONFIG       renew the certificate of client config CONFIG (default: mint a new\n"
    "                       one from --role and --name)\n"
    "  --revoke SERIAL|FILE revoke a certificate: record its serial in the machine config\n"
    "                       (repeatable, up to 64 at once; default: mint instead)\n"
    "\n"
    "Examples:\n"
    "  capsulectl gen cert --role reader --name alice --secrets ~/capsule-home/secrets \\\n"
    "      -o alice.capsuleconfig\n"
    "  capsulectl gen cert --role operator --name ci --secrets ~/capsule-home/secrets \\\n"
    "      -o ci.capsuleconfig\n"
    "  capsulectl gen cert --role reader --name prometheus --secrets ~/capsule-home/secrets \\\n"
    "      --pem -o /etc/prometheus/capsule\n"
    "  capsulectl gen cert --renew alice.capsuleconfig --secrets ~/capsule-home/secrets \\\n"
    "      -o alice-2027.capsuleconfig\n"
    "  capsulectl gen cert --revoke 5A3C9E0B17D24F6E8A1B2C3D4E5F6071 \\\n"
    "      --secrets ~/capsule-home/secrets\n"
    "  capsulectl machine-config apply -f ~/capsule-home/machine.yaml\n";

#define GEN_REVOKE_MAX 64

/* The certificate's O for a --role word, NULL for an unknown one. */
static const char *gen_cert_role(const char *word)
{
        return strcmp(word, "admin") == 0      ? PKI_ROLE_ADMIN
               : strcmp(word, "operator") == 0 ? PKI_ROLE_OPERATOR
               : strcmp(word, "reader") == 0   ? PKI_ROLE_READER
                                               : NULL;
}

struct gen_cert_args {
        const char *role, *user, *secrets, *out, *endpoint, *context, *renew;
        const char *revoke[GEN_REVOKE_MAX];
        size_t n_revoke;
        int days;
        bool force, pem;
        enum pki_key_type kt;
};

/* The directory that holds secrets/: the default home of capsuleconfig and the output. */
static void parent_dir(const char *secrets, char *buf, size_t len)
{
        snprintf(buf, len, "%s", secrets);
        size_t n = strlen(buf);
        while (n > 1 && buf[n - 1] == '/')
                buf[--n] = '\0';
        char *slash = strrchr(buf, '/');
        if (!slash)
                snprintf(buf, len, ".");
        else if (slash == buf)
                buf[1] = '\0';
        else
                *slash = '\0';
}

/* Fills endpoint and context name from the options, the operator's capsuleconfig and the CA. */
static int gen_cert_target(const struct gen_cert_args *a, const char *base, const char *ca_pem,
                           char *endpoint, size_t elen, char *context, size_t clen)
{
        struct cap_error err = {0};
        char cfg_path[PATH_MAX];
        snprintf(cfg_path, sizeof(cfg_path), "%s/capsuleconfig", base);
        struct client_config cfg = {0};
        const struct client_context *cx = NULL;
        if (!a->endpoint || !a->context) {
                if (client_config_load(cfg_path, &cfg, &err) == 0)
                        cx = client_config_find(&cfg, NULL);
                else if (err.code != -ENOENT)
                        fprintf(stderr, "capsulectl gen cert: warning: %s\n", err.msg);
        }
        int rc = 0;
        if (a->endpoint) {
                struct endpoint ep;
                if (endpoint_parse(a->endpoint, &ep, &err) < 0) {
                        fprintf(stderr, "capsulectl gen cert: %s\n", err.msg);
                        rc = -1;
                } else {
                        endpoint_format(&ep, endpoint, elen);
                }
        } else if (cx) {
                snprintf(endpoint, elen, "%s", cx->endpoint);
        } else {
                fprintf(stderr,
                        "capsulectl gen cert: no endpoint: pass --endpoint HOST:PORT (there is "
                        "no usable %s to take it from)\n",
                        cfg_path);
                rc = -1;
        }
        struct pki_cert_info info = {0};
        const char *suffix = " capsule CA";
        if (a->context) {
                snprintf(context, clen, "%s", a->context);
        } else if (cx) {
                snprintf(context, clen, "%s", cx->name);
        } else if (pki_cert_info(ca_pem, &info, &err) == 0 && info.cn &&
                   strlen(info.cn) > strlen(suffix) &&
                   strcmp(info.cn + strlen(info.cn) - strlen(suffix), suffix) == 0) {
                snprintf(context, clen, "%.*s", (int)(strlen(info.cn) - strlen(suffix)), info.cn);
        } else {
                snprintf(context, clen, "capsule");
        }
        pki_cert_info_free(&info);
        client_config_free(&cfg);
        if (rc == 0 && name_check("context name", context, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert: %s; pass --context NAME\n", err.msg);
                rc = -1;
        }
        return rc;
}

/* gen cert --pem: USER.crt, USER.key (0600) and ca.crt in the directory out. */
static int gen_cert_pem(const struct gen_cert_args *a, const char *ca_crt, const char *ca_key,
                        const char *out)
{
        struct cap_error err = {0};
        char crt[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
        snprintf(crt, sizeof(crt), "%s/%s.crt", out, a->user);
        snprintf(key, sizeof(key), "%s/%s.key", out, a->user);
        snprintf(ca, sizeof(ca), "%s/ca.crt", out);
        if (!a->force && (file_exists(crt) || file_exists(key))) {
                fprintf(stderr, "capsulectl gen cert: %s already exists; pass --force to "
                        "overwrite it or -o DIR to write elsewhere\n",
                        file_exists(crt) ? crt : key);
                return CTL_EXIT_ERROR;
        }
        struct pki_pair capair = {0}, cl = {0};
        if (pki_pair_load_files(ca_crt, ca_key, &capair, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert: load the CA: %s\n", err.msg);
                return CTL_EXIT_ERROR;
        }
        int rc = CTL_EXIT_ERROR;
        const char *role = gen_cert_role(a->role);
        struct pki_issue_opts opts = {.key_type = a->kt, .days = a->days};
        if (pki_client_issue(&capair, a->user, role, &opts, &cl, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert: %s\n", err.msg);
                goto out;
        }
        if (config_mkdir_p(out, 0700, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert: %s\n", err.msg);
                goto out;
        }
        if (write_out(key, cl.key_pem, 0600) < 0 || write_out(crt, cl.cert_pem, 0644) < 0 ||
            write_out(ca, capair.cert_pem, 0644) < 0)
                goto out;
        char until[32], serial[MACHINE_SERIAL_MAX_HEX + 1];
        print_date(until, sizeof(until), cl.cert_pem);
        print_serial(serial, cl.cert_pem);
        printf("wrote %s, %s and %s  (user %s, role %s, valid until %s%s)\nserial %s\n", crt, key,
               ca, a->user, role, until, a->days < 0 ? ", ALREADY EXPIRED" : "", serial);
        rc = CTL_EXIT_OK;
out:
        pki_pair_free(&capair);
        pki_pair_free(&cl);
        return rc;
}

static int gen_cert_run(const struct gen_cert_args *a)
{
        struct cap_error err = {0};
        char base[PATH_MAX], ca_crt[PATH_MAX], ca_key[PATH_MAX], out[PATH_MAX];
        parent_dir(a->secrets, base, sizeof(base));
        snprintf(ca_crt, sizeof(ca_crt), "%s/ca.crt", a->secrets);
        snprintf(ca_key, sizeof(ca_key), "%s/ca.key", a->secrets);
        if (a->out)
                snprintf(out, sizeof(out), "%s", a->out);
        else
                snprintf(out, sizeof(out), a->pem ? "%s/%s" : "%s/capsuleconfig-%s", base, a->user);
        if (a->pem)
                return gen_cert_pem(a, ca_crt, ca_key, out);
        if (!a->force && file_exists(out)) {
                fprintf(stderr,
                        "capsulectl gen cert: %s already exists; pass --force to overwrite it "
                        "or -o FILE to write elsewhere\n",
                        out);
                return CTL_EXIT_ERROR;
        }
        struct pki_pair ca = {0}, cl = {0};
        if (pki_pair_load_files(ca_crt, ca_key, &ca, &err) < 0) {
                fprintf(stderr,
                        "capsulectl gen cert: load the CA: %s\n"
                        "hint: --secrets must name the directory `capsulectl gen config` "
                        "wrote (DIR/secrets)\n",
                        err.msg);
                return CTL_EXIT_ERROR;
        }
        int rc = CTL_EXIT_ERROR;
        char endpoint[300], context[128];
        if (gen_cert_target(a, base, ca.cert_pem, endpoint, sizeof(endpoint), context,
                            sizeof(context)) < 0)
                goto out;
        const char *role = gen_cert_role(a->role);
        struct pki_issue_opts opts = {.key_type = a->kt, .days = a->days};
        if (pki_client_issue(&ca, a->user, role, &opts, &cl, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert: %s\n", err.msg);
                goto out;
        }
        struct client_context cx = {context, endpoint, ca.cert_pem, cl.cert_pem, cl.key_pem};
        struct client_config cc = {.current_context = context, .contexts = &cx, .n_contexts = 1};
        if (client_config_save(out, &cc, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert: %s\n", err.msg);
                goto out;
        }
        char until[32], serial[MACHINE_SERIAL_MAX_HEX + 1];
        print_date(until, sizeof(until), cl.cert_pem);
        print_serial(serial, cl.cert_pem);
        printf(
            "wrote %s  (client config: context \"%s\" -> %s, user %s, role %s, valid until %s%s)\n"
            "serial %s  (revoke it with `capsulectl gen cert --revoke %s --secrets %s`)\n",
            out, context, endpoint, a->user, role, until, a->days < 0 ? ", ALREADY EXPIRED" : "",
            serial, serial, a->secrets);
        printf("\nNext: hand %s to %s (it holds a private key: use a private channel); they run\n"
               "  capsulectl --config FILE version\n"
               "or add it to their own config with `capsulectl config merge FILE`.\n",
               out, a->user);
        rc = CTL_EXIT_OK;
out:
        pki_pair_free(&ca);
        pki_pair_free(&cl);
        return rc;
}

/* The serial that a --revoke argument names: hex as given, or the certificate in FILE (a client
 * config's current context, or a PEM certificate). */
static int revoke_serial(const char *arg, char serial[MACHINE_SERIAL_MAX_HEX + 1])
{
        if (machine_serial_canon(arg, serial) == 0)
                return 0;
        struct cap_error err = {0};
        if (!file_exists(arg)) {
                fprintf(stderr,
                        "capsulectl gen cert: --revoke \"%.80s\": not a certificate serial (1-%d "
                        "hex digits, as `gen cert` prints it) and no such file\n",
                        arg, MACHINE_SERIAL_MAX_HEX);
                return -1;
        }
        struct client_config cc = {0};
        _cleanup_free_ char *pem = NULL;
        const char *cert = NULL;
        if (client_config_load(arg, &cc, &err) == 0) {
                const struct client_context *cx = client_config_find(&cc, NULL);
                cert = cx ? cx->cert_pem : NULL;
        } else {
                size_t len = 0;
                if (config_read_file(arg, &pem, &len, &err) == 0)
                        cert = pem;
        }
        struct pki_cert_info info = {0};
        int rc = 0;
        if (!cert || pki_cert_info(cert, &info, &err) < 0 ||
            machine_serial_canon(info.serial_hex, serial) < 0) {
                fprintf(stderr,
                        "capsulectl gen cert: --revoke %s: neither a client config with a current "
                        "context nor a PEM certificate%s%s\n",
                        arg, err.msg[0] ? ": " : "", err.msg);
                rc = -1;
        }
        pki_cert_info_free(&info);
        client_config_free(&cc);
        return rc;
}

/* gen cert --revoke: adds serials to pki.revoked of the machine config. Nothing is written when
 * any argument is bad or the list would grow past MACHINE_REVOKED_MAX. */
static int gen_cert_revoke(const struct gen_cert_args *a)
{
        char path[PATH_MAX];
        if (a->out) {
                snprintf(path, sizeof(path), "%s", a->out);
        } else {
                char base[PATH_MAX];
                parent_dir(a->secrets, base, sizeof(base));
                snprintf(path, sizeof(path), "%s/machine.yaml", base);
        }
        char serials[GEN_REVOKE_MAX][MACHINE_SERIAL_MAX_HEX + 1];
        for (size_t i = 0; i < a->n_revoke; i++)
                if (revoke_serial(a->revoke[i], serials[i]) < 0)
                        return CTL_EXIT_USAGE;
        struct cap_error err = {0};
        struct machine_config mc = {0};
        if (machine_config_load(path, &mc, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert --revoke: %s\n", err.msg);
                if (err.code == -ENOENT)
                        fprintf(stderr, "hint: name the machine config with -o FILE (default: "
                                        "machine.yaml next to --secrets DIR)\n");
                return CTL_EXIT_ERROR;
        }
        int rc = CTL_EXIT_ERROR;
        size_t n = mc.n_revoked_serials, added = 0;
        char **list = calloc(n + a->n_revoke + 1, sizeof(char *));
        if (!list) {
                fprintf(stderr, "capsulectl gen cert --revoke: out of memory\n");
                goto out;
        }
        if (n) /* memcpy's source may not be NULL, even for 0 bytes */
                memcpy(list, mc.revoked_serials, n * sizeof(char *));
        for (size_t i = 0; i < a->n_revoke; i++) {
                bool dup = false;
                for (size_t j = 0; j < n + added && !dup; j++)
                        dup = strcmp(list[j], serials[i]) == 0;
                if (dup) {
                        printf("serial %s is already revoked in %s\n", serials[i], path);
                        continue;
                }
                list[n + added++] = serials[i];
        }
        if (n + added > MACHINE_REVOKED_MAX) {
                fprintf(stderr,
                        "capsulectl gen cert --revoke: %s: pki.revoked would hold %zu serials, at "
                        "most %d; drop the serials of certificates that have expired anyway, or "
                        "replace the CA (see docs/operations.md)\n",
                        path, n + added, MACHINE_REVOKED_MAX);
                goto out;
        }
        if (added == 0) {
                rc = CTL_EXIT_OK;
                goto out;
        }
        char **old = mc.revoked_serials;
        mc.revoked_serials = list;
        mc.n_revoked_serials = n + added;
        int r = machine_config_save(path, &mc, &err);
        mc.revoked_serials = old;
        mc.n_revoked_serials = n;
        if (r < 0) {
                fprintf(stderr, "capsulectl gen cert --revoke: %s\n", err.msg);
                goto out;
        }
        for (size_t i = n; i < n + added; i++)
                printf("revoked serial %s in %s\n", list[i], path);
        printf("%zu serial%s in pki.revoked.\n\nNext: make the capsule refuse %s now:\n"
               "  capsulectl machine-config apply -f %s\n",
               n + added, n + added == 1 ? "" : "s", added == 1 ? "it" : "them", path);
        rc = CTL_EXIT_OK;
out:
        free(list); /* its strings belong to mc or serials */
        machine_config_free(&mc);
        return rc;
}

/* gen cert --renew: the name and role of CONFIG's certificate, a fresh key and certificate from
 * the CA in --secrets, written with CONFIG's context (name, endpoint or endpoints). */
static int gen_cert_renew(const struct gen_cert_args *a)
{
        struct cap_error err = {0};
        char base[PATH_MAX], ca_crt[PATH_MAX], ca_key[PATH_MAX], out[PATH_MAX];
        parent_dir(a->secrets, base, sizeof(base));
        snprintf(ca_crt, sizeof(ca_crt), "%s/ca.crt", a->secrets);
        snprintf(ca_key, sizeof(ca_key), "%s/ca.key", a->secrets);
        struct client_config old = {0};
        if (client_config_load(a->renew, &old, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert --renew: %s\n", err.msg);
                return CTL_EXIT_ERROR;
        }
        int rc = CTL_EXIT_ERROR;
        struct pki_pair ca = {0}, cl = {0};
        struct pki_cert_info info = {0};
        const struct client_context *cx = client_config_find(&old, a->context);
        if (!cx) {
                fprintf(stderr, "capsulectl gen cert --renew: %s has no context %s%s%s\n", a->renew,
                        a->context ? "\"" : "(no current one; pass --context NAME)",
                        a->context ? a->context : "", a->context ? "\"" : "");
                goto out;
        }
        if (pki_cert_info(cx->cert_pem, &info, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert --renew: %s: context \"%s\": %s\n", a->renew,
                        cx->name, err.msg);
                goto out;
        }
        if (!info.cn || name_check("the certificate's CN", info.cn, &err) < 0 || !info.o ||
            !pki_role_is_valid(info.o)) {
                fprintf(stderr,
                        "capsulectl gen cert --renew: %s: context \"%s\": the certificate (CN "
                        "\"%s\", O \"%s\") is not a Capsule client certificate; mint one with "
                        "--role and --name\n",
                        a->renew, cx->name, info.cn ? info.cn : "", info.o ? info.o : "");
                goto out;
        }
        if (a->out)
                snprintf(out, sizeof(out), "%s", a->out);
        else
                snprintf(out, sizeof(out), "%s/capsuleconfig-%s", base, info.cn);
        if (!a->force && file_exists(out)) {
                fprintf(stderr,
                        "capsulectl gen cert --renew: %s already exists; pass --force to "
                        "overwrite it or -o FILE to write elsewhere\n",
                        out);
                goto out;
        }
        if (pki_pair_load_files(ca_crt, ca_key, &ca, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert --renew: load the CA: %s\n", err.msg);
                goto out;
        }
        int vr = pki_verify(ca.cert_pem, cx->cert_pem, PKI_PURPOSE_CLIENT, &err);
        if (vr < 0 && vr != -EKEYEXPIRED) {
                fprintf(stderr,
                        "capsulectl gen cert --renew: %s: context \"%s\": the certificate was "
                        "not issued by the CA in %s (%s)\n",
                        a->renew, cx->name, a->secrets, err.msg);
                goto out;
        }
        struct pki_issue_opts opts = {.key_type = a->kt, .days = a->days};
        if (pki_client_issue(&ca, info.cn, info.o, &opts, &cl, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert --renew: %s\n", err.msg);
                goto out;
        }
        struct client_context nx = *cx;
        nx.ca_pem = ca.cert_pem;
        nx.cert_pem = cl.cert_pem;
        nx.key_pem = cl.key_pem;
        struct client_config cc = {.current_context = nx.name, .contexts = &nx, .n_contexts = 1};
        if (client_config_save(out, &cc, &err) < 0) {
                fprintf(stderr, "capsulectl gen cert --renew: %s\n", err.msg);
                goto out;
        }
        char until[32], serial[MACHINE_SERIAL_MAX_HEX + 1], old_serial[MACHINE_SERIAL_MAX_HEX + 1];
        print_date(until, sizeof(until), cl.cert_pem);
        print_serial(serial, cl.cert_pem);
        print_serial(old_serial, cx->cert_pem);
        printf("wrote %s  (client config: context \"%s\", user %s, role %s, valid until %s%s)\n"
               "serial %s  (replaces serial %s, which stays valid until it expires; revoke it "
               "with `capsulectl gen cert --revoke %s --secrets %s`)\n",
               out, nx.name, info.cn, info.o, until, a->days < 0 ? ", ALREADY EXPIRED" : "", serial,
               old_serial, old_serial, a->secrets);
        rc = CTL_EXIT_OK;
out:
        pki_cert_info_free(&info);
        pki_pair_free(&ca);
        pki_pair_free(&cl);
        client_config_free(&old);
        return rc;
}

static int gen_cert(struct ctl *ctl, int argc, char **argv)
{
        static const struct option opts[] = {
            {"role", required_argument, NULL, 'r'},
            {"name", required_argument, NULL, 'n'},
            {"secrets", required_argument, NULL, 's'},
            {"days", required_argument, NULL, 'd'},
            {"output", required_argument, NULL, 'o'},
            {"endpoint", required_argument, NULL, 'e'},
            {"context", required_argument, NULL, 'c'},
            {"force", no_argument, NULL, 'f'},
            {"key-type", required_argument, NULL, 'k'},
            {"expired", no_argument, NULL, 'x'}, /* for tests: same as --days -1 */
            {"pem", no_argument, NULL, 'P'},
            {"renew", required_argument, NULL, 'N'},
            {"revoke", required_argument, NULL, 'V'},
            {NULL, 0, NULL, 0},
        };
        if (ctl_wants_help(argc, argv, gen_cert_usage))
                return CTL_EXIT_OK;
        struct gen_cert_args a = {.kt = PKI_KEY_EC_P256};
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
                switch (c) {
                case 'r':
                        a.role = optarg;
                        break;
                case 'n':
                        a.user = optarg;
                        break;
                case 's':
                        a.secrets = optarg;
                        break;
                case 'o':
                        a.out = optarg;
                        break;
                case 'e':
                        a.endpoint = optarg;
                        break;
                case 'c':
                        a.context = optarg;
                        break;
                case 'f':
                        a.force = true;
                        break;
                case 'x':
                        a.days = -1;
                        break;
                case 'P':
                        a.pem = true;
                        break;
                case 'N':
                        a.renew = optarg;
                        break;
                case 'V':
                        if (a.n_revoke == GEN_REVOKE_MAX) {
                                fprintf(stderr,
                                        "capsulectl gen cert: --revoke: at most %d at once\n",
                                        GEN_REVOKE_MAX);
                                return CTL_EXIT_USAGE;
                        }
                        a.revoke[a.n_revoke++] = optarg;
                        break;
                case 'd':
                        if (parse_days(optarg, &a.days) < 0)
                                return CTL_EXIT_USAGE;
                        break;
                case 'k':
                        if (parse_key_type(optarg, &a.kt) < 0)
                                return CTL_EXIT_USAGE;
                        break;
                default:
                        fputs(gen_cert_usage, stderr);
                        return CTL_EXIT_USAGE;
                }
        }
        if (optind != argc) {
                fprintf(stderr, "capsulectl gen cert: unexpected argument \"%s\"\n%s", argv[optind],
                        gen_cert_usage);
                return CTL_EXIT_USAGE;
        }
        if (a.n_revoke > 0 || a.renew) {
                const char *mode = a.n_revoke ? "--revoke" : "--renew";
                const char *bad = a.n_revoke && a.renew     ? "--renew"
                                  : a.role                  ? "--role"
                                  : a.user                  ? "--name"
                                  : a.pem                   ? "--pem"
                                  : a.endpoint              ? "--endpoint"
                                  : a.n_revoke && a.context ? "--context"
                                  : a.n_revoke && a.days    ? "--days"
                                                            : NULL;
                if (bad) {
                        fprintf(stderr, "capsulectl gen cert: %s does not go with %s\n", bad, mode);
                        return CTL_EXIT_USAGE;
                }
                if (!a.secrets && !(a.n_revoke && a.out)) {
                        fprintf(stderr, "capsulectl gen cert: %s needs --secrets DIR%s\n", mode,
                                a.n_revoke ? " (or -o MACHINE.yaml)" : "");
                        return CTL_EXIT_USAGE;
                }
                return a.n_revoke ? gen_cert_revoke(&a) : gen_cert_renew(&a);
        }
        const char *missing = !a.role      ? "--role"
                              : !a.user    ? "--name"
                              : !a.secrets ? "--secrets"
                                           : NULL;
        if (missing || optind != argc) {
                if (missing)
                        fprintf(stderr, "capsulectl gen cert: %s is required\n%s", missing,
                                gen_cert_usage);
                else
                        fprintf(stderr, "capsulectl gen cert: unexpected argument \"%s\"\n%s",
                                argv[optind], gen_cert_usage);
                return CTL_EXIT_USAGE;
        }
        if (!gen_cert_role(a.role)) {
                fprintf(stderr,
                        "capsulectl gen cert: --role %s: expected reader, operator or admin\n",
                        a.role);
                return CTL_EXIT_USAGE;
        }
        struct cap_error err = {0};
        if (name_check("--name", a.user, &err) < 0 ||
            (a.context && name_check("--context", a.context, &err) < 0)) {
                fprintf(stderr, "capsulectl gen cert: %s\n", err.msg);
                return CTL_EXIT_USAGE;
        }
        return gen_cert_run(&a);
}

static const char gen_usage[] =
    "usage: capsulectl gen config NAME [options]\n"
    "       capsulectl gen cert --role ROLE --name USER --secrets DIR [options]\n"
    "\n"
    "  config   create a CA, machine.yaml and capsuleconfig for a new capsule\n"
    "  cert     mint a client certificate from the CA\n"
    "Run `capsulectl gen config --help` or `capsulectl gen cert --help` for details.\n"
    "\n"
    "Examples:\n"
    "  capsulectl gen config home --endpoint 192.168.1.10:50000 -o ~/capsule-home\n";

int cmd_gen(struct ctl *ctl, int argc, char **argv)
{
        if (argc < 2) {
                fputs(gen_usage, stderr);
                return CTL_EXIT_USAGE;
        }
        if (strcmp(argv[1], "config") == 0)
                return gen_config(ctl, argc - 1, argv + 1);
        if (strcmp(argv[1], "cert") == 0)
                return gen_cert(ctl, argc - 1, argv + 1);
        if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
                fputs(gen_usage, stdout);
                return CTL_EXIT_OK;
        }
        fprintf(stderr, "capsulectl gen: unknown kind \"%s\"\n%s", argv[1], gen_usage);
        return CTL_EXIT_USAGE;
}
