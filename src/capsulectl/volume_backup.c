/* `capsulectl volume backup NAME -o FILE` and `capsulectl volume restore NAME -f FILE`: the
 * Volumes Backup and Restore streams to and from a local file. A backup is written to FILE.tmp
 * and renamed to FILE only once the server's sha256 trailer matched every byte received; a
 * restore is sent through upload.c, with the sha256 of every byte sent as its trailer. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capsule/v1/volumes.pb-c.h"
#include "capsulectl.h"
#include "common/cleanup.h"
#include "common/quantity.h"
#include "rpc/rpc.h"
#include "upload.h"

#define CHUNK (256 * 1024)

static const char volume_usage_backup[] =
    "usage: capsulectl volume backup NAME -o FILE\n"
    "\n"
    "Copies the files of volume NAME into FILE, a tar archive (pax, numeric owners, extended\n"
    "attributes), while its workloads keep running. On a Capsule the copy is an LVM thin\n"
    "snapshot (a point in time; a microVM's disk is crash-consistent, as after a power cut); in\n"
    "host mode files are read from the live volume one by one (see docs/operations.md). FILE is\n"
    "written as FILE.tmp and renamed once its sha256 matches the server's.\n"
    "\n"
    "Options:\n"
    "  -o, --output FILE   where to write the backup; - for stdout (required, no default)\n"
    "\n"
    "Examples:\n"
    "  capsulectl volume backup site -o site.tar\n"
    "  capsulectl volume backup site -o - | gzip > site.tar.gz\n";

static const char volume_usage_restore[] =
    "usage: capsulectl volume restore NAME -f FILE [--size SIZE]\n"
    "\n"
    "Replaces the files of volume NAME with those of backup FILE (from `volume backup`), creating\n"
    "NAME when it does not exist (of SIZE, or the size the backup recorded). Refused while a\n"
    "workload uses NAME. The backup is extracted into a temporary volume first: a truncated,\n"
    "corrupt or unsafe backup changes nothing. A progress bar goes to stderr when it is a\n"
    "terminal.\n"
    "\n"
    "Options:\n"
    "  -f, --file FILE   the backup to restore; - for stdin (required, no default)\n"
    "  --size SIZE       size of a volume created by the restore (default: the backup's)\n"
    "\n"
    "Examples:\n"
    "  capsulectl volume restore site -f site.tar\n"
    "  gunzip -c site.tar.gz | capsulectl volume restore site2 -f - --size 2Gi\n";

static void hex(const unsigned char *md, unsigned n, char *out)
{
        for (unsigned i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", md[i]);
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
        while (len) {
                ssize_t n = write(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Receives the Backup stream into fd; fills sum with the server's sha256 once it matched. */
static int backup_receive(struct rpc_stream *s, int fd, const char *file, char *sum,
                          uint64_t *total, char *consistency, size_t clen, struct cap_error *err)
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
                EVP_MD_CTX_free(md);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        char trailer[65] = "";
        uint64_t trailer_total = 0;
        int rc;
        for (;;) {
                ProtobufCMessage *m = NULL;
                rc = rpc_stream_recv(s, &m, err);
                if (rc <= 0)
                        break;
                Capsule__V1__VolumeBackupChunk *c = (Capsule__V1__VolumeBackupChunk *)m;
                if (c->consistency && *c->consistency)
                        snprintf(consistency, clen, "%s", c->consistency);
                if (c->data.len) {
                        EVP_DigestUpdate(md, c->data.data, c->data.len);
                        *total += c->data.len;
                        int w = write_all(fd, c->data.data, c->data.len);
                        if (w < 0)
                                rc = cap_error_errno(err, w, "write %s", file);
                }
                if (c->sha256 && *c->sha256) {
                        snprintf(trailer, sizeof(trailer), "%s", c->sha256);
                        trailer_total = c->total_bytes;
                }
                protobuf_c_message_free_unpacked(m, NULL);
                if (rc < 0)
                        break;
        }
        if (rc == 0) {
                unsigned char d[32];
                unsigned dl = 0;
                EVP_DigestFinal_ex(md, d, &dl);
                hex(d, dl, sum);
                if (!*trailer)
                        rc = cap_error_set(err, -EPROTO, CAP_DATA_LOSS,
                                           "the stream ended without its sha256 trailer");
                else if (strcmp(trailer, sum) != 0 || trailer_total != *total)
                        rc = cap_error_set(err, -EPROTO, CAP_DATA_LOSS,
                                           "received %llu bytes hashing to %s; the server sent "
                                           "%llu bytes hashing to %s",
                                           (unsigned long long)*total, sum,
                                           (unsigned long long)trailer_total, trailer);
        }
        EVP_MD_CTX_free(md);
        return rc;
}

