#!/usr/bin/env bash
# Boot benchmark (TCG unless CAPSULE_ACCEL says otherwise), same kernel for every row:
#   baseline        QEMU start -> first line of a trivial busybox init (direct kernel boot)
#   capsule direct  QEMU start -> first successful `capsulectl version` (direct kernel boot),
#                   first boot (initialises /perm) and second boot (activates it)
#   capsule uefi    the same under OVMF + systemd-boot, as on hardware (first boot)
# plus the image part sizes, the idle RSS of PID 1 and its services (logged by PID 1 30 s
# after boot: "init: stats: rss ...") and the second boot's timeline (`capsulectl health --boot`).
# usage: bench/boot/run.sh [--build-dir DIR] [--no-uefi]   (needs out/capsule.raw: mkimage/build.sh)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build_dir=${CAPSULE_BUILD_DIR:-$src/build}
uefi=1
while [ $# -gt 0 ]; do
        case $1 in
        --build-dir) build_dir=$2; shift 2 ;;
        --no-uefi) uefi=0; shift ;;
        *) echo "usage: $0 [--build-dir DIR] [--no-uefi]" >&2; exit 2 ;;
        esac
done
out=$src/out
work=$out/bench-boot
rm -rf "$work"
mkdir -p "$work"
[ -f "$out/capsule.raw" ] || { echo "bench: build the image first (mkimage/build.sh)" >&2; exit 1; }
accel=${CAPSULE_ACCEL:-tcg}
accel_opts=(-accel tcg,tb-size=256 -cpu max)
[ "$accel" = kvm ] && accel_opts=(-accel kvm -cpu host)

# ---- baseline: busybox init that prints one line and powers off
ird=$work/baseline-root
mkdir -p "$ird"/{bin,proc,dev}
cp /bin/busybox "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
printf '#!/bin/sh\necho BENCH-FIRST-LINE\n/bin/busybox poweroff -f\n' > "$ird/init"
chmod +x "$ird/init"
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$work/baseline.cpio"
log=$work/baseline.log
t0=$(date +%s.%N)
qemu-system-x86_64 -M q35 "${accel_opts[@]}" -smp 2 -m 2048 -display none -monitor none -no-reboot \
        -nodefaults -serial "file:$log" -kernel "$out/vmlinuz" -initrd "$work/baseline.cpio" \
        -append "console=ttyS0 panic=-1 quiet" &
qpid=$!
while kill -0 $qpid 2>/dev/null && ! grep -q BENCH-FIRST-LINE "$log" 2>/dev/null; do sleep 0.05; done
t1=$(date +%s.%N)
kill $qpid 2>/dev/null || true
wait $qpid 2>/dev/null || true
baseline=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')

# ---- capsule
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'kill "$(cat "$work/vm/qemu.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
api_time() { sed -n 's/.*API up \([0-9.]*\) s after QEMU start.*/\1/p' "$1"; }
run_capsule() { # name, capsule-up options...
        local name=$1
        shift
        "$src/scripts/capsule-up" --detach --no-build --build-dir "$build_dir" --work-dir "$work/vm" \
                --port "$port" --timeout 600 "$@" > "$work/$name.up" 2>&1 || { cat "$work/$name.up"; exit 1; }
        api_time "$work/$name.up"
}
stop_vm() { kill "$(cat "$work/vm/qemu.pid")" 2>/dev/null || true; sleep 1; }
export CAPSULE_ACCEL=$accel
direct1=$(run_capsule direct-first --direct)
stop_vm
direct2=$(run_capsule direct-second --direct --keep-disk)
# where the second boot's time went (PID 1's and serve's phases, `capsulectl health --boot`)
timeline=$(CAPSULECONFIG=$src/out/dev-config/capsuleconfig "$build_dir/src/capsulectl/capsulectl" \
        --capsule "127.0.0.1:$port" health --boot 2>&1 | sed 's/^/  /' || true)
# idle memory: PID 1 logs it 30 s after its services started
for _ in $(seq 1 90); do grep -aq 'init: stats: rss' "$work/vm/serial.log" && break; sleep 1; done
rss=$(grep -a 'init: stats: rss' "$work/vm/serial.log" | tail -1 | sed 's/.*stats: rss //')
stop_vm
uefi1=-
if [ "$uefi" = 1 ]; then
        uefi1=$(run_capsule uefi-first)
        stop_vm
fi

. "$out/image.env"
mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
cat <<R
Capsule boot benchmark ($accel, 2 vCPUs, 2 GiB, kernel $KERNEL_VERSION)
  baseline: busybox init first line (direct boot)      ${baseline} s
  capsule:  first API answer, direct boot, first boot  ${direct1} s   (+$(awk -v a="$direct1" -v b="$baseline" 'BEGIN{printf "%.1f", a-b}') s)
  capsule:  first API answer, direct boot, second boot ${direct2} s   (+$(awk -v a="$direct2" -v b="$baseline" 'BEGIN{printf "%.1f", a-b}') s)
  capsule:  first API answer, UEFI, first boot         ${uefi1} s
Image: vmlinuz $(mib "$VMLINUZ_BYTES"), initramfs $(mib "$INITRAMFS_BYTES"), root $(mib "$ROOTFS_BYTES") staged / $(mib "$SQUASHFS_BYTES") squashfs, capsule.raw $(mib "$RAW_ALLOCATED_BYTES") allocated of $(mib "$RAW_BYTES")
Idle RSS: ${rss:-not reported}
Boot timeline of the second direct boot (ms since the kernel started):
$timeline
R
