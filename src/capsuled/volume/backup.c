/* A volume's files as a tar stream: writing a backup from a directory, and extracting an
 * untrusted one into an empty directory (backup.h). libarchive does the tar format; this file
 * decides what goes in and what is allowed out. */
#include "backup.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"

/* ---- pure helpers ------------------------------------------------------------------------------ */

static const char *skip_dot_slash(const char *p)
{
        while (p[0] == '.' && p[1] == '/' && p[2] != '\0') /* "./" itself stays: the root */
                p += 2;
        return p;
}

int volume_tar_check_path(const char *field, const char *path, struct cap_error *err)
{
        if (!path || !*path)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: empty path", field);
        if (path[0] == '/')
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "%s \"%.200s\": absolute path", field, path);
        for (const char *s = path; (s = strstr(s, "..")); s += 2)
                if ((s == path || s[-1] == '/') && (s[2] == '\0' || s[2] == '/'))
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "%s \"%.200s\": \"..\" leaves the volume", field,
                                             path);
        if (strlen(path) >= PATH_MAX - 256)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "%s \"%.60s...\": path too long", field, path);
        return 0;
}

int volume_tar_parse_meta(const char *text, uint64_t *size_bytes, struct cap_error *err)
{
        if (strncmp(text, "capsule-volume-backup 1\n", 24) != 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "%s: not a version 1 Capsule volume backup",
                                     VOLUME_BACKUP_META);
        const char *s = strstr(text, "\nsize_bytes=");
        char *end = NULL;
        if (s) {
                errno = 0;
                unsigned long long v = strtoull(s + 12, &end, 10);
                if (errno == 0 && end != s + 12 && (*end == '\n' || *end == '\0') && v > 0) {
                        *size_bytes = v;
                        return 0;
                }
        }
        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: no valid size_bytes",
                             VOLUME_BACKUP_META);
}

/* The backup's content hash: every restored entry's path (NUL-terminated) and file data, in
 * order. VOLUME_BACKUP_END records it, so a backup file corrupted at rest (where the transfer's
 * own sha256 cannot help) is refused. */
static void content_path(EVP_MD_CTX *md, const char *path)
{
        size_t n = strlen(path);
        while (n > 1 && path[n - 1] == '/') /* tar writes directories as "dir/" */
                n--;
        EVP_DigestUpdate(md, path, n);
        EVP_DigestUpdate(md, "", 1);
}

static void content_hex(EVP_MD_CTX *md, char out[65])
{
        unsigned char d[32];
        unsigned n = 0;
        EVP_DigestFinal_ex(md, d, &n);
        for (unsigned i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", d[i]);
}

/* Hashes n zero bytes (n <= 0: none); returns 1 for use in conditions. */
static int hash_zeros(EVP_MD_CTX *md, int64_t n)
{
        static const unsigned char zeros[4096];
        while (n > 0) {
                size_t k = n < (int64_t)sizeof(zeros) ? (size_t)n : sizeof(zeros);
                EVP_DigestUpdate(md, zeros, k);
                n -= (int64_t)k;
        }
        return 1;
}

/* ---- writing ----------------------------------------------------------------------------------- */

struct tar_out {
        volume_tar_out_fn fn;
        void *ud;
        struct cap_error *err;
        bool failed;
};

static la_ssize_t tar_out_cb(struct archive *a, void *ud, const void *buf, size_t len)
{
        struct tar_out *o = ud;
        if (o->fn(o->ud, buf, len, o->err) < 0) {
                o->failed = true;
                archive_set_error(a, EIO, "%s", o->err->msg);
                return -1;
        }
        return (la_ssize_t)len;
}

static int write_text_entry(struct archive *w, const char *path, const char *text,
                            struct cap_error *err)
{
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, path);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0600);
        archive_entry_set_size(e, (la_int64_t)strlen(text));
        int r = 0;
        if (archive_write_header(w, e) != ARCHIVE_OK ||
            archive_write_data(w, text, strlen(text)) != (la_ssize_t)strlen(text))
                r = cap_error_set(err, -EIO, CAP_INTERNAL, "%s: %s", path, archive_error_string(w));
        archive_entry_free(e);
        return r;
}

