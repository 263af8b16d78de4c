#!/usr/bin/env bash
# The whole test suite. Installs what the tests need (idempotently), then runs
# formatting, lints and every test. Needs root (or sudo) for the Debian
# packages, the network-namespace tests and the systemd containers.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

# The tools the tests call, as tool:package. tshark asks whether non-root
# users may capture, iperf3 whether to run as a daemon: answered first.
echo "wireshark-common wireshark-common/install-setuid boolean false" | as_root debconf-set-selections
echo "iperf3 iperf3/start_daemon boolean false" | as_root debconf-set-selections
need_tools test.sh tshark:tshark tcpdump:tcpdump ping:iputils-ping curl:curl ip:iproute2 python3:python3 \
    iperf3:iperf3 setpriv:util-linux node:nodejs npm:npm nfcapd:nfdump wine:wine64 chromium:chromium tmux:tmux \
    nats-server:nats-server pip3:python3-pip

# Azurite, the Blob storage emulator, pinned: 3.36+ needs Node.js 21 or
# later, 3.35.0 runs on what Debian and this machine carry.
AZURITE_VERSION=3.35.0
azurite_dir=target/azurite
if [ "$(cat "$azurite_dir/.version" 2>/dev/null)" != "$AZURITE_VERSION" ] \
    || [ ! -x "$azurite_dir/node_modules/.bin/azurite-blob" ]; then
    echo "test.sh: installing azurite@$AZURITE_VERSION"
    mkdir -p "$azurite_dir"
    npm install --silent --no-audit --no-fund --prefix "$azurite_dir" "azurite@$AZURITE_VERSION" >/dev/null
    echo "$AZURITE_VERSION" > "$azurite_dir/.version"
fi

# A free country database (ip-location-db's geo-whois-asn-country, CC BY 4.0
# by NRO) in MaxMind format and the same data as CSV, pinned: tests/observe.rs
# enriches observations with it and checks the lookups against the CSV.
IPDB_VERSION=2.3.2026061719
ipdb_dir=target/ipdb
if [ "$(cat "$ipdb_dir/.version" 2>/dev/null)" != "$IPDB_VERSION" ]; then
    echo "test.sh: installing the ip-location-db country database $IPDB_VERSION"
    mkdir -p "$ipdb_dir"
    npm install --silent --no-audit --no-fund --prefix "$ipdb_dir" \
        "@ip-location-db/geo-whois-asn-country-mmdb@$IPDB_VERSION" \
        "@ip-location-db/geo-whois-asn-country@$IPDB_VERSION" >/dev/null
    echo "$IPDB_VERSION" > "$ipdb_dir/.version"
fi

# A free ASN database: ip-location-db's (CC BY 4.0 by RouteViews, DB-IP and
# NRO), which npm carries as CSV only, written in MaxMind format by
# scripts/asn_mmdb.py with mmdb-writer (MIT, PyPI, pinned with netaddr under
# target/ipdb/py): tests/observe.rs checks lookups against the CSV.
ASN_VERSION="$IPDB_VERSION mmdb-writer==0.2.7 netaddr==1.3.0"
if [ "$(cat "$ipdb_dir/.asn-version" 2>/dev/null)" != "$ASN_VERSION" ] || [ ! -s "$ipdb_dir/asn.mmdb" ]; then
    echo "test.sh: building the ip-location-db ASN database $IPDB_VERSION"
    npm install --silent --no-audit --no-fund --prefix "$ipdb_dir" \
        "@ip-location-db/asn@$IPDB_VERSION" >/dev/null
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
        --upgrade --target "$ipdb_dir/py" mmdb-writer==0.2.7 netaddr==1.3.0
    asn="$ipdb_dir/node_modules/@ip-location-db/asn"
    PYTHONPATH="$ipdb_dir/py" python3 scripts/asn_mmdb.py "$ipdb_dir/asn.mmdb.tmp" \
        "$asn/asn-ipv4.csv" "$asn/asn-ipv6.csv"
    mv "$ipdb_dir/asn.mmdb.tmp" "$ipdb_dir/asn.mmdb"
    echo "$ASN_VERSION" > "$ipdb_dir/.asn-version"
fi

# The package tests (tests/package.rs) boot a Debian container with systemd
# and install the .deb in it: the container root is built once per machine,
# the package (and a newer version of it, for the upgrade test: the same
# binary repackaged, no rebuild) for this checkout.
./scripts/container-root.sh
export VMFLOW_DEB_FEATURES=system-tests
VMFLOW_DEB_VERSION="$(cargo pkgid -p vmflow-agent | sed 's/.*[#@]//')+upgradetest" ./scripts/package-deb.sh >/dev/null
./scripts/package-deb.sh >/dev/null

cargo fmt --all -- --check
cargo clippy --all-targets --locked --features vmflow-agent/system-tests -- -D warnings
# The unit, model and in-process tests once more in debug: release builds wrap
# on integer overflow where debug builds stop, and the end-to-end tests below
# run release only. (A NetMon time overflow was found this way.)
cargo test --locked -p vmflow-proto -p vmflow-engine -p vmflow-agent --lib
# The Azure VM extension zip (it builds the .deb first), which the container
# tier of tests/extension.rs unpacks as the guest agent does.
scripts/package-extension.sh >/dev/null
# The Windows build: linted, and built for tests/windows.rs (vmflow.exe
# under Wine, the .msi and the Windows extension zip). The script adds the
# Rust target and MinGW if missing.
./scripts/package-windows.sh
cargo clippy --locked -p vmflow-agent --target x86_64-pc-windows-gnu -- -D warnings
# Release mode: the end-to-end tests replay captures of a few hundred thousand packets.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --locked --workspace --features vmflow-agent/system-tests 2>&1 | tee "$log"
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s; exit (f > 0 || p == 0) }' "$log"
