#!/usr/bin/env bash
# Builds the Capsule OS image from Debian packages installed on the build host plus the pinned
# kernel (mkimage/versions.env). Idempotent; everything goes to the output directory:
#   capsule.raw      GPT disk: EFI (systemd-boot, kernel+initramfs per slot), slot_a (squashfs root),
#                    slot_b (empty), perm (empty; the first boot makes it an LVM PV)
#   vmlinuz, initramfs.img, cmdline   for direct QEMU boot (attach capsule.raw too: root is on it)
#   guest-initrd.img   the microVM initramfs (capsule-guest as /init), also in the root image
#   rootfs.sqfs      the root image of slot_a
#   capsule-V.bundle the signed update bundle of this build (docs/updates.md), when a key signs it
#   image.env        what was built (versions, sizes, partition offsets)
# usage: mkimage/build.sh --machine-config FILE [--version V] [--signing-key FILE]
#                         [--kernel cloud|generic] [--debug-shell] [--build-dir DIR] [--no-build]
#                         [--out DIR] [--perm-size MiB] [--slot-size MiB] [--test-fail-health]
# --version V is the OS version the image records (/usr/lib/capsule/version, os-release, the loader
# entry) and its bundle carries (default: meson.build's). The bundle is signed with --signing-key,
# else with secrets/update-signing.key beside the machine config when it exists (capsulectl gen
# config writes both), else not built. --no-build takes the binaries already in --build-dir (e.g.
# CI's build) instead of running ninja. --test-fail-health is for tests only: the image's capsuled
# reports a failing health check, so a tentative boot of it always rolls back (e2e update test).
# The kernel download is cached in $CAPSULE_CACHE_DIR (default out/cache), shared by every --out.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
. "$here/versions.env"

machine_config=
flavour=cloud
debug_shell=0
out=$src/out
build_dir=
no_build=0
perm_mib=4096
slot_mib=640
esp_mib=128

version=
signing_key=
test_fail_health=0

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
        case $1 in
        --machine-config) machine_config=$2; shift 2 ;;
        --kernel) flavour=$2; shift 2 ;;
        --debug-shell) debug_shell=1; shift ;;
        --build-dir) build_dir=$2; shift 2 ;;
        --no-build) no_build=1; shift ;;
        --out) out=$2; shift 2 ;;
        --perm-size) perm_mib=$2; shift 2 ;;
        --slot-size) slot_mib=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --signing-key) signing_key=$2; shift 2 ;;
        --test-fail-health) test_fail_health=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "mkimage: unknown option $1" >&2; usage ;;
        esac
