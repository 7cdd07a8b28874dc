#!/usr/bin/env python3
"""The seccomp allow-list of containers (src/capsuled/containerd/spec_seccomp.c) in host mode,
against a real containerd + runc: ordinary programs still work under it (a busybox shell script
with pipes, subshells, sleep, date, an HTTP server and wget over loopback; a static binary; a
dynamically linked C program with threads and perl, both with the host's libraries), and hostile
calls are refused: busybox unshare -U / -n and mount, and a static probe (seccomp-probe.c,
compiled here with gcc -static) that prints the errno of unshare, setns, mount, keyctl, add_key,
bpf, io_uring_setup, kexec_load, init_module, ptrace, userfaultfd, clone with namespace flags,
clone3 (ENOSYS), personality(READ_IMPLIES_EXEC) and AF_VSOCK/AF_ALG sockets. The container stays
Running, unrestarted, throughout."""

import io
import json
import os
import subprocess
import tarfile

import harness
import mkimage_busybox as mk
import test_containers
from harness import wait_for

PROBE_IMAGE = "capsule.local/seccomp-probe:1"
HERE = os.path.dirname(os.path.abspath(__file__))
# busybox applets the probe image adds to mkimage_busybox's
EXTRA_APPLETS = ["unshare", "nsenter", "expr", "seq"]

# What the probe must print inside a container: every hostile call refused with EPERM (clone3 with
# ENOSYS, so that libc falls back to clone), ordinary ones allowed.
PROBE_EXPECT = {
    "unshare-user": "errno=1", "unshare-net": "errno=1", "setns": "errno=1", "mount": "errno=1",
    "keyctl": "errno=1", "add_key": "errno=1", "bpf": "errno=1", "io_uring_setup": "errno=1",
    "kexec_load": "errno=1", "init_module": "errno=1", "ptrace": "errno=1", "userfaultfd": "errno=1",
    "clone-newuser": "errno=1", "clone-newns": "errno=1", "clone3": "errno=38",
    "personality-read-implies-exec": "errno=1", "socket-vsock": "errno=1", "socket-alg": "errno=1",
    "clone-fork": "ok", "pthread_create": "ok", "personality-query": "ok",
    "personality-linux": "ok", "socket-inet": "ok", "socket-unix": "ok",
}
PROBE_EXPECT_I386 = {"i386-getpid": "ok", "i386-unshare": "errno=1",
                     "i386-io_uring_setup": "errno=1", "i386-keyctl": "errno=1"}

