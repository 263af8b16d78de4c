//! What a followed flow-log container has done so far, for whoever watches
//! it (the metrics endpoint, the stats line). The runner publishes after
//! each read, never per tuple.

use std::sync::Mutex;

use super::FlowlogStats;
use crate::flowlog::StitchStats;

/// The source's counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowlogNow {
    pub read: FlowlogStats,
    pub stitch: StitchStats,
    pub open_flows: u64,
}

#[derive(Debug, Default)]
pub struct FlowlogLive {
    now: Mutex<FlowlogNow>,
}

impl FlowlogLive {
    pub fn publish(&self, now: FlowlogNow) {
        if let Ok(mut g) = self.now.lock() {
            *g = now;
        }
    }

    pub fn now(&self) -> FlowlogNow {
        self.now.lock().map(|g| *g).unwrap_or_default()
    }
}
