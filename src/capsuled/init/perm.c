/* The PERM partition: everything Capsule keeps across reboots lives on it.
 *
 * Layout (design §8): the GPT partition named "perm" is an LVM PV in VG "capsule"; LV "perm" (ext4)
 * is mounted at /perm (store, logs, containerd root); thin pool "capsule/pool" holds workload
 * volumes. The first boot creates all of it; later boots activate LV perm (volumes are activated
 * one by one by capsuled's LVM backend, src/capsuled/volume/lvm.c).
 *
 * Crash safety: every step is idempotent and re-checked on each boot, so a power cut at any point
 * is finished by the next boot. The one destructive step, mkfs of LV perm, is guarded by the LV tag
 * "capsule_unformatted": lvcreate sets it atomically with the LV, and it is removed only after mkfs
 * succeeded. An LV perm without the tag is never formatted again. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../common/cleanup.h"
#include "../../common/config.h"
#include "../../common/log.h"
#include "../capsuled.h"
#include "init.h"

#define VG "capsule"
#define PERM_LV_DEV "/dev/capsule/perm"
#define TAG_UNFORMATTED "capsule_unformatted"
#define GIB (1024ULL * 1024 * 1024)

static int read_small_file(const char *path, char *buf, size_t size)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n = read(fd, buf, size - 1);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        return (int)n;
}

int perm_find_partition(const char *partname, char *dev, size_t dev_size)
{
        DIR *d = opendir("/sys/class/block");
        if (!d)
                return -errno;
        int found = -ENOENT;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char path[512], buf[2048];
                snprintf(path, sizeof(path), "/sys/class/block/%s/uevent", e->d_name);
                if (read_small_file(path, buf, sizeof(buf)) < 0)
                        continue;
                char want[128];
                snprintf(want, sizeof(want), "PARTNAME=%s\n", partname);
                char *p = strstr(buf, want);
                if (!p || (p != buf && p[-1] != '\n'))
                        continue;
                if (found == 0) {
                        log_warn("perm: several partitions named %s, using %s", partname, dev);
                        break;
                }
                snprintf(dev, dev_size, "/dev/%s", e->d_name);
                found = 0;
        }
        closedir(d);
        return found;
}

static int lvm(char *out, size_t out_size, char *const args[])
{
        char *argv[32] = {"/sbin/lvm"};
        size_t i = 1;
        for (; args[i - 1] && i < ARRAY_SIZE(argv) - 1; i++)
                argv[i] = args[i - 1];
        argv[i] = NULL;
        return run_cmd(argv, 120000, out, out_size);
}

/* Size of LV perm: 30% of the VG, at least 1 GiB, at most 20 GiB, never more than 60% of the VG. */
static uint64_t perm_lv_size(uint64_t vg_bytes)
{
        uint64_t s = vg_bytes / 10 * 3;
        if (s < GIB)
                s = GIB;
        if (s > 20 * GIB)
                s = 20 * GIB;
        if (s > vg_bytes / 10 * 6)
                s = vg_bytes / 10 * 6;
        return s & ~(4ULL * 1024 * 1024 - 1);
}

struct vg_state {
        bool has_perm, perm_unformatted, has_pool;
};

static int vg_inspect(struct vg_state *st)
{
        char out[4096];
        int r = lvm(out, sizeof(out),
                    (char *[]){"lvs", "--noheadings", "-o", "lv_name,lv_tags", VG, NULL});
        if (r != 0)
                return -EIO;
        *st = (struct vg_state){0};
        char *save = NULL;
        for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                char name[128] = "", tags[512] = "";
                if (sscanf(l, " %127s %511s", name, tags) < 1)
                        continue;
                if (strcmp(name, "perm") == 0) {
                        st->has_perm = true;
                        st->perm_unformatted = strstr(tags, TAG_UNFORMATTED) != NULL;
                } else if (strcmp(name, "pool") == 0) {
                        st->has_pool = true;
                }
        }
        return 0;
}

static int create_perm_lv(void)
{
        char out[256];
        if (lvm(out, sizeof(out),
                (char *[]){"vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_size", VG,
                           NULL}) != 0)
                return -EIO;
        uint64_t size = perm_lv_size(strtoull(out, NULL, 10));
        char sz[64];
        snprintf(sz, sizeof(sz), "%" PRIu64 "b", size);
        log_info("perm: creating LV %s/perm (%" PRIu64 " MiB)", VG, size >> 20);
        return lvm(NULL, 0,
                   (char *[]){"lvcreate", "-y", "-W", "y", "-Z", "y", "--addtag", TAG_UNFORMATTED,
                              "-L", sz, "-n", "perm", VG, NULL}) == 0
                   ? 0
                   : -EIO;
}

