#!/usr/bin/env python3
"""A/B updates through the real capsuled and capsulectl in host mode, against a directory that
stands in for the machine (`capsuled serve --update-sysroot DIR`: DIR/esp is the ESP, the slot
partitions are files, the kernel command line and LoaderEntrySelected are files, and a reboot
writes DIR/reboot-requested). Bundles are built with mkimage/bundle.sh from small parts.

Covers: status of a fresh machine; refusals that change nothing (unknown key, not newer) or leave
the slot empty (tampered part, too big, truncated upload); a good push (one-try entry, parts
where they belong); the tentative boot committing by itself; rollback after a commit (the other
slot, tentatively); rollback of a tentative boot (reason kept, entry spent); a tentative boot that
ended without a decision (the fallback boot records why). The booted image itself is e2e's."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
from harness import Capsule, wait_for

BUNDLE_SH = os.path.join(harness.SOURCE_DIR, "mkimage", "bundle.sh")
SLOT_BYTES = 4 << 20


def efivar(text):
    return b"\x06\x00\x00\x00" + (text + "\0").encode("utf-16-le")


class UpdatesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="capsule-upd-")
        cls.sys = os.path.join(cls.tmp, "sys")
        cls.capsule = Capsule(os.path.join(cls.tmp, "c"),
                              extra_args=["--update-sysroot", cls.sys])
        cls.key = os.path.join(cls.capsule.secrets, "update-signing.key")
        cls.other_key = os.path.join(cls.tmp, "other.key")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", cls.other_key],
                       check=True, capture_output=True)
        esp = os.path.join(cls.sys, "esp")
        for d in ("esp/loader/entries", "esp/a", "proc", "efivars", "dev/disk/by-partlabel"):
            os.makedirs(os.path.join(cls.sys, d))
        cls.write(esp + "/loader/loader.conf", "default capsule-a.conf\ntimeout 0\n")
        cls.write(esp + "/loader/entries/capsule-a.conf",
                  "title Capsule 0.1.0 (slot a)\nversion 0.1.0\nlinux /a/vmlinuz\n")
        for s in ("slot_a", "slot_b"):
            with open(os.path.join(cls.sys, "dev/disk/by-partlabel", s), "wb") as f:
                f.write(b"OLD!" * (SLOT_BYTES // 4))
        cls.boot("a", "capsule-a.conf", "0.1.0", start=False)
        cls.capsule.start()

    @classmethod
    def stop(cls):
        """Stops capsuled; a clean SIGTERM exits 0 (under ASan a leak or error does not)."""
        rc = cls.capsule.stop()
        if rc not in (0, None):
            raise AssertionError(f"capsuled exited {rc} on SIGTERM:\n{cls.capsule.logs()[-6000:]}")

    @classmethod
    def tearDownClass(cls):
        cls.stop()
        if os.environ.get("KEEP"):
            print(cls.capsule.logs()[-5000:])
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @staticmethod
    def write(path, text):
        with open(path, "w" if isinstance(text, str) else "wb") as f:
            f.write(text)

    @classmethod
    def boot(cls, slot, entry, version, start=True):
        """What a reboot into entry looks like to capsuled (systemd-boot renamed a counting entry
        to its next name before booting it; the variable keeps the name it was chosen by)."""
        if cls.capsule.proc:
            cls.stop()
        cls.write(os.path.join(cls.sys, "proc/cmdline"), f"capsule.slot={slot} quiet\n")
        cls.write(os.path.join(cls.sys, "efivars/LoaderEntrySelected"), efivar(entry))
        cls.write(os.path.join(cls.sys, "version"), version + "\n")
        if os.path.exists(os.path.join(cls.sys, "reboot-requested")):
            os.unlink(os.path.join(cls.sys, "reboot-requested"))
        if "+" in entry:
            d = os.path.join(cls.sys, "esp/loader/entries")
            base, counter = entry[:-5].split("+")
            left, done = (counter.split("-") + ["0"])[:2]
            nxt = f"{base}+{max(int(left) - 1, 0)}-{int(done) + 1}.conf"
            os.rename(os.path.join(d, entry), os.path.join(d, nxt))
        if start:
            cls.capsule.start()

    def ctl(self, *args, check=False, timeout=60):
        env = dict(os.environ, CAPSULECONFIG=self.capsule.config)
        return harness.ctl(["--capsule", self.capsule.endpoint, *args], env=env, check=check,
                           timeout=timeout)

    def status(self):
        return json.loads(self.ctl("-o", "json", "update", "status", check=True).stdout)

    def bundle(self, version, key=None, root=b"R" * 100000, name=None, tamper=False, extra=()):
        d = tempfile.mkdtemp(dir=self.tmp)
        self.write(d + "/vmlinuz", b"K" * 5000 + version.encode())
        self.write(d + "/initramfs.img", b"I" * 3000 + version.encode())
        self.write(d + "/rootfs.sqfs", root + version.encode())
        subprocess.run([BUNDLE_SH, "--out", d, "--version", version, "--signing-key",
                        key or self.key, *extra], check=True, capture_output=True)
        path = f"{d}/capsule-{version}.bundle"
        if tamper:  # one byte of the root image, after signing
            with open(path, "rb") as f:
                data = bytearray(f.read())
            at = data.rfind(b"RRRR")
            data[at] ^= 1
            self.write(path, bytes(data))
        return path, d

    def slot_b(self):
        with open(os.path.join(self.sys, "dev/disk/by-partlabel/slot_b"), "rb") as f:
            return f.read()

    def entries(self):
        return sorted(os.listdir(os.path.join(self.sys, "esp/loader/entries")))

    def default(self):
        with open(os.path.join(self.sys, "esp/loader/loader.conf")) as f:
            return [l.split()[1] for l in f if l.startswith("default ")][0]

    def test_1_fresh(self):
        s = self.status()
        self.assertEqual((s["bootedSlot"], s["bootedVersion"], s["state"]), ("a", "0.1.0", "committed"))
        self.assertEqual(s["slots"]["a"], {"version": "0.1.0", "state": "good"})
        self.assertEqual(s["slots"]["b"]["state"], "empty")
        self.assertEqual((s["defaultSlot"], s["lastGoodSlot"]), ("a", "a"))
        p = self.ctl("update", "commit")
        self.assertEqual(p.returncode, 1)
        self.assertIn("nothing to commit", p.stderr)

    def test_2_refused_before_writing(self):
        before = self.slot_b()
        path, _ = self.bundle("0.2.0", key=self.other_key)
        p = self.ctl("update", "push", path, "--no-reboot")
        self.assertEqual(p.returncode, 1)
        self.assertIn("PERMISSION_DENIED", p.stderr)
        path, _ = self.bundle("0.1.0")
        p = self.ctl("update", "push", path, "--no-reboot")
        self.assertIn("FAILED_PRECONDITION", p.stderr)
        self.assertIn("0.1.0", p.stderr)
        # a version that leaves /perm in a format this one could not read after a rollback
        path, _ = self.bundle("0.2.0", extra=("--perm-format", "2", "--perm-compat", "2"))
        p = self.ctl("update", "push", path, "--no-reboot")
        self.assertEqual(p.returncode, 1)
        self.assertIn("FAILED_PRECONDITION", p.stderr)
        self.assertIn("reading format 2 or newer", p.stderr)
        self.assertEqual(self.slot_b(), before, "slot b untouched by refused bundles")
        self.assertEqual(self.entries(), ["capsule-a.conf"])

    def test_3_refused_slot_left_empty(self):
        path, _ = self.bundle("0.2.0", tamper=True)
        p = self.ctl("update", "push", path, "--no-reboot")
        self.assertIn("DATA_LOSS", p.stderr)
        self.assertIn("rootfs.sqfs", p.stderr)
        self.assertEqual(self.slot_b()[:4096], b"\0" * 4096, "slot b marked empty")
        self.assertEqual(self.entries(), ["capsule-a.conf"])
        path, _ = self.bundle("0.2.0", root=b"R" * (SLOT_BYTES + 1))
        p = self.ctl("update", "push", path, "--no-reboot")
        self.assertIn("RESOURCE_EXHAUSTED", p.stderr)
        path, _ = self.bundle("0.2.0")
        cut = path + ".cut"
        with open(path, "rb") as f, open(cut, "wb") as g:
            g.write(f.read()[:4096 + 512 * 20])
        p = self.ctl("update", "push", cut, "--no-reboot")
        self.assertIn("DATA_LOSS", p.stderr)
        self.assertIn("truncated", p.stderr)
        self.assertEqual(self.entries(), ["capsule-a.conf"])
        self.assertEqual(self.status()["slots"]["b"]["state"], "empty")

    def test_3b_events(self):
        env = dict(os.environ, CAPSULECONFIG=self.capsule.config)
        ev = subprocess.Popen([harness.CAPSULECTL, "--capsule", self.capsule.endpoint, "events"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1)
            path, _ = self.bundle("0.2.0", key=self.other_key)
            self.ctl("update", "push", path, "--no-reboot")
            time.sleep(1.5)
        finally:
            ev.terminate()
        out = ev.communicate(timeout=10)[0]
        self.assertRegex(out, r"update +os +receiving")
        self.assertRegex(out, r"update +os +refused .*signature.*nothing was written")

    def test_4_push_boot_commit_rollback(self):
        path, parts = self.bundle("0.2.0")
        p = self.ctl("update", "push", path, "--no-reboot", check=True)
        self.assertIn("installed 0.2.0 in slot b", p.stdout)
        self.assertIn("100%", p.stderr)
        self.assertEqual(self.entries(), ["capsule-a.conf", "capsule-b+1-0.conf"])
        self.assertEqual(self.default(), "capsule-b+1-0.conf")
        with open(parts + "/rootfs.sqfs", "rb") as f:
            root = f.read()
        self.assertEqual(self.slot_b()[:len(root)], root)
        with open(os.path.join(self.sys, "esp/b/initrd"), "rb") as f, \
                open(parts + "/initramfs.img", "rb") as g:
            self.assertEqual(f.read(), g.read())
        s = self.status()
        self.assertEqual(s["slots"]["b"], {"version": "0.2.0", "state": "pending"})

        # the tentative boot: no workloads, host-mode checks pass -> commits by itself
        self.boot("b", "capsule-b+1-0.conf", "0.2.0")
        s = wait_for(lambda: (lambda s: s if s["state"] == "committed" else None)(self.status()),
                     timeout=20, what="the tentative boot to commit")
        self.assertEqual((s["bootedSlot"], s["lastGoodSlot"], s["defaultSlot"]), ("b", "b", "b"))
        self.assertEqual(self.entries(), ["capsule-a.conf", "capsule-b.conf"])
        # serve restarts in the same boot: LoaderEntrySelected still names the counting entry,
        # the blessed entry on the ESP wins (no second decision that could roll back)
        self.stop()
        self.capsule.start()
        self.assertEqual(self.status()["state"], "committed")
        p = self.ctl("update", "push", path, "--no-reboot")
        self.assertIn("the same as the running 0.2.0", p.stderr)
        # a workload that cannot run here (no containerd): a's tentative boot will wait on it
        man = os.path.join(self.tmp, "w.yaml")
        self.write(man, "kind: Container\nname: w\nimage: busybox\ncommand: [sleep, '9']\n")
        self.ctl("apply", "-f", man, check=True)

        # rollback after a commit: to a, tentatively (a holds a good version)
        p = self.ctl("update", "rollback", check=True)
        self.assertIn("slot a", p.stdout)
        wait_for(lambda: os.path.exists(os.path.join(self.sys, "reboot-requested")),
                 what="the reboot")
        self.assertEqual(self.entries(), ["capsule-a+1-0.conf", "capsule-b.conf"])
        self.assertEqual(self.default(), "capsule-a+1-0.conf")

        # a's tentative boot, rolled back on request -> b, with the reason
        self.boot("a", "capsule-a+1-0.conf", "0.1.0")
        s = self.status()
        self.assertEqual(s["state"], "tentative")
        self.assertGreater(s["commitDeadlineUnix"], time.time())
        p = self.ctl("update", "push", path, "--no-reboot")
        self.assertIn("tentative", p.stderr)
        self.assertIn("workloads", s["message"])
        p = self.ctl("update", "rollback", check=True)
        self.assertIn("slot b", p.stdout)
        wait_for(lambda: os.path.exists(os.path.join(self.sys, "reboot-requested")),
                 what="the reboot")
        self.assertEqual(self.entries(), ["capsule-a+0-1.conf", "capsule-b.conf"])
        self.assertEqual(self.default(), "capsule-b.conf")
        s = self.status()
        self.assertIn("rollback requested by", s["lastRollbackReason"])
        self.assertEqual(s["slots"]["a"]["state"], "failed")

    def test_5_failed_try_is_recorded(self):
        # b is good; a holds a good or spent entry from test 4. Push 0.3.0 into a from b.
        self.boot("b", "capsule-b.conf", "0.2.0")
        s = self.status()
        self.assertEqual(s["state"], "committed")
        path, _ = self.bundle("0.3.0")
        self.ctl("update", "push", path, "--no-reboot", check=True)
        self.assertIn("capsule-a+1-0.conf", self.entries())
        # its boot panics before capsuled: systemd-boot spent the try, the next boot is b's
        d = os.path.join(self.sys, "esp/loader/entries")
        os.rename(os.path.join(d, "capsule-a+1-0.conf"), os.path.join(d, "capsule-a+0-1.conf"))
        self.boot("b", "capsule-b.conf", "0.2.0")
        s = self.status()
        self.assertEqual(s["slots"]["a"], {"version": "0.3.0", "state": "failed"})
        self.assertIn("did not commit", s["lastRollbackReason"])
        self.assertIn("0.3.0", s["lastRollbackReason"])
        self.assertEqual((s["defaultSlot"], s["lastGoodSlot"]), ("b", "b"))
        p = self.ctl("update", "rollback")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no good version", p.stderr)


if __name__ == "__main__":
    harness.main()
