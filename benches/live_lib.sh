# Shared by the live-capture benchmarks (sourced, not run): a veth pair with
# the synthetic capture ready to send, and starting/stopping a capture while
# measuring its CPU. Needs root, iproute2, util-linux (taskset), tcpdump.

# live_setup PACKETS: builds vmflow and blast, creates vbench0/vbench1 and
# $work/in.pcap (PACKETS synthetic packets, 20,000 concurrent flows, snap 128).
live_setup() {
    cargo build --release --quiet
    cargo build --release --quiet --example blast
    vmflow=$PWD/target/release/vmflow
    blast=$PWD/target/release/examples/blast
    work=$(mktemp -d /dev/shm/vmflow-live.XXXXXX)
    trap 'live_stop_capture 2>/dev/null || true; ip link del vbench0 2>/dev/null || true; rm -rf "$work"' EXIT
    ip link del vbench0 2>/dev/null || true
    ip link add vbench0 type veth peer name vbench1
    ip link set vbench0 up
    ip link set vbench1 up
    sysctl -qw net.ipv6.conf.vbench1.disable_ipv6=1 net.ipv6.conf.vbench0.disable_ipv6=1 || true
    "$vmflow" synth --packets "$1" --concurrent 20000 --snaplen 128 --seed 3 \
        --out "$work/in.pcap" 2>/dev/null
}

# CPU time in ns of every thread of a process (schedstat: ns precision, where
# /proc/PID/stat counts 10 ms ticks). printf: mawk prints sums over 2^31 as %g.
cpu_of() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'; }

# live_start_capture CAPTURE [ARGS...]: CAPTURE is `tcpdump` or a vmflow
# binary (or anything taking `capture -i IFACE …` and printing vmflow's
# lines); ARGS go to it; $pin (a CPU list) pins it. Waits until it listens and
# sets $cap_pid and $cap_cpu0 (its CPU time so far).
live_start_capture() {
    local cap=$1; shift
    local pin=(); [ -n "${pin_cpu:-}" ] && pin=(taskset -c "$pin_cpu")
    cap_tool=$cap
    if [ "$cap" = tcpdump ]; then
        "${pin[@]}" tcpdump -i vbench1 -s 128 "$@" -w "$work/out.pcap" 2>"$work/err" &
        cap_pid=$!
        until grep -q "listening on" "$work/err"; do sleep 0.05; done
    else
        "${pin[@]}" "$cap" capture -i vbench1 --snaplen 128 "$@" --out /dev/null 2>"$work/err" &
        cap_pid=$!
        until grep -q "capturing on" "$work/err"; do sleep 0.05; done
    fi
    cap_cpu0=$(cpu_of "$cap_pid")
}

# live_stop_capture: sets $cap_ns (CPU since the start, in ns), $seen and
# $drops, then stops the capture.
live_stop_capture() {
    [ -n "${cap_pid:-}" ] || return 0
    cap_ns=$(( $(cpu_of "$cap_pid") - cap_cpu0 ))
    kill -INT "$cap_pid"; wait "$cap_pid" || true
    cap_pid=
    if [ "$cap_tool" = tcpdump ]; then
        seen=$(grep -o '^[0-9]* packets captured' "$work/err" | cut -d' ' -f1)
        drops=$(grep -o '^[0-9]* packets dropped by kernel' "$work/err" | cut -d' ' -f1)
    else
        seen=$(grep -o 'iface.vbench1.packets=[0-9]*' "$work/err" | cut -d= -f2)
        drops=$(grep -o 'iface.vbench1.kernel_drops=[0-9a-z]*' "$work/err" | cut -d= -f2)
    fi
}
