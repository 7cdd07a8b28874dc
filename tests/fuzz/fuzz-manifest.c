/* libFuzzer target for the manifest layer: manifest_parse on arbitrary bytes, plus oracles that
 * must hold for every accepted input, and the quantity parsers on the first line.
 *   - an accepted workload passes manifest_workload_validate (gRPC-side rules agree);
 *   - its canonical YAML parses back to an equal spec, and rendering that again gives the same
 *     text (the canonical form is a fixed point); same for volumes;
 *   - redaction hides exactly the secret env values (all of them with `all`), and a redacted spec
 *     with a secret no longer validates (the API's "<redacted>" cannot be applied back);
 *   - a parsed quantity formats to text that parses back to the same value.
 * Any broken oracle aborts, so the fuzzer records the input. Built with -fsanitize=fuzzer when
 * -Dfuzz=true; otherwise fuzz-replay.c drives it over the seed corpus as a unit test. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-manifest: oracle failed: %s: ", #cond);              \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fputc('\n', stderr);                                                       \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static void check_quantities(const uint8_t *data, size_t size)
{
        char text[80];
        size_t n = 0;
        while (n < size && n < sizeof(text) - 1 && data[n] != '\n')
                n++;
        memcpy(text, data, n);
        text[n] = '\0';
        struct cap_error err = {0};
        char buf[QUANTITY_BUF_SIZE];
        uint64_t bytes, back;
        if (quantity_parse_bytes(text, &bytes, &err) == 0) {
                quantity_format_bytes(bytes, buf, sizeof(buf));
                ORACLE(quantity_parse_bytes(buf, &back, &err) == 0 && back == bytes,
                       "bytes \"%s\" -> %s", text, buf);
        }
        uint64_t milli, milli2;
        if (quantity_parse_millicpus(text, &milli, &err) == 0) {
                quantity_format_cpus((double)milli / 1000.0, buf, sizeof(buf));
                ORACLE(quantity_parse_millicpus(buf, &milli2, &err) == 0 && milli2 == milli,
                       "cpus \"%s\" -> %s", text, buf);
        }
}

static void check_redaction(const Capsule__V1__WorkloadSpec *w, bool all)
{
        Capsule__V1__WorkloadSpec *r = manifest_workload_copy(w);
        ORACLE(r && manifest_workload_redact(r, all) == 0, "redact failed");
        ORACLE(r->n_env == w->n_env && r->n_secret_env == w->n_secret_env, "redact changed shape");
        bool hidden = false;
        for (size_t i = 0; i < r->n_env; i++) {
                bool secret = all || manifest_env_is_secret(w, w->env[i]->key);
                hidden |= secret;
                ORACLE(strcmp(r->env[i]->value, secret ? MANIFEST_REDACTED : w->env[i]->value) == 0,
                       "env %s: redacted=%d value %s", w->env[i]->key, secret, r->env[i]->value);
        }
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        ORACLE((manifest_workload_validate(r, NULL, &errs) == 0) == !hidden,
               "redacted spec (hidden %d) validates wrongly", hidden);
        manifest_errors_free(&errs);
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void check_workload(const Capsule__V1__WorkloadSpec *w)
{
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        ORACLE(manifest_workload_validate(w, NULL, &errs) == 0, "%s", errs.n ? errs.msgs[0] : "?");
        manifest_errors_free(&errs);

        char *y1 = manifest_workload_to_yaml(w);
        ORACLE(y1 != NULL, "to_yaml failed");
        struct manifest_set set;
        manifest_errors_init(&errs);
        int r = manifest_parse("canonical.yaml", y1, strlen(y1), &set, &errs);
        ORACLE(r == 0 && set.n == 1, "canonical YAML rejected: %s\n%s", errs.n ? errs.msgs[0] : "",
               y1);
        ORACLE(manifest_workload_equal(w, set.docs[0].workload) == 1, "round trip differs:\n%s",
               y1);
        char *y2 = manifest_workload_to_yaml(set.docs[0].workload);
        ORACLE(y2 && strcmp(y1, y2) == 0, "not a fixed point:\n%s\n---\n%s", y1, y2 ? y2 : "");
        Capsule__V1__WorkloadSpec *copy = manifest_workload_copy(w);
        ORACLE(copy && manifest_workload_equal(w, copy) == 1, "copy differs");
        protobuf_c_message_free_unpacked(&copy->base, NULL);
        check_redaction(w, false);
        check_redaction(w, true);
        free(y1);
        free(y2);
        manifest_set_free(&set);
        manifest_errors_free(&errs);
}

static void check_volume(const struct manifest_doc *d)
{
        char *y = manifest_volume_to_yaml(d->volume_name, d->volume_size);
        ORACLE(y != NULL, "volume to_yaml failed");
        struct manifest_set set;
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        int r = manifest_parse("volume.yaml", y, strlen(y), &set, &errs);
        ORACLE(r == 0 && set.n == 1 && set.docs[0].volume_size == d->volume_size &&
                   strcmp(set.docs[0].volume_name, d->volume_name) == 0,
               "volume round trip:\n%s", y);
        free(y);
        manifest_set_free(&set);
        manifest_errors_free(&errs);
}

static bool no_volume_exists(const char *name, void *ud)
{
        return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        check_quantities(data, size);
        struct manifest_set set;
        struct manifest_errors errs;
        manifest_errors_init(&errs);
        int r = manifest_parse("fuzz.yaml", (const char *)data, size, &set, &errs);
        if (r == 0) {
                ORACLE(manifest_errors_count(&errs) == 0, "success with errors");
                for (size_t i = 0; i < set.n; i++) {
                        if (set.docs[i].workload)
                                check_workload(set.docs[i].workload);
                        else
                                check_volume(&set.docs[i]);
                }
                (void)manifest_check_mounts(&set, no_volume_exists, NULL, &errs);
        } else {
                ORACLE(set.n == 0 && manifest_errors_count(&errs) > 0, "failure without errors");
        }
        char *text = manifest_errors_join(&errs, "\n");
        free(text);
        manifest_set_free(&set);
        manifest_errors_free(&errs);
        return 0;
}
