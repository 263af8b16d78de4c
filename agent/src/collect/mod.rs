//! `vmflow collect`: accepts agents over mutual TLS, writes their records
//! durably (see [`store`]) and acknowledges them. Each connection is its own
//! task; a bad client (wrong certificate, plaintext, garbage, oversized frames,
//! a slow trickle) is closed with a logged reason and nobody else notices.
//!
//! Nobody can take the collector down from the network:
//! - a failing `accept` (out of descriptors, say) backs off and goes on;
//! - connections are capped (`max_connections`, below the descriptor limit);
//!   beyond it new ones wait in the kernel's backlog;
//! - connections that have not yet proved who they are (TLS handshake and
//!   `hello`, within `handshake_timeout`) hold one of `max_handshakes` slots;
//!   when those are taken, new connections are closed at once, so a flood of
//!   unauthenticated sockets cannot crowd out the agents;
//! - frames are buffered only against a budget shared by all connections
//!   (`frame_budget`), and groups of batches between decoding and their
//!   commit are capped across connections (the back end's), so memory
//!   stays bounded whatever the agents send.
//!
//! A connection keeps up to four groups in flight: it reads and submits the
//! next groups while the back end makes the one before them durable, and
//! acknowledges each group, in order, once its commit has returned.

mod error;
pub mod files;
pub mod jetstream;
pub mod live;
pub mod names;
pub mod sink;
pub mod store;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout_at, Instant};
use tokio_rustls::TlsAcceptor;
use vmflow_proto::session::{CollectorEvent, CollectorSession};
use vmflow_proto::SessionError;

use crate::disk::SharedFs;
use crate::episode::{Backoff, Episode, Say};
pub use error::{
    ConnectionError, ConnectionFailure, OpenError, ReadError, Refusal, ServeError, StoreFailure,
};
use sink::{Reject, Sink};
use store::{BatchInfo, Outcome};

#[derive(Clone)]
pub struct CollectorOptions {
    pub tls: Arc<rustls::ServerConfig>,
    pub out: PathBuf,
    pub fs: SharedFs,
    /// TLS handshake plus `hello` must finish within this.
    pub handshake_timeout: Duration,
    /// A connection with no complete frame for this long is closed; so is one
    /// whose current frame has been arriving for this long (slow trickle).
    pub idle_timeout: Duration,
    pub max_frame: usize,
    /// Connections at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Connections still proving who they are; more are closed at once.
    pub max_handshakes: usize,
    /// Bytes of frames buffered across all connections.
    pub frame_budget: usize,
    /// Where batches go; `None`: the file store in `out`.
    pub sink: Option<Arc<dyn Sink>>,
    /// How the file store writes records.
    pub store: store::StoreFormat,
    /// Where the collector shows what it is doing (metrics, stats line).
    pub live: Arc<live::CollectLive>,
}

impl CollectorOptions {
    pub fn new(tls: Arc<rustls::ServerConfig>, out: PathBuf) -> Self {
        CollectorOptions {
            tls,
            out,
            fs: crate::disk::real(),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_frame: vmflow_proto::MAX_FRAME,
            max_connections: default_max_connections(),
            max_handshakes: 64,
            frame_budget: 64 << 20,
            sink: None,
            store: store::StoreFormat::default(),
            live: Arc::default(),
        }
    }
}

/// Every connection holds a descriptor: stay below the process's limit, with
/// room for the store's files, the listener and the runtime.
pub fn default_max_connections() -> usize {
    // `None` is no limit (RLIM_INFINITY): the cap applies.
    let cur = crate::platform::max_open_files().unwrap_or(u64::MAX);
    (cur.min(1 << 20) as usize)
        .saturating_sub(64)
        .clamp(16, 65_536)
}

/// Frames up to this size need no share of the budget (one read's worth).
const FREE_FRAME: usize = 64 << 10;

struct Shared {
    opts: CollectorOptions,
    acceptor: TlsAcceptor,
    sink: Arc<dyn Sink>,
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    /// The frame budget in KiB.
    budget: Arc<Semaphore>,
}

