#!/usr/bin/env python3
"""`capsulectl debug` end to end in host mode against a real containerd + runc: a privileged
container in the host's namespaces (or a target container's) with the host's / at /host, its
output and exit code, stdin, refusal for the reader role, for MicroVM targets and for absent
images, the events it emits, and that no debug container survives its session: normal end,
client killed with SIGKILL, capsuled serve stopped (SIGTERM) or killed mid-session (cleaned at
the next start)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import harness
import mkimage_busybox
from harness import Capsule, Containerd, wait_for

IMAGE = mkimage_busybox.DEFAULT_NAME
LOOP = 'trap "exit 0" TERM; while true; do sleep 1; done'


class DebugTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsule-dbg-")
        cls.containerd = Containerd(cls.tmp).start()
        cls.capsule = Capsule(cls.tmp, containerd=cls.containerd.sock).start()
        mkimage_busybox.build(cls.tmp)
        cls.capsule.ctl(["image", "push", os.path.join(cls.tmp, "busybox-oci.tar")], check=True)

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.capsule.stop()
            logs = cls.capsule.logs()
        finally:
            cls.containerd.stop()
            harness.unmount_under(cls.tmp)
            shutil.rmtree(cls.tmp, ignore_errors=True)
        if rc not in (0, None):
            raise AssertionError(f"capsuled exited {rc} on SIGTERM:\n{logs[-6000:]}")

    # -- helpers ---------------------------------------------------------------------------------

    def env(self, config=None):
        return dict(os.environ, CAPSULECONFIG=config or self.capsule.config,
                    CAPSULE_HOST=self.capsule.endpoint)

    def debug(self, args, input="", config=None, timeout=60):
        """capsulectl debug with stdin from `input` (a pipe: no terminal)."""
        return subprocess.run([harness.CAPSULECTL, "debug", "--image", IMAGE] + args,
                              env=self.env(config), input=input, capture_output=True, text=True,
                              timeout=timeout)

    def debug_containers(self):
        return {c for c in self.containerd.ctr(["containers", "ls", "-q"]).stdout.split()
                if c.startswith("debug.")}

    def debug_tasks(self):
        out = self.containerd.ctr(["tasks", "ls"]).stdout.splitlines()[1:]
        return {l.split()[0]: l.split()[2] for l in out if l.startswith("debug.")}

    def assert_none_left(self, timeout=30):
        try:
            wait_for(lambda: not self.debug_containers() and not self.debug_tasks(),
                     timeout=timeout, what="no debug container left in containerd")
        except AssertionError:
            print(self.capsule.logs()[-3000:])
            raise
        run = os.path.join(self.capsule.root, "run")
        left = [d for d in os.listdir(run) if d.startswith("debug.")] if os.path.isdir(run) else []
        self.assertEqual(left, [], "FIFO directories of debug sessions left")

    def apply(self, text):
        path = os.path.join(self.tmp, f"m{time.monotonic_ns()}.yaml")
        with open(path, "w") as f:
            f.write(text)
        return self.capsule.ctl(["apply", "-f", path], check=True)

    def get(self, name):
        return json.loads(self.capsule.ctl(["-o", "json", "get", name], check=True).stdout)

    def start_long_session(self):
        """A debug session that lasts (stdin kept open) until killed; returns (proc, id)."""
        proc = subprocess.Popen([harness.CAPSULECTL, "debug", "--image", IMAGE, "--", "sleep", "300"],
                                env=self.env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        tasks = wait_for(lambda: {k: v for k, v in self.debug_tasks().items() if v == "RUNNING"},
                         what="the debug container to run")
        self.assertEqual(len(tasks), 1, tasks)
        return proc, next(iter(tasks))

    # -- tests -----------------------------------------------------------------------------------

    def test_host_namespaces_and_root(self):
        marker = os.path.join(self.tmp, "host-marker")
        with open(marker, "w") as f:
            f.write(f"written on the host {os.getpid()}\n")
        # stdout, stderr and the exit code come back separately; the host's / is at /host
        p = self.debug(["--", "sh", "-c", f"cat /host{marker}; echo err >&2; exit 7"])
        self.assertEqual((p.returncode, p.stdout, p.stderr),
                         (7, f"written on the host {os.getpid()}\n", "err\n"))
        # /host is writable: the real root
        p = self.debug(["--", "sh", "-c", f"echo from-debug > /host{marker}.out"])
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(marker + ".out") as f:
            self.assertEqual(f.read(), "from-debug\n")
        # the host's pid namespace (this test's process is there), uts (hostname) and network
        host_ifaces = sorted(os.listdir("/sys/class/net"))
        p = self.debug(["--", "sh", "-c",
                        f"test -d /proc/{os.getpid()} && echo sees-host-pid; hostname; ls /sys/class/net"])
        lines = p.stdout.split()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(lines[0], "sees-host-pid")
        self.assertEqual(lines[1], socket.gethostname())
        self.assertEqual(sorted(lines[2:]), host_ifaces)
        # privileged: every capability, no seccomp filter
        # (every one the host's runtime has: capsuled's bounding set, like docker --privileged)
        with open("/proc/self/status") as f:
            bnd = [l.split()[1] for l in f if l.startswith("CapBnd:")][0]
        p = self.debug(["--", "sh", "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status"])
        self.assertRegex(p.stdout, rf"CapEff:\s+{bnd}\n")
        self.assertRegex(p.stdout, r"Seccomp:\s+0")
        # stdin is passed through
        p = self.debug(["--", "sh", "-c", "read x; echo got-$x"], input="hello\n")
        self.assertEqual((p.returncode, p.stdout), (0, "got-hello\n"))
        # the image's default command when none is given (busybox: sh, reading stdin)
        p = self.debug([], input="echo default-$((6*7))\n")
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "default-42"))
        # it is no workload: never listed
        self.assertNotIn("debug", self.capsule.ctl(["get"], check=True).stdout)
        self.assert_none_left()

    def test_target_namespaces(self):
        self.apply(f"""kind: Container
