#!/usr/bin/env bash
# The flight recorder's bound, the long form of the CI test
# (crates/netstall/tests/recorder.rs): an agent with a small --state-max-bytes
# while the story's poller makes stalls without pause (a memory.stat read
# every 50 ms over 12000 dying memcgs, on CPU 0, recorded over a 1 ms
# threshold) for MINUTES (default 2). Every second the recorder directory's
# size is checked against the limit; at the end, the oldest segments must have
# been deleted and `netstall report --from` must still name the cause.
#
# Usage (as root; takes the machine-wide test lock):
#   bench/recorder.sh
#   LIMIT=65536 MINUTES=5 bench/recorder.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
LIMIT=${LIMIT:-16384}
SECONDS_TOTAL=$(( ${MINUTES:-2} * 60 ))
cargo build --quiet -p netstall
netstall=$PWD/target/debug/netstall
prefix=rb$$
dir=$(mktemp -d /tmp/netstall-recorder-bench.XXXXXX)
port=19978

exec 9>/tmp/netstall-machine-tests.lock
flock 9

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$netstall" lab clean --prefix "$prefix" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"$netstall" lab zombies --prefix "$prefix" --count 12000 >/dev/null
"$netstall" agent --listen 127.0.0.1:$port --node-name bench --state-dir "$dir" \
  --state-max-bytes "$LIMIT" --stall-threshold 1ms >/dev/null 2>&1 &
pids+=($!)
sleep 3
"$netstall" lab poller --prefix "$prefix" --cpu 0 --comm zpoller --interval 50ms \
  -w "${SECONDS_TOTAL}s" >/dev/null &
pids+=($!)
most=0
for _ in $(seq "$SECONDS_TOTAL"); do
  bytes=$(du -b --apparent-size -s "$dir" | cut -f1)
  bytes=$(( bytes - $(stat -c %s "$dir") ))
  (( bytes > most )) && most=$bytes
  if (( bytes > LIMIT )); then echo "recorder: $bytes bytes > limit $LIMIT" >&2; exit 1; fi
  sleep 1
done
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
oldest=$(ls "$dir" | sort | head -1)
echo "recorder: at most $most of $LIMIT bytes over ${SECONDS_TOTAL} s; oldest segment left: $oldest; $(ls "$dir" | wc -l) segments"
[[ $oldest != stalls-0000000000.jsonl ]] || { echo "recorder: nothing was deleted: the stalls never filled it" >&2; exit 1; }
"$netstall" report --from "$dir" --json | grep '"type":"verdict"' | head -c 300; echo
