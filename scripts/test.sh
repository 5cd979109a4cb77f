#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, and runs every test,
# privileged ones included (run as root; with CI set, a test that cannot get
# its privileges fails instead of skipping).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo nextest run --workspace --profile ci "$@"
# Each fuzz target for a few seconds (bench/fuzz.sh, unoptimized build): in CI,
# or with NETSTALL_FUZZ_SMOKE=1; NETSTALL_FUZZ_SMOKE=0 leaves it out (building
# the fuzz crate from cold takes minutes: docs/benchmarks.md, "fuzz").
if [ "${NETSTALL_FUZZ_SMOKE:-${CI:+1}}" = 1 ]; then
  bench/fuzz.sh --seconds 5
fi
