#!/usr/bin/env bash
# Cross-compiles the Windows agent from Linux and packages it:
# target/x86_64-pc-windows-gnu/release/vmflow.exe and vmflow.msi (wixl, from
# packaging/msi/vmflow.wxs, version from Cargo.toml), and the Azure VM
# extension's Windows handler package
# target/azure-extension/vmflow-extension-windows_<version>.zip:
#   HandlerManifest.json      packaging/azure-extension/windows/HandlerManifest.json
#   bin/vmflow-handler.cmd    what the manifest's commands run
#   bin/vmflow.exe            the handler, and what `install` copies to Program Files
# Installs what it needs (idempotently): the Rust target, Debian's MinGW-w64
# linker, wixl and zip (needs root or sudo for apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

TARGET=x86_64-pc-windows-gnu
if ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "package-windows.sh: adding the $TARGET target"
    rustup target add "$TARGET"
fi
need_tools package-windows.sh x86_64-w64-mingw32-gcc:gcc-mingw-w64-x86-64 wixl:wixl msiinfo:msitools zip:zip

cargo build --release --locked -p vmflow-agent --bin vmflow --target "$TARGET"
out=target/$TARGET/release
version=$(cargo metadata --no-deps --format-version 1 --locked \
    | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "vmflow-agent"))')
wixl -a x64 -D "Version=$version" -D "Exe=$out/vmflow.exe" -o "$out/vmflow.msi" packaging/msi/vmflow.wxs

stage=$(mktemp -d target/.extension-windows-stage.XXXXXX)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" target/azure-extension
cp packaging/azure-extension/windows/HandlerManifest.json "$stage/"
cp packaging/azure-extension/windows/vmflow-handler.cmd "$stage/bin/"
# Stripped: the line tables the release profile keeps are most of the exe.
x86_64-w64-mingw32-strip -o "$stage/bin/vmflow.exe" "$out/vmflow.exe"
zipped=$PWD/target/azure-extension/vmflow-extension-windows_${version}.zip
rm -f "$zipped"
# -X: no extra attributes, so the same inputs make the same zip.
(cd "$stage" && zip -q -X -r "$zipped" HandlerManifest.json bin)
echo "package-windows.sh: $out/vmflow.exe, $out/vmflow.msi and $zipped (version $version)"
