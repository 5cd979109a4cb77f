#!/usr/bin/env bash
# netstall cgroups on a node with dirty dying memcgs, side by side in one run:
#   the measured memory.stat stall (one canary read right after the lab
#   poller touched every zombie's page cache, so each dying memcg has
#   pending stat updates: the worst case the estimate is about)
#   vs netstall's worst-stall estimate (2 us per dying memcg; 5 us the high end),
#   and what netstall's count costs (it never reads memory.stat) vs that read.
# For each COUNTS entry it makes that many lab zombies, runs ROUNDS rounds,
# prints per-round numbers, then medians and ratios, and cleans up.
#
# Usage (as root; takes the machine-wide test lock, ~1 min):
#   bench/cgroups.sh
#   COUNTS="12000 30000" ROUNDS=5 CPU=1 bench/cgroups.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
COUNTS=${COUNTS:-"12000 30000"}
ROUNDS=${ROUNDS:-5}
CPU=${CPU:-1}
prefix=bcg$$

cargo build --release --quiet -p netstall
netstall=$PWD/target/release/netstall

exec 9>/tmp/netstall-machine-tests.lock
flock 9
trap '"$netstall" lab clean --prefix "$prefix" >/dev/null 2>&1 || true' EXIT

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
field() { python3 -c "import json,sys; r=json.load(sys.stdin); print($1)"; }
now_ms() { date +%s.%N | awk '{printf "%.3f", $1*1000}'; }

made=0
for count in $COUNTS; do
  "$netstall" lab zombies --prefix "$prefix" --count $((count - made)) >/dev/null 2>&1
  made=$count
  stalls=() counts=()
  printf '\n%s lab zombies (canary on CPU %s)\n' "$count" "$CPU"
  printf '%6s %8s %12s %12s %10s %14s\n' round dying stall_ms estimate_ms us/memcg count_ms
  for round in $(seq "$ROUNDS"); do
    # Dirty every zombie's stats, then time netstall's count and the read.
    "$netstall" lab poller --prefix "$prefix" --path /dev/null -w 1ms >/dev/null
    t0=$(now_ms)
    "$netstall" --json cgroups >/dev/null
    t1=$(now_ms)
    count_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    "$netstall" lab poller --prefix "$prefix" --path /dev/null -w 1ms >/dev/null
    read -r dying stall estimate < <("$netstall" --json cgroups --canary --cpu "$CPU" |
      field 'r["memory"]["dying"], round(r["canary"]["read_ms"], 2), r["worst_stall_ms"]' | tr -d '(),')
    per=$(awk -v s="$stall" -v d="$dying" 'BEGIN {printf "%.2f", s * 1000 / d}')
    printf '%6s %8s %12s %12s %10s %14s\n' "$round" "$dying" "$stall" "$estimate" "$per" "$count_ms"
    stalls+=("$stall") counts+=("$count_ms")
  done
  stall_p50=$(printf '%s\n' "${stalls[@]}" | median)
  stall_max=$(printf '%s\n' "${stalls[@]}" | sort -g | tail -1)
  count_p50=$(printf '%s\n' "${counts[@]}" | median)
  awk -v n="$count" -v s="$stall_p50" -v m="$stall_max" -v e="$estimate" -v c="$count_p50" 'BEGIN {
    printf "median stall %.1f ms, max %.1f ms, estimate %.1f ms: measured/estimate median %.2f, max %.2f (%.2f us per dying memcg)\n", s, m, e, s / e, m / e, s * 1000 / n
    printf "netstall count (process included) %.1f ms vs the memory.stat read it avoids %.1f ms: %.2fx, and no IRQs-off time\n", c, s, c / s
  }'
done
