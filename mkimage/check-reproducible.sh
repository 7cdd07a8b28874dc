#!/usr/bin/env bash
# Builds the image twice from the same inputs (into two scratch output dirs, sharing the kernel
# cache) and compares every output byte for byte. Exit 0 when identical.
# usage: mkimage/check-reproducible.sh --machine-config FILE [--build-dir DIR]   (other build.sh
#        options are passed through; --no-build is implied for the second build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
scratch=$src/out/repro
rm -rf "$scratch"
mkdir -p "$scratch"
"$here/build.sh" --out "$scratch/1" "$@" >"$scratch/1.log"
sleep 2 # a different wall clock must not matter
"$here/build.sh" --out "$scratch/2" --no-build "$@" >"$scratch/2.log"
rc=0
for f in capsule.raw rootfs.sqfs initramfs.img vmlinuz; do
        a=$(sha256sum < "$scratch/1/$f" | cut -d' ' -f1)
        b=$(sha256sum < "$scratch/2/$f" | cut -d' ' -f1)
        if [ "$a" = "$b" ]; then echo "same      $f $a"; else echo "DIFFERENT $f"; rc=1; fi
done
[ $rc = 0 ] && rm -rf "$scratch"
exit $rc
