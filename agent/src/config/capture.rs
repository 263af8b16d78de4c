//! `[capture.live]`: live capture on network interfaces.

use serde::Deserialize;

use super::{ConfigError, Seconds};

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Live capture on network interfaces; `vmflow run` uses it instead of
    /// `source.files` when present.
    pub live: Option<LiveConfig>,
}

/// A live capture ring per interface: this many blocks of this many KiB
/// (see `capture::live`: few, large blocks keep wake-ups rare).
pub const DEFAULT_RING_BLOCKS: usize = 4;
pub const DEFAULT_RING_BLOCK_KIB: usize = 8 << 10;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Empty: every interface that is up, not loopback and has an address.
    pub interfaces: Vec<String>,
    pub snaplen: u32,
    pub promiscuous: bool,
    /// Kernel ring per interface, in MiB, split into 4 blocks.
    pub ring_mib: usize,
    /// On SIGTERM, how long to wait for the collector to acknowledge the
    /// last records before leaving them in the spool.
    pub shutdown_grace: Seconds,
    /// A capture filter in tcpdump's language (`not port 22`), compiled by
    /// libpcap and run by the kernel on each interface's socket: only
    /// matching packets are captured (and counted). Read at start.
    pub filter: Option<String>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            interfaces: Vec::new(),
            snaplen: 128,
            promiscuous: false,
            ring_mib: DEFAULT_RING_BLOCKS * DEFAULT_RING_BLOCK_KIB / 1024,
            shutdown_grace: Seconds(5.0),
            filter: None,
        }
    }
}

impl LiveConfig {
    /// Snap length, ring size and grace in their ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = self;
        if !(64..=262_144).contains(&l.snaplen) {
            return Err(ConfigError::Invalid(format!(
                "capture.live.snaplen = {}: must be in 64..=262144",
                l.snaplen
            )));
        }
        if !(1..=4096).contains(&l.ring_mib) {
            return Err(ConfigError::Invalid(format!(
                "capture.live.ring_mib = {}: must be in 1..=4096",
                l.ring_mib
            )));
        }
        if !(l.shutdown_grace.get().is_finite() && l.shutdown_grace.get() >= 0.0) {
            return Err(ConfigError::Invalid(format!(
                "capture.live.shutdown_grace = {}: must be non-negative seconds",
                l.shutdown_grace
            )));
        }
        Ok(())
    }
}
