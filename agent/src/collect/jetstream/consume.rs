//! `vmflow sink`: a durable pull consumer of the stream writing the file
//! store's hourly NDJSON files (through [`FileSink`], the collector's own
//! file back end), exactly once across its own restarts:
//!
//! - Messages are written in stream order; a group is committed (files
//!   synced, then the stream's state file replaced) before any of its
//!   messages is acknowledged. A crash in between leaves uncommitted bytes,
//!   which the store cuts back when it opens, and unacknowledged messages,
//!   which come again and are repeats to the store (each agent stream's
//!   state holds its last batch), acknowledged without being written.
//! - Acknowledgements go in stream order, so the consumer's ack floor is
//!   the last message of a committed group. On start the durable consumer
//!   is made afresh to deliver from just after its ack floor: messages
//!   delivered but not acknowledged before a crash come first and in order,
//!   instead of after JetStream's ack wait, behind newer ones the store
//!   would refuse as not following. So is a consumer whose messages skip
//!   a stream sequence (a message delivered and lost with a NATS server):
//!   from the missing one.
//!
//! Sharing the work: each sink process owns one durable consumer (two
//! processes on one consumer would interleave an agent stream's batches).
//! `--shard I/N` gives sink I of N its own consumer `<durable>-I-of-N` and
//! the agents whose name hashes to I; the others' messages are acknowledged
//! and skipped. Shards write disjoint agent directories, so they may share
//! one output directory or each have its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::Message;
use futures_util::StreamExt;
use vmflow_proto::Batch;

use super::subject::{self, Named};
use super::{header_u64, Connected, JetStreamError};
use super::{H_FOLLOWS, H_RECORDS, H_SEQ, H_SOURCE_DROPS};
use crate::collect::files::FileSink;
use crate::collect::sink::{Reject, Sink, StreamSink};
use crate::collect::store::{BatchInfo, Outcome};