DYN_SRC = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
static void *work(void *arg) { return (void *)((long)arg * 2); }
int main(void) {
        pthread_t t[4];
        long sum = 0;
        for (long i = 0; i < 4; i++)
                if (pthread_create(&t[i], NULL, work, (void *)i) != 0) return 1;
        for (int i = 0; i < 4; i++) { void *r; pthread_join(t[i], &r); sum += (long)r; }
        char *p = malloc(1 << 20);
        FILE *f = fopen("/tmp/dyn.txt", "w+");
        if (!p || !f || fprintf(f, "sum=%ld", sum) < 0) return 2;
        rewind(f);
        char buf[32] = "";
        if (!fgets(buf, sizeof(buf), f)) return 3;
        printf("dynamic %s\n", buf);
        return 0;
}
"""


def shared_libs(binary):
    """The host paths of the libraries (and the loader) a dynamic binary needs, from ldd."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and parts[parts.index("=>") + 1].startswith("/"):
            libs.append(parts[parts.index("=>") + 1])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def probe_layer(tmp):
    """busybox (with unshare), /probe (static), /dyn (dynamic, threads), perl, and the host's
    libraries both need at their own paths."""
    probe, dyn = os.path.join(tmp, "probe"), os.path.join(tmp, "dyn")
    subprocess.run(["gcc", "-static", "-O1", "-o", probe, os.path.join(HERE, "seccomp-probe.c"),
                    "-lpthread"], check=True)
    with open(dyn + ".c", "w") as f:
        f.write(DYN_SRC)
    subprocess.run(["gcc", "-O1", "-o", dyn, dyn + ".c", "-lpthread"], check=True)
    files = {"probe": probe, "dyn": dyn, "usr/bin/perl": "/usr/bin/perl"}
    for b in (dyn, "/usr/bin/perl"):
        for lib in shared_libs(b):
            files[lib.lstrip("/")] = os.path.realpath(lib)
    base = mk.make_layer()
    entries = []
    dirs = set()
    for name in sorted(files):
        parent = os.path.dirname(name)
        while parent and parent not in dirs and parent not in ("bin", "etc", "usr", "usr/bin", "tmp", "root"):
            dirs.add(parent)
            parent = os.path.dirname(parent)
    entries += [mk.dir_entry(d) for d in sorted(dirs)]
    for name, src in sorted(files.items()):
        with open(src, "rb") as f:
            entries.append(mk.file_entry(name, f.read(), 0o755))
    entries += [mk.symlink_entry("bin/" + a, "busybox") for a in EXTRA_APPLETS]
    entries.append(mk.dir_entry("mnt"))
    # the busybox layer's members, then ours, in one tar
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as out:
        with tarfile.open(fileobj=io.BytesIO(base)) as src:
            for ti in src.getmembers():
                out.addfile(ti, src.extractfile(ti) if ti.isfile() else None)
        for ti, data in entries:
            out.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


