//! `vmflow sink`: the JetStream consumer's flags (`run::run_sink`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::collect::jetstream::consume::SinkOptions;
use crate::error::Error;

#[derive(Args)]
pub(super) struct SinkCmd {
    /// NATS servers of the stream (nats://HOST:PORT[,…]).
    #[arg(long, value_name = "URLS")]
    jetstream: String,
    /// Output directory: the same layout as `vmflow collect --out` (one
    /// subdirectory per agent, hourly NDJSON files, a state file each).
    #[arg(long)]
    out: PathBuf,
    /// How the hour files hold records (as `vmflow collect --store`).
    #[arg(long, value_enum, default_value_t = super::collect::Store::Ndjson)]
    store: super::collect::Store,
    /// The durable consumer's name (one sink process per consumer).
    #[arg(long, default_value = "vmflow-sink", value_name = "NAME")]
    durable: String,
    /// Take only the agents whose name hashes to I of N (0-based), with
    /// the consumer NAME-I-of-N: N sinks, I = 0..N, share the work.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Messages written with one commit, at most.
    #[arg(long, default_value_t = 512, value_name = "N")]
    group: usize,
    #[command(flatten)]
    jetstream_args: super::jetstream::JetStreamArgs,
}

pub(super) fn cmd(a: SinkCmd) -> Result<ExitCode, Error> {
    let js = a.jetstream_args.options(&a.jetstream)?;
    let shard = match &a.shard {
        None => None,
        Some(s) => {
            let parsed = s
                .split_once('/')
                .and_then(|(i, n)| Some((i.parse::<u32>().ok()?, n.parse::<u32>().ok()?)))
                .filter(|&(i, n)| n > 0 && i < n);
            Some(parsed.ok_or(Error::Usage("--shard: expected I/N with 0 <= I < N"))?)
        }
    };
    let opts = SinkOptions {
        out: a.out,
        durable: a.durable,
        shard,
        group: a.group.clamp(1, 4096),
        store: a.store.into(),
    };
    let s = crate::run::run_sink(js, opts)?;
    eprintln!(
        "sink: messages={} batches_written={} repeats={} records={} skipped={}",
        s.messages, s.batches_written, s.repeats, s.records, s.skipped
    );
    Ok(ExitCode::SUCCESS)
}
