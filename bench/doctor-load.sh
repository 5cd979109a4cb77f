#!/usr/bin/env bash
# netstall doctor and demo on a loaded, healthy node: do they cry wolf?
#   Both CPUs kept busy (one busy loop each) and a filesystem walk, the way a
#   loaded node looks; a healthy lab (nothing injected).
#   1. RUNS doctor runs of WATCH each, probing the lab's NodePort and pod from
#      the client namespace on CPU 1: every verdict's status and causes.
#      With OLD=/path/to/an/older/netstall, each round also runs that binary,
#      under the same load, side by side.
#   2. DEMOS runs of `netstall demo` under the same load: the last step
#      ("after remediation") must say healthy.
# Prints one line per run, then the tallies.
#
# Usage (as root; takes the machine-wide test lock; ~25 min with the defaults):
#   bench/doctor-load.sh
#   RUNS=5 DEMOS=2 WATCH=10s bench/doctor-load.sh
#   OLD=/tmp/netstall-d382b3e bench/doctor-load.sh
#   NETSTALL=target/debug/netstall bench/doctor-load.sh   # a binary already built
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUNS=${RUNS:-20}
DEMOS=${DEMOS:-10}
WATCH=${WATCH:-15s}
OLD=${OLD:-}
prefix=bdl$$

if [ -n "${NETSTALL:-}" ]; then
  netstall=$(realpath "$NETSTALL")
else
  cargo build --release --quiet -p netstall
  netstall=$PWD/target/release/netstall
fi

exec 9>/tmp/netstall-machine-tests.lock
flock 9

load_pids=()
stop_load() {
  for pid in "${load_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${load_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  load_pids=()
}
cleanup() {
  stop_load
  "$netstall" lab down --prefix "$prefix" >/dev/null 2>&1 || true
}
trap cleanup EXIT

start_load() {
  for _ in 1 2; do
    sh -c 'while :; do :; done' &
    load_pids+=($!)
  done
  sh -c 'while :; do find / -xdev >/dev/null 2>&1; done' &
  load_pids+=($!)
}

verdict_of() {
  python3 -c '
import json, sys
v = [json.loads(l) for l in sys.stdin if l.startswith("{")]
v = [l for l in v if l.get("type") == "verdict"][-1]
causes = ",".join("%s:%s" % (c["id"], c["severity"]) for c in v.get("causes", [])) or "-"
print(v.get("status", "healthy" if v["healthy"] else "unhealthy"), v["worst_ms"], causes)'
}

"$netstall" lab up --prefix "$prefix" --rx-cpu 0 --json >/dev/null
start_load
echo "doctor: $RUNS runs of $WATCH on a healthy lab, both CPUs busy + a filesystem walk (load: $(cut -d' ' -f1 /proc/loadavg))"
printf '%4s %-8s %-10s %9s  %s\n' run binary status worst_ms causes
declare -A tally
binaries=(new)
[ -n "$OLD" ] && binaries+=(old)
for run in $(seq "$RUNS"); do
  for which in "${binaries[@]}"; do
    bin=$netstall
    [ "$which" = old ] && bin=$OLD
    read -r status worst causes < <("$bin" doctor -w "$WATCH" \
      --target 192.168.50.1:30080 --target 10.244.2.10 \
      --netns "$prefix-cli" --cpu 1 --json 2>/dev/null | verdict_of)
    printf '%4s %-8s %-10s %9s  %s\n' "$run" "$which" "$status" "$worst" "$causes"
    tally[$which.$status]=$(( ${tally[$which.$status]:-0} + 1 ))
  done
done
stop_load
"$netstall" lab down --prefix "$prefix" >/dev/null 2>&1 || true
for which in "${binaries[@]}"; do
  printf 'doctor %s: ' "$which"
  for status in healthy degraded unhealthy unknown; do
    printf '%s %s  ' "$status" "${tally[$which.$status]:-0}"
  done
  echo
done

[ "$DEMOS" -gt 0 ] || exit 0
echo
echo "demo: $DEMOS runs under the same load"
printf '%4s %-24s %-10s %-12s %8s\n' run diagnosed after status_after elapsed_s
start_load
healthy_after=0
for run in $(seq "$DEMOS"); do
  out=$("$netstall" demo --prefix "$prefix" --json 2>/dev/null || true)
  read -r diagnosed after status_after elapsed < <(python3 -c '
import json, sys
lines = [json.loads(l) for l in sys.stdin if l.startswith("{")]
demo = [l for l in lines if l.get("type") == "demo"]
verdicts = [l for l in lines if l.get("type") == "verdict"]
if not demo:
    print("-", "failed", "-", "-")
else:
    d = demo[-1]
    print(d["diagnosed"] or "-", "healthy" if d["healthy_after"] else "unhealthy",
          verdicts[-1].get("status", "-") if len(verdicts) > 1 else "-", d["elapsed_s"])' <<<"$out")
  printf '%4s %-24s %-10s %-12s %8s\n' "$run" "$diagnosed" "$after" "$status_after" "$elapsed"
  [ "$after" = healthy ] && healthy_after=$((healthy_after + 1))
done
echo "demo: the last step said healthy in $healthy_after of $DEMOS runs"
