#!/usr/bin/env bash
# Fuzzes every parser that reads outside input (fuzz/fuzz_targets/*.rs, cargo-fuzz,
# libFuzzer with AddressSanitizer), each target for a while, and prints per target
# the executions, the corpus size and whether it crashed.
#
# Usage: bench/fuzz.sh [MINUTES] [TARGET...]   (default: 10 minutes, every target)
#   bench/fuzz.sh --seconds N [TARGET...]        (CI: scripts/test.sh runs each for a few seconds)
#   JOBS=2 bench/fuzz.sh 10                      (targets run JOBS at a time; default 1)
#
# Needs the nightly toolchain and cargo-fuzz: `rustup toolchain install nightly` and
# `cargo install cargo-fuzz --locked` (not in scripts/setup.sh: CI does not run this
# by default, see docs/benchmarks.md "fuzz"; NETSTALL_FUZZ_SMOKE=1 scripts/test.sh does).
# Each target starts from seeds made here from the repo's own fixtures (perf script
# text, folded stacks, the trace recording, the contract's JSON examples, the agent's
# ConfigMap) and this host's /proc files, in fuzz/corpus/TARGET (kept between runs,
# not committed). A crash leaves its input in fuzz/artifacts/TARGET/ and a non-zero
# exit; reproduce it with `cargo +nightly fuzz run -a TARGET fuzz/artifacts/TARGET/crash-…`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

seconds=600
if [ "${1:-}" = "--seconds" ]; then
  seconds=${2:?"--seconds needs a number"}
  shift 2
elif [ -n "${1:-}" ] && [[ "$1" =~ ^[0-9]+$ ]]; then
  seconds=$(( $1 * 60 ))
  shift
fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "fuzz: the time must be a whole number of minutes (or --seconds N), at least 1" >&2
  exit 2
fi
mapfile -t all_targets < <(find fuzz/fuzz_targets -name '*.rs' -printf '%f\n' | sed 's/\.rs$//' | sort)
# A run of seconds (the CI smoke) builds without optimizations: minutes less to
# build from cold, fewer runs per second. Minutes: the optimized build.
build_mode=(-O)
[ "$seconds" -lt 60 ] && build_mode=(--dev)
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "fuzz: no target '$t' (have: ${all_targets[*]})" >&2; exit 2; }
done
jobs=${JOBS:-1}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: needs the nightly toolchain and cargo-fuzz (rustup toolchain install nightly; cargo install cargo-fuzz --locked)" >&2
  exit 2
fi

# Seeds: a few real inputs per target, at most 8 KiB each (libFuzzer mutates
# small inputs faster; the parsers' limits are tested by unit tests).
seed() { # TARGET NAME < bytes
  mkdir -p "fuzz/corpus/$1"
  head -c 8192 > "fuzz/corpus/$1/seed-$2"
  cat > /dev/null # the rest, so the writer does not fail on a closed pipe
}
make_seeds() {
  local f n
  for f in crates/netstall-xray/tests/data/collapse/*.perf.txt; do
    n=$(basename "$f" .perf.txt)
    # The perf_script target's first byte chooses the collapse options.
    { printf '\0'; cat "$f"; } | seed perf_script "$n"
    { printf '\x25'; cat "$f"; } | seed perf_script "$n-pid-kernel-flush"
  done
  for f in crates/netstall-xray/tests/data/collapse/{multi_event,rust_unknown,user_fp}.folded; do
    seed folded_stacks "$(basename "$f")" < "$f"
  done
  seed proc_cgroups host < /proc/cgroups
  seed cgroup_stat host 2>/dev/null < /sys/fs/cgroup/cgroup.stat ||
    printf 'nr_descendants 12\nnr_dying_descendants 3\n' | seed cgroup_stat example
  seed mountinfo host < /proc/self/mountinfo
  seed proc_stat stat < /proc/stat
  seed proc_stat pid-stat < /proc/self/stat
  seed proc_stat online < /sys/devices/system/cpu/online
  for f in $(find crates/netstall-netstat/tests/data -type f); do
    seed net_counters "recorded-$(basename "$f")" < "$f"
  done
  for f in softnet_stat netstat snmp stat/nf_conntrack; do
    if [ -r "/proc/net/$f" ]; then seed net_counters "host-${f//\//-}" < "/proc/net/$f"; fi
  done
  python3 -c 'import yaml,sys; sys.stdout.write(yaml.safe_load(open(sys.argv[1]))["data"]["agent.toml"])' \
    deploy/kubernetes/configmap.yaml | seed agent_config configmap
  grep '^{"type"' docs/json.md | seed records contract
  seed trace_recording incident < crates/netstall-kernel/tests/fixtures/incident.rec
  # An IPv4 ICMP echo reply carrying a probe payload, and a TCP SYN-ACK.
  printf '\x45\x00\x00\x34\x12\x34\x40\x00\x40\x01\x00\x00\x7f\x00\x00\x02\x7f\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x01netstallnetstall\x00\x00\x00\x00\x00\x00\x00\x01' |
    seed probe_reply echo-reply
  printf '\x45\x00\x00\x28\x00\x00\x40\x00\x40\x06\x00\x00\x7f\x00\x00\x02\x7f\x00\x00\x01\x00\x50\x9c\x40\x00\x00\x00\x01\x00\x00\x00\x02\x50\x12\xff\xff\x00\x00\x00\x00' |
    seed probe_reply syn-ack
}
make_seeds

# Release code with debug assertions (-a): an arithmetic overflow on outside
# input is a crash here, as it is in the tests' debug builds.
echo "fuzz: building the targets (nightly, AddressSanitizer, debug assertions)" >&2
(cd fuzz && cargo +nightly fuzz build "${build_mode[@]}" -a)

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run_one() { # TARGET
  local t=$1 rc=0
  mkdir -p "fuzz/artifacts/$t"
  # -rss_limit_mb: the parsers bound their memory; 512 MB is far above it.
  (cd fuzz && cargo +nightly fuzz run "${build_mode[@]}" -a "$t" -- -max_total_time="$seconds" -rss_limit_mb=512 \
    -timeout=10 -print_final_stats=1) > "$logs/$t.log" 2>&1 || rc=$?
  local execs corpus
  execs=$(grep -m1 '^stat::number_of_executed_units' "$logs/$t.log" | awk '{print $2}')
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    printf '%-16s %6ss  %12s execs  corpus %6s  no crash\n' "$t" "$seconds" "${execs:-?}" "$corpus"
  else
    printf '%-16s %6ss  %12s execs  corpus %6s  CRASH (exit %s): %s\n' "$t" "$seconds" "${execs:-?}" \
      "$corpus" "$rc" "$(ls -t "fuzz/artifacts/$t" | head -1)"
    grep -m3 -E 'panicked|ERROR: AddressSanitizer|ERROR: libFuzzer' "$logs/$t.log" | sed 's/^/    /'
    return 1
  fi
}

failed=0
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
exit "$failed"
