/* Unit tests for src/capsuled/driver/driver.c: which driver a kind gets (an unspecified kind is a
 * container), the reason when a kind has none, the default answer of a driver without exec, and
 * that freeing the table frees every driver once. */
#include <errno.h>
#include <string.h>

#include "driver/driver.h"
#include "test.h"

static int freed;

static void fake_free(struct workload_driver *d)
{
        (void)d;
        freed++;
}

static const struct workload_driver_ops fake_ops = {.free = fake_free};

TEST(lookup)
{
        struct workload_driver ctr = {.name = "fake", .noun = "container", .ops = &fake_ops};
        struct driver_table t = {0};
        t.by_kind[driver_kind_index(CAPSULE__V1__WORKLOAD_KIND__CONTAINER)] = &ctr;
        snprintf(t.unavailable[driver_kind_index(CAPSULE__V1__WORKLOAD_KIND__MICROVM)], 512,
                 "MicroVM workloads are not available on this capsule: no guest kernel");
        const char *why = NULL;
        CHECK(driver_for_kind(&t, CAPSULE__V1__WORKLOAD_KIND__CONTAINER, &why) == &ctr);
        CHECK(why == NULL);
        CHECK(driver_for_kind(&t, CAPSULE__V1__WORKLOAD_KIND__WORKLOAD_KIND_UNSPECIFIED, NULL) ==
              &ctr);
        CHECK(driver_for_kind(&t, CAPSULE__V1__WORKLOAD_KIND__MICROVM, &why) == NULL);
        CHECK_CONTAINS(why, "no guest kernel");
        CHECK(driver_for_kind(&t, (Capsule__V1__WorkloadKind)99, &why) == NULL);
        CHECK_STR_EQ(why, "unknown workload kind");
        /* a kind with neither driver nor reason still says something */
        t.unavailable[driver_kind_index(CAPSULE__V1__WORKLOAD_KIND__MICROVM)][0] = '\0';
        CHECK(driver_for_kind(&t, CAPSULE__V1__WORKLOAD_KIND__MICROVM, &why) == NULL);
        CHECK(why && *why);
}

TEST(exec_unsupported)
{
        struct workload_driver vm = {.name = "fake", .noun = "microVM", .ops = &fake_ops};
        struct driver_exec_req req = {.name = "web", .exec_id = "exec-1"};
        struct driver_exec *x = NULL;
        uint32_t pid = 0;
        struct cap_error err = {0};
        CHECK(driver_exec_start(&vm, &req, &x, &pid, &err) < 0);
        CHECK(err.status == CAP_FAILED_PRECONDITION);
        CHECK_CONTAINS(err.msg, "exec in web");
        CHECK_CONTAINS(err.msg, "microVM");
        CHECK(x == NULL);
}

TEST(table_free)
{
        struct workload_driver a = {.ops = &fake_ops}, b = {.ops = &fake_ops};
        struct driver_table t = {.by_kind = {&a, &b}};
        freed = 0;
        driver_table_free(&t);
        CHECK(freed == 2);
        CHECK(t.by_kind[0] == NULL && t.by_kind[1] == NULL);
        driver_table_free(&t); /* empty: nothing more */
        CHECK(freed == 2);
}

int main(void)
{
        RUN(lookup);
        RUN(exec_unsupported);
        RUN(table_free);
        return test_summary();
}
