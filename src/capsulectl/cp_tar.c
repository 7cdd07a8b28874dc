/* capsulectl cp's tar halves (cp.h): archiving a local tree and extracting an untrusted stream.
 * No RPC here: unit-tested by tests/unit/test-cp.c. */
#include "cp.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"

/* ---- extraction of an untrusted stream --------------------------------------------------------- */

/* "a/b/c" with prefix "a": "/b/c"; "a": ""; anything else (including "ab", "../a"): NULL. */
static const char *under(const char *path, const char *prefix)
{
        while (path[0] == '.' && path[1] == '/')
                path += 2;
        size_t n = strlen(prefix);
        if (strncmp(path, prefix, n) != 0 || (path[n] != '\0' && path[n] != '/'))
                return NULL;
        return path + n;
}

static bool has_dotdot(const char *p)
{
        for (const char *s = p; (s = strstr(s, "..")); s += 2)
                if ((s == p || s[-1] == '/') && (s[2] == '\0' || s[2] == '/'))
                        return true;
        return false;
}

int cp_extract(int fd, const char *src_name, const char *dest_dir, const char *dest_name, size_t *n_files,
               char *why, size_t why_len)
{
        *n_files = 0;
        /* no symbolic link in the prefix: SECURE_SYMLINKS then guards every component below it */
        _cleanup_free_ char *base = realpath(dest_dir, NULL);
        if (!base) {
                snprintf(why, why_len, "%s: %s", dest_dir, strerror(errno));
                return -1;
        }
        struct archive *a = archive_read_new();
        struct archive *w = archive_write_disk_new();
        archive_read_support_format_tar(a);
        archive_read_support_format_gnutar(a);
        archive_write_disk_set_options(w, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                                              ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT);
        int rc = 0;
        if (archive_read_open_fd(a, fd, 64 * 1024) != ARCHIVE_OK) {
                snprintf(why, why_len, "%s", archive_error_string(a));
                rc = -1;
        }
        struct archive_entry *e;
        int r;
        while (rc == 0 && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
                /* a copy: renaming the entry frees the name it had */
                char path[PATH_MAX];
                snprintf(path, sizeof(path), "%s", archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
                const char *rest = under(path, src_name);
                if (!rest || has_dotdot(path)) {
                        snprintf(why, why_len, "refused entry \"%.200s\": outside %s", path, src_name);
                        rc = -1;
                        break;
                }
                mode_t type = archive_entry_filetype(e);
                const char *hl = archive_entry_hardlink(e);
                if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK && !hl) {
                        fprintf(stderr, "capsulectl cp: skipped %s: not a file, directory or link\n", path);
                        continue;
                }
                char np[PATH_MAX];
                snprintf(np, sizeof(np), "%s/%s%s", base, dest_name, rest);
                archive_entry_copy_pathname(e, np);
                if (hl) {
                        const char *hrest = under(hl, src_name);
                        if (!hrest || has_dotdot(hl)) {
                                snprintf(why, why_len, "refused hard link \"%.200s\" -> \"%.200s\": outside %s", path,
                                         hl, src_name);
                                rc = -1;
                                break;
                        }
                        char nh[PATH_MAX];
                        snprintf(nh, sizeof(nh), "%s/%s%s", base, dest_name, hrest);
                        archive_entry_copy_hardlink(e, nh);
                }
                if (archive_write_header(w, e) != ARCHIVE_OK) {
                        snprintf(why, why_len, "%s: %s", np, archive_error_string(w));
                        rc = -1;
                        break;
                }
                const void *buf;
                size_t len;
                la_int64_t off;
                while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK)
                        if (archive_write_data_block(w, buf, len, off) != ARCHIVE_OK) {
                                r = ARCHIVE_FATAL;
                                break;
                        }
                if (r != ARCHIVE_EOF || archive_write_finish_entry(w) != ARCHIVE_OK) {
                        snprintf(why, why_len, "%s: %s", np,
                                 archive_error_string(w) ? archive_error_string(w) : archive_error_string(a));
                        rc = -1;
                        break;
                }
                (*n_files)++;
        }
        if (rc == 0 && r != ARCHIVE_EOF) {
                snprintf(why, why_len, "%s", archive_error_string(a) ? archive_error_string(a) : "truncated stream");
                rc = -1;
        }
        if (rc == 0 && *n_files == 0) {
                snprintf(why, why_len, "the stream held nothing");
                rc = -1;
        }
        archive_write_free(w); /* also sets directory times and modes */
        archive_read_free(a);
        return rc;
}

/* ---- archiving a local tree ------------------------------------------------------------------- */

int cp_archive(int fd, const char *src, const char *dest_name, char *why, size_t why_len)
{
        struct archive *disk = archive_read_disk_new();
        struct archive *w = archive_write_new();
        archive_read_disk_set_standard_lookup(disk);
        archive_read_disk_set_symlink_physical(disk);
        archive_write_set_format_ustar(w);
        archive_write_set_bytes_in_last_block(w, 1);
        int rc = 0;
        if (archive_write_open_fd(w, fd) != ARCHIVE_OK || archive_read_disk_open(disk, src) != ARCHIVE_OK) {
                snprintf(why, why_len, "%s: %s", src,
                         archive_error_string(disk) ? archive_error_string(disk) : archive_error_string(w));
                rc = -1;
        }
        size_t srclen = strlen(src);
        while (rc == 0) {
                struct archive_entry *e = archive_entry_new();
                int r = archive_read_next_header2(disk, e);
                if (r == ARCHIVE_EOF) {
                        archive_entry_free(e);
                        break;
                }
                if (r != ARCHIVE_OK) {
                        snprintf(why, why_len, "%s", archive_error_string(disk));
                        archive_entry_free(e);
                        rc = -1;
                        break;
                }
                archive_read_disk_descend(disk);
                const char *p = archive_entry_pathname(e);
                char np[PATH_MAX];
                snprintf(np, sizeof(np), "%s%s", dest_name, strncmp(p, src, srclen) == 0 ? p + srclen : "");
                archive_entry_copy_pathname(e, np);
                archive_entry_set_uid(e, 0);
                archive_entry_set_gid(e, 0);
                archive_entry_set_uname(e, "root");
                archive_entry_set_gname(e, "root");
                if (archive_write_header(w, e) != ARCHIVE_OK) {
                        snprintf(why, why_len, "%s: %s", p, archive_error_string(w));
                        archive_entry_free(e);
                        rc = -1;
                        break;
                }
                if (archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0) {
                        int in = open(archive_entry_sourcepath(e), O_RDONLY | O_CLOEXEC);
                        char buf[64 * 1024];
                        ssize_t n;
                        while (in >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
                                if (archive_write_data(w, buf, (size_t)n) < 0)
                                        break;
                        if (in < 0) {
                                snprintf(why, why_len, "%s: %s", p, strerror(errno));
                                rc = -1;
                        } else {
                                close(in);
                        }
                }
                archive_entry_free(e);
        }
        if (archive_write_close(w) != ARCHIVE_OK && rc == 0) {
                snprintf(why, why_len, "%s", archive_error_string(w));
                rc = -1;
        }
        archive_write_free(w);
        archive_read_free(disk);
        return rc;
}
