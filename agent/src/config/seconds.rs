//! A duration in the configuration: seconds, fractions allowed. Turned into
//! nanoseconds or a `Duration` here and nowhere else, with one rounding rule.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, PartialOrd)]
#[serde(transparent)]
pub struct Seconds(pub f64);

impl Seconds {
    /// As written, for validation and messages.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Each `(key, value)` is finite and within 0..=1e9 s (the followed
    /// sources' intervals and windows); the first that is not is named.
    pub fn all_within_bounds(keyed: &[(&str, Seconds)]) -> Result<(), ConfigError> {
        for &(key, Seconds(v)) in keyed {
            if !(v.is_finite() && (0.0..=1e9).contains(&v)) {
                return Err(ConfigError::Invalid(format!(
                    "{key} = {v}: must be a non-negative number of seconds"
                )));
            }
        }
        Ok(())
    }

    /// To the nearest nanosecond (packet time is counted in them). Validation
    /// keeps every value non-negative; a huge one saturates (float-to-integer
    /// casts do) to the longest duration rather than panicking.
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
