/* The workload log writer that containerd's shim runs for each task (see logs.h for the format).
 * Only libc: it is linked into capsuled (`capsuled log-writer`) and into the small
 * capsule-log-writer program, which starts in a few milliseconds where capsuled, with its
 * ~90 shared libraries, takes tens of them; the shim waits for the writer before it can start
 * the task. */
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

struct writer {
        const char *path;
        int fd;
        off_t size;
        off_t cap;
};

static int writer_open(struct writer *w)
{
        w->fd = open(w->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (w->fd < 0)
                return -errno;
        struct stat st;
        w->size = fstat(w->fd, &st) == 0 ? st.st_size : 0;
        return 0;
}

static void writer_rotate(struct writer *w)
{
        char old[4096];
        snprintf(old, sizeof(old), "%s.1", w->path);
        close(w->fd);
        rename(w->path, old);
        if (writer_open(w) < 0)
                w->fd = -1;
}

static void writer_record(struct writer *w, const char *stream, bool full, const char *data, size_t len)
{
        if (w->fd < 0)
                return;
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        char head[96];
        int hn = snprintf(head, sizeof(head), "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ %s %c ", tm.tm_year + 1900,
                          tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec, stream,
                          full ? 'F' : 'P');
        char rec[96 + LOGS_MAX_LINE + 1];
        memcpy(rec, head, (size_t)hn);
        memcpy(rec + hn, data, len);
        rec[hn + (int)len] = '\n';
        size_t total = (size_t)hn + len + 1;
        /* one write per record: readers never see half a record */
        ssize_t n = write(w->fd, rec, total);
        if (n > 0)
                w->size += n;
        if (w->size >= w->cap)
                writer_rotate(w);
}

struct stream_buf {
        const char *name;
        int fd;
        char buf[LOGS_MAX_LINE];
        size_t len;
};

/* Emits every complete line in sb (and a partial record when the buffer is full). */
static void stream_flush_lines(struct writer *w, struct stream_buf *sb, bool eof)
{
        size_t start = 0;
        for (size_t i = 0; i < sb->len; i++) {
                if (sb->buf[i] == '\n') {
                        writer_record(w, sb->name, true, sb->buf + start, i - start);
                        start = i + 1;
                }
        }
        if (start < sb->len && (eof || (start == 0 && sb->len == sizeof(sb->buf)))) {
                writer_record(w, sb->name, false, sb->buf + start, sb->len - start);
                start = sb->len;
        }
        memmove(sb->buf, sb->buf + start, sb->len - start);
        sb->len -= start;
}

int logwriter_main(int argc, char **argv)
{
        if (argc < 2) {
                fprintf(stderr, "usage: capsuled log-writer PATH [CAP_BYTES] (run by containerd's shim)\n");
                return 2;
        }
        struct writer w = {.path = argv[1], .cap = LOGS_DEFAULT_CAP};
        if (argc > 2) {
                long long c = atoll(argv[2]);
                if (c >= 4096)
                        w.cap = c;
        }
        /* the directory exists (serve creates ROOT/logs); open before saying ready */
        if (writer_open(&w) < 0)
                w.fd = -1;
        close(5); /* ready: the shim waits for this before starting the task */
        struct stream_buf out = {.name = "stdout", .fd = 3}, errb = {.name = "stderr", .fd = 4};
        struct stream_buf *sbs[2] = {&out, &errb};
        int open_streams = 2;
        while (open_streams > 0) {
                struct pollfd pfd[2] = {{.fd = out.fd, .events = POLLIN}, {.fd = errb.fd, .events = POLLIN}};
                if (poll(pfd, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                for (int i = 0; i < 2; i++) {
                        if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        struct stream_buf *sb = sbs[i];
                        ssize_t n = read(sb->fd, sb->buf + sb->len, sizeof(sb->buf) - sb->len);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0) {
                                stream_flush_lines(&w, sb, true);
                                close(sb->fd);
                                sb->fd = -1;
                                open_streams--;
                                continue;
                        }
                        sb->len += (size_t)n;
                        stream_flush_lines(&w, sb, false);
                }
        }
        if (w.fd >= 0)
                fsync(w.fd);
        return 0;
}