/// Serves until the task is dropped. Connections run as independent tasks.
pub async fn serve(listener: TcpListener, opts: CollectorOptions) -> Result<(), ServeError> {
    let sink = match &opts.sink {
        Some(s) => s.clone(),
        None => {
            opts.fs
                .create_dir_all(&opts.out)
                .and_then(|_| opts.fs.restrict(&opts.out))
                .map_err(|source| ServeError {
                    out: opts.out.clone(),
                    source,
                })?;
            Arc::new(files::FileSink::new(
                opts.out.clone(),
                opts.fs.clone(),
                opts.store,
            ))
        }
    };
    let budget_kib = (opts.frame_budget.max(opts.max_frame + 4) >> 10) + 1;
    let sh = Arc::new(Shared {
        acceptor: TlsAcceptor::from(opts.tls.clone()),
        sink,
        connections: Arc::new(Semaphore::new(opts.max_connections.max(1))),
        handshakes: Arc::new(Semaphore::new(opts.max_handshakes.max(1))),
        budget: Arc::new(Semaphore::new(budget_kib.min(u32::MAX as usize))),
        opts,
    });
    let mut accept_errors = Episode::new(Duration::from_secs(60));
    let mut accept_backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    let mut at_limit = Episode::new(Duration::from_secs(60));
    let mut busy = Episode::new(Duration::from_secs(60));
    loop {
        let permit = match sh.connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if let Say::First = at_limit.fail() {
                    tracing::warn!(
                        "{} connections open (the limit): new ones wait in the listen backlog",
                        sh.opts.max_connections
                    );
                }
                match sh.connections.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return Ok(()),
                }
            }
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, or a connection that died in the
                // backlog: transient. Back off and go on.
                match accept_errors.fail() {
                    Say::First => tracing::warn!(
                        "accept failed: {e} ({} connections open); backing off, further failures are counted",
                        sh.opts.max_connections - sh.connections.available_permits() - 1
                    ),
                    Say::Summary { count, over } => tracing::warn!(
                        "accept keeps failing: {count} failures in {} s; last: {e}",
                        over.as_secs()
                    ),
                    Say::Nothing => {}
                }
                let wait = accept_backoff.fail();
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        accept_backoff.reset();
        if let Some((n, t)) = accept_errors.recover() {
            tracing::info!(
                "accepting again after {n} failed accepts over {:.1} s",
                t.as_secs_f64()
            );
        }
        if let Some((n, _)) = at_limit.recover() {
            tracing::info!("below the connection limit again ({n} waits)");
        }
        let hs = match sh.handshakes.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                match busy.fail() {
                    Say::First => tracing::warn!(
                        "{peer}: {} connections are still in their handshake (the limit): closing new ones at once; further closes are counted",
                        sh.opts.max_handshakes
                    ),
                    Say::Summary { count, over } => tracing::warn!(
                        "{count} connections closed unauthenticated in {} s (handshake slots full)",
                        over.as_secs()
                    ),
                    Say::Nothing => {}
                }
                drop(tcp);
                continue;
            }
        };
        if let Some((n, t)) = busy.recover() {
            tracing::info!(
                "handshake slots free again; {n} connections were closed unauthenticated over {:.1} s",
                t.as_secs_f64()
            );
        }
        let sh = sh.clone();
        tokio::spawn(async move {
            let _slot = permit;
            match connection(tcp, peer, &sh, hs).await {
                Ok(id) => tracing::info!("{peer} ({id}): connection closed"),
                Err(e) => {
                    sh.opts.live.ended(&e.cause);
                    tracing::warn!("{e}")
                }
            }
        });
    }
}

/// A connection's read buffer and its share of the frame budget.
struct Reader {
    buf: Vec<u8>,
    reserved: Option<OwnedSemaphorePermit>,
}

