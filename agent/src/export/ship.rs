//! The shipper: sends spooled batches to the collector over mutual TLS, keeps
//! a window of unacknowledged batches in flight, deletes batches from the
//! spool only when the collector acknowledges them, and reconnects with capped
//! exponential backoff and jitter.
//!
//! A batch is sent only once it is durable in the spool (see `spool`): the
//! shipper syncs what the engine appended before sending it. Each batch names
//! the one it follows, so batches the spool dropped are a declared gap at the
//! collector, never a silent one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::{timeout, Instant};
use tokio_rustls::TlsConnector;
use vmflow_proto::session::{AgentConfig, AgentEvent, AgentSession};
use vmflow_proto::{Batch, Hello, SessionError, PROTOCOL_VERSION};

use super::misfit::{misconfigured, TrustFiles};
use super::spool::{Spool, SpoolError};
use crate::episode::{Backoff, Episode, Say};

#[derive(Clone)]
pub struct ShipOptions {
    /// `host:port` of the collector, or several separated by commas: a
    /// failed connection moves on to the next (collectors that share their
    /// state, e.g. in front of one JetStream stream).
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
    /// The CA and certificate files, named when TLS fails because of them.
    pub trust: TrustFiles,
    /// Where the shipper shows how it is doing while it runs.
    pub live: Arc<ShipLive>,
}