class SeccompTest(test_containers.WithImage):

    apply = test_containers.ContainersTest.apply
    get = test_containers.ContainersTest.get
    wait_phase = test_containers.ContainersTest.wait_phase
    delete = test_containers.ContainersTest.delete

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            img = mk.Image(layer=probe_layer(cls.tmp))
            path = os.path.join(cls.tmp, "seccomp-probe.tar")
            with open(path, "wb") as f:
                f.write(mk.tar_bytes(mk.oci_archive_entries(img, PROBE_IMAGE)))
            cls.capsule.ctl(["image", "push", path], check=True)
        except BaseException:
            cls.tearDownClass()
            raise

    def start_probe_container(self, name):
        self.apply(f"""kind: Container
name: {name}
image: {PROBE_IMAGE}
command: ["sh", "-c", {json.dumps(test_containers.LOOP)}, "{name}"]
""")
        return self.wait_phase(name, "Running")

    def exec(self, name, argv):
        return self.capsule.ctl(["exec", name, "--"] + argv)

    def assert_healthy(self, name, pid):
        """Still the same process, never restarted, and the capsule answers."""
        st = self.get(name)["status"]
        self.assertEqual((st["phase"], st["pid"], st["restarts"]), ("Running", pid, 0), st)
        self.assertEqual(self.exec(name, ["true"]).returncode, 0)
        self.capsule.ctl(["get"], check=True)

    def test_ordinary_programs_work(self):
        w = self.start_probe_container("plain")
        pid = w["status"]["pid"]
        # the container's process is filtered (mode 2)
        p = self.exec("plain", ["grep", "^Seccomp:", "/proc/self/status"])
        self.assertRegex(p.stdout, r"Seccomp:\s+2")
        script = r"""
set -e
echo alpha beta gamma | tr a-z A-Z | sed 's/BETA/b/' | wc -w
x=$( (echo sub; echo shell) | tail -1 ); echo "subshell=$x"
( cd /tmp && echo in-subshell > f && cat f ) | tee /tmp/g >/dev/null; cat /tmp/g
sleep 0.2 & wait $! && echo slept
date +%Y >/dev/null && echo date-ok
echo "$(( $(seq 1 10 | tr '\n' '+')0 ))"
mkdir -p /tmp/www && echo served-over-loopback > /tmp/www/index.html
httpd -f -p 127.0.0.1:8099 -h /tmp/www & hp=$!
n=0; until wget -q -O - http://127.0.0.1:8099/ 2>/dev/null; do n=$((n+1)); [ $n -lt 50 ] || exit 9; sleep 0.1; done
kill $hp
"""
        p = self.exec("plain", ["sh", "-c", script])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.split("\n"),
                         ["3", "subshell=shell", "in-subshell", "slept", "date-ok", "55",
                          "served-over-loopback", ""])
        # a static binary: the probe's ordinary calls work (clone, threads: glibc's clone3 gets
        # ENOSYS and falls back to clone)
        p = self.exec("plain", ["/probe"])
        self.assertEqual(p.returncode, 0, p.stderr)
        got = dict(l.split(" ", 1) for l in p.stdout.splitlines() if " " in l)
        for k in ("clone-fork", "pthread_create", "personality-query", "socket-inet", "socket-unix"):
            self.assertEqual(got.get(k), "ok", f"{k}: {p.stdout}")
        # dynamically linked: the host's loader and libc, threads, stdio
        p = self.exec("plain", ["/dyn"])
        self.assertEqual((p.returncode, p.stdout, p.stderr), (0, "dynamic sum=12\n", ""))
        # an interpreter: perl (dynamic), forking, a pipe and a regexp
        p = self.exec("plain", ["perl", "-e",
                                'my $s = 0; $s += $_ for 1..100; open(my $f, "-|", "echo", "piped") '
                                'or die; my $l = <$f>; close $f; $l =~ s/p(ipe)d/$1/; '
                                'print "perl $s $l"; exit(system("true") >> 8)'])
        self.assertEqual((p.returncode, p.stdout, p.stderr), (0, "perl 5050 ipe\n", ""))
        self.assert_healthy("plain", pid)
        self.delete("plain")

    def test_hostile_calls_are_refused(self):
        w = self.start_probe_container("hostile")
        pid = w["status"]["pid"]
        # busybox: new user and network namespaces, a mount
        for argv in (["unshare", "-U", "true"], ["unshare", "-n", "true"], ["unshare", "-m", "true"],
                     ["mount", "-t", "tmpfs", "none", "/mnt"]):
            p = self.exec("hostile", argv)
            self.assertNotEqual(p.returncode, 0, argv)
            # busybox mount says "permission denied (are you root?)" for EPERM
            self.assertRegex(p.stderr, r"Operation not permitted|permission denied", argv)
        # the probe: EPERM for each (ENOSYS for clone3)
        p = self.exec("hostile", ["/probe"])
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[-1], "probe done", p.stdout)
        got = dict(l.split(" ", 1) for l in lines[:-1] if " " in l and not l.startswith("i386 "))
        expect = dict(PROBE_EXPECT)
        if "i386 unavailable" in lines:
            # this kernel has no 32-bit x86 entry (ia32_emulation=0): the unit test covers the
            # profile's architectures; say so rather than pass silently
            print("\n  note: int $0x80 unavailable on this kernel; i386 ABI not exercised")
        else:
            expect.update(PROBE_EXPECT_I386)
        self.assertEqual(got, expect, p.stdout)
        # as the container's own process (not an exec): the same answers, exit 0
        self.apply(f"""kind: Container
name: probe-init
image: {PROBE_IMAGE}
command: ["/probe"]
restart: never
""")
        w = self.wait_phase("probe-init", "Exited")
        self.assertEqual(w["status"]["lastExitCode"], 0)
        logs = wait_for(lambda: (lambda o: o if "probe done" in o else None)(
            self.capsule.ctl(["logs", "probe-init"]).stdout), what="probe-init's output")
        for k in ("unshare-user", "io_uring_setup", "keyctl", "bpf", "mount", "clone3"):
            self.assertIn(f"{k} {PROBE_EXPECT[k]}\n", logs)
        self.delete("probe-init")
        self.assert_healthy("hostile", pid)
        self.delete("hostile")


if __name__ == "__main__":
    harness.main()
