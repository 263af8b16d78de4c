//! `vmflow capture`: live capture to NDJSON until SIGTERM/SIGINT, with
//! SIGHUP reloading the configuration.

use std::fs::File;
use std::io;
use std::process::ExitCode;

use clap::Args;

use super::engine_args::{engine_config, EngineArgs};
use super::observe_args::ObserveArgs;
use super::summary::print_summary;
use crate::error::Error;
use crate::export::{CsvSink, NdjsonSink, RecordSink};
use crate::run::stop_flag;

#[derive(Args)]
pub(super) struct CaptureArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Interface to capture on; repeat for several. Default: every interface
    /// that is up, not loopback and has an address.
    #[arg(long = "interface", short = 'i')]
    interfaces: Vec<String>,
    /// Bytes the kernel copies of each packet (64..=262144): headers are
    /// all the engine reads; the IP length still counts the whole packet.
    #[arg(long, default_value_t = 128)]
    snaplen: u32,
    /// Also capture traffic not addressed to this host (needs CAP_NET_ADMIN).
    #[arg(long)]
    promiscuous: bool,
    /// Ring size per interface: this many blocks…
    #[arg(long, default_value_t = crate::capture::live::DEFAULT_BLOCKS)]
    ring_blocks: usize,
    /// …of this many KiB (a multiple of the page size).
    #[arg(long, default_value_t = crate::capture::live::DEFAULT_BLOCK_KIB)]
    ring_block_kib: usize,
    /// Where to write records (NDJSON); `-` is standard output.
    #[arg(long, default_value = "-")]
    out: String,
    /// `ndjson` (one JSON object per line) or `csv` (a header line, then
    /// the same fields in the same order).
    #[arg(long, value_enum, default_value_t = Format::Ndjson)]
    format: Format,
    /// Also raise observations (failed access, exposed services, watchlist
    /// hits, scans; `[observe]` and `[[watchlist]]` in `--config`) and write
    /// them here as NDJSON, each as soon as it is raised.
    #[arg(long, value_name = "FILE")]
    observations: Option<std::path::PathBuf>,
    #[command(flatten)]
    observe: ObserveArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Ndjson,
    Csv,
}

impl CaptureArgs {
    pub(super) fn config_path(&self) -> Option<&std::path::Path> {
        self.engine.config.as_deref()
    }
}

pub(super) fn cmd(a: CaptureArgs) -> Result<ExitCode, Error> {
    crate::capture::live::available()?;
    let cfg = engine_config(&a.engine)?;
    // The same bounds as capture.live.snaplen and ring_mib's blocks.
    if !(64..=262_144).contains(&a.snaplen) {
        return Err(invalid(format!(
            "--snaplen = {}: must be in 64..=262144",
            a.snaplen
        )));
    }
    let page = crate::platform::page_size();
    if a.ring_block_kib == 0
        || a.ring_block_kib > 1 << 20
        || !(a.ring_block_kib << 10).is_multiple_of(page)
    {
        return Err(invalid(format!(
            "--ring-block-kib = {}: must be a multiple of the page size ({} KiB) up to 1048576",
            a.ring_block_kib,
            page >> 10
        )));
    }
    if !(2..=4096).contains(&a.ring_blocks) {
        return Err(invalid(format!(
            "--ring-blocks = {}: must be in 2..=4096",
            a.ring_blocks
        )));
    }
    let ifaces = if a.interfaces.is_empty() {
        crate::capture::live::default_interfaces()
    } else {
        a.interfaces.clone()
    };
    if ifaces.is_empty() {
        return Err(crate::capture::live::LiveError::NothingToCapture.into());
    }
    let opts = crate::capture::live::RingOptions {
        snaplen: a.snaplen,
        promiscuous: a.promiscuous,
        blocks: a.ring_blocks,
        block_size: a.ring_block_kib << 10,
        // The command line's, else the configuration's.
        filter: a
            .engine
            .filter
            .clone()
            .or_else(|| cfg.capture.live.as_ref().and_then(|l| l.filter.clone())),
        ..Default::default()
    };
    let observer = a.observe.start(&cfg)?;
    let board = &observer.board;
    let mut rings = ifaces
        .iter()
        .map(|i| crate::capture::live::Ring::open(i, &opts))
        .collect::<Result<Vec<_>, _>>()?;
    board.health.source(crate::metrics::SourceState::Open);
    let live = board.engine("");
    let stop = stop_flag()?;
    let out: Box<dyn io::Write + Send> = if a.out == "-" {
        Box::new(io::stdout())
    } else {
        Box::new(File::create(&a.out).map_err(|e| Error::io(&a.out, e))?)
    };
    let sink: Box<dyn RecordSink> = match a.format {
        Format::Ndjson => Box::new(NdjsonSink::new(out)),
        Format::Csv => Box::new(CsvSink::new(out)),
    };
    let (sink, reread_lists) =
        super::replay::observing(sink, a.observations.as_deref(), &cfg, true)?;
    let sink = crate::pipeline::live::CountingSink::new(sink, Some(live.clone()));
    let filtering = crate::capture::filter::expression(opts.filter.as_deref())
        .map(|e| format!(", kernel filter {e:?}"))
        .unwrap_or_default();
    eprintln!(
        "capture: capturing on {} (snap length {}{filtering}); {} stops",
        ifaces.join(", "),
        a.snaplen,
        crate::platform::STOP_SIGNALS
    );
    let tick = std::time::Duration::from_millis(200);
    // SIGHUP re-reads the file; command-line overrides keep applying.
    let mut from_file = crate::run::reloader(a.engine.config.clone());
    let (threads, local_net) = (a.engine.threads, a.engine.local_net.clone());
    let mut reload = move || {
        if let Some(flag) = &reread_lists {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        from_file().map(|mut c| {
            if let Some(t) = threads {
                c.pipeline.threads = t;
            }
            if !local_net.is_empty() {
                c.local_nets = Some(local_net.clone());
            }
            c
        })
    };
    let (report, stats) = crate::run::capture(
        &cfg,
        &mut rings,
        sink,
        None,
        &stop,
        &mut reload,
        &std::sync::atomic::AtomicU64::new(0),
        tick,
        opts.block_timeout_ms,
        Some(&crate::run::IfaceWatch {
            configured: a.interfaces.clone(),
            ring: opts.clone(),
            every: std::time::Duration::from_secs(2),
        }),
        Some(&*live),
    );
    drop(observer);
    print_summary("capture", &report.summary);
    for s in &stats {
        eprintln!(
            "capture: iface.{}.packets={} iface.{}.kernel_drops={}",
            s.iface, s.packets, s.iface, s.kernel_drops
        );
    }
    match report.error {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.into()),
    }
}

fn invalid(message: String) -> Error {
    crate::config::ConfigError::Invalid(message).into()
}
