/* Unit tests for src/common/pki.c: issuance, chains, subject fields, expiry, SANs, key matching. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/pki.h"
#include "test.h"

static struct pki_pair ca;       /* made once by main, freed at the end */
static struct pki_pair other_ca; /* an unrelated CA */

static X509 *parse(const char *pem)
{
        BIO *b = BIO_new_mem_buf(pem, -1);
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        return x;
}

/* True when cert has a SAN of the given type (GEN_DNS or GEN_IPADD) whose text equals want. */
static int has_san(X509 *x, int type, const char *want)
{
        GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
        int found = 0;
        for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
                GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
                if (g->type != type)
                        continue;
                if (type == GEN_DNS) {
                        found =
                            strcmp((const char *)ASN1_STRING_get0_data(g->d.dNSName), want) == 0;
                } else {
                        char txt[INET6_ADDRSTRLEN] = "";
                        int len = ASN1_STRING_length(g->d.iPAddress);
                        const unsigned char *ip = ASN1_STRING_get0_data(g->d.iPAddress);
                        if (len == 4 || len == 16)
                                inet_ntop(len == 4 ? AF_INET : AF_INET6, ip, txt, sizeof(txt));
                        found = strcmp(txt, want) == 0;
                }
        }
        GENERAL_NAMES_free(gens);
        return found;
}

TEST(ca_is_a_ca)
{
        struct pki_cert_info info;
        struct cap_error err = {0};
        CHECK(pki_cert_info(ca.cert_pem, &info, &err) == 0);
        CHECK_STR_EQ(info.cn, "home capsule CA");
        CHECK(info.o == NULL);
        CHECK(info.is_ca);
        CHECK(strlen(info.serial_hex) >= 30);
        long days = 0;
        CHECK(pki_cert_days_left(ca.cert_pem, &days, &err) == 0);
        CHECK(days >= PKI_CA_DAYS - 1 && days <= PKI_CA_DAYS);
        pki_cert_info_free(&info);

        X509 *x = parse(ca.cert_pem);
        CHECK(x != NULL);
        CHECK(X509_check_ca(x) == 1);
        uint32_t ku = X509_get_key_usage(x);
        CHECK((ku & KU_KEY_CERT_SIGN) && (ku & KU_CRL_SIGN));
        CHECK(X509_get0_subject_key_id(x) != NULL);
        int crit = 0;
        BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
        CHECK(bc && bc->ca && crit == 1);
        BASIC_CONSTRAINTS_free(bc);
        X509_free(x);
        CHECK(pki_verify(ca.cert_pem, ca.cert_pem, PKI_PURPOSE_ANY, &err) == 0);
}

TEST(server_cert)
{
        struct pki_pair srv = {0};
        struct cap_error err = {0};
        const char *hosts[] = {"192.168.1.10", "home.lan", "[fd00::1]", "127.0.0.1"};
        CHECK(pki_server_issue(&ca, "home", hosts, 4, NULL, &srv, &err) == 0);
        CHECK(pki_verify(ca.cert_pem, srv.cert_pem, PKI_PURPOSE_SERVER, &err) == 0);
        CHECK(pki_verify(ca.cert_pem, srv.cert_pem, PKI_PURPOSE_CLIENT, &err) < 0);
        CHECK(pki_key_matches_cert(srv.cert_pem, srv.key_pem, &err) == 0);

        X509 *x = parse(srv.cert_pem);
        CHECK(x != NULL);
        CHECK(has_san(x, GEN_IPADD, "192.168.1.10"));
        CHECK(has_san(x, GEN_IPADD, "127.0.0.1"));
        CHECK(has_san(x, GEN_IPADD, "fd00::1"));
        CHECK(has_san(x, GEN_DNS, "home.lan"));
        CHECK(has_san(x, GEN_DNS, "home"));
        CHECK(has_san(x, GEN_DNS, "localhost"));
        CHECK(!has_san(x, GEN_DNS, "192.168.1.10"));
        GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
        CHECK(gens && sk_GENERAL_NAME_num(gens) == 6); /* 127.0.0.1 only once */
        GENERAL_NAMES_free(gens);
        CHECK(X509_check_host(x, "home.lan", 0, 0, NULL) == 1);
        CHECK(X509_check_ip_asc(x, "192.168.1.10", 0) == 1);
        CHECK((X509_get_extended_key_usage(x) & XKU_SSL_SERVER) != 0);
        CHECK(X509_check_ca(x) == 0);
        X509_free(x);

        struct pki_cert_info info;
        CHECK(pki_cert_info(srv.cert_pem, &info, &err) == 0);
        CHECK_STR_EQ(info.cn, "home");
        CHECK_STR_EQ(info.issuer_cn, "home capsule CA");
        CHECK(!info.is_ca);
        pki_cert_info_free(&info);
        pki_pair_free(&srv);

        const char *bad[] = {"no spaces please"};
        CHECK(pki_server_issue(&ca, "home", bad, 1, NULL, &srv, &err) < 0);
        CHECK_CONTAINS(err.msg, "neither an IP address nor a DNS name");
        CHECK(srv.cert_pem == NULL);
}

