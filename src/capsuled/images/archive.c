/* docker-archive and oci-archive import: pass 1 (sanitise, hash, parse, verify, plan) and pass 2
 * (stream the verified blobs into a sink). See archive.h for the contract. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <json-c/json.h>
#include <zlib.h>

#include "archive.h"
#include "common/cleanup.h"
#include "reference.h"

#define READ_CHUNK (256u << 10)
#define PATH_MAX_LEN 4096
#define MAX_LINK_HOPS 16
#define MAX_MANIFESTS 64
#define MAX_LAYERS 256
#define MAX_NAMES 256
#define MAX_INDEX_DEPTH 4

enum ent_type { ENT_FILE, ENT_DIR, ENT_SYMLINK, ENT_HARDLINK };

struct entry {
        char *name; /* cleaned path relative to the archive root */
        enum ent_type type;
        char *link; /* resolved link target (cleaned, from the archive root) */
        uint64_t size;
        char digest[72];
        char diff_id[72]; /* digest of the uncompressed data: = digest for plain data, of the
                           * inflated stream for gzip data, "" when unknown */
        bool gzip;
        char *data;   /* small JSON documents kept in memory (NUL-terminated) */
        ssize_t blob; /* index of the blob streamed from this entry in pass 2, or -1 */
};

struct pblob {
        char *media_type;
        char digest[72];
        uint64_t size;
        int rank;                /* write order: 0 layers, 1 configs, 2 manifests */
        const struct entry *src; /* archive entry holding the bytes, or NULL ... */
        char *gen;               /* ... when they were generated here (docker-archive manifest) */
        char **labels;           /* key, value, key, value, ... */
        size_t n_labels;
        bool written;
};

struct archive_plan {
        const char *format;
        struct archive_limits lim;
        struct entry *ents;
        size_t n_ents;
        struct pblob *blobs;
        size_t n_blobs;
        struct archive_image *images;
        size_t n_images;
        uint64_t meta_used;
};

/* ---- errors ---- */

static int bad(struct cap_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct cap_error *err, const char *fmt, ...)
{
        char msg[900];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s", msg);
}

static int oom(struct cap_error *err)
{
        return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
}

/* ---- paths ---- */

/* Cleans a tar path: drops "." and empty components and a leading "./"; refuses absolute paths,
 * ".." anywhere and overlong names. "" (the root itself) is returned as "". */
static int clean_path(const char *raw, char **out, struct cap_error *err)
{
        *out = NULL;
        if (!raw || !*raw)
                return bad(err, "archive entry with an empty name");
        if (strlen(raw) > PATH_MAX_LEN)
                return bad(err, "archive entry \"%.64s...\": name too long", raw);
        if (raw[0] == '/')
                return bad(err, "archive entry \"%s\": absolute path refused", raw);
        char *res = malloc(strlen(raw) + 1);
        if (!res)
                return oom(err);
        size_t n = 0;
        for (const char *p = raw; *p;) {
                const char *e = strchr(p, '/');
                size_t len = e ? (size_t)(e - p) : strlen(p);
                if (len == 2 && p[0] == '.' && p[1] == '.') {
                        free(res);
                        return bad(
                            err, "archive entry \"%s\": \"..\" refused (path escapes the archive)",
                            raw);
                }
                if (len > 0 && !(len == 1 && p[0] == '.')) {
                        if (n)
                                res[n++] = '/';
                        memcpy(res + n, p, len);
                        n += len;
                }
                p += len;
                if (*p == '/')
                        p++;
        }
        res[n] = '\0';
        *out = res;
        return 0;
}

/* Resolves a symlink target relative to the link's directory; refuses targets leaving the
 * archive. Result is a cleaned path from the archive root. */
static int resolve_symlink(const char *link_name, const char *target, char **out,
                           struct cap_error *err)
{
        *out = NULL;
        if (!target || !*target)
                return bad(err, "archive entry \"%s\": symlink with an empty target", link_name);
        if (target[0] == '/')
                return bad(err, "archive entry \"%s\": symlink to absolute path \"%s\" refused",
                           link_name, target);
        if (strlen(target) > PATH_MAX_LEN)
                return bad(err, "archive entry \"%s\": symlink target too long", link_name);
        size_t cap = strlen(link_name) + strlen(target) + 2;
        char *res = malloc(cap);
        if (!res)
                return oom(err);
        /* Start from the link's directory. */
        const char *slash = strrchr(link_name, '/');
        size_t n = slash ? (size_t)(slash - link_name) : 0;
        memcpy(res, link_name, n);
        for (const char *p = target; *p;) {
                const char *e = strchr(p, '/');
                size_t len = e ? (size_t)(e - p) : strlen(p);
                if (len == 2 && p[0] == '.' && p[1] == '.') {
                        if (n == 0) {
                                free(res);
                                return bad(err,
                                           "archive entry \"%s\": symlink \"%s\" points outside "
                                           "the archive",
                                           link_name, target);
                        }
                        while (n > 0 && res[n - 1] != '/')
                                n--;
                        if (n > 0)
                                n--;
                } else if (len > 0 && !(len == 1 && p[0] == '.')) {
                        if (n)
                                res[n++] = '/';
                        memcpy(res + n, p, len);
                        n += len;
                }
                p += len;
                if (*p == '/')
                        p++;
        }
        res[n] = '\0';
        *out = res;
        return 0;
}

