/* Unit tests for the volume backup tar format (src/capsuled/volume/backup.c): path checks, the
 * meta entry, a write -> extract round trip through memory, and streams that must be refused
 * (crafted with libarchive: "..", devices, truncation, a changed byte). */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "volume/backup.h"

struct buf {
        unsigned char *p;
        size_t len, cap, pos;
        size_t feed; /* bytes handed out per read (exercises short reads) */
};

static int buf_out(void *ud, const void *data, size_t len, struct cap_error *err)
{
        (void)err;
        struct buf *b = ud;
        if (b->len + len > b->cap) {
                b->cap = (b->len + len) * 2;
                b->p = realloc(b->p, b->cap);
        }
        memcpy(b->p + b->len, data, len);
        b->len += len;
        return 0;
}

static ssize_t buf_in(void *ud, const void **data, struct cap_error *err)
{
        (void)err;
        struct buf *b = ud;
        size_t n = b->len - b->pos;
        if (n > b->feed)
                n = b->feed;
        *data = b->p + b->pos;
        b->pos += n;
        return (ssize_t)n;
}

static void write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        fputs(text, f);
        fclose(f);
}

/* Extracts b into a fresh directory under tmp; returns the result, err filled. */
static int extract(struct buf *b, const char *dest, uint64_t max, struct cap_error *err)
{
        b->pos = 0;
        b->feed = 777;
        struct volume_tar_reader *r = NULL;
        uint64_t size = 0, entries = 0;
        int ret = volume_tar_reader_open(buf_in, b, &size, &r, err);
        if (ret < 0)
                return ret;
        mkdir(dest, 0755);
        ret = volume_tar_extract(r, dest, max, &entries, err);
        volume_tar_reader_free(r);
        return ret;
}

