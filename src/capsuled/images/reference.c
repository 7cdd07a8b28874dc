/* Docker reference grammar (distribution/reference), re-implemented small: split off the digest,
 * then the tag, then the domain; validate each part; fill in docker.io, library/ and latest. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "reference.h"

static bool is_lower_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* path-component := [a-z0-9]+ ( ( [._] | "__" | "-"+ ) [a-z0-9]+ )* */
static bool path_component_valid(const char *s, size_t n)
{
        size_t i = 0;
        if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
                return false;
        while (i < n) {
                if (is_lower_alnum(s[i])) {
                        i++;
                        continue;
                }
                size_t start = i;
                if (s[i] == '.')
                        i++;
                else if (s[i] == '_')
                        i += (i + 1 < n && s[i + 1] == '_') ? 2 : 1;
                else if (s[i] == '-')
                        while (i < n && s[i] == '-')
                                i++;
                else
                        return false;
                if (i == start || i >= n || !is_lower_alnum(s[i]))
                        return false;
        }
        return true;
}

/* host[:port] where host is dot-separated [A-Za-z0-9-] labels (not starting/ending with '-') or
 * a bracketed IPv6 literal. */
static bool domain_valid(const char *s)
{
        const char *p = s;
        if (*p == '[') {
                const char *end = strchr(p, ']');
                if (!end || end == p + 1)
                        return false;
                for (const char *q = p + 1; q < end; q++)
                        if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.')
                                return false;
                p = end + 1;
        } else {
                for (;;) {
                        const char *label = p;
                        while (isalnum((unsigned char)*p) || *p == '-')
                                p++;
                        if (p == label || *label == '-' || p[-1] == '-')
                                return false;
                        if (*p != '.')
                                break;
                        p++;
                }
        }
        if (*p == ':') {
                p++;
                const char *digits = p;
                while (isdigit((unsigned char)*p))
                        p++;
                if (p == digits || p - digits > 5 || atol(digits) > 65535)
                        return false;
        }
        return *p == '\0';
}

static bool tag_valid(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > IMAGE_REF_TAG_MAX || !(isalnum((unsigned char)s[0]) || s[0] == '_'))
                return false;
        for (size_t i = 1; i < n; i++)
                if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-'))
                        return false;
        return true;
}

bool image_digest_valid(const char *s)
{
        if (!s || strncmp(s, "sha256:", 7) != 0 || strlen(s) != 7 + 64)
                return false;
        for (const char *p = s + 7; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

void image_ref_clear(struct image_ref *r)
{
        free(r->domain);
        free(r->repository);
        free(r->tag);
        free(r->digest);
        *r = (struct image_ref){0};
}

static int invalid(struct image_ref *r, struct cap_error *err, const char *s, const char *why)
{
        image_ref_clear(r);
        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "image reference \"%.*s\": %s",
                             IMAGE_REF_MAX, s, why);
}

static int oom(struct image_ref *r, struct cap_error *err)
{
        image_ref_clear(r);
        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

int image_ref_parse(const char *s, struct image_ref *out, struct cap_error *err)
{
        *out = (struct image_ref){0};
        if (!s || !*s)
                return invalid(out, err, "", "empty");
        if (strlen(s) > IMAGE_REF_MAX)
                return invalid(out, err, s, "too long");
        _cleanup_free_ char *buf = strdup(s);
        if (!buf)
                return oom(out, err);

        char *at = strchr(buf, '@');
        if (at) {
                *at = '\0';
                const char *d = at + 1;
                if (strncmp(d, "sha256:", 7) != 0)
                        return invalid(out, err, s,
                                       strchr(d, ':') ? "unsupported digest algorithm (only sha256)"
                                                      : "digest must be sha256:<64 hex digits>");
                if (!image_digest_valid(d))
                        return invalid(out, err, s,
                                       "digest must be sha256:<64 lower-case hex digits>");
                if (!(out->digest = strdup(d)))
                        return oom(out, err);
        }
        char *slash = strrchr(buf, '/');
        char *colon = strrchr(buf, ':');
        if (colon && (!slash || colon > slash)) {
                *colon = '\0';
                if (!tag_valid(colon + 1))
                        return invalid(out, err, s,
                                       "invalid tag (letters, digits, _ . -, at most 128)");
                if (!(out->tag = strdup(colon + 1)))
                        return oom(out, err);
        }
        if (!*buf)
                return invalid(out, err, s, "missing repository name");

        /* The first component is a domain when it looks like one (docker's rule). */
        const char *path = buf;
        char *first = strchr(buf, '/');
        if (first) {
                *first = '\0';
                bool upper = false;
                for (const char *p = buf; *p; p++)
                        upper |= isupper((unsigned char)*p) != 0;
                if (strpbrk(buf, ".:") || strcmp(buf, "localhost") == 0 || upper || buf[0] == '[') {
                        if (!domain_valid(buf))
                                return invalid(out, err, s, "invalid registry host");
                        out->domain =
                            strdup(strcmp(buf, "index.docker.io") == 0 ? "docker.io" : buf);
                        path = first + 1;
                } else {
                        *first = '/';
                }
        }
        if (!out->domain)
                out->domain = strdup("docker.io");
        if (!out->domain)
                return oom(out, err);

        /* Validate the path components. */
        for (const char *p = path;;) {
                const char *end = strchr(p, '/');
                size_t n = end ? (size_t)(end - p) : strlen(p);
                if (!path_component_valid(p, n)) {
                        bool upper = false;
                        for (size_t i = 0; i < n; i++)
                                upper |= isupper((unsigned char)p[i]) != 0;
                        return invalid(out, err, s,
                                       upper ? "repository name must be lower case"
                                             : "invalid repository name");
                }
                if (!end)
                        break;
                p = end + 1;
        }
        bool library = strcmp(out->domain, "docker.io") == 0 && !strchr(path, '/');
        if (asprintf(&out->repository, "%s%s", library ? "library/" : "", path) < 0) {
                out->repository = NULL;
                return oom(out, err);
        }
        if (strlen(out->domain) + 1 + strlen(out->repository) > IMAGE_REF_NAME_MAX)
                return invalid(out, err, s, "name longer than 255 characters");
        if (!out->tag && !out->digest && !(out->tag = strdup("latest")))
                return oom(out, err);
        return 0;
}

char *image_ref_string(const struct image_ref *r)
{
        char *s = NULL;
        if (asprintf(&s, "%s/%s%s%s%s%s", r->domain, r->repository, r->tag ? ":" : "",
                     r->tag ? r->tag : "", r->digest ? "@" : "", r->digest ? r->digest : "") < 0)
                return NULL;
        return s;
}

char *image_ref_name(const struct image_ref *r)
{
        char *s = NULL;
        if (asprintf(&s, "%s/%s", r->domain, r->repository) < 0)
                return NULL;
        return s;
}

int image_ref_normalize(const char *s, char **out, struct cap_error *err)
{
        struct image_ref r;
        *out = NULL;
        if (image_ref_parse(s, &r, err) < 0)
                return err->code;
        *out = image_ref_string(&r);
        image_ref_clear(&r);
        if (!*out)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        return 0;
}
