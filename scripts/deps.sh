#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and imaging Capsule needs.
# Idempotent: safe to run on every build. The README's commands and .ci/run call it first.
set -euo pipefail

PKGS=(
  # toolchain and build
  build-essential pkg-config meson ninja-build clang libclang-rt-14-dev valgrind git
  # gRPC C core, protobuf-c, and the libraries capsuled links
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev
  libssl-dev openssl libsqlite3-dev sqlite3 libyaml-dev libarchive-dev libcurl4-openssl-dev
  libjson-c-dev libkmod-dev
  # containerd API protos (compiled with protoc-c at build time)
  golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev
  golang-github-gogo-googleapis-dev golang-google-genproto-dev
  # runtime pieces used by host-mode tests and baked into the image
  containerd runc containernetworking-plugins iptables iproute2 docker-registry
  busybox-static e2fsprogs lvm2 thin-provisioning-tools dhcpcd-base kmod util-linux
  # Python gRPC client used by interop tests
  python3 python3-grpcio python3-protobuf protobuf-compiler-grpc
  # image build and QEMU boot
  qemu-system-x86 qemu-utils ovmf systemd-boot-efi mtools dosfstools gdisk fdisk
  squashfs-tools cpio zstd socat curl jq
  # a real Prometheus scrapes the metrics endpoint in tests/integration/test_metrics.py
  prometheus
  # the zsh and fish completion scripts run in their shells in tests/integration/test_cli.py
  zsh fish
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "deps: all ${#PKGS[@]} packages present"
