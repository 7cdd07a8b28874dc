/* The machine config's checks that need OpenSSL, apart from config.c so that a program which must
 * not map OpenSSL (PID 1: src/capsuled/init/) can link its own definitions instead; the static
 * library's (config_crypto.c) are used by every other program. Each returns 0, -ENOMEM, or
 * -EINVAL with a message (without the field name) in msg. */
#pragma once

#include <stddef.h>

/* One PEM Ed25519 public key and nothing else. */
int config_check_ed25519_pem(const char *pem, char *msg, size_t msg_size);
/* One or more PEM certificates (a CA bundle). */
int config_check_certs_pem(const char *pem, char *msg, size_t msg_size);
