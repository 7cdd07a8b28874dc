#!/usr/bin/env python3
"""Containers end to end in host mode, against a real containerd + runc: apply, logs, exec,
restart policies with backoff, replacement on spec change, delete, adoption after a kill -9 of
capsuled serve, orphan removal, and refusal of bad manifests and specs."""

import json
import os
import re
import signal
import shutil
import sqlite3
import subprocess
import tempfile
import time
import unittest

import grpc

import harness
import mkimage_busybox
from harness import Capsule, Containerd, wait_for

IMAGE = mkimage_busybox.DEFAULT_NAME
# busybox sh as PID 1 ignores SIGTERM unless it traps it: trap it so stops are quick
LOOP = 'trap "exit 0" TERM; echo "started $0"; while true; do sleep 1; done'


def container(name, script, restart="always", extra=""):
    return f"""kind: Container
name: {name}
image: {IMAGE}
command: ["sh", "-c", {json.dumps(script)}, "{name}"]
restart: {restart}
{extra}"""


class WithImage(unittest.TestCase):
    """A real containerd and a capsuled using it, with the busybox test image pushed as ARCHIVE."""

    ARCHIVE = "busybox-oci.tar"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsule-ct-")
        cls.containerd = Containerd(cls.tmp).start()
        cls.capsule = Capsule(cls.tmp, containerd=cls.containerd.sock).start()
        mkimage_busybox.build(cls.tmp)
        cls.capsule.ctl(["image", "push", os.path.join(cls.tmp, cls.ARCHIVE)], check=True)

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


