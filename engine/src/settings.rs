//! What the engine is told: partitions, batch size, flow timeouts and bound,
//! the local networks. Durations at the edge; the tables keep nanoseconds
//! (packet time is nanoseconds, and the packet path compares integers).

use std::time::Duration;

use crate::flow::TableConfig;
use crate::net::LocalNets;

/// The flow settings the tables judge packets by; they can change while a
/// run goes on ([`crate::feed::InlineFeed::reconfigure`]).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowSettings {
    pub idle_timeout: Duration,
    pub active_timeout: Duration,
    /// How long a TCP flow lives on after its FIN exchange or RST.
    pub tcp_linger: Duration,
    /// How long a TCP flow with FIN both ways waits for the ACK of the
    /// second FIN, after its last packet; the linger counts from that ACK.
    pub last_ack_timeout: Duration,
    pub half_open_timeout: Duration,
    /// The idle timeout while a table is nearly full.
    pub emergency_idle_timeout: Duration,
    /// How long the first fragment of a datagram waits for the rest.
    pub fragment_timeout: Duration,
    /// Open flows across all partitions.
    pub max_flows: u64,
    /// The share of a partition's bound at which emergency timeouts start.
    pub emergency_threshold: f64,
}

impl FlowSettings {
    /// The settings of one of `partitions` tables: the bound is shared out
    /// (rounded up, at least one flow each).
    pub fn table(&self, partitions: usize) -> TableConfig {
        let max = self.max_flows.div_ceil(partitions as u64).max(1) as usize;
        TableConfig {
            idle_ns: ns(self.idle_timeout),
            active_ns: ns(self.active_timeout),
            tcp_linger_ns: ns(self.tcp_linger),
            last_ack_ns: ns(self.last_ack_timeout),
            half_open_ns: ns(self.half_open_timeout),
            emergency_idle_ns: ns(self.emergency_idle_timeout),
            max_flows: max,
            emergency_at: ((max as f64) * self.emergency_threshold).ceil() as usize,
        }
    }

    pub fn fragment_ns(&self) -> u64 {
        ns(self.fragment_timeout)
    }
}

/// A duration as packet-time nanoseconds; longer than ~584 years saturates.
fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Everything an engine is built from.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Flow-table partitions (a symmetric hash of the key picks one); fixed
    /// for the life of a run and of its checkpoints.
    pub partitions: usize,
    /// Packets per batch: time is ticked and records collected at each
    /// batch boundary, so this (not thread timing) decides the output.
    pub batch_packets: usize,
    /// A batch also closes once its packets span this much packet time
    /// (0: by count only), so a quiet source's records come out with its
    /// next packets, not after `batch_packets` of them; packet time, not a
    /// clock, so the output still depends on the packets only.
    pub batch_ns: u64,
    pub flow: FlowSettings,
    pub local_nets: LocalNets,
}
