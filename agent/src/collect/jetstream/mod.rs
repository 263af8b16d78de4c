//! The JetStream back end: each accepted batch becomes one message of a
//! replicated JetStream stream, and the collector keeps no state of its
//! own, so any collector can serve any agent and can be lost at any moment.
//!
//! - Subject `<prefix>.<agent>.<stream>.<epoch>` (see [`subject`]); the
//!   message is the record block exactly as the agent sent it, with the
//!   batch's numbers in `Vmflow-*` headers.
//! - Where an epoch stands (the hello-ack's last durable batch) is the last
//!   message on its subject, read from the stream leader.
//! - Each publish carries `Nats-Expected-Last-Subject-Sequence` (the stream
//!   sequence of the subject's last message as this connection knows it)
//!   and `Nats-Msg-Id` (`<agent>/<stream>/<epoch>/<seq>`): JetStream stores
//!   a batch only if nothing was appended to the subject behind this
//!   connection's back (a collector thought dead, still writing), and drops a
//!   re-publish within its duplicate window. So the subject holds each
//!   batch once, in order, whatever collectors die or race.
//! - The agent's batch is acknowledged only after JetStream's publish ack
//!   (stored on a quorum of the replicas). JetStream unreachable: the hello
//!   or the batch is refused, the agent keeps its spool and retries.
//!
//! `vmflow sink` ([`consume`]) turns the stream back into the file store's
//! hourly NDJSON files.

mod auth;
pub mod consume;
mod error;
pub mod subject;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use tokio::sync::Semaphore;
use vmflow_proto::Batch;

pub use error::JetStreamError;

use super::error::{ConnectionFailure, OpenError, StoreFailure};
use super::sink::{decode_group, BoxFuture, Held, Opened, Reject, Sink, StreamSink, Written};
use super::store::{judge, BatchInfo, EpochState, Outcome, Verdict};

/// The batch's numbers, as headers of its message.
pub const H_SEQ: &str = "Vmflow-Seq";
pub const H_FOLLOWS: &str = "Vmflow-Follows";
pub const H_RECORDS: &str = "Vmflow-Records";
pub const H_SOURCE_DROPS: &str = "Vmflow-Source-Drops";
/// Batches the agent declared dropped in this epoch, up to this one.
pub const H_AGENT_DROPPED: &str = "Vmflow-Agent-Dropped";

/// How to reach the stream and what it must look like.
#[derive(Clone, Debug)]
pub struct JetStreamOptions {
    /// `nats://host:port` (or `tls://`, or with `user:password@`).
    pub servers: Vec<String>,
    pub stream: String,
    pub prefix: String,
    pub replicas: usize,
    /// Messages older than this are removed (zero: kept by age forever).
    pub max_age: Duration,
    /// The stream's size limit, oldest removed first (zero: none).
    pub max_bytes: u64,
    /// CA to verify the servers by (TLS), and this client's certificate.
    pub ca: Option<PathBuf>,
    pub cert: Option<(PathBuf, PathBuf)>,
    /// Publish acks and API requests wait this long.
    pub timeout: Duration,
    /// How this client proves who it is, besides a client certificate.
    pub auth: Option<NatsAuth>,
}

/// NATS authentication from a file (the secret never on the command line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatsAuth {
    /// A credentials file: the user's JWT and its nkey seed.
    Creds(PathBuf),
    /// A file holding an nkey seed.
    Nkey(PathBuf),
    /// A file holding `user:password`, or else a token.
    File(PathBuf),
}

impl JetStreamOptions {
    pub fn new(servers: Vec<String>) -> Self {
        JetStreamOptions {
            servers,
            stream: "VMFLOW".into(),
            prefix: "vmflow".into(),
            replicas: 1,
            max_age: Duration::ZERO,
            max_bytes: 0,
            ca: None,
            cert: None,
            timeout: Duration::from_secs(5),
            auth: None,
        }
    }

