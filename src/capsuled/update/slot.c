/* The A/B slots on disk (see slot.h): loader entry names and text, the LoaderEntrySelected EFI
 * variable, durable ESP writes (temp file, fsync, rename, fsync of the directory: FAT has no
 * journal, so every step is made durable before the next one depends on it), the slot partition,
 * and the slot writer that the bundle reader streams parts into. */
#include "slot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/cleanup.h"

#define ENTRIES_DIR "loader/entries"
#define LOADER_CONF "loader/loader.conf"

/* ---- slots and entry names ---- */

bool update_slot_is_valid(const char *slot)
{
        return slot && (strcmp(slot, "a") == 0 || strcmp(slot, "b") == 0);
}

const char *update_slot_other(const char *slot)
{
        if (!update_slot_is_valid(slot))
                return NULL;
        return slot[0] == 'a' ? "b" : "a";
}

/* A counter: 1 to 4 decimal digits. Advances *p. */
static bool parse_counter(const char **p, unsigned *out)
{
        const char *s = *p;
        unsigned v = 0;
        size_t n = 0;
        while (s[n] >= '0' && s[n] <= '9' && n < 5)
                v = v * 10 + (unsigned)(s[n++] - '0');
        if (n == 0 || n > 4)
                return false;
        *p = s + n;
        *out = v;
        return true;
}

int update_entry_parse(const char *name, struct update_entry *out)
{
        memset(out, 0, sizeof(*out));
        if (!name || strncmp(name, "capsule-", 8) != 0)
                return -EINVAL;
        const char *p = name + 8;
        if (*p != 'a' && *p != 'b')
                return -EINVAL;
        out->slot[0] = *p++;
        if (*p == '+') {
                p++;
                out->counting = true;
                if (!parse_counter(&p, &out->tries_left))
                        return -EINVAL;
                if (*p == '-') {
                        p++;
                        if (!parse_counter(&p, &out->tries_done))
                                return -EINVAL;
                }
        }
        if (*p && strcmp(p, ".conf") != 0)
                return -EINVAL;
        return 0;
}

int update_entry_format(const struct update_entry *e, char *buf, size_t size)
{
        int n;
        if (!update_slot_is_valid(e->slot))
                return -EINVAL;
        if (e->counting)
                n = snprintf(buf, size, "capsule-%s+%u-%u.conf", e->slot, e->tries_left,
                             e->tries_done);
        else
                n = snprintf(buf, size, "capsule-%s.conf", e->slot);
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int update_entry_blessed_name(const char *slot, char *buf, size_t size)
{
        struct update_entry e = {.counting = false};
        if (!update_slot_is_valid(slot))
                return -EINVAL;
        e.slot[0] = slot[0];
        return update_entry_format(&e, buf, size);
}

bool update_entry_is_tentative(const char *name)
{
        struct update_entry e;
        return update_entry_parse(name, &e) == 0 && e.counting;
}

static bool options_are_valid(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

int update_entry_render(const char *slot, const char *version, const char *options, char **out,
                        struct cap_error *err)
{
        *out = NULL;
        if (!update_slot_is_valid(slot))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "loader entry: slot \"%s\" is not a or b", slot ? slot : "");
        if (!bundle_version_is_valid(version))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "loader entry: bad version \"%s\"", version ? version : "");
        if (!options)
                options = UPDATE_DEFAULT_OPTIONS;
        if (!options_are_valid(options))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "loader entry: options contain a control character");
        if (asprintf(
                out,
                "title Capsule %s (slot %s)\nversion %s\nlinux /%s/vmlinuz\ninitrd /%s/initrd\n"
                "options capsule.slot=%s root=PARTLABEL=slot_%s%s%s\n",
                version, slot, version, slot, slot, slot, slot, *options ? " " : "", options) < 0) {
                *out = NULL;
                return cap_error_errno(err, -ENOMEM, "loader entry");
        }
        return 0;
}

/* ---- the EFI variable ---- */

