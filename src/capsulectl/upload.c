/* See upload.h. The stream: header, chunks (progress after each), trailer, half-close, then the
 * response. When a send fails the server ended the call: its status (rpc_stream_finish) says why.
 * A local read error keeps its own message and cancels the call. */
#include "upload.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "progress.h"
#include "rpc/rpc.h"

static void hex(const unsigned char *md, unsigned n, char *out)
{
        for (unsigned i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", md[i]);
}

/* Sends the header, fd's bytes and the trailer. *local: the failure is ours (read), not a send. */
static int send_all(struct rpc_stream *s, const struct ctl_upload *u, int fd, const char *path,
                    uint64_t total, struct ctl_progress *bar, bool *local, struct cap_error *err)
{
        _cleanup_free_ uint8_t *buf = malloc(u->chunk_size);
        EVP_MD_CTX *md = u->trailer ? EVP_MD_CTX_new() : NULL;
        if (!buf || (u->trailer && (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)))) {
                EVP_MD_CTX_free(md);
                *local = true;
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        uint64_t sent = 0;
        int rc = rpc_stream_send(s, u->header, err);
        while (rc == 0) {
                ssize_t n = read(fd, buf, u->chunk_size);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        rc = cap_error_errno(err, -errno, "read %s", path);
                        *local = true;
                        break;
                }
                if (n == 0)
                        break;
                if (md)
                        EVP_DigestUpdate(md, buf, (size_t)n);
                u->set_data(u->chunk, buf, (size_t)n);
                rc = rpc_stream_send(s, u->chunk, err);
                sent += (uint64_t)n;
                ctl_progress_update(bar, sent, total);
        }
        if (rc == 0 && md) {
                unsigned char d[EVP_MAX_MD_SIZE];
                unsigned dl = 0;
                char sum[2 * EVP_MAX_MD_SIZE + 1];
                EVP_DigestFinal_ex(md, d, &dl);
                hex(d, dl, sum);
                u->set_data(u->chunk, NULL, 0);
                u->trailer(u->chunk, sum);
                rc = rpc_stream_send(s, u->chunk, err);
        }
        EVP_MD_CTX_free(md);
        if (rc == 0)
                ctl_progress_end(bar, sent, total);
        else
                ctl_progress_abort(bar);
        return rc;
}

int ctl_upload_file(struct rpc_client *cl, const struct ctl_upload *u, int fd, const char *path,
                    uint64_t total, ProtobufCMessage **resp, struct cap_error *err)
{
        *resp = NULL;
        struct rpc_stream *s = rpc_stream_open(cl, u->method, u->response, 0, err);
        if (!s)
                return err->code < 0 ? err->code : -EIO;
        struct ctl_progress bar;
        ctl_progress_init(&bar, u->progress_label, u->progress_lines);
        bool local = false;
        int rc = send_all(s, u, fd, path, total, &bar, &local, err);
        if (rc == 0)
                rc = rpc_stream_close_send(s, err);
        if (rc == 0) {
                if (u->sent_note && (bar.tty || bar.lines))
                        fprintf(u->note_to ? u->note_to : stderr, "%s\n", u->sent_note);
                rc = rpc_stream_recv(s, resp, err);
                if (rc == 0)
                        rc = rpc_stream_finish(s, err) < 0
                                 ? -EIO
                                 : cap_error_set(err, -EPROTO, CAP_INTERNAL, "no response");
                else if (rc > 0)
                        rc = 0;
        } else if (!local) {
                rpc_stream_finish(s, err); /* a send failed: the server's status says why */
        }
        rpc_stream_free(s);
        return rc;
}

int ctl_upload_open(const char *path, bool allow_stdin, uint64_t *total, struct cap_error *err)
{
        int fd = allow_stdin && strcmp(path, "-") == 0 ? dup(STDIN_FILENO)
                                                       : open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
                int e = -errno;
                if (fd >= 0)
                        close(fd);
                return cap_error_errno(err, e, "%s", path);
        }
        *total = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
        return fd;
}
