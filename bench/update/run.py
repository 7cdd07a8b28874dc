#!/usr/bin/env python3
"""bench/update: A/B update costs against their baselines, in one run on one booted Capsule
(QEMU under OVMF + systemd-boot, TCG unless CAPSULE_ACCEL says otherwise):

  push throughput   `update push` of the v2 bundle (bytes / time to the answer: streamed over
                    the API, verified, hashed and written into slot b)
    vs dd           `dd` of the same root image to the same partition inside the same capsule
                    (from a privileged busybox container, conv=fsync)       goal: ratio >= 0.9
  update -> API     `update push` starting to the API answering healthy on the new slot
    vs reboot       `capsulectl reboot` to the API answering healthy again  goal: ratio <= 1.2

    bench/update/run.py [--build-dir build]

Builds what e2e_update.py builds (out/e2e/, out/e2e-update/v2) when stale. Prints `BENCH` lines."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "e2e"))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import e2e  # noqa: E402
import e2e_update  # noqa: E402
import mkimage_busybox  # noqa: E402
from e2e import check  # noqa: E402

DD = """kind: Volume
name: bench
size: 256Mi
---
kind: Container
name: dd
image: capsule.local/busybox:latest
privileged: true
command: ["sleep", "1000000"]
mounts:
  - {volume: bench, path: /data}
"""
# the slot_b partition's device, from sysfs (the capsule has no udev)
FIND_SLOT_B = ("for u in /sys/class/block/*/uevent; do grep -qx PARTNAME=slot_b $u && "
               "sed -n s/^DEVNAME=//p $u; done; true")


def bench(m, versions):
    v2dir, v2 = versions["v2"]
    m.boot()
    # baseline 2: a plain reboot, to the API answering healthy again
    n = e2e_update.boots(m)
    t0 = time.monotonic()
    m.ctl("reboot")
    check(m.wait_console("starting as PID 1", 300, count=n + 1), "rebooted")
    check(e2e_update.wait_healthy(m, "a", 300), "healthy after the reboot")
    t_reboot = time.monotonic() - t0

    # baseline 1: dd of the root image to slot b from a privileged container
    with tempfile.TemporaryDirectory() as tmp:
        mkimage_busybox.build(tmp)
        m.ctl("image", "push", os.path.join(tmp, "busybox-docker.tar"), timeout=300)
        man = os.path.join(tmp, "dd.yaml")
        with open(man, "w") as f:
            f.write(DD)
        m.ctl("apply", "-f", man, timeout=180)
    check(e2e_update.wait_running(m, "dd", 300), "the dd container runs")
    root = os.path.join(v2dir, "rootfs.sqfs")
    size = os.path.getsize(root)
    env = dict(os.environ, CAPSULECONFIG=os.path.join(m.config_dir, "capsuleconfig"))
    with open(root, "rb") as f:
        subprocess.run([m.capsulectl, "--capsule", f"127.0.0.1:{m.port}", "exec", "-i", "dd", "--",
                        "sh", "-c", "cat > /data/rootfs.sqfs"], stdin=f, env=env, check=True,
                       timeout=600)
    dev = m.ctl("exec", "dd", "--", "sh", "-c", FIND_SLOT_B).stdout.strip()
    check(dev != "", f"slot_b is /dev/{dev}")
    t0 = time.monotonic()
    m.ctl("exec", "dd", "--", "sh", "-c",
          f"busybox dd if=/data/rootfs.sqfs of=/dev/{dev} bs=1M conv=fsync", timeout=600)
    t_dd = time.monotonic() - t0
    m.ctl("delete", "dd", timeout=120)

    # the update: push (throughput), then to the API answering on slot b
    n = e2e_update.boots(m)
    t0 = time.monotonic()
    r = m.ctl("-o", "json", "update", "push", v2, timeout=900)
    t_push = time.monotonic() - t0
    check(json.loads(r.stdout)["slot"] == "b", "v2 installed in slot b")
    check(m.wait_console("starting as PID 1", 300, count=n + 1), "rebooted into v2")
    check(e2e_update.wait_healthy(m, "b", 300), "healthy on slot b")
    t_update = time.monotonic() - t0

    bundle = os.path.getsize(v2)
    dd_rate = size / 1048576 / t_dd
    push_rate = bundle / 1048576 / t_push
    print(f"BENCH update dd of rootfs.sqfs ({size / 1048576:.1f} MiB) to slot_b: {t_dd:.1f} s, "
          f"{dd_rate:.1f} MiB/s", flush=True)
    print(f"BENCH update push of the bundle ({bundle / 1048576:.1f} MiB): {t_push:.1f} s, "
          f"{push_rate:.1f} MiB/s; ratio push/dd {push_rate / dd_rate:.2f} (goal >= 0.9)",
          flush=True)
    print(f"BENCH update plain reboot -> healthy API: {t_reboot:.1f} s", flush=True)
    print(f"BENCH update push -> healthy API on the new slot: {t_update:.1f} s; ratio "
          f"{t_update / t_reboot:.2f} (goal <= 1.2)", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--build-dir", default=os.environ.get("CAPSULE_BUILD_DIR",
                                                        os.path.join(SRC, "build")))
    p.add_argument("--config-dir", default=os.path.join(SRC, "out/e2e-config"))
    a = p.parse_args()
    reason = e2e.skip_reason()
    if reason:
        print(f"bench: SKIP: {reason}")
        return e2e.SKIP
    build_dir = os.path.abspath(a.build_dir)
    config_dir = os.path.abspath(a.config_dir)
    os.makedirs(e2e.IMAGE_DIR, exist_ok=True)
    e2e.ensure_inputs(build_dir, config_dir)
    versions = e2e_update.build_versions(build_dir, config_dir)
    os.environ.setdefault("CAPSULE_ACCEL", "tcg")
    e2e.SCENARIOS["bench-update"] = lambda m: bench(m, versions)
    e2e.SCENARIOS["bench-update"].__doc__ = "update push vs dd, update vs reboot"
    return 0 if e2e.run("bench-update", build_dir, config_dir, False) else 1


if __name__ == "__main__":
    sys.exit(main())
