#!/usr/bin/env bash
# The CPU throttling reader's cost: CGROUPS limited cgroups (20 ms per 100 ms,
# empty) made in the cpu controller's hierarchy, then the BPF cgroup iterator
# read READS times. Prints one JSON line: the time per read, per cgroup walked,
# and the share of one CPU at the doctor's one read a second. The reader has no
# per-packet or per-switch hook, so iperf3 cannot see it (nothing to ratio).
#
# Usage: bench/throttle.sh                 (as root)
#   CGROUPS=2000 READS=200 bench/throttle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CGROUPS=${CGROUPS:-500} READS=${READS:-400}
cargo test --release --quiet -p netstall-lab --test throttle -- --ignored --nocapture \
  cost_of_reading_the_throttling_of_every_cgroup 2>&1 | grep '"bench-throttle"'