class ContainersTest(WithImage):

    # -- helpers ---------------------------------------------------------------------------------

    def apply(self, text, check=True):
        path = os.path.join(self.tmp, f"m{time.monotonic_ns()}.yaml")
        with open(path, "w") as f:
            f.write(text)
        return self.capsule.ctl(["apply", "-f", path], check=check)

    def get(self, name):
        p = self.capsule.ctl(["-o", "json", "get", name], check=True)
        return json.loads(p.stdout)

    def wait_phase(self, name, phase, timeout=30):
        return wait_for(lambda: (lambda w: w if w["status"]["phase"] == phase else None)(self.get(name)),
                        timeout=timeout, what=f"{name} to be {phase}")

    def tasks(self):
        out = self.containerd.ctr(["tasks", "ls"]).stdout.splitlines()[1:]
        return {l.split()[0]: (int(l.split()[1]), l.split()[2]) for l in out if l.strip()}

    def containers(self):
        return set(self.containerd.ctr(["containers", "ls", "-q"]).stdout.split())

    def delete(self, name):
        self.capsule.ctl(["delete", name], check=True)

    # -- tests -----------------------------------------------------------------------------------

    def test_run_logs_exec_delete(self):
        p = self.apply(container("hello", 'echo "hello from capsule"; ' + LOOP))
        self.assertIn("container/hello created", p.stdout)
        w = self.wait_phase("hello", "Running")
        self.assertGreater(w["status"]["pid"], 0)
        self.assertEqual(self.tasks()["hello"], (w["status"]["pid"], "RUNNING"))
        wait_for(lambda: "hello from capsule" in self.capsule.ctl(["logs", "hello"]).stdout, what="log line")
        # table output
        self.assertRegex(self.capsule.ctl(["get"], check=True).stdout, r"hello\s+Container\s+Running\s+0")
        # exec: stdout, stderr and the exit code come back separately
        p = self.capsule.ctl(["exec", "hello", "--", "sh", "-c", "echo out; echo err >&2; exit 3"])
        self.assertEqual((p.returncode, p.stdout, p.stderr), (3, "out\n", "err\n"))
        p = self.capsule.ctl(["exec", "-i", "hello", "--", "sh", "-c", "tr a-z A-Z"], input="piped\n")
        self.assertEqual((p.returncode, p.stdout), (0, "PIPED\n"))
        p = self.capsule.ctl(["exec", "hello", "--", "hostname"])
        self.assertEqual(p.stdout.strip(), "hello")
        # apply again: unchanged
        p = self.apply(container("hello", 'echo "hello from capsule"; ' + LOOP))
        self.assertIn("container/hello unchanged", p.stdout)
        self.delete("hello")
        self.assertNotIn("hello", self.containers())
        self.assertNotIn("hello", self.tasks())
        self.assertEqual(self.capsule.ctl(["get", "hello"]).returncode, 1)

    def test_exec_tty(self):
        import fcntl
        import pty
        import struct
        import termios
        self.apply(container("ttyw", LOOP))
        self.wait_phase("ttyw", "Running")
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        env = dict(os.environ, CAPSULECONFIG=self.capsule.config, CAPSULE_HOST=self.capsule.endpoint)
        proc = subprocess.Popen([harness.CAPSULECTL, "exec", "-it", "ttyw", "--", "sh"], stdin=slave,
                                stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        out = b""

        def read_until(needle, timeout=20):
            nonlocal out
            deadline = time.monotonic() + timeout
            while needle not in out and time.monotonic() < deadline:
                import select
                r, _, _ = select.select([master], [], [], 0.2)
                if r:
                    try:
                        out += os.read(master, 4096)
                    except OSError:
                        break
            return needle in out
        try:
            os.write(master, b"tty; stty size; echo mark-$((6*7))\r")
            self.assertTrue(read_until(b"mark-42"), out)
            self.assertIn(b"/dev/pts/", out)          # a real terminal inside
            self.assertIn(b"40 100", out)             # with the client's window size
            # resize the client's terminal: capsulectl forwards it (SIGWINCH)
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
            os.killpg(proc.pid, 0)
            proc.send_signal(signal.SIGWINCH)
            time.sleep(0.5)
            os.write(master, b"stty size; exit 5\r")
            self.assertTrue(read_until(b"30 120"), out)
            self.assertEqual(proc.wait(20), 5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        self.delete("ttyw")

    def test_logs_tail_timestamps_follow(self):
        self.apply(container("chatty", 'for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2; ' + LOOP))
        wait_for(lambda: "oops" in self.capsule.ctl(["logs", "chatty"]).stderr, what="stderr line")
        # the last three records: line5 (stdout), oops (stderr), "started chatty" (stdout)
        p = self.capsule.ctl(["logs", "--tail", "3", "chatty"])
        self.assertEqual(p.stdout.splitlines(), ["line5", "started chatty"])
        self.assertEqual(p.stderr.strip(), "oops")
        p = self.capsule.ctl(["logs", "--timestamps", "--tail", "2", "chatty"])
        self.assertRegex(p.stderr, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z oops")
        # follow: a restart appends the second run's lines, which reach the follower
        f = subprocess.Popen([harness.CAPSULECTL, "logs", "-f", "chatty"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL,
                             env=dict(os.environ, CAPSULECONFIG=self.capsule.config,
                                      CAPSULE_HOST=self.capsule.endpoint))
        try:
            self.capsule.ctl(["restart", "chatty"], check=True)
            # the second run's "started" line arrives on the follower, after the first run's lines
            seen = b""
            deadline = time.monotonic() + 30
            while seen.count(b"started chatty") < 2 and time.monotonic() < deadline:
                seen += os.read(f.stdout.fileno(), 4096)
            self.assertEqual(seen.count(b"started chatty"), 2, seen)
        finally:
            f.terminate()
            f.wait(10)
            f.stdout.close()
        self.delete("chatty")

    def test_crash_loop_backs_off_and_describe_says_why(self):
        self.apply(container("crasher", "echo boom; exit 7"))
        w = wait_for(lambda: (lambda w: w if w["status"]["restarts"] >= 2 else None)(self.get("crasher")),
                     timeout=40, what="two restarts")
        self.assertEqual(w["status"]["lastExitCode"], 7)
        self.assertIn("exited with code 7", w["status"]["lastExitReason"])
        d = self.capsule.ctl(["describe", "crasher"], check=True).stdout
        self.assertIn("Last exit:     code 7: exited with code 7", d)
        self.assertRegex(d, r"exited\s+exited with code 7")
        # backoff doubles: after ~6 s a crash loop with 1,2,4 s delays has at most 3 restarts
        time.sleep(6)
        self.assertLessEqual(self.get("crasher")["status"]["restarts"], 5)
        # the previous runs' output stays in the logs
        self.assertGreaterEqual(self.capsule.ctl(["logs", "crasher"]).stdout.count("boom"), 2)
        # restarts and the last exit survive a crash of capsuled serve (store_history)
        before = self.get("crasher")["status"]["restarts"]
        self.capsule.stop(signal.SIGKILL)
        self.capsule.start()
        w = wait_for(lambda: (lambda w: w if w["status"].get("phase", "Pending") != "Pending" else None)(
            self.get("crasher")), timeout=30, what="crasher seen again")
        self.assertGreaterEqual(w["status"]["restarts"], before, w["status"])
        self.assertEqual(w["status"]["lastExitCode"], 7, w["status"])
        self.delete("crasher")

    def push_image(self, name, user, layer=None):
        """Pushes a busybox image (or one with `layer`) whose config says `User: user`."""
        img = mkimage_busybox.Image(layer=layer)
        cfg = json.loads(img.config)
        cfg["config"]["User"] = user
        img.config = mkimage_busybox.jdump(cfg)
        img.manifest = mkimage_busybox.make_manifest(img.config, [img.layer_gz])
        img.manifest_digest = mkimage_busybox.sha256(img.manifest)
        path = os.path.join(self.tmp, name.replace("/", "_").replace(":", "_") + ".tar")
        with open(path, "wb") as f:
            f.write(mkimage_busybox.tar_bytes(mkimage_busybox.oci_archive_entries(img, name)))
        self.capsule.ctl(["image", "push", path], check=True)

    def test_image_user_names(self):
        # User: nobody resolves in the image's /etc/passwd (65534:65534)
        self.push_image("capsule.local/as-nobody:1", "nobody")
        self.apply(f"""kind: Container
name: as-nobody
image: capsule.local/as-nobody:1
command: ["sh", "-c", "echo uid=$(id -u) gid=$(id -g); sleep 1000"]
""")
        wait_for(lambda: "uid=65534 gid=65534" in self.capsule.ctl(["logs", "as-nobody"]).stdout,
                 timeout=30, what="as-nobody's id in its logs")
        self.delete("as-nobody")
        # an image whose /etc/passwd and /etc/group are links to the host's: never read
        mk = mkimage_busybox
        with open("/bin/busybox", "rb") as f:
            bb = f.read()
        for i, target in enumerate(["/etc/passwd", "../../../../etc/passwd"]):
            layer = mk.tar_bytes([mk.dir_entry("bin"), mk.file_entry("bin/busybox", bb, 0o755),
                                  mk.symlink_entry("bin/sh", "busybox"), mk.dir_entry("etc"),
                                  mk.symlink_entry("etc/passwd", target),
                                  mk.symlink_entry("etc/group", target.replace("passwd", "group"))])
            ref = f"capsule.local/evil-passwd:{i}"
            self.push_image(ref, "nobody", layer=layer)
            name = f"evil-passwd{i}"
            self.apply(f"kind: Container\nname: {name}\nimage: {ref}\ncommand: [\"sh\", \"-c\", \"sleep 1000\"]\n")
            st = wait_for(lambda: (lambda s: s if "nobody" in s.get("message", "") else None)(
                self.get(name)["status"]), timeout=30, what=f"{name}'s reason")
            self.assertNotEqual(st["phase"], "Running", st)
            self.assertIn("user: `nobody`", st["message"])
            self.assertNotIn(name, self.tasks())
            self.delete(name)

    def test_restart_policies(self):
        self.apply(container("once", "echo done; exit 0", restart="never") + "---\n" +
                   container("okfail", "exit 0", restart="on-failure"))
        for n in ("once", "okfail"):
            w = self.wait_phase(n, "Exited")
            self.assertEqual(w["status"]["restarts"], 0)
            self.assertEqual(w["status"]["lastExitCode"], 0)
        time.sleep(2)
        self.assertEqual(self.get("once")["status"]["restarts"], 0)
        self.delete("once")
        self.delete("okfail")

    def test_top_shows_cpu_memory_pids(self):
        self.apply(container("burner", "while :; do :; done", extra="resources: {memory: 64Mi}\n")
                   + "---\n" + container("idle", LOOP) + "---\n"
                   + container("gone", "exit 0", restart="never"))
        self.wait_phase("burner", "Running")
        self.wait_phase("idle", "Running")
        self.wait_phase("gone", "Exited")
        time.sleep(1)
        p = self.capsule.ctl(["-o", "json", "top"], check=True)
        rows = {r["name"]: r for r in json.loads(p.stdout)}
        b, i, g = rows["burner"], rows["idle"], rows["gone"]
        self.assertTrue(b["running"] and i["running"])
        self.assertGreater(b["cpuPercent"], 30.0, b)      # a busy loop: most of a core
        self.assertLess(i["cpuPercent"], 20.0, i)         # sleep 1 in a loop: next to nothing
        self.assertGreater(b["memoryBytes"], 0)
        self.assertLess(b["memoryBytes"], 64 * 2**20)
        self.assertEqual(b["memoryLimitBytes"], 64 * 2**20)
        self.assertGreaterEqual(b["pids"], 1)
        self.assertGreaterEqual(i["pids"], 2)              # sh and its sleep
        self.assertFalse(g["running"])
        self.assertNotIn("memoryBytes", g)
        p = self.capsule.ctl(["top", "burner", "gone"], check=True)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "CPU%", "MEMORY", "LIMIT", "PIDS"])
        self.assertEqual(len(lines), 3, p.stdout)
        self.assertEqual(lines[1].split()[3], "64Mi")
        self.assertEqual(lines[2].split()[1:], ["-", "-", "-", "-"])
        p = self.capsule.ctl(["top", "nope"])
        self.assertEqual(p.returncode, 1)
        self.assertIn('workload "nope" not found', p.stderr)
        for n in ("burner", "idle", "gone"):
            self.delete(n)

    def test_changed_spec_replaces(self):
        self.apply(container("rep", "echo v1; " + LOOP))
        pid1 = self.wait_phase("rep", "Running")["status"]["pid"]
        p = self.apply(container("rep", "echo v2; " + LOOP, extra="env: {VERSION: '2'}\n"))
        self.assertIn("container/rep configured", p.stdout)
        w = wait_for(lambda: (lambda w: w if w["status"]["observedGeneration"] == 2 and
                              w["status"]["phase"] == "Running" else None)(self.get("rep")),
                     timeout=30, what="generation 2 running")
        self.assertEqual(w["generation"], 2)
        self.assertNotEqual(w["status"]["pid"], pid1)
        p = self.capsule.ctl(["exec", "rep", "--", "sh", "-c", "echo $VERSION"])
        self.assertEqual(p.stdout.strip(), "2")
        logs = self.capsule.ctl(["logs", "rep"]).stdout
        self.assertIn("v1", logs)
        self.assertIn("v2", logs)
        # diff: no difference to what was applied, then a difference
        path = os.path.join(self.tmp, "rep-diff.yaml")
        with open(path, "w") as f:
            f.write(container("rep", "echo v2; " + LOOP, extra="env: {VERSION: '2'}\n"))
        self.assertEqual(self.capsule.ctl(["diff", "-f", path]).returncode, 0)
        with open(path, "w") as f:
            f.write(container("rep", "echo v3; " + LOOP))
        p = self.capsule.ctl(["diff", "-f", path])
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stdout, r"\n- env:")
        self.delete("rep")

    def test_bad_manifests_change_nothing(self):
        before = self.capsule.ctl(["-o", "json", "get"], check=True).stdout
        cases = {
            "unknown field": ("kind: Container\nname: x\nimage: a\nbogus: 1\n", "bogus"),
            "bad name": ("kind: Container\nname: Web_1\nimage: a\n", "name"),
            "bad port": ("kind: Container\nname: x\nimage: a\nports: [\"80800:80\"]\n", "ports[0]"),
            "bad yaml": ("kind: Container\nname: [x\n", "line"),
            "missing volume": ("kind: Container\nname: x\nimage: a\nmounts: [{volume: nope, path: /d}]\n",
                               "nope"),
        }
        for what, (text, needle) in cases.items():
            p = self.apply(text, check=False)
            self.assertEqual(p.returncode, 1, what)
            self.assertIn(needle, p.stderr, what)
            self.assertIn("nothing was applied", p.stderr, what)
        # refused by the capsule (it knows its ports): the API names the field
        served = {
            # the capsule's own ports: the configured API and metrics ports and the bound ones
            "api port": ("kind: Container\nname: x\nimage: a\nports: [\"8080:80\", \"50000:80\"]\n",
                         "x: ports[1].host: port 50000/tcp is used by the capsule API"),
            "metrics port": ("kind: Container\nname: x\nimage: a\nports: [\"50001:80\"]\n",
                             "x: ports[0].host: port 50001/tcp is used by the capsule's metrics endpoint"),
            "bound api port": (f"kind: Container\nname: x\nimage: a\nports: [\"{self.capsule.port}:80\"]\n",
                               f"port {self.capsule.port}/tcp is used by the capsule API"),
            "bound metrics port": (
                f"kind: Container\nname: x\nimage: a\nports: [\"{self.capsule.metrics_port}:80/tcp\"]\n",
                f"port {self.capsule.metrics_port}/tcp is used by the capsule's metrics endpoint"),
        }
        for what, (text, needle) in served.items():
            p = self.apply(text, check=False)
            self.assertEqual(p.returncode, 1, what)
            self.assertIn(needle, p.stderr, what)
            self.assertIn("choose another host port (INVALID_ARGUMENT)", p.stderr, what)
        self.assertEqual(self.capsule.ctl(["-o", "json", "get"], check=True).stdout, before)

    def test_api_validates_specs_from_any_client(self):
        pb = harness.proto_modules()
        ca, cert, key = harness.load_client_context(self.capsule.config)
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        wl = pb["workloads"]
        with grpc.secure_channel(self.capsule.endpoint, creds) as ch:
            apply = ch.unary_unary("/capsule.v1.Workloads/Apply",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=wl.ApplyResponse.FromString)
            bad = wl.WorkloadSpec(name="ok", image=IMAGE,
                                  ports=[wl.PortMapping(host_port=0, workload_port=80, protocol="tcp")])
            with self.assertRaises(grpc.RpcError) as cm:
                apply(wl.ApplyRequest(spec=bad), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("ports[0]", cm.exception.details())
            with self.assertRaises(grpc.RpcError) as cm:
                apply(wl.ApplyRequest(spec=wl.WorkloadSpec(name="../etc", image=IMAGE)), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            # dry run reports without storing
            r = apply(wl.ApplyRequest(spec=wl.WorkloadSpec(name="dry", image=IMAGE, command=["true"]),
                                      dry_run=True), timeout=10)
            self.assertEqual(r.result, wl.CREATED)
        self.assertEqual(self.capsule.ctl(["get", "dry"]).returncode, 1)

    def test_adoption_after_kill_9_and_orphans(self):
        names = [f"keep{i}" for i in range(5)]
        self.apply("---\n".join(container(n, LOOP) for n in names))
        pids = {n: self.wait_phase(n, "Running")["status"]["pid"] for n in names}
        self.capsule.stop(signal.SIGKILL)
        # while it is down, one workload disappears from the desired state: an orphan
        con = sqlite3.connect(os.path.join(self.capsule.root, "state.db"))
        con.execute("DELETE FROM workloads WHERE name = 'keep4'")
        con.commit()
        con.close()
        self.capsule.start()
        for n in names[:4]:
            w = self.wait_phase(n, "Running")
            self.assertEqual(w["status"]["pid"], pids[n], f"{n} was restarted instead of adopted")
        wait_for(lambda: "keep4" not in self.containers(), timeout=30, what="orphan keep4 removed")
        tasks = self.tasks()
        self.assertEqual(sorted(t for t in tasks if t.startswith("keep")), names[:4])
        for n in names[:4]:
            self.delete(n)
        self.assertFalse({n for n in self.containers() if n.startswith("keep")})


class ExamplesTest(WithImage):
    """The manual's examples (examples/*.yaml) applied as they are."""

    ARCHIVE = "busybox-docker.tar"

    def example(self, name):
        return os.path.join(harness.SOURCE_DIR, "examples", name)

    def status(self, name):
        return json.loads(self.capsule.ctl(["-o", "json", "get", name], check=True).stdout)["status"]

    def test_hello(self):
        p = self.capsule.ctl(["apply", "-f", self.example("hello.yaml")], check=True)
        self.assertIn("container/hello created", p.stdout)
        wait_for(lambda: "hello from hello (capsule)" in self.capsule.ctl(["logs", "hello"]).stdout,
                 timeout=30, what="hello's greeting")
        self.assertEqual(self.status("hello")["phase"], "Running")
        self.capsule.ctl(["delete", "-f", self.example("hello.yaml")], check=True)

    def test_web(self):
        p = self.capsule.ctl(["apply", "-f", self.example("web.yaml")], check=True)
        self.assertEqual(p.stdout.splitlines(), ["volume/site created", "container/web created"])
        wait_for(lambda: self.status("web")["phase"] == "Running", timeout=60, what="web to run")
        first = wait_for(lambda: (lambda o: o if o.returncode == 0 else None)(
            subprocess.run(["curl", "-sS", "-m", "5", "http://127.0.0.1:8080/"], capture_output=True, text=True)),
            timeout=20, what="web's first page on 127.0.0.1:8080")
        self.assertEqual(first.stdout, "<h1>Hello from web on Capsule</h1>\n")  # written into the empty volume
        self.capsule.ctl(["exec", "web", "--", "sh", "-c", "echo '<h1>hello from a volume</h1>' > /www/index.html"],
                         check=True)
        out = wait_for(lambda: (lambda o: o if o.returncode == 0 else None)(
            subprocess.run(["curl", "-sS", "-m", "5", "http://127.0.0.1:8080/"], capture_output=True, text=True)),
            timeout=20, what="web on 127.0.0.1:8080")
        self.assertEqual(out.stdout, "<h1>hello from a volume</h1>\n")
        # delete -f keeps the volume (data) unless --volumes
        self.capsule.ctl(["delete", "-f", self.example("web.yaml")], check=True)
        vols = json.loads(self.capsule.ctl(["-o", "json", "volume", "ls"], check=True).stdout)["volumes"]
        self.assertEqual([v["name"] for v in vols], ["site"])
        p = self.capsule.ctl(["apply", "-f", self.example("web.yaml")], check=True)
        self.assertIn("volume/site unchanged", p.stdout)
        wait_for(lambda: self.status("web")["phase"] == "Running", timeout=60, what="web to run again")
        p = self.capsule.ctl(["exec", "web", "--", "cat", "/www/index.html"], check=True)
        self.assertEqual(p.stdout, "<h1>hello from a volume</h1>\n")
        p = self.capsule.ctl(["delete", "--volumes", "-f", self.example("web.yaml")], check=True)
        self.assertIn("volume/site deleted", p.stdout)

    def test_microvm_without_guest_kernel_says_why(self):
        """This capsuled has no --vm-kernel: a MicroVM fails with the reason (test_microvms runs them)."""
        self.capsule.ctl(["apply", "-f", self.example("microvm.yaml")], check=True)
        st = wait_for(lambda: (lambda s: s if s["phase"] == "Failed" else None)(self.status("hello-vm")),
                      timeout=30, what="hello-vm to be reported")
        self.assertIn("not available on this capsule", st["message"])
        self.assertIn("--vm-kernel", st["message"])
        p = self.capsule.ctl(["delete", "--volumes", "-f", self.example("microvm.yaml")], check=True)
        self.assertIn("volume/hello-vm-data deleted", p.stdout)


if __name__ == "__main__":
    harness.main()
