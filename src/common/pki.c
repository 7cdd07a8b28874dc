/* The operator PKI (see pki.h): CA creation, server and client certificate issuance, reading facts
 * out of certificates and verifying chains, with OpenSSL 3. Every object is freed on every path:
 * the unit tests run under ASan and valgrind. */
#include "pki.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cleanup.h"

#define PKI_MAX_FILE (1 << 20)

static inline void x509_freep(X509 **p)
{
        X509_free(*p);
}
static inline void pkey_freep(EVP_PKEY **p)
{
        EVP_PKEY_free(*p);
}
static inline void bio_freep(BIO **p)
{
        BIO_free(*p);
}
#define _cleanup_x509_ _cleanup_(x509_freep)
#define _cleanup_pkey_ _cleanup_(pkey_freep)
#define _cleanup_bio_ _cleanup_(bio_freep)

/* Sets err to "<what>: <OpenSSL's reason>" and empties OpenSSL's error queue. */
static int __attribute__((format(printf, 4, 5)))
ssl_fail(struct cap_error *err, int code, enum cap_status status, const char *fmt, ...)
{
        char what[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof(what), fmt, ap);
        va_end(ap);
        unsigned long e = ERR_peek_last_error();
        const char *reason = e ? ERR_reason_error_string(e) : NULL;
        int r;
        if (reason)
                r = cap_error_set(err, code, status, "%s: %s", what, reason);
        else
                r = cap_error_set(err, code, status, "%s", what);
        ERR_clear_error();
        return r;
}

/* Never prompt on the terminal for a passphrase: encrypted keys are not supported. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
        return -1;
}

static X509 *cert_from_pem(const char *pem, struct cap_error *err)
{
        if (!pem || !*pem) {
                cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "no certificate given");
                return NULL;
        }
        _cleanup_bio_ BIO *b = BIO_new_mem_buf(pem, -1);
        if (!b) {
                ssl_fail(err, -ENOMEM, CAP_RESOURCE_EXHAUSTED, "read certificate");
                return NULL;
        }
        X509 *x = PEM_read_bio_X509(b, NULL, no_password, NULL);
        if (!x)
                ssl_fail(err, -EINVAL, CAP_INVALID_ARGUMENT, "parse PEM certificate");
        return x;
}

static EVP_PKEY *key_from_pem(const char *pem, struct cap_error *err)
{
        if (!pem || !*pem) {
                cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "no private key given");
                return NULL;
        }
        _cleanup_bio_ BIO *b = BIO_new_mem_buf(pem, -1);
        if (!b) {
                ssl_fail(err, -ENOMEM, CAP_RESOURCE_EXHAUSTED, "read private key");
                return NULL;
        }
        EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL);
        if (!k)
                ssl_fail(err, -EINVAL, CAP_INVALID_ARGUMENT,
                         "parse PEM private key (unencrypted PKCS#8 or traditional format)");
        return k;
}

/* Copies a memory BIO's contents into a NUL-terminated malloc'd string. */
static char *bio_to_string(BIO *b)
{
        char *data = NULL;
        long n = BIO_get_mem_data(b, &data);
        if (n < 0)
                return NULL;
        char *s = malloc((size_t)n + 1);
        if (!s)
                return NULL;
        memcpy(s, data, (size_t)n);
        s[n] = '\0';
        return s;
}

static EVP_PKEY *key_generate(enum pki_key_type type, struct cap_error *err)
{
        EVP_PKEY *k = NULL;
        switch (type) {
        case PKI_KEY_EC_P256:
                k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
                break;
        case PKI_KEY_ED25519:
                k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
                break;
        default:
                cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "unknown key type %d", (int)type);
                return NULL;
        }
        if (!k)
                ssl_fail(err, -EIO, CAP_INTERNAL, "generate key");
        return k;
}

