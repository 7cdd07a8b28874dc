/* The operator PKI: one self-signed CA per Capsule, a server certificate for the machine and client
 * certificates whose O field carries the role (capsule:admin, capsule:operator or capsule:reader).
 *
 * Everything is PEM in memory (struct pki_pair); the caller decides where it goes (machine.yaml,
 * capsuleconfig, secrets/). OpenSSL 3 EVP APIs only. Keys are ECDSA P-256 by default, Ed25519 on
 * request. Serials are 128-bit random.
 *
 * Validity defaults (days): CA 3650, server 1825 (the server cert is baked into the machine config,
 * so it should outlive several images; re-run `capsulectl gen` to rotate), client 365 (the API
 * checks expiry on every connection; `capsulectl gen cert` mints a new one from the CA). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "error.h"

#define PKI_ROLE_ADMIN "capsule:admin"
#define PKI_ROLE_READER "capsule:reader"
#define PKI_ROLE_OPERATOR "capsule:operator"

#define PKI_CA_DAYS 3650
#define PKI_SERVER_DAYS 1825
#define PKI_CLIENT_DAYS 365
/* capsulectl warns when its client certificate expires within this many days. */
#define PKI_EXPIRY_WARN_DAYS 30

enum pki_key_type { PKI_KEY_EC_P256 = 0, PKI_KEY_ED25519 };

/* A certificate and its private key, both PEM, both owned (free with pki_pair_free). */
struct pki_pair {
        char *cert_pem;
        char *key_pem;
};

struct pki_issue_opts {
        enum pki_key_type key_type; /* default (0) ECDSA P-256 */
        /* Validity in days; 0 means the default for the kind of certificate. A negative value makes
         * a certificate that expired |days| days ago (valid for one day before that): for tests. */
        int days;
};

/* Facts read from a certificate. Strings are owned; free with pki_cert_info_free. */
struct pki_cert_info {
        char *cn; /* subject commonName, NULL if absent */
        char *o;  /* subject organizationName (the role), NULL if absent */
        char *issuer_cn;
        char *serial_hex;
        time_t not_before;
        time_t not_after;
        bool is_ca;
};

void pki_pair_free(struct pki_pair *pair);
void pki_cert_info_free(struct pki_cert_info *info);

/* True for "capsule:admin", "capsule:operator" and "capsule:reader". */
bool pki_role_is_valid(const char *role);

/* Creates a self-signed CA "<name> capsule CA" (basicConstraints CA:TRUE critical, keyUsage
 * keyCertSign+cRLSign, subjectKeyIdentifier). opts may be NULL (P-256, 10 years). */
int pki_ca_create(const char *name, const struct pki_issue_opts *opts, struct pki_pair *out,
                  struct cap_error *err);

/* Issues the machine's server certificate: CN = name, extendedKeyUsage serverAuth, SANs = each of
 * hosts (IPv4/IPv6 literals become IP SANs, anything else a DNS SAN) plus localhost and 127.0.0.1
 * and DNS:name. Duplicates are dropped. */
int pki_server_issue(const struct pki_pair *ca, const char *name, const char *const *hosts,
                     size_t n_hosts, const struct pki_issue_opts *opts, struct pki_pair *out,
                     struct cap_error *err);

/* Issues a client certificate: CN = user, O = role (PKI_ROLE_*), extendedKeyUsage clientAuth. */
int pki_client_issue(const struct pki_pair *ca, const char *user, const char *role,
                     const struct pki_issue_opts *opts, struct pki_pair *out,
                     struct cap_error *err);

/* Reads a certificate and its key from PEM files and checks that they belong together. */
int pki_pair_load_files(const char *cert_path, const char *key_path, struct pki_pair *out,
                        struct cap_error *err);

/* 0 when key_pem is the private key of cert_pem; -EKEYREJECTED (with a message) when not. */
int pki_key_matches_cert(const char *cert_pem, const char *key_pem, struct cap_error *err);

int pki_cert_info(const char *cert_pem, struct pki_cert_info *out, struct cap_error *err);

/* Whole days from now until the certificate's notAfter (rounded down). Once expired it is negative:
 * minus the whole days since notAfter, at least 1 (so days < 0 exactly when the cert has expired).
 */
int pki_cert_days_left(const char *cert_pem, long *days, struct cap_error *err);

/* Reads every certificate in pem (one or more PEM blocks; text between them is ignored) and, when
 * x509_store (an OpenSSL X509_STORE *) is not NULL, adds each to it as trusted. *n is how many were
 * read. -EINVAL when a block does not parse or there is none. */
int pki_certs_load(const char *pem, void *x509_store, size_t *n, struct cap_error *err);

enum pki_purpose { PKI_PURPOSE_ANY = 0, PKI_PURPOSE_SERVER, PKI_PURPOSE_CLIENT };

/* Verifies that cert_pem is signed by the CA in ca_pem, is within its validity period and (unless
 * PKI_PURPOSE_ANY) may be used for purpose. Returns -EKEYEXPIRED for an expired or not yet valid
 * certificate, -EKEYREJECTED for any other failure; the message is OpenSSL's reason. */
int pki_verify(const char *ca_pem, const char *cert_pem, enum pki_purpose purpose,
               struct cap_error *err);
