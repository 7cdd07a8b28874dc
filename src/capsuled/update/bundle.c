/* The streaming update bundle reader (see bundle.h and docs/updates.md).
 *
 * A small state machine over 512-byte ustar blocks: a header is collected whole, then the
 * member's data is consumed as it comes, then its padding. The first two members (manifest and
 * signature) are buffered; when the signature member ends, the signature is verified against the
 * trusted keys and only then is the manifest parsed and checked (architecture, versions, sizes
 * against the sink's capacity). Each part after that goes to the sink chunk by chunk while a
 * SHA-256 runs over it; at its last byte the digest is compared and the part closed or aborted.
 * Any error is sticky: the reader remembers it and the open part is aborted exactly once. */
#include "bundle.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/cleanup.h"

const char *const bundle_part_names[BUNDLE_N_PARTS] = {"vmlinuz", "initrd", "rootfs.sqfs"};

#define BLOCK 512

enum reader_state {
        R_HEADER,  /* collecting a 512-byte header block */
        R_DATA,    /* a member's data */
        R_PAD,     /* the zero padding up to the next block */
        R_TRAILER, /* after the end-of-archive blocks: zeros only */
};

struct bundle_reader {
        EVP_PKEY **keys;
        size_t n_keys;
        char arch[32];
        char running[BUNDLE_VERSION_MAX + 1];
        bool allow_downgrade;
        int64_t perm_format;
        const struct bundle_sink *sink;

        enum reader_state state;
        unsigned char hdr[BLOCK];
        size_t hdr_len;
        size_t member;      /* index of the current (or next) member: 0 manifest, 1 sig, 2.. */
        uint64_t remaining; /* data bytes left in the current member */
        uint64_t pad;       /* padding bytes left after it */
        uint64_t offset;    /* bytes consumed so far, for messages */
        unsigned zero_blocks;
        uint64_t trailer;

        char *manifest_text;
        size_t manifest_len, manifest_got;
        unsigned char sig[BUNDLE_SIG_LEN];
        size_t sig_got;
        struct bundle_manifest m;
        bool verified;
        int key_index;

        EVP_MD_CTX *md;
        const struct bundle_part *part; /* the part open in the sink, or NULL */

        bool failed;
        struct cap_error failure;
};

/* ---- versions ---- */

struct version {
        unsigned long num[3];
        const char *suffix; /* after '-', or NULL */
};

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

static bool is_ident_char(char c)
{
        return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

/* A decimal number without leading zeros, at most 9 digits; advances *p. */
static bool parse_number(const char **p, unsigned long *out)
{
        const char *s = *p;
        size_t n = 0;
        unsigned long v = 0;
        while (is_digit(s[n]) && n < 10)
                v = v * 10 + (unsigned long)(s[n++] - '0');
        if (n == 0 || n > 9 || (n > 1 && s[0] == '0'))
                return false;
        *p = s + n;
        *out = v;
        return true;
}

static bool suffix_is_valid(const char *s)
{
        if (!*s)
                return false;
        for (;;) {
                size_t n = 0;
                bool numeric = true;
                while (is_ident_char(s[n])) {
                        numeric = numeric && is_digit(s[n]);
                        n++;
                }
                if (n == 0 || (numeric && n > 1 && s[0] == '0'))
                        return false;
                s += n;
                if (!*s)
                        return true;
                if (*s != '.')
                        return false;
                s++;
        }
}

static bool version_parse(const char *s, struct version *v)
{
        if (!s || strlen(s) > BUNDLE_VERSION_MAX)
                return false;
        const char *p = s;
        for (int i = 0; i < 3; i++) {
                if (!parse_number(&p, &v->num[i]))
                        return false;
                if (i < 2 && *p++ != '.')
                        return false;
        }
        v->suffix = NULL;
        if (!*p)
                return true;
        if (*p != '-' || !suffix_is_valid(p + 1))
                return false;
        v->suffix = p + 1;
        return true;
}

bool bundle_version_is_valid(const char *v)
{
        struct version x;
        return version_parse(v, &x);
}

/* Compares two suffix identifiers (up to '.' or the end) as semver does. */
static int ident_compare(const char *a, size_t na, const char *b, size_t nb)
{
        bool da = strspn(a, "0123456789") >= na, db = strspn(b, "0123456789") >= nb;
        if (da && db) {
                if (na != nb)
                        return na < nb ? -1 : 1;
                return memcmp(a, b, na);
        }
        if (da != db)
                return da ? -1 : 1;
        int c = memcmp(a, b, na < nb ? na : nb);
        if (c)
                return c;
        return na == nb ? 0 : (na < nb ? -1 : 1);
}

static int suffix_compare(const char *a, const char *b)
{
        if (!a || !b)
                return !a && !b ? 0 : (a ? -1 : 1); /* a suffix makes a pre-release: older */
        for (;;) {
                size_t na = strcspn(a, "."), nb = strcspn(b, ".");
                int c = ident_compare(a, na, b, nb);
                if (c)
                        return c;
                a += na;
                b += nb;
                if (!*a || !*b)
                        return !*a && !*b ? 0 : (*a ? 1 : -1);
                a++;
                b++;
        }
}

int bundle_version_compare(const char *a, const char *b, int *cmp)
{
        struct version x, y;
        if (!version_parse(a, &x) || !version_parse(b, &y))
                return -EINVAL;
        for (int i = 0; i < 3; i++) {
                if (x.num[i] != y.num[i]) {
                        *cmp = x.num[i] < y.num[i] ? -1 : 1;
                        return 0;
                }
        }
        int c = suffix_compare(x.suffix, y.suffix);
        *cmp = c < 0 ? -1 : (c > 0 ? 1 : 0);
        return 0;
}

/* ---- keys ---- */

static int key_load(const char *pem, const char *what, EVP_PKEY **out, struct cap_error *err)
{
        if (!pem || !*pem)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: empty", what);
        BIO *bio = BIO_new_mem_buf(pem, -1);
        if (!bio)
                return cap_error_errno(err, -ENOMEM, "%s", what);
        EVP_PKEY *key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
        EVP_PKEY *extra = key ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        ERR_clear_error();
        int r = 0;
        if (!key)
                r = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                  "%s: not a PEM public key (\"-----BEGIN PUBLIC KEY-----\")",
                                  what);
        else if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519)
                r = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: a %s key, not Ed25519",
                                  what, EVP_PKEY_get0_type_name(key));
        else if (extra)
                r = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                  "%s: more than one key (give each key as its own list item)",
                                  what);
        EVP_PKEY_free(extra);
        if (r < 0) {
                EVP_PKEY_free(key);
                return r;
        }
        if (out)
                *out = key;
        else
                EVP_PKEY_free(key);
        return 0;
}

