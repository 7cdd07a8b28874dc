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
                "option domain_name_servers, domain_name, domain_search\n"
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
        log_info("network: hostname %s, %s", host,
                 have && !mc.dhcp && mc.address ? "static address" : "DHCP");
        if (have)
                machine_config_free(&mc);
        return 0;
}
