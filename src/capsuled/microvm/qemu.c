/* struct vm_config -> QEMU microvm argv and guest kernel command line (see qemu.h).
 *
 * Every value that lands inside a QEMU "key=value,key=value" option goes through qemu_opt_escape;
 * values passed as whole option arguments (-kernel, -initrd, -append, -pidfile) need no escaping.
 * Paths may not contain control characters or newlines (they end up in logs and config files). */
#include "qemu.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "common/cleanup.h"
#include "common/names.h"

/* A growable argv; a failed append sets oom and is reported once at the end. */
struct argv_buf {
        char **v;
        size_t n, cap;
        bool oom;
};

static void argv_add(struct argv_buf *a, const char *s)
{
        if (a->oom)
                return;
        if (a->n + 2 > a->cap) {
                size_t cap = a->cap ? a->cap * 2 : 64;
                char **v = realloc(a->v, cap * sizeof(*v));
                if (!v) {
                        a->oom = true;
                        return;
                }
                a->v = v;
                a->cap = cap;
        }
        char *dup = strdup(s);
        if (!dup) {
                a->oom = true;
                return;
        }
        a->v[a->n++] = dup;
        a->v[a->n] = NULL;
}

__attribute__((format(printf, 2, 3))) static void argv_addf(struct argv_buf *a, const char *fmt,
                                                            ...)
{
        _cleanup_free_ char *s = NULL;
        va_list ap;
        va_start(ap, fmt);
        int r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0) {
                s = NULL;
                a->oom = true;
                return;
        }
        argv_add(a, s);
}

void qemu_argv_free(char **argv)
{
        if (!argv)
                return;
        for (char **p = argv; *p; p++)
                free(*p);
        free(argv);
}

void vm_config_init(struct vm_config *cfg)
{
        memset(cfg, 0, sizeof(*cfg));
        cfg->accel = VM_ACCEL_TCG;
        cfg->console_fd = -1;
        cfg->cpus = 1;
        cfg->memory_mib = 256;
}

int qemu_name_arg(const char *name, char *buf, size_t len, struct cap_error *err)
{
        int r = name_check("microVM name", name, err);
        if (r < 0)
                return r;
        if ((size_t)snprintf(buf, len, "capsule-%s", name) >= len)
                return cap_error_set(err, -ENAMETOOLONG, CAP_INTERNAL, "microVM name too long");
        return 0;
}

char *qemu_opt_escape(const char *value)
{
        size_t commas = 0;
        for (const char *p = value; *p; p++)
                commas += *p == ',';
        char *out = malloc(strlen(value) + commas + 1);
        if (!out)
                return NULL;
        char *o = out;
        for (const char *p = value; *p; p++) {
                *o++ = *p;
                if (*p == ',')
                        *o++ = ',';
        }
        *o = '\0';
        return out;
}

static int check_path(const char *what, const char *path, struct cap_error *err)
{
        if (!path || !*path)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "%s: path is empty", what);
        if (strlen(path) >= 4096)
                return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT, "%s: path too long",
                                     what);
        for (const unsigned char *p = (const unsigned char *)path; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "%s \"%s\": control character in path", what, path);
        return 0;
}

/* Characters allowed in IP addresses/prefixes on the kernel command line. */
static bool ip_chars_ok(const char *s, bool allow_slash)
{
        if (!s || !*s || strlen(s) > 64)
                return false;
        for (const char *p = s; *p; p++)
                if (!isxdigit((unsigned char)*p) && *p != '.' && *p != ':' &&
                    !(allow_slash && *p == '/'))
                        return false;
        return true;
}

static bool hostname_ok(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 253 || s[0] == '-' || s[0] == '.')
                return false;
        for (const char *p = s; *p; p++)
                if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-' &&
                    *p != '.')
                        return false;
        return true;
}

static bool cmdline_chars_ok(const char *s)
{
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p > 0x7e)
                        return false;
        return true;
}

