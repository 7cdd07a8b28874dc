#!/usr/bin/env python3
"""End-to-end test of A/B updates on a booted Capsule, under OVMF + systemd-boot (design §9).

One machine, one disk, driven only through capsulectl:
  v1 (the e2e image, 0.1.0) boots with a workload writing to a volume;
  `update push` v2 (0.2.0) -> reboot -> tentative -> commits by itself -> status shows v2
    committed in slot b, the workload Running with its volume data;
  `update rollback` -> v1's slot a (good) boots tentatively and commits; rollback again -> v2;
  bad bundles, each refused with its reason and the machine still healthy on v2:
    signed with an unknown key (nothing written), tampered after signing (slot left empty),
    a power cut (QEMU killed) in the middle of the push (v2 boots, slot a empty);
  bad updates that boot, each back on v2 by itself with the reason in `update status`:
    v3 (0.3.0, built with --test-fail-health: its health check fails) -> rolls back;
    a bundle whose kernel panics (an initramfs with no /init) -> panic=10, the spent one-try
    entry makes systemd-boot fall back;
    a power cut during the tentative boot -> falls back;
  `update rollback` on v2 is refused: slot a holds no good version.
Prints `FIGURE` lines: push throughput, push -> API on the new slot, and for each bad case the
time back to a healthy API.

    tests/e2e/e2e_update.py [--build-dir DIR] [--keep] [--only CASE,...]

v2 and v3 are built with mkimage/build.sh --version (--test-fail-health for v3) into
out/e2e-update/, rebuilt when the e2e image is newer. Exit codes as e2e.py: 0, 1, 77 (skip)."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import e2e  # noqa: E402
import mkimage_busybox  # noqa: E402
from e2e import check, Failure  # noqa: E402

UPDATE_DIR = os.path.join(e2e.SRC, "out/e2e-update")
MANIFEST = """kind: Volume
name: data
size: 32Mi
---
kind: Container
name: writer
image: capsule.local/busybox:latest
command: ["sh", "-c"]
args: ["date >> /data/boots; [ -f /data/file ] || echo kept-across-updates > /data/file; exec sleep 1000000"]
mounts:
  - {volume: data, path: /data}
restart: always
"""
FIGURES = []


def figure(what, value, unit="s"):
    line = f"FIGURE update {what}: {value:.1f} {unit}"
    FIGURES.append(line)
    print(line, flush=True)


def build_versions(build_dir, config_dir):
    """v2 (0.2.0) and v3 (0.3.0, --test-fail-health), each with its bundle, from the binaries of
    the e2e image; rebuilt when the e2e image is newer than them."""
    image = os.path.join(e2e.IMAGE_DIR, "capsule.raw")
    out = {}
    for name, version, extra in (("v2", "0.2.0", []), ("v3", "0.3.0", ["--test-fail-health"])):
        d = os.path.join(UPDATE_DIR, name)
        bundle = os.path.join(d, f"capsule-{version}.bundle")
        if not os.path.exists(bundle) or os.path.getmtime(bundle) < os.path.getmtime(image):
            subprocess.run([os.path.join(e2e.SRC, "mkimage/build.sh"),
                            "--machine-config", os.path.join(config_dir, "machine.yaml"),
                            "--build-dir", build_dir, "--no-build", "--out", d,
                            "--version", version] + extra, check=True, stdout=subprocess.DEVNULL)
        out[name] = (d, bundle)
    return out


def make_bundle(parts_dir, work, version, key, initrd=None):
    """A bundle of parts_dir's kernel and root image (initrd: another initramfs) with bundle.sh."""
    d = tempfile.mkdtemp(dir=work)
    for f in ("vmlinuz", "rootfs.sqfs"):
        os.link(os.path.join(parts_dir, f), os.path.join(d, f))
    if initrd:
        shutil.copy(initrd, os.path.join(d, "initramfs.img"))
    else:
        os.link(os.path.join(parts_dir, "initramfs.img"), os.path.join(d, "initramfs.img"))
    subprocess.run([os.path.join(e2e.SRC, "mkimage/bundle.sh"), "--out", d, "--version", version,
                    "--signing-key", key], check=True, stdout=subprocess.DEVNULL)
    return os.path.join(d, f"capsule-{version}.bundle")


def status(m):
    return m.ctl_json("update", "status")


