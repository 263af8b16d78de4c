#!/usr/bin/env bash
# Live capture side by side: the synthetic capture is replayed into a veth
# pair at rising packet rates (GEN=blast, the default: benches/blast.rs,
# sendmmsg, ~850 kpps here; GEN=tcpreplay: ~400 kpps) while either `vmflow capture`
# or `tcpdump -s 128 -w FILE` (what a capture agent does) listens on the
# other end. Reports, per rate, packets seen and kernel drops for each, and
# CPU per packet (user+sys of the capture process / packets it saw).
# Needs root, iproute2, tcpreplay, tcpdump.
#
#   benches/vs_tcpdump_live.sh [PACKETS] [RATES...]
#
# RING_KIB=N gives both the same kernel buffer: vmflow 4 blocks of N/4 KiB,
# tcpdump -B N (default: each tool's own default, vmflow 32 MiB, tcpdump 2 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-1000000}
shift || true
rates=${*:-"100000 200000 400000 800000 topspeed"}

gen=${GEN:-blast}
ring_kib=${RING_KIB:-}
vm_ring=(); td_ring=()
if [ -n "$ring_kib" ]; then
    vm_ring=(--ring-blocks 4 --ring-block-kib $((ring_kib / 4)))
    td_ring=(-B "$ring_kib")
fi
. benches/live_lib.sh
live_setup "$packets"

run_one() { # tool rate
    local tool=$1 rate=$2
    local speed=(--pps "$rate"); [ "$rate" = topspeed ] && speed=(--topspeed)
    if [ "$tool" = vmflow ]; then
        live_start_capture "$vmflow" "${vm_ring[@]}"
    else
        live_start_capture tcpdump "${td_ring[@]}"
    fi
    if [ "$gen" = tcpreplay ]; then
        tcpreplay -q -i vbench0 "${speed[@]}" "$work/in.pcap" >"$work/replay" 2>&1
    else
        local r=$rate; [ "$rate" = topspeed ] && r=max
        "$blast" vbench0 "$work/in.pcap" "$r" >"$work/replay" 2>&1
    fi
    sleep 0.5
    # CPU spent while the traffic flowed (start-up and shutdown excluded).
    live_stop_capture
    local actual pps
    if [ "$gen" = tcpreplay ]; then
        actual=$(grep -o 'Actual: [0-9]* packets' "$work/replay" | grep -o '[0-9]*' | head -1)
        pps=$(grep -o '[0-9.]* pps' "$work/replay" | head -1)
    else
        actual=$(grep -o 'sent [0-9]* packets' "$work/replay" | grep -o '[0-9]*')
        pps=$(grep -o '[0-9.]* pps' "$work/replay" | tail -1)
    fi
    echo "| $tool | $rate | ${pps:-?} | ${actual:-?} | $seen | $drops | $(awk -v t="$cap_ns" -v n="$seen" 'BEGIN{ if (n>0) printf "%.0f", t/n; else print "-" }') |"
}

echo "| capture | requested rate | achieved ($gen) | sent | seen | kernel drops | CPU ns/packet |"
echo "|---|---|---|---|---|---|---|"
for rate in $rates; do
    for tool in vmflow tcpdump; do
        run_one "$tool" "$rate"
    done
done
