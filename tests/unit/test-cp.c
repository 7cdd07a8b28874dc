/* Unit tests for capsulectl cp's tar halves (src/capsulectl/cp.c): the extraction of a stream
 * that comes out of a workload trusts nothing in it, and the archive of a local tree round-trips. */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cp.h"
#include "test.h"

struct ent {
        const char *path;
        mode_t type;
        const char *data;     /* regular files */
        const char *link;     /* symlink target, or hard link target when type == 0 */
};

/* A tar stream of ents in a memfd, rewound. */
static int tar_of(const struct ent *ents, size_t n)
{
        int fd = memfd_create("tar", MFD_CLOEXEC);
        struct archive *w = archive_write_new();
        archive_write_set_format_pax_restricted(w);
        archive_write_open_fd(w, fd);
        for (size_t i = 0; i < n; i++) {
                struct archive_entry *e = archive_entry_new();
                archive_entry_set_pathname(e, ents[i].path);
                archive_entry_set_perm(e, 0644);
                if (ents[i].type == 0) {
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_hardlink(e, ents[i].link);
                } else {
                        archive_entry_set_filetype(e, ents[i].type);
                }
                if (ents[i].type == AE_IFLNK)
                        archive_entry_set_symlink(e, ents[i].link);
                if (ents[i].type == AE_IFDIR)
                        archive_entry_set_perm(e, 0755);
                if (ents[i].type == AE_IFCHR)
                        archive_entry_set_rdev(e, makedev(1, 3));
                size_t len = ents[i].data ? strlen(ents[i].data) : 0;
                archive_entry_set_size(e, (la_int64_t)len);
                archive_write_header(w, e);
                if (len)
                        archive_write_data(w, ents[i].data, len);
                archive_entry_free(e);
        }
        archive_write_close(w);
        archive_write_free(w);
        lseek(fd, 0, SEEK_SET);
        return fd;
}

static char dir[64];

static int extract(const struct ent *ents, size_t n, char *why)
{
        int fd = tar_of(ents, n);
        size_t files = 0;
        int r = cp_extract(fd, "src", dir, "copy", &files, why, 512);
        close(fd);
        return r;
}

static bool exists(const char *rel)
{
        char p[256];
        snprintf(p, sizeof(p), "%s/%s", dir, rel);
        struct stat st;
        return lstat(p, &st) == 0;
}

static void reset(void)
{
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s/* /tmp/capsule-cp-evil", dir);
        CHECK(system(cmd) == 0);
}

TEST(extract_good_tree)
{
        char why[512] = "";
        const struct ent ok[] = {
            {"src", AE_IFDIR, NULL, NULL},          {"src/a.txt", AE_IFREG, "hello\n", NULL},
            {"./src/sub", AE_IFDIR, NULL, NULL},    {"src/sub/b", AE_IFREG, "b", NULL},
            {"src/ln", AE_IFLNK, NULL, "/etc/passwd"}, {"src/hl", 0, NULL, "src/a.txt"},
            {"src/null", AE_IFCHR, NULL, NULL},
        };
        CHECK(extract(ok, 7, why) == 0);
        CHECK(exists("copy/a.txt") && exists("copy/sub/b") && exists("copy/hl"));
        CHECK(!exists("copy/null")); /* devices are skipped */
        char p[256], target[64] = "";
        snprintf(p, sizeof(p), "%s/copy/ln", dir);
        CHECK(readlink(p, target, sizeof(target) - 1) > 0);
        CHECK_STR_EQ(target, "/etc/passwd"); /* a link stays a link; nothing is followed */
        reset();
}

TEST(extract_refuses_escapes)
{
        char why[512] = "";
        const struct ent dotdot[] = {{"src/../../capsule-cp-evil", AE_IFREG, "x", NULL}};
        CHECK(extract(dotdot, 1, why) < 0);
        CHECK_CONTAINS(why, "refused entry");
        const struct ent other[] = {{"src", AE_IFDIR, NULL, NULL}, {"etc/passwd", AE_IFREG, "x", NULL}};
        CHECK(extract(other, 2, why) < 0);
        CHECK_CONTAINS(why, "outside src");
        CHECK(!exists("etc"));
        const struct ent prefix[] = {{"srcx/a", AE_IFREG, "x", NULL}};
        CHECK(extract(prefix, 1, why) < 0);
        const struct ent abs[] = {{"/tmp/capsule-cp-evil", AE_IFREG, "x", NULL}};
        CHECK(extract(abs, 1, why) < 0);
        const struct ent hard[] = {{"src", AE_IFDIR, NULL, NULL}, {"src/h", 0, NULL, "../etc/shadow"}};
        CHECK(extract(hard, 2, why) < 0);
        CHECK_CONTAINS(why, "hard link");
        /* a symlink to outside, then a file written through it */
        const struct ent through[] = {{"src", AE_IFDIR, NULL, NULL},
                                      {"src/l", AE_IFLNK, NULL, "/tmp"},
                                      {"src/l/capsule-cp-evil", AE_IFREG, "x", NULL}};
        CHECK(extract(through, 3, why) < 0);
        struct stat st;
        CHECK(stat("/tmp/capsule-cp-evil", &st) < 0);
        const struct ent none[] = {{"src", AE_IFCHR, NULL, NULL}};
        CHECK(extract(none, 1, why) < 0); /* nothing usable: said so */
        reset();
}

TEST(archive_round_trip)
{
        char src[128], cmd[512], why[512] = "";
        snprintf(src, sizeof(src), "%s/tree", dir);
        snprintf(cmd, sizeof(cmd), "mkdir -p %s/d && echo one > %s/f && echo two > %s/d/g && ln -s f %s/l", src,
                 src, src, src);
        CHECK(system(cmd) == 0);
        int fd = memfd_create("t", MFD_CLOEXEC);
        CHECK(cp_archive(fd, src, "renamed", why, sizeof(why)) == 0);
        lseek(fd, 0, SEEK_SET);
        size_t n = 0;
        CHECK(cp_extract(fd, "renamed", dir, "back", &n, why, sizeof(why)) == 0);
        CHECK(n == 5);
        CHECK(exists("back/f") && exists("back/d/g") && exists("back/l"));
        close(fd);
        CHECK(cp_archive(fd, "/nonexistent-capsule", "x", why, sizeof(why)) < 0);
        CHECK_CONTAINS(why, "nonexistent-capsule");
        reset();
}

int main(void)
{
        snprintf(dir, sizeof(dir), "/tmp/capsule-cp-test-XXXXXX");
        CHECK(mkdtemp(dir) != NULL);
        RUN(extract_good_tree);
        RUN(extract_refuses_escapes);
        RUN(archive_round_trip);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        CHECK(system(cmd) == 0);
        return test_summary();
}
