//! The engine's state between two packets, for checkpoints.

use super::router::Routed;
use crate::flow::{FragSnapshot, TableSnapshot};

/// The engine between two packets: flow tables, fragments, the batch being
/// filled and the output position. A run restored from it gives the records
/// the original run would have given from that point, in the same order.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct EngineState {
    pub(super) tables: Vec<TableSnapshot>,
    pub(super) frag: FragSnapshot,
    pub(super) pending: Vec<Routed>,
    pub(super) in_batch: usize,
    pub(super) now: u64,
    pub(super) packets: u64,
    pub(super) flow_packets: u64,
    pub(super) ip_bytes: u64,
    /// Records handed to the sink before this point: the position in the
    /// record stream a resumed run continues from.
    pub records: u64,
    pub(super) flows: u64,
    pub(super) record_packets: u64,
    pub(super) record_bytes: u64,
}

impl EngineState {
    /// Flows the state holds open.
    pub fn open_flows(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }
}
