//! The live-capture engine without the ring: decode, fragments, routing, flow
//! tables and record output on one thread (`pipeline::run_inline`, batches of
//! 256 like `vmflow capture`), fed the synthetic capture the live benchmark
//! sends (2 M packets, 20,000 concurrent flows, snap length 128) from memory.
//! What `benches/ab_live_cpu.sh` measures minus the ring and the wake-ups,
//! without their ±20 % run-to-run noise.
//!
//!   cargo bench --bench inline_engine
//!
//! `PACKETS=N` changes the capture's length. `IDLE_MS=M EVERY=N` (with
//! `ONCE=1`) sleeps M ms every N packets, as a live capture waits for the
//! next ring block, and reports the thread's CPU time instead of wall time:
//! what an idle stretch costs the next packets. With `ONCE=1` it runs the engine once and prints ns/packet instead, for
//! counting instructions (`valgrind --tool=callgrind
//! --toggle-collect='vmflow::pipeline::run_engine*'`), which unlike time does
//! not vary from run to run.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{Criterion, Throughput};
use vmflow::capture::{CaptureReader, RawPacket};
use vmflow::config::Config;
use vmflow::export::CountSink;
use vmflow::pipeline::{run_inline, InlineOptions};
use vmflow::synth::{generate, SynthParams};

fn main() {
    let n = std::env::var("PACKETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let mut cfg = Config::default();
    let mut pcap = Vec::new();
    let p = SynthParams::new(n, 20_000).seed(3);
    generate(&p, &cfg, &mut pcap, false).unwrap();
    let mut frames: Vec<(u64, u32, u32, Vec<u8>)> = Vec::new();
    let mut r = CaptureReader::open(Cursor::new(pcap)).unwrap();
    while let Some(p) = r.next_packet().unwrap() {
        frames.push((p.ts_ns, p.linktype, p.orig_len, p.data.to_vec()));
    }
    cfg.pipeline.batch_packets = 256;

    let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<u64>().ok());
    let idle_ms = env("IDLE_MS").unwrap_or(0);
    let every = env("EVERY").unwrap_or(5_000).max(1) as usize;
    let run = || {
        let mut sink = CountSink::default();
        let opts = InlineOptions::default();
        let report = run_inline(&cfg, &mut sink, opts, |feed| {
            for (i, (ts_ns, linktype, orig_len, data)) in frames.iter().enumerate() {
                if idle_ms > 0 && i % every == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(idle_ms));
                }
                feed.packet(RawPacket {
                    ts_ns: *ts_ns,
                    linktype: *linktype,
                    orig_len: *orig_len,
                    data: black_box(data),
                });
            }
            Ok::<_, vmflow::pipeline::PipelineError>(())
        });
        assert!(report.error.is_none());
        sink.0
    };
    if std::env::var_os("ONCE").is_some() {
        let t = thread_cpu_ns();
        let records = run();
        let ns = (thread_cpu_ns() - t) as f64 / frames.len() as f64;
        println!("{records} records, {ns:.1} ns CPU/packet");
        return;
    }
    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let mut g = c.benchmark_group("inline_engine");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("20000_concurrent", |b| b.iter(|| black_box(run())));
    g.finish();
    c.final_summary();
}

/// CPU time of this thread (the inline engine runs on it), in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
