//! `vmflow collect`: accepts agents over mutual TLS, writes their records
//! durably (see [`store`]) and acknowledges them. Each connection is its own
//! task; a bad client (wrong certificate, plaintext, garbage, oversized frames,
//! a slow trickle) is closed with a logged reason and nobody else notices.

pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_rustls::TlsAcceptor;
use vmflow_proto::{
    check_version, decode_records, encode_frame, Ack, Frame, FrameDecoder, HelloAck, Refused,
    PROTOCOL_VERSION,
};

use crate::error::Error;
use store::AgentStore;

#[derive(Clone)]
pub struct CollectorOptions {
    pub tls: Arc<rustls::ServerConfig>,
    pub out: PathBuf,
    /// TLS handshake plus `hello` must finish within this.
    pub handshake_timeout: Duration,
    /// A connection with no complete frame for this long is closed; so is one
    /// whose current frame has been arriving for this long (slow trickle).
    pub idle_timeout: Duration,
    pub max_frame: usize,
}

impl CollectorOptions {
    pub fn new(tls: Arc<rustls::ServerConfig>, out: PathBuf) -> Self {
        CollectorOptions {
            tls,
            out,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_frame: vmflow_proto::MAX_FRAME,
        }
    }
}

type Stores = Arc<Mutex<HashMap<String, Arc<Mutex<AgentStore>>>>>;

/// Serves until the listener fails. Connections run as independent tasks.
pub async fn serve(listener: TcpListener, opts: CollectorOptions) -> Result<(), Error> {
    let acceptor = TlsAcceptor::from(opts.tls.clone());
    let stores: Stores = Arc::default();
    loop {
        let (tcp, peer) = listener
            .accept()
            .await
            .map_err(|e| Error::Collector(format!("accept: {e}")))?;
        let (acceptor, opts, stores) = (acceptor.clone(), opts.clone(), stores.clone());
        tokio::spawn(async move {
            match connection(tcp, peer, acceptor, &opts, stores).await {
                Ok(id) => tracing::info!("{peer} ({id}): connection closed"),
                Err(reason) => tracing::warn!("{peer}: connection closed: {reason}"),
            }
        });
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    opts: &CollectorOptions,
    stores: Stores,
) -> Result<String, String> {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + opts.handshake_timeout;
    let mut tls = match timeout(opts.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        Err(_) => return Err("TLS handshake timed out".into()),
    };
    let id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(crate::tls::agent_id)
        .ok_or("client certificate has no usable subject common name")?;
    let mut dec = FrameDecoder::new(opts.max_frame);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();

    let hello = match read_frame(&mut tls, &mut dec, &mut buf, deadline).await? {
        Frame::Hello(h) => h,
        other => return Err(format!("{id}: expected hello, got {}", kind(&other))),
    };
    if let Err(e) = check_version(hello.version) {
        return Err(refuse(&mut tls, &id, e.to_string()).await);
    }
    // An agent with several sources sends each as its own stream: its own
    // sequence numbers and files, in a subdirectory.
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
    let (key, dir) = if stream.is_empty() {
        (id.clone(), opts.out.join(&id))
    } else {
        (format!("{id}/{stream}"), opts.out.join(&id).join(&stream))
    };
    let id = key;
    let store = {
        let mut map = stores.lock().map_err(|_| "store lock poisoned")?;
        match map.get(&id) {
            Some(s) => s.clone(),
            None => {
                let s =
                    AgentStore::open(&dir).map_err(|e| format!("{id}: opening its output: {e}"))?;
                let s = Arc::new(Mutex::new(s));
                map.insert(id.clone(), s.clone());
                s
            }
        }
    };
    let last_seq = store.lock().map_err(|_| "store lock poisoned")?.last_seq();
    tracing::info!(
        "{peer}: agent {id} (host {:?}, version {}) connected; resuming after batch {last_seq}",
        hello.host,
        hello.agent_version
    );
    encode_frame(
        &Frame::HelloAck(HelloAck {
            version: PROTOCOL_VERSION,
            last_seq,
        }),
        &mut out,
    );
    tls.write_all(&out)
        .await
        .map_err(|e| format!("{id}: {e}"))?;

    loop {
        let deadline = Instant::now() + opts.idle_timeout;
        let frame = match read_frame(&mut tls, &mut dec, &mut buf, deadline).await {
            Ok(f) => f,
            Err(e) if e == EOF => return Ok(id),
            Err(e) => return Err(format!("{id}: {e}")),
        };
        match frame {
            Frame::Batch(b) => {
                let records = match decode_records(&b.block) {
                    Ok(r) if r.len() == b.records as usize => r,
                    Ok(r) => {
                        return Err(format!(
                            "{id}: batch {} claims {} records, holds {}",
                            b.seq,
                            b.records,
                            r.len()
                        ))
                    }
                    Err(e) => return Err(format!("{id}: batch {}: {e}", b.seq)),
                };
                let st = store.clone();
                let (seq, drops) = (b.seq, b.source_drops);
                let wrote = tokio::task::spawn_blocking(move || {
                    let mut st = st
                        .lock()
                        .map_err(|_| std::io::Error::other("store lock poisoned"))?;
                    let before = st.source_drops();
                    st.write_batch(seq, &records, drops).map(|w| (w, before))
                })
                .await
                .map_err(|e| format!("{id}: {e}"))?
                .map_err(|e| format!("{id}: writing batch {seq}: {e}"))?;
                let (wrote, drops_before) = wrote;
                if !wrote {
                    tracing::debug!("{id}: batch {seq} already durable (resend)");
                } else if drops > drops_before {
                    tracing::warn!(
                        "{id}: the agent's capture has lost {drops} packets so far ({} since its last report)",
                        drops - drops_before
                    );
                }
                out.clear();
                encode_frame(&Frame::Ack(Ack { seq }), &mut out);
                tls.write_all(&out)
                    .await
                    .map_err(|e| format!("{id}: {e}"))?;
            }
            Frame::Heartbeat(_) => {}
            Frame::Refused(r) => return Err(format!("{id}: agent gave up: {}", r.reason)),
            other => return Err(format!("{id}: unexpected {} frame", kind(&other))),
        }
    }
}

const EOF: &str = "connection closed by peer";

/// Tells the agent why its hello is refused (best effort: it may be gone)
/// and returns the connection's error.
async fn refuse<S: tokio::io::AsyncWrite + Unpin>(tls: &mut S, id: &str, reason: String) -> String {
    let mut out = Vec::new();
    encode_frame(
        &Frame::Refused(Refused {
            reason: reason.clone(),
        }),
        &mut out,
    );
    let _ = tls.write_all(&out).await;
    format!("{id}: {reason}")
}

async fn read_frame<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    dec: &mut FrameDecoder,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<Frame, String> {
    loop {
        if let Some(f) = dec.next_frame().map_err(|e| e.to_string())? {
            return Ok(f);
        }
        let n = match tokio::time::timeout_at(deadline, s.read(buf)).await {
            Ok(Ok(0)) if dec.pending() == 0 => return Err(EOF.into()),
            Ok(Ok(0)) => return Err("connection closed inside a frame".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) if dec.pending() > 0 => {
                return Err("frame not completed in time (slow client)".into())
            }
            Err(_) => return Err("idle timeout".into()),
        };
        dec.push(&buf[..n]);
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