/* Appends code point c as UTF-8; false when it does not fit. */
static bool put_utf8(char *buf, size_t size, size_t *off, uint32_t c)
{
        unsigned char b[4];
        size_t n;
        if (c < 0x80) {
                b[0] = (unsigned char)c;
                n = 1;
        } else if (c < 0x800) {
                b[0] = (unsigned char)(0xc0 | c >> 6);
                b[1] = (unsigned char)(0x80 | (c & 0x3f));
                n = 2;
        } else if (c < 0x10000) {
                b[0] = (unsigned char)(0xe0 | c >> 12);
                b[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
                b[2] = (unsigned char)(0x80 | (c & 0x3f));
                n = 3;
        } else {
                b[0] = (unsigned char)(0xf0 | c >> 18);
                b[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3f));
                b[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
                b[3] = (unsigned char)(0x80 | (c & 0x3f));
                n = 4;
        }
        if (*off + n >= size)
                return false;
        memcpy(buf + *off, b, n);
        *off += n;
        return true;
}

static int read_all(int fd, unsigned char *buf, size_t size, size_t *got)
{
        *got = 0;
        while (*got < size) {
                ssize_t n = read(fd, buf + *got, size - *got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                *got += (size_t)n;
        }
        return 0;
}

int update_efivar_read_string(const char *path, char *buf, size_t size, struct cap_error *err)
{
        unsigned char raw[4 + 2 * 512 + 2];
        size_t got = 0, off = 0;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "read EFI variable %s", path);
        int r = read_all(fd, raw, sizeof(raw), &got);
        if (r < 0)
                return cap_error_errno(err, r, "read EFI variable %s", path);
        if (got < 6 || (got - 4) % 2 != 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "EFI variable %s: %zu bytes is not attributes + UTF-16", path,
                                     got);
        if (got == sizeof(raw))
                return cap_error_set(err, -E2BIG, CAP_INVALID_ARGUMENT, "EFI variable %s: too long",
                                     path);
        for (size_t i = 4; i + 1 < got; i += 2) {
                uint32_t c = (uint32_t)raw[i] | (uint32_t)raw[i + 1] << 8;
                if (c == 0)
                        break;
                if (c >= 0xd800 && c < 0xdc00 && i + 3 < got) {
                        uint32_t lo = (uint32_t)raw[i + 2] | (uint32_t)raw[i + 3] << 8;
                        if (lo < 0xdc00 || lo >= 0xe000)
                                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                                     "EFI variable %s: bad UTF-16", path);
                        c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                        i += 2;
                } else if (c >= 0xd800 && c < 0xe000) {
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "EFI variable %s: bad UTF-16", path);
                }
                if (!put_utf8(buf, size, &off, c))
                        return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT,
                                             "EFI variable %s: longer than %zu bytes", path,
                                             size - 1);
        }
        if (size == 0)
                return -ENAMETOOLONG;
        buf[off] = '\0';
        if (off == 0)
                return cap_error_set(err, -ENODATA, CAP_NOT_FOUND, "EFI variable %s: empty", path);
        return 0;
}

/* ---- durable file operations ---- */

