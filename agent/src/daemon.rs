//! The long-running jobs: `vmflow run` (engine → spool → shipper) and
//! `vmflow collect`. Each builds its own tokio runtime; the engine itself
//! stays on plain threads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::capture::live::{self, IfaceStats, Ring, RingOptions};
use crate::capture::SourceError;
use crate::collect::{self, CollectorOptions};
use crate::config::Config;
use crate::config::{BlobConfig, ExportConfig, FolderConfig};
use crate::error::Error;
use crate::export::batcher::SpoolSink;
use crate::export::ship::{self, ShipOptions, ShipStats};
use crate::export::spool::{Spool, SpoolStats};
use crate::follow::blob::{BlobPosition, BlobSource, BlobStats};
use crate::follow::folder::{FolderPosition, FolderSource};
use crate::follow::runner::{self, TailOptions};
use crate::follow::sequence::{Gap, SequenceStats};
use crate::identity;
use crate::pipeline::{self, Feed, Summary};

pub struct RunReport {
    pub summary: Summary,
    pub ship: ShipStats,
    pub spool: SpoolStats,
    /// Records an earlier run of this agent had already spooled (skipped now).
    pub resumed_after: u64,
    pub error: Option<Error>,
    /// Live capture: packets and kernel drops per interface.
    pub ifaces: Vec<IfaceStats>,
    /// Followed sources: the coverage counters and the latest gaps.
    pub coverage: Option<(SequenceStats, Vec<Gap>)>,
    pub blob: Option<BlobStats>,
    /// Several followed sources: each one's own report, by stream name.
    pub streams: Vec<(String, RunReport)>,
    /// Followed sources: packet time covered by capture files (merged spans).
    pub covered: Vec<(u64, u64)>,
}

/// Stops and joins the lifecycle thread however `run_agent` returns.
struct StopOnDrop(
    Arc<std::sync::atomic::AtomicBool>,
    Option<std::thread::JoinHandle<()>>,
);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.1.take() {
            let _ = h.join();
        }
    }
}

enum FollowKind {
    Folder(FolderConfig),
    Blob(BlobConfig),
}

enum Positions {
    Folder(FolderPosition),
    Blob(BlobPosition),
}

/// A followed source (capture folder or Blob container) and how to run it.
struct Followed {
    kind: FollowKind,
    opts: TailOptions,
    grace: Duration,
}

impl Followed {
    fn folder(f: &FolderConfig, spool_dir: &std::path::Path) -> Followed {
        Followed {
            opts: TailOptions {
                fs: crate::disk::real(),
                key: format!("folder:{}", f.path.display()),
                checkpoint: f
                    .checkpoint
                    .clone()
                    .unwrap_or_else(|| spool_dir.join("folder.checkpoint")),
                poll: Duration::from_secs_f64(f.poll_interval),
                interval: Duration::from_secs_f64(f.checkpoint_interval),
                on_stop: f.on_stop,
            },
            grace: Duration::from_secs_f64(f.shutdown_grace),
            kind: FollowKind::Folder(f.clone()),
        }
    }