int bundle_key_check(const char *pem, const char *what, struct cap_error *err)
{
        return key_load(pem, what, NULL, err);
}

/* ---- manifest ---- */

static int mfail(struct cap_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int mfail(struct cap_error *err, const char *fmt, ...)
{
        char msg[900];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: %s", BUNDLE_MANIFEST_NAME,
                             msg);
}

/* Keys written in the text (strings followed by ':'), to catch duplicates json-c folds. */
static size_t text_key_count(const char *s, size_t len)
{
        size_t keys = 0;
        for (size_t i = 0; i < len; i++) {
                if (s[i] != '"')
                        continue;
                for (i++; i < len && s[i] != '"'; i++)
                        if (s[i] == '\\')
                                i++;
                size_t j = i + 1;
                while (j < len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r'))
                        j++;
                if (j < len && s[j] == ':')
                        keys++;
        }
        return keys;
}

static size_t tree_key_count(struct json_object *o)
{
        size_t n = 0;
        if (json_object_is_type(o, json_type_object)) {
                json_object_object_foreach(o, k, v)
                {
                        (void)k;
                        n += 1 + tree_key_count(v);
                }
        } else if (json_object_is_type(o, json_type_array)) {
                for (size_t i = 0; i < json_object_array_length(o); i++)
                        n += tree_key_count(json_object_array_get_idx(o, i));
        }
        return n;
}

static int take_string(struct json_object *v, const char *field, char *out, size_t size,
                       struct cap_error *err)
{
        if (!json_object_is_type(v, json_type_string))
                return mfail(err, "field \"%s\": expected a string", field);
        const char *s = json_object_get_string(v);
        size_t n = (size_t)json_object_get_string_len(v);
        if (strlen(s) != n)
                return mfail(err, "field \"%s\": contains a NUL character", field);
        if (n == 0)
                return mfail(err, "field \"%s\": must not be empty", field);
        if (n >= size)
                return mfail(err, "field \"%s\": longer than %zu characters", field, size - 1);
        memcpy(out, s, n + 1);
        return 0;
}

static int hex_value(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

static int manifest_part(struct json_object *o, size_t i, struct bundle_part *p,
                         struct cap_error *err)
{
        char f[64];
        bool have[3] = {false, false, false};
        snprintf(f, sizeof(f), "parts[%zu]", i);
        if (!json_object_is_type(o, json_type_object))
                return mfail(err, "field \"%s\": expected an object {name, size, sha256}", f);
        json_object_object_foreach(o, key, v)
        {
                char field[96];
                snprintf(field, sizeof(field), "%s.%s", f, key);
                int r = 0;
                if (strcmp(key, "name") == 0) {
                        have[0] = true;
                        r = take_string(v, field, p->name, sizeof(p->name), err);
                        if (r == 0) {
                                bool known = false;
                                for (size_t k = 0; k < BUNDLE_N_PARTS; k++)
                                        known = known || strcmp(p->name, bundle_part_names[k]) == 0;
                                if (!known)
                                        return mfail(err,
                                                     "field \"%s\": unknown part \"%s\" (expected "
                                                     "vmlinuz, initrd or rootfs.sqfs)",
                                                     field, p->name);
                        }
                } else if (strcmp(key, "size") == 0) {
                        have[1] = true;
                        if (!json_object_is_type(v, json_type_int))
                                return mfail(err, "field \"%s\": expected an integer", field);
                        int64_t n = json_object_get_int64(v);
                        if (n < 1 || (uint64_t)n > BUNDLE_PART_MAX)
                                return mfail(err, "field \"%s\": must be 1 to %llu bytes", field,
                                             (unsigned long long)BUNDLE_PART_MAX);
                        p->size = (uint64_t)n;
                } else if (strcmp(key, "sha256") == 0) {
                        have[2] = true;
                        r = take_string(v, field, p->sha256_hex, sizeof(p->sha256_hex), err);
                        if (r == 0 && strlen(p->sha256_hex) != 64)
                                return mfail(err, "field \"%s\": expected 64 hex digits", field);
                        for (size_t k = 0; r == 0 && k < 32; k++) {
                                int hi = hex_value(p->sha256_hex[2 * k]);
                                int lo = hex_value(p->sha256_hex[2 * k + 1]);
                                if (hi < 0 || lo < 0)
                                        return mfail(err,
                                                     "field \"%s\": expected 64 lowercase hex "
                                                     "digits (as sha256sum prints)",
                                                     field);
                                p->sha256[k] = (uint8_t)(hi << 4 | lo);
                        }
                } else {
                        return mfail(err, "unknown field \"%s\"", field);
                }
                if (r < 0)
                        return r;
        }
        static const char *const names[] = {"name", "size", "sha256"};
        for (size_t k = 0; k < 3; k++)
                if (!have[k])
                        return mfail(err, "missing field \"%s.%s\"", f, names[k]);
        return 0;
}

static int manifest_parts(struct json_object *v, struct bundle_manifest *m, struct cap_error *err)
{
        if (!json_object_is_type(v, json_type_array))
                return mfail(err, "field \"parts\": expected a list");
        size_t n = json_object_array_length(v);
        if (n > BUNDLE_N_PARTS)
                return mfail(err, "field \"parts\": %zu parts, expected %d", n, BUNDLE_N_PARTS);
        for (size_t i = 0; i < n; i++) {
                int r = manifest_part(json_object_array_get_idx(v, i), i, &m->parts[i], err);
                if (r < 0)
                        return r;
                for (size_t j = 0; j < i; j++)
                        if (strcmp(m->parts[j].name, m->parts[i].name) == 0)
                                return mfail(err,
                                             "field \"parts[%zu].name\": duplicate part \"%s\"", i,
                                             m->parts[i].name);
        }
        m->n_parts = n;
        for (size_t k = 0; k < BUNDLE_N_PARTS; k++) {
                bool found = false;
                for (size_t i = 0; i < n; i++)
                        found = found || strcmp(m->parts[i].name, bundle_part_names[k]) == 0;
                if (!found)
                        return mfail(err, "field \"parts\": missing part \"%s\"",
                                     bundle_part_names[k]);
        }
        return 0;
}

static int manifest_fields(struct json_object *root, struct bundle_manifest *m,
                           struct cap_error *err)
{
        bool have_format = false, have_version = false, have_arch = false, have_parts = false;
        json_object_object_foreach(root, key, v)
        {
                int r = 0;
                if (strcmp(key, "format") == 0) {
                        have_format = true;
                        if (!json_object_is_type(v, json_type_int))
                                return mfail(err, "field \"format\": expected an integer");
                        int64_t f = json_object_get_int64(v);
                        if (f != BUNDLE_FORMAT)
                                return mfail(err,
                                             "field \"format\": unsupported format %lld "
                                             "(this capsule reads format %d)",
                                             (long long)f, BUNDLE_FORMAT);
                        m->format = (int)f;
                } else if (strcmp(key, "version") == 0) {
                        have_version = true;
                        r = take_string(v, "version", m->version, sizeof(m->version), err);
                        if (r == 0 && !bundle_version_is_valid(m->version))
                                return mfail(err,
                                             "field \"version\": \"%s\" is not "
                                             "MAJOR.MINOR.PATCH[-SUFFIX]",
                                             m->version);
                } else if (strcmp(key, "arch") == 0) {
                        have_arch = true;
                        r = take_string(v, "arch", m->arch, sizeof(m->arch), err);
                        if (r == 0 && strspn(m->arch, "abcdefghijklmnopqrstuvwxyz0123456789_") !=
                                          strlen(m->arch))
                                return mfail(err,
                                             "field \"arch\": \"%s\" is not an architecture "
                                             "name like x86_64 or aarch64",
                                             m->arch);
                } else if (strcmp(key, "min_from_version") == 0) {
                        r = take_string(v, "min_from_version", m->min_from_version,
                                        sizeof(m->min_from_version), err);
                        if (r == 0 && !bundle_version_is_valid(m->min_from_version))
                                return mfail(err,
                                             "field \"min_from_version\": \"%s\" is not "
                                             "MAJOR.MINOR.PATCH[-SUFFIX]",
                                             m->min_from_version);
                } else if (strcmp(key, "perm_format") == 0 || strcmp(key, "perm_compat") == 0) {
                        if (!json_object_is_type(v, json_type_int))
                                return mfail(err, "field \"%s\": expected an integer", key);
                        int64_t f = json_object_get_int64(v);
                        if (f < 1 || f > 1000000)
                                return mfail(err, "field \"%s\": %lld is not between 1 and 1000000",
                                             key, (long long)f);
                        *(key[5] == 'f' ? &m->perm_format : &m->perm_compat) = f;
                } else if (strcmp(key, "parts") == 0) {
                        have_parts = true;
                        r = manifest_parts(v, m, err);
                } else {
                        return mfail(err, "unknown field \"%s\"", key);
                }
                if (r < 0)
                        return r;
        }
        const char *missing = !have_format    ? "format"
                              : !have_version ? "version"
                              : !have_arch    ? "arch"
                              : !have_parts   ? "parts"
                                              : NULL;
        if (missing)
                return mfail(err, "missing field \"%s\"", missing);
        if (!m->perm_format)
                m->perm_format = 1;
        if (!m->perm_compat)
                m->perm_compat = 1;
        if (m->perm_compat > m->perm_format)
                return mfail(err,
                             "field \"perm_compat\": %lld is above perm_format %lld (a version "
                             "cannot require a newer /perm format than the one it writes)",
                             (long long)m->perm_compat, (long long)m->perm_format);
        return 0;
}

int bundle_manifest_parse(const char *buf, size_t len, struct bundle_manifest *out,
                          struct cap_error *err)
{
        memset(out, 0, sizeof(*out));
        if (len == 0)
                return mfail(err, "empty");
        if (len > BUNDLE_MANIFEST_MAX)
                return mfail(err, "larger than %d bytes", BUNDLE_MANIFEST_MAX);
        if (memchr(buf, '\0', len))
                return mfail(err, "contains a NUL byte");
        /* trailing whitespace (a final newline) is fine; json-c's strict mode refuses it */
        size_t n = len;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\t' ||
                         buf[n - 1] == '\r'))
                n--;
        struct json_tokener *tok = json_tokener_new_ex(8);
        if (!tok)
                return cap_error_errno(err, -ENOMEM, "%s", BUNDLE_MANIFEST_NAME);
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        struct json_object *root = json_tokener_parse_ex(tok, buf, (int)n);
        enum json_tokener_error jerr = json_tokener_get_error(tok);
        size_t end = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        int r = 0;
        if (jerr == json_tokener_continue)
                r = mfail(err, "invalid JSON: unexpected end of the text");
        else if (!root || jerr != json_tokener_success)
                r = mfail(err, "invalid JSON at offset %zu: %s", end,
                          json_tokener_error_desc(jerr));
        else if (end != n)
                r = mfail(err, "invalid JSON: text after the object at offset %zu", end);
        else if (!json_object_is_type(root, json_type_object))
                r = mfail(err, "expected a JSON object");
        else if (text_key_count(buf, n) != tree_key_count(root))
                r = mfail(err, "a field is given twice");
        else
                r = manifest_fields(root, out, err);
        json_object_put(root);
        if (r < 0)
                memset(out, 0, sizeof(*out));
        return r;
}

