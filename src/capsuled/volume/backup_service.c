/* capsule.v1.Volumes Backup and Restore handlers: the stream glue between the API and the volume
 * manager's backup/restore steps (volume.h) and the tar format (backup.h). Their userdata is the
 * serve_ctx (for the volume manager and the event bus).
 *
 * Backup (server stream): a read-only view of the volume (thin snapshot or live mount) archived
 * into chunks of at most CHUNK bytes, sha256 over every byte in the last message.
 * Restore (client stream): the upload is extracted while it arrives into a temporary volume; only
 * when the whole stream extracted cleanly and its sha256 matches the client's is the temporary
 * volume swapped in. Anything else discards it: the volume is as it was. */
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup.h"
#include "capsule/v1/volumes.pb-c.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/names.h"
#include "common/quantity.h"
#include "serve/events.h"
#include "serve/serve.h"
#include "service.h"
#include "volume.h"

#define CHUNK (256 * 1024)

static struct serve_ctx *ctx_of(struct rpc_call *call, struct cap_error *err)
{
        struct serve_ctx *ctx = rpc_call_method(call)->userdata;
        if (!ctx->volumes) {
                cap_error_set(err, -ENODEV, CAP_UNAVAILABLE,
                              "volumes are not available on this capsule "
                              "(see capsuled's log for why they failed to start)");
                return NULL;
        }
        return ctx;
}