static int write_all(int fd, const void *data, size_t len)
{
        const char *p = data;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

static int pwrite_all(int fd, const void *data, size_t len, uint64_t off)
{
        const char *p = data;
        while (len > 0) {
                ssize_t n = pwrite(fd, p, len, (off_t)off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                p += n;
                len -= (size_t)n;
                off += (uint64_t)n;
        }
        return 0;
}

static int fsync_path(const char *dir)
{
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return fsync(fd) < 0 ? -errno : 0;
}

/* The directory part of path ("." when none) into buf. */
static void dir_of(const char *path, char *buf, size_t size)
{
        const char *slash = strrchr(path, '/');
        if (!slash)
                snprintf(buf, size, ".");
        else if (slash == path)
                snprintf(buf, size, "/");
        else
                snprintf(buf, size, "%.*s", (int)(slash - path), path);
}

static int rename_durable(const char *from, const char *to, struct cap_error *err)
{
        char dir[4096];
        if (rename(from, to) < 0)
                return cap_error_errno(err, -errno, "rename %s to %s", from, to);
        dir_of(to, dir, sizeof(dir));
        int r = fsync_path(dir);
        return r < 0 ? cap_error_errno(err, r, "fsync %s", dir) : 0;
}

int update_esp_write_file(const char *esp, const char *rel, const void *data, size_t len,
                          struct cap_error *err)
{
        _cleanup_free_ char *path = NULL, *tmp = NULL;
        if (asprintf(&path, "%s/%s", esp, rel) < 0 || asprintf(&tmp, "%s.tmp", path) < 0)
                return cap_error_errno(err, -ENOMEM, "write %s/%s", esp, rel);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return cap_error_errno(err, -errno, "create %s", tmp);
        int r = write_all(fd, data, len);
        const char *step = "write";
        if (r == 0 && fsync(fd) < 0) {
                step = "fsync";
                r = -errno;
        }
        if (close(fd) < 0 && r == 0) {
                step = "close";
                r = -errno;
        }
        if (r < 0) {
                unlink(tmp);
                return cap_error_errno(err, r, "%s %s", step, tmp);
        }
        r = rename_durable(tmp, path, err);
        if (r < 0)
                unlink(tmp);
        return r;
}

int update_esp_remove_entries(const char *esp, const char *slot, struct cap_error *err)
{
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/%s", esp, ENTRIES_DIR);
        DIR *d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : cap_error_errno(err, -errno, "open %s", dir);
        int r = 0;
        bool removed = false;
        for (struct dirent *de; r == 0 && (errno = 0, de = readdir(d));) {
                struct update_entry e;
                const char *n = de->d_name;
                size_t len = strlen(n);
                bool tmp = len > 4 && strcmp(n + len - 4, ".tmp") == 0;
                char base[256];
                snprintf(base, sizeof(base), "%.*s", (int)(tmp ? len - 4 : len), n);
                if (update_entry_parse(base, &e) < 0 || strcmp(e.slot, slot) != 0 ||
                    !strstr(base, ".conf"))
                        continue;
                if (unlinkat(dirfd(d), n, 0) < 0 && errno != ENOENT)
                        r = cap_error_errno(err, -errno, "remove %s/%s", dir, n);
                removed = true;
        }
        if (r == 0 && errno != 0)
                r = cap_error_errno(err, -errno, "read %s", dir);
        closedir(d);
        if (r == 0 && removed && (r = fsync_path(dir)) < 0)
                return cap_error_errno(err, r, "fsync %s", dir);
        return r;
}

int update_esp_write_entry(const char *esp, const char *slot, const char *version,
                           const char *options, unsigned tries, char *name, size_t name_size,
                           struct cap_error *err)
{
        struct update_entry e = {.counting = tries > 0, .tries_left = tries};
        char file[64], rel[128];
        if (!update_slot_is_valid(slot))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "bad slot");
        e.slot[0] = slot[0];
        if (update_entry_format(&e, file, sizeof(file)) < 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "bad entry name");
        _cleanup_free_ char *text = NULL;
        int r = update_entry_render(slot, version, options, &text, err);
        if (r < 0)
                return r;
        snprintf(rel, sizeof(rel), "%s/%s", ENTRIES_DIR, file);
        r = update_esp_write_file(esp, rel, text, strlen(text), err);
        if (r < 0)
                return r;
        if (name)
                snprintf(name, name_size, "%s", file);
        return 0;
}

int update_esp_set_default(const char *esp, const char *entry, struct cap_error *err)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", esp, LOADER_CONF);
        if (!entry || !*entry || strpbrk(entry, " \t\r\n"))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "bad default entry");
        _cleanup_free_ char *old = NULL;
        size_t old_len = 0;
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f && errno != ENOENT)
                return cap_error_errno(err, -errno, "open %s", path);
        if (f) {
                old = calloc(1, 65536 + 1);
                if (!old)
                        return cap_error_errno(err, -ENOMEM, "read %s", path);
                old_len = fread(old, 1, 65536, f);
                if (ferror(f))
                        return cap_error_errno(err, -EIO, "read %s", path);
                if (!feof(f))
                        return cap_error_set(err, -EFBIG, CAP_FAILED_PRECONDITION,
                                             "%s: larger than 64 KiB", path);
        }
        /* the new default first, then every old line but `default` */
        size_t cap = old_len + strlen(entry) + 16;
        _cleanup_free_ char *out = malloc(cap);
        if (!out)
                return cap_error_errno(err, -ENOMEM, "write %s", path);
        size_t n = (size_t)snprintf(out, cap, "default %s\n", entry);
        for (const char *p = old; p && p < old + old_len;) {
                const char *eol = memchr(p, '\n', (size_t)(old + old_len - p));
                size_t len = eol ? (size_t)(eol - p) : (size_t)(old + old_len - p);
                bool is_default = len >= 7 && strncmp(p, "default", 7) == 0 &&
                                  (len == 7 || p[7] == ' ' || p[7] == '\t');
                if (!is_default && len > 0) {
                        memcpy(out + n, p, len);
                        n += len;
                        out[n++] = '\n';
                }
                p += len + 1;
        }
        return update_esp_write_file(esp, LOADER_CONF, out, n, err);
}

