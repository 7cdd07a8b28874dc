/* `capsulectl volume create|ls|resize|rm`: the Volumes API from the command line (backup and
 * restore: volume_backup.c). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "capsule/v1/volumes.pb-c.h"
#include "capsulectl.h"
#include "common/cleanup.h"
#include "common/quantity.h"
#include "rpc/rpc.h"

static const char usage[] =
    "usage: capsulectl volume SUBCOMMAND ...\n"
    "\n"
    "Manage volumes: named, sized filesystems that workloads mount (manifest `mounts:`).\n"
    "\n"
    "  create NAME --size SIZE   create an empty volume (SIZE like 512Mi, 1Gi; at least 16Mi)\n"
    "  ls                        list volumes: NAME SIZE USED ATTACHED-TO (alias: list)\n"
    "  resize NAME --size SIZE   grow a volume, online when possible (volumes never shrink)\n"
    "  rm NAME                   delete a volume and its data (refused while in use; alias: delete)\n"
    "  backup NAME -o FILE       copy a volume's files to a local tar file while it runs\n"
    "  restore NAME -f FILE      replace a volume's files with a backup's (creates NAME if absent)\n"
    "\n"
    "`capsulectl volume SUBCOMMAND --help` for details. -o json|yaml for structured output.\n"
    "\n"
    "Examples:\n"
    "  capsulectl volume create site --size 1Gi\n"
    "  capsulectl volume ls\n";

static const char usage_create[] =
    "usage: capsulectl volume create NAME --size SIZE\n"
    "\n"
    "Creates an empty ext4 volume NAME (a DNS label). Creating an existing volume with the same\n"
    "size is a no-op; with another size it fails: use `capsulectl volume resize`.\n"
    "\n"
    "Options:\n"
    "  --size SIZE   256Mi, 1Gi, 10G, ...: 16Mi to 16Ti (required, no default)\n"
    "\n"
    "Examples:\n"
    "  capsulectl volume create site --size 1Gi\n";
static const char usage_ls[] =
    "usage: capsulectl volume ls\n"
    "\n"
    "Lists volumes with their size, the space their files use and the workloads using them.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl volume ls -o json\n";
static const char usage_resize[] =
    "usage: capsulectl volume resize NAME --size SIZE\n"
    "\n"
    "Grows volume NAME to SIZE, keeping its data; online while workloads use it where the\n"
    "capsule supports it. Volumes cannot shrink.\n"
    "\n"
    "Options:\n"
    "  --size SIZE   the new size, larger than the current one (required, no default)\n"
    "\n"
    "Examples:\n"
    "  capsulectl volume resize site --size 2Gi\n";
static const char usage_rm[] =
    "usage: capsulectl volume rm NAME\n"
    "\n"
    "Deletes volume NAME and all its data. Refused while a workload uses it: delete or change\n"
    "the workload first.\n"
    "\n"
    "Options: none besides the global ones (`capsulectl --help`).\n"
    "\n"
    "Examples:\n"
    "  capsulectl volume rm site\n";

/* "1.5Gi", "24Ki", "512" for usage figures (rounded, not exact like quantity_format_bytes). */
void ctl_human_bytes(uint64_t b, char *buf, size_t len)
{
        static const char *const units[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi"};
        double v = (double)b;
        size_t u = 0;
        while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%llu", (unsigned long long)b);
        else if (v < 10 && v != (double)(uint64_t)v)
                snprintf(buf, len, "%.1f%s", v, units[u]);
        else
                snprintf(buf, len, "%.0f%s", v, units[u]);
}

static struct json_object *volume_json(const Capsule__V1__Volume *v)
{
        struct json_object *o = json_object_new_object();
        char sz[QUANTITY_BUF_SIZE];
        json_object_object_add(o, "name", json_object_new_string(v->name));
        json_object_object_add(
            o, "size",
            json_object_new_string(quantity_format_bytes(v->size_bytes, sz, sizeof(sz))));
        json_object_object_add(o, "sizeBytes", json_object_new_int64((int64_t)v->size_bytes));
        json_object_object_add(o, "usedBytes", json_object_new_int64((int64_t)v->used_bytes));
        struct json_object *att = json_object_new_array();
        for (size_t i = 0; i < v->n_attached_to; i++)
                json_object_array_add(att, json_object_new_string(v->attached_to[i]));
        json_object_object_add(o, "attachedTo", att);
        json_object_object_add(o, "backend", json_object_new_string(v->backend));
        json_object_object_add(o, "createdUnixNano", json_object_new_int64(v->created_unix_nano));
        return o;
}

static void print_table(struct ctl *ctl, Capsule__V1__Volume **vs, size_t n)
{
        fprintf(ctl->out, "%-24s %-8s %-8s %s\n", "NAME", "SIZE", "USED", "ATTACHED-TO");
        for (size_t i = 0; i < n; i++) {
                char sz[QUANTITY_BUF_SIZE], used[32], att[512] = "";
                ctl_human_bytes(vs[i]->used_bytes, used, sizeof(used));
                for (size_t j = 0; j < vs[i]->n_attached_to; j++) {
                        if (j)
                                strncat(att, ",", sizeof(att) - strlen(att) - 1);
                        strncat(att, vs[i]->attached_to[j], sizeof(att) - strlen(att) - 1);
                }
                fprintf(ctl->out, "%-24s %-8s %-8s %s\n", vs[i]->name,
                       quantity_format_bytes(vs[i]->size_bytes, sz, sizeof(sz)), used,
                       *att ? att : "-");
        }
}

/* Parses `NAME --size SIZE` for create and resize. Returns CTL_EXIT_OK or CTL_EXIT_USAGE. */
static int parse_name_size(struct ctl *ctl, int argc, char **argv, const char *sub, const char *use,
                           const char **name, uint64_t *size)
{
        static const struct option opts[] = {{"size", required_argument, NULL, 's'},
                                             {NULL, 0, NULL, 0}};
        const char *size_text = NULL;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "s:", opts, NULL)) != -1) {
                if (c != 's') {
                        fputs(use, ctl->err);
                        return CTL_EXIT_USAGE;
                }
                size_text = optarg;
        }
        if (optind != argc - 1) {
                fprintf(ctl->err, "capsulectl volume %s: %s\n%s", sub,
                        optind >= argc ? "missing NAME" : "expected exactly one NAME", use);
                return CTL_EXIT_USAGE;
        }
        *name = argv[optind];
        if (!size_text) {
                fprintf(ctl->err, "capsulectl volume %s: --size is required\n%s", sub, use);
                return CTL_EXIT_USAGE;
        }
        struct cap_error err = {0};
        if (quantity_parse_bytes(size_text, size, &err) < 0) {
                fprintf(ctl->err, "capsulectl volume %s: --size %s\n", sub, err.msg);
                return CTL_EXIT_USAGE;
        }
        return CTL_EXIT_OK;
}

