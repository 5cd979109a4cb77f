#!/usr/bin/env bash
# netstall agent footprint at 10 peers x 10 Hz, side by side in one run:
#   idle node (no agent)          : machine-wide busy CPU
#   agent, tracing on             : the agent's own CPU (utime+stime) and RSS, machine-wide busy CPU
#   agent, tracing off            : the same without the eBPF detectors
#   fping -l -p 100 (anchor)      : a classic prober doing the same 10 x 10 Hz ICMP
#   floor (bench/agent-floor.c)   : the agent's system calls and nothing else (one
#                                   sendmmsg, one recvmmsg, one sleep per round): the
#                                   kernel's cost of this probing on this machine
# then ratios against the goal (<= 0.25% of a core, <= 20 MB RSS), the anchor and the floor.
# The agents run as shipped: the flight recorder on (in a scratch --state-dir, not the machine's
# /var/lib/netstall), the stats readers' ledger (with the tracer) and stall-triggered CPU sampling
# (default on; on a healthy node no stall opens a window).
#
# Peers are 10 addresses in a network namespace this script makes (veth to
# the agent's namespace); nothing leaves the machine. As peers on other
# machines would, they answer on another CPU: the prober (agent or fping) is
# pinned to CPU 0 and both veth ends steer their receive processing (RPS)
# to CPU 1, so the peers' echo replies are not run inside the prober's
# sendto() (veth delivers in the sender's context otherwise) and charged to it.
#
# Usage (as root; takes the machine-wide test lock; ~5 x SECONDS):
#   bench/agent.sh
#   SECONDS_PER_RUN=300 bench/agent.sh   (default 130: spans four of the tracer's 30 s totals)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUN=${SECONDS_PER_RUN:-130}
WARMUP=5
tag=bag$$
agent_ns=$tag-a
peers_ns=$tag-p
port=19977
results=$(mktemp)
state_dir=$(mktemp -d /tmp/netstall-bench-state.XXXXXX)

# The agent as shipped to nodes (docs/agent.md): the release-lto profile.
cargo build --profile release-lto --quiet -p netstall
netstall=$PWD/target/release-lto/netstall
command -v fping >/dev/null || { echo "bench: fping is missing (scripts/setup.sh)" >&2; exit 2; }
floor_bin=$(mktemp /tmp/netstall-agent-floor.XXXXXX)
cc -O2 -o "$floor_bin" bench/agent-floor.c

exec 9>/tmp/netstall-machine-tests.lock
flock 9

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$agent_ns" 2>/dev/null || true
  ip netns del "$peers_ns" 2>/dev/null || true
  rm -f "$results" "$floor_bin"
  rm -rf "$state_dir"
}
trap cleanup EXIT

ip netns add "$agent_ns"
ip netns add "$peers_ns"
ip -n "$agent_ns" link add v0 type veth peer name v1 netns "$peers_ns"
ip -n "$agent_ns" addr add 10.213.0.1/24 dev v0
ip -n "$agent_ns" link set v0 up
ip -n "$agent_ns" link set lo up
peers=() addrs=()
for i in $(seq 2 11); do
  ip -n "$peers_ns" addr add "10.213.0.$i/24" dev v1
  peers+=("peer$i=10.213.0.$i") addrs+=("10.213.0.$i")
done
ip -n "$peers_ns" link set v1 up
ip -n "$peers_ns" link set lo up
[ "$(nproc)" -ge 2 ] || { echo "bench: needs 2 CPUs (prober on one, peers on the other)" >&2; exit 2; }
PROBER_CPU=0
PEER_CPU=1
rps_mask=$(printf '%x' $((1 << PEER_CPU)))
ip netns exec "$agent_ns" sh -c "echo $rps_mask > /sys/class/net/v0/queues/rx-0/rps_cpus"
ip netns exec "$peers_ns" sh -c "echo $rps_mask > /sys/class/net/v1/queues/rx-0/rps_cpus"
peer_list=$(IFS=,; echo "${peers[*]}")

