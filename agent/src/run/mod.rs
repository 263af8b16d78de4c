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
mod sink;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use crate::capture::live_loop::{capture, IfaceWatch};
pub use collector::{run_collector, spawn_collector, CollectArgs};
pub use lane::Lane;
pub use report::RunReport;
pub use signals::{reloader, stop_flag};
pub use sink::run_sink;

use crate::capture::filter::PacketFilter;
use crate::capture::live::{self, Ring, RingOptions};
use crate::config::{Config, ExportConfig, LiveConfig};
use crate::error::Error;
use crate::export::batcher::SpoolSink;
use crate::export::ipfix_sender::IpfixSender;
use crate::export::outputs::Outputs;
use crate::export::spool::Spool;
use crate::identity;
use crate::metrics::{Board, Observer, SourceState};
use crate::observe::{Carried, ObservingSink};
use crate::pipeline::live::CountingSink;

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
/// Records go to `[export]` (mTLS, spooled, exactly once) and to every
/// `[[export.ipfix]]` collector (best effort), either alone or both.
pub fn run_agent(cfg: &Config, config_path: Option<PathBuf>) -> Result<RunReport, Error> {
    let x = cfg.export.as_ref();
    if x.is_none() && cfg.ipfix.is_empty() {
        return Err(Error::Usage(
            "`run` needs somewhere to send records: [export] (mTLS to vmflow collect) \
             and/or [[export.ipfix]]",
        ));
    }
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
    if followed_n > 0 && x.is_none() {
        return Err(FOLLOW_NEEDS_SPOOL);
    }
    if cfg.observe.ship && x.is_none() {
        return Err(Error::Usage(
            "[observe] ship = true: observations travel in the [export] record stream; \
             configure [export] or leave ship off",
        ));
    }
    crate::capture::check_readable(&cfg.source.files, None)?;
    // Metrics and the stats line from the start: /healthz says "not open
    // yet" until the source is.
    let observer = Observer::start(cfg.metrics.addr()?, cfg.log.stats_every())?;
    let board = &observer.board;
    let tls = x
        .map(|x| crate::tls::client_config(&x.ca, &x.cert, &x.key))
        .transpose()?;
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
    let ipfix = cfg
        .ipfix
        .iter()
        .map(|c| {
            let tls = c
                .tls_files()
                .map(|(ca, cert, key)| crate::tls::client_config(ca, cert, key))
                .transpose()?;
            Ok(IpfixSender::start(c, tls)?)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mtls = x.zip(tls);
    let mut report = if followed_n > 0 {
        let (x, tls) = mtls.ok_or(FOLLOW_NEEDS_SPOOL)?;
        followed::run_followed(cfg, x, tls, &ipfix, board)?
    } else {
        match (live, rings) {
            (Some(l), Some((rings, ring_opts))) => {
                // Live capture is new data every time: it never skips.
                let mtls = mtls
                    .map(|(x, tls)| {
                        let mut spool =
                            Spool::open(crate::disk::real(), &x.spool_dir, x.spool_max_mib << 20)?;
                        let resumed_after =
                            identity::settle(&mut spool, &identity::live(), 0, false)?;
                        Ok::<_, Error>(Mtls {
                            x,
                            tls,
                            spool,
                            resumed_after,
                        })
                    })
                    .transpose()?;
                run_live(cfg, mtls, &ipfix, &l, rings, ring_opts, config_path, board)?
            }
            _ => {
                // A file source is deterministic: a rerun skips what the
                // spool already took.
                let mtls = mtls
                    .map(|(x, tls)| {
                        let mut spool =
                            Spool::open(crate::disk::real(), &x.spool_dir, x.spool_max_mib << 20)?;
                        let want = identity::files(cfg, &cfg.source.files)?;
                        let skip = spool.end_record();
                        let resumed_after = identity::settle(&mut spool, &want, skip, true)?;
                        Ok::<_, Error>(Mtls {
                            x,
                            tls,
                            spool,
                            resumed_after,
                        })
                    })
                    .transpose()?;
                run_files(cfg, mtls, &ipfix, board)?
            }
        }
    };
    report.ipfix = ipfix.into_iter().map(IpfixSender::finish).collect();
    Ok(report)
}

const FOLLOW_NEEDS_SPOOL: Error = Error::Usage(
    "followed folders and Blob containers keep their checkpoints beside the spool: \
     they need [export] (IPFIX collectors can be added beside it)",
);

/// The mTLS export of a capture-file or live run: its settings, client TLS
/// and spool, settled on this run's stream.
struct Mtls<'a> {
    x: &'a ExportConfig,
    tls: Arc<rustls::ClientConfig>,
    spool: Spool,
    resumed_after: u64,
}

impl Mtls<'_> {
    fn start(self, rt: &tokio::runtime::Handle, board: &Board) -> Lane {
        let dir = self.x.spool_dir.clone();
        let lane = Lane::start(rt, self.x, self.tls, "", self.spool, self.resumed_after);
        lane.show_on(board, &dir);
        lane
    }
}

