#!/usr/bin/env bash
# The pristine Debian bookworm root the package tests boot with systemd as
# PID 1 (tests/common/container.rs). Built once per machine and cached under
# target/: each test boots an overlay of it, so the cache is never written to.
# Idempotent: the stamp names what the root was built with; a different list
# (or an interrupted build, which leaves no stamp) builds it again.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

SUITE=bookworm
MIRROR=${VMFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# systemd as PID 1 and what the tests run inside: openssl (certificates,
# CMS), iproute2 (the test veth), unzip (extension handler packages), procps.
INCLUDE=systemd,systemd-sysv,dbus,openssl,iproute2,ca-certificates,unzip,procps
root=target/container/$SUITE
stamp=target/container/$SUITE.stamp
want="$SUITE $INCLUDE"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$root/lib/systemd/systemd" ]; then
    exit 0
fi

need_tools container-root.sh debootstrap:debootstrap systemd-nspawn:systemd-container nsenter:util-linux

echo "container-root.sh: building the $SUITE root in $root (once per machine)"
mkdir -p target/container
tmp=target/container/.$SUITE.tmp
as_root rm -rf "$tmp" "$root" "$stamp"
as_root debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$MIRROR" >/dev/null
# No package caches or lists in the pristine root: smaller, and a test that
# wants apt-get to download something must say so.
as_root rm -rf "$tmp"/var/cache/apt/archives/*.deb
# A container has no consoles to log in on, and nothing should wait on them.
as_root ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
as_root ln -sf /dev/null "$tmp/etc/systemd/system/getty@tty1.service"
echo "vmflow-test" | as_root tee "$tmp/etc/hostname" >/dev/null
as_root mv "$tmp" "$root"
echo "$want" > "$stamp"
