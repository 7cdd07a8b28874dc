/* Unit tests for the slot side of A/B updates (src/capsuled/update/slot.c, commit.c): loader
 * entry names with boot counters, the entry text, the LoaderEntrySelected EFI variable, ESP
 * writes (default, bless, removal), finding a partition by GPT name, marking a slot empty, a
 * whole bundle streamed into a fake ESP + slot file (the root image's header written last; a
 * tampered bundle leaves the slot empty and without an entry), and the commit decision table. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test-update-bundle.h"
#include "test.h"
#include "update/commit.h"
#include "update/slot.h"
#include "update/updater.h"

static char dir[64];

static char *path_in(const char *fmt, const char *a)
{
        static char buf[8][512];
        static int i;
        char rel[256];
        i = (i + 1) % 8;
        snprintf(rel, sizeof(rel), fmt, a ? a : "");
        snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, rel);
        return buf[i];
}

static char *slurp(const char *path, size_t *len)
{
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        char *buf = calloc(1, 1 << 20);
        size_t n = fread(buf, 1, (1 << 20) - 1, f);
        fclose(f);
        if (len)
                *len = n;
        return buf;
}

static void put(const char *path, const void *data, size_t len)
{
        FILE *f = fopen(path, "we");
        CHECK(f != NULL);
        if (f) {
                CHECK(fwrite(data, 1, len, f) == len);
                fclose(f);
        }
}

static bool exists(const char *path)
{
        return access(path, F_OK) == 0;
}

TEST(entry_names)
{
        struct update_entry e;
        CHECK(update_entry_parse("capsule-b+1-0.conf", &e) == 0);
        CHECK(strcmp(e.slot, "b") == 0 && e.counting && e.tries_left == 1 && e.tries_done == 0);
        CHECK(update_entry_parse("capsule-a+0-1.conf", &e) == 0);
        CHECK(e.slot[0] == 'a' && e.counting && e.tries_left == 0 && e.tries_done == 1);
        CHECK(update_entry_parse("capsule-b+3.conf", &e) == 0);
        CHECK(e.counting && e.tries_left == 3 && e.tries_done == 0);
        CHECK(update_entry_parse("capsule-b.conf", &e) == 0 && !e.counting);
        CHECK(update_entry_parse("capsule-a", &e) == 0 && !e.counting);
        static const char *const bad[] = {"capsule-c.conf",
                                          "capsule-b+.conf",
                                          "capsule-b+1-.conf",
                                          "capsule-b+x-0.conf",
                                          "capsule-b.conf.tmp",
                                          "capsule-ab.conf",
                                          "debian.conf",
                                          "capsule-b+12345.conf",
                                          "",
                                          "capsule-"};
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                CHECK(update_entry_parse(bad[i], &e) == -EINVAL);
        CHECK(update_entry_parse(NULL, &e) == -EINVAL);

        char buf[64];
        e = (struct update_entry){.slot = "b", .counting = true, .tries_left = 1};
        CHECK(update_entry_format(&e, buf, sizeof(buf)) == 0);
        CHECK_STR_EQ(buf, "capsule-b+1-0.conf");
        CHECK(update_entry_blessed_name("a", buf, sizeof(buf)) == 0);
        CHECK_STR_EQ(buf, "capsule-a.conf");
        CHECK(update_entry_blessed_name("c", buf, sizeof(buf)) == -EINVAL);
        CHECK(update_entry_format(&e, buf, 5) == -ENAMETOOLONG);

        CHECK(update_entry_is_tentative("capsule-b+1-0.conf"));
        CHECK(update_entry_is_tentative("capsule-b+0-1.conf"));
        CHECK(!update_entry_is_tentative("capsule-b.conf"));
        CHECK(!update_entry_is_tentative("other+1-0.conf"));

        CHECK_STR_EQ(update_slot_other("a"), "b");
        CHECK_STR_EQ(update_slot_other("b"), "a");
        CHECK(update_slot_other("c") == NULL && update_slot_other(NULL) == NULL);
        CHECK(update_slot_other("ab") == NULL);
}

TEST(entry_render)
{
        char *text = NULL;
        struct cap_error err = {0};
        CHECK(update_entry_render("b", "0.2.0", NULL, &text, &err) == 0);
        CHECK_STR_EQ(text, "title Capsule 0.2.0 (slot b)\nversion 0.2.0\nlinux /b/vmlinuz\n"
                           "initrd /b/initrd\noptions capsule.slot=b root=PARTLABEL=slot_b "
                           "console=tty0 console=ttyS0,115200 panic=10 quiet "
                           "printk.devkmsg=on\n");
        free(text);
        CHECK(update_entry_render("a", "1.0.0-rc.1", "quiet", &text, &err) == 0);
        CHECK_CONTAINS(text, "options capsule.slot=a root=PARTLABEL=slot_a quiet\n");
        free(text);
        CHECK(update_entry_render("a", "1.0.0", "quiet\ninitrd /evil", &text, &err) < 0);
        CHECK_CONTAINS(err.msg, "control character");
        CHECK(update_entry_render("a", "1.0\n", NULL, &text, &err) < 0);
        CHECK(update_entry_render("c", "1.0.0", NULL, &text, &err) < 0);
        CHECK(text == NULL);
}

/* Writes an efivarfs-style file: 4 attribute bytes, then the UTF-16LE units. */
static void put_efivar(const char *path, const uint16_t *units, size_t n, bool nul)
{
        unsigned char raw[1200] = {0x06, 0, 0, 0};
        size_t len = 4;
        for (size_t i = 0; i < n; i++) {
                raw[len++] = (unsigned char)(units[i] & 0xff);
                raw[len++] = (unsigned char)(units[i] >> 8);
        }
        if (nul) {
                raw[len++] = 0;
                raw[len++] = 0;
        }
        put(path, raw, len);
}

