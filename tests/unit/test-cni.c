/* Unit tests for the pure half of the CNI runner (src/capsuled/net/cni-json.c): the conflist,
 * per-plugin configs (prevResult, runtimeConfig.portMappings), result and error parsing, and
 * the iptables-save rule splitter used by teardown's sweep. */
#include <errno.h>
#include <stdlib.h>

#include <json-c/json.h>

#include "net/cni.h"
#include "test.h"

static struct cni_config cfg(void)
{
        return (struct cni_config){.plugin_dir = "/usr/lib/cni",
                                   .netns_dir = "/run/capsule/netns",
                                   .state_dir = "/perm/capsule/cni",
                                   .network_name = "capsule",
                                   .bridge = "capsule0",
                                   .subnet = "10.88.0.0/16"};
}

static const char *jget(struct json_object *o, const char *path)
{
        /* "a.b.c" lookups for strings/ints rendered as text */
        static char buf[256];
        char copy[128];
        snprintf(copy, sizeof(copy), "%s", path);
        struct json_object *cur = o;
        for (char *save = NULL, *k = strtok_r(copy, ".", &save); k;
             k = strtok_r(NULL, ".", &save)) {
                if (json_object_is_type(cur, json_type_array))
                        cur = json_object_array_get_idx(cur, (size_t)atoi(k));
                else if (!json_object_object_get_ex(cur, k, &cur))
                        return NULL;
                if (!cur)
                        return NULL;
        }
        snprintf(buf, sizeof(buf), "%s", json_object_get_string(cur));
        return buf;
}

TEST(conflist)
{
        struct cni_config c = cfg();
        char *list = cni_conflist_json(&c);
        struct json_object *o = json_tokener_parse(list);
        CHECK(o != NULL);
        CHECK_STR_EQ(jget(o, "cniVersion"), "1.0.0");
        CHECK_STR_EQ(jget(o, "name"), "capsule");
        CHECK_STR_EQ(jget(o, "plugins.0.type"), "bridge");
        CHECK_STR_EQ(jget(o, "plugins.0.bridge"), "capsule0");
        CHECK_STR_EQ(jget(o, "plugins.0.isGateway"), "true");
        CHECK_STR_EQ(jget(o, "plugins.0.ipMasq"), "false");
        CHECK_STR_EQ(jget(o, "plugins.0.ipam.type"), "host-local");
        CHECK_STR_EQ(jget(o, "plugins.0.ipam.ranges.0.0.subnet"), "10.88.0.0/16");
        CHECK_STR_EQ(jget(o, "plugins.0.ipam.dataDir"), "/perm/capsule/cni/ipam");
        CHECK_STR_EQ(jget(o, "plugins.1.type"), "portmap");
        CHECK_STR_EQ(jget(o, "plugins.1.capabilities.portMappings"), "true");
        CHECK(cni_plugin_count(list) == 2);
        char *t = cni_plugin_type(list, 1);
        CHECK_STR_EQ(t, "portmap");
        free(t);
        CHECK(cni_plugin_type(list, 2) == NULL);
        json_object_put(o);
        free(list);
}

TEST(plugin_config)
{
        struct cni_config c = cfg();
        char *list = cni_conflist_json(&c);
        struct cni_port ports[] = {{8080, 80, NULL, NULL}, {5353, 53, "udp", "192.168.1.2"}};
        /* the bridge: no prevResult, no runtimeConfig (it declares no capability) */
        char *b = cni_plugin_config(list, 0, NULL, ports, 2);
        struct json_object *o = json_tokener_parse(b);
        CHECK_STR_EQ(jget(o, "type"), "bridge");
        CHECK_STR_EQ(jget(o, "name"), "capsule");
        CHECK_STR_EQ(jget(o, "cniVersion"), "1.0.0");
        CHECK(jget(o, "prevResult") == NULL);
        CHECK(jget(o, "runtimeConfig") == NULL);
        json_object_put(o);
        free(b);
        /* portmap: prevResult and the port mappings */
        const char *prev = "{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.88.0.5/16\"}]}";
        char *p = cni_plugin_config(list, 1, prev, ports, 2);
        o = json_tokener_parse(p);
        CHECK_STR_EQ(jget(o, "prevResult.ips.0.address"), "10.88.0.5/16");
        CHECK_STR_EQ(jget(o, "runtimeConfig.portMappings.0.hostPort"), "8080");
        CHECK_STR_EQ(jget(o, "runtimeConfig.portMappings.0.containerPort"), "80");
        CHECK_STR_EQ(jget(o, "runtimeConfig.portMappings.0.protocol"), "tcp");
        CHECK(jget(o, "runtimeConfig.portMappings.0.hostIP") == NULL);
        CHECK_STR_EQ(jget(o, "runtimeConfig.portMappings.1.protocol"), "udp");
        CHECK_STR_EQ(jget(o, "runtimeConfig.portMappings.1.hostIP"), "192.168.1.2");
        json_object_put(o);
        free(p);
        /* bad inputs */
        CHECK(cni_plugin_config(list, 5, NULL, NULL, 0) == NULL);
        CHECK(cni_plugin_config(list, 1, "{not json", NULL, 0) == NULL);
        CHECK(cni_plugin_config("[]", 0, NULL, NULL, 0) == NULL);
        free(list);
}