/* The name of slot's counting entry in the entries directory, if there is one. */
static int find_counting_entry(const char *dir, const char *slot, char *buf, size_t size,
                               struct cap_error *err)
{
        DIR *d = opendir(dir);
        if (!d)
                return cap_error_errno(err, -errno, "open %s", dir);
        int r = -ENOENT;
        for (struct dirent *de; (errno = 0, de = readdir(d));) {
                struct update_entry e;
                if (update_entry_parse(de->d_name, &e) == 0 && e.counting &&
                    strcmp(e.slot, slot) == 0 && strstr(de->d_name, ".conf")) {
                        snprintf(buf, size, "%s", de->d_name);
                        r = 0;
                        break;
                }
        }
        if (r < 0 && errno != 0)
                r = cap_error_errno(err, -errno, "read %s", dir);
        closedir(d);
        return r;
}

int update_esp_bless(const char *esp, const char *slot, struct cap_error *err)
{
        char dir[4096], blessed[64], counting[256], from[4400], to[4200];
        if (update_entry_blessed_name(slot, blessed, sizeof(blessed)) < 0)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "bless: bad slot");
        snprintf(dir, sizeof(dir), "%s/%s", esp, ENTRIES_DIR);
        snprintf(to, sizeof(to), "%s/%s", dir, blessed);
        int r = find_counting_entry(dir, slot, counting, sizeof(counting), err);
        if (r == -ENOENT) {
                if (access(to, F_OK) < 0)
                        return cap_error_set(err, -ENOENT, CAP_NOT_FOUND,
                                             "bless slot %s: no loader entry for it in %s", slot,
                                             dir);
        } else if (r < 0) {
                return r;
        } else {
                snprintf(from, sizeof(from), "%s/%s", dir, counting);
                if ((r = rename_durable(from, to, err)) < 0)
                        return cap_error_prefix(err, "bless slot %s", slot);
        }
        return update_esp_set_default(esp, blessed, err);
}

/* ---- the partition ---- */

int update_slot_find_partition(const char *root, const char *label, char *buf, size_t size,
                               struct cap_error *err)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/dev/disk/by-partlabel/%s", root, label);
        if (access(path, F_OK) == 0) {
                snprintf(buf, size, "%s", path);
                return 0;
        }
        char sys[4096];
        snprintf(sys, sizeof(sys), "%s/sys/class/block", root);
        DIR *d = opendir(sys);
        if (!d)
                return cap_error_errno(err, -errno, "find partition %s: open %s", label, sys);
        int r = -ENOENT;
        for (struct dirent *de; r == -ENOENT && (de = readdir(d));) {
                if (de->d_name[0] == '.')
                        continue;
                char ue[4400], line[512], devname[256] = "";
                bool match = false;
                snprintf(ue, sizeof(ue), "%s/%s/uevent", sys, de->d_name);
                FILE *f = fopen(ue, "re");
                if (!f)
                        continue;
                while (fgets(line, sizeof(line), f)) {
                        line[strcspn(line, "\n")] = '\0';
                        if (strncmp(line, "PARTNAME=", 9) == 0 && strcmp(line + 9, label) == 0)
                                match = true;
                        else if (strncmp(line, "DEVNAME=", 8) == 0)
                                snprintf(devname, sizeof(devname), "%s", line + 8);
                }
                fclose(f);
                if (match && devname[0] && !strstr(devname, "..")) {
                        snprintf(buf, size, "%s/dev/%s", root, devname);
                        r = 0;
                }
        }
        closedir(d);
        if (r < 0)
                return cap_error_set(err, -ENOENT, CAP_NOT_FOUND,
                                     "no partition named %s (GPT name)", label);
        return 0;
}

static int fd_size(int fd, const char *path, uint64_t *bytes, struct cap_error *err)
{
        struct stat st;
        if (fstat(fd, &st) < 0)
                return cap_error_errno(err, -errno, "stat %s", path);
        if (S_ISREG(st.st_mode)) {
                *bytes = (uint64_t)st.st_size;
                return 0;
        }
        if (!S_ISBLK(st.st_mode))
                return cap_error_set(err, -ENOTBLK, CAP_FAILED_PRECONDITION,
                                     "%s: not a block device", path);
        uint64_t n = 0;
        if (ioctl(fd, BLKGETSIZE64, &n) < 0)
                return cap_error_errno(err, -errno, "%s: BLKGETSIZE64", path);
        *bytes = n;
        return 0;
}