/* ---- reader ---- */

int bundle_reader_new(const struct bundle_reader_opts *opts, struct bundle_reader **out,
                      struct cap_error *err)
{
        *out = NULL;
        if (!opts->sink || !opts->sink->open || !opts->sink->write || !opts->sink->close)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "bundle reader: no sink");
        if (!opts->arch || strlen(opts->arch) >= sizeof(((struct bundle_reader *)0)->arch))
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "bundle reader: bad arch");
        if (!bundle_version_is_valid(opts->running_version))
                return cap_error_set(err, -EINVAL, CAP_FAILED_PRECONDITION,
                                     "the running version \"%s\" is not MAJOR.MINOR.PATCH",
                                     opts->running_version ? opts->running_version : "");
        struct bundle_reader *r = calloc(1, sizeof(*r));
        if (!r)
                return cap_error_errno(err, -ENOMEM, "bundle reader");
        r->key_index = -1;
        r->sink = opts->sink;
        r->allow_downgrade = opts->allow_downgrade;
        r->perm_format = opts->perm_format > 0 ? opts->perm_format : 1;
        snprintf(r->arch, sizeof(r->arch), "%s", opts->arch);
        snprintf(r->running, sizeof(r->running), "%s", opts->running_version);
        r->keys = calloc(opts->n_trusted_keys + 1, sizeof(*r->keys));
        r->md = EVP_MD_CTX_new();
        if (!r->keys || !r->md) {
                bundle_reader_free(r);
                return cap_error_errno(err, -ENOMEM, "bundle reader");
        }
        for (size_t i = 0; i < opts->n_trusted_keys; i++) {
                char what[48];
                snprintf(what, sizeof(what), "trusted key %zu", i);
                int e = key_load(opts->trusted_keys[i], what, &r->keys[i], err);
                if (e < 0) {
                        bundle_reader_free(r);
                        return e;
                }
                r->n_keys++;
        }
        *out = r;
        return 0;
}