/// One agent's connection: TLS, then a [`CollectorSession`] driven until the
/// agent closes it (`Ok`, with the agent's name) or something fails. The
/// protocol's decisions (hello first, the version, which frames may come)
/// are the session's; naming the agent, opening its store, the frame budget,
/// timeouts, group commits and durability are here.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    sh: &Shared,
    handshake_slot: OwnedSemaphorePermit,
) -> Result<String, ConnectionError> {
    let _ = tcp.set_nodelay(true);
    let opts = &sh.opts;
    let fail = |agent: Option<&str>, cause: ConnectionFailure| ConnectionError {
        peer,
        agent: agent.map(str::to_string),
        cause,
    };
    let deadline = Instant::now() + opts.handshake_timeout;
    let mut tls = match timeout_at(deadline, sh.acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(fail(None, ConnectionFailure::Handshake(e))),
        Err(_) => return Err(fail(None, ConnectionFailure::HandshakeTimeout)),
    };
    let cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(crate::tls::agent_cn)
        .ok_or_else(|| fail(None, ConnectionFailure::NoCommonName))?;
    let mut session = CollectorSession::new(opts.max_frame);
    if let Err(why) = sh.sink.check_agent(&cn) {
        let why = refuse(&mut tls, &mut session, Refusal::AgentName(why)).await;
        return Err(fail(Some("agent"), why));
    }
    let id = names::encode(&cn);
    let mut rd = Reader {
        buf: vec![0u8; 256 * 1024],
        reserved: None,
    };
    let hello = match next_event(&mut tls, &mut session, &mut rd, deadline, &sh.budget).await {
        Ok((CollectorEvent::Hello(h), _)) => h,
        // Bytes that are not a frame, like the read errors, are logged
        // without the agent's name.
        Ok((CollectorEvent::Lost(e @ SessionError::Frame(_)), _)) => {
            return Err(fail(None, e.into()))
        }
        Ok((CollectorEvent::Lost(e), _)) => {
            // Another protocol version: the session refused it.
            send_refusal(&mut tls, &mut session).await;
            return Err(fail(Some(&id), e.into()));
        }
        Ok((CollectorEvent::Batch(_) | CollectorEvent::Heartbeat, _)) => {
            let why = "before hello the session reports a hello or its end";
            return Err(fail(None, ConnectionFailure::Invariant(why)));
        }
        Err(e) => return Err(fail(None, e.into())),
    };
    // An agent with several sources sends each as its own stream: its own
    // sequence numbers and files, in a directory of its own.
    let stream = hello.stream.clone();
    let stream_ok = stream.is_empty()
        || (stream.len() <= 64
            && !stream.starts_with('.')
            && stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    if !stream_ok {
        let why = refuse(&mut tls, &mut session, Refusal::StreamName(stream)).await;
        return Err(fail(Some(&id), why));
    }
    let id = if stream.is_empty() {
        id
    } else {
        format!("{id}/{}", names::encode(&stream))
    };
    let epoch = hello.epoch;
    let (mut store, held) = match sh.sink.open(&cn, &stream, epoch).await {
        Ok(s) => s,
        Err(why) => {
            tracing::error!("{id}: {why}");
            let why = refuse(&mut tls, &mut session, Refusal::OpenStore(why)).await;
            return Err(fail(Some(&id), why));
        }
    };
    let (held, new_epoch, epochs) = (held.state, held.new_epoch, held.epochs);
    // Proven: the connection no longer counts against the handshake slots.
    drop(handshake_slot);
    if new_epoch && epochs > 0 {
        tracing::info!(
            "{id}: a new record stream (epoch {epoch:016x}) begins: a new spool on the agent \
             (reinstalled, or its spool was removed); its batches count from 1"
        );
    }
    tracing::info!(
        "{peer}: agent {id} (host {:?}, version {}) connected; resuming after batch {}",
        hello.host,
        hello.agent_version,
        held.last_seq
    );
    session.accept(held.last_seq);
    let _connected = opts.live.connected();
    let mut out = Vec::new();
    session.poll_transmit(&mut out);
    tls.write_all(&out)
        .await
        .map_err(|e| fail(Some(&id), ConnectionFailure::Write(e)))?;

    // Groups submitted and not yet answered, oldest first: the next group
    // is read and decoded while the one before it is written and synced.
    // Acks go out in the order of the groups, each once its group is
    // durable.
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    loop {
        if inflight.len() >= PIPELINE {
            if let Some(f) = inflight.pop_front() {
                let w = f.pending.await;
                answer(&mut tls, &mut session, opts, &id, peer, f.group, w).await?;
            }
            continue;
        }
        let deadline = Instant::now() + opts.idle_timeout;
        let read = match inflight.front_mut() {
            Some(front) => tokio::select! {
                biased;
                w = &mut front.pending => Err(w),
                e = next_event(&mut tls, &mut session, &mut rd, deadline, &sh.budget) => Ok(e),
            },
            None => Ok(next_event(&mut tls, &mut session, &mut rd, deadline, &sh.budget).await),
        };
        let (event, reserved) = match read {
            Err(w) => {
                if let Some(f) = inflight.pop_front() {
                    answer(&mut tls, &mut session, opts, &id, peer, f.group, w).await?;
                }
                continue;
            }
            Ok(Ok(e)) => e,
            Ok(Err(ReadError::Eof)) => {
                // The agent is done: what it sent is still stored and
                // acknowledged (best effort: it may not read it).
                drain(&mut tls, &mut session, opts, &id, peer, &mut inflight).await?;
                return Ok(id);
            }
            Ok(Err(e)) => return Err(fail(Some(&id), e.into())),
        };
        let first = match event {
            CollectorEvent::Batch(b) => b,
            CollectorEvent::Heartbeat => continue,
            CollectorEvent::Lost(e) => {
                // Frames that came before it are stored and acknowledged.
                drain(&mut tls, &mut session, opts, &id, peer, &mut inflight).await?;
                return Err(fail(Some(&id), e.into()));
            }
            CollectorEvent::Hello(_) => {
                let why = "the session reports one hello";
                return Err(fail(Some(&id), ConnectionFailure::Invariant(why)));
            }
        };
        // Group commit: the batches already received share one set of
        // syncs and one state update (each is still acknowledged only once
        // it is durable).
        let mut records = first.records as usize;
        let mut group = vec![first];
        let mut held = vec![reserved];
        let mut after = None;
        while group.len() < MAX_GROUP && records < MAX_GROUP_RECORDS {
            match next_buffered(&mut tls, &mut session, &mut rd, &sh.budget).await {
                Ok(Some((CollectorEvent::Batch(b), r))) => {
                    records += b.records as usize;
                    group.push(b);
                    held.push(r);
                }
                Ok(Some((CollectorEvent::Heartbeat, _))) => {}
                // Bytes that are not a frame: nothing of the group is stored.
                Ok(Some((CollectorEvent::Lost(e @ SessionError::Frame(_)), _))) => {
                    return Err(fail(Some(&id), e.into()))
                }
                // The agent gave up, or sent a frame out of place: the
                // connection ends once the group before it is stored.
                Ok(Some((CollectorEvent::Lost(e), _))) => {
                    after = Some(e);
                    break;
                }
                Ok(Some((CollectorEvent::Hello(_), _))) => {
                    let why = "the session reports one hello";
                    return Err(fail(Some(&id), ConnectionFailure::Invariant(why)));
                }
                Ok(None) => break,
                Err(e) => return Err(fail(Some(&id), e.into())),
            }
        }
        let sent = Group {
            seqs: group.iter().map(|b| b.seq).collect(),
            counts: group.iter().map(|b| b.records).collect(),
            infos: group
                .iter()
                .map(|b| BatchInfo {
                    epoch,
                    seq: b.seq,
                    follows: b.follows(),
                    source_drops: b.source_drops,
                })
                .collect(),
        };
        let submitted = store.submit(sent.infos.clone(), group).await;
        // The frames are decoded: their share of the budget is free.
        drop(held);
        let pending = match submitted {
            Ok(p) => p,
            Err(e) => {
                // An earlier group's failure is the one to report.
                drain(&mut tls, &mut session, opts, &id, peer, &mut inflight).await?;
                return match e {
                    e @ ConnectionFailure::Decoders(_) => Err(fail(None, e)),
                    e => Err(fail(Some(&id), e)),
                };
            }
        };
        inflight.push_back(InFlight {
            group: sent,
            pending,
        });
        if let Some(e) = after {
            drain(&mut tls, &mut session, opts, &id, peer, &mut inflight).await?;
            return Err(fail(Some(&id), e.into()));
        }
    }
}

/// Groups a connection has submitted and not yet answered, at most: one
/// being committed, the others prepared behind it (and committed together
/// next: the slower the syncs, the larger the commits).
const PIPELINE: usize = 4;

/// What the connection keeps of a group it submitted, to answer it.
struct Group {
    seqs: Vec<u64>,
    counts: Vec<u32>,
    infos: Vec<BatchInfo>,
}

struct InFlight {
    group: Group,
    pending: sink::Pending,
}

/// Answers every group in flight, oldest first.
async fn drain<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    session: &mut CollectorSession,
    opts: &CollectorOptions,
    id: &str,
    peer: SocketAddr,
    inflight: &mut VecDeque<InFlight>,
) -> Result<(), ConnectionError> {
    while let Some(f) = inflight.pop_front() {
        let w = f.pending.await;
        answer(tls, session, opts, id, peer, f.group, w).await?;
    }
    Ok(())
}

