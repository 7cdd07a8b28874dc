#!/usr/bin/env python3
"""Volumes through capsulectl against a real `capsuled serve` (host mode, file backend: sparse
ext4 images, loop-mounted; needs root): create/ls/resize/rm, size enforced by the filesystem,
data kept across resize and restart, delete refused while attached, bad input refused with the
field named and nothing created, and crash safety: capsuled killed with SIGKILL at each step of
a create (CAPSULE_FAULT test seam) is repaired at the next start. Every mount the test's
capsuled made is unmounted at the end, even on failure (loop devices autoclear)."""

import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import stat
import sys
import tarfile
import tempfile
import time
import unittest

import harness
from harness import Capsule

MiB = 1 << 20


def mounts_under(path):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path + "/"):
                out.append(mp)
    return out


def can_grow_online():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))  # CAP_SYS_RESOURCE
    return False


def craft_backup(entries, size=32 * MiB, end=True):
    """A backup in `volume backup`'s format (meta entry, entries, end entry with the content hash)
    holding crafted entries: [(TarInfo, data bytes or None)]."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        add(".capsule-backup", f"capsule-volume-backup 1\nname=x\nsize_bytes={size}\n".encode())
        h = hashlib.sha256()
        for ti, data in entries:
            if data is not None:
                ti.size = len(data)
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
            h.update(ti.name.encode() + b"\0" + (data or b""))
        if end:
            add(".capsule-backup-end", f"entries={len(entries)}\ncontent_sha256={h.hexdigest()}\n".encode())
    return buf.getvalue()


def tinfo(name, type=tarfile.REGTYPE, linkname="", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.linkname = linkname
    ti.mode = mode
    return ti


@unittest.skipUnless(os.geteuid() == 0, "needs root (loop devices, mount)")
class VolumesTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="capsule-vol-")
        self.capsule = Capsule(self.tmp)
        self.env_backup = dict(os.environ)
        self.start()

    def tearDown(self):
        rc = self.capsule.stop()
        logs = self.capsule.logs()
        os.environ.clear()
        os.environ.update(self.env_backup)
        for mp in reversed(mounts_under(self.tmp)):
            subprocess.run(["umount", mp], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        # under ASan/UBSan builds: any report fails the test
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            self.assertNotIn(marker, logs)
        self.assertIn(rc, (0, None), logs[-3000:])

    def start(self, **env):
        os.environ.pop("CAPSULE_FAULT", None)
        os.environ.pop("CAPSULE_TEST_ATTACH", None)
        os.environ.update(env)
        self.capsule.start()
        os.environ.pop("CAPSULE_FAULT", None)
        os.environ.pop("CAPSULE_TEST_ATTACH", None)

    def restart(self, **env):
        self.assertEqual(self.capsule.stop(), 0)
        self.start(**env)

    @property
    def vdir(self):
        return os.path.join(self.capsule.root, "volumes")

    def mnt(self, name):
        return os.path.join(self.vdir, name)

    def ctl(self, *args):
        return self.capsule.ctl(list(args))

    def ctl_bytes(self, args, stdin=None):
        """capsulectl with binary stdin/stdout (backup -o -, restore -f -)."""
        env = dict(os.environ, CAPSULECONFIG=self.capsule.config, CAPSULE_HOST=self.capsule.endpoint)
        return subprocess.run([harness.CAPSULECTL] + args, env=env, stdin=stdin, capture_output=True,
                              timeout=120)

    def ok(self, *args):
        p = self.ctl(*args)
        self.assertEqual(p.returncode, 0, f"capsulectl {' '.join(args)}: {p.stderr}")
        return p

    def fails(self, code, *args):
        p = self.ctl(*args)
        self.assertEqual(p.returncode, code, f"capsulectl {' '.join(args)}: {p.stdout} {p.stderr}")
        return p

    def ls(self):
        return {v["name"]: v for v in json.loads(self.ok("-o", "json", "volume", "ls").stdout)["volumes"]}

    def fs_size(self, name):
        st = os.statvfs(self.mnt(name))
        return st.f_blocks * st.f_frsize

    def assert_no_storage(self, name):
        self.assertFalse(os.path.exists(os.path.join(self.vdir, name + ".img")))
        self.assertFalse(os.path.exists(os.path.join(self.vdir, name + ".img.tmp")))
        self.assertFalse(os.path.exists(os.path.join(self.vdir, name + ".owner")))
        self.assertNotIn(self.mnt(name), mounts_under(self.tmp))

    # ---- tests --------------------------------------------------------------------------------

    def test_lifecycle(self):
        t0 = time.monotonic()
        p = self.ok("volume", "create", "data", "--size", "32Mi")
        create_s = time.monotonic() - t0
        self.assertIn("volume data created (32Mi)", p.stdout)
        self.assertIn(self.mnt("data"), mounts_under(self.tmp))
        # idempotent with the same size; a different size names resize
        self.assertIn("unchanged", self.ok("volume", "create", "data", "--size", "32Mi").stdout)
        p = self.fails(1, "volume", "create", "data", "--size", "64Mi")
        self.assertIn("ALREADY_EXISTS", p.stderr)
        self.assertIn("capsulectl volume resize data --size 64Mi", p.stderr)
        # ls: table and json
        p = self.ok("volume", "ls")
        self.assertRegex(p.stdout, r"NAME\s+SIZE\s+USED\s+ATTACHED-TO")
        self.assertRegex(p.stdout, r"\ndata\s+32Mi\s+\S+\s+-\n")
        v = self.ls()["data"]
        self.assertEqual(v["sizeBytes"], 32 * MiB)
        self.assertEqual(v["backend"], "file")
        self.assertEqual(v["attachedTo"], [])
        self.assertIn("sizeBytes: 33554432", self.ok("-o", "yaml", "volume", "ls").stdout)
        # data in, then grow: online if this host allows it, else unmounted around the grow
        payload = os.urandom(4 * MiB)
        with open(os.path.join(self.mnt("data"), "blob"), "wb") as f:
            f.write(payload)
        before = self.fs_size("data")
        t0 = time.monotonic()
        p = self.ok("volume", "resize", "data", "--size", "96Mi")
        resize_s = time.monotonic() - t0
        self.assertIn("resized (96Mi)", p.stdout)
        self.assertGreater(self.fs_size("data"), before + 60 * MiB)
        with open(os.path.join(self.mnt("data"), "blob"), "rb") as f:
            self.assertEqual(f.read(), payload)
        self.assertEqual(self.ls()["data"]["sizeBytes"], 96 * MiB)
        self.assertGreaterEqual(self.ls()["data"]["usedBytes"], 4 * MiB)
        # same size: no-op; shrinking: refused, nothing changes
        self.ok("volume", "resize", "data", "--size", "96Mi")
        p = self.fails(1, "volume", "resize", "data", "--size", "32Mi")
        self.assertIn("FAILED_PRECONDITION", p.stderr)
        self.assertIn("cannot shrink", p.stderr)
        self.assertEqual(self.ls()["data"]["sizeBytes"], 96 * MiB)
        # the filesystem enforces the size
        with self.assertRaises(OSError) as cm:
            with open(os.path.join(self.mnt("data"), "fill"), "wb") as f:
                for _ in range(200):
                    f.write(b"\0" * MiB)
                f.flush()
                os.fsync(f.fileno())
        self.assertEqual(cm.exception.errno, errno.ENOSPC)
        os.unlink(os.path.join(self.mnt("data"), "fill"))
        # delete
        t0 = time.monotonic()
        self.assertIn("volume data deleted", self.ok("volume", "rm", "data").stdout)
        rm_s = time.monotonic() - t0
        self.assertEqual(self.ls(), {})
        self.assert_no_storage("data")
        p = self.fails(1, "volume", "rm", "data")
        self.assertIn('volume "data" not found', p.stderr)
        self.assertIn("NOT_FOUND", p.stderr)
        print(f"\ntiming (capsulectl round trip incl. TLS): create 32Mi {create_s * 1000:.0f} ms, "
              f"resize {resize_s * 1000:.0f} ms ({'online' if can_grow_online() else 'offline'}), "
              f"rm {rm_s * 1000:.0f} ms", file=sys.stderr)

    def test_bad_input_creates_nothing(self):
        cases = [
            (["volume", "create", "Bad_Name", "--size", "32Mi"], 1, 'name "Bad_Name"'),
            (["volume", "create", "-x", "--size", "32Mi"], 2, "usage"),
            (["volume", "create", "small", "--size", "1Mi"], 1, "size_bytes: 1Mi is below the minimum of 16Mi"),
            (["volume", "create", "huge", "--size", "100Ti"], 1, "size_bytes: 100Ti is above the maximum"),
            (["volume", "create", "zero", "--size", "0"], 1, "size_bytes: required"),
            (["volume", "create", "text", "--size", "lots"], 2, '--size "lots"'),
            (["volume", "create", "nosize"], 2, "--size is required"),
            (["volume", "create"], 2, "missing NAME"),
            (["volume", "resize", "ghost", "--size", "1Gi"], 1, 'volume "ghost" not found'),
            (["volume", "rm"], 2, "expected exactly one NAME"),
            (["volume", "frobnicate"], 2, "unknown subcommand"),
        ]
        for args, code, text in cases:
            with self.subTest(args=args):
                p = self.fails(code, *args)
                self.assertIn(text, p.stderr + p.stdout)
        self.assertEqual(self.ls(), {})
        self.assertEqual([n for n in os.listdir(self.vdir)], [])
        for sub in ("create", "ls", "resize", "rm"):
            p = self.ok("volume", sub, "--help")
            self.assertIn(f"usage: capsulectl volume {sub}", p.stdout)

    def test_restart_remounts_and_keeps_data(self):
        self.ok("volume", "create", "keep", "--size", "32Mi")
        self.ok("volume", "create", "also", "--size", "16Mi")
        with open(os.path.join(self.mnt("keep"), "note"), "w") as f:
            f.write("still here")
        # a restart with the mounts in place: nothing to do
        self.restart()
        self.assertEqual(sorted(self.ls()), ["also", "keep"])
        self.assertEqual(mounts_under(self.vdir).count(self.mnt("keep")), 1)
        # as after a reboot: nothing mounted; the next start mounts every volume again
        self.assertEqual(self.capsule.stop(), 0)
        for mp in mounts_under(self.vdir):
            subprocess.run(["umount", mp], check=True)
        self.start()
        self.assertIn(self.mnt("keep"), mounts_under(self.vdir))
        self.assertIn(self.mnt("also"), mounts_under(self.vdir))
        with open(os.path.join(self.mnt("keep"), "note")) as f:
            self.assertEqual(f.read(), "still here")
        self.assertIn("volumes: recovered backend=file volumes=2 mounted=2", self.capsule.logs())

    def test_delete_refused_while_attached(self):
        self.ok("volume", "create", "data", "--size", "32Mi")
        # Test seam until the reconciler attaches volumes: CAPSULE_TEST_ATTACH=VOLUME:WORKLOAD
        self.restart(CAPSULE_TEST_ATTACH="data:web")
        p = self.fails(1, "volume", "rm", "data")
        self.assertIn('volume "data" is in use by web', p.stderr)
        self.assertIn("FAILED_PRECONDITION", p.stderr)
        self.assertRegex(self.ok("volume", "ls").stdout, r"\ndata\s+32Mi\s+\S+\s+web\n")
        self.assertEqual(self.ls()["data"]["attachedTo"], ["web"])
        p = self.ctl("volume", "resize", "data", "--size", "64Mi")
        if can_grow_online():
            self.assertEqual(p.returncode, 0, p.stderr)
        else:
            self.assertEqual(p.returncode, 1)
            self.assertIn("in use by web", p.stderr)
            self.assertIn("CAP_SYS_RESOURCE", p.stderr)
            self.assertEqual(self.ls()["data"]["sizeBytes"], 32 * MiB)
        self.assertIn(self.mnt("data"), mounts_under(self.vdir))
        self.restart()  # no longer attached
        self.ok("volume", "rm", "data")
        self.assert_no_storage("data")

    def crash_during_create(self, point):
        self.restart(CAPSULE_FAULT=point)
        proc = self.capsule.proc
        p = self.ctl("volume", "create", "crash", "--size", "32Mi")
        self.assertEqual(p.returncode, 1, p.stdout)
        proc.wait(timeout=20)
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        self.capsule.stop()
        self.assertIn(f"CAPSULE_FAULT={point}", self.capsule.logs())
        self.start()

    def test_crash_before_acknowledged_is_cleaned(self):
        self.ok("volume", "create", "other", "--size", "16Mi")
        for point in ("volume-after-mkfs", "volume-after-rename"):
            with self.subTest(point=point):
                self.crash_during_create(point)
                self.assertEqual(sorted(self.ls()), ["other"])
                self.assert_no_storage("crash")
                # and the name is usable again
                self.ok("volume", "create", "crash", "--size", "32Mi")
                self.ok("volume", "rm", "crash")
        self.assertIn(self.mnt("other"), mounts_under(self.vdir))

    def test_lost_store_adopts_volumes_and_keeps_data(self):
        """A store that was lost or replaced (e.g. /perm fell back to a tmpfs) must never delete
        volumes it did not make: it adopts them, data and size intact."""
        self.ok("volume", "create", "keep", "--size", "32Mi")
        with open(os.path.join(self.mnt("keep"), "precious"), "w") as f:
            f.write("do not lose me\n")
        self.assertEqual(self.capsule.stop(), 0)
        dbs = [n for n in os.listdir(self.capsule.root) if n.startswith("state.db")]
        self.assertTrue(dbs, os.listdir(self.capsule.root))
        for n in dbs:
            os.unlink(os.path.join(self.capsule.root, n))
        self.start()
        v = self.ls().get("keep")
        self.assertIsNotNone(v, "the volume was adopted by the new store")
        self.assertEqual(v["sizeBytes"], 32 * MiB)
        with open(os.path.join(self.mnt("keep"), "precious")) as f:
            self.assertEqual(f.read(), "do not lose me\n")
        self.assertIn("volumes: adopted keep", self.capsule.logs())
        # the new store owns nothing yet, but it can delete what it adopted, and create anew
        self.ok("volume", "rm", "keep")
        self.assert_no_storage("keep")
        self.ok("volume", "create", "keep", "--size", "16Mi")
        self.restart()
        self.assertEqual(self.ls()["keep"]["sizeBytes"], 16 * MiB)

    def test_crash_after_store_is_completed(self):
        self.crash_during_create("volume-after-store")
        v = self.ls()["crash"]
        self.assertEqual(v["sizeBytes"], 32 * MiB)
        self.assertIn(self.mnt("crash"), mounts_under(self.vdir))
        self.assertIn("unchanged", self.ok("volume", "create", "crash", "--size", "32Mi").stdout)


    # ---- backup and restore -------------------------------------------------------------------

    def fill(self, name):
        d = self.mnt(name)
        os.makedirs(os.path.join(d, "sub/deep"))
        with open(os.path.join(d, "sub/deep/f.txt"), "w") as f:
            f.write("hello\n")
        with open(os.path.join(d, "big"), "wb") as f:
            f.write(os.urandom(3 * MiB))
        os.chown(os.path.join(d, "sub/deep/f.txt"), 1234, 5678)
        os.chmod(os.path.join(d, "sub/deep/f.txt"), 0o640)
        os.symlink("/etc/passwd", os.path.join(d, "abs-link"))
        os.symlink("deep/f.txt", os.path.join(d, "sub/rel-link"))
        os.link(os.path.join(d, "big"), os.path.join(d, "big-hard"))
        with open(os.path.join(d, "big"), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def check_filled(self, name, big_sum):
        d = self.mnt(name)
        with open(os.path.join(d, "sub/deep/f.txt")) as f:
            self.assertEqual(f.read(), "hello\n")
        st = os.lstat(os.path.join(d, "sub/deep/f.txt"))
        self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)), (1234, 5678, 0o640))
        self.assertEqual(os.readlink(os.path.join(d, "abs-link")), "/etc/passwd")
        self.assertEqual(os.readlink(os.path.join(d, "sub/rel-link")), "deep/f.txt")
        with open(os.path.join(d, "big"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), big_sum)
        self.assertEqual(os.stat(os.path.join(d, "big")).st_ino, os.stat(os.path.join(d, "big-hard")).st_ino)

    def assert_no_restore_leftovers(self):
        self.assertEqual([f for f in os.listdir(self.vdir) if ".restore" in f], [])
        self.assertEqual([m for m in mounts_under(self.vdir) if ".restore" in m], [])

    def test_backup_restore_roundtrip(self):
        self.ok("volume", "create", "data", "--size", "32Mi")
        big = self.fill("data")
        out = os.path.join(self.tmp, "data.tar")
        env = dict(os.environ, CAPSULECONFIG=self.capsule.config, CAPSULE_HOST=self.capsule.endpoint)
        events = subprocess.Popen([harness.CAPSULECTL, "-o", "json", "events"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1)
        p = self.ok("volume", "backup", "data", "-o", out)
        self.ok("volume", "restore", "evcopy", "-f", out)
        with open(os.path.join(self.tmp, "bad.tar"), "wb") as f:
            f.write(b"junk" * 300)
        self.fails(1, "volume", "restore", "evcopy", "-f", os.path.join(self.tmp, "bad.tar"))
        time.sleep(1)
        events.terminate()
        seen = [(e.get("type"), e.get("name"), e.get("action"))
                for e in map(json.loads, events.communicate(timeout=10)[0].splitlines())]
        for ev in (("volume", "data", "backup-started"), ("volume", "data", "backed-up"),
                   ("volume", "evcopy", "restore-started"), ("volume", "evcopy", "restored"),
                   ("volume", "evcopy", "restore-failed")):
            self.assertIn(ev, seen)
        self.assertRegex(p.stdout, r"volume data backed up to .*data.tar \(.*, live copy, sha256 [0-9a-f]{64}\)")
        self.assertFalse(os.path.exists(out + ".tmp"))
        with tarfile.open(out) as t:
            names = t.getnames()
            self.assertEqual(names[0], ".capsule-backup")
            self.assertEqual(names[-1], ".capsule-backup-end")
            self.assertIn("sub/deep/f.txt", names)
            self.assertNotIn("lost+found", names)
            ti = t.getmember("sub/deep/f.txt")
            self.assertEqual((ti.uid, ti.gid, ti.uname, ti.gname), (1234, 5678, "", ""))
        # -o - writes the same bytes to stdout
        p = self.ctl_bytes(["volume", "backup", "data", "-o", "-"])
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out, "rb") as f:
            self.assertEqual(p.stdout[:100], f.read(100))
        self.assertIn(b"backed up to stdout", p.stderr)
        # restore into a new volume: the size the backup recorded
        p = self.ok("volume", "restore", "copy", "-f", out)
        self.assertIn("volume copy restored", p.stdout)
        self.assertEqual(self.ls()["copy"]["sizeBytes"], 32 * MiB)
        self.check_filled("copy", big)
        # over an existing volume: its files are replaced
        with open(os.path.join(self.mnt("data"), "later"), "w") as f:
            f.write("x")
        self.ok("volume", "restore", "data", "-f", out)
        self.assertFalse(os.path.exists(os.path.join(self.mnt("data"), "later")))
        self.check_filled("data", big)
        # from stdin, with a size, into a new volume
        with open(out, "rb") as f:
            p = self.ctl_bytes(["volume", "restore", "big", "-f", "-", "--size", "64Mi"], stdin=f)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.ls()["big"]["sizeBytes"], 64 * MiB)
        self.check_filled("big", big)
        p = self.fails(1, "volume", "restore", "data", "-f", out, "--size", "64Mi")
        self.assertIn("size_bytes", p.stderr)
        self.assert_no_restore_leftovers()
        # data survives a restart (the swapped image is the volume now)
        self.restart()
        self.check_filled("data", big)
        self.assert_no_restore_leftovers()
        p = self.fails(1, "volume", "backup", "nope", "-o", os.path.join(self.tmp, "nope.tar"))
        self.assertIn("NOT_FOUND", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "nope.tar")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "nope.tar.tmp")))

    def test_restore_refuses_bad_uploads_and_changes_nothing(self):
        self.ok("volume", "create", "data", "--size", "32Mi")
        big = self.fill("data")
        good = os.path.join(self.tmp, "good.tar")
        self.ok("volume", "backup", "data", "-o", good)
        with open(good, "rb") as f:
            raw = f.read()
        plain = io.BytesIO()
        with tarfile.open(fileobj=plain, mode="w") as t:
            t.addfile(tinfo("x"), io.BytesIO(b""))
        # the file corrupted at rest: one byte of big's data flipped
        corrupt = bytearray(raw)
        corrupt[len(raw) // 2] ^= 0xFF
        # the end entry missing (cut at an entry boundary): found by the missing end marker
        cut_at = raw.rindex(b".capsule-backup-end") // 512 * 512
        while cut_at > 0 and b"ustar" not in raw[cut_at:cut_at + 512]:
            cut_at -= 512
        cases = {
            "dotdot": (craft_backup([(tinfo("../evil"), b"x")]), '".." leaves the volume'),
            "dotdot-inner": (craft_backup([(tinfo("a/../../evil"), b"x")]), '".." leaves the volume'),
            "absolute": (craft_backup([(tinfo("/evil"), b"x")]), "absolute path"),
            "device": (craft_backup([(tinfo("null", tarfile.CHRTYPE), None)]), "device node refused"),
            "fifo": (craft_backup([(tinfo("p", tarfile.FIFOTYPE), None)]), "FIFO refused"),
            "hardlink-out": (craft_backup([(tinfo("h", tarfile.LNKTYPE, "../../etc/passwd"), None)]),
                             "hard link target"),
            "through-symlink": (craft_backup([(tinfo("l", tarfile.SYMTYPE, "/tmp"), None),
                                              (tinfo("l/evil"), b"x")]), "l/evil"),
            "oversize": (craft_backup([(tinfo("huge"), bytes(40 * MiB))]), "exceed the volume's size"),
            "no-end": (craft_backup([(tinfo("f"), b"x")], end=False), "truncated"),
            "cut-at-boundary": (raw[:cut_at], "truncated"),
            "cut-mid-entry": (raw[:len(raw) // 2], "runcated"),
            "corrupt": (bytes(corrupt), "INVALID_ARGUMENT"),
            "not-a-backup": (plain.getvalue(), "not a Capsule volume backup"),
            "empty": (b"", "INVALID_ARGUMENT"),
        }
        for case, (data, why) in cases.items():
            with self.subTest(case=case):
                path = os.path.join(self.tmp, case + ".tar")
                with open(path, "wb") as f:
                    f.write(data)
                p = self.fails(1, "volume", "restore", "data", "-f", path)
                self.assertIn(why, p.stderr)
                self.check_filled("data", big)
                # a new volume is not left behind either
                p = self.fails(1, "volume", "restore", "fresh", "-f", path)
                self.assertNotIn("fresh", self.ls())
                self.assert_no_restore_leftovers()
        self.assertFalse(os.path.exists("/tmp/evil"))
        self.assertEqual(sorted(self.ls()), ["data"])
        # the good backup still restores
        self.ok("volume", "restore", "data", "-f", good)
        self.check_filled("data", big)

    def test_restore_refused_while_attached(self):
        self.ok("volume", "create", "data", "--size", "32Mi")
        big = self.fill("data")
        out = os.path.join(self.tmp, "data.tar")
        self.ok("volume", "backup", "data", "-o", out)
        self.restart(CAPSULE_TEST_ATTACH="data:web,data:worker")
        self.ok("volume", "backup", "data", "-o", out)  # a backup while in use is fine
        p = self.fails(1, "volume", "restore", "data", "-f", out)
        self.assertIn("FAILED_PRECONDITION", p.stderr)
        self.assertIn('volume "data" is in use by web, worker', p.stderr)
        self.check_filled("data", big)
        self.assert_no_restore_leftovers()

    def test_crash_during_restore_changes_nothing(self):
        self.ok("volume", "create", "data", "--size", "32Mi")
        big = self.fill("data")
        out = os.path.join(self.tmp, "data.tar")
        self.ok("volume", "backup", "data", "-o", out)
        with open(os.path.join(self.mnt("data"), "later"), "w") as f:
            f.write("kept")
        for vol in ("data", "fresh"):
            with self.subTest(volume=vol):
                self.restart(CAPSULE_FAULT="volume-restore-after-begin")
                proc = self.capsule.proc
                p = self.ctl("volume", "restore", vol, "-f", out)
                self.assertEqual(p.returncode, 1, p.stdout)
                proc.wait(timeout=20)
                self.assertEqual(proc.returncode, -signal.SIGKILL)
                self.capsule.stop()
                self.start()
                self.assert_no_restore_leftovers()
                with open(os.path.join(self.mnt("data"), "later")) as f:
                    self.assertEqual(f.read(), "kept")


def nat_rules():
    return subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout


@unittest.skipUnless(os.geteuid() == 0, "needs root")
@unittest.skipUnless(shutil.which("containerd") and shutil.which("runc") and
                     os.path.exists("/usr/lib/cni/bridge"), "needs containerd, runc and CNI plugins")
class WorkloadVolumeNetworkTest(unittest.TestCase):
    """End to end: a container with a volume and a published port, through the reconciler's
    runtime glue (serve/runtime.c -> volume_attach, cni_setup, cni_write_etc). Skipped while that
    glue answers "not available yet"."""

    HOSTPORT = 18280 + os.getpid() % 500

    def setUp(self):
        import mkimage_busybox
        self.tmp = tempfile.mkdtemp(prefix="capsule-vn-")
        self.had_bridge = subprocess.run(["ip", "link", "show", "capsule0"],
                                         capture_output=True).returncode == 0
        self.had_chains = "CNI-HOSTPORT-DNAT" in nat_rules()
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            self.ip_forward = f.read().strip()
        self.containerd = harness.Containerd(self.tmp).start()
        self.capsule = Capsule(self.tmp, containerd=self.containerd.sock).start()
        mkimage_busybox.build(self.tmp)
        self.containerd.ctr(["images", "import", os.path.join(self.tmp, "busybox-oci.tar")], check=True)

    def tearDown(self):
        try:
            self.capsule.ctl(["delete", "web"])
            self.capsule.stop()
        finally:
            self.containerd.stop()
            for mp in reversed(mounts_under(self.tmp)):
                subprocess.run(["umount", "-l", mp], check=False)
            if not self.had_bridge:
                subprocess.run(["ip", "link", "del", "capsule0"], capture_output=True)
            if not self.had_chains and "CNI-DN-" not in nat_rules():
                for args in (["-D", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
                             ["-D", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
                             ["-D", "POSTROUTING", "-m", "comment", "--comment",
                              "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"]):
                    subprocess.run(["iptables", "-w", "-t", "nat"] + args, capture_output=True)
                for chain in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"):
                    subprocess.run(["iptables", "-w", "-t", "nat", "-F", chain], capture_output=True)
                    subprocess.run(["iptables", "-w", "-t", "nat", "-X", chain], capture_output=True)
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write(self.ip_forward)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def get(self, name):
        p = self.capsule.ctl(["-o", "json", "get", name])
        return json.loads(p.stdout) if p.returncode == 0 else None

    def test_container_with_volume_and_port(self):
        import mkimage_busybox
        manifest = os.path.join(self.tmp, "web.yaml")
        with open(manifest, "w") as f:
            f.write(f"""kind: Volume
