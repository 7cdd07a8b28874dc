/* QEMU microvm argv generation (src/capsuled/microvm/qemu.c): flags for TCG and KVM, the kernel
 * command line, disks, network, vsock, QEMU's comma escaping, input validation, shell rendering. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "microvm/qemu.h"
#include "test.h"

/* Index of arg in argv, or -1. */
static int argv_find(char **argv, const char *arg)
{
        for (int i = 0; argv[i]; i++)
                if (strcmp(argv[i], arg) == 0)
                        return i;
        return -1;
}

/* The value following option opt (the first occurrence whose value starts with prefix). */
static const char *opt_value(char **argv, const char *opt, const char *prefix)
{
        for (int i = 0; argv[i] && argv[i + 1]; i++)
                if (strcmp(argv[i], opt) == 0 && strncmp(argv[i + 1], prefix, strlen(prefix)) == 0)
                        return argv[i + 1];
        return NULL;
}

static const struct vm_disk test_disks[] = {
    {.path = "/var/lib/capsule/vms/web/run.img", .id = "runconfig", .read_only = true},
    {.path = "/var/lib/capsule/vms/web/root.img", .id = "root"},
    {.path = "/dev/capsule/vol-data"},
};

static void base_config(struct vm_config *c)
{
        vm_config_init(c);
        c->name = "web";
        c->qemu = "/usr/bin/qemu-system-x86_64";
        c->kernel = "/usr/lib/capsule/vmlinuz";
        c->initrd = "/usr/lib/capsule/guest.cpio";
        c->cpus = 2;
        c->memory_mib = 256;
        c->disks = test_disks;
        c->n_disks = ARRAY_SIZE(test_disks);
        c->net.tap = "cvm-web";
        c->net.mac = "52:54:00:12:34:56";
        c->vsock_cid = 42;
        c->qmp_socket = "/var/lib/capsule/vms/web/qmp.sock";
        c->console_path = "/var/lib/capsule/vms/web/console.log";
        c->pidfile = "/var/lib/capsule/vms/web/qemu.pid";
        c->ip.addr = "10.88.0.5/16";
        c->ip.gw = "10.88.0.1";
        c->ip.dns[0] = "1.1.1.1";
        c->ip.dns[1] = "9.9.9.9";
        c->ip.n_dns = 2;
}

TEST(tcg_argv)
{
        struct vm_config c;
        base_config(&c);
        struct cap_error err = {0};
        _cleanup_(qemu_argv_freep) char **argv = NULL;
        CHECK(qemu_build_argv(&c, &argv, &err) == 0);
        if (!argv)
                return;
        CHECK_STR_EQ(argv[0], "/usr/bin/qemu-system-x86_64");
        CHECK_STR_EQ(opt_value(argv, "-name", ""), "capsule-web");
        CHECK_STR_EQ(opt_value(argv, "-M", ""),
                     "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on");
        CHECK(argv_find(argv, "-nodefaults") > 0);
        CHECK(argv_find(argv, "-no-user-config") > 0);
        CHECK(argv_find(argv, "-no-reboot") > 0);
        CHECK_STR_EQ(opt_value(argv, "-display", ""), "none");
        CHECK_STR_EQ(opt_value(argv, "-accel", ""), "tcg,tb-size=64");
        CHECK_STR_EQ(opt_value(argv, "-cpu", ""), "max");
        CHECK_STR_EQ(opt_value(argv, "-smp", ""), "2");
        CHECK_STR_EQ(opt_value(argv, "-m", ""), "256M");
        CHECK_STR_EQ(opt_value(argv, "-kernel", ""), "/usr/lib/capsule/vmlinuz");
        CHECK_STR_EQ(opt_value(argv, "-initrd", ""), "/usr/lib/capsule/guest.cpio");
        CHECK_STR_EQ(opt_value(argv, "-pidfile", ""), "/var/lib/capsule/vms/web/qemu.pid");
        const char *append = opt_value(argv, "-append", "");
        CHECK_CONTAINS(append, "console=ttyS0 reboot=t panic=-1 quiet");
        CHECK_CONTAINS(append, " tsc_early_khz=2400000");
        CHECK_CONTAINS(append, " capsule.ip=10.88.0.5/16 capsule.gw=10.88.0.1");
        CHECK_CONTAINS(append, " capsule.dns=1.1.1.1,9.9.9.9");
        CHECK_CONTAINS(append, " capsule.hostname=web");
        CHECK_STR_EQ(opt_value(argv, "-netdev", ""),
                     "tap,id=net0,ifname=cvm-web,script=no,downscript=no");
        CHECK_STR_EQ(opt_value(argv, "-device", "virtio-net"),
                     "virtio-net-device,netdev=net0,mac=52:54:00:12:34:56");
        CHECK_STR_EQ(opt_value(argv, "-device", "vhost-vsock"), "vhost-vsock-device,guest-cid=42");
        CHECK_STR_EQ(opt_value(argv, "-chardev", "socket"),
                     "socket,id=qmp,path=/var/lib/capsule/vms/web/qmp.sock,server=on,wait=off");
        CHECK_STR_EQ(opt_value(argv, "-mon", ""), "chardev=qmp,mode=control");
        CHECK_STR_EQ(opt_value(argv, "-chardev", "file"),
                     "file,id=console,path=/var/lib/capsule/vms/web/console.log,append=on");
        CHECK_STR_EQ(opt_value(argv, "-serial", ""), "chardev:console");
}

