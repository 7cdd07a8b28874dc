#!/usr/bin/env python3
"""The metrics endpoint in host mode, against a real containerd + runc: scraped over HTTPS with a
client certificate of either role, refused without one (or with one from another CA), every page
valid by a strict exposition-format parser, a running workload's series (state, CPU, memory,
processes), an exited one's exit code and restarts, volumes, images, API calls and errors that
increase with calls, 404/405/431 and a silent client that does not hold the endpoint,
`capsulectl metrics`, plain HTTP by machine config, a bad metrics.listen refused; and a real
Prometheus (Debian's package) scraping with the job docs/operations.md documents, queried over
its HTTP API for the workload's series."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import harness
import mkimage_busybox
from expo_strict import ExpoError, parse, series
from harness import Capsule, Containerd, wait_for

IMAGE = mkimage_busybox.DEFAULT_NAME
LOOP = 'trap "exit 0" TERM; while true; do sleep 1; done'
DOCS = os.path.join(harness.SOURCE_DIR, "docs", "operations.md")


def write(path, data, mode=0o600):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)
    return path


class MetricsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsule-mx-")
        cls.containerd = Containerd(cls.tmp).start()
        cls.capsule = Capsule(cls.tmp, containerd=cls.containerd.sock)
        try:
            cls.setUp_workloads()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def setUp_workloads(cls):
        cls.capsule.start()
        assert cls.capsule.metrics_port, "capsuled wrote no metrics port"
        mkimage_busybox.build(cls.tmp)
        cls.capsule.ctl(["image", "push", os.path.join(cls.tmp, "busybox-oci.tar")], check=True)
        # the admin's identity from the client config, as files for ssl and curl
        ca, cert, key = harness.load_client_context(cls.capsule.config)
        cls.ca = write(os.path.join(cls.tmp, "ca.pem"), ca)
        cls.cert = write(os.path.join(cls.tmp, "admin.pem"), cert)
        cls.key = write(os.path.join(cls.tmp, "admin.key"), key)
        manifest = write(os.path.join(cls.tmp, "web.yaml"), f"""kind: Volume
name: data
size: 32Mi
---
kind: Container
name: web
image: {IMAGE}
command: ["sh", "-c", {json.dumps(LOOP)}]
mounts:
  - {{volume: data, path: /data}}