fn open_rings(l: &LiveConfig) -> Result<(Vec<Ring>, RingOptions), Error> {
    live::available()?;
    let o = RingOptions {
        snaplen: l.snaplen,
        promiscuous: l.promiscuous,
        block_size: (l.ring_mib << 20) / live::DEFAULT_BLOCKS,
        filter: l.filter.clone(),
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
    mtls: Option<Mtls>,
    ipfix: &[IpfixSender],
    l: &LiveConfig,
    mut rings: Vec<Ring>,
    ring_opts: RingOptions,
    config_path: Option<PathBuf>,
    board: &Board,
) -> Result<RunReport, Error> {
    let signalled = stop_flag()?;
    let rt = runtime()?;
    // Never count our own export connection as a flow: the mTLS collector,
    // or without one the first IPFIX collector.
    let exclude = mtls
        .as_ref()
        .and_then(|m| m.x.collectors().first().copied())
        .or(cfg.ipfix.first().map(|i| i.collector.as_str()))
        .and_then(|c| std::net::ToSocketAddrs::to_socket_addrs(c).ok())
        .and_then(|mut a| a.next());
    let lane = mtls.map(|m| m.start(rt.handle(), board));
    let resumed_after = lane.as_ref().map_or(0, |l| l.resumed_after);
    // Kernel drops so far, stamped on every batch.
    let drops = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let carried = shipped_observations(cfg);
    let spool = lane
        .as_ref()
        .map(|l| carry(l.sink(), &carried).with_drops(drops.clone()));
    let live = board.engine("");
    let mut sink = CountingSink::new(
        tagged(cfg, Outputs::new(spool, ipfix), carried)?,
        Some(live.clone()),
    );
    board.health.source(SourceState::Open);
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
        Some(&*live),
    );
    board.health.source(match &report.error {
        Some(e) => SourceState::Failed(e.to_string()),
        None => SourceState::Ended,
    });
    tracing::info!(
        "capture stopped: {} records; flushing",
        report.summary.records
    );
    let done = lane
        .map(|lane| lane.finish_within(l.shutdown_grace.duration()))
        .unwrap_or_default();
    Ok(RunReport {
        ifaces,
        ..RunReport::lane(report, done, resumed_after)
    })
}

/// Where a lane's observations go on their way into its batches, when
/// `[observe] ship` is on (`run_agent` has checked there is a spool).
fn shipped_observations(cfg: &Config) -> Option<Carried> {
    cfg.observe.ship.then(Carried::default)
}

