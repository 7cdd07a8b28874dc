#!/usr/bin/env python3
"""bench/microvm-start: time from `capsulectl apply` returning to the microVM's workload running
(its first output line in the workload's log) through capsuled in host mode, beside a bare
`qemu-system-x86_64 -M microvm` of the same kernel with a busybox initramfs that prints one line,
started the same way (same accelerator, machine options, memory, vCPUs, kernel command line), in
one run.

    sudo bench/microvm-start/run.py [--n 5] [--build-dir build] [--accel tcg]

Also reports: the first VM of an image (root disk cache built) against the next ones (no copy of
the image: only a clone), and the host RSS of an idle VM beside its memory size.

In host mode there is no vhost-vsock, so the end point is the workload's first line in its log (the
console path) rather than the guest agent's Status over vsock (the issue's definition on a
Capsule); both come right after capsule-guest starts the workload."""

import argparse
import glob
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

MEM_MIB = 256
APPEND = "console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=2400000"


def newc(entries):
    """A newc cpio archive of (name, mode, data, rdev_major, rdev_minor)."""
    out = bytearray()
    for ino, (name, mode, data, maj, mnr) in enumerate(entries + [("TRAILER!!!", 0, b"", 0, 0)], 1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, maj, mnr, len(nb), 0))
        out += hdr.encode() + nb
        out += b"\0" * ((4 - len(out) % 4) % 4)
        out += data
        out += b"\0" * ((4 - len(out) % 4) % 4)
    return bytes(out)


