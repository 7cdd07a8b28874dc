/* A microVM's network (see vmnet.h): rewires a workload's CNI namespace so that its address is
 * served by the VM behind a tap. rtnetlink requests are made on a thread of our own that joins
 * the namespace with setns(2), so no other thread of capsuled changes namespace. */
#include "vmnet.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h> /* before the linux/ headers */
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"

/* One rtnetlink request under construction (small: the largest carries a nested link kind). */
struct nlreq {
        struct nlmsghdr h;
        char buf[512];
};

static void *nl_tail(struct nlreq *r)
{
        return (char *)&r->h + NLMSG_ALIGN(r->h.nlmsg_len);
}

static struct rtattr *nl_attr(struct nlreq *r, unsigned short type, const void *data, size_t len)
{
        struct rtattr *a = nl_tail(r);
        a->rta_type = type;
        a->rta_len = RTA_LENGTH(len);
        if (len)
                memcpy(RTA_DATA(a), data, len);
        r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
        return a;
}

static void nl_nest_end(struct nlreq *r, struct rtattr *nest)
{
        nest->rta_len = (unsigned short)((char *)nl_tail(r) - (char *)nest);
}

/* Sends r and waits for its ack; -errno from the kernel's answer. */
static int nl_talk(int fd, struct nlreq *r)
{
        static const struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
        r->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
        r->h.nlmsg_seq = 1;
        if (sendto(fd, &r->h, r->h.nlmsg_len, 0, (const struct sockaddr *)&kernel, sizeof(kernel)) < 0)
                return -errno;
        char buf[4096];
        for (;;) {
                ssize_t n = recv(fd, buf, sizeof(buf), 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
                     h = NLMSG_NEXT(h, n)) {
                        if (h->nlmsg_type == NLMSG_ERROR)
                                return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
                }
        }
}

static void nl_link_req(struct nlreq *r, int type, int flags, int ifindex)
{
        memset(r, 0, sizeof(*r));
        r->h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
        r->h.nlmsg_type = (unsigned short)type;
        r->h.nlmsg_flags = (unsigned short)flags;
        struct ifinfomsg *ifi = NLMSG_DATA(&r->h);
        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = ifindex;
}

static int link_create_bridge(int fd, const char *name)
{
        struct nlreq r;
        nl_link_req(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0);
        nl_attr(&r, IFLA_IFNAME, name, strlen(name) + 1);
        struct rtattr *info = nl_attr(&r, IFLA_LINKINFO, NULL, 0);
        nl_attr(&r, IFLA_INFO_KIND, "bridge", strlen("bridge"));
        nl_nest_end(&r, info);
        int rc = nl_talk(fd, &r);
        return rc == -EEXIST ? 0 : rc;
}

/* Sets master (0: leave) and brings the link up. */
static int link_master_up(int fd, int ifindex, int master)
{
        struct nlreq r;
        nl_link_req(&r, RTM_NEWLINK, 0, ifindex);
        struct ifinfomsg *ifi = NLMSG_DATA(&r.h);
        ifi->ifi_flags = IFF_UP;
        ifi->ifi_change = IFF_UP;
        if (master > 0)
                nl_attr(&r, IFLA_MASTER, &master, sizeof(master));
        return nl_talk(fd, &r);
}

/* No MAC learning on the bridge port ifindex. CNI's bridge puts the workload's veth in hairpin
 * mode, so the VM's own broadcasts come back in through eth0: learning there would move the VM's
 * MAC to eth0 and black-hole traffic to it until the VM speaks again. With learning off on eth0,
 * br0 knows the VM only behind tap0, and floods the rest (one other port) out eth0. */
static int bridge_port_no_learning(int fd, int ifindex)
{
        struct nlreq r;
        nl_link_req(&r, RTM_SETLINK, 0, ifindex);
        ((struct ifinfomsg *)NLMSG_DATA(&r.h))->ifi_family = AF_BRIDGE;
        struct rtattr *pi = nl_attr(&r, IFLA_PROTINFO | NLA_F_NESTED, NULL, 0);
        uint8_t off = 0;
        nl_attr(&r, IFLA_BRPORT_LEARNING, &off, sizeof(off));
        nl_nest_end(&r, pi);
        return nl_talk(fd, &r);
}

static int addr_delete(int fd, int ifindex, struct in_addr ip, int prefix_len)
{
        struct nlreq r;
        memset(&r, 0, sizeof(r));
        r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
        r.h.nlmsg_type = RTM_DELADDR;
        struct ifaddrmsg *ifa = NLMSG_DATA(&r.h);
        ifa->ifa_family = AF_INET;
        ifa->ifa_prefixlen = (unsigned char)prefix_len;
        ifa->ifa_index = (unsigned)ifindex;
        nl_attr(&r, IFA_LOCAL, &ip, sizeof(ip));
        nl_attr(&r, IFA_ADDRESS, &ip, sizeof(ip));
        int rc = nl_talk(fd, &r);
        return rc == -EADDRNOTAVAIL ? 0 : rc;
}

