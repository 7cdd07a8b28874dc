#!/usr/bin/env python3
"""Image pulls never hold up other workloads, in host mode against a real containerd + runc and
`capsuled serve`, with a registry written here (a small Python HTTP server speaking the part of
the distribution API a pull uses) that can stall a layer download.

- A workload whose image's layer download stalls stays Pulling, its status saying "pulling IMAGE
  (x of y MiB)"; meanwhile a workload whose image is present restarts, a new one starts, and one
  whose image comes from a healthy repository is pulled and runs, all while the stall goes on.
- Two workloads of the stalled image share one download (one layer request).
- The stalled download ends after the low-speed deadline (CAPSULE_PULL_STALL_SECONDS, short
  here); the workloads back off with a message naming the registry and the blob; containerd keeps
  no partial content (no committed blob, no ingest); once the registry is fixed they run.
- `delete` waits until the container is gone (the stopper's work), or says "still stopping"."""

import http.server
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import mkimage_busybox as mk  # noqa: E402
from harness import wait_for  # noqa: E402

STALL_S = 12        # CAPSULE_PULL_STALL_SECONDS for this capsuled
PRESENT = "capsule.local/busybox:latest"
POLITE = 'trap "exit 0" TERM; while :; do sleep 1; done'


def container(name, image, script=POLITE):
    return (f"kind: Container\nname: {name}\nimage: {image}\n"
            f"command: [sh, -c, {json.dumps(script)}]\nrestart: always\n")


