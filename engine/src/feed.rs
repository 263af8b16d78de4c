//! What a packet source feeds: [`Feed`] for any engine, [`InlineFeed`] for
//! an inline one, which can also be reconfigured, checkpointed and ended at
//! will between two packets.

use std::collections::BTreeMap;

use vmflow_proto::EndReason;

pub use crate::batch::TablesNow;
use crate::error::EngineError;
use crate::packet::RawPacket;
use crate::settings::Settings;
use crate::state::EngineState;

/// What a packet source hands packets (and, for live sources, time) to.
pub trait Feed {
    fn packet(&mut self, p: RawPacket<'_>);
    /// Packet time has reached `now_ns` without a packet (live sources):
    /// close the current batch and run every timeout due by then.
    fn tick(&mut self, now_ns: u64);
    /// The source saw nothing between these packet times although traffic
    /// may have flowed: flows open then are marked `gap`. Travels in the
    /// packet stream, so it changes no batch boundary.
    fn gap(&mut self, start_ns: u64, end_ns: u64);
    /// What the engine has counted so far, for whoever watches a long run
    /// (metrics, a periodic stats line). Meant for between packets, a few
    /// times a second at most: it builds the map of skip reasons.
    fn progress(&self) -> Progress {
        Progress::default()
    }
}

/// The engine's counts while it runs (its final ones are `Counts`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Packets fed.
    pub packets: u64,
    /// Packets that reached the flow tables, and their IP-layer bytes.
    pub flow_packets: u64,
    pub ip_bytes: u64,
    /// Packets left out, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Flows in the tables now and flows evicted at the bound so far: known
    /// only when the tables are on the feeding thread (an inline engine).
    pub tables: Option<TablesNow>,
}

/// An engine running on the caller's thread: besides packets it can be
/// reconfigured, checkpointed and ended at will, which a threaded run cannot
/// do between two packets.
pub trait InlineFeed: Feed {
    /// Applies new flow settings (timeouts, bound, local networks) without
    /// losing a flow. The partition count cannot change.
    fn reconfigure(&mut self, settings: &Settings) -> Result<(), EngineError>;
    /// Hands every record produced so far to durable storage and returns the
    /// engine's whole state, to resume from later as if never stopped.
    fn checkpoint(&mut self) -> Result<EngineState, EngineError>;
    /// Ends every open flow now, e.g. before a last checkpoint.
    fn end_flows(&mut self, reason: EndReason);
    /// The run ends without ending its open flows: they live on in the last
    /// checkpoint.
    fn keep_open(&mut self);
}
