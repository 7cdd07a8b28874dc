/* Unit tests for src/capsuled/logs/logs.c: the log writer run as containerd's shim runs it (a child
 * with the task's stdout, stderr and the ready pipe on fds 3, 4 and 5), the record format (full,
 * partial, over-long lines), rotation under a small cap, and logs_read with tail and with follow
 * across rotations (every record exactly once, in order). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "logs/logs.h"
#include "test.h"

static char dir[64], logdir[80]; /* ROOT and ROOT/logs */

/* A running `capsuled log-writer PATH CAP` child: write to out/err, close both to end it. */
struct writer_proc {
        pid_t pid;
        int out, err;
        bool ready; /* fd 5 was closed before any output was written */
};

static void make_dir(void)
{
        snprintf(dir, sizeof(dir), "/tmp/test-logs-XXXXXX");
        if (!mkdtemp(dir)) {
                perror("mkdtemp");
                exit(1);
        }
        snprintf(logdir, sizeof(logdir), "%s/logs", dir);
        if (mkdir(logdir, 0755) < 0) {
                perror("mkdir");
                exit(1);
        }
}

static char *path_in(const char *name)
{
        static char buf[4][128];
        static int i;
        i = (i + 1) % 4;
        snprintf(buf[i], sizeof(buf[i]), "%s/%s", logdir, name);
        return buf[i];
}

/* In the child: moves the three pipe ends to fds 3, 4 and 5 (they may already sit on those
 * numbers, so go through high fds first) and closes everything else. */
static void child_fds(int out, int err, int ready)
{
        int o = fcntl(out, F_DUPFD, 20), e = fcntl(err, F_DUPFD, 20), r = fcntl(ready, F_DUPFD, 20);
        if (o < 0 || e < 0 || r < 0)
                _exit(100);
        if (dup2(o, 3) < 0 || dup2(e, 4) < 0 || dup2(r, 5) < 0)
                _exit(101);
        for (int fd = 6; fd < 1024; fd++)
                close(fd);
}

static int writer_start(struct writer_proc *w, const char *path, const char *cap)
{
        int po[2], pe[2], pr[2];
        if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0 || pipe2(pr, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                child_fds(po[0], pe[0], pr[1]);
                char *argv[] = {"log-writer", (char *)path, (char *)cap, NULL};
                _exit(logwriter_main(cap ? 3 : 2, argv));
        }
        close(po[0]);
        close(pe[0]);
        close(pr[1]);
        /* ready: the read end sees EOF once the child closed fd 5 (it holds the only write end) */
        struct pollfd p = {.fd = pr[0], .events = POLLIN};
        char c;
        w->ready = poll(&p, 1, 5000) == 1 && read(pr[0], &c, 1) == 0;
        close(pr[0]);
        w->pid = pid;
        w->out = po[1];
        w->err = pe[1];
        return 0;
}