int cmd_volume_backup(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, volume_usage_backup))
                return CTL_EXIT_OK;
        static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                             {NULL, 0, NULL, 0}};
        const char *file = NULL;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
                if (c != 'o') {
                        fputs(volume_usage_backup, ctl->err);
                        return CTL_EXIT_USAGE;
                }
                file = optarg;
        }
        if (optind != argc - 1 || !file) {
                fprintf(ctl->err, "capsulectl volume backup: %s\n%s",
                        optind != argc - 1 ? "expected exactly one NAME" : "-o FILE is required",
                        volume_usage_backup);
                return CTL_EXIT_USAGE;
        }
        const char *name = argv[optind];
        bool to_stdout = strcmp(file, "-") == 0;
        _cleanup_free_ char *tmp = NULL;
        if (!to_stdout && asprintf(&tmp, "%s.tmp", file) < 0)
                return CTL_EXIT_ERROR;
        _cleanup_close_ int fd = to_stdout ? dup(STDOUT_FILENO)
                                           : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                                                  0600);
        if (fd < 0) {
                fprintf(ctl->err, "capsulectl volume backup: %s: %s\n", to_stdout ? "stdout" : tmp,
                        strerror(errno));
                return CTL_EXIT_ERROR;
        }
        struct rpc_client *cl = ctl_client(ctl);
        if (!cl) {
                if (tmp)
                        unlink(tmp);
                return CTL_EXIT_ERROR;
        }
        struct cap_error err = {0};
        Capsule__V1__VolumeBackupRequest req = CAPSULE__V1__VOLUME_BACKUP_REQUEST__INIT;
        req.name = (char *)name;
        char sum[65] = "", consistency[32] = "";
        uint64_t total = 0;
        int rc = -1;
        struct rpc_stream *s = rpc_stream_open(
            cl, "/capsule.v1.Volumes/Backup", &capsule__v1__volume_backup_chunk__descriptor, 0, &err);
        if (s && (rc = rpc_stream_send(s, &req.base, &err)) == 0 &&
            (rc = rpc_stream_close_send(s, &err)) == 0)
                rc = backup_receive(s, fd, to_stdout ? "stdout" : tmp, sum, &total, consistency,
                                    sizeof(consistency), &err);
        else if (s)
                rpc_stream_finish(s, &err);
        rpc_stream_free(s);
        if (rc == 0 && !to_stdout && fsync(fd) < 0)
                rc = cap_error_errno(&err, -errno, "fsync %s", tmp);
        if (rc == 0 && !to_stdout && rename(tmp, file) < 0)
                rc = cap_error_errno(&err, -errno, "rename %s to %s", tmp, file);
        if (rc < 0) {
                if (tmp)
                        unlink(tmp);
                ctl_print_error(ctl, "volume backup", &err);
                return CTL_EXIT_ERROR;
        }
        /* with -o - stdout is the backup: the summary goes to stderr */
        FILE *info = to_stdout ? ctl->err : ctl->out;
        char sz[32];
        ctl_human_bytes(total, sz, sizeof(sz));
        fprintf(info, "volume %s backed up to %s (%s, %s copy, sha256 %s)\n", name,
                to_stdout ? "stdout" : file, sz, consistency, sum);
        return CTL_EXIT_OK;
}