static int append_ip(char *buf, size_t len, size_t *pos, const struct vm_config *cfg,
                     struct cap_error *err)
{
        const struct vm_ipconf *ip = &cfg->ip;
        if (!ip->addr) {
                if (ip->gw || ip->n_dns)
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "guest network: gateway/DNS given without an address");
        } else {
                if (!ip_chars_ok(ip->addr, true) || !strchr(ip->addr, '/'))
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "guest address \"%s\": want ADDR/PREFIX", ip->addr);
                *pos += snprintf(buf + *pos, len - *pos, " capsule.ip=%s", ip->addr);
        }
        if (ip->gw) {
                if (!ip_chars_ok(ip->gw, false))
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "guest gateway \"%s\": not an IP address", ip->gw);
                *pos += snprintf(buf + *pos, len - *pos, " capsule.gw=%s", ip->gw);
        }
        if (ip->n_dns > VM_MAX_DNS)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "guest DNS: at most %d servers", VM_MAX_DNS);
        for (size_t i = 0; i < ip->n_dns; i++) {
                if (!ip_chars_ok(ip->dns[i], false))
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "guest DNS server \"%s\": not an IP address",
                                             ip->dns[i] ? ip->dns[i] : "");
                *pos +=
                    snprintf(buf + *pos, len - *pos, "%s%s", i ? "," : " capsule.dns=", ip->dns[i]);
        }
        const char *host = ip->hostname ? ip->hostname : cfg->name;
        if (!host || !hostname_ok(host))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "guest hostname \"%s\": want [a-z0-9.-]", host ? host : "");
        *pos += snprintf(buf + *pos, len - *pos, " capsule.hostname=%s", host);
        return 0;
}

int qemu_build_cmdline(const struct vm_config *cfg, char **out, struct cap_error *err)
{
        /* Room past the limit, so an overlong line is measured rather than cut: the fixed part
         * and the capsule.* keys (each value length-checked) take under 1 KiB. */
        size_t len = VM_CMDLINE_MAX + 1024 + (cfg->cmdline_extra ? strlen(cfg->cmdline_extra) : 0);
        _cleanup_free_ char *buf = malloc(len);
        if (!buf)
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        size_t pos = snprintf(buf, len, "console=ttyS0 reboot=t panic=-1 quiet");
        if (cfg->accel == VM_ACCEL_TCG)
                pos += snprintf(buf + pos, len - pos, " tsc_early_khz=" VM_TCG_TSC_KHZ);
        int r = append_ip(buf, len, &pos, cfg, err);
        if (r < 0)
                return r;
        if (cfg->cmdline_extra && *cfg->cmdline_extra) {
                if (!cmdline_chars_ok(cfg->cmdline_extra))
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "kernel command line: only printable ASCII allowed");
                pos += snprintf(buf + pos, len - pos, " %s", cfg->cmdline_extra);
        }
        if (pos >= len || pos > VM_CMDLINE_MAX)
                return cap_error_set(err, -E2BIG, CAP_INVALID_ARGUMENT,
                                     "kernel command line is %zu bytes, the limit is %d", pos,
                                     VM_CMDLINE_MAX);
        *out = TAKE_PTR(buf);
        return 0;
}

static bool disk_id_ok(const char *id)
{
        size_t n = strlen(id);
        if (n == 0 || n > 20)
                return false;
        for (const char *p = id; *p; p++)
                if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '-')
                        return false;
        return isalpha((unsigned char)id[0]);
}

static bool cache_mode_ok(const char *c)
{
        static const char *const modes[] = {"writeback", "none", "unsafe", "writethrough",
                                            "directsync"};
        for (size_t i = 0; i < ARRAY_SIZE(modes); i++)
                if (strcmp(c, modes[i]) == 0)
                        return true;
        return false;
}

static bool tap_ok(const char *t)
{
        size_t n = strlen(t);
        if (n == 0 || n > 15)
                return false;
        for (const char *p = t; *p; p++)
                if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
                        return false;
        return true;
}

/* "52:54:00:12:34:56": six hex pairs, a unicast address. */
static bool mac_ok(const char *m)
{
        if (!m || strlen(m) != 17)
                return false;
        for (int i = 0; i < 17; i++) {
                if (i % 3 == 2 ? m[i] != ':' : !isxdigit((unsigned char)m[i]))
                        return false;
        }
        int first = (int)strtol((char[]){m[0], m[1], 0}, NULL, 16);
        return (first & 1) == 0;
}

