#!/usr/bin/env bash
# mkimage/bundle.sh makes a bundle that the real reader (bundle-verify, on src/capsuled/update/
# bundle.c) accepts in random chunk sizes, and refuses with the right status once tampered,
# signed by another key, truncated, a downgrade or for another architecture. It also checks that
# two runs give the same bytes and that `openssl pkeyutl -verify` accepts the signature.
#   test-update-bundle-sh.sh BUNDLE_SH BUNDLE_VERIFY
set -euo pipefail
bundle_sh=$1
verify=$2
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fails=0
check() { # description, expected exit status, command...
        local what=$1 want=$2 rc=0
        shift 2
        "$@" >"$t/out" 2>&1 || rc=$?
        if [ "$rc" != "$want" ]; then
                echo "FAIL $what: exit $rc, expected $want"; sed 's/^/  /' "$t/out"; fails=$((fails + 1))
        else
                echo "ok   $what: $(head -1 "$t/out")"
        fi
}

openssl genpkey -algorithm ed25519 -out "$t/key.pem" 2>/dev/null
openssl pkey -in "$t/key.pem" -pubout -out "$t/pub.pem"
openssl genpkey -algorithm ed25519 -out "$t/other.pem" 2>/dev/null
openssl pkey -in "$t/other.pem" -pubout -out "$t/other.pub"
mkdir "$t/out1"
printf 'a fake kernel\n' > "$t/out1/vmlinuz"
head -c 3000 /dev/urandom > "$t/out1/initramfs.img"
head -c 200000 /dev/urandom > "$t/out1/rootfs.sqfs"
export SOURCE_DATE_EPOCH=1700000000
"$bundle_sh" --out "$t/out1" --version 0.2.0 --signing-key "$t/key.pem" --min-from 0.1.0 >/dev/null
b=$t/out1/capsule-0.2.0.bundle
[ -f "$b" ] || { echo "FAIL: no bundle written"; exit 1; }

# reproducible, and standard tools read it
"$bundle_sh" --out "$t/out1" --version 0.2.0 --signing-key "$t/key.pem" --min-from 0.1.0 >/dev/null
cp "$b" "$t/again.bundle"
"$bundle_sh" --out "$t/out1" --version 0.2.0 --signing-key "$t/key.pem" --min-from 0.1.0 >/dev/null
check "reproducible" 0 cmp "$b" "$t/again.bundle"
check "tar lists the members in order" 0 \
        bash -c "[ \"\$(tar -tf '$b' | tr '\n' ' ')\" = 'manifest.json manifest.json.sig vmlinuz initrd rootfs.sqfs ' ]"
mkdir "$t/x" && tar -xf "$b" -C "$t/x"
check "openssl verifies the signature" 0 openssl pkeyutl -verify -rawin -pubin -inkey "$t/pub.pem" \
        -in "$t/x/manifest.json" -sigfile "$t/x/manifest.json.sig"

for seed in 1 2 3 4 5; do
        check "accepted (seed $seed)" 0 "$verify" --seed "$seed" --key "$t/other.pub" --key "$t/pub.pem" \
                --arch x86_64 --running 0.1.0 "$b"
done
check "signed by another key" 7 "$verify" --key "$t/other.pub" --arch x86_64 "$b"
check "no trusted key" 7 "$verify" --arch x86_64 "$b"
check "other architecture" 9 "$verify" --key "$t/pub.pem" --arch aarch64 "$b"
check "not newer" 9 "$verify" --key "$t/pub.pem" --arch x86_64 --running 0.2.0 "$b"
check "downgrade" 9 "$verify" --key "$t/pub.pem" --arch x86_64 --running 0.3.0 "$b"
check "downgrade allowed" 0 "$verify" --key "$t/pub.pem" --arch x86_64 --running 0.3.0 --allow-downgrade "$b"
check "below min_from_version" 9 "$verify" --key "$t/pub.pem" --arch x86_64 --running 0.0.9 "$b"
check "the /perm formats come from store.h" 0 grep -q '"perm_compat": 1,' "$t/x/manifest.json"
mkdir "$t/out2" && cp "$t/out1/vmlinuz" "$t/out1/initramfs.img" "$t/out1/rootfs.sqfs" "$t/out2/"
"$bundle_sh" --out "$t/out2" --version 0.3.0 --signing-key "$t/key.pem" --perm-format 3 --perm-compat 2 >/dev/null
check "perm_compat above the running format" 9 "$verify" --key "$t/pub.pem" --arch x86_64 "$t/out2/capsule-0.3.0.bundle"
check "perm_compat the running format reads" 0 "$verify" --key "$t/pub.pem" --arch x86_64 --perm-format 2 "$t/out2/capsule-0.3.0.bundle"
check "bundle.sh: perm-compat above perm-format" 1 "$bundle_sh" --out "$t/out2" --version 0.4.0 --signing-key "$t/key.pem" --perm-format 1 --perm-compat 2
size=$(stat -c %s "$b")
head -c $((size - 15000)) "$b" > "$t/truncated.bundle"
check "truncated" 15 "$verify" --key "$t/pub.pem" --arch x86_64 "$t/truncated.bundle"
cp "$b" "$t/tampered.bundle"
# flip a byte inside rootfs.sqfs (the last member; the archive ends with >= 1024 zero bytes)
off=$(( $(grep -obUa 'rootfs.sqfs' "$b" | tail -1 | cut -d: -f1) + 512 + 1000 ))
printf 'TAMPERED-TAMPERED' | dd of="$t/tampered.bundle" bs=1 seek="$off" conv=notrunc status=none
check "tampered part" 15 "$verify" --key "$t/pub.pem" --arch x86_64 "$t/tampered.bundle"
# a manifest edited after signing
mkdir "$t/edit" && tar -xf "$b" -C "$t/edit"
sed -i 's/"0.2.0"/"0.2.1"/' "$t/edit/manifest.json"
tar --format=ustar -cf "$t/edited.bundle" -C "$t/edit" manifest.json manifest.json.sig vmlinuz initrd rootfs.sqfs
check "manifest edited after signing" 7 "$verify" --key "$t/pub.pem" --arch x86_64 "$t/edited.bundle"
# GNU format (not ustar) is refused
tar --format=gnu -cf "$t/gnu.bundle" -C "$t/x" manifest.json manifest.json.sig vmlinuz initrd rootfs.sqfs
check "GNU tar format" 3 "$verify" --key "$t/pub.pem" --arch x86_64 "$t/gnu.bundle"
# bad inputs to bundle.sh
check "bundle.sh: bad version" 1 "$bundle_sh" --out "$t/out1" --version 1.2 --signing-key "$t/key.pem"
openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out "$t/ec.pem" 2>/dev/null
check "bundle.sh: not an Ed25519 key" 1 "$bundle_sh" --out "$t/out1" --version 0.3.0 --signing-key "$t/ec.pem"

[ "$fails" = 0 ] || { echo "$fails failed"; exit 1; }
echo "all passed"
