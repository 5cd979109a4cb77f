#!/usr/bin/env bash
# Tracer cost, side by side in one run:
#   * iperf3 TCP throughput on the lab path client -> node1 (NAT) -> VXLAN ->
#     node2 -> pod, without and with `netstall trace` running, alternating
#     (RUNS pairs), and the ratio traced/untraced;
#   * ns/event of every BPF program, from the kernel's BPF stats
#     (`netstall trace --self-cost`), measured during the traced iperf3 runs.
# The lab's node RX is steered to CPU 0 (RPS); iperf3 is pinned to CPU 1.
#
# Usage: bench/trace.sh          (as root)
#   RUNS=3 SECONDS_PER_RUN=10 bench/trace.sh
# Takes the machine-wide test lock so it does not disturb stall tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-10}

cargo build --release --quiet -p netstall
netstall=$PWD/target/release/netstall
work=$(mktemp -d /tmp/netstall-bench-trace.XXXXXX)
prefix=bt$$
exec 9>/tmp/netstall-machine-tests.lock
flock 9

cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
  [ -n "${tracer:-}" ] && kill "$tracer" 2>/dev/null || true
  "$netstall" lab down --prefix "$prefix" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$netstall" lab up --prefix "$prefix" --rx-cpu 0 >/dev/null
ip netns exec "$prefix-pod" iperf3 -s -B 10.244.2.10 -D -I "$work/iperf3.pid" >/dev/null
sleep 0.5
server=$(cat "$work/iperf3.pid")

# Prints the receiver's throughput in Gbit/s.
iperf() {
  ip netns exec "$prefix-cli" taskset -c 1 iperf3 -c 10.244.2.10 -t "$SECS" -J \
    | jq '.end.sum_received.bits_per_second / 1e9'
}

declare -a base traced
for run in $(seq "$RUNS"); do
  base+=("$(iperf)")
  "$netstall" trace --json --self-cost -w "$((SECS + 4))s" >"$work/trace.$run.json" 2>/dev/null &
  tracer=$!
  sleep 2 # attached (load + verify take well under a second)
  traced+=("$(iperf)")
  wait "$tracer"
  tracer=""
  echo "run $run: iperf3 without tracer ${base[-1]} Gbit/s, with tracer ${traced[-1]} Gbit/s"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
b=$(median "${base[@]}")
t=$(median "${traced[@]}")
echo
echo "iperf3 median: without ${b} Gbit/s, with tracer ${t} Gbit/s, ratio $(awk -v t="$t" -v b="$b" 'BEGIN {printf "%.3f", t / b}')"
echo
echo "BPF cost per program (median over runs of run_time_ns / run_count, kernel BPF stats):"
cat "$work"/trace.*.json | jq -r 'select(.type == "self-cost" and .run_count > 0)
  | [.detector, .program, .run_count, .ns_per_event] | @tsv' \
  | sort -k2,2 -k4,4g \
  | awk -F'\t' '{k=$1"\t"$2; n[k]++; v[k,n[k]]=$4; c[k]+=$3}
      END {for (k in n) {m=(n[k]%2)?v[k,(n[k]+1)/2]:(v[k,n[k]/2]+v[k,n[k]/2+1])/2;
           printf "  %-14s %-34s runs=%-10d %7.1f ns/event\n", substr(k,1,index(k,"\t")-1), substr(k,index(k,"\t")+1), c[k]/n[k], m}}' \
  | sort
cat "$work"/trace.*.json | jq -r 'select(.type == "trace-summary")
  | "trace summary: \(.packets) packets measured, \(.stalls) stalls, \(.ring_drops) ring-buffer drops"'
