//! The shipper: sends spooled batches to the collector over mutual TLS, keeps
//! a window of unacknowledged batches in flight, deletes batches from the
//! spool only when the collector acknowledges them, and reconnects with capped
//! exponential backoff and jitter.

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
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ShipStats {
    pub batches_sent: u64,
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
    let mut failures = 0u32;
    let mut jitter = crate::synth::Rng::new(u64::from(std::process::id()) ^ 0x9e37);
    loop {
        if *stop.borrow() {
            return stats;
        }
        let result = session(
            &opts,
            &spool,
            &new_batch,
            &mut input_done,
            &mut stop,
            &mut stats,
        )
        .await;
        match result {
            Ok(()) => return stats,
            Err(e) => {
                stats.connect_failures += 1;
                failures = failures.saturating_add(1);
                let exp = opts
                    .backoff_base
                    .saturating_mul(1u32 << failures.min(16))
                    .min(opts.backoff_cap);
                // Full jitter: agents that lost the collector together do not
                // come back in lockstep.
                let wait = exp.mul_f64(0.5 + 0.5 * jitter.unit());
                tracing::warn!(
                    "collector {}: {e}; retrying in {:.1} s",
                    opts.collector,
                    wait.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return stats,
                }
            }
        }
        if stats.batches_acked > 0 {
            failures = 0;
        }
    }
}

fn pending(spool: &Arc<Mutex<Spool>>) -> bool {
    spool
        .lock()
        .map(|s| s.next_after(0).is_some())
        .unwrap_or(false)
}

async fn session(
    opts: &ShipOptions,
    spool: &Arc<Mutex<Spool>>,
    new_batch: &Notify,
    input_done: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
    stats: &mut ShipStats,
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
    let mut out = Vec::new();
    encode_frame(
        &Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            agent_id: opts.agent_id.clone(),
            host: opts.host.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["cols1+zstd".into()],
            stream: opts.stream.clone(),
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
        s.ack(last_seq).map_err(|e| format!("spool: {e}"))?;
        s.skip_to(last_seq);
    }
    tracing::info!(
        "connected to collector {}; it holds batches up to {last_seq}",
        opts.collector
    );
    let mut sent = last_seq;
    let mut in_flight = 0usize;
    let mut last_ack = Instant::now();
    let mut heartbeat = tokio::time::interval(opts.heartbeat);
    loop {
        // Fill the window.
        while in_flight < opts.window {
            let next = {
                let s = spool.lock().map_err(|_| "spool lock poisoned")?;
                match s.next_after(sent) {
                    Some(seq) => s
                        .read(seq)
                        .map_err(|e| format!("spool: {e}"))?
                        .map(|b| (seq, b)),
                    None => None,
                }
            };
            let Some((seq, (records, source_drops, block))) = next else {
                break;
            };
            out.clear();
            encode_frame(
                &Frame::Batch(Batch {
                    seq,
                    records,
                    block,
                    source_drops,
                }),
                &mut out,
            );
            tls.write_all(&out)
                .await
                .map_err(|e| format!("send: {e}"))?;
            sent = seq;
            in_flight += 1;
            stats.batches_sent += 1;
        }
        if in_flight == 0 && *input_done.borrow() && !pending(spool) {
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
                            let mut s = spool.lock().map_err(|_| "spool lock poisoned")?;
                            let before = s.acked();
                            s.ack(a.seq).map_err(|e| format!("spool: {e}"))?;
                            let newly = s.acked().saturating_sub(before);
                            stats.batches_acked += newly;
                            in_flight = in_flight.saturating_sub(newly as usize);
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
            _ = tokio::time::sleep_until(ack_deadline), if in_flight > 0 => {
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
