/* capsuled, the small executable: PID 1 (init role, src/capsuled/init/) and a doorway to the
 * control plane.
 *
 * PID 1 maps only libc and libyaml (it reads the machine config): it parses no network input and
 * needs none of gRPC, OpenSSL, curl, SQLite or libarchive, which `capsuled serve` links. So the
 * control plane and the other heavy roles live in capsuled-serve (main_serve.c: beside this binary
 * in a build tree, /usr/libexec/capsule/capsuled-serve on a Capsule), and every command line this
 * binary does not handle itself is exec'd there unchanged: `capsuled serve ...` keeps working as
 * before and keeps its name in ps, since argv[0] is passed on. PID 1 starts serve exactly so. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "build-id.h"
#include "capsuled.h"

static void usage(FILE *f)
{
        fputs(CAPSULED_USAGE, f);
}

/* Writes the path of capsuled-serve into buf: beside this executable if it is there (a build
 * tree), else the installed one. */
static void heavy_path(char *buf, size_t size)
{
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = '\0';
                char *slash = strrchr(self, '/');
                if (slash) {
                        *slash = '\0';
                        snprintf(buf, size, "%s/capsuled-serve", self);
                        if (access(buf, X_OK) == 0)
                                return;
                }
        }
        snprintf(buf, size, "%s", CAPSULED_SERVE_PATH);
}

int main(int argc, char **argv)
{
        if (getpid() == 1)
                return init_main(argc, argv);
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
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
        char heavy[PATH_MAX];
        heavy_path(heavy, sizeof(heavy));
        execv(heavy, argv);
        fprintf(stderr, "capsuled: %s: %s (capsuled-serve runs every role but init)\n", heavy,
                strerror(errno));
        return 127;
}