TEST(client_cert_roles)
{
        struct pki_pair admin = {0}, reader = {0};
        struct cap_error err = {0};
        CHECK(pki_client_issue(&ca, "admin", PKI_ROLE_ADMIN, NULL, &admin, &err) == 0);
        CHECK(pki_client_issue(&ca, "alice", PKI_ROLE_READER, NULL, &reader, &err) == 0);
        CHECK(pki_verify(ca.cert_pem, admin.cert_pem, PKI_PURPOSE_CLIENT, &err) == 0);
        CHECK(pki_verify(ca.cert_pem, reader.cert_pem, PKI_PURPOSE_CLIENT, &err) == 0);
        CHECK(pki_verify(ca.cert_pem, reader.cert_pem, PKI_PURPOSE_SERVER, &err) < 0);

        struct pki_cert_info info;
        CHECK(pki_cert_info(admin.cert_pem, &info, &err) == 0);
        CHECK_STR_EQ(info.cn, "admin");
        CHECK_STR_EQ(info.o, "capsule:admin");
        CHECK(info.not_after - info.not_before >= 365L * 86400);
        pki_cert_info_free(&info);
        CHECK(pki_cert_info(reader.cert_pem, &info, &err) == 0);
        CHECK_STR_EQ(info.cn, "alice");
        CHECK_STR_EQ(info.o, "capsule:reader");
        pki_cert_info_free(&info);

        long days = 0;
        CHECK(pki_cert_days_left(admin.cert_pem, &days, &err) == 0);
        CHECK(days == PKI_CLIENT_DAYS - 1 || days == PKI_CLIENT_DAYS);

        X509 *x = parse(admin.cert_pem);
        CHECK(x && (X509_get_extended_key_usage(x) & XKU_SSL_CLIENT) != 0);
        CHECK(x && X509_get0_authority_key_id(x) != NULL);
        X509_free(x);

        /* Serials are random: two certs never share one. */
        struct pki_cert_info a, b;
        CHECK(pki_cert_info(admin.cert_pem, &a, &err) == 0);
        CHECK(pki_cert_info(reader.cert_pem, &b, &err) == 0);
        CHECK(strcmp(a.serial_hex, b.serial_hex) != 0);
        pki_cert_info_free(&a);
        pki_cert_info_free(&b);

        struct pki_pair bad = {0};
        CHECK(pki_client_issue(&ca, "bob", "capsule:root", NULL, &bad, &err) < 0);
        CHECK_CONTAINS(err.msg, "capsule:root");
        CHECK(!pki_role_is_valid("capsule:root"));
        CHECK(pki_role_is_valid(PKI_ROLE_READER));
        pki_pair_free(&admin);
        pki_pair_free(&reader);
}

TEST(other_ca_is_rejected)
{
        struct pki_pair c = {0};
        struct cap_error err = {0};
        CHECK(pki_client_issue(&other_ca, "mallory", PKI_ROLE_ADMIN, NULL, &c, &err) == 0);
        CHECK(pki_verify(other_ca.cert_pem, c.cert_pem, PKI_PURPOSE_CLIENT, &err) == 0);
        int r = pki_verify(ca.cert_pem, c.cert_pem, PKI_PURPOSE_CLIENT, &err);
        CHECK(r == -EKEYREJECTED);
        CHECK(err.status == CAP_UNAUTHENTICATED);
        CHECK_CONTAINS(err.msg, "unable to get local issuer certificate");
        /* A leaf is not a CA: it cannot issue. */
        struct pki_pair leaf_as_ca = {.cert_pem = c.cert_pem, .key_pem = c.key_pem}, d = {0};
        CHECK(pki_client_issue(&leaf_as_ca, "x", PKI_ROLE_ADMIN, NULL, &d, &err) < 0);
        CHECK_CONTAINS(err.msg, "not a CA");
        pki_pair_free(&c);
}

TEST(expired_cert)
{
        struct pki_pair c = {0};
        struct cap_error err = {0};
        struct pki_issue_opts opts = {.days = -1};
        CHECK(pki_client_issue(&ca, "old", PKI_ROLE_READER, &opts, &c, &err) == 0);
        long days = 0;
        CHECK(pki_cert_days_left(c.cert_pem, &days, &err) == 0);
        CHECK(days == -1);
        struct pki_cert_info info;
        CHECK(pki_cert_info(c.cert_pem, &info, &err) == 0);
        CHECK(info.not_after < time(NULL));
        pki_cert_info_free(&info);
        CHECK(pki_verify(ca.cert_pem, c.cert_pem, PKI_PURPOSE_CLIENT, &err) == -EKEYEXPIRED);
        CHECK_CONTAINS(err.msg, "expired");
        pki_pair_free(&c);

        opts.days = 10; /* within the warning window */
        CHECK(pki_client_issue(&ca, "soon", PKI_ROLE_READER, &opts, &c, &err) == 0);
        CHECK(pki_cert_days_left(c.cert_pem, &days, &err) == 0);
        CHECK(days >= 9 && days <= 10 && days < PKI_EXPIRY_WARN_DAYS);
        pki_pair_free(&c);
}

