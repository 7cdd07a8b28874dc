/* libFuzzer target for the image user database reader (containerd/spec.c spec_resolve_user): an
 * image's /etc/passwd and /etc/group are untrusted text. The input is split at the first NUL
 * byte into passwd and group, written into a scratch image root, and resolved for a few users
 * (names, numbers, user:group). Oracles: a success fills only up to the supplementary-gid
 * capacity, and an error always has a message starting "user: ". Built with -fsanitize=fuzzer
 * when -Dfuzz=true; otherwise fuzz-replay.c drives it over tests/fuzz/corpus/passwd. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[64];

static void put(const char *name, const uint8_t *data, size_t len)
{
        char path[128];
        snprintf(path, sizeof(path), "%s/etc/%s", root, name);
        FILE *f = fopen(path, "w");
        if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
                abort();
}

/* The scratch root goes when the process exits. */
static void cleanup(void)
{
        char path[128];
        static const char *const files[] = {"etc/passwd", "etc/group"};
        for (size_t i = 0; i < 2; i++) {
                snprintf(path, sizeof(path), "%s/%s", root, files[i]);
                unlink(path);
        }
        snprintf(path, sizeof(path), "%s/etc", root);
        rmdir(path);
        rmdir(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (!root[0]) {
                char path[128];
                snprintf(root, sizeof(root), "/tmp/fuzz-passwd-%d", (int)getpid());
                snprintf(path, sizeof(path), "%s/etc", root);
                if ((mkdir(root, 0700) < 0 && access(root, F_OK) < 0) ||
                    (mkdir(path, 0700) < 0 && access(path, F_OK) < 0))
                        abort();
                atexit(cleanup);
        }
        const uint8_t *nul = memchr(data, 0, size);
        size_t plen = nul ? (size_t)(nul - data) : size;
        put("passwd", data, plen);
        put("group", nul ? nul + 1 : data, nul ? size - plen - 1 : 0);
        static const char *const users[] = {"root",        "nobody",    "0",     "65534", "101:www",
                                            "nginx:audio", "1000:1000", "a:b:c", ":x",    ""};
        for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
                uint32_t uid, gid, extra[8];
                size_t n = 8;
                struct cap_error err = {0};
                int r = spec_resolve_user(root, users[i], &uid, &gid, extra, &n, &err);
                if (r == 0 && n > 8)
                        abort();
                if (r < 0 && strncmp(err.msg, "user: ", 6) != 0)
                        abort();
        }
        return 0;
}