done
[ -n "$machine_config" ] || { echo "mkimage: --machine-config FILE is required (capsulectl gen config)" >&2; usage; }
[ -r "$machine_config" ] || { echo "mkimage: cannot read $machine_config" >&2; exit 1; }
# the bundle reader's version rule (docs/updates.md): MAJOR.MINOR.PATCH[-SUFFIX]
ver_re='^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(-([0-9A-Za-z-]+)(\.[0-9A-Za-z-]+)*)?$'
version=${version:-$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$src/meson.build" | head -1)}
[[ $version =~ $ver_re ]] && [ ${#version} -le 63 ] ||
        { echo "mkimage: --version $version: expected MAJOR.MINOR.PATCH[-SUFFIX]" >&2; exit 1; }
if [ -z "$signing_key" ] && [ -r "$(dirname "$machine_config")/secrets/update-signing.key" ]; then
        signing_key=$(dirname "$machine_config")/secrets/update-signing.key
fi
[ -z "$signing_key" ] || [ -r "$signing_key" ] ||
        { echo "mkimage: cannot read the signing key $signing_key" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
build_dir=${build_dir:-$out/build}
cache_dir=${CAPSULE_CACHE_DIR:-$src/out/cache}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$DEFAULT_SOURCE_DATE_EPOCH}
t_start=$(date +%s)
step() { echo "mkimage: [$(( $(date +%s) - t_start ))s] $*"; }

# ---------------------------------------------------------------- kernel (cached)
step "kernel: linux-image-$KERNEL_ABI ($flavour) $KERNEL_DEB_VERSION"
ktree=$("$here/fetch-kernel.sh" "$flavour" "$cache_dir")
kver=$(cat "$ktree/.kver")
kmods=$ktree/lib/modules/$kver
# chrony's NTP daemon, from its package (not installed on the build host, where it would start)
step "chrony $CHRONY_DEB_VERSION"
chrony_tree=$("$here/fetch-deb.sh" chrony "$CHRONY_DEB_VERSION" "$cache_dir")

# ---------------------------------------------------------------- our binaries
if [ "$no_build" = 0 ]; then
        step "meson build in $build_dir"
        if [ ! -f "$build_dir/build.ninja" ]; then
                meson setup "$build_dir" "$src" >"$out/meson-setup.log" 2>&1 ||
                        { cat "$out/meson-setup.log" >&2; exit 1; }
        fi
        targets="src/capsuled/capsuled src/capsuled/capsuled-serve src/capsulectl/capsulectl src/capsuled/capsule-dhcp-hook src/capsuled/capsule-log-writer"
        if grep -q "capsule-guest/capsule-guest:" "$build_dir/build.ninja"; then
                targets="$targets src/capsule-guest/capsule-guest"
        fi
        ninja -C "$build_dir" -j "${NINJA_JOBS:-2}" $targets >"$out/ninja.log" 2>&1 ||
                { grep -E -A3 'error|FAILED' "$out/ninja.log" | head -40 >&2; exit 1; }
else
        step "using the binaries already built in $build_dir"
fi
for b in src/capsuled/capsuled src/capsuled/capsuled-serve src/capsulectl/capsulectl src/capsuled/capsule-dhcp-hook src/capsuled/capsule-log-writer; do
        [ -x "$build_dir/$b" ] || { echo "mkimage: $build_dir/$b missing" >&2; exit 1; }
done

# ---------------------------------------------------------------- root filesystem staging
root=$out/rootfs
rm -rf "$root"
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,usr/libexec/capsule,usr/lib/capsule}
for d in bin sbin lib lib64; do ln -s usr/$d "$root/$d"; done
mkdir -p "$root"/{etc,proc,sys,dev,run,tmp,var/lib,var/log,perm,root,mnt}
ln -s ../run "$root/var/run"
chmod 0700 "$root/root"
chmod 1777 "$root/tmp"

# installs files into tree $1 at their merged-/usr path (/lib/x -> /usr/lib/x; the build host is
# merged-/usr too); for ELF files also the shared libraries ldd names (ldd already
# lists the whole closure, so libraries are not re-examined)
declare -A installed
install_one() {
        local tree=$1 f=$2 dst
        case $f in
        /bin/* | /sbin/* | /lib/* | /lib64/*) dst=$tree/usr$f ;;
        *) dst=$tree$f ;;
        esac
        [ -n "${installed[$dst]:-}" ] && return 0
        installed[$dst]=1
        if [ ! -e "$dst" ]; then
                mkdir -p "${dst%/*}"
                cp -L --preserve=mode "$f" "$dst"
        fi
}
install_files() {
        local tree=$1 f lib
        shift
        for f in "$@"; do
                install_one "$tree" "$f"
                [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
                for lib in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+'); do
                        install_one "$tree" "$lib"
                done
        done
}
strip_into() { install -D -m "$3" "$1" "$2"; strip --strip-unneeded "$2" 2>/dev/null || true; }

step "staging root filesystem"
# PID 1 (libc + libyaml) and the control plane it starts as `capsuled serve` (src/capsuled/main.c)
strip_into "$build_dir/src/capsuled/capsuled" "$root/usr/bin/capsuled" 755
strip_into "$build_dir/src/capsuled/capsuled-serve" "$root/usr/libexec/capsule/capsuled-serve" 755
strip_into "$build_dir/src/capsulectl/capsulectl" "$root/usr/bin/capsulectl" 755
strip_into "$build_dir/src/capsuled/capsule-dhcp-hook" "$root/usr/libexec/capsule/dhcp-hook" 755
# libc-only log writer the shim starts per task (capsuled's own would load ~90 libraries each time)
strip_into "$build_dir/src/capsuled/capsule-log-writer" "$root/usr/libexec/capsule/log-writer" 755
ln -s ../bin/capsuled "$root/usr/sbin/init"
# libraries of our own binaries
for b in "$root/usr/bin/capsuled" "$root/usr/libexec/capsule/capsuled-serve" "$root/usr/bin/capsulectl"; do
        for lib in $(ldd "$b" | grep -oE '/[^ ]+'); do install_one "$root" "$lib"; done
done

install_files "$root" \
        /usr/bin/containerd /usr/bin/containerd-shim-runc-v2 /usr/sbin/runc \
        /usr/sbin/lvm /usr/sbin/dmsetup /usr/sbin/pdata_tools \
        /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/resize2fs /usr/sbin/tune2fs /usr/sbin/fsck.fat \
        /usr/sbin/dhcpcd /usr/lib/x86_64-linux-gnu/dhcpcd/dev/udev.so /usr/bin/kmod \
        /usr/sbin/xtables-nft-multi \
        /usr/bin/qemu-system-x86_64 /usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so
# chronyd keeps the clock (PID 1 supervises it; TLS needs a right clock); libraries from the host
strip_into "$chrony_tree/usr/sbin/chronyd" "$root/usr/sbin/chronyd" 755
for lib in $(ldd "$root/usr/sbin/chronyd" | grep -oE '/[^ ]+'); do install_one "$root" "$lib"; done
for t in pvcreate pvs pvresize pvremove vgcreate vgs vgchange vgextend lvcreate lvs lvremove \
        lvchange lvextend lvresize lvrename lvdisplay vgdisplay pvdisplay; do
        ln -s lvm "$root/usr/sbin/$t"
done
for t in thin_check thin_repair thin_dump thin_restore thin_metadata_size; do ln -s pdata_tools "$root/usr/sbin/$t"; done
for t in mkfs.ext4 mkfs.ext3; do ln -s mke2fs "$root/usr/sbin/$t"; done
ln -s e2fsck "$root/usr/sbin/fsck.ext4"
for t in modprobe insmod rmmod lsmod depmod modinfo; do ln -s ../bin/kmod "$root/usr/sbin/$t"; done
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore \
        iptables-nft ip6tables-nft; do
        ln -s xtables-nft-multi "$root/usr/sbin/$t"
done
# iptables extensions are dlopen()ed: ship them all (small)
# (they only need libxtables and libc, which xtables-nft-multi brought)
for x in /usr/lib/x86_64-linux-gnu/xtables/*.so; do install_one "$root" "$x"; done
# CNI plugins (static Go binaries): the ones the conflist capsuled writes uses (net/cni-json.c;
# loopback is brought up in-process, net/cni.c)
for p in bridge host-local portmap; do
        install -D -m755 "/usr/lib/cni/$p" "$root/usr/lib/cni/$p"
done
# QEMU firmware for -M microvm (and the PC machine, for debugging)
for fw in bios-microvm.bin bios-256k.bin kvmvapic.bin linuxboot_dma.bin; do
        [ -e "/usr/share/qemu/$fw" ] && install -D -m644 "$(readlink -f "/usr/share/qemu/$fw")" "$root/usr/share/qemu/$fw"
done
# the kernel the microVMs boot (design §7: the same kernel as the image)
install -D -m644 "$ktree/boot/vmlinuz-$kver" "$root/usr/lib/capsule/vmlinuz"

if [ "$debug_shell" = 1 ]; then
        step "debug shell: adding busybox"
        install -D -m755 /bin/busybox "$root/usr/bin/busybox"
        for a in $(/bin/busybox --list); do
                [ -e "$root/usr/bin/$a" ] || [ -e "$root/usr/sbin/$a" ] || ln -s busybox "$root/usr/bin/$a"
        done
        touch "$root/etc/capsule-debug-shell"
fi

# /etc
install -D -m644 "$here/files/lvm.conf" "$root/etc/lvm/lvm.conf"
install -D -m644 "$here/files/containerd-config.toml" "$root/etc/containerd/config.toml"
install -D -m600 "$machine_config" "$root/etc/capsule/machine.yaml"
install -D -m644 /etc/mke2fs.conf "$root/etc/mke2fs.conf"
[ -f /etc/ssl/certs/ca-certificates.crt ] &&
        install -D -m644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
for f in protocols services ethertypes; do [ -f /etc/$f ] && install -m644 /etc/$f "$root/etc/$f"; done
cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/usr/sbin/nologin
dhcpcd:x:100:65534:DHCP client:/usr/lib/dhcpcd:/usr/sbin/nologin
_chrony:x:101:101:NTP daemon:/run/capsule/chrony:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
P
printf 'root:x:0:\ntty:x:5:\n_chrony:x:101:\nnogroup:x:65534:\n' > "$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
: > "$root/etc/resolv.conf"
# dhcpcd 9.4.1 segfaults at start without its device plugin (a NULL ctx->dev); the udev plugin
# loads fine without a udev daemon
mkdir -p "$root/usr/lib/dhcpcd" "$root/var/lib/dhcpcd"
build_id=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
sed -e "s/@VERSION@/$version/" -e "s/@BUILD@/$build_id/" "$here/files/os-release.in" > "$root/etc/os-release"
# the OS version capsuled reports as running and compares bundles against
echo "$version" > "$root/usr/lib/capsule/version"
if [ "$test_fail_health" = 1 ]; then
        step "TEST BUILD: capsuled will report a failing health check (--test-fail-health)"
        echo "built with mkimage/build.sh --test-fail-health: for tests only" > "$root/etc/capsule/test-fail-health"
fi

# kernel modules with their dependencies, then depmod
step "kernel modules"
mod_list() { grep -v '^#' "$1" | awk 'NF{print $1}'; }
copy_modules() { # tree modules...
        local tree=$1 m p skipped=
        shift
        for m in "$@"; do
                if ! modprobe -d "$ktree" -S "$kver" --show-depends "$m" >/tmp/mkimage-mod.$$ 2>/dev/null; then
                        skipped="$skipped $m"
                        continue
                fi
                awk '$1=="insmod"{print $2}' /tmp/mkimage-mod.$$ | while read -r p; do
                        install -D -m644 "$p" "$tree/lib/modules/$kver/${p#"$kmods"/}"
                done
        done
        rm -f /tmp/mkimage-mod.$$
        [ -z "$skipped" ] || echo "mkimage:   not in $kver (skipped):$skipped"
        cp "$kmods"/modules.order "$kmods"/modules.builtin "$kmods"/modules.builtin.modinfo \
                "$tree/lib/modules/$kver/" 2>/dev/null || true
        depmod -b "$tree" "$kver"
}
mkdir -p "$root/usr/lib/modules/$kver"
copy_modules "$root" $(mod_list "$here/files/modules-boot") $(mod_list "$here/files/modules-image") \
        $(mod_list "$here/files/modules-initramfs")
# the boot list keeps only modules this kernel has
: > "$root/etc/capsule/modules"
for m in $(mod_list "$here/files/modules-boot"); do
        modprobe -d "$ktree" -S "$kver" --show-depends "$m" >/dev/null 2>&1 && echo "$m" >> "$root/etc/capsule/modules"
done

# microVM initramfs: capsule-guest as /init, its libraries and the modules it loads (design §7)
if [ -x "$build_dir/src/capsule-guest/capsule-guest" ]; then
        step "microVM initramfs (capsule-guest)"
        "$here/guest-initrd.sh" "$build_dir" "$ktree" "$root/usr/lib/capsule/guest-initramfs.img" |
                sed 's/^/mkimage:   /'
        # beside the image too: scripts/capsule-up's KVM probe (capsuled probe-accel) boots it
        install -m644 "$root/usr/lib/capsule/guest-initramfs.img" "$out/guest-initrd.img"
else
        rm -f "$out/guest-initrd.img"
fi

# ICU without converters in place of Debian's (32 MiB): only libxml2 links it, through libarchive,
# whose xar format capsuled never enables (files/icu-converters-none.c says why it is safe). It
# must define every ICU symbol libxml2 imports, or serve would not load: checked here.
lib=$root/usr/lib/x86_64-linux-gnu
if [ -e "$lib/libicuuc.so.72" ]; then
        icu_want=$(nm -D --undefined-only "$lib/libxml2.so.2" | awk '$2 ~ /_72$/ {print $2}' | sort)
        rm -f "$lib/libicuuc.so.72" "$lib/libicudata.so.72"
        cc -shared -fPIC -O2 -Wall -Wextra -Werror -Wl,-soname,libicuuc.so.72 \
                -o "$lib/libicuuc.so.72" "$here/files/icu-converters-none.c"
        strip --strip-unneeded "$lib/libicuuc.so.72"
        icu_have=$(nm -D --defined-only "$lib/libicuuc.so.72" | awk '{print $3}' | sort)
        missing=$(comm -23 <(echo "$icu_want") <(echo "$icu_have"))
        [ -z "$missing" ] || { echo "mkimage: libxml2 needs ICU symbols the stub lacks: $missing" >&2; exit 1; }
fi

# every file by size with who needs it (issue 12): out/rootfs-files.txt
"$here/rootfs-report.py" "$root" > "$out/rootfs-files.txt"
echo "mkimage:   $(head -1 "$out/rootfs-files.txt" | cut -c3-); by size with who needs it: $out/rootfs-files.txt"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# ---------------------------------------------------------------- squashfs root image
step "squashfs"
rm -f "$out/rootfs.sqfs"
# mksquashfs takes every timestamp from SOURCE_DATE_EPOCH (exported above)
# 1 MiB blocks: 3 MiB smaller than the default 128 KiB at the same level and as fast to build
# (level 19 would save 9 MiB more but takes 84 s instead of 7 on 2 cores, at every image build)
mksquashfs "$root" "$out/rootfs.sqfs" -comp zstd -Xcompression-level 9 -b 1M -noappend -all-root \
        -quiet -no-progress >/dev/null

# ---------------------------------------------------------------- initramfs (stage 1)
step "initramfs"
ird=$out/initramfs-root
rm -rf "$ird"
mkdir -p "$ird"/{bin,etc,proc,sys,dev,ro,rw,newroot,lib/modules}
install -m755 /bin/busybox "$ird/bin/busybox"
for a in sh mount umount switch_root modprobe sleep cat sed grep mkdir echo; do ln -s busybox "$ird/bin/$a"; done
install -m755 "$here/files/initramfs-init" "$ird/init"
mod_list "$here/files/modules-initramfs" > "$ird/etc/modules-initramfs"
# softdog too: initramfs-init arms it with its own margin (not in the list it loads as is)
copy_modules "$ird" $(mod_list "$here/files/modules-initramfs") softdog
find "$ird" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$ird" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
        zstd -q -19 -T1 > "$out/initramfs.img"
install -m644 "$ktree/boot/vmlinuz-$kver" "$out/vmlinuz"

# ---------------------------------------------------------------- ESP
step "ESP (systemd-boot)"
cmdline_a="capsule.slot=a root=PARTLABEL=slot_a console=tty0 console=ttyS0,115200 panic=10 quiet printk.devkmsg=on"
echo "$cmdline_a" > "$out/cmdline"
esp=$out/esp.img
rm -f "$esp"
mkfs.vfat -F 32 -n CAPSULE-ESP -i 43415053 --invariant -C "$esp" $((esp_mib * 1024)) >/dev/null
stage=$out/esp-stage
rm -rf "$stage"
mkdir -p "$stage"/EFI/BOOT "$stage"/EFI/capsule "$stage"/loader/entries "$stage"/a
install -m644 /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$stage/EFI/BOOT/BOOTX64.EFI"
install -m644 "$out/vmlinuz" "$stage/a/vmlinuz"
install -m644 "$out/initramfs.img" "$stage/a/initrd"
printf 'default capsule-a.conf\ntimeout 0\nconsole-mode keep\neditor no\n' > "$stage/loader/loader.conf"
printf 'title Capsule %s (slot a)\nversion %s\nlinux /a/vmlinuz\ninitrd /a/initrd\noptions %s\n' \
        "$version" "$version" "$cmdline_a" > "$stage/loader/entries/capsule-a.conf"
printf 'Drop machine.yaml here (before the first boot) to override the one baked into the image.\r\n' \
        > "$stage/EFI/capsule/README.txt"
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
for d in EFI EFI/BOOT EFI/capsule loader loader/entries a; do mmd -i "$esp" "::/$d"; done
(cd "$stage" && find . -type f | LC_ALL=C sort | while read -r f; do mcopy -m -i "$esp" "$f" "::/${f#./}"; done)

# ---------------------------------------------------------------- GPT disk
step "GPT disk"
sqfs_bytes=$(stat -c %s "$out/rootfs.sqfs")
[ "$sqfs_bytes" -le $((slot_mib * 1024 * 1024)) ] ||
        { echo "mkimage: rootfs.sqfs ($sqfs_bytes bytes) does not fit a $slot_mib MiB slot" >&2; exit 1; }
raw=$out/capsule.raw
rm -f "$raw.tmp"
total_mib=$((1 + esp_mib + 2 * slot_mib + perm_mib + 1))
truncate -s "${total_mib}M" "$raw.tmp"
# fixed GUIDs: the same inputs give the same disk
sgdisk -U 4341505355-4c45-4449-534b-000000000000 \
        -n 1:1M:+${esp_mib}M -t 1:ef00 -c 1:EFI -u 1:43415053-0001-4553-5000-000000000001 \
        -n 2:0:+${slot_mib}M -t 2:8300 -c 2:slot_a -u 2:43415053-0002-534c-4f54-00000000000a \
        -n 3:0:+${slot_mib}M -t 3:8300 -c 3:slot_b -u 3:43415053-0003-534c-4f54-00000000000b \
        -n 4:0:0 -t 4:8e00 -c 4:perm -u 4:43415053-0004-5045-524d-000000000004 \
        "$raw.tmp" >/dev/null
dd if="$esp" of="$raw.tmp" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$out/rootfs.sqfs" of="$raw.tmp" bs=1M seek=$((1 + esp_mib)) conv=notrunc,sparse status=none
mv "$raw.tmp" "$raw"
rm -rf "$stage" "$esp"

# ---------------------------------------------------------------- update bundle
rm -f "$out"/capsule-*.bundle
bundle=
if [ -n "$signing_key" ]; then
        step "update bundle $version"
        "$here/bundle.sh" --out "$out" --version "$version" --signing-key "$signing_key" | sed 's/^/mkimage:   /'
        bundle=$out/capsule-$version.bundle
else
        step "no update bundle: no signing key (--signing-key FILE)"
fi

# ---------------------------------------------------------------- report
mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
rootfs_bytes=$(du -sb "$root" | cut -f1)
cat > "$out/image.env" <<E
CAPSULE_VERSION=$version
CAPSULE_BUILD=$build_id
BUNDLE=${bundle##*/}
TEST_FAIL_HEALTH=$test_fail_health
KERNEL_VERSION=$kver
KERNEL_DEB_VERSION=$KERNEL_DEB_VERSION
SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH
DEBUG_SHELL=$debug_shell
MACHINE_CONFIG_SHA256=$(sha256sum < "$machine_config" | cut -d' ' -f1)
ROOTFS_BYTES=$rootfs_bytes
SQUASHFS_BYTES=$sqfs_bytes
VMLINUZ_BYTES=$(stat -c %s "$out/vmlinuz")
INITRAMFS_BYTES=$(stat -c %s "$out/initramfs.img")
ESP_MIB=$esp_mib
SLOT_MIB=$slot_mib
PERM_MIB=$perm_mib
RAW_BYTES=$(stat -c %s "$raw")
RAW_ALLOCATED_BYTES=$(( $(stat -c %b "$raw") * 512 ))
E
step "done"
echo "  kernel        $kver ($KERNEL_DEB_VERSION)"
echo "  vmlinuz       $(mib "$(stat -c %s "$out/vmlinuz")")"
echo "  initramfs     $(mib "$(stat -c %s "$out/initramfs.img")")"
echo "  root (staged) $(mib "$rootfs_bytes")"
echo "  rootfs.sqfs   $(mib "$sqfs_bytes") (slot size $slot_mib MiB)"
echo "  capsule.raw   $(mib "$(stat -c %s "$raw")") virtual, $(mib $(( $(stat -c %b "$raw") * 512 ))) allocated:" \
        "EFI ${esp_mib} MiB, slot_a ${slot_mib} MiB, slot_b ${slot_mib} MiB, perm $((total_mib - 2 - esp_mib - 2 * slot_mib)) MiB"
echo "  outputs       $raw $out/vmlinuz $out/initramfs.img $out/cmdline${bundle:+ $bundle}"