    /// The servers as they can be logged.
    pub fn shown(&self) -> String {
        self.servers
            .iter()
            .map(|s| redact(s))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A server address without its user and password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        (None, Some(at)) => format!("***@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// A connected JetStream context whose stream exists as configured.
#[derive(Clone)]
pub struct Connected {
    pub js: jetstream::Context,
    pub opts: Arc<JetStreamOptions>,
}

/// Connects (failing when no server answers), then creates the stream if
/// it is missing, or checks that the one there has the settings asked for.
pub async fn connect(opts: JetStreamOptions) -> Result<Connected, JetStreamError> {
    if !subject::valid_prefix(&opts.prefix) {
        return Err(JetStreamError::Prefix(opts.prefix.clone()));
    }
    for s in &opts.servers {
        if s.parse::<async_nats::ServerAddr>().is_err() {
            return Err(JetStreamError::Address(redact(s)));
        }
    }
    let base = match &opts.auth {
        Some(a) => auth::options(a)?,
        None => async_nats::ConnectOptions::new(),
    };
    let mut c = base
        .name(format!("vmflow {}", env!("CARGO_PKG_VERSION")))
        .connection_timeout(opts.timeout)
        // Reconnect forever: an outage of the cluster is waited out.
        .max_reconnects(None::<usize>);
    if let Some(ca) = &opts.ca {
        c = c.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &opts.cert {
        c = c.add_client_certificate(cert.clone(), key.clone());
    }
    let client = c
        .connect(opts.servers.as_slice())
        .await
        .map_err(|e| JetStreamError::Connect {
            servers: opts.shown(),
            source: Box::new(e),
        })?;
    let mut js = jetstream::new(client);
    js.set_timeout(opts.timeout);
    ensure_stream(&js, &opts).await?;
    Ok(Connected {
        js,
        opts: Arc::new(opts),
    })
}

fn wanted(opts: &JetStreamOptions) -> stream::Config {
    stream::Config {
        name: opts.stream.clone(),
        subjects: vec![format!("{}.>", opts.prefix)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: opts.replicas,
        max_age: opts.max_age,
        max_bytes: if opts.max_bytes == 0 {
            -1
        } else {
            opts.max_bytes.min(i64::MAX as u64) as i64
        },
        discard: stream::DiscardPolicy::Old,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    opts: &JetStreamOptions,
) -> Result<(), JetStreamError> {
    use async_nats::jetstream::context::GetStreamErrorKind;
    let req = |what: &'static str| {
        move |e: Box<dyn std::error::Error + Send + Sync>| JetStreamError::Request {
            stream: opts.stream.clone(),
            what,
            source: e,
        }
    };
    let want = wanted(opts);
    let have = match js.get_stream(&opts.stream).await {
        Ok(s) => s.cached_info().config.clone(),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                js.create_stream(want)
                    .await
                    .map_err(|e| req("creating it")(Box::new(e)))?;
                tracing::info!(
                    "JetStream stream {} created ({} replicas, subjects {}.>)",
                    opts.stream,
                    opts.replicas,
                    opts.prefix
                );
                return Ok(());
            }
            _ => return Err(req("looking it up")(Box::new(e))),
        },
    };
    let mut differ = Vec::new();
    if !have.subjects.contains(&want.subjects[0]) {
        differ.push(format!(
            "subjects {:?}, not {}",
            have.subjects, want.subjects[0]
        ));
    }
    if have.num_replicas != want.num_replicas {
        differ.push(format!(
            "{} replicas, not {}",
            have.num_replicas, want.num_replicas
        ));
    }
    if have.max_age != want.max_age {
        differ.push(format!(
            "max age {} s, not {} s",
            have.max_age.as_secs(),
            want.max_age.as_secs()
        ));
    }
    if have.max_bytes != want.max_bytes {
        differ.push(format!(
            "max bytes {}, not {}",
            have.max_bytes, want.max_bytes
        ));
    }
    if have.retention != stream::RetentionPolicy::Limits {
        // Work-queue or interest retention removes acknowledged messages,
        // and with them where each agent stream stands.
        differ.push(format!("retention {:?}, not limits", have.retention));
    }
    if have.storage != stream::StorageType::File {
        differ.push(format!("storage {:?}, not file", have.storage));
    }
    if differ.is_empty() {
        Ok(())
    } else {
        Err(JetStreamError::Conflict {
            stream: opts.stream.clone(),
            what: differ.join(", "),
        })
    }
}

/// Where the last message on a subject says its epoch stands, and that
/// message's stream sequence (0: no message).
pub async fn last_on_subject(
    c: &Connected,
    subject: &str,
) -> Result<(EpochState, u64), JetStreamError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let sub = |what, e: Box<dyn std::error::Error + Send + Sync>| JetStreamError::Subject {
        subject: subject.to_string(),
        what,
        source: e,
    };
    let st =
        c.js.get_stream_no_info(&c.opts.stream)
            .await
            .map_err(|e| sub("finding the stream", Box::new(e)))?;
    // (Not the direct get: a replica may lag; the stream leader holds every
    // acknowledged message.)
    match st.get_last_raw_message_by_subject(subject).await {
        Ok(m) => {
            let h = |name| header_u64(Some(&m.headers), name);
            let bad = |why: String| JetStreamError::Message {
                stream: c.opts.stream.clone(),
                seq: m.sequence,
                subject: subject.to_string(),
                why,
            };
            let state = EpochState {
                last_seq: h(H_SEQ).map_err(bad)?,
                source_drops: h(H_SOURCE_DROPS).map_err(bad)?,
                agent_dropped: h(H_AGENT_DROPPED).map_err(bad)?,
            };
            Ok((state, m.sequence))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
            Ok((EpochState::default(), 0))
        }
        Err(e) => Err(sub("reading its last message", Box::new(e))),
    }
}

/// How many other epochs of the agent stream whose epoch subject is
/// `subject` the stream holds (only for the log line that says a new
/// record stream began: 0 when the server cannot say).
async fn other_epochs(c: &Connected, subject: &str) -> usize {
    use futures_util::StreamExt;
    let Some((stem, _)) = subject.rsplit_once('.') else {
        return 0;
    };
    let Ok(st) = c.js.get_stream_no_info(&c.opts.stream).await else {
        return 0;
    };
    let Ok(subjects) = st.info_with_subjects(format!("{stem}.*")).await else {
        return 0;
    };
    subjects
        .filter(|r| std::future::ready(r.as_ref().is_ok_and(|(s, _)| s != subject)))
        .count()
        .await
}

/// A `Vmflow-*` header as a number.
pub fn header_u64(h: Option<&HeaderMap>, name: &str) -> Result<u64, String> {
    let v = h
        .and_then(|h| h.get(name))
        .ok_or_else(|| format!("no {name} header"))?;
    let s: &str = v.as_ref();
    s.parse()
        .map_err(|_| format!("{name} is {s:?}, not a number"))
}

/// The collector's JetStream back end.
pub struct JetStreamSink {
    c: Connected,
    /// Blocks are decoded (checked) two groups at a time.
    decoders: Arc<Semaphore>,
}

impl JetStreamSink {
    pub fn new(c: Connected) -> Self {
        JetStreamSink {
            c,
            decoders: Arc::new(Semaphore::new(2)),
        }
    }
}

impl Sink for JetStreamSink {
    fn check_agent(&self, cn: &str) -> Result<(), String> {
        // The sinks write the file store's layout: the same names qualify.
        super::names::agent_dir(std::path::Path::new(""), cn).map(|_| ())
    }

    fn open<'a>(
        &'a self,
        cn: &'a str,
        stream: &'a str,
        epoch: u64,
    ) -> BoxFuture<'a, Result<Opened, OpenError>> {
        Box::pin(async move {
            let subject = subject::subject(&self.c.opts.prefix, cn, stream, epoch);
            let (state, at) = last_on_subject(&self.c, &subject).await?;
            let epochs = if at == 0 {
                other_epochs(&self.c, &subject).await
            } else {
                0
            };
            let held = Held {
                state,
                new_epoch: at == 0,
                epochs,
            };
            let s: Box<dyn StreamSink> = Box::new(JsStream {
                c: self.c.clone(),
                decoders: self.decoders.clone(),
                agent: cn.to_string(),
                stream: stream.to_string(),
                subject,
                epoch,
                state,
                at,
            });
            Ok((s, held))
        })
    }
}

