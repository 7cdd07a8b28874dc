/* Unit tests for the metrics endpoint's pure parts: the Prometheus text writer
 * (src/capsuled/metrics/expo.c: HELP/TYPE lines, label and help escaping, value formats, the
 * checks that refuse a page Prometheus would reject) and the HTTP request router
 * (metrics_http_route in src/capsuled/metrics/http.c). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "metrics/expo.h"
#include "metrics/http.h"
#include "test.h"

TEST(families_and_samples)
{
        struct expo e;
        expo_init(&e);
        expo_family(&e, "capsule_api_calls_total", EXPO_COUNTER, "API calls by method.");
        const char *l[] = {"method", "/capsule.v1.System/Version", NULL};
        expo_sample_u64(&e, l, 3);
        expo_family(&e, "capsule_boot_time_seconds", EXPO_GAUGE, "Boot.");
        expo_sample(&e, NULL, 1796357561);
        CHECK(e.error == 0);
        CHECK_STR_EQ(e.buf, "# HELP capsule_api_calls_total API calls by method.\n"
                            "# TYPE capsule_api_calls_total counter\n"
                            "capsule_api_calls_total{method=\"/capsule.v1.System/Version\"} 3\n"
                            "# HELP capsule_boot_time_seconds Boot.\n"
                            "# TYPE capsule_boot_time_seconds gauge\n"
                            "capsule_boot_time_seconds 1796357561\n");
        expo_free(&e);
}

TEST(escaping)
{
        struct expo e;
        expo_init(&e);
        expo_family(&e, "m", EXPO_GAUGE, "a \\ backslash, a \"quote\" and a\nnewline");
        const char *l[] = {"a", "back\\slash", "b", "say \"hi\"", "c", "two\nlines", NULL};
        expo_sample(&e, l, 1);
        CHECK(e.error == 0);
        /* help: backslash and newline escaped, quotes kept; label values: all three */
        CHECK_STR_EQ(e.buf, "# HELP m a \\\\ backslash, a \"quote\" and a\\nnewline\n"
                            "# TYPE m gauge\n"
                            "m{a=\"back\\\\slash\",b=\"say \\\"hi\\\"\",c=\"two\\nlines\"} 1\n");
        expo_free(&e);
}

TEST(values)
{
        struct expo e;
        expo_init(&e);
        expo_family(&e, "v", EXPO_GAUGE, "");
        expo_sample(&e, NULL, 0.25);
        expo_sample(&e, NULL, -3);
        expo_sample(&e, NULL, NAN);
        expo_sample(&e, NULL, INFINITY);
        expo_sample(&e, NULL, -INFINITY);
        expo_sample(&e, NULL, 1e300);
        expo_sample(&e, NULL, 0.342758);
        expo_sample_u64(&e, NULL, UINT64_MAX);
        CHECK(e.error == 0);
        CHECK_STR_EQ(e.buf, "# HELP v \n# TYPE v gauge\nv 0.25\nv -3\nv NaN\nv +Inf\nv -Inf\n"
                            "v 1e+300\nv 0.342758\nv 18446744073709551615\n");
        expo_free(&e);
}

TEST(names)
{
        CHECK(expo_name_ok("capsule_workload_cpu_seconds_total", false));
        CHECK(expo_name_ok("a:b", false));
        CHECK(!expo_name_ok("a:b", true));
        CHECK(!expo_name_ok("1abc", false));
        CHECK(!expo_name_ok("", false));
        CHECK(!expo_name_ok("a-b", true));
        CHECK(!expo_name_ok("a b", false));
        CHECK(expo_name_ok("_x9", true));
}

/* Mistakes are sticky errors, so that a collector bug never serves a half-valid page. */
TEST(errors)
{
        struct expo e;
        expo_init(&e);
        expo_sample(&e, NULL, 1);
        CHECK(e.error == -EINVAL);
        CHECK_CONTAINS(e.why, "sample before any family");
        expo_free(&e);

        expo_init(&e);
        expo_family(&e, "bad-name", EXPO_GAUGE, "x");
        CHECK(e.error == -EINVAL);
        CHECK_CONTAINS(e.why, "bad-name");
        expo_family(&e, "good", EXPO_GAUGE, "x"); /* sticky: stays failed */
        CHECK(e.error == -EINVAL);
        expo_free(&e);

        const char *reserved[] = {"__name__", "x", NULL};
        const char *dash[] = {"a-b", "x", NULL};
        const char *novalue[] = {"a", NULL, NULL};
        const char *const *bad[] = {reserved, dash, novalue};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                expo_init(&e);
                expo_family(&e, "m", EXPO_GAUGE, "x");
                expo_sample(&e, bad[i], 1);
                CHECK(e.error == -EINVAL);
                expo_free(&e);
        }
}

TEST(route)
{
        const char *get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        CHECK(metrics_http_route(get, strlen(get)) == 200);
        const char *q = "GET /metrics?name[]=up HTTP/1.0\r\n\r\n";
        CHECK(metrics_http_route(q, strlen(q)) == 200);
        const char *lf = "GET /metrics HTTP/1.1\nHost: a b\n\n";
        CHECK(metrics_http_route(lf, strlen(lf)) == 200);
        const char *other = "GET / HTTP/1.1\r\n\r\n";
        CHECK(metrics_http_route(other, strlen(other)) == 404);
        const char *deeper = "GET /metrics/x HTTP/1.1\r\n\r\n";
        CHECK(metrics_http_route(deeper, strlen(deeper)) == 404);
        const char *post = "POST /metrics HTTP/1.1\r\n\r\n";
        CHECK(metrics_http_route(post, strlen(post)) == 405);
        const char *head = "HEAD /metrics HTTP/1.1\r\n\r\n";
        CHECK(metrics_http_route(head, strlen(head)) == 405);
        const char *junk[] = {"\r\n\r\n",
                              "GET\r\n\r\n",
                              "GET /metrics\r\n\r\n",
                              "GET /metrics HTTP/2\r\n\r\n",
                              "GET metrics HTTP/1.1\r\n\r\n",
                              "GET /metrics HTTP/1.1 extra\r\n\r\n",
                              "\x16\x03\x01\x02\x00"};
        for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
                CHECK(metrics_http_route(junk[i], strlen(junk[i])) == 400);
        char huge[1024];
        memset(huge, 'a', sizeof(huge));
        memcpy(huge, "GET /", 5);
        CHECK(metrics_http_route(huge, sizeof(huge)) == 400);
}

int main(void)
{
        RUN(families_and_samples);
        RUN(escaping);
        RUN(values);
        RUN(names);
        RUN(errors);
        RUN(route);
        return test_summary();
}