    fn blob(b: &BlobConfig, spool_dir: &std::path::Path) -> Followed {
        // The account URL without any query string (never a SAS in the key).
        let account = b.account_url.split('?').next().unwrap_or("");
        Followed {
            opts: TailOptions {
                fs: crate::disk::real(),
                key: format!("blob:{account}/{}/{}", b.container, b.prefix),
                checkpoint: b
                    .checkpoint
                    .clone()
                    .unwrap_or_else(|| spool_dir.join("blob.checkpoint")),
                // Between files the loop goes on at once; the listing
                // interval is the source's own.
                poll: Duration::from_millis(50).min(Duration::from_secs_f64(b.poll_interval)),
                interval: Duration::from_secs_f64(b.checkpoint_interval),
                on_stop: b.on_stop,
            },
            grace: Duration::from_secs_f64(b.shutdown_grace),
            kind: FollowKind::Blob(b.clone()),
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
    use std::sync::atomic::{AtomicBool, Ordering};
    let x = cfg
        .export
        .as_ref()
        .ok_or(Error::Usage("`run` needs an [export] section"))?;
    let live = cfg.capture.live.clone();
    let followed_n = cfg.source.folder.len() + cfg.source.blob.len();
    let kinds = usize::from(live.is_some())
        + usize::from(followed_n > 0)
        + usize::from(!cfg.source.files.is_empty());
    if kinds == 0 {
        return Err(Error::Usage(
            "`run` needs a source: source.files, [source.folder], [source.blob] or [capture.live]",
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
    let ring_opts = live.as_ref().map(|l| RingOptions {
        snaplen: l.snaplen,
        promiscuous: l.promiscuous,
        block_size: (l.ring_mib << 20) / live::DEFAULT_BLOCKS,
        ..RingOptions::default()
    });
    let mut rings = match (&live, &ring_opts) {
        (Some(l), Some(o)) => {
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
                .map(|i| Ring::open(i, o))
                .collect::<Result<Vec<_>, _>>()?;
            tracing::info!(
                "capturing on {} (snap length {})",
                ifaces.join(", "),
                o.snaplen
            );
            rings
        }
        _ => Vec::new(),
    };
    // The capture lifecycle, beside the source that reads what it captures.
    let lifecycle_stop = Arc::new(AtomicBool::new(false));
    let lifecycle = match &cfg.azure.captures {
        Some(c) => {
            let m = crate::azure::lifecycle::manager(c, &cfg.azure)?;
            let poll = Duration::from_secs_f64(c.poll_interval);
            let stop = lifecycle_stop.clone();
            Some(std::thread::spawn(move || {
                crate::azure::lifecycle::run(m, poll, &stop)
            }))
        }
        None => None,
    };
    let _stop_lifecycle = StopOnDrop(lifecycle_stop.clone(), lifecycle);
    if followed_n > 0 {
        return run_followed(cfg, x, tls);
    }
    let mut spool = Spool::open(crate::disk::real(), &x.spool_dir, x.spool_max_mib << 20)?;
    // A file source is deterministic: a rerun skips what the spool already
    // took. Live capture is new data every time: it never skips.
    let resumed_after = if live.is_some() {
        identity::settle(&mut spool, &identity::live(), 0, false)?
    } else {
        let want = identity::files(cfg, &cfg.source.files)?;
        let skip = spool.end_record();
        identity::settle(&mut spool, &want, skip, true)?
    };
    let spool = Arc::new(Mutex::new(spool));
    let notify = Arc::new(Notify::new());
    let (done_tx, done_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, signalled.clone())
            .map_err(Error::setup("signal handler"))?;
    }
    let opts = ship_options(x, tls, "");
    let rt = runtime()?;
    let mut shipper = rt.spawn(ship::ship(
        opts,
        spool.clone(),
        notify.clone(),
        done_rx,
        stop_rx,
    ));

    // Kernel drops so far, stamped on every batch (live capture).
    let drops = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut sink = SpoolSink::new(
        spool.clone(),
        notify,
        x.batch_records,
        Duration::from_secs_f64(x.batch_age),
    )
    .with_drops(drops.clone());
    sink.set_skip(resumed_after);
    let (report, ifaces, watcher, shipped) = if let Some(l) = &live {
        // Never count our own export connection as a flow.
        let exclude = std::net::ToSocketAddrs::to_socket_addrs(&x.collector)
            .ok()
            .and_then(|mut a| a.next());
        let tov = ring_opts.as_ref().map_or(20, |o| o.block_timeout_ms);
        let mut reload = reloader(config_path.clone());
        let follow = ring_opts.as_ref().map(|o| IfaceWatch {
            configured: l.interfaces.clone(),
            ring: o.clone(),
            every: Duration::from_secs(2),
        });
        let (report, ifaces) = capture(
            cfg,
            &mut rings,
            &mut sink,
            exclude,
            &signalled,
            &mut reload,
            &drops,
            Duration::from_millis(200),
            tov,
            follow.as_ref(),
        );
        tracing::info!(
            "capture stopped: {} records; flushing",
            report.summary.records
        );
        let _ = done_tx.send(true);
        let grace = Duration::from_secs_f64(l.shutdown_grace);
        let early = rt.block_on(async { tokio::time::timeout(grace, &mut shipper).await });
        let _ = stop_tx.send(true);
        // A finished JoinHandle must not be awaited again: keep its result.
        let shipped = early.ok().map(|r| r.unwrap_or_default());
        (report, ifaces, None, shipped)
    } else {
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
        let _ = done_tx.send(true);
        let stop_on_signal = rt.spawn(async move {
            while !signalled.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::info!("stopping: unacknowledged batches stay in the spool");
            let _ = stop_tx.send(true);
        });
        (report, Vec::new(), Some(stop_on_signal), None)
    };
    let ship = match shipped {
        Some(s) => s,
        None => rt.block_on(async { shipper.await.unwrap_or_default() }),
    };
    if let Some(t) = watcher {
        t.abort();
    }
    let spool = spool.lock().map(|s| s.stats()).unwrap_or_default();
    Ok(RunReport {
        summary: report.summary,
        ship,
        spool,
        resumed_after,
        error: report.error.map(Error::from),
        ifaces,
        coverage: None,
        blob: None,
        streams: Vec::new(),
        covered: Vec::new(),
    })
}

fn ship_options(x: &ExportConfig, tls: Arc<rustls::ClientConfig>, stream: &str) -> ShipOptions {
    let mut opts = ShipOptions::new(x.collector.clone(), x.server_name.clone(), tls);
    opts.window = x.window;
    opts.host = hostname();
    opts.agent_id = if x.agent_id.is_empty() {
        opts.host.clone()
    } else {
        x.agent_id.clone()
    };
    opts.stream = stream.to_string();
    opts
}

/// Every configured folder and blob container, each with its own engine,
/// checkpoint, spool and record stream to the collector. One source keeps
/// the plain spool directory and the agent's unnamed stream.
fn run_followed(
    cfg: &Config,
    x: &ExportConfig,
    tls: Arc<rustls::ClientConfig>,
) -> Result<RunReport, Error> {
    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, signalled.clone())
            .map_err(Error::setup("signal handler"))?;
    }
    let names = cfg.source.stream_names();
    let single = names.len() == 1;
    let lanes: Vec<(String, std::path::PathBuf, FollowKind)> = cfg
        .source
        .folder
        .iter()
        .cloned()
        .map(FollowKind::Folder)
        .chain(cfg.source.blob.iter().cloned().map(FollowKind::Blob))
        .zip(names)
        .map(|(k, n)| {
            if single {
                (String::new(), x.spool_dir.clone(), k)
            } else {
                let dir = x.spool_dir.join(&n);
                (n, dir, k)
            }
        })
        .collect();
    let rt = runtime()?;
    let handle = rt.handle().clone();
    let mut reports: Vec<(String, Result<RunReport, Error>)> = std::thread::scope(|scope| {
        let running: Vec<_> = lanes
            .into_iter()
            .map(|(name, dir, kind)| {
                let (tls, handle, signalled) = (tls.clone(), handle.clone(), signalled.clone());
                let n = name.clone();
                let h = scope
                    .spawn(move || follow_lane(cfg, x, tls, &n, &dir, kind, &handle, &signalled));
                (name, h)
            })
            .collect();
        running
            .into_iter()
            .map(|(n, h)| {
                let r = h.join().unwrap_or_else(|_| Err(Error::Panicked(n.clone())));
                (n, r)
            })
            .collect()
    });
    if single {
        return reports
            .pop()
            .map(|(_, r)| r)
            .unwrap_or(Err(Error::NoSource));
    }
    let mut total = RunReport {
        summary: Summary::default(),
        ship: ShipStats::default(),
        spool: SpoolStats::default(),
        resumed_after: 0,
        error: None,
        ifaces: Vec::new(),
        coverage: None,
        blob: None,
        streams: Vec::new(),
        covered: Vec::new(),
    };
    for (name, r) in reports {
        match r {
            Ok(mut r) => {
                let s = &mut total.summary;
                s.packets += r.summary.packets;
                s.flow_packets += r.summary.flow_packets;
                s.ip_bytes += r.summary.ip_bytes;
                s.records += r.summary.records;
                s.flows += r.summary.flows;
                s.record_packets += r.summary.record_packets;
                s.record_bytes += r.summary.record_bytes;
                s.elapsed = s.elapsed.max(r.summary.elapsed);
                total.resumed_after += r.resumed_after;
                total.ship.batches_sent += r.ship.batches_sent;
                total.ship.batches_acked += r.ship.batches_acked;
                total.ship.connections += r.ship.connections;
                total.ship.connect_failures += r.ship.connect_failures;
                total.spool.batches += r.spool.batches;
                total.spool.records += r.spool.records;
                total.spool.dropped_batches += r.spool.dropped_batches;
                total.spool.dropped_records += r.spool.dropped_records;
                total.spool.failed_batches += r.spool.failed_batches;
                total.spool.failed_records += r.spool.failed_records;
                total.spool.corrupt_batches += r.spool.corrupt_batches;
                total.spool.corrupt_records += r.spool.corrupt_records;
                // The run's failure is the first source's that failed: it
                // moves to the total (the one place a run reports failure).
                if let Some(e) = r.error.take() {
                    total.error.get_or_insert(Error::Lane {
                        name: name.clone(),
                        source: Box::new(e),
                    });
                }
                total.streams.push((name, r));
            }
            Err(e) => {
                tracing::error!("source {name}: {e}");
                total.error.get_or_insert(Error::Lane {
                    name,
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(total)
}

/// One followed source through its own engine, spool and shipper.
#[allow(clippy::too_many_arguments)]
fn follow_lane(
    cfg: &Config,
    x: &ExportConfig,
    tls: Arc<rustls::ClientConfig>,
    stream: &str,
    spool_dir: &std::path::Path,
    kind: FollowKind,
    rt: &tokio::runtime::Handle,
    signalled: &std::sync::atomic::AtomicBool,
) -> Result<RunReport, Error> {
    let fw = match kind {
        FollowKind::Folder(f) => Followed::folder(&f, spool_dir),
        FollowKind::Blob(b) => Followed::blob(&b, spool_dir),
    };
    let mut spool = Spool::open(fw.opts.fs.clone(), spool_dir, x.spool_max_mib << 20)?;
    let (engine, pos) = match &fw.kind {
        FollowKind::Folder(_) => {
            match runner::load::<FolderPosition>(&fw.opts.checkpoint, &fw.opts.key)? {
                Some((e, p)) => (Some(e), Some(Positions::Folder(p))),
                None => (None, None),
            }
        }
        FollowKind::Blob(_) => {
            match runner::load::<BlobPosition>(&fw.opts.checkpoint, &fw.opts.key)? {
                Some((e, p)) => (Some(e), Some(Positions::Blob(p))),
                None => (None, None),
            }
        }
    };
    // The spool may hold records produced after the checkpoint.
    let at = engine.as_ref().map_or(0, |e| e.records);
    let spooled = spool.end_record();
    if spooled < at {
        tracing::warn!(
            "the spool holds {spooled} records, the checkpoint says {at} were produced: \
             was the spool removed? continuing from the checkpoint"
        );
    }
    let want = identity::followed(cfg, &fw.opts.key);
    let resumed_after = identity::settle(
        &mut spool,
        &want,
        spooled.saturating_sub(at),
        engine.is_none(),
    )?;
    let spool = Arc::new(Mutex::new(spool));
    let notify = Arc::new(Notify::new());
    let (done_tx, done_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shipper = rt.spawn(ship::ship(
        ship_options(x, tls, stream),
        spool.clone(),
        notify.clone(),
        done_rx,
        stop_rx,
    ));
    let mut sink = SpoolSink::new(
        spool.clone(),
        notify,
        x.batch_records,
        Duration::from_secs_f64(x.batch_age),
    );
    sink.set_skip(resumed_after);
    if engine.is_some() {
        tracing::info!(
            "resuming from {} ({resumed_after} records spooled after it)",
            fw.opts.checkpoint.display()
        );
    }
    let covered;
    let (t, coverage, blob_stats) = match fw.kind {
        FollowKind::Folder(f) => {
            let pos = match pos {
                Some(Positions::Folder(p)) => p,
                _ => FolderPosition::new(&f),
            };
            tracing::info!("following capture files in {}", f.path.display());
            let mut src = FolderSource::new(f, pos);
            let t = runner::run(cfg, &mut src, engine, &mut sink, &fw.opts, signalled);
            let gaps = src.pos.sequence.gaps.iter().cloned().collect();
            covered = src.pos.sequence.covered.iter().copied().collect();
            (t, Some((src.pos.sequence.stats, gaps)), None)
        }
        FollowKind::Blob(b) => {
            let pos = match pos {
                Some(Positions::Blob(p)) => p,
                _ => BlobPosition::new(&b),
            };
            let client = crate::azure::credentials::blob_client(&b, &cfg.azure)?;
            let dir = b
                .download_dir
                .clone()
                .unwrap_or_else(|| spool_dir.join("blob"));
            tracing::info!(
                "following capture blobs in container {} (prefix {:?})",
                b.container,
                b.prefix
            );
            let mut src = BlobSource::new(b, client, pos, dir)?;
            let t = runner::run(cfg, &mut src, engine, &mut sink, &fw.opts, signalled);
            let gaps = src.pos.sequence.gaps.iter().cloned().collect();
            covered = src.pos.sequence.covered.iter().copied().collect();
            (t, Some((src.pos.sequence.stats, gaps)), Some(src.stats))
        }
    };
    tracing::info!(
        "source stopped: {} records, {} checkpoints; flushing",
        t.report.summary.records,
        t.checkpoints
    );
    let _ = done_tx.send(true);
    let early = rt.block_on(async { tokio::time::timeout(fw.grace, &mut shipper).await });
    let _ = stop_tx.send(true);
    let ship = match early {
        Ok(r) => r.unwrap_or_default(),
        Err(_) => rt.block_on(async { shipper.await.unwrap_or_default() }),
    };
    let spool = spool.lock().map(|s| s.stats()).unwrap_or_default();
    Ok(RunReport {
        summary: t.report.summary,
        ship,
        spool,
        resumed_after,
        error: t.report.error.map(Error::from),
        ifaces: Vec::new(),
        coverage,
        blob: blob_stats,
        streams: Vec::new(),
        covered,
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub struct CollectArgs {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub out: PathBuf,
    pub max_connections: Option<usize>,
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
    pub frame_budget: usize,
    pub idle_timeout: Duration,
}

/// Runs the collector until SIGTERM / SIGINT. Prints the bound address on
/// stderr first (so `--listen 127.0.0.1:0` can be used).
pub fn run_collector(a: CollectArgs) -> Result<(), Error> {
    let tls = crate::tls::server_config(&a.cert, &a.key, &a.client_ca)?;
    let fs = crate::disk::real();
    fs.create_dir_all(&a.out)
        .and_then(|_| fs.restrict(&a.out))
        .map_err(|e| Error::io(&a.out, e))?;
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: a.listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::Listener)?;
        eprintln!("collect: listening on {addr}");
        let mut opts = CollectorOptions::new(tls, a.out.clone());
        if let Some(n) = a.max_connections {
            opts.max_connections = n;
        }
        opts.max_handshakes = a.max_handshakes;
        opts.handshake_timeout = a.handshake_timeout;
        opts.frame_budget = a.frame_budget;
        opts.idle_timeout = a.idle_timeout;
        tokio::select! {
            r = collect::serve(listener, opts) => r,
            _ = wait_for_signal() => Ok(()),
        }
    })
}

/// Starts a collector on a background thread (for `vmflow demo`); returns the
/// address it listens on. It runs until the process exits.
pub fn spawn_collector(
    listen: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    out: PathBuf,
) -> Result<SocketAddr, Error> {
    let rt = runtime()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|source| Error::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(Error::Listener)?;
    std::thread::spawn(move || {
        if let Err(e) = rt.block_on(collect::serve(listener, CollectorOptions::new(tls, out))) {
            tracing::error!("collector: {e}");
        }
    });
    Ok(addr)
}

/// Live capture into `sink` until `stop` is set: packets from every ring, and
/// a tick every `tick` so timeouts fire on an idle link. Time while idle is
/// the last packet's kernel timestamp advanced by the monotonic clock, so a
/// wall-clock step cannot fire or freeze timeouts.
#[allow(clippy::too_many_arguments)]
pub fn capture<S: crate::export::RecordSink>(
    cfg: &crate::config::Config,
    rings: &mut Vec<Ring>,
    sink: S,
    exclude: Option<SocketAddr>,
    stop: &std::sync::atomic::AtomicBool,
    reload: &mut dyn FnMut() -> Option<crate::config::Config>,
    drops: &std::sync::atomic::AtomicU64,
    tick: Duration,
    block_timeout_ms: u32,
    follow: Option<&IfaceWatch>,
) -> (pipeline::Report<SourceError>, Vec<IfaceStats>) {
    use std::sync::atomic::Ordering;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    let opts = pipeline::RunOptions {
        end: vmflow_proto::EndReason::Shutdown,
        exclude,
        inline: true,
        restore: None,
    };
    // Small batches keep a batch in L2 between the reader writing it and the
    // tables reading it back (measured in BENCHMARKS.md); live capture does
    // not need the long batches that amortize thread hand-offs in replay.
    let mut cfg = cfg.clone();
    cfg.pipeline.batch_packets = cfg.pipeline.batch_packets.min(256);
    let mut gone: Vec<IfaceStats> = Vec::new();
    let report = pipeline::run_with(&cfg, sink, opts, |feed: &mut dyn Feed| {
        let mut last_ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut last_mono = Instant::now();
        let mut last_tick = Instant::now();
        let mut prev_look = last_ts;
        let mut last_scan = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut got = 0;
            for r in rings.iter_mut() {
                got += r.drain(&mut |p| {
                    last_ts = last_ts.max(p.ts_ns);
                    feed.packet(p);
                });
            }
            if got > 0 {
                last_mono = Instant::now();
            }
            if last_tick.elapsed() >= tick {
                let now = last_ts + last_mono.elapsed().as_nanos() as u64;
                feed.tick(now);
                let last_look = std::mem::replace(&mut prev_look, now);
                last_tick = Instant::now();
                // Kernel drops are coverage gaps: say where and how many, as
                // they happen, and keep the running total for the batches.
                for r in rings.iter_mut() {
                    let before = r.drops();
                    let st = r.kernel_stats();
                    if st.kernel_drops > before {
                        // The drops happened since the last look: flows
                        // open then may be short.
                        feed.gap(last_look, now);
                        tracing::warn!(
                            "{}: coverage gap: the kernel dropped {} packets (ring full) up to {} ns",
                            st.iface,
                            st.kernel_drops - before,
                            now
                        );
                        drops.fetch_add(st.kernel_drops - before, Ordering::Relaxed);
                    }
                }
                if let Some(f) = follow {
                    if last_scan.elapsed() >= f.every {
                        last_scan = Instant::now();
                        rescan(f, rings, &mut gone, &mut |p| feed.packet(p));
                    }
                }
                if let Some(new) = reload() {
                    match feed.reconfigure(&new) {
                        Ok(()) => tracing::info!("configuration reloaded; every open flow kept"),
                        Err(e) => tracing::error!("reload refused, old settings stay: {e}"),
                    }
                }
            }
            if got == 0 {
                let left = tick.saturating_sub(last_tick.elapsed());
                live::wait(rings, left.as_millis().clamp(1, 1000) as i32);
            }
        }
        // Packets captured before the stop may sit in a block the kernel has
        // not handed over yet; it does so within the block timeout. Wait two
        // of those and take everything.
        let until = Instant::now() + Duration::from_millis(2 * u64::from(block_timeout_ms) + 20);
        while Instant::now() < until {
            live::wait(rings, block_timeout_ms as i32);
            for r in rings.iter_mut() {
                r.drain(&mut |p| feed.packet(p));
            }
        }
        Ok(())
    });
    let mut stats: Vec<IfaceStats> = gone;
    stats.extend(rings.iter_mut().map(|r| r.kernel_stats()));
    (report, stats)
}

/// Following interfaces while capturing: which ones, and how often to look.
pub struct IfaceWatch {
    /// Interfaces named in the configuration (captured whenever they exist);
    /// empty: every interface that is up, not loopback and has an address.
    pub configured: Vec<String>,
    pub ring: RingOptions,
    pub every: Duration,
}

/// Opens rings on interfaces that appeared, closes those on interfaces
/// that went away (or were re-created), after taking their last packets.
fn rescan(
    f: &IfaceWatch,
    rings: &mut Vec<Ring>,
    gone: &mut Vec<IfaceStats>,
    mut feed: &mut dyn FnMut(crate::capture::RawPacket<'_>),
) {
    let wanted: Vec<String> = if f.configured.is_empty() {
        live::default_interfaces()
    } else {
        f.configured
            .iter()
            .filter(|n| live::ifindex(n).is_some())
            .cloned()
            .collect()
    };
    let mut i = 0;
    while i < rings.len() {
        let r = &mut rings[i];
        let same = live::ifindex(r.name()) == Some(r.ifindex());
        if same && wanted.iter().any(|w| w == r.name()) {
            i += 1;
            continue;
        }
        r.drain(&mut feed);
        let st = r.kernel_stats();
        tracing::warn!(
            "{}: interface went away or was re-created; {} packets captured on it (drops {}), stopped",
            st.iface,
            st.packets,
            st.kernel_drops
        );
        gone.push(st);
        rings.remove(i);
    }
    for name in wanted {
        if rings.iter().any(|r| r.name() == name) {
            continue;
        }
        match Ring::open(&name, &f.ring) {
            Ok(r) => {
                tracing::info!("{name}: interface appeared; capturing on it");
                rings.push(r);
            }
            Err(e) => tracing::warn!("{name}: cannot capture on the new interface: {e}"),
        }
    }
}

/// A SIGHUP watcher for live capture: when the signal has arrived, re-reads
/// `path` (if any) and hands the new configuration over. A file that no
/// longer parses is logged and ignored.
pub fn reloader(path: Option<PathBuf>) -> impl FnMut() -> Option<Config> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()) {
        tracing::warn!("SIGHUP reload unavailable: {e}");
    }
    move || {
        if !hup.swap(false, Ordering::Relaxed) {
            return None;
        }
        let Some(p) = path.as_ref() else {
            tracing::warn!("SIGHUP: no --config file to reload");
            return None;
        };
        match Config::load(p) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!("SIGHUP: {e}; old settings stay");
                None
            }
        }
    }
}
