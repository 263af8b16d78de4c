//! The board the rooms publish on: the engines, lanes and collector of one
//! process, registered as they start, and what readiness depends on.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::health::Health;
use crate::collect::live::{CollectLive, CollectNow};
use crate::export::ship::{ShipLive, ShipNow};
use crate::export::spool::{Spool, SpoolStats};
use crate::follow::flowlog::live::{FlowlogLive, FlowlogNow};
use crate::pipeline::live::{EngineLive, EngineNow};

/// One lane: its spool (read under its lock, briefly, when asked) and its
/// shipper.
#[derive(Clone)]
pub struct LaneView {
    pub stream: String,
    pub spool: Arc<Mutex<Spool>>,
    pub ship: Arc<ShipLive>,
}

/// A lane at one moment.
#[derive(Clone, Debug, Default)]
pub struct LaneNow {
    pub stream: String,
    pub spool: SpoolStats,
    pub acked_seq: u64,
    /// The number the newest batch got (0: none yet).
    pub last_seq: u64,
    pub oldest_age: Option<f64>,
    pub ship: ShipNow,
}

#[derive(Default)]
pub struct Board {
    engines: Mutex<Vec<(String, Arc<EngineLive>)>>,
    flowlogs: Mutex<Vec<(String, Arc<FlowlogLive>)>>,
    lanes: Mutex<Vec<LaneView>>,
    collector: Mutex<Option<Arc<CollectLive>>>,
    pub health: Health,
}

/// Everything on the board at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub engines: Vec<(String, EngineNow)>,
    /// Flow-log sources: what reading their containers did.
    pub flowlogs: Vec<(String, FlowlogNow)>,
    pub lanes: Vec<LaneNow>,
    pub collector: Option<CollectNow>,
}

impl Board {
    /// An engine for `stream` ("" for the only one); returns what it
    /// publishes on.
    pub fn engine(&self, stream: &str) -> Arc<EngineLive> {
        let live = EngineLive::new();
        if let Ok(mut g) = self.engines.lock() {
            g.push((stream.to_string(), live.clone()));
        }
        live
    }

    /// A flow-log source for `stream`; returns what it publishes on.
    pub fn flowlog(&self, stream: &str) -> Arc<FlowlogLive> {
        let live = Arc::new(FlowlogLive::default());
        if let Ok(mut g) = self.flowlogs.lock() {
            g.push((stream.to_string(), live.clone()));
        }
        live
    }

    pub fn lane(&self, lane: LaneView) {
        if let Ok(mut g) = self.lanes.lock() {
            g.push(lane);
        }
    }

    pub fn collector(&self, live: Arc<CollectLive>) {
        if let Ok(mut g) = self.collector.lock() {
            *g = Some(live);
        }
    }

    pub fn lanes(&self) -> Vec<LaneView> {
        self.lanes.lock().map(|g| g.clone()).unwrap_or_default()
    }

    pub fn snapshot(&self) -> Snapshot {
        let engines = self
            .engines
            .lock()
            .map(|g| g.iter().map(|(s, l)| (s.clone(), l.now())).collect())
            .unwrap_or_default();
        let flowlogs = self
            .flowlogs
            .lock()
            .map(|g| g.iter().map(|(s, l)| (s.clone(), l.now())).collect())
            .unwrap_or_default();
        let now = SystemTime::now();
        let lanes = self
            .lanes()
            .into_iter()
            .map(|l| {
                let (spool, acked_seq, last_seq, oldest) = match l.spool.lock() {
                    Ok(s) => (
                        s.stats(),
                        s.acked(),
                        s.next_seq().saturating_sub(1),
                        s.oldest_waiting_since(),
                    ),
                    Err(_) => Default::default(),
                };
                LaneNow {
                    stream: l.stream.clone(),
                    spool,
                    acked_seq,
                    last_seq,
                    oldest_age: oldest
                        .map(|t| now.duration_since(t).map_or(0.0, |d| d.as_secs_f64())),
                    ship: l.ship.now(),
                }
            })
            .collect();
        let collector = self
            .collector
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|c| c.now()));
        Snapshot {
            engines,
            flowlogs,
            lanes,
            collector,
        }
    }
}
