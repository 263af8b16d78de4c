#!/usr/bin/env python3
"""Commands run in turn (A, B, C, A, B, C, …) on one capture, so load from
elsewhere on a shared machine falls on all of them alike.

    PACKETS=4000000 benches/ab_replay.py RUNS FILE NAME='CMD' ...

In CMD, {f} is the capture and {o} an output path (a fresh directory for a
command containing "nfpcapd"). Prints per command the median, min and max
wall time, the median CPU time (user + sys) and peak RSS of the child, the
packet rate when PACKETS is set, and each command's ratio to nfpcapd's
median wall time. Example (BENCHMARKS.md, issue 16):

    PACKETS=4000000 benches/ab_replay.py 5 4m.pcap \
        base='old/vmflow replay --out {o} {f}' new='target/release/vmflow replay --out {o} {f}' \
        nfpcapd='nfpcapd -r {f} -w {o} -e 60,60'
"""
import os, sys, time, statistics, subprocess, shutil, tempfile
runs = int(sys.argv[1]); cap = sys.argv[2]; cmds = [a.split("=", 1) for a in sys.argv[3:]]
work = tempfile.mkdtemp()
res = {n: [] for n, _ in cmds}; rss = {n: [] for n, _ in cmds}; cpu = {n: [] for n, _ in cmds}
subprocess.run(["cat", cap], stdout=subprocess.DEVNULL)
for i in range(runs):
    for n, c in cmds:
        out = os.path.join(work, n)
        # Every command writes afresh: nfpcapd into a new directory, the
        # others a new file (rmtree alone left a file in place, and
        # truncating it made ext4 free its blocks and start writeback on close).
        if os.path.isdir(out): shutil.rmtree(out)
        elif os.path.exists(out): os.remove(out)
        if "nfpcapd" in c: os.makedirs(out)
        argv = c.format(f=cap, o=out).split()
        t = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = p.stderr.read(); _, st, ru = os.wait4(p.pid, 0)
        w = time.perf_counter() - t
        assert st == 0, (argv, st, err[-300:])
        res[n].append(w); rss[n].append(ru.ru_maxrss); cpu[n].append(ru.ru_utime + ru.ru_stime)
pk = int(os.environ.get("PACKETS", "0"))
for n, _ in cmds:
    m = statistics.median(res[n])
    print(f"{n}: median {m:.3f} s (min {min(res[n]):.3f}, max {max(res[n]):.3f}), " + (f"{pk/m/1e6:.2f} Mpps, " if pk else "") + f"CPU median {statistics.median(cpu[n]):.3f} s, peak RSS median {statistics.median(rss[n]):.0f} kB")
if any("nfpcapd" in c for _, c in cmds):
    nf = [n for n, c in cmds if "nfpcapd" in c][0]
    for n, _ in cmds:
        if n != nf: print(f"{n}: {statistics.median(res[nf]) / statistics.median(res[n]):.1f}x nfpcapd")
shutil.rmtree(work, ignore_errors=True)