static void hex(const unsigned char *md, unsigned n, char *out)
{
        for (unsigned i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", md[i]);
}

/* ---- Backup ----------------------------------------------------------------------------------- */

struct backup_out {
        struct rpc_call *call;
        EVP_MD_CTX *md;
        unsigned char buf[CHUNK];
        size_t len;
        uint64_t total;
        uint64_t size_bytes;
        const char *consistency;
        bool sent_first;
};

static int backup_flush(struct backup_out *o, struct cap_error *err)
{
        Capsule__V1__VolumeBackupChunk c = CAPSULE__V1__VOLUME_BACKUP_CHUNK__INIT;
        c.data.data = o->buf;
        c.data.len = o->len;
        if (!o->sent_first) {
                c.size_bytes = o->size_bytes;
                c.consistency = (char *)o->consistency;
                o->sent_first = true;
        }
        o->len = 0;
        return rpc_call_send(o->call, &c.base, err);
}

static int backup_out(void *ud, const void *buf, size_t len, struct cap_error *err)
{
        struct backup_out *o = ud;
        EVP_DigestUpdate(o->md, buf, len);
        o->total += len;
        const unsigned char *p = buf;
        while (len) {
                size_t n = len < CHUNK - o->len ? len : CHUNK - o->len;
                memcpy(o->buf + o->len, p, n);
                o->len += n;
                p += n;
                len -= n;
                if (o->len == CHUNK && backup_flush(o, err) < 0)
                        return -ECANCELED;
        }
        return 0;
}

int volumes_rpc_backup(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        const Capsule__V1__VolumeBackupRequest *in = (const Capsule__V1__VolumeBackupRequest *)req;
        struct serve_ctx *ctx = ctx_of(call, err);
        if (!ctx)
                return err->code;
        struct volume_backup bk;
        int r = volume_backup_begin(ctx->volumes, in->name, &bk, err);
        if (r < 0)
                return r;
        struct backup_out *o = calloc(1, sizeof(*o));
        if (!o || !(o->md = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(o->md, EVP_sha256(), NULL)) {
                if (o)
                        EVP_MD_CTX_free(o->md);
                free(o);
                volume_backup_end(ctx->volumes, &bk);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        o->call = call;
        o->size_bytes = bk.size_bytes;
        o->consistency = bk.consistency;
        events_publish(ctx->events, "volume", in->name, "backup-started", "%s copy%s%s",
                       bk.consistency, bk.vm ? " of the disk of microVM " : "",
                       bk.vm ? bk.vm : "");
        uint64_t entries = 0;
        r = volume_tar_write(bk.dir, in->name, bk.size_bytes, backup_out, o, &entries, err);
        if (r == 0 && (o->len || !o->sent_first))
                r = backup_flush(o, err);
        if (r == 0) {
                unsigned char md[32];
                unsigned mdlen = 0;
                char sum[65];
                EVP_DigestFinal_ex(o->md, md, &mdlen);
                hex(md, mdlen, sum);
                Capsule__V1__VolumeBackupChunk c = CAPSULE__V1__VOLUME_BACKUP_CHUNK__INIT;
                c.sha256 = sum;
                c.total_bytes = o->total;
                r = rpc_call_send(call, &c.base, err);
        }
        volume_backup_end(ctx->volumes, &bk);
        if (r == 0) {
                log_info("volume backup name=%s entries=%" PRIu64 " bytes=%" PRIu64, in->name,
                         entries, o->total);
                events_publish(ctx->events, "volume", in->name, "backed-up",
                               "%" PRIu64 " entries, %" PRIu64 " bytes", entries, o->total);
        } else {
                if (err->status != CAP_CANCELLED)
                        cap_error_prefix(err, "back up volume \"%s\"", in->name);
                log_warn("volume backup name=%s failed: %s", in->name, err->msg);
                events_publish(ctx->events, "volume", in->name, "backup-failed", "%s", err->msg);
        }
        EVP_MD_CTX_free(o->md);
        free(o);
        return r;
}

/* ---- Restore ---------------------------------------------------------------------------------- */

struct restore_in {
        struct rpc_call *call;
        EVP_MD_CTX *md;
        Capsule__V1__VolumeRestoreRequest *msg; /* the message whose data is being read */
        Capsule__V1__VolumeRestoreRequest *first;
        char sha256[65]; /* from the client's last message */
        uint64_t total;
        bool eof;
        bool first_given;
};

/* volume_tar_in_fn over the upload: the first message's data, then each following message's. */
static ssize_t restore_in(void *ud, const void **buf, struct cap_error *err)
{
        struct restore_in *in = ud;
        if (!in->first_given) {
                in->first_given = true;
                if (in->first->data.len) {
                        EVP_DigestUpdate(in->md, in->first->data.data, in->first->data.len);
                        in->total += in->first->data.len;
                        *buf = in->first->data.data;
                        return (ssize_t)in->first->data.len;
                }
        }
        for (;;) {
                if (in->msg && in->msg != in->first)
                        protobuf_c_message_free_unpacked(&in->msg->base, NULL);
                in->msg = NULL;
                if (in->eof)
                        return 0;
                ProtobufCMessage *m = NULL;
                int r = rpc_call_recv(in->call, &m, err);
                if (r < 0)
                        return r;
                if (r == 0) {
                        in->eof = true;
                        return 0;
                }
                in->msg = (Capsule__V1__VolumeRestoreRequest *)m;
                if (in->msg->sha256 && *in->msg->sha256)
                        snprintf(in->sha256, sizeof(in->sha256), "%s", in->msg->sha256);
                if (in->msg->data.len) {
                        EVP_DigestUpdate(in->md, in->msg->data.data, in->msg->data.len);
                        in->total += in->msg->data.len;
                        *buf = in->msg->data.data;
                        return (ssize_t)in->msg->data.len;
                }
        }
}

/* Reads what the client still sends after the archive's end (tar padding, the trailer). */
static int restore_drain(struct restore_in *in, struct cap_error *err)
{
        const void *buf;
        ssize_t n;
        while ((n = restore_in(in, &buf, err)) > 0)
                ;
        return n < 0 ? (int)n : 0;
}

static int restore_run(struct serve_ctx *ctx, struct restore_in *in, Capsule__V1__VolumeRestoreResponse *resp,
                       struct cap_error *err)
{
        const char *name = in->first->name;
        struct volume_tar_reader *rd = NULL;
        uint64_t recorded = 0;
        int r = name_check("name", name, err);
        if (r < 0)
                return r;
        r = volume_tar_reader_open(restore_in, in, &recorded, &rd, err);
        if (r < 0)
                return r;
        struct volume_restore rs;
        r = volume_restore_begin(ctx->volumes, name, in->first->size_bytes, recorded, &rs, err);
        if (r < 0) {
                volume_tar_reader_free(rd);
                return r;
        }
        fault_point("volume-restore-after-begin");
        events_publish(ctx->events, "volume", name, "restore-started", "%s",
                       rs.created ? "into a new volume" : "replacing its data");
        uint64_t entries = 0;
        r = volume_tar_extract(rd, rs.dir, rs.size_bytes, &entries, err);
        volume_tar_reader_free(rd);
        if (r == 0)
                r = restore_drain(in, err);
        if (r == 0) {
                unsigned char md[32];
                unsigned mdlen = 0;
                char sum[65];
                EVP_DigestFinal_ex(in->md, md, &mdlen);
                hex(md, mdlen, sum);
                if (!in->sha256[0])
                        r = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                          "sha256: the upload ended without its checksum "
                                          "(cut short?)");
                else if (strcmp(sum, in->sha256) != 0)
                        r = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                          "sha256: the upload's bytes hash to %s, the client "
                                          "sent %s",
                                          sum, in->sha256);
        }
        bool created = rs.created;
        struct volume_info vi = {0};
        if (r == 0)
                r = volume_restore_commit(ctx->volumes, &rs, &vi, err);
        volume_restore_abort(ctx->volumes, &rs);
        if (r < 0)
                return r;
        resp->created = created;
        resp->entries = entries;
        resp->volume = volumes_to_proto(&vi);
        volume_info_free(&vi);
        log_info("volume restored name=%s entries=%" PRIu64 " bytes=%" PRIu64 "%s", name, entries,
                 in->total, created ? " (created)" : "");
        events_publish(ctx->events, "volume", name, "restored",
                       "%" PRIu64 " entries from %" PRIu64 " bytes%s", entries, in->total,
                       created ? " (volume created)" : "");
        return resp->volume ? 0 : cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

int volumes_rpc_restore(struct rpc_call *call, const ProtobufCMessage *req, struct cap_error *err)
{
        (void)req;
        struct serve_ctx *ctx = ctx_of(call, err);
        if (!ctx)
                return err->code;
        struct restore_in in = {.call = call};
        ProtobufCMessage *m = NULL;
        int r = rpc_call_recv(call, &m, err);
        if (r == 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "name: the upload was empty (no first message)");
        if (r < 0)
                return r;
        in.first = (Capsule__V1__VolumeRestoreRequest *)m;
        if (!(in.md = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(in.md, EVP_sha256(), NULL)) {
                EVP_MD_CTX_free(in.md);
                protobuf_c_message_free_unpacked(m, NULL);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        char name[128];
        snprintf(name, sizeof(name), "%s", in.first->name ? in.first->name : "");
        Capsule__V1__VolumeRestoreResponse resp = CAPSULE__V1__VOLUME_RESTORE_RESPONSE__INIT;
        r = restore_run(ctx, &in, &resp, err);
        if (in.msg && in.msg != in.first)
                protobuf_c_message_free_unpacked(&in.msg->base, NULL);
        protobuf_c_message_free_unpacked(m, NULL);
        EVP_MD_CTX_free(in.md);
        if (r == 0) {
                r = rpc_call_send(call, &resp.base, err);
                if (resp.volume)
                        protobuf_c_message_free_unpacked(&resp.volume->base, NULL);
                return r;
        }
        if (err->status != CAP_CANCELLED && err->status != CAP_FAILED_PRECONDITION &&
            !strstr(err->msg, "restore volume"))
                cap_error_prefix(err, "restore volume \"%s\"", name);
        log_warn("volume restore name=%s failed: %s", name, err->msg);
        events_publish(ctx->events, "volume", name, "restore-failed", "%s", err->msg);
        return r;
}
