#!/usr/bin/env python3
"""End-to-end test of volumes on a booted Capsule: real LVM thin volumes (design §8).

One image build, several boots (the second through a clean reboot of the same disk):
  volume create data --size 64Mi -> `volume ls` shows it with backend lvm-thin;
  a busybox Container mounting data at /data writes a file there;
  reboot -> the workload runs again and the file is still there;
  volume resize data --size 128Mi while mounted (online) -> ls and df in the container show it;
  volume rm data is refused while the workload uses it;
  volume backup data (a thin snapshot while writer runs) -> the tar holds the file; restore
  refused while attached; restore into a new volume copy -> a reader container sees the file;
  power cut (QEMU killed) during volume create v2 + an apply -> all or nothing after the boot;
  power cut from inside (fault injection) between lvcreate and mkfs of v3 -> /perm, data and
  every acknowledged volume intact, v3 absent and creatable;
  the operations runbooks "Growing PERM" (disk +1 GiB, sgdisk, pvresize at boot, lvextend from
  the debug container) and "Replacing a disk" (backup, a new disk from the image, restore, apply).

    tests/e2e/e2e_volumes.py [--build-dir DIR] [--keep]

Uses tests/e2e/e2e.py's Machine, check and ensure_inputs. Exit codes as e2e.py: 0, 1, 77 (skip).
"""
import argparse
import os
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

MANIFEST = """kind: Container
name: writer
image: capsule.local/busybox:latest
command: ["sh", "-c"]
args: ["date >> /data/boots; [ -f /data/file ] || echo kept-across-reboots > /data/file; exec sleep 1000000"]
mounts:
  - {volume: data, path: /data}
restart: always
"""


def volume(m, name):
    for v in m.ctl_json("volume", "ls").get("volumes", []):
        if v.get("name") == name:
            return v
    return None


def wait_running(m, name, timeout):
    deadline = time.monotonic() + timeout
    phase = None
    while time.monotonic() < deadline:
        r = m.ctl("-o", "json", "get", name, check_rc=False)
        if r.returncode == 0:
            import json
            phase = json.loads(r.stdout).get("status", {}).get("phase")
            if phase == "Running":
                return True
        time.sleep(2)
    print(f"  {name} phase: {phase}", flush=True)
    return False


def df_kib(m, workload, path):
    """Total 1K-blocks of the filesystem at path, seen from inside the workload (busybox df)."""
    out = m.ctl("exec", workload, "--", "df", "-k", path).stdout
    nums = [t for t in " ".join(out.splitlines()[1:]).split() if t.isdigit()]
    return int(nums[0]) if nums else 0


def reboot(m):
    """capsulectl reboot (System.Reboot -> SIGINT to PID 1: a clean reboot)."""
    return e2e.request_reboot(m)


def lvm_timings(m):
    for line in m.console().splitlines():
        if "volumes: lvm:" in line or "volumes: backend" in line:
            print(f"  | {line.strip()}", flush=True)


READER = """kind: Container
name: reader
image: capsule.local/busybox:latest
command: ["sleep", "1000000"]
mounts:
  - {volume: copy, path: /copy}
"""


