/* capsule-dhcp-hook: the script dhcpcd runs on every lease event (dhcpcd -c). It replaces Debian's
 * shell hooks (the image has no shell): on a new lease it writes /etc/resolv.conf from the name
 * servers and search domains dhcpcd passes in its environment, unless the machine config set DNS
 * servers statically (then PID 1 wrote resolv.conf and this hook leaves it alone); and, when the
 * machine config sets no time.servers (PID 1 then made chrony's sourcedir), the lease's NTP
 * servers as chrony sources, restarting chronyd (supervised by PID 1) when they changed.
 * Test seam: CAPSULE_DHCP_HOOK_ROOT prefixes every path (tests/integration/test_dhcp_hook.py).
 * It runs as a child of dhcpcd, so network-derived strings never reach PID 1. Every value is
 * validated: addresses with inet_pton, domains as DNS names. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool is_address(const char *s)
{
        unsigned char buf[16];
        return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static bool is_domain(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 253)
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
                        return false;
        return true;
}

static const char *root(void)
{
        const char *r = getenv("CAPSULE_DHCP_HOOK_ROOT");
        return r ? r : "";
}

static void path(char *buf, size_t len, const char *p)
{
        snprintf(buf, len, "%s%s", root(), p);
}

/* Writes text to file atomically (temp file, fsync, rename). */
static int put(const char *file, const char *text)
{
        char tmp[4300];
        snprintf(tmp, sizeof(tmp), "%s.dhcp", file);
        FILE *f = fopen(tmp, "we");
        if (!f)
                return -1;
        fputs(text, f);
        if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
                fclose(f);
                unlink(tmp);
                return -1;
        }
        fclose(f);
        return rename(tmp, file) == 0 ? 0 : -1;
}

/* Appends the valid space-separated words of list to buf, each as "<prefix><word><suffix>". */
static void add_words(char *buf, size_t len, const char *list, const char *prefix, const char *suffix,
                      bool (*valid)(const char *), int max)
{
        char copy[1024];
        snprintf(copy, sizeof(copy), "%s", list);
        char *save = NULL;
        int n = 0;
        for (char *w = strtok_r(copy, " ", &save); w && n < max; w = strtok_r(NULL, " ", &save))
                if (valid(w)) {
                        size_t l = strlen(buf);
                        snprintf(buf + l, len - l, "%s%s%s", prefix, w, suffix);
                        n++;
                }
}

static int write_resolv(void)
{
        char resolv[4200];
        path(resolv, sizeof(resolv), "/etc/resolv.conf");
        /* a static DNS configuration from the machine config wins */
        char head[128] = "";
        FILE *cur = fopen(resolv, "re");
        if (cur) {
                if (!fgets(head, sizeof(head), cur))
                        head[0] = '\0';
                fclose(cur);
        }
        if (strstr(head, "from the machine config"))
                return 0;
        const char *servers = getenv("new_domain_name_servers");
        if (!servers)
                return 0;
        char text[2048];
        snprintf(text, sizeof(text), "# Written by capsule-dhcp-hook from the DHCP lease on %s.\n",
                 getenv("interface") ? getenv("interface") : "?");
        add_words(text, sizeof(text), servers, "nameserver ", "\n", is_address, 3);
        const char *search = getenv("new_domain_search") ? getenv("new_domain_search") : getenv("new_domain_name");
        if (search) {
                strncat(text, "search", sizeof(text) - strlen(text) - 1);
                add_words(text, sizeof(text), search, " ", "", is_domain, 6);
                strncat(text, "\n", sizeof(text) - strlen(text) - 1);
        }
        return put(resolv, text);
}

/* SIGTERM to chronyd (PID 1 starts it again, and it reads the sources anew), checked by name so
 * that a pidfile cannot aim the signal elsewhere. */
static void restart_chronyd(void)
{
        char pidfile[4200], buf[32] = "";
        path(pidfile, sizeof(pidfile), "/run/capsule/chrony/chronyd.pid");
        FILE *f = fopen(pidfile, "re");
        if (!f)
                return; /* not running (yet): it reads the sources when it starts */
        long pid = fgets(buf, sizeof(buf), f) ? strtol(buf, NULL, 10) : 0;
        fclose(f);
        if (pid <= 1)
                return;
        char comm[64], name[32] = "";
        snprintf(comm, sizeof(comm), "/proc/%ld/comm", pid);
        FILE *c = fopen(comm, "re");
        if (c) {
                if (!fgets(name, sizeof(name), c))
                        name[0] = '\0';
                fclose(c);
        }
        if (strcmp(name, "chronyd\n") == 0)
                kill((pid_t)pid, SIGTERM);
}

/* The lease's NTP servers as chrony sources, when chrony takes them (its sourcedir exists). */
static int write_ntp(void)
{
        char dir[4200], file[4300];
        path(dir, sizeof(dir), "/run/capsule/chrony/sources.d");
        if (access(dir, F_OK) != 0)
                return 0; /* time.servers is set in the machine config (or NTP is off) */
        snprintf(file, sizeof(file), "%s/dhcp.sources", dir);
        const char *servers = getenv("new_ntp_servers");
        char text[1024] = "";
        if (servers)
                add_words(text, sizeof(text), servers, "server ", " iburst\n", is_address, 4);
        char old[1024] = "";
        FILE *f = fopen(file, "re");
        if (f) {
                size_t n = fread(old, 1, sizeof(old) - 1, f);
                old[n] = '\0';
                fclose(f);
        }
        if (strcmp(old, text) == 0)
                return 0;
        if (!*text) {
                if (unlink(file) < 0 && errno != ENOENT)
                        return -1;
        } else if (put(file, text) < 0) {
                return -1;
        }
        restart_chronyd();
        return 0;
}

int main(void)
{
        const char *reason = getenv("reason");
        if (!reason || (strcmp(reason, "BOUND") && strcmp(reason, "RENEW") &&
                        strcmp(reason, "REBIND") && strcmp(reason, "REBOOT")))
                return 0;
        int rc = write_resolv() < 0 ? 1 : 0;
        if (write_ntp() < 0)
                rc = 1;
        return rc;
}
