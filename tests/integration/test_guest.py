#!/usr/bin/env python3
"""capsule-guest in host mode: the Guest service (Status, Logs, Exec, Stop) over a unix socket,
with the workload run directly on the host (--no-chroot). Each test starts its own capsule-guest
and stops it by PID."""

import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness

GUEST = os.path.join(harness.BUILD_DIR, "src", "capsule-guest", "capsule-guest")

try:
    import grpc
except ImportError:
    print("test_guest: python3-grpcio is not installed", file=sys.stderr)
    sys.exit(77)
if not os.access(GUEST, os.X_OK):
    print(f"test_guest: {GUEST} not built", file=sys.stderr)
    sys.exit(77)
if not shutil.which("protoc"):
    print("test_guest: protoc not installed (needed for the Python stubs)", file=sys.stderr)
    sys.exit(77)

pb = harness.proto_modules()["guest"]


def frame(rc):
    data = rc.SerializeToString()
    buf = b"CAPSULE1" + struct.pack("<I", len(data)) + data
    return buf + b"\0" * (-len(buf) % 512)


class Guest:
    def __init__(self, tmp, argv, **fields):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "guest.sock")
        self.config = os.path.join(tmp, "run.cfg")
        self.log_path = os.path.join(tmp, "guest.log")
        rc = pb.RunConfig(argv=argv, **fields)
        with open(self.config, "wb") as f:
            f.write(frame(rc))
        self.proc = None
        self.chan = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([GUEST, "--listen", "unix:" + self.sock, "--root", self.tmp,
                                      "--config", self.config, "--no-chroot"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        harness.wait_for(lambda: os.path.exists(self.sock) or self.proc.poll() is not None,
                         what="capsule-guest to listen")
        if self.proc.poll() is not None:
            raise AssertionError(f"capsule-guest exited {self.proc.returncode}:\n{self.logs()}")
        self.chan = grpc.insecure_channel("unix:" + self.sock)
        harness.wait_for(lambda: self.status().ready, what="capsule-guest to be ready")
        return self

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.chan:
            self.chan.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def unary(self, name, req, resp_cls, timeout=20):
        fn = self.chan.unary_unary(f"/capsule.guest.v1.Guest/{name}",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=resp_cls.FromString)
        return fn(req, timeout=timeout)

    def status(self):
        return self.unary("Status", pb.StatusRequest(), pb.StatusResponse)

    def log_stream(self, follow=False, tail=0, timeout=20):
        fn = self.chan.unary_stream("/capsule.guest.v1.Guest/Logs",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=pb.LogChunk.FromString)
        return fn(pb.LogsRequest(follow=follow, tail=tail), timeout=timeout)

    def exec(self, command, tty=False, stdin=None, timeout=20):
        """Runs command; returns (stdout bytes, stderr bytes, exit code). Half-closes once the exit
        code arrived (the server ends the call when the client half-closes)."""
        done = threading.Event()

        def requests():
            yield pb.ExecRequest(start=pb.ExecStart(command=command, tty=tty,
                                                    stdin=stdin is not None, rows=24, cols=80))
            if stdin is not None:
                yield pb.ExecRequest(stdin=stdin)
                yield pb.ExecRequest(close_stdin=True)
            done.wait(timeout)

        fn = self.chan.stream_stream("/capsule.guest.v1.Guest/Exec",
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=pb.ExecResponse.FromString)
        out, err, code = b"", b"", None
        for r in fn(requests(), timeout=timeout):
            kind = r.WhichOneof("msg")
            if kind == "stdout":
                out += r.stdout
            elif kind == "stderr":
                err += r.stderr
            elif kind == "exit_code":
                code = r.exit_code
                done.set()
        return out, err, code


class GuestTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="capsule-guest-it-")
        self.guests = []

    def tearDown(self):
        for g in self.guests:
            rc = g.stop()
            if rc not in (0, None):
                self.fail(f"capsule-guest exited {rc} on SIGTERM:\n{g.logs()[-4000:]}")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def guest(self, argv, **fields):
        g = Guest(self.tmp, argv, **fields).start()
        self.guests.append(g)
        return g

    def wait_chunks(self, g, pred, what):
        def look():
            chunks = list(g.log_stream())
            return chunks if pred(chunks) else None
        return harness.wait_for(look, timeout=15, what=what)

    def test_status_logs_exec_stop(self):
        g = self.guest(["sh", "-c", "echo out; echo err >&2; sleep 1; echo later; exec sleep 30"],
                       env=["GREETING=hello"], stop_grace_seconds=5)
        st = g.status()
        self.assertTrue(st.ready)
        self.assertTrue(st.running)
        self.assertGreater(st.pid, 0)
        self.assertGreater(st.started_unix_nano, 0)

        chunks = self.wait_chunks(g, lambda cs: {b"out\n", b"err\n"} <= {c.data for c in cs},
                                  "out and err in the log")
        by = {c.data: c for c in chunks}
        self.assertEqual(by[b"out\n"].stream, "stdout")
        self.assertEqual(by[b"err\n"].stream, "stderr")
        times = [c.time_unix_nano for c in chunks]
        self.assertEqual(times, sorted(times))
        self.assertEqual(len(set(times)), len(times))

        # follow: a line printed later arrives on the same stream
        seen = b""
        stream = g.log_stream(follow=True, timeout=15)
        for c in stream:
            seen += c.data
            if b"later\n" in seen:
                stream.cancel()
                break
        self.assertIn(b"later\n", seen)
        # tail: only the last chunk
        tail = list(g.log_stream(tail=1))
        self.assertEqual(len(tail), 1)
        self.assertEqual(tail[0].data, b"later\n")

        out, err, code = g.exec(["sh", "-c", "echo hi; echo oops >&2; exit 7"])
        self.assertEqual((out, err, code), (b"hi\n", b"oops\n", 7))
        out, _, code = g.exec(["sh", "-c", "echo $GREETING"])
        self.assertEqual((out, code), (b"hello\n", 0))
        out, _, code = g.exec(["sh", "-c", "test -t 0 && echo tty; exit 4"], tty=True)
        self.assertIn(b"tty", out)
        self.assertEqual(code, 4)
        out, _, code = g.exec(["cat"], stdin=b"bytes in\n")
        self.assertEqual((out, code), (b"bytes in\n", 0))

        with self.assertRaises(grpc.RpcError) as cm:
            g.exec(["no-such-program-xyz"])
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

        g.unary("Stop", pb.StopRequest(grace_seconds=5), pb.StopResponse)
        st = g.status()
        self.assertFalse(st.running)
        self.assertTrue(st.exited)
        self.assertEqual(st.exit_code, 143)
        self.assertGreaterEqual(st.exited_unix_nano, st.started_unix_nano)

    def test_exit_code_of_workload(self):
        g = self.guest(["sh", "-c", "echo bye; exit 3"])
        harness.wait_for(lambda: g.status().exited, what="the workload to exit")
        st = g.status()
        self.assertEqual(st.exit_code, 3)
        self.assertFalse(st.running)
        # the log ends (no follow hang) once the output is closed
        chunks = list(g.log_stream(follow=True, timeout=15))
        self.assertEqual(b"".join(c.data for c in chunks), b"bye\n")

    def test_bad_config(self):
        path = os.path.join(self.tmp, "bad.cfg")
        with open(path, "wb") as f:
            f.write(b"NOTCAPS1" + b"\0" * 504)
        p = subprocess.run([GUEST, "--listen", "unix:" + os.path.join(self.tmp, "x.sock"),
                            "--config", path, "--no-chroot"], capture_output=True, timeout=20)
        self.assertNotEqual(p.returncode, 0)
        msg = p.stderr.decode()
        self.assertIn(path, msg)
        self.assertIn("bad magic", msg)

    def test_missing_program(self):
        path = os.path.join(self.tmp, "run.cfg")
        with open(path, "wb") as f:
            f.write(frame(pb.RunConfig(argv=["/nonexistent/prog"])))
        p = subprocess.run([GUEST, "--listen", "unix:" + os.path.join(self.tmp, "y.sock"),
                            "--config", path, "--no-chroot"], capture_output=True, timeout=20)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("/nonexistent/prog", p.stderr.decode())


if __name__ == "__main__":
    harness.main()