/* A random positive 128-bit serial number (RFC 5280 allows up to 20 octets). */
static int cert_set_serial(X509 *x, struct cap_error *err)
{
        unsigned char raw[16];
        if (RAND_bytes(raw, sizeof(raw)) != 1)
                return ssl_fail(err, -EIO, CAP_INTERNAL, "random serial");
        raw[0] &= 0x7f;
        raw[0] |= 0x01; /* never zero, never negative */
        BIGNUM *bn = BN_bin2bn(raw, sizeof(raw), NULL);
        if (!bn)
                return ssl_fail(err, -ENOMEM, CAP_INTERNAL, "serial");
        ASN1_INTEGER *serial = BN_to_ASN1_INTEGER(bn, NULL);
        BN_free(bn);
        if (!serial)
                return ssl_fail(err, -ENOMEM, CAP_INTERNAL, "serial");
        int ok = X509_set_serialNumber(x, serial);
        ASN1_INTEGER_free(serial);
        return ok == 1 ? 0 : ssl_fail(err, -EIO, CAP_INTERNAL, "set serial");
}

/* days >= 0: valid from five minutes ago (clock skew) for days days. days < 0: expired |days| days
 * ago, after one day of validity. */
static int cert_set_validity(X509 *x, int days, struct cap_error *err)
{
        long before_day = 0, before_sec = -300, after_day = days;
        if (days < 0) {
                before_day = (long)days - 1;
                before_sec = 0;
        }
        if (!X509_time_adj_ex(X509_getm_notBefore(x), (int)before_day, before_sec, NULL) ||
            !X509_time_adj_ex(X509_getm_notAfter(x), (int)after_day, 0, NULL))
                return ssl_fail(err, -EIO, CAP_INTERNAL, "set validity");
        return 0;
}

/* Adds an extension in OpenSSL's config syntax ("critical,CA:TRUE"). issuer may equal cert. */
static int cert_add_ext(X509 *cert, X509 *issuer, int nid, const char *value, struct cap_error *err)
{
        X509V3_CTX ctx;
        X509V3_set_ctx_nodb(&ctx);
        X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
        if (!ext)
                return ssl_fail(err, -EINVAL, CAP_INTERNAL, "extension %s=%s", OBJ_nid2sn(nid),
                                value);
        int ok = X509_add_ext(cert, ext, -1);
        X509_EXTENSION_free(ext);
        return ok == 1 ? 0 : ssl_fail(err, -EIO, CAP_INTERNAL, "add extension %s", OBJ_nid2sn(nid));
}

static int name_add(X509_NAME *n, const char *field, const char *value, struct cap_error *err)
{
        if (X509_NAME_add_entry_by_txt(n, field, MBSTRING_UTF8, (const unsigned char *)value, -1,
                                       -1, 0) != 1)
                return ssl_fail(err, -EINVAL, CAP_INVALID_ARGUMENT, "subject %s=\"%s\"", field,
                                value);
        return 0;
}

static bool key_is_ed25519(EVP_PKEY *k)
{
        return EVP_PKEY_is_a(k, "ED25519");
}

/* Signs with SHA-256, or with no separate digest for Ed25519 (which hashes internally). */
static int cert_sign(X509 *x, EVP_PKEY *key, struct cap_error *err)
{
        if (X509_sign(x, key, key_is_ed25519(key) ? NULL : EVP_sha256()) <= 0)
                return ssl_fail(err, -EIO, CAP_INTERNAL, "sign certificate");
        return 0;
}

static int pair_from_objects(X509 *x, EVP_PKEY *key, struct pki_pair *out, struct cap_error *err)
{
        _cleanup_bio_ BIO *cb = BIO_new(BIO_s_mem());
        _cleanup_bio_ BIO *kb = BIO_new(BIO_s_mem());
        if (!cb || !kb || PEM_write_bio_X509(cb, x) != 1 ||
            PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) != 1)
                return ssl_fail(err, -ENOMEM, CAP_INTERNAL, "write PEM");
        out->cert_pem = bio_to_string(cb);
        out->key_pem = bio_to_string(kb);
        if (!out->cert_pem || !out->key_pem) {
                pki_pair_free(out);
                return cap_error_set(err, -ENOMEM, CAP_RESOURCE_EXHAUSTED, "out of memory");
        }
        return 0;
}

