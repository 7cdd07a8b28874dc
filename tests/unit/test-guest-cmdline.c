/* capsule-guest's kernel command line parser (src/capsule-guest/cmdline.c). */
#include <arpa/inet.h>
#include <string.h>

#include "cmdline.h"
#include "test.h"

static struct guest_cmdline parse(const char *s)
{
        struct guest_cmdline c;
        guest_cmdline_parse(s, strlen(s), &c);
        return c;
}

static const char *ip(struct in_addr a)
{
        static char buf[INET_ADDRSTRLEN];
        return inet_ntop(AF_INET, &a, buf, sizeof(buf));
}

TEST(full_line)
{
        struct guest_cmdline c =
                parse("console=ttyS0 quiet capsule.ip=10.88.0.5/16 capsule.gw=10.88.0.1 "
                      "capsule.dns=10.88.0.1,1.1.1.1 capsule.hostname=web\n");
        CHECK(!c.probe);
        CHECK(c.has_ip);
        CHECK_STR_EQ(ip(c.ip), "10.88.0.5");
        CHECK(c.prefix == 16);
        CHECK(c.has_gw);
        CHECK_STR_EQ(ip(c.gw), "10.88.0.1");
        CHECK(c.n_dns == 2);
        CHECK_STR_EQ(ip(c.dns[1]), "1.1.1.1");
        CHECK_STR_EQ(c.hostname, "web");
        CHECK(c.n_warnings == 0);
        char buf[32];
        guest_cmdline_ip_string(&c, buf, sizeof(buf));
        CHECK_STR_EQ(buf, "10.88.0.5/16");
}

TEST(empty_and_missing)
{
        struct guest_cmdline c = parse("");
        CHECK(!c.has_ip && !c.has_gw && c.n_dns == 0 && !c.probe && c.hostname[0] == '\0');
        char buf[32] = "x";
        guest_cmdline_ip_string(&c, buf, sizeof(buf));
        CHECK_STR_EQ(buf, "");
        c = parse("capsule.ip= capsule.hostname");
        CHECK(!c.has_ip);
        CHECK(c.n_warnings == 2);
        CHECK_CONTAINS(c.warnings[0], "capsule.ip: missing value");
}

TEST(probe)
{
        CHECK(parse("capsule.probe=1").probe);
        CHECK(parse("quiet capsule.probe").probe);
        CHECK(!parse("capsule.probe=0").probe);
        struct guest_cmdline c = parse("capsule.probe=yes");
        CHECK(!c.probe);
        CHECK_CONTAINS(c.warnings[0], "capsule.probe");
        CHECK(!parse("xcapsule.probe=1").probe);
}

TEST(quoted_values)
{
        struct guest_cmdline c = parse("a=\"x y z\" capsule.hostname=\"web\" "
                                       "\"capsule.dns=9.9.9.9\"");
        CHECK_STR_EQ(c.hostname, "web");
        CHECK(c.n_dns == 1);
        CHECK_STR_EQ(ip(c.dns[0]), "9.9.9.9");
        c = parse("capsule.hostname=\"a b\"");
        CHECK(c.hostname[0] == '\0');
        CHECK_CONTAINS(c.warnings[0], "not a valid host name");
        c = parse("capsule.ip=\"10.0.0.1/8"); /* unterminated quote runs to the end */
        CHECK(c.has_ip && c.prefix == 8);
}

TEST(bad_values)
{
        const char *bad[] = {"capsule.ip=10.0.0.1/33", "capsule.ip=10.0.0/8", "capsule.ip=x/8",
                             "capsule.ip=10.0.0.1/", "capsule.ip=10.0.0.1/1a",
                             "capsule.ip=::1/64"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct guest_cmdline c = parse(bad[i]);
                CHECK(!c.has_ip);
                CHECK(c.n_warnings == 1);
                CHECK_CONTAINS(c.warnings[0], "not an IPv4 address/prefix");
        }
        struct guest_cmdline c = parse("capsule.ip=10.1.2.3 capsule.gw=nope");
        CHECK(c.has_ip && c.prefix == 32);
        CHECK(!c.has_gw);
        CHECK_CONTAINS(c.warnings[0], "capsule.gw=\"nope\"");
        c = parse("capsule.dns=1.1.1.1,bad,8.8.8.8,1.0.0.1,9.9.9.9,4.4.4.4");
        CHECK(c.n_dns == 4);
        CHECK(c.n_warnings == 2);
        c = parse("capsule.hostname=-web capsule.gw=10.0.0.1");
        CHECK(c.hostname[0] == '\0');
        CHECK_CONTAINS(c.warnings[1], "capsule.gw without capsule.ip");
}

TEST(unknown_keys_and_odd_bytes)
{
        const char text[] = "capsule.future=1 root=/dev/vda\0capsule.hostname=h1\t\r\n";
        struct guest_cmdline c;
        guest_cmdline_parse(text, sizeof(text) - 1, &c);
        CHECK(c.n_warnings == 0);
        CHECK_STR_EQ(c.hostname, "h1");
        char big[2000];
        memset(big, 'a', sizeof(big));
        memcpy(big, "capsule.hostname=", 17);
        guest_cmdline_parse(big, sizeof(big), &c);
        CHECK(c.hostname[0] == '\0');
        CHECK(c.n_warnings == 1);
}

int main(void)
{
        RUN(full_line);
        RUN(empty_and_missing);
        RUN(probe);
        RUN(quoted_values);
        RUN(bad_values);
        RUN(unknown_keys_and_odd_bytes);
        return test_summary();
}
