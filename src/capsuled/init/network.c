/* Network bring-up by PID 1: the loopback interface, the hostname, and the configuration of the
 * DHCP client (dhcpcd, supervised by supervise.c). The machine config decides between DHCP and a
 * static address; both are applied by dhcpcd ("static" lines in its config), so PID 1 itself never
 * touches a packet. /etc/resolv.conf comes from the machine config's dns list, or else from the
 * DHCP lease through capsule-dhcp-hook (run by dhcpcd, not by PID 1). */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../common/cleanup.h"
#include "../../common/config.h"
#include "../../common/log.h"
#include "init.h"

static int loopback_up(void)
{
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        struct ifreq ifr = {0};
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
        if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
                return -errno;
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
                return -errno;
        return 0;
}

static int write_file(const char *path, const char *text)
{
        char tmp[256];
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        size_t len = strlen(text);
        if (write(fd, text, len) != (ssize_t)len)
                return -EIO;
        if (rename(tmp, path) < 0)
                return -errno;
        return 0;
}

static void append(char *buf, size_t size, const char *fmt, const char *a)
{
        size_t used = strlen(buf);
        if (used < size)
                snprintf(buf + used, size - used, fmt, a);
}

static int write_dhcpcd_conf(const struct machine_config *mc)
{
        char conf[4096] =
            "# Written by capsuled init from the machine config; do not edit.\n"
            "allowinterfaces en* eth* wl*\n"
            /* no udev in the image: without nodev the udev plugin ignores every interface */
            "nodev\n"
            "hostname\n"
            "clientid\n"
            "persistent\n"
            "option rapid_commit\n"
            "option domain_name_servers, domain_name, domain_search, ntp_servers\n"
            "require dhcp_server_identifier\n"
            "noipv4ll\n"
            /* skip the 5 s ARP probe of an offered address: the DHCP server owns conflicts */
            "noarp\n"
            "slaac private\n";
        if (mc && !mc->dhcp && mc->address) {
                append(conf, sizeof(conf), "static ip_address=%s\n", mc->address);
                if (mc->gateway)
                        append(conf, sizeof(conf), "static routers=%s\n", mc->gateway);
                if (mc->n_dns) {
                        append(conf, sizeof(conf), "%s", "static domain_name_servers=");
                        for (size_t i = 0; i < mc->n_dns; i++)
                                append(conf, sizeof(conf), i ? " %s" : "%s", mc->dns[i]);
                        append(conf, sizeof(conf), "%s", "\n");
                }
        }
        return write_file("/run/capsule/dhcpcd.conf", conf);
}

static int write_resolv_conf(const struct machine_config *mc)
{
        if (!mc || !mc->n_dns)
                return 0;
        char text[1024] = "# Written by capsuled init from the machine config.\n";
        for (size_t i = 0; i < mc->n_dns; i++)
                append(text, sizeof(text), "nameserver %s\n", mc->dns[i]);
        return write_file("/etc/resolv.conf", text);
}

/* chronyd's config from time.servers (absent: the public pool plus the NTP servers the DHCP lease
 * offers, which capsule-dhcp-hook writes into the sourcedir; []: no NTP, no file, and the chronyd
 * service is not started). chronyd steps the clock whatever the offset (a board with a
 * dead RTC battery boots in 1970 or 2020, and TLS then refuses every certificate), keeps the
 * RTC in sync, and has no command port. Its drift file lives on /perm, owned by _chrony. */
static int write_chrony_conf(const struct machine_config *mc)
{
        unlink(INIT_CHRONY_CONF);
        if (mc && mc->ntp_servers_set && mc->n_ntp_servers == 0)
                return 0;
        char conf[4096] = "# Written by capsuled init from the machine config; do not edit.\n";
        size_t n = strlen(conf);
        if (!mc || !mc->ntp_servers_set) {
                n += (size_t)snprintf(conf + n, sizeof(conf) - n, "pool %s iburst\nsourcedir %s\n",
                                      MACHINE_DEFAULT_NTP, INIT_CHRONY_SOURCES_DIR);
                mkdir_p(INIT_CHRONY_SOURCES_DIR, 0755);
        } else {
                for (size_t i = 0; i < mc->n_ntp_servers && n < sizeof(conf); i++) {
                        char host[256];
                        unsigned port;
                        if (ntp_server_split(mc->ntp_servers[i], host, sizeof(host), &port) < 0)
                                continue; /* the config parser refused these already */
                        n += (size_t)snprintf(conf + n, sizeof(conf) - n,
                                              "server %s iburst port %u\n", host, port);
                }
        }
        if (n < sizeof(conf))
                snprintf(conf + n, sizeof(conf) - n,
                         "makestep 1 -1\nrtcsync\ncmdport 0\n"
                         "driftfile " INIT_PERM_DIR "/chrony/drift\n"
                         "pidfile /run/capsule/chrony/chronyd.pid\n");
        if (n >= sizeof(conf))
                return -E2BIG;
        mkdir_p(INIT_PERM_DIR "/chrony", 0750);
        mkdir_p("/run/capsule/chrony", 0750);
        if (chown(INIT_PERM_DIR "/chrony", INIT_CHRONY_UID, INIT_CHRONY_UID) < 0 ||
            chown("/run/capsule/chrony", INIT_CHRONY_UID, INIT_CHRONY_UID) < 0)
                log_warn("network: chown chrony dirs: %s", strerror(errno));
        return write_file(INIT_CHRONY_CONF, conf);
}

int network_setup(void)
{
        int r = loopback_up();
        if (r < 0)
                log_warn("network: lo up: %s", strerror(-r));
        struct machine_config mc = {0};
        struct cap_error err = {0};
        bool have = machine_config_load(INIT_MACHINE_CONFIG, &mc, &err) == 0;
        if (!have)
                log_error("network: %s; using DHCP", err.msg);
        const char *host = have && mc.hostname ? mc.hostname : "capsule";
        if (sethostname(host, strlen(host)) < 0)
                log_warn("network: sethostname %s: %s", host, strerror(errno));
        if ((r = write_dhcpcd_conf(have ? &mc : NULL)) < 0)
                log_error("network: dhcpcd.conf: %s", strerror(-r));
        if ((r = write_resolv_conf(have ? &mc : NULL)) < 0)
                log_error("network: resolv.conf: %s", strerror(-r));
        if ((r = write_chrony_conf(have ? &mc : NULL)) < 0)
                log_error("network: chrony.conf: %s", strerror(-r));
        log_info("network: hostname %s, %s", host,
                 have && !mc.dhcp && mc.address ? "static address" : "DHCP");
        if (have)
                machine_config_free(&mc);
        return 0;
}
