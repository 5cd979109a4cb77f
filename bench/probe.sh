#!/usr/bin/env bash
# netstall probe vs ping, fping and hping3, side by side in one run, on the lab's
# full path (client -> node1 NAT -> VXLAN -> node2 -> pod), every prober pinned
# to CPU 1 (node RX on CPU 0):
#   1. RTT floor at a 10 ms interval: p50 / p99 (ICMP echo to the pod).
#   2. Send schedule at 10 ms with the other core busy: spacing of the requests
#      timed at the sender, in the kernel as each echo request is queued on the
#      client's interface (bpftrace on net:net_dev_queue; mean: drift; p99 of
#      |spacing - 10 ms|: jitter). A capture (tcpdump) is a reader that can be
#      starved and late; the queueing timestamp is taken in the sending call.
#   3. Maximum probe rate: hping3 --flood (sends only, matches nothing) vs the
#      highest netstall TCP SYN rate at which every reply is matched.
# Prints a table and the ratios. Needs root; takes about 3 minutes.
# Usage: bench/probe.sh [PROBES_PER_TOOL]   (default 1000; NETSTALL=PATH skips the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
N=${1:-1000}
[ "$(id -u)" -eq 0 ] || { echo "bench/probe.sh: run as root" >&2; exit 2; }
for tool in ping fping hping3 bpftrace taskset; do
  command -v "$tool" >/dev/null || { echo "bench/probe.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 2; }
done

# NETSTALL=PATH runs a binary you built (a debug build's timing is not the product's).
if [ -z "${NETSTALL:-}" ]; then
  cargo build --release -q -p netstall
  NETSTALL=$PWD/target/release/netstall
fi
PREFIX=bp$$
WORK=$(mktemp -d)
BUSY=
cleanup() {
  [ -n "$BUSY" ] && kill "$BUSY" 2>/dev/null || true
  "$NETSTALL" lab down --prefix "$PREFIX" >/dev/null 2>&1 || true
  [ -n "${mounted_debugfs:-}" ] && umount /sys/kernel/debug || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# bpftrace finds tracepoints under /sys/kernel/debug/tracing: mount debugfs
# for the run if it is not (and unmount it again at exit).
if [ ! -d /sys/kernel/debug/tracing ]; then
  mount -t debugfs none /sys/kernel/debug && mounted_debugfs=1
fi
"$NETSTALL" lab up --prefix "$PREFIX" --rx-cpu 0 >/dev/null
CLI=$PREFIX-cli
POD=10.244.2.10
NODE1=192.168.50.1
in_client() { ip netns exec "$CLI" taskset -c 1 "$@"; }

# p50 and p99 of the numbers in a file (one per line), to 3 decimals.
quantiles() { sort -g "$1" | awk '{v[NR]=$1} END {if (NR==0) {print "- -"; exit}
  i50=int(NR*0.50+0.5); i99=int(NR*0.99+0.5); if (i50<1) i50=1; if (i99<1) i99=1;
  printf "%.3f %.3f\n", v[i50], v[i99]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# Tools take turns in 5 rounds of N/5 probes, so a change in the machine's
# load (other work on a shared box) hits all of them alike.
rtt_floor() { # $1 = target, $2 = what it is
  local target=$1 per=$((N / 5))
  echo "== 1. RTT floor, ICMP echo to $2 ($target) every 10 ms, $N probes each in 5 rounds (ms) =="
  : > "$WORK/netstall.rtt"; : > "$WORK/ping.rtt"; : > "$WORK/fping.rtt"; : > "$WORK/hping3.rtt"
  for _ in 1 2 3 4 5; do
    "$NETSTALL" --json probe --netns "$CLI" --cpu 1 "$target" -i 10ms -c "$per" \
      | awk -F'"rtt_us":' '/"type":"probe"/ {split($2, a, ","); if (a[1] != "null") print a[1] / 1000}' >> "$WORK/netstall.rtt"
    in_client ping -n -i 0.01 -c "$per" "$target" | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' >> "$WORK/ping.rtt"
    in_client fping -C "$per" -p 10 -q "$target" 2>&1 | cut -d: -f2 | tr ' ' '\n' | grep -E '^[0-9.]+$' >> "$WORK/fping.rtt" || true
    in_client hping3 --icmp -i u10000 -c "$per" "$target" 2>/dev/null | sed -n 's/.*rtt=\([0-9.]*\) ms.*/\1/p' >> "$WORK/hping3.rtt"
  done
  printf "%-10s %8s %8s %8s\n" tool replies p50 p99
  for tool in netstall ping fping hping3; do
    read -r p50 p99 < <(quantiles "$WORK/$tool.rtt")
    printf "%-10s %8s %8s %8s\n" "$tool" "$(wc -l < "$WORK/$tool.rtt")" "$p50" "$p99"
    eval "${tool}_p50=$p50"
  done
  echo "netstall p50 / ping p50 = $(ratio "$netstall_p50" "$ping_p50")  (goal <= 1.5)"
  echo "netstall p50 / fping p50 = $(ratio "$netstall_p50" "$fping_p50")"
  echo "netstall p50 / hping3 p50 = $(ratio "$netstall_p50" "$hping3_p50")  (goal <= 0.1)"
  echo
}
rtt_floor "$POD" "the pod, full path"
rtt_floor "$NODE1" "node1, one veth hop"

echo "== 2. Send schedule at 10 ms, CPU 0 busy, $N probes each, timed at the sender (us) =="
timeout 600 taskset -c 0 sh -c 'while :; do :; done' &
BUSY=$!
# Only the client namespace's c0 (other labs have a c0 too) and only ICMP
# echo requests; the time is the kernel's monotonic clock in the sending call.
CLI_NETNS=$(ip netns exec "$CLI" stat -L -c %i /proc/self/ns/net)
cat > "$WORK/sendtime.bt" <<EOF
tracepoint:net:net_dev_queue /str(args->name) == "c0"/ {
  \$skb = (struct sk_buff *)args->skbaddr;
  if (\$skb->dev->nd_net.net->ns.inum == $CLI_NETNS) {
    \$ip = (struct iphdr *)(\$skb->head + \$skb->network_header);
    if (\$ip->protocol == 1) {
      \$icmp = (struct icmphdr *)(\$skb->head + \$skb->transport_header);
      if (\$icmp->type == 8) { printf("%llu\\n", nsecs); }
    }
  }
}
EOF
spacing() { # $1 = name, rest = command; prints mean spacing and p99 |spacing - 10 ms|
  local name=$1; shift
  bpftrace "$WORK/sendtime.bt" > "$WORK/$name.sent" 2> "$WORK/$name.bt.err" &
  local tracer=$!
  for _ in $(seq 100); do grep -q '^Attaching' "$WORK/$name.sent" && break; sleep 0.1; done
  grep -q '^Attaching' "$WORK/$name.sent" ||
    { echo "bench/probe.sh: bpftrace did not attach: $(tail -1 "$WORK/$name.bt.err")" >&2; exit 1; }
  "$@" > "$WORK/$name.out" 2>&1 || true
  sleep 0.5
  kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
  awk '/^[0-9]+$/ {t=$1/1000; if (n++) print t-p; p=t}' "$WORK/$name.sent" > "$WORK/$name.gap"
  local mean jitter
  mean=$(awk '{s+=$1} END {if (NR) printf "%.1f", s/NR; else print "-"}' "$WORK/$name.gap")
  awk '{d=$1-10000; if (d<0) d=-d; print d}' "$WORK/$name.gap" > "$WORK/$name.dev"
  read -r _ jitter < <(quantiles "$WORK/$name.dev")
  printf "%-10s %8s %12s %14s\n" "$name" "$(wc -l < "$WORK/$name.gap")" "$mean" "$jitter"
  eval "${name}_jitter=$jitter"
}
printf "%-10s %8s %12s %14s\n" tool gaps mean_spacing p99_deviation
spacing netstall "$NETSTALL" --json probe --netns "$CLI" --cpu 1 "$POD" -i 10ms -c "$N" --slow 1h
spacing ping in_client ping -n -i 0.01 -c "$N" "$POD"
spacing fping in_client fping -C "$N" -p 10 -q "$POD"
spacing hping3 in_client hping3 --icmp -i u10000 -c "$N" "$POD"
kill "$BUSY"; wait "$BUSY" 2>/dev/null || true; BUSY=
# netstall's own account of the same run: how late each send left against
# its schedule, measured by the sender itself.
echo "netstall's own send_late_p99_us: $(sed -n 's/.*"send_late_p99_us":\([0-9.]*\).*/\1/p' "$WORK/netstall.out" | tail -1)"
echo "p99 deviation: hping3 / netstall = $(ratio "$hping3_jitter" "$netstall_jitter")x, fping / netstall = $(ratio "$fping_jitter" "$netstall_jitter")x, ping / netstall = $(ratio "$ping_jitter" "$netstall_jitter")x  (goal: netstall <= 50 us)"

echo
echo "== 3. Maximum probe rate, TCP SYN to node1 (a closed port answers RST) =="
in_client timeout -s INT 3 hping3 --flood -S -p 9 "$NODE1" > "$WORK/flood.txt" 2>&1 || true
flood_sent=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' "$WORK/flood.txt")
flood_rate=$(awk -v n="${flood_sent:-0}" 'BEGIN { printf "%.0f", n / 3 }')
echo "hping3 --flood: $flood_sent SYNs in 3 s = $flood_rate/s, replies matched: none (it does not read them)"
# Replies that reached the client, from its interface counter: "every reply
# matched" means netstall matched each one of them to its probe.
client_rx() { ip netns exec "$CLI" cat /sys/class/net/c0/statistics/rx_packets; }
best=0
printf "%-10s %10s %8s %9s %9s %8s\n" interval rate/s sent arrived matched loss%
for interval in 40us 20us 12us 10us 8us 6us 5us; do
  before=$(client_rx)
  summary=$("$NETSTALL" --json probe --netns "$CLI" --cpu 1 "$NODE1" --syn -p 9 --flows 1024 -i "$interval" -c 200000 --slow 1h | grep '"type":"summary"')
  arrived=$(( $(client_rx) - before ))
  sent=$(sed -n 's/^{"type":"summary","sent":\([0-9]*\),.*/\1/p' <<< "$summary")
  received=$(sed -n 's/^{"type":"summary","sent":[0-9]*,"received":\([0-9]*\),.*/\1/p' <<< "$summary")
  loss=$(sed -n 's/^{"type":"summary","sent":[0-9]*,"received":[0-9]*,"loss_pct":\([0-9.]*\),.*/\1/p' <<< "$summary")
  rate=$(printf '%.0f' "$(sed -n 's/.*"rate_per_s":\([0-9.]*\).*/\1/p' <<< "$summary")")
  printf "%-10s %10s %8s %9s %9s %8s\n" "$interval" "$rate" "$sent" "$arrived" "$received" "$loss"
  # Every reply that reached the client was matched to its probe (a couple
  # of ARP frames aside). Replies the path itself dropped are its loss column.
  if [ "$received" -ge $(( arrived - 2 )) ] && [ "$rate" -gt "$best" ]; then best=$rate; fi
done
echo "netstall max rate with every arriving reply matched: $best/s = $(ratio "$best" "$flood_rate") x hping3 --flood  (goal >= 2)"
