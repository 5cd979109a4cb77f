#!/usr/bin/env bash
# Collapse throughput on a large `perf script` file, side by side in one run:
#   netstall collapse (default threads = CPUs, and -j 1)
#   inferno-collapse-perf (default threads = CPUs, and -n 1)
#   FlameGraph's stackcollapse-perf.pl
# It records a busy workload with `perf record -a -g`, replicates the `perf script`
# text to about SIZE_MB, checks that the outputs agree, then times each tool RUNS
# times, alternating, and prints medians, MB/s (10^6 bytes) and ratios.
#
# Usage: bench/collapse.sh            (as root: perf record -a needs it)
#   SIZE_MB=300 RUNS=5 bench/collapse.sh
#   INFERNO=/path/to/inferno-collapse-perf   (default: on PATH, or /tmp/inferno-root/bin;
#       install it with `cargo install --locked inferno --root /tmp/inferno-root`)
#   STACKCOLLAPSE=/path/to/stackcollapse-perf.pl   (FlameGraph; never committed here)
#   NETSTALL=/path/to/netstall   (default: build this tree's release binary)
#   INPUT=file.perf.txt   replicate this `perf script` text instead of recording one (e.g. the
#       anchors' input: INPUT=crates/netstall-xray/tests/data/collapse/kernel_heavy.perf.txt)
# A tool that is not available is skipped, and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
SIZE_MB=${SIZE_MB:-300}
RUNS=${RUNS:-5}

work=$(mktemp -d /tmp/netstall-bench-collapse.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ -z "${NETSTALL:-}" ]; then
  cargo build --release --quiet -p netstall
fi
netstall=${NETSTALL:-$PWD/target/release/netstall}

inferno=${INFERNO:-$(command -v inferno-collapse-perf || echo /tmp/inferno-root/bin/inferno-collapse-perf)}
[ -x "$inferno" ] || { echo "inferno-collapse-perf not found: skipped (cargo install --locked inferno --root /tmp/inferno-root)"; inferno=""; }
perl_script=${STACKCOLLAPSE:-}
[ -n "$perl_script" ] && [ -r "$perl_script" ] || { echo "stackcollapse-perf.pl not given (STACKCOLLAPSE=...): Perl column skipped"; perl_script=""; }

if [ -n "${INPUT:-}" ]; then
  cp "$INPUT" "$work/one.perf.txt"
else
  echo "recording a busy workload (dd syscalls + find walking the file system), all CPUs, -g, 999 Hz"
  perf record -q -o "$work/busy.data" -a -g -F 999 -- sh -c \
    'dd if=/dev/zero of=/dev/null bs=512 count=1500000 2>/dev/null & timeout 1.5 find / -xdev >/dev/null 2>&1; wait' \
    >/dev/null 2>&1
  perf script -i "$work/busy.data" >"$work/one.perf.txt" 2>/dev/null
fi
one=$(stat -c %s "$work/one.perf.txt")
copies=$(( SIZE_MB * 1000000 / one + 1 ))
for _ in $(seq "$copies"); do cat "$work/one.perf.txt"; done >"$work/big.perf.txt"
big=$(stat -c %s "$work/big.perf.txt")
echo "input: $one bytes of perf script x $copies = $big bytes ($(grep -c '^$' "$work/one.perf.txt") samples per copy)"
cat "$work/big.perf.txt" >/dev/null # into the page cache

# name|command (reads $work/big.perf.txt, writes stdout)
tools=("netstall|$netstall collapse $work/big.perf.txt" "netstall -j 1|$netstall collapse -j 1 $work/big.perf.txt")
[ -n "$inferno" ] && tools+=("inferno|$inferno $work/big.perf.txt" "inferno -n 1|$inferno -n 1 $work/big.perf.txt")
[ -n "$perl_script" ] && tools+=("perl|perl $perl_script $work/big.perf.txt")

echo "checking that the outputs agree (sorted)"
$netstall collapse "$work/big.perf.txt" | sort >"$work/netstall.folded"
for t in "${tools[@]}"; do
  name=${t%%|*}; cmd=${t#*|}
  $cmd 2>/dev/null | sort >"$work/other.folded"
  if cmp -s "$work/netstall.folded" "$work/other.folded"; then echo "  $name: identical"; else echo "  $name: DIFFERENT"; fi
done

declare -A times
echo "timing $RUNS runs of each, alternating"
for run in $(seq "$RUNS"); do
  for t in "${tools[@]}"; do
    name=${t%%|*}; cmd=${t#*|}
    start=$(date +%s.%N)
    $cmd >/dev/null 2>&1
    end=$(date +%s.%N)
    times[$name]+="$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}') "
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A med
printf '%-14s %-44s %9s %9s\n' tool "runs (s)" median "MB/s"
for t in "${tools[@]}"; do
  name=${t%%|*}
  med[$name]=$(echo "${times[$name]}" | median)
  runs=$(for x in ${times[$name]}; do printf '%.2f ' "$x"; done)
  printf '%-14s %-44s %8.3fs %9.1f\n' "$name" "$runs" "${med[$name]}" "$(awk -v b="$big" -v t="${med[$name]}" 'BEGIN {print b / 1e6 / t}')"
done
ratio() { [ -n "${med[$2]:-}" ] && printf '  %-28s %6.2fx\n' "$1 vs $2" "$(awk -v a="${med[$2]}" -v b="${med[$1]}" 'BEGIN {print a / b}')"; return 0; }
echo "speed ratios (higher = netstall faster)"
ratio netstall inferno
ratio "netstall -j 1" "inferno -n 1"
ratio netstall perl
if [ -x /usr/bin/time ]; then
  rss=$(/usr/bin/time -f %M "$netstall" collapse "$work/big.perf.txt" 2>&1 >/dev/null | tail -1)
  echo "netstall peak RSS: ${rss} KB for a ${big}-byte input"
fi