static int format_perm_lv(void)
{
        log_info("perm: formatting %s (ext4)", PERM_LV_DEV);
        int r = run_cmd((char *[]){"/sbin/mkfs.ext4", "-q", "-F", "-L", "perm", "-E",
                                   "lazy_itable_init=1,lazy_journal_init=1", PERM_LV_DEV, NULL},
                        300000, NULL, 0);
        if (r != 0)
                return -EIO;
        return lvm(NULL, 0,
                   (char *[]){"lvchange", "--deltag", TAG_UNFORMATTED, VG "/perm", NULL}) == 0
                   ? 0
                   : -EIO;
}

/* Brings VG capsule to its complete shape (creating what is missing) and activates LV perm.
 * *created is set when anything had to be created (first boot, or finishing an interrupted one). */
static int vg_prepare(const char *pv, bool *created)
{
        *created = false;
        if (lvm(NULL, 0, (char *[]){"vgs", VG, NULL}) != 0) {
                log_info("perm: no VG %s on %s, initialising", VG, pv);
                *created = true;
                if (lvm(NULL, 0, (char *[]){"vgcreate", "-y", VG, (char *)pv, NULL}) != 0)
                        return -EIO;
        }
        /* picks up a grown partition (docs/operations.md); harmless otherwise */
        lvm(NULL, 0, (char *[]){"pvresize", (char *)pv, NULL});
        struct vg_state st;
        if (vg_inspect(&st) < 0)
                return -EIO;
        if (!st.has_perm) {
                *created = true;
                if (create_perm_lv() < 0 || vg_inspect(&st) < 0)
                        return -EIO;
        }
        /* Only LV perm: the thin pool and each volume are activated by capsuled's volume
         * backend when it mounts them, so one volume that cannot be activated (e.g. a thin LV
         * whose creation a power cut interrupted) never costs the machine its /perm. */
        if (lvm(NULL, 0, (char *[]){"lvchange", "-ay", VG "/perm", NULL}) != 0)
                return -EIO;
        if (st.perm_unformatted) {
                *created = true;
                if (format_perm_lv() < 0)
                        return -EIO;
        }
        if (!st.has_pool) {
                *created = true;
                log_info("perm: creating thin pool %s/pool", VG);
                if (lvm(NULL, 0,
                        (char *[]){"lvcreate", "-y", "--type", "thin-pool", "-l", "90%FREE", "-n",
                                   "pool", VG, NULL}) != 0)
                        log_warn("perm: thin pool creation failed; volumes will be unavailable");
        }
        return 0;
}

static int mount_perm_fs(void)
{
        /* -p: fix what is safe to fix automatically; 1 = fixed, 2 = fixed, reboot advised */
        int r = run_cmd((char *[]){"/sbin/e2fsck", "-p", PERM_LV_DEV, NULL}, 600000, NULL, 0);
        if (r >= 4 || r < 0)
                log_error("perm: e2fsck %s exit %d, mounting anyway", PERM_LV_DEV, r);
        if (mount(PERM_LV_DEV, INIT_PERM_DIR, "ext4", MS_NOATIME | MS_NODEV | MS_NOSUID,
                  "errors=remount-ro") < 0)
                return -errno;
        return 0;
}

/* Copies src to dst atomically (temp file, fsync, rename), mode 0600. */
static int copy_file_atomic(const char *src, const char *dst)
{
        _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
        if (in < 0)
                return -errno;
        char tmp[512];
        snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
        _cleanup_close_ int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0)
                return -errno;
        char buf[8192];
        ssize_t n;
        while ((n = read(in, buf, sizeof(buf))) > 0)
                if (write(out, buf, (size_t)n) != n)
                        return -EIO;
        if (n < 0 || fsync(out) < 0)
                return -EIO;
        if (rename(tmp, dst) < 0)
                return -errno;
        return 0;
}

#define ESP_DIR "/run/capsule/esp"
#define ESP_MOUNT_FLAGS (MS_NODEV | MS_NOSUID | MS_NOEXEC)

/* Mounts the ESP read-only on ESP_DIR. 0, or -1 when there is none or it does not mount (said). */
static int esp_mount(void)
{
        char esp[128];
        if (perm_find_partition("EFI", esp, sizeof(esp)) < 0)
                return -1;
        mkdir_p(ESP_DIR, 0700);
        if (mount(esp, ESP_DIR, "vfat", ESP_MOUNT_FLAGS | MS_RDONLY, "umask=077") < 0) {
                log_warn("perm: mount ESP %s: %s", esp, strerror(errno));
                return -1;
        }
        return 0;
}

/* First boot: the machine config comes from the ESP (/EFI/capsule/machine.yaml, dropped there by
 * the operator after writing the image) or else from the image (/etc/capsule/machine.yaml). */
