#!/usr/bin/env bash
# Cross-compiles the Windows agent from Linux:
# target/x86_64-pc-windows-gnu/release/vmflow.exe. Installs what it needs
# (idempotently): the Rust target and Debian's MinGW-w64 linker (needs root
# or sudo for apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

TARGET=x86_64-pc-windows-gnu
if ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "package-windows.sh: adding the $TARGET target"
    rustup target add "$TARGET"
fi
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
    echo "package-windows.sh: installing gcc-mingw-w64-x86-64"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64 >/dev/null
fi

cargo build --release --locked -p vmflow-agent --bin vmflow --target "$TARGET"
echo "package-windows.sh: target/$TARGET/release/vmflow.exe"
