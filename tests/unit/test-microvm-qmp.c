/* QMP client (src/capsuled/microvm/qmp.c): the message parser on canned QEMU lines, and the
 * client against a fake QEMU on a socketpair-backed unix socket that interleaves events with
 * replies and closes the connection on quit. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "microvm/qmp.h"
#include "test.h"

TEST(parse_kinds)
{
        struct qmp_msg m;
        CHECK(qmp_parse_message("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, "
                                "\"major\": 7}}, \"capabilities\": [\"oob\"]}}",
                                &m, NULL) == 0);
        CHECK(m.kind == QMP_MSG_GREETING);
        qmp_msg_release(&m);

        CHECK(qmp_parse_message("{\"return\": {\"status\": \"running\", \"singlestep\": false, "
                                "\"running\": true}, \"id\": 7}",
                                &m, NULL) == 0);
        CHECK(m.kind == QMP_MSG_RETURN && m.id == 7 && m.ret);
        qmp_msg_release(&m);

        CHECK(qmp_parse_message("{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": "
                                "\"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": "
                                "\"guest-shutdown\"}}",
                                &m, NULL) == 0);
        CHECK(m.kind == QMP_MSG_EVENT);
        CHECK_STR_EQ(m.event, "SHUTDOWN");
        CHECK(qmp_event_bit(m.event) == QMP_EVENT_SHUTDOWN);
        qmp_msg_release(&m);

        CHECK(qmp_parse_message("{\"id\": 3, \"error\": {\"class\": \"CommandNotFound\", \"desc\": "
                                "\"The command foo has not been found\"}}",
                                &m, NULL) == 0);
        CHECK(m.kind == QMP_MSG_ERROR && m.id == 3);
        CHECK_STR_EQ(m.error_class, "CommandNotFound");
        CHECK_STR_EQ(m.error_desc, "The command foo has not been found");
        qmp_msg_release(&m);
}

TEST(parse_garbage)
{
        struct qmp_msg m;
        struct cap_error err = {0};
        CHECK(qmp_parse_message("not json", &m, &err) == -EPROTO);
        CHECK_CONTAINS(err.msg, "bad JSON");
        CHECK(qmp_parse_message("[1,2]", &m, &err) == -EPROTO);
        CHECK(qmp_parse_message("{\"foo\": 1}", &m, &err) == -EPROTO);
        CHECK(qmp_parse_message("{\"event\": 5}", &m, &err) == -EPROTO);
        CHECK(qmp_event_bit("BLOCK_JOB_COMPLETED") == 0);
}

/* A scripted QEMU: greeting, then for each command a canned answer with events in between. */
struct fake_qemu {
        int listen_fd;
        int phase;
};

static void send_str(int fd, const char *s)
{
        size_t len = strlen(s);
        CHECK(write(fd, s, len) == (ssize_t)len);
}

/* Reads one request line; returns its "id" number (our client numbers from 1). */
static int read_request(int fd, char *buf, size_t len)
{
        size_t n = 0;
        while (n + 1 < len) {
                ssize_t r = read(fd, buf + n, 1);
                if (r <= 0)
                        return -1;
                if (buf[n++] == '\n')
                        break;
        }
        buf[n] = '\0';
        const char *id = strstr(buf, "\"id\":");
        return id ? atoi(id + 5) : -1;
}

static void *fake_qemu_main(void *arg)
{
        struct fake_qemu *f = arg;
        int fd = accept(f->listen_fd, NULL, NULL);
        if (fd < 0)
                return NULL;
        char req[512], out[512];
        /* split the greeting across writes, CRLF-terminated like QEMU */
        send_str(fd, "{\"QMP\": {\"version\": {}, ");
        usleep(10000);
        send_str(fd, "\"capabilities\": []}}\r\n");
        int id = read_request(fd, req, sizeof(req)); /* qmp_capabilities */
        snprintf(out, sizeof(out), "{\"return\": {}, \"id\": %d}\r\n", id);
        send_str(fd, out);
        id = read_request(fd, req, sizeof(req)); /* query-status */
        snprintf(out, sizeof(out),
                 "{\"event\": \"POWERDOWN\", \"timestamp\": {}}\r\n"
                 "{\"event\": \"RTC_CHANGE\", \"data\": {\"offset\": 0}}\r\n"
                 "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": %d}\r\n",
                 id);
        send_str(fd, out);
        id = read_request(fd, req, sizeof(req)); /* bogus */
        snprintf(out, sizeof(out),
                 "{\"id\": %d, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The "
                 "command bogus has not been found\"}}\r\n",
                 id);
        send_str(fd, out);
        read_request(fd, req, sizeof(req)); /* quit: QEMU may die before replying */
        send_str(fd, "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": false}}\r\n");
        close(fd);
        /* a second client that never sends a greeting: the client must time out */
        fd = accept(f->listen_fd, NULL, NULL);
        if (fd >= 0) {
                read_request(fd, req, sizeof(req));
                close(fd);
        }
        return NULL;
}

TEST(client_against_fake_qemu)
{
        char dir[] = "/tmp/test-microvm-qmp-XXXXXX";
        CHECK(mkdtemp(dir) != NULL);
        char path[128];
        snprintf(path, sizeof(path), "%s/qmp.sock", dir);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        struct fake_qemu f = {.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
        CHECK(f.listen_fd >= 0);
        CHECK(bind(f.listen_fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        CHECK(listen(f.listen_fd, 4) == 0);
        pthread_t th;
        CHECK(pthread_create(&th, NULL, fake_qemu_main, &f) == 0);

        struct cap_error err = {0};
        struct qmp *q = NULL;
        CHECK(qmp_connect(path, 2000, &q, &err) == 0);
        if (q) {
                char status[32];
                bool running = false;
                CHECK(qmp_query_status(q, status, sizeof(status), &running, &err) == 0);
                CHECK_STR_EQ(status, "running");
                CHECK(running);
                CHECK(qmp_events(q) & QMP_EVENT_POWERDOWN);
                CHECK(qmp_execute(q, "bogus", NULL, NULL, &err) == -EREMOTEIO);
                CHECK_CONTAINS(err.msg, "bogus: CommandNotFound: The command bogus");
                CHECK(qmp_quit(q, &err) == 0);
                qmp_close(q);
        }
        /* no greeting within the timeout */
        q = NULL;
        CHECK(qmp_connect(path, 300, &q, &err) == -ETIMEDOUT);
        CHECK_CONTAINS(err.msg, "QMP greeting");
        CHECK(q == NULL);
        pthread_join(th, NULL);
        close(f.listen_fd);
        /* nobody listening: a clear error after the timeout */
        unlink(path);
        CHECK(qmp_connect(path, 100, &q, &err) == -ENOENT);
        CHECK_CONTAINS(err.msg, "qmp.sock");
        rmdir(dir);
}

int main(void)
{
        RUN(parse_kinds);
        RUN(parse_garbage);
        RUN(client_against_fake_qemu);
        return test_summary();
}
