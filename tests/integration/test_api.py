#!/usr/bin/env python3
"""Host-mode API spine: capsuled serve over mTLS, capsulectl version/health, Python grpcio
interop, certificate checks (no cert, other CA, expired) and roles (reader, operator, admin)."""

import json
import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import unittest

import grpc

import harness
from harness import Capsule, CapsuleTestCase, ctl


def channel(capsule, ca, cert=None, key=None):
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(capsule.endpoint, creds)


def call(chan, path, req, resp_cls, timeout=10):
    fn = chan.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=resp_cls.FromString)
    return fn(req, timeout=timeout)


class ApiTest(CapsuleTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pb = harness.proto_modules()
        cls.ca, cls.cert, cls.key = harness.load_client_context(cls.capsule.config)

    def version(self, cert=None, key=None, ca=None):
        sysm = self.pb["system"]
        with channel(self.capsule, ca or self.ca, cert, key) as ch:
            return call(ch, "/capsule.v1.System/Version", sysm.VersionRequest(), sysm.VersionResponse)

    def test_cli_version(self):
        p = self.capsule.ctl(["version"], check=True)
        self.assertRegex(p.stdout, r"Client: capsulectl \d+\.\d+\.\d+")
        self.assertRegex(p.stdout, r"Server: capsuled \d+\.\d+\.\d+ .* on home, host mode")

    def test_cli_version_json_and_yaml(self):
        p = self.capsule.ctl(["-o", "json", "version"], check=True)
        doc = json.loads(p.stdout)
        self.assertEqual(doc["server"]["version"], doc["client"]["version"])
        self.assertEqual(doc["server"]["mode"], "host")
        p = self.capsule.ctl(["-o", "yaml", "version"], check=True)
        self.assertIn("server:\n", p.stdout)
        self.assertRegex(p.stdout, r"\n  mode: host\n")

    def test_cli_health(self):
        p = self.capsule.ctl(["health"], check=True)
        self.assertRegex(p.stdout, r"store\s+ok")
        self.assertIn("healthy", p.stdout)

    def test_idle_connections_do_not_lock_out_admin(self):
        """2,000 idle TCP connections from someone without a certificate (never starting TLS) do
        not use up serve's fds: serve started with the kernel's default soft limit (1024, as PID 1
        gives it on a Capsule) raises it, an admin call still answers, and serve closes the idle
        connections once the handshake timeout (10 s) passes."""
        import resource
        import socket
        import time
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        tmp = tempfile.mkdtemp(prefix="capsule-it-fds-")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by serve
        try:
            cap = Capsule(tmp).start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
        socks = []
        try:
            with open(f"/proc/{cap.proc.pid}/limits") as f:
                lim = next(l for l in f if l.startswith("Max open files")).split()
            self.assertGreaterEqual(int(lim[3]), min(hard, 65536), f"serve's RLIMIT_NOFILE: {lim}")
            for _ in range(2000):
                socks.append(socket.create_connection(("127.0.0.1", cap.port), timeout=5))
            p = cap.ctl(["version"])
            self.assertEqual(p.returncode, 0, f"an admin call under 2,000 idle connections: {p.stderr}")
            time.sleep(13)
            closed = 0
            for sk in socks:
                sk.settimeout(0.01)
                try:
                    closed += sk.recv(1) == b""
                except ConnectionResetError:
                    closed += 1
                except (socket.timeout, BlockingIOError):
                    pass
            self.assertGreater(closed, 1900, "serve closes connections that never handshake")
        finally:
            for sk in socks:
                sk.close()
            cap.stop()
            shutil.rmtree(tmp, ignore_errors=True)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def test_cli_health_boot(self):
        """The boot timeline: in host mode serve's own phases, in order, each after the last."""
        p = self.capsule.ctl(["health", "--boot"], check=True)
        names = [l.split("  ")[0] for l in p.stdout.splitlines()[1:-1]]
        self.assertEqual(names, ["serve: exec, load libraries", "serve: config, store, containerd",
                                 "serve: microVMs, volumes", "serve: networking, reconciler",
                                 "serve: API answering"], p.stdout)
        self.assertRegex(p.stdout, r"API answering \d+ ms after the kernel started")
        boot = json.loads(self.capsule.ctl(["-o", "json", "health"], check=True).stdout)["boot"]
        self.assertEqual(len(boot), 5)
        for a, b in zip(boot, boot[1:]):
            self.assertLessEqual(a["startMs"], a["endMs"])
            self.assertLessEqual(a["endMs"], b["startMs"], boot)
        bad = self.capsule.ctl(["health", "--boat"])
        self.assertEqual(bad.returncode, 2)
        self.assertIn('unknown option "--boat"', bad.stderr)

    def test_python_grpcio_admin(self):
        v = self.version(self.cert, self.key)
        self.assertEqual(v.mode, "host")
        self.assertEqual(v.hostname, "home")
        self.assertTrue(v.version)

    def test_python_health(self):
        sysm = self.pb["system"]
        with channel(self.capsule, self.ca, self.cert, self.key) as ch:
            h = call(ch, "/capsule.v1.System/Health", sysm.HealthRequest(), sysm.HealthResponse)
        self.assertTrue(h.ok)
        self.assertIn("store", [c.name for c in h.checks])

    def test_no_client_cert_refused(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.version()
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_other_ca_refused(self):
        other = tempfile.mkdtemp(prefix="capsule-other-")
        try:
            ctl(["gen", "config", "other", "-o", other], check=True)
            _, ocert, okey = harness.load_client_context(os.path.join(other, "capsuleconfig"))
            with self.assertRaises(grpc.RpcError) as cm:
                self.version(ocert, okey)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
            # capsulectl with the other capsule's config: refused with a hint
            p = self.capsule.ctl(["version"], config=os.path.join(other, "capsuleconfig"))
            self.assertEqual(p.returncode, 1)
            self.assertIn("Server:", p.stdout + "Server:")  # client line still printed
            self.assertNotIn("Server: capsuled", p.stdout)
            self.assertIn("hint:", p.stderr)
        finally:
            shutil.rmtree(other, ignore_errors=True)

    def test_expired_cert_refused(self):
        out = os.path.join(self.tmp, "expired-config")
        ctl(["gen", "cert", "--role", "admin", "--name", "old", "--secrets", self.capsule.secrets,
             "--expired", "--endpoint", self.capsule.endpoint, "-o", out], check=True)
        _, ecert, ekey = harness.load_client_context(out)
        with self.assertRaises(grpc.RpcError) as cm:
            self.version(ecert, ekey)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        p = self.capsule.ctl(["version"], config=out)
        self.assertEqual(p.returncode, 1)
        self.assertIn("expired", p.stderr)

    def test_reader_role(self):
        out = os.path.join(self.tmp, "reader-config")
        ctl(["gen", "cert", "--role", "reader", "--name", "alice", "--secrets", self.capsule.secrets,
             "--endpoint", self.capsule.endpoint, "-o", out], check=True)
        # reader may read
        p = self.capsule.ctl(["version"], config=out, check=True)
        self.assertIn("Server: capsuled", p.stdout)
        self.assertEqual(self.capsule.ctl(["health"], config=out).returncode, 0)
        _, rcert, rkey = harness.load_client_context(out)
        self.assertEqual(self.version(rcert, rkey).mode, "host")
        # but every mutating RPC is refused with PERMISSION_DENIED
        sysm, wl, vol = self.pb["system"], self.pb["workloads"], self.pb["volumes"]
        mutating = [
            ("/capsule.v1.System/Reboot", sysm.RebootRequest(), sysm.RebootResponse),
            ("/capsule.v1.System/ApplyMachineConfig", sysm.ApplyMachineConfigRequest(config=b"x"),
             sysm.ApplyMachineConfigResponse),
            ("/capsule.v1.Workloads/Apply", wl.ApplyRequest(), wl.ApplyResponse),
            ("/capsule.v1.Workloads/Delete", wl.DeleteRequest(name="web"), wl.DeleteResponse),
            ("/capsule.v1.Volumes/Create", vol.VolumeCreateRequest(name="v"), vol.VolumeCreateResponse),
        ]
        with channel(self.capsule, self.ca, rcert, rkey) as ch:
            for path, req, resp in mutating:
                with self.assertRaises(grpc.RpcError, msg=path) as cm:
                    call(ch, path, req, resp)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED, path)
                self.assertIn("capsule:reader", cm.exception.details())
                self.assertIn(path, cm.exception.details())
            # dmesg (a stream) is not a reader's either
            dmesg = ch.unary_stream("/capsule.v1.System/Dmesg",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=sysm.DmesgLine.FromString)
            with self.assertRaises(grpc.RpcError) as cm:
                list(dmesg(sysm.DmesgRequest(), timeout=10))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
            self.assertIn("/capsule.v1.System/Dmesg: role capsule:reader", cm.exception.details())

    def test_operator_role(self):
        out = os.path.join(self.tmp, "operator-config")
        p = ctl(["gen", "cert", "--role", "operator", "--name", "olga", "--secrets",
                 self.capsule.secrets, "--endpoint", self.capsule.endpoint, "-o", out], check=True)
        self.assertIn("role capsule:operator", p.stdout)
        _, ocert, okey = harness.load_client_context(out)
        sysm, wl = self.pb["system"], self.pb["workloads"]
        with channel(self.capsule, self.ca, ocert, okey) as ch:
            # past authorization: the handler itself refuses an empty spec
            with self.assertRaises(grpc.RpcError) as cm:
                call(ch, "/capsule.v1.Workloads/Apply", wl.ApplyRequest(), wl.ApplyResponse)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            for path, req, resp in [
                    ("/capsule.v1.System/Reboot", sysm.RebootRequest(), sysm.RebootResponse),
                    ("/capsule.v1.System/ApplyMachineConfig",
                     sysm.ApplyMachineConfigRequest(config=b"x"), sysm.ApplyMachineConfigResponse)]:
                with self.assertRaises(grpc.RpcError, msg=path) as cm:
                    call(ch, path, req, resp)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED, path)
                self.assertEqual(cm.exception.details(),
                                 f'{path}: role capsule:operator (certificate "olga") may not call '
                                 "this method; it needs capsule:admin")
        p = ctl(["gen", "cert", "--role", "root", "--name", "x", "--secrets", self.capsule.secrets,
                 "-o", os.path.join(self.tmp, "root-config")])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--role root: expected reader, operator or admin", p.stderr)

    def test_admin_reboot_in_host_mode_is_precondition(self):
        sysm = self.pb["system"]
        with channel(self.capsule, self.ca, self.cert, self.key) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                call(ch, "/capsule.v1.System/Reboot", sysm.RebootRequest(), sysm.RebootResponse)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("host mode", cm.exception.details())

    def test_unknown_method_unimplemented(self):
        sysm = self.pb["system"]
        with channel(self.capsule, self.ca, self.cert, self.key) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                call(ch, "/capsule.v1.System/NoSuchMethod", sysm.VersionRequest(), sysm.VersionResponse)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_unreachable_endpoint_hint(self):
        p = self.capsule.ctl(["--capsule", f"127.0.0.1:{harness.free_port()}", "--timeout", "3", "version"])
        self.assertEqual(p.returncode, 1)
        self.assertIn("hint:", p.stderr)

    def test_log_lines_are_greppable(self):
        lines = [l for l in self.capsule.logs().splitlines() if l.strip()]
        self.assertTrue(lines)
        for l in lines:
            self.assertRegex(l, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO |WARN |ERROR) \w+: ")
        self.assertTrue(any("serving addr=127.0.0.1:0 port=" in l for l in lines))


