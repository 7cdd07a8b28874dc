/* `capsulectl cp SRC DEST`: copies a file or a directory into or out of a running workload (either
 * kind), as a tar stream through Workloads/Exec and the workload's own `tar` (busybox's does), as
 * `kubectl cp` does: no second channel, no agent in the workload.
 *
 *   into:   the local tree is archived here (libarchive, ustar, owned by root) and piped to
 *           `tar -x -f - -C DIR` in the workload;
 *   out of: `tar -c -f - -C DIR NAME` in the workload is piped into cp_extract(), which trusts
 *           nothing in the stream: every entry must lie under NAME (no absolute paths, no "..",
 *           no writing through symlinks, hard links only inside the copy), devices and FIFOs are
 *           skipped, owners are not restored. */
#include "cp.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capsule/v1/workloads.pb-c.h"
#include "capsulectl.h"
#include "common/cleanup.h"
#include "rpc/rpc.h"

static const char cp_usage[] =
    "usage: capsulectl cp SRC NAME:DEST     (into workload NAME)\n"
    "       capsulectl cp NAME:SRC DEST     (out of workload NAME)\n"
    "\n"
    "Copies a file or a directory (recursively) into or out of a running workload, a Container or a\n"
    "MicroVM, as a tar stream through exec: the workload's image needs a `tar` (busybox has one).\n"
    "Into a workload, DEST is the copy's new path; a DEST ending in \"/\" is an existing directory\n"
    "the copy goes into under its own name. Out of a workload, DEST is the copy's new path, or an\n"
    "existing local directory it goes into. Files copied in are owned by root; files copied out\n"
    "belong to you. What comes out is checked: entries outside SRC, \"..\", absolute paths,\n"
    "writes through symbolic links and device nodes are refused or skipped.\n"
    "\n"
    "Examples:\n"
    "  capsulectl cp ./site web:/www/site\n"
    "  capsulectl cp index.html web:/www/\n"
    "  capsulectl cp web:/etc/hostname ./hostname\n"
    "  capsulectl cp db:/var/lib/db/ backup/\n";

/* ---- the exec stream -------------------------------------------------------------------------- */

struct feeder {
        struct rpc_stream *s;
        int fd;
        int stop_fd; /* readable: the command ended, stop feeding */
};

