/* capsuled-serve: every role of capsuled but PID 1, with the heavy libraries (main.c execs it).
 *   - `serve` (control plane, src/capsuled/serve/): the gRPC API, store, reconciler, drivers.
 *     PID 1 starts `capsuled serve` as a supervised child; on a development host it runs alone
 *     ("host mode").
 *   - `log-writer`, `probe-accel`, `check-config FILE` (PID 1 validates an ESP override with it:
 *     the checks that need OpenSSL are not in PID 1). */
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "build-id.h"
#include "capsuled.h"
#include "common/config.h"
#include "logs/logs.h"
#include "microvm/accel.h"

static void usage(FILE *f)
{
        fputs(CAPSULED_USAGE, f);
}

/* capsuled check-config FILE: the whole machine config validation, for PID 1. */
static int check_config_main(int argc, char **argv)
{
        if (argc != 2) {
                fprintf(stderr, "usage: capsuled check-config FILE\n");
                return 2;
        }
        struct machine_config mc;
        struct cap_error err = {0};
        if (machine_config_load(argv[1], &mc, &err) < 0) {
                printf("%s\n", err.msg);
                return 1;
        }
        machine_config_free(&mc);
        return 0;
}

int main(int argc, char **argv)
{
        if (getpid() == 1) {
                fprintf(stderr, "capsuled-serve: not PID 1's program (that is capsuled)\n");
                return 2;
        }
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (strcmp(argv[1], "serve") == 0) {
                /* glibc gives each thread that allocates an arena of its own (up to 8 per core):
                 * serve's gRPC, handler and stopper threads kept ~3 MB more resident than with
                 * two (measured in host mode, 20 workloads, after a push and 40 parallel gets:
                 * 36.7 -> 33.0 MB, 35.1 -> 32.1 MB) */
                mallopt(M_ARENA_MAX, 2);
                return serve_main(argc - 1, argv + 1);
        }
        if (strcmp(argv[1], "log-writer") == 0)
                return logwriter_main(argc - 1, argv + 1);
        if (strcmp(argv[1], "probe-accel") == 0)
                return vm_accel_probe_main(argc - 1, argv + 1);
        if (strcmp(argv[1], "check-config") == 0)
                return check_config_main(argc - 1, argv + 1);
        if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
                printf("capsuled %s (build %s)\n", CAPSULE_VERSION, CAPSULE_BUILD);
                return 0;
        }
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
                usage(stdout);
                return 0;
        }
        fprintf(stderr, "capsuled: unknown command \"%s\"\n", argv[1]);
        usage(stderr);
        return 2;
}