clk=$(getconf CLK_TCK)
# Machine-wide busy jiffies (all CPUs): everything but idle and iowait.
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# A process's utime+stime jiffies, and its RSS in kB.
cpu_of() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_of() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# measure NAME PID: CPU % of one core and mean/max RSS over RUN seconds.
measure() {
  local name=$1 pid=$2 c0 b0 c1 b1 rss sum=0 max=0 n=0
  sleep "$WARMUP"
  c0=$(cpu_of "$pid"); b0=$(busy)
  for _ in $(seq "$RUN"); do
    sleep 1
    rss=$(rss_of "$pid"); sum=$((sum + rss)); n=$((n + 1))
    [ "$rss" -gt "$max" ] && max=$rss
  done
  c1=$(cpu_of "$pid"); b1=$(busy)
  awk -v results="$results" -v n="$name" -v c=$((c1 - c0)) -v b=$((b1 - b0)) -v hz="$clk" -v t="$RUN" -v s="$sum" -v k="$n" -v m="$max" 'BEGIN {
    printf "%-22s %10.3f %14.2f %10.1f %10.1f\n", n, 100 * c / hz / t, 100 * b / hz / t, s / k / 1024, m / 1024
    printf "%s|%.3f|%.2f|%.1f|%.1f\n", n, 100 * c / hz / t, 100 * b / hz / t, s / k / 1024, m / 1024 >> results
  }'
}

printf 'agent footprint: 10 peers x 10 Hz, %s s per run, %s CPUs; prober on CPU %s, peers answer on CPU %s\n' "$RUN" "$(nproc)" "$PROBER_CPU" "$PEER_CPU"
printf '%-22s %10s %14s %10s %10s\n' run "cpu_%core" "machine_busy_%" rss_mb rss_max_mb

# Idle node: measure a sleeping process, so the machine-wide column is the baseline.
sleep $((RUN + WARMUP + 5)) &
pids+=($!)
measure "idle node" "$!"

# Starts an agent; its PID is left in $pid (no command substitution: the
# agent must not hold a pipe open).
start_agent() {
  taskset -c "$PROBER_CPU" "$netstall" agent --netns "$agent_ns" --listen "10.213.0.1:$port" --node-name bench \
    --peers "$peer_list" --probe-rate 10 --max-peers 10 --event-log /dev/null --state-dir "$state_dir" "$@" >/dev/null 2>&1 &
  pid=$!
  pids+=("$pid")
}
start_agent --tracer true
measure "agent, tracing on" "$pid"
ip netns exec "$agent_ns" curl -s "http://10.213.0.1:$port/metrics" |
  grep -E '^netstall_(tracer_up|probe_sent_total|probe_lost_total|probe_peers|stat_flush(es|_seconds)_total|stall_sampling_windows_total)[ {]' | sed 's/^/    /'
printf '    recorder: %s bytes in %s\n' "$(cat "$state_dir"/* 2>/dev/null | wc -c)" "$state_dir"
kill "$pid"; wait "$pid" 2>/dev/null || true

start_agent --tracer false
measure "agent, tracing off" "$pid"
kill "$pid"; wait "$pid" 2>/dev/null || true

ip netns exec "$agent_ns" taskset -c "$PROBER_CPU" fping -l -p 100 -q "${addrs[@]}" >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
fping_pid=$(pgrep -P "$!" fping || echo "$!")
measure "fping -l -p 100" "$fping_pid"
kill "$fping_pid" 2>/dev/null || true

ip netns exec "$agent_ns" taskset -c "$PROBER_CPU" "$floor_bin" "${addrs[@]}" &
pids+=($!)
sleep 0.5
floor_pid=$(pgrep -P "$!" -f netstall-agent-floor || echo "$!")
measure "floor (agent-floor.c)" "$floor_pid"

echo
awk -F'|' '{cpu[$1] = $2; busy[$1] = $3; rss[$1] = $4; max[$1] = $5}
END {
  on = "agent, tracing on"; off = "agent, tracing off"; f = "fping -l -p 100"; idle = "idle node"; fl = "floor (agent-floor.c)"
  printf "agent CPU, tracing on: %.3f%% of a core (goal <= 0.25%%: %s); x%.2f fping doing the same probes\n", cpu[on], (cpu[on] <= 0.25 ? "met" : "NOT met"), (cpu[f] > 0 ? cpu[on] / cpu[f] : 0)
  printf "agent CPU over the floor of its system calls on this machine: +%.3f%% of a core (tracing on), +%.3f%% (off); the floor is %.3f%%\n", cpu[on] - cpu[fl], cpu[off] - cpu[fl], cpu[fl]
  printf "agent RSS, tracing on: %.1f MB mean, %.1f MB max (goal <= 20 MB: %s)\n", rss[on], max[on], (max[on] <= 20 ? "met" : "NOT met")
  printf "tracing adds %.3f%% of a core in the agent process; machine busy %.2f%% with the agent (tracing on) vs %.2f%% idle (includes the kernel-side BPF cost and anything else running)\n", cpu[on] - cpu[off], busy[on], busy[idle]
}' "$results"