void bundle_reader_free(struct bundle_reader *r)
{
        if (!r)
                return;
        if (r->part && r->sink->abort)
                r->sink->abort(r->sink->ctx, r->part);
        for (size_t i = 0; i < r->n_keys; i++)
                EVP_PKEY_free(r->keys[i]);
        free(r->keys);
        EVP_MD_CTX_free(r->md);
        free(r->manifest_text);
        free(r);
}

const struct bundle_manifest *bundle_reader_manifest(const struct bundle_reader *r)
{
        return r->verified ? &r->m : NULL;
}

int bundle_reader_key_index(const struct bundle_reader *r)
{
        return r->key_index;
}

/* Records err as the reader's sticky failure, aborting the open part. Returns err->code. */
static int reader_fail(struct bundle_reader *r, struct cap_error *err)
{
        if (r->part && r->sink->abort)
                r->sink->abort(r->sink->ctx, r->part);
        r->part = NULL;
        r->failed = true;
        r->failure = *err;
        return err->code;
}

static const char *member_name(const struct bundle_reader *r, size_t i)
{
        if (i == 0)
                return BUNDLE_MANIFEST_NAME;
        if (i == 1)
                return BUNDLE_SIG_NAME;
        return i - 2 < r->m.n_parts ? r->m.parts[i - 2].name : "the end of the archive";
}

