//! `vmflow synth`: a synthetic capture and, optionally, its ground truth.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::progress::{Bar, CountBytes, Counting};
use crate::config::Config;
use crate::error::Error;
use crate::export::{NdjsonSink, RecordSink};
use crate::synth::{self, SynthParams};

#[derive(Args)]
pub(super) struct SynthArgs {
    /// Packets to write.
    #[arg(long)]
    packets: u64,
    /// Flows open at once (at least 1).
    #[arg(long)]
    concurrent: usize,
    /// Bytes of each packet written to the file (64..=262144; the rest is
    /// only counted in the IP length, as in a header-only capture).
    #[arg(long, default_value_t = 65_535)]
    snaplen: u32,
    /// Random seed: the same seed and settings give the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Packets a flow: `long` (heavy-tailed, ~17 on average) or `short`
    /// (~7: many flows and records for the packets).
    #[arg(long, value_enum, default_value_t = Lengths::Long)]
    lengths: Lengths,
    /// Timeouts and local networks for the expected records.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The capture file to write (pcap).
    #[arg(long)]
    out: PathBuf,
    /// Write the expected flow records (NDJSON) here.
    #[arg(long)]
    truth: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Lengths {
    Long,
    Short,
}

impl From<Lengths> for synth::FlowLengths {
    fn from(l: Lengths) -> Self {
        match l {
            Lengths::Long => synth::FlowLengths::Long,
            Lengths::Short => synth::FlowLengths::Short,
        }
    }
}

pub(super) fn cmd(a: SynthArgs) -> Result<ExitCode, Error> {
    if a.concurrent == 0 {
        return Err(Error::Usage(
            "--concurrent = 0: at least one flow must be open",
        ));
    }
    if !(64..=262_144).contains(&a.snaplen) {
        let e = format!("--snaplen = {}: must be in 64..=262144", a.snaplen);
        return Err(crate::config::ConfigError::Invalid(e).into());
    }
    let cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let out = File::create(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let params = SynthParams {
        packets: a.packets,
        concurrent: a.concurrent,
        snaplen: a.snaplen,
        seed: a.seed,
        lengths: a.lengths.into(),
    };
    let progress = std::sync::Arc::new(crate::capture::ReadProgress::default());
    let bar = Bar::start(Counting::Written, progress.clone());
    let out = CountBytes {
        inner: out,
        progress,
    };
    let res = synth::generate(&params, &cfg, out, a.truth.is_some());
    if let Some(b) = bar {
        b.finish();
    }
    let res = res.map_err(|e| Error::io(&a.out, e))?;
    if let Some(t) = &a.truth {
        let f = File::create(t).map_err(|e| Error::io(t, e))?;
        let mut sink = NdjsonSink::new(f);
        sink.write(&res.truth)
            .and_then(|_| sink.finish())
            .map_err(|e| Error::io(t, e))?;
    }
    eprintln!(
        "synth: packets={} flows={} truth_records={}",
        res.packets,
        res.flows,
        res.truth.len()
    );
    Ok(ExitCode::SUCCESS)
}