def wait_healthy(m, slot, timeout):
    """Until `capsulectl health` is OK on slot (the API answering on it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = m.ctl("--timeout", "5", "-o", "json", "health", check_rc=False)
        if r.returncode == 0:
            try:
                if json.loads(r.stdout).get("slot") == slot:
                    return True
            except ValueError:
                pass
        time.sleep(1)
    return False


def boots(m):
    return m.console().count("starting as PID 1")


def wait_running(m, name, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = m.ctl("-o", "json", "get", name, check_rc=False)
        if r.returncode == 0 and json.loads(r.stdout).get("status", {}).get("phase") == "Running":
            return True
        time.sleep(2)
    return False


def push(m, bundle, *flags, timeout=600):
    return m.ctl("update", "push", bundle, *flags, check_rc=False, timeout=timeout)


def case_refused(m, versions, work, key):
    """Bundles refused while streaming: the machine never leaves v2 (slot b)."""
    other = os.path.join(work, "other.key")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", other], check=True,
                   capture_output=True)
    v3dir, v3 = versions["v3"]
    before = status(m)["slots"]["a"]
    t0 = time.monotonic()
    r = push(m, make_bundle(v3dir, work, "0.3.0", other))
    check(r.returncode == 1 and "PERMISSION_DENIED" in r.stderr,
          f"a bundle signed with an unknown key is refused ({r.stderr.strip()[-160:]})")
    s = status(m)
    check(s["slots"]["a"] == before and s["bootedSlot"] == "b",
          f"nothing was written (slot a still {before}, running slot b)")
    check(wait_healthy(m, "b", 60), "the API stays healthy")
    figure("unknown-key: time to a healthy API after the push began", time.monotonic() - t0)

    tampered = os.path.join(work, "tampered.bundle")
    shutil.copy(v3, tampered)
    with open(tampered, "r+b") as f:  # one byte in the middle of the root image
        f.seek(os.path.getsize(tampered) - 20 * 1024 * 1024)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xff]))
    t0 = time.monotonic()
    r = push(m, tampered)
    check(r.returncode == 1 and "DATA_LOSS" in r.stderr and "rootfs.sqfs" in r.stderr,
          f"a bundle tampered after signing is refused ({r.stderr.strip()[-160:]})")
    check(status(m)["slots"]["a"]["state"] == "empty", "slot a is left empty (no entry)")
    check(wait_healthy(m, "b", 60), "the API stays healthy")
    figure("tampered: time to a healthy API after the push began", time.monotonic() - t0)


def case_powercut_push(m, versions):
    """QEMU killed in the middle of the push: v2 boots, slot a is marked empty."""
    _, v3 = versions["v3"]
    env = dict(os.environ, CAPSULECONFIG=os.path.join(m.config_dir, "capsuleconfig"))
    p = subprocess.Popen([m.capsulectl, "--capsule", f"127.0.0.1:{m.port}", "update", "push", v3,
                          "--no-reboot"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    seen = ""
    while p.poll() is None:
        line = p.stderr.readline()
        seen += line
        if "[##########" in line:  # half the bundle sent: well into rootfs.sqfs
            break
    m.power_cut()
    t0 = time.monotonic()
    p.communicate(timeout=60)
    check(not m.alive() and "50%" in seen, "QEMU killed with half the bundle pushed")
    m.boot(keep_disk=True)
    check(wait_healthy(m, "b", 300), "v2 boots again after the power cut")
    figure("power cut during push: kill -> healthy API", time.monotonic() - t0)
    s = status(m)
    check(s["bootedSlot"] == "b" and s["state"] == "committed" and s["slots"]["a"]["state"] == "empty",
          f"running v2 in slot b, slot a marked empty ({s['slots']})")


def case_rollback(m):
    """update rollback after a commit: to v1's slot (good), tentatively; it commits; and back."""
    for here, there, version in (("b", "a", "0.1.0"), ("a", "b", "0.2.0")):
        n = boots(m)
        t0 = time.monotonic()
        r = m.ctl("update", "rollback", check_rc=False)
        check(r.returncode == 0 and f"slot {there}" in r.stdout,
              f"update rollback from slot {here} goes to slot {there} ({(r.stdout + r.stderr).strip()})")
        check(m.wait_console("starting as PID 1", 300, count=n + 1), "rebooted")
        check(wait_healthy(m, there, 300), f"healthy on slot {there}")
        s = status(m)
        deadline = time.monotonic() + 300
        while s["state"] != "committed" and time.monotonic() < deadline:
            time.sleep(2)
            s = status(m)
        figure(f"rollback to slot {there}: request -> committed", time.monotonic() - t0)
        check(s["bootedSlot"] == there and s["bootedVersion"] == version and s["state"] == "committed"
              and s["lastGoodSlot"] == there,
              f"slot {there} ({version}) booted tentatively and committed ({s['state']})")
    check(wait_running(m, "writer", 300), "the workload runs after the rollbacks")