static int validate(const struct vm_config *cfg, struct cap_error *err)
{
        int r;
        if (!cfg->qemu || cfg->qemu[0] != '/')
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "qemu binary: want an absolute path");
        if ((r = check_path("qemu binary", cfg->qemu, err)) < 0 ||
            (r = check_path("kernel", cfg->kernel, err)) < 0 ||
            (cfg->initrd && (r = check_path("initrd", cfg->initrd, err)) < 0))
                return r;
        if (cfg->accel != VM_ACCEL_TCG && cfg->accel != VM_ACCEL_KVM)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "unknown accelerator");
        if (cfg->cpus < 1 || cfg->cpus > 64)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT, "cpus %u: want 1..64",
                                     cfg->cpus);
        if (cfg->memory_mib < 16 || cfg->memory_mib > (1u << 20))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "memory %u MiB: want 16 MiB..1 TiB", cfg->memory_mib);
        if (cfg->tb_size_mib > 4096)
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "tb-size %u MiB: want at most 4096", cfg->tb_size_mib);
        if (cfg->n_disks > VM_MAX_DISKS)
                return cap_error_set(err, -E2BIG, CAP_INVALID_ARGUMENT, "%zu disks: at most %d",
                                     cfg->n_disks, VM_MAX_DISKS);
        for (size_t i = 0; i < cfg->n_disks; i++) {
                const struct vm_disk *d = &cfg->disks[i];
                if ((r = check_path("disk", d->path, err)) < 0)
                        return cap_error_prefix(err, "disk %zu", i);
                if (d->id && !disk_id_ok(d->id))
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "disk id \"%s\": want [a-z][a-z0-9-]{0,19}", d->id);
                if (d->cache && !cache_mode_ok(d->cache))
                        return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                             "disk %s: unknown cache mode \"%s\"", d->path,
                                             d->cache);
                for (size_t j = 0; j < i; j++)
                        if (d->id && cfg->disks[j].id && strcmp(d->id, cfg->disks[j].id) == 0)
                                return cap_error_set(err, -EEXIST, CAP_INVALID_ARGUMENT,
                                                     "disk id \"%s\" used twice", d->id);
        }
        if (cfg->net.tap && !tap_ok(cfg->net.tap))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "tap \"%s\": want 1-15 of [A-Za-z0-9_.-]", cfg->net.tap);
        if (cfg->net.tap && !mac_ok(cfg->net.mac))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "MAC \"%s\": want a unicast xx:xx:xx:xx:xx:xx",
                                     cfg->net.mac ? cfg->net.mac : "");
        if (cfg->vsock_cid != 0 && (cfg->vsock_cid < 3 || cfg->vsock_cid == UINT32_MAX))
                return cap_error_set(err, -EINVAL, CAP_INVALID_ARGUMENT,
                                     "vsock CID %u: 0-2 and 2^32-1 are reserved", cfg->vsock_cid);
        if (cfg->qmp_socket) {
                if ((r = check_path("QMP socket", cfg->qmp_socket, err)) < 0)
                        return r;
                if (strlen(cfg->qmp_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
                        return cap_error_set(err, -ENAMETOOLONG, CAP_INVALID_ARGUMENT,
                                             "QMP socket \"%s\": longer than a unix socket path "
                                             "may be (107 bytes)",
                                             cfg->qmp_socket);
        }
        if (cfg->console_fd < 0 && cfg->console_path &&
            (r = check_path("console log", cfg->console_path, err)) < 0)
                return r;
        if (cfg->pidfile && (r = check_path("pidfile", cfg->pidfile, err)) < 0)
                return r;
        return 0;
}

static void add_disks(struct argv_buf *a, const struct vm_config *cfg)
{
        for (size_t i = 0; i < cfg->n_disks; i++) {
                const struct vm_disk *d = &cfg->disks[i];
                char id[24];
                if (d->id)
                        snprintf(id, sizeof(id), "%s", d->id);
                else
                        snprintf(id, sizeof(id), "disk%zu", i);
                _cleanup_free_ char *file = qemu_opt_escape(d->path);
                if (!file) {
                        a->oom = true;
                        return;
                }
                argv_add(a, "-drive");
                argv_addf(a, "if=none,id=%s,file=%s,format=raw,readonly=%s,cache=%s%s", id, file,
                          d->read_only ? "on" : "off", d->cache ? d->cache : "writeback",
                          d->read_only ? "" : ",discard=unmap");
                argv_add(a, "-device");
                argv_addf(a, "virtio-blk-device,drive=%s,serial=%s", id, id);
        }
}

static void add_chardevs(struct argv_buf *a, const struct vm_config *cfg)
{
        if (cfg->console_fd >= 0) {
                /* QEMU's fd passing: the inherited fd becomes /dev/fdset/1; append=on because
                 * QEMU would ftruncate it otherwise, which fails on a pipe. */
                argv_add(a, "-add-fd");
                argv_addf(a, "fd=%d,set=1", cfg->console_fd);
                argv_add(a, "-chardev");
                argv_add(a, "file,id=console,path=/dev/fdset/1,append=on");
                argv_add(a, "-serial");
                argv_add(a, "chardev:console");
        } else if (cfg->console_path) {
                _cleanup_free_ char *p = qemu_opt_escape(cfg->console_path);
                argv_add(a, "-chardev");
                argv_addf(a, "file,id=console,path=%s,append=on", p ? p : "");
                argv_add(a, "-serial");
                argv_add(a, "chardev:console");
                a->oom |= !p;
        } else {
                argv_add(a, "-serial");
                argv_add(a, "null");
        }
        if (cfg->qmp_socket) {
                _cleanup_free_ char *p = qemu_opt_escape(cfg->qmp_socket);
                argv_add(a, "-chardev");
                argv_addf(a, "socket,id=qmp,path=%s,server=on,wait=off", p ? p : "");
                argv_add(a, "-mon");
                argv_add(a, "chardev=qmp,mode=control");
                a->oom |= !p;
        }
}

int qemu_build_argv(const struct vm_config *cfg, char ***argv_out, struct cap_error *err)
{
        char name[80];
        int r = qemu_name_arg(cfg->name, name, sizeof(name), err);
        if (r < 0)
                return r;
        if ((r = validate(cfg, err)) < 0)
                return r;
        _cleanup_free_ char *cmdline = NULL;
        if ((r = qemu_build_cmdline(cfg, &cmdline, err)) < 0)
                return r;
        bool kvm = cfg->accel == VM_ACCEL_KVM;

        struct argv_buf a = {0};
        argv_add(&a, cfg->qemu);
        argv_add(&a, "-name");
        argv_add(&a, name);
        /* Under KVM the guest reads wall-clock time from kvmclock; under TCG it needs the RTC. */
        argv_add(&a, "-M");
        argv_addf(&a, "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=%s",
                  kvm ? "off" : "on");
        argv_add(&a, "-nodefaults");
        argv_add(&a, "-no-user-config");
        argv_add(&a, "-display");
        argv_add(&a, "none");
        argv_add(&a, "-sandbox");
        argv_add(&a, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
        argv_add(&a, "-accel");
        if (kvm)
                argv_add(&a, "kvm");
        else
                argv_addf(&a, "tcg,tb-size=%u",
                          cfg->tb_size_mib ? cfg->tb_size_mib : VM_DEFAULT_TB_SIZE_MIB);
        argv_add(&a, "-cpu");
        argv_add(&a, kvm ? "host" : "max");
        argv_add(&a, "-smp");
        argv_addf(&a, "%u", cfg->cpus);
        argv_add(&a, "-m");
        argv_addf(&a, "%uM", cfg->memory_mib);
        argv_add(&a, "-kernel");
        argv_add(&a, cfg->kernel);
        if (cfg->initrd) {
                argv_add(&a, "-initrd");
                argv_add(&a, cfg->initrd);
        }
        argv_add(&a, "-append");
        argv_add(&a, cmdline);
        add_disks(&a, cfg);
        if (cfg->net.tap) {
                argv_add(&a, "-netdev");
                argv_addf(&a, "tap,id=net0,ifname=%s,script=no,downscript=no", cfg->net.tap);
                argv_add(&a, "-device");
                argv_addf(&a, "virtio-net-device,netdev=net0,mac=%s", cfg->net.mac);
        }
        if (cfg->vsock_cid) {
                argv_add(&a, "-device");
                argv_addf(&a, "vhost-vsock-device,guest-cid=%u", cfg->vsock_cid);
        }
        add_chardevs(&a, cfg);
        argv_add(&a, "-no-reboot");
        if (cfg->pidfile) {
                argv_add(&a, "-pidfile");
                argv_add(&a, cfg->pidfile);
        }
        if (a.oom) {
                qemu_argv_free(a.v);
                return cap_error_set(err, -ENOMEM, CAP_INTERNAL, "out of memory");
        }
        *argv_out = a.v;
        return 0;
}

static bool shell_safe(const char *s)
{
        if (!*s)
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char)*p) && !strchr("_@%+=:,./-", *p))
                        return false;
        return true;
}

char *qemu_argv_render(char *const *argv)
{
        size_t len = 1;
        for (char *const *p = argv; *p; p++)
                len += strlen(*p) * 4 + 3;
        char *out = malloc(len);
        if (!out)
                return NULL;
        char *o = out;
        for (char *const *p = argv; *p; p++) {
                if (p != argv)
                        *o++ = ' ';
                if (shell_safe(*p)) {
                        o = stpcpy(o, *p);
                        continue;
                }
                *o++ = '\'';
                for (const char *c = *p; *c; c++) {
                        if (*c == '\'')
                                o = stpcpy(o, "'\\''");
                        else
                                *o++ = *c;
                }
                *o++ = '\'';
        }
        *o = '\0';
        return out;
}
