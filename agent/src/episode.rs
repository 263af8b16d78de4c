//! Runs of the same failure (a collector down, a full disk, a flood of
//! connections): the first is logged, the rest are counted and summarised
//! every few minutes, and the end is logged once — never a line per retry.

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

#[cfg(test)]
mod tests {
    use super::*;

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