struct JsStream {
    c: Connected,
    decoders: Arc<Semaphore>,
    agent: String,
    stream: String,
    subject: String,
    epoch: u64,
    state: EpochState,
    /// Stream sequence of the subject's last message (0: none).
    at: u64,
}

impl StreamSink for JsStream {
    fn write(
        &mut self,
        infos: Vec<BatchInfo>,
        batches: Vec<Batch>,
    ) -> BoxFuture<'_, Result<Written, ConnectionFailure>> {
        Box::pin(async move {
            // Nothing goes into the stream that would not decode.
            let (batches, error) = {
                let _decoding = self
                    .decoders
                    .acquire()
                    .await
                    .map_err(ConnectionFailure::Decoders)?;
                tokio::task::spawn_blocking(move || {
                    let (decoded, error) = decode_group(&batches);
                    let n = decoded.len();
                    let mut batches = batches;
                    batches.truncate(n);
                    (batches, error)
                })
                .await
                .map_err(ConnectionFailure::Task)?
            };
            let mut outcomes = Vec::with_capacity(batches.len());
            let started = std::time::Instant::now();
            for (info, b) in infos.iter().zip(batches) {
                let before = self.state;
                let after = match judge(before, info) {
                    Verdict::Repeat => {
                        outcomes.push(Outcome::Duplicate);
                        continue;
                    }
                    Verdict::Refuse(why) => {
                        outcomes.push(Outcome::Refused(why));
                        break;
                    }
                    Verdict::Next(after) => after,
                };
                match self.publish(info, after, b).await {
                    Ok(()) => outcomes.push(Outcome::Written(before)),
                    Err(e) => {
                        let why = StoreFailure::JetStream(e);
                        let error = Some(Reject::Store { seq: info.seq, why });
                        let took = Some(started.elapsed());
                        return Ok(Written {
                            outcomes,
                            error,
                            took,
                            synced: None,
                        });
                    }
                }
            }
            let took = Some(started.elapsed());
            Ok(Written {
                outcomes,
                error,
                took,
                synced: None,
            })
        })
    }
}