def backup_restore(m):
    """Backup through a thin snapshot of the mounted LV, restore into a new thin volume."""
    import tarfile
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "data.tar")
        t0 = time.monotonic()
        r = m.ctl("volume", "backup", "data", "-o", out, timeout=300)
        print(f"  volume backup took {time.monotonic() - t0:.1f} s: {r.stdout.strip()}", flush=True)
        check("snapshot copy" in r.stdout, "the backup is a snapshot copy on LVM")
        with tarfile.open(out) as t:
            f = t.extractfile("file")
            check(f is not None and f.read() == b"kept-across-reboots\n", "the backup holds /data/file")
        r = m.ctl("volume", "backup", "data", "-o", out, timeout=300)
        check(r.returncode == 0, "a second backup works (the first snapshot was removed)")
        r = m.ctl("volume", "restore", "data", "-f", out, check_rc=False, timeout=300)
        check(r.returncode != 0 and "in use by writer" in r.stderr,
              f"restore over data is refused while writer uses it: {r.stderr.strip()}")
        t0 = time.monotonic()
        r = m.ctl("volume", "restore", "copy", "-f", out, timeout=300)
        print(f"  volume restore took {time.monotonic() - t0:.1f} s: {r.stdout.strip()}", flush=True)
        check(volume(m, "copy")["backend"] == "lvm-thin" and volume(m, "copy")["sizeBytes"] == 128 << 20,
              "restore created copy, a thin volume of the recorded size")
        reader = os.path.join(tmp, "reader.yaml")
        with open(reader, "w") as f:
            f.write(READER)
        m.ctl("apply", "-f", reader, timeout=120)
        check(wait_running(m, "reader", 240), "the reader container runs on the restored volume")
        out = m.ctl("exec", "reader", "--", "cat", "/copy/file").stdout.strip()
        check(out == "kept-across-reboots", "the restored volume holds the file")
        m.ctl("delete", "reader", timeout=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and m.ctl("get", "reader", check_rc=False).returncode == 0:
            time.sleep(2)
        m.ctl("volume", "rm", "copy", timeout=120)
        check(volume(m, "copy") is None, "copy removed")


def scenario_volumes(m):
    """Thin LVM volumes: create, mount in a container, survive a reboot, grow online, rm refused."""
    m.boot()
    t0 = time.monotonic()
    m.ctl("volume", "create", "data", "--size", "64Mi", timeout=120)
    print(f"  volume create took {time.monotonic() - t0:.1f} s", flush=True)
    v = volume(m, "data")
    check(v is not None and v["sizeBytes"] == 64 << 20, "volume ls shows data (64Mi)")
    check(v["backend"] == "lvm-thin", f"data is a thin LV (backend {v['backend']})")

    with tempfile.TemporaryDirectory() as tmp:
        mkimage_busybox.build(tmp)
        m.ctl("image", "push", os.path.join(tmp, "busybox-docker.tar"), timeout=300)
        manifest = os.path.join(tmp, "writer.yaml")
        with open(manifest, "w") as f:
            f.write(MANIFEST)
        m.ctl("apply", "-f", manifest, timeout=120)
    check(wait_running(m, "writer", 240), "the writer container runs")
    out = m.ctl("exec", "writer", "--", "cat", "/data/file").stdout.strip()
    check(out == "kept-across-reboots", "the container wrote /data/file into the volume")
    check(volume(m, "data")["attachedTo"] == ["writer"], "volume ls shows data attached to writer")

    how = reboot(m)
    print(f"  reboot requested with {how}", flush=True)
    check(m.wait_console("starting as PID 1", 300, count=2), "the machine booted again")
    check(m.wait_api(300), "the API answers after the reboot")
    check(wait_running(m, "writer", 300), "the writer container runs again after the reboot")
    out = m.ctl("exec", "writer", "--", "cat", "/data/file").stdout.strip()
    check(out == "kept-across-reboots", "the data survived the reboot")
    boots = m.ctl("exec", "writer", "--", "cat", "/data/boots").stdout.splitlines()
    check(len(boots) >= 2, f"the workload ran on both boots ({len(boots)} starts logged)")

    before = df_kib(m, "writer", "/data")
    t0 = time.monotonic()
    m.ctl("volume", "resize", "data", "--size", "128Mi", timeout=180)
    print(f"  volume resize took {time.monotonic() - t0:.1f} s", flush=True)
    v = volume(m, "data")
    check(v["sizeBytes"] == 128 << 20, "volume ls shows the new size (128Mi)")
    after = df_kib(m, "writer", "/data")
    check(after > before and after > 100 * 1024,
          f"df in the running container shows the grown filesystem ({before} -> {after} KiB)")

    r = m.ctl("volume", "rm", "data", check_rc=False)
    check(r.returncode != 0 and "in use" in r.stderr, "volume rm is refused while attached")
    check(volume(m, "data") is not None, "data still exists")
    backup_restore(m)
    lvm_timings(m)

    dm = m.ctl("dmesg", timeout=60).stdout
    check("Linux version" in dm and "capsuled-serve" in dm, "capsulectl dmesg shows the kernel log")

    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write(MANIFEST.replace("restart: always", "restart: always\nbogus: 1"))
        r = m.ctl("apply", "-f", bad, check_rc=False)
        check(r.returncode == 1 and "bogus: unknown field" in r.stderr and "nothing was applied" in r.stderr,
              "a bad manifest is refused with the field named")
        check(m.ctl_json("get", "writer")["generation"] == 1, "and changes nothing (writer still generation 1)")

        # power cut in the middle of a volume create and an apply: nothing half-made afterwards
        second = os.path.join(tmp, "second.yaml")
        with open(second, "w") as f:
            f.write("kind: Container\nname: second\nimage: capsule.local/busybox:latest\n"
                    "command: [sleep, '1000000']\n")
        env = dict(os.environ, CAPSULECONFIG=os.path.join(m.config_dir, "capsuleconfig"))
        base = [m.capsulectl, "--capsule", f"127.0.0.1:{m.port}"]
        bg = [subprocess.Popen(base + ["volume", "create", "v2", "--size", "64Mi"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
              subprocess.Popen(base + ["apply", "-f", second], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        time.sleep(1.0)
        m.power_cut()
        for p in bg:
            p.wait(60)
        check(not m.alive(), "QEMU killed during volume create + apply (power cut)")
    m.boot(keep_disk=True)
    check(m.ctl("health").returncode == 0, "health OK after the power cut")
    check(wait_running(m, "writer", 300), "writer reconciled after the power cut")
    out = m.ctl("exec", "writer", "--", "cat", "/data/file").stdout.strip()
    check(out == "kept-across-reboots", "the volume's data survived the power cut")
    names = [w["spec"]["name"] for w in m.ctl_json("get").get("workloads", [])]
    check("second" not in names or wait_running(m, "second", 300),
          f"the interrupted apply is all or nothing (workloads: {names})")
    v2 = volume(m, "v2")
    check(v2 is None or v2["sizeBytes"] == 64 << 20, f"v2 is whole or absent ({v2})")
    if v2 is None:
        m.ctl("volume", "create", "v2", "--size", "64Mi", timeout=120)
    check(volume(m, "v2")["sizeBytes"] == 64 << 20, "v2 can be created: no half-made leftover")

    # A power cut exactly between lvcreate and mkfs of a new thin volume (fault injection, see
    # src/common/fault.h): the LV is in the LVM metadata, the pool's own transaction may not be
    # committed, so that LV may not even activate. The next boot must still mount /perm, keep
    # every volume and its data, and leave no trace of the cut create.
    m.power_cut()
    fault = "CAPSULE_FAULT=powercut:volume-after-lvcreate"
    m.boot(keep_disk=True, extra=["--direct", "--append", fault])
    r = m.ctl("volume", "create", "v3", "--size", "32Mi", check_rc=False, timeout=180)
    for _ in range(120):
        if not m.alive():
            break
        time.sleep(0.5)
    check(r.returncode != 0 and not m.alive(), "the machine lost power in the middle of volume create v3")
    check(f"{fault}: powering off without sync" in m.console(), "at the fault point after lvcreate")
    m.boot(keep_disk=True)
    health = m.ctl("health", check_rc=False)
    check(health.returncode == 0 and "tmpfs" not in health.stdout,
          f"health OK and /perm is the persistent LV after the cut: {health.stdout.strip()}")
    check(wait_running(m, "writer", 300), "writer runs after the cut")
    out = m.ctl("exec", "writer", "--", "cat", "/data/file").stdout.strip()
    check(out == "kept-across-reboots", "the data in volume data survived the cut")
    check(volume(m, "v2") is not None and volume(m, "v3") is None,
          "v2 kept, v3 (never acknowledged) absent")
    m.ctl("volume", "create", "v3", "--size", "32Mi", timeout=120)
    check(volume(m, "v3")["sizeBytes"] == 32 << 20, "v3 can be created afterwards")
    grow_perm(m)
    replace_disk(m)


DEBUG_IMAGE = "capsule.local/busybox:latest"


def debug(m, script):
    """capsulectl debug -- sh -c SCRIPT in the host's namespaces (the machine's / at /host)."""
    r = m.ctl("debug", "--image", DEBUG_IMAGE, "--", "sh", "-c", script, input="", check_rc=False,
              timeout=180)
    if r.returncode != 0:
        raise Failure(f"capsulectl debug -- sh -c {script!r}: exit {r.returncode}: {r.stdout} {r.stderr}")
    return r.stdout


def power_off(m):
    m.ctl("reboot", "--poweroff")
    deadline = time.monotonic() + 180
    while m.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    check(not m.alive(), "capsulectl reboot --poweroff powered the machine off")


def lvm_sizes(m):
    """(VG size, VG free, LV perm size, LV pool size) in bytes and /perm's df total in KiB."""
    out = debug(m, "chroot /host lvm vgs --noheadings --units b --nosuffix -o vg_size,vg_free capsule; "
                   "chroot /host lvm lvs --noheadings --units b --nosuffix -o lv_size capsule/perm capsule/pool; "
                   "df -k /host/perm | tail -1")
    nums = [int(t) for t in out.split() if t.isdigit()]
    # vg_size vg_free perm pool; then df: 1K-blocks used available
    return nums[0], nums[1], nums[2], nums[3], nums[4]


def grow_perm(m):
    """docs/operations.md "Growing PERM", walked: power off, grow the disk by 1 GiB and partition 4
    to its end from "another computer" (the runbook's sgdisk commands on the raw disk), boot: PID 1's
    pvresize grows VG capsule; then, from the debug container, LV perm (+256 MiB, online
    resize2fs) and the thin pool (the rest, minus the 10 % reserve) take the space."""
    vg0, free0, perm0, pool0, df0 = lvm_sizes(m)
    print(f"  before: VG {vg0 >> 20} MiB ({free0 >> 20} free), perm {perm0 >> 20} MiB, "
          f"pool {pool0 >> 20} MiB, /perm {df0 >> 10} MiB", flush=True)
    power_off(m)
    disk = os.path.join(m.work, "grown.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", os.path.join(m.work, "disk.qcow2"), disk], check=True)
    subprocess.run(["truncate", "-s", "+1G", disk], check=True)
    for cmd in (["sgdisk", "-e", disk],
                ["sgdisk", "-d", "4", "-n", "4:0:0", "-t", "4:8e00", "-c", "4:perm",
                 "-u", "4:43415053-0004-5045-524d-000000000004", disk]):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m.image = disk
    m.boot()
    check(wait_running(m, "writer", 300), "writer runs on the grown disk")
    vg1, free1, perm1, pool1, df1 = lvm_sizes(m)
    check(vg1 - vg0 >= 1000 << 20 and free1 - free0 >= 1000 << 20,
          f"PID 1's pvresize grew VG capsule by the new GiB ({vg0 >> 20} -> {vg1 >> 20} MiB, "
          f"free {free0 >> 20} -> {free1 >> 20} MiB)")
    # the runbook's commands (lvextend -r needs fsadm, which the image leaves out: resize2fs)
    debug(m, "chroot /host lvm lvextend -L +256M capsule/perm && chroot /host resize2fs /dev/capsule/perm")
    debug(m, "chroot /host lvm lvextend -l +90%FREE capsule/pool")
    vg2, free2, perm2, pool2, df2 = lvm_sizes(m)
    check(perm2 - perm1 == 256 << 20 and (df2 - df1) >= 200 << 10,
          f"LV perm +256 MiB and /perm's filesystem grew online ({df1 >> 10} -> {df2 >> 10} MiB)")
    check(pool2 - pool1 >= 600 << 20, f"the thin pool took the rest ({pool1 >> 20} -> {pool2 >> 20} MiB, "
                                      f"{free2 >> 20} MiB left free in VG capsule)")
    out = m.ctl("exec", "writer", "--", "cat", "/data/file").stdout.strip()
    check(out == "kept-across-reboots", "the volume's data is intact after the grow")
    m.ctl("volume", "create", "big", "--size", "512Mi", timeout=180)
    check(volume(m, "big")["sizeBytes"] == 512 << 20, "a volume can use the grown pool")
    m.ctl("volume", "rm", "big", timeout=120)


def replace_disk(m):
    """docs/operations.md "Replacing a disk", walked: back the volume up, boot a new disk written
    from the image with the same machine.yaml, push the image, restore the volume, apply."""
    with tempfile.TemporaryDirectory() as tmp:
        backup = os.path.join(tmp, "data.tar")
        m.ctl("volume", "backup", "data", "-o", backup, timeout=300)
        power_off(m)
        m.image = os.path.join(e2e.IMAGE_DIR, "capsule.raw")
        m.boot()  # a fresh disk: capsule-up makes a new overlay of the image
        check(volume(m, "data") is None and not m.ctl_json("get").get("workloads"),
              "the new disk starts empty (no volume, no workload)")
        mkimage_busybox.build(tmp)
        m.ctl("image", "push", os.path.join(tmp, "busybox-docker.tar"), timeout=300)
        m.ctl("volume", "restore", "data", "-f", backup, timeout=300)
        check(volume(m, "data")["sizeBytes"] == 128 << 20, "data restored with its recorded size (128Mi)")
        manifest = os.path.join(tmp, "writer.yaml")
        with open(manifest, "w") as f:
            f.write(MANIFEST)
        m.ctl("apply", "-f", manifest, timeout=120)
        check(wait_running(m, "writer", 240), "writer runs on the new disk")
        out = m.ctl("exec", "writer", "--", "cat", "/data/file").stdout.strip()
        check(out == "kept-across-reboots", "the data moved to the new disk")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--build-dir", default=os.environ.get("CAPSULE_BUILD_DIR",
                                                        os.path.join(e2e.SRC, "build")))
    p.add_argument("--config-dir", default=os.path.join(e2e.SRC, "out/e2e-config"))
    p.add_argument("--keep", action="store_true", help="keep the work dir when it passes")
    a = p.parse_args()
    reason = e2e.skip_reason()
    if reason:
        print(f"e2e: SKIP: {reason}")
        return e2e.SKIP
    build_dir = os.path.abspath(a.build_dir)
    config_dir = os.path.abspath(a.config_dir)
    os.makedirs(e2e.IMAGE_DIR, exist_ok=True)
    e2e.ensure_inputs(build_dir, config_dir)
    os.environ.setdefault("CAPSULE_ACCEL", "tcg" if os.environ.get("CI") == "true" else "auto")
    e2e.SCENARIOS["volumes"] = scenario_volumes
    return 0 if e2e.run("volumes", build_dir, config_dir, a.keep) else 1


if __name__ == "__main__":
    sys.exit(main())
