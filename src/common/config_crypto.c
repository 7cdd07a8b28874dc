/* The machine config's OpenSSL checks (see config_crypto.h). */
#include "config_crypto.h"

#include <errno.h>
#include <stdio.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "error.h"
#include "pki.h"

int config_check_ed25519_pem(const char *pem, char *msg, size_t msg_size)
{
        BIO *bio = BIO_new_mem_buf(pem, -1);
        if (!bio)
                return -ENOMEM;
        EVP_PKEY *key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
        EVP_PKEY *extra = key ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        ERR_clear_error();
        int id = key ? EVP_PKEY_get_base_id(key) : 0;
        EVP_PKEY_free(key);
        EVP_PKEY_free(extra);
        if (!key)
                snprintf(msg, msg_size,
                         "not a PEM public key (\"-----BEGIN PUBLIC KEY-----\"; "
                         "`openssl pkey -in update-signing.key -pubout` prints one)");
        else if (id != EVP_PKEY_ED25519)
                snprintf(msg, msg_size, "not an Ed25519 key");
        else if (extra)
                snprintf(msg, msg_size, "more than one key (one per list item)");
        else
                return 0;
        return -EINVAL;
}

int config_check_certs_pem(const char *pem, char *msg, size_t msg_size)
{
        size_t n;
        struct cap_error e = {0};
        if (pki_certs_load(pem, NULL, &n, &e) < 0) {
                snprintf(msg, msg_size, "%s", e.msg);
                return e.code == -ENOMEM ? -ENOMEM : -EINVAL;
        }
        return 0;
}
