/* The desired-state store: generations, lookups, and that nothing acknowledged is lost when the
 * process is killed mid-write (SIGKILL at random points, then reopen and check). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "test.h"

static char *tmpdir(void)
{
        char tmpl[] = "/tmp/capsule-store-XXXXXX";
        char *d = mkdtemp(tmpl);
        return d ? strdup(d) : NULL;
}

static void rm_rf(const char *dir)
{
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "cleanup of %s failed\n", dir);
}

TEST(generations)
{
        char *dir = tmpdir();
        struct store *st = NULL;
        struct cap_error err = {0};
        CHECK(store_open(dir, &st, &err) == 0);
        enum store_put_result res;
        uint64_t gen;
        const uint8_t a[] = {1, 2, 3}, b[] = {1, 2, 4};
        CHECK(store_put_workload(st, "web", 1, a, sizeof(a), &res, &gen, &err) == 0);
        CHECK(res == STORE_CREATED && gen == 1);
        CHECK(store_put_workload(st, "web", 1, a, sizeof(a), &res, &gen, &err) == 0);
        CHECK(res == STORE_UNCHANGED && gen == 1);
        CHECK(store_put_workload(st, "web", 1, b, sizeof(b), &res, &gen, &err) == 0);
        CHECK(res == STORE_CONFIGURED && gen == 2);
        struct store_workload w;
        CHECK(store_get_workload(st, "web", &w, &err) == 0);
        CHECK(w.generation == 2 && w.spec_len == 3 && w.spec[2] == 4);
        store_workload_free(&w);
        CHECK(store_get_workload(st, "nope", &w, &err) < 0);
        CHECK(err.status == CAP_NOT_FOUND);
        CHECK_CONTAINS(err.msg, "\"nope\"");
        CHECK(store_delete_workload(st, "nope", &err) == -ENOENT);
        CHECK(store_delete_workload(st, "web", &err) == 0);
        struct store_workload *ws;
        size_t n;
        CHECK(store_list_workloads(st, &ws, &n, &err) == 0 && n == 0);
        store_workloads_free(ws, n);
        CHECK(store_check(st, &err) == 0);
        store_close(st);
        rm_rf(dir);
        free(dir);
}

TEST(volumes_and_meta_survive_reopen)
{
        char *dir = tmpdir();
        struct store *st = NULL;
        struct cap_error err = {0};
        CHECK(store_open(dir, &st, &err) == 0);
        CHECK(store_put_volume(st, "data", 1 << 30, "file", &err) == 0);
        CHECK(store_meta_set(st, "k", "v1", &err) == 0);
        CHECK(store_meta_set(st, "k", "v2", &err) == 0);
        store_close(st);
        CHECK(store_open(dir, &st, &err) == 0);
        struct store_volume v;
        CHECK(store_get_volume(st, "data", &v, &err) == 0);
        CHECK(v.size_bytes == 1 << 30);
        CHECK_STR_EQ(v.backend, "file");
        store_volume_free(&v);
        char *val = NULL;
        CHECK(store_meta_get(st, "k", &val, &err) == 0);
        CHECK_STR_EQ(val, "v2");
        free(val);
        CHECK(store_meta_get(st, "absent", &val, &err) == 0 && val == NULL);
        store_close(st);
        rm_rf(dir);
        free(dir);
}

TEST(store_id_and_history)
{
        char *dir = tmpdir();
        struct store *st = NULL;
        struct cap_error err = {0};
        CHECK(store_open(dir, &st, &err) == 0);
        char *id1 = NULL, *id2 = NULL;
        CHECK(store_id(st, &id1, &err) == 0 && id1 && strlen(id1) == 32);
        CHECK(store_id(st, &id2, &err) == 0 && id2 && strcmp(id1, id2) == 0);
        free(id2);
        struct store_history h = {.created_ns = 42, .generation = 3, .restarts = 7,
                                  .last_exit_code = 137, .last_exit_ns = 99,
                                  .last_exit_reason = "killed by signal 9 (exit code 137)"};
        struct store_history got;
        CHECK(store_get_history(st, "web", &got, &err) == -ENOENT);
        CHECK(store_put_history(st, "web", &h, &err) == 0);
        h.restarts = 8;
        CHECK(store_put_history(st, "web", &h, &err) == 0);
        store_close(st);
        CHECK(store_open(dir, &st, &err) == 0);
        CHECK(store_id(st, &id2, &err) == 0 && strcmp(id1, id2) == 0); /* kept across opens */
        CHECK(store_get_history(st, "web", &got, &err) == 0);
        CHECK(got.created_ns == 42 && got.generation == 3 && got.restarts == 8);
        CHECK(got.last_exit_code == 137 && got.last_exit_ns == 99);
        CHECK_STR_EQ(got.last_exit_reason, "killed by signal 9 (exit code 137)");
        store_history_free(&got);
        /* deleting the workload deletes its history */
        uint64_t gen = 0;
        enum store_put_result res;
        CHECK(store_put_workload(st, "web", 0, (const uint8_t *)"x", 1, &res, &gen, &err) == 0);
        CHECK(store_delete_workload(st, "web", &err) == 0);
        CHECK(store_get_history(st, "web", &got, &err) == -ENOENT);
        free(id1);
        free(id2);
        store_close(st);
        rm_rf(dir);
        free(dir);
}