/* Writes exactly `size` bytes (what the header declared) of the file: a file that grew since its
 * header was written is cut there, one that shrank is padded with zeros (both only possible in a
 * live copy; the next backup has it whole). Holes read as zeros, which the pax writer turns back
 * into holes for sparse files. */
static int copy_file_data(struct archive *w, EVP_MD_CTX *md, const char *src, const char *path,
                          int64_t size, struct cap_error *err)
{
        _cleanup_close_ int fd = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return cap_error_errno(err, -errno, "open %s", path);
        static __thread char buf[128 * 1024];
        bool shrank = false;
        while (size > 0) {
                size_t want = size < (int64_t)sizeof(buf) ? (size_t)size : sizeof(buf);
                ssize_t n = shrank ? 0 : read(fd, buf, want);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return cap_error_errno(err, -errno, "read %s", path);
                if (n == 0) {
                        if (!shrank)
                                log_warn("volume backup: %s shrank while it was copied; padded "
                                         "with zeros",
                                         path);
                        shrank = true;
                        memset(buf, 0, want);
                        n = (ssize_t)want;
                }
                EVP_DigestUpdate(md, buf, (size_t)n);
                if (archive_write_data(w, buf, (size_t)n) != n)
                        return cap_error_set(err, -EIO, CAP_INTERNAL, "%s: %s", path,
                                             archive_error_string(w));
                size -= n;
        }
        return 0;
}

