//! `[flow]`: the flow table's timeouts and bounds.

use serde::Deserialize;

use super::{ConfigError, Seconds};

/// Durations are seconds (fractions allowed).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    pub idle_timeout: Seconds,
    pub active_timeout: Seconds,
    pub tcp_linger: Seconds,
    /// After FIN both ways, how long (after the flow's last packet) the
    /// ACK of the second FIN is waited for; the linger counts from it.
    pub last_ack_timeout: Seconds,
    pub half_open_timeout: Seconds,
    pub emergency_idle_timeout: Seconds,
    /// Fraction of `max_flows` at which emergency timeouts start.
    pub emergency_threshold: f64,
    pub max_flows: u64,
    pub fragment_timeout: Seconds,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            idle_timeout: Seconds(60.0),
            active_timeout: Seconds(60.0),
            tcp_linger: Seconds(2.0),
            // As long as an idle flow: a record does not depend on the pace
            // of the close, up to the idle timeout.
            last_ack_timeout: Seconds(60.0),
            half_open_timeout: Seconds(10.0),
            emergency_idle_timeout: Seconds(5.0),
            emergency_threshold: 0.9,
            max_flows: 1_000_000,
            fragment_timeout: Seconds(30.0),
        }
    }
}

impl FlowConfig {
    /// Every duration positive, the emergency threshold a fraction.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = self;
        for (key, v) in [
            ("flow.idle_timeout", f.idle_timeout.get()),
            ("flow.active_timeout", f.active_timeout.get()),
            ("flow.tcp_linger", f.tcp_linger.get()),
            ("flow.last_ack_timeout", f.last_ack_timeout.get()),
            ("flow.half_open_timeout", f.half_open_timeout.get()),
            (
                "flow.emergency_idle_timeout",
                f.emergency_idle_timeout.get(),
            ),
            ("flow.fragment_timeout", f.fragment_timeout.get()),
        ] {
            if !v.is_finite() || v <= 0.0 || v > 1e9 {
                return Err(ConfigError::Invalid(format!(
                    "{key} = {v}: must be a positive number of seconds"
                )));
            }
        }
        if !(f.emergency_threshold > 0.0 && f.emergency_threshold <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "flow.emergency_threshold = {}: must be in (0, 1]",
                f.emergency_threshold
            )));
        }
        if f.max_flows == 0 {
            return Err(ConfigError::Invalid(
                "flow.max_flows = 0: must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