TEST(key_mismatch)
{
        struct pki_pair a = {0}, b = {0};
        struct cap_error err = {0};
        CHECK(pki_client_issue(&ca, "a", PKI_ROLE_READER, NULL, &a, &err) == 0);
        CHECK(pki_client_issue(&ca, "b", PKI_ROLE_READER, NULL, &b, &err) == 0);
        CHECK(pki_key_matches_cert(a.cert_pem, a.key_pem, &err) == 0);
        CHECK(pki_key_matches_cert(a.cert_pem, b.key_pem, &err) == -EKEYREJECTED);
        CHECK_CONTAINS(err.msg, "does not belong");
        /* A CA pair whose key is not the CA's own cannot issue. */
        struct pki_pair wrong = {.cert_pem = ca.cert_pem, .key_pem = other_ca.key_pem}, c = {0};
        CHECK(pki_client_issue(&wrong, "x", PKI_ROLE_ADMIN, NULL, &c, &err) < 0);
        CHECK_CONTAINS(err.msg, "CA key does not belong");
        pki_pair_free(&a);
        pki_pair_free(&b);
}

TEST(garbage_pem)
{
        struct cap_error err = {0};
        struct pki_cert_info info;
        CHECK(pki_cert_info("not a certificate", &info, &err) < 0);
        CHECK_CONTAINS(err.msg, "parse PEM certificate");
        CHECK(pki_verify(ca.cert_pem, "", PKI_PURPOSE_ANY, &err) < 0);
        CHECK(pki_key_matches_cert(ca.cert_pem,
                                   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                                   &err) < 0);
        CHECK_CONTAINS(err.msg, "private key");
}

TEST(ed25519)
{
        struct pki_issue_opts opts = {.key_type = PKI_KEY_ED25519};
        struct pki_pair edca = {0}, cl = {0}, srv = {0};
        struct cap_error err = {0};
        CHECK(pki_ca_create("ed", &opts, &edca, &err) == 0);
        CHECK(pki_client_issue(&edca, "admin", PKI_ROLE_ADMIN, &opts, &cl, &err) == 0);
        CHECK(pki_verify(edca.cert_pem, cl.cert_pem, PKI_PURPOSE_CLIENT, &err) == 0);
        /* Mixed: an Ed25519 CA signing a P-256 server key. */
        CHECK(pki_server_issue(&edca, "ed", NULL, 0, NULL, &srv, &err) == 0);
        CHECK(pki_verify(edca.cert_pem, srv.cert_pem, PKI_PURPOSE_SERVER, &err) == 0);
        CHECK_CONTAINS(cl.key_pem, "BEGIN PRIVATE KEY");
        pki_pair_free(&edca);
        pki_pair_free(&cl);
        pki_pair_free(&srv);
}

static int write_file(const char *path, const char *s)
{
        FILE *f = fopen(path, "w");
        if (!f)
                return -1;
        fputs(s, f);
        return fclose(f);
}

TEST(load_files)
{
        char dir[] = "/tmp/test-pki-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        char crt[64], key[64], key2[64];
        snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
        snprintf(key, sizeof(key), "%s/ca.key", dir);
        snprintf(key2, sizeof(key2), "%s/other.key", dir);
        CHECK(write_file(crt, ca.cert_pem) == 0);
        CHECK(write_file(key, ca.key_pem) == 0);
        CHECK(write_file(key2, other_ca.key_pem) == 0);
        struct pki_pair p = {0};
        struct cap_error err = {0};
        CHECK(pki_pair_load_files(crt, key, &p, &err) == 0);
        CHECK_STR_EQ(p.cert_pem, ca.cert_pem);
        pki_pair_free(&p);
        CHECK(pki_pair_load_files(crt, key2, &p, &err) == -EKEYREJECTED);
        CHECK_CONTAINS(err.msg, "other.key");
        CHECK(p.cert_pem == NULL);
        CHECK(pki_pair_load_files(crt, "/nonexistent/ca.key", &p, &err) == -ENOENT);
        CHECK_CONTAINS(err.msg, "/nonexistent/ca.key");
        unlink(crt);
        unlink(key);
        unlink(key2);
        rmdir(dir);
}

int main(void)
{
        struct cap_error err = {0};
        if (pki_ca_create("home", NULL, &ca, &err) < 0 ||
            pki_ca_create("other", NULL, &other_ca, &err) < 0) {
                fprintf(stderr, "setup: %s\n", err.msg);
                return 1;
        }
        RUN(ca_is_a_ca);
        RUN(server_cert);
        RUN(client_cert_roles);
        RUN(other_ca_is_rejected);
        RUN(expired_cert);
        RUN(key_mismatch);
        RUN(garbage_pem);
        RUN(ed25519);
        RUN(load_files);
        pki_pair_free(&ca);
        pki_pair_free(&other_ca);
        return test_summary();
}
