#!/usr/bin/env bash
# CPU per captured packet of two captures, alternating runs (A, B, A, B, …)
# at one packet rate, then the median of each. Single runs on a 2-core VM vary
# by ±20 %; alternating cancels slow drifts and the median drops outliers.
#
#   benches/ab_live_cpu.sh RATE RUNS A B
#
# A and B are `tcpdump` or the path of a vmflow binary (e.g. one built from
# an older commit). Traffic: benches/blast.rs sends the same 2 M-packet
# synthetic capture (20,000 concurrent flows, snap length 128) into a veth
# pair; the capture listens on the other end. CPU = run time of every thread
# of the capture process while the traffic flowed (/proc/PID/task/*/schedstat)
# divided by the packets it saw. The sender (and with it the kernel's veth
# receive path) is pinned to CPU 0, the capture to CPU 1, so neither run
# shares its core with the sender by the scheduler's chance. Needs root,
# iproute2, util-linux (taskset), tcpdump.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 4 ]; then
    echo "usage: benches/ab_live_cpu.sh RATE RUNS A B  (A, B: tcpdump or a vmflow binary)" >&2
    exit 2
fi
rate=$1 runs=$2 a=$3 b=$4
cargo build --release --quiet
cargo build --release --quiet --example blast
blast=$PWD/target/release/examples/blast
work=$(mktemp -d /dev/shm/vmflow-ab.XXXXXX)
cleanup() { ip link del vbench0 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip link del vbench0 2>/dev/null || true
ip link add vbench0 type veth peer name vbench1
ip link set vbench0 up
ip link set vbench1 up
sysctl -qw net.ipv6.conf.vbench1.disable_ipv6=1 net.ipv6.conf.vbench0.disable_ipv6=1 || true
target/release/vmflow synth --packets 2000000 --concurrent 20000 --snaplen 128 --seed 3 \
    --out "$work/in.pcap" 2>/dev/null

cpu_of() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'; }

one() { # capture → "ns_per_packet seen drops"
    local cap=$1 pid before ticks seen drops
    if [ "$cap" = tcpdump ]; then
        taskset -c 1 tcpdump -i vbench1 -s 128 -w "$work/out.pcap" 2>"$work/err" &
        pid=$!
        until grep -q "listening on" "$work/err"; do sleep 0.05; done
    else
        taskset -c 1 "$cap" capture -i vbench1 --snaplen 128 --out /dev/null 2>"$work/err" &
        pid=$!
        until grep -q "capturing on" "$work/err"; do sleep 0.05; done
    fi
    before=$(cpu_of "$pid")
    taskset -c 0 "$blast" vbench0 "$work/in.pcap" "$rate" >"$work/replay" 2>&1
    sleep 0.5
    ticks=$(( $(cpu_of "$pid") - before ))
    kill -INT "$pid"; wait "$pid" || true
    if [ "$cap" = tcpdump ]; then
        seen=$(grep -o '^[0-9]* packets captured' "$work/err" | cut -d' ' -f1)
        drops=$(grep -o '^[0-9]* packets dropped by kernel' "$work/err" | cut -d' ' -f1)
    else
        seen=$(grep -o 'iface.vbench1.packets=[0-9]*' "$work/err" | cut -d= -f2)
        drops=$(grep -o 'iface.vbench1.kernel_drops=[0-9a-z]*' "$work/err" | cut -d= -f2)
    fi
    awk -v t="$ticks" -v n="$seen" -v d="$drops" 'BEGIN{ printf "%.0f %d %s\n", t/n, n, d }'
}

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

: >"$work/a"; : >"$work/b"
for i in $(seq "$runs"); do
    read -r ca sa da < <(one "$a"); echo "$ca" >>"$work/a"
    read -r cb sb db < <(one "$b"); echo "$cb" >>"$work/b"
    echo "run $i: A $ca ns (seen $sa, kernel drops $da)  B $cb ns (seen $sb, kernel drops $db)"
done
echo "A $a: $(sort -n "$work/a" | tr '\n' ' ')→ median $(median <"$work/a") ns/packet"
echo "B $b: $(sort -n "$work/b" | tr '\n' ' ')→ median $(median <"$work/b") ns/packet"