TEST(efivar)
{
        char p[512];
        snprintf(p, sizeof(p), "%s", path_in("LoaderEntrySelected-4a67b082", NULL));
        const char *name = "capsule-b+0-1.conf";
        uint16_t u[64];
        for (size_t i = 0; i < strlen(name); i++)
                u[i] = (uint16_t)name[i];
        char buf[128];
        struct cap_error err = {0};
        put_efivar(p, u, strlen(name), true);
        CHECK(update_efivar_read_string(p, buf, sizeof(buf), &err) == 0);
        CHECK_STR_EQ(buf, "capsule-b+0-1.conf");
        put_efivar(p, u, strlen(name), false); /* no terminating NUL */
        CHECK(update_efivar_read_string(p, buf, sizeof(buf), &err) == 0);
        CHECK_STR_EQ(buf, "capsule-b+0-1.conf");
        CHECK(update_efivar_read_string(p, buf, 8, &err) == -ENAMETOOLONG);
        const uint16_t intl[] = {'e', 0x00e9, 0x20ac, 0xd83d, 0xde00};
        put_efivar(p, intl, 5, true);
        CHECK(update_efivar_read_string(p, buf, sizeof(buf), &err) == 0);
        CHECK_STR_EQ(buf, "e\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
        const uint16_t lone[] = {'a', 0xdc00};
        put_efivar(p, lone, 2, true);
        CHECK(update_efivar_read_string(p, buf, sizeof(buf), &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "bad UTF-16");
        put(p, "\x06\x00\x00\x00\x61", 5);
        CHECK(update_efivar_read_string(p, buf, sizeof(buf), &err) == -EINVAL);
        put(p, "\x06\x00\x00\x00\x00\x00", 6);
        CHECK(update_efivar_read_string(p, buf, sizeof(buf), &err) == -ENODATA);
        CHECK(update_efivar_read_string(path_in("missing", NULL), buf, sizeof(buf), &err) ==
              -ENOENT);
        unlink(p);
}

static void make_esp(const char *esp)
{
        char d[512];
        snprintf(d, sizeof(d), "%s/loader/entries", esp);
        CHECK(mkdir(esp, 0755) == 0);
        snprintf(d, sizeof(d), "%s/loader", esp);
        CHECK(mkdir(d, 0755) == 0);
        snprintf(d, sizeof(d), "%s/loader/entries", esp);
        CHECK(mkdir(d, 0755) == 0);
        snprintf(d, sizeof(d), "%s/loader/loader.conf", esp);
        const char *conf = "default capsule-a.conf\ntimeout 0\nconsole-mode keep\neditor no\n";
        put(d, conf, strlen(conf));
        snprintf(d, sizeof(d), "%s/loader/entries/capsule-a.conf", esp);
        put(d, "title a\n", 8);
}

TEST(esp_entries)
{
        char esp[512];
        snprintf(esp, sizeof(esp), "%s", path_in("esp1", NULL));
        struct cap_error err = {0};
        char name[64];
        make_esp(esp);
        CHECK(update_esp_write_entry(esp, "b", "0.2.0", NULL, 1, name, sizeof(name), &err) == 0);
        CHECK_STR_EQ(name, "capsule-b+1-0.conf");
        char *text = slurp(path_in("esp1/loader/entries/capsule-b+1-0.conf", NULL), NULL);
        CHECK_CONTAINS(text, "linux /b/vmlinuz\n");
        free(text);
        CHECK(!exists(path_in("esp1/loader/entries/capsule-b+1-0.conf.tmp", NULL)));
        CHECK(update_esp_set_default(esp, name, &err) == 0);
        text = slurp(path_in("esp1/loader/loader.conf", NULL), NULL);
        CHECK_STR_EQ(text, "default capsule-b+1-0.conf\ntimeout 0\nconsole-mode keep\neditor no\n");
        free(text);
        CHECK(update_esp_set_default(esp, "bad name", &err) < 0);

        /* systemd-boot's first try renames the entry; blessing finds it whatever its counters */
        CHECK(rename(path_in("esp1/loader/entries/capsule-b+1-0.conf", NULL),
                     path_in("esp1/loader/entries/capsule-b+0-1.conf", NULL)) == 0);
        CHECK(update_esp_bless(esp, "b", &err) == 0);
        CHECK(exists(path_in("esp1/loader/entries/capsule-b.conf", NULL)));
        CHECK(!exists(path_in("esp1/loader/entries/capsule-b+0-1.conf", NULL)));
        text = slurp(path_in("esp1/loader/loader.conf", NULL), NULL);
        CHECK_STR_EQ(text, "default capsule-b.conf\ntimeout 0\nconsole-mode keep\neditor no\n");
        free(text);
        CHECK(update_esp_bless(esp, "b", &err) == 0); /* already blessed */

        /* removal takes blessed, counting and temp entries of that slot only */
        put(path_in("esp1/loader/entries/capsule-b+1-0.conf.tmp", NULL), "x", 1);
        put(path_in("esp1/loader/entries/capsule-b+0-2.conf", NULL), "x", 1);
        CHECK(update_esp_remove_entries(esp, "b", &err) == 0);
        CHECK(!exists(path_in("esp1/loader/entries/capsule-b.conf", NULL)));
        CHECK(!exists(path_in("esp1/loader/entries/capsule-b+0-2.conf", NULL)));
        CHECK(!exists(path_in("esp1/loader/entries/capsule-b+1-0.conf.tmp", NULL)));
        CHECK(exists(path_in("esp1/loader/entries/capsule-a.conf", NULL)));
        CHECK(update_esp_bless(esp, "b", &err) == -ENOENT && err.status == CAP_NOT_FOUND);

        /* no loader.conf yet */
        CHECK(unlink(path_in("esp1/loader/loader.conf", NULL)) == 0);
        CHECK(update_esp_set_default(esp, "capsule-a.conf", &err) == 0);
        text = slurp(path_in("esp1/loader/loader.conf", NULL), NULL);
        CHECK_STR_EQ(text, "default capsule-a.conf\n");
        free(text);
}

TEST(find_partition)
{
        char buf[512];
        struct cap_error err = {0};
        char root[512];
        snprintf(root, sizeof(root), "%s", path_in("root", NULL));
        CHECK(mkdir(root, 0755) == 0);
        CHECK(mkdir(path_in("root/sys", NULL), 0755) == 0);
        CHECK(mkdir(path_in("root/sys/class", NULL), 0755) == 0);
        CHECK(mkdir(path_in("root/sys/class/block", NULL), 0755) == 0);
        CHECK(mkdir(path_in("root/sys/class/block/sda3", NULL), 0755) == 0);
        CHECK(mkdir(path_in("root/sys/class/block/sda2", NULL), 0755) == 0);
        const char *ue3 = "MAJOR=8\nMINOR=3\nDEVNAME=sda3\nDEVTYPE=partition\nPARTN=3\n"
                          "PARTNAME=slot_b\n";
        const char *ue2 = "MAJOR=8\nDEVNAME=sda2\nPARTNAME=slot_a\n";
        put(path_in("root/sys/class/block/sda3/uevent", NULL), ue3, strlen(ue3));
        put(path_in("root/sys/class/block/sda2/uevent", NULL), ue2, strlen(ue2));
        CHECK(update_slot_find_partition(root, "slot_b", buf, sizeof(buf), &err) == 0);
        CHECK_STR_EQ(buf, path_in("root/dev/sda3", NULL));
        CHECK(update_slot_find_partition(root, "slot_c", buf, sizeof(buf), &err) == -ENOENT);
        CHECK_CONTAINS(err.msg, "no partition named slot_c");
        CHECK(mkdir(path_in("root/dev", NULL), 0755) == 0);
        CHECK(mkdir(path_in("root/dev/disk", NULL), 0755) == 0);
        CHECK(mkdir(path_in("root/dev/disk/by-partlabel", NULL), 0755) == 0);
        put(path_in("root/dev/disk/by-partlabel/slot_b", NULL), "", 0);
        CHECK(update_slot_find_partition(root, "slot_b", buf, sizeof(buf), &err) == 0);
        CHECK_STR_EQ(buf, path_in("root/dev/disk/by-partlabel/slot_b", NULL));
}

/* A fake slot partition: size bytes of 0xAA. */
static void make_slot(const char *path, size_t size)
{
        unsigned char *b = malloc(size);
        memset(b, 0xaa, size);
        put(path, b, size);
        free(b);
}

TEST(mark_empty)
{
        char slot[512];
        snprintf(slot, sizeof(slot), "%s", path_in("slot-empty", NULL));
        struct cap_error err = {0};
        make_slot(slot, 65536);
        CHECK(update_slot_mark_empty(slot, &err) == 0);
        size_t len = 0;
        unsigned char *b = (unsigned char *)slurp(slot, &len);
        CHECK(len == 65536);
        bool zero = true;
        for (size_t i = 0; i < UPDATE_SLOT_HEADER; i++)
                zero = zero && b[i] == 0;
        CHECK(zero && b[UPDATE_SLOT_HEADER] == 0xaa);
        free(b);
        uint64_t size = 0;
        CHECK(update_slot_size(slot, &size, &err) == 0 && size == 65536);
        make_slot(slot, 100);
        CHECK(update_slot_mark_empty(slot, &err) < 0);
        CHECK_CONTAINS(err.msg, "too small for a slot");
        CHECK(update_slot_mark_empty(path_in("nope", NULL), &err) == -ENOENT);
        unlink(slot);
}

/* Streams a bundle into a fake ESP and slot through the real reader and slot writer. */
static int stream(const char *esp, const char *slot, const struct tbuf *b, EVP_PKEY *k,
                  struct cap_error *err)
{
        const char *keys[] = {key_pub_pem(k)};
        struct update_slot_target t = {.esp = esp, .slot = "b", .partition = slot};
        struct update_slot_writer *w = NULL;
        int r = update_slot_writer_begin(&t, &w, err);
        if (r < 0)
                return r;
        struct bundle_sink sink;
        update_slot_writer_sink(w, &sink);
        struct bundle_reader_opts o = {.trusted_keys = keys,
                                       .n_trusted_keys = 1,
                                       .arch = "x86_64",
                                       .running_version = "0.1.0",
                                       .sink = &sink};
        struct bundle_reader *rd = NULL;
        r = bundle_reader_new(&o, &rd, err);
        for (size_t off = 0; r == 0 && off < b->n; off += 777)
                r = bundle_reader_feed(rd, b->d + off, b->n - off < 777 ? b->n - off : 777, err);
        if (r == 0)
                r = bundle_reader_finish(rd, err);
        if (r == 0)
                r = update_slot_writer_commit(w, bundle_reader_manifest(rd), NULL, err);
        bundle_reader_free(rd);
        update_slot_writer_free(w);
        return r;
}

TEST(slot_writer)
{
        char esp[512], slot[512];
        snprintf(esp, sizeof(esp), "%s", path_in("esp2", NULL));
        snprintf(slot, sizeof(slot), "%s", path_in("slot_b", NULL));
        struct cap_error err = {0};
        make_esp(esp);
        make_slot(slot, 65536);
        /* an older b: blessed entry and files, all replaced */
        CHECK(mkdir(path_in("esp2/b", NULL), 0755) == 0);
        put(path_in("esp2/b/vmlinuz", NULL), "old", 3);
        put(path_in("esp2/loader/entries/capsule-b.conf", NULL), "old", 3);
        EVP_PKEY *k = key_new();
        struct tbundle t = {.key = k};
        struct tbuf b = bundle_build(&t);
        CHECK(stream(esp, slot, &b, k, &err) == 0);
        if (err.msg[0])
                fprintf(stderr, "  %s\n", err.msg);
        size_t len = 0;
        char *data = slurp(path_in("esp2/b/vmlinuz", NULL), &len);
        CHECK(len == t.part_len[0] && memcmp(data, t.parts[0], len) == 0);
        free(data);
        data = slurp(path_in("esp2/b/initrd", NULL), &len);
        CHECK(len == t.part_len[1] && memcmp(data, t.parts[1], len) == 0);
        free(data);
        data = slurp(slot, &len);
        CHECK(len == 65536 && memcmp(data, t.parts[2], t.part_len[2]) == 0);
        CHECK((unsigned char)data[t.part_len[2]] == 0xaa); /* the rest of the slot untouched */
        free(data);
        CHECK(!exists(path_in("esp2/b/vmlinuz.tmp", NULL)));
        CHECK(!exists(path_in("esp2/loader/entries/capsule-b.conf", NULL)));
        CHECK(exists(path_in("esp2/loader/entries/capsule-b+1-0.conf", NULL)));
        data = slurp(path_in("esp2/loader/loader.conf", NULL), NULL);
        CHECK_CONTAINS(data, "default capsule-b+1-0.conf\n");
        free(data);
        free(b.d);

        /* a tampered root image: the slot stays empty (header zero), no entry for b */
        struct tbundle t2 = {.key = k, .version = "0.3.0"};
        b = bundle_build(&t2);
        for (size_t i = b.n; i > 0; i--)
                if (b.d[i - 1] >= 'A' && b.d[i - 1] <= 'Z') {
                        b.d[i - 1] ^= 0x20;
                        break;
                }
        CHECK(stream(esp, slot, &b, k, &err) < 0 && err.status == CAP_DATA_LOSS);
        data = slurp(slot, &len);
        bool zero = true;
        for (size_t i = 0; i < UPDATE_SLOT_HEADER; i++)
                zero = zero && data[i] == 0;
        CHECK(zero);
        free(data);
        CHECK(!exists(path_in("esp2/loader/entries/capsule-b+1-0.conf", NULL)));
        CHECK(exists(path_in("esp2/loader/entries/capsule-a.conf", NULL)));
        free(b.d);

        /* a root image larger than the slot is refused before anything is written */
        make_slot(slot, 8192);
        b = bundle_build(&(struct tbundle){.key = k});
        CHECK(stream(esp, slot, &b, k, &err) < 0 && err.status == CAP_RESOURCE_EXHAUSTED);
        CHECK_CONTAINS(err.msg, "part rootfs.sqfs");
        CHECK(!exists(path_in("esp2/b/vmlinuz", NULL)));
        free(b.d);
        EVP_PKEY_free(k);
}

/* ---- the commit decision ---- */

TEST(commit_decision)
{
        static struct update_check ok3[] = {{"api", UPDATE_CHECK_OK, NULL},
                                            {"containerd", UPDATE_CHECK_OK, NULL},
                                            {"workloads", UPDATE_CHECK_OK, NULL}};
        static struct update_check pending[] = {
            {"api", UPDATE_CHECK_OK, NULL},
            {"containerd", UPDATE_CHECK_PENDING, "socket not up"},
            {"workloads", UPDATE_CHECK_PENDING, NULL}};
        static struct update_check failed[] = {
            {"api", UPDATE_CHECK_OK, NULL},
            {"containerd", UPDATE_CHECK_FAILED, "exited 3 times"},
            {"workloads", UPDATE_CHECK_PENDING, NULL}};
        static const struct {
                const char *entry;
                bool tentative;
                struct update_check *checks;
                size_t n;
                int64_t now;
                unsigned window;
                enum update_decision_kind want;
                const char *reason;
        } table[] = {
            {"capsule-a.conf", false, ok3, 3, 1000, 0, UPDATE_NOTHING, "not a tentative boot"},
            {"capsule-b+0-1.conf", true, ok3, 3, 10, 0, UPDATE_COMMIT, "all 3 health checks"},
            {"capsule-b.conf", true, ok3, 3, 10, 0, UPDATE_COMMIT, "slot b"},
            {"capsule-b+0-1.conf", true, pending, 3, 10, 0, UPDATE_WAIT,
             "290s left in the commit window; waiting for: containerd (socket not up), workloads"},
            {"capsule-b+0-1.conf", true, pending, 3, 299, 0, UPDATE_WAIT, "1s left"},
            {"capsule-b+0-1.conf", true, pending, 3, 300, 0, UPDATE_ROLLBACK,
             "the commit window of 300s elapsed; still waiting for: containerd"},
            {"capsule-b+0-1.conf", true, pending, 3, 100, 60, UPDATE_ROLLBACK,
             "window of 60s elapsed"},
            {"capsule-b+0-1.conf", true, pending, 3, -5, 60, UPDATE_WAIT, "60s left"},
            {"capsule-b+0-1.conf", true, failed, 3, 10, 0, UPDATE_ROLLBACK,
             "health check failed: containerd (exited 3 times)"},
            {"capsule-b+0-1.conf", true, NULL, 0, 10, 0, UPDATE_COMMIT, "all 0 health checks"},
            {NULL, true, ok3, 3, 10, 0, UPDATE_ROLLBACK, "(unknown)"},
            {"debian.conf", true, ok3, 3, 10, 0, UPDATE_ROLLBACK,
             "\"debian.conf\" is not a Capsule slot"},
        };
        for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
                struct update_commit_input in = {.booted_entry = table[i].entry,
                                                 .tentative = table[i].tentative,
                                                 .checks = table[i].checks,
                                                 .n_checks = table[i].n,
                                                 .now = table[i].now,
                                                 .boot_time = 0,
                                                 .commit_window_sec = table[i].window};
                struct update_decision d;
                update_commit_decide(&in, &d);
                if (d.kind != table[i].want || !strstr(d.reason, table[i].reason))
                        fprintf(stderr, "  FAIL row %zu: %s \"%s\"\n", i,
                                update_decision_kind_name(d.kind), d.reason);
                CHECK(d.kind == table[i].want);
                CHECK_CONTAINS(d.reason, table[i].reason);
                CHECK(d.deadline == (table[i].window ? table[i].window : 300));
        }
        CHECK_STR_EQ(update_decision_kind_name(UPDATE_ROLLBACK), "rollback");
}

/* The engine's text helpers: capsule.slot= from a command line, version/default lines. */
TEST(updater_text)
{
        char buf[64];
        updater_cmdline_slot("BOOT_IMAGE=/a/vmlinuz capsule.slot=b root=PARTLABEL=slot_b quiet\n",
                             buf, sizeof(buf));
        CHECK_STR_EQ(buf, "b");
        updater_cmdline_slot("quiet capsule.slot=", buf, sizeof(buf));
        CHECK_STR_EQ(buf, "");
        updater_cmdline_slot("xcapsule.slot=a", buf, sizeof(buf));
        CHECK_STR_EQ(buf, "");
        updater_entry_version("title Capsule 0.2.0 (slot b)\nversion 0.2.0\r\nlinux /b/vmlinuz\n",
                              buf, sizeof(buf));
        CHECK_STR_EQ(buf, "0.2.0");
        updater_entry_version("versions 1\n", buf, sizeof(buf));
        CHECK_STR_EQ(buf, "");
        updater_loader_default("timeout 0\ndefault   capsule-b+1-0.conf\neditor no", buf,
                               sizeof(buf));
        CHECK_STR_EQ(buf, "capsule-b+1-0.conf");
        updater_loader_default("", buf, sizeof(buf));
        CHECK_STR_EQ(buf, "");
}

int main(void)
{
        snprintf(dir, sizeof(dir), "/tmp/test-update-slot-XXXXXX");
        if (!mkdtemp(dir)) {
                perror("mkdtemp");
                return 1;
        }
        RUN(entry_names);
        RUN(entry_render);
        RUN(efivar);
        RUN(esp_entries);
        RUN(find_partition);
        RUN(mark_empty);
        RUN(slot_writer);
        RUN(commit_decision);
        RUN(updater_text);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", dir);
        return test_summary();
}
