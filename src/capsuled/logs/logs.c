/* Workload log files: paths, removal and the reader behind Workloads.Logs (see logs.h for the
 * format; writer.c is the writer containerd's shim runs). */
#include "logs.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"

char *logs_path(const char *root, const char *name)
{
        char *p = NULL;
        if (asprintf(&p, "%s/logs/%s.log", root, name) < 0)
                return NULL;
        return p;
}

int logs_remove(const char *root, const char *name, struct cap_error *err)
{
        _cleanup_free_ char *p = logs_path(root, name);
        _cleanup_free_ char *p1 = NULL;
        if (!p || asprintf(&p1, "%s.1", p) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        if (unlink(p) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "remove %s", p);
        if (unlink(p1) < 0 && errno != ENOENT)
                return cap_error_errno(err, -errno, "remove %s", p1);
        return 0;
}

/* ---- reader ---------------------------------------------------------------------------------- */

static bool parse_time(const char *s, size_t len, int64_t *ns)
{
        /* YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ = 30 chars */
        if (len < 30 || s[4] != '-' || s[10] != 'T' || s[19] != '.' || s[29] != 'Z')
                return false;
        struct tm tm = {0};
        char tmp[31];
        memcpy(tmp, s, 30);
        tmp[30] = '\0';
        long nsec = 0;
        if (sscanf(tmp, "%4d-%2d-%2dT%2d:%2d:%2d.%9ldZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &tm.tm_sec, &nsec) != 7)
                return false;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        *ns = (int64_t)timegm(&tm) * 1000000000LL + nsec;
        return true;
}

/* Parses one record line (without its newline). The record's data points into a scratch buffer
 * holding the text plus "\n" for full lines. */
static bool parse_record(const char *line, size_t len, char *scratch, struct log_record *rec)
{
        if (!parse_time(line, len, &rec->time_ns) || len < 33 || line[30] != ' ')
                return false;
        const char *p = line + 31, *end = line + len;
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        if (!sp || sp + 2 >= end + 1 || (sp[1] != 'F' && sp[1] != 'P'))
                return false;
        if ((size_t)(sp - p) == 6 && memcmp(p, "stdout", 6) == 0)
                rec->stream = "stdout";
        else if ((size_t)(sp - p) == 6 && memcmp(p, "stderr", 6) == 0)
                rec->stream = "stderr";
        else
                return false;
        bool full = sp[1] == 'F';
        const char *text = sp + 3 <= end ? sp + 3 : end;
        size_t tlen = (size_t)(end - text);
        if (tlen > LOGS_MAX_LINE)
                tlen = LOGS_MAX_LINE;
        memcpy(scratch, text, tlen);
        if (full)
                scratch[tlen++] = '\n';
        rec->data = scratch;
        rec->len = tlen;
        return true;
}

struct file_buf {
        char *data;
        size_t len;
};

static int read_all(int fd, off_t from, struct file_buf *fb)
{
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size <= from) {
                fb->data = NULL;
                fb->len = 0;
                return 0;
        }
        size_t want = (size_t)(st.st_size - from);
        fb->data = malloc(want + 1);
        if (!fb->data)
                return -ENOMEM;
        size_t got = 0;
        while (got < want) {
                ssize_t n = pread(fd, fb->data + got, want - got, from + (off_t)got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                got += (size_t)n;
        }
        fb->len = got;
        return 0;
}

/* Counts complete lines in buf. */
static size_t count_lines(const char *buf, size_t len)
{
        size_t n = 0;
        if (!buf) /* no file, or nothing in it: memchr(NULL, ...) is undefined even for 0 bytes */
                return 0;
        for (const char *p = buf; (p = memchr(p, '\n', (size_t)(buf + len - p))); p++)
                n++;
        return n;
}

/* Emits complete lines of buf, skipping the first `skip`; returns bytes consumed (up to the last
 * newline) through *used. */
static int emit_lines(const char *buf, size_t len, size_t skip, log_record_fn fn, void *ud, size_t *used)
{
        static __thread char scratch[LOGS_MAX_LINE + 2];
        size_t start = 0, idx = 0;
        int r = 0;
        for (size_t i = 0; i < len; i++) {
                if (buf[i] != '\n')
                        continue;
                if (idx++ >= skip) {
                        struct log_record rec;
                        if (parse_record(buf + start, i - start, scratch, &rec) && (r = fn(&rec, ud)) != 0) {
                                start = i + 1;
                                break;
                        }
                }
                start = i + 1;
        }
        if (used)
                *used = start;
        return r;
}

int logs_read(const char *path, int64_t tail, const struct logs_follow *follow, log_record_fn fn, void *ud,
              struct cap_error *err)
{
        _cleanup_free_ char *old_path = NULL;
        if (asprintf(&old_path, "%s.1", path) < 0)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        struct file_buf fold = {0}, fcur = {0};
        _cleanup_close_ int ofd = open(old_path, O_RDONLY | O_CLOEXEC);
        int cfd = open(path, O_RDONLY | O_CLOEXEC);
        int r = 0;
        if (ofd >= 0 && (r = read_all(ofd, 0, &fold)) < 0)
                goto out;
        if (cfd >= 0 && (r = read_all(cfd, 0, &fcur)) < 0)
                goto out;
        size_t nold = count_lines(fold.data, fold.len), ncur = count_lines(fcur.data, fcur.len);
        size_t total = nold + ncur, skip = 0;
        if (tail >= 0 && (size_t)tail < total)
                skip = total - (size_t)tail;
        size_t used = 0;
        if ((r = emit_lines(fold.data, fold.len, skip, fn, ud, NULL)) != 0)
                goto out;
        skip = skip > nold ? skip - nold : 0;
        if ((r = emit_lines(fcur.data, fcur.len, skip, fn, ud, &used)) != 0)
                goto out;
        if (!follow)
                goto out;

        /* follow: track the current file by inode; drain the old one when it rotates */
        off_t off = (off_t)used;
        ino_t ino = 0;
        struct stat st;
        if (cfd >= 0 && fstat(cfd, &st) == 0)
                ino = st.st_ino;
        while (!follow->should_stop(follow->ud)) {
                if (cfd < 0) {
                        cfd = open(path, O_RDONLY | O_CLOEXEC);
                        off = 0;
                        if (cfd >= 0 && fstat(cfd, &st) == 0)
                                ino = st.st_ino;
                }
                if (cfd >= 0) {
                        struct file_buf fb = {0};
                        if ((r = read_all(cfd, off, &fb)) < 0)
                                goto out;
                        size_t u = 0;
                        r = emit_lines(fb.data, fb.len, 0, fn, ud, &u);
                        free(fb.data);
                        off += (off_t)u;
                        if (r != 0)
                                goto out;
                        struct stat pst;
                        if (stat(path, &pst) == 0 && pst.st_ino != ino) {
                                /* rotated: the writer no longer writes to cfd; drain what it
                                 * wrote between our read and the rename, then switch files */
                                if ((r = read_all(cfd, off, &fb)) < 0)
                                        goto out;
                                r = emit_lines(fb.data, fb.len, 0, fn, ud, NULL);
                                free(fb.data);
                                if (r != 0)
                                        goto out;
                                close(cfd);
                                cfd = -1;
                                /* rotated twice since the last poll: NAME.log.1 is not the
                                 * file just drained but the one after it; read it next (the
                                 * next pass sees the rotation again and moves to NAME.log) */
                                int ofd1 = open(old_path, O_RDONLY | O_CLOEXEC);
                                if (ofd1 >= 0 && fstat(ofd1, &st) == 0 && st.st_ino != ino) {
                                        cfd = ofd1;
                                        off = 0;
                                        ino = st.st_ino;
                                } else if (ofd1 >= 0) {
                                        close(ofd1);
                                }
                                continue;
                        }
                }
                poll(NULL, 0, 200);
        }
out:
        if (cfd >= 0)
                close(cfd);
        free(fold.data);
        free(fcur.data);
        if (r < 0)
                return cap_error_errno(err, r, "read logs %s", path);
        return r;
}