/* An octal ustar number field: optional leading spaces, digits, then NUL/space padding. */
static bool octal_field(const unsigned char *f, size_t n, uint64_t *out)
{
        size_t i = 0;
        uint64_t v = 0;
        if (f[0] & 0x80)
                return false; /* GNU base-256: not ustar */
        while (i < n && f[i] == ' ')
                i++;
        size_t digits = 0;
        for (; i < n && f[i] >= '0' && f[i] <= '7'; i++, digits++) {
                if (v > (UINT64_MAX >> 3))
                        return false;
                v = v << 3 | (uint64_t)(f[i] - '0');
        }
        for (; i < n; i++)
                if (f[i] != '\0' && f[i] != ' ')
                        return false;
        if (digits == 0)
                return false;
        *out = v;
        return true;
}

/* The NUL-terminated field f of at most n bytes, with unprintable bytes shown as '?'. */
static void printable(const unsigned char *f, size_t n, char *out, size_t size)
{
        size_t k = 0;
        for (size_t i = 0; i < n && f[i] && k + 1 < size; i++)
                out[k++] = f[i] >= 0x20 && f[i] < 0x7f ? (char)f[i] : '?';
        out[k] = '\0';
}

static int tar_fail(struct bundle_reader *r, struct cap_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int tar_fail(struct bundle_reader *r, struct cap_error *err, const char *fmt, ...)
{
        char msg[800];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "bundle: tar header at byte %llu: %s",
                      (unsigned long long)(r->offset - BLOCK), msg);
        return reader_fail(r, err);
}

static const char *type_name(unsigned char t)
{
        switch (t) {
        case '1':
                return "a hard link";
        case '2':
                return "a symbolic link";
        case '3':
        case '4':
                return "a device";
        case '5':
                return "a directory";
        case '6':
                return "a FIFO";
        case 'x':
        case 'g':
                return "a pax extended header (write the bundle with tar --format=ustar)";
        case 'L':
        case 'K':
                return "a GNU long name (write the bundle with tar --format=ustar)";
        default:
                return "not a regular file";
        }
}

