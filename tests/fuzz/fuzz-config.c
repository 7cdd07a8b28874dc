/* libFuzzer target for the machine and client configs (common/config.c): machine_config_parse and
 * client_config_parse on the same arbitrary bytes, with oracles for every accepted input:
 *   - formatting it succeeds (the emitter's text parses back, config_format checks that itself);
 *   - the formatted text parses back to the same fields, and formatting that again gives the same
 *     text (the written form is a fixed point).
 * Any broken oracle aborts, so the fuzzer records the input. Built with -fsanitize=fuzzer when
 * -Dfuzz=true; otherwise fuzz-replay.c drives it over tests/fuzz/corpus/config as a unit test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-config: oracle failed: %s: ", #cond);                \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fputc('\n', stderr);                                                       \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static int str_eq(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int strv_eq(char **a, size_t na, char **b, size_t nb)
{
        if (na != nb)
                return 0;
        for (size_t i = 0; i < na; i++)
                if (!str_eq(a[i], b[i]))
                        return 0;
        return 1;
}

static int machine_eq(const struct machine_config *a, const struct machine_config *b)
{
        return a->version == b->version && str_eq(a->hostname, b->hostname) &&
               str_eq(a->listen, b->listen) && str_eq(a->ca_pem, b->ca_pem) &&
               str_eq(a->cert_pem, b->cert_pem) && str_eq(a->key_pem, b->key_pem) &&
               strv_eq(a->insecure_registries, a->n_insecure_registries, b->insecure_registries,
                       b->n_insecure_registries) &&
               a->dhcp == b->dhcp && str_eq(a->address, b->address) &&
               str_eq(a->gateway, b->gateway) && strv_eq(a->dns, a->n_dns, b->dns, b->n_dns) &&
               str_eq(a->update_pubkey_pem, b->update_pubkey_pem) &&
               strv_eq(a->revoked_serials, a->n_revoked_serials, b->revoked_serials,
                       b->n_revoked_serials);
}

static int client_eq(const struct client_config *a, const struct client_config *b)
{
        if (!str_eq(a->current_context, b->current_context) || a->n_contexts != b->n_contexts)
                return 0;
        for (size_t i = 0; i < a->n_contexts; i++) {
                const struct client_context *x = &a->contexts[i], *y = &b->contexts[i];
                if (!str_eq(x->name, y->name) || !str_eq(x->endpoint, y->endpoint) ||
                    !str_eq(x->ca_pem, y->ca_pem) || !str_eq(x->cert_pem, y->cert_pem) ||
                    !str_eq(x->key_pem, y->key_pem) ||
                    !strv_eq(x->endpoints, x->n_endpoints, y->endpoints, y->n_endpoints))
                        return 0;
        }
        return 1;
}

static void check_machine(const uint8_t *data, size_t size)
{
        struct cap_error err = {0};
        struct machine_config c, back;
        if (machine_config_parse("fuzz.yaml", (const char *)data, size, &c, &err) < 0) {
                ORACLE(err.code < 0 && err.msg[0], "failure without a message");
                return;
        }
        /* pki.revoked: bounded, canonical (a fixed point of machine_serial_canon), no repeats,
         * and each one is found by machine_serial_revoked */
        ORACLE(c.n_revoked_serials <= MACHINE_REVOKED_MAX, "%zu revoked", c.n_revoked_serials);
        for (size_t i = 0; i < c.n_revoked_serials; i++) {
                char canon[MACHINE_SERIAL_MAX_HEX + 1];
                ORACLE(machine_serial_canon(c.revoked_serials[i], canon) == 0 &&
                           strcmp(canon, c.revoked_serials[i]) == 0,
                       "revoked[%zu] \"%s\" not canonical", i, c.revoked_serials[i]);
                ORACLE(machine_serial_revoked(&c, c.revoked_serials[i]), "revoked[%zu] not found",
                       i);
                for (size_t j = 0; j < i; j++)
                        ORACLE(strcmp(c.revoked_serials[i], c.revoked_serials[j]) != 0,
                               "revoked[%zu] repeats [%zu]", i, j);
        }
        char *y1 = NULL, *y2 = NULL;
        size_t n1 = 0, n2 = 0;
        ORACLE(machine_config_format(&c, &y1, &n1, &err) == 0, "format: %s", err.msg);
        ORACLE(machine_config_parse("formatted.yaml", y1, n1, &back, &err) == 0,
               "formatted text rejected: %s\n%s", err.msg, y1);
        ORACLE(machine_eq(&c, &back), "round trip differs:\n%s", y1);
        ORACLE(machine_config_revoked_equal(&c, &back), "pki.revoked differs:\n%s", y1);
        ORACLE(machine_config_format(&back, &y2, &n2, &err) == 0, "format again: %s", err.msg);
        ORACLE(n1 == n2 && memcmp(y1, y2, n1) == 0, "not a fixed point:\n%s\n---\n%s", y1, y2);
        free(y1);
        free(y2);
        machine_config_free(&back);
        machine_config_free(&c);
}

static void check_client(const uint8_t *data, size_t size)
{
        struct cap_error err = {0};
        struct client_config c, back;
        if (client_config_parse("fuzz.yaml", (const char *)data, size, &c, &err) < 0) {
                ORACLE(err.code < 0 && err.msg[0], "failure without a message");
                return;
        }
        (void)client_config_find(&c, NULL);
        char *y1 = NULL, *y2 = NULL;
        size_t n1 = 0, n2 = 0;
        ORACLE(client_config_format(&c, &y1, &n1, &err) == 0, "format: %s", err.msg);
        ORACLE(client_config_parse("formatted.yaml", y1, n1, &back, &err) == 0,
               "formatted text rejected: %s\n%s", err.msg, y1);
        ORACLE(client_eq(&c, &back), "round trip differs:\n%s", y1);
        ORACLE(client_config_format(&back, &y2, &n2, &err) == 0, "format again: %s", err.msg);
        ORACLE(n1 == n2 && memcmp(y1, y2, n1) == 0, "not a fixed point:\n%s\n---\n%s", y1, y2);
        free(y1);
        free(y2);
        client_config_free(&back);
        client_config_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        check_machine(data, size);
        check_client(data, size);
        return 0;
}
