#!/usr/bin/env bash
# The replay bars of issue 16 in one command: the bench captures generated
# (once, kept in DIR), then vmflow, nfpcapd and the reader stage alone
# (benches/reader_floor.rs: reading and decoding with no flow table and no
# output, the floor of any replay, built from this checkout) in alternating
# runs on each (benches/ab_replay.py), medians printed per file.
#
#   benches/issue16_replay.sh DIR [VMFLOW]
#
# Files (all `vmflow synth --snaplen 128`, seed 1):
#   4ms5k, 1ms5k  many short flows at 5,000 slots: the shape on which the
#                 issue's own binary (97a72ef) gives the issue's figures
#                 (BENCHMARKS.md, "The issue's files")
#   4ms, 1ms      the same at 50,000 / 20,000 slots: twice as many flows
#                 open at once, the heavy case
#   4m, 1m        heavy-tailed (long) flows
# VMFLOW defaults to target/release/vmflow (built here). Needs nfdump
# (nfpcapd) and python3. 4 M files: 5 runs, 1 M files: 7.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    echo "usage: benches/issue16_replay.sh DIR [VMFLOW]" >&2
    exit 2
fi
dir=$1
vmflow=${2:-}
if [ -z "$vmflow" ]; then
    cargo build --release --locked --quiet
    vmflow=$PWD/target/release/vmflow
fi
command -v nfpcapd >/dev/null || { echo "missing nfpcapd (apt-get install nfdump)" >&2; exit 1; }
mkdir -p "$dir"
floor=$(cargo bench --locked --no-run --bench reader_floor --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
for m in map(json.loads, sys.stdin):
    if m.get("executable") and m["target"]["name"] == "reader_floor": print(m["executable"])')
[ -x "$floor" ] || { echo "could not build benches/reader_floor.rs" >&2; exit 1; }

gen() { # name packets slots [--lengths short]
    local f=$dir/$1.pcap
    [ -s "$f" ] && return 0
    "$vmflow" synth --packets "$2" --concurrent "$3" --snaplen 128 --seed 1 "${@:4}" --out "$f.tmp"
    mv "$f.tmp" "$f"
}
gen 4ms5k 4000000 5000 --lengths short
gen 1ms5k 1000000 5000 --lengths short
gen 4ms 4000000 50000 --lengths short
gen 1ms 1000000 20000 --lengths short
gen 4m 4000000 50000
gen 1m 1000000 20000

for f in 4ms5k 4ms 4m 1ms5k 1ms 1m; do
    case $f in 4*) packets=4000000 runs=5 ;; *) packets=1000000 runs=7 ;; esac
    echo "== $f"
    PACKETS=$packets python3 benches/ab_replay.py "$runs" "$dir/$f.pcap" \
        vmflow="$vmflow replay --out {o} {f}" \
        nfpcapd='nfpcapd -r {f} -w {o} -e 300,60' \
        reader_floor="$floor {f} 1"
done
