//! A duration in the configuration: seconds, fractions allowed. Turned into
//! nanoseconds or a `Duration` here and nowhere else, with one rounding rule.

use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, PartialOrd)]
#[serde(transparent)]
pub struct Seconds(pub f64);

impl Seconds {
    /// As written, for validation and messages.
    pub fn get(self) -> f64 {
        self.0
    }

    /// To the nearest nanosecond (packet time is counted in them). Validation
    /// keeps the value finite, non-negative and at most 1e9 s, so it fits.
    pub fn ns(self) -> u64 {
        (self.0 * 1e9).round() as u64
    }

    pub fn duration(self) -> Duration {
        Duration::from_nanos(self.ns())
    }
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
