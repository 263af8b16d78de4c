//! One lane: a record stream from the engine to the collector. The engine
//! writes batches into the lane's spool through its sink; the shipper sends
//! them once durable and frees them once acknowledged. Every source kind
//! (capture files, live capture, each followed folder or container) runs
//! through one of these.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::ExportConfig;
use crate::export::batcher::SpoolSink;
use crate::export::ship::{self, ShipLive, ShipOptions, ShipStats};
use crate::export::spool::{Spool, SpoolStats};
use crate::metrics::{Board, LaneView};

pub struct Lane {
    rt: Handle,
    spool: Arc<Mutex<Spool>>,
    notify: Arc<Notify>,
    done: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    shipper: JoinHandle<ShipStats>,
    batch_records: usize,
    batch_age: Duration,
    stream: String,
    ship_live: Arc<ShipLive>,
    /// Records an earlier run had already spooled: the sink skips them.
    pub resumed_after: u64,
}

impl Lane {
    /// Starts shipping `spool` (its stream already settled) to the collector
    /// as `stream` ("" for the agent's only one).
    pub fn start(
        rt: &Handle,
        x: &ExportConfig,
        tls: Arc<rustls::ClientConfig>,
        stream: &str,
        spool: Spool,
        resumed_after: u64,
    ) -> Lane {
        let spool = Arc::new(Mutex::new(spool));
        let notify = Arc::new(Notify::new());
        let (done, done_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let opts = ship_options(x, tls, stream);
        let ship_live = opts.live.clone();
        let shipper = rt.spawn(ship::ship(
            opts,
            spool.clone(),
            notify.clone(),
            done_rx,
            stop_rx,
        ));
        Lane {
            rt: rt.clone(),
            spool,
            notify,
            done,
            stop,
            shipper,
            batch_records: x.batch_records,
            batch_age: x.batch_age.duration(),
            stream: stream.to_string(),
            ship_live,
            resumed_after,
        }
    }

    /// Shows this lane's spool and shipper on `board` (metrics, stats
    /// line, /healthz), and its spool directory among those that must
    /// take writes.
    pub fn show_on(&self, board: &Board, spool_dir: &std::path::Path) {
        board.lane(LaneView {
            stream: self.stream.clone(),
            spool: self.spool.clone(),
            ship: self.ship_live.clone(),
        });
        board.health.writable("spool", spool_dir);
    }

    /// Where the engine's records go: batches into the spool, the shipper
    /// woken for each.
    pub fn sink(&self) -> SpoolSink {
        let mut sink = SpoolSink::new(
            self.spool.clone(),
            self.notify.clone(),
            self.batch_records,
            self.batch_age,
        );
        sink.set_skip(self.resumed_after);
        sink
    }

    /// The source has ended: the shipper gets `grace` to deliver the rest,
    /// then stops; what is unacknowledged stays in the spool.
    pub fn finish_within(self, grace: Duration) -> (ShipStats, SpoolStats) {
        let Lane {
            rt,
            spool,
            done,
            stop,
            mut shipper,
            ..
        } = self;
        let _ = done.send(true);
        let early = rt.block_on(async { tokio::time::timeout(grace, &mut shipper).await });
        let _ = stop.send(true);
        // A finished JoinHandle must not be awaited again: keep its result.
        let ship = match early {
            Ok(r) => r.unwrap_or_default(),
            Err(_) => rt.block_on(async { shipper.await.unwrap_or_default() }),
        };
        (ship, stats(&spool))
    }

    /// The source has ended: ship until the collector holds everything, or
    /// until `signalled` (the rest stays in the spool).
    pub fn finish_when_delivered(self, signalled: Arc<AtomicBool>) -> (ShipStats, SpoolStats) {
        let Lane {
            rt,
            spool,
            done,
            stop,
            shipper,
            ..
        } = self;
        let _ = done.send(true);
        let stop_on_signal = rt.spawn(async move {
            while !signalled.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::info!("stopping: unacknowledged batches stay in the spool");
            let _ = stop.send(true);
        });
        let ship = rt.block_on(async { shipper.await.unwrap_or_default() });
        stop_on_signal.abort();
        (ship, stats(&spool))
    }
}

fn stats(spool: &Mutex<Spool>) -> SpoolStats {
    spool.lock().map(|s| s.stats()).unwrap_or_default()
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
    opts.trust =
        crate::export::misfit::TrustFiles::new(&x.ca, crate::tls::cert_names(&x.ca), &x.cert);
    opts
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
