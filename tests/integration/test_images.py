#!/usr/bin/env python3
"""Images end to end: a real containerd, a real docker-registry (Debian's) on 127.0.0.1, and
`capsuled serve` in host mode with that registry listed as insecure; driven with `capsulectl image`
and checked with `ctr -n capsule`.

- push the busybox image as docker-archive and oci-archive -> `image ls` and `ctr images ls` agree;
- malicious or broken archives are refused with a clear message and containerd is unchanged;
- upload the image into the registry (a tiny uploader: POST/PUT blobs, PUT manifest), then
  `image pull 127.0.0.1:PORT/busybox:1` gives the same digest; also through a bearer-token proxy;
- `image rm`, NOT_FOUND, and the upload size cap over gRPC."""

import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import mkimage_busybox as mk  # noqa: E402

REGISTRY_BIN = "/usr/bin/docker-registry"


def make_tls(d, name):
    """A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl tool:
    returns (ca_pem, cert_path, key_path)."""
    os.makedirs(d, exist_ok=True)
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, crt = (os.path.join(d, f) for f in ("srv.key", "srv.csr", "srv.crt"))
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for cmd in (["req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
                 "-subj", f"/CN={name} test registry CA"],
                ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
                ["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
                 "-out", crt, "-days", "2", "-extfile", ext]):
        subprocess.run(["openssl", *cmd], check=True, capture_output=True)
    with open(ca_crt) as f:
        return f.read(), crt, key


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Registry:
    """docker-registry with filesystem storage under tmp, on 127.0.0.1:PORT; stopped by PID.
    tls: (ca_pem, cert_path, key_path) to serve HTTPS instead of HTTP; login: (user, password)
    to demand HTTP Basic auth (its own htpasswd, bcrypt)."""

    def __init__(self, tmp, tls=None, login=None):
        self.dir = os.path.join(tmp, "registry")
        os.makedirs(self.dir, exist_ok=True)
        self.port = harness.free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.scheme = "https" if tls else "http"
        self.ssl = None
        if tls:
            self.ssl = ssl.create_default_context(cadata=tls[0])
        self.config = os.path.join(self.dir, "config.yml")
        self.headers = {"Authorization": basic(*login)} if login else {}
        with open(self.config, "w") as f:
            f.write(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {self.dir}/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{self.port}
""")
            if tls:
                f.write(f"  tls:\n    certificate: {tls[1]}\n    key: {tls[2]}\n")
            if login:
                htpasswd = os.path.join(self.dir, "htpasswd")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    import crypt
                    hashed = crypt.crypt(login[1], crypt.mksalt(crypt.METHOD_BLOWFISH))
                with open(htpasswd, "w") as h:
                    h.write(f"{login[0]}:{hashed}\n")
                f.write(f"auth:\n  htpasswd:\n    realm: capsule-test\n    path: {htpasswd}\n")
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "registry.log"), "ab")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)

        def up():
            try:
                req = urllib.request.Request(f"{self.scheme}://{self.host}/v2/", headers=self.headers)
                return urllib.request.urlopen(req, timeout=2, context=self.ssl).status == 200
            except (urllib.error.URLError, ConnectionError):
                return self.proc.poll() is not None
        harness.wait_for(up, timeout=20, what="docker-registry")
        if self.proc.poll() is not None:
            raise AssertionError("docker-registry exited")
        return self

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
            self.proc = None

    def upload(self, repo, tag, img):
        """Pushes config, layer and manifest with the distribution API (monolithic uploads)."""
        base = f"{self.scheme}://{self.host}"
        for blob in (img.layer_gz, img.config):
            req = urllib.request.Request(f"{base}/v2/{repo}/blobs/uploads/", method="POST",
                                         headers=self.headers)
            with urllib.request.urlopen(req, context=self.ssl) as r:
                loc = r.headers["Location"]
            if loc.startswith("/"):
                loc = f"{base}{loc}"
            sep = "&" if "?" in loc else "?"
            req = urllib.request.Request(f"{loc}{sep}digest={mk.sha256(blob)}", data=blob, method="PUT",
                                         headers={"Content-Type": "application/octet-stream",
                                                  **self.headers})
            with urllib.request.urlopen(req, context=self.ssl) as r:
                assert r.status == 201, r.status
        req = urllib.request.Request(f"{base}/v2/{repo}/manifests/{tag}", data=img.manifest,
                                     method="PUT", headers={"Content-Type": mk.MT_MANIFEST, **self.headers})
        with urllib.request.urlopen(req, context=self.ssl) as r:
            assert r.status == 201, r.status
            return r.headers.get("Docker-Content-Digest")


class BlobHost:
    """Another host (127.0.0.2) that a registry redirects blob downloads to, as registries do to
    a CDN: serves blobs from the upstream registry and records the Authorization header of every
    request (None when absent)."""

    def __init__(self, upstream):
        self.port = harness.free_port()
        self.host = f"127.0.0.2:{self.port}"
        self.auth_seen = []
        blobs = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                blobs.auth_seen.append(self.headers.get("Authorization"))
                with urllib.request.urlopen(f"http://{upstream}{self.path}") as r:
                    body = r.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.2", self.port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class TokenProxy:
    """A registry front that demands a bearer token (401 + WWW-Authenticate challenge, a /token
    endpoint) and forwards authorised GETs to the real registry. login: (user, password) that the
    token endpoint demands (HTTP Basic), as registries with accounts do."""

    TOKEN = "capsule-test-token"

    def __init__(self, upstream, login=None):
        self.upstream = upstream
        self.port = harness.free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.token_requests = []
        self.corrupt_blobs = False  # flip a byte in every blob served (digest mismatch)
        self.redirect_blobs = None  # "HOST:PORT": answer blob GETs with a 307 to there (a CDN)
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.startswith("/token"):
                    proxy.token_requests.append(self.path)
                    if login and self.headers.get("Authorization") != basic(*login):
                        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
                        self.send_response(401)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                    body = json.dumps({"token": TokenProxy.TOKEN}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if self.headers.get("Authorization") != f"Bearer {TokenProxy.TOKEN}":
                    body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                    self.send_response(401)
                    self.send_header("WWW-Authenticate",
                                     f'Bearer realm="http://{proxy.host}/token",service="test-registry",'
                                     f'scope="repository:busybox:pull"')
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if proxy.redirect_blobs and "/blobs/" in self.path:
                    self.send_response(307)
                    self.send_header("Location", f"http://{proxy.redirect_blobs}{self.path}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                req = urllib.request.Request(f"http://{proxy.upstream}{self.path}",
                                             headers={"Accept": self.headers.get("Accept", "*/*")})
                try:
                    with urllib.request.urlopen(req) as r:
                        body, status, ctype = r.read(), r.status, r.headers.get("Content-Type", "")
                except urllib.error.HTTPError as e:
                    body, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
                if proxy.corrupt_blobs and "/blobs/" in self.path and status == 200 and body:
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def tar_of(entries):
    return mk.tar_bytes(entries)


class ImagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsule-img-")
        cls.img, cls.docker_tar, cls.oci_tar = mk.build(os.path.join(cls.tmp, "images"))
        cls.containerd = harness.Containerd(cls.tmp).start()
        cls.registry = Registry(cls.tmp).start()
        cls.proxy = TokenProxy(cls.registry.host).start()
        # an HTTPS registry whose certificate comes from a private CA, trusted via registries.ca
        ca_pem, crt, key = make_tls(os.path.join(cls.tmp, "tls-a"), "home")
        cls.tls_registry = Registry(os.path.join(cls.tmp, "r-tls"), tls=(ca_pem, crt, key)).start()
        # logins: a registry with its own accounts (Basic), token endpoints that want one
        cls.basic_registry = Registry(os.path.join(cls.tmp, "r-basic"), tls=(ca_pem, crt, key),
                                      login=("alice", "wonder land")).start()
        cls.login_proxy = TokenProxy(cls.registry.host, login=("bob", "b0b:pass")).start()
        cls.badlogin_proxy = TokenProxy(cls.registry.host, login=("bob", "right")).start()
        cls.capsule = harness.Capsule(cls.tmp, containerd=cls.containerd.sock)
        insecure = ", ".join(f'"{h}"' for h in (cls.registry.host, cls.proxy.host,
                                                 cls.login_proxy.host, cls.badlogin_proxy.host))
        with open(os.path.join(cls.capsule.cfgdir, "machine.yaml"), "a") as f:
            f.write(f"registries:\n  insecure: [{insecure}]\n"
                    "  ca: |\n" + "".join("    " + line + "\n" for line in ca_pem.splitlines()) +
                    "  auth:\n"
                    f'    - {{host: "{cls.basic_registry.host}", username: alice, password: "wonder land"}}\n'
                    f'    - {{host: "{cls.login_proxy.host}", username: bob, password: "b0b:pass"}}\n'
                    f'    - {{host: "{cls.badlogin_proxy.host}", username: bob, password: wrong}}\n')
        cls.capsule.start()
        cls.timings = {}

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.capsule.stop()
            logs = cls.capsule.logs()
        finally:
            cls.proxy.stop()
            cls.login_proxy.stop()
            cls.badlogin_proxy.stop()
            cls.basic_registry.stop()
            cls.tls_registry.stop()
            cls.registry.stop()
            cls.containerd.stop()
            harness.unmount_under(cls.tmp)
            shutil.rmtree(cls.tmp, ignore_errors=True)
        for k, v in cls.timings.items():
            print(f"timing: {k}: {v:.3f}s", file=sys.stderr)
        if os.environ.get("CAPSULE_TEST_VERBOSE"):
            print(logs, file=sys.stderr)
        # a clean SIGTERM exits 0; under ASan a leak or error makes it non-zero
        if rc not in (0, None):
            raise AssertionError(f"capsuled exited {rc} on SIGTERM:\n{logs[-6000:]}")

    # ---- helpers ----

    def ctl(self, args, **kw):
        return self.capsule.ctl(args, **kw)

    def images(self):
        p = self.ctl(["-o", "json", "image", "ls"], check=True)
        return {i["name"]: i for i in json.loads(p.stdout)}

    def ctr_images(self):
        return set(self.containerd.ctr(["images", "ls", "-q"], check=True).stdout.split())

    def ctr_content(self):
        return set(self.containerd.ctr(["content", "ls", "-q"], check=True).stdout.split())

    def push_bytes(self, data, name=None, fname="x.tar"):
        path = os.path.join(self.tmp, fname)
        with open(path, "wb") as f:
            f.write(data)
        return self.ctl(["image", "push", path] + (["--name", name] if name else []))

    # ---- tests (run in name order) ----

    def test_01_push_docker_archive(self):
        t0 = time.monotonic()
        p = self.ctl(["image", "push", self.docker_tar], timeout=120)
        self.timings["push docker-archive (2 MiB)"] = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("imported capsule.local/busybox:latest sha256:", p.stdout)
        ims = self.images()
        self.assertIn("capsule.local/busybox:latest", ims)
        im = ims["capsule.local/busybox:latest"]
        self.assertGreater(im["sizeBytes"], len(self.img.layer))
        self.assertIn("capsule.local/busybox:latest", self.ctr_images())
        # the table form
        p = self.ctl(["image", "ls"], check=True)
        self.assertRegex(p.stdout.splitlines()[0], r"NAME\s+DIGEST\s+SIZE\s+AGE\s+USED-BY")
        self.assertIn("capsule.local/busybox:latest", p.stdout)
        # the layers are unpackable: ctr sees a complete image
        p = self.containerd.ctr(["images", "check"], check=True)
        self.assertIn("complete", p.stdout)

    def test_02_push_oci_archive(self):
        t0 = time.monotonic()
        p = self.ctl(["image", "push", self.oci_tar, "--name", "capsule.local/busybox:oci"], timeout=120)
        self.timings["push oci-archive (1 MiB gz)"] = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr)
        ims = self.images()
        self.assertEqual(ims["capsule.local/busybox:oci"]["digest"], self.img.manifest_digest)
        # without --name, the annotation names it
        p = self.ctl(["image", "push", self.oci_tar], check=True)
        self.assertIn(f"imported capsule.local/busybox:latest {self.img.manifest_digest}", p.stdout)
        self.assertEqual(self.images()["capsule.local/busybox:latest"]["digest"], self.img.manifest_digest)
        ctr = self.containerd.ctr(["images", "ls"], check=True).stdout
        self.assertIn(self.img.manifest_digest, ctr)
        self.assertEqual(set(self.images()), self.ctr_images())
        # a gzip-compressed archive (oci-archive.tar.gz)
        with open(self.oci_tar, "rb") as f:
            gz = mk.gzip_bytes(f.read())
        p = self.push_bytes(gz, name="capsule.local/busybox:gz", fname="busybox-oci.tar.gz")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.images()["capsule.local/busybox:gz"]["digest"], self.img.manifest_digest)
        # pushing the same archive again is idempotent
        p = self.ctl(["image", "push", self.oci_tar], check=True)
        self.assertEqual(set(self.images()), self.ctr_images())

    def test_025_concurrent_pushes(self):
        # both archives hold the same config blob: concurrent imports must not lock each other out
        variant = mk.Image(extra=b"concurrent\n")
        paths = []
        for i, entries in enumerate((mk.docker_archive_entries(variant, "capsule.local/conc:d"),
                                     mk.oci_archive_entries(variant, "capsule.local/conc:o"))):
            paths.append(os.path.join(self.tmp, f"conc-{i}.tar"))
            with open(paths[-1], "wb") as f:
                f.write(mk.tar_bytes(entries))
        results = [None, None]

        def push(i):
            results[i] = self.ctl(["image", "push", paths[i]], timeout=120)
        threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            self.assertEqual(r.returncode, 0, r.stderr)
        ims = self.images()
        self.assertIn("capsule.local/conc:d", ims)
        self.assertEqual(ims["capsule.local/conc:o"]["digest"], variant.manifest_digest)
        self.assertIn("complete", self.containerd.ctr(["images", "check"], check=True).stdout)

    def test_03_malicious_archives_refused(self):
        img = self.img
        oci = mk.oci_archive_entries(img)
        layer_path = "blobs/sha256/" + mk.sha256(img.layer_gz)[7:]
        without_layer = [e for e in oci if e[0].name != layer_path]
        flipped = bytearray(img.layer_gz)
        flipped[len(flipped) // 2] ^= 0xFF
        huge = tarfile.TarInfo("blobs/sha256/" + "0" * 64)
        huge.size = 8 << 30
        good = tar_of(oci)
        dev = tarfile.TarInfo("dev/sda")
        dev.type = tarfile.CHRTYPE
        cases = [
            ("dotdot", tar_of(oci + [mk.file_entry("../etc/passwd", b"root::0:0::/:/bin/sh\n")]), '".." refused'),
            ("absolute", tar_of(oci + [mk.file_entry("/etc/passwd", b"x")]), "absolute path refused"),
            ("symlink-escape", tar_of(without_layer + [mk.symlink_entry(layer_path, "../../../etc/shadow")]),
             "points outside the archive"),
            ("bad-digest", tar_of(without_layer + [mk.file_entry(layer_path, bytes(flipped))]),
             "does not match its descriptor"),
            ("truncated", good[:len(good) // 2], "runcated"),
            ("huge-size", huge.tobuf(tarfile.GNU_FORMAT) + b"\0" * 1024, "more than the limit"),
            ("device", tar_of(oci + [(dev, None)]), "device node refused"),
            ("duplicate", tar_of(oci + [mk.file_entry("./index.json", b"{}")]), "duplicate name"),
            ("not-tar", b"hello world, not an archive" * 100, "tar"),
            ("no-name", tar_of(mk.docker_archive_entries(img, repo_tags=[])), "--name"),
        ]
        # the layers' own contents, as `docker load` checks them: in the oci-archive's gzip
        # layer and the docker-archive's plain one
        for what, entry, msg in [
                ("layer-dotdot", mk.file_entry("../../../tmp/x", b"x"),
                 'entry "../../../tmp/x": ".." leaves the image root'),
                ("layer-absolute", mk.file_entry("/tmp/x", b"x"), 'entry "/tmp/x": an absolute path'),
                ("layer-hardlink", mk.hardlink_entry("etc/l", "../../../etc/shadow"),
                 'entry "etc/l": hardlink to "../../../etc/shadow"')]:
            bad = mk.Image(layer=mk.tar_bytes([mk.file_entry("hello", b"hi\n"), entry]))
            cases.append((what + "-oci", tar_of(mk.oci_archive_entries(bad, "capsule.local/evil:1")),
                          f"layer {mk.sha256(bad.layer_gz)}: {msg}"))
            cases.append((what + "-docker", tar_of(mk.docker_archive_entries(bad, "capsule.local/evil:2")),
                          f"layer {mk.sha256(bad.layer)}: {msg}"))
        images_before, content_before = self.ctr_images(), self.ctr_content()
        for what, data, msg in cases:
            with self.subTest(what):
                p = self.push_bytes(data, fname=f"bad-{what}.tar")
                self.assertEqual(p.returncode, 1, f"{what}: {p.stdout} {p.stderr}")
                self.assertIn(msg, p.stderr, what)
                self.assertEqual(self.ctr_images(), images_before, what)
                # nothing added (GC may still be collecting blobs an earlier re-tag orphaned)
                self.assertLessEqual(self.ctr_content(), content_before, what)
        # an invalid --name
        p = self.ctl(["image", "push", self.oci_tar, "--name", "Not/Valid"])
        self.assertEqual(p.returncode, 1)
        self.assertIn("lower case", p.stderr)

    def test_04_upload_cap(self):
        import grpc
        pb = harness.proto_modules()["images"]
        ca, cert, key = harness.load_client_context(self.capsule.config)
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        with grpc.secure_channel(self.capsule.endpoint, creds) as ch:
            push = ch.stream_unary("/capsule.v1.Images/Push",
                                   request_serializer=pb.ImagePushRequest.SerializeToString,
                                   response_deserializer=pb.ImagePushResponse.FromString)
            hdr = pb.ImagePushRequest(header=pb.ImagePushHeader(total_bytes=5 << 30))
            with self.assertRaises(grpc.RpcError) as cm:
                push(iter([hdr, pb.ImagePushRequest(chunk=b"x" * 1024)]), timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("larger than the limit", cm.exception.details())
            # chunks before the header
            with self.assertRaises(grpc.RpcError) as cm:
                push(iter([pb.ImagePushRequest(chunk=b"x")]), timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            # a short upload
            hdr = pb.ImagePushRequest(header=pb.ImagePushHeader(total_bytes=100))
            with self.assertRaises(grpc.RpcError) as cm:
                push(iter([hdr, pb.ImagePushRequest(chunk=b"x" * 10)]), timeout=30)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("incomplete", cm.exception.details())

    def test_05_pull_from_registry(self):
        # a variant whose blobs containerd does not hold yet, so every blob is downloaded
        img = mk.Image(extra=b"pulled from the registry\n")
        digest = self.registry.upload("busybox", "1", img)
        self.assertEqual(digest, img.manifest_digest)
        self.assertNotIn(mk.sha256(img.layer_gz), self.ctr_content())
        ref = f"{self.registry.host}/busybox:1"
        t0 = time.monotonic()
        p = self.ctl(["image", "pull", ref], timeout=120)
        self.timings["pull from local registry (1 MiB)"] = time.monotonic() - t0
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"pulled {ref} {img.manifest_digest}", p.stdout)
        self.assertEqual(self.images()[ref]["digest"], img.manifest_digest)
        self.assertIn(ref, self.ctr_images())
        content = self.ctr_content()
        for blob in (img.layer_gz, img.config, img.manifest):
            self.assertIn(mk.sha256(blob), content)
        self.assertIn("complete", self.containerd.ctr(["images", "check"], check=True).stdout)
        # by digest (blobs present: nothing fetched again)
        p = self.ctl(["image", "pull", f"{self.registry.host}/busybox@{img.manifest_digest}"], check=True)
        # unknown tag and unknown repository
        p = self.ctl(["image", "pull", f"{self.registry.host}/busybox:nope"])
        self.assertEqual(p.returncode, 1)
        self.assertIn(f"pull {self.registry.host}/busybox:nope: manifest unknown (404)", p.stderr)
        self.assertIn("NOT_FOUND", p.stderr)

    def test_055_pull_streams_progress(self):
        """Images/Pull streams progress (layer bytes of the total) before the image, and capsulectl
        draws a bar on a terminal (a pty here), nothing when stderr is not one."""
        import grpc
        import pty
        pb = harness.proto_modules()["images"]
        img = mk.Image(extra=os.urandom(3 << 20))  # incompressible: a 3 MiB layer
        self.registry.upload("busybox", "progress", img)
        ref = f"{self.registry.host}/busybox:progress"
        ca, cert, key = harness.load_client_context(self.capsule.config)
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        with grpc.secure_channel(self.capsule.endpoint, creds) as ch:
            pull = ch.unary_stream("/capsule.v1.Images/Pull",
                                   request_serializer=pb.ImagePullRequest.SerializeToString,
                                   response_deserializer=pb.ImagePullResponse.FromString)
            msgs = list(pull(pb.ImagePullRequest(reference=ref), timeout=120))
        self.assertTrue(msgs[-1].HasField("image"), msgs[-1])
        self.assertEqual(msgs[-1].image.digest, img.manifest_digest)
        prog = [m.progress for m in msgs[:-1]]
        self.assertTrue(prog, "progress before the image")
        self.assertEqual(prog[-1].total_bytes, len(img.layer_gz))
        self.assertEqual(prog[-1].done_bytes, prog[-1].total_bytes)
        self.assertEqual([p.done_bytes for p in prog], sorted(p.done_bytes for p in prog))
        # the bar, on a terminal: pull again (blobs present: the layer counts as done at once)
        self.ctl(["image", "rm", ref])
        main, sub = pty.openpty()
        env = dict(os.environ, CAPSULECONFIG=self.capsule.config, CAPSULE_HOST=self.capsule.endpoint)
        proc = subprocess.run([harness.CAPSULECTL, "image", "pull", ref], stdout=subprocess.PIPE, stderr=sub,
                              env=env, timeout=120, text=True)
        os.close(sub)
        tty = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            tty += chunk
        os.close(main)
        self.assertEqual(proc.returncode, 0, tty)
        self.assertIn(f"pulled {ref}", proc.stdout)
        self.assertRegex(tty.decode(errors="replace"), r"pull  [0-9.]+/[0-9.]+ MiB 100%")
        p = self.ctl(["image", "pull", ref])
        self.assertNotIn("MiB", p.stderr, "no bar when stderr is not a terminal")

    def test_06_pull_with_bearer_token(self):
        img = mk.Image(extra=b"pulled through a token-protected registry\n")
        self.registry.upload("busybox", "2", img)
        ref = f"{self.proxy.host}/busybox:2"
        p = self.ctl(["image", "pull", ref], timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(img.manifest_digest, p.stdout)
        self.assertIn(mk.sha256(img.layer_gz), self.ctr_content())
        self.assertTrue(self.proxy.token_requests, "no token was requested")
        self.assertIn("service=test-registry", self.proxy.token_requests[0])
        self.assertIn("scope=repository%3Abusybox%3Apull", self.proxy.token_requests[0])

    def test_061_credentials_not_sent_to_a_redirect_host(self):
        # a registry with an account (Basic for its token endpoint, then a bearer token) that
        # redirects blob downloads to another host: the blobs arrive, the credentials do not
        other = BlobHost(self.registry.host)
        self.login_proxy.redirect_blobs = other.host
        try:
            img = mk.Image(extra=b"blobs served from another host\n")
            self.registry.upload("busybox", "cdn", img)
            p = self.ctl(["image", "pull", f"{self.login_proxy.host}/busybox:cdn"], timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn(mk.sha256(img.layer_gz), self.ctr_content())
        finally:
            self.login_proxy.redirect_blobs = None
            other.stop()
        self.assertTrue(other.auth_seen, "no blob was fetched from the other host")
        self.assertEqual(other.auth_seen, [None] * len(other.auth_seen))

    def upload_and_pull(self, registry, tag, extra, via=None):
        """Uploads a new variant of the image to registry as busybox:TAG and pulls it from there
        (or through the front `via`); checks the pull. Returns the image and the reference."""
        img = mk.Image(extra=extra)
        self.assertEqual(registry.upload("busybox", tag, img), img.manifest_digest)
        ref = f"{via or registry.host}/busybox:{tag}"
        p = self.ctl(["image", "pull", ref], timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"pulled {ref} {img.manifest_digest}", p.stdout)
        self.assertEqual(self.images()[ref]["digest"], img.manifest_digest)
        self.assertIn(mk.sha256(img.layer_gz), self.ctr_content())
        return img, ref

    def test_066_pull_over_https_with_private_ca(self):
        self.upload_and_pull(self.tls_registry, "tls", b"pulled over HTTPS\n")

    def test_067_https_from_an_untrusted_ca_refused(self):
        # the same setup signed by a CA the machine does not know: refused, naming the fix
        other = Registry(os.path.join(self.tmp, "r-tls-b"),
                         tls=make_tls(os.path.join(self.tmp, "tls-b"), "stranger")).start()
        try:
            img = mk.Image(extra=b"from a stranger\n")
            other.upload("busybox", "x", img)
            ref = f"{other.host}/busybox:x"
            p = self.ctl(["image", "pull", ref], timeout=120)
            self.assertEqual(p.returncode, 1, p.stdout)
            self.assertIn(f"pull {ref}: https://{other.host}/v2/", p.stderr)
            self.assertIn("certificate", p.stderr)
            self.assertIn("registries.ca", p.stderr)
            self.assertNotIn(ref, self.images())
            self.assertNotIn(mk.sha256(img.layer_gz), self.ctr_content())
        finally:
            other.stop()

    def test_068_pull_with_basic_auth(self):
        self.upload_and_pull(self.basic_registry, "private", b"behind a login\n")
        # the same registry under a name with no credentials: refused, saying what to add
        other = f"localhost:{self.basic_registry.port}/busybox:private"
        p = self.ctl(["image", "pull", other], timeout=120)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(f"pull {other}: unauthorized (401): localhost:{self.basic_registry.port} asks "
                      "for a username and password; add them under registries.auth", p.stderr)
        self.assertIn("UNAUTHENTICATED", p.stderr)
        self.assertNotIn(other, self.images())

    def test_069_token_endpoint_with_login(self):
        self.upload_and_pull(self.registry, "login", b"token for a login\n", via=self.login_proxy.host)
        self.assertTrue(self.login_proxy.token_requests)
        # a wrong password: the token endpoint's 401, with the host to check
        ref = f"{self.badlogin_proxy.host}/busybox:login"
        p = self.ctl(["image", "pull", ref], timeout=120)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(f"pull {ref}: bad credentials (401): check the username and password for "
                      f"{self.badlogin_proxy.host} under registries.auth", p.stderr)
        self.assertNotIn(ref, self.images())

    def test_095_machine_config_apply(self):
        """A new registry login and insecure host, applied to the running capsule: in effect for
        the next pull, no restart; saved; bad or dangerous configs refused and nothing changed."""
        path = os.path.join(self.capsule.cfgdir, "machine.yaml")
        with open(path) as f:
            before = f.read()
        late = TokenProxy(self.registry.host, login=("carol", "late login")).start()
        try:
            img = mk.Image(extra=b"after a config change\n")
            self.registry.upload("busybox", "late", img)
            ref = f"{late.host}/busybox:late"
            p = self.ctl(["image", "pull", ref], timeout=120)
            self.assertEqual(p.returncode, 1, p.stdout)  # HTTPS to a plain-HTTP host
            new = before.replace("  insecure: [", f'  insecure: ["{late.host}", ', 1).replace(
                "  auth:\n", f'  auth:\n    - {{host: "{late.host}", username: carol, password: "late login"}}\n', 1)
            self.assertNotEqual(new, before)
            newfile = os.path.join(self.tmp, "machine-new.yaml")
            with open(newfile, "w") as f:
                f.write(new + "# edited by the test\n")
            # dry run: says what would change, changes nothing
            p = self.ctl(["machine-config", "apply", "-f", newfile, "--dry-run"], check=True)
            self.assertIn("would change: registries", p.stdout)
            with open(path) as f:
                self.assertEqual(f.read(), before)
            p = self.ctl(["machine-config", "apply", "-f", newfile], check=True)
            self.assertIn("changed: registries", p.stdout)
            self.assertIn("in effect now: registries", p.stdout)
            self.assertNotIn("next boot", p.stdout)
            with open(path) as f:
                self.assertEqual(f.read(), new + "# edited by the test\n")  # kept as written
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
            p = self.ctl(["image", "pull", ref], timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn(img.manifest_digest, p.stdout)
            self.assertTrue(late.token_requests)
            # the same again: unchanged
            p = self.ctl(["machine-config", "apply", "-f", newfile], check=True)
            self.assertIn("unchanged", p.stdout)
            # a network change waits for the next boot
            net = new.replace("dhcp: true", "dhcp: false\n  address: 10.9.8.7/24", 1)
            self.assertNotEqual(net, new)
            with open(newfile, "w") as f:
                f.write(net)
            p = self.ctl(["-o", "json", "machine-config", "apply", "-f", newfile, "--dry-run"], check=True)
            self.assertEqual(json.loads(p.stdout), {"changed": ["network"], "applied": [],
                                                    "rebootRequired": True, "dryRun": True})
            # the update settings are live (the next push checks against the new trusted keys)
            upd = new.replace("updates:\n", "updates:\n  commitWindow: 10m\n", 1)
            self.assertNotEqual(upd, new)
            with open(newfile, "w") as f:
                f.write(upd)
            p = self.ctl(["-o", "json", "machine-config", "apply", "-f", newfile, "--dry-run"], check=True)
            self.assertEqual(json.loads(p.stdout), {"changed": ["updates"], "applied": [],
                                                    "rebootRequired": False, "dryRun": True})
            # an unknown field: refused, naming the file, line and field
            with open(newfile, "w") as f:
                f.write(new.replace("hostname:", "colour: blue\nhostname:", 1))
            p = self.ctl(["machine-config", "apply", "-f", newfile])
            self.assertEqual(p.returncode, 1)
            self.assertIn(f"{newfile}:", p.stderr)
            self.assertIn('unknown field "colour"', p.stderr)
            self.assertIn("nothing was applied", p.stderr)
            # another machine's PKI (a different CA): refused unless asked for
            other = os.path.join(self.tmp, "other-cfg")
            harness.ctl(["gen", "config", "other", "--endpoint", "127.0.0.1:1", "-o", other], check=True)
            with open(os.path.join(other, "machine.yaml")) as f:
                foreign = f.read()
            with open(newfile, "w") as f:
                f.write(foreign)
            p = self.ctl(["machine-config", "apply", "-f", newfile])
            self.assertEqual(p.returncode, 1)
            self.assertIn("pki.ca differs", p.stderr)
            self.assertIn("--replace-ca", p.stderr)
            self.assertIn("FAILED_PRECONDITION", p.stderr)
            with open(path) as f:
                self.assertEqual(f.read(), new + "# edited by the test\n")
            # a certificate with another machine's key
            mixed = new.split("  key: |")[0] + "  key: |" + foreign.split("  key: |")[1].split("registries:")[0]
            mixed += "registries:" + new.split("registries:")[1]
            with open(newfile, "w") as f:
                f.write(mixed)
            p = self.ctl(["machine-config", "apply", "-f", newfile])
            self.assertEqual(p.returncode, 1, p.stdout)
            self.assertIn("pki.key does not match pki.cert", p.stderr)
            # a reader may not change it
            rd = os.path.join(self.tmp, "reader.cfg")
            harness.ctl(["gen", "cert", "--role", "reader", "--name", "viewer", "--secrets",
                         self.capsule.secrets, "--endpoint", self.capsule.endpoint, "-o", rd], check=True)
            with open(newfile, "w") as f:
                f.write(before)
            p = self.capsule.ctl(["machine-config", "apply", "-f", newfile], config=rd)
            self.assertEqual(p.returncode, 1)
            self.assertIn("PERMISSION_DENIED", p.stderr)
        finally:
            late.stop()
            # put the original back for the tests after this one
            with open(os.path.join(self.tmp, "machine-orig.yaml"), "w") as f:
                f.write(before)
            self.ctl(["machine-config", "apply", "-f", os.path.join(self.tmp, "machine-orig.yaml")],
                     check=True)

    def test_065_pull_corrupt_blob_leaves_nothing(self):
        img = mk.Image(extra=b"corrupted on the wire\n")
        self.registry.upload("busybox", "3", img)
        ref = f"{self.proxy.host}/busybox:3"
        images_before = self.ctr_images()
        self.proxy.corrupt_blobs = True
        try:
            p = self.ctl(["image", "pull", ref], timeout=120)
        finally:
            self.proxy.corrupt_blobs = False
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(f"pull {ref}", p.stderr)
        self.assertIn("DATA_LOSS", p.stderr)
        self.assertEqual(self.ctr_images(), images_before)
        self.assertNotIn(mk.sha256(img.layer_gz), self.ctr_content())
        self.assertNotIn(mk.sha256(img.manifest), self.ctr_content())

    def test_07_pull_needs_insecure_listing(self):
        # a registry not in the insecure list is spoken to over HTTPS, which fails clearly
        other = Registry(self.tmp + "/r2")
        p = self.ctl(["image", "pull", f"127.0.0.1:{other.port}/busybox:1"])
        self.assertEqual(p.returncode, 1)
        self.assertIn(f"pull 127.0.0.1:{other.port}/busybox:1", p.stderr)
        self.assertIn("https://", p.stderr)

    def test_08_used_by(self):
        manifest = os.path.join(self.tmp, "web.yaml")
        with open(manifest, "w") as f:
            f.write("kind: Container\nname: web\nimage: capsule.local/busybox\ncommand: [sleep, '3600']\n")
        p = self.ctl(["apply", "-f", manifest])
        self.assertEqual(p.returncode, 0, p.stderr)
        try:
            im = self.images()["capsule.local/busybox:latest"]
            self.assertEqual(im["usedBy"], ["web"])
            self.assertRegex(self.ctl(["image", "ls"], check=True).stdout,
                             r"capsule.local/busybox:latest\s.*\sweb\n")
            p = self.ctl(["image", "rm", "busybox"])  # docker.io/library/busybox: not present
            self.assertEqual(p.returncode, 1)
            self.assertIn("NOT_FOUND", p.stderr)
            p = self.ctl(["image", "rm", "capsule.local/busybox"])
            self.assertEqual(p.returncode, 1)
            self.assertIn("FAILED_PRECONDITION", p.stderr)
            self.assertIn("used by workload(s) web", p.stderr)
            self.assertIn("capsule.local/busybox:latest", self.ctr_images())
        finally:
            self.ctl(["delete", "web"], timeout=120)

    def test_085_pull_on_first_use(self):
        img = mk.Image(extra=b"pulled on first use\n")
        digest = self.registry.upload("busybox", "first", img)
        ref = f"{self.registry.host}/busybox:first"
        self.assertNotIn(ref, self.ctr_images())
        manifest = os.path.join(self.tmp, "first.yaml")
        with open(manifest, "w") as f:
            f.write(f"kind: Container\nname: first\nimage: {ref}\n"
                    "command: [sh, -c, 'cat /bin/.variant; trap \"exit 0\" TERM; while true; do sleep 1; done']\n"
                    "---\nkind: Container\nname: never\nimage: capsule.local/absent:1\npullPolicy: Never\n"
                    "command: [true]\n")
        self.ctl(["apply", "-f", manifest], check=True)
        try:
            def phase(name):
                return json.loads(self.ctl(["-o", "json", "get", name], check=True).stdout)["status"]
            st = harness.wait_for(lambda: (lambda s: s if s["phase"] == "Running" else None)(phase("first")),
                                  timeout=60, what="first to run after its pull")
            self.assertEqual(st["imageDigest"], digest)
            self.assertIn(ref, self.ctr_images())
            harness.wait_for(lambda: "pulled on first use" in self.ctl(["logs", "first"]).stdout,
                             what="output of the pulled image")
            # pullPolicy Never with an absent image: it does not run, and says why
            st = harness.wait_for(lambda: (lambda s: s if s["phase"] == "Backoff" else None)(phase("never")),
                                  timeout=30, what="never to back off")
            self.assertIn("capsule.local/absent:1", st["message"])
            self.assertNotIn("capsule.local/absent:1", self.ctr_images())
        finally:
            self.ctl(["delete", "first", "never"], timeout=120)

    def test_09_rm(self):
        p = self.ctl(["image", "rm", "capsule.local/busybox:oci"], check=True)
        self.assertIn("deleted capsule.local/busybox:oci", p.stdout)
        self.assertNotIn("capsule.local/busybox:oci", self.images())
        self.assertNotIn("capsule.local/busybox:oci", self.ctr_images())
        p = self.ctl(["image", "rm", "capsule.local/busybox:oci"])
        self.assertEqual(p.returncode, 1)
        self.assertIn("not found", p.stderr)
        self.assertIn("NOT_FOUND", p.stderr)

    def test_10_cli_usage(self):
        for args in (["image", "--help"], ["image", "push", "--help"], ["image", "pull", "--help"],
                     ["image", "ls", "--help"], ["image", "rm", "--help"]):
            p = self.ctl(args)
            self.assertEqual(p.returncode, 0, args)
            self.assertIn("usage: capsulectl image", p.stdout)
        self.assertEqual(self.ctl(["image"]).returncode, 2)
        self.assertEqual(self.ctl(["image", "frob"]).returncode, 2)
        self.assertEqual(self.ctl(["image", "push"]).returncode, 2)
        self.assertEqual(self.ctl(["image", "pull"]).returncode, 2)
        self.assertEqual(self.ctl(["image", "push", "/nonexistent.tar"]).returncode, 1)
        y = self.ctl(["-o", "yaml", "image", "ls"], check=True).stdout
        self.assertRegex(y, r"name: \"?capsule.local/busybox:latest")


if __name__ == "__main__":
    harness.main()
