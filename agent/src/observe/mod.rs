//! Observations at the edge: what the flow records say about failed
//! access, services exposed to outside addresses, watchlisted peers and
//! scans, raised as their own stream with the flows as evidence.
//! `observer` is sans-IO (records in, observations out, packet time only);
//! `sink` puts it behind the record stream.

mod carried;
mod enrich;
mod observer;
mod reload;
mod sink;
mod watchlist;

use std::net::IpAddr;

use serde::Serialize;
use vmflow_proto::Direction;

pub use carried::Carried;
pub use enrich::{EnrichError, Enricher, Place};
pub use observer::{Observer, ObserverState, ObserverStats};
pub use reload::{Reload, Reloaded};
pub use sink::{ObservingSink, StateSlot};
pub use watchlist::{Watchlist, WatchlistError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    FailedAccess,
    ExposedService,
    Watchlist,
    Scan,
    NewCountry,
}

/// One observation: one NDJSON line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Observation {
    pub kind: Kind,
    /// Packet time of the first and last evidence.
    pub first_ns: u64,
    pub last_ns: u64,
    /// The local service (a scan over several has none).
    pub local_addr: Option<IpAddr>,
    pub local_port: Option<u16>,
    pub remote_addr: IpAddr,
    /// Where the remote is, if `[enrich]` databases know it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_asn: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_as_org: Option<String>,
    pub proto: u8,
    /// Attempts, targets or records, by kind.
    pub count: u64,
    /// Flows that show it (at most `[observe] evidence` of them).
    pub flow_ids: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchlist: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    pub summary: String,
}

impl Observation {
    /// The fields an observation takes from the record that raised it
    /// (times, protocol, the flow as evidence); the kind-specific ones are
    /// set over it.
    fn base(r: &vmflow_proto::FlowRecord) -> Observation {
        Observation {
            kind: Kind::Watchlist,
            first_ns: r.first_ns,
            last_ns: r.last_ns,
            local_addr: None,
            local_port: None,
            remote_addr: r.src_addr,
            remote_country: None,
            remote_asn: None,
            remote_as_org: None,
            proto: r.proto,
            count: 1,
            flow_ids: vec![r.flow_id],
            watchlist: None,
            direction: None,
            bytes: None,
            summary: String::new(),
        }
    }
}

/// The lists of `[[watchlist]]`, loaded.
pub fn load_watchlists(
    cfg: &[crate::config::WatchlistConfig],
) -> Result<Vec<Watchlist>, WatchlistError> {
    cfg.iter()
        .map(|w| Watchlist::load(&w.name, &w.file))
        .collect()
}