static int call(struct ctl *ctl, const char *what, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp)
{
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return CTL_EXIT_ERROR;
        struct cap_error err = {0};
        if (rpc_unary(c, method, req, desc, resp, ctl->timeout_ms, &err) < 0) {
                ctl_print_error(ctl, what, &err);
                if (err.status == CAP_ALREADY_EXISTS && strstr(err.msg, "resize") == NULL)
                        fprintf(ctl->err, "hint: `capsulectl volume ls` shows the existing volume\n");
                return CTL_EXIT_ERROR;
        }
        return CTL_EXIT_OK;
}

static void print_one(struct ctl *ctl, const Capsule__V1__Volume *v, const char *verb)
{
        if (ctl->output == CTL_OUT_TABLE) {
                char sz[QUANTITY_BUF_SIZE];
                fprintf(ctl->out, "volume %s %s (%s)\n", v->name, verb,
                       quantity_format_bytes(v->size_bytes, sz, sizeof(sz)));
                return;
        }
        struct json_object *o = volume_json(v);
        ctl_print_structured(ctl, o);
        json_object_put(o);
}

static int volume_create_cmd(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, usage_create))
                return CTL_EXIT_OK;
        Capsule__V1__VolumeCreateRequest req = CAPSULE__V1__VOLUME_CREATE_REQUEST__INIT;
        const char *name;
        int rc = parse_name_size(ctl, argc, argv, "create", usage_create, &name, &req.size_bytes);
        if (rc != CTL_EXIT_OK)
                return rc;
        req.name = (char *)name;
        ProtobufCMessage *resp = NULL;
        rc = call(ctl, "volume create", "/capsule.v1.Volumes/Create", &req.base,
                  &capsule__v1__volume_create_response__descriptor, &resp);
        if (rc != CTL_EXIT_OK)
                return rc;
        Capsule__V1__VolumeCreateResponse *r = (Capsule__V1__VolumeCreateResponse *)resp;
        if (r->volume)
                print_one(ctl, r->volume, r->created ? "created" : "unchanged");
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static int volume_resize_cmd(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, usage_resize))
                return CTL_EXIT_OK;
        Capsule__V1__VolumeResizeRequest req = CAPSULE__V1__VOLUME_RESIZE_REQUEST__INIT;
        const char *name;
        int rc = parse_name_size(ctl, argc, argv, "resize", usage_resize, &name, &req.size_bytes);
        if (rc != CTL_EXIT_OK)
                return rc;
        req.name = (char *)name;
        ProtobufCMessage *resp = NULL;
        rc = call(ctl, "volume resize", "/capsule.v1.Volumes/Resize", &req.base,
                  &capsule__v1__volume_resize_response__descriptor, &resp);
        if (rc != CTL_EXIT_OK)
                return rc;
        Capsule__V1__VolumeResizeResponse *r = (Capsule__V1__VolumeResizeResponse *)resp;
        if (r->volume)
                print_one(ctl, r->volume, "resized");
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static int volume_ls_cmd(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, usage_ls))
                return CTL_EXIT_OK;
        if (argc > 1) {
                fprintf(ctl->err, "capsulectl volume ls: unexpected argument \"%s\"\n%s", argv[1],
                        usage_ls);
                return CTL_EXIT_USAGE;
        }
        Capsule__V1__VolumeListRequest req = CAPSULE__V1__VOLUME_LIST_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        int rc = call(ctl, "volume ls", "/capsule.v1.Volumes/List", &req.base,
                      &capsule__v1__volume_list_response__descriptor, &resp);
        if (rc != CTL_EXIT_OK)
                return rc;
        Capsule__V1__VolumeListResponse *r = (Capsule__V1__VolumeListResponse *)resp;
        if (ctl->output == CTL_OUT_TABLE) {
                print_table(ctl, r->volumes, r->n_volumes);
        } else {
                struct json_object *o = json_object_new_object();
                struct json_object *arr = json_object_new_array();
                for (size_t i = 0; i < r->n_volumes; i++)
                        json_object_array_add(arr, volume_json(r->volumes[i]));
                json_object_object_add(o, "volumes", arr);
                ctl_print_structured(ctl, o);
                json_object_put(o);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}