TEST(result_parse)
{
        const char *r =
            "{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"capsule0\",\"mac\":\"aa:aa:aa:"
            "aa:aa:aa\"},"
            "{\"name\":\"veth1\",\"mac\":\"bb:bb:bb:bb:bb:bb\"},{\"name\":\"eth0\",\"mac\":\"cc:cc:"
            "cc:cc:cc:cc\","
            "\"sandbox\":\"/run/capsule/netns/"
            "web\"}],\"ips\":[{\"interface\":2,\"address\":\"fd00::5/64\"},"
            "{\"interface\":2,\"address\":\"10.88.0.7/16\",\"gateway\":\"10.88.0.1\"}]}";
        struct cni_attachment a = {0};
        struct cap_error err = {0};
        CHECK(cni_result_parse(r, &a, &err) == 0);
        CHECK_STR_EQ(a.ip, "10.88.0.7");
        CHECK(a.prefix_len == 16);
        CHECK_STR_EQ(a.gateway, "10.88.0.1");
        CHECK_STR_EQ(a.mac, "cc:cc:cc:cc:cc:cc");
        cni_attachment_free(&a);
        /* no interface index: first IPv4, no MAC */
        CHECK(cni_result_parse("{\"ips\":[{\"address\":\"10.1.2.3/24\"}]}", &a, &err) == 0);
        CHECK_STR_EQ(a.ip, "10.1.2.3");
        CHECK(a.prefix_len == 24 && a.gateway == NULL && a.mac == NULL);
        cni_attachment_free(&a);
        /* interface index out of range is ignored, not trusted */
        CHECK(cni_result_parse(
                  "{\"interfaces\":[],\"ips\":[{\"interface\":7,\"address\":\"10.1.2.3/24\"}]}", &a,
                  &err) == 0);
        cni_attachment_free(&a);
        static const char *const bad[] = {"",
                                          "{",
                                          "[]",
                                          "{\"ips\":[]}",
                                          "{\"ips\":[{\"address\":\"fd00::1/64\"}]}",
                                          "{\"ips\":[{\"address\":\"nonsense\"}]}",
                                          "{\"ips\":{}}",
                                          "{\"ips\":[{\"address\":5}]}"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                cap_error_clear(&err);
                CHECK(cni_result_parse(bad[i], &a, &err) == -EINVAL);
                CHECK_CONTAINS(err.msg, "no IPv4 address");
        }
}

TEST(error_parse)
{
        struct cap_error err = {0};
        cni_error_parse("bridge", 1,
                        "{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"failed to allocate\","
                        "\"details\":\"range is full\"}",
                        "", &err);
        CHECK_STR_EQ(err.msg, "CNI plugin bridge: failed to allocate: range is full (code 11)");
        cni_error_parse("portmap", 2, "garbage", "panic: boom", &err);
        CHECK_STR_EQ(err.msg, "CNI plugin portmap: exit 2: panic: boom");
        cni_error_parse("x", 3, NULL, NULL, &err);
        CHECK_STR_EQ(err.msg, "CNI plugin x: exit 3: ");
}

TEST(split_rule)
{
        char **w = NULL;
        int n = cni_split_rule(
            "-A POSTROUTING -s 10.88.0.2/32 -m comment --comment \"name: \\\"capsule\\\" id: "
            "\\\"abc\\\"\" -j CNI-c49bda97e71a44007f522092",
            &w);
        CHECK(n == 10);
        if (n == 10) {
                CHECK_STR_EQ(w[0], "-A");
                CHECK_STR_EQ(w[7], "name: \"capsule\" id: \"abc\"");
                CHECK_STR_EQ(w[9], "CNI-c49bda97e71a44007f522092");
                CHECK(w[10] == NULL);
        }
        cni_words_free(w);
        CHECK(cni_split_rule("  ", &w) == 0);
        cni_words_free(w);
        CHECK(cni_split_rule("-A X --comment \"unterminated", &w) == -EINVAL);
}

TEST(etc_files)
{
        char *r = cni_resolv_conf("# comment\nnameserver 127.0.0.53\nnameserver 192.168.1.1\n"
                                  "search lan\noptions edns0\nsortlist 1.2.3.4\nnameserver ::1\n");
        CHECK_STR_EQ(r, "nameserver 192.168.1.1\nsearch lan\noptions edns0\n");
        free(r);
        r = cni_resolv_conf("nameserver 127.0.0.53\nsearch lan");
        CHECK_STR_EQ(r, "search lan\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        free(r);
        r = cni_resolv_conf("");
        CHECK_STR_EQ(r, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        free(r);
        char *h = cni_hosts_file("web", "10.88.0.5");
        CHECK_STR_EQ(
            h, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.88.0.5\tweb\n");
        free(h);
        h = cni_hosts_file("web", NULL);
        CHECK_STR_EQ(h, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        free(h);
}

int main(void)
{
        RUN(conflist);
        RUN(plugin_config);
        RUN(result_parse);
        RUN(error_parse);
        RUN(split_rule);
        RUN(etc_files);
        return test_summary();
}