int update_slot_size(const char *partition, uint64_t *bytes, struct cap_error *err)
{
        _cleanup_close_ int fd = open(partition, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "open %s", partition);
        return fd_size(fd, partition, bytes, err);
}

static int mark_empty_fd(int fd, const char *partition, struct cap_error *err)
{
        static const unsigned char zeros[UPDATE_SLOT_HEADER];
        int r = pwrite_all(fd, zeros, sizeof(zeros), 0);
        if (r < 0)
                return cap_error_errno(err, r, "mark %s empty: write", partition);
        if (fsync(fd) < 0)
                return cap_error_errno(err, -errno, "mark %s empty: fsync", partition);
        return 0;
}

int update_slot_mark_empty(const char *partition, struct cap_error *err)
{
        _cleanup_close_ int fd = open(partition, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return cap_error_errno(err, -errno, "open %s", partition);
        uint64_t size = 0;
        int r = fd_size(fd, partition, &size, err);
        if (r < 0)
                return r;
        if (size < UPDATE_SLOT_HEADER)
                return cap_error_set(err, -ENOSPC, CAP_FAILED_PRECONDITION,
                                     "%s: %llu bytes is too small for a slot", partition,
                                     (unsigned long long)size);
        return mark_empty_fd(fd, partition, err);
}

/* ---- the slot writer ---- */

struct update_slot_writer {
        char *esp, *partition;
        char slot[2];
        int fd;                                   /* the part being written */
        char tmp[4200];                           /* its temp path (ESP parts) */
        char final[4200];                         /* and final path */
        bool is_root;                             /* the part goes to the partition */
        uint64_t written;                         /* bytes of the part so far */
        unsigned char header[UPDATE_SLOT_HEADER]; /* the root image's first bytes, written last */
        uint64_t esp_reserved; /* bytes of ESP parts accounted for by capacity() */
};

static bool part_is_root(const struct bundle_part *p)
{
        return strcmp(p->name, "rootfs.sqfs") == 0;
}

static int writer_capacity(void *ctx, const struct bundle_part *p, uint64_t *bytes,
                           struct cap_error *err)
{
        struct update_slot_writer *w = ctx;
        if (part_is_root(p))
                return update_slot_size(w->partition, bytes, err);
        struct statvfs sv;
        if (statvfs(w->esp, &sv) < 0)
                return cap_error_errno(err, -errno, "statvfs %s", w->esp);
        uint64_t avail = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
        uint64_t used = w->esp_reserved + UPDATE_ESP_MARGIN;
        *bytes = avail > used ? avail - used : 0;
        if (p->size <= *bytes)
                w->esp_reserved += p->size;
        return 0;
}

static int writer_open(void *ctx, const struct bundle_part *p, struct cap_error *err)
{
        struct update_slot_writer *w = ctx;
        w->written = 0;
        w->is_root = part_is_root(p);
        if (w->is_root) {
                memset(w->header, 0, sizeof(w->header));
                snprintf(w->final, sizeof(w->final), "%s", w->partition);
                w->fd = open(w->partition, O_WRONLY | O_CLOEXEC);
                if (w->fd < 0)
                        return cap_error_errno(err, -errno, "open %s", w->partition);
                return 0;
        }
        snprintf(w->final, sizeof(w->final), "%s/%s/%s", w->esp, w->slot, p->name);
        snprintf(w->tmp, sizeof(w->tmp), "%s.tmp", w->final);
        w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (w->fd < 0)
                return cap_error_errno(err, -errno, "create %s", w->tmp);
        return 0;
}

static int writer_write(void *ctx, const struct bundle_part *p, const void *buf, size_t len,
                        struct cap_error *err)
{
        struct update_slot_writer *w = ctx;
        const unsigned char *b = buf;
        int r;
        if (w->is_root && w->written < UPDATE_SLOT_HEADER) {
                size_t n = UPDATE_SLOT_HEADER - (size_t)w->written;
                if (n > len)
                        n = len;
                memcpy(w->header + w->written, b, n);
                w->written += n;
                b += n;
                len -= n;
        }
        if (len == 0)
                return 0;
        r = w->is_root ? pwrite_all(w->fd, b, len, w->written) : write_all(w->fd, b, len);
        if (r < 0)
                return cap_error_errno(err, r, "write %s", w->is_root ? w->final : w->tmp);
        w->written += len;
        return 0;
}

static int writer_close(void *ctx, const struct bundle_part *p, struct cap_error *err)
{
        struct update_slot_writer *w = ctx;
        _cleanup_close_ int fd = TAKE_FD(w->fd);
        if (w->is_root) {
                /* everything else is durable before the header makes it a squashfs */
                size_t head =
                    w->written < UPDATE_SLOT_HEADER ? (size_t)w->written : UPDATE_SLOT_HEADER;
                int r = 0;
                if (fsync(fd) < 0 || (r = pwrite_all(fd, w->header, head, 0)) < 0 || fsync(fd) < 0)
                        return cap_error_errno(err, r ? r : -errno, "write %s", w->final);
                return 0;
        }
        if (fsync(fd) < 0)
                return cap_error_errno(err, -errno, "fsync %s", w->tmp);
        int c = close(TAKE_FD(fd));
        if (c < 0)
                return cap_error_errno(err, -errno, "close %s", w->tmp);
        return rename_durable(w->tmp, w->final, err);
}

static void writer_abort(void *ctx, const struct bundle_part *p)
{
        struct update_slot_writer *w = ctx;
        if (w->fd >= 0)
                close(w->fd);
        w->fd = -1;
        if (!w->is_root)
                unlink(w->tmp); /* best effort: the slot has no entry, so it is not bootable */
}

void update_slot_writer_sink(struct update_slot_writer *w, struct bundle_sink *sink)
{
        *sink = (struct bundle_sink){
            .capacity = writer_capacity,
            .open = writer_open,
            .write = writer_write,
            .close = writer_close,
            .abort = writer_abort,
            .ctx = w,
        };
}

void update_slot_writer_free(struct update_slot_writer *w)
{
        if (!w)
                return;
        if (w->fd >= 0)
                close(w->fd);
        free(w->esp);
        free(w->partition);
        free(w);
}

/* Removes ESP/SLOT/NAME and NAME.tmp for every part that goes to the ESP. */
static int remove_esp_files(const char *esp, const char *slot, struct cap_error *err)
{
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/%s", esp, slot);
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return cap_error_errno(err, -errno, "mkdir %s", dir);
        for (size_t i = 0; i < BUNDLE_N_PARTS; i++) {
                if (strcmp(bundle_part_names[i], "rootfs.sqfs") == 0)
                        continue;
                for (int tmp = 0; tmp < 2; tmp++) {
                        char path[4200];
                        snprintf(path, sizeof(path), "%s/%s%s", dir, bundle_part_names[i],
                                 tmp ? ".tmp" : "");
                        if (unlink(path) < 0 && errno != ENOENT)
                                return cap_error_errno(err, -errno, "remove %s", path);
                }
        }
        int r = fsync_path(dir);
        if (r == 0)
                r = fsync_path(esp);
        return r < 0 ? cap_error_errno(err, r, "fsync %s", dir) : 0;
}

int update_slot_writer_begin(const struct update_slot_target *t, struct update_slot_writer **out,
                             struct cap_error *err)
{
        *out = NULL;
        if (!update_slot_is_valid(t->slot))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "slot \"%s\" is not a or b", t->slot ? t->slot : "");
        struct update_slot_writer *w = calloc(1, sizeof(*w));
        if (!w)
                return cap_error_errno(err, -ENOMEM, "slot writer");
        w->fd = -1;
        w->slot[0] = t->slot[0];
        w->esp = strdup(t->esp);
        w->partition = strdup(t->partition);
        int r = 0;
        if (!w->esp || !w->partition)
                r = cap_error_errno(err, -ENOMEM, "slot writer");
        if (r == 0)
                r = update_esp_remove_entries(t->esp, t->slot, err);
        if (r == 0)
                r = remove_esp_files(t->esp, t->slot, err);
        if (r == 0)
                r = update_slot_mark_empty(t->partition, err);
        if (r < 0) {
                update_slot_writer_free(w);
                return cap_error_prefix(err, "prepare slot %s", t->slot);
        }
        *out = w;
        return 0;
}

int update_slot_writer_commit(struct update_slot_writer *w, const struct bundle_manifest *m,
                              const char *options, struct cap_error *err)
{
        char name[64];
        int r = update_esp_write_entry(w->esp, w->slot, m->version, options, 1, name, sizeof(name),
                                       err);
        if (r == 0)
                r = update_esp_set_default(w->esp, name, err);
        return r < 0 ? cap_error_prefix(err, "slot %s: loader entry", w->slot) : 0;
}
