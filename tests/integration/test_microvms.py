#!/usr/bin/env python3
"""MicroVM workloads in host mode: a real containerd for images, a real capsuled, real QEMU
(-M microvm under TCG) booting the pinned Debian kernel with capsule-guest as PID 1, real CNI.

This host has no /dev/vhost-vsock, so there is no guest channel here: exec and the guest's
graceful Stop are tested in a booted Capsule (tests/e2e). Everything else is tested here: the
reconciler runs a MicroVM like a container (logs, exit code, restart with backoff, restart,
delete, adoption after kill -9 of capsuled), ports publish as for containers, and flipping `kind`
serves the same page from a container and from a microVM. The root disk cache of an image goes
when the image does, and not while a microVM still claims it; a crash in the middle of removing
one is repaired at the next start (CAPSULE_FAULT=rootdisk-cache-remove).

Needs root, QEMU, the kernel (CAPSULE_KERNEL, set by scripts/test.sh) and busybox-static; exits 77
naming what is missing otherwise."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import mkimage_busybox  # noqa: E402
from harness import Capsule, Containerd, wait_for  # noqa: E402

SRC = harness.SOURCE_DIR
HOSTPORT = 18181
ROOT = None  # this run's capsuled root: QEMU processes are counted only when they are ours


def kernel():
    k = os.environ.get("CAPSULE_KERNEL")
    if k:
        return k
    found = sorted(glob.glob(os.path.join(SRC, "out/cache/kernel-*-cloud-amd64/boot/vmlinuz-*")))
    return found[-1] if found else None


def is_sanitized(binary):
    p = subprocess.run(["ldd", binary], capture_output=True, text=True)
    return "libasan" in p.stdout or "libubsan" in p.stdout


def guest_build_dir():
    """Where the capsule-guest for the VMs comes from: this build, unless it is an ASan+UBSan
    build. The VM's PID 1 is the shipped, uninstrumented guest (ASan's runtime as PID 1 of a VM is
    not what runs on a Capsule, and slows it several times under TCG); the sanitized guest is
    tested in host mode by test_guest.py. Then the plain build beside it (CI builds it first)."""
    own = os.path.join(harness.BUILD_DIR, "src/capsule-guest/capsule-guest")
    if os.path.exists(own) and not is_sanitized(own):
        return harness.BUILD_DIR
    plain = os.path.join(SRC, "build")
    if os.path.exists(os.path.join(plain, "src/capsule-guest/capsule-guest")) and \
            not is_sanitized(os.path.join(plain, "src/capsule-guest/capsule-guest")):
        return plain
    return None


def skip_reason():
    if os.geteuid() != 0:
        return "needs root (CNI, namespaces)"
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 not installed"
    if not kernel() or not os.access(kernel(), os.R_OK):
        return "no guest kernel: set CAPSULE_KERNEL or run mkimage/fetch-kernel.sh cloud out/cache"
    if not guest_build_dir():
        return ("no uninstrumented capsule-guest for the VMs: this is a sanitized build; "
                "build the plain one first (scripts/test.sh does, in build/)")
    return None


def qemu_pids(name):
    """PIDs of QEMU processes running the microVM NAME (by their -name capsule-NAME)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if (argv and argv[0].endswith(b"qemu-system-x86_64") and f"capsule-{name}".encode() in argv
                and (not ROOT or any(ROOT.encode() in a for a in argv))):
            pids.append(int(d))
    return pids


def qemu_pids_under(path):
    """PIDs of QEMU processes whose command line names a file under path (our test's VMs)."""
    pids = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and any(path.encode() in a for a in argv):
            pids.append(int(d))
    return pids


