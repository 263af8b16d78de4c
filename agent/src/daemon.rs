//! The long-running jobs: `vmflow run` (engine → spool → shipper) and
//! `vmflow collect`. Each builds its own tokio runtime; the engine itself
//! stays on plain threads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::collect::{self, CollectorOptions};
use crate::config::Config;
use crate::error::Error;
use crate::export::batcher::SpoolSink;
use crate::export::ship::{self, ShipOptions, ShipStats};
use crate::export::spool::{Spool, SpoolStats};
use crate::pipeline::{self, Feed, Summary};
use crate::source::live::{self, IfaceStats, Ring};

pub struct RunReport {
    pub summary: Summary,
    pub ship: ShipStats,
    pub spool: SpoolStats,
    /// Records an earlier run of this agent had already spooled (skipped now).
    pub resumed_after: u64,
    pub append_errors: u64,
    pub error: Option<Error>,
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Pipeline(format!("runtime: {e}")))
}

/// Replays the configured source through the engine and ships every record,
/// returning once the collector has acknowledged all of them (or on SIGTERM
/// / SIGINT, leaving the rest in the spool for the next start).
pub fn run_agent(cfg: &Config) -> Result<RunReport, Error> {
    let x = cfg
        .export
        .as_ref()
        .ok_or_else(|| Error::Config("`run` needs an [export] section".into()))?;
    if cfg.source.files.is_empty() {
        return Err(Error::Config(
            "`run` needs source.files (other sources come later)".into(),
        ));
    }
    let tls = crate::tls::client_config(&x.ca, &x.cert, &x.key)?;
    let spool = Spool::open(&x.spool_dir, x.spool_max_mib << 20).map_err(Error::Spool)?;
    let spool = Arc::new(Mutex::new(spool));
    let notify = Arc::new(Notify::new());
    let (done_tx, done_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut opts = ShipOptions::new(x.collector.clone(), x.server_name.clone(), tls);
    opts.window = x.window;
    opts.host = hostname();
    opts.agent_id = if x.agent_id.is_empty() {
        opts.host.clone()
    } else {
        x.agent_id.clone()
    };
    let rt = runtime()?;
    let shipper = rt.spawn(ship::ship(
        opts,
        spool.clone(),
        notify.clone(),
        done_rx,
        stop_rx,
    ));
    let signals = rt.spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: unacknowledged batches stay in the spool");
        let _ = stop_tx.send(true);
    });

    let mut sink = SpoolSink::new(
        spool.clone(),
        notify,
        x.batch_records,
        Duration::from_secs_f64(x.batch_age),
    );
    let resumed_after = sink.pending_skip();
    if resumed_after > 0 {
        tracing::info!(
            "resuming: the first {resumed_after} records were spooled by an earlier run"
        );
    }
    let report = pipeline::replay(cfg.source.files.clone(), cfg, &mut sink);
    tracing::info!(
        "source finished: {} records, {} of them new to the spool; shipping the rest",
        report.summary.records,
        report.summary.records.saturating_sub(sink.skipped)
    );
    let _ = done_tx.send(true);
    let ship = rt.block_on(async { shipper.await.unwrap_or_default() });
    signals.abort();
    let spool = spool.lock().map(|s| s.stats()).unwrap_or_default();
    Ok(RunReport {
        summary: report.summary,
        ship,
        spool,
        resumed_after,
        append_errors: sink.append_errors,
        error: report.error,
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
}

/// Runs the collector until SIGTERM / SIGINT. Prints the bound address on
/// stderr first (so `--listen 127.0.0.1:0` can be used).
pub fn run_collector(a: CollectArgs) -> Result<(), Error> {
    let tls = crate::tls::server_config(&a.cert, &a.key, &a.client_ca)?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .map_err(|e| Error::Collector(format!("bind {}: {e}", a.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Collector(e.to_string()))?;
        eprintln!("collect: listening on {addr}");
        let opts = CollectorOptions::new(tls, a.out.clone());
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
        .map_err(|e| Error::Collector(format!("bind {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Collector(e.to_string()))?;
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
pub fn capture<S: crate::export::RecordSink>(
    cfg: &crate::config::Config,
    rings: &mut [Ring],
    sink: S,
    exclude: Option<SocketAddr>,
    stop: &std::sync::atomic::AtomicBool,
    tick: Duration,
    block_timeout_ms: u32,
) -> (pipeline::Report, Vec<IfaceStats>) {
    use std::sync::atomic::Ordering;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    let opts = pipeline::RunOptions {
        end: vmflow_proto::EndReason::Shutdown,
        exclude,
    };
    let report = pipeline::run_with(cfg, sink, opts, |feed: &mut dyn Feed| {
        let mut last_ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut last_mono = Instant::now();
        let mut last_tick = Instant::now();
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
                feed.tick(last_ts + last_mono.elapsed().as_nanos() as u64);
                last_tick = Instant::now();
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
    let stats = rings.iter_mut().map(|r| r.kernel_stats()).collect();
    (report, stats)
}
