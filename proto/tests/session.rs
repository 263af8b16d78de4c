//! The protocol's behaviour, sans I/O: an agent session and a collector
//! session wired together in memory with a simulated clock (a `Pair`, as in
//! quinn-proto's tests). The drivers around them are a few lines here; what
//! is tested is what the sessions decide: resume point, window, `follows`,
//! cumulative acks, ack timeout, heartbeats, refusals, version checks,
//! frames split anywhere.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use vmflow_proto::session::{
    AgentConfig, AgentEvent, AgentSession, Blocked, CollectorEvent, CollectorSession,
};
use vmflow_proto::{
    encode_frame, Ack, Batch, Frame, FrameDecoder, FrameKind, Heartbeat, Hello, HelloAck,
    ProtoError, Refused, SessionError, MAX_FRAME, PROTOCOL_VERSION,
};

const SEC: Duration = Duration::from_secs(1);
const NS: Duration = Duration::from_nanos(1);
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_secs(10);

fn hello(version: u16) -> Hello {
    Hello {
        version,
        agent_id: "agent-1".into(),
        host: "vm-7".into(),
        agent_version: "0.1.0".into(),
        capabilities: vec!["cols1+zstd".into()],
        stream: "folder-1".into(),
        epoch: 0x5eed,
    }
}

fn config(window: usize) -> AgentConfig {
    AgentConfig {
        hello: hello(PROTOCOL_VERSION),
        window,
        ack_timeout: ACK_TIMEOUT,
        heartbeat: HEARTBEAT,
    }
}

fn batch(seq: u64) -> Batch {
    Batch {
        seq,
        records: 1,
        block: seq.to_le_bytes().to_vec(),
        source_drops: 0,
        follows: None,
    }
}

fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut d = FrameDecoder::default();
    d.push(bytes);
    let mut v = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        v.push(f);
    }
    assert_eq!(d.pending(), 0, "whole frames only");
    v
}

/// What the collector's driver answers a hello with.
enum Answer {
    /// Accept; it holds batches up to this one.
    Accept(u64),
    Refuse(&'static str),
}

/// An agent and a collector connected in memory, with their drivers: the
/// agent's offers the batches of `spool` after `last_sent()` while the
/// window has room; the collector's answers hello with `answer` and, if
/// `auto_ack`, acknowledges each batch as soon as it has it.
struct Pair {
    time: Instant,
    agent: AgentSession,
    collector: CollectorSession,
    answer: Answer,
    auto_ack: bool,
    spool: BTreeSet<u64>,
    agent_events: Vec<(Instant, AgentEvent)>,
    collector_events: Vec<(Instant, CollectorEvent)>,
    /// Every frame that crossed, with when.
    to_collector: Vec<(Instant, Frame)>,
    to_agent: Vec<(Instant, Frame)>,
}

impl Pair {
    fn new(config: AgentConfig, answer: Answer) -> Pair {
        let time = Instant::now();
        Pair {
            time,
            agent: AgentSession::new(config, time),
            collector: CollectorSession::new(MAX_FRAME),
            answer,
            auto_ack: true,
            spool: BTreeSet::new(),
            agent_events: Vec::new(),
            collector_events: Vec::new(),
            to_collector: Vec::new(),
            to_agent: Vec::new(),
        }
    }