def http(port, timeout=3):
    p = subprocess.run(["curl", "-sS", "-m", str(timeout), f"http://127.0.0.1:{port}/"],
                       capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else None


class MicroVMTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsule-vm-")
        cls.initrd = os.path.join(cls.tmp, "guest-initrd.img")
        ktree = os.path.dirname(os.path.dirname(os.path.realpath(kernel())))
        subprocess.run([os.path.join(SRC, "mkimage/guest-initrd.sh"), guest_build_dir(), ktree, cls.initrd],
                       check=True, stdout=subprocess.DEVNULL)
        cls.containerd = Containerd(cls.tmp).start()
        global ROOT
        ROOT = os.path.join(cls.tmp, "root")
        cls.capsule = Capsule(cls.tmp, containerd=cls.containerd.sock,
                              extra_args=["--vm-kernel", kernel(), "--vm-initrd", cls.initrd]).start()
        mkimage_busybox.build(cls.tmp)
        cls.capsule.ctl(["image", "push", os.path.join(cls.tmp, "busybox-oci.tar")], check=True)

    @classmethod
    def tearDownClass(cls):
        try:
            for n in ("vm", "web", "crash", "bad", "vol", "vol2", "reader", "rca", "rcb"):
                cls.capsule.ctl(["delete", n])
            rc = cls.capsule.stop()
            logs = cls.capsule.logs()
        finally:
            # a test that failed half-way may leave a VM this capsuled started: end it by PID
            for pid in qemu_pids_under(cls.tmp):
                os.kill(pid, signal.SIGKILL)
            cls.containerd.stop()
            harness.unmount_under(cls.tmp)
            shutil.rmtree(cls.tmp, ignore_errors=True)
        if rc not in (0, None):
            raise AssertionError(f"capsuled exited {rc} on SIGTERM:\n{logs[-6000:]}")

    def apply(self, text, check=True):
        path = os.path.join(self.tmp, f"m{time.monotonic_ns()}.yaml")
        with open(path, "w") as f:
            f.write(text)
        return self.capsule.ctl(["apply", "-f", path], check=check)

    def status(self, name):
        p = self.capsule.ctl(["-o", "json", "get", name], check=True)
        return json.loads(p.stdout)["status"]

    def wait_status(self, name, pred, timeout, what):
        def check():
            st = self.status(name)
            return st if pred(st) else None
        try:
            return wait_for(check, timeout=timeout, interval=0.5, what=what)
        except AssertionError:
            print(self.capsule.ctl(["describe", name]).stdout, file=sys.stderr)
            print(self.capsule.ctl(["logs", name]).stdout[-3000:], file=sys.stderr)
            print(self.capsule.logs()[-3000:], file=sys.stderr)
            raise

    def logs(self, name):
        return self.capsule.ctl(["logs", name]).stdout

    def test_1_runs_logs_exit_code_and_backoff(self):
        """The VM boots, its output is its log, its exit code is the command's, it restarts with
        backoff per its policy."""
        t0 = time.monotonic()
        self.apply("kind: MicroVM\nname: crash\nimage: capsule.local/busybox:latest\n"
                   "command: [sh, -c, 'echo hello from a microVM; echo on stderr >&2; sleep 2; exit 3']\n"
                   "accel: tcg\nrestart: on-failure\nresources: {cpus: 1, memory: 128Mi}\n")
        self.wait_status("crash", lambda s: s.get("phase") == "Running", 60, "crash to run")
        wait_for(lambda: "hello from a microVM" in self.logs("crash"), timeout=90, interval=0.5,
                 what="the VM's output in capsulectl logs")
        booted = time.monotonic() - t0
        self.assertIn("on stderr", self.logs("crash"))
        self.assertEqual(len(qemu_pids("crash")), 1, "one QEMU runs the VM")
        d = self.capsule.ctl(["describe", "crash"]).stdout
        self.assertIn("MicroVM:       accel tcg, 1 vCPU, memory 128Mi", d)
        self.assertIn("vsock CID none", d)  # no /dev/vhost-vsock on this host
        h = json.loads(self.capsule.ctl(["-o", "json", "health"]).stdout)
        vm = next((c for c in h.get("checks", []) if c.get("name") == "microvm"), {})
        self.assertIn("accel auto: ", vm.get("message", ""), f"health reports accel: auto's answer ({vm})")
        self.assertIn(f"Kernel:        {kernel()}", d)
        st = self.wait_status("crash", lambda s: s.get("restarts", 0) >= 1, 120, "a restart after exit 3")
        self.assertEqual(st.get("lastExitCode"), 3, st)
        self.assertIn("exited with code 3", st.get("lastExitReason", ""))
        ev = self.capsule.ctl(["describe", "crash"]).stdout
        self.assertIn("exited with code 3", ev)
        print(f"\nFIGURE microVM apply -> output in logs: {booted:.1f} s (TCG)", file=sys.stderr)
        self.capsule.ctl(["delete", "crash"], check=True)
        self.assertEqual(qemu_pids("crash"), [], "delete leaves no QEMU")
        self.assertFalse(os.path.exists(os.path.join(self.capsule.root, "vms", "crash")),
                         "delete leaves no state directory (disks, sockets)")
        self.assertFalse(os.path.exists(os.path.join(self.capsule.root, "netns", "crash")),
                         "delete leaves no network namespace (tap, bridge)")

    def test_2_port_flip_kind_adopt(self):
        """A published port reaches the VM; the same manifest as a Container serves the same page;
        kill -9 of capsuled leaves the VM running and the next capsuled adopts it."""
        page = "served by $(cat /proc/1/comm) in $(uname -r)"
        manifest = ("kind: {kind}\nname: web\nimage: capsule.local/busybox:latest\n"
                    "command: [sh, -c]\n"
                    "args: ['mkdir -p /www && echo \"{page}\" > /www/index.html && exec httpd -f -p 80 -h /www']\n"
                    f"ports: ['{HOSTPORT}:80/tcp']\naccel: tcg\n")
        self.apply(manifest.format(kind="MicroVM", page=page).replace("accel: tcg\n", "accel: tcg\ndisk: 256Mi\n"))
        self.wait_status("web", lambda s: s.get("phase") == "Running", 60, "web (MicroVM) to run")
        body = wait_for(lambda: http(HOSTPORT), timeout=120, interval=1, what="the VM's port from the host")
        self.assertIn("served by", body)
        self.assertIn("cloud-amd64", body, "the page comes from the VM's own kernel")
        self.assertNotIn(os.uname().release, body)
        vm_pid = qemu_pids("web")
        self.assertEqual(len(vm_pid), 1)
        # no /dev/vhost-vsock on this host: exec says why (it works on a Capsule: tests/e2e)
        p = self.capsule.ctl(["exec", "web", "--", "true"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("no guest channel", p.stderr)

        # kill -9 of the control plane: the VM keeps running and is adopted
        self.capsule.stop(sig=signal.SIGKILL)
        self.assertEqual(qemu_pids("web"), vm_pid, "the VM survives kill -9 of capsuled serve")
        self.assertIn("served by", http(HOSTPORT) or "")
        self.capsule.start()
        st = self.wait_status("web", lambda s: s.get("phase") == "Running", 60, "web adopted")
        self.assertEqual(qemu_pids("web"), vm_pid, "adopted, not restarted")
        self.assertEqual(st.get("restarts", 0), 0)

        # flip kind: the same manifest as a Container serves the same page (from the host's kernel)
        self.apply(manifest.format(kind="Container", page=page).replace("accel: tcg\n", ""))
        body = wait_for(lambda: (lambda b: b if b and os.uname().release in b else None)(http(HOSTPORT)),
                        timeout=90, interval=1, what="the container's page")
        self.assertIn("served by", body)
        wait_for(lambda: qemu_pids("web") == [], timeout=30, what="the VM to be replaced")
        self.capsule.ctl(["delete", "web"], check=True)

    def test_3_bad_input(self):
        """A missing image gives a clear reason and starts no QEMU."""
        self.apply("kind: MicroVM\nname: bad\nimage: capsule.local/nope:1\ncommand: [sh]\n"
                   "pullPolicy: Never\naccel: tcg\n")
        st = self.wait_status("bad", lambda s: s.get("phase") in ("Backoff", "Failed") and s.get("message"),
                              60, "bad to fail")
        self.assertIn("capsule.local/nope:1", st["message"])
        self.assertEqual(qemu_pids("bad"), [])
        self.capsule.ctl(["delete", "bad"], check=True)
        # a command the image lacks: the VM boots, capsule-guest cannot exec it and says why, and
        # the exit code is a shell's 127 (not found), not a bare "no exit code" 255
        self.apply("kind: MicroVM\nname: nocmd\nimage: capsule.local/busybox:latest\n"
                   "command: [/no/such/command]\naccel: tcg\nrestart: never\n"
                   "resources: {cpus: 1, memory: 128Mi}\n")
        st = self.wait_status("nocmd", lambda s: s.get("phase") in ("Exited", "Failed"), 120,
                              "nocmd to end")
        self.assertEqual(st.get("lastExitCode"), 127, st)
        self.assertIn('exec "/no/such/command"', self.logs("nocmd"))
        self.capsule.ctl(["delete", "nocmd"], check=True)

    def host_mounted(self, volume):
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == os.path.join(self.capsule.root, "volumes", volume)
                       for line in f)

    def test_4_volumes(self):
        """A volume is the VM's disk: written in the VM, kept across restart and kill -9 of
        capsuled (never mounted on the host under the VM), refused to a second user while the VM
        holds it, and read by a container once the VM is deleted."""
        self.apply("kind: Volume\nname: vmdata\nsize: 32Mi\n")
        self.assertTrue(self.host_mounted("vmdata"), "an unused volume is mounted on the host")
        vm = ("kind: MicroVM\nname: vol\nimage: capsule.local/busybox:latest\naccel: auto\n"
              "command: [sh, -c, 'n=$(cat /data/boots 2>/dev/null || echo 0); echo $((n+1)) > /data/boots; "
              "sync; echo \"boots on the volume: $(cat /data/boots)\"; exec sleep 3600']\n"
              "mounts:\n  - {volume: vmdata, path: /data}\n")
        self.apply(vm)
        self.wait_status("vol", lambda s: s.get("phase") == "Running", 60, "vol to run")
        wait_for(lambda: "boots on the volume: 1" in self.logs("vol"), timeout=120, interval=0.5,
                 what="the VM to write its volume")
        self.assertFalse(self.host_mounted("vmdata"), "the VM's volume is not mounted on the host")
        h = json.loads(self.capsule.ctl(["-o", "json", "health"]).stdout)
        msg = next((c.get("message", "") for c in h.get("checks", []) if c.get("name") == "microvm"), "")
        self.assertRegex(msg, r"accel auto: (kvm|tcg \(.+\))", "health reports the probe's answer for this boot")
        vols = json.loads(self.capsule.ctl(["-o", "json", "volume", "ls"], check=True).stdout)["volumes"]
        row = [v for v in vols if v["name"] == "vmdata"][0]
        self.assertEqual(row.get("attachedTo"), ["vol"], row)

        # a second user is refused, with the holder named; resize and delete too
        self.apply("kind: Container\nname: reader\nimage: capsule.local/busybox:latest\n"
                   "command: [sh, -c, 'cat /data/boots; exec sleep 3600']\nrestart: never\n"
                   "mounts:\n  - {volume: vmdata, path: /data}\n")
        st = self.wait_status("reader", lambda s: s.get("phase") in ("Backoff", "Failed") and s.get("message"),
                              60, "the container to be refused the volume")
        self.assertIn("microVM vol", st["message"])
        self.capsule.ctl(["delete", "reader"], check=True)
        p = self.capsule.ctl(["volume", "resize", "vmdata", "--size", "64Mi"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("disk of microVM vol", p.stderr)
        p = self.capsule.ctl(["volume", "rm", "vmdata"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("in use by vol", p.stderr)

        # restart: a new boot of the VM sees what the last one wrote
        self.capsule.ctl(["restart", "vol"], check=True)
        wait_for(lambda: "boots on the volume: 2" in self.logs("vol"), timeout=180, interval=0.5,
                 what="the restarted VM to read its volume")

        # kill -9 of capsuled: the next one adopts the VM and leaves its volume alone
        pids = qemu_pids("vol")
        self.capsule.stop(sig=signal.SIGKILL)
        self.capsule.start()
        self.wait_status("vol", lambda s: s.get("phase") == "Running", 60, "vol adopted")
        self.assertEqual(qemu_pids("vol"), pids, "adopted, not restarted")
        self.assertFalse(self.host_mounted("vmdata"),
                         "recovery after a restart does not mount a volume a running VM holds")

        # delete the VM: a container reads what the VM wrote
        self.capsule.ctl(["delete", "vol"], check=True)
        self.assertEqual(qemu_pids("vol"), [])
        self.apply("kind: Container\nname: reader\nimage: capsule.local/busybox:latest\n"
                   "command: [sh, -c, 'echo \"container reads boots=$(cat /data/boots)\"; exec sleep 3600']\n"
                   "mounts:\n  - {volume: vmdata, path: /data}\n")
        wait_for(lambda: "container reads boots=2" in self.logs("reader"), timeout=60, interval=0.5,
                 what="the container to read the VM's data")
        # and now a VM is refused the volume the container holds
        self.apply(vm.replace("name: vol", "name: vol2"))
        st = self.wait_status("vol2", lambda s: s.get("phase") in ("Backoff", "Failed") and s.get("message"),
                              60, "the VM to be refused the volume")
        self.assertIn("in use by reader", st["message"])
        self.assertEqual(qemu_pids("vol2"), [])
        # a microVM and a container deleted together (their stops run at once, one driver each)
        p = self.capsule.ctl(["delete", "vol2", "reader", "--grace", "3s"], check=True)
        self.assertEqual(p.stdout.splitlines(), ["workload/vol2 deleted", "workload/reader deleted"])
        self.assertFalse(os.path.exists(os.path.join(self.capsule.root, "vms", "vol2")))
        self.capsule.ctl(["volume", "rm", "vmdata"], check=True)

    def push_variant(self, name, extra):
        """Pushes a busybox variant (its own digest) as name; returns its digest."""
        img = mkimage_busybox.Image(extra=extra)
        path = os.path.join(self.tmp, f"variant-{time.monotonic_ns()}.tar")
        with open(path, "wb") as f:
            f.write(mkimage_busybox.tar_bytes(mkimage_busybox.oci_archive_entries(img, name)))
        self.capsule.ctl(["image", "push", path], check=True)
        return img.manifest_digest

    def cache(self, digest, suffix=""):
        return os.path.join(self.capsule.root, "vm-images", digest.split(":")[1] + ".ext4" + suffix)

    def events_start(self):
        env = dict(os.environ, CAPSULECONFIG=self.capsule.config, CAPSULE_HOST=self.capsule.endpoint)
        p = subprocess.Popen([harness.CAPSULECTL, "-o", "json", "events"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1)
        return p

    @staticmethod
    def events_end(p):
        time.sleep(1)
        p.terminate()
        return [json.loads(line) for line in p.communicate(timeout=10)[0].splitlines()]

    def test_5_image_delete_frees_root_disk_cache(self):
        """Deleting an image removes its microVM root disk cache (a file in host mode) with an
        event, but not while a microVM still claims it: a defined workload (the delete is refused),
        another name with the same digest, or a VM whose image tag moved on; the last such VM's
        removal frees it. A crash between the two steps of a removal leaves no cache that a start
        trusts, and the next start removes the leftover."""
        a = self.push_variant("capsule.local/rootcache-a:1", b"rootcache-a")
        b = self.push_variant("capsule.local/rootcache-b:1", b"rootcache-b")
        self.assertEqual(self.push_variant("capsule.local/rootcache-b:2", b"rootcache-b"), b)
        vm = ("kind: MicroVM\nname: {n}\nimage: capsule.local/{img}\naccel: tcg\nrestart: never\n"
              "command: [sh, -c, 'echo {n} ran']\nresources: {{cpus: 1, memory: 128Mi}}\n")
        self.apply(vm.format(n="rca", img="rootcache-a:1"))
        self.apply(vm.format(n="rcb", img="rootcache-b:2"))
        for n in ("rca", "rcb"):
            self.wait_status(n, lambda s: s.get("phase") in ("Exited", "Failed"), 180, f"{n} to run and end")
            self.assertIn(f"{n} ran", self.logs(n))
        self.assertTrue(os.path.isfile(self.cache(a)), "the VM's start built the cache of image a")
        self.assertTrue(os.path.isfile(self.cache(b)))

        ev = self.events_start()
        # refused while a defined workload uses it: the cache stays
        p = self.capsule.ctl(["image", "rm", "capsule.local/rootcache-a:1"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("used by workload(s) rca", p.stderr)
        self.assertTrue(os.path.isfile(self.cache(a)))
        # the workload gone, the image delete takes the cache with it
        self.capsule.ctl(["delete", "rca"], check=True)
        self.assertTrue(os.path.isfile(self.cache(a)), "image a still exists: its cache stays")
        self.capsule.ctl(["image", "rm", "capsule.local/rootcache-a:1"], check=True)
        self.assertFalse(os.path.exists(self.cache(a)), "image rm removed the root disk cache")
        self.assertFalse(os.path.exists(self.cache(a, ".tmp.rm")))
        # another name still holds digest b (and rcb uses it): kept
        self.capsule.ctl(["image", "rm", "capsule.local/rootcache-b:1"], check=True)
        self.assertTrue(os.path.isfile(self.cache(b)), "rootcache-b:2 has the same digest: kept")
        # the tag rcb uses moves to other content: no image has digest b now, rcb's VM claims it
        c = self.push_variant("capsule.local/rootcache-b:2", b"rootcache-c")
        self.assertNotEqual(c, b)
        evs = self.events_end(ev)
        gone = [e for e in evs if e.get("action") == "rootdisk-removed"]
        self.assertEqual([(e["type"], e["name"]) for e in gone], [("image", a[:19])], evs)
        self.assertIn("image capsule.local/rootcache-a:1 deleted", gone[0]["message"])
        self.assertIn(self.cache(a), gone[0]["message"])
        self.assertIn("removed the cache of " + a, self.capsule.logs())

        # a crash in the middle of a removal (the start-time cleanup of an orphan cache)
        self.capsule.stop()
        orphan = "sha256:" + "0123456789abcdef" * 4
        with open(self.cache(orphan), "wb") as f:
            f.truncate(4 << 20)
        self.capsule.env = dict(os.environ, CAPSULE_FAULT="rootdisk-cache-remove")
        try:
            # the sweep runs once the API answers: capsuled dies right after its start
            try:
                self.capsule.start()
            except AssertionError:
                pass
            wait_for(lambda: self.capsule.proc.poll() is not None, timeout=30,
                     what="capsuled killed at the fault point")
            self.assertEqual(self.capsule.proc.returncode, -signal.SIGKILL)
        finally:
            self.capsule.env = None
            self.capsule.stop()
        self.assertFalse(os.path.exists(self.cache(orphan)), "step 1 done: no cache of it any more")
        self.assertTrue(os.path.exists(self.cache(orphan, ".tmp.rm")), "killed before step 2")
        swept = self.capsule.logs().count("start-time cleanup removed")
        self.capsule.start()
        wait_for(lambda: self.capsule.logs().count("start-time cleanup removed") > swept, timeout=30,
                 what="the start-time sweep of root disk caches")
        self.assertFalse(os.path.exists(self.cache(orphan, ".tmp.rm")), "the next start removed the leftover")
        self.assertIn(".ext4.tmp.rm (a cache removal a crash interrupted)", self.capsule.logs())
        self.assertTrue(os.path.isfile(self.cache(b)), "the start-time cleanup keeps what rcb claims")

        # the last VM that claims digest b goes: so does the cache
        ev = self.events_start()
        self.capsule.ctl(["delete", "rcb"], check=True)
        wait_for(lambda: not os.path.exists(self.cache(b)), timeout=30, what="the cache of b to go with rcb")
        evs = self.events_end(ev)
        gone = [e for e in evs if e.get("action") == "rootdisk-removed"]
        self.assertEqual([e["name"] for e in gone], [b[:19]], evs)
        self.assertIn("microVM rcb removed", gone[0]["message"])
        self.capsule.ctl(["image", "rm", "capsule.local/rootcache-b:2"], check=True)
        # what is left is the caches of images that exist (busybox, from the other tests)
        ims = json.loads(self.capsule.ctl(["-o", "json", "image", "ls"], check=True).stdout)
        self.assertLessEqual(set(os.listdir(os.path.join(self.capsule.root, "vm-images"))),
                             {os.path.basename(self.cache(i["digest"])) for i in ims})

if __name__ == "__main__":
    reason = skip_reason()
    if reason:
        print(f"SKIP: {reason}")
        sys.exit(77)
    unittest.main(verbosity=2)
