#!/usr/bin/env bash
# Records/s through agent → collector → JetStream (3 nodes, R3) → sink on
# this machine, and the bytes per record the stream stores. Everything on
# loopback: three nats-server processes (Debian's nats-server), one
# `vmflow collect --jetstream`, one `vmflow sink`, one `vmflow run` replaying
# a synthetic capture with the default batch settings (1024 records, window 32).
#
#   benches/jetstream_fleet.sh [PACKETS]      (VMFLOW=path/to/vmflow to skip the build)
set -euo pipefail
cd "$(dirname "$0")/.."
packets=${1:-4000000}
for tool in nats-server curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [ -z "${VMFLOW:-}" ]; then
    cargo build --release --quiet -p vmflow-agent --bin vmflow
    VMFLOW=${CARGO_TARGET_DIR:-target}/release/vmflow
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -a client cluster http
for i in 0 1 2; do client[$i]=$(port); cluster[$i]=$(port); http[$i]=$(port); done
urls=""
for i in 0 1 2; do
    routes=""
    for j in 0 1 2; do [ "$j" = "$i" ] || routes="$routes\"nats-route://127.0.0.1:${cluster[$j]}\","; done
    mkdir -p "$work/js$i"
    cat > "$work/n$i.conf" <<CONF
server_name: n$i
listen: "127.0.0.1:${client[$i]}"
http: "127.0.0.1:${http[$i]}"
jetstream { store_dir: "$work/js$i" }
cluster { name: bench, listen: "127.0.0.1:${cluster[$i]}", routes: [${routes%,}] }
CONF
    nats-server -c "$work/n$i.conf" 2>"$work/n$i.log" & pids+=($!)
    urls="$urls${urls:+,}nats://127.0.0.1:${client[$i]}"
done
for i in 0 1 2; do
    until curl -sf "http://127.0.0.1:${http[$i]}/healthz" >/dev/null; do sleep 0.1; done
done

$VMFLOW certs init "$work/certs" --agent agent-1 >/dev/null
$VMFLOW synth --packets "$packets" --concurrent 50000 --snaplen 128 --seed 1 --out "$work/cap.pcap" 2>/dev/null
want=$($VMFLOW replay "$work/cap.pcap" 2>/dev/null | wc -l)

$VMFLOW collect --listen 127.0.0.1:0 --cert "$work/certs/collector.pem" --key "$work/certs/collector-key.pem" \
    --client-ca "$work/certs/ca.pem" --jetstream "$urls" --jetstream-replicas 3 2>"$work/collect.log" & pids+=($!)
until grep -q "listening on" "$work/collect.log"; do sleep 0.05; done
addr=$(grep "listening on" "$work/collect.log" | awk '{print $NF}')
$VMFLOW sink --jetstream "$urls" --jetstream-replicas 3 --out "$work/out" 2>"$work/sink.log" & pids+=($!)
until grep -q "delivering from" "$work/sink.log"; do sleep 0.05; done

cat > "$work/agent.toml" <<CONF
[source]
files = ["$work/cap.pcap"]
[export]
collector = "$addr"
ca = "$work/certs/ca.pem"
cert = "$work/certs/agent-1.pem"
key = "$work/certs/agent-1-key.pem"
spool_dir = "$work/spool"
CONF
start=$(date +%s.%N)
$VMFLOW run --config "$work/agent.toml" 2>"$work/agent.log"
acked=$(date +%s.%N)
lines() { cat "$work"/out/agent-1/*.ndjson 2>/dev/null | wc -l; }
until [ "$(lines)" -ge "$want" ]; do sleep 0.05; done
sunk=$(date +%s.%N)
got=$(lines)
curl -sf "http://127.0.0.1:${http[0]}/jsz?streams=true" > "$work/jsz.json" || \
curl -sf "http://127.0.0.1:${http[1]}/jsz?streams=true" > "$work/jsz.json"
python3 - "$work/jsz.json" "$want" "$got" "$start" "$acked" "$sunk" "$packets" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
want, got = int(sys.argv[2]), int(sys.argv[3])
start, acked, sunk = map(float, sys.argv[4:7])
st = [s for a in j.get("account_details", []) for s in a.get("stream_detail", []) if s["name"] == "VMFLOW"][0]["state"]
print(f"packets={sys.argv[7]} records={want} sink_records={got} messages={st['messages']} stream_bytes={st['bytes']}")
print(f"agent→collector→JetStream(R3) acked: {acked-start:.2f} s, {want/(acked-start):,.0f} records/s")
print(f"agent→…→sink files complete:      {sunk-start:.2f} s, {want/(sunk-start):,.0f} records/s")
print(f"stream bytes per record: {st['bytes']/want:.1f} (one replica's store; R3 keeps three)")
PY