static int part_begin(struct bundle_reader *r, const struct bundle_part *p, struct cap_error *err)
{
        if (EVP_DigestInit_ex(r->md, EVP_sha256(), NULL) != 1) {
                ERR_clear_error();
                cap_error_set(err, -EIO, CAP_INTERNAL, "part %s: sha256 init failed", p->name);
                return reader_fail(r, err);
        }
        int e = r->sink->open(r->sink->ctx, p, err);
        if (e < 0) {
                cap_error_prefix(err, "part %s", p->name);
                if (r->sink->abort)
                        r->sink->abort(r->sink->ctx, p);
                return reader_fail(r, err);
        }
        r->part = p;
        return 0;
}

static int header_block(struct bundle_reader *r, struct cap_error *err)
{
        const unsigned char *h = r->hdr;
        size_t n_members = 2 + (r->verified ? r->m.n_parts : 0);
        bool zero = true;
        for (size_t i = 0; i < BLOCK && zero; i++)
                zero = h[i] == 0;
        if (zero) {
                if (!r->verified || r->member < n_members)
                        return tar_fail(r, err, "end of archive, but member %s is missing",
                                        member_name(r, r->member));
                if (++r->zero_blocks == 2)
                        r->state = R_TRAILER;
                return 0;
        }
        char name[101];
        printable(h, 100, name, sizeof(name));
        if (r->zero_blocks)
                return tar_fail(r, err, "a member (\"%s\") after an end-of-archive block", name);
        if (r->verified && r->member >= n_members)
                return tar_fail(r, err, "unexpected member \"%s\" after the last part", name);
        uint64_t stored, sum = 0;
        for (size_t i = 0; i < BLOCK; i++)
                sum += i >= 148 && i < 156 ? (unsigned)' ' : h[i];
        if (!octal_field(h + 148, 8, &stored) || stored != sum)
                return tar_fail(r, err, "bad checksum (member \"%s\")", name);
        if (memcmp(h + 257,
                   "ustar\0"
                   "00",
                   8) != 0)
                return tar_fail(r, err,
                                "member \"%s\": not a POSIX ustar header (GNU or v7 tar format? "
                                "use tar --format=ustar)",
                                name);
        unsigned char type = h[156];
        if (type != '0' && type != '\0')
                return tar_fail(r, err, "member \"%s\" is %s", name, type_name(type));
        if (h[345] != '\0')
                return tar_fail(r, err, "member \"%s\": a name with a directory prefix", name);
        if (memchr(h, '\0', 100) == NULL || name[0] == '/' || strstr(name, "..") ||
            strchr(name, '/'))
                return tar_fail(r, err, "member \"%s\": unsafe name (no directories allowed)",
                                name);
        const char *want = member_name(r, r->member);
        if (strcmp(name, want) != 0)
                return tar_fail(r, err, "member \"%s\" where %s was expected", name, want);
        uint64_t size;
        if (!octal_field(h + 124, 12, &size) || size > BUNDLE_PART_MAX)
                return tar_fail(r, err, "member \"%s\": bad size field", name);
        if (r->member == 0 && (size == 0 || size > BUNDLE_MANIFEST_MAX))
                return tar_fail(r, err, "%s is %llu bytes (1 to %d allowed)", name,
                                (unsigned long long)size, BUNDLE_MANIFEST_MAX);
        if (r->member == 1 && size != BUNDLE_SIG_LEN)
                return tar_fail(r, err, "%s is %llu bytes, an Ed25519 signature is %d", name,
                                (unsigned long long)size, BUNDLE_SIG_LEN);
        const struct bundle_part *p = r->member >= 2 ? &r->m.parts[r->member - 2] : NULL;
        if (p && size != p->size)
                return tar_fail(r, err, "part %s is %llu bytes, the manifest says %llu", name,
                                (unsigned long long)size, (unsigned long long)p->size);
        r->remaining = size;
        r->pad = (BLOCK - size % BLOCK) % BLOCK;
        r->state = R_DATA;
        if (r->member == 0) {
                r->manifest_text = malloc(size);
                r->manifest_len = size;
                if (!r->manifest_text) {
                        cap_error_errno(err, -ENOMEM, "bundle: %s", name);
                        return reader_fail(r, err);
                }
        }
        return p ? part_begin(r, p, err) : 0;
}

