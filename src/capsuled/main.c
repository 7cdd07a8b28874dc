/* capsuled: one binary, two roles.
 *   - PID 1 (init role, src/capsuled/init/): mounts, supervision, shutdown. Never parses network input.
 *   - `capsuled serve` (control plane, src/capsuled/serve/): the gRPC API, store, reconciler, drivers.
 * PID 1 starts `capsuled serve` as a supervised child; on a development host `capsuled serve` runs
 * alone ("host mode"). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "build-id.h"
#include "capsuled.h"
#include "logs/logs.h"
#include "microvm/accel.h"

static void usage(FILE *f)
{
        fprintf(f, "usage: capsuled serve --root DIR --machine-config FILE [--listen ADDR] [options]\n"
                   "       capsuled init      (PID 1 role; chosen automatically when run as PID 1)\n"
                   "       capsuled probe-accel --kernel K --initrd I [--cache FILE] [--json]\n"
                   "                          (kvm or tcg: can this host run a microVM under KVM?)\n"
                   "       capsuled version\n"
                   "Run `capsuled serve --help` for the control plane's options.\n");
}

int main(int argc, char **argv)
{
        if (getpid() == 1)
                return init_main(argc, argv);
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (strcmp(argv[1], "serve") == 0)
                return serve_main(argc - 1, argv + 1);
        if (strcmp(argv[1], "log-writer") == 0)
                return logwriter_main(argc - 1, argv + 1);
        if (strcmp(argv[1], "probe-accel") == 0)
                return vm_accel_probe_main(argc - 1, argv + 1);
        if (strcmp(argv[1], "init") == 0)
                return init_main(argc - 1, argv + 1);
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
