#!/usr/bin/env bash
# Builds the microVM initramfs: capsule-guest as /init, the shared libraries it needs (with the
# dynamic loader, resolved with ldd) and the kernel modules it loads (only those the kernel does
# not have built in), as a reproducible uncompressed newc cpio.
# usage: mkimage/guest-initrd.sh BUILD_DIR KERNEL_TREE OUT_FILE
#   BUILD_DIR    meson build dir holding src/capsule-guest/capsule-guest
#   KERNEL_TREE  an extracted kernel package (mkimage/fetch-kernel.sh): boot/config-*, lib/modules/
#   OUT_FILE     the initramfs to write
# capsule-guest mounts devtmpfs itself (CONFIG_DEVTMPFS_MOUNT does not apply to an initramfs) and
# loads every module in /lib/modules/<kver>/modules.dep, dependencies first.
set -euo pipefail
build=${1:?usage: guest-initrd.sh BUILD_DIR KERNEL_TREE OUT_FILE}
ktree=${2:?kernel tree}
out=${3:?output file}
here=$(cd "$(dirname "$0")" && pwd)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$here/.." log -1 --format=%ct 2>/dev/null || echo 0)}

guest=$build/src/capsule-guest/capsule-guest
[ -x "$guest" ] || { echo "guest-initrd: $guest not built" >&2; exit 1; }
kver=$(cat "$ktree/.kver" 2>/dev/null || ls "$ktree/lib/modules" | head -1)
config=$ktree/boot/config-$kver
kmods=$ktree/lib/modules/$kver
[ -f "$config" ] || { echo "guest-initrd: no kernel config $config" >&2; exit 1; }
[ -d "$kmods" ] || { echo "guest-initrd: no modules in $kmods" >&2; exit 1; }

# What the guest needs from the kernel: CONFIG option -> module name (when built as a module).
needed="VIRTIO_MMIO:virtio_mmio VIRTIO_BLK:virtio_blk VIRTIO_NET:virtio_net
VIRTIO_VSOCKETS:vmw_vsock_virtio_transport EXT4_FS:ext4 HW_RANDOM_VIRTIO:virtio_rng"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root"/{proc,sys,dev,run,tmp,newroot,usr/bin,usr/lib,usr/lib64}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d" 2>/dev/null || ln -s usr/bin "$root/$d"; done
chmod 1777 "$root/tmp"
install -m755 "$guest" "$root/init"
strip --strip-unneeded "$root/init" 2>/dev/null || true

# shared libraries (ldd lists the whole closure and the loader); /lib/x -> /usr/lib/x
for lib in $(ldd "$guest" | grep -oE '/[^ ]+' | LC_ALL=C sort -u); do
        case $lib in
        /lib/* | /lib64/*) dst=$root/usr$lib ;;
        *) dst=$root$lib ;;
        esac
        mkdir -p "$(dirname "$dst")"
        cp -L "$lib" "$dst"
        strip --strip-unneeded "$dst" 2>/dev/null || true
done

# modules: only those configured =m, each with its dependencies
mods=
for pair in $needed; do
        opt=${pair%%:*} mod=${pair#*:}
        val=$(sed -n "s/^CONFIG_$opt=\(.\)$/\1/p" "$config")
        case $val in
        y) echo "guest-initrd:   $mod built in" ;;
        m) mods="$mods $mod" ;;
        *) echo "guest-initrd:   CONFIG_$opt not set: $mod unavailable" >&2 ;;
        esac
done
mkdir -p "$root/lib/modules/$kver"
for m in $mods; do
        modprobe -d "$ktree" -S "$kver" --show-depends "$m" | awk '$1=="insmod"{print $2}' |
                while read -r p; do install -D -m644 "$p" "$root/usr/lib/modules/$kver/${p#"$kmods"/}"; done
done
cp "$kmods"/modules.order "$kmods"/modules.builtin "$kmods"/modules.builtin.modinfo \
        "$root/usr/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$root" "$kver"
echo "guest-initrd: modules:$(sed 's/:.*//; s#.*/# #' "$root/usr/lib/modules/$kver/modules.dep" | tr -d '\n')"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$(dirname "$out")"
# Uncompressed on purpose: under TCG the kernel spends ~0.3 s of CPU inflating a zstd initramfs
# before /init (measured: 2.2-2.4 s of QEMU CPU to a first line with zstd, 1.9-2.0 s without, the
# same as a 2 MB busybox initramfs), and the image's squashfs compresses this file anyway.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
        > "$out.tmp"
mv "$out.tmp" "$out"
echo "guest-initrd: $out $(stat -c %s "$out") bytes ($(awk -v b="$(stat -c %s "$out")" 'BEGIN{printf "%.1f MiB", b/1048576}'))"
