//! The shipper: sends spooled batches to the collector over mutual TLS, keeps
//! a window of unacknowledged batches in flight, deletes batches from the
//! spool only when the collector acknowledges them, and reconnects with capped
//! exponential backoff and jitter.
//!
//! A batch is sent only once it is durable in the spool (see `spool`): the
//! shipper syncs what the engine appended before sending it. Each batch names
//! the one it follows, so batches the spool dropped are a declared gap at the
//! collector, never a silent one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::{timeout, Instant};
use tokio_rustls::TlsConnector;
use vmflow_proto::{
    check_version, encode_frame, Batch, Frame, FrameDecoder, Heartbeat, Hello, PROTOCOL_VERSION,
};

use super::spool::Spool;
use crate::episode::{Backoff, Episode, Say};

#[derive(Clone)]
pub struct ShipOptions {
    /// `host:port` of the collector.
    pub collector: String,
    /// Name the collector's certificate must carry.
    pub server_name: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub agent_id: String,
    pub host: String,
    /// This connection's record stream ("" for an agent's only one).
    pub stream: String,
    /// Unacknowledged batches in flight.
    pub window: usize,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// A connection that acknowledges nothing for this long is dropped.
    pub ack_timeout: Duration,
    pub heartbeat: Duration,
    /// A session that lasted this long counts as progress even if it had
    /// nothing to send (backoff starts small again).
    pub healthy_after: Duration,
}

