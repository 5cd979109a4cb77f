#!/usr/bin/env bash
# The drop counter's cost per counted drop: a ping flood (2,000/s) into a network
# namespace of its own whose nftables rule drops every echo request (each
# one a NETFILTER_DROP counted in the kernel), with `netstall trace --drops`
# running and kernel.bpf_stats_enabled on for the run only. Prints the
# counter programs' runs and ns/event (bpftool) and what the records counted.
#
# Usage: bench/drops.sh            (as root)
#   COUNT=20000 bench/drops.sh
#   AGENT=1 bench/drops.sh       the agent's counter instead (totals per reason
#                                only: netstall_packet_drops_total{reason})
#   NETSTALL=target/debug/netstall bench/drops.sh   that binary, no release
#                                build (the BPF programs' cost is the same)
# Takes the machine-wide test lock (a flood disturbs stall tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
COUNT=${COUNT:-20000}

if [ -n "${NETSTALL:-}" ]; then
  netstall=$(realpath "$NETSTALL")
else
  cargo build --release --quiet -p netstall
  netstall=$PWD/target/release/netstall
fi
work=$(mktemp -d /tmp/netstall-bench-drops.XXXXXX)
ns=bd$$
exec 9>/tmp/netstall-machine-tests.lock
flock 9

cleanup() {
  [ -n "${tracer:-}" ] && kill -INT "$tracer" 2>/dev/null || true
  sysctl -q kernel.bpf_stats_enabled=0 || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
printf 'table inet t {\n chain input {\n type filter hook input priority 0;\n ip protocol icmp drop\n }\n}\n' \
  | ip netns exec "$ns" nft -f -

sysctl -q kernel.bpf_stats_enabled=1
port=$((20000 + $$ % 20000))
netfilter_drops() {
  curl -s "127.0.0.1:$port/metrics" | awk -F' ' '/^netstall_packet_drops_total\{reason="NETFILTER_DROP"\}/ {print $2}' | grep . || echo 0
}
if [ -n "${AGENT:-}" ]; then
  "$netstall" agent --listen "127.0.0.1:$port" --tracer false --cpu-throttling false \
    --state-dir - --event-log /dev/null 2>/dev/null &
  tracer=$!
  for _ in $(seq 50); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
  before=$(netfilter_drops)
else
  "$netstall" trace --json --drops -w 120s >"$work/trace.json" 2>/dev/null &
  tracer=$!
  sleep 2
fi
start=$(date +%s.%N)
ip netns exec "$ns" timeout 60 ping -q -i 0.0005 -c "$COUNT" -W 1 127.0.0.1 >/dev/null 2>&1 || true
end=$(date +%s.%N)
bpftool prog show --json | jq -r '.[] | select(.type == "tracing" and (.name | startswith("on_kfree_skb") or startswith("on_tcp_retrans")))
  | "  \(.name): runs=\(.run_cnt) \(if .run_cnt > 0 then (.run_time_ns / .run_cnt * 10 | round / 10) else 0 end) ns/event"'
echo "ping flood: $COUNT echo requests in $(awk -v s="$start" -v e="$end" 'BEGIN {printf "%.2f", e - s}') s"
if [ -n "${AGENT:-}" ]; then
  echo "the agent counted NETFILTER_DROP (all namespaces): $(($(netfilter_drops) - before))"
  exit 0
fi
sleep 1.5 # one more reading of the maps
kill -INT "$tracer"; wait "$tracer" || true; tracer=""
sysctl -q kernel.bpf_stats_enabled=0
echo "counted NETFILTER_DROP in the namespace: $(jq -s --argjson ns "$(stat -c %i /run/netns/$ns)" \
  '[.[] | select(.type == "drop" and .reason == "NETFILTER_DROP" and .netns == $ns) | .count] | add // 0' "$work/trace.json")"