/* A persistent tap (it outlives this fd; QEMU opens it again by name). */
static int tap_create(const char *name)
{
        _cleanup_close_ int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI};
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
        if (ioctl(fd, TUNSETIFF, &ifr) < 0)
                return errno == EBUSY ? 0 : -errno; /* EBUSY: QEMU has it open already */
        if (ioctl(fd, TUNSETPERSIST, 1) < 0)
                return -errno;
        return 0;
}

struct attach_job {
        const char *netns_path;
        struct in_addr ip;
        int prefix_len;
        struct cap_error err;
        int rc;
};

static int attach_in_netns(struct attach_job *j)
{
        struct cap_error *err = &j->err;
        _cleanup_close_ int ns = open(j->netns_path, O_RDONLY | O_CLOEXEC);
        if (ns < 0)
                return cap_error_errno(err, -errno, "open %s", j->netns_path);
        if (setns(ns, CLONE_NEWNET) < 0)
                return cap_error_errno(err, -errno, "setns %s", j->netns_path);
        _cleanup_close_ int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (fd < 0)
                return cap_error_errno(err, -errno, "netlink socket");
        int rc = link_create_bridge(fd, VMNET_BRIDGE);
        if (rc < 0)
                return cap_error_errno(err, rc, "create bridge %s", VMNET_BRIDGE);
        rc = tap_create(VMNET_TAP);
        if (rc < 0)
                return cap_error_errno(err, rc, "create tap %s (is the tun module loaded?)", VMNET_TAP);
        int br = (int)if_nametoindex(VMNET_BRIDGE), eth = (int)if_nametoindex("eth0"),
            tap = (int)if_nametoindex(VMNET_TAP);
        if (!br || !eth || !tap)
                return cap_error_set(err, -ENODEV, CAP_INTERNAL, "%s, eth0 or %s missing in %s",
                                     VMNET_BRIDGE, VMNET_TAP, j->netns_path);
        /* no IPv6 on the plumbing: a link-local address on br0 would send router solicitations
         * that the host bridge's hairpin port reflects back ("own address as source") */
        static const char *const quiet[] = {VMNET_BRIDGE, "eth0", VMNET_TAP};
        for (size_t i = 0; i < 3; i++) {
                char path[128];
                snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", quiet[i]);
                _cleanup_close_ int sfd = open(path, O_WRONLY | O_CLOEXEC);
                if (sfd >= 0 && write(sfd, "1", 1) < 0)
                        rc = 0; /* best effort: only noise if it stays */
        }
        if ((rc = addr_delete(fd, eth, j->ip, j->prefix_len)) < 0)
                return cap_error_errno(err, rc, "take the address off eth0");
        if ((rc = link_master_up(fd, eth, br)) < 0 || (rc = link_master_up(fd, tap, br)) < 0 ||
            (rc = link_master_up(fd, br, 0)) < 0)
                return cap_error_errno(err, rc, "join eth0 and %s to %s", VMNET_TAP, VMNET_BRIDGE);
        if ((rc = bridge_port_no_learning(fd, eth)) < 0)
                return cap_error_errno(err, rc, "turn off MAC learning on eth0");
        return 0;
}

static void *attach_thread(void *p)
{
        struct attach_job *j = p;
        j->rc = attach_in_netns(j);
        return NULL;
}

int vmnet_attach(const char *netns_path, const char *ip, int prefix_len, struct cap_error *err)
{
        struct attach_job j = {.netns_path = netns_path, .prefix_len = prefix_len};
        if (!ip || inet_pton(AF_INET, ip, &j.ip) != 1 || prefix_len < 1 || prefix_len > 32)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "vm network: bad address %s/%d", ip ? ip : "(none)", prefix_len);
        pthread_t t;
        int rc = pthread_create(&t, NULL, attach_thread, &j);
        if (rc)
                return cap_error_errno(err, -rc, "vm network: thread");
        pthread_join(t, NULL);
        if (j.rc < 0) {
                *err = j.err;
                return cap_error_prefix(err, "vm network");
        }
        return 0;
}

void vmnet_mac(const char *name, char *out)
{
        uint32_t h = 2166136261u; /* FNV-1a of the name: stable, spread */
        for (const unsigned char *p = (const unsigned char *)name; *p; p++)
                h = (h ^ *p) * 16777619u;
        snprintf(out, 18, "52:54:%02x:%02x:%02x:%02x", (h >> 24) & 0xff, (h >> 16) & 0xff,
                 (h >> 8) & 0xff, h & 0xff);
}