    /// Runs both sides at the current time until nothing more moves.
    fn drive(&mut self) {
        loop {
            while self.agent.can_send() {
                let Some(&seq) = self.spool.range(self.agent.last_sent() + 1..).next() else {
                    break;
                };
                self.agent.send_batch(batch(seq), self.time).unwrap();
            }
            let mut up = Vec::new();
            self.agent.poll_transmit(&mut up);
            self.collector.handle_input(&up);
            while let Some(e) = self.collector.poll_event() {
                match &e {
                    CollectorEvent::Hello(_) => match self.answer {
                        Answer::Accept(last) => self.collector.accept(last),
                        Answer::Refuse(why) => self.collector.refuse(why.into()),
                    },
                    CollectorEvent::Batch(b) if self.auto_ack => self.collector.ack(b.seq),
                    _ => {}
                }
                self.collector_events.push((self.time, e));
            }
            let mut down = Vec::new();
            self.collector.poll_transmit(&mut down);
            self.agent.handle_input(&down, self.time);
            while let Some(e) = self.agent.poll_event() {
                self.agent_events.push((self.time, e));
            }
            let t = self.time;
            self.to_collector
                .extend(frames(&up).into_iter().map(|f| (t, f)));
            self.to_agent
                .extend(frames(&down).into_iter().map(|f| (t, f)));
            if up.is_empty() && down.is_empty() {
                return;
            }
        }
    }

    /// Lets `d` pass, handling every timeout on the way at its own time.
    fn advance(&mut self, d: Duration) {
        let end = self.time + d;
        self.drive();
        while let Some(t) = self.agent.poll_timeout().filter(|&t| t <= end) {
            self.time = self.time.max(t);
            self.agent.handle_timeout(self.time);
            assert_ne!(
                self.agent.poll_timeout(),
                Some(t),
                "a timeout handled at its deadline must do something"
            );
            self.drive();
        }
        self.time = end;
        self.drive();
    }

    fn agent_saw(&self) -> Vec<AgentEvent> {
        self.agent_events.iter().map(|(_, e)| e.clone()).collect()
    }

