//! Any bytes from the other end, in any pieces: both protocol sessions must
//! report an event or their end, never panic. The first byte picks the side,
//! whether a valid opening frame (hello, hello_ack) comes before the fuzzed
//! bytes (so they reach the sessions' later states), and how it all is cut
//! into reads; the collector side accepts a hello and acks every batch, the
//! agent side offers batches whenever its window has room, as their drivers
//! do.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vmflow_proto::session::{
    AgentConfig, AgentEvent, AgentSession, CollectorEvent, CollectorSession,
};
use vmflow_proto::{encode_frame, Batch, Frame, Hello, HelloAck, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first >> 2).max(1);
    let opened = first & 2 != 0;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        agent_id: "fuzz".into(),
        host: "fuzz".into(),
        agent_version: "0".into(),
        capabilities: Vec::new(),
        stream: String::new(),
        epoch: 0,
    };
    let mut input = Vec::new();
    let mut out = Vec::new();
    if first & 1 == 0 {
        if opened {
            encode_frame(&Frame::Hello(hello), &mut input);
        }
        input.extend_from_slice(rest);
        let mut s = CollectorSession::new(1 << 20);
        for chunk in input.chunks(piece) {
            s.handle_input(chunk);
            while let Some(ev) = s.poll_event() {
                match ev {
                    CollectorEvent::Hello(_) => s.accept(0),
                    CollectorEvent::Batch(b) => s.ack(b.seq),
                    CollectorEvent::Heartbeat => {}
                    CollectorEvent::Lost(_) => {}
                }
            }
            s.poll_transmit(&mut out);
            out.clear();
        }
    } else {
        if opened {
            let ack = HelloAck {
                version: PROTOCOL_VERSION,
                last_seq: 3,
            };
            encode_frame(&Frame::HelloAck(ack), &mut input);
        }
        input.extend_from_slice(rest);
        let t0 = Instant::now();
        let mut s = AgentSession::new(
            AgentConfig {
                hello,
                window: 4,
                ack_timeout: Duration::from_secs(30),
                heartbeat: Duration::from_secs(10),
            },
            t0,
        );
        let mut seq = 0;
        for (i, chunk) in input.chunks(piece).enumerate() {
            let now = t0 + Duration::from_millis(i as u64 * 700);
            s.handle_input(chunk, now);
            s.handle_timeout(now);
            while let Some(ev) = s.poll_event() {
                if let AgentEvent::Connected { last_seq } = ev {
                    seq = last_seq;
                }
            }
            while s.can_send() {
                seq += 1;
                let b = Batch {
                    seq,
                    records: 0,
                    block: Vec::new(),
                    source_drops: 0,
                    follows: None,
                };
                if s.send_batch(b, now).is_err() {
                    break;
                }
            }
            s.poll_transmit(&mut out);
            out.clear();
        }
    }
});