/* A child writes workloads w0, w1, ... and reports each on a pipe once store_put returned; the
 * parent kills it with SIGKILL at a random moment. Every reported write must be there after
 * reopening, and the database must pass quick_check. */
TEST(sigkill_loses_nothing_acknowledged)
{
        char *dir = tmpdir();
        srand((unsigned)time(NULL));
        for (int round = 0; round < 8; round++) {
                int fds[2];
                CHECK(pipe(fds) == 0);
                pid_t pid = fork();
                if (pid == 0) {
                        close(fds[0]);
                        struct store *st = NULL;
                        struct cap_error err = {0};
                        if (store_open(dir, &st, &err) < 0)
                                _exit(2);
                        for (int i = 0;; i++) {
                                char name[32];
                                uint8_t spec[64];
                                snprintf(name, sizeof(name), "r%d-w%d", round, i);
                                memset(spec, i & 0xff, sizeof(spec));
                                enum store_put_result res;
                                uint64_t gen;
                                if (store_put_workload(st, name, 1, spec, sizeof(spec), &res, &gen, &err) < 0)
                                        _exit(3);
                                if (write(fds[1], &i, sizeof(i)) != sizeof(i))
                                        _exit(4);
                        }
                }
                close(fds[1]);
                usleep(20000 + (useconds_t)(rand() % 200000));
                kill(pid, SIGKILL);
                int last = -1, v;
                while (read(fds[0], &v, sizeof(v)) == sizeof(v))
                        last = v;
                close(fds[0]);
                int status;
                waitpid(pid, &status, 0);
                CHECK(WIFSIGNALED(status));
                struct store *st = NULL;
                struct cap_error err = {0};
                CHECK(store_open(dir, &st, &err) == 0);
                CHECK(store_check(st, &err) == 0);
                for (int i = 0; i <= last; i++) {
                        char name[32];
                        snprintf(name, sizeof(name), "r%d-w%d", round, i);
                        struct store_workload w;
                        if (store_get_workload(st, name, &w, &err) != 0) {
                                fprintf(stderr, "  lost acknowledged write %s (last %d)\n", name, last);
                                CHECK(!"acknowledged write lost");
                                break;
                        }
                        CHECK(w.spec_len == 64 && w.spec[0] == (uint8_t)(i & 0xff));
                        store_workload_free(&w);
                }
                store_close(st);
        }
        rm_rf(dir);
        free(dir);
}

static char *meta(struct store *st, const char *key)
{
        struct cap_error err = {0};
        char *v = NULL;
        return store_meta_get(st, key, &v, &err) == 0 ? v : strdup("(none)");
}

/* A store a newer version left in a format this one cannot read is refused, unchanged; one it can
 * read keeps the highest format recorded (a rollback does not lower it). */
TEST(perm_format_guard)
{
        char *dir = tmpdir();
        struct store *st = NULL;
        struct cap_error err = {0};
        CHECK(store_open(dir, &st, &err) == 0);
        char *v = meta(st, "schema_version");
        CHECK_STR_EQ(v, "1");
        free(v);
        v = meta(st, "perm_compat");
        CHECK_STR_EQ(v, "1");
        free(v);
        CHECK(store_put_volume(st, "data", 1 << 20, "file", &err) == 0);
        /* what a newer version (format 7, readable from format 2 on) would leave */
        CHECK(store_meta_set(st, "schema_version", "7", &err) == 0);
        CHECK(store_meta_set(st, "perm_compat", "2", &err) == 0);
        store_close(st);
        st = NULL;
        CHECK(store_open(dir, &st, &err) < 0 && st == NULL);
        CHECK(err.status == CAP_FAILED_PRECONDITION);
        CHECK_CONTAINS(err.msg, "format 2 or newer");
        CHECK_CONTAINS(err.msg, "reads format 1");
        /* the same newer version, but readable from format 1 on: opened, and nothing lowered */
        char cmd[600];
        snprintf(cmd, sizeof(cmd),
                 "sqlite3 '%s/state.db' \"UPDATE meta SET value='1' WHERE key='perm_compat';\"", dir);
        CHECK(system(cmd) == 0);
        err = (struct cap_error){0};
        CHECK(store_open(dir, &st, &err) == 0);
        v = meta(st, "schema_version");
        CHECK_STR_EQ(v, "7");
        free(v);
        struct store_volume vol;
        CHECK(store_get_volume(st, "data", &vol, &err) == 0);
        store_volume_free(&vol);
        store_close(st);
        rm_rf(dir);
        free(dir);
}

int main(void)
{
        RUN(generations);
        RUN(volumes_and_meta_survive_reopen);
        RUN(store_id_and_history);
        RUN(sigkill_loses_nothing_acknowledged);
        RUN(perm_format_guard);
        return test_summary();
}
