#!/usr/bin/env bash
# Tracer cost, side by side in one run:
#   * iperf3 TCP throughput on the lab path client -> node1 (NAT) -> VXLAN ->
#     node2 -> pod: without a tracer, with `netstall trace`, and with the
#     anchor, bpftrace measuring the same per-packet backlog wait the way
#     the reference detector (stall2.bt) does (a hash map keyed by skb), a
#     count on softirq_entry, and an empty program on softirq_exit (the floor
#     of what BPF stats measure here); alternating, RUNS rounds, medians, ratios;
#   * ns/event of every BPF program from the kernel's BPF stats: netstall's
#     (`--self-cost`) and bpftrace's (bpftool, with kernel.bpf_stats_enabled
#     on for that phase only);
#   * with `netstall trace --drops` (the drop and retransmit counter beside
#     the stall detectors): iperf3 again, and the counter's programs'
#     ns/event (bpftool, stats on for that phase only).
# The lab's node RX is steered to CPU 0 (RPS); iperf3 is pinned to CPU 1.
#
# Usage: bench/trace.sh          (as root)
#   RUNS=3 SECONDS_PER_RUN=10 bench/trace.sh
#   NETSTALL=target/release-lto/netstall bench/trace.sh   (skips the build)
# Takes the machine-wide test lock so it does not disturb stall tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-10}

# NETSTALL=PATH runs a binary you built (a debug build's timing is not the product's).
if [ -n "${NETSTALL:-}" ]; then
  netstall=$NETSTALL
else
  cargo build --release --quiet -p netstall
  netstall=$PWD/target/release/netstall
fi
work=$(mktemp -d /tmp/netstall-bench-trace.XXXXXX)
prefix=bt$$
exec 9>/tmp/netstall-machine-tests.lock
flock 9

cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
  [ -n "${tracer:-}" ] && kill "$tracer" 2>/dev/null || true
  sysctl -q kernel.bpf_stats_enabled=0 || true
  [ -n "${mounted_debugfs:-}" ] && umount /sys/kernel/debug || true
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

# bpftrace finds tracepoints under /sys/kernel/debug/tracing: mount debugfs
# for the run if it is not (and unmount it again at exit).
if command -v bpftrace >/dev/null && [ ! -d /sys/kernel/debug/tracing/events ]; then
  mount -t debugfs none /sys/kernel/debug && mounted_debugfs=1
fi

cat >"$work/anchor.bt" <<'BT'
tracepoint:net:netif_rx { @q[args->skbaddr] = nsecs; }
tracepoint:net:netif_receive_skb /@q[args->skbaddr]/ {
  @wait[cpu] = hist(nsecs - @q[args->skbaddr]); delete(@q[args->skbaddr]);
}
tracepoint:irq:softirq_entry { @softirqs[cpu] = count(); }
tracepoint:irq:softirq_exit { }
BT

declare -a base traced drops anchor
for run in $(seq "$RUNS"); do
  base+=("$(iperf)")

  "$netstall" trace --json --self-cost -w "$((SECS + 4))s" >"$work/trace.$run.json" 2>/dev/null &
  tracer=$!
  sleep 2 # attached (load + verify take well under a second)
  traced+=("$(iperf)")
  wait "$tracer"
  tracer=""

  sysctl -q kernel.bpf_stats_enabled=1
  "$netstall" trace --json --drops -w "$((SECS + 4))s" >"$work/drops.$run.json" 2>/dev/null &
  tracer=$!
  sleep 2
  drops+=("$(iperf)")
  # bpftool names are cut at 15 characters: on_kfree_skb, on_tcp_retransm...
  bpftool prog show --json | jq -c '.[] | select(.type == "tracing" and (.name | startswith("on_kfree_skb") or startswith("on_tcp_retrans")))
    | {name, run_cnt, run_time_ns}' >"$work/dropcost.$run.json"
  wait "$tracer"
  tracer=""
  sysctl -q kernel.bpf_stats_enabled=0

  if command -v bpftrace >/dev/null; then
    sysctl -q kernel.bpf_stats_enabled=1
    # bounded: SIGINT after the iperf3 run, SIGKILL if it lingers
    timeout -s INT -k 3 "$((SECS + 5))" bpftrace "$work/anchor.bt" >/dev/null 2>&1 &
    tracer=$!
    sleep 3 # bpftrace compiles with LLVM first
    anchor+=("$(iperf)")
    bpftool prog show --json | jq -c '.[] | select(.type == "tracepoint" and .run_cnt > 0)
      | {name, run_cnt, run_time_ns}' >"$work/anchor.$run.json"
    wait "$tracer" || true
    tracer=""
    sysctl -q kernel.bpf_stats_enabled=0
  fi
  echo "run $run: iperf3 Gbit/s: none ${base[-1]}, netstall trace ${traced[-1]}, trace --drops ${drops[-1]}, bpftrace anchor ${anchor[-1]:-skipped}"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