int volume_tar_write(const char *dir, const char *name, uint64_t size_bytes, volume_tar_out_fn out,
                     void *ud, uint64_t *entries, struct cap_error *err)
{
        *entries = 0;
        struct tar_out o = {.fn = out, .ud = ud, .err = err};
        struct archive *w = archive_write_new();
        struct archive *disk = archive_read_disk_new();
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        /* files with several names: the first is stored, the others as hard links to it */
        struct archive_entry_linkresolver *links = archive_entry_linkresolver_new();
        if (links)
                archive_entry_linkresolver_set_strategy(links, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
        if (!w || !disk || !md || !links || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
                archive_entry_linkresolver_free(links);
                EVP_MD_CTX_free(md);
                archive_write_free(w);
                archive_read_free(disk);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        archive_write_set_format_pax_restricted(w);
        archive_write_set_bytes_per_block(w, 64 * 1024);
        archive_read_disk_set_symlink_physical(disk);
        archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS);
        int r = 0;
        if (archive_write_open(w, &o, NULL, tar_out_cb, NULL) != ARCHIVE_OK) {
                r = o.failed ? -EIO
                             : cap_error_set(err, -EIO, CAP_INTERNAL, "%s", archive_error_string(w));
                goto out;
        }
        char meta[256];
        snprintf(meta, sizeof(meta), "capsule-volume-backup 1\nname=%s\nsize_bytes=%" PRIu64 "\n",
                 name, size_bytes);
        if ((r = write_text_entry(w, VOLUME_BACKUP_META, meta, err)) < 0)
                goto out;
        if (archive_read_disk_open(disk, dir) != ARCHIVE_OK) {
                r = cap_error_set(err, -EIO, CAP_INTERNAL, "%s: %s", dir,
                                  archive_error_string(disk));
                goto out;
        }
        size_t dirlen = strlen(dir);
        for (;;) {
                struct archive_entry *e = archive_entry_new();
                int ar = archive_read_next_header2(disk, e);
                if (ar == ARCHIVE_EOF) {
                        archive_entry_free(e);
                        break;
                }
                if (ar < ARCHIVE_WARN) {
                        r = cap_error_set(err, -EIO, CAP_INTERNAL, "%s",
                                          archive_error_string(disk));
                        archive_entry_free(e);
                        goto out;
                }
                const char *src = archive_entry_pathname(e);
                const char *from = src + (strncmp(src, dir, dirlen) == 0 ? dirlen : 0);
                while (*from == '/')
                        from++;
                /* a copy: renaming the entry below frees the name `from` points into */
                char rel[PATH_MAX];
                snprintf(rel, sizeof(rel), "%s", from);
                if (strcmp(rel, "lost+found") == 0) { /* mkfs made it; it is made again */
                        archive_entry_free(e);
                        continue;
                }
                archive_read_disk_descend(disk);
                mode_t type = archive_entry_filetype(e);
                if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
                        log_warn("volume backup %s: skipped %s: not a file, directory or link",
                                 name, rel);
                        archive_entry_free(e);
                        continue;
                }
                _cleanup_free_ char *srcpath = strdup(archive_entry_sourcepath(e));
                archive_entry_copy_pathname(e, *rel ? rel : ".");
                archive_entry_set_uname(e, NULL);
                archive_entry_set_gname(e, NULL);
                if (type == AE_IFREG) {
                        struct archive_entry *spare = NULL;
                        archive_entry_linkify(links, &e, &spare);
                        archive_entry_free(spare); /* none with the tar strategy */
                }
                const char *hl = archive_entry_hardlink(e);
                if (hl && strncmp(hl, dir, dirlen) == 0) {
                        _cleanup_free_ char *h = strdup(hl + dirlen + (hl[dirlen] == '/'));
                        archive_entry_copy_hardlink(e, h);
                }
                content_path(md, archive_entry_pathname(e));
                if (archive_write_header(w, e) != ARCHIVE_OK) {
                        r = o.failed ? -EIO
                                     : cap_error_set(err, -EIO, CAP_INTERNAL, "%s: %s", rel,
                                                     archive_error_string(w));
                        archive_entry_free(e);
                        goto out;
                }
                if (type == AE_IFREG && !archive_entry_hardlink(e) && archive_entry_size(e) > 0 &&
                    (r = copy_file_data(w, md, srcpath ? srcpath : src, rel, archive_entry_size(e),
                                        err)) < 0) {
                        archive_entry_free(e);
                        goto out;
                }
                archive_entry_free(e);
                (*entries)++;
        }
        char end[160], sum[65];
        content_hex(md, sum);
        snprintf(end, sizeof(end), "entries=%" PRIu64 "\ncontent_sha256=%s\n", *entries, sum);
        if ((r = write_text_entry(w, VOLUME_BACKUP_END, end, err)) < 0)
                goto out;
        if (archive_write_close(w) != ARCHIVE_OK)
                r = o.failed ? -EIO
                             : cap_error_set(err, -EIO, CAP_INTERNAL, "%s", archive_error_string(w));
out:
        archive_entry_linkresolver_free(links);
        EVP_MD_CTX_free(md);
        archive_read_free(disk);
        archive_write_free(w);
        return r;
}

/* ---- reading ----------------------------------------------------------------------------------- */

struct volume_tar_reader {
        struct archive *a;
        volume_tar_in_fn in;
        void *ud;
        struct cap_error in_err;
        bool in_failed;
};

static la_ssize_t tar_in_cb(struct archive *a, void *ud, const void **buf)
{
        struct volume_tar_reader *r = ud;
        ssize_t n = r->in(r->ud, buf, &r->in_err);
        if (n < 0) {
                r->in_failed = true;
                archive_set_error(a, EIO, "%s", r->in_err.msg);
                return -1;
        }
        return n;
}

/* The libarchive error, or the upload's own when that is what failed. */
static int read_error(struct volume_tar_reader *r, const char *what, struct cap_error *err)
{
        if (r->in_failed) {
                *err = r->in_err;
                return err->code ? err->code : -EIO;
        }
        const char *m = archive_error_string(r->a);
        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: %s", what,
                             m ? m : "truncated or corrupt tar stream");
}

void volume_tar_reader_free(struct volume_tar_reader *r)
{
        if (!r)
                return;
        archive_read_free(r->a);
        free(r);
}

