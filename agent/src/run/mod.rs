//! The jobs: `vmflow run` and `vmflow collect`. Every source kind of `run`
//! (capture files, live capture, followed folders and Blob containers) goes
//! through the same [`Lane`]: engine → sink → spool → shipper. Each job
//! builds its own tokio runtime; the engine itself stays on plain threads.

mod collector;
mod flowlog;
mod followed;
mod lane;
mod report;
mod signals;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::capture::live_loop::{capture, IfaceWatch};
pub use collector::{run_collector, spawn_collector, CollectArgs};
pub use lane::Lane;
pub use report::RunReport;
pub use signals::{reloader, stop_flag};

use crate::capture::live::{self, Ring, RingOptions};
use crate::config::{Config, ExportConfig, LiveConfig};
use crate::error::Error;
use crate::export::spool::Spool;
use crate::identity;

/// Stops and joins the lifecycle thread however `run_agent` returns.
struct StopOnDrop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(Error::setup("runtime"))
}

/// The agent. With `[capture.live]`: captures until SIGTERM/SIGINT, then
/// ends every flow (`shutdown`) and gives the collector `shutdown_grace` to
/// acknowledge the last records (the rest stays in the spool). Otherwise:
/// replays `source.files` and returns once the collector has acknowledged
/// every record (or on SIGTERM/SIGINT, leaving the rest in the spool).
pub fn run_agent(cfg: &Config, config_path: Option<PathBuf>) -> Result<RunReport, Error> {
    let x = cfg
        .export
        .as_ref()
        .ok_or(Error::Usage("`run` needs an [export] section"))?;
    let live = cfg.capture.live.clone();
    let followed_n = cfg.source.folder.len() + cfg.source.blob.len() + cfg.source.flowlog.len();
    let kinds = usize::from(live.is_some())
        + usize::from(followed_n > 0)
        + usize::from(!cfg.source.files.is_empty());
    if kinds == 0 {
        return Err(Error::Usage(
            "`run` needs a source: source.files, [source.folder], [source.blob], [source.flowlog] or [capture.live]",
        ));
    }
    if kinds > 1 {
        return Err(Error::Usage(
            "source.files and [capture.live] each run alone; folders and blob containers \
             (any number of them) run together",
        ));
    }
    let tls = crate::tls::client_config(&x.ca, &x.cert, &x.key)?;
    // Open capture rings before anything else: a missing capability is the
    // first thing an operator should hear about.
    let rings = match &live {
        Some(l) => Some(open_rings(l)?),
        None => None,
    };
    // The capture lifecycle, beside the source that reads what it captures.
    let lifecycle_stop = Arc::new(AtomicBool::new(false));
    let lifecycle = match &cfg.azure.captures {
        Some(c) => {
            let m = crate::azure::lifecycle::manager(c, &cfg.azure)?;
            let poll = c.poll_interval.duration();
            let stop = lifecycle_stop.clone();
            Some(std::thread::spawn(move || {
                crate::azure::lifecycle::run(m, poll, &stop)
            }))
        }
        None => None,
    };
    let _stop_lifecycle = StopOnDrop(lifecycle_stop.clone(), lifecycle);
    if followed_n > 0 {
        return followed::run_followed(cfg, x, tls);
    }
    let mut spool = Spool::open(crate::disk::real(), &x.spool_dir, x.spool_max_mib << 20)?;
    match (live, rings) {
        (Some(l), Some((rings, ring_opts))) => {
            // Live capture is new data every time: it never skips.
            let resumed_after = identity::settle(&mut spool, &identity::live(), 0, false)?;
            run_live(
                cfg,
                x,
                tls,
                spool,
                resumed_after,
                &l,
                rings,
                ring_opts,
                config_path,
            )
        }
        _ => {
            // A file source is deterministic: a rerun skips what the spool
            // already took.
            let want = identity::files(cfg, &cfg.source.files)?;
            let skip = spool.end_record();
            let resumed_after = identity::settle(&mut spool, &want, skip, true)?;
            run_files(cfg, x, tls, spool, resumed_after)
        }
    }
}

fn open_rings(l: &LiveConfig) -> Result<(Vec<Ring>, RingOptions), Error> {
    live::available()?;
    let o = RingOptions {
        snaplen: l.snaplen,
        promiscuous: l.promiscuous,
        block_size: (l.ring_mib << 20) / live::DEFAULT_BLOCKS,
        ..RingOptions::default()
    };
    let ifaces = if l.interfaces.is_empty() {
        live::default_interfaces()
    } else {
        l.interfaces.clone()
    };
    if ifaces.is_empty() {
        return Err(live::LiveError::NothingToCapture.into());
    }
    let rings = ifaces
        .iter()
        .map(|i| Ring::open(i, &o))
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!(
        "capturing on {} (snap length {})",
        ifaces.join(", "),
        o.snaplen
    );
    Ok((rings, o))
}

/// Live capture through one lane until SIGTERM/SIGINT.
#[allow(clippy::too_many_arguments)]
fn run_live(
    cfg: &Config,
    x: &ExportConfig,
    tls: Arc<rustls::ClientConfig>,
    spool: Spool,
    resumed_after: u64,
    l: &LiveConfig,
    mut rings: Vec<Ring>,
    ring_opts: RingOptions,
    config_path: Option<PathBuf>,
) -> Result<RunReport, Error> {
    let signalled = stop_flag()?;
    let rt = runtime()?;
    let lane = Lane::start(rt.handle(), x, tls, "", spool, resumed_after);
    // Kernel drops so far, stamped on every batch.
    let drops = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sink = lane.sink().with_drops(drops.clone());
    // Never count our own export connection as a flow.
    let exclude = std::net::ToSocketAddrs::to_socket_addrs(&x.collector)
        .ok()
        .and_then(|mut a| a.next());
    let mut reload = reloader(config_path);
    let watch = IfaceWatch {
        configured: l.interfaces.clone(),
        ring: ring_opts.clone(),
        every: Duration::from_secs(2),
    };
    let (report, ifaces) = capture(
        cfg,
        &mut rings,
        &mut sink,
        exclude,
        &signalled,
        &mut reload,
        &drops,
        Duration::from_millis(200),
        ring_opts.block_timeout_ms,
        Some(&watch),
    );
    tracing::info!(
        "capture stopped: {} records; flushing",
        report.summary.records
    );
    let done = lane.finish_within(l.shutdown_grace.duration());
    Ok(RunReport {
        ifaces,
        ..RunReport::lane(report, done, resumed_after)
    })
}

/// Capture files through one lane, then ship until the collector holds
/// every record (or SIGTERM/SIGINT).
fn run_files(
    cfg: &Config,
    x: &ExportConfig,
    tls: Arc<rustls::ClientConfig>,
    spool: Spool,
    resumed_after: u64,
) -> Result<RunReport, Error> {
    let signalled = stop_flag()?;
    let rt = runtime()?;
    let lane = Lane::start(rt.handle(), x, tls, "", spool, resumed_after);
    let mut sink = lane.sink();
    if resumed_after > 0 {
        tracing::info!(
            "resuming: the first {resumed_after} records were spooled by an earlier run"
        );
    }
    let report = crate::capture::replay(cfg.source.files.clone(), cfg, &mut sink);
    tracing::info!(
        "source finished: {} records, {} of them new to the spool; shipping the rest",
        report.summary.records,
        report.summary.records.saturating_sub(sink.skipped)
    );
    let done = lane.finish_when_delivered(signalled);
    Ok(RunReport::lane(report, done, resumed_after))
}
