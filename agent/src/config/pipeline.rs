//! `[pipeline]`: threads, partitions, batch length.

use serde::Deserialize;

use super::{ConfigError, Seconds};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Flow shard threads; 0 picks one less than the number of cores (at least 1).
    pub threads: usize,
    /// Fixed flow-table partitions spread over the shards. Output never depends
    /// on `threads`, because partitions, not threads, own flows.
    pub partitions: usize,
    /// Packets per batch; timeouts are checked at every batch boundary.
    /// Live capture uses at most 256 (and also ticks on time).
    pub batch_packets: usize,
    /// A batch also closes once its packets span this much packet time (0:
    /// by count only), so a quiet source's records come out with its next
    /// packets, not after `batch_packets` of them.
    pub batch_time: Seconds,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            threads: 0,
            partitions: 16,
            batch_packets: 4096,
            batch_time: Seconds(5.0),
        }
    }
}

impl PipelineConfig {
    /// Threads, partitions and batch length in their ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = self;
        if p.threads > 256 {
            return Err(ConfigError::Invalid(format!(
                "pipeline.threads = {}: at most 256",
                p.threads
            )));
        }
        if p.partitions == 0 || p.partitions > 4096 {
            return Err(ConfigError::Invalid(format!(
                "pipeline.partitions = {}: must be in 1..=4096",
                p.partitions
            )));
        }
        Seconds::all_within_bounds(&[("pipeline.batch_time", p.batch_time)])?;
        if p.batch_packets == 0 || p.batch_packets > 1 << 20 {
            return Err(ConfigError::Invalid(format!(
                "pipeline.batch_packets = {}: must be in 1..=1048576",
                p.batch_packets
            )));
        }
        Ok(())
    }
}
