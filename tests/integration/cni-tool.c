/* cni-tool: drives src/capsuled/net/cni.c from the command line for test_cni.py (real plugins,
 * real namespaces, real iptables), with every directory and the bridge/subnet configurable so a
 * test never touches what capsuled or another test uses.
 *
 *   cni-tool [--netns-dir D] [--state-dir D] [--bridge B] [--subnet CIDR] [--plugin-dir D]
 *            setup|check|teardown WORKLOAD CONTAINER_ID [HOSTPORT:CONTAINERPORT[/udp]...]
 *   cni-tool [options] vm-attach WORKLOAD CONTAINER_ID    (after setup: net/vmnet.c's rewiring)
 *
 * setup prints {"netns":..., "ip":..., "prefix":..., "gateway":..., "mac":..., "ms":...}. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/cni.h"
#include "net/vmnet.h"

static double now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"netns-dir", required_argument, NULL, 'n'},
            {"state-dir", required_argument, NULL, 's'},
            {"bridge", required_argument, NULL, 'b'},
            {"subnet", required_argument, NULL, 'S'},
            {"plugin-dir", required_argument, NULL, 'p'},
            {NULL, 0, NULL, 0},
        };
        struct cap_error err = {0};
        struct cni_config c;
        signal(SIGPIPE, SIG_IGN);
        if (cni_config_init(&c, "/tmp/cni-tool", false, &err) < 0)
                return 1;
        int o;
        char **slot;
        while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (o) {
                case 'n':
                        slot = &c.netns_dir;
                        break;
                case 's':
                        slot = &c.state_dir;
                        break;
                case 'b':
                        slot = &c.bridge;
                        break;
                case 'S':
                        slot = &c.subnet;
                        break;
                case 'p':
                        slot = &c.plugin_dir;
                        break;
                default:
                        return 2;
                }
                free(*slot);
                *slot = strdup(optarg);
        }
        if (argc - optind < 3) {
                fprintf(stderr, "usage: cni-tool [options] setup|check|teardown WORKLOAD "
                                "CONTAINER_ID [H:C[/udp]...]\n");
                return 2;
        }
        const char *cmd = argv[optind], *workload = argv[optind + 1], *id = argv[optind + 2];
        size_t n_ports = (size_t)(argc - optind - 3);
        struct cni_port *ports = calloc(n_ports + 1, sizeof(*ports));
        for (size_t i = 0; i < n_ports; i++) {
                const char *spec = argv[optind + 3 + (int)i];
                unsigned h, ct;
                if (sscanf(spec, "%u:%u", &h, &ct) != 2 || !h || !ct || h > 65535 || ct > 65535) {
                        fprintf(stderr, "cni-tool: bad port \"%s\"\n", spec);
                        return 2;
                }
                ports[i].host_port = (uint16_t)h;
                ports[i].container_port = (uint16_t)ct;
                ports[i].protocol = strstr(spec, "/udp") ? "udp" : "tcp";
        }
        int rc = 0;
        double t0 = now_ms();
        if (strcmp(cmd, "setup") == 0) {
                struct cni_attachment a;
                char *hosts = NULL, *resolv = NULL;
                if (cni_setup(&c, workload, id, ports, n_ports, &a, &err) < 0) {
                        rc = 1;
                } else {
                        double ms = now_ms() - t0;
                        if (cni_write_etc(&c, workload, a.ip, &hosts, &resolv, &err) < 0)
                                rc = 1;
                        else
                                printf("{\"netns\":\"%s\",\"ip\":\"%s\",\"prefix\":%d,"
                                       "\"gateway\":\"%s\",\"mac\":\"%s\",\"hosts\":\"%s\","
                                       "\"resolv\":\"%s\",\"ms\":%.1f}\n",
                                       a.netns_path, a.ip, a.prefix_len, a.gateway ? a.gateway : "",
                                       a.mac ? a.mac : "", hosts, resolv, ms);
                        cni_attachment_free(&a);
                        free(hosts);
                        free(resolv);
                }
        } else if (strcmp(cmd, "vm-attach") == 0) {
                struct cni_attachment a;
                if (cni_setup(&c, workload, id, NULL, 0, &a, &err) < 0) {
                        rc = 1;
                } else {
                        if (vmnet_attach(a.netns_path, a.ip, a.prefix_len, &err) < 0)
                                rc = 1;
                        else
                                printf("{\"netns\":\"%s\",\"ip\":\"%s\"}\n", a.netns_path, a.ip);
                        cni_attachment_free(&a);
                }
        } else if (strcmp(cmd, "check") == 0) {
                rc = cni_check(&c, workload, id, &err) < 0;
        } else if (strcmp(cmd, "teardown") == 0) {
                rc = cni_teardown(&c, workload, id, &err) < 0;
                if (!rc)
                        printf("{\"ms\":%.1f}\n", now_ms() - t0);
        } else {
                fprintf(stderr, "cni-tool: unknown command %s\n", cmd);
                rc = 2;
        }
        if (rc == 1)
                fprintf(stderr, "cni-tool: %s\n", err.msg);
        free(ports);
        cni_config_free(&c);
        return rc;
}
