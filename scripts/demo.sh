#!/usr/bin/env bash
# Reproduces the incident for real and diagnoses it: installs what it needs,
# builds netstall, and runs `netstall demo` (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh --demo
cargo build --release --quiet -p netstall
exec target/release/netstall demo "$@"
