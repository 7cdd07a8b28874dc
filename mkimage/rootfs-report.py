#!/usr/bin/env python3
"""Lists every file of a staged root filesystem by size, with who needs it (issue 12: an image
with nothing it does not use). Shared libraries name the ELF files that list them as NEEDED
(directly); everything else says why it is there from the rules below, or "?" when nothing says.

    mkimage/rootfs-report.py ROOT > out/rootfs-files.txt     (mkimage/build.sh writes it)
"""
import os
import subprocess
import sys

# why a file that is not a NEEDED library is in the image (path prefixes, first match wins)
WHY = [
    ("usr/bin/capsuled", "PID 1"),
    ("usr/libexec/capsule/", "capsuled (serve, dhcp hook, log writer)"),
    ("usr/bin/capsulectl", "operator CLI on the machine (debug container, runbooks)"),
    ("usr/lib/capsule/vmlinuz", "microVM kernel"),
    ("usr/lib/capsule/guest-initramfs.img", "microVM initramfs (capsule-guest)"),
    ("usr/bin/containerd", "container runtime"),
    ("usr/sbin/runc", "container runtime"),
    ("usr/lib/cni/", "container networking (conflist of net/cni-json.c)"),
    ("usr/bin/qemu-system-x86_64", "microVMs"),
    ("usr/share/qemu/", "microVM firmware"),
    ("usr/lib/modules/", "kernel modules (mkimage/files/modules-*)"),
    ("usr/lib/x86_64-linux-gnu/xtables/", "iptables extensions (CNI bridge/portmap)"),
    ("usr/sbin/", "tools PID 1 or serve run (LVM, e2fsprogs, iptables, dhcpcd, chronyd)"),
    ("etc/", "configuration"),
]


def needed(path):
    try:
        out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [l.split("[", 1)[1].rstrip("]") for l in out.splitlines() if "(NEEDED)" in l]


def main():
    root = sys.argv[1]
    files = []
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            files.append((os.path.getsize(p), os.path.relpath(p, root)))
    users = {}
    for _, rel in files:
        with open(os.path.join(root, rel), "rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        for lib in needed(os.path.join(root, rel)):
            users.setdefault(lib, []).append(os.path.basename(rel))
    total = sum(s for s, _ in files)
    print(f"# {len(files)} files, {total / 1048576:.1f} MiB staged (before squashfs)")
    print(f"# {'MiB':>7}  path  <- needed by")
    for size, rel in sorted(files, reverse=True):
        base = os.path.basename(rel)
        who = users.get(base)
        why = ", ".join(sorted(set(who))[:6]) + (" ..." if who and len(set(who)) > 6 else "") if who \
            else next((w for pre, w in WHY if rel.startswith(pre)), "?")
        print(f"{size / 1048576:9.2f}  /{rel}  <- {why}")


if __name__ == "__main__":
    main()