static int verify_signature(struct bundle_reader *r, struct cap_error *err)
{
        if (r->n_keys == 0)
                return cap_error_set(err, -EACCES, CAP_PERMISSION_DENIED,
                                     "bundle: this capsule trusts no update signing key "
                                     "(updates.trustedKeys in the machine config)");
        for (size_t i = 0; i < r->n_keys; i++) {
                EVP_MD_CTX *ctx = EVP_MD_CTX_new();
                if (!ctx)
                        return cap_error_errno(err, -ENOMEM, "bundle: verify the signature");
                int ok =
                    EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, r->keys[i]) == 1 &&
                    EVP_DigestVerify(ctx, r->sig, BUNDLE_SIG_LEN,
                                     (const unsigned char *)r->manifest_text, r->manifest_len) == 1;
                EVP_MD_CTX_free(ctx);
                ERR_clear_error();
                if (ok) {
                        r->key_index = (int)i;
                        return 0;
                }
        }
        if (r->n_keys == 1)
                return cap_error_set(err, -EACCES, CAP_PERMISSION_DENIED,
                                     "bundle: the signature of %s does not verify with the "
                                     "trusted key (signed with another key, or altered)",
                                     BUNDLE_MANIFEST_NAME);
        return cap_error_set(err, -EACCES, CAP_PERMISSION_DENIED,
                             "bundle: the signature of %s does not verify with any of the %zu "
                             "trusted keys (signed with another key, or altered)",
                             BUNDLE_MANIFEST_NAME, r->n_keys);
}

/* The checks between the signature and the first byte of a part. */
static int manifest_accept(struct bundle_reader *r, struct cap_error *err)
{
        const struct bundle_manifest *m = &r->m;
        int cmp = 0, e;
        if ((e = bundle_manifest_parse(r->manifest_text, r->manifest_len, &r->m, err)) < 0)
                return cap_error_prefix(err, "bundle");
        if (strcmp(m->arch, r->arch) != 0)
                return cap_error_set(err, -EINVAL, CAP_FAILED_PRECONDITION,
                                     "bundle: built for %s, this capsule is %s", m->arch, r->arch);
        if (bundle_version_compare(m->version, r->running, &cmp) < 0)
                return cap_error_set(err, -EINVAL, CAP_INTERNAL, "bundle: version compare");
        if (cmp <= 0 && !r->allow_downgrade)
                return cap_error_set(err, -EINVAL, CAP_FAILED_PRECONDITION,
                                     "bundle: version %s is %s the running %s (pass "
                                     "--allow-downgrade to install it anyway)",
                                     m->version, cmp == 0 ? "the same as" : "older than",
                                     r->running);
        if (m->min_from_version[0]) {
                if (bundle_version_compare(r->running, m->min_from_version, &cmp) < 0)
                        return cap_error_set(err, -EINVAL, CAP_INTERNAL, "bundle: compare");
                if (cmp < 0)
                        return cap_error_set(err, -EINVAL, CAP_FAILED_PRECONDITION,
                                             "bundle: version %s updates from %s or newer, this "
                                             "capsule runs %s (install an intermediate version "
                                             "first)",
                                             m->version, m->min_from_version, r->running);
        }
        if (m->perm_compat > r->perm_format)
                return cap_error_set(err, -EINVAL, CAP_FAILED_PRECONDITION,
                                     "bundle: version %s leaves /perm in a format only Capsules "
                                     "reading format %lld or newer can use (perm_compat), and this "
                                     "one (%s) reads format %lld: a rollback could not read the "
                                     "store back (install an intermediate version that reads "
                                     "format %lld first)",
                                     m->version, (long long)m->perm_compat, r->running,
                                     (long long)r->perm_format, (long long)m->perm_compat);
        for (size_t i = 0; i < m->n_parts; i++) {
                uint64_t room = 0;
                if (r->sink->capacity &&
                    (e = r->sink->capacity(r->sink->ctx, &m->parts[i], &room, err)) < 0)
                        return cap_error_prefix(err, "part %s", m->parts[i].name);
                if (r->sink->capacity && m->parts[i].size > room)
                        return cap_error_set(err, -ENOSPC, CAP_RESOURCE_EXHAUSTED,
                                             "part %s: %llu bytes do not fit in the %llu bytes "
                                             "available",
                                             m->parts[i].name, (unsigned long long)m->parts[i].size,
                                             (unsigned long long)room);
        }
        return 0;
}