/// Acknowledges what a group's commit made durable (in order, and nothing
/// after a refusal), and ends the connection if the commit refused a batch
/// or failed.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    session: &mut CollectorSession,
    opts: &CollectorOptions,
    id: &str,
    peer: SocketAddr,
    group: Group,
    written: Result<sink::Written, ConnectionFailure>,
) -> Result<(), ConnectionError> {
    let fail = |agent: Option<&str>, cause: ConnectionFailure| ConnectionError {
        peer,
        agent: agent.map(str::to_string),
        cause,
    };
    let written = match written {
        Ok(w) => w,
        Err(e @ ConnectionFailure::Decoders(_)) => return Err(fail(None, e)),
        Err(e) => return Err(fail(Some(id), e)),
    };
    if let Some(t) = written.synced {
        opts.live.synced(t);
    }
    if let Some(t) = written.took {
        opts.live.committed(t);
    }
    let mut refusal = None;
    for (i, o) in written.outcomes.iter().enumerate() {
        let (info, seq) = (group.infos[i], group.seqs[i]);
        match o {
            Outcome::Written(before) => {
                opts.live.written(u64::from(group.counts[i]));
                if info.seq > info.follows + 1 {
                    tracing::warn!(
                        "{id}: batches {}..={} never arrive: the agent dropped them (spool overflow or damage)",
                        info.follows + 1,
                        info.seq - 1
                    );
                }
                if info.source_drops > before.source_drops {
                    tracing::warn!(
                        "{id}: the agent's capture has lost {} packets so far ({} since its last report)",
                        info.source_drops,
                        info.source_drops - before.source_drops
                    );
                }
            }
            Outcome::Duplicate => {
                opts.live.duplicate();
                tracing::debug!("{id}: batch {seq} already durable (resend)")
            }
            Outcome::Refused(why) => {
                refusal = Some(why.clone());
                break;
            }
        }
        session.ack(seq);
    }
    let mut out = Vec::new();
    session.poll_transmit(&mut out);
    if !out.is_empty() {
        tls.write_all(&out)
            .await
            .map_err(|e| fail(Some(id), ConnectionFailure::Write(e)))?;
    }
    if let Some(why) = refusal {
        let why = refuse(tls, session, Refusal::Batch(why)).await;
        return Err(fail(Some(id), why));
    }
    match written.error {
        None => Ok(()),
        Some(Reject::Bad(why)) => {
            let why = refuse(tls, session, why).await;
            Err(fail(Some(id), why))
        }
        Some(Reject::Store { seq, why }) => {
            tracing::error!("{id}: cannot store batch {seq}: {why}");
            let why = refuse(tls, session, Refusal::Store { seq, why }).await;
            Err(fail(Some(id), why))
        }
    }
}

