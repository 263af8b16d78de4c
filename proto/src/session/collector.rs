//! The collector's side of a connection: takes the agent's hello (refusing
//! another protocol version itself), lets its driver accept or refuse the
//! agent, then hands over batches in order and sends the acks it is told to.
//!
//! Bytes are buffered by `handle_input` and decoded one frame per
//! `poll_event`. The driver needs that: it reserves memory for a large frame
//! from a budget shared by all connections before reading it (so it asks
//! [`CollectorSession::incoming_frame_len`] between reads), groups the
//! batches already received into one commit and leaves the rest undecoded,
//! and must see a frame that arrived before an error handled before the
//! error (a batch followed by garbage is not stored; a batch followed by an
//! unexpected frame is).

use std::collections::VecDeque;

use crate::{
    check_version, encode_frame, Ack, Batch, Frame, FrameDecoder, Hello, HelloAck, Refused,
    SessionError, PROTOCOL_VERSION,
};

/// What the agent did, one frame at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CollectorEvent {
    /// The agent's hello, of our protocol version. Answer with
    /// [`CollectorSession::accept`] or [`CollectorSession::refuse`].
    Hello(Hello),
    /// The next batch, as sent.
    Batch(Batch),
    /// A sign of life, nothing else (the driver's idle timer counts it).
    Heartbeat,
    /// The session is over; nothing more is reported. A refusal the session
    /// made itself (another protocol version) is waiting in
    /// [`CollectorSession::poll_transmit`].
    Lost(SessionError),
}

/// What the agent may send next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing but a hello.
    Hello,
    /// Hello reported; nothing is decoded until the driver answers it.
    Answering,
    /// Batches, heartbeats, a refusal.
    Open,
    /// Nothing more is read.
    Closed,
}

/// What the collector may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Nothing yet (only a refusal).
    None,
    /// Accepted: acks. Also after the agent's side ended: batches reported
    /// before its refusal or a frame out of place are still acknowledged.
    Accepted,
    /// Refused: nothing more.
    Refused,
}

/// The collector's protocol state for one connection.
pub struct CollectorSession {
    state: State,
    answer: Answer,
    dec: FrameDecoder,
    transmit: VecDeque<Frame>,
}

impl CollectorSession {
    /// A session that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        CollectorSession {
            state: State::Hello,
            answer: Answer::None,
            dec: FrameDecoder::new(max_frame),
            transmit: VecDeque::new(),
        }
    }

    /// Bytes from the agent, split anywhere. Nothing is decoded here.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        if self.state != State::Closed {
            self.dec.push(bytes);
        }
    }

    /// Bytes received that are not yet a whole frame, nor a frame polled.
    pub fn buffered(&self) -> usize {
        self.dec.pending()
    }

    /// The length the frame being received announces, once its 4-byte
    /// header is here: memory can be set aside before its body is read.
    pub fn incoming_frame_len(&self) -> Option<usize> {
        self.dec.announced()
    }

    /// Decodes and interprets the next whole frame received, if any.
    /// After `Hello`, returns `None` until the hello is answered.
    pub fn poll_event(&mut self) -> Option<CollectorEvent> {
        if matches!(self.state, State::Answering | State::Closed) {
            return None;
        }
        let frame = match self.dec.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => return Some(self.fail(SessionError::Frame(e))),
        };
        Some(match (self.state, frame) {
            (State::Hello, Frame::Hello(h)) => match check_version(h.version) {
                Ok(()) => {
                    self.state = State::Answering;
                    CollectorEvent::Hello(h)
                }
                Err(e) => {
                    self.refuse(e.to_string());
                    self.fail(SessionError::Version(e))
                }
            },
            (State::Hello, other) => self.fail(SessionError::ExpectedHello { got: other.kind() }),
            (_, Frame::Batch(b)) => CollectorEvent::Batch(b),
            (_, Frame::Heartbeat(_)) => CollectorEvent::Heartbeat,
            (_, Frame::Refused(r)) => self.fail(SessionError::AgentGaveUp { reason: r.reason }),
            (_, other) => self.fail(SessionError::UnexpectedFromAgent { got: other.kind() }),
        })
    }

    fn fail(&mut self, e: SessionError) -> CollectorEvent {
        self.state = State::Closed;
        CollectorEvent::Lost(e)
    }

    /// Accepts the agent whose hello was reported: it resumes after
    /// `last_seq`, the last of its batches held durably (0: none).
    ///
    /// # Panics
    /// Unless a hello was reported and not yet answered.
    pub fn accept(&mut self, last_seq: u64) {
        assert_eq!(self.state, State::Answering, "accept answers a hello");
        self.state = State::Open;
        self.answer = Answer::Accepted;
        self.transmit.push_back(Frame::HelloAck(HelloAck {
            version: PROTOCOL_VERSION,
            last_seq,
        }));
    }

    /// Refuses the agent, at any point (before its hello, instead of
    /// accepting it, or after a batch): `reason` is sent, and the session
    /// is over.
    pub fn refuse(&mut self, reason: String) {
        self.state = State::Closed;
        self.answer = Answer::Refused;
        self.transmit.push_back(Frame::Refused(Refused { reason }));
    }

    /// Acknowledges every batch up to `seq` (the driver made them durable),
    /// also after the agent's side ended.
    ///
    /// # Panics
    /// Unless the agent was accepted and not refused since.
    pub fn ack(&mut self, seq: u64) {
        assert_eq!(self.answer, Answer::Accepted, "acks follow accept");
        self.transmit.push_back(Frame::Ack(Ack { seq }));
    }

    /// Appends every frame due to be sent, in order.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        for f in self.transmit.drain(..) {
            encode_frame(&f, out);
        }
    }

    /// Accepted and not over: batches may come.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }
}
