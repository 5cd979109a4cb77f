#!/usr/bin/env bash
# Tracer cost per event as a difference in wall time, free of the clock reads
# that BPF stats put around every program run (kernel.bpf_stats_enabled makes
# the kernel read sched_clock before and after each run; an empty program
# "costs" 36-52 ns that way on the test VM).
#
# bench/trace-diff.c fires tracepoints a known number of times on CPU 1:
#   pingpong  two processes pass a byte through pipes: 2 sched_switch per
#             round trip, nothing else traced;
#   udp       a socket on 127.0.0.1 sends itself a datagram and reads it:
#             netif_rx, softirq_raise/entry/exit (NET_RX), netif_receive_skb
#             per datagram, no context switch.
# Each round times both workloads (the fastest of 5 batches each) without a
# tracer, then with `netstall trace` attached (on CPU 0, BPF stats off); the
# added ns per round trip / datagram is the median of the rounds' differences. A last phase per workload runs
# with --self-cost, BPF stats on, for the events per unit and the stats'
# ns/event of the same programs, printed side by side.
#
# Usage: bench/trace-diff.sh     (as root)
#   ROUNDS=7 PINGPONGS=200000 DATAGRAMS=300000 bench/trace-diff.sh
#   NETSTALL=/path/to/netstall bench/trace-diff.sh   (another build, no cargo)
# Takes the machine-wide test lock.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
ROUNDS=${ROUNDS:-7}
PINGPONGS=${PINGPONGS:-200000}
DATAGRAMS=${DATAGRAMS:-300000}
CPU=1

if [ -z "${NETSTALL:-}" ]; then
  cargo build --release --quiet -p netstall
fi
netstall=${NETSTALL:-$PWD/target/release/netstall}
work=$(mktemp -d /tmp/netstall-bench-trace-diff.XXXXXX)
cc -O2 -Wall -o "$work/trace-diff" bench/trace-diff.c
exec 9>/tmp/netstall-machine-tests.lock
flock 9

cleanup() {
  [ -n "${tracer:-}" ] && kill -INT "$tracer" 2>/dev/null && wait "$tracer" || true
  rm -rf "$work"
}
trap cleanup EXIT

start_tracer() { # extra args...
  taskset -c 0 "$netstall" trace --json -w 600s "$@" >"$work/trace.json" 2>/dev/null &
  tracer=$!
  sleep 2 # loaded and attached
}
stop_tracer() {
  kill -INT "$tracer"
  wait "$tracer" || true
  tracer=""
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -a pp_base pp_traced pp_diff udp_base udp_traced udp_diff
for run in $(seq "$ROUNDS"); do
  pp_base+=("$("$work/trace-diff" pingpong "$CPU" "$PINGPONGS")")
  udp_base+=("$("$work/trace-diff" udp "$CPU" "$DATAGRAMS")")
  start_tracer
  pp_traced+=("$("$work/trace-diff" pingpong "$CPU" "$PINGPONGS")")
  udp_traced+=("$("$work/trace-diff" udp "$CPU" "$DATAGRAMS")")
  stop_tracer
  pp_diff+=("$(awk -v t="${pp_traced[-1]}" -v b="${pp_base[-1]}" 'BEGIN {print t - b}')")
  udp_diff+=("$(awk -v t="${udp_traced[-1]}" -v b="${udp_base[-1]}" 'BEGIN {print t - b}')")
  echo "round $run: pingpong ns/round trip ${pp_base[-1]} -> ${pp_traced[-1]}; udp ns/datagram ${udp_base[-1]} -> ${udp_traced[-1]}"
done

# Events per unit and the stats' view, one workload at a time.
stats_of() { # workload count -> "program events/unit ns/event" lines
  start_tracer --self-cost
  "$work/trace-diff" "$1" "$CPU" "$2" >/dev/null
  stop_tracer
  jq -r --argjson n "$2" 'select(.type == "self-cost" and .run_count > 0)
    | [.program, (.run_count / $n), .ns_per_event] | @tsv' "$work/trace.json"
}
pp_stats=$(stats_of pingpong "$PINGPONGS")
udp_stats=$(stats_of udp "$DATAGRAMS")

report() { # name unit diffs... ; stats on stdin
  local name=$1 unit=$2 stats
  shift 2
  stats=$(cat)
  local added
  added=$(median "$@")
  echo
  echo "$name: tracer adds $added ns per $unit (median of $ROUNDS rounds: $*)"
  echo "  programs that ran >= 0.5 times per $unit, with BPF stats (stats on):"
  echo "$stats" | awk -F'\t' -v added="$added" -v unit="$unit" '
    $2 >= 0.5 {printf "    %-28s %5.2f per %s  %6.1f ns/event (stats)\n", $1, $2, unit, $3; sum += $2 * $3; n += $2}
    END {printf "    stats sum: %.1f ns per %s over %.2f events; measured difference: %.1f ns = %.1f ns/event\n",
                sum, unit, n, added, added / n}'
}
echo
echo "pingpong ns/round trip: none $(median "${pp_base[@]}"), traced $(median "${pp_traced[@]}")"
echo "udp ns/datagram: none $(median "${udp_base[@]}"), traced $(median "${udp_traced[@]}")"
report pingpong "round trip" "${pp_diff[@]}" <<<"$pp_stats"
report udp datagram "${udp_diff[@]}" <<<"$udp_stats"