def busybox_initrd(path):
    with open("/bin/busybox", "rb") as f:
        bb = f.read()
    init = b"#!/bin/busybox sh\n/bin/busybox echo READY\nexec /bin/busybox sleep 3600\n"
    entries = [("bin", 0o40755, b"", 0, 0), ("dev", 0o40755, b"", 0, 0),
               ("dev/console", 0o20600, b"", 5, 1), ("bin/busybox", 0o100755, bb, 0, 0),
               ("init", 0o100755, init, 0, 0)]
    with open(path, "wb") as f:
        f.write(newc(entries))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    """CPU seconds (user + system) a process used so far: on a loaded machine the wall times of
    both rows swing by seconds, the CPU each VMM spent to reach READY much less."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def started_s(pid):
    """When a process started, in CLOCK_BOOTTIME seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def baseline_once(kernel, initrd, accel):
    accel_opts = ["-accel", "tcg,tb-size=64", "-cpu", "max"] if accel == "tcg" else ["-accel", "kvm", "-cpu", "host"]
    t0 = time.monotonic()
    p = subprocess.Popen(["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=on",
                          "-nodefaults", "-no-user-config", "-display", "none", *accel_opts,
                          "-smp", "1", "-m", str(MEM_MIB), "-kernel", kernel, "-initrd", initrd,
                          "-append", APPEND, "-serial", "stdio", "-no-reboot"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    buf = b""
    while b"READY" not in buf:
        chunk = p.stdout.read1(4096)
        if not chunk:
            raise SystemExit("baseline: QEMU ended before READY")
        buf += chunk
    took = time.monotonic() - t0
    cpu = cpu_s(p.pid)
    time.sleep(2)
    rss = rss_kib(p.pid)
    p.kill()
    p.wait()
    return took, rss, cpu


def qemu_pid(name, root):
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and f"capsule-{name}".encode() in argv \
                and any(root.encode() in a for a in argv):
            return int(d)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--build-dir", default=os.path.join(SRC, "build"))
    ap.add_argument("--accel", default="tcg", choices=["tcg", "kvm"])
    a = ap.parse_args()
    os.environ["CAPSULE_BUILD_DIR"] = os.path.abspath(a.build_dir)
    kernel = os.environ.get("CAPSULE_KERNEL") or (sorted(glob.glob(
        os.path.join(SRC, "out/cache/kernel-*-cloud-amd64/boot/vmlinuz-*"))) or [None])[-1]
    if not kernel or not shutil.which("qemu-system-x86_64"):
        print("SKIP: needs qemu-system-x86_64 and the kernel (mkimage/fetch-kernel.sh cloud out/cache)")
        return 77
    import harness
    import mkimage_busybox

    tmp = tempfile.mkdtemp(prefix="capsule-bench-vm-")
    initrd = os.path.join(tmp, "guest-initrd.img")
    ktree = os.path.dirname(os.path.dirname(os.path.realpath(kernel)))
    subprocess.run([os.path.join(SRC, "mkimage/guest-initrd.sh"), a.build_dir, ktree, initrd],
                   check=True, stdout=subprocess.DEVNULL)
    bb_initrd = os.path.join(tmp, "busybox-initrd.img")
    busybox_initrd(bb_initrd)
    cd = harness.Containerd(tmp).start()
    cap = harness.Capsule(tmp, containerd=cd.sock,
                          extra_args=["--vm-kernel", kernel, "--vm-initrd", initrd]).start()
    capsule_times, baseline_times, vm_rss, base_rss = [], [], [], []
    capsule_cpu, baseline_cpu, timeline = [], [], ""
    try:
        mkimage_busybox.build(tmp)
        cap.ctl(["image", "push", os.path.join(tmp, "busybox-oci.tar")], check=True)
        manifest = os.path.join(tmp, "vm.yaml")
        with open(manifest, "w") as f:
            f.write("kind: MicroVM\nname: bench\nimage: capsule.local/busybox:latest\n"
                    "command: [sh, -c, 'echo READY; exec sleep 3600']\n"
                    f"accel: {a.accel}\nresources: {{cpus: 1, memory: {MEM_MIB}Mi}}\n")
        log = os.path.join(cap.root, "logs", "bench.log")
        for i in range(a.n + 1):  # round 0 builds the image's root disk cache
            b_took, b_rss, b_cpu = baseline_once(kernel, bb_initrd, a.accel)
            cap.ctl(["apply", "-f", manifest], check=True)
            t0 = time.monotonic()
            b0 = time.clock_gettime(time.CLOCK_BOOTTIME)
            while True:
                try:
                    with open(log, "rb") as f:
                        if b"READY" in f.read():
                            break
                except OSError:
                    pass
                if time.monotonic() - t0 > 120:
                    raise SystemExit("capsule: no READY in the VM's log within 120 s")
                time.sleep(0.005)
            took = time.monotonic() - t0
            pid = qemu_pid("bench", cap.root)
            cpu = cpu_s(pid) if pid else 0.0
            spawn = started_s(pid) - b0 if pid else 0.0
            time.sleep(2)
            rss = rss_kib(pid) if pid else 0
            with open(log, errors="replace") as f:
                lines = [l.strip() for l in f if "boot: kernel" in l]
            timeline = lines[-1] if lines else timeline
            cap.ctl(["delete", "bench"], check=True)
            label = "first (cache built)" if i == 0 else f"run {i}"
            print(f"  {label:20s} capsule {took * 1000:7.0f} ms ({cpu:.2f} s CPU)   bare qemu "
                  f"{b_took * 1000:7.0f} ms ({b_cpu:.2f} s CPU); apply to QEMU started {spawn * 1000:.0f} ms",
                  flush=True)
            if i == 0:
                first = took
                continue
            capsule_times.append(took)
            baseline_times.append(b_took)
            capsule_cpu.append(cpu)
            baseline_cpu.append(b_cpu)
            vm_rss.append(rss)
            base_rss.append(b_rss)
    finally:
        cap.stop()
        cd.stop()
        harness.unmount_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    cm, bm = statistics.median(capsule_times), statistics.median(baseline_times)
    print(f"microvm-start ({a.accel}, {MEM_MIB} MiB, 1 vCPU, n={a.n}): capsule median {cm * 1000:.0f} ms, "
          f"bare qemu median {bm * 1000:.0f} ms, ratio {cm / bm:.2f} (goal <= 1.2)")
    cc, bc = statistics.median(capsule_cpu), statistics.median(baseline_cpu)
    print(f"QEMU CPU time to READY: capsule median {cc:.2f} s, bare qemu median {bc:.2f} s, "
          f"ratio {cc / bc:.2f} (steadier than wall time on a loaded machine)")
    print(f"the guest's last boot timeline: {timeline}")
    print(f"first VM of the image (root disk cache built): {first * 1000:.0f} ms; the next ones "
          f"(clone only): median {cm * 1000:.0f} ms")
    print(f"host RSS of an idle VM: capsule {statistics.median(vm_rss) / 1024:.0f} MiB, bare qemu "
          f"{statistics.median(base_rss) / 1024:.0f} MiB, guest memory {MEM_MIB} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
