//! How a followed source tells its failures (a missing folder, an
//! unreachable account): the first, then a summary every five minutes while
//! they last, then their end — in the same words for every followed source.

use std::fmt::Display;
use std::time::Duration;

use crate::episode::{Episode, Say};

pub struct Failures {
    episode: Episode,
}

impl Default for Failures {
    fn default() -> Failures {
        Failures {
            episode: Episode::new(Duration::from_secs(300)),
        }
    }
}

impl Failures {
    /// A step of source `key` failed with `e`; it will be retried.
    pub fn failed(&mut self, key: &str, e: &dyn Display) {
        match self.episode.fail() {
            Say::First => {
                tracing::error!("{e}; retrying (further failures are summarised every 5 minutes)")
            }
            Say::Summary { count, over } => tracing::error!(
                "{key}: still failing: {count} attempts in {} s; last: {e}",
                over.as_secs()
            ),
            Say::Nothing => tracing::debug!("{e}; retrying"),
        }
    }

    /// A step of source `key` worked: a run of failures, if any, is over.
    pub fn succeeded(&mut self, key: &str) {
        if let Some((n, over)) = self.episode.recover() {
            tracing::info!(
                "{key}: recovered after {n} failed attempts over {:.1} s",
                over.as_secs_f64()
            );
        }
    }
}
