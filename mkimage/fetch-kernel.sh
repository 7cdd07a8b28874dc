#!/usr/bin/env bash
# Downloads the pinned Debian kernel package (never installed on the build host) and extracts it
# into a cache: out/cache/kernel-<ABI>-<flavour>/{boot,lib/modules}. Idempotent: a finished
# extraction is marked with a stamp file and reused.
# usage: mkimage/fetch-kernel.sh FLAVOUR(cloud|generic) CACHE_DIR   -> prints the extracted tree
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"
flavour=${1:?flavour}; cache=${2:?cache dir}
case $flavour in
cloud) pkg=linux-image-$KERNEL_ABI-cloud-amd64; kver=$KERNEL_ABI-cloud-amd64 ;;
generic) pkg=linux-image-$KERNEL_ABI-amd64; kver=$KERNEL_ABI-amd64 ;;
*) echo "fetch-kernel: unknown flavour $flavour (cloud|generic)" >&2; exit 2 ;;
esac
tree=$cache/kernel-$kver
if [ -f "$tree/.done" ]; then echo "$tree"; exit 0; fi
mkdir -p "$cache/debs"
deb=$cache/debs/${pkg}_${KERNEL_DEB_VERSION}_amd64.deb
if [ ! -s "$deb" ]; then
        echo "fetch-kernel: downloading $pkg=$KERNEL_DEB_VERSION" >&2
        (cd "$cache/debs" && apt-get download -q "$pkg=$KERNEL_DEB_VERSION" >&2) || {
                echo "fetch-kernel: $pkg=$KERNEL_DEB_VERSION not downloadable; available:" >&2
                apt-cache policy "$pkg" >&2
                exit 1
        }
        # apt names the file with an epoch-escaped version; normalise
        f=$(ls "$cache/debs/${pkg}_"*"_amd64.deb" | head -1)
        [ "$f" = "$deb" ] || mv "$f" "$deb"
fi
rm -rf "$tree.tmp"
mkdir -p "$tree.tmp"
dpkg-deb -x "$deb" "$tree.tmp"
[ -f "$tree.tmp/boot/vmlinuz-$kver" ] || { echo "fetch-kernel: no vmlinuz in $deb" >&2; exit 1; }
# Debian 12 ships modules under /lib/modules (usrmerge-style trees are handled too)
[ -d "$tree.tmp/lib/modules/$kver" ] || [ -d "$tree.tmp/usr/lib/modules/$kver" ] || { echo "fetch-kernel: no modules" >&2; exit 1; }
if [ ! -d "$tree.tmp/lib/modules/$kver" ]; then mkdir -p "$tree.tmp/lib/modules"; mv "$tree.tmp/usr/lib/modules/$kver" "$tree.tmp/lib/modules/"; fi
depmod -b "$tree.tmp" "$kver"
echo "$kver" > "$tree.tmp/.kver"
touch "$tree.tmp/.done"
rm -rf "$tree"
mv "$tree.tmp" "$tree"
echo "$tree"