class FakeRegistry:
    """Serves repositories of mk.Image's: GET /v2/REPO/manifests/TAG and /v2/REPO/blobs/DIGEST.
    The layer of a repository in `stall` is answered with its headers and its first 64 KiB, then
    nothing until released (the first request only; later ones get 503 until `fixed`)."""

    def __init__(self):
        self.repos = {}            # repo -> mk.Image
        self.stall = set()
        self.fixed = False
        self.layer_gets = {}       # repo -> count
        self.stalled_now = 0       # requests being held
        self.release = threading.Event()
        self.lock = threading.Lock()
        reg = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, code, body=b"", ctype="application/octet-stream"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                parts = self.path.split("/")
                # /v2/REPO/manifests/TAG or /v2/REPO/blobs/DIGEST (REPO without slashes here)
                if len(parts) != 5 or parts[1] != "v2" or parts[2] not in reg.repos:
                    return self.send(404, b'{"errors":[{"message":"not here"}]}', "application/json")
                repo, kind, what = parts[2], parts[3], parts[4]
                img = reg.repos[repo]
                if kind == "manifests":
                    return self.send(200, img.manifest, mk.MT_MANIFEST)
                if kind != "blobs":
                    return self.send(404)
                if what == mk.sha256(img.config):
                    return self.send(200, img.config)
                if what != mk.sha256(img.layer_gz):
                    return self.send(404)
                with reg.lock:
                    reg.layer_gets[repo] = reg.layer_gets.get(repo, 0) + 1
                    first = reg.layer_gets[repo] == 1
                if repo in reg.stall and not reg.fixed:
                    if not first:
                        return self.send(503, b'{"errors":[{"message":"try later"}]}', "application/json")
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(img.layer_gz)))
                    self.end_headers()
                    self.wfile.write(img.layer_gz[:65536])
                    self.wfile.flush()
                    with reg.lock:
                        reg.stalled_now += 1
                    try:
                        reg.release.wait(300)
                    finally:
                        with reg.lock:
                            reg.stalled_now -= 1
                    self.close_connection = True
                    return
                self.send(200, img.layer_gz)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class ImagePullsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsule-pulls-")
        cls.registry = FakeRegistry()
        cls.containerd = harness.Containerd(cls.tmp).start()
        cls.capsule = harness.Capsule(cls.tmp, containerd=cls.containerd.sock)
        cls.capsule.env = dict(os.environ, CAPSULE_PULL_STALL_SECONDS=str(STALL_S))
        with open(os.path.join(cls.capsule.cfgdir, "machine.yaml"), "a") as f:
            f.write(f'registries:\n  insecure: ["{cls.registry.host}"]\n')
        cls.capsule.start()
        mk.build(cls.tmp)
        cls.capsule.ctl(["image", "push", os.path.join(cls.tmp, "busybox-oci.tar")], check=True)

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.capsule.stop()
            logs = cls.capsule.logs()
        finally:
            cls.registry.stop()
            cls.containerd.stop()
            harness.unmount_under(cls.tmp)
            shutil.rmtree(cls.tmp, ignore_errors=True)
        if os.environ.get("CAPSULE_TEST_VERBOSE"):
            print(logs, file=sys.stderr)
        if rc not in (0, None):
            raise AssertionError(f"capsuled exited {rc} on SIGTERM:\n{logs[-6000:]}")

    # -- helpers ---------------------------------------------------------------------------------

    def apply(self, *docs):
        path = os.path.join(self.tmp, f"m{time.monotonic_ns()}.yaml")
        with open(path, "w") as f:
            f.write("---\n".join(docs))
        self.capsule.ctl(["apply", "-f", path], check=True)

    def status(self, name):
        p = self.capsule.ctl(["-o", "json", "get", name], check=True)
        return json.loads(p.stdout)["status"]

    def wait_phase(self, name, phase, timeout=30):
        return wait_for(lambda: (lambda s: s if s.get("phase") == phase else None)(self.status(name)),
                        timeout=timeout, interval=0.2, what=f"{name} {phase}")

    def content(self):
        return self.containerd.ctr(["content", "ls", "-q"], check=True).stdout.split()

    def ingests(self):
        return self.containerd.ctr(["content", "active"], check=True).stdout

    # -- tests -------------------------------------------------------------------------------------

    def test_1_slow_registry_holds_up_only_its_own_workloads(self):
        reg = self.registry
        slow = mk.Image(extra=b"from a slow registry\n")
        fast = mk.Image(extra=b"from a healthy repository\n")
        reg.repos["slow"] = slow
        reg.repos["fast"] = fast
        reg.stall.add("slow")
        slow_ref = f"{reg.host}/slow:1"
        layer = mk.sha256(slow.layer_gz)

        try:
            self.slow_registry_case(reg, slow, slow_ref, layer)
        finally:
            reg.fixed = True
            reg.release.set()  # a stall left by a failure ends
            self.capsule.ctl(["delete", "a", "a2", "b", "c", "f"], timeout=120)

    def slow_registry_case(self, reg, slow, slow_ref, layer):
        self.apply(container("b", PRESENT))
        self.wait_phase("b", "Running")
        b_restarts = self.status("b").get("restarts", 0)

        t_stall = time.monotonic()
        self.apply(container("a", slow_ref), container("a2", slow_ref))
        wait_for(lambda: reg.stalled_now == 1, timeout=30, what="the layer download to stall")
        st = self.wait_phase("a", "Pulling")
        # progress while it pulls: the first 64 KiB of the layer arrived
        st = wait_for(lambda: (lambda s: s if "MiB)" in s.get("message", "") else None)(self.status("a")),
                      timeout=10, what="a's pull progress")
        self.assertRegex(st["message"], rf"^pulling {slow_ref} \(0\.\d of \d+\.\d MiB\)$")
        self.assertEqual(self.status("a2")["phase"], "Pulling")
        d = self.capsule.ctl(["describe", "a"], check=True).stdout
        self.assertIn(f"pulling {slow_ref} (", d)

        # meanwhile: b restarts, c starts (image present), f is pulled from a healthy repo and runs
        self.capsule.ctl(["restart", "b"], check=True)
        self.apply(container("c", PRESENT), container("f", f"{reg.host}/fast:1"))
        wait_for(lambda: (lambda s: s["phase"] == "Running" and s.get("restarts", 0) > b_restarts)(self.status("b")),
                 timeout=STALL_S, interval=0.2, what="b to restart while a's pull stalls")
        self.wait_phase("c", "Running", timeout=STALL_S)
        self.wait_phase("f", "Running", timeout=STALL_S)
        took = time.monotonic() - t_stall
        print(f"\n  b restarted, c and f running {took:.1f} s into a {STALL_S} s stall", file=sys.stderr)
        # ... all of it while a's download is still stalled
        self.assertEqual(reg.stalled_now, 1)
        self.assertEqual(self.status("a")["phase"], "Pulling")
        self.assertEqual(self.status("a2")["phase"], "Pulling")
        # a and a2 share one download
        self.assertEqual(reg.layer_gets["slow"], 1)

        # the stall ends the download after the low-speed deadline: a backs off, naming the blob
        for name in ("a", "a2"):
            st = wait_for(lambda: (lambda s: s if s["phase"] == "Backoff" and s.get("message") else None)(self.status(name)),
                          timeout=STALL_S + 30, interval=0.1, what=f"{name} to back off")
            if name == "a":
                failed_after = time.monotonic() - t_stall
                self.assertGreaterEqual(failed_after, STALL_S - 1)
                # (its retries, a second later, meet a 503: the first failure is the stall)
                self.assertIn(f"blob {layer} from registry {reg.host}", st["message"])
                self.assertIn(f"stalled: less than 1024 bytes/s for {STALL_S}s", st["message"])
                self.assertIn("retrying in", st["message"])
        # the events: one of them started the pull, the other joined it; both failed with it
        d = self.capsule.ctl(["describe", "a"], check=True).stdout
        d2 = self.capsule.ctl(["describe", "a2"], check=True).stdout
        for text in (d, d2):
            self.assertRegex(text, rf"failed\s+image {slow_ref}: pull {slow_ref}: blob {layer} ")
        self.assertTrue(re.search(rf"pulling\s+image {re.escape(slow_ref)}\n", d + d2), d + d2)
        self.assertIn(f"image {slow_ref} (joining the pull under way)", d + d2)
        # nothing partial is left: no such blob, no ingest
        self.assertNotIn(layer, self.content())
        self.assertNotIn(layer.split(":")[1], self.ingests())
        self.assertNotIn(slow_ref, self.containerd.ctr(["images", "ls", "-q"], check=True).stdout.split())

        # the registry mends: they recover (retried with backoff)
        reg.fixed = True
        self.wait_phase("a", "Running", timeout=60)
        self.wait_phase("a2", "Running", timeout=60)
        self.assertIn(layer, self.content())

    def test_2_delete_waits_for_the_container(self):
        """delete returns once the container is gone (it waited for the grace period), never while
        containerd still has it."""
        self.apply(container("stubborn", PRESENT, 'trap "" TERM; while :; do sleep 1; done'))
        self.wait_phase("stubborn", "Running")
        self.assertIn("stubborn", self.containerd.ctr(["containers", "ls", "-q"], check=True).stdout.split())
        t0 = time.monotonic()
        p = self.capsule.ctl(["delete", "stubborn", "--grace", "3s"], check=True, timeout=120)
        took = time.monotonic() - t0
        self.assertEqual(p.stdout.strip(), "workload/stubborn deleted")
        self.assertGreaterEqual(took, 3.0)
        self.assertNotIn("stubborn", self.containerd.ctr(["containers", "ls", "-q"], check=True).stdout.split())
        self.assertEqual(self.containerd.ctr(["tasks", "ls", "-q"], check=True).stdout.split().count("stubborn"), 0)


if __name__ == "__main__":
    harness.main()