static int volume_rm_cmd(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, usage_rm))
                return CTL_EXIT_OK;
        if (argc != 2 || argv[1][0] == '-') {
                fprintf(ctl->err, "capsulectl volume rm: expected exactly one NAME\n%s", usage_rm);
                return CTL_EXIT_USAGE;
        }
        Capsule__V1__VolumeDeleteRequest req = CAPSULE__V1__VOLUME_DELETE_REQUEST__INIT;
        req.name = argv[1];
        ProtobufCMessage *resp = NULL;
        int rc = call(ctl, "volume rm", "/capsule.v1.Volumes/Delete", &req.base,
                      &capsule__v1__volume_delete_response__descriptor, &resp);
        if (rc != CTL_EXIT_OK)
                return rc;
        protobuf_c_message_free_unpacked(resp, NULL);
        if (ctl->output == CTL_OUT_TABLE)
                fprintf(ctl->out, "volume %s deleted\n", argv[1]);
        else {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "name", json_object_new_string(argv[1]));
                json_object_object_add(o, "deleted", json_object_new_boolean(1));
                ctl_print_structured(ctl, o);
                json_object_put(o);
        }
        return CTL_EXIT_OK;
}

int cmd_volume(struct ctl *ctl, int argc, char **argv)
{
        static const struct {
                const char *name;
                int (*run)(struct ctl *, int, char **);
        } subs[] = {
            {"create", volume_create_cmd}, {"ls", volume_ls_cmd}, {"list", volume_ls_cmd},
            {"resize", volume_resize_cmd}, {"rm", volume_rm_cmd}, {"delete", volume_rm_cmd},
            {"backup", cmd_volume_backup}, {"restore", cmd_volume_restore},
        };
        if (argc < 2) {
                fputs(usage, ctl->err);
                return CTL_EXIT_USAGE;
        }
        if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
            strcmp(argv[1], "help") == 0) {
                fputs(usage, ctl->out);
                return CTL_EXIT_OK;
        }
        for (size_t i = 0; i < ARRAY_SIZE(subs); i++)
                if (strcmp(subs[i].name, argv[1]) == 0)
                        return subs[i].run(ctl, argc - 1, argv + 1);
        fprintf(ctl->err, "capsulectl volume: unknown subcommand \"%s\"\n%s", argv[1], usage);
        return CTL_EXIT_USAGE;
}