class LifecycleTest(CapsuleTestCase):

    def test_store_created_and_sigterm_clean(self):
        db = os.path.join(self.capsule.root, "state.db")
        self.assertTrue(os.path.exists(db))
        rc = self.capsule.stop(signal.SIGTERM)
        self.assertEqual(rc, 0)
        self.assertIn("stopped", self.capsule.logs())
        con = sqlite3.connect(db)
        try:
            self.assertEqual(con.execute("PRAGMA journal_mode").fetchone()[0], "wal")
            self.assertEqual(con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0], "1")
        finally:
            con.close()
        # starts again on the existing store
        self.capsule.start()
        self.assertEqual(self.capsule.ctl(["health"]).returncode, 0)

    def test_bad_machine_config_refused(self):
        bad = os.path.join(self.tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write("version: 1\nhostname: x\nbogus: 1\n")
        import subprocess
        p = subprocess.run([harness.CAPSULED, "serve", "--root", os.path.join(self.tmp, "r2"),
                            "--machine-config", bad, "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=20)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("bogus", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "r2", "state.db")))




class LivenessTest(unittest.TestCase):
    """serve's sign of life to PID 1 (serve/liveness.c): a byte every 2 s on $CAPSULE_LIVENESS_FD
    while the store and the API answer; none once the store is stuck (CAPSULE_FAULT=stall:store
    holds its lock for good 8 s after start, as a deadlocked call would)."""

    def capsule_with_pipe(self, name, fault=None):
        tmp = tempfile.mkdtemp(prefix=f"capsule-{name}-")
        self.addCleanup(shutil.rmtree, tmp, True)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        c = Capsule(tmp, name=name)
        c.env = dict(os.environ, CAPSULE_LIVENESS_FD=str(w))
        if fault:
            c.env["CAPSULE_FAULT"] = fault
        c.pass_fds = (w,)
        c.start()
        os.close(w)
        c.live_fd = w  # its number in capsuled
        self.addCleanup(c.stop, signal.SIGKILL)
        return c, r

    @staticmethod
    def bytes_within(fd, seconds):
        got, end = b"", time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
            if ready:
                chunk = os.read(fd, 64)
                if not chunk:
                    break
                got += chunk
        return got

    def test_signs_of_life_while_healthy(self):
        c, r = self.capsule_with_pipe("live")
        got = self.bytes_within(r, 5)
        self.assertGreaterEqual(len(got), 2, f"a sign of life every 2 s ({got!r})")
        c.ctl(["get"], check=True)
        self.assertIn("liveness: a sign of life to PID 1 every 2000 ms", c.logs())
        # serve's children (QEMU, shims, helpers) never inherit the pipe, and a full pipe never
        # blocks serve: close-on-exec and non-blocking, as liveness_start sets them
        with open(f"/proc/{c.proc.pid}/fdinfo/{c.live_fd}") as f:
            flags = int(re.search(r"flags:\s+([0-7]+)", f.read()).group(1), 8)
        self.assertTrue(flags & 0o2000000 and flags & 0o4000, f"O_CLOEXEC|O_NONBLOCK ({flags:o})")
        self.assertEqual(c.stop(), 0, "a clean stop with the liveness thread running")

    def test_no_sign_of_life_when_the_store_is_stuck(self):
        c, r = self.capsule_with_pipe("stuck", fault="stall:store")
        harness.wait_for(lambda: "holding the store's lock for good" in c.logs(), timeout=30,
                         what="the stall to begin")
        self.bytes_within(r, 6)  # what was written before the stall was noticed
        harness.wait_for(lambda: "liveness: the store did not answer within 5000 ms" in c.logs(),
                         timeout=30, what="liveness to notice the stuck store")
        self.assertEqual(self.bytes_within(r, 7), b"", "no sign of life while the store is stuck")
        p = c.ctl(["--timeout", "3", "get"])
        self.assertNotEqual(p.returncode, 0, "the API is really stuck (get times out)")


class CheckConfigTest(unittest.TestCase):
    """`capsuled check-config FILE`: the whole machine config validation (with the OpenSSL checks
    PID 1 leaves out), which PID 1 runs on an ESP machine-override.yaml before installing it."""

    def test_check_config(self):
        tmp = tempfile.mkdtemp(prefix="capsule-checkcfg-")
        self.addCleanup(shutil.rmtree, tmp, True)
        ctl(["gen", "config", "chk", "--endpoint", "127.0.0.1:50000", "-o", tmp], check=True)
        good = os.path.join(tmp, "machine.yaml")
        p = subprocess.run([harness.CAPSULED, "check-config", good], capture_output=True, text=True)
        self.assertEqual((p.returncode, p.stdout), (0, ""), p.stderr)
        with open(good) as f:
            cfg = f.read()
        bad = os.path.join(tmp, "bad.yaml")
        rsa = ("MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAMgD0MBDkcBdmjwsB5l6fYCLtMSUnT3TWDHPaIHaRjQW\n"
               "    BQ8gB4tHyDcl8yiVeafvYHRS8DRnv0utE3qC8ZbwKzsCAwEAAQ==\n")
        # an RSA key where an Ed25519 one must be: only the OpenSSL checks see it
        bad_cfg = re.sub(r"(updates:\n  trustedKeys:\n  - \|\n    -----BEGIN PUBLIC KEY-----\n)    [^\n]+\n",
                         lambda mm: mm.group(1) + "    " + rsa, cfg)
        self.assertNotEqual(bad_cfg, cfg)
        with open(bad, "w") as f:
            f.write(bad_cfg)
        p = subprocess.run([harness.CAPSULED, "check-config", bad], capture_output=True, text=True)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("updates.trustedKeys[0]: not an Ed25519 key", p.stdout)


def make_server_cert(secrets, days, out_dir):
    """A server certificate for 127.0.0.1 from the CA in secrets, valid for `days` days, made with
    the openssl command (not capsulectl: `gen config` always mints a 5-year one). Returns the
    certificate and key PEM."""
    key, csr, crt, ext = (os.path.join(out_dir, n) for n in ("s.key", "s.csr", "s.crt", "s.ext"))
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    run("req", "-new", "-key", key, "-subj", "/CN=home", "-out", csr)
    run("x509", "-req", "-in", csr, "-CA", os.path.join(secrets, "ca.crt"),
        "-CAkey", os.path.join(secrets, "ca.key"), "-CAcreateserial", "-days", str(days),
        "-extfile", ext, "-out", crt)
    with open(crt) as f, open(key) as g:
        return f.read(), g.read()


class CertLifecycleTest(CapsuleTestCase):
    """Revocation (gen cert --revoke + machine-config apply: refused at once, other certificates
    unaffected), strict checks of pki.revoked, expiry warnings and gen cert --renew."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pb = harness.proto_modules()
        cls.machine = os.path.join(cls.capsule.cfgdir, "machine.yaml")

    def mint(self, name, *extra, role="admin"):
        out = os.path.join(self.tmp, f"config-{name}")
        p = ctl(["gen", "cert", "--role", role, "--name", name, "--secrets", self.capsule.secrets,
                 "--endpoint", self.capsule.endpoint, "-o", out, "--force", *extra], check=True)
        serial = re.search(r"(?m)^serial ([0-9A-F]+)", p.stdout).group(1)
        return out, serial

    def version_grpc(self, config):
        ca, cert, key = harness.load_client_context(config)
        sysm = self.pb["system"]
        with channel(self.capsule, ca, cert, key) as ch:
            return call(ch, "/capsule.v1.System/Version", sysm.VersionRequest(), sysm.VersionResponse)

    def apply(self, path=None):
        return self.capsule.ctl(["-o", "json", "machine-config", "apply", "-f", path or self.machine])

    def test_revoke_refused_at_once_others_work(self):
        mallory, serial = self.mint("mallory")
        bob, _ = self.mint("bob")
        # the serial gen cert printed is the certificate's, and config contexts shows it too
        p = ctl(["--config", mallory, "-o", "json", "config", "contexts"], check=True)
        self.assertEqual(json.loads(p.stdout)["contexts"][0]["certSerial"], serial)
        self.assertEqual(self.capsule.ctl(["version"], config=mallory).returncode, 0)
        # revoked by the serial in lower case with a leading zero: the same serial
        p = ctl(["gen", "cert", "--revoke", "0" + serial.lower(), "--secrets", self.capsule.secrets],
                check=True)
        self.assertIn(f"revoked serial {serial}", p.stdout)
        self.assertIn("machine-config apply", p.stdout)
        # recorded, but not applied yet: still works
        self.assertEqual(self.capsule.ctl(["version"], config=mallory).returncode, 0)
        p = self.apply()
        self.assertEqual(p.returncode, 0, p.stderr)
        doc = json.loads(p.stdout)
        self.assertIn("pki.revoked", doc["changed"])
        self.assertIn("pki.revoked", doc["applied"])
        self.assertFalse(doc["rebootRequired"])
        # refused from the next call on, over capsulectl and plain grpcio, naming the serial
        p = self.capsule.ctl(["version"], config=mallory)
        self.assertEqual(p.returncode, 1)
        self.assertIn(f"serial {serial}) is revoked", p.stderr)
        self.assertIn("UNAUTHENTICATED", p.stderr)
        with self.assertRaises(grpc.RpcError) as cm:
            self.version_grpc(mallory)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn(serial, cm.exception.details())
        # another admin certificate, and the operator's, still work
        self.assertEqual(self.version_grpc(bob).mode, "host")
        self.assertEqual(self.capsule.ctl(["version"], config=bob).returncode, 0)
        self.assertEqual(self.capsule.ctl(["health"]).returncode, 0)
        # revoking again changes nothing; by the client config file gives the same serial
        with open(self.machine) as f:
            before = f.read()
        p = ctl(["gen", "cert", "--revoke", mallory, "--secrets", self.capsule.secrets], check=True)
        self.assertIn(f"serial {serial} is already revoked", p.stdout)
        with open(self.machine) as f:
            self.assertEqual(f.read(), before)
        # and it survives a restart (the file holds it)
        self.assertEqual(self.capsule.stop(), 0)
        self.capsule.start()
        p = self.capsule.ctl(["version"], config=mallory)
        self.assertEqual(p.returncode, 1)
        self.assertIn("revoked", p.stderr)
        self.assertEqual(self.capsule.ctl(["version"], config=bob).returncode, 0)

    def test_bad_revocations_refused_nothing_changed(self):
        with open(self.machine) as f:
            before = f.read()
        # capsulectl: a bad serial, too many at once
        p = ctl(["gen", "cert", "--revoke", "12XY", "--secrets", self.capsule.secrets])
        self.assertEqual(p.returncode, 2)
        self.assertIn('--revoke "12XY": not a certificate serial', p.stderr)
        p = ctl(["gen", "cert", "--revoke", "A" * 41, "--secrets", self.capsule.secrets])
        self.assertEqual(p.returncode, 2)
        p = ctl(["gen", "cert", "--secrets", self.capsule.secrets] +
                [a for i in range(65) for a in ("--revoke", f"{i + 1:x}")])
        self.assertEqual(p.returncode, 2)
        self.assertIn("--revoke: at most 64", p.stderr)
        p = ctl(["gen", "cert", "--revoke", "AB", "--role", "admin", "--secrets", self.capsule.secrets])
        self.assertEqual(p.returncode, 2)
        self.assertIn("--role does not go with --revoke", p.stderr)
        with open(self.machine) as f:
            self.assertEqual(f.read(), before)
        # the API: a machine config with a bad pki.revoked is refused, naming the field
        cases = [
            ("  revoked:\n  - \"0x1F\"\n", "pki.revoked[0]: \"0x1F\" is not a certificate serial"),
            ("  revoked:\n  - \"AB:CD\"\n", "pki.revoked[0]: \"AB:CD\" is not a certificate serial"),
            ("  revoked:\n  - \"ab\"\n  - \"00AB\"\n", "pki.revoked[1]: serial AB is already at pki.revoked[0]"),
            ("  revoked: \"AB\"\n", "pki.revoked: expected a list of strings"),
            ("  revoked:\n" + "".join(f"  - \"{i + 1:X}\"\n" for i in range(1025)),
             "pki.revoked: 1025 serials, at most 1024"),
        ]
        bad = os.path.join(self.tmp, "bad-machine.yaml")
        for block, msg in cases:
            with open(bad, "w") as f:
                f.write(before.replace("\nregistries:", "\n" + block.rstrip("\n") + "\nregistries:", 1)
                        if "\nregistries:" in before else
                        before.replace("\nnetwork:", "\n" + block.rstrip("\n") + "\nnetwork:", 1))
            p = self.apply(bad)
            self.assertEqual(p.returncode, 1, block)
            self.assertIn(msg, p.stderr)
            self.assertIn(bad, p.stderr)
            # gen cert --revoke on such a file refuses to touch it too
            p = ctl(["gen", "cert", "--revoke", "CD", "-o", bad])
            self.assertEqual(p.returncode, 1)
            self.assertIn(msg, p.stderr)
        with open(self.machine) as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(self.capsule.ctl(["version"]).returncode, 0)

    def test_client_expiry_warning(self):
        soon, _ = self.mint("soon", "--days", "10")
        for verb in ("version", "health"):
            p = self.capsule.ctl([verb], config=soon)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertRegex(p.stderr, r"warning: the client certificate of context \"\w+\" \(CN soon\) "
                                       r"expires in (9|10) days, on \d{4}-\d\d-\d\d \d\d:\d\d UTC")
            self.assertNotIn("server certificate", p.stderr)
            self.assertNotIn("warning", p.stdout)
        # a year-long one: no warning
        p = self.capsule.ctl(["version"], check=True)
        self.assertNotIn("warning", p.stderr)

    def test_renew(self):
        old, old_serial = self.mint("carol", "--days", "5", role="reader")
        new = os.path.join(self.tmp, "config-carol-new")
        p = ctl(["gen", "cert", "--renew", old, "--secrets", self.capsule.secrets, "-o", new], check=True)
        self.assertIn(f"replaces serial {old_serial}", p.stdout)
        new_serial = re.search(r"(?m)^serial ([0-9A-F]+)", p.stdout).group(1)
        self.assertNotEqual(new_serial, old_serial)
        # same name, role, context and endpoint; a full year; works without a warning
        p = ctl(["--config", new, "-o", "json", "config", "contexts"], check=True)
        c_new = json.loads(p.stdout)["contexts"][0]
        p = ctl(["--config", old, "-o", "json", "config", "contexts"], check=True)
        c_old = json.loads(p.stdout)["contexts"][0]
        for k in ("name", "endpoint", "user", "role"):
            self.assertEqual(c_new[k], c_old[k], k)
        self.assertEqual(c_new["role"], "capsule:reader")
        self.assertGreaterEqual(c_new["certDaysLeft"], 364)
        p = self.capsule.ctl(["version"], config=new)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("warning", p.stderr)
        p = self.capsule.ctl(["machine-config", "apply", "-f", self.machine], config=new)
        self.assertEqual(p.returncode, 1)  # still a reader
        self.assertIn("capsule:reader", p.stderr)
        # the output exists: refused without --force
        p = ctl(["gen", "cert", "--renew", old, "--secrets", self.capsule.secrets, "-o", new])
        self.assertEqual(p.returncode, 1)
        self.assertIn("already exists", p.stderr)
        # a certificate of another CA is not renewed
        other = os.path.join(self.tmp, "other-pki")
        ctl(["gen", "config", "other", "-o", other], check=True)
        p = ctl(["gen", "cert", "--renew", os.path.join(other, "capsuleconfig"), "--secrets",
                 self.capsule.secrets, "-o", os.path.join(self.tmp, "x")])
        self.assertEqual(p.returncode, 1)
        self.assertIn("not issued by the CA", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "x")))


class ServerCertExpiryTest(unittest.TestCase):
    """A capsule whose server certificate expires in 10 days: version and health warn, exit 0."""

    def test_server_expiry_warning(self):
        tmp = tempfile.mkdtemp(prefix="capsule-it-")
        capsule = Capsule(tmp)
        try:
            crt, key = make_server_cert(capsule.secrets, 10, tmp)
            machine = os.path.join(capsule.cfgdir, "machine.yaml")
            import yaml
            with open(machine) as f:
                doc = yaml.safe_load(f)
            doc["pki"]["cert"], doc["pki"]["key"] = crt, key
            with open(machine, "w") as f:
                yaml.safe_dump(doc, f)
            capsule.start()
            for verb in ("version", "health"):
                p = capsule.ctl([verb])
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertRegex(p.stderr, r"warning: the server certificate of the capsule \(CN home\) "
                                           r"expires in (9|10) days, on \d{4}-\d\d-\d\d \d\d:\d\d UTC")
                self.assertNotIn("client certificate", p.stderr)
        finally:
            rc = capsule.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        self.assertIn(rc, (0, None))


if __name__ == "__main__":
    harness.main()
