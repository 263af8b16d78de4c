#!/usr/bin/env bash
# Builds the Azure VM extension handler package (Linux):
# target/azure-extension/vmflow-extension-linux_<version>.zip with, at its root,
#   HandlerManifest.json      packaging/azure-extension/linux/HandlerManifest.json
#   bin/vmflow                the handler (the agent binary, stripped)
#   vmflow_<version>_amd64.deb what `vmflow extension install` installs
# The .deb comes from scripts/package-deb.sh when this checkout has it (it is
# rebuilt, so it matches the binary); otherwise target/debian/ must hold it.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(cargo pkgid -p vmflow-agent | sed 's/.*[#@]//')
deb=target/debian/vmflow_${version}_amd64.deb
if [ -x scripts/package-deb.sh ]; then
    scripts/package-deb.sh
else
    cargo build --release --locked -p vmflow-agent
fi
if [ ! -f "$deb" ]; then
    echo "package-extension.sh: $deb is missing (build it with scripts/package-deb.sh)" >&2
    exit 1
fi

stage=$(mktemp -d target/.extension-stage.XXXXXX)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" target/azure-extension
cp packaging/azure-extension/linux/HandlerManifest.json "$stage/"
# Stripped: the line tables the release profile keeps are most of the binary.
if command -v strip >/dev/null; then
    strip -o "$stage/bin/vmflow" target/release/vmflow
else
    cp target/release/vmflow "$stage/bin/vmflow"
fi
chmod 755 "$stage/bin/vmflow"
cp "$deb" "$stage/"

out=$PWD/target/azure-extension/vmflow-extension-linux_${version}.zip
rm -f "$out"
# -X: no extra attributes, so the same inputs make the same zip.
(cd "$stage" && zip -q -X -r "$out" HandlerManifest.json bin "$(basename "$deb")")
unzip -l "$out"