impl JsStream {
    /// Publishes one batch and waits for JetStream to hold it.
    async fn publish(
        &mut self,
        info: &BatchInfo,
        after: EpochState,
        b: Batch,
    ) -> Result<(), JetStreamError> {
        use async_nats::header;
        use async_nats::jetstream::context::PublishErrorKind;
        let mut h = HeaderMap::new();
        let id = subject::msg_id(&self.agent, &self.stream, self.epoch, info.seq);
        h.insert(header::NATS_MESSAGE_ID, id.as_str());
        h.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            self.at.to_string().as_str(),
        );
        h.insert(H_SEQ, info.seq.to_string().as_str());
        h.insert(H_FOLLOWS, info.follows.to_string().as_str());
        h.insert(H_RECORDS, b.records.to_string().as_str());
        h.insert(H_SOURCE_DROPS, after.source_drops.to_string().as_str());
        h.insert(H_AGENT_DROPPED, after.agent_dropped.to_string().as_str());
        let fail = |what, e: Box<dyn std::error::Error + Send + Sync>| JetStreamError::Subject {
            subject: self.subject.clone(),
            what,
            source: e,
        };
        let ack = self
            .c
            .js
            .publish_with_headers(self.subject.clone(), h, b.block.into())
            .await
            .map_err(|e| fail("publishing", Box::new(e)))?
            .await;
        match ack {
            Ok(a) if a.duplicate => {
                // JetStream held this batch already (a publish whose ack
                // was lost): where the subject stands is read again.
                let (state, at) = last_on_subject(&self.c, &self.subject).await?;
                (self.state, self.at) = (state, at);
                Ok(())
            }
            Ok(a) => {
                (self.state, self.at) = (after, a.sequence);
                Ok(())
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(JetStreamError::Raced {
                    subject: self.subject.clone(),
                })
            }
            Err(e) => Err(fail("waiting for the publish ack", Box::new(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_shown_without_their_secrets() {
        let o = JetStreamOptions::new(vec![
            "nats://user:s3cret@n1:4222".into(),
            "tls://tok3n@n2:4222".into(),
            "n3:4222".into(),
        ]);
        let shown = o.shown();
        assert_eq!(shown, "nats://***@n1:4222,tls://***@n2:4222,n3:4222");
        assert!(!shown.contains("s3cret") && !shown.contains("tok3n"));
    }

    #[tokio::test]
    async fn a_server_that_does_not_answer_is_named_without_its_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut o = JetStreamOptions::new(vec![format!("nats://u:s3cret@127.0.0.1:{port}")]);
        o.timeout = Duration::from_millis(500);
        let e = connect(o).await.err().unwrap().to_string();
        assert!(e.contains("***@127.0.0.1") && !e.contains("s3cret"), "{e}");
    }
}