TEST(check_path)
{
        struct cap_error err = {0};
        CHECK(volume_tar_check_path("entry", "a/b/c", &err) == 0);
        CHECK(volume_tar_check_path("entry", "a..b/..c", &err) == 0);
        CHECK(volume_tar_check_path("entry", "./", &err) == 0);
        CHECK(volume_tar_check_path("entry", "../x", &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "\"..\" leaves the volume");
        CHECK(volume_tar_check_path("entry", "a/../../x", &err) == -EINVAL);
        CHECK(volume_tar_check_path("entry", "a/..", &err) == -EINVAL);
        CHECK(volume_tar_check_path("entry", "/etc/passwd", &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "absolute path");
        CHECK(volume_tar_check_path("entry", "", &err) == -EINVAL);
}

TEST(parse_meta)
{
        struct cap_error err = {0};
        uint64_t size = 0;
        CHECK(volume_tar_parse_meta("capsule-volume-backup 1\nname=a\nsize_bytes=33554432\n", &size,
                                    &err) == 0);
        CHECK(size == 33554432);
        CHECK(volume_tar_parse_meta("capsule-volume-backup 2\nsize_bytes=1\n", &size, &err) < 0);
        CHECK(volume_tar_parse_meta("capsule-volume-backup 1\nsize_bytes=x\n", &size, &err) < 0);
        CHECK(volume_tar_parse_meta("capsule-volume-backup 1\nname=a\n", &size, &err) < 0);
        CHECK_CONTAINS(err.msg, "size_bytes");
}

TEST(round_trip_and_corruption)
{
        char tmp[] = "/tmp/test-volume-backup-XXXXXX";
        CHECK(mkdtemp(tmp) != NULL);
        char src[512], dst[512], p[600];
        snprintf(src, sizeof(src), "%s/src", tmp);
        mkdir(src, 0755);
        snprintf(p, sizeof(p), "%s/dir", src);
        mkdir(p, 0750);
        snprintf(p, sizeof(p), "%s/dir/file", src);
        write_file(p, "contents\n");
        snprintf(p, sizeof(p), "%s/link", src);
        CHECK(symlink("dir/file", p) == 0);
        /* a sparse file: a hole, data, a hole at the end */
        snprintf(p, sizeof(p), "%s/sparse", src);
        int sfd = open(p, O_WRONLY | O_CREAT, 0644);
        CHECK(sfd >= 0 && pwrite(sfd, "data", 4, 1 << 20) == 4 && ftruncate(sfd, 3 << 20) == 0);
        close(sfd);
        struct buf b = {0};
        struct cap_error err = {0};
        uint64_t entries = 0;
        CHECK(volume_tar_write(src, "vol", 1 << 24, buf_out, &b, &entries, &err) == 0);
        CHECK(entries == 5); /* root, dir, file, link, sparse */
        snprintf(dst, sizeof(dst), "%s/dst", tmp);
        CHECK(extract(&b, dst, 1 << 24, &err) == 0);
        snprintf(p, sizeof(p), "%s/dir/file", dst);
        char text[64] = "";
        FILE *f = fopen(p, "r");
        CHECK(f && fgets(text, sizeof(text), f));
        if (f)
                fclose(f);
        CHECK_STR_EQ(text, "contents\n");
        snprintf(p, sizeof(p), "%s/link", dst);
        char target[64] = "";
        CHECK(readlink(p, target, sizeof(target) - 1) == 8);
        CHECK_STR_EQ(target, "dir/file");
        snprintf(p, sizeof(p), "%s/sparse", dst);
        struct stat st;
        char four[5] = "";
        sfd = open(p, O_RDONLY);
        CHECK(sfd >= 0 && fstat(sfd, &st) == 0 && st.st_size == 3 << 20);
        CHECK(pread(sfd, four, 4, 1 << 20) == 4);
        CHECK_STR_EQ(four, "data");
        close(sfd);

        /* too small a volume */
        snprintf(dst, sizeof(dst), "%s/small", tmp);
        CHECK(extract(&b, dst, 4, &err) == -EFBIG);
        (void)0;
        CHECK_CONTAINS(err.msg, "exceed the volume's size");

        /* a changed byte in the file's data: the content hash refuses it */
        unsigned char *hit = memmem(b.p, b.len, "contents\n", 9);
        CHECK(hit != NULL);
        if (hit)
                hit[0] = 'C';
        snprintf(dst, sizeof(dst), "%s/corrupt", tmp);
        CHECK(extract(&b, dst, 1 << 24, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "corrupt");
        if (hit)
                hit[0] = 'c';

        /* cut short anywhere before the end entry's data: never accepted (after it, only tar's
         * end-of-archive padding is missing, and nothing of the volume) */
        size_t full = b.len;
        unsigned char *end = memmem(b.p, b.len, "entries=", 8);
        CHECK(end != NULL);
        size_t limit = end ? (size_t)(end - b.p) : 0;
        for (size_t cut = 0; cut <= limit; cut += 256) {
                b.len = cut;
                snprintf(dst, sizeof(dst), "%s/cut%zu", tmp, cut);
                if (extract(&b, dst, 1 << 24, &err) == 0) {
                        fprintf(stderr, "  accepted a stream cut at %zu of %zu\n", cut, full);
                        CHECK(0);
                }
        }
        b.len = full;
        free(b.p);
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
        CHECK(system(cmd) == 0);
}

/* A stream with the meta entry, then `path` of `type`. */
static void crafted(struct buf *b, const char *path, mode_t type, const char *link)
{
        struct archive *w = archive_write_new();
        archive_write_set_format_pax_restricted(w);
        size_t used = 0;
        static unsigned char mem[64 * 1024];
        archive_write_open_memory(w, mem, sizeof(mem), &used);
        const char *meta = "capsule-volume-backup 1\nname=x\nsize_bytes=16777216\n";
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, VOLUME_BACKUP_META);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_size(e, (la_int64_t)strlen(meta));
        archive_write_header(w, e);
        archive_write_data(w, meta, strlen(meta));
        archive_entry_clear(e);
        archive_entry_set_pathname(e, path);
        archive_entry_set_filetype(e, type);
        archive_entry_set_perm(e, 0644);
        if (link && type == AE_IFLNK)
                archive_entry_set_symlink(e, link);
        else if (link)
                archive_entry_set_hardlink(e, link);
        archive_write_header(w, e);
        archive_entry_free(e);
        archive_write_close(w);
        archive_write_free(w);
        b->p = mem;
        b->len = used;
}

TEST(unsafe_entries_refused)
{
        char tmp[] = "/tmp/test-volume-backup-XXXXXX";
        CHECK(mkdtemp(tmp) != NULL);
        static const struct {
                const char *path;
                mode_t type;
                const char *link;
                const char *why;
        } cases[] = {
            {"../escape", AE_IFREG, NULL, "leaves the volume"},
            {"/abs", AE_IFREG, NULL, "absolute path"},
            {"dev", AE_IFCHR, NULL, "device node"},
            {"fifo", AE_IFIFO, NULL, "FIFO"},
            {"hl", AE_IFREG, "../../etc/passwd", "hard link target"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct buf b = {0};
                crafted(&b, cases[i].path, cases[i].type, cases[i].link);
                struct cap_error err = {0};
                char dst[600];
                snprintf(dst, sizeof(dst), "%s/d%zu", tmp, i);
                CHECK(extract(&b, dst, 1 << 24, &err) == -EINVAL);
                CHECK_CONTAINS(err.msg, cases[i].why);
        }
        /* not a backup at all */
        struct buf b = {.p = (unsigned char *)"hello", .len = 5};
        struct cap_error err = {0};
        char dst[600];
        snprintf(dst, sizeof(dst), "%s/plain", tmp);
        CHECK(extract(&b, dst, 1 << 24, &err) == -EINVAL);
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
        CHECK(system(cmd) == 0);
}

int main(void)
{
        RUN(check_path);
        RUN(parse_meta);
        RUN(round_trip_and_corruption);
        RUN(unsafe_entries_refused);
        return test_summary();
}
