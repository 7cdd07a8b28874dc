"""Shared helpers for Capsule's host-mode integration tests.

Each test module starts what it needs (capsuled serve, containerd, a registry) under a temporary
directory, drives it with the real `capsulectl` and with Python gRPC clients, and stops every
process it started by PID. Binaries come from the build directory given in $CAPSULE_BUILD_DIR
(meson sets it)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BUILD_DIR = os.environ.get("CAPSULE_BUILD_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
SOURCE_DIR = os.environ.get("CAPSULE_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
CAPSULED = os.path.join(BUILD_DIR, "src", "capsuled", "capsuled")
CAPSULECTL = os.path.join(BUILD_DIR, "src", "capsulectl", "capsulectl")


def wait_for(pred, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Capsule:
    """A `capsuled serve` in host mode with its own PKI, root and port."""

    def __init__(self, tmp, name="home", extra_args=None, containerd=None):
        self.tmp = tmp
        self.name = name
        self.cfgdir = os.path.join(tmp, "cfg")
        self.root = os.path.join(tmp, "root")
        self.port_file = os.path.join(tmp, "port")
        self.metrics_port_file = os.path.join(tmp, "metrics-port")
        self.metrics_port = None
        self.log_path = os.path.join(tmp, "capsuled.log")
        self.extra_args = extra_args or []
        self.containerd = containerd
        self.env = None  # capsuled's environment (None: ours)
        self.pass_fds = ()  # descriptors capsuled inherits (a liveness pipe, as PID 1 gives)
        self.proc = None
        self.port = None
        if not os.path.exists(os.path.join(self.cfgdir, "capsuleconfig")):
            ctl(["gen", "config", name, "--endpoint", "127.0.0.1:50000", "-o", self.cfgdir], check=True)

    @property
    def config(self):
        return os.path.join(self.cfgdir, "capsuleconfig")

    @property
    def secrets(self):
        return os.path.join(self.cfgdir, "secrets")

    def start(self):
        for f in (self.port_file, self.metrics_port_file):
            if os.path.exists(f):
                os.unlink(f)
        # the metrics endpoint on a free port too: tests run beside each other
        args = [CAPSULED, "serve", "--root", self.root,
                "--machine-config", os.path.join(self.cfgdir, "machine.yaml"),
                "--listen", "127.0.0.1:0", "--port-file", self.port_file,
                "--metrics-listen", "127.0.0.1:0",
                "--metrics-port-file", self.metrics_port_file] + self.extra_args
        if self.containerd:
            args += ["--containerd", self.containerd]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     pass_fds=self.pass_fds)
        try:
            wait_for(lambda: os.path.exists(self.port_file) or self.proc.poll() is not None,
                     what="capsuled to listen")
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise AssertionError(f"capsuled exited {self.proc.returncode}:\n{self.logs()}")
        with open(self.port_file) as f:
            self.port = int(f.read().strip())
        self.endpoint = f"127.0.0.1:{self.port}"
        if os.path.exists(self.metrics_port_file):
            with open(self.metrics_port_file) as f:
                self.metrics_port = int(f.read().strip())
        return self

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stops our capsuled by PID; returns its exit code."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def ctl(self, args, config=None, check=False, input=None, timeout=60):
        env = dict(os.environ)
        env["CAPSULECONFIG"] = config or self.config
        env["CAPSULE_HOST"] = self.endpoint
        return ctl(args, env=env, check=check, input=input, timeout=timeout)


def ctl(args, env=None, check=False, input=None, timeout=60):
    p = subprocess.run([CAPSULECTL] + args, env=env, capture_output=True, text=True, input=input,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"capsulectl {' '.join(args)} exited {p.returncode}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def load_client_context(config_path):
    """Returns (endpoint, ca, cert, key) PEM bytes of the current context, parsed minimally from
    the capsuleconfig YAML through `capsulectl config contexts -o json` plus the PEM blocks."""
    import re
    with open(config_path) as f:
        text = f.read()
    pems = re.findall(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", text, re.S)
    # normalise the YAML block indentation away
    pems = ["\n".join(l.strip() for l in p.splitlines()) + "\n" for p in pems]
    certs = [p for p in pems if "CERTIFICATE" in p]
    keys = [p for p in pems if "PRIVATE KEY" in p]
    return certs[0].encode(), certs[1].encode(), keys[0].encode()


_PB_CACHE = {}


def proto_modules():
    """Generates Python protobuf modules from proto/ with protoc at test time; returns a dict
    of module name -> module (e.g. 'system' -> capsule.v1.system_pb2)."""
    if _PB_CACHE:
        return _PB_CACHE
    out = tempfile.mkdtemp(prefix="capsule-pb-")
    proto_dir = os.path.join(SOURCE_DIR, "proto")
    files = []
    for d, _, names in os.walk(proto_dir):
        files += [os.path.relpath(os.path.join(d, n), proto_dir) for n in names if n.endswith(".proto")]
    subprocess.run(["protoc", f"--proto_path={proto_dir}", f"--python_out={out}"] + files, check=True)
    sys.path.insert(0, out)
    import importlib
    for f in files:
        mod = f[:-len(".proto")].replace("/", ".") + "_pb2"
        _PB_CACHE[mod.split(".")[-1][:-4]] = importlib.import_module(mod)
    return _PB_CACHE


def unmount_under(path):
    """Unmounts (lazily, deepest first) every mount below path: volumes, netns bind mounts."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        mnts = [l.split()[4] for l in f]
    for m in sorted({m for m in mnts if m == path or m.startswith(path + "/")}, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Containerd:
    """A real containerd (Debian's) with its own root, state and socket under `tmp`; runc is the
    runtime. Stopped by PID. Use `ctr([...])` to inspect namespace "capsule" independently."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "containerd")
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.config = os.path.join(self.dir, "config.toml")
        self.log_path = os.path.join(self.dir, "containerd.log")
        with open(self.config, "w") as f:
            f.write(f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = "{self.sock}.debug"
""")
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["containerd", "--config", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: self.ctr(["version"]).returncode == 0 or self.proc.poll() is not None,
                 timeout=30, what="containerd to answer")
        if self.proc.poll() is not None:
            raise AssertionError(f"containerd exited {self.proc.returncode}: {self.logs()}")
        return self

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def ctr(self, args, check=False):
        p = subprocess.run(["ctr", "--address", self.sock, "-n", "capsule"] + args,
                           capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {p.stderr}")
        return p

    def stop(self):
        """Kills every task in namespace capsule (their shims are ours), then containerd by PID."""
        if not self.proc:
            return
        for line in self.ctr(["tasks", "ls", "-q"]).stdout.split():
            self.ctr(["tasks", "kill", "-s", "SIGKILL", line])
        for line in self.ctr(["tasks", "ls", "-q"]).stdout.split():
            self.ctr(["tasks", "delete", "-f", line])
        for line in self.ctr(["containers", "ls", "-q"]).stdout.split():
            self.ctr(["containers", "delete", line])
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.proc = None
        # unmount anything containerd left under its root (overlay snapshots of killed tasks)
        unmount_under(self.dir)


class CapsuleTestCase(unittest.TestCase):
    """Starts one capsuled per test class (setUpClass) in a temp dir removed afterwards."""

    capsule_args = []

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsule-it-")
        cls.capsule = Capsule(cls.tmp, extra_args=cls.capsule_args).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.capsule.stop()
        logs = cls.capsule.logs()
        unmount_under(cls.tmp)
        shutil.rmtree(cls.tmp, ignore_errors=True)
        # a clean SIGTERM exits 0; under ASan a leak or error makes it non-zero
        if rc not in (0, None):
            raise AssertionError(f"capsuled exited {rc} on SIGTERM:\n{logs[-6000:]}")


def main():
    """Runs the calling module's tests; exit status 1 on any failure, 77 if all were skipped."""
    prog = unittest.main(module="__main__", exit=False, verbosity=2)
    r = prog.result
    if not r.wasSuccessful():
        sys.exit(1)
    if r.testsRun and len(r.skipped) == r.testsRun:
        sys.exit(77)
    sys.exit(0)