/* Closes the task's streams and waits for the writer; its exit status. */
static int writer_finish(struct writer_proc *w)
{
        if (w->out >= 0)
                close(w->out);
        if (w->err >= 0)
                close(w->err);
        w->out = w->err = -1;
        int st = 0;
        if (waitpid(w->pid, &st, 0) < 0)
                return -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool write_all(int fd, const char *s, size_t len)
{
        while (len > 0) {
                ssize_t n = write(fd, s, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return false;
                s += n;
                len -= (size_t)n;
        }
        return true;
}

static bool write_str(int fd, const char *s)
{
        return write_all(fd, s, strlen(s));
}

/* What logs_read gave: up to 4096 records, data copied. */
struct got {
        size_t n;
        char *stream[4096];
        char *data[4096];
        size_t len[4096];
        int64_t time_ns[4096];
        size_t stop_after; /* follow: should_stop once this many arrived (0: never) */
        time_t deadline;
        bool timed_out;
};

static int collect(const struct log_record *rec, void *ud)
{
        struct got *g = ud;
        if (g->n >= 4096)
                return 1;
        g->stream[g->n] = strdup(rec->stream);
        g->data[g->n] = strndup(rec->data, rec->len);
        g->len[g->n] = rec->len;
        g->time_ns[g->n] = rec->time_ns;
        g->n++;
        return 0;
}

static void got_free(struct got *g)
{
        for (size_t i = 0; i < g->n; i++) {
                free(g->stream[i]);
                free(g->data[i]);
        }
        free(g);
}

static struct got *read_logs(const char *path, int64_t tail)
{
        struct got *g = calloc(1, sizeof(*g));
        struct cap_error err = {0};
        int r = logs_read(path, tail, NULL, collect, g, &err);
        if (r != 0)
                fprintf(stderr, "  logs_read: %d %s\n", r, err.msg);
        CHECK(r == 0);
        return g;
}

static off_t file_size(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Names in ROOT/logs other than . and .. (a single-line list). */
static int list_dir(char *buf, size_t len)
{
        DIR *d = opendir(logdir);
        int n = 0;
        buf[0] = '\0';
        for (struct dirent *e; d && (e = readdir(d));) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                n++;
                strncat(buf, e->d_name, len - strlen(buf) - 2);
                strcat(buf, " ");
        }
        if (d)
                closedir(d);
        return n;
}

/* Every line of the file is "<30-char time> stdout|stderr F|P text". */
static bool file_well_formed(const char *path)
{
        FILE *f = fopen(path, "r");
        if (!f)
                return false;
        static char line[LOGS_MAX_LINE + 256];
        bool ok = true;
        while (fgets(line, sizeof(line), f)) {
                size_t n = strlen(line);
                if (n < 41 || line[n - 1] != '\n' || line[4] != '-' || line[10] != 'T' ||
                    line[29] != 'Z' || line[30] != ' ' ||
                    (strncmp(line + 31, "stdout ", 7) && strncmp(line + 31, "stderr ", 7)) ||
                    (line[38] != 'F' && line[38] != 'P') || line[39] != ' ') {
                        fprintf(stderr, "  bad record: %.80s\n", line);
                        ok = false;
                }
        }
        fclose(f);
        return ok;
}

TEST(records)
{
        char path[128];
        snprintf(path, sizeof(path), "%s", path_in("rec.log"));
        struct writer_proc w;
        CHECK(writer_start(&w, path, NULL) == 0);
        CHECK(w.ready);
        CHECK(file_size(path) == 0); /* opened before saying ready */
        static char longline[LOGS_MAX_LINE + 101];
        memset(longline, 'x', LOGS_MAX_LINE + 99);
        longline[LOGS_MAX_LINE + 99] = '\n';
        CHECK(write_str(w.out, "hello\n"));
        CHECK(write_str(w.err, "oops: something\n"));
        CHECK(write_str(w.out, "two\nthree\n\n"));
        CHECK(write_all(w.out, longline, LOGS_MAX_LINE + 100));
        CHECK(write_str(w.err, "half"));
        CHECK(write_str(w.err, " and half\n"));
        CHECK(write_str(w.out, "no newline at the end"));
        CHECK(writer_finish(&w) == 0);
        CHECK(file_well_formed(path));

        struct got *g = read_logs(path, -1);
        /* per stream, in write order */
        const char *want_out[] = {
            "hello\n", "two\n", "three\n", "\n", NULL, NULL, "no newline at the end"};
        const char *want_err[] = {"oops: something\n", "half and half\n"};
        size_t no = 0, ne = 0;
        for (size_t i = 0; i < g->n; i++) {
                if (strcmp(g->stream[i], "stdout") == 0) {
                        if (no == 4) { /* the long line: a P record of LOGS_MAX_LINE bytes */
                                CHECK(g->len[i] == LOGS_MAX_LINE);
                                CHECK(g->data[i][0] == 'x' && g->data[i][LOGS_MAX_LINE - 1] == 'x');
                        } else if (no == 5) { /* then the rest as an F record */
                                CHECK(g->len[i] == 100);
                                CHECK(g->data[i][98] == 'x' && g->data[i][99] == '\n');
                        } else if (no < 7) {
                                CHECK_STR_EQ(g->data[i], want_out[no]);
                        }
                        no++;
                } else {
                        CHECK_STR_EQ(g->stream[i], "stderr");
                        if (ne < 2)
                                CHECK_STR_EQ(g->data[i], want_err[ne]);
                        ne++;
                }
                CHECK(i == 0 || g->time_ns[i] >= g->time_ns[i - 1]);
        }
        CHECK(no == 7);
        CHECK(ne == 2);
        CHECK(g->n > 0 && g->time_ns[0] > (int64_t)1600000000 * 1000000000LL);
        got_free(g);

        /* the partial records are marked P in the file */
        FILE *f = fopen(path, "r");
        static char line[LOGS_MAX_LINE + 256];
        int partial = 0;
        while (f && fgets(line, sizeof(line), f))
                partial += line[38] == 'P';
        if (f)
                fclose(f);
        CHECK(partial == 2);

        /* tail */
        g = read_logs(path, 1);
        CHECK(g->n == 1);
        CHECK(g->n == 1 && strcmp(g->data[0], "no newline at the end") == 0);
        got_free(g);
        g = read_logs(path, 0);
        CHECK(g->n == 0);
        got_free(g);

        /* a new run appends */
        CHECK(writer_start(&w, path, NULL) == 0);
        CHECK(w.ready);
        CHECK(write_str(w.out, "second run\n"));
        CHECK(writer_finish(&w) == 0);
        g = read_logs(path, 2);
        CHECK(g->n == 2);
        CHECK(g->n == 2 && strcmp(g->data[0], "no newline at the end") == 0 &&
              strcmp(g->data[1], "second run\n") == 0);
        got_free(g);
        struct cap_error err = {0};
        CHECK(logs_remove(dir, "rec", &err) == 0);
        CHECK(file_size(path) < 0);
}

TEST(missing_file)
{
        struct got *g = read_logs(path_in("none.log"), -1);
        CHECK(g->n == 0);
        got_free(g);
        struct cap_error err = {0};
        CHECK(logs_remove(dir, "none", &err) == 0);
}

/* Checks that records are "line N\n" for consecutive N ending at last; the first N. */
static long check_sequence(const struct got *g, long last)
{
        long first = -1;
        for (size_t i = 0; i < g->n; i++) {
                long v = -1;
                if (sscanf(g->data[i], "line %ld", &v) != 1)
                        fprintf(stderr, "  unexpected record %s", g->data[i]);
                if (i == 0)
                        first = v;
                if (v != first + (long)i) {
                        fprintf(stderr, "  record %zu is %ld, expected %ld\n", i, v,
                                first + (long)i);
                        CHECK(v == first + (long)i);
                        return -1;
                }
        }
        CHECK(g->n == 0 || first + (long)g->n - 1 == last);
        return first;
}

static size_t count_records(const char *path)
{
        FILE *f = fopen(path, "r");
        size_t n = 0;
        int c;
        while (f && (c = fgetc(f)) != EOF)
                n += c == '\n';
        if (f)
                fclose(f);
        return n;
}

#define RECORD_MAX 64 /* "<time> stdout F line NNNN\n" is 51 bytes */

TEST(rotation_and_tail)
{
        char path[128];
        snprintf(path, sizeof(path), "%s", path_in("rot.log"));
        struct writer_proc w;
        CHECK(writer_start(&w, path, "4096") == 0);
        CHECK(w.ready);
        char buf[64];
        for (int i = 0; i < 500; i++) {
                snprintf(buf, sizeof(buf), "line %04d\n", i);
                CHECK(write_str(w.out, buf));
        }
        CHECK(writer_finish(&w) == 0);

        char names[512];
        CHECK(list_dir(names, sizeof(names)) == 2); /* each test removes its files */
        CHECK(strstr(names, "rot.log ") && strstr(names, "rot.log.1 "));
        CHECK(!strstr(names, "rot.log.2"));
        CHECK(file_size(path) < 4096 + RECORD_MAX);
        CHECK(file_size(path_in("rot.log.1")) >= 4096);
        CHECK(file_size(path_in("rot.log.1")) < 4096 + RECORD_MAX);
        CHECK(file_well_formed(path) && file_well_formed(path_in("rot.log.1")));

        struct got *g = read_logs(path, 10);
        CHECK(g->n == 10);
        CHECK(check_sequence(g, 499) == 490);
        got_free(g);

        /* a tail reaching into the rotated file */
        size_t cur = count_records(path), old = count_records(path_in("rot.log.1"));
        CHECK(cur > 0 && old > 5);
        g = read_logs(path, (int64_t)cur + 5);
        CHECK(g->n == cur + 5);
        CHECK(check_sequence(g, 499) == 499 - (long)(cur + 5) + 1);
        got_free(g);

        /* everything: both files, oldest first */
        g = read_logs(path, -1);
        CHECK(g->n == cur + old);
        CHECK(check_sequence(g, 499) == 500 - (long)(cur + old));
        got_free(g);

        /* tail larger than what there is */
        g = read_logs(path, 100000);
        CHECK(g->n == cur + old);
        got_free(g);

        struct cap_error err = {0};
        CHECK(logs_remove(dir, "rot", &err) == 0);
        CHECK(file_size(path) < 0 && file_size(path_in("rot.log.1")) < 0);
}

#define FOLLOW_RECORDS 400

struct feeder {
        int fd;
        int n;
        int delay_us;
        int start_delay_ms; /* let the reader reach its follow loop first */
};

/* Writes "line N" lines slowly enough that the reader's 200 ms poll sees every rotation. */
static void *feed(void *arg)
{
        struct feeder *f = arg;
        char buf[64];
        struct timespec start = {0, f->start_delay_ms * 1000000L};
        nanosleep(&start, NULL);
        for (int i = 0; i < f->n; i++) {
                snprintf(buf, sizeof(buf), "line %04d\n", i);
                if (!write_str(f->fd, buf))
                        break;
                struct timespec ts = {0, f->delay_us * 1000L};
                if (f->delay_us)
                        nanosleep(&ts, NULL);
        }
        return NULL;
}

static bool follow_stop(void *ud)
{
        struct got *g = ud;
        if (time(NULL) > g->deadline) {
                g->timed_out = true;
                return true;
        }
        return g->stop_after && g->n >= g->stop_after;
}

TEST(follow_across_rotation)
{
        char path[128];
        snprintf(path, sizeof(path), "%s", path_in("fol.log"));
        struct writer_proc w;
        CHECK(writer_start(&w, path, "4096") == 0);
        CHECK(w.ready);
        struct got *g = calloc(1, sizeof(*g));
        g->stop_after = FOLLOW_RECORDS;
        g->deadline = time(NULL) + 30;
        /* ~51-byte records, 4096-byte cap: a rotation every ~80 records, i.e. every ~400 ms */
        struct feeder fd = {.fd = w.out, .n = FOLLOW_RECORDS, .delay_us = 5000};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, feed, &fd) == 0);
        struct logs_follow follow = {.should_stop = follow_stop, .ud = g};
        struct cap_error err = {0};
        int r = logs_read(path, -1, &follow, collect, g, &err);
        CHECK(r == 0);
        pthread_join(th, NULL);
        CHECK(writer_finish(&w) == 0);
        CHECK(!g->timed_out);
        CHECK(g->n == FOLLOW_RECORDS);
        CHECK(check_sequence(g, FOLLOW_RECORDS - 1) == 0);
        got_free(g);
        CHECK(file_size(path_in("fol.log.1")) > 0); /* it did rotate */
}

