/* Kernel command line parsing for capsule-guest (see cmdline.h). The host's microVM driver
 * writes `capsule.ip=10.88.0.5/16 capsule.gw=10.88.0.1 capsule.dns=10.88.0.1,1.1.1.1
 * capsule.hostname=web` (all optional) and `capsule.probe=1` for its KVM probe. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdline.h"

#define WORD_MAX 512

static void warn(struct guest_cmdline *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(struct guest_cmdline *c, const char *fmt, ...)
{
        if (c->n_warnings >= GUEST_CMDLINE_MAX_WARNINGS)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->warnings[c->n_warnings++], sizeof(c->warnings[0]), fmt, ap);
        va_end(ap);
}

static bool parse_ipv4(const char *s, struct in_addr *out)
{
        return inet_pton(AF_INET, s, out) == 1;
}

/* "A.B.C.D/N" (N 0..32); a bare address means /32. */
static bool parse_cidr(const char *s, struct in_addr *ip, unsigned *prefix)
{
        char addr[INET_ADDRSTRLEN + 1];
        const char *slash = strchr(s, '/');
        size_t n = slash ? (size_t)(slash - s) : strlen(s);
        if (n == 0 || n >= sizeof(addr))
                return false;
        memcpy(addr, s, n);
        addr[n] = '\0';
        if (!parse_ipv4(addr, ip))
                return false;
        if (!slash) {
                *prefix = 32;
                return true;
        }
        const char *p = slash + 1;
        if (!*p || strlen(p) > 2)
                return false;
        unsigned v = 0;
        for (; *p; p++) {
                if (*p < '0' || *p > '9')
                        return false;
                v = v * 10 + (unsigned)(*p - '0');
        }
        if (v > 32)
                return false;
        *prefix = v;
        return true;
}

/* RFC 1123 host name: labels of [A-Za-z0-9-], not starting or ending with '-', dots between. */
static bool hostname_ok(const char *s)
{
        size_t n = strlen(s), label = 0;
        if (n == 0 || n > 63)
                return false;
        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                if (ch == '.') {
                        if (label == 0 || s[i - 1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                             (ch >= '0' && ch <= '9');
                if (!alnum && !(ch == '-' && label > 0))
                        return false;
                label++;
        }
        return label > 0 && s[n - 1] != '-';
}

static void parse_dns(struct guest_cmdline *c, const char *val)
{
        char buf[WORD_MAX];
        snprintf(buf, sizeof(buf), "%s", val);
        c->n_dns = 0;
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                struct in_addr a;
                if (!parse_ipv4(tok, &a)) {
                        warn(c, "capsule.dns: \"%.40s\" is not an IPv4 address, skipped", tok);
                        continue;
                }
                if (c->n_dns == GUEST_CMDLINE_MAX_DNS) {
                        warn(c, "capsule.dns: more than %d servers, \"%.40s\" skipped",
                             GUEST_CMDLINE_MAX_DNS, tok);
                        continue;
                }
                c->dns[c->n_dns++] = a;
        }
}

static void parse_key(struct guest_cmdline *c, const char *key, const char *val)
{
        if (strcmp(key, "capsule.probe") == 0) {
                if (!val || strcmp(val, "1") == 0)
                        c->probe = true;
                else if (strcmp(val, "0") != 0)
                        warn(c, "capsule.probe=\"%.40s\": expected 0 or 1, ignored", val);
                return;
        }
        if (strncmp(key, "capsule.", 8) != 0)
                return;
        if (strcmp(key, "capsule.ip") == 0 || strcmp(key, "capsule.gw") == 0 ||
            strcmp(key, "capsule.dns") == 0 || strcmp(key, "capsule.hostname") == 0) {
                if (!val || !*val) {
                        warn(c, "%s: missing value, ignored", key);
                        return;
                }
        } else {
                return; /* unknown capsule.* keys: newer hosts may add some */
        }
        if (strcmp(key, "capsule.ip") == 0) {
                c->has_ip = parse_cidr(val, &c->ip, &c->prefix);
                if (!c->has_ip)
                        warn(c, "capsule.ip=\"%.40s\": not an IPv4 address/prefix, ignored", val);
        } else if (strcmp(key, "capsule.gw") == 0) {
                c->has_gw = parse_ipv4(val, &c->gw);
                if (!c->has_gw)
                        warn(c, "capsule.gw=\"%.40s\": not an IPv4 address, ignored", val);
        } else if (strcmp(key, "capsule.dns") == 0) {
                parse_dns(c, val);
        } else if (hostname_ok(val)) {
                snprintf(c->hostname, sizeof(c->hostname), "%s", val);
        } else {
                warn(c, "capsule.hostname=\"%.40s\": not a valid host name, ignored", val);
        }
}

void guest_cmdline_parse(const char *text, size_t len, struct guest_cmdline *out)
{
        memset(out, 0, sizeof(*out));
        size_t i = 0;
        while (i < len) {
                while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' ||
                                   text[i] == '\r' || text[i] == '\0'))
                        i++;
                if (i >= len)
                        break;
                /* one word; quotes group and are removed; overlong words are cut (and then
                 * usually rejected as a bad value) */
                char word[WORD_MAX];
                size_t w = 0;
                bool quoted = false;
                for (; i < len; i++) {
                        char ch = text[i];
                        if (ch == '"') {
                                quoted = !quoted;
                                continue;
                        }
                        if (!quoted && (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'))
                                break;
                        if (ch == '\0')
                                break;
                        if (w + 1 < sizeof(word))
                                word[w++] = ch;
                }
                word[w] = '\0';
                char *eq = strchr(word, '=');
                if (eq)
                        *eq = '\0';
                parse_key(out, word, eq ? eq + 1 : NULL);
        }
        if (out->has_gw && !out->has_ip)
                warn(out, "capsule.gw without capsule.ip: no network configured");
}

void guest_cmdline_ip_string(const struct guest_cmdline *c, char *buf, size_t size)
{
        if (!c->has_ip) {
                if (size)
                        buf[0] = '\0';
                return;
        }
        char a[INET_ADDRSTRLEN];
        if (!inet_ntop(AF_INET, &c->ip, a, sizeof(a)))
                a[0] = '\0';
        snprintf(buf, size, "%s/%u", a, c->prefix);
}