static void hex(const unsigned char *b, size_t n, char *out)
{
        for (size_t i = 0; i < n; i++)
                snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static int member_end(struct bundle_reader *r, struct cap_error *err)
{
        if (r->member == 1) {
                int e = verify_signature(r, err);
                if (e >= 0)
                        e = manifest_accept(r, err);
                if (e < 0)
                        return reader_fail(r, err);
                r->verified = true;
        } else if (r->member >= 2) {
                const struct bundle_part *p = r->part;
                unsigned char digest[EVP_MAX_MD_SIZE];
                unsigned int dlen = 0;
                if (EVP_DigestFinal_ex(r->md, digest, &dlen) != 1 || dlen != 32) {
                        ERR_clear_error();
                        cap_error_set(err, -EIO, CAP_INTERNAL, "part %s: sha256 failed", p->name);
                        return reader_fail(r, err);
                }
                if (memcmp(digest, p->sha256, 32) != 0) {
                        char got[65];
                        hex(digest, 32, got);
                        cap_error_set(err, -EBADMSG, CAP_DATA_LOSS,
                                      "part %s: sha256 mismatch (the manifest says %s, the "
                                      "bundle holds %s)",
                                      p->name, p->sha256_hex, got);
                        return reader_fail(r, err);
                }
                int e = r->sink->close(r->sink->ctx, p, err);
                r->part = NULL; /* closed or failed in close: never aborted after */
                if (e < 0) {
                        cap_error_prefix(err, "part %s", p->name);
                        return reader_fail(r, err);
                }
        }
        r->member++;
        r->state = r->pad ? R_PAD : R_HEADER;
        return 0;
}

static int member_data(struct bundle_reader *r, const unsigned char *buf, size_t n,
                       struct cap_error *err)
{
        if (r->member == 0) {
                memcpy(r->manifest_text + r->manifest_got, buf, n);
                r->manifest_got += n;
        } else if (r->member == 1) {
                memcpy(r->sig + r->sig_got, buf, n);
                r->sig_got += n;
        } else {
                if (EVP_DigestUpdate(r->md, buf, n) != 1) {
                        ERR_clear_error();
                        cap_error_set(err, -EIO, CAP_INTERNAL, "part %s: sha256 failed",
                                      r->part->name);
                        return reader_fail(r, err);
                }
                int e = r->sink->write(r->sink->ctx, r->part, buf, n, err);
                if (e < 0) {
                        cap_error_prefix(err, "part %s", r->part->name);
                        return reader_fail(r, err);
                }
        }
        return 0;
}

int bundle_reader_feed(struct bundle_reader *r, const void *data, size_t len, struct cap_error *err)
{
        const unsigned char *buf = data;
        if (r->failed) {
                *err = r->failure;
                return err->code;
        }
        while (len > 0) {
                size_t n = len;
                int e = 0;
                switch (r->state) {
                case R_HEADER:
                        n = BLOCK - r->hdr_len < len ? BLOCK - r->hdr_len : len;
                        memcpy(r->hdr + r->hdr_len, buf, n);
                        r->hdr_len += n;
                        r->offset += n;
                        if (r->hdr_len == BLOCK) {
                                r->hdr_len = 0;
                                e = header_block(r, err);
                        }
                        break;
                case R_DATA:
                        if (r->remaining < n)
                                n = (size_t)r->remaining;
                        e = member_data(r, buf, n, err);
                        r->remaining -= n;
                        r->offset += n;
                        if (e == 0 && r->remaining == 0)
                                e = member_end(r, err);
                        break;
                case R_PAD:
                        if (r->pad < n)
                                n = (size_t)r->pad;
                        r->pad -= n;
                        r->offset += n;
                        if (r->pad == 0)
                                r->state = R_HEADER;
                        break;
                case R_TRAILER:
                        for (size_t i = 0; i < n; i++)
                                if (buf[i]) {
                                        cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                                      "bundle: data after the end of the archive "
                                                      "(byte %llu)",
                                                      (unsigned long long)(r->offset + i));
                                        return reader_fail(r, err);
                                }
                        r->trailer += n;
                        r->offset += n;
                        if (r->trailer > BUNDLE_TRAILER_MAX) {
                                cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                              "bundle: more than %d bytes of padding after the "
                                              "archive",
                                              BUNDLE_TRAILER_MAX);
                                return reader_fail(r, err);
                        }
                        break;
                }
                if (e < 0)
                        return e;
                buf += n;
                len -= n;
        }
        return 0;
}

int bundle_reader_finish(struct bundle_reader *r, struct cap_error *err)
{
        if (r->failed) {
                *err = r->failure;
                return err->code;
        }
        if (r->state == R_TRAILER)
                return 0;
        if (r->state == R_HEADER && r->hdr_len == 0 && r->verified && r->member == 2 + r->m.n_parts)
                cap_error_set(err, -EPIPE, CAP_DATA_LOSS,
                              "bundle: truncated after %llu bytes: the end-of-archive blocks "
                              "are missing",
                              (unsigned long long)r->offset);
        else
                cap_error_set(err, -EPIPE, CAP_DATA_LOSS,
                              "bundle: truncated after %llu bytes (reading %s)",
                              (unsigned long long)r->offset, member_name(r, r->member));
        return reader_fail(r, err);
}
