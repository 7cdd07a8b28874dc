#!/usr/bin/env bash
# Downloads a Debian package (never installed on the build host: no service starts there) and
# extracts it into a cache: out/cache/deb-<pkg>-<version>/. Idempotent (a stamp marks a finished
# extraction). The pinned version is used when the archive still has it; otherwise the archive's
# candidate, with a note (Debian replaces point releases: a pin would otherwise break the build).
# usage: mkimage/fetch-deb.sh PKG VERSION CACHE_DIR   -> prints the extracted tree
set -euo pipefail
pkg=${1:?package}; want=${2:?version}; cache=${3:?cache dir}
mkdir -p "$cache/debs"
have=$(ls "$cache/debs/${pkg}_"*"_amd64.deb" 2>/dev/null | head -1 || true)
if [ -z "$have" ]; then
        (cd "$cache/debs" && apt-get download -q "$pkg=$want" >&2 2>/dev/null) || {
                echo "fetch-deb: $pkg=$want is no longer in the archive; using its candidate" >&2
                (cd "$cache/debs" && apt-get download -q "$pkg" >&2)
        }
        have=$(ls "$cache/debs/${pkg}_"*"_amd64.deb" | head -1)
fi
ver=$(dpkg-deb -f "$have" Version)
tree=$cache/deb-$pkg-$ver
if [ -f "$tree/.done" ]; then echo "$tree"; exit 0; fi
rm -rf "$tree.tmp"
mkdir -p "$tree.tmp"
dpkg-deb -x "$have" "$tree.tmp"
echo "$ver" > "$tree.tmp/.version"
touch "$tree.tmp/.done"
rm -rf "$tree"
mv "$tree.tmp" "$tree"
echo "$tree"