static void restore_data(ProtobufCMessage *m, const uint8_t *data, size_t len)
{
        Capsule__V1__VolumeRestoreRequest *req = (Capsule__V1__VolumeRestoreRequest *)m;
        req->data.data = (uint8_t *)data;
        req->data.len = len;
}

static void restore_trailer(ProtobufCMessage *m, const char *sha256)
{
        ((Capsule__V1__VolumeRestoreRequest *)m)->sha256 = (char *)sha256;
}

int cmd_volume_restore(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, volume_usage_restore))
                return CTL_EXIT_OK;
        static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                             {"size", required_argument, NULL, 's'},
                                             {NULL, 0, NULL, 0}};
        const char *file = NULL, *size_text = NULL;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "f:", opts, NULL)) != -1) {
                if (c == 'f')
                        file = optarg;
                else if (c == 's')
                        size_text = optarg;
                else {
                        fputs(volume_usage_restore, ctl->err);
                        return CTL_EXIT_USAGE;
                }
        }
        if (optind != argc - 1 || !file) {
                fprintf(ctl->err, "capsulectl volume restore: %s\n%s",
                        optind != argc - 1 ? "expected exactly one NAME" : "-f FILE is required",
                        volume_usage_restore);
                return CTL_EXIT_USAGE;
        }
        Capsule__V1__VolumeRestoreRequest first = CAPSULE__V1__VOLUME_RESTORE_REQUEST__INIT;
        first.name = argv[optind];
        struct cap_error err = {0};
        if (size_text && quantity_parse_bytes(size_text, &first.size_bytes, &err) < 0) {
                fprintf(ctl->err, "capsulectl volume restore: --size %s\n", err.msg);
                return CTL_EXIT_USAGE;
        }
        bool from_stdin = strcmp(file, "-") == 0;
        uint64_t total = 0;
        _cleanup_close_ int fd = ctl_upload_open(file, true, &total, &err);
        if (fd < 0) {
                fprintf(ctl->err, "capsulectl volume restore: %s\n", err.msg);
                return CTL_EXIT_ERROR;
        }
        struct rpc_client *cl = ctl_client(ctl);
        if (!cl)
                return CTL_EXIT_ERROR;
        Capsule__V1__VolumeRestoreRequest chunk = CAPSULE__V1__VOLUME_RESTORE_REQUEST__INIT;
        const struct ctl_upload up = {
            .method = "/capsule.v1.Volumes/Restore",
            .response = &capsule__v1__volume_restore_response__descriptor,
            .header = &first.base,
            .chunk = &chunk.base,
            .set_data = restore_data,
            .trailer = restore_trailer,
            .chunk_size = CHUNK,
            .progress_label = "restore",
        };
        ProtobufCMessage *resp = NULL;
        if (ctl_upload_file(cl, &up, fd, file, total, &resp, &err) < 0) {
                ctl_print_error(ctl, "volume restore", &err);
                return CTL_EXIT_ERROR;
        }
        Capsule__V1__VolumeRestoreResponse *r = (Capsule__V1__VolumeRestoreResponse *)resp;
        if (ctl->output == CTL_OUT_TABLE) {
                char sz[QUANTITY_BUF_SIZE] = "";
                if (r->volume)
                        quantity_format_bytes(r->volume->size_bytes, sz, sizeof(sz));
                fprintf(ctl->out, "volume %s restored from %s (%llu entries%s%s)\n", first.name,
                        from_stdin ? "stdin" : file, (unsigned long long)r->entries,
                        r->created ? "; created with size " : "", r->created ? sz : "");
        } else {
                struct json_object *o = json_object_new_object();
                json_object_object_add(o, "name", json_object_new_string(first.name));
                json_object_object_add(o, "restored", json_object_new_boolean(1));
                json_object_object_add(o, "created", json_object_new_boolean(r->created));
                json_object_object_add(o, "entries", json_object_new_int64((int64_t)r->entries));
                ctl_print_structured(ctl, o);
                json_object_put(o);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return CTL_EXIT_OK;
}