name: tgt
image: {IMAGE}
command: ["sh", "-c", {json.dumps(LOOP)}, "tgt-main"]
""")
        w = wait_for(lambda: (lambda w: w if w["status"]["phase"] == "Running" and
                              w["status"].get("ipAddress") else None)(self.get("tgt")),
                     what="tgt to run")
        ip = w["status"]["ipAddress"]
        p = self.debug(["--target", "tgt", "--", "sh", "-c",
                        "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; ip -4 addr; "
                        "test -d /host/proc/1 && echo host-root"])
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertIn("tgt-main", lines[0])           # the target's init is pid 1: its pid namespace
        self.assertEqual(lines[1], "tgt")             # its uts namespace
        self.assertIn(f"inet {ip}/", p.stdout)        # its network namespace
        self.assertIn("host-root", p.stdout)          # and still the host's / at /host
        # the target keeps running, untouched, and is still the only workload
        self.assertEqual(self.get("tgt")["status"]["pid"], w["status"]["pid"])
        self.assert_none_left()
        # a missing target, a bad name
        p = self.debug(["--target", "nosuch", "--", "true"])
        self.assertEqual(p.returncode, 1)
        self.assertIn("nosuch", p.stderr)
        self.assertIn("not found", p.stderr.lower())
        p = self.debug(["--target", "Bad_Name", "--", "true"])
        self.assertEqual(p.returncode, 1)
        self.assertIn("target", p.stderr)
        self.capsule.ctl(["delete", "tgt"], check=True)

    def test_microvm_target_refused(self):
        self.apply(f"""kind: MicroVM
