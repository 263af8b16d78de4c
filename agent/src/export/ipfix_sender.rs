//! One IPFIX collector, fed from a thread of its own so the engine never
//! waits on the network: the sink hands record batches to a bounded queue
//! (a full queue drops the batch and counts it), the thread turns them into
//! messages ([`IpfixExporter`]) at wall-clock export time and sends them
//! over UDP, TCP or TLS over TCP. TCP reconnects with a capped backoff; while
//! it is down the queue fills, then drops. Nothing is retried from disk:
//! that is what the mTLS export is for.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use rustls::pki_types::ServerName;
use vmflow_proto::FlowRecord;

use super::ipfix_exporter::IpfixExporter;
use super::RecordSink;
use crate::config::{IpfixExportConfig, IpfixTransport};
use crate::episode::{Backoff, Episode, Say};

/// How long a finishing sender may keep trying to deliver what is queued.
const FINISH_GRACE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the end of a TCP session waits for the collector to close its
/// side (one that reads as it should answers at once).
const CLOSE_LINGER: Duration = Duration::from_secs(3);
/// Sends without an error for this long end a run of failures.
const RECOVERED_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IpfixError {
    #[error("export.ipfix {collector}: server_name {name:?} is not a DNS name or address")]
    ServerName { collector: String, name: String },
    #[error("export.ipfix {collector}: cannot start its sender thread: {source}")]
    Thread {
        collector: String,
        #[source]
        source: io::Error,
    },
}

/// What one IPFIX export did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpfixStats {
    pub collector: String,
    pub messages: u64,
    /// Flow records in messages that were sent whole.
    pub records: u64,
    /// Messages that carried the templates (first, refreshes, new connections).
    pub template_sends: u64,
    pub send_errors: u64,
    /// Flow records never sent: a full queue, a failed send, or still queued
    /// when the run ended.
    pub dropped_records: u64,
    pub connections: u64,
}

#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    records: AtomicU64,
    template_sends: AtomicU64,
    send_errors: AtomicU64,
    dropped_records: AtomicU64,
    connections: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self, collector: &str) -> IpfixStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IpfixStats {
            collector: collector.to_string(),
            messages: g(&self.messages),
            records: g(&self.records),
            template_sends: g(&self.template_sends),
            send_errors: g(&self.send_errors),
            dropped_records: g(&self.dropped_records),
            connections: g(&self.connections),
        }
    }
}

