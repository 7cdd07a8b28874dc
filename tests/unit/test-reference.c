/* Image references: normalisation (docker.io, library/, latest), digests, and refusals. */
#include <stdlib.h>

#include "images/reference.h"
#include "images/registry.h"
#include "test.h"

static void check_norm(const char *in, const char *want)
{
        char *out = NULL;
        struct cap_error err = {0};
        int r = image_ref_normalize(in, &out, &err);
        if (r < 0)
                fprintf(stderr, "  %s: %s\n", in, err.msg);
        CHECK(r == 0);
        CHECK_STR_EQ(out, want);
        free(out);
}

static void check_bad(const char *in, const char *why)
{
        char *out = NULL;
        struct cap_error err = {0};
        CHECK(image_ref_normalize(in, &out, &err) < 0);
        CHECK(out == NULL);
        CHECK(err.status == CAP_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.msg, why);
}

#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

TEST(docker_hub_defaults)
{
        check_norm("busybox", "docker.io/library/busybox:latest");
        check_norm("busybox:1.36", "docker.io/library/busybox:1.36");
        check_norm("library/busybox", "docker.io/library/busybox:latest");
        check_norm("docker.io/busybox", "docker.io/library/busybox:latest");
        check_norm("index.docker.io/library/busybox:x", "docker.io/library/busybox:x");
        check_norm("someone/app", "docker.io/someone/app:latest");
        check_norm("docker.io/a/b/c:v1", "docker.io/a/b/c:v1");
}

TEST(other_registries)
{
        check_norm("host:5000/a/b:tag", "host:5000/a/b:tag");
        check_norm("127.0.0.1:5000/busybox:1", "127.0.0.1:5000/busybox:1");
        check_norm("localhost/app", "localhost/app:latest");
        check_norm("localhost:5000/app", "localhost:5000/app:latest");
        check_norm("registry.lan/nginx:1.25", "registry.lan/nginx:1.25");
        check_norm("capsule.local/busybox:latest", "capsule.local/busybox:latest");
        check_norm("Registry.LAN/app", "Registry.LAN/app:latest");
        check_norm("[::1]:5000/app:v", "[::1]:5000/app:v");
        check_norm("ghcr.io/o/my_app.x-y__z:1_0.a-b", "ghcr.io/o/my_app.x-y__z:1_0.a-b");
}

TEST(digests)
{
        check_norm("busybox@sha256:" D64, "docker.io/library/busybox@sha256:" D64);
        check_norm("r.io/a:t@sha256:" D64, "r.io/a:t@sha256:" D64);
        struct image_ref r;
        struct cap_error err = {0};
        CHECK(image_ref_parse("host:5000/a/b@sha256:" D64, &r, &err) == 0);
        CHECK_STR_EQ(r.domain, "host:5000");
        CHECK_STR_EQ(r.repository, "a/b");
        CHECK(r.tag == NULL);
        CHECK_STR_EQ(r.digest, "sha256:" D64);
        char *name = image_ref_name(&r);
        CHECK_STR_EQ(name, "host:5000/a/b");
        free(name);
        image_ref_clear(&r);
        CHECK(image_digest_valid("sha256:" D64));
        CHECK(!image_digest_valid("sha256:"
                                  "0123"));
        CHECK(!image_digest_valid("sha512:" D64));
        CHECK(!image_digest_valid(
            "sha256:"
            "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"));
}

TEST(refusals)
{
        check_bad("", "empty");
        check_bad("Busybox", "lower case");
        check_bad("docker.io/Library/busybox", "lower case");
        check_bad("busybox:", "invalid tag");
        check_bad("busybox:-x", "invalid tag");
        check_bad("busybox:a/b", "invalid");
        check_bad("busybox@sha512:" D64, "only sha256");
        check_bad("busybox@sha256:abc", "64");
        check_bad("busybox@" D64, "sha256");
        check_bad("a//b", "invalid repository");
        check_bad("a/b/", "invalid repository");
        check_bad("-a", "invalid repository");
        check_bad("a..b", "invalid repository");
        check_bad("a b", "invalid repository");
        check_bad("host:99999/a", "registry host");
        check_bad("-host.io/a", "registry host");
        check_bad(":tag", "missing repository");
        check_bad("@sha256:" D64, "missing repository");
        char longtag[200];
        memset(longtag, 'a', sizeof(longtag));
        memcpy(longtag, "x:", 2);
        longtag[2 + 129] = '\0';
        check_bad(longtag, "invalid tag");
        char longname[300];
        memset(longname, 'a', sizeof(longname));
        longname[299] = '\0';
        check_bad(longname, "255");
        char huge[700];
        memset(huge, 'a', sizeof(huge));
        huge[699] = '\0';
        check_bad(huge, "too long");
}

TEST(bearer_challenge)
{
        char *realm, *service, *scope;
        CHECK(registry_parse_challenge(
                  " Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
                  "scope=\"repository:library/busybox:pull\"",
                  &realm, &service, &scope) == 0);
        CHECK_STR_EQ(realm, "https://auth.docker.io/token");
        CHECK_STR_EQ(service, "registry.docker.io");
        CHECK_STR_EQ(scope, "repository:library/busybox:pull");
        free(realm);
        free(service);
        free(scope);
        CHECK(registry_parse_challenge("bearer realm=https://r/t", &realm, &service, &scope) == 0);
        CHECK_STR_EQ(realm, "https://r/t");
        CHECK(service == NULL && scope == NULL);
        free(realm);
        CHECK(registry_parse_challenge("Basic realm=\"x\"", &realm, &service, &scope) < 0);
        CHECK(registry_parse_challenge("Bearer service=\"x\"", &realm, &service, &scope) < 0);
        CHECK(realm == NULL && service == NULL && scope == NULL);
        char *h[] = {"127.0.0.1:5000", "Registry.lan"};
        struct registry_opts o = {.insecure = h, .n_insecure = 2};
        CHECK(registry_is_insecure(&o, "127.0.0.1:5000"));
        CHECK(registry_is_insecure(&o, "registry.LAN"));
        CHECK(!registry_is_insecure(&o, "127.0.0.1:5001"));
}

int main(void)
{
        RUN(docker_hub_defaults);
        RUN(other_registries);
        RUN(digests);
        RUN(refusals);
        RUN(bearer_challenge);
        return test_summary();
}