/* What differs between the three kinds of certificate. */
struct cert_spec {
        const char *cn;
        const char *o; /* may be NULL */
        int days;      /* after defaulting */
        enum pki_key_type key_type;
        /* Adds the kind-specific extensions; issuer == cert for the self-signed CA. */
        int (*add_exts)(X509 *cert, X509 *issuer, const void *data, struct cap_error *err);
        const void *data;
};

/* Builds and signs a certificate for a fresh key. ca_cert/ca_key NULL: self-signed. */
static int cert_issue(const struct cert_spec *spec, X509 *ca_cert, EVP_PKEY *ca_key,
                      struct pki_pair *out, struct cap_error *err)
{
        _cleanup_pkey_ EVP_PKEY *key = key_generate(spec->key_type, err);
        if (!key)
                return err ? err->code : -EIO;
        _cleanup_x509_ X509 *x = X509_new();
        if (!x)
                return ssl_fail(err, -ENOMEM, CAP_INTERNAL, "new certificate");
        int r;
        if (X509_set_version(x, X509_VERSION_3) != 1 || X509_set_pubkey(x, key) != 1)
                return ssl_fail(err, -EIO, CAP_INTERNAL, "certificate");
        if ((r = cert_set_serial(x, err)) < 0 || (r = cert_set_validity(x, spec->days, err)) < 0)
                return r;
        X509_NAME *subject = X509_get_subject_name(x);
        if (spec->o && (r = name_add(subject, "O", spec->o, err)) < 0)
                return r;
        if ((r = name_add(subject, "CN", spec->cn, err)) < 0)
                return r;
        X509 *issuer = ca_cert ? ca_cert : x;
        if (X509_set_issuer_name(x, X509_get_subject_name(issuer)) != 1)
                return ssl_fail(err, -EIO, CAP_INTERNAL, "set issuer");
        if ((r = cert_add_ext(x, issuer, NID_subject_key_identifier, "hash", err)) < 0)
                return r;
        if (ca_cert &&
            (r = cert_add_ext(x, issuer, NID_authority_key_identifier, "keyid:always", err)) < 0)
                return r;
        if ((r = spec->add_exts(x, issuer, spec->data, err)) < 0)
                return r;
        if ((r = cert_sign(x, ca_key ? ca_key : key, err)) < 0)
                return r;
        return pair_from_objects(x, key, out, err);
}

/* Parses a CA pair and checks that the key is the certificate's and that it is a CA. */
static int ca_load(const struct pki_pair *ca, X509 **cert, EVP_PKEY **key, struct cap_error *err)
{
        if (!ca)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "no CA given");
        _cleanup_x509_ X509 *x = cert_from_pem(ca->cert_pem, err);
        if (!x)
                return cap_error_prefix(err, "CA certificate");
        _cleanup_pkey_ EVP_PKEY *k = key_from_pem(ca->key_pem, err);
        if (!k)
                return cap_error_prefix(err, "CA key");
        if (EVP_PKEY_eq(X509_get0_pubkey(x), k) != 1) {
                ERR_clear_error();
                return cap_error_set(err, -EKEYREJECTED, CAP_INVALID_ARGUMENT,
                                     "the CA key does not belong to the CA certificate");
        }
        if (!(X509_get_extension_flags(x) & EXFLAG_CA))
                return cap_error_set(
                    err, -EINVAL, CAP_INVALID_ARGUMENT,
                    "the CA certificate is not a CA (no basicConstraints CA:TRUE)");
        *cert = TAKE_PTR(x);
        *key = TAKE_PTR(k);
        return 0;
}

static int opts_days(const struct pki_issue_opts *opts, int def)
{
        return opts && opts->days != 0 ? opts->days : def;
}

static enum pki_key_type opts_key(const struct pki_issue_opts *opts)
{
        return opts ? opts->key_type : PKI_KEY_EC_P256;
}

void pki_pair_free(struct pki_pair *pair)
{
        if (!pair)
                return;
        if (pair->key_pem)
                OPENSSL_cleanse(pair->key_pem, strlen(pair->key_pem));
        free(pair->key_pem);
        free(pair->cert_pem);
        pair->key_pem = pair->cert_pem = NULL;
}

