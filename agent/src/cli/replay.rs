//! `vmflow replay`: capture files to flow records.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;

use super::engine_args::{engine_config, EngineArgs};
use super::progress::{Bar, CountRecords, Counting};
use super::summary::finish;
use crate::capture::filter::PacketFilter;
use crate::capture::ReadProgress;
use crate::error::Error;
use vmflow_proto::ipfix::IpfixMode;

use crate::export::{BlockFileSink, CsvSink, IpfixFileSink, NdjsonSink, RecordSink};

#[derive(Args)]
pub(super) struct ReplayArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Where to write records; `-` is standard output.
    #[arg(long, default_value = "-")]
    out: String,
    /// `ndjson` (one JSON object per line), `csv` (a header line, then the
    /// same fields in the same order), `ipfix` (IPFIX messages back to
    /// back, RFC 5655 style; the template the README describes) or
    /// `blocks` (the spool's compressed format, ~16 bytes a record; `vmflow
    /// cat` prints it as NDJSON).
    #[arg(long, value_enum, default_value_t = Format::Ndjson)]
    format: Format,
    /// IPFIX: `biflow` (reverse counters as RFC 5103 elements) or `uniflow`
    /// (two records per flow, for collectors that ignore reverse elements).
    #[arg(long, value_enum, default_value_t = Mode::Biflow)]
    ipfix_mode: Mode,
    /// IPFIX: the observation domain ID.
    #[arg(long, default_value_t = 0)]
    observation_domain: u32,
    /// IPFIX: the largest message in bytes (512..=65535). The default fits
    /// an Ethernet MTU, so the file can be replayed to a UDP collector.
    #[arg(long, default_value_t = 1400, value_parser = clap::value_parser!(u16).range(512..))]
    max_message: u16,
    /// Also raise observations (failed access, exposed services, watchlist
    /// hits, scans; `[observe]` and `[[watchlist]]` in `--config`) and write
    /// them here as NDJSON.
    #[arg(long, value_name = "FILE")]
    observations: Option<PathBuf>,
    /// Capture files (`-` is standard input; gzip or zstd compressed ones
    /// are read as they are), merged by packet time into one stream.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Ndjson,
    Csv,
    Ipfix,
    Blocks,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Biflow,
    Uniflow,
}

pub(super) fn cmd(a: ReplayArgs) -> Result<ExitCode, Error> {
    let cfg = engine_config(&a.engine)?;
    let mut filter = PacketFilter::new(a.engine.filter.as_deref())?;
    crate::capture::check_readable(&a.files, filter.as_mut())?;
    let out: Box<dyn io::Write + Send> = if a.out == "-" {
        Box::new(io::stdout())
    } else {
        Box::new(File::create(&a.out).map_err(|e| Error::io(&a.out, e))?)
    };
    let sink: Box<dyn RecordSink> = match a.format {
        Format::Ndjson => Box::new(NdjsonSink::new(out)),
        Format::Blocks => Box::new(BlockFileSink::new(out)),
        Format::Csv => Box::new(CsvSink::new(out)),
        Format::Ipfix => {
            let mode = match a.ipfix_mode {
                Mode::Biflow => IpfixMode::Biflow,
                Mode::Uniflow => IpfixMode::Uniflow,
            };
            Box::new(IpfixFileSink::new(
                out,
                a.observation_domain,
                mode,
                usize::from(a.max_message),
            ))
        }
    };
    let (sink, _) = observing(sink, a.observations.as_deref(), &cfg, false)?;
    let progress = Arc::new(ReadProgress::default());
    let bar = Bar::start(
        Counting::Read {
            total: input_size(&a.files),
        },
        progress.clone(),
    );
    let sink = CountRecords {
        inner: sink,
        progress: progress.clone(),
    };
    let report = crate::capture::replay_with_progress(a.files, &cfg, sink, progress, filter);
    if let Some(b) = bar {
        b.finish();
    }
    finish("replay", report)
}

/// Set to have a capture's watchlists and databases read again.
pub(super) type RereadFlag = Arc<AtomicBool>;

/// `sink`, with its records tagged (`remote_country`, `remote_asn`,
/// `remote_as_org`, `watchlists`) when `[enrich]` or `[[watchlist]]` is
/// configured, and with `--observations FILE` the observer beside it
/// (`[observe]`). A `live` one reads its lists and databases again when they
/// change, or when the flag it returns is set (SIGHUP); a replay keeps what
/// it started with, so its output depends only on the capture and the
/// configuration.
pub(super) fn observing(
    sink: Box<dyn RecordSink>,
    observations: Option<&std::path::Path>,
    cfg: &crate::config::Config,
    live: bool,
) -> Result<(Box<dyn RecordSink>, Option<RereadFlag>), Error> {
    let tags = !cfg.enrich.mmdb.is_empty() || !cfg.watchlists.is_empty();
    if observations.is_none() && !tags {
        return Ok((sink, None));
    }
    let lists = crate::observe::load_watchlists(&cfg.watchlists)?;
    let file = observations
        .map(|path| File::create(path).map_err(|e| Error::io(path, e)))
        .transpose()?;
    let enricher = (!cfg.enrich.mmdb.is_empty())
        .then(|| crate::observe::Enricher::open(&cfg.enrich.mmdb))
        .transpose()?;
    let observer = crate::observe::Observer::new(cfg.observe.clone(), lists, enricher);
    let observing = crate::observe::ObservingSink::new(sink, observer, file);
    if !live {
        return Ok((Box::new(observing), None));
    }
    let (reload, asked) = crate::observe::Reload::new(
        cfg.watchlists.clone(),
        cfg.enrich.mmdb.clone(),
        std::time::Duration::from_secs(5),
    );
    Ok((Box::new(observing.reloading(reload)), Some(asked)))
}

/// The bytes of the files on disk (`None` with standard input: unknown).
pub(super) fn input_size(files: &[PathBuf]) -> Option<u64> {
    files
        .iter()
        .map(|f| {
            (f.as_os_str() != "-")
                .then(|| std::fs::metadata(f).ok().map(|m| m.len()))
                .flatten()
        })
        .sum()
}
