/* PID 1's definitions of the machine config's OpenSSL checks (common/config_crypto.h): none.
 * Linked before the common library, they keep OpenSSL out of PID 1; PID 1 reads only the config
 * on /perm (which serve validated fully when it was applied) and validates an ESP
 * machine-override.yaml with `capsuled-serve check-config` before installing it (perm.c). */
#include "../../common/config_crypto.h"

int config_check_ed25519_pem(const char *pem, char *msg, size_t msg_size)
{
        (void)pem, (void)msg, (void)msg_size;
        return 0;
}

int config_check_certs_pem(const char *pem, char *msg, size_t msg_size)
{
        (void)pem, (void)msg, (void)msg_size;
        return 0;
}