int volume_tar_reader_open(volume_tar_in_fn in, void *ud, uint64_t *size_bytes,
                           struct volume_tar_reader **out, struct cap_error *err)
{
        struct volume_tar_reader *r = calloc(1, sizeof(*r));
        if (!r || !(r->a = archive_read_new())) {
                free(r);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        r->in = in;
        r->ud = ud;
        archive_read_support_format_tar(r->a);
        struct archive_entry *e;
        int ret;
        if (archive_read_open(r->a, r, NULL, tar_in_cb, NULL) != ARCHIVE_OK ||
            archive_read_next_header(r->a, &e) != ARCHIVE_OK) {
                ret = read_error(r, "backup", err);
                goto fail;
        }
        if (strcmp(skip_dot_slash(archive_entry_pathname(e)), VOLUME_BACKUP_META) != 0 ||
            archive_entry_filetype(e) != AE_IFREG || archive_entry_size(e) <= 0 ||
            archive_entry_size(e) >= VOLUME_BACKUP_META_MAX) {
                ret = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                    "not a Capsule volume backup: its first entry is \"%.200s\", "
                                    "not %s (make backups with `capsulectl volume backup`)",
                                    archive_entry_pathname(e), VOLUME_BACKUP_META);
                goto fail;
        }
        char text[VOLUME_BACKUP_META_MAX];
        la_ssize_t n = archive_read_data(r->a, text, sizeof(text) - 1);
        if (n != archive_entry_size(e)) {
                ret = read_error(r, VOLUME_BACKUP_META, err);
                goto fail;
        }
        text[n] = '\0';
        if ((ret = volume_tar_parse_meta(text, size_bytes, err)) < 0)
                goto fail;
        *out = r;
        return 0;
fail:
        volume_tar_reader_free(r);
        return ret;
}

/* Checks one entry; INVALID_ARGUMENT naming it when it may not be restored. */
static int check_entry(struct archive_entry *e, struct cap_error *err)
{
        const char *path = archive_entry_pathname(e);
        int r = volume_tar_check_path("entry", path, err);
        if (r < 0)
                return r;
        const char *hl = archive_entry_hardlink(e);
        if (hl) {
                if ((r = volume_tar_check_path("hard link target", hl, err)) < 0)
                        return cap_error_prefix(err, "entry \"%.200s\"", path);
                return 0;
        }
        mode_t type = archive_entry_filetype(e);
        if (type == AE_IFREG || type == AE_IFDIR || type == AE_IFLNK)
                return 0;
        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                             "entry \"%.200s\": %s refused (only files, directories and links "
                             "are restored)",
                             path,
                             type == AE_IFCHR || type == AE_IFBLK ? "device node"
                             : type == AE_IFIFO                   ? "FIFO"
                                                                  : "special file");
}