/// With observations shipped (`carried`), the observer's windows go into
/// the source's checkpoints through the returned slot and come back from
/// `restored`, like the engine's flows; without, they are not part of the
/// record stream and the observer starts afresh.
fn checkpointed<S: crate::sink::RecordSink>(
    sink: ObservingSink<S, Carried>,
    carried: &Option<Carried>,
    restored: Option<crate::observe::ObserverState>,
) -> (ObservingSink<S, Carried>, Option<crate::observe::StateSlot>) {
    if carried.is_none() {
        return (sink, None);
    }
    let slot = crate::observe::StateSlot::default();
    let mut sink = sink.checkpointed_into(slot.clone());
    if let Some(state) = restored {
        sink.restore(state);
    }
    (sink, Some(slot))
}

/// A lane's batcher that takes the observations in `carried` along.
fn carry(sink: SpoolSink, carried: &Option<Carried>) -> SpoolSink {
    match carried {
        Some(c) => sink.carrying(c.clone()),
        None => sink,
    }
}

/// A lane's records tagged with where their remote end is (`[enrich]`,
/// `[[watchlist]]`; a pass-through without them), and with `carried` the
/// observations they raise, for the batcher to ship; the lists and
/// databases are read again when their files change.
pub(crate) fn tagged<S: crate::sink::RecordSink>(
    cfg: &Config,
    inner: S,
    carried: Option<Carried>,
) -> Result<ObservingSink<S, Carried>, Error> {
    let lists = crate::observe::load_watchlists(&cfg.watchlists)?;
    let enricher = (!cfg.enrich.mmdb.is_empty())
        .then(|| crate::observe::Enricher::open(&cfg.enrich.mmdb))
        .transpose()?;
    let observer = crate::observe::Observer::new(cfg.observe.clone(), lists, enricher);
    let sink = match carried {
        Some(c) => ObservingSink::carrying(inner, observer, c),
        None => ObservingSink::new(inner, observer, None),
    };
    if cfg.enrich.mmdb.is_empty() && cfg.watchlists.is_empty() {
        return Ok(sink);
    }
    let (reload, _) = crate::observe::Reload::new(
        cfg.watchlists.clone(),
        cfg.enrich.mmdb.clone(),
        Duration::from_secs(5),
    );
    Ok(sink.reloading(reload))
}

/// Capture files through one lane, then ship until the collector holds
/// every record (or SIGTERM/SIGINT).
fn run_files(
    cfg: &Config,
    mtls: Option<Mtls>,
    ipfix: &[IpfixSender],
    board: &Board,
) -> Result<RunReport, Error> {
    // A filter that does not compile for a file stops the run before
    // anything is read or shipped.
    let mut filter = PacketFilter::new(cfg.source.filter.as_deref())?;
    crate::capture::check_readable(&cfg.source.files, filter.as_mut())?;
    let signalled = stop_flag()?;
    let rt = runtime()?;
    let lane = mtls.map(|m| m.start(rt.handle(), board));
    let resumed_after = lane.as_ref().map_or(0, |l| l.resumed_after);
    let carried = shipped_observations(cfg);
    let mut sink = Outputs::new(lane.as_ref().map(|l| carry(l.sink(), &carried)), ipfix);
    let live = board.engine("");
    board.health.source(SourceState::Open);
    if resumed_after > 0 {
        tracing::info!(
            "resuming: the first {resumed_after} records were spooled by an earlier run"
        );
    }
    let report = crate::capture::replay_watched(
        cfg.source.files.clone(),
        cfg,
        CountingSink::new(tagged(cfg, &mut sink, carried)?, Some(live.clone())),
        &live,
        filter,
    );
    board.health.source(match &report.error {
        Some(e) => SourceState::Failed(e.to_string()),
        None => SourceState::Ended,
    });
    let skipped = sink.spool.as_ref().map_or(0, |s| s.skipped);
    let done = match lane {
        Some(lane) => {
            tracing::info!(
                "source finished: {} records, {} of them new to the spool; shipping the rest",
                report.summary.records,
                report.summary.records.saturating_sub(skipped)
            );
            lane.finish_when_delivered(signalled)
        }
        None => {
            tracing::info!("source finished: {} records", report.summary.records);
            Default::default()
        }
    };
    Ok(RunReport::lane(report, done, resumed_after))
}
