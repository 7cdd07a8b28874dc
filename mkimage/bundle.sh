#!/usr/bin/env bash
# Builds the signed update bundle DIR/capsule-VERSION.bundle from DIR/vmlinuz, DIR/initramfs.img
# and DIR/rootfs.sqfs (what mkimage/build.sh writes), with tar, sha256sum and openssl only.
# The format is in docs/updates.md: an uncompressed POSIX ustar archive holding, in this order,
#   manifest.json       {"format": 1, "version", "arch", ["min_from_version"], "perm_format",
#                        "perm_compat", "parts": [...]}
#   manifest.json.sig   raw 64-byte Ed25519 signature over manifest.json's exact bytes
#   vmlinuz, initrd, rootfs.sqfs   (initrd is DIR/initramfs.img)
# Reproducible: the same inputs and SOURCE_DATE_EPOCH give the same bytes.
# usage: mkimage/bundle.sh --out DIR --version V --signing-key KEY [--min-from V] [--arch A]
#                          [--perm-format N --perm-compat N]
# KEY is the Ed25519 private key `capsulectl gen config` wrote (secrets/update-signing.key).
# The /perm formats default to CAPSULE_PERM_FORMAT and _COMPAT in src/capsuled/store/store.h.
set -euo pipefail

out=
version=
key=
min_from=
arch=x86_64
here=$(cd "$(dirname "$0")" && pwd)
perm_h=$here/../src/capsuled/store/store.h
perm_format=$(sed -n 's/^#define CAPSULE_PERM_FORMAT \([0-9]*\)$/\1/p' "$perm_h" 2>/dev/null || true)
perm_compat=$(sed -n 's/^#define CAPSULE_PERM_COMPAT \([0-9]*\)$/\1/p' "$perm_h" 2>/dev/null || true)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "bundle: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
        case $1 in
        --out) out=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --signing-key) key=$2; shift 2 ;;
        --min-from) min_from=$2; shift 2 ;;
        --arch) arch=$2; shift 2 ;;
        --perm-format) perm_format=$2; shift 2 ;;
        --perm-compat) perm_compat=$2; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "bundle: unknown option $1" >&2; usage ;;
        esac
done
[ -n "$out" ] && [ -n "$version" ] && [ -n "$key" ] ||
        { echo "bundle: --out, --version and --signing-key are required" >&2; usage; }
# the reader's rule (bundle.h): MAJOR.MINOR.PATCH, no leading zeros, optional -SUFFIX
ver_re='^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(-([0-9A-Za-z-]+)(\.[0-9A-Za-z-]+)*)?$'
[[ $version =~ $ver_re ]] && [ ${#version} -le 63 ] || die "--version $version: expected MAJOR.MINOR.PATCH[-SUFFIX]"
[ -z "$min_from" ] || [[ $min_from =~ $ver_re ]] || die "--min-from $min_from: expected MAJOR.MINOR.PATCH[-SUFFIX]"
[[ $arch =~ ^[a-z0-9_]+$ ]] || die "--arch $arch: expected a name like x86_64"
for f in "perm-format:$perm_format" "perm-compat:$perm_compat"; do
        [[ ${f#*:} =~ ^[1-9][0-9]{0,5}$ ]] && [ "${f#*:}" -le 1000000 ] ||
                die "--${f%%:*} '${f#*:}': expected an integer from 1 to 1000000 (default: $perm_h)"
done
[ "$perm_compat" -le "$perm_format" ] || die "--perm-compat $perm_compat is above --perm-format $perm_format"
[ -r "$key" ] || die "cannot read the signing key $key"
openssl pkey -in "$key" -noout -text 2>/dev/null | head -1 | grep -q '^ED25519 Private-Key' ||
        die "$key is not an Ed25519 private key (capsulectl gen config writes one: secrets/update-signing.key)"
for f in vmlinuz initramfs.img rootfs.sqfs; do
        [ -f "$out/$f" ] || die "$out/$f is missing (run mkimage/build.sh first)"
done
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}

work=$(mktemp -d "$out/.bundle.XXXXXX")
trap 'rm -rf "$work"' EXIT
# the members under their names in the bundle (hard links: the root image is large)
for pair in vmlinuz:vmlinuz initramfs.img:initrd rootfs.sqfs:rootfs.sqfs; do
        ln "$out/${pair%%:*}" "$work/${pair##*:}" 2>/dev/null || cp "$out/${pair%%:*}" "$work/${pair##*:}"
done
part() { # name, then a comma unless last
        printf '    {"name": "%s", "size": %s, "sha256": "%s"}%s\n' "$1" \
                "$(stat -c %s "$work/$1")" "$(sha256sum < "$work/$1" | cut -d' ' -f1)" "$2"
}
{
        printf '{\n  "format": 1,\n  "version": "%s",\n  "arch": "%s",\n' "$version" "$arch"
        [ -z "$min_from" ] || printf '  "min_from_version": "%s",\n' "$min_from"
        printf '  "perm_format": %s,\n  "perm_compat": %s,\n' "$perm_format" "$perm_compat"
        printf '  "parts": [\n'
        part vmlinuz ,
        part initrd ,
        part rootfs.sqfs ''
        printf '  ]\n}\n'
} > "$work/manifest.json"
openssl pkeyutl -sign -rawin -inkey "$key" -in "$work/manifest.json" -out "$work/manifest.json.sig"
[ "$(stat -c %s "$work/manifest.json.sig")" = 64 ] || die "openssl did not write a 64-byte Ed25519 signature"

bundle=$out/capsule-$version.bundle
tar --format=ustar --create --file "$bundle.tmp" --directory "$work" --no-recursion \
        --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner --mode=0644 \
        manifest.json manifest.json.sig vmlinuz initrd rootfs.sqfs
mv "$bundle.tmp" "$bundle"
echo "bundle: wrote $bundle ($(stat -c %s "$bundle") bytes, version $version, $arch)"