def case_good(m, versions):
    """v2 pushed, rebooted into tentatively, commits by itself."""
    _, v2 = versions["v2"]
    n = boots(m)
    t0 = time.monotonic()
    r = push(m, v2)
    sent = time.monotonic() - t0
    check(r.returncode == 0 and "installed 0.2.0 in slot b" in r.stdout,
          f"update push v2 accepted ({(r.stdout + r.stderr).strip()[-200:]})")
    figure("push throughput", os.path.getsize(v2) / 1048576 / sent, "MiB/s")
    check(m.wait_console("starting as PID 1", 300, count=n + 1), "the machine rebooted")
    check(wait_healthy(m, "b", 300), "the API answers on slot b")
    figure("push -> healthy API on the new slot", time.monotonic() - t0)
    s = status(m)
    print(f"  status right after the boot: {s['state']} ({s['message']})", flush=True)
    deadline = time.monotonic() + 300
    while s["state"] != "committed" and time.monotonic() < deadline:
        time.sleep(2)
        s = status(m)
    figure("push -> committed", time.monotonic() - t0)
    check(s["state"] == "committed" and s["bootedSlot"] == "b" and s["bootedVersion"] == "0.2.0",
          f"v2 committed by itself in slot b ({s})")
    check(s["defaultSlot"] == "b" and s["lastGoodSlot"] == "b"
          and s["slots"] == {"a": {"version": "0.1.0", "state": "good"},
                             "b": {"version": "0.2.0", "state": "good"}},
          f"b is the default and last good; both slots good ({s['slots']})")
    check(wait_running(m, "writer", 300), "the workload runs on v2")
    out = m.ctl("exec", "writer", "--", "cat", "/data/file").stdout.strip()
    check(out == "kept-across-updates", "its volume data survived the update")


def expect_back_on_b(m, t0, what, reason_part, timeout=600, since="push"):
    check(wait_healthy(m, "b", timeout), f"{what}: back on slot b by itself")
    figure(f"{what}: {since} -> healthy API on v2 again", time.monotonic() - t0)
    s = status(m)
    check(s["bootedSlot"] == "b" and s["state"] == "committed" and s["defaultSlot"] == "b",
          f"{what}: running v2 committed, b the default ({s['bootedSlot']} {s['state']})")
    check(reason_part in s["lastRollbackReason"],
          f"{what}: update status gives the reason: {s['lastRollbackReason']}")
    return s


def case_fail_health(m, versions):
    """v3's health check fails: the tentative boot rolls back by itself."""
    _, v3 = versions["v3"]
    n = boots(m)
    t0 = time.monotonic()
    r = push(m, v3)
    check(r.returncode == 0, f"update push v3 accepted ({r.stderr.strip()[-160:]})")
    check(m.wait_console("starting as PID 1", 300, count=n + 2),
          "booted v3 tentatively, then rebooted")
    s = expect_back_on_b(m, t0, "failing health check", "test-fail-health")
    check(s["slots"]["a"]["state"] == "failed", f"slot a is marked failed ({s['slots']['a']})")
    r = m.ctl("update", "rollback", check_rc=False)
    check(r.returncode == 1 and "no good version" in r.stderr,
          "update rollback refuses to go to a slot that holds no good version")


def case_panic(m, versions, work, key):
    """A bundle whose kernel panics (no /init in its initramfs): panic=10, systemd-boot falls back."""
    v2dir, _ = versions["v2"]
    empty = os.path.join(work, "empty-initrd.img")
    subprocess.run(["sh", "-c", f"cd {work} && printf '' | cpio -o -H newc --quiet > {empty}"],
                   check=True)
    bundle = make_bundle(v2dir, work, "0.4.0", key, initrd=empty)
    n = m.console().count("Kernel panic")
    t0 = time.monotonic()
    r = push(m, bundle)
    check(r.returncode == 0, f"update push of the panicking bundle accepted ({r.stderr.strip()[-160:]})")
    check(m.wait_console("Kernel panic", 300, count=n + 1), "its kernel panicked")
    expect_back_on_b(m, t0, "kernel panic", "did not commit")


