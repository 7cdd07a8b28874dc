/* libFuzzer target for the pure half of the CNI runner (net/cni-json.c): everything that reads text
 * a plugin or the host hands us. The input, as a C string, goes to each of:
 *   - cni_result_parse (a plugin's stdout): an accepted result has an IPv4 address;
 *   - cni_error_parse (a failed plugin's stdout and stderr): the message is always set;
 *   - cni_plugin_config with the input as prevResult: NULL or valid JSON text;
 *   - cni_split_rule (an iptables-save line): quoting each word back and splitting again gives the
 *     same words;
 *   - cni_resolv_conf (the host's resolv.conf): no loopback name server survives, at least one
 *     name server is left, and filtering its own output changes nothing.
 * Any broken oracle aborts. Built with -fsanitize=fuzzer when -Dfuzz=true; otherwise fuzz-replay.c
 * drives it over tests/fuzz/corpus/cni as a unit test. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "net/cni.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ORACLE(cond, ...)                                                                          \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-cni: oracle failed: %s: ", #cond);                   \
                        fprintf(stderr, __VA_ARGS__);                                              \
                        fputc('\n', stderr);                                                       \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static void check_result(const char *text)
{
        struct cni_attachment a = {0};
        struct cap_error err = {0};
        if (cni_result_parse(text, &a, &err) == 0) {
                struct in_addr a4;
                ORACLE(a.ip && inet_pton(AF_INET, a.ip, &a4) == 1, "accepted ip \"%s\"",
                       a.ip ? a.ip : "(null)");
        } else {
                ORACLE(err.code < 0 && err.msg[0], "failure without a message");
        }
        cni_attachment_free(&a);
}

static void check_error(const char *text)
{
        struct cap_error err = {0};
        cni_error_parse("bridge", 1, text, "", &err);
        ORACLE(err.code < 0 && err.msg[0], "no message");
        cap_error_clear(&err);
        cni_error_parse("bridge", 1, NULL, text, &err);
        ORACLE(err.code < 0 && err.msg[0], "no message (stderr only)");
}

static void check_plugin_config(const char *text)
{
        struct cni_config c = {.plugin_dir = "/usr/lib/cni",
                               .netns_dir = "/run/capsule/netns",
                               .state_dir = "/var/lib/capsule/cni",
                               .network_name = "capsule",
                               .bridge = "capsule0",
                               .subnet = "10.88.0.0/16"};
        struct cni_port ports[] = {{8080, 80, "tcp", NULL}, {53, 53, "udp", "127.0.0.1"}};
        char *list = cni_conflist_json(&c);
        ORACLE(list != NULL, "conflist");
        size_t n = cni_plugin_count(list);
        for (size_t i = 0; i < n; i++) {
                char *cfg = cni_plugin_config(list, i, text, ports, 2);
                if (cfg) {
                        struct json_object *o = json_tokener_parse(cfg);
                        ORACLE(o != NULL, "plugin config is not JSON: %s", cfg);
                        json_object_put(o);
                }
                free(cfg);
        }
        free(list);
}

/* Quotes w as iptables-save would accept it back: inside double quotes, " and \ escaped. */
static char *quote_word(const char *w)
{
        char *q = malloc(strlen(w) * 2 + 3), *p = q;
        if (!q)
                abort();
        *p++ = '"';
        for (; *w; w++) {
                if (*w == '"' || *w == '\\')
                        *p++ = '\\';
                *p++ = *w;
        }
        *p++ = '"';
        *p = '\0';
        return q;
}

static void check_split(const char *text)
{
        char **words = NULL;
        int n = cni_split_rule(text, &words);
        if (n < 0)
                return;
        ORACLE(words && words[n] == NULL, "argv not NULL-terminated");
        size_t cap = 1;
        for (int i = 0; i < n; i++)
                cap += strlen(words[i]) * 2 + 3;
        char *line = malloc(cap);
        if (!line)
                abort();
        line[0] = '\0';
        for (int i = 0; i < n; i++) {
                char *q = quote_word(words[i]);
                if (i)
                        strcat(line, " ");
                strcat(line, q);
                free(q);
        }
        char **again = NULL;
        int m = cni_split_rule(line, &again);
        ORACLE(m == n, "re-split gives %d words, not %d: %s", m, n, line);
        for (int i = 0; i < n; i++)
                ORACLE(strcmp(words[i], again[i]) == 0, "word %d differs: %s", i, line);
        cni_words_free(again);
        cni_words_free(words);
        free(line);
}

static void check_resolv(const char *text)
{
        char *out = cni_resolv_conf(text);
        ORACLE(out != NULL, "resolv.conf");
        int servers = 0;
        for (const char *p = out; *p;) {
                const char *eol = strchr(p, '\n');
                size_t n = eol ? (size_t)(eol - p) : strlen(p);
                char word[64] = "", arg[256] = "";
                char line[512];
                snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) ? n : sizeof(line) - 1),
                         p);
                if (sscanf(line, " %63s %255s", word, arg) == 2 &&
                    strcmp(word, "nameserver") == 0) {
                        ORACLE(strncmp(arg, "127.", 4) != 0 && strcmp(arg, "::1") != 0,
                               "loopback server kept: %s", out);
                        servers++;
                }
                p += n + (eol ? 1 : 0);
        }
        ORACLE(servers > 0, "no name server: %s", out);
        char *again = cni_resolv_conf(out);
        ORACLE(again && strcmp(again, out) == 0, "not a fixed point:\n%s\n---\n%s", out,
               again ? again : "");
        free(again);
        free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        /* the functions take C strings: the input up to its first NUL */
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';
        check_result(text);
        check_error(text);
        check_plugin_config(text);
        check_split(text);
        check_resolv(text);
        free(text);
        return 0;
}