int volume_tar_extract(struct volume_tar_reader *r, const char *dest, uint64_t max_bytes,
                       uint64_t *entries, struct cap_error *err)
{
        *entries = 0;
        _cleanup_free_ char *base = realpath(dest, NULL);
        if (!base)
                return cap_error_errno(err, -errno, "%s", dest);
        struct archive *w = archive_write_disk_new();
        if (!w)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        /* numeric owners: no lookup is set, so uid/gid are used as they are */
        archive_write_disk_set_options(
            w, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_OWNER |
                   ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                   ARCHIVE_EXTRACT_SECURE_NODOTDOT);
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
                EVP_MD_CTX_free(md);
                archive_write_free(w);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        uint64_t total = 0;
        bool ended = false;
        char recorded[65] = "";
        int ret = 0;
        struct archive_entry *e;
        int ar;
        while ((ar = archive_read_next_header(r->a, &e)) == ARCHIVE_OK) {
                /* a copy: renaming the entry below frees the name it had */
                char path[PATH_MAX];
                snprintf(path, sizeof(path), "%s",
                         skip_dot_slash(archive_entry_pathname(e) ? archive_entry_pathname(e) : ""));
                if (ended) {
                        ret = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                            "entry \"%.200s\" after %s", path, VOLUME_BACKUP_END);
                        goto out;
                }
                if (strcmp(path, VOLUME_BACKUP_END) == 0) {
                        char text[VOLUME_BACKUP_META_MAX];
                        la_ssize_t n = archive_read_data(r->a, text, sizeof(text) - 1);
                        if (n < 0) {
                                ret = read_error(r, VOLUME_BACKUP_END, err);
                                goto out;
                        }
                        text[n] = '\0';
                        const char *h = strstr(text, "content_sha256=");
                        if (h)
                                snprintf(recorded, sizeof(recorded), "%.64s", h + 15);
                        ended = true;
                        continue;
                }
                if ((ret = check_entry(e, err)) < 0)
                        goto out;
                content_path(md, path);
                la_int64_t sz = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
                if (sz < 0 || (uint64_t)sz > max_bytes || total + (uint64_t)sz > max_bytes) {
                        ret = cap_error_set(err, -EFBIG, CAP_RESOURCE_EXHAUSTED,
                                            "entry \"%.200s\": the backup's files exceed the "
                                            "volume's size (%" PRIu64 " bytes); restore with a "
                                            "larger --size",
                                            path, max_bytes);
                        goto out;
                }
                total += (uint64_t)sz;
                char np[PATH_MAX];
                snprintf(np, sizeof(np), "%s/%s", base, path);
                archive_entry_copy_pathname(e, np);
                const char *hl = archive_entry_hardlink(e);
                if (hl) {
                        char nh[PATH_MAX];
                        snprintf(nh, sizeof(nh), "%s/%s", base, skip_dot_slash(hl));
                        archive_entry_copy_hardlink(e, nh);
                }
                if (archive_write_header(w, e) != ARCHIVE_OK) {
                        ret = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                            "entry \"%.200s\": %s", path, archive_error_string(w));
                        goto out;
                }
                const void *buf;
                size_t len;
                la_int64_t off, done = 0;
                int dr;
                /* holes of sparse files hash as the zeros they read as */
                while ((dr = archive_read_data_block(r->a, &buf, &len, &off)) == ARCHIVE_OK &&
                       hash_zeros(md, off - done) && EVP_DigestUpdate(md, buf, len) &&
                       (done = off + (la_int64_t)len) >= 0)
                        if (archive_write_data_block(w, buf, len, off) != ARCHIVE_OK) {
                                ret = cap_error_set(err, -EIO, CAP_INTERNAL, "write %.200s: %s",
                                                    path, archive_error_string(w));
                                goto out;
                        }
                if (dr != ARCHIVE_EOF) {
                        ret = read_error(r, path, err);
                        goto out;
                }
                if (archive_entry_filetype(e) == AE_IFREG && !archive_entry_hardlink(e))
                        hash_zeros(md, sz - done);
                if (archive_write_finish_entry(w) != ARCHIVE_OK) {
                        ret = cap_error_set(err, -EIO, CAP_INTERNAL, "write %.200s: %s", path,
                                            archive_error_string(w));
                        goto out;
                }
                (*entries)++;
        }
        if (ar != ARCHIVE_EOF)
                ret = read_error(r, "backup", err);
        else if (!ended)
                ret = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                    "the backup is truncated: it ends without %s",
                                    VOLUME_BACKUP_END);
        else {
                char sum[65];
                content_hex(md, sum);
                if (strcmp(sum, recorded) != 0)
                        ret = cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                            "the backup is corrupt: its files hash to %s, %s "
                                            "recorded %s",
                                            sum, VOLUME_BACKUP_END, *recorded ? recorded : "none");
        }
out:
        EVP_MD_CTX_free(md);
        if (archive_write_close(w) != ARCHIVE_OK && ret == 0) /* sets directory times and modes */
                ret = cap_error_set(err, -EIO, CAP_INTERNAL, "%s", archive_error_string(w));
        archive_write_free(w);
        return ret;
}
