/* bundle-verify: reads an update bundle file with the real streaming reader
 * (src/capsuled/update/bundle.c), fed in random chunk sizes, into a sink that only hashes and
 * counts, so a bundle made by mkimage/bundle.sh (or by hand) can be checked without a capsule.
 *   bundle-verify [--key PEMFILE]... [--arch A] [--running V] [--allow-downgrade]
 *                 [--perm-format N] [--seed N] FILE
 * Exit status: 0 when the bundle is accepted, else its gRPC status code (3 INVALID_ARGUMENT,
 * 7 PERMISSION_DENIED, 9 FAILED_PRECONDITION, 15 DATA_LOSS, ...), with "STATUS: message" on
 * stderr. Used by tests/unit/test-update-bundle-sh.sh. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/config.h"
#include "update/bundle.h"

struct count_sink {
        unsigned parts;
        unsigned long long bytes;
};

static int cs_open(void *ctx, const struct bundle_part *p, struct cap_error *err)
{
        return 0;
}

static int cs_write(void *ctx, const struct bundle_part *p, const void *buf, size_t len,
                    struct cap_error *err)
{
        ((struct count_sink *)ctx)->bytes += len;
        return 0;
}

static int cs_close(void *ctx, const struct bundle_part *p, struct cap_error *err)
{
        ((struct count_sink *)ctx)->parts++;
        return 0;
}

static int fail(const struct cap_error *err)
{
        fprintf(stderr, "%s: %s\n", cap_status_name(err->status), err->msg);
        return err->status ? (int)err->status : 1;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"key", required_argument, NULL, 'k'},     {"arch", required_argument, NULL, 'a'},
            {"running", required_argument, NULL, 'r'}, {"allow-downgrade", no_argument, NULL, 'd'},
            {"seed", required_argument, NULL, 's'},    {"perm-format", required_argument, NULL, 'p'},
            {NULL, 0, NULL, 0},
        };
        char *keys[16];
        size_t n_keys = 0;
        struct utsname u;
        const char *arch = uname(&u) == 0 ? u.machine : "x86_64";
        const char *running = "0.1.0";
        bool downgrade = false;
        unsigned seed = 1;
        long perm_format = 1;
        struct cap_error err = {0};
        int c;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                size_t len;
                switch (c) {
                case 'k':
                        if (n_keys == 16 || config_read_file(optarg, &keys[n_keys], &len, &err) < 0)
                                return fail(&err);
                        n_keys++;
                        break;
                case 'a':
                        arch = optarg;
                        break;
                case 'r':
                        running = optarg;
                        break;
                case 'd':
                        downgrade = true;
                        break;
                case 's':
                        seed = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'p':
                        perm_format = strtol(optarg, NULL, 10);
                        break;
                default:
                        return 2;
                }
        }
        if (optind != argc - 1) {
                fprintf(stderr, "usage: bundle-verify [--key PEM]... [--arch A] [--running V] "
                                "[--allow-downgrade] [--perm-format N] [--seed N] FILE\n");
                return 2;
        }
        srand(seed);
        struct count_sink cs = {0};
        struct bundle_sink sink = {
            .open = cs_open, .write = cs_write, .close = cs_close, .ctx = &cs};
        struct bundle_reader_opts o = {.trusted_keys = (const char *const *)keys,
                                       .n_trusted_keys = n_keys,
                                       .arch = arch,
                                       .running_version = running,
                                       .allow_downgrade = downgrade,
                                       .perm_format = perm_format,
                                       .sink = &sink};
        struct bundle_reader *r = NULL;
        int rc = bundle_reader_new(&o, &r, &err);
        _cleanup_close_ int fd = rc < 0 ? -1 : open(argv[optind], O_RDONLY | O_CLOEXEC);
        if (rc == 0 && fd < 0)
                rc = cap_error_errno(&err, -errno, "open %s", argv[optind]);
        static char buf[65536];
        while (rc == 0) {
                size_t want = 1 + (size_t)rand() % sizeof(buf);
                ssize_t n = read(fd, buf, want);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        rc = cap_error_errno(&err, -errno, "read %s", argv[optind]);
                        break;
                }
                if (n == 0) {
                        rc = bundle_reader_finish(r, &err);
                        break;
                }
                rc = bundle_reader_feed(r, buf, (size_t)n, &err);
        }
        if (rc == 0) {
                const struct bundle_manifest *m = bundle_reader_manifest(r);
                printf("OK: version %s (%s), %u parts, %llu bytes, signed by key %d\n", m->version,
                       m->arch, cs.parts, cs.bytes, bundle_reader_key_index(r));
        }
        bundle_reader_free(r);
        for (size_t i = 0; i < n_keys; i++)
                free(keys[i]);
        return rc < 0 ? fail(&err) : 0;
}