void pki_cert_info_free(struct pki_cert_info *info)
{
        if (!info)
                return;
        free(info->cn);
        free(info->o);
        free(info->issuer_cn);
        free(info->serial_hex);
        memset(info, 0, sizeof(*info));
}

bool pki_role_is_valid(const char *role)
{
        return role && (strcmp(role, PKI_ROLE_ADMIN) == 0 || strcmp(role, PKI_ROLE_OPERATOR) == 0 ||
                        strcmp(role, PKI_ROLE_READER) == 0);
}

static int ca_exts(X509 *cert, X509 *issuer, const void *data, struct cap_error *err)
{
        int r;
        if ((r = cert_add_ext(cert, issuer, NID_basic_constraints, "critical,CA:TRUE", err)) < 0)
                return r;
        return cert_add_ext(cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign", err);
}

int pki_ca_create(const char *name, const struct pki_issue_opts *opts, struct pki_pair *out,
                  struct cap_error *err)
{
        if (!name || !*name)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "CA name must not be empty");
        char cn[128];
        if ((size_t)snprintf(cn, sizeof(cn), "%s capsule CA", name) >= sizeof(cn))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "CA name too long");
        struct cert_spec spec = {
            .cn = cn,
            .days = opts_days(opts, PKI_CA_DAYS),
            .key_type = opts_key(opts),
            .add_exts = ca_exts,
        };
        int r = cert_issue(&spec, NULL, NULL, out, err);
        return r < 0 ? cap_error_prefix(err, "create CA") : 0;
}

/* A DNS SAN may hold letters, digits, '-', '.' and a leading "*." wildcard, at most 253 bytes. */
static bool dns_name_ok(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '.' || (c == '*' && i == 0);
                if (!ok)
                        return false;
        }
        return true;
}

/* Appends one SAN for host (IP literal or DNS name) unless an equal one is already present. */
static int san_push(GENERAL_NAMES *gens, const char *host, struct cap_error *err)
{
        char buf[256];
        size_t n = strlen(host);
        if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
                memcpy(buf, host + 1, n - 2); /* "[::1]" as written in endpoints */
                buf[n - 2] = '\0';
                host = buf;
        }
        GENERAL_NAME *g = GENERAL_NAME_new();
        if (!g)
                return ssl_fail(err, -ENOMEM, CAP_INTERNAL, "SAN");
        ASN1_OCTET_STRING *ip = a2i_IPADDRESS(host);
        ERR_clear_error();
        if (ip) {
                GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
        } else {
                if (!dns_name_ok(host)) {
                        GENERAL_NAME_free(g);
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "\"%.80s\" is neither an IP address nor a DNS name",
                                             host);
                }
                ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
                if (!dns || ASN1_STRING_set(dns, host, -1) != 1) {
                        ASN1_IA5STRING_free(dns);
                        GENERAL_NAME_free(g);
                        return ssl_fail(err, -ENOMEM, CAP_INTERNAL, "SAN");
                }
                GENERAL_NAME_set0_value(g, GEN_DNS, dns);
        }
        for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
                if (GENERAL_NAME_cmp(sk_GENERAL_NAME_value(gens, i), g) == 0) {
                        GENERAL_NAME_free(g);
                        return 0;
                }
        }
        if (!sk_GENERAL_NAME_push(gens, g)) {
                GENERAL_NAME_free(g);
                return ssl_fail(err, -ENOMEM, CAP_INTERNAL, "SAN");
        }
        return 0;
}

struct server_san {
        const char *name;
        const char *const *hosts;
        size_t n_hosts;
};