/// Batches in one group commit, at most.
const MAX_GROUP: usize = 64;
/// Records in one group commit, at most (bounds the memory of a commit).
const MAX_GROUP_RECORDS: usize = 4_096;

/// The next event if its frame is here already: decoded from what was
/// received, or from one read that does not wait. `None` when nothing more
/// is here, or when a large frame is arriving and the budget has no room
/// for it now.
async fn next_buffered<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    session: &mut CollectorSession,
    rd: &mut Reader,
    budget: &Arc<Semaphore>,
) -> Result<Option<(CollectorEvent, Option<OwnedSemaphorePermit>)>, ReadError> {
    loop {
        if let Some(e) = session.poll_event() {
            return Ok(Some((e, rd.reserved.take())));
        }
        if rd.reserved.is_none() {
            if let Some(len) = session.incoming_frame_len().filter(|&l| l > FREE_FRAME) {
                match budget
                    .clone()
                    .try_acquire_many_owned((len >> 10) as u32 + 1)
                {
                    Ok(p) => rd.reserved = Some(p),
                    Err(_) => return Ok(None),
                }
            }
        }
        match tokio::time::timeout(Duration::ZERO, s.read(&mut rd.buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok(None),
            Ok(Ok(n)) => session.handle_input(&rd.buf[..n]),
            Ok(Err(e)) => return Err(ReadError::Io(e)),
        }
    }
}

/// Tells the agent why it is refused (best effort: it may be gone) and
/// returns the connection's error.
async fn refuse<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    session: &mut CollectorSession,
    why: Refusal,
) -> ConnectionFailure {
    session.refuse(why.to_string());
    send_refusal(tls, session).await;
    ConnectionFailure::Refused(why)
}