TEST(follow_fast_rotation)
{
        /* two rotations between two polls of the reader: the file in the middle (now NAME.log.1)
         * must still be read */
        char path[128];
        snprintf(path, sizeof(path), "%s", path_in("fast.log"));
        struct writer_proc w;
        CHECK(writer_start(&w, path, "4096") == 0);
        CHECK(w.ready);
        struct got *g = calloc(1, sizeof(*g));
        g->stop_after = 200;
        g->deadline = time(NULL) + 10;
        /* 200 records of ~51 bytes: 81 fill the first file, 81 the second, the rest the third */
        struct feeder fd = {.fd = w.out, .n = 200, .delay_us = 0, .start_delay_ms = 300};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, feed, &fd) == 0);
        struct logs_follow follow = {.should_stop = follow_stop, .ud = g};
        struct cap_error err = {0};
        CHECK(logs_read(path, -1, &follow, collect, g, &err) == 0);
        pthread_join(th, NULL);
        CHECK(writer_finish(&w) == 0);
        CHECK(!g->timed_out);
        CHECK(g->n == 200);
        CHECK(check_sequence(g, 199) == 0);
        got_free(g);
}

TEST(follow_waits_for_file)
{
        /* following a workload whose file does not exist yet picks it up when it appears */
        char path[128];
        snprintf(path, sizeof(path), "%s", path_in("late.log"));
        struct got *g = calloc(1, sizeof(*g));
        g->stop_after = 3;
        g->deadline = time(NULL) + 20;
        pid_t pid = fork();
        if (pid == 0) {
                struct timespec ts = {0, 300 * 1000000L};
                nanosleep(&ts, NULL);
                struct writer_proc w;
                if (writer_start(&w, path, NULL) < 0)
                        _exit(1);
                write_str(w.out, "line 0000\nline 0001\n");
                write_str(w.out, "line 0002\n");
                _exit(writer_finish(&w));
        }
        struct logs_follow follow = {.should_stop = follow_stop, .ud = g};
        struct cap_error err = {0};
        CHECK(logs_read(path, -1, &follow, collect, g, &err) == 0);
        int st = 0;
        CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CHECK(!g->timed_out);
        CHECK(g->n == 3);
        CHECK(check_sequence(g, 2) == 0);
        got_free(g);
}

TEST(usage)
{
        char *argv[] = {"log-writer", NULL};
        CHECK(logwriter_main(1, argv) == 2);
        char *p = logs_path("/var/lib/capsule", "web");
        CHECK_STR_EQ(p, "/var/lib/capsule/logs/web.log");
        free(p);
}

int main(void)
{
        signal(SIGPIPE, SIG_IGN);
        make_dir();
        RUN(records);
        RUN(missing_file);
        RUN(rotation_and_tail);
        RUN(follow_across_rotation);
        RUN(follow_fast_rotation);
        RUN(follow_waits_for_file);
        RUN(usage);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", dir);
        return test_summary();
}