static void machine_config_install(void)
{
        if (access(INIT_MACHINE_CONFIG, F_OK) == 0)
                return;
        if (esp_mount() == 0) {
                int r = copy_file_atomic(ESP_DIR "/EFI/capsule/machine.yaml", INIT_MACHINE_CONFIG);
                umount(ESP_DIR);
                if (r == 0) {
                        log_info("perm: machine config installed from the ESP");
                        return;
                }
        }
        if (copy_file_atomic(INIT_IMAGE_MACHINE_CONFIG, INIT_MACHINE_CONFIG) == 0)
                log_info("perm: machine config installed from the image");
        else
                log_error("perm: no machine config (ESP /EFI/capsule/machine.yaml or %s)",
                          INIT_IMAGE_MACHINE_CONFIG);
}

/* Every boot: EFI/capsule/machine-override.yaml on the ESP replaces the machine config on /perm,
 * once. It is the way back in when an applied config locks the operator out (a wrong static
 * address, a lost CA): write the file to the ESP from another computer and boot. A valid file is
 * installed and renamed machine-override.yaml.applied; an invalid one is renamed .invalid and
 * the old config stays. The ESP is mounted read-write only when the file is there. */
static void machine_config_override(void)
{
        static const char file[] = ESP_DIR "/EFI/capsule/machine-override.yaml";
        if (esp_mount() < 0)
                return;
        if (access(file, F_OK) != 0) {
                umount(ESP_DIR);
                return;
        }
        if (mount(NULL, ESP_DIR, NULL, MS_REMOUNT | ESP_MOUNT_FLAGS, "umask=077") < 0) {
                log_error("perm: remount ESP read-write: %s; machine-override.yaml not applied",
                          strerror(errno));
                umount(ESP_DIR);
                return;
        }
        /* the whole validation (certificates, keys) is capsuled-serve's: PID 1 links no OpenSSL */
        char out[1024] = "";
        const char *suffix = ".invalid";
        int rc = run_cmd((char *[]){(char *)CAPSULED_SERVE_PATH, "check-config", (char *)file, NULL},
                         60000, out, sizeof(out));
        out[strcspn(out, "\n")] = '\0';
        if (rc < 0) {
                log_error("perm: cannot check machine-override.yaml (%s: %s); not applied, kept "
                          "for the next boot",
                          CAPSULED_SERVE_PATH, strerror(-rc));
                suffix = NULL;
        } else if (rc != 0) {
                log_error("perm: ESP machine-override.yaml refused, the machine config is "
                          "unchanged: %s",
                          out[0] ? out : "check-config failed");
        } else {
                int r = copy_file_atomic(file, INIT_MACHINE_CONFIG);
                if (r < 0) {
                        log_error("perm: install machine-override.yaml: %s", strerror(-r));
                        suffix = NULL; /* try again next boot */
                } else {
                        log_info("perm: machine config replaced by the ESP's "
                                 "machine-override.yaml");
                        suffix = ".applied";
                }
        }
        if (suffix) {
                char done[128];
                snprintf(done, sizeof(done), "%s%s", file, suffix);
                unlink(done);
                if (rename(file, done) < 0)
                        log_error("perm: rename machine-override.yaml: %s", strerror(errno));
        }
        sync();
        umount(ESP_DIR);
}

static void perm_dirs(void)
{
        mkdir_p(INIT_STATE_DIR, 0700);
        mkdir_p(INIT_PERM_DIR "/containerd", 0711);
        mkdir_p(INIT_PERM_DIR "/log", 0755);
        sync();
}

static int perm_fallback_tmpfs(const char *why)
{
        log_error("perm: %s; /perm is a tmpfs, nothing will survive a reboot", why);
        if (mount("tmpfs", INIT_PERM_DIR, "tmpfs", MS_NODEV | MS_NOSUID, "mode=0755") < 0)
                log_error("perm: mount tmpfs: %s", strerror(errno));
        perm_dirs();
        machine_config_install();
        return -EIO;
}

int perm_setup(void)
{
        int64_t t0 = now_ms();
        mkdir_p(INIT_PERM_DIR, 0755);
        char pv[128];
        int r = -ENOENT;
        for (int i = 0; i < 100 && r < 0; i++) {
                r = perm_find_partition("perm", pv, sizeof(pv));
                if (r < 0)
                        usleep(100 * 1000);
        }
        if (r < 0)
                return perm_fallback_tmpfs("no partition named perm");
        bool created;
        if (vg_prepare(pv, &created) < 0)
                return perm_fallback_tmpfs("LVM setup failed");
        if ((r = mount_perm_fs()) < 0) {
                log_error("perm: mount %s: %s", PERM_LV_DEV, strerror(-r));
                return perm_fallback_tmpfs("cannot mount LV perm");
        }
        perm_dirs();
        machine_config_install();
        machine_config_override();
        log_info("perm: %s %s on %s in %lld ms", created ? "initialised" : "activated existing",
                 PERM_LV_DEV, pv, (long long)(now_ms() - t0));
        return 0;
}
