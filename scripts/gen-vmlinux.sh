#!/usr/bin/env bash
# Regenerates the committed kernel type headers, one per target architecture:
#   crates/netstall-kernel/src/bpf/x86/vmlinux.h    from this machine's BTF (/sys/kernel/btf/vmlinux)
#   crates/netstall-kernel/src/bpf/arm64/vmlinux.h  from a Debian arm64 kernel package's BTF
#
# The headers are generated once and committed (build.rs never runs this): CO-RE relocates field
# offsets at load time, so the header need not match the kernel netstall runs on; it only has to
# name the types and fields the BPF C uses. The arm64 header matters because struct pt_regs (the
# syscall registers) differs per architecture.
#
# Usage: scripts/gen-vmlinux.sh [x86|arm64]...   (default: both). Needs bpftool and python3;
# arm64 also needs network access to deb.debian.org (apt-get, with a private state directory: the
# machine's apt configuration and dpkg architectures are left alone).
#
# How arm64 is done: `apt-get download` of linux-image-<ver>-cloud-arm64-unsigned, with apt pointed
# at an arm64-only package list kept in a temporary directory. Debian's arm64 vmlinuz is an
# uncompressed `Image` (a raw binary, not ELF), so bpftool cannot read its .BTF section directly;
# the BTF blob is still in it verbatim (the kernel serves it from __start_BTF). It is found by its
# header (magic 0xeB9F, version 1, hdr_len 24, type_off 0, str_off == type_len), cut out as raw BTF
# and dumped with `bpftool btf dump file <raw> format c`.
#   The committed arm64 header: linux-image-6.12.118+deb12-cloud-arm64-unsigned (6.12.118).
#   The committed x86 header: this machine's kernel (6.18).
set -euo pipefail
cd "$(dirname "$0")/.."
BPF_DIR=crates/netstall-kernel/src/bpf
ARM64_PACKAGE=${ARM64_PACKAGE:-linux-image-6.12.118+deb12-cloud-arm64-unsigned}

command -v bpftool >/dev/null || { echo "gen-vmlinux.sh: needs bpftool (apt-get install bpftool)" >&2; exit 2; }

gen_x86() {
  [ "$(uname -m)" = x86_64 ] || { echo "gen-vmlinux.sh: x86 needs an x86_64 host" >&2; exit 2; }
  [ -r /sys/kernel/btf/vmlinux ] || { echo "gen-vmlinux.sh: no /sys/kernel/btf/vmlinux" >&2; exit 2; }
  mkdir -p "$BPF_DIR/x86"
  bpftool btf dump file /sys/kernel/btf/vmlinux format c >"$BPF_DIR/x86/vmlinux.h"
  echo "x86: $BPF_DIR/x86/vmlinux.h from /sys/kernel/btf/vmlinux ($(uname -r))"
}

gen_arm64() {
  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" RETURN
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  local apt_opts=(-o APT::Sandbox::User=root -o APT::Architecture=arm64 -o APT::Architectures::=arm64
    -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o Dir::State::status=/dev/null)
  apt-get -q "${apt_opts[@]}" update >/dev/null
  (cd "$tmp" && apt-get -q "${apt_opts[@]}" download "$ARM64_PACKAGE" >/dev/null 2>&1)
  dpkg-deb -x "$tmp"/*.deb "$tmp/root"
  local image
  image=$(ls "$tmp"/root/boot/vmlinuz-*)
  python3 - "$image" "$tmp/vmlinux.btf" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
at = 0
while True:
    at = data.find(b"\x9f\xeb\x01\x00", at)
    if at < 0:
        sys.exit("gen-vmlinux.sh: no BTF blob found in " + sys.argv[1])
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<5I", data, at + 4)
    # vmlinux BTF: one header, types first, strings right after; megabytes of types.
    if hdr_len == 24 and type_off == 0 and str_off == type_len and type_len > 1 << 20:
        open(sys.argv[2], "wb").write(data[at:at + hdr_len + str_off + str_len])
        break
    at += 1
EOF
  mkdir -p "$BPF_DIR/arm64"
  bpftool btf dump file "$tmp/vmlinux.btf" format c >"$BPF_DIR/arm64/vmlinux.h"
  echo "arm64: $BPF_DIR/arm64/vmlinux.h from $ARM64_PACKAGE ($(basename "$image"))"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86 arm64)
for t in "${targets[@]}"; do
  case $t in
    x86) gen_x86 ;;
    arm64) gen_arm64 ;;
    *) echo "gen-vmlinux.sh: unknown architecture '$t' (x86, arm64)" >&2; exit 2 ;;
  esac
done
