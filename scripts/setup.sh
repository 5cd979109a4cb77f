#!/usr/bin/env bash
# Installs what netstall needs to build, test and run its lab on Debian, then builds it.
# Idempotent: packages already present are not reinstalled. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# Build: clang (BPF CO-RE), libelf/zlib (libbpf), pkg-config, make.
# Lab and tests: iproute2, nftables, iputils-ping, procps.
# Side-by-side benchmarks and comparisons: hping3, fping, iperf3, linux-perf, bpftrace (bench/trace.sh).
# The agent's tests: a real Prometheus and promtool (prometheus).
# The doctor's HTML report is checked in a real browser: chromium.
# `netstall top` is checked in a real terminal: tmux (capture-pane).
# The container image is built and run (crates/netstall/tests/image.rs): podman, and
# runc (crun refuses this machine's hybrid cgroup layout). Only a scratch image is
# built: nothing is pulled, no RUN step runs during the build.
# The kernel matrix (scripts/kernel-matrix.sh; its short form is crates/netstall/tests/kernels.rs)
# boots Debian kernels under qemu with a busybox initramfs: qemu-system-x86, busybox-static, cpio.
# bpftool only regenerates the committed vmlinux.h headers (scripts/gen-vmlinux.sh): not needed here.
#
# `setup.sh --demo` installs only what `netstall demo` needs (build and lab).
DEMO_PACKAGES=(
  clang llvm libelf-dev zlib1g-dev pkg-config make gcc
  iproute2 nftables iputils-ping procps util-linux
)
TEST_PACKAGES=(
  hping3 fping iperf3 linux-perf jq tcpdump bpftrace
  prometheus
  chromium
  tmux
  podman runc
  qemu-system-x86 busybox-static cpio
)
demo_only=false
case "${1:-}" in
  --demo) demo_only=true ;;
  "") ;;
  *) echo "setup: unknown option '$1' (use --demo, or nothing for everything the tests need)" >&2; exit 2 ;;
esac
PACKAGES=("${DEMO_PACKAGES[@]}")
if ! $demo_only; then
  PACKAGES+=("${TEST_PACKAGES[@]}")
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (apt-get install, network namespaces, BPF)" >&2
  exit 2
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if $demo_only; then
  exit 0
fi

# deploy/'s manifests are validated offline against the official Kubernetes schemas.
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "setup: installing kubernetes-validate (PyPI)" >&2
  python3 -m pip install -q kubernetes-validate 2>/dev/null ||
    python3 -m pip install -q --break-system-packages kubernetes-validate
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >/dev/null
fi

# The fuzz smoke run (scripts/test.sh, in CI): cargo-fuzz needs the nightly
# toolchain (sanitizers) and the cargo-fuzz subcommand.
if [ -n "${CI:-}" ] || [ "${NETSTALL_FUZZ_SMOKE:-}" = 1 ]; then
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "setup: installing the nightly toolchain (for cargo-fuzz)" >&2
    rustup toolchain install nightly --profile minimal >/dev/null
  fi
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "setup: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz >/dev/null
  fi
fi