static int server_exts(X509 *cert, X509 *issuer, const void *data, struct cap_error *err)
{
        const struct server_san *s = data;
        int r;
        if ((r = cert_add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE", err)) < 0 ||
            (r = cert_add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature", err)) < 0 ||
            (r = cert_add_ext(cert, issuer, NID_ext_key_usage, "serverAuth", err)) < 0)
                return r;
        GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
        if (!gens)
                return ssl_fail(err, -ENOMEM, CAP_INTERNAL, "SAN");
        for (size_t i = 0; i < s->n_hosts && r >= 0; i++)
                r = san_push(gens, s->hosts[i], err);
        if (r >= 0)
                r = san_push(gens, s->name, err);
        if (r >= 0)
                r = san_push(gens, "localhost", err);
        if (r >= 0)
                r = san_push(gens, "127.0.0.1", err);
        if (r >= 0 &&
            X509_add1_ext_i2d(cert, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1)
                r = ssl_fail(err, -EIO, CAP_INTERNAL, "add subjectAltName");
        GENERAL_NAMES_free(gens);
        return r;
}

int pki_server_issue(const struct pki_pair *ca, const char *name, const char *const *hosts,
                     size_t n_hosts, const struct pki_issue_opts *opts, struct pki_pair *out,
                     struct cap_error *err)
{
        if (!name || !*name)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "server certificate: name must not be empty");
        _cleanup_x509_ X509 *ca_cert = NULL;
        _cleanup_pkey_ EVP_PKEY *ca_key = NULL;
        int r = ca_load(ca, &ca_cert, &ca_key, err);
        if (r < 0)
                return cap_error_prefix(err, "issue server certificate for \"%s\"", name);
        struct server_san san = {.name = name, .hosts = hosts, .n_hosts = n_hosts};
        struct cert_spec spec = {
            .cn = name,
            .days = opts_days(opts, PKI_SERVER_DAYS),
            .key_type = opts_key(opts),
            .add_exts = server_exts,
            .data = &san,
        };
        r = cert_issue(&spec, ca_cert, ca_key, out, err);
        return r < 0 ? cap_error_prefix(err, "issue server certificate for \"%s\"", name) : 0;
}

static int client_exts(X509 *cert, X509 *issuer, const void *data, struct cap_error *err)
{
        int r;
        if ((r = cert_add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE", err)) < 0 ||
            (r = cert_add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature", err)) < 0)
                return r;
        return cert_add_ext(cert, issuer, NID_ext_key_usage, "clientAuth", err);
}

int pki_client_issue(const struct pki_pair *ca, const char *user, const char *role,
                     const struct pki_issue_opts *opts, struct pki_pair *out, struct cap_error *err)
{
        if (!user || !*user || strlen(user) > 64)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "client certificate: user name must be 1-64 characters");
        if (!pki_role_is_valid(role))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "client certificate: role \"%s\" is not %s, %s or %s",
                                     role ? role : "", PKI_ROLE_ADMIN, PKI_ROLE_OPERATOR,
                                     PKI_ROLE_READER);
        _cleanup_x509_ X509 *ca_cert = NULL;
        _cleanup_pkey_ EVP_PKEY *ca_key = NULL;
        int r = ca_load(ca, &ca_cert, &ca_key, err);
        if (r < 0)
                return cap_error_prefix(err, "issue client certificate for \"%s\"", user);
        struct cert_spec spec = {
            .cn = user,
            .o = role,
            .days = opts_days(opts, PKI_CLIENT_DAYS),
            .key_type = opts_key(opts),
            .add_exts = client_exts,
        };
        r = cert_issue(&spec, ca_cert, ca_key, out, err);
        return r < 0 ? cap_error_prefix(err, "issue client certificate for \"%s\"", user) : 0;
}

static int read_small_file(const char *path, char **out, struct cap_error *err)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "open %s", path);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return cap_error_errno(err, -errno, "stat %s", path);
        if (st.st_size > PKI_MAX_FILE)
                return cap_error_set(err, -EFBIG, CAP_INVALID_ARGUMENT, "%s: larger than %d bytes",
                                     path, PKI_MAX_FILE);
        _cleanup_free_ char *buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return cap_error_errno(err, -ENOMEM, "read %s", path);
        size_t got = 0;
        while (got < (size_t)st.st_size) {
                ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return cap_error_errno(err, -errno, "read %s", path);
                if (n == 0)
                        break;
                got += (size_t)n;
        }
        buf[got] = '\0';
        *out = TAKE_PTR(buf);
        return 0;
}

int pki_pair_load_files(const char *cert_path, const char *key_path, struct pki_pair *out,
                        struct cap_error *err)
{
        struct pki_pair p = {0};
        int r = read_small_file(cert_path, &p.cert_pem, err);
        if (r >= 0)
                r = read_small_file(key_path, &p.key_pem, err);
        if (r >= 0) {
                r = pki_key_matches_cert(p.cert_pem, p.key_pem, err);
                if (r < 0)
                        cap_error_prefix(err, "%s and %s", cert_path, key_path);
        }
        if (r < 0) {
                pki_pair_free(&p);
                return r;
        }
        *out = p;
        return 0;
}

int pki_key_matches_cert(const char *cert_pem, const char *key_pem, struct cap_error *err)
{
        _cleanup_x509_ X509 *x = cert_from_pem(cert_pem, err);
        if (!x)
                return err ? err->code : -EINVAL;
        _cleanup_pkey_ EVP_PKEY *k = key_from_pem(key_pem, err);
        if (!k)
                return err ? err->code : -EINVAL;
        if (EVP_PKEY_eq(X509_get0_pubkey(x), k) != 1) {
                ERR_clear_error();
                return cap_error_set(err, -EKEYREJECTED, CAP_INVALID_ARGUMENT,
                                     "the private key does not belong to the certificate");
        }
        return 0;
}

/* The first entry of nid in name as a malloc'd UTF-8 string; NULL (not an error) if absent. */
static int name_entry(const X509_NAME *name, int nid, char **out, struct cap_error *err)
{
        *out = NULL;
        int i = X509_NAME_get_index_by_NID(name, nid, -1);
        if (i < 0)
                return 0;
        ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, data);
        if (n < 0)
                return ssl_fail(err, -EINVAL, CAP_INVALID_ARGUMENT, "subject %s", OBJ_nid2sn(nid));
        *out = strndup((const char *)utf8, (size_t)n);
        OPENSSL_free(utf8);
        return *out ? 0 : cap_error_errno(err, -ENOMEM, "subject");
}

