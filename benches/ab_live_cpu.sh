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
. benches/live_lib.sh
live_setup 2000000
pin_cpu=1

one() { # capture → "ns_per_packet seen drops"
    live_start_capture "$1"
    taskset -c 0 "$blast" vbench0 "$work/in.pcap" "$rate" >"$work/replay" 2>&1
    sleep 0.5
    live_stop_capture
    awk -v t="$cap_ns" -v n="$seen" -v d="$drops" 'BEGIN{ printf "%.0f %d %s\n", t/n, n, d }'
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
