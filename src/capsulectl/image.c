/* `capsulectl image push|pull|ls|rm`: side-load image archives, pull from registries, list and
 * delete the capsule's images. Push streams the archive in 1 MiB chunks (Images.Push client
 * stream, through upload.c) with a progress bar on stderr when it is a terminal. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "capsule/v1/images.pb-c.h"
#include "capsulectl.h"
#include "progress.h"
#include "upload.h"
#include "common/cleanup.h"
#include "rpc/rpc.h"

#define PUSH_CHUNK (1u << 20)

static const char usage[] =
    "usage: capsulectl image push FILE [--name REF]\n"
    "       capsulectl image pull REF\n"
    "       capsulectl image ls\n"
    "       capsulectl image rm REF...\n"
    "\n"
    "Manages the capsule's container images.\n"
    "  push   import a docker-archive (`docker save`) or oci-archive tarball (optionally gzip,\n"
    "         xz or zstd-compressed); --name tags it (needed when the archive names no image)\n"
    "  pull   fetch an image from a registry (HTTPS; plain HTTP only for registries listed\n"
    "         under registries.insecure in the machine config)\n"
    "  ls     list images: NAME DIGEST SIZE AGE USED-BY (-o json|yaml for all fields)\n"
    "  rm     delete images (refused while a workload uses one)\n"
    "`capsulectl image SUBCOMMAND --help` for details.\n"
    "\n"
    "Examples:\n"
    "  capsulectl image push busybox.tar --name registry.lan/busybox:1.36\n"
    "  capsulectl image pull docker.io/library/nginx:1.25\n"
    "  capsulectl image rm registry.lan/busybox:1.36\n";

static const char usage_push[] =
    "usage: capsulectl image push FILE [--name REF]\n"
    "\n"
    "Streams a docker-archive or oci-archive tarball to the capsule, which verifies every blob\n"
    "and imports it. A progress bar goes to stderr when it is a terminal.\n"
    "\n"
    "Options:\n"
    "  --name REF   tag the image REF, overriding the archive's own names (default: the\n"
    "               names in the archive)\n"
    "\n"
    "Examples:\n"
    "  capsulectl image push busybox.tar --name capsule.local/busybox:latest\n";
static const char usage_pull[] =
    "usage: capsulectl image pull REF\n"
    "\n"
    "Pulls REF (e.g. busybox, registry.lan:5000/app:1, ghcr.io/o/r@sha256:...) for linux/amd64.\n"
    "A progress bar (bytes, rate, time left) goes to stderr when it is a terminal.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl image pull 127.0.0.1:5000/busybox:1\n";
static const char usage_ls[] =
    "usage: capsulectl image ls\n"
    "\n"
    "Lists the images: NAME DIGEST SIZE AGE USED-BY (alias: list).\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl image ls -o json\n";
static const char usage_rm[] =
    "usage: capsulectl image rm REF...\n"
    "\n"
    "Deletes images (alias: delete). Refused (FAILED_PRECONDITION) while a workload uses the image.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl image rm busybox\n";

static void format_size(uint64_t b, char *buf, size_t len)
{
        static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        double v = (double)b;
        size_t u = 0;
        while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%" PRIu64 "B", b);
        else
                snprintf(buf, len, "%.1f%s", v, units[u]);
}

static struct json_object *image_json(const Capsule__V1__Image *im)
{
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(im->name));
        json_object_object_add(o, "digest", json_object_new_string(im->digest));
        json_object_object_add(o, "sizeBytes", json_object_new_int64((int64_t)im->size_bytes));
        json_object_object_add(o, "createdUnixNano", json_object_new_int64(im->created_unix_nano));
        struct json_object *u = json_object_new_array();
        for (size_t i = 0; i < im->n_used_by; i++)
                json_object_array_add(u, json_object_new_string(im->used_by[i]));
        json_object_object_add(o, "usedBy", u);
        return o;
}

static void print_images(struct ctl *ctl, Capsule__V1__Image *const *ims, size_t n, bool header)
{
        if (ctl->output != CTL_OUT_TABLE) {
                struct json_object *arr = json_object_new_array();
                for (size_t i = 0; i < n; i++)
                        json_object_array_add(arr, image_json(ims[i]));
                ctl_print_structured(ctl, arr);
                json_object_put(arr);
                return;
        }
        if (header)
                fprintf(ctl->out, "%-50s %-19s %-9s %-7s %s\n", "NAME", "DIGEST", "SIZE", "AGE", "USED-BY");
        for (size_t i = 0; i < n; i++) {
                const Capsule__V1__Image *im = ims[i];
                char size[32], age[32], used[256] = "";
                format_size(im->size_bytes, size, sizeof(size));
                if (im->created_unix_nano > 0)
                        ctl_format_age((long long)time(NULL) - im->created_unix_nano / 1000000000,
                                       age, sizeof(age));
                else
                        snprintf(age, sizeof(age), "-");
                for (size_t k = 0; k < im->n_used_by; k++)
                        snprintf(used + strlen(used), sizeof(used) - strlen(used), "%s%s",
                                 k ? "," : "", im->used_by[k]);
                fprintf(ctl->out, "%-50s %-19.19s %-9s %-7s %s\n", im->name, im->digest, size, age,
                       *used ? used : "-");
        }
}

static void set_chunk(ProtobufCMessage *m, const uint8_t *data, size_t len)
{
        Capsule__V1__ImagePushRequest *req = (Capsule__V1__ImagePushRequest *)m;
        req->msg_case = CAPSULE__V1__IMAGE_PUSH_REQUEST__MSG_CHUNK;
        req->chunk.data = (uint8_t *)data;
        req->chunk.len = len;
}

static int push(struct ctl *ctl, int argc, char **argv)
{
        static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                             {NULL, 0, NULL, 0}};
        const char *name = NULL;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
                if (c == 'n')
                        name = optarg;
                else {
                        fputs(usage_push, ctl->err);
                        return CTL_EXIT_USAGE;
                }
        }
        if (optind != argc - 1) {
                fprintf(ctl->err, "capsulectl image push: expected one FILE\n%s", usage_push);
                return CTL_EXIT_USAGE;
        }
        const char *path = argv[optind];
        uint64_t total = 0;
        struct cap_error oerr = {0};
        _cleanup_close_ int fd = ctl_upload_open(path, false, &total, &oerr);
        if (fd < 0) {
                fprintf(ctl->err, "capsulectl image push: %s\n", oerr.msg);
                return CTL_EXIT_ERROR;
        }
        struct rpc_client *cl = ctl_client(ctl);
        if (!cl)
                return CTL_EXIT_ERROR;
        struct cap_error err = {0};
        Capsule__V1__ImagePushHeader hdr = CAPSULE__V1__IMAGE_PUSH_HEADER__INIT;
        hdr.name = (char *)(name ? name : "");
        hdr.total_bytes = total;
        Capsule__V1__ImagePushRequest first = CAPSULE__V1__IMAGE_PUSH_REQUEST__INIT;
        first.msg_case = CAPSULE__V1__IMAGE_PUSH_REQUEST__MSG_HEADER;
        first.header = &hdr;
        Capsule__V1__ImagePushRequest chunk = CAPSULE__V1__IMAGE_PUSH_REQUEST__INIT;
        const struct ctl_upload up = {
            .method = "/capsule.v1.Images/Push",
            .response = &capsule__v1__image_push_response__descriptor,
            .header = &first.base,
            .chunk = &chunk.base,
            .set_data = set_chunk,
            .chunk_size = PUSH_CHUNK,
            .progress_label = "push",
            .sent_note = "importing...",
            .note_to = ctl->err,
        };
        ProtobufCMessage *resp = NULL;
        if (ctl_upload_file(cl, &up, fd, path, total, &resp, &err) < 0) {
                ctl_print_error(ctl, "image push", &err);
                return CTL_EXIT_ERROR;
        }
        Capsule__V1__ImagePushResponse *r = (Capsule__V1__ImagePushResponse *)resp;
        if (ctl->output == CTL_OUT_TABLE)
                for (size_t i = 0; i < r->n_images; i++)
                        fprintf(ctl->out, "imported %s %s\n", r->images[i]->name, r->images[i]->digest);
        else
                print_images(ctl, r->images, r->n_images, false);
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static int pull(struct ctl *ctl, int argc, char **argv)
{
        if (argc != 2 || argv[1][0] == '-') {
                fprintf(ctl->err, "capsulectl image pull: expected one REF\n%s", usage_pull);
                return CTL_EXIT_USAGE;
        }
        struct rpc_client *cl = ctl_client(ctl);
        if (!cl)
                return CTL_EXIT_ERROR;
        Capsule__V1__ImagePullRequest req = CAPSULE__V1__IMAGE_PULL_REQUEST__INIT;
        req.reference = argv[1];
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        /* progress messages while the layers download, then the image */
        struct rpc_stream *s = rpc_stream_open(cl, "/capsule.v1.Images/Pull", &capsule__v1__image_pull_response__descriptor,
                                               0, &err);
        if (!s || rpc_stream_send(s, &req.base, &err) < 0 || rpc_stream_close_send(s, &err) < 0) {
                ctl_print_error(ctl, "image pull", &err);
                rpc_stream_free(s);
                return CTL_EXIT_ERROR;
        }
        struct ctl_progress bar;
        ctl_progress_init(&bar, "pull", false);
        uint64_t done = 0, total = 0;
        int rr;
        ProtobufCMessage *m;
        while ((rr = rpc_stream_recv(s, &m, &err)) == 1) {
                Capsule__V1__ImagePullResponse *pr = (Capsule__V1__ImagePullResponse *)m;
                if (pr->image) {
                        protobuf_c_message_free_unpacked(resp, NULL);
                        resp = m;
                        continue;
                }
                if (pr->progress) {
                        done = pr->progress->done_bytes;
                        total = pr->progress->total_bytes;
                        ctl_progress_update(&bar, done, total);
                }
                protobuf_c_message_free_unpacked(m, NULL);
        }
        if (bar.drawn)
                ctl_progress_end(&bar, done, total);
        rpc_stream_free(s);
        if (rr < 0 || !resp) {
                if (rr == 0)
                        cap_error_set(&err, -EPROTO, CAP_INTERNAL, "the pull ended without an image");
                ctl_print_error(ctl, "image pull", &err);
                protobuf_c_message_free_unpacked(resp, NULL);
                return CTL_EXIT_ERROR;
        }
        Capsule__V1__ImagePullResponse *r = (Capsule__V1__ImagePullResponse *)resp;
        if (r->image && ctl->output == CTL_OUT_TABLE) {
                char size[32];
                format_size(r->image->size_bytes, size, sizeof(size));
                fprintf(ctl->out, "pulled %s %s %s\n", r->image->name, r->image->digest, size);
        } else if (r->image) {
                print_images(ctl, &r->image, 1, false);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static int list(struct ctl *ctl, int argc, char **argv)
{
        if (argc != 1) {
                fprintf(ctl->err, "capsulectl image ls: unexpected argument \"%s\"\n%s", argv[1],
                        usage_ls);
                return CTL_EXIT_USAGE;
        }
        struct rpc_client *cl = ctl_client(ctl);
        if (!cl)
                return CTL_EXIT_ERROR;
        Capsule__V1__ImageListRequest req = CAPSULE__V1__IMAGE_LIST_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        struct cap_error err = {0};
        if (rpc_unary(cl, "/capsule.v1.Images/List", &req.base,
                      &capsule__v1__image_list_response__descriptor, &resp, ctl->timeout_ms,
                      &err) < 0) {
                ctl_print_error(ctl, "image ls", &err);
                return CTL_EXIT_ERROR;
        }
        Capsule__V1__ImageListResponse *r = (Capsule__V1__ImageListResponse *)resp;
        print_images(ctl, r->images, r->n_images, true);
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static int rm(struct ctl *ctl, int argc, char **argv)
{
        if (argc < 2) {
                fprintf(ctl->err, "capsulectl image rm: expected REF...\n%s", usage_rm);
                return CTL_EXIT_USAGE;
        }
        struct rpc_client *cl = ctl_client(ctl);
        if (!cl)
                return CTL_EXIT_ERROR;
        int rc = CTL_EXIT_OK;
        for (int i = 1; i < argc; i++) {
                Capsule__V1__ImageDeleteRequest req = CAPSULE__V1__IMAGE_DELETE_REQUEST__INIT;
                req.reference = argv[i];
                ProtobufCMessage *resp = NULL;
                struct cap_error err = {0};
                if (rpc_unary(cl, "/capsule.v1.Images/Delete", &req.base,
                              &capsule__v1__image_delete_response__descriptor, &resp,
                              ctl->timeout_ms, &err) < 0) {
                        ctl_print_error(ctl, "image rm", &err);
                        rc = CTL_EXIT_ERROR;
                        continue;
                }
                protobuf_c_message_free_unpacked(resp, NULL);
                fprintf(ctl->out, "deleted %s\n", argv[i]);
        }
        return rc;
}

int cmd_image(struct ctl *ctl, int argc, char **argv)
{
        static const struct {
                const char *name;
                int (*run)(struct ctl *, int, char **);
                const char *usage;
        } subs[] = {
            {"push", push, usage_push}, {"pull", pull, usage_pull}, {"ls", list, usage_ls},
            {"list", list, usage_ls},   {"rm", rm, usage_rm},       {"delete", rm, usage_rm},
        };
        if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
                fputs(usage, argc < 2 ? ctl->err : stdout);
                return argc < 2 ? CTL_EXIT_USAGE : CTL_EXIT_OK;
        }
        for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
                if (strcmp(argv[1], subs[i].name) != 0)
                        continue;
                if (ctl_wants_help(argc - 1, argv + 1, subs[i].usage))
                        return CTL_EXIT_OK;
                return subs[i].run(ctl, argc - 1, argv + 1);
        }
        fprintf(ctl->err, "capsulectl image: unknown command \"%s\"\n%s", argv[1], usage);
        return CTL_EXIT_USAGE;
}