static int asn1_time_to_time_t(const ASN1_TIME *t, time_t *out, struct cap_error *err)
{
        struct tm tm;
        if (ASN1_TIME_to_tm(t, &tm) != 1)
                return ssl_fail(err, -EINVAL, CAP_INVALID_ARGUMENT, "certificate time");
        *out = timegm(&tm);
        return 0;
}

static int cert_info_fill(X509 *x, struct pki_cert_info *info, struct cap_error *err)
{
        int r;
        if ((r = name_entry(X509_get_subject_name(x), NID_commonName, &info->cn, err)) < 0 ||
            (r = name_entry(X509_get_subject_name(x), NID_organizationName, &info->o, err)) < 0 ||
            (r = name_entry(X509_get_issuer_name(x), NID_commonName, &info->issuer_cn, err)) < 0)
                return r;
        if ((r = asn1_time_to_time_t(X509_get0_notBefore(x), &info->not_before, err)) < 0 ||
            (r = asn1_time_to_time_t(X509_get0_notAfter(x), &info->not_after, err)) < 0)
                return r;
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;
        BN_free(bn);
        if (!hex)
                return ssl_fail(err, -ENOMEM, CAP_INTERNAL, "serial");
        info->serial_hex = strdup(hex);
        OPENSSL_free(hex);
        if (!info->serial_hex)
                return cap_error_errno(err, -ENOMEM, "serial");
        info->is_ca = (X509_get_extension_flags(x) & EXFLAG_CA) != 0;
        return 0;
}

int pki_cert_info(const char *cert_pem, struct pki_cert_info *out, struct cap_error *err)
{
        memset(out, 0, sizeof(*out));
        _cleanup_x509_ X509 *x = cert_from_pem(cert_pem, err);
        if (!x)
                return err ? err->code : -EINVAL;
        int r = cert_info_fill(x, out, err);
        if (r < 0)
                pki_cert_info_free(out);
        return r;
}

