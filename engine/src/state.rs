//! The engine's state between two packets, for checkpoints.

use crate::batch::Routed;
use crate::flow::{FragSnapshot, TableSnapshot};

/// The engine between two packets: flow tables, fragments, the batch being
/// filled and the output position. A run restored from it gives the records
/// the original run would have given from that point, in the same order.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct EngineState {
    pub(crate) tables: Vec<TableSnapshot>,
    pub(crate) frag: FragSnapshot,
    pub(crate) pending: Vec<Routed>,
    pub(crate) in_batch: usize,
    pub(crate) now: u64,
    pub(crate) packets: u64,
    pub(crate) flow_packets: u64,
    pub(crate) ip_bytes: u64,
    /// Records handed to the sink before this point: the position in the
    /// record stream a resumed run continues from.
    pub records: u64,
    pub(crate) flows: u64,
    pub(crate) record_packets: u64,
    pub(crate) record_bytes: u64,
    /// Packet time when the batch being filled began (see `Settings::batch_ns`).
    /// Last: older checkpoints restore with 0.
    #[serde(default)]
    pub(crate) batch_start: u64,
}

impl EngineState {
    /// Flows the state holds open.
    pub fn open_flows(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }
}
