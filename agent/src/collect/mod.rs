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
//!   (`frame_budget`), and at most two batches are decoded at once, so
//!   memory stays bounded whatever the agents send.

pub mod names;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout_at, Instant};
use tokio_rustls::TlsAcceptor;
use vmflow_proto::{
    check_version, decode_records, encode_frame, Ack, Frame, FrameDecoder, HelloAck, Refused,
    PROTOCOL_VERSION,
};

use crate::disk::SharedFs;
use crate::episode::{Backoff, Episode, Say};
use crate::error::Error;
use store::{BatchInfo, Outcome, StreamStore};

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
        }
    }
}

/// Every connection holds a descriptor: stay below the process's limit, with
/// room for the store's files, the listener and the runtime.
pub fn default_max_connections() -> usize {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` through a pointer to a live,
        // properly aligned local of exactly that type, and keeps no pointer.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        if ok {
            return (lim.rlim_cur.min(1 << 20) as usize)
                .saturating_sub(64)
                .clamp(16, 65_536);
        }
    }
    1_000
}

/// Frames up to this size need no share of the budget (one read's worth).
const FREE_FRAME: usize = 64 << 10;

struct Shared {
    opts: CollectorOptions,
    acceptor: TlsAcceptor,
    stores: Mutex<HashMap<PathBuf, Arc<Mutex<StreamStore>>>>,
    /// One store is opened at a time: two connections of one stream must
    /// not both create it.
    opening: tokio::sync::Mutex<()>,
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    /// The frame budget in KiB.
    budget: Arc<Semaphore>,
    decoders: Semaphore,
}

/// Serves until the task is dropped. Connections run as independent tasks.
pub async fn serve(listener: TcpListener, opts: CollectorOptions) -> Result<(), Error> {
    opts.fs
        .create_dir_all(&opts.out)
        .and_then(|_| opts.fs.restrict(&opts.out))
        .map_err(|e| Error::io(&opts.out, e))?;
    let budget_kib = (opts.frame_budget.max(opts.max_frame + 4) >> 10) + 1;
    let sh = Arc::new(Shared {
        acceptor: TlsAcceptor::from(opts.tls.clone()),
        stores: Mutex::default(),
        opening: tokio::sync::Mutex::new(()),
        connections: Arc::new(Semaphore::new(opts.max_connections.max(1))),
        handshakes: Arc::new(Semaphore::new(opts.max_handshakes.max(1))),
        budget: Arc::new(Semaphore::new(budget_kib.min(u32::MAX as usize))),
        decoders: Semaphore::new(2),
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
                Err(reason) => tracing::warn!("{peer}: connection closed: {reason}"),
            }
        });
    }
}

/// A connection's frame reader and its share of the budget.
struct Reader {
    dec: FrameDecoder,
    buf: Vec<u8>,
    reserved: Option<OwnedSemaphorePermit>,
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    sh: &Shared,
    handshake_slot: OwnedSemaphorePermit,
) -> Result<String, String> {
    let _ = tcp.set_nodelay(true);
    let opts = &sh.opts;
    let deadline = Instant::now() + opts.handshake_timeout;
    let mut tls = match timeout_at(deadline, sh.acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        Err(_) => return Err("TLS handshake timed out".into()),
    };
    let cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(crate::tls::agent_cn)
        .ok_or("client certificate has no usable subject common name")?;
    let agent_dir = match names::agent_dir(&opts.out, &cn) {
        Ok(d) => d,
        Err(why) => return Err(refuse(&mut tls, "agent", why).await),
    };
    let id = names::encode(&cn);
    let mut rd = Reader {
        dec: FrameDecoder::new(opts.max_frame),
        buf: vec![0u8; 256 * 1024],
        reserved: None,
    };
    let hello = match read_frame(&mut tls, &mut rd, deadline, &sh.budget).await? {
        (Frame::Hello(h), _) => h,
        (other, _) => return Err(format!("{id}: expected hello, got {}", kind(&other))),
    };
    if let Err(e) = check_version(hello.version) {
        return Err(refuse(&mut tls, &id, e.to_string()).await);
    }
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
        let reason = format!("stream name {stream:?} is not allowed");
        return Err(refuse(&mut tls, &id, reason).await);
    }
    let dir = names::stream_dir(&agent_dir, &stream);
    let id = if stream.is_empty() {
        id
    } else {
        format!("{id}/{}", names::encode(&stream))
    };
    let store = match open_store(sh, &agent_dir, &stream, &dir).await {
        Ok(s) => s,
        Err(why) => {
            tracing::error!("{id}: {why}");
            let reason = format!("the collector cannot open this stream's output: {why}");
            return Err(refuse(&mut tls, &id, reason).await);
        }
    };
    let epoch = hello.epoch;
    let (held, new_epoch, epochs) = {
        let st = store.lock().map_err(|_| "store lock poisoned")?;
        (st.epoch(epoch), st.is_new_epoch(epoch), st.epochs())
    };
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
    let mut out = Vec::new();
    encode_frame(
        &Frame::HelloAck(HelloAck {
            version: PROTOCOL_VERSION,
            last_seq: held.last_seq,
        }),
        &mut out,
    );
    tls.write_all(&out)
        .await
        .map_err(|e| format!("{id}: {e}"))?;

    loop {
        let deadline = Instant::now() + opts.idle_timeout;
        let (frame, reserved) = match read_frame(&mut tls, &mut rd, deadline, &sh.budget).await {
            Ok(f) => f,
            Err(e) if e == EOF => return Ok(id),
            Err(e) => return Err(format!("{id}: {e}")),
        };
        let first = match frame {
            Frame::Batch(b) => b,
            Frame::Heartbeat(_) => continue,
            Frame::Refused(r) => return Err(format!("{id}: agent gave up: {}", r.reason)),
            other => return Err(format!("{id}: unexpected {} frame", kind(&other))),
        };
        // Group commit: the batches already received share one set of
        // syncs and one state update (each is still acknowledged only once
        // it is durable).
        let mut records = first.records as usize;
        let mut group = vec![first];
        let mut held = vec![reserved];
        let mut after = None;
        while group.len() < MAX_GROUP && records < MAX_GROUP_RECORDS {
            match next_buffered(&mut tls, &mut rd, &sh.budget).await {
                Ok(Some((Frame::Batch(b), r))) => {
                    records += b.records as usize;
                    group.push(b);
                    held.push(r);
                }
                Ok(Some((Frame::Heartbeat(_), _))) => {}
                Ok(Some((other, _))) => {
                    after = Some(other);
                    break;
                }
                Ok(None) => break,
                Err(e) => return Err(format!("{id}: {e}")),
            }
        }
        let seqs: Vec<u64> = group.iter().map(|b| b.seq).collect();
        let infos: Vec<BatchInfo> = group
            .iter()
            .map(|b| BatchInfo {
                epoch,
                seq: b.seq,
                follows: b.follows(),
                source_drops: b.source_drops,
            })
            .collect();
        let written = {
            let _decoding = sh.decoders.acquire().await.map_err(|e| e.to_string())?;
            let (st, infos) = (store.clone(), infos.clone());
            tokio::task::spawn_blocking(move || store_batches(&st, &infos, &group))
                .await
                .map_err(|e| format!("{id}: {e}"))?
        };
        drop(held);
        out.clear();
        let mut refusal = None;
        for (i, o) in written.outcomes.iter().enumerate() {
            let (info, seq) = (infos[i], seqs[i]);
            match o {
                Outcome::Written(before) => {
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
                Outcome::Duplicate => tracing::debug!("{id}: batch {seq} already durable (resend)"),
                Outcome::Refused(why) => {
                    refusal = Some(why.clone());
                    break;
                }
            }
            encode_frame(&Frame::Ack(Ack { seq }), &mut out);
        }
        if !out.is_empty() {
            tls.write_all(&out)
                .await
                .map_err(|e| format!("{id}: {e}"))?;
        }
        if let Some(why) = refusal {
            return Err(refuse(&mut tls, &id, why).await);
        }
        match written.error {
            None => {}
            Some(Reject::Bad(seq, why)) => {
                return Err(refuse(&mut tls, &id, format!("batch {seq}: {why}")).await)
            }
            Some(Reject::Store(seq, why, broken)) => {
                tracing::error!("{id}: cannot store batch {seq}: {why}");
                if broken {
                    forget_store(sh, &dir, &store);
                }
                let reason = format!("the collector cannot store batch {seq}: {why}");
                return Err(refuse(&mut tls, &id, reason).await);
            }
        }
        match after {
            None | Some(Frame::Heartbeat(_)) => {}
            Some(Frame::Refused(r)) => return Err(format!("{id}: agent gave up: {}", r.reason)),
            Some(other) => return Err(format!("{id}: unexpected {} frame", kind(&other))),
        }
    }
}

/// Batches in one group commit, at most.
const MAX_GROUP: usize = 64;
/// Records in one group commit, at most (bounds the memory of a commit).
const MAX_GROUP_RECORDS: usize = 4_096;

/// The next frame if it is here already: decoded from what was received, or
/// from one read that does not wait. `None` when nothing more is here, or
/// when a large frame is arriving and the budget has no room for it now.
async fn next_buffered<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    rd: &mut Reader,
    budget: &Arc<Semaphore>,
) -> Result<Option<(Frame, Option<OwnedSemaphorePermit>)>, String> {
    loop {
        if let Some(f) = rd.dec.next_frame().map_err(|e| e.to_string())? {
            return Ok(Some((f, rd.reserved.take())));
        }
        if rd.reserved.is_none() {
            if let Some(len) = rd.dec.announced().filter(|&l| l > FREE_FRAME) {
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
            Ok(Ok(n)) => rd.dec.push(&rd.buf[..n]),
            Ok(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// What a group commit came to: the outcomes of the batches it looked at,
/// and the error that stopped it, if any (after the outcomes).
struct Written {
    outcomes: Vec<Outcome>,
    error: Option<Reject>,
}

enum Reject {
    /// A batch itself is bad (the agent's fault).
    Bad(u64, String),
    /// The store failed; whether it must be reopened.
    Store(u64, String, bool),
}

/// Decodes a group of batches and writes them with one commit. A batch that
/// does not decode ends the group there: the ones before it are written.
fn store_batches(
    store: &Mutex<StreamStore>,
    infos: &[BatchInfo],
    batches: &[vmflow_proto::Batch],
) -> Written {
    let mut decoded = Vec::with_capacity(batches.len());
    let mut error = None;
    for b in batches {
        match decode_records(&b.block) {
            Ok(r) if r.len() == b.records as usize => decoded.push(r),
            Ok(r) => {
                let why = format!("claims {} records, holds {}", b.records, r.len());
                error = Some(Reject::Bad(b.seq, why));
                break;
            }
            Err(e) => {
                error = Some(Reject::Bad(b.seq, e.to_string()));
                break;
            }
        }
    }
    let group: Vec<(BatchInfo, &[vmflow_proto::FlowRecord])> = infos
        .iter()
        .copied()
        .zip(decoded.iter().map(Vec::as_slice))
        .collect();
    let first = batches.first().map_or(0, |b| b.seq);
    let mut st = match store.lock() {
        Ok(st) => st,
        Err(_) => {
            return Written {
                outcomes: Vec::new(),
                error: Some(Reject::Store(first, "store lock poisoned".into(), true)),
            }
        }
    };
    match st.write_batches(&group) {
        Ok(outcomes) => Written { outcomes, error },
        Err(e) => Written {
            outcomes: Vec::new(),
            error: Some(Reject::Store(first, e.to_string(), st.is_broken())),
        },
    }
}

/// The stream's store, opened once and shared by its connections. An
/// earlier version kept named streams in `OUT/<agent>/<stream>`: moved to
/// their own namespace on first use.
async fn open_store(
    sh: &Shared,
    agent_dir: &Path,
    stream: &str,
    dir: &Path,
) -> Result<Arc<Mutex<StreamStore>>, String> {
    let _one_at_a_time = sh.opening.lock().await;
    if let Some(s) = sh
        .stores
        .lock()
        .map_err(|_| "store lock poisoned")?
        .get(dir)
    {
        return Ok(s.clone());
    }
    let fs = sh.opts.fs.clone();
    let (agent_dir, stream, d) = (
        agent_dir.to_path_buf(),
        stream.to_string(),
        dir.to_path_buf(),
    );
    let opened = tokio::task::spawn_blocking(move || {
        // ("streams" itself is the new namespace: a stream of that name
        // from before is left where it is.)
        if !stream.is_empty() && stream != "streams" && !fs.is_dir(&d) {
            let old = names::legacy_stream_dir(&agent_dir, &stream);
            let state = old.join("state");
            if !fs.is_dir(&state) && fs.len(&state).ok().flatten().is_some() {
                let parent = crate::disk::parent(&d).to_path_buf();
                fs.create_dir_all(&parent)
                    .and_then(|_| fs.rename(&old, &d))
                    .and_then(|_| fs.sync_dir(&parent))
                    .and_then(|_| fs.sync_dir(&agent_dir))
                    .map_err(|e| format!("moving {} to {}: {e}", old.display(), d.display()))?;
                tracing::info!(
                    "{}: moved to {} (streams now have their own namespace)",
                    old.display(),
                    d.display()
                );
            }
        }
        StreamStore::open(fs, &d).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    let mut map = sh.stores.lock().map_err(|_| "store lock poisoned")?;
    Ok(map
        .entry(dir.to_path_buf())
        .or_insert_with(|| Arc::new(Mutex::new(opened)))
        .clone())
}

/// A store whose state on disk is unknown after a failed write: the next
/// connection opens it afresh.
fn forget_store(sh: &Shared, dir: &Path, store: &Arc<Mutex<StreamStore>>) {
    if let Ok(mut map) = sh.stores.lock() {
        if map.get(dir).is_some_and(|s| Arc::ptr_eq(s, store)) {
            map.remove(dir);
        }
    }
}

const EOF: &str = "connection closed by peer";

/// Tells the agent why it is refused (best effort: it may be gone) and
/// returns the connection's error.
async fn refuse<S: tokio::io::AsyncWrite + Unpin>(tls: &mut S, id: &str, reason: String) -> String {
    let mut out = Vec::new();
    encode_frame(
        &Frame::Refused(Refused {
            reason: reason.clone(),
        }),
        &mut out,
    );
    let _ = tls.write_all(&out).await;
    let _ = tls.flush().await;
    format!("{id}: {reason}")
}

async fn read_frame<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    rd: &mut Reader,
    deadline: Instant,
    budget: &Arc<Semaphore>,
) -> Result<(Frame, Option<OwnedSemaphorePermit>), String> {
    loop {
        if let Some(f) = rd.dec.next_frame().map_err(|e| e.to_string())? {
            return Ok((f, rd.reserved.take()));
        }
        if rd.reserved.is_none() {
            if let Some(len) = rd.dec.announced().filter(|&l| l > FREE_FRAME) {
                let kib = (len >> 10) as u32 + 1;
                match timeout_at(deadline, budget.clone().acquire_many_owned(kib)).await {
                    Ok(Ok(p)) => rd.reserved = Some(p),
                    _ => return Err(
                        "the collector's frame memory stayed taken by other connections; closing"
                            .into(),
                    ),
                }
            }
        }
        let n = match timeout_at(deadline, s.read(&mut rd.buf)).await {
            Ok(Ok(0)) if rd.dec.pending() == 0 => return Err(EOF.into()),
            Ok(Ok(0)) => return Err("connection closed inside a frame".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) if rd.dec.pending() > 0 => {
                return Err("frame not completed in time (slow client)".into())
            }
            Err(_) => return Err("idle timeout".into()),
        };
        rd.dec.push(&rd.buf[..n]);
    }
}

fn kind(f: &Frame) -> &'static str {
    match f {
        Frame::Hello(_) => "hello",
        Frame::HelloAck(_) => "hello_ack",
        Frame::Batch(_) => "batch",
        Frame::Ack(_) => "ack",
        Frame::Heartbeat(_) => "heartbeat",
        Frame::Refused(_) => "refused",
    }
}