---
kind: Container
name: quitter
image: {IMAGE}
command: ["sh", "-c", "exit 3"]
restart: on-failure
""")
        cls.capsule.ctl(["apply", "-f", manifest], check=True)
        wait_for(lambda: cls.phase("web") == "Running", timeout=60, what="web to run")

    @classmethod
    def tearDownClass(cls):
        try:
            for name in ("web", "quitter") if cls.capsule.proc else ():
                cls.capsule.ctl(["delete", name])
            rc = cls.capsule.stop()
            logs = cls.capsule.logs()
        finally:
            cls.containerd.stop()
            harness.unmount_under(cls.tmp)
            shutil.rmtree(cls.tmp, ignore_errors=True)
        if rc not in (0, None):
            raise AssertionError(f"capsuled exited {rc} on SIGTERM:\n{logs[-6000:]}")

    @classmethod
    def phase(cls, name):
        p = cls.capsule.ctl(["-o", "json", "get", name])
        return json.loads(p.stdout)["status"]["phase"] if p.returncode == 0 else None

    # -- helpers ---------------------------------------------------------------------------------

    def tls(self, cert=None, key=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca)
        ctx.check_hostname = True
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def get(self, path="/metrics", method="GET", cert=None, key=None):
        """(status, headers, body) of one HTTPS request to the endpoint, as admin by default."""
        ctx = self.tls(cert or self.cert, key or self.key)
        c = http.client.HTTPSConnection("127.0.0.1", self.capsule.metrics_port, context=ctx,
                                        timeout=20)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read().decode()
        finally:
            c.close()

    def scrape(self):
        status, headers, body = self.get()
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        return parse(body)

    # -- tests -----------------------------------------------------------------------------------

    def test_running_workload_series(self):
        f = self.scrape()
        self.assertEqual(series(f, "capsule_workload_state", workload="web", state="running"), [1])
        self.assertEqual(series(f, "capsule_workload_state", workload="web", state="backoff"), [0])
        self.assertEqual(series(f, "capsule_workload_info", workload="web", kind="container",
                                image=IMAGE), [1])
        self.assertEqual(f["capsule_workload_cpu_seconds_total"]["type"], "counter")
        self.assertEqual(len(series(f, "capsule_workload_cpu_seconds_total", workload="web")), 1)
        mem = series(f, "capsule_workload_memory_bytes", workload="web")
        self.assertTrue(mem and mem[0] > 0, mem)
        procs = series(f, "capsule_workload_processes", workload="web")
        self.assertTrue(procs and procs[0] >= 1, procs)
        start = series(f, "capsule_workload_start_time_seconds", workload="web")
        self.assertTrue(start and abs(start[0] - time.time()) < 3600, start)
        self.assertEqual(series(f, "capsule_volume_size_bytes", volume="data"), [32 * 2**20])
        self.assertEqual(series(f, "capsule_volume_attached_workloads", volume="data"), [1])
        self.assertEqual(len(series(f, "capsule_volume_used_bytes", volume="data")), 1)
        self.assertGreaterEqual(series(f, "capsule_images")[0], 1)
        self.assertGreater(series(f, "capsule_images_bytes")[0], 0)
        self.assertEqual(len(series(f, "capsule_image_size_bytes", image=IMAGE)), 1)
        self.assertEqual(series(f, "capsule_info", hostname="home", mode="host"), [1])
        boot = series(f, "capsule_boot_time_seconds")[0]
        self.assertTrue(0 < boot < time.time(), boot)
        self.assertLess(series(f, "capsule_serve_start_time_seconds")[0], time.time())
        self.assertGreaterEqual(series(f, "capsule_reconcile_passes_total")[0], 1)
        last = series(f, "capsule_reconcile_last_pass_seconds")[0]
        self.assertTrue(0 < last < 60, last)
        for part in ("workloads", "volumes", "images", "api"):
            self.assertEqual(series(f, "capsule_collector_ok", collector=part), [1], part)

    def test_exited_workload_exit_code_and_restarts(self):
        def seen():
            f = self.scrape()
            r = series(f, "capsule_workload_restarts_total", workload="quitter")
            return f if r and r[0] >= 1 else None
        f = wait_for(seen, timeout=60, what="quitter to be restarted")
        self.assertEqual(series(f, "capsule_workload_last_exit_code", workload="quitter"), [3])
        t = series(f, "capsule_workload_last_exit_time_seconds", workload="quitter")
        self.assertTrue(t and abs(t[0] - time.time()) < 600, t)
        # not running: no CPU or memory figures rather than zeros
        if not series(f, "capsule_workload_state", workload="quitter", state="running")[0]:
            self.assertEqual(series(f, "capsule_workload_memory_bytes", workload="quitter"), [])

    def test_api_calls_and_errors_counted(self):
        def calls(f, m):
            return (series(f, "capsule_api_calls_total", method=m) or [0])[0]

        def errors(f, m, code):
            return (series(f, "capsule_api_errors_total", method=m, code=code) or [0])[0]

        before = self.scrape()
        self.capsule.ctl(["version"], check=True)
        self.capsule.ctl(["version"], check=True)
        self.assertNotEqual(self.capsule.ctl(["get", "no-such-workload"]).returncode, 0)
        after = self.scrape()
        v = "/capsule.v1.System/Version"
        g = "/capsule.v1.Workloads/Get"
        self.assertEqual(calls(after, v) - calls(before, v), 2)
        self.assertEqual(calls(after, g) - calls(before, g), 1)
        self.assertEqual(errors(after, g, "NOT_FOUND") - errors(before, g, "NOT_FOUND"), 1)
        self.assertEqual(errors(after, v, "NOT_FOUND"), 0)

    def test_refused_without_client_certificate(self):
        for why, ctx in (("no certificate", self.tls()),
                         ("another CA's certificate", self.other_ca_context())):
            with self.subTest(why):
                c = http.client.HTTPSConnection("127.0.0.1", self.capsule.metrics_port,
                                                context=ctx, timeout=20)
                with self.assertRaises((ssl.SSLError, ConnectionError, http.client.HTTPException,
                                        OSError)):
                    c.request("GET", "/metrics")
                    r = c.getresponse()
                    r.read()
                c.close()
        # plain HTTP to the TLS port gets no page either
        s = socket.create_connection(("127.0.0.1", self.capsule.metrics_port), timeout=10)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except (ConnectionError, socket.timeout):
            pass
        s.close()
        self.assertNotIn(b"capsule_", data)
        self.assertIn("metrics: refused", self.capsule.logs())

    def test_certificate_without_role_forbidden(self):
        # signed by the capsule's CA (openssl, as anyone holding the CA key could), O not a role
        d = os.path.join(self.tmp, "norole")
        os.makedirs(d, exist_ok=True)
        key, csr, crt = (os.path.join(d, n) for n in ("k.pem", "r.csr", "c.pem"))
        ext = write(os.path.join(d, "ext.cnf"), "extendedKeyUsage=clientAuth\n", 0o644)
        secrets = self.capsule.secrets
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                        "-subj", "/CN=intruder/O=capsule:nobody"], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA",
                        os.path.join(secrets, "ca.crt"), "-CAkey", os.path.join(secrets, "ca.key"),
                        "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", crt],
                       check=True, capture_output=True)
        status, _, body = self.get(cert=crt, key=key)
        self.assertEqual(status, 403)
        self.assertIn("no Capsule role", body)
        self.assertNotIn("capsule_", body)
        self.assertIn('certificate "intruder" has no Capsule role', self.capsule.logs())

    def other_ca_context(self):
        d = os.path.join(self.tmp, "other")
        if not os.path.exists(os.path.join(d, "capsuleconfig")):
            harness.ctl(["gen", "config", "other", "--endpoint", "127.0.0.1:1", "-o", d], check=True)
        _, cert, key = harness.load_client_context(os.path.join(d, "capsuleconfig"))
        ctx = self.tls()
        ctx.load_cert_chain(write(os.path.join(d, "c.pem"), cert), write(os.path.join(d, "k.pem"), key))
        return ctx

    def test_reader_certificate_from_gen_cert_pem(self):
        out = os.path.join(self.tmp, "prom-certs")
        harness.ctl(["gen", "cert", "--role", "reader", "--name", "prometheus", "--secrets",
                     self.capsule.secrets, "--pem", "-o", out], check=True)
        for f in ("prometheus.crt", "prometheus.key", "ca.crt"):
            self.assertTrue(os.path.exists(os.path.join(out, f)), f)
        self.assertEqual(os.stat(os.path.join(out, "prometheus.key")).st_mode & 0o777, 0o600)
        status, _, body = self.get(cert=os.path.join(out, "prometheus.crt"),
                                   key=os.path.join(out, "prometheus.key"))
        self.assertEqual(status, 200)
        parse(body)

    def test_revoked_certificate_forbidden(self):
        """gen cert --revoke (by the PEM file) + machine-config apply: 403 naming the serial at
        once; the admin certificate still scrapes."""
        out = os.path.join(self.tmp, "revokee-certs")
        p = harness.ctl(["gen", "cert", "--role", "reader", "--name", "revokee", "--secrets",
                         self.capsule.secrets, "--pem", "-o", out], check=True)
        serial = re.search(r"(?m)^serial ([0-9A-F]+)", p.stdout).group(1)
        crt, key = os.path.join(out, "revokee.crt"), os.path.join(out, "revokee.key")
        self.assertEqual(self.get(cert=crt, key=key)[0], 200)
        p = harness.ctl(["gen", "cert", "--revoke", crt, "--secrets", self.capsule.secrets], check=True)
        self.assertIn(f"revoked serial {serial}", p.stdout)
        self.capsule.ctl(["machine-config", "apply", "-f",
                          os.path.join(self.capsule.cfgdir, "machine.yaml")], check=True)
        status, _, body = self.get(cert=crt, key=key)
        self.assertEqual(status, 403)
        self.assertIn(f"(serial {serial}) is revoked", body)
        self.assertNotIn("capsule_", body)
        self.assertEqual(self.get()[0], 200)

    def test_operator_certificate_scrapes_too(self):
        out = os.path.join(self.tmp, "op-certs")
        harness.ctl(["gen", "cert", "--role", "operator", "--name", "ops", "--secrets",
                     self.capsule.secrets, "--pem", "-o", out], check=True)
        status, _, body = self.get(cert=os.path.join(out, "ops.crt"), key=os.path.join(out, "ops.key"))
        self.assertEqual(status, 200)
        parse(body)

    def test_other_paths_methods_and_sizes(self):
        status, _, body = self.get("/")
        self.assertEqual(status, 404)
        self.assertIn("/metrics", body)
        self.assertEqual(self.get("/metrics?x=1")[0], 200)
        status, headers, _ = self.get("/metrics", method="POST")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("Allow"), "GET")
        # a request head beyond 8 KiB
        ctx = self.tls(self.cert, self.key)
        c = http.client.HTTPSConnection("127.0.0.1", self.capsule.metrics_port, context=ctx, timeout=20)
        c.putrequest("GET", "/metrics")
        c.putheader("X-Big", "a" * 9000)
        try:
            c.endheaders()
            self.assertEqual(c.getresponse().status, 431)
        except (ConnectionError, ssl.SSLError):
            pass  # closed after answering while we were still sending: also refused
        c.close()

    def test_silent_client_does_not_hold_the_endpoint(self):
        silent = [socket.create_connection(("127.0.0.1", self.capsule.metrics_port)) for _ in range(3)]
        try:
            t = time.monotonic()
            self.scrape()
            self.assertLess(time.monotonic() - t, 3)
            # and they are cut off after the per-connection deadline
            silent[0].settimeout(15)
            t = time.monotonic()
            self.assertEqual(silent[0].recv(100), b"")
            self.assertLess(time.monotonic() - t, 10)
        finally:
            for s in silent:
                s.close()

    def test_capsulectl_metrics(self):
        p = self.capsule.ctl(["metrics"], check=True)
        f = parse(p.stdout)
        self.assertEqual(series(f, "capsule_workload_state", workload="web", state="running"), [1])
        p = self.capsule.ctl(["metrics", "capsule_workload_state"], check=True)
        self.assertEqual(set(parse(p.stdout)), {"capsule_workload_state"})
        # any role: a reader's client config
        reader = os.path.join(self.tmp, "reader.capsuleconfig")
        if not os.path.exists(reader):
            harness.ctl(["gen", "cert", "--role", "reader", "--name", "viewer", "--secrets",
                         self.capsule.secrets, "-o", reader], check=True)
        p = self.capsule.ctl(["metrics", "capsule_info"], config=reader, check=True)
        self.assertIn('hostname="home"', p.stdout)
        p = self.capsule.ctl(["metrics", "a", "b"])
        self.assertEqual(p.returncode, 2)

    def test_prometheus_scrapes_with_the_documented_job(self):
        prom = shutil.which("prometheus")
        if not prom:
            self.skipTest("Debian's prometheus package is not installed (scripts/deps.sh installs it)")
        with open(DOCS) as f:
            docs = f.read()
        m = re.search(r"<!-- scrape-config:.*?-->\n```yaml\n(.*?)```", docs, re.S)
        self.assertIsNotNone(m, "docs/operations.md: the scrape-config block is missing")
        job = m.group(1)
        certs = os.path.join(self.tmp, "prom-job-certs")
        harness.ctl(["gen", "cert", "--role", "reader", "--name", "prometheus", "--secrets",
                     self.capsule.secrets, "--pem", "-o", certs, "--force"], check=True)
        # the documented job, with this test's files and address
        job = (job.replace("/etc/prometheus/capsule", certs)
                  .replace("capsule.lan:50001", f"127.0.0.1:{self.capsule.metrics_port}"))
        self.assertIn(certs, job)
        d = os.path.join(self.tmp, "prometheus")
        os.makedirs(d, exist_ok=True)
        config = write(os.path.join(d, "prometheus.yml"),
                       "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n" + job, 0o644)
        port = harness.free_port()
        log = open(os.path.join(d, "prometheus.log"), "wb")
        proc = subprocess.Popen([prom, f"--config.file={config}",
                                 f"--storage.tsdb.path={os.path.join(d, 'data')}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            def api(path, **params):
                url = f"http://127.0.0.1:{port}/api/v1/{path}?" + urllib.parse.urlencode(params)
                with urllib.request.urlopen(url, timeout=5) as r:
                    return json.load(r)

            def ready():
                if proc.poll() is not None:
                    raise AssertionError("prometheus exited:\n" + open(log.name).read()[-3000:])
                try:
                    targets = api("targets")["data"]["activeTargets"]
                except OSError:
                    return None
                return targets if targets and targets[0]["health"] == "up" else None

            try:
                targets = wait_for(ready, timeout=90, interval=0.5, what="prometheus to scrape")
            except AssertionError:
                raise AssertionError("target not up: " + json.dumps(api("targets"))[:2000])
            self.assertEqual(targets[0]["labels"]["job"], "capsule")

            def query():
                r = api("query", query='capsule_workload_state{workload="web",state="running"}')
                res = r["data"]["result"]
                return res if res else None
            res = wait_for(query, timeout=30, interval=0.5, what="the query to return web's series")
            self.assertEqual(res[0]["value"][1], "1")
            self.assertEqual(res[0]["metric"]["job"], "capsule")
            r = api("query", query='capsule_workload_memory_bytes{workload="web"}')
            self.assertGreater(float(r["data"]["result"][0]["value"][1]), 0)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


class MetricsConfigTest(unittest.TestCase):
    """The machine config's metrics section: plain HTTP on a trusted LAN, a bad address refused."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="capsule-mc-")

    def tearDown(self):
        harness.unmount_under(self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_insecure_http(self):
        cap = Capsule(self.tmp)
        with open(os.path.join(cap.cfgdir, "machine.yaml"), "a") as f:
            f.write("metrics:\n  insecureHTTP: true\n")
        cap.start()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{cap.metrics_port}/metrics", timeout=10) as r:
                f = parse(r.read().decode())
            self.assertEqual(series(f, "capsule_info", hostname="home"), [1])
            # without containerd: images are not collected, and the page says so
            self.assertEqual(series(f, "capsule_collector_ok", collector="images"), [0])
            self.assertIn("scheme=http", cap.logs())
        finally:
            self.assertEqual(cap.stop(), 0)

    def test_port_in_use_does_not_stop_the_api(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cap = Capsule(self.tmp, extra_args=["--metrics-listen", f"127.0.0.1:{port}"])
        try:
            cap.start()
            self.assertIsNone(cap.metrics_port)
            self.assertEqual(cap.ctl(["version"]).returncode, 0)
            self.assertIn("serving the API without it", cap.logs())
            self.assertIn(f"127.0.0.1:{port}", cap.logs())
        finally:
            busy.close()
            self.assertEqual(cap.stop(), 0)

    def test_disabled(self):
        cap = Capsule(self.tmp)
        machine = os.path.join(cap.cfgdir, "machine.yaml")
        with open(machine, "a") as f:
            f.write("metrics:\n  enabled: false\n")
        # without --metrics-listen (the harness passes one), as on a Capsule
        port_file = os.path.join(self.tmp, "port")
        log = open(os.path.join(self.tmp, "serve.log"), "wb")
        p = subprocess.Popen([harness.CAPSULED, "serve", "--root", os.path.join(self.tmp, "r"),
                              "--machine-config", machine, "--listen", "127.0.0.1:0",
                              "--port-file", port_file], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: os.path.exists(port_file) or p.poll() is not None, what="capsuled")
            self.assertIsNone(p.poll())
            with open(log.name) as f:
                text = f.read()
            self.assertIn("metrics endpoint off", text)
            self.assertNotIn("metrics addr=", text)
        finally:
            p.terminate()
            self.assertEqual(p.wait(20), 0)
            log.close()

    def test_bad_listen_refused(self):
        cap = Capsule(self.tmp)
        with open(os.path.join(cap.cfgdir, "machine.yaml"), "a") as f:
            f.write("metrics:\n  listen: \"capsule.lan:50001\"\n")
        p = subprocess.run([harness.CAPSULED, "serve", "--root", os.path.join(self.tmp, "r"),
                            "--machine-config", os.path.join(cap.cfgdir, "machine.yaml"),
                            "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=20)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("metrics.listen", p.stderr)
        self.assertIn("is not IP:PORT", p.stderr)


if __name__ == "__main__":
    harness.main()
