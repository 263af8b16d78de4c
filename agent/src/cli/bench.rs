//! `vmflow bench`: synthesize, replay into a counting sink, report speed and
//! peak memory.

use std::fs::File;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::engine_args::{engine_config, EngineArgs};
use super::progress::{Bar, CountRecords, Counting};
use super::summary::finish;
use crate::error::Error;
use crate::export::CountSink;
use crate::synth::{self, SynthParams};

#[derive(Args)]
pub(super) struct BenchArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Packets to synthesize (in memory) and replay.
    #[arg(long, default_value_t = 4_000_000)]
    packets: u64,
    /// Flows open at once.
    #[arg(long, default_value_t = 50_000)]
    concurrent: usize,
    /// Bytes kept of each packet, as a header-only capture would.
    #[arg(long, default_value_t = 128)]
    snaplen: u32,
    /// Random seed of the synthetic capture.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub(super) fn cmd(a: BenchArgs) -> Result<ExitCode, Error> {
    let cfg = engine_config(&a.engine)?;
    let filter = crate::capture::filter::PacketFilter::new(a.engine.filter.as_deref())?;
    let dir = std::env::temp_dir().join(format!("vmflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join("bench.pcap");
    let t0 = Instant::now();
    let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
    let params = SynthParams::new(a.packets, a.concurrent)
        .seed(a.seed)
        .snaplen(a.snaplen);
    synth::generate(&params, &cfg, f, false).map_err(|e| Error::io(&path, e))?;
    let synth_s = t0.elapsed().as_secs_f64();
    let progress = std::sync::Arc::new(crate::capture::ReadProgress::default());
    let total = std::fs::metadata(&path).ok().map(|m| m.len());
    let bar = Bar::start(Counting::Read { total }, progress.clone());
    let sink = CountRecords {
        inner: CountSink::default(),
        progress: progress.clone(),
    };
    let report =
        crate::capture::replay_with_progress(vec![path.clone()], &cfg, sink, progress, filter);
    if let Some(b) = bar {
        b.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let s = &report.summary;
    // Packets read, whether the filter passed them or not.
    let read = s.packets + s.filtered;
    println!(
        "bench: packets={} filtered={} flows={} records={} threads={} synth_s={synth_s:.2} \
         replay_s={:.3} packets_per_s={:.0} peak_rss_mib={:.1}",
        s.packets,
        s.filtered,
        s.flows,
        s.records,
        s.threads,
        s.elapsed.as_secs_f64(),
        read as f64 / s.elapsed.as_secs_f64().max(1e-9),
        peak_rss_mib().unwrap_or(f64::NAN),
    );
    finish("bench", report)
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