static int entry_cmp(const void *a, const void *b)
{
        return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

static struct entry *lookup(const struct archive_plan *p, const char *name)
{
        struct entry key = {.name = (char *)name};
        if (!p->n_ents)
                return NULL;
        return bsearch(&key, p->ents, p->n_ents, sizeof(*p->ents), entry_cmp);
}

/* The regular file a path names, following links; NULL with err set otherwise. */
static struct entry *resolve(const struct archive_plan *p, const char *path, struct cap_error *err)
{
        _cleanup_free_ char *clean = NULL;
        if (clean_path(path, &clean, err) < 0)
                return NULL;
        const char *cur = clean;
        for (int hop = 0; hop < MAX_LINK_HOPS; hop++) {
                struct entry *e = lookup(p, cur);
                if (!e) {
                        bad(err, "\"%s\" is missing from the archive", path);
                        return NULL;
                }
                if (e->type == ENT_FILE)
                        return e;
                if (e->type == ENT_DIR) {
                        bad(err, "\"%s\" is a directory", path);
                        return NULL;
                }
                cur = e->link;
        }
        bad(err, "\"%s\": too many levels of links", path);
        return NULL;
}

/* ---- pass 1: read, sanitise, hash ---- */

struct inflater {
        z_stream z;
        bool on, failed;
        struct blob_hash h;
        uint64_t out_bytes, max;
        unsigned char *buf;
};

static void inflater_feed(struct inflater *f, const unsigned char *data, size_t len)
{
        if (!f->on || f->failed)
                return;
        f->z.next_in = (unsigned char *)data;
        f->z.avail_in = (uInt)len;
        while (f->z.avail_in > 0) {
                f->z.next_out = f->buf;
                f->z.avail_out = READ_CHUNK;
                int r = inflate(&f->z, Z_NO_FLUSH);
                size_t got = READ_CHUNK - f->z.avail_out;
                blob_hash_update(&f->h, f->buf, got);
                f->out_bytes += got;
                if (f->out_bytes > f->max) {
                        f->failed = true;
                        return;
                }
                if (r == Z_STREAM_END) {
                        /* Concatenated gzip members are one stream. */
                        if (f->z.avail_in == 0 || inflateReset(&f->z) != Z_OK) {
                                if (f->z.avail_in)
                                        f->failed = true;
                                return;
                        }
                } else if (r != Z_OK && !(r == Z_BUF_ERROR && got > 0)) {
                        f->failed = true;
                        return;
                }
        }
}

static void inflater_end(struct inflater *f, struct entry *e)
{
        if (!f->on)
                return;
        if (!f->failed)
                blob_hash_final(&f->h, e->diff_id);
        else
                blob_hash_free(&f->h);
        inflateEnd(&f->z);
        f->on = false;
}

static int open_reader(int fd, struct archive **out, struct cap_error *err)
{
        *out = NULL;
        if (lseek(fd, 0, SEEK_SET) < 0)
                return cap_error_errno(err, -errno, "archive: seek");
        struct archive *a = archive_read_new();
        if (!a)
                return oom(err);
        archive_read_support_filter_gzip(a);
        archive_read_support_filter_xz(a);
        archive_read_support_filter_zstd(a);
        archive_read_support_filter_bzip2(a);
        archive_read_support_format_tar(a);
        if (archive_read_open_fd(a, fd, 64 << 10) != ARCHIVE_OK) {
                bad(err, "not a tar archive: %s", archive_error_string(a));
                archive_read_free(a);
                return err->code;
        }
        *out = a;
        return 0;
}

/* Reads one entry's data: hash, gzip probe, keep small JSON. */
static int read_entry_data(struct archive_plan *p, struct archive *a, struct entry *e,
                           bool size_known, unsigned char *buf, struct cap_error *err)
{
        struct blob_hash h;
        struct inflater inf = {.max = p->lim.max_inflated_bytes, .buf = buf + READ_CHUNK};
        size_t kept = 0;
        bool first = true;
        if (blob_hash_init(&h, err) < 0)
                return err->code;
        for (;;) {
                la_ssize_t n = archive_read_data(a, buf, READ_CHUNK);
                if (n < 0) {
                        bad(err, "archive entry \"%s\": %s", e->name, archive_error_string(a));
                        goto fail;
                }
                if (n == 0)
                        break;
                if (first) {
                        first = false;
                        size_t i = 0;
                        while (i < (size_t)n && (buf[i] == ' ' || buf[i] == '\n' ||
                                                 buf[i] == '\r' || buf[i] == '\t'))
                                i++;
                        bool json = i < (size_t)n && (buf[i] == '{' || buf[i] == '[');
                        if (json && size_known && e->size <= BLOB_META_MAX &&
                            p->meta_used + e->size <= p->lim.max_meta_bytes) {
                                if (!(e->data = malloc(e->size + 1))) {
                                        oom(err);
                                        goto fail;
                                }
                                p->meta_used += e->size;
                        }
                        if (n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b) {
                                e->gzip = true;
                                if (inflateInit2(&inf.z, 16 + MAX_WBITS) == Z_OK) {
                                        if (blob_hash_init(&inf.h, err) < 0) {
                                                inflateEnd(&inf.z);
                                                goto fail;
                                        }
                                        inf.on = true;
                                }
                        }
                }
                if (h.size + (uint64_t)n > p->lim.max_entry_bytes) {
                        cap_error_set(err, -EFBIG, CAP_RESOURCE_EXHAUSTED,
                                      "archive entry \"%s\": larger than the limit of %llu bytes",
                                      e->name, (unsigned long long)p->lim.max_entry_bytes);
                        goto fail;
                }
                if (e->data) {
                        if (kept + (size_t)n > e->size) {
                                bad(err, "archive entry \"%s\": more data than declared", e->name);
                                goto fail;
                        }
                        memcpy(e->data + kept, buf, (size_t)n);
                        kept += (size_t)n;
                }
                blob_hash_update(&h, buf, (size_t)n);
                inflater_feed(&inf, buf, (size_t)n);
        }
        if (size_known && h.size != e->size) {
                bad(err, "archive entry \"%s\": truncated (%llu of %llu bytes)", e->name,
                    (unsigned long long)h.size, (unsigned long long)e->size);
                goto fail;
        }
        e->size = h.size;
        if (e->data)
                e->data[kept] = '\0';
        blob_hash_final(&h, e->digest);
        if (!e->gzip)
                memcpy(e->diff_id, e->digest, sizeof(e->diff_id));
        inflater_end(&inf, e);
        return 0;
fail:
        blob_hash_free(&h);
        if (inf.on) {
                blob_hash_free(&inf.h);
                inflateEnd(&inf.z);
        }
        return err->code;
}

static int read_entries(struct archive_plan *p, int fd, struct cap_error *err)
{
        struct archive *a = NULL;
        size_t cap = 0;
        int r = 0;
        _cleanup_free_ unsigned char *buf = malloc(2 * READ_CHUNK);
        if (!buf)
                return oom(err);
        if (open_reader(fd, &a, err) < 0)
                return err->code;
        for (;;) {
                struct archive_entry *ae;
                int hr = archive_read_next_header(a, &ae);
                if (hr == ARCHIVE_EOF)
                        break;
                if (hr < ARCHIVE_WARN) {
                        r = bad(err, "not a valid tar archive: %s", archive_error_string(a));
                        goto out;
                }
                _cleanup_free_ char *name = NULL;
                if (clean_path(archive_entry_pathname(ae), &name, err) < 0) {
                        r = err->code;
                        goto out;
                }
                mode_t ft = archive_entry_filetype(ae);
                const char *hl = archive_entry_hardlink(ae);
                if (!*name) {
                        if (ft == AE_IFDIR)
                                continue; /* "./" itself */
                        r = bad(err, "archive entry \"%s\": not a file name",
                                archive_entry_pathname(ae));
                        goto out;
                }
                if (p->n_ents >= p->lim.max_entries) {
                        r = cap_error_set(err, -E2BIG, CAP_RESOURCE_EXHAUSTED,
                                          "archive has more than %zu entries", p->lim.max_entries);
                        goto out;
                }
                if (p->n_ents == cap) {
                        size_t ncap = cap ? cap * 2 : 64;
                        struct entry *ne = realloc(p->ents, ncap * sizeof(*ne));
                        if (!ne) {
                                r = oom(err);
                                goto out;
                        }
                        p->ents = ne;
                        cap = ncap;
                }
                struct entry *e = &p->ents[p->n_ents];
                *e = (struct entry){.name = TAKE_PTR(name), .blob = -1};
                p->n_ents++;
                if (hl) {
                        e->type = ENT_HARDLINK;
                        if (clean_path(hl, &e->link, err) < 0) {
                                r = cap_error_prefix(err, "hard link \"%s\"", e->name);
                                goto out;
                        }
                        if (!*e->link) {
                                r = bad(err, "archive entry \"%s\": hard link to the archive root",
                                        e->name);
                                goto out;
                        }
                        continue;
                }
                if (ft == AE_IFDIR) {
                        e->type = ENT_DIR;
                        continue;
                }
                if (ft == AE_IFLNK) {
                        e->type = ENT_SYMLINK;
                        if (resolve_symlink(e->name, archive_entry_symlink(ae), &e->link, err) <
                            0) {
                                r = err->code;
                                goto out;
                        }
                        continue;
                }
                if (ft != AE_IFREG) {
                        r = bad(
                            err,
                            "archive entry \"%s\": %s refused (only files, directories and links)",
                            e->name,
                            ft == AE_IFCHR || ft == AE_IFBLK ? "device node"
                            : ft == AE_IFIFO                 ? "FIFO"
                                                             : "special file");
                        goto out;
                }
                e->type = ENT_FILE;
                bool known = archive_entry_size_is_set(ae);
                int64_t sz = archive_entry_size(ae);
                if (known && (sz < 0 || (uint64_t)sz > p->lim.max_entry_bytes)) {
                        r = cap_error_set(err, -EFBIG, CAP_RESOURCE_EXHAUSTED,
                                          "archive entry \"%s\": declares %lld bytes, more than "
                                          "the limit of %llu",
                                          e->name, (long long)sz,
                                          (unsigned long long)p->lim.max_entry_bytes);
                        goto out;
                }
                e->size = known ? (uint64_t)sz : 0;
                if (read_entry_data(p, a, e, known, buf, err) < 0) {
                        r = err->code;
                        goto out;
                }
        }
        if (p->n_ents)
                qsort(p->ents, p->n_ents, sizeof(*p->ents), entry_cmp);
        for (size_t i = 1; i < p->n_ents; i++)
                if (strcmp(p->ents[i - 1].name, p->ents[i].name) == 0 &&
                    !(p->ents[i].type == ENT_DIR && p->ents[i - 1].type == ENT_DIR)) {
                        r = bad(err, "archive entry \"%s\": duplicate name refused",
                                p->ents[i].name);
                        goto out;
                }
        for (size_t i = 0; i < p->n_ents; i++)
                if (p->ents[i].type == ENT_HARDLINK && !lookup(p, p->ents[i].link)) {
                        r = bad(err,
                                "archive entry \"%s\": hard link to \"%s\", which is not in the "
                                "archive",
                                p->ents[i].name, p->ents[i].link);
                        goto out;
                }
out:
        archive_read_free(a);
        return r;
}

/* ---- JSON helpers ---- */

static struct json_object *entry_json(const struct entry *e, const char *what,
                                      struct cap_error *err)
{
        if (!e->data) {
                bad(err, "%s \"%s\": not a JSON document (or larger than %u bytes)", what, e->name,
                    BLOB_META_MAX);
                return NULL;
        }
        struct json_tokener *tok = json_tokener_new();
        if (!tok) {
                oom(err);
                return NULL;
        }
        struct json_object *o = json_tokener_parse_ex(tok, e->data, (int)e->size);
        enum json_tokener_error je = json_tokener_get_error(tok);
        size_t end = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (!o || je != json_tokener_success) {
                json_object_put(o);
                bad(err, "%s \"%s\": invalid JSON: %s", what, e->name, json_tokener_error_desc(je));
                return NULL;
        }
        for (; end < e->size; end++)
                if (!strchr(" \t\r\n", e->data[end])) {
                        json_object_put(o);
                        bad(err, "%s \"%s\": trailing data after the JSON document", what, e->name);
                        return NULL;
                }
        return o;
}

static const char *jstr(struct json_object *o, const char *key)
{
        struct json_object *v;
        if (!o || !json_object_object_get_ex(o, key, &v) ||
            !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

static struct json_object *jarr(struct json_object *o, const char *key)
{
        struct json_object *v;
        if (!o || !json_object_object_get_ex(o, key, &v) ||
            !json_object_is_type(v, json_type_array))
                return NULL;
        return v;
}

/* ---- the plan ---- */

static struct pblob *find_blob(struct archive_plan *p, const char *digest)
{
        for (size_t i = 0; i < p->n_blobs; i++)
                if (strcmp(p->blobs[i].digest, digest) == 0)
                        return &p->blobs[i];
        return NULL;
}

/* Adds a blob (deduplicated by digest). labels: NULL-terminated key/value list, copied. */
static int add_blob(struct archive_plan *p, const char *media_type, const char *digest,
                    uint64_t size, int rank, const struct entry *src, char *gen,
                    const char *const *labels, struct cap_error *err)
{
        if (find_blob(p, digest)) {
                free(gen);
                return 0;
        }
        struct pblob *nb = realloc(p->blobs, (p->n_blobs + 1) * sizeof(*nb));
        if (!nb) {
                free(gen);
                return oom(err);
        }
        p->blobs = nb;
        struct pblob *b = &p->blobs[p->n_blobs];
        *b = (struct pblob){.size = size, .rank = rank, .src = src, .gen = gen};
        snprintf(b->digest, sizeof(b->digest), "%s", digest);
        p->n_blobs++;
        if (!(b->media_type = strdup(media_type)))
                return oom(err);
        size_t n = 0;
        while (labels && labels[n])
                n++;
        if (n) {
                if (!(b->labels = calloc(n, sizeof(char *))))
                        return oom(err);
                for (size_t i = 0; i < n; i++)
                        if (!(b->labels[b->n_labels++] = strdup(labels[i])))
                                return oom(err);
        }
        return 0;
}

static int add_image(struct archive_plan *p, const char *name, const char *media_type,
                     const char *digest, uint64_t manifest_size, uint64_t total,
                     struct cap_error *err)
{
        _cleanup_free_ char *norm = NULL;
        if (image_ref_normalize(name, &norm, err) < 0)
                return cap_error_prefix(err, "image name");
        for (size_t i = 0; i < p->n_images; i++)
                if (strcmp(p->images[i].name, norm) == 0) {
                        if (strcmp(p->images[i].digest, digest) != 0)
                                return bad(err, "the archive names two different images \"%s\"",
                                           norm);
                        return 0;
                }
        if (p->n_images >= MAX_NAMES)
                return bad(err, "the archive holds more than %d image names", MAX_NAMES);
        struct archive_image *ni = realloc(p->images, (p->n_images + 1) * sizeof(*ni));
        if (!ni)
                return oom(err);
        p->images = ni;
        struct archive_image *im = &p->images[p->n_images];
        *im = (struct archive_image){.manifest_size = manifest_size, .total_size = total};
        snprintf(im->digest, sizeof(im->digest), "%s", digest);
        im->name = TAKE_PTR(norm);
        p->n_images++;
        if (!(im->media_type = strdup(media_type)))
                return oom(err);
        return 0;
}

/* If path is "blobs/sha256/<hex>" (after cleaning), the entry must hash to that digest. */
static int check_named_digest(const char *path, const struct entry *e, struct cap_error *err)
{
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        char want[80];
        size_t bl = strlen(base);
        if (strstr(path, "sha256/") && bl == 64)
                snprintf(want, sizeof(want), "sha256:%s", base);
        else if (bl == 64 + 5 && strcmp(base + 64, ".json") == 0)
                snprintf(want, sizeof(want), "sha256:%.64s", base);
        else
                return 0;
        if (image_digest_valid(want) && strcmp(want, e->digest) != 0)
                return bad(err, "\"%s\": content digest %s does not match its name", path,
                           e->digest);
        return 0;
}

/* The manifest labels that tell containerd's GC what a manifest references. */
static char **gc_labels(const char *config, const char *const *layers, size_t n,
                        struct cap_error *err)
{
        char **l = calloc(2 * (n + 1) + 1, sizeof(char *));
        if (!l) {
                oom(err);
                return NULL;
        }
        size_t k = 0;
        bool ok =
            (l[k++] = strdup("containerd.io/gc.ref.content.config")) && (l[k++] = strdup(config));
        for (size_t i = 0; ok && i < n; i++) {
                ok = asprintf(&l[k++], "containerd.io/gc.ref.content.l.%zu", i) >= 0;
                ok = ok && (l[k++] = strdup(layers[i]));
        }
        if (!ok) {
                for (size_t i = 0; i < k; i++)
                        free(l[i]);
                free(l);
                oom(err);
                return NULL;
        }
        return l;
}

static void strv_free(char **v)
{
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

static void strv_freep(char ***v)
{
        strv_free(*v);
}

static void json_putp(struct json_object **o)
{
        json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_putp)
#define _cleanup_strv_ _cleanup_(strv_freep)

/* The config's rootfs.diff_ids. */
static struct json_object *config_diff_ids(struct json_object *cfg, const char *what,
                                           struct cap_error *err)
{
        struct json_object *rootfs;
        struct json_object *ids = NULL;
        if (json_object_object_get_ex(cfg, "rootfs", &rootfs))
                ids = jarr(rootfs, "diff_ids");
        if (!ids)
                bad(err, "%s: no rootfs.diff_ids", what);
        return ids;
}

/* ---- docker-archive ---- */

static int plan_docker_item(struct archive_plan *p, struct json_object *item, size_t idx,
                            const char *override, struct cap_error *err)
{
        const char *cfg_path = jstr(item, "Config");
        struct json_object *layers = jarr(item, "Layers");
        if (!cfg_path || !layers)
                return bad(err, "manifest.json[%zu]: missing Config or Layers", idx);
        struct entry *ce = resolve(p, cfg_path, err);
        if (!ce || check_named_digest(cfg_path, ce, err) < 0)
                return cap_error_prefix(err, "manifest.json[%zu] config", idx);
        _cleanup_json_ struct json_object *cfg = entry_json(ce, "image config", err);
        if (!cfg)
                return err->code;
        struct json_object *ids = config_diff_ids(cfg, cfg_path, err);
        if (!ids)
                return err->code;
        size_t n = json_object_array_length(layers);
        if (n > MAX_LAYERS)
                return bad(err, "manifest.json[%zu]: more than %d layers", idx, MAX_LAYERS);
        if (n != json_object_array_length(ids))
                return bad(err, "manifest.json[%zu]: %zu layers but the config lists %zu diff_ids",
                           idx, n, json_object_array_length(ids));
        /* The OCI manifest, keys in a fixed order (json-c keeps insertion order). */
        _cleanup_json_ struct json_object *m = json_object_new_object();
        struct json_object *ml = json_object_new_array();
        struct json_object *cd = json_object_new_object();
        json_object_object_add(cd, "mediaType", json_object_new_string(MT_OCI_CONFIG));
        json_object_object_add(cd, "digest", json_object_new_string(ce->digest));
        json_object_object_add(cd, "size", json_object_new_int64((int64_t)ce->size));
        json_object_object_add(m, "schemaVersion", json_object_new_int(2));
        json_object_object_add(m, "mediaType", json_object_new_string(MT_OCI_MANIFEST));
        json_object_object_add(m, "config", cd);
        json_object_object_add(m, "layers", ml);
        const char *layer_digests[MAX_LAYERS];
        uint64_t total = ce->size;
        for (size_t i = 0; i < n; i++) {
                const char *lp = json_object_get_string(json_object_array_get_idx(layers, i));
                const char *want = json_object_get_string(json_object_array_get_idx(ids, i));
                struct entry *le = lp ? resolve(p, lp, err) : NULL;
                if (!le || check_named_digest(lp, le, err) < 0)
                        return cap_error_prefix(err, "manifest.json[%zu] layer %zu", idx, i);
                if (!le->diff_id[0])
                        return bad(
                            err,
                            "layer \"%s\": cannot compute its uncompressed digest (only plain "
                            "and gzip-compressed tar layers are supported)",
                            lp);
                if (!want || strcmp(want, le->diff_id) != 0)
                        return bad(err,
                                   "layer \"%s\": digest %s does not match the config's diff_id %s",
                                   lp, le->diff_id, want ? want : "(none)");
                const char *mt = le->gzip ? MT_OCI_LAYER_GZIP : MT_OCI_LAYER;
                const char *labels[] = {"containerd.io/uncompressed", le->diff_id, NULL};
                if (add_blob(p, mt, le->digest, le->size, 0, le, NULL, labels, err) < 0)
                        return err->code;
                struct json_object *d = json_object_new_object();
                json_object_object_add(d, "mediaType", json_object_new_string(mt));
                json_object_object_add(d, "digest", json_object_new_string(le->digest));
                json_object_object_add(d, "size", json_object_new_int64((int64_t)le->size));
                json_object_array_add(ml, d);
                layer_digests[i] = le->digest;
                total += le->size;
        }
        if (add_blob(p, MT_OCI_CONFIG, ce->digest, ce->size, 1, ce, NULL, NULL, err) < 0)
                return err->code;
        const char *text = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN |
                                                                 JSON_C_TO_STRING_NOSLASHESCAPE);
        char *gen = strdup(text);
        char digest[72];
        if (!gen)
                return oom(err);
        size_t glen = strlen(gen);
        if (blob_digest(gen, glen, digest, err) < 0) {
                free(gen);
                return err->code;
        }
        _cleanup_strv_ char **labels = gc_labels(ce->digest, layer_digests, n, err);
        if (!labels) {
                free(gen);
                return err->code;
        }
        if (add_blob(p, MT_OCI_MANIFEST, digest, glen, 2, NULL, gen, (const char *const *)labels,
                     err) < 0)
                return err->code;
        total += glen;
        if (override)
                return add_image(p, override, MT_OCI_MANIFEST, digest, glen, total, err);
        struct json_object *tags = jarr(item, "RepoTags");
        for (size_t i = 0; tags && i < json_object_array_length(tags); i++) {
                const char *t = json_object_get_string(json_object_array_get_idx(tags, i));
                if (t && add_image(p, t, MT_OCI_MANIFEST, digest, glen, total, err) < 0)
                        return err->code;
        }
        return 0;
}

static int plan_docker(struct archive_plan *p, const char *override, struct cap_error *err)
{
        struct entry *me = resolve(p, "manifest.json", err);
        if (!me)
                return err->code;
        _cleanup_json_ struct json_object *m = entry_json(me, "docker-archive", err);
        if (!m)
                return err->code;
        if (!json_object_is_type(m, json_type_array) || json_object_array_length(m) == 0)
                return bad(err, "manifest.json: expected a non-empty array");
        size_t n = json_object_array_length(m);
        if (n > MAX_MANIFESTS)
                return bad(err, "manifest.json: more than %d images", MAX_MANIFESTS);
        if (override && n != 1)
                return bad(err, "the archive holds %zu images; --name needs exactly one", n);
        for (size_t i = 0; i < n; i++)
                if (plan_docker_item(p, json_object_array_get_idx(m, i), i, override, err) < 0)
                        return err->code;
        return 0;
}

/* ---- oci-archive ---- */

struct desc {
        const char *media_type;
        const char *digest;
        uint64_t size;
};

static int parse_desc(struct json_object *o, const char *what, struct desc *d,
                      struct cap_error *err)
{
        struct json_object *sz;
        d->media_type = jstr(o, "mediaType");
        d->digest = jstr(o, "digest");
        if (!d->digest || !image_digest_valid(d->digest))
                return bad(err, "%s: descriptor without a valid sha256 digest", what);
        if (!json_object_object_get_ex(o, "size", &sz) || !json_object_is_type(sz, json_type_int) ||
            json_object_get_int64(sz) < 0)
                return bad(err, "%s %s: descriptor without a valid size", what, d->digest);
        d->size = (uint64_t)json_object_get_int64(sz);
        return 0;
}

/* The archive entry holding a descriptor's blob, verified against digest and size. */
static struct entry *desc_entry(struct archive_plan *p, const struct desc *d, struct cap_error *err)
{
        char path[96];
        snprintf(path, sizeof(path), "blobs/sha256/%s", d->digest + 7);
        struct entry *e = resolve(p, path, err);
        if (!e) {
                bad(err, "blob %s is missing from the archive", d->digest);
                return NULL;
        }
        if (strcmp(e->digest, d->digest) != 0 || e->size != d->size) {
                bad(err,
                    "blob %s: content does not match its descriptor (got %s, %llu bytes; expected "
                    "%llu)",
                    d->digest, e->digest, (unsigned long long)e->size, (unsigned long long)d->size);
                return NULL;
        }
        return e;
}

static bool platform_is(struct json_object *desc, const char *os, const char *arch)
{
        struct json_object *pl;
        if (!json_object_object_get_ex(desc, "platform", &pl))
                return false;
        const char *o = jstr(pl, "os"), *a = jstr(pl, "architecture");
        return o && a && strcmp(o, os) == 0 && strcmp(a, arch) == 0;
}

/* Plans one manifest (or picks linux/amd64 out of an index); *chosen gets the image target. */
static int plan_oci_manifest(struct archive_plan *p, struct json_object *dj, int depth,
                             struct desc *chosen, uint64_t *total, struct cap_error *err)
{
        struct desc d;
        if (parse_desc(dj, "manifest", &d, err) < 0)
                return err->code;
        struct entry *e = desc_entry(p, &d, err);
        if (!e)
                return err->code;
        _cleanup_json_ struct json_object *m = entry_json(e, "manifest", err);
        if (!m)
                return err->code;
        const char *mt = d.media_type ? d.media_type : jstr(m, "mediaType");
        if (!mt && jarr(m, "manifests"))
                mt = MT_OCI_INDEX;
        if (!mt)
                mt = MT_OCI_MANIFEST;
        if (blob_is_index(mt)) {
                struct json_object *ms = jarr(m, "manifests");
                if (depth >= MAX_INDEX_DEPTH || !ms)
                        return bad(err, "index %s: %s", d.digest,
                                   ms ? "nested too deeply" : "no manifests");
                size_t n = json_object_array_length(ms);
                struct json_object *pick = NULL;
                for (size_t i = 0; i < n && !pick; i++)
                        if (platform_is(json_object_array_get_idx(ms, i), "linux", "amd64"))
                                pick = json_object_array_get_idx(ms, i);
                if (!pick && n == 1)
                        pick = json_object_array_get_idx(ms, 0);
                if (!pick)
                        return bad(err, "index %s: no linux/amd64 image", d.digest);
                return plan_oci_manifest(p, pick, depth + 1, chosen, total, err);
        }
        if (!blob_is_manifest(mt))
                return bad(err, "manifest %s: unsupported media type \"%s\"", d.digest, mt);
        struct json_object *cj, *layers = jarr(m, "layers");
        struct desc cd;
        if (!json_object_object_get_ex(m, "config", &cj) || !layers)
                return bad(err, "manifest %s: missing config or layers", d.digest);
        if (parse_desc(cj, "config", &cd, err) < 0)
                return err->code;
        struct entry *ce = desc_entry(p, &cd, err);
        if (!ce)
                return err->code;
        _cleanup_json_ struct json_object *cfg = entry_json(ce, "image config", err);
        if (!cfg)
                return err->code;
        struct json_object *ids = config_diff_ids(cfg, cd.digest, err);
        if (!ids)
                return err->code;
        size_t n = json_object_array_length(layers);
        if (n > MAX_LAYERS)
                return bad(err, "manifest %s: more than %d layers", d.digest, MAX_LAYERS);
        if (n != json_object_array_length(ids))
                return bad(err, "manifest %s: %zu layers but the config lists %zu diff_ids",
                           d.digest, n, json_object_array_length(ids));
        const char *layer_digests[MAX_LAYERS];
        *total = d.size + cd.size;
        for (size_t i = 0; i < n; i++) {
                struct desc ld;
                if (parse_desc(json_object_array_get_idx(layers, i), "layer", &ld, err) < 0)
                        return err->code;
                if (!ld.media_type || !blob_is_layer(ld.media_type))
                        return bad(err, "layer %s: unsupported media type \"%s\"", ld.digest,
                                   ld.media_type ? ld.media_type : "");
                struct entry *le = desc_entry(p, &ld, err);
                if (!le)
                        return err->code;
                const char *want = json_object_get_string(json_object_array_get_idx(ids, i));
                bool zstd = strstr(ld.media_type, "zstd") != NULL;
                if (!want || !image_digest_valid(want))
                        return bad(err, "config %s: diff_id %zu is not a sha256 digest", cd.digest,
                                   i);
                if (!zstd && !le->diff_id[0])
                        return bad(err, "layer %s: cannot compute its uncompressed digest",
                                   ld.digest);
                if (!zstd && strcmp(le->diff_id, want) != 0)
                        return bad(err,
                                   "layer %s: uncompressed digest %s does not match the config's "
                                   "diff_id %s",
                                   ld.digest, le->diff_id, want);
                const char *labels[] = {"containerd.io/uncompressed", want, NULL};
                if (add_blob(p, ld.media_type, ld.digest, ld.size, 0, le, NULL, labels, err) < 0)
                        return err->code;
                layer_digests[i] = le->digest;
                *total += ld.size;
        }
        const char *cmt = cd.media_type ? cd.media_type : MT_OCI_CONFIG;
        if (add_blob(p, cmt, cd.digest, cd.size, 1, ce, NULL, NULL, err) < 0)
                return err->code;
        _cleanup_strv_ char **labels = gc_labels(cd.digest, layer_digests, n, err);
        if (!labels ||
            add_blob(p, mt, d.digest, d.size, 2, e, NULL, (const char *const *)labels, err) < 0)
                return err->code;
        /* The strings live in the entries and blobs, which outlive this function. */
        chosen->media_type =
            strcmp(mt, MT_OCI_MANIFEST) == 0 ? MT_OCI_MANIFEST : MT_DOCKER_MANIFEST;
        chosen->digest = e->digest;
        chosen->size = d.size;
        return 0;
}

/* A name from an index annotation: a full reference (has '/' or ':'), not a bare tag. */
static const char *annotation_name(struct json_object *desc)
{
        struct json_object *ann;
        if (!json_object_object_get_ex(desc, "annotations", &ann))
                return NULL;
        const char *n = jstr(ann, "io.containerd.image.name");
        if (n)
                return n;
        n = jstr(ann, "org.opencontainers.image.ref.name");
        if (n && (strchr(n, '/') || strchr(n, ':')))
                return n;
        return NULL;
}

/* docker 25+ writes both layouts: names may only be in manifest.json's RepoTags. */
static int docker_names_for(struct archive_plan *p, const char *config_digest,
                            const struct desc *target, uint64_t total, struct cap_error *err)
{
        struct entry *me = lookup(p, "manifest.json");
        if (!me || !me->data)
                return 0;
        struct cap_error ignored = {0};
        _cleanup_json_ struct json_object *m = entry_json(me, "manifest.json", &ignored);
        if (!m || !json_object_is_type(m, json_type_array))
                return 0;
        for (size_t i = 0; i < json_object_array_length(m); i++) {
                struct json_object *item = json_object_array_get_idx(m, i);
                const char *cfg = jstr(item, "Config");
                struct entry *ce = cfg ? resolve(p, cfg, &ignored) : NULL;
                struct json_object *tags = jarr(item, "RepoTags");
                if (!ce || strcmp(ce->digest, config_digest) != 0 || !tags)
                        continue;
                for (size_t t = 0; t < json_object_array_length(tags); t++) {
                        const char *name =
                            json_object_get_string(json_object_array_get_idx(tags, t));
                        if (name && add_image(p, name, target->media_type, target->digest,
                                              target->size, total, err) < 0)
                                return err->code;
                }
        }
        return 0;
}

static const char *manifest_config_digest(struct archive_plan *p, const struct desc *target)
{
        for (size_t i = 0; i < p->n_blobs; i++)
                if (strcmp(p->blobs[i].digest, target->digest) == 0)
                        for (size_t k = 0; k + 1 < p->blobs[i].n_labels; k += 2)
                                if (strcmp(p->blobs[i].labels[k],
                                           "containerd.io/gc.ref.content.config") == 0)
                                        return p->blobs[i].labels[k + 1];
        return NULL;
}

static int plan_oci(struct archive_plan *p, const char *override, struct cap_error *err)
{
        struct entry *le = resolve(p, "oci-layout", err);
        if (!le)
                return err->code;
        _cleanup_json_ struct json_object *layout = entry_json(le, "oci-archive", err);
        if (!layout)
                return err->code;
        if (!jstr(layout, "imageLayoutVersion"))
                return bad(err, "oci-layout: no imageLayoutVersion");
        struct entry *ie = resolve(p, "index.json", err);
        if (!ie)
                return err->code;
        _cleanup_json_ struct json_object *index = entry_json(ie, "oci-archive", err);
        if (!index)
                return err->code;
        struct json_object *ms = jarr(index, "manifests");
        size_t n = ms ? json_object_array_length(ms) : 0;
        if (n == 0)
                return bad(err, "index.json: no manifests");
        if (n > MAX_MANIFESTS)
                return bad(err, "index.json: more than %d manifests", MAX_MANIFESTS);
        struct desc first = {0};
        for (size_t i = 0; i < n; i++) {
                struct json_object *dj = json_object_array_get_idx(ms, i);
                struct desc target;
                uint64_t total = 0;
                if (plan_oci_manifest(p, dj, 0, &target, &total, err) < 0)
                        return cap_error_prefix(err, "index.json manifest %zu", i);
                if (i == 0)
                        first = target;
                else if (override && strcmp(first.digest, target.digest) != 0)
                        return bad(err, "the archive holds %zu images; --name needs exactly one",
                                   n);
                if (override) {
                        if (add_image(p, override, target.media_type, target.digest, target.size,
                                      total, err) < 0)
                                return err->code;
                        continue;
                }
                const char *name = annotation_name(dj);
                size_t before = p->n_images;
                if (name && add_image(p, name, target.media_type, target.digest, target.size, total,
                                      err) < 0)
                        return err->code;
                const char *cfg = manifest_config_digest(p, &target);
                if (p->n_images == before && cfg &&
                    docker_names_for(p, cfg, &target, total, err) < 0)
                        return err->code;
        }
        return 0;
}

/* ---- public ---- */

/* ---- layer contents: what containerd would unpack into the image root ---- */

/* Why a path inside a layer would leave the image root, or NULL when it stays inside. */
static const char *layer_path_escapes(const char *path)
{
        if (path[0] == '/')
                return "an absolute path is refused in a layer";
        for (const char *p = path; *p;) {
                size_t len = strcspn(p, "/");
                if (len == 2 && p[0] == '.' && p[1] == '.')
                        return "\"..\" leaves the image root";
                p += len;
                p += *p == '/';
        }
        return NULL;
}

struct layer_src {
        struct archive *outer;
        unsigned char *buf;
};

/* The nested reader's input: the layer entry's bytes, pulled from the outer archive. */
static la_ssize_t layer_read(struct archive *a, void *ud, const void **out)
{
        struct layer_src *s = ud;
        la_ssize_t n = archive_read_data(s->outer, s->buf, READ_CHUNK);
        if (n < 0) {
                archive_set_error(a, EIO, "%s", archive_error_string(s->outer));
                return -1;
        }
        *out = s->buf;
        return n;
}

/* Reads one layer (b, the current entry of outer) as a tar, whatever its compression, and
 * refuses entries and hardlink targets that leave the image root. */
static int check_layer(struct archive *outer, const struct pblob *b, unsigned char *buf,
                       struct cap_error *err)
{
        struct layer_src src = {outer, buf};
        struct archive *a = archive_read_new();
        if (!a)
                return oom(err);
        archive_read_support_filter_gzip(a);
        archive_read_support_filter_zstd(a);
        archive_read_support_filter_xz(a);
        archive_read_support_format_tar(a);
        archive_read_support_format_empty(a);
        int r = 0;
        if (archive_read_open(a, &src, NULL, layer_read, NULL) != ARCHIVE_OK) {
                r = bad(err, "layer %s: not a tar archive: %s", b->digest, archive_error_string(a));
                goto out;
        }
        for (;;) {
                struct archive_entry *ae;
                int hr = archive_read_next_header(a, &ae);
                if (hr == ARCHIVE_EOF)
                        break;
                if (hr < ARCHIVE_WARN) {
                        r = bad(err, "layer %s: %s", b->digest, archive_error_string(a));
                        goto out;
                }
                const char *name = archive_entry_pathname(ae);
                const char *link = archive_entry_hardlink(ae);
                const char *why = name && *name ? layer_path_escapes(name) : "an empty name";
                if (why) {
                        r = bad(err, "layer %s: entry \"%.200s\": %s", b->digest, name ? name : "",
                                why);
                        goto out;
                }
                if (link && (why = layer_path_escapes(link))) {
                        r = bad(err, "layer %s: entry \"%.200s\": hardlink to \"%.200s\": %s",
                                b->digest, name, link, why);
                        goto out;
                }
                if (archive_read_data_skip(a) < ARCHIVE_WARN) {
                        r = bad(err, "layer %s: %s", b->digest, archive_error_string(a));
                        goto out;
                }
        }
out:
        archive_read_free(a);
        return r;
}

/* A streaming pass over the archive that reads every layer's tar (nothing is copied). */
static int check_layers(struct archive_plan *p, int fd, struct cap_error *err)
{
        size_t left = 0;
        for (size_t i = 0; i < p->n_blobs; i++)
                if (p->blobs[i].rank == 0 && p->blobs[i].src)
                        left++;
        if (!left)
                return 0;
        _cleanup_free_ unsigned char *buf = malloc(READ_CHUNK);
        if (!buf)
                return oom(err);
        struct archive *a = NULL;
        if (open_reader(fd, &a, err) < 0)
                return err->code;
        int r = 0;
        while (left) {
                struct archive_entry *ae;
                int hr = archive_read_next_header(a, &ae);
                if (hr == ARCHIVE_EOF)
                        break;
                if (hr < ARCHIVE_WARN) {
                        r = bad(err, "archive: %s", archive_error_string(a));
                        break;
                }
                if (archive_entry_filetype(ae) != AE_IFREG || archive_entry_hardlink(ae))
                        continue;
                _cleanup_free_ char *name = NULL;
                if ((r = clean_path(archive_entry_pathname(ae), &name, err)) < 0)
                        break;
                const struct entry *e = lookup(p, name);
                for (size_t i = 0; e && i < p->n_blobs; i++) {
                        struct pblob *b = &p->blobs[i];
                        if (b->rank != 0 || b->src != e)
                                continue;
                        if ((r = check_layer(a, b, buf, err)) < 0)
                                goto out;
                        left--;
                        break; /* one entry's data is read once */
                }
        }
        if (r == 0 && left)
                r = bad(err, "archive changed while importing: %zu layers not found again", left);
out:
        archive_read_free(a);
        return r;
}

int archive_plan_open(int fd, const char *name_override, const struct archive_limits *lim,
                      struct archive_plan **out, struct cap_error *err)
{
        *out = NULL;
        struct archive_plan *p = calloc(1, sizeof(*p));
        if (!p)
                return oom(err);
        if (lim)
                p->lim = *lim;
        if (!p->lim.max_entry_bytes)
                p->lim.max_entry_bytes = 4ull << 30;
        if (!p->lim.max_inflated_bytes)
                p->lim.max_inflated_bytes = 32ull << 30;
        if (!p->lim.max_meta_bytes)
                p->lim.max_meta_bytes = 64ull << 20;
        if (!p->lim.max_entries)
                p->lim.max_entries = 65536;
        if (name_override && !*name_override)
                name_override = NULL;
        int r = read_entries(p, fd, err);
        if (r == 0) {
                bool oci = lookup(p, "oci-layout") && lookup(p, "index.json");
                if (oci) {
                        p->format = "oci-archive";
                        r = plan_oci(p, name_override, err);
                } else if (lookup(p, "manifest.json")) {
                        p->format = "docker-archive";
                        r = plan_docker(p, name_override, err);
                } else {
                        r = bad(err,
                                "not an image archive: neither manifest.json (docker-archive) nor "
                                "oci-layout + index.json (oci-archive) found");
                }
        }
        if (r == 0 && p->n_images == 0)
                r = bad(err, "the archive does not name its image (no RepoTags or "
                             "org.opencontainers.image.ref.name): give one with --name REF");
        if (r == 0)
                r = check_layers(p, fd, err);
        if (r < 0) {
                archive_plan_free(p);
                return r;
        }
        *out = p;
        return 0;
}

const char *archive_plan_format(const struct archive_plan *p)
{
        return p->format;
}

size_t archive_plan_n_images(const struct archive_plan *p)
{
        return p->n_images;
}

const struct archive_image *archive_plan_image(const struct archive_plan *p, size_t i)
{
        return i < p->n_images ? &p->images[i] : NULL;
}

size_t archive_plan_n_blobs(const struct archive_plan *p, uint64_t *total_bytes)
{
        uint64_t t = 0;
        for (size_t i = 0; i < p->n_blobs; i++)
                t += p->blobs[i].size;
        if (total_bytes)
                *total_bytes = t;
        return p->n_blobs;
}

static void blob_desc_of(const struct pblob *b, struct blob_desc *d, struct blob_label *labels)
{
        for (size_t k = 0; k + 1 < b->n_labels; k += 2)
                labels[k / 2] = (struct blob_label){b->labels[k], b->labels[k + 1]};
        *d = (struct blob_desc){.media_type = b->media_type,
                                .digest = b->digest,
                                .size = b->size,
                                .labels = labels,
                                .n_labels = b->n_labels / 2};
}

/* Streams one archive entry's data into the sink as blob b. */
static int stream_blob(struct archive *a, struct pblob *b, const struct blob_sink *sink,
                       unsigned char *buf, struct cap_error *err)
{
        struct blob_label labels[MAX_LAYERS + 2];
        struct blob_desc d;
        bool exists = false;
        blob_desc_of(b, &d, labels);
        if (sink->ops->begin(sink->ud, &d, &exists, err) < 0)
                return err->code;
        if (exists) {
                b->written = true;
                return 0;
        }
        struct blob_hash h;
        if (blob_hash_init(&h, err) < 0) {
                sink->ops->abort(sink->ud);
                return err->code;
        }
        for (;;) {
                la_ssize_t n = archive_read_data(a, buf, READ_CHUNK);
                if (n < 0) {
                        bad(err, "blob %s: %s", b->digest, archive_error_string(a));
                        goto fail;
                }
                if (n == 0)
                        break;
                blob_hash_update(&h, buf, (size_t)n);
                if (h.size > b->size) {
                        bad(err, "blob %s: archive changed while importing", b->digest);
                        goto fail;
                }
                if (sink->ops->write(sink->ud, buf, (size_t)n, err) < 0)
                        goto fail;
        }
        char got[72];
        blob_hash_final(&h, got);
        if (strcmp(got, b->digest) != 0 || h.size != b->size) {
                sink->ops->abort(sink->ud);
                return bad(err, "blob %s: archive changed while importing", b->digest);
        }
        if (sink->ops->commit(sink->ud, &d, err) < 0)
                return err->code;
        b->written = true;
        return 0;
fail:
        blob_hash_free(&h);
        sink->ops->abort(sink->ud);
        return err->code;
}

int archive_plan_write(struct archive_plan *p, int fd, const struct blob_sink *sink,
                       struct cap_error *err)
{
        struct archive *a = NULL;
        int r = 0;
        _cleanup_free_ unsigned char *buf = malloc(READ_CHUNK);
        if (!buf)
                return oom(err);
        /* May run again (to restore blobs lost to GC): start from a clean slate. */
        for (size_t i = 0; i < p->n_ents; i++)
                p->ents[i].blob = -1;
        for (size_t i = 0; i < p->n_blobs; i++)
                p->blobs[i].written = false;
        /* Streamed blobs: those whose bytes are not in memory. */
        size_t streamed = 0;
        for (size_t i = 0; i < p->n_blobs; i++) {
                struct pblob *b = &p->blobs[i];
                if (b->src && !b->src->data && b->src->blob < 0) {
                        ((struct entry *)b->src)->blob = (ssize_t)i;
                        streamed++;
                }
        }
        if (streamed) {
                if (open_reader(fd, &a, err) < 0)
                        return err->code;
                while (streamed) {
                        struct archive_entry *ae;
                        int hr = archive_read_next_header(a, &ae);
                        if (hr == ARCHIVE_EOF)
                                break;
                        if (hr < ARCHIVE_WARN) {
                                r = bad(err, "archive: %s", archive_error_string(a));
                                goto out;
                        }
                        if (archive_entry_filetype(ae) != AE_IFREG || archive_entry_hardlink(ae))
                                continue;
                        _cleanup_free_ char *name = NULL;
                        if (clean_path(archive_entry_pathname(ae), &name, err) < 0) {
                                r = err->code;
                                goto out;
                        }
                        struct entry *e = lookup(p, name);
                        if (!e || e->blob < 0 || p->blobs[e->blob].written)
                                continue;
                        if ((r = stream_blob(a, &p->blobs[e->blob], sink, buf, err)) < 0)
                                goto out;
                        streamed--;
                }
                if (streamed) {
                        r = bad(err, "archive changed while importing: %zu blobs not found again",
                                streamed);
                        goto out;
                }
        }
        /* Then the in-memory blobs, children before parents. */
        for (int rank = 0; rank <= 2; rank++)
                for (size_t i = 0; i < p->n_blobs; i++) {
                        struct pblob *b = &p->blobs[i];
                        if (b->written || b->rank != rank)
                                continue;
                        const char *data = b->gen ? b->gen : (b->src ? b->src->data : NULL);
                        if (!data) {
                                r = bad(err, "blob %s: not in memory", b->digest);
                                goto out;
                        }
                        struct blob_label labels[MAX_LAYERS + 2];
                        struct blob_desc d;
                        blob_desc_of(b, &d, labels);
                        if ((r = blob_sink_put(sink, &d, data, b->size, err)) < 0)
                                goto out;
                        b->written = true;
                }
out:
        if (a)
                archive_read_free(a);
        return r;
}

void archive_plan_free(struct archive_plan *p)
{
        if (!p)
                return;
        for (size_t i = 0; i < p->n_ents; i++) {
                free(p->ents[i].name);
                free(p->ents[i].link);
                free(p->ents[i].data);
        }
        free(p->ents);
        for (size_t i = 0; i < p->n_blobs; i++) {
                free(p->blobs[i].media_type);
                free(p->blobs[i].gen);
                for (size_t k = 0; k < p->blobs[i].n_labels; k++)
                        free(p->blobs[i].labels[k]);
                free(p->blobs[i].labels);
        }
        free(p->blobs);
        for (size_t i = 0; i < p->n_images; i++) {
                free(p->images[i].name);
                free(p->images[i].media_type);
        }
        free(p->images);
        free(p);
}