impl ShipOptions {
    pub fn new(collector: String, server_name: String, tls: Arc<rustls::ClientConfig>) -> Self {
        ShipOptions {
            collector,
            server_name,
            tls,
            agent_id: String::new(),
            host: String::new(),
            stream: String::new(),
            window: 32,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            healthy_after: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ShipStats {
    pub batches_sent: u64,
    /// Batches of the spool the collector acknowledged during this run.
    pub batches_acked: u64,
    pub connections: u64,
    pub connect_failures: u64,
}

/// Runs until `drained` says the input is over and the spool holds nothing
/// unacknowledged, or until `stop` fires. Never gives up on its own.
pub async fn ship(
    opts: ShipOptions,
    spool: Arc<Mutex<Spool>>,
    new_batch: Arc<Notify>,
    mut input_done: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> ShipStats {
    let mut stats = ShipStats::default();
    // The first retry waits twice the base.
    let mut backoff = Backoff::new(opts.backoff_base * 2, opts.backoff_cap);
    let mut outage = Episode::new(Duration::from_secs(300));
    let mut jitter = crate::rng::Rng::new(u64::from(std::process::id()) ^ 0x9e37);
    loop {
        if *stop.borrow() {
            return stats;
        }
        let mut progress = false;
        let started = Instant::now();
        let result = session(
            &opts,
            &spool,
            &new_batch,
            &mut input_done,
            &mut stop,
            &mut stats,
            &mut progress,
        )
        .await;
        // Only a session that moved data (or stayed up) resets the backoff:
        // a collector that accepts and then fails every time must not be
        // hammered.
        if progress || started.elapsed() >= opts.healthy_after {
            backoff.reset();
            if let Some((n, t)) = outage.recover() {
                tracing::info!(
                    "collector {}: delivering again after {n} failed attempts over {:.0} s",
                    opts.collector,
                    t.as_secs_f64()
                );
            }
        }
        match result {
            Ok(()) => return stats,
            Err(e) => {
                stats.connect_failures += 1;
                let exp = backoff.fail();
                // Full jitter: agents that lost the collector together do not
                // come back in lockstep.
                let wait = exp.mul_f64(0.5 + 0.5 * jitter.unit());
                match outage.fail() {
                    Say::First => tracing::warn!(
                        "collector {}: {e}; retrying with backoff (further failures are summarised every 5 minutes)",
                        opts.collector
                    ),
                    Say::Summary { count, over } => tracing::warn!(
                        "collector {}: still failing: {count} attempts in {} s; last: {e}",
                        opts.collector,
                        over.as_secs()
                    ),
                    Say::Nothing => tracing::debug!(
                        "collector {}: {e}; retrying in {:.1} s",
                        opts.collector,
                        wait.as_secs_f64()
                    ),
                }
                // While the collector is away the engine keeps spooling: keep
                // that durable too.
                if let Err(e) = sync_spool(&spool).await {
                    tracing::debug!("{e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return stats,
                }
            }
        }
    }
}

fn pending(spool: &Arc<Mutex<Spool>>) -> bool {
    spool.lock().map(|s| s.stats().batches > 0).unwrap_or(false)
}

/// Makes every appended batch durable, without holding the spool while the
/// disk works.
async fn sync_spool(spool: &Arc<Mutex<Spool>>) -> Result<(), String> {
    let job = spool.lock().map_err(|_| "spool lock poisoned")?.sync_job();
    let Some(job) = job else { return Ok(()) };
    let job = tokio::task::spawn_blocking(move || job.run().map(|_| job))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("spool: {e}"))?;
    spool
        .lock()
        .map_err(|_| "spool lock poisoned")?
        .synced_through(job.upto);
    Ok(())
}

async fn session(
    opts: &ShipOptions,
    spool: &Arc<Mutex<Spool>>,
    new_batch: &Notify,
    input_done: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
    stats: &mut ShipStats,
    progress: &mut bool,
) -> Result<(), String> {
    let tcp = timeout(Duration::from_secs(10), TcpStream::connect(&opts.collector))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name =
        ServerName::try_from(opts.server_name.clone()).map_err(|e| format!("server name: {e}"))?;
    let mut tls = timeout(
        Duration::from_secs(10),
        TlsConnector::from(opts.tls.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_string())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    stats.connections += 1;
    let epoch = spool.lock().map_err(|_| "spool lock poisoned")?.epoch();
    let mut out = Vec::new();
    encode_frame(
        &Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            agent_id: opts.agent_id.clone(),
            host: opts.host.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["cols1+zstd".into()],
            stream: opts.stream.clone(),
            epoch,
        }),
        &mut out,
    );
    tls.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut dec = FrameDecoder::default();
    let mut buf = vec![0u8; 16 * 1024];
    let ack = loop {
        if let Some(f) = dec.next_frame().map_err(|e| e.to_string())? {
            break f;
        }
        let n = timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .map_err(|_| "no hello_ack in time".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("collector closed the connection during hello".into());
        }
        dec.push(&buf[..n]);
    };
    let last_seq = match ack {
        Frame::HelloAck(a) => {
            check_version(a.version).map_err(|e| e.to_string())?;
            a.last_seq
        }
        Frame::Refused(r) => return Err(format!("refused: {}", r.reason)),
        _ => return Err("expected hello_ack".into()),
    };
    {
        let mut s = spool.lock().map_err(|_| "spool lock poisoned")?;
        let newly = s.collector_holds(last_seq);
        stats.batches_acked += newly;
        *progress |= newly > 0;
    }
    tracing::info!(
        "connected to collector {}; it holds batches up to {last_seq}",
        opts.collector
    );
    // The last batch the collector has (or will have, in order): the next
    // one names it, so the collector can tell a declared gap from a lost batch.
    let mut last_sent = last_seq;
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let mut last_ack = Instant::now();
    let mut heartbeat = tokio::time::interval(opts.heartbeat);
    let mut sync_failing = Episode::new(Duration::from_secs(300));
    loop {
        // What the engine appended becomes durable before it can be sent.
        match sync_spool(spool).await {
            Ok(()) => {
                if sync_failing.recover().is_some() {
                    tracing::info!("spool syncs again");
                }
            }
            Err(e) => {
                if let Say::First = sync_failing.fail() {
                    tracing::error!("{e}; unsynced batches wait (retrying)");
                }
            }
        }
        // Fill the window.
        while in_flight.len() < opts.window {
            let next = {
                let mut s = spool.lock().map_err(|_| "spool lock poisoned")?;
                match s.next_after(last_sent) {
                    // A damaged entry reads as None: counted by the spool,
                    // skipped here, declared to the collector by `follows`.
                    Some(seq) => {
                        let b = s.read(seq).map_err(|e| format!("spool: {e}"))?;
                        if b.is_some() {
                            s.declare_gap(last_sent, seq);
                        }
                        Some((seq, b))
                    }
                    None => None,
                }
            };
            let Some((seq, stored)) = next else {
                break;
            };
            let Some(b) = stored else {
                continue;
            };
            out.clear();
            encode_frame(
                &Frame::Batch(Batch {
                    seq,
                    records: b.records,
                    block: b.block,
                    source_drops: b.source_drops,
                    follows: Some(last_sent),
                }),
                &mut out,
            );
            tls.write_all(&out)
                .await
                .map_err(|e| format!("send: {e}"))?;
            if in_flight.is_empty() {
                // The ack clock runs from the oldest unacknowledged batch,
                // not from an idle stretch before it.
                last_ack = Instant::now();
            }
            last_sent = seq;
            in_flight.push_back(seq);
            stats.batches_sent += 1;
        }
        if in_flight.is_empty() && *input_done.borrow() && !pending(spool) {
            spool
                .lock()
                .map_err(|_| "spool lock poisoned")?
                .settle_missing();
            let _ = tls.shutdown().await;
            return Ok(());
        }
        let ack_deadline = last_ack + opts.ack_timeout;
        tokio::select! {
            r = tls.read(&mut buf) => {
                let n = r.map_err(|e| format!("receive: {e}"))?;
                if n == 0 {
                    return Err("collector closed the connection".into());
                }
                dec.push(&buf[..n]);
                while let Some(f) = dec.next_frame().map_err(|e| e.to_string())? {
                    match f {
                        Frame::Ack(a) => {
                            // A failing ledger write only delays freeing
                            // space; it never ends the session.
                            let newly = spool.lock().map_err(|_| "spool lock poisoned")?.ack(a.seq);
                            stats.batches_acked += newly;
                            *progress |= newly > 0;
                            while in_flight.front().is_some_and(|&s| s <= a.seq) {
                                in_flight.pop_front();
                            }
                            last_ack = Instant::now();
                        }
                        Frame::Heartbeat(_) => {}
                        Frame::Refused(r) => return Err(format!("refused: {}", r.reason)),
                        _ => return Err("unexpected frame from collector".into()),
                    }
                }
            }
            _ = new_batch.notified() => {}
            _ = input_done.changed() => {}
            _ = stop.changed() => return Ok(()),
            _ = tokio::time::sleep_until(ack_deadline), if !in_flight.is_empty() => {
                return Err(format!("no acknowledgement for {} s", opts.ack_timeout.as_secs()));
            }
            _ = heartbeat.tick() => {
                out.clear();
                encode_frame(&Frame::Heartbeat(Heartbeat {}), &mut out);
                tls.write_all(&out).await.map_err(|e| format!("send: {e}"))?;
            }
        }
    }
}
