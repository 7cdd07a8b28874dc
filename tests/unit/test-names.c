/* Name rules: workload, volume and context names are DNS labels (see src/common/names.h). */
#include "common/names.h"
#include "test.h"

TEST(valid_names)
{
        const char *ok[] = {"a", "web", "web-1", "0abc", "a1-b2-c3",
                            "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123"};
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
                CHECK(name_is_valid(ok[i]));
}

TEST(invalid_names)
{
        const char *bad[] = {"", "-web", "web-", "Web", "web_1", "web.1", "../etc", "a/b", "a b", "é",
                             "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                CHECK(!name_is_valid(bad[i]));
        CHECK(!name_is_valid(NULL));
}

TEST(error_names_the_field)
{
        struct cap_error err = {0};
        CHECK(name_check("spec.name", "Web_1", &err) < 0);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.msg, "spec.name \"Web_1\"");
        CHECK_CONTAINS(err.msg, "DNS label");
        cap_error_clear(&err);
        CHECK(name_check("name", "", &err) < 0);
        CHECK_CONTAINS(err.msg, "name: must not be empty");
        cap_error_clear(&err);
        CHECK(name_check("name", "ok", &err) == 0);
        CHECK(err.code == 0);
}

TEST(error_prefix_keeps_status)
{
        struct cap_error err = {0};
        cap_error_set(&err, -2, CAP_NOT_FOUND, "volume \"x\" not found");
        cap_error_prefix(&err, "attach %s", "web");
        CHECK_STR_EQ(err.msg, "attach web: volume \"x\" not found");
        CHECK(err.status == CAP_NOT_FOUND);
        CHECK(err.code == -2);
}

int main(void)
{
        RUN(valid_names);
        RUN(invalid_names);
        RUN(error_names_the_field);
        RUN(error_prefix_keeps_status);
        return test_summary();
}