/// The shipper's counts and connection state while it runs (the metrics
/// endpoint, the stats line, /healthz), updated per batch and per
/// connection, never per record.
#[derive(Debug, Default)]
pub struct ShipLive {
    batches_sent: AtomicU64,
    batches_acked: AtomicU64,
    connections: AtomicU64,
    connect_failures: AtomicU64,
    connected: AtomicBool,
    /// Failed attempts since the last connection that was established.
    failing: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A copy of [`ShipLive`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShipNow {
    pub stats: ShipStats,
    pub connected: bool,
    pub failing: u64,
    pub last_error: Option<String>,
}

impl ShipLive {
    fn set(&self, s: &ShipStats) {
        self.batches_sent.store(s.batches_sent, Relaxed);
        self.batches_acked.store(s.batches_acked, Relaxed);
        self.connections.store(s.connections, Relaxed);
        self.connect_failures.store(s.connect_failures, Relaxed);
    }

    fn up(&self) {
        self.connected.store(true, Relaxed);
        self.failing.store(0, Relaxed);
    }

    fn down(&self, why: Option<String>) {
        self.connected.store(false, Relaxed);
        if let Some(w) = why {
            self.failing.fetch_add(1, Relaxed);
            if let Ok(mut g) = self.last_error.lock() {
                *g = Some(w);
            }
        }
    }

    pub fn now(&self) -> ShipNow {
        ShipNow {
            stats: ShipStats {
                batches_sent: self.batches_sent.load(Relaxed),
                batches_acked: self.batches_acked.load(Relaxed),
                connections: self.connections.load(Relaxed),
                connect_failures: self.connect_failures.load(Relaxed),
            },
            connected: self.connected.load(Relaxed),
            failing: self.failing.load(Relaxed),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }
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
            trust: TrustFiles::default(),
            live: Arc::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShipStats {
    pub batches_sent: u64,
    /// Batches of the spool the collector acknowledged during this run.
    pub batches_acked: u64,
    pub connections: u64,
    pub connect_failures: u64,
}

/// Why a connection to the collector ended: the collector's address and
/// what went wrong. Displays as the shipper logs it.
#[derive(Debug, thiserror::Error)]
#[error("collector {collector}: {cause}")]
pub struct ShipError {
    pub collector: String,
    pub cause: ShipFailure,
}

/// What ended a connection to the collector (or, for the spool variants, a
/// sync between connections).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShipFailure {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("server name: {0}")]
    ServerName(#[source] rustls::pki_types::InvalidDnsNameError),
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("TLS handshake: {0}")]
    Handshake(#[source] std::io::Error),
    /// Writing the hello failed.
    #[error("{0}")]
    SendHello(#[source] std::io::Error),
    /// Reading the answer to hello failed.
    #[error("{0}")]
    ReceiveHello(#[source] std::io::Error),
    /// Nothing from the collector for 10 s while waiting for `hello_ack`.
    #[error("no hello_ack in time")]
    NoHelloAck,
    #[error("collector closed the connection during hello")]
    ClosedDuringHello,
    #[error("send: {0}")]
    Send(#[source] std::io::Error),
    #[error("receive: {0}")]
    Receive(#[source] std::io::Error),
    #[error("collector closed the connection")]
    Closed,
    /// The protocol ended the session (a refusal, an ack timeout, a frame
    /// out of place, another version).
    #[error(transparent)]
    Protocol(#[from] SessionError),
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("spool lock poisoned")]
    SpoolPoisoned,
    /// The blocking task that syncs the spool did not finish.
    #[error("{0}")]
    SyncTask(#[source] tokio::task::JoinError),
}

impl ShipFailure {
    /// The socket's error, for the failures that have one (TLS failures
    /// arrive as one, with rustls' error inside).
    fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            ShipFailure::Handshake(e)
            | ShipFailure::SendHello(e)
            | ShipFailure::ReceiveHello(e)
            | ShipFailure::Send(e)
            | ShipFailure::Receive(e) => Some(e),
            _ => None,
        }
    }
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
    // The configuration error told during this outage: told once, as an
    // error, instead of a warning per attempt.
    let mut told: Option<String> = None;
    let mut jitter = crate::rng::Rng::new(u64::from(std::process::id()) ^ 0x9e37);
    let addrs: Vec<String> = crate::config::collector_list(&opts.collector)
        .into_iter()
        .map(str::to_string)
        .collect();
    // Agents of one fleet start at different collectors of the list.
    let mut at = if addrs.len() > 1 {
        (jitter.unit() * addrs.len() as f64) as usize % addrs.len()
    } else {
        0
    };
    loop {
        if *stop.borrow() {
            return stats;
        }
        let mut progress = false;
        let started = Instant::now();
        let addr = addrs.get(at).unwrap_or(&opts.collector);
        // This connection's collector, one of the list.
        let one = ShipOptions {
            collector: addr.clone(),
            ..opts.clone()
        };
        let result = session(
            &one,
            &spool,
            &new_batch,
            &mut input_done,
            &mut stop,
            &mut stats,
            &mut progress,
        )
        .await
        .map_err(|cause| ShipError {
            collector: addr.clone(),
            cause,
        });
        opts.live.down(result.as_ref().err().map(|e| e.to_string()));
        // Only a session that moved data (or stayed up) resets the backoff:
        // a collector that accepts and then fails every time must not be
        // hammered.
        if progress || started.elapsed() >= opts.healthy_after {
            backoff.reset();
            told = None;
            if let Some((n, t)) = outage.recover() {
                tracing::info!(
                    "collector {addr}: delivering again after {n} failed attempts over {:.0} s",
                    t.as_secs_f64()
                );
            }
        }
        match result {
            Ok(()) => return stats,
            Err(e) => {
                stats.connect_failures += 1;
                opts.live.set(&stats);
                // The next attempt goes to the next collector of the list.
                at = (at + 1) % addrs.len().max(1);
                let exp = backoff.fail();
                // Full jitter: agents that lost the collector together do not
                // come back in lockstep.
                let wait = exp.mul_f64(0.5 + 0.5 * jitter.unit());
                let say = outage.fail();
                let misfit = e
                    .cause
                    .io_error()
                    .and_then(|io| misconfigured(io, &opts.server_name, &opts.trust));
                match (misfit, say) {
                    (Some(m), _) if told.as_ref() != Some(&m) => {
                        tracing::error!(
                            "collector {}: {m} ({}); retrying with backoff, this is told once per outage",
                            e.collector,
                            e.cause
                        );
                        told = Some(m);
                    }
                    (Some(_), _) => tracing::debug!("{e}; retrying in {:.1} s", wait.as_secs_f64()),
                    (None, Say::First) => tracing::warn!(
                        "{e}; retrying with backoff (further failures are summarised every 5 minutes)"
                    ),
                    (None, Say::Summary { count, over }) => tracing::warn!(
                        "collector {}: still failing: {count} attempts in {} s; last: {}",
                        e.collector,
                        over.as_secs(),
                        e.cause
                    ),
                    (None, Say::Nothing) => {
                        tracing::debug!("{e}; retrying in {:.1} s", wait.as_secs_f64())
                    }
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

fn lock(spool: &Mutex<Spool>) -> Result<MutexGuard<'_, Spool>, ShipFailure> {
    spool.lock().map_err(|_| ShipFailure::SpoolPoisoned)
}

/// Makes every appended batch durable, without holding the spool while the
/// disk works.
async fn sync_spool(spool: &Arc<Mutex<Spool>>) -> Result<(), ShipFailure> {
    let job = lock(spool)?.sync_job();
    let Some(job) = job else { return Ok(()) };
    let job = tokio::task::spawn_blocking(move || job.run().map(|_| job))
        .await
        .map_err(ShipFailure::SyncTask)??;
    lock(spool)?.synced_through(job.upto);
    Ok(())
}

/// One connection: TCP, TLS, then an [`AgentSession`] driven until the
/// input is done and everything is acknowledged (`Ok`), `stop` fires
/// (`Ok`), or something fails. The protocol's decisions (what `follows`
/// says, when the window is full, when an ack is overdue, when a heartbeat
/// is due) are the session's; the spool, the socket and the clock are here.
async fn session(
    opts: &ShipOptions,
    spool: &Arc<Mutex<Spool>>,
    new_batch: &Notify,
    input_done: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
    stats: &mut ShipStats,
    progress: &mut bool,
) -> Result<(), ShipFailure> {
    let tcp = timeout(Duration::from_secs(10), TcpStream::connect(&opts.collector))
        .await
        .map_err(|_| ShipFailure::ConnectTimeout)?
        .map_err(ShipFailure::Connect)?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(opts.server_name.clone()).map_err(ShipFailure::ServerName)?;
    let mut tls = timeout(
        Duration::from_secs(10),
        TlsConnector::from(opts.tls.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| ShipFailure::HandshakeTimeout)?
    .map_err(ShipFailure::Handshake)?;
    stats.connections += 1;
    let epoch = lock(spool)?.epoch();
    let config = AgentConfig {
        hello: Hello {
            version: PROTOCOL_VERSION,
            agent_id: opts.agent_id.clone(),
            host: opts.host.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["cols1+zstd".into()],
            stream: opts.stream.clone(),
            epoch,
        },
        window: opts.window,
        ack_timeout: opts.ack_timeout,
        heartbeat: opts.heartbeat,
    };
    let mut s = AgentSession::new(config, Instant::now().into_std());
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    tls.write_all(&out).await.map_err(ShipFailure::SendHello)?;
    let mut buf = vec![0u8; 16 * 1024];
    let last_seq = loop {
        match s.poll_event() {
            Some(AgentEvent::Connected { last_seq }) => break last_seq,
            Some(AgentEvent::Lost(e)) => return Err(e.into()),
            // (No ack comes before hello_ack: the session ends first.)
            Some(AgentEvent::Acked { .. }) => continue,
            None => {}
        }
        let n = timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .map_err(|_| ShipFailure::NoHelloAck)?
            .map_err(ShipFailure::ReceiveHello)?;
        if n == 0 {
            return Err(ShipFailure::ClosedDuringHello);
        }
        s.handle_input(&buf[..n], Instant::now().into_std());
    };
    {
        let mut sp = lock(spool)?;
        let newly = sp.collector_holds(last_seq);
        stats.batches_acked += newly;
        *progress |= newly > 0;
    }
    opts.live.set(stats);
    opts.live.up();
    tracing::info!(
        "connected to collector {}; it holds batches up to {last_seq}",
        opts.collector
    );
    // Whatever came with hello_ack (a correct collector sends nothing more
    // before it has a batch).
    on_events(&mut s, &opts.live, spool, stats, progress)?;
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
        while s.can_send() {
            let last_sent = s.last_sent();
            let next = {
                let mut sp = lock(spool)?;
                match sp.next_after(last_sent) {
                    // A damaged entry reads as None: counted by the spool,
                    // skipped here, declared to the collector by `follows`.
                    Some(seq) => {
                        let b = sp.read(seq)?;
                        if b.is_some() {
                            sp.declare_gap(last_sent, seq);
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
            let batch = Batch {
                seq,
                records: b.records,
                block: b.block,
                source_drops: b.source_drops,
                follows: None,
            };
            // (Cannot be refused: the window had room and nothing came in.)
            if s.send_batch(batch, Instant::now().into_std()).is_err() {
                break;
            }
            out.clear();
            s.poll_transmit(&mut out);
            tls.write_all(&out).await.map_err(ShipFailure::Send)?;
            stats.batches_sent += 1;
            opts.live.set(stats);
        }
        if s.is_idle() && *input_done.borrow() && !pending(spool) {
            lock(spool)?.settle_missing();
            let _ = tls.shutdown().await;
            return Ok(());
        }
        // The next heartbeat, or the ack deadline while batches are in flight.
        let timer = s.poll_timeout().map(Instant::from_std);
        tokio::select! {
            r = tls.read(&mut buf) => {
                let n = r.map_err(ShipFailure::Receive)?;
                if n == 0 {
                    return Err(ShipFailure::Closed);
                }
                s.handle_input(&buf[..n], Instant::now().into_std());
                on_events(&mut s, &opts.live, spool, stats, progress)?;
            }
            _ = new_batch.notified() => {}
            _ = input_done.changed() => {}
            _ = stop.changed() => return Ok(()),
            _ = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                // The timer fired: its time has come, even if the clock
                // reads a hair earlier.
                let now = timer.map_or_else(Instant::now, |t| t.max(Instant::now()));
                s.handle_timeout(now.into_std());
                on_events(&mut s, &opts.live, spool, stats, progress)?;
                out.clear();
                s.poll_transmit(&mut out);
                if !out.is_empty() {
                    tls.write_all(&out).await.map_err(ShipFailure::Send)?;
                }
            }
        }
    }
}

/// Acts on what the session reports: acks free the spool, the end of the
/// session ends the connection.
fn on_events(
    s: &mut AgentSession,
    live: &ShipLive,
    spool: &Mutex<Spool>,
    stats: &mut ShipStats,
    progress: &mut bool,
) -> Result<(), ShipFailure> {
    while let Some(event) = s.poll_event() {
        match event {
            AgentEvent::Acked { seq } => {
                // A failing ledger write only delays freeing space; it
                // never ends the session.
                let newly = lock(spool)?.ack(seq);
                stats.batches_acked += newly;
                *progress |= newly > 0;
                live.set(stats);
            }
            AgentEvent::Lost(e) => return Err(e.into()),
            // Reported once, before the session's first batch.
            AgentEvent::Connected { .. } => {}
        }
    }
    Ok(())
}
