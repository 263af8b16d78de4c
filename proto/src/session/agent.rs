//! The agent's side of a connection: says hello, learns where the collector
//! stands, sends batches in a bounded window, and watches the collector's
//! acks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::{
    check_version, encode_frame, Batch, Frame, FrameDecoder, Heartbeat, Hello, SessionError,
};

/// What an agent session is set up with.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The first frame, sent as it is (`version` is normally
    /// [`crate::PROTOCOL_VERSION`]).
    pub hello: Hello,
    /// Unacknowledged batches in flight, at most.
    pub window: usize,
    /// Batches in flight and no ack for this long: the session fails.
    pub ack_timeout: Duration,
    /// A heartbeat goes out at this interval once connected, busy or not.
    /// Must be non-zero.
    pub heartbeat: Duration,
}

/// What happened, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// The collector answered hello: it holds every batch up to `last_seq`
    /// (0: none). Sending resumes after it.
    Connected { last_seq: u64 },
    /// The collector holds every batch up to `seq` (cumulative; reported for
    /// every ack, also one that frees nothing).
    Acked { seq: u64 },
    /// The session is over; nothing more is sent or reported.
    Lost(SessionError),
}

/// A batch offered while the session could not take it (not connected yet,
/// the window full, or the session over), handed back unsent.
#[derive(Debug, thiserror::Error)]
#[error("batch {} not sent: the window is full or the session is not open", .0.seq)]
pub struct Blocked(pub Batch);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hello queued; waiting for `hello_ack`.
    Hello,
    Connected,
    Closed,
}

/// The agent's protocol state for one connection.
pub struct AgentSession {
    window: usize,
    ack_timeout: Duration,
    heartbeat: Duration,
    state: State,
    dec: FrameDecoder,
    transmit: VecDeque<Frame>,
    events: VecDeque<AgentEvent>,
    /// The last batch the collector has (or will have, in order): the next
    /// one names it, so the collector can tell a declared gap from a lost
    /// batch. Starts at the collector's `last_seq`.
    last_sent: u64,
    in_flight: VecDeque<u64>,
    /// Since when the oldest unacknowledged batch waits: set when a batch
    /// goes into an empty window and at every ack, not by heartbeats.
    ack_clock: Instant,
    next_heartbeat: Instant,
}

impl AgentSession {
    /// A session whose hello is ready for [`poll_transmit`](Self::poll_transmit).
    ///
    /// # Panics
    /// If `config.heartbeat` is zero.
    pub fn new(config: AgentConfig, now: Instant) -> Self {
        assert!(
            !config.heartbeat.is_zero(),
            "the heartbeat interval must be non-zero"
        );
        AgentSession {
            window: config.window,
            ack_timeout: config.ack_timeout,
            heartbeat: config.heartbeat,
            state: State::Hello,
            dec: FrameDecoder::default(),
            transmit: VecDeque::from([Frame::Hello(config.hello)]),
            events: VecDeque::new(),
            last_sent: 0,
            in_flight: VecDeque::new(),
            ack_clock: now,
            next_heartbeat: now,
        }
    }

    /// Bytes from the collector, split anywhere. Every whole frame among
    /// them is acted on at once; see [`poll_event`](Self::poll_event).
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.dec.push(bytes);
        while self.state != State::Closed {
            match self.dec.next_frame() {
                Ok(Some(frame)) => self.handle_frame(frame, now),
                Ok(None) => break,
                Err(e) => self.fail(SessionError::Frame(e)),
            }
        }
    }

    fn handle_frame(&mut self, frame: Frame, now: Instant) {
        match (self.state, frame) {
            (_, Frame::Refused(r)) => self.fail(SessionError::Refused { reason: r.reason }),
            (State::Hello, Frame::HelloAck(a)) => {
                if let Err(e) = check_version(a.version) {
                    return self.fail(SessionError::Version(e));
                }
                self.state = State::Connected;
                self.last_sent = a.last_seq;
                // The first heartbeat goes out at once, as the first tick of
                // tokio's interval did.
                self.next_heartbeat = now;
                self.events.push_back(AgentEvent::Connected {
                    last_seq: a.last_seq,
                });
            }
            (State::Hello, other) => {
                self.fail(SessionError::ExpectedHelloAck { got: other.kind() })
            }
            (State::Connected, Frame::Ack(a)) => {
                while self.in_flight.front().is_some_and(|&s| s <= a.seq) {
                    self.in_flight.pop_front();
                }
                self.ack_clock = now;
                self.events.push_back(AgentEvent::Acked { seq: a.seq });
            }
            (State::Connected, Frame::Heartbeat(_)) => {}
            (State::Connected, other) => {
                self.fail(SessionError::UnexpectedFromCollector { got: other.kind() })
            }
            (State::Closed, _) => {}
        }
    }

    fn fail(&mut self, e: SessionError) {
        self.state = State::Closed;
        self.transmit.clear();
        self.events.push_back(AgentEvent::Lost(e));
    }

    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }

    /// Whether [`send_batch`](Self::send_batch) would take a batch now.
    pub fn can_send(&self) -> bool {
        self.state == State::Connected && self.in_flight.len() < self.window
    }

    /// The batch the next one sent will follow: offer the first one after it.
    pub fn last_sent(&self) -> u64 {
        self.last_sent
    }

    /// Sends `batch` (whose `seq` must exceed [`last_sent`](Self::last_sent));
    /// the session sets its `follows`. Batches between `last_sent` and `seq`
    /// are thereby declared dropped. `now` starts the ack clock if nothing
    /// else was in flight.
    pub fn send_batch(&mut self, mut batch: Batch, now: Instant) -> Result<(), Blocked> {
        if !self.can_send() {
            return Err(Blocked(batch));
        }
        debug_assert!(batch.seq > self.last_sent, "batches go in seq order");
        batch.follows = Some(self.last_sent);
        if self.in_flight.is_empty() {
            // The ack clock runs from the oldest unacknowledged batch, not
            // from an idle stretch before it.
            self.ack_clock = now;
        }
        self.last_sent = batch.seq;
        self.in_flight.push_back(batch.seq);
        self.transmit.push_back(Frame::Batch(batch));
        Ok(())
    }

    /// Appends every frame due to be sent, in order.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        for f in self.transmit.drain(..) {
            encode_frame(&f, out);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due: the next
    /// heartbeat, or the ack deadline if that comes first. `None` before
    /// the collector answered and after the session ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Connected {
            return None;
        }
        let ack = self.ack_deadline();
        Some(ack.map_or(self.next_heartbeat, |a| a.min(self.next_heartbeat)))
    }

    fn ack_deadline(&self) -> Option<Instant> {
        if self.in_flight.is_empty() {
            None
        } else {
            self.ack_clock.checked_add(self.ack_timeout)
        }
    }

    /// Time has come to `now`: with batches in flight and none acknowledged
    /// for `ack_timeout`, the session fails; else a heartbeat due is queued.
    /// One heartbeat per call: a driver that fell behind gets the missed
    /// ones one after the other (what tokio's interval did).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Connected {
            return;
        }
        if self.ack_deadline().is_some_and(|d| now >= d) {
            return self.fail(SessionError::AckTimeout {
                after: self.ack_timeout,
            });
        }
        if now >= self.next_heartbeat {
            self.transmit.push_back(Frame::Heartbeat(Heartbeat {}));
            self.next_heartbeat += self.heartbeat;
        }
    }

    /// Nothing in flight: every batch sent is acknowledged.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Batches sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }
}