TEST(disks_in_order)
{
        struct vm_config c;
        base_config(&c);
        _cleanup_(qemu_argv_freep) char **argv = NULL;
        CHECK(qemu_build_argv(&c, &argv, NULL) == 0);
        if (!argv)
                return;
        int d0 = argv_find(argv, "if=none,id=runconfig,file=/var/lib/capsule/vms/web/run.img,"
                                 "format=raw,readonly=on,cache=writeback");
        int d1 = argv_find(argv, "if=none,id=root,file=/var/lib/capsule/vms/web/root.img,"
                                 "format=raw,readonly=off,cache=writeback,discard=unmap");
        int d2 = argv_find(argv, "if=none,id=disk2,file=/dev/capsule/vol-data,format=raw,"
                                 "readonly=off,cache=writeback,discard=unmap");
        CHECK(d0 > 0 && d1 > d0 && d2 > d1);
        /* each drive's device comes right after it, so vda, vdb, vdc keep this order */
        CHECK(d0 > 0 &&
              strcmp(argv[d0 + 2], "virtio-blk-device,drive=runconfig,serial=runconfig") == 0);
        CHECK(d1 > 0 && strcmp(argv[d1 + 2], "virtio-blk-device,drive=root,serial=root") == 0);
        CHECK(d2 > 0 && strcmp(argv[d2 + 2], "virtio-blk-device,drive=disk2,serial=disk2") == 0);
}

TEST(kvm_argv)
{
        struct vm_config c;
        base_config(&c);
        c.accel = VM_ACCEL_KVM;
        c.net.tap = NULL;
        c.vsock_cid = 0;
        c.ip = (struct vm_ipconf){0};
        _cleanup_(qemu_argv_freep) char **argv = NULL;
        CHECK(qemu_build_argv(&c, &argv, NULL) == 0);
        if (!argv)
                return;
        CHECK_STR_EQ(opt_value(argv, "-accel", ""), "kvm");
        CHECK_STR_EQ(opt_value(argv, "-cpu", ""), "host");
        CHECK_CONTAINS(opt_value(argv, "-M", ""), "rtc=off");
        const char *append = opt_value(argv, "-append", "");
        CHECK(append && !strstr(append, "tsc_early_khz"));
        CHECK(append && !strstr(append, "capsule.ip="));
        CHECK_CONTAINS(append, "capsule.hostname=web");
        CHECK(argv_find(argv, "-netdev") < 0);
        CHECK(opt_value(argv, "-device", "vhost-vsock") == NULL);
}

TEST(tb_size_and_console_fd)
{
        struct vm_config c;
        base_config(&c);
        c.tb_size_mib = 256;
        c.console_fd = 9;
        _cleanup_(qemu_argv_freep) char **argv = NULL;
        CHECK(qemu_build_argv(&c, &argv, NULL) == 0);
        if (!argv)
                return;
        CHECK_STR_EQ(opt_value(argv, "-accel", ""), "tcg,tb-size=256");
        CHECK_STR_EQ(opt_value(argv, "-add-fd", ""), "fd=9,set=1");
        CHECK_STR_EQ(opt_value(argv, "-chardev", "file"),
                     "file,id=console,path=/dev/fdset/1,append=on");
}

TEST(comma_escaping)
{
        _cleanup_free_ char *e = qemu_opt_escape("/a,b/c,,d");
        CHECK_STR_EQ(e, "/a,,b/c,,,,d");
        static const struct vm_disk d[] = {{.path = "/tmp/x,readonly=off/root.img"}};
        struct vm_config c;
        base_config(&c);
        c.disks = d;
        c.n_disks = 1;
        c.qmp_socket = "/run/a,b/qmp.sock";
        c.console_path = "/run/a,b/console.log";
        _cleanup_(qemu_argv_freep) char **argv = NULL;
        CHECK(qemu_build_argv(&c, &argv, NULL) == 0);
        if (!argv)
                return;
        CHECK_STR_EQ(opt_value(argv, "-drive", ""),
                     "if=none,id=disk0,file=/tmp/x,,readonly=off/root.img,format=raw,readonly=off,"
                     "cache=writeback,discard=unmap");
        CHECK_CONTAINS(opt_value(argv, "-chardev", "socket"), "path=/run/a,,b/qmp.sock,");
        CHECK_CONTAINS(opt_value(argv, "-chardev", "file"), "path=/run/a,,b/console.log,");
}

