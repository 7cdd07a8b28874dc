/* A tiny unit-test harness: each tests/unit/test-<module>.c is one executable run by meson test.
 *   TEST(name) { CHECK(x == 1); CHECK_STR_EQ(a, b); }
 *   int main(void) { RUN(name); return test_summary(); }
 * A failed CHECK prints file:line and the expression and marks the test failed; the exit status is
 * non-zero when any check failed. test_skip("why") counts a test as skipped with a reason. */
#pragma once

#include <stdio.h>
#include <string.h>

static int test_failed_checks, test_cases, test_cases_failed, test_cases_skipped, test_cur_failed,
        test_cur_skipped;

#define TEST(name) static void test_##name(void)
#define CHECK(expr)                                                                                \
        do {                                                                                       \
                if (!(expr)) {                                                                     \
                        fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #expr);          \
                        test_failed_checks++;                                                      \
                        test_cur_failed = 1;                                                       \
                }                                                                                  \
        } while (0)
#define CHECK_STR_EQ(a, b)                                                                         \
        do {                                                                                       \
                const char *_a = (a), *_b = (b);                                                   \
                if (!_a || !_b || strcmp(_a, _b) != 0) {                                           \
                        fprintf(stderr, "  FAIL %s:%d: %s == %s (\"%s\" vs \"%s\")\n", __FILE__,   \
                                __LINE__, #a, #b, _a ? _a : "(null)", _b ? _b : "(null)");         \
                        test_failed_checks++;                                                      \
                        test_cur_failed = 1;                                                       \
                }                                                                                  \
        } while (0)
#define CHECK_CONTAINS(hay, needle)                                                                \
        do {                                                                                       \
                const char *_h = (hay), *_n = (needle);                                            \
                if (!_h || !strstr(_h, _n)) {                                                      \
                        fprintf(stderr, "  FAIL %s:%d: \"%s\" does not contain \"%s\"\n",          \
                                __FILE__, __LINE__, _h ? _h : "(null)", _n);                       \
                        test_failed_checks++;                                                      \
                        test_cur_failed = 1;                                                       \
                }                                                                                  \
        } while (0)
#define RUN(name)                                                                                  \
        do {                                                                                       \
                test_cur_failed = 0;                                                               \
                test_cur_skipped = 0;                                                              \
                test_##name();                                                                     \
                test_cases++;                                                                      \
                if (test_cur_failed)                                                               \
                        test_cases_failed++;                                                       \
                else if (test_cur_skipped)                                                         \
                        test_cases_skipped++;                                                      \
                fprintf(stderr, "%s %s\n",                                                         \
                        test_cur_failed ? "FAIL" : (test_cur_skipped ? "SKIP" : "ok  "), #name);   \
        } while (0)

static inline void test_skip(const char *why)
{
        fprintf(stderr, "  skipped: %s\n", why);
        test_cur_skipped = 1;
}

static inline int test_summary(void)
{
        fprintf(stderr, "%d cases, %d failed, %d skipped\n", test_cases, test_cases_failed,
                test_cases_skipped);
        return test_cases_failed ? 1 : 0;
}
