#!/usr/bin/env bash
# Side by side: `vmflow replay` against `nfpcapd -r` (Debian package nfdump)
# on the same synthetic capture: 4 M packets, 50 k concurrent flows, snap
# length 128. Prints wall time, packet rate and peak RSS for each, as a
# Markdown table for BENCHMARKS.md. Needs hyperfine, nfdump and GNU time.
#
#   benches/vs_nfpcapd.sh [PACKETS] [CONCURRENT] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-4000000}
concurrent=${2:-50000}
runs=${3:-5}

for tool in hyperfine nfpcapd /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install hyperfine nfdump time)" >&2; exit 1; }
done

cargo build --release --quiet
vmflow=target/release/vmflow
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cap=$work/bench.pcap
$vmflow synth --packets "$packets" --concurrent "$concurrent" --snaplen 128 --seed 1 --out "$cap"
# Warm the page cache so both tools read from memory.
cat "$cap" >/dev/null

mkdir -p "$work/nf"
hyperfine --warmup 1 --runs "$runs" -N --export-json "$work/h.json" \
    --prepare "sh -c 'rm -rf $work/nf && mkdir -p $work/nf'" \
    -n vmflow "$vmflow replay --threads 1 --out /dev/null $cap" \
    -n nfpcapd "nfpcapd -r $cap -w $work/nf -e 60,60" >&2

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
rm -rf "$work/nf" && mkdir -p "$work/nf"
vm_rss=$(rss $vmflow replay --threads 1 --out /dev/null "$cap")
nf_rss=$(rss nfpcapd -r "$cap" -w "$work/nf" -e 60,60)

python3 - "$work/h.json" "$packets" "$vm_rss" "$nf_rss" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))
packets = int(sys.argv[2])
rss = {"vmflow": int(sys.argv[3]), "nfpcapd": int(sys.argv[4])}
res = {r["command"]: r for r in h["results"]}
print("| tool | median wall (s) | min wall (s) | packets/s (median) | user+sys CPU (s) | peak RSS (MiB) |")
print("|---|---|---|---|---|---|")
for name in ("vmflow", "nfpcapd"):
    r = res[name]
    print(f"| {name} | {r['median']:.3f} | {r['min']:.3f} | {packets / r['median'] / 1e6:.2f} M | "
          f"{r['user'] + r['system']:.2f} | {rss[name] / 1024:.1f} |")
ratio = res["nfpcapd"]["median"] / res["vmflow"]["median"]
print(f"\nvmflow packet rate / nfpcapd packet rate (medians): {ratio:.1f}x")
PY