int pki_certs_load(const char *pem, void *x509_store, size_t *n, struct cap_error *err)
{
        *n = 0;
        if (!pem || !*pem)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "no certificate given");
        _cleanup_bio_ BIO *b = BIO_new_mem_buf(pem, -1);
        if (!b)
                return ssl_fail(err, -ENOMEM, CAP_RESOURCE_EXHAUSTED, "read certificates");
        static const char begin[] = "-----BEGIN CERTIFICATE-----";
        size_t blocks = 0;
        for (const char *p = strstr(pem, begin); p; p = strstr(p + 1, begin))
                blocks++;
        for (size_t i = 0; i < blocks; i++) {
                _cleanup_x509_ X509 *x = PEM_read_bio_X509(b, NULL, no_password, NULL);
                if (!x)
                        return ssl_fail(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                        "certificate %zu: not a valid PEM certificate", i + 1);
                if (x509_store && X509_STORE_add_cert(x509_store, x) != 1) {
                        /* the same CA twice is fine; anything else is not */
                        unsigned long e = ERR_peek_last_error();
                        if (ERR_GET_REASON(e) != X509_R_CERT_ALREADY_IN_HASH_TABLE)
                                return ssl_fail(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                                "certificate %zu: cannot be trusted", i + 1);
                        ERR_clear_error();
                }
                (*n)++;
        }
        if (*n == 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "no \"%s\" block found",
                                     begin);
        return 0;
}

int pki_cert_days_left(const char *cert_pem, long *days, struct cap_error *err)
{
        _cleanup_x509_ X509 *x = cert_from_pem(cert_pem, err);
        if (!x)
                return err ? err->code : -EINVAL;
        int d = 0, s = 0;
        if (ASN1_TIME_diff(&d, &s, NULL, X509_get0_notAfter(x)) != 1)
                return ssl_fail(err, -EINVAL, CAP_INVALID_ARGUMENT, "certificate notAfter");
        long long total = (long long)d * 86400 + s;
        if (total >= 0)
                *days = (long)(total / 86400);
        else /* expired: whole days since, but at least 1, so that < 0 always means expired */
                *days = -(long)((-total) / 86400 > 0 ? (-total) / 86400 : 1);
        return 0;
}

int pki_verify(const char *ca_pem, const char *cert_pem, enum pki_purpose purpose,
               struct cap_error *err)
{
        _cleanup_x509_ X509 *ca = cert_from_pem(ca_pem, err);
        if (!ca)
                return cap_error_prefix(err, "CA");
        _cleanup_x509_ X509 *x = cert_from_pem(cert_pem, err);
        if (!x)
                return err ? err->code : -EINVAL;
        X509_STORE *store = X509_STORE_new();
        X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        int r = 0;
        if (!store || !ctx || X509_STORE_add_cert(store, ca) != 1 ||
            X509_STORE_CTX_init(ctx, store, x, NULL) != 1) {
                r = ssl_fail(err, -ENOMEM, CAP_INTERNAL, "verify: set up");
                goto out;
        }
        if (purpose != PKI_PURPOSE_ANY &&
            X509_STORE_CTX_set_purpose(ctx, purpose == PKI_PURPOSE_SERVER
                                                ? X509_PURPOSE_SSL_SERVER
                                                : X509_PURPOSE_SSL_CLIENT) != 1) {
                r = ssl_fail(err, -EINVAL, CAP_INTERNAL, "verify: set purpose");
                goto out;
        }
        if (X509_verify_cert(ctx) != 1) {
                int e = X509_STORE_CTX_get_error(ctx);
                bool expired =
                    e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID;
                r = cap_error_set(err, expired ? -EKEYEXPIRED : -EKEYREJECTED, CAP_UNAUTHENTICATED,
                                  "certificate verification failed: %s",
                                  X509_verify_cert_error_string(e));
        }
        ERR_clear_error();
out:
        X509_STORE_CTX_free(ctx);
        X509_STORE_free(store);
        return r;
}