b=$(median "${base[@]}")
t=$(median "${traced[@]}")
echo
ratio() { awk -v x="$1" -v b="$2" 'BEGIN {printf "%.3f", x / b}'; }
d=$(median "${drops[@]}")
echo "iperf3 median: none ${b} Gbit/s; netstall trace ${t} Gbit/s (x$(ratio "$t" "$b")); trace --drops ${d} Gbit/s (x$(ratio "$d" "$b"))"
if [ "${#anchor[@]}" -gt 0 ]; then
  a=$(median "${anchor[@]}")
  echo "               bpftrace anchor ${a} Gbit/s (x$(ratio "$a" "$b"))"
fi
echo
echo "BPF cost per program (median over runs of run_time_ns / run_count, kernel BPF stats):"
cat "$work"/trace.*.json | jq -r 'select(.type == "self-cost" and .run_count > 0)
  | [.detector, .program, .run_count, .ns_per_event] | @tsv' \
  | sort -k2,2 -k4,4g \
  | awk -F'\t' '{k=$1"\t"$2; n[k]++; v[k,n[k]]=$4; c[k]+=$3}
      END {for (k in n) {m=(n[k]%2)?v[k,(n[k]+1)/2]:(v[k,n[k]/2]+v[k,n[k]/2+1])/2;
           printf "  %-14s %-34s runs=%-10d %7.1f ns/event\n", substr(k,1,index(k,"\t")-1), substr(k,index(k,"\t")+1), c[k]/n[k], m}}' \
  | sort | tee "$work/ours.table"
for f in "$work"/trace.*.json; do
  # CPU time in netstall's programs over the traced window (iperf3 ran SECS of it)
  jq -rs --argjson secs "$SECS" '
    (map(select(.type == "self-cost") | .run_time_ns) | add) as $bpf
    | (map(select(.type == "trace-summary"))[0]) as $sum
    | "trace: \($sum.packets) packets measured, \($sum.stalls) stalls, \($sum.ring_drops) ring-buffer drops; BPF time \($bpf / 1e6 | floor) ms = \($bpf / 1e7 / $secs * 10 | round / 10)% of one CPU over the \($secs) s of iperf3"' "$f"
done
echo
echo "drop counter cost per program (median over runs, kernel BPF stats during iperf3):"
cat "$work"/dropcost.*.json | jq -r 'select(.run_cnt > 0) | [.name, .run_cnt, (.run_time_ns / .run_cnt)] | @tsv' \
  | sort -k1,1 -k3,3g \
  | awk -F'\t' '{n[$1]++; v[$1,n[$1]]=$3; c[$1]+=$2}
      END {for (k in n) {m=(n[k]%2)?v[k,(n[k]+1)/2]:(v[k,n[k]/2]+v[k,n[k]/2+1])/2;
           printf "  %-34s runs=%-10d %7.1f ns/event\n", k, c[k]/n[k], m}}' | sort
echo "drop records during the --drops runs: $(cat "$work"/drops.*.json | jq -s '[.[] | select(.type == "drop")] | length')" \
  "(retransmits: $(cat "$work"/drops.*.json | jq -s '[.[] | select(.type == "retransmit") | .count] | add // 0'))"
if [ "${#anchor[@]}" -gt 0 ]; then
  echo
  echo "bpftrace anchor cost per program (median over runs):"
  cat "$work"/anchor.*.json | jq -r '[.name, .run_cnt, (.run_time_ns / .run_cnt)] | @tsv' \
    | sort -k1,1 -k3,3g \
    | awk -F'\t' '{n[$1]++; v[$1,n[$1]]=$3; c[$1]+=$2}
        END {for (k in n) {m=(n[k]%2)?v[k,(n[k]+1)/2]:(v[k,n[k]/2]+v[k,n[k]/2+1])/2;
             printf "  %-34s runs=%-10d %7.1f ns/event\n", k, c[k]/n[k], m}}' | sort | tee "$work/anchor.table"
  echo
  echo "same hook, netstall / bpftrace ns/event:"
  ns_of() { awk -v p="$1" '$2 == p {print $4}' "$work/ours.table"; }
  bt_of() { awk -v p="$1" '$1 == p {print $3}' "$work/anchor.table"; }
  for pair in "on_netif_rx netif_rx" "on_netif_receive_skb netif_receive_s" "on_softirq_entry softirq_entry" "on_softirq_exit softirq_exit"; do
    set -- $pair
    o=$(ns_of "$1"); a=$(bt_of "$2")
    [ -n "$o" ] && [ -n "$a" ] && printf "  %-22s %6.1f / %6.1f = x%s\n" "$1" "$o" "$a" "$(ratio "$o" "$a")"
  done
else
  echo "bpftrace not installed: anchor skipped (apt-get install bpftrace)"
fi