name: site
size: 32Mi
---
kind: Container
name: web
image: {mkimage_busybox.DEFAULT_NAME}
command: ["busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
ports: ["{self.HOSTPORT}:80/tcp"]
mounts:
  - {{volume: site, path: /www}}
""")
        p = self.capsule.ctl(["apply", "-f", manifest])
        self.assertEqual(p.returncode, 0, p.stderr)

        def running(gen=1):
            w = self.get("web")
            if w and w["status"]["phase"] == "Running" and w["status"]["observedGeneration"] == gen:
                return w
            return None
        try:
            w = harness.wait_for(running, timeout=60, what="web to run")
        except AssertionError:
            raise AssertionError(f"web did not run: {self.get('web')}\n{self.capsule.logs()[-4000:]}")
        self.assertRegex(w["status"]["ipAddress"], r"^10\.88\.")
        site = os.path.join(self.capsule.root, "volumes", "site")
        with open(os.path.join(site, "index.html"), "w") as f:
            f.write("served from a volume\n")
        out = subprocess.run(["curl", "-sS", "-m", "5", f"http://127.0.0.1:{self.HOSTPORT}/"],
                             capture_output=True, text=True)
        self.assertEqual(out.stdout, "served from a volume\n", out.stderr)
        # the container writes into the volume; the host sees it
        p = self.capsule.ctl(["exec", "web", "--", "sh", "-c", "echo from-web > /www/x; cat /etc/hosts"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("\tweb", p.stdout)
        with open(os.path.join(site, "x")) as f:
            self.assertEqual(f.read(), "from-web\n")
        # a changed spec replaces the container; the volume's data stays and is served again
        with open(manifest, "a") as f:
            f.write("env: {GENERATION: '2'}\n")
        p = self.capsule.ctl(["apply", "-f", manifest])
        self.assertIn("container/web configured", p.stdout, p.stderr)
        harness.wait_for(lambda: running(2), timeout=60, what="web generation 2 to run")
        p = self.capsule.ctl(["exec", "web", "--", "cat", "/www/x"])
        self.assertEqual(p.stdout, "from-web\n", p.stderr)
        out = harness.wait_for(lambda: (lambda o: o if o.stdout else None)(
            subprocess.run(["curl", "-sS", "-m", "5", f"http://127.0.0.1:{self.HOSTPORT}/"],
                           capture_output=True, text=True)), timeout=20, what="port after replacement")
        self.assertEqual(out.stdout, "served from a volume\n")
        # in use: ls shows it, rm refuses
        vols = json.loads(self.capsule.ctl(["-o", "json", "volume", "ls"]).stdout)["volumes"]
        self.assertEqual([v["attachedTo"] for v in vols if v["name"] == "site"], [["web"]])
        p = self.capsule.ctl(["volume", "rm", "site"])
        self.assertEqual(p.returncode, 1)
        self.assertIn('volume "site" is in use by web', p.stderr)
        # a backup while the container writes into the volume
        env = dict(os.environ, CAPSULECONFIG=self.capsule.config, CAPSULE_HOST=self.capsule.endpoint)
        writer = subprocess.Popen([harness.CAPSULECTL, "exec", "web", "--", "sh", "-c",
                                   "i=0; while [ $i -lt 300 ]; do echo $i > /www/counter; i=$((i+1)); done"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        backup = os.path.join(self.tmp, "site.tar")
        p = self.capsule.ctl(["volume", "backup", "site", "-o", backup])
        writer.wait(timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("live copy", p.stdout)
        # restore refused while web mounts it
        p = self.capsule.ctl(["volume", "restore", "site", "-f", backup])
        self.assertEqual(p.returncode, 1)
        self.assertIn('volume "site" is in use by web', p.stderr)
        self.assertIn("FAILED_PRECONDITION", p.stderr)
        # delete the workload: network gone, volume free and kept
        self.assertEqual(self.capsule.ctl(["delete", "web"]).returncode, 0)
        harness.wait_for(lambda: self.get("web") is None, timeout=30, what="web to go")
        self.assertNotIn('id: \\"web\\"', nat_rules())
        self.assertNotIn("master capsule0", subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                           text=True).stdout)
        with open(os.path.join(site, "x")) as f:
            self.assertEqual(f.read(), "from-web\n")
        self.assertEqual(self.capsule.ctl(["volume", "rm", "site"]).returncode, 0)
        # restore the deleted volume from the backup; the workload sees its data again
        p = self.capsule.ctl(["volume", "restore", "site", "-f", backup])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("created with size 32Mi", p.stdout)
        p = self.capsule.ctl(["apply", "-f", manifest])
        self.assertEqual(p.returncode, 0, p.stderr)
        harness.wait_for(lambda: (lambda w: w if w and w["status"]["phase"] == "Running" else None)(
            self.get("web")), timeout=60, what="web to run on the restored volume")
        p = self.capsule.ctl(["exec", "web", "--", "cat", "/www/x", "/www/index.html"])
        self.assertEqual(p.stdout, "from-web\nserved from a volume\n", p.stderr)
        self.assertEqual(self.capsule.ctl(["delete", "web"]).returncode, 0)
        harness.wait_for(lambda: self.get("web") is None, timeout=30, what="web to go")
        self.assertEqual(self.capsule.ctl(["volume", "rm", "site"]).returncode, 0)


if __name__ == "__main__":
    harness.main()