/// One collector's sender thread. Every lane writes to it through its own
/// [`IpfixSink`], so one collector sees one exporter: one sequence of
/// records per observation domain, whatever the number of sources.
pub struct IpfixSender {
    collector: String,
    tx: Option<Sender<Vec<FlowRecord>>>,
    closing: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl IpfixSender {
    /// Starts the sender, with `tls` (read from the configured files by the
    /// caller, so a wrong certificate is an error at start) when the
    /// configuration asks for TLS.
    pub fn start(
        cfg: &IpfixExportConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<IpfixSender, IpfixError> {
        let collector = cfg.collector.clone();
        let tls = match tls {
            Some(c) => {
                let name = ServerName::try_from(cfg.server_name.clone()).map_err(|_| {
                    IpfixError::ServerName {
                        collector: collector.clone(),
                        name: cfg.server_name.clone(),
                    }
                })?;
                Some((c, name))
            }
            None => None,
        };
        let refresh = match cfg.transport {
            IpfixTransport::Udp => Some(cfg.template_refresh.duration()),
            IpfixTransport::Tcp => None,
        };
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_batches);
        let closing = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut worker = Worker {
            collector: collector.clone(),
            transport: cfg.transport,
            tls,
            exporter: IpfixExporter::new(
                cfg.observation_domain,
                cfg.mode.into(),
                cfg.max_message(),
                refresh,
            ),
            conn: None,
            pacer: Pacer::new(cfg.max_rate()),
            counters: counters.clone(),
            failures: Episode::new(Duration::from_secs(300)),
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
            retry_at: Instant::now(),
            last_failure: None,
            closing: closing.clone(),
            deadline: None,
        };
        let thread = std::thread::Builder::new()
            .name("ipfix".into())
            .spawn(move || worker.run(rx))
            .map_err(|source| IpfixError::Thread {
                collector: collector.clone(),
                source,
            })?;
        tracing::info!(
            "exporting IPFIX to {collector} over {:?} (observation domain {})",
            cfg.transport,
            cfg.observation_domain
        );
        Ok(IpfixSender {
            collector,
            tx: Some(tx),
            closing,
            counters,
            thread: Some(thread),
        })
    }

    /// A lane's way in.
    pub fn sink(&self) -> IpfixSink {
        IpfixSink {
            tx: self.tx.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Once every sink is finished: lets the thread deliver what is queued
    /// (within a grace period) and stop. IPFIX is best effort: what could
    /// not be sent is in the counts, not an error.
    pub fn finish(mut self) -> IpfixStats {
        self.stop();
        self.counters.snapshot(&self.collector)
    }

    fn stop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for IpfixSender {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The engine's side: a [`RecordSink`] that never blocks.
pub struct IpfixSink {
    tx: Option<Sender<Vec<FlowRecord>>>,
    counters: Arc<Counters>,
}

impl RecordSink for IpfixSink {
    fn write(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let queued = self
            .tx
            .as_ref()
            .is_some_and(|tx| match tx.try_send(records.to_vec()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            });
        if !queued {
            Counters::add(&self.counters.dropped_records, records.len() as u64);
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.tx.take();
        Ok(())
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn send(&mut self, m: &[u8]) -> io::Result<()> {
        match self {
            // A refusal is the ICMP answer to an earlier datagram, reported
            // here and not sent: this one goes out once more, and fails
            // only if the collector is (still) not there.
            Conn::Udp(s) => match s.send(m) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => s.send(m).map(drop),
                r => r.map(drop),
            },
            Conn::Tcp(s) => s.write_all(m),
            Conn::Tls(s) => s.write_all(m),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Udp(_) => Ok(()),
            Conn::Tcp(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }

    /// The end of the session, said as TLS says it (a plain close would
    /// look like a truncation attack to the collector), then a half-close
    /// and the collector's side read to its end: closing a socket with bytes
    /// unread (a TLS server's session tickets, anything a collector sends)
    /// makes the kernel reset the connection and throw away what it still
    /// holds to send, the session's last records.
    fn close(self) {
        let sock = match self {
            Conn::Udp(_) => return,
            Conn::Tcp(s) => s,
            Conn::Tls(mut s) => {
                s.conn.send_close_notify();
                if s.flush().is_err() {
                    return;
                }
                s.sock
            }
        };
        drain_to_end(sock, Instant::now() + CLOSE_LINGER);
    }
}

/// Half-closes `sock` and reads it until the peer closes its side or
/// `until` passes. What is still unsent then leaves after the process, as
/// with any orderly close.
fn drain_to_end(mut sock: TcpStream, until: Instant) {
    if sock.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

struct Worker {
    collector: String,
    transport: IpfixTransport,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    exporter: IpfixExporter,
    conn: Option<Conn>,
    pacer: Pacer,
    counters: Arc<Counters>,
    failures: Episode,
    backoff: Backoff,
    retry_at: Instant,
    last_failure: Option<Instant>,
    closing: Arc<AtomicBool>,
    /// Set once the sink has finished: when delivery must give up.
    deadline: Option<Instant>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Worker {
    fn run(&mut self, rx: Receiver<Vec<FlowRecord>>) {
        self.serve(rx);
        if let Some(c) = self.conn.take() {
            c.close();
        }
    }

    fn serve(&mut self, rx: Receiver<Vec<FlowRecord>>) {
        let mut out = Vec::new();
        loop {
            if self.deadline.is_none() && self.closing.load(Ordering::Relaxed) {
                self.deadline = Some(Instant::now() + FINISH_GRACE);
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                // Out of time: what is still queued is lost, and counted.
                for batch in rx.try_iter() {
                    Counters::add(&self.counters.dropped_records, batch.len() as u64);
                }
                return;
            }
            if self.conn.is_none() && !self.connect() {
                // Leave the queue alone while down: it fills, then drops.
                let wait = self.retry_at.saturating_duration_since(Instant::now());
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                continue;
            }
            let wait = self
                .exporter
                .until_refresh(now_ns())
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            match rx.recv_timeout(wait) {
                Ok(batch) => self.send(&batch, &mut out),
                Err(RecvTimeoutError::Timeout) => self.send(&[], &mut out),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Opens the transport if its backoff allows; whether it is open.
    fn connect(&mut self) -> bool {
        if Instant::now() < self.retry_at {
            return false;
        }
        match self.open() {
            Ok(c) => {
                self.conn = Some(c);
                self.exporter.new_session();
                self.backoff.reset();
                Counters::add(&self.counters.connections, 1);
                if let Some((n, over)) = self.failures.recover() {
                    tracing::info!(
                        "IPFIX collector {} reachable again after {n} failed attempts over {:.0?}",
                        self.collector,
                        over
                    );
                }
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    fn open(&self) -> io::Result<Conn> {
        let addr = resolve(&self.collector)?;
        match self.transport {
            IpfixTransport::Udp => {
                let any: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let s = UdpSocket::bind(any)?;
                s.connect(addr)?;
                Ok(Conn::Udp(s))
            }
            IpfixTransport::Tcp => {
                let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                s.set_nodelay(true)?;
                match &self.tls {
                    None => Ok(Conn::Tcp(s)),
                    Some((cfg, name)) => {
                        let c = rustls::ClientConnection::new(cfg.clone(), name.clone())
                            .map_err(io::Error::other)?;
                        Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(c, s))))
                    }
                }
            }
        }
    }

    fn failed(&mut self, e: &io::Error) {
        Counters::add(&self.counters.send_errors, 1);
        self.last_failure = Some(Instant::now());
        match self.failures.fail() {
            Say::First => tracing::warn!("IPFIX collector {}: {e}", self.collector),
            Say::Summary { count, over } => tracing::warn!(
                "IPFIX collector {}: {count} failures over {over:.0?}, the latest: {e}",
                self.collector
            ),
            Say::Nothing => {}
        }
        if self.transport == IpfixTransport::Tcp {
            self.conn = None;
            self.retry_at = Instant::now() + self.backoff.fail();
        }
    }

    fn send(&mut self, batch: &[FlowRecord], out: &mut Vec<Vec<u8>>) {
        out.clear();
        let templates = self.exporter.encode(batch, now_ns(), out);
        let Some(conn) = self.conn.as_mut() else {
            Counters::add(&self.counters.dropped_records, batch.len() as u64);
            return;
        };
        let mut sent = 0;
        let mut result = Ok(());
        for m in out.iter() {
            let wait = self.pacer.take(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            result = conn.send(m);
            if result.is_err() {
                break;
            }
            sent += 1;
        }
        if result.is_ok() {
            result = conn.flush();
        }
        Counters::add(&self.counters.messages, sent);
        if templates && sent > 0 {
            Counters::add(&self.counters.template_sends, 1);
            tracing::debug!("IPFIX templates sent to {}", self.collector);
        }
        match result {
            Ok(()) => {
                Counters::add(&self.counters.records, batch.len() as u64);
                // A datagram sent is not one received: a refused one shows
                // up at the next send. Over UDP, recovery is a quiet spell.
                let quiet = self
                    .last_failure
                    .is_none_or(|t| t.elapsed() >= RECOVERED_AFTER);
                if !quiet {
                    return;
                }
                if let Some((n, over)) = self.failures.recover() {
                    tracing::info!(
                        "IPFIX collector {} takes messages again after {n} failures over {:.0?}",
                        self.collector,
                        over
                    );
                }
            }
            Err(e) => {
                Counters::add(&self.counters.dropped_records, batch.len() as u64);
                self.failed(&e);
            }
        }
    }
}

fn resolve(collector: &str) -> io::Result<SocketAddr> {
    collector.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{collector} resolves to no address"),
        )
    })
}

/// A token bucket of messages: up to [`Pacer::BURST`] at once, then
/// `rate` per second. Sans-clock: it is told the time and says how long to
/// wait.
struct Pacer {
    rate: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Pacer {
    const BURST: f64 = 32.0;

    /// `rate` 0: never waits.
    fn new(rate: u32) -> Pacer {
        Pacer {
            rate: f64::from(rate),
            tokens: Self::BURST,
            at: None,
        }
    }

    /// Takes a token for one message at `now`: how long to wait first.
    fn take(&mut self, now: Instant) -> Duration {
        if self.rate == 0.0 {
            return Duration::ZERO;
        }
        if let Some(at) = self.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(Self::BURST);
        }
        self.at = Some(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_lets_a_burst_through_then_spaces_messages_at_its_rate() {
        let t = Instant::now();
        let mut p = Pacer::new(1000);
        for _ in 0..32 {
            assert_eq!(p.take(t), Duration::ZERO);
        }
        // The 33rd waits one interval, the 34th two (the debt adds up).
        assert_eq!(p.take(t), Duration::from_millis(1));
        assert_eq!(p.take(t), Duration::from_millis(2));
        // Time pays the debt back, and a long pause refills only a burst.
        assert_eq!(p.take(t + Duration::from_millis(3)), Duration::ZERO);
        let later = t + Duration::from_secs(60);
        for _ in 0..32 {
            assert_eq!(p.take(later), Duration::ZERO);
        }
        assert!(!p.take(later).is_zero());
        let mut free = Pacer::new(0);
        assert!((0..1000).all(|_| free.take(t).is_zero()));
    }
}