    fn collector_saw(&self) -> Vec<CollectorEvent> {
        self.collector_events
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The batches the collector got: (seq, follows).
    fn batches(&self) -> Vec<(u64, u64)> {
        self.collector_events
            .iter()
            .filter_map(|(_, e)| match e {
                CollectorEvent::Batch(b) => Some((b.seq, b.follows())),
                _ => None,
            })
            .collect()
    }

    fn heartbeats_sent(&self) -> Vec<Instant> {
        self.to_collector
            .iter()
            .filter(|(_, f)| matches!(f, Frame::Heartbeat(_)))
            .map(|(t, _)| *t)
            .collect()
    }

    fn lost_at(&self) -> Option<(Instant, SessionError)> {
        self.agent_events.iter().find_map(|(t, e)| match e {
            AgentEvent::Lost(e) => Some((*t, e.clone())),
            _ => None,
        })
    }
}

#[test]
fn sending_resumes_after_the_collectors_last_seq() {
    let mut p = Pair::new(config(4), Answer::Accept(5));
    // The spool still has batches the collector holds, and lost batch 8.
    p.spool.extend([3, 4, 5, 6, 7, 9, 10]);
    p.drive();
    assert_eq!(p.agent_saw()[0], AgentEvent::Connected { last_seq: 5 });
    assert_eq!(p.batches(), [(6, 5), (7, 6), (9, 7), (10, 9)]);
    assert!(p.agent.is_idle(), "all acknowledged");
    assert_eq!(p.agent.last_sent(), 10);
    match &p.to_collector[0].1 {
        Frame::Hello(h) => assert_eq!(*h, hello(PROTOCOL_VERSION)),
        other => panic!("hello first, not {other:?}"),
    }
    assert_eq!(
        p.to_agent[0].1,
        Frame::HelloAck(HelloAck {
            version: PROTOCOL_VERSION,
            last_seq: 5
        })
    );
}

#[test]
fn a_full_window_refuses_the_next_offer_until_an_ack() {
    let mut p = Pair::new(config(3), Answer::Accept(0));
    p.auto_ack = false;
    assert!(!p.agent.can_send(), "nothing goes before hello_ack");
    assert!(matches!(
        p.agent.send_batch(batch(1), p.time),
        Err(Blocked(b)) if b.seq == 1
    ));
    p.drive();
    for seq in 1..=3 {
        p.agent.send_batch(batch(seq), p.time).unwrap();
    }
    assert!(!p.agent.can_send());
    let Err(Blocked(back)) = p.agent.send_batch(batch(4), p.time) else {
        panic!("the fourth batch must wait")
    };
    assert_eq!(back, batch(4), "handed back as offered");
    p.drive();
    assert_eq!(p.batches(), [(1, 0), (2, 1), (3, 2)]);
    assert_eq!(p.agent.in_flight(), 3);
    p.collector.ack(1);
    p.drive();
    assert!(p.agent.can_send());
    p.agent.send_batch(batch(4), p.time).unwrap();
    assert!(!p.agent.can_send());
    p.drive();
    assert_eq!(p.batches().last(), Some(&(4, 3)));
}

#[test]
fn acks_are_cumulative() {
    let mut p = Pair::new(config(8), Answer::Accept(0));
    p.auto_ack = false;
    p.drive();
    for seq in 1..=5 {
        p.agent.send_batch(batch(seq), p.time).unwrap();
    }
    p.drive();
    p.collector.ack(3);
    p.drive();
    assert_eq!(p.agent.in_flight(), 2, "1, 2 and 3 acknowledged by one ack");
    // An ack of less than is acknowledged frees nothing, and is reported.
    p.collector.ack(2);
    p.drive();
    assert_eq!(p.agent.in_flight(), 2);
    p.collector.ack(5);
    p.drive();
    assert!(p.agent.is_idle());
    assert_eq!(
        p.agent_saw(),
        [
            AgentEvent::Connected { last_seq: 0 },
            AgentEvent::Acked { seq: 3 },
            AgentEvent::Acked { seq: 2 },
            AgentEvent::Acked { seq: 5 },
        ]
    );
}

#[test]
fn no_ack_for_ack_timeout_after_the_oldest_batch_ends_the_session() {
    let mut p = Pair::new(config(4), Answer::Accept(0));
    p.auto_ack = false;
    p.advance(SEC);
    assert_eq!(p.agent.poll_timeout(), Some(p.time + 9 * SEC), "heartbeat");
    let sent = p.time;
    p.agent.send_batch(batch(1), p.time).unwrap();
    p.advance(5 * SEC);
    // A second batch does not move the clock: it runs from the oldest.
    p.agent.send_batch(batch(2), p.time).unwrap();
    p.advance(ACK_TIMEOUT - 5 * SEC - NS);
    assert_eq!(p.lost_at(), None, "not a nanosecond early");
    assert!(
        p.heartbeats_sent().iter().filter(|&&t| t > sent).count() >= 2,
        "heartbeats went out meanwhile and did not hold the timeout off"
    );
    p.advance(NS);
    let (at, e) = p.lost_at().expect("timed out");
    assert_eq!(at, sent + ACK_TIMEOUT);
    assert_eq!(e, SessionError::AckTimeout { after: ACK_TIMEOUT });
    assert_eq!(e.to_string(), "no acknowledgement for 30 s");
    assert!(p.agent.is_closed() && !p.agent.can_send());
    assert_eq!(p.agent.poll_timeout(), None);
}

#[test]
fn an_ack_restarts_the_ack_clock() {
    let mut p = Pair::new(config(4), Answer::Accept(0));
    p.auto_ack = false;
    p.drive();
    p.agent.send_batch(batch(1), p.time).unwrap();
    p.agent.send_batch(batch(2), p.time).unwrap();
    p.advance(20 * SEC);
    p.collector.ack(1);
    p.drive();
    let acked = p.time;
    // Batch 2 has waited 20 s already; the clock runs from the ack.
    p.advance(ACK_TIMEOUT - NS);
    assert_eq!(p.lost_at(), None);
    p.advance(NS);
    assert_eq!(p.lost_at().map(|(t, _)| t), Some(acked + ACK_TIMEOUT));
}

#[test]
fn an_idle_window_has_no_ack_deadline() {
    let mut p = Pair::new(config(4), Answer::Accept(0));
    p.spool.extend([1, 2]);
    p.drive();
    assert!(p.agent.is_idle());
    p.advance(10 * ACK_TIMEOUT);
    assert_eq!(p.lost_at(), None);
    // Sending into an empty window after a long idle stretch starts the
    // clock afresh.
    let sent = p.time;
    p.auto_ack = false;
    p.spool.insert(3);
    p.drive();
    p.advance(ACK_TIMEOUT);
    assert_eq!(p.lost_at().map(|(t, _)| t), Some(sent + ACK_TIMEOUT));
}

#[test]
fn heartbeats_go_out_at_the_interval() {
    let mut p = Pair::new(config(4), Answer::Accept(0));
    p.drive();
    let connected = p.time;
    assert!(p.heartbeats_sent().is_empty(), "not before hello_ack");
    p.advance(25 * SEC);
    assert_eq!(
        p.heartbeats_sent(),
        [connected, connected + HEARTBEAT, connected + 2 * HEARTBEAT]
    );
    let got = p
        .collector_saw()
        .into_iter()
        .filter(|e| *e == CollectorEvent::Heartbeat)
        .count();
    assert_eq!(got, 3, "the collector sees each");
    // Busy or not: sending batches does not move the schedule.
    p.spool.extend(1..=20);
    p.drive();
    p.advance(10 * SEC);
    assert_eq!(p.heartbeats_sent().len(), 4);
    assert_eq!(p.heartbeats_sent()[3], connected + 3 * HEARTBEAT);
}

#[test]
fn a_late_driver_gets_the_missed_heartbeats_one_per_call() {
    let t0 = Instant::now();
    let mut a = AgentSession::new(config(1), t0);
    let mut ack = Vec::new();
    encode_frame(
        &Frame::HelloAck(HelloAck {
            version: PROTOCOL_VERSION,
            last_seq: 0,
        }),
        &mut ack,
    );
    a.handle_input(&ack, t0);
    let late = t0 + 35 * SEC;
    let mut calls = 0;
    while a.poll_timeout().is_some_and(|t| t <= late) {
        a.handle_timeout(late);
        calls += 1;
    }
    let mut out = Vec::new();
    a.poll_transmit(&mut out);
    let beats = frames(&out)
        .into_iter()
        .filter(|f| matches!(f, Frame::Heartbeat(_)))
        .count();
    assert_eq!((calls, beats), (4, 4), "ticks at 0, 10, 20 and 30 s");
    assert_eq!(a.poll_timeout(), Some(t0 + 40 * SEC));
}

#[test]
fn a_collector_refuses_another_protocol_version_and_says_why() {
    let mut cfg = config(4);
    cfg.hello.version = 2;
    let mut p = Pair::new(cfg, Answer::Accept(0));
    p.drive();
    let why = "unsupported protocol version 2 (this side speaks 1)";
    assert_eq!(
        p.collector_saw(),
        [CollectorEvent::Lost(SessionError::Version(
            ProtoError::UnsupportedVersion {
                got: 2,
                supported: 1
            }
        ))]
    );
    assert_eq!(
        p.to_agent
            .iter()
            .map(|(_, f)| f.clone())
            .collect::<Vec<_>>(),
        [Frame::Refused(Refused { reason: why.into() })],
        "refused, no hello_ack"
    );
    assert_eq!(
        p.agent_saw(),
        [AgentEvent::Lost(SessionError::Refused {
            reason: why.into()
        })]
    );
    assert_eq!(
        p.lost_at().unwrap().1.to_string(),
        format!("refused: {why}")
    );
    assert!(p.collector.is_closed() && p.agent.is_closed());
}

#[test]
fn an_agent_refuses_a_collector_of_another_version() {
    let t0 = Instant::now();
    let mut a = AgentSession::new(config(4), t0);
    let mut wire = Vec::new();
    encode_frame(
        &Frame::HelloAck(HelloAck {
            version: 9,
            last_seq: 3,
        }),
        &mut wire,
    );
    a.handle_input(&wire, t0);
    let Some(AgentEvent::Lost(e)) = a.poll_event() else {
        panic!("a hello_ack of version 9 ends the session")
    };
    assert_eq!(
        e.to_string(),
        "unsupported protocol version 9 (this side speaks 1)"
    );
    assert!(!a.can_send() && a.poll_event().is_none());
}

#[test]
fn the_collector_may_refuse_instead_of_hello_ack() {
    let why = "stream name \"../x\" is not allowed";
    let mut p = Pair::new(config(4), Answer::Refuse(why));
    p.spool.extend([1, 2]);
    p.drive();
    assert!(matches!(p.collector_saw()[..], [CollectorEvent::Hello(_)]));
    assert_eq!(
        p.to_agent
            .iter()
            .map(|(_, f)| f.clone())
            .collect::<Vec<_>>(),
        [Frame::Refused(Refused { reason: why.into() })]
    );
    assert_eq!(
        p.agent_saw(),
        [AgentEvent::Lost(SessionError::Refused {
            reason: why.into()
        })]
    );
    assert!(
        p.batches().is_empty(),
        "nothing sent to a refusing collector"
    );
    assert_eq!(p.to_collector.len(), 1, "only the hello");
    assert!(p.collector.is_closed());
}

#[test]
fn the_collector_may_refuse_before_the_hello_arrives() {
    // (A certificate name the collector cannot use: refused at once.)
    let mut p = Pair::new(config(4), Answer::Accept(0));
    p.collector.refuse("no".into());
    p.drive();
    assert!(p.collector_saw().is_empty(), "the hello is not read");
    assert_eq!(
        p.agent_saw(),
        [AgentEvent::Lost(SessionError::Refused {
            reason: "no".into()
        })]
    );
}

#[test]
fn a_refusal_after_batches_ends_the_agents_session_in_order() {
    let mut p = Pair::new(config(4), Answer::Accept(0));
    p.auto_ack = false;
    p.spool.extend([1, 2, 3]);
    p.drive();
    p.collector.ack(1);
    p.collector
        .refuse("the collector cannot store batch 2: disk full".into());
    p.drive();
    assert_eq!(
        p.agent_saw()[1..],
        [
            AgentEvent::Acked { seq: 1 },
            AgentEvent::Lost(SessionError::Refused {
                reason: "the collector cannot store batch 2: disk full".into()
            })
        ]
    );
    assert_eq!(p.agent.in_flight(), 2);
}

/// The frames each way of a session, every byte boundary: split in two at
/// each, and one byte at a time.
#[test]
fn frames_split_at_any_byte_deliver_the_same_events() {
    // Collector → agent.
    let mut down = Vec::new();
    for f in [
        Frame::HelloAck(HelloAck {
            version: PROTOCOL_VERSION,
            last_seq: 5,
        }),
        Frame::Ack(Ack { seq: 6 }),
        Frame::Heartbeat(Heartbeat {}),
        Frame::Ack(Ack { seq: 8 }),
        Frame::Refused(Refused {
            reason: "bye".into(),
        }),
    ] {
        encode_frame(&f, &mut down);
    }
    let want_agent = [
        AgentEvent::Connected { last_seq: 5 },
        AgentEvent::Acked { seq: 6 },
        AgentEvent::Acked { seq: 8 },
        AgentEvent::Lost(SessionError::Refused {
            reason: "bye".into(),
        }),
    ];
    let agent_events = |pieces: &[&[u8]]| {
        let t0 = Instant::now();
        let mut a = AgentSession::new(config(4), t0);
        let mut v = Vec::new();
        for p in pieces {
            a.handle_input(p, t0);
            v.extend(std::iter::from_fn(|| a.poll_event()));
        }
        v
    };
    // Agent → collector, with a batch larger than a read.
    let mut big = batch(2);
    big.block = (0..5_000u32).map(|i| (i * 7) as u8).collect();
    big.follows = Some(1);
    let mut up = Vec::new();
    for f in [
        Frame::Hello(hello(PROTOCOL_VERSION)),
        Frame::Batch(batch(1)),
        Frame::Heartbeat(Heartbeat {}),
        Frame::Batch(big.clone()),
        Frame::Refused(Refused {
            reason: "stopping".into(),
        }),
    ] {
        encode_frame(&f, &mut up);
    }
    let want_collector = [
        CollectorEvent::Hello(hello(PROTOCOL_VERSION)),
        CollectorEvent::Batch(batch(1)),
        CollectorEvent::Heartbeat,
        CollectorEvent::Batch(big),
        CollectorEvent::Lost(SessionError::AgentGaveUp {
            reason: "stopping".into(),
        }),
    ];
    let collector_events = |pieces: &[&[u8]]| {
        let mut c = CollectorSession::new(MAX_FRAME);
        let mut v = Vec::new();
        for p in pieces {
            c.handle_input(p);
            while let Some(e) = c.poll_event() {
                if let CollectorEvent::Hello(_) = e {
                    c.accept(0);
                }
                v.push(e);
            }
        }
        v
    };
    for k in 0..=down.len() {
        let (a, b) = down.split_at(k);
        assert_eq!(agent_events(&[a, b]), want_agent, "split at {k}");
    }
    let bytes: Vec<&[u8]> = down.chunks(1).collect();
    assert_eq!(agent_events(&bytes), want_agent);
    for k in 0..=up.len() {
        let (a, b) = up.split_at(k);
        assert_eq!(collector_events(&[a, b]), want_collector, "split at {k}");
    }
    let bytes: Vec<&[u8]> = up.chunks(1).collect();
    assert_eq!(collector_events(&bytes), want_collector);
}

#[test]
fn the_collector_tells_a_partial_frames_length_before_its_body() {
    let mut wire = Vec::new();
    encode_frame(&Frame::Hello(hello(PROTOCOL_VERSION)), &mut wire);
    let mut c = CollectorSession::new(MAX_FRAME);
    c.handle_input(&wire[..3]);
    assert_eq!(c.incoming_frame_len(), None);
    c.handle_input(&wire[3..5]);
    assert_eq!(c.incoming_frame_len(), Some(wire.len() - 4));
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.buffered(), 5);
    c.handle_input(&wire[5..]);
    assert!(matches!(c.poll_event(), Some(CollectorEvent::Hello(_))));
    assert_eq!(c.buffered(), 0);
}

#[test]
fn the_collector_decodes_nothing_after_hello_until_it_is_answered() {
    // A hello and garbage in one read: the hello is answered first, then
    // the garbage ends the session (the agent gets its hello_ack).
    let mut wire = Vec::new();
    encode_frame(&Frame::Hello(hello(PROTOCOL_VERSION)), &mut wire);
    wire.extend_from_slice(&[0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1]);
    let mut c = CollectorSession::new(MAX_FRAME);
    c.handle_input(&wire);
    assert!(matches!(c.poll_event(), Some(CollectorEvent::Hello(_))));
    assert_eq!(c.poll_event(), None, "waits for the answer");
    c.accept(7);
    let mut out = Vec::new();
    c.poll_transmit(&mut out);
    assert_eq!(
        frames(&out),
        [Frame::HelloAck(HelloAck {
            version: PROTOCOL_VERSION,
            last_seq: 7
        })]
    );
    let Some(CollectorEvent::Lost(e @ SessionError::Frame(_))) = c.poll_event() else {
        panic!("garbage ends the session")
    };
    assert!(e.to_string().starts_with("malformed frame"), "{e}");
    assert_eq!(c.poll_event(), None);
    // An oversized frame announces itself and ends the session the same way.
    let mut c = CollectorSession::new(1024);
    c.handle_input(&wire[..wire.len() - 8]);
    c.handle_input(&u32::MAX.to_be_bytes());
    assert!(matches!(c.poll_event(), Some(CollectorEvent::Hello(_))));
    c.accept(0);
    let Some(CollectorEvent::Lost(e)) = c.poll_event() else {
        panic!("oversized")
    };
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
}

#[test]
fn frames_out_of_place_end_the_session() {
    let after_hello = |f: Frame| {
        let mut wire = Vec::new();
        encode_frame(&Frame::Hello(hello(PROTOCOL_VERSION)), &mut wire);
        encode_frame(&f, &mut wire);
        encode_frame(&Frame::Batch(batch(1)), &mut wire);
        let mut c = CollectorSession::new(MAX_FRAME);
        c.handle_input(&wire);
        assert!(matches!(c.poll_event(), Some(CollectorEvent::Hello(_))));
        c.accept(0);
        let e = c.poll_event();
        assert_eq!(c.poll_event(), None, "nothing after the end");
        e
    };
    let e = after_hello(Frame::Ack(Ack { seq: 1 }));
    assert_eq!(
        e,
        Some(CollectorEvent::Lost(SessionError::UnexpectedFromAgent {
            got: FrameKind::Ack
        }))
    );
    let Some(CollectorEvent::Lost(e)) = after_hello(Frame::Hello(hello(1))) else {
        panic!()
    };
    assert_eq!(e.to_string(), "unexpected hello frame");

    // First frames other than hello.
    let mut wire = Vec::new();
    encode_frame(&Frame::Batch(batch(1)), &mut wire);
    let mut c = CollectorSession::new(MAX_FRAME);
    c.handle_input(&wire);
    let Some(CollectorEvent::Lost(e)) = c.poll_event() else {
        panic!()
    };
    assert_eq!(e.to_string(), "expected hello, got batch");

    // The agent's side.
    let t0 = Instant::now();
    let agent_gets = |fs: &[Frame]| {
        let mut a = AgentSession::new(config(4), t0);
        let mut wire = Vec::new();
        for f in fs {
            encode_frame(f, &mut wire);
        }
        a.handle_input(&wire, t0);
        let v: Vec<AgentEvent> = std::iter::from_fn(|| a.poll_event()).collect();
        (v, a.is_closed())
    };
    let ha = Frame::HelloAck(HelloAck {
        version: 1,
        last_seq: 0,
    });
    let (v, closed) = agent_gets(&[Frame::Heartbeat(Heartbeat {})]);
    assert!(closed);
    assert_eq!(
        v,
        [AgentEvent::Lost(SessionError::ExpectedHelloAck {
            got: FrameKind::Heartbeat
        })]
    );
    let (v, _) = agent_gets(&[
        ha.clone(),
        Frame::Batch(batch(1)),
        Frame::Ack(Ack { seq: 1 }),
    ]);
    let AgentEvent::Lost(e) = &v[1] else { panic!() };
    assert_eq!(e.to_string(), "unexpected frame from collector");
    assert_eq!(v.len(), 2, "nothing after the end");
    // Heartbeats from the collector are taken and ignored.
    let (v, closed) = agent_gets(&[ha, Frame::Heartbeat(Heartbeat {})]);
    assert!(!closed);
    assert_eq!(v, [AgentEvent::Connected { last_seq: 0 }]);
}

#[test]
fn batches_before_the_agent_gave_up_are_still_acknowledged() {
    let mut wire = Vec::new();
    for f in [
        Frame::Hello(hello(PROTOCOL_VERSION)),
        Frame::Batch(batch(1)),
        Frame::Refused(Refused {
            reason: "shutting down".into(),
        }),
    ] {
        encode_frame(&f, &mut wire);
    }
    let mut c = CollectorSession::new(MAX_FRAME);
    c.handle_input(&wire);
    assert!(matches!(c.poll_event(), Some(CollectorEvent::Hello(_))));
    c.accept(0);
    assert_eq!(c.poll_event(), Some(CollectorEvent::Batch(batch(1))));
    let Some(CollectorEvent::Lost(e)) = c.poll_event() else {
        panic!("the agent gave up")
    };
    assert_eq!(e.to_string(), "agent gave up: shutting down");
    assert!(c.is_closed());
    // Batch 1 was stored meanwhile: its ack still goes out.
    c.ack(1);
    let mut out = Vec::new();
    c.poll_transmit(&mut out);
    assert_eq!(
        frames(&out),
        [
            Frame::HelloAck(HelloAck {
                version: PROTOCOL_VERSION,
                last_seq: 0
            }),
            Frame::Ack(Ack { seq: 1 })
        ]
    );
}

#[test]
#[should_panic(expected = "acks follow accept")]
fn nothing_is_acknowledged_after_a_refusal() {
    let mut c = CollectorSession::new(MAX_FRAME);
    c.refuse("no".into());
    c.ack(1);
}

/// Garbage from the network, bounded and deterministic (the `session` fuzz
/// target goes further): valid streams for each side with bytes flipped, cut
/// or inserted. Each session must end up reporting its end (`Lost`) or
/// events of a well-formed stream — and never panic.
#[test]
fn damaged_streams_end_a_session_and_never_panic() {
    let mut to_collector = Vec::new();
    encode_frame(&Frame::Hello(hello(PROTOCOL_VERSION)), &mut to_collector);
    for seq in 1..=3 {
        encode_frame(&Frame::Batch(batch(seq)), &mut to_collector);
    }
    encode_frame(&Frame::Heartbeat(Heartbeat {}), &mut to_collector);
    let mut to_agent = Vec::new();
    let ack = HelloAck {
        version: PROTOCOL_VERSION,
        last_seq: 0,
    };
    encode_frame(&Frame::HelloAck(ack), &mut to_agent);
    for seq in 1..=3 {
        encode_frame(&Frame::Ack(Ack { seq }), &mut to_agent);
    }
    // A fixed linear congruential sequence: the same damage on every run.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as usize) % n.max(1)
    };
    let (mut lost, mut whole) = (0, 0);
    for round in 0..4_000 {
        let agent_side = round % 2 == 1;
        let mut bytes = if agent_side {
            to_agent.clone()
        } else {
            to_collector.clone()
        };
        for _ in 0..1 + next(3) {
            let at = next(bytes.len());
            match next(3) {
                0 => bytes[at] ^= 1 << next(8),
                1 => bytes.truncate(at),
                _ => bytes.insert(at, next(256) as u8),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let piece = 1 + next(9);
        let ended = if agent_side {
            let t0 = Instant::now();
            let mut s = AgentSession::new(config(8), t0);
            let mut ended = false;
            for chunk in bytes.chunks(piece) {
                s.handle_input(chunk, t0);
                while let Some(ev) = s.poll_event() {
                    ended |= matches!(ev, AgentEvent::Lost(_));
                }
                while s.can_send() {
                    let seq = s.last_sent() + 1;
                    s.send_batch(batch(seq), t0).unwrap();
                }
            }
            ended
        } else {
            let mut s = CollectorSession::new(MAX_FRAME);
            let mut ended = false;
            for chunk in bytes.chunks(piece) {
                s.handle_input(chunk);
                while let Some(ev) = s.poll_event() {
                    match ev {
                        CollectorEvent::Hello(_) => s.accept(0),
                        CollectorEvent::Batch(b) => s.ack(b.seq),
                        CollectorEvent::Heartbeat => {}
                        CollectorEvent::Lost(_) => ended = true,
                    }
                }
            }
            ended
        };
        if ended {
            lost += 1;
        } else {
            whole += 1;
        }
    }
    // Most damage is noticed; some (a cut at a frame boundary, a flipped
    // bit in a free-text field) leaves a well-formed stream.
    assert!(lost > 2_000 && whole > 50, "lost {lost}, whole {whole}");
}