/// Sends the refusal the session has queued (best effort: the connection
/// is closing) and closes so that it is read.
async fn send_refusal<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    session: &mut CollectorSession,
) {
    let mut out = Vec::new();
    session.poll_transmit(&mut out);
    if !out.is_empty() {
        let _ = tls.write_all(&out).await;
        let _ = tls.flush().await;
    }
    linger(tls).await;
}

/// Closes after a refusal so that the agent reads it. Closing a socket with
/// the agent's batches still unread makes the kernel send a reset, and an
/// agent busy writing then sees "connection reset" or "broken pipe" instead
/// of the reason. So: end our side (close_notify, FIN), then read and drop
/// what the agent still sends until it closes, for at most `LINGER` and
/// `LINGER_BYTES` (a peer that keeps sending is cut off then).
async fn linger<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(tls: &mut S) {
    const LINGER: Duration = Duration::from_secs(2);
    const LINGER_BYTES: usize = 16 << 20;
    let _ = tokio::time::timeout(LINGER, async {
        let _ = tls.shutdown().await;
        let mut scratch = [0u8; 16 << 10];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match tls.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

/// The next event of the session, reading (within `deadline`) as needed,
/// with a share of the frame budget for a large frame before its body is
/// read. The share goes with the event of the frame it was taken for.
async fn next_event<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    session: &mut CollectorSession,
    rd: &mut Reader,
    deadline: Instant,
    budget: &Arc<Semaphore>,
) -> Result<(CollectorEvent, Option<OwnedSemaphorePermit>), ReadError> {
    loop {
        if let Some(e) = session.poll_event() {
            return Ok((e, rd.reserved.take()));
        }
        if rd.reserved.is_none() {
            if let Some(len) = session.incoming_frame_len().filter(|&l| l > FREE_FRAME) {
                let kib = (len >> 10) as u32 + 1;
                match timeout_at(deadline, budget.clone().acquire_many_owned(kib)).await {
                    Ok(Ok(p)) => rd.reserved = Some(p),
                    _ => return Err(ReadError::NoFrameMemory),
                }
            }
        }
        let n = match timeout_at(deadline, s.read(&mut rd.buf)).await {
            Ok(Ok(0)) if session.buffered() == 0 => return Err(ReadError::Eof),
            Ok(Ok(0)) => return Err(ReadError::ClosedInsideFrame),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(ReadError::Io(e)),
            Err(_) if session.buffered() > 0 => return Err(ReadError::SlowFrame),
            Err(_) => return Err(ReadError::Idle),
        };
        session.handle_input(&rd.buf[..n]);
    }
}
