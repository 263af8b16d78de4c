//! The flow engine: fragments are attributed to their flows, then a sans-IO
//! flow table turns packets and time into flow records.

mod frag;
mod index;
mod stored_key;
mod table;
#[cfg(test)]
mod table_tests;

pub use crate::packet::{from_ip, to_ip, FlowKey, Packet};
pub use frag::{FragSnapshot, FragStats, FragTable};
pub use index::prefetch;
pub use table::{Event, FlowTable, TableConfig, TableSnapshot, TableStats};
