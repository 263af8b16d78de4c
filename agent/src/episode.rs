//! Runs of the same failure (a collector down, a full disk, a flood of
//! connections): the first is logged, the rest are counted and summarised
//! every few minutes, and the end is logged once — never a line per retry.
//! [`Backoff`] says how long to wait before the next try.

use std::time::{Duration, Instant};

pub struct Episode {
    started: Option<Instant>,
    reported: Instant,
    count: u64,
    every: Duration,
}

/// What to log for a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Say {
    /// The first of a run.
    First,
    /// `count` failures over `over` so far.
    Summary {
        count: u64,
        over: Duration,
    },
    Nothing,
}

impl Episode {
    pub fn new(every: Duration) -> Episode {
        Episode {
            started: None,
            reported: Instant::now(),
            count: 0,
            every,
        }
    }

    pub fn fail(&mut self) -> Say {
        self.fail_at(Instant::now())
    }

    fn fail_at(&mut self, now: Instant) -> Say {
        self.count += 1;
        match self.started {
            None => {
                self.started = Some(now);
                self.reported = now;
                Say::First
            }
            Some(t) if now.duration_since(self.reported) >= self.every => {
                self.reported = now;
                Say::Summary {
                    count: self.count,
                    over: now.duration_since(t),
                }
            }
            Some(_) => Say::Nothing,
        }
    }

    /// The run is over: how many failures it had and how long it lasted.
    pub fn recover(&mut self) -> Option<(u64, Duration)> {
        let t = self.started.take()?;
        let n = std::mem::take(&mut self.count);
        Some((n, t.elapsed()))
    }
}

/// Capped exponential backoff: `first`, doubling after each failure, up to
/// `cap`; a success starts it over.
pub struct Backoff {
    first: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            cap: cap.max(first),
            failures: 0,
        }
    }

    /// One more failure: how long to wait before the next try.
    pub fn fail(&mut self) -> Duration {
        let wait = self
            .first
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_starts_over() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let waits: Vec<Duration> = (0..5).map(|_| b.fail()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.fail(), ms(100));
    }

    #[test]
    fn first_then_summaries_then_the_end() {
        let mut e = Episode::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(e.fail_at(t), Say::First);
        assert_eq!(e.fail_at(t + Duration::from_secs(1)), Say::Nothing);
        assert_eq!(
            e.fail_at(t + Duration::from_secs(61)),
            Say::Summary {
                count: 3,
                over: Duration::from_secs(61)
            }
        );
        assert_eq!(e.fail_at(t + Duration::from_secs(62)), Say::Nothing);
        assert_eq!(e.recover().map(|r| r.0), Some(4));
        assert_eq!(e.recover(), None);
        assert_eq!(e.fail_at(t + Duration::from_secs(70)), Say::First);
    }
}
