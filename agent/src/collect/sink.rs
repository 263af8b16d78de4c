//! Where the collector puts what agents send: the one seam between the
//! protocol driver (`collect::connection`) and durability. A back end takes
//! a group of batches of one agent stream durably and says where each
//! epoch of the stream stands; the driver decides nothing about storage.
//!
//! Back ends: the file store (`files`, the default: hourly NDJSON files and
//! a state file per stream) and a JetStream stream (`jetstream`: no local
//! state, any collector can serve any agent). A Kafka back end would be a
//! third implementation of these two traits.

use std::future::Future;
use std::pin::Pin;

use vmflow_proto::Batch;

use super::error::{ConnectionFailure, OpenError, Refusal, StoreFailure};
use super::store::{BatchInfo, Decoded, EpochState, Outcome, HOUR_NS};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A submitted group's result: resolves once the group is durable (or
/// failed).
pub type Pending = BoxFuture<'static, Result<Written, ConnectionFailure>>;

/// An opened stream epoch and where it stands.
pub type Opened = (Box<dyn StreamSink>, Held);

/// A back end: opens agent streams.
pub trait Sink: Send + Sync + 'static {
    /// Why an agent (its certificate's common name) cannot be served, told
    /// before its hello is read.
    fn check_agent(&self, cn: &str) -> Result<(), String>;

    /// One epoch of an agent's stream (`""`: its default stream), as a
    /// connection writes it, and where that epoch stands now.
    fn open<'a>(
        &'a self,
        cn: &'a str,
        stream: &'a str,
        epoch: u64,
    ) -> BoxFuture<'a, Result<Opened, OpenError>>;
}

/// One connection's agent stream epoch.
pub trait StreamSink: Send {
    /// Makes a group of consecutive batches durable (the batches as the
    /// agent sent them, `infos` what the store needs of each), deciding for
    /// each whether it is new, a repeat or refused, as
    /// [`super::store::StreamStore::write_batches`] does.
    fn write(
        &mut self,
        infos: Vec<BatchInfo>,
        batches: Vec<Batch>,
    ) -> BoxFuture<'_, Result<Written, ConnectionFailure>>;

    /// Takes a group to be made durable after the groups submitted before
    /// it, returning once the back end has taken it, with what resolves when
    /// it is durable: the connection reads its next group meanwhile. A group
    /// submitted after one that failed or was refused is not written. The
    /// default writes the group whole before returning (no pipelining).
    fn submit(
        &mut self,
        infos: Vec<BatchInfo>,
        batches: Vec<Batch>,
    ) -> BoxFuture<'_, Result<Pending, ConnectionFailure>> {
        Box::pin(async move {
            let written = self.write(infos, batches).await;
            Ok(Box::pin(std::future::ready(written)) as Pending)
        })
    }
}

/// Where an epoch of a stream stands when a connection opens it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Held {
    pub state: EpochState,
    /// Nothing is held of this epoch.
    pub new_epoch: bool,
    /// Epochs of the stream held before (0 when the back end cannot tell).
    pub epochs: usize,
}

/// What a group commit came to: the outcomes of the batches it looked at,
/// and the error that stopped it, if any (after the outcomes).
pub struct Written {
    pub outcomes: Vec<Outcome>,
    pub error: Option<Reject>,
    /// How long making the group durable took (writes and fsyncs, or
    /// publish acks), when it was tried: the commit latency metric.
    pub took: Option<std::time::Duration>,
    /// How much of that was fsync (file store; counted once per commit).
    pub synced: Option<std::time::Duration>,
}

pub enum Reject {
    /// A batch itself is bad (the agent's fault).
    Bad(Refusal),
    /// The back end failed to make batch `seq` durable.
    Store { seq: u64, why: StoreFailure },
}

/// Decodes each batch's block (the back ends keep nothing that does not
/// decode): the records and observations, or the refusal of the first batch
/// that fails.
pub fn decode_group(batches: &[Batch]) -> (Vec<Decoded>, Option<Reject>) {
    let mut decoded = Vec::with_capacity(batches.len());
    for b in batches {
        match vmflow_proto::decode_block(&b.block) {
            Ok((r, _)) if r.len() != b.records as usize => {
                let why = Refusal::RecordCount {
                    seq: b.seq,
                    claims: b.records,
                    holds: r.len(),
                };
                return (decoded, Some(Reject::Bad(why)));
            }
            Ok((records, observations)) => match observation_hours(&observations) {
                Ok(hours) => decoded.push(Decoded {
                    records,
                    observations,
                    hours,
                }),
                Err((line, why)) => {
                    let why = Refusal::BadObservation {
                        seq: b.seq,
                        line,
                        why,
                    };
                    return (decoded, Some(Reject::Bad(why)));
                }
            },
            Err(source) => {
                let why = Refusal::BadBlock { seq: b.seq, source };
                return (decoded, Some(Reject::Bad(why)));
            }
        }
    }
    (decoded, None)
}

/// The hour (of its `first_ns`) of each observation line; an observation
/// that is not a JSON object with one is refused (line numbers from 1).
fn observation_hours(lines: &[u8]) -> Result<Vec<u64>, (usize, String)> {
    #[derive(serde::Deserialize)]
    struct Head {
        first_ns: u64,
    }
    lines
        .split_inclusive(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_slice::<Head>(l)
                .map(|h| h.first_ns / HOUR_NS)
                .map_err(|e| (i + 1, e.to_string()))
        })
        .collect()
}