#[derive(Clone, Debug)]
pub struct SinkOptions {
    pub out: PathBuf,
    /// The durable consumer's name.
    pub durable: String,
    /// `(i, n)`: this sink takes the agents that hash to `i` of `n`.
    pub shard: Option<(u32, u32)>,
    /// Messages committed together, at most.
    pub group: usize,
    /// How the files hold records.
    pub store: crate::collect::store::StoreFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
    #[error("{0}")]
    Open(#[from] crate::collect::OpenError),
    /// The store refused or could not write a batch of the stream.
    #[error("{subject} batch {seq} (stream message {stream_seq}): {why}")]
    Write {
        subject: String,
        seq: u64,
        stream_seq: u64,
        why: String,
    },
}

/// What a sink did (printed when it stops).
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkStats {
    pub messages: u64,
    pub batches_written: u64,
    pub repeats: u64,
    pub records: u64,
    pub skipped: u64,
}

/// Consumes until `stop` resolves or something fails.
pub async fn run(
    c: Connected,
    opts: SinkOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<SinkStats, SinkError> {
    let name = match opts.shard {
        Some((i, n)) => format!("{}-{i}-of-{n}", opts.durable),
        None => opts.durable.clone(),
    };
    let files = FileSink::new(opts.out.clone(), crate::disk::real(), opts.store);
    let mut open: HashMap<Named, Box<dyn StreamSink>> = HashMap::new();
    let mut stats = SinkStats::default();
    tokio::pin!(stop);
    // Where the consumer is (re)made to start: from its ack floor first.
    let mut from = None;
    loop {
        let mut messages = messages(&c, &name, from, opts.group).await?;
        // The stream sequence expected next. The consumer's filter takes
        // every subject of the stream, so its messages come with
        // consecutive sequences; one missing was delivered and lost on
        // the way (a NATS server gone with it), and would come again only
        // after the ack wait, behind later batches the store would refuse
        // as not following. So the consumer is made afresh from the
        // missing one. What comes first after that is taken as it is
        // (messages removed by the stream's limits never come).
        let mut next: Option<u64> = None;
        let gap = loop {
            let first = tokio::select! {
                m = messages.next() => m,
                _ = &mut stop => return Ok(stats),
            };
            let mut group = match first {
                Some(Ok(m)) => vec![m],
                Some(Err(e)) => {
                    // Missed heartbeats (the cluster away) and the like:
                    // the messages carry on once it is back.
                    tracing::warn!("JetStream consumer {name}: {e}");
                    continue;
                }
                None => break None,
            };
            // Whatever else has arrived joins the group (one commit).
            while group.len() < opts.group.max(1) {
                match tokio::time::timeout(Duration::from_millis(2), messages.next()).await {
                    Ok(Some(Ok(m))) => group.push(m),
                    Ok(Some(Err(e))) => {
                        tracing::warn!("JetStream consumer {name}: {e}");
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            let mut missing = None;
            for (i, m) in group.iter().enumerate() {
                let seq = stream_seq(m);
                match next {
                    Some(n) if seq > n => {
                        missing = Some((i, n));
                        break;
                    }
                    // A message delivered again: a repeat to the store.
                    Some(n) if seq < n => {}
                    _ => {
                        if let (None, Some(f)) = (next, from) {
                            if seq > f {
                                tracing::warn!(
                                    "JetStream stream {}: messages {f}..{} are gone (the stream's limits removed them before this sink took them)",
                                    c.opts.stream,
                                    seq - 1
                                );
                            }
                        }
                        next = Some(seq + 1);
                    }
                }
            }
            if let Some((i, _)) = missing {
                // The ones from the gap on come again.
                group.truncate(i);
            }
            commit(&c, &files, &mut open, &opts, &group, &mut stats).await?;
            // In stream order, after the commit (see the module's docs).
            for m in &group {
                if let Err(e) = m.ack().await {
                    // Not acknowledged: it comes again and is a repeat.
                    tracing::warn!("JetStream consumer {name}: acknowledging: {e}");
                }
            }
            stats.messages += group.len() as u64;
            if let Some((_, n)) = missing {
                break Some(n);
            }
        };
        let Some(n) = gap else {
            return Err(JetStreamError::Request {
                stream: c.opts.stream.clone(),
                what: "consuming",
                source: "the message stream ended".into(),
            }
            .into());
        };
        tracing::info!(
            "JetStream consumer {name}: message {n} did not come (lost in delivery); delivering again from it"
        );
        from = Some(n);
    }
}

fn stream_seq(m: &Message) -> u64 {
    m.info().map(|i| i.stream_sequence).unwrap_or(0)
}

/// The consumer's messages, the consumer made afresh (see
/// [`fresh_consumer`]).
async fn messages(
    c: &Connected,
    name: &str,
    from: Option<u64>,
    group: usize,
) -> Result<pull::Stream, JetStreamError> {
    let consumer = fresh_consumer(c, name, from).await?;
    consumer
        .stream()
        .max_messages_per_batch(group.max(1))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| JetStreamError::Request {
            stream: c.opts.stream.clone(),
            what: "consuming",
            source: Box::new(e),
        })
}

/// The durable consumer, made afresh to deliver from `from`, or without
/// it from just after its ack floor (from the stream's start if there was
/// none). A cluster that just lost a server may take seconds to carry out
/// the deletion or to take the new consumer: tried again for up to a
/// minute.
async fn fresh_consumer(
    c: &Connected,
    name: &str,
    from: Option<u64>,
) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, JetStreamError> {
    let mut wait = Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match try_fresh_consumer(c, name, from).await {
            Ok(consumer) => return Ok(consumer),
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!("JetStream consumer {name}: {e}; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn try_fresh_consumer(
    c: &Connected,
    name: &str,
    from: Option<u64>,
) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>, JetStreamError> {
    let req = |what, e: Box<dyn std::error::Error + Send + Sync>| JetStreamError::Request {
        stream: c.opts.stream.clone(),
        what,
        source: e,
    };
    let stream =
        c.js.get_stream_no_info(&c.opts.stream)
            .await
            .map_err(|e| req("finding it", Box::new(e)))?;
    let floor = match stream.consumer_info(name).await {
        Ok(info) => {
            let floor = info.ack_floor.stream_sequence;
            stream
                .delete_consumer(name)
                .await
                .map_err(|e| req("replacing the consumer", Box::new(e)))?;
            floor
        }
        Err(_) => 0,
    };
    let start = from.unwrap_or(floor + 1);
    let deliver_policy = if start <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: start,
        }
    };
    tracing::info!(
        "JetStream consumer {name} on {}: delivering from message {start}",
        c.opts.stream
    );
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.to_string()),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            filter_subject: format!("{}.>", c.opts.prefix),
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .map_err(|e| req("creating the consumer", Box::new(e)))
}

/// A message as the store sees it, or why it is not one of vmflow's.
fn batch_of(prefix: &str, m: &Message) -> Result<(Named, BatchInfo, Batch), String> {
    let named = subject::parse(prefix, &m.subject).ok_or("not a vmflow subject")?;
    let h = m.headers.as_ref();
    let seq = header_u64(h, H_SEQ)?;
    let follows = header_u64(h, H_FOLLOWS)?;
    let source_drops = header_u64(h, H_SOURCE_DROPS)?;
    let records = u32::try_from(header_u64(h, H_RECORDS)?).map_err(|_| "too many records")?;
    let info = BatchInfo {
        epoch: named.epoch,
        seq,
        follows,
        source_drops,
    };
    let batch = Batch {
        seq,
        records,
        block: m.payload.to_vec(),
        source_drops,
        follows: Some(follows),
    };
    Ok((named, info, batch))
}

fn in_shard(agent: &str, shard: Option<(u32, u32)>) -> bool {
    match shard {
        Some((i, n)) => crc32fast::hash(agent.as_bytes()) % n == i,
        None => true,
    }
}

/// Consecutive messages of one agent stream epoch: their batches and
/// stream sequences.
struct Run {
    named: Named,
    infos: Vec<BatchInfo>,
    batches: Vec<Batch>,
    seqs: Vec<u64>,
}

/// Writes a group of messages, each run of one agent stream epoch with one
/// commit.
async fn commit(
    c: &Connected,
    files: &FileSink,
    open: &mut HashMap<Named, Box<dyn StreamSink>>,
    opts: &SinkOptions,
    group: &[Message],
    stats: &mut SinkStats,
) -> Result<(), SinkError> {
    let mut run: Option<Run> = None;
    let mut runs = Vec::new();
    for m in group {
        let (named, info, batch) = match batch_of(&c.opts.prefix, m) {
            Ok(b) => b,
            Err(why) => {
                tracing::warn!(
                    "JetStream stream {}, message {} ({}): {why}; skipped",
                    c.opts.stream,
                    stream_seq(m),
                    m.subject
                );
                stats.skipped += 1;
                continue;
            }
        };
        if !in_shard(&named.agent, opts.shard) {
            stats.skipped += 1;
            continue;
        }
        match &mut run {
            Some(r) if r.named == named => {
                r.infos.push(info);
                r.batches.push(batch);
                r.seqs.push(stream_seq(m));
            }
            _ => {
                runs.extend(run.take());
                run = Some(Run {
                    named,
                    infos: vec![info],
                    batches: vec![batch],
                    seqs: vec![stream_seq(m)],
                });
            }
        }
    }
    runs.extend(run);
    for Run {
        named,
        infos,
        batches,
        seqs,
    } in runs
    {
        let subject = subject::subject(&c.opts.prefix, &named.agent, &named.stream, named.epoch);
        if !open.contains_key(&named) {
            let (s, _) = files.open(&named.agent, &named.stream, named.epoch).await?;
            open.insert(named.clone(), s);
        }
        let Some(s) = open.get_mut(&named) else {
            continue;
        };
        let records: Vec<u32> = batches.iter().map(|b| b.records).collect();
        let fail = |i: usize, why: String| SinkError::Write {
            subject: subject.clone(),
            seq: infos.get(i).map_or(0, |b| b.seq),
            stream_seq: seqs.get(i).copied().unwrap_or(0),
            why,
        };
        let written = match s.write(infos.clone(), batches).await {
            Ok(w) => w,
            Err(e) => {
                open.remove(&named);
                return Err(fail(0, e.to_string()));
            }
        };
        for (i, o) in written.outcomes.iter().enumerate() {
            match o {
                Outcome::Written(_) => {
                    stats.batches_written += 1;
                    stats.records += u64::from(records[i]);
                }
                Outcome::Duplicate => stats.repeats += 1,
                Outcome::Refused(why) => return Err(fail(i, why.clone())),
            }
        }
        match written.error {
            None => {}
            Some(Reject::Bad(why)) => return Err(fail(written.outcomes.len(), why.to_string())),
            Some(Reject::Store { why, .. }) => {
                // The store reopens (and cuts back) on the next start.
                open.remove(&named);
                return Err(fail(written.outcomes.len(), why.to_string()));
            }
        }
    }
    Ok(())
}