/* Copies fd to the exec's stdin, then half-closes. */
static void *feed(void *arg)
{
        struct feeder *f = arg;
        char buf[64 * 1024];
        struct cap_error err = {0};
        for (;;) {
                struct pollfd pf[2] = {{.fd = f->fd, .events = POLLIN}, {.fd = f->stop_fd, .events = POLLIN}};
                if (poll(pf, 2, -1) < 0 && errno != EINTR)
                        break;
                if (pf[1].revents)
                        return NULL;
                if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
                        continue;
                ssize_t n = read(f->fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                Capsule__V1__ExecRequest q = CAPSULE__V1__EXEC_REQUEST__INIT;
                q.msg_case = CAPSULE__V1__EXEC_REQUEST__MSG_STDIN;
                q.stdin.data = (uint8_t *)buf;
                q.stdin.len = (size_t)n;
                if (rpc_stream_send(f->s, &q.base, &err) < 0)
                        return NULL;
        }
        rpc_stream_close_send(f->s, &err);
        return NULL;
}

/* Runs argv in workload name with in_fd (or nothing, -1) as stdin and stdout into out_fd (closed
 * here when the command ends); its stderr is kept in errbuf. Returns its exit code, or -1 after
 * printing why the call failed. */
static int remote(struct ctl *ctl, const char *name, char **argv, size_t argc, int in_fd, int out_fd, char *errbuf,
                  size_t errlen)
{
        struct rpc_client *c = ctl_client(ctl);
        if (!c)
                return -1;
        struct cap_error err = {0};
        struct rpc_stream *s =
            rpc_stream_open(c, "/capsule.v1.Workloads/Exec", &capsule__v1__exec_response__descriptor, 0, &err);
        Capsule__V1__ExecStart st = CAPSULE__V1__EXEC_START__INIT;
        st.name = (char *)name;
        st.command = argv;
        st.n_command = argc;
        st.stdin = in_fd >= 0;
        Capsule__V1__ExecRequest q = CAPSULE__V1__EXEC_REQUEST__INIT;
        q.msg_case = CAPSULE__V1__EXEC_REQUEST__MSG_START;
        q.start = &st;
        if (!s || rpc_stream_send(s, &q.base, &err) < 0) {
                ctl_print_error(ctl, "cp", &err);
                rpc_stream_free(s);
                if (out_fd >= 0)
                        close(out_fd);
                return -1;
        }
        int stop[2] = {-1, -1};
        struct feeder f = {.s = s, .fd = in_fd};
        pthread_t th;
        bool fed = false;
        if (in_fd >= 0 && pipe2(stop, O_CLOEXEC) == 0) {
                f.stop_fd = stop[0];
                fed = pthread_create(&th, NULL, feed, &f) == 0;
        }
        if (in_fd < 0)
                rpc_stream_close_send(s, &err);
        int exit_code = -1, r;
        size_t elen = 0;
        ProtobufCMessage *m;
        while ((r = rpc_stream_recv(s, &m, &err)) == 1) {
                Capsule__V1__ExecResponse *resp = (Capsule__V1__ExecResponse *)m;
                if (resp->msg_case == CAPSULE__V1__EXEC_RESPONSE__MSG_STDOUT && out_fd >= 0) {
                        const uint8_t *d = resp->stdout.data;
                        size_t len = resp->stdout.len;
                        while (len > 0) {
                                ssize_t wn = write(out_fd, d, len);
                                if (wn < 0 && errno == EINTR)
                                        continue;
                                if (wn <= 0) { /* the reader gave up (its error is printed) */
                                        close(out_fd);
                                        out_fd = -1;
                                        break;
                                }
                                d += wn;
                                len -= (size_t)wn;
                        }
                } else if (resp->msg_case == CAPSULE__V1__EXEC_RESPONSE__MSG_STDERR) {
                        size_t n = resp->stderr.len < errlen - 1 - elen ? resp->stderr.len : errlen - 1 - elen;
                        memcpy(errbuf + elen, resp->stderr.data, n);
                        elen += n;
                } else if (resp->msg_case == CAPSULE__V1__EXEC_RESPONSE__MSG_EXIT_CODE) {
                        exit_code = resp->exit_code;
                }
                protobuf_c_message_free_unpacked(m, NULL);
        }
        errbuf[elen] = '\0';
        if (out_fd >= 0)
                close(out_fd);
        if (fed) { /* the command ended (maybe before reading all its input): stop the feeder */
                ssize_t w = write(stop[1], "x", 1);
                (void)w;
                rpc_stream_cancel(s); /* a send blocked on flow control returns */
                pthread_join(th, NULL);
        }
        for (int k = 0; k < 2; k++)
                if (stop[k] >= 0)
                        close(stop[k]);
        rpc_stream_free(s);
        if (r < 0) {
                ctl_print_error(ctl, "cp", &err);
                return -1;
        }
        return exit_code;
}

/* ---- the verb --------------------------------------------------------------------------------- */

/* "NAME:PATH" -> name, path (pointers into a copy in buf); 0 if arg is local. */
static int split_remote(const char *arg, char *buf, size_t len, char **name, char **path)
{
        const char *colon = strchr(arg, ':'), *slash = strchr(arg, '/');
        if (!colon || colon == arg || (slash && slash < colon))
                return 0; /* "./a:b" or "/x/y:z" are local paths */
        snprintf(buf, len, "%s", arg);
        buf[colon - arg] = '\0';
        *name = buf;
        *path = buf + (colon - arg) + 1;
        return 1;
}

struct archiver {
        int fd;
        const char *src, *name;
        int rc;
        char why[512];
};

static void *archive_main(void *arg)
{
        struct archiver *a = arg;
        a->rc = cp_archive(a->fd, a->src, a->name, a->why, sizeof(a->why));
        close(a->fd);
        return NULL;
}

struct extractor {
        int fd;
        const char *src_name, *dir, *name;
        size_t n;
        int rc;
        char why[512];
};

static void *extract_main(void *arg)
{
        struct extractor *x = arg;
        x->rc = cp_extract(x->fd, x->src_name, x->dir, x->name, &x->n, x->why, sizeof(x->why));
        close(x->fd);
        return NULL;
}

static void trim_slashes(char *p)
{
        size_t n = strlen(p);
        while (n > 1 && p[n - 1] == '/')
                p[--n] = '\0';
}

static int copy_in(struct ctl *ctl, const char *src, const char *name, const char *dest)
{
        struct stat st;
        if (lstat(src, &st) < 0) {
                fprintf(ctl->err, "capsulectl cp: %s: %s\n", src, strerror(errno));
                return CTL_EXIT_ERROR;
        }
        if (dest[0] != '/') {
                fprintf(ctl->err, "capsulectl cp: %s:%s: the path in the workload must be absolute\n", name, dest);
                return CTL_EXIT_USAGE;
        }
        char s[PATH_MAX], d[PATH_MAX], dd[PATH_MAX];
        snprintf(s, sizeof(s), "%s", src);
        trim_slashes(s);
        bool into = dest[strlen(dest) - 1] == '/';
        snprintf(d, sizeof(d), "%s", dest);
        trim_slashes(d);
        snprintf(dd, sizeof(dd), "%s", d);
        char sb[PATH_MAX];
        snprintf(sb, sizeof(sb), "%s", s);
        const char *new_name = into ? basename(sb) : basename(d);
        const char *dir = into ? d : dirname(dd);
        if (!*new_name || strcmp(new_name, "/") == 0 || strcmp(new_name, "..") == 0) {
                fprintf(ctl->err, "capsulectl cp: %s:%s: name the copy (e.g. %s:/srv/data)\n", name, dest, name);
                return CTL_EXIT_USAGE;
        }
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return CTL_EXIT_ERROR;
        struct archiver a = {.fd = p[1], .src = s, .name = new_name};
        pthread_t th;
        if (pthread_create(&th, NULL, archive_main, &a) != 0) {
                close(p[0]);
                close(p[1]);
                return CTL_EXIT_ERROR;
        }
        char *argv[] = {"tar", "-x", "-f", "-", "-C", (char *)dir, NULL};
        char errbuf[2048];
        int code = remote(ctl, name, argv, 6, p[0], -1, errbuf, sizeof(errbuf));
        close(p[0]); /* an archiver still writing gets EPIPE */
        pthread_join(th, NULL);
        if (code != 0) { /* the workload's side first: its failure is the cause of ours */
                if (code > 0)
                        fprintf(ctl->err, "capsulectl cp: %s:%s: tar in the workload exited %d: %s", name, dir, code,
                                errbuf[0] ? errbuf : "(no message)\n");
                return CTL_EXIT_ERROR;
        }
        if (a.rc < 0) {
                fprintf(ctl->err, "capsulectl cp: %s\n", a.why);
                return CTL_EXIT_ERROR;
        }
        return CTL_EXIT_OK;
}

static int copy_out(struct ctl *ctl, const char *name, const char *src, const char *dest)
{
        if (src[0] != '/') {
                fprintf(ctl->err, "capsulectl cp: %s:%s: the path in the workload must be absolute\n", name, src);
                return CTL_EXIT_USAGE;
        }
        char s[PATH_MAX], sd[PATH_MAX], sb[PATH_MAX], d[PATH_MAX], dd[PATH_MAX], db[PATH_MAX];
        snprintf(s, sizeof(s), "%s", src);
        trim_slashes(s);
        snprintf(sd, sizeof(sd), "%s", s);
        snprintf(sb, sizeof(sb), "%s", s);
        const char *src_dir = dirname(sd), *src_name = basename(sb);
        if (strcmp(s, "/") == 0) {
                fprintf(ctl->err, "capsulectl cp: %s:/: copy a directory under / instead\n", name);
                return CTL_EXIT_USAGE;
        }
        snprintf(d, sizeof(d), "%s", dest);
        trim_slashes(d);
        struct stat st;
        const char *dir, *new_name;
        if (stat(d, &st) == 0 && S_ISDIR(st.st_mode)) {
                dir = d;
                new_name = src_name;
        } else {
                snprintf(dd, sizeof(dd), "%s", d);
                snprintf(db, sizeof(db), "%s", d);
                dir = dirname(dd);
                new_name = basename(db);
        }
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return CTL_EXIT_ERROR;
        struct extractor x = {.fd = p[0], .src_name = src_name, .dir = dir, .name = new_name};
        pthread_t th;
        if (pthread_create(&th, NULL, extract_main, &x) != 0) {
                close(p[0]);
                close(p[1]);
                return CTL_EXIT_ERROR;
        }
        char *argv[] = {"tar", "-c", "-f", "-", "-C", (char *)src_dir, (char *)src_name, NULL};
        char errbuf[2048];
        int code = remote(ctl, name, argv, 7, -1, p[1], errbuf, sizeof(errbuf));
        pthread_join(th, NULL);
        if (code != 0) {
                if (code > 0)
                        fprintf(ctl->err, "capsulectl cp: %s:%s: tar in the workload exited %d: %s", name, src, code,
                                errbuf[0] ? errbuf : "(no message)\n");
                return CTL_EXIT_ERROR;
        }
        if (x.rc < 0) {
                fprintf(ctl->err, "capsulectl cp: %s:%s: %s\n", name, src, x.why);
                return CTL_EXIT_ERROR;
        }
        return CTL_EXIT_OK;
}

int cmd_cp(struct ctl *ctl, int argc, char **argv)
{
        if (ctl_wants_help(argc, argv, cp_usage))
                return CTL_EXIT_OK;
        if (argc != 3 || argv[1][0] == '-' || argv[2][0] == '-') {
                fprintf(ctl->err, "capsulectl cp: expected SRC and DEST, one of them NAME:PATH\n%s", cp_usage);
                return CTL_EXIT_USAGE;
        }
        if (ctl->n_nodes > 1) {
                fprintf(ctl->err, "capsulectl cp: copies to or from one capsule (this line names %zu)\n",
                        ctl->n_nodes);
                return CTL_EXIT_USAGE;
        }
        signal(SIGPIPE, SIG_IGN);
        char b1[PATH_MAX + 64], b2[PATH_MAX + 64];
        char *n1 = NULL, *p1 = NULL, *n2 = NULL, *p2 = NULL;
        int r1 = split_remote(argv[1], b1, sizeof(b1), &n1, &p1);
        int r2 = split_remote(argv[2], b2, sizeof(b2), &n2, &p2);
        if (r1 == r2) {
                fprintf(ctl->err, "capsulectl cp: exactly one of SRC and DEST must be NAME:PATH\n%s", cp_usage);
                return CTL_EXIT_USAGE;
        }
        return r2 ? copy_in(ctl, argv[1], n2, p2) : copy_out(ctl, n1, p1, argv[2]);
}