name: vmt
image: {IMAGE}
command: ["sh"]
""")
        p = self.debug(["--target", "vmt", "--", "true"])
        self.assertEqual(p.returncode, 1)
        self.assertIn("vmt is a MicroVM", p.stderr)
        self.assertIn("capsulectl exec", p.stderr)
        self.assertEqual(self.debug_containers(), set())
        self.capsule.ctl(["delete", "vmt"], check=True)

    def test_absent_image_says_what_to_do(self):
        p = subprocess.run([harness.CAPSULECTL, "debug", "--", "true"], env=self.env(),
                           input="", capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("busybox", p.stderr)
        self.assertIn("not present", p.stderr)
        self.assertIn("capsulectl image push", p.stderr)
        self.assertEqual(self.debug_containers(), set())

    def test_reader_refused(self):
        cfg = os.path.join(self.tmp, "reader-config")
        harness.ctl(["gen", "cert", "--role", "reader", "--name", "rita", "--secrets",
                     self.capsule.secrets, "--endpoint", self.capsule.endpoint, "-o", cfg], check=True)
        p = self.debug(["--", "true"], config=cfg)
        self.assertEqual(p.returncode, 1)
        self.assertIn("PERMISSION_DENIED", p.stderr.upper().replace(" ", "_"))
        self.assertIn("capsule:reader", p.stderr)
        self.assertEqual(self.debug_containers(), set())

    def test_events_name_who_image_target_and_exit(self):
        cfg = os.path.join(self.tmp, "carol-config")
        harness.ctl(["gen", "cert", "--role", "admin", "--name", "carol", "--secrets",
                     self.capsule.secrets, "--endpoint", self.capsule.endpoint, "-o", cfg], check=True)
        events = subprocess.Popen([harness.CAPSULECTL, "-o", "json", "events"], env=self.env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            time.sleep(1)
            p = self.debug(["--", "sh", "-c", "exit 3"], config=cfg)
            self.assertEqual(p.returncode, 3)
            time.sleep(1)
        finally:
            events.terminate()
        evs = [e for e in map(json.loads, events.communicate(timeout=10)[0].splitlines())
               if e["type"] == "debug"]
        self.assertEqual([e["action"] for e in evs], ["started", "ended"], evs)
        self.assertTrue(evs[0]["name"].startswith("debug."))
        self.assertEqual(evs[0]["name"], evs[1]["name"])
        for e in evs:
            self.assertIn("cn=carol", e["message"])
            self.assertIn(f"image={IMAGE}", e["message"])
            self.assertIn("target=(host)", e["message"])
        self.assertIn("exit code 3", evs[1]["message"])

    def test_client_killed_removes_container(self):
        proc, cid = self.start_long_session()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdin.close()
        self.assert_none_left()

    def test_serve_killed_leftover_removed_at_start(self):
        self.apply(f"""kind: Container
name: keeper
image: {IMAGE}
command: ["sh", "-c", {json.dumps(LOOP)}]
""")
        pid = wait_for(lambda: (lambda w: w["status"]["pid"] if w["status"]["phase"] == "Running"
                                else None)(self.get("keeper")), what="keeper to run")
        proc, cid = self.start_long_session()
        self.capsule.stop(signal.SIGKILL)
        proc.kill()
        proc.wait(10)
        proc.stdin.close()
        # serve is gone: nothing removed the container yet
        self.assertIn(cid, self.debug_containers())
        self.capsule.start()
        # removed before the API answers; never adopted as a workload
        self.assertNotIn(cid, self.debug_containers())
        self.assert_none_left()
        self.assertIn("removed 1 debug container", self.capsule.logs())
        w = wait_for(lambda: (lambda w: w if w["status"]["phase"] == "Running" else None)(self.get("keeper")),
                     what="keeper adopted")
        self.assertEqual(w["status"]["pid"], pid)
        self.assertNotIn("debug", self.capsule.ctl(["get"], check=True).stdout)
        self.capsule.ctl(["delete", "keeper"], check=True)

    def test_serve_stopped_removes_container(self):
        proc, cid = self.start_long_session()
        # established: the handler waits in its input loop (a cancel there once looked like a
        # half-close, and shutdown waited for `sleep 300` forever)
        wait_for(lambda: f"debug id={cid}" in self.capsule.logs(), what="the session to start")
        time.sleep(1)
        rc = self.capsule.stop(timeout=60)   # SIGTERM: the session's call is cancelled
        try:
            self.assertEqual(rc, 0, self.capsule.logs()[-4000:])
            self.assertNotIn(cid, self.debug_containers())
            self.assertEqual(proc.wait(10), 1)      # the client is told the stream broke
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdin.close()
            self.capsule.start()
        self.assert_none_left()

    def test_tty(self):
        import pty
        import select
        master, slave = pty.openpty()
        proc = subprocess.Popen([harness.CAPSULECTL, "debug", "--image", IMAGE, "--", "sh"],
                                stdin=slave, stdout=slave, stderr=slave, env=self.env(),
                                start_new_session=True)
        os.close(slave)
        out = b""
        try:
            os.write(master, b"tty; echo mark-$((6*7)); exit 4\r")
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                r, _, _ = select.select([master], [], [], 0.2)
                if r:
                    try:
                        out += os.read(master, 4096)
                    except OSError:
                        break
            self.assertEqual(proc.wait(20), 4, out)
            self.assertIn(b"mark-42", out)
            self.assertIn(b"/dev/pts/", out)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        self.assert_none_left()


if __name__ == "__main__":
    harness.main()