def case_powercut_tentative(m, versions, work, key):
    """Power cut while the new slot is booting tentatively: the next boot falls back."""
    v2dir, _ = versions["v2"]
    bundle = make_bundle(v2dir, work, "0.5.0", key)
    n = boots(m)
    r = push(m, bundle)
    check(r.returncode == 0, f"update push 0.5.0 accepted ({r.stderr.strip()[-160:]})")
    check(m.wait_console("starting as PID 1", 300, count=n + 1), "booting 0.5.0 tentatively")
    m.power_cut()
    t0 = time.monotonic()
    m.boot(keep_disk=True)
    expect_back_on_b(m, t0, "power cut during the tentative boot", "did not commit", since="kill")


CASES = ["rollback", "refused", "powercut-push", "fail-health", "panic", "powercut-tentative"]


def scenario_update(m, versions, only):
    key = os.path.join(m.config_dir, "secrets", "update-signing.key")
    t_all = time.monotonic()
    m.boot()
    s = status(m)
    check(s["bootedSlot"] == "a" and s["bootedVersion"] == "0.1.0" and s["state"] == "committed",
          f"v1 (0.1.0) runs committed from slot a ({s['bootedSlot']} {s['bootedVersion']} {s['state']})")
    check(s["bootedEntry"] == "capsule-a.conf", f"LoaderEntrySelected names the entry ({s['bootedEntry']})")
    with tempfile.TemporaryDirectory() as tmp:
        mkimage_busybox.build(tmp)
        m.ctl("image", "push", os.path.join(tmp, "busybox-docker.tar"), timeout=300)
        man = os.path.join(tmp, "writer.yaml")
        with open(man, "w") as f:
            f.write(MANIFEST)
        m.ctl("apply", "-f", man, timeout=180)
    check(wait_running(m, "writer", 300), "a workload with a volume runs on v1")
    case_good(m, versions)
    if "rollback" in only:
        case_rollback(m)
    if "refused" in only:
        case_refused(m, versions, m.work, key)
    if "powercut-push" in only:
        case_powercut_push(m, versions)
    if "fail-health" in only:
        case_fail_health(m, versions)
    if "panic" in only:
        case_panic(m, versions, m.work, key)
    if "powercut-tentative" in only:
        case_powercut_tentative(m, versions, m.work, key)
    check(wait_running(m, "writer", 300), "the workload still runs on v2 after every bad update")
    figure("whole scenario", time.monotonic() - t_all)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--build-dir", default=os.environ.get("CAPSULE_BUILD_DIR",
                                                        os.path.join(e2e.SRC, "build")))
    p.add_argument("--config-dir", default=os.path.join(e2e.SRC, "out/e2e-config"))
    p.add_argument("--keep", action="store_true", help="keep the work dir when it passes")
    p.add_argument("--only", default=",".join(CASES),
                   help="comma-separated cases (the good update always runs): " + ",".join(CASES))
    a = p.parse_args()
    reason = e2e.skip_reason()
    if reason:
        print(f"e2e: SKIP: {reason}")
        return e2e.SKIP
    only = a.only.split(",")
    for c in only:
        if c not in CASES:
            p.error(f"unknown case {c}")
    build_dir = os.path.abspath(a.build_dir)
    config_dir = os.path.abspath(a.config_dir)
    os.makedirs(e2e.IMAGE_DIR, exist_ok=True)
    e2e.ensure_inputs(build_dir, config_dir)
    versions = build_versions(build_dir, config_dir)
    os.environ.setdefault("CAPSULE_ACCEL", "tcg" if os.environ.get("CI") == "true" else "auto")
    e2e.SCENARIOS["update"] = lambda m: scenario_update(m, versions, only)
    e2e.SCENARIOS["update"].__doc__ = "A/B updates under OVMF + systemd-boot: " + ", ".join(only)
    ok = e2e.run("update", build_dir, config_dir, a.keep)
    print("\n".join(FIGURES))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
