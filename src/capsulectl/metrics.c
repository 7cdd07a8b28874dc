/* `capsulectl metrics [PREFIX]`: the capsule's Prometheus page (System.Metrics), the same text
 * its metrics endpoint serves at GET /metrics, optionally only the families whose name starts
 * with PREFIX. Through the gRPC API rather than the endpoint itself: it works with the context's
 * endpoint and identity as every verb does (also through a forwarded API port, with several
 * capsules, and when the endpoint is off or plain HTTP). */
#include <stdio.h>
#include <string.h>

#include "capsule/v1/system.pb-c.h"
#include "capsulectl.h"
#include "rpc/rpc.h"

static const char usage[] =
    "usage: capsulectl metrics [PREFIX]\n"
    "\n"
    "Prints the capsule's figures in the Prometheus text format: the page its metrics endpoint\n"
    "serves at https://CAPSULE:50001/metrics (workloads' state, restarts, last exit code, CPU and\n"
    "memory; volumes' size and use; images; API calls and errors by method; boot time). With\n"
    "PREFIX, only the metric families whose name starts with it (HELP and TYPE lines included).\n"
    "-o is ignored: the output is always the exposition text.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl metrics\n"
    "  capsulectl metrics capsule_workload_memory\n"
    "  capsulectl metrics | grep 'workload=\"web\"'\n";

/* The metric name a line is about: after "# HELP " / "# TYPE ", else the line's start. */
static const char *line_metric(const char *line)
{
        if (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0)
                return line + 7;
        return line;
}

int cmd_metrics(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, usage))
                return CTL_EXIT_OK;
        if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
                fprintf(ctl->err, "capsulectl metrics: unexpected argument \"%s\"\n%s",
                        argv[argc - 1], usage);
                return CTL_EXIT_USAGE;
        }
        const char *prefix = argc == 2 ? argv[1] : NULL;
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        Capsule__V1__MetricsRequest req = CAPSULE__V1__METRICS_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(c, "/capsule.v1.System/Metrics", &req.base,
                      &capsule__v1__metrics_response__descriptor, &resp, ctl->timeout_ms,
                      &err) < 0) {
                ctl_print_error(ctl, "metrics", &err);
                return CTL_EXIT_ERROR;
        }
        const char *text = ((Capsule__V1__MetricsResponse *)resp)->text;
        if (!prefix) {
                fputs(text, ctl->out);
        } else {
                size_t pl = strlen(prefix);
                for (const char *l = text; *l;) {
                        const char *nl = strchr(l, '\n');
                        size_t len = nl ? (size_t)(nl - l) + 1 : strlen(l);
                        if (strncmp(line_metric(l), prefix, pl) == 0)
                                fwrite(l, 1, len, ctl->out);
                        l += len;
                }
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}
