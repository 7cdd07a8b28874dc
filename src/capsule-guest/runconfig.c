/* CAPSULE1 run config framing: encode/write for the host, read/decode/validate for the guest
 * (see runconfig.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "runconfig.h"

static int path_ok(const char *p)
{
        if (!p || p[0] != '/')
                return 0;
        for (const char *s = p; (s = strstr(s, "..")); s += 2) {
                bool start = s == p || s[-1] == '/';
                bool end = s[2] == '\0' || s[2] == '/';
                if (start && end)
                        return 0;
        }
        return 1;
}

int runconfig_validate(const RunConfig *rc, struct cap_error *err)
{
        if (rc->n_argv == 0 || !rc->argv[0] || !rc->argv[0][0])
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "argv: must name a program");
        for (size_t i = 0; i < rc->n_env; i++) {
                const char *e = rc->env[i];
                const char *eq = e ? strchr(e, '=') : NULL;
                if (!eq || eq == e)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "env[%zu] \"%.64s\": expected KEY=VALUE", i,
                                             e ? e : "");
        }
        if (rc->working_dir && rc->working_dir[0] && !path_ok(rc->working_dir))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "working_dir \"%.128s\": must be an absolute path without ..",
                                     rc->working_dir);
        for (size_t i = 0; i < rc->n_volumes; i++) {
                const Capsule__Guest__V1__VolumeMount *v = rc->volumes[i];
                if (!v->device || !v->device[0])
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "volumes[%zu].device: must not be empty", i);
                if (!path_ok(v->path) || strcmp(v->path, "/") == 0)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "volumes[%zu].path \"%.128s\": must be an absolute "
                                             "path other than / without ..",
                                             i, v->path ? v->path : "");
        }
        return 0;
}

int runconfig_encode(const RunConfig *rc, uint8_t **buf, size_t *len, struct cap_error *err)
{
        int r = runconfig_validate(rc, err);
        if (r < 0)
                return cap_error_prefix(err, "run config");
        size_t n = protobuf_c_message_get_packed_size(&rc->base);
        if (n > RUNCONFIG_MAX_LEN)
                return cap_error_set(err, -E2BIG, CAP_INVALID_ARGUMENT,
                                     "run config: %zu bytes encoded, more than the %u allowed", n,
                                     RUNCONFIG_MAX_LEN);
        size_t total = RUNCONFIG_HEADER_LEN + n;
        total = (total + RUNCONFIG_SECTOR - 1) / RUNCONFIG_SECTOR * RUNCONFIG_SECTOR;
        uint8_t *b = calloc(1, total);
        if (!b)
                return cap_error_errno(err, -ENOMEM, "run config: allocate %zu bytes", total);
        memcpy(b, RUNCONFIG_MAGIC, RUNCONFIG_MAGIC_LEN);
        for (int i = 0; i < 4; i++)
                b[RUNCONFIG_MAGIC_LEN + i] = (uint8_t)(n >> (8 * i));
        protobuf_c_message_pack(&rc->base, b + RUNCONFIG_HEADER_LEN);
        *buf = b;
        *len = total;
        return 0;
}

/* Checks the 12-byte header; on success *msg_len is the message length. */
static int header_check(const uint8_t *buf, size_t len, const char *what, uint32_t *msg_len,
                        struct cap_error *err)
{
        if (len < RUNCONFIG_HEADER_LEN)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "%s: truncated run config: %zu bytes, the header alone is %d",
                                     what, len, RUNCONFIG_HEADER_LEN);
        if (memcmp(buf, RUNCONFIG_MAGIC, RUNCONFIG_MAGIC_LEN) != 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "%s: bad magic: not a Capsule run config (expected \"%s\")",
                                     what, RUNCONFIG_MAGIC);
        uint32_t n = 0;
        for (int i = 0; i < 4; i++)
                n |= (uint32_t)buf[RUNCONFIG_MAGIC_LEN + i] << (8 * i);
        if (n > RUNCONFIG_MAX_LEN)
                return cap_error_set(err, -EFBIG, CAP_INVALID_ARGUMENT,
                                     "%s: run config length %u exceeds the maximum of %u", what, n,
                                     RUNCONFIG_MAX_LEN);
        *msg_len = n;
        return 0;
}

int runconfig_decode(const uint8_t *buf, size_t len, const char *what, RunConfig **out,
                     struct cap_error *err)
{
        uint32_t n;
        int r = header_check(buf, len, what, &n, err);
        if (r < 0)
                return r;
        if ((size_t)n > len - RUNCONFIG_HEADER_LEN)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "%s: truncated run config: header says %u bytes, %zu present",
                                     what, n, len - RUNCONFIG_HEADER_LEN);
        RunConfig *rc = capsule__guest__v1__run_config__unpack(NULL, n, buf + RUNCONFIG_HEADER_LEN);
        if (!rc)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "%s: run config: malformed protobuf (%u bytes)", what, n);
        r = runconfig_validate(rc, err);
        if (r < 0) {
                runconfig_free(rc);
                return cap_error_prefix(err, "%s: run config", what);
        }
        *out = rc;
        return 0;
}

/* Reads exactly len bytes at the current offset; -EIO on a short file. */
static int read_full(int fd, uint8_t *buf, size_t len, size_t *got)
{
        *got = 0;
        while (*got < len) {
                ssize_t k = read(fd, buf + *got, len - *got);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                *got += (size_t)k;
        }
        return 0;
}

int runconfig_read_file(const char *path, RunConfig **out, struct cap_error *err)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "%s: open", path);
        uint8_t head[RUNCONFIG_HEADER_LEN];
        size_t got;
        int r = read_full(fd, head, sizeof(head), &got);
        if (r < 0)
                return cap_error_errno(err, r, "%s: read", path);
        uint32_t n;
        r = header_check(head, got, path, &n, err);
        if (r < 0)
                return r;
        _cleanup_free_ uint8_t *buf = malloc(RUNCONFIG_HEADER_LEN + (size_t)n);
        if (!buf)
                return cap_error_errno(err, -ENOMEM, "%s: allocate %u bytes", path, n);
        memcpy(buf, head, RUNCONFIG_HEADER_LEN);
        r = read_full(fd, buf + RUNCONFIG_HEADER_LEN, n, &got);
        if (r < 0)
                return cap_error_errno(err, r, "%s: read", path);
        return runconfig_decode(buf, RUNCONFIG_HEADER_LEN + got, path, out, err);
}

int runconfig_write_file(const char *path, const RunConfig *rc, struct cap_error *err)
{
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        int r = runconfig_encode(rc, &buf, &len, err);
        if (r < 0)
                return cap_error_prefix(err, "%s", path);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return cap_error_errno(err, -errno, "%s: create", path);
        for (size_t off = 0; off < len;) {
                ssize_t k = write(fd, buf + off, len - off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return cap_error_errno(err, -errno, "%s: write", path);
                off += (size_t)k;
        }
        if (fsync(fd) < 0 && errno != EINVAL)
                return cap_error_errno(err, -errno, "%s: fsync", path);
        int c = TAKE_FD(fd);
        if (close(c) < 0)
                return cap_error_errno(err, -errno, "%s: close", path);
        return 0;
}

void runconfig_free(RunConfig *rc)
{
        if (rc)
                capsule__guest__v1__run_config__free_unpacked(rc, NULL);
}
