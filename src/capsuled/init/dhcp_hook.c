/* capsule-dhcp-hook: the script dhcpcd runs on every lease event (dhcpcd -c). It replaces Debian's
 * shell hooks (the image has no shell): on a new lease it writes /etc/resolv.conf from the name
 * servers and search domains dhcpcd passes in its environment, unless the machine config set DNS
 * servers statically (then PID 1 wrote resolv.conf and this hook leaves it alone).
 * It runs as a child of dhcpcd, so network-derived strings never reach PID 1. Every value is
 * validated: addresses with inet_pton, domains as DNS names. */
#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
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

/* Appends the valid space-separated words of list, each as "<prefix><word><suffix>". */
static void add_words(FILE *f, const char *list, const char *prefix, const char *suffix,
                      bool (*valid)(const char *), int max)
{
        if (!list)
                return;
        char copy[1024];
        snprintf(copy, sizeof(copy), "%s", list);
        char *save = NULL;
        int n = 0;
        for (char *w = strtok_r(copy, " ", &save); w && n < max; w = strtok_r(NULL, " ", &save))
                if (valid(w)) {
                        fprintf(f, "%s%s%s", prefix, w, suffix);
                        n++;
                }
}

int main(void)
{
        const char *reason = getenv("reason");
        if (!reason || (strcmp(reason, "BOUND") && strcmp(reason, "RENEW") &&
                        strcmp(reason, "REBIND") && strcmp(reason, "REBOOT")))
                return 0;
        /* a static DNS configuration from the machine config wins */
        char head[128] = "";
        FILE *cur = fopen("/etc/resolv.conf", "re");
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
        FILE *f = fopen("/etc/resolv.conf.dhcp", "we");
        if (!f)
                return 1;
        fprintf(f, "# Written by capsule-dhcp-hook from the DHCP lease on %s.\n",
                getenv("interface") ? getenv("interface") : "?");
        add_words(f, servers, "nameserver ", "\n", is_address, 3);
        const char *search = getenv("new_domain_search") ? getenv("new_domain_search")
                                                         : getenv("new_domain_name");
        if (search) {
                fputs("search", f);
                add_words(f, search, " ", "", is_domain, 6);
                fputc('\n', f);
        }
        if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
                fclose(f);
                return 1;
        }
        fclose(f);
        return rename("/etc/resolv.conf.dhcp", "/etc/resolv.conf") == 0 ? 0 : 1;
}