TEST(cmdline_limit)
{
        struct vm_config c;
        base_config(&c);
        _cleanup_free_ char *extra = malloc(3001);
        memset(extra, 'x', 3000);
        extra[0] = 'a';
        extra[1] = '=';
        extra[3000] = '\0';
        c.cmdline_extra = extra;
        struct cap_error err = {0};
        char **argv = NULL;
        CHECK(qemu_build_argv(&c, &argv, &err) == -E2BIG);
        CHECK(argv == NULL);
        CHECK_CONTAINS(err.msg, "kernel command line is");
        CHECK_CONTAINS(err.msg, "the limit is 2048");
        /* just under the limit is fine */
        _cleanup_free_ char *base = NULL;
        c.cmdline_extra = NULL;
        CHECK(qemu_build_cmdline(&c, &base, NULL) == 0);
        size_t room = VM_CMDLINE_MAX - strlen(base) - 1;
        extra[room] = '\0';
        c.cmdline_extra = extra;
        _cleanup_free_ char *full = NULL;
        CHECK(qemu_build_cmdline(&c, &full, NULL) == 0);
        CHECK(full && strlen(full) == VM_CMDLINE_MAX);
        c.cmdline_extra = "foo=\"bar\nbaz\"";
        CHECK(qemu_build_cmdline(&c, &full, NULL) == -EINVAL);
}

TEST(refusals)
{
        struct vm_config c;
        struct cap_error err = {0};
        char **argv = NULL;
        static const char *const bad_names[] = {"Web", "a_b", "", "-x", "x-", "a b"};
        for (size_t i = 0; i < ARRAY_SIZE(bad_names); i++) {
                base_config(&c);
                c.name = bad_names[i];
                c.ip.hostname = "web";
                CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
                CHECK(argv == NULL);
        }
        base_config(&c);
        c.name = NULL;
        CHECK(qemu_build_argv(&c, &argv, &err) < 0);
        base_config(&c);
        c.qemu = "qemu-system-x86_64";
        CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
        base_config(&c);
        c.kernel = "/boot/vmlinuz\n-evil";
        CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "kernel");
        base_config(&c);
        c.net.mac = "53:54:00:12:34:56"; /* multicast */
        CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
        base_config(&c);
        c.net.tap = "tap,id=x";
        CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
        base_config(&c);
        c.vsock_cid = 2;
        CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
        base_config(&c);
        c.ip.addr = "10.88.0.5";
        CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
        CHECK_CONTAINS(err.msg, "ADDR/PREFIX");
        base_config(&c);
        c.ip.dns[0] = "1.1.1.1 init=/bin/sh";
        CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
        base_config(&c);
        c.cpus = 0;
        CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
        base_config(&c);
        c.memory_mib = 8;
        CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
        base_config(&c);
        static const struct vm_disk dup[] = {{.path = "/a", .id = "root"},
                                             {.path = "/b", .id = "root"}};
        c.disks = dup;
        c.n_disks = 2;
        CHECK(qemu_build_argv(&c, &argv, &err) == -EEXIST);
        base_config(&c);
        static const struct vm_disk badcache[] = {{.path = "/a", .cache = "directsync,x=y"}};
        c.disks = badcache;
        c.n_disks = 1;
        CHECK(qemu_build_argv(&c, &argv, &err) == -EINVAL);
        base_config(&c);
        c.qmp_socket = "/var/lib/capsule/a-very-long-root-directory-name-for-testing/vms/"
                       "a-workload-name-that-is-quite-long/qmp.sock";
        CHECK(qemu_build_argv(&c, &argv, &err) == -ENAMETOOLONG);
        CHECK_CONTAINS(err.msg, "107");
}

TEST(render)
{
        char *argv[] = {"/usr/bin/qemu-system-x86_64",
                        "-append",
                        "console=ttyS0 quiet",
                        "-drive",
                        "file=/x/it's,,here",
                        "",
                        NULL};
        _cleanup_free_ char *line = qemu_argv_render(argv);
        CHECK_STR_EQ(line, "/usr/bin/qemu-system-x86_64 -append 'console=ttyS0 quiet' -drive "
                           "'file=/x/it'\\''s,,here' ''");
        char name[80];
        CHECK(qemu_name_arg("web", name, sizeof(name), NULL) == 0);
        CHECK_STR_EQ(name, "capsule-web");
}

int main(void)
{
        RUN(tcg_argv);
        RUN(disks_in_order);
        RUN(kvm_argv);
        RUN(tb_size_and_console_fd);
        RUN(comma_escaping);
        RUN(cmdline_limit);
        RUN(refusals);
        RUN(render);
        return test_summary();
}
