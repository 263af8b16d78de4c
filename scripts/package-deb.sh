#!/usr/bin/env bash
# Builds target/debian/vmflow_<version>_amd64.deb from this checkout with
# cargo-deb (installed here, pinned, if missing). VMFLOW_DEB_VERSION overrides
# the package version without touching Cargo.toml (the upgrade test installs a
# "newer" package built from the same binary); the binary is built once and
# reused, so a second package costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DEB_VERSION" ]; then
    echo "package-deb.sh: installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

# VMFLOW_DEB_FEATURES: cargo features for the build. scripts/test.sh passes
# the test suite's (system-tests, which only selects test binaries and
# changes nothing in vmflow) so that the binary is compiled once for both.
cargo build --release --locked -p vmflow-agent ${VMFLOW_DEB_FEATURES:+--features "$VMFLOW_DEB_FEATURES"}
# The documentation the package installs is the binary's own --help.
{
    echo "vmflow $(target/release/vmflow --version 2>/dev/null | awk '{print $2}')"
    echo
    target/release/vmflow --help
    for cmd in run collect certs capture replay synth bench demo azure extension; do
        printf '\n\n==== vmflow %s --help ====\n\n' "$cmd"
        target/release/vmflow "$cmd" --help
    done
} > target/release/vmflow-usage.txt

version=${VMFLOW_DEB_VERSION:-$(cargo pkgid -p vmflow-agent | sed 's/.*[#@]//')}
# cargo-deb deletes every other version of the package in target/debian,
# wherever it writes: an overridden version goes to a directory of its own
# and the package of this checkout is kept aside meanwhile, so the upgrade
# test finds both.
dir=target/debian
keep=
if [ -n "${VMFLOW_DEB_VERSION:-}" ]; then
    dir=target/debian-versions
    mkdir -p target/debian
    keep=$(mktemp -d target/.deb-keep.XXXXXX)
    find target/debian -maxdepth 1 -name 'vmflow_*.deb' -exec mv {} "$keep"/ \;
    # On a fresh checkout there is nothing to put back: the failed glob must
    # not become the script's exit status.
    trap 'mv "$keep"/*.deb target/debian/ 2>/dev/null || true; rmdir "$keep"' EXIT
fi
out=$dir/vmflow_${version}_amd64.deb
mkdir -p "$dir"
# Stripped: the line tables the release profile keeps for benchmarks are
# four fifths of the binary.
cargo deb --no-build --strip -p vmflow-agent --deb-version "$version" --output "$out"
ls -l "$out"
