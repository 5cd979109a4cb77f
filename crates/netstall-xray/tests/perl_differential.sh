#!/usr/bin/env bash
# Differential check of `netstall collapse` against FlameGraph's stackcollapse-perf.pl on
# randomly mangled `perf script` text (inserted parentheses, arrows, offsets, quotes, control
# and non-ASCII bytes, cut lines, missing blank lines). Not part of the test suite: the Perl
# script is CDDL and is never committed, so run this where you have it:
#   crates/netstall-xray/tests/perl_differential.sh /path/to/stackcollapse-perf.pl [SEEDS]
# Prints each seed/option that differs and exits 1 if any did.
set -euo pipefail
perl_script=${1:?path to stackcollapse-perf.pl}
seeds=${2:-200}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
cargo build --quiet -p netstall
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp target/debug/netstall "$work/netstall"

cat >"$work/mangle.py" <<'PY'
import random, sys
random.seed(int(sys.argv[2]))
names = ['user_fp', 'multi_event', 'rust_unknown', 'cxx_inline_dwarf', 'kernel_heavy_fields', 'ksoftirqd_spin']
src = open(f"{sys.argv[1]}/{random.choice(names)}.perf.txt", 'rb').read().split(b'\n')
start = random.randrange(0, max(1, len(src) - 300))
tokens = [b' ', b'\t', b'(', b')', b' (', b'->', b'+0x1f', b'0', b'/', b':', b';', b'"', b"'",
          b'[unknown]', b'java', b'L', b'12', b'#', b'', b'_[i]', b'.(', b').', b'anonymous namespace)',
          b'/tmp/perf-12.map', b'vmlinux', b'\r', b'x', b'00', b'\x85', b'\xa0', b'\x0b', b'\x0c']
out = []
for line in src[start:start + 300]:
    r = random.random()
    if r < 0.5 and line:
        i = random.randrange(len(line) + 1)
        token = random.choice(tokens + [bytes([random.randrange(256)])])
        line = line[:i] + token + line[i:]
    elif r < 0.6 and line:
        i = random.randrange(len(line))
        line = line[:i] + line[random.randrange(i, len(line) + 1):]
    elif r < 0.63:
        line = b''
    out.append(line)
sys.stdout.buffer.write(b'\n'.join(out))
PY

differ=0
for seed in $(seq "$seeds"); do
  python3 "$work/mangle.py" "$here/data/collapse" "$seed" >"$work/in.txt"
  for opt in "" --pid --tid --all --addrs --event-filter=cpu-clock:ppp; do
    perl "$perl_script" $opt "$work/in.txt" 2>/dev/null >"$work/perl.txt"
    "$work/netstall" collapse $opt "$work/in.txt" 2>/dev/null >"$work/ours.txt" || true
    if ! cmp -s "$work/perl.txt" "$work/ours.txt"; then
      echo "seed $seed ${opt:-(default)}: differs"
      differ=1
    fi
  done
done
echo "$seeds seeds x 6 option sets compared"
exit $differ
