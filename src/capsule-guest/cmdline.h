/* The kernel command line keys capsule-guest reads (capsule.ip, capsule.gw, capsule.dns,
 * capsule.hostname, capsule.probe), parsed into a plain struct. Pure logic, no I/O, so it is
 * unit-tested and fuzzed on the host. */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>

#define GUEST_CMDLINE_MAX_DNS 4
#define GUEST_CMDLINE_MAX_WARNINGS 8

struct guest_cmdline {
        bool probe;               /* capsule.probe=1: print the marker and power off */
        bool has_ip;              /* capsule.ip=A.B.C.D/N parsed */
        struct in_addr ip;
        unsigned prefix;          /* 0..32 */
        bool has_gw;
        struct in_addr gw;
        struct in_addr dns[GUEST_CMDLINE_MAX_DNS];
        size_t n_dns;
        char hostname[64];        /* "" = not given */
        /* One line per bad value ("capsule.ip=\"x\": not an IPv4 address/prefix, ignored");
         * the caller prints them on the console. */
        char warnings[GUEST_CMDLINE_MAX_WARNINGS][160];
        size_t n_warnings;
};

/* Parses a kernel command line (the contents of /proc/cmdline, len bytes, need not be
 * NUL-terminated). Words are separated by blanks; double quotes group blanks into a value
 * (`capsule.hostname="a b"` is one word, the quotes are dropped). Unknown keys are ignored; a bad
 * value is skipped with a warning. Never fails. */
void guest_cmdline_parse(const char *text, size_t len, struct guest_cmdline *out);

/* Formats ip/prefix as "10.88.0.5/16" into buf (empty when !has_ip). */
void guest_cmdline_ip_string(const struct guest_cmdline *c, char *buf, size_t size);
