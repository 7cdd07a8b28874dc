/* Guest networking from the kernel command line, with rtnetlink (NETLINK_ROUTE) and no external
 * tools: lo up; with capsule.ip, the first non-lo interface (eth0) gets the address and goes up,
 * and capsule.gw becomes the default route. PID 1 only. */
#include <errno.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "guest.h"

struct nl_req {
        struct nlmsghdr nh;
        union {
                struct ifinfomsg ifi;
                struct ifaddrmsg ifa;
                struct rtmsg rt;
        };
        char attrs[256];
};

static void nl_attr(struct nl_req *q, unsigned short type, const void *data, size_t len)
{
        struct rtattr *a = (struct rtattr *)((char *)q + NLMSG_ALIGN(q->nh.nlmsg_len));
        a->rta_type = type;
        a->rta_len = (unsigned short)RTA_LENGTH(len);
        memcpy(RTA_DATA(a), data, len);
        q->nh.nlmsg_len = NLMSG_ALIGN(q->nh.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Sends q and waits for its ACK; returns 0 or the kernel's negative errno. */
static int nl_call(struct nl_req *q, const char *what, struct cap_error *err)
{
        _cleanup_close_ int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (fd < 0)
                return cap_error_errno(err, -errno, "%s: netlink socket", what);
        struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
        q->nh.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
        q->nh.nlmsg_seq = 1;
        if (sendto(fd, q, q->nh.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return cap_error_errno(err, -errno, "%s: netlink send", what);
        char buf[4096];
        for (;;) {
                ssize_t k = recv(fd, buf, sizeof(buf), 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return cap_error_errno(err, -errno, "%s: netlink receive", what);
                for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)k);
                     h = NLMSG_NEXT(h, k)) {
                        if (h->nlmsg_type != NLMSG_ERROR)
                                continue;
                        const struct nlmsgerr *e = NLMSG_DATA(h);
                        if (e->error == 0)
                                return 0;
                        return cap_error_errno(err, e->error, "%s", what);
                }
        }
}

static int link_up(int ifindex, const char *name, struct cap_error *err)
{
        struct nl_req q = {0};
        q.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
        q.nh.nlmsg_type = RTM_NEWLINK;
        q.ifi.ifi_family = AF_UNSPEC;
        q.ifi.ifi_index = ifindex;
        q.ifi.ifi_flags = IFF_UP;
        q.ifi.ifi_change = IFF_UP;
        char what[64];
        snprintf(what, sizeof(what), "set %s up", name);
        return nl_call(&q, what, err);
}

static int addr_add(int ifindex, const char *name, struct in_addr ip, unsigned prefix,
                    struct cap_error *err)
{
        struct nl_req q = {0};
        q.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
        q.nh.nlmsg_type = RTM_NEWADDR;
        q.nh.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
        q.ifa.ifa_family = AF_INET;
        q.ifa.ifa_prefixlen = (unsigned char)prefix;
        q.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
        q.ifa.ifa_index = (unsigned)ifindex;
        nl_attr(&q, IFA_LOCAL, &ip, sizeof(ip));
        nl_attr(&q, IFA_ADDRESS, &ip, sizeof(ip));
        if (prefix < 31) {
                uint32_t mask = prefix ? htonl(~0u << (32 - prefix)) : 0;
                struct in_addr brd = {.s_addr = ip.s_addr | ~mask};
                nl_attr(&q, IFA_BROADCAST, &brd, sizeof(brd));
        }
        char what[64];
        snprintf(what, sizeof(what), "add address to %s", name);
        return nl_call(&q, what, err);
}

static int route_default(int ifindex, struct in_addr gw, struct cap_error *err)
{
        struct nl_req q = {0};
        q.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
        q.nh.nlmsg_type = RTM_NEWROUTE;
        q.nh.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
        q.rt.rtm_family = AF_INET;
        q.rt.rtm_table = RT_TABLE_MAIN;
        q.rt.rtm_protocol = RTPROT_BOOT;
        q.rt.rtm_scope = RT_SCOPE_UNIVERSE;
        q.rt.rtm_type = RTN_UNICAST;
        nl_attr(&q, RTA_GATEWAY, &gw, sizeof(gw));
        uint32_t oif = (uint32_t)ifindex;
        nl_attr(&q, RTA_OIF, &oif, sizeof(oif));
        return nl_call(&q, "add default route", err);
}

/* The first interface that is not lo; virtio_net may still be probing, so wait up to 5 s. */
static int first_ether(char name[IF_NAMESIZE], int *ifindex, struct cap_error *err)
{
        for (int tries = 0; tries < 50; tries++) {
                struct if_nameindex *all = if_nameindex();
                if (!all)
                        return cap_error_errno(err, -errno, "list network interfaces");
                int found = 0;
                for (struct if_nameindex *i = all; i->if_index; i++) {
                        if (strcmp(i->if_name, "lo") == 0)
                                continue;
                        snprintf(name, IF_NAMESIZE, "%s", i->if_name);
                        *ifindex = (int)i->if_index;
                        found = 1;
                        break;
                }
                if_freenameindex(all);
                if (found)
                        return 0;
                struct timespec ts = {.tv_nsec = 100000000};
                nanosleep(&ts, NULL);
        }
        return cap_error_set(err, -ENODEV, CAP_UNAVAILABLE,
                             "capsule.ip is set but there is no network interface besides lo");
}

int guest_network_setup(const struct guest_cmdline *c, struct cap_error *err)
{
        int lo = (int)if_nametoindex("lo");
        if (lo == 0)
                return cap_error_errno(err, -errno, "find lo");
        int r = link_up(lo, "lo", err);
        if (r < 0 || !c->has_ip)
                return r;
        char name[IF_NAMESIZE];
        int ifindex = 0;
        if ((r = first_ether(name, &ifindex, err)) < 0 ||
            (r = addr_add(ifindex, name, c->ip, c->prefix, err)) < 0 ||
            (r = link_up(ifindex, name, err)) < 0)
                return r;
        if (c->has_gw && (r = route_default(ifindex, c->gw, err)) < 0)
                return r;
        char ip[32];
        guest_cmdline_ip_string(c, ip, sizeof(ip));
        log_info("network: %s %s%s", name, ip, c->has_gw ? " with a default route" : "");
        return 0;
}
