//! Agent ↔ collector frames: a 4-byte big-endian length, then one MessagePack
//! map. Maps (field names on the wire) let either side add fields later:
//! unknown fields are ignored. The version is negotiated once, in `Hello` and
//! `HelloAck`; a side that does not speak the other's version refuses it.
//! See PROTOCOL.md.

use serde::{Deserialize, Serialize};

use crate::ProtoError;

pub const PROTOCOL_VERSION: u16 = 1;
/// Frames larger than this are refused before they are buffered.
pub const MAX_FRAME: usize = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    Hello(Hello),
    HelloAck(HelloAck),
    Batch(Batch),
    Ack(Ack),
    Heartbeat(Heartbeat),
    Refused(Refused),
}

/// What a frame is, without its fields: for errors that name the frame a
/// peer sent where another was due. Displays as the wire's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Hello,
    HelloAck,
    Batch,
    Ack,
    Heartbeat,
    Refused,
}

impl Frame {
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Hello(_) => FrameKind::Hello,
            Frame::HelloAck(_) => FrameKind::HelloAck,
            Frame::Batch(_) => FrameKind::Batch,
            Frame::Ack(_) => FrameKind::Ack,
            Frame::Heartbeat(_) => FrameKind::Heartbeat,
            Frame::Refused(_) => FrameKind::Refused,
        }
    }
}

impl std::fmt::Display for FrameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameKind::Hello => "hello",
            FrameKind::HelloAck => "hello_ack",
            FrameKind::Batch => "batch",
            FrameKind::Ack => "ack",
            FrameKind::Heartbeat => "heartbeat",
            FrameKind::Refused => "refused",
        })
    }
}

/// Agent → collector, first frame of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    /// Informational: the collector takes the agent's identity from its certificate.
    pub agent_id: String,
    pub host: String,
    pub agent_version: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Which of the agent's record streams this connection carries (an agent
    /// with several sources has one per source); empty for the only one.
    /// Sequence numbers count per stream.
    #[serde(default)]
    pub stream: String,
    /// Which spool of the stream this is (a random id the agent picks when
    /// its spool is created; 0 for agents that predate it). Sequence
    /// numbers count per epoch: a new spool is new data, not a repeat.
    #[serde(default)]
    pub epoch: u64,
}

/// Collector → agent: the last batch sequence number it holds durably for
/// this agent's stream and epoch (0 = none), so the agent resumes after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAck {
    pub version: u16,
    pub last_seq: u64,
}

/// Agent → collector: records `seq` (1, 2, 3… per agent, never reused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub seq: u64,
    /// Number of records in `block` (lets the receiver size things first).
    pub records: u32,
    /// A block from [`crate::encode_records`].
    #[serde(with = "serde_bytes")]
    pub block: Vec<u8>,
    /// Packets the agent's capture lost (kernel drops) up to this batch,
    /// a running count; 0 for sources that cannot lose packets.
    #[serde(default)]
    pub source_drops: u64,
    /// The batch this one follows (absent: `seq - 1`). Batches in between
    /// were dropped by the agent (spool overflow or damage) and never come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<u64>,
}

impl Batch {
    /// The batch this one follows.
    pub fn follows(&self) -> u64 {
        self.follows.unwrap_or(self.seq.saturating_sub(1))
    }
}

/// Collector → agent: every batch up to and including `seq` is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {}

/// Either side, before closing: why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub reason: String,
}

/// Refuses a peer's version other than ours, with an error both sides can log.
pub fn check_version(got: u16) -> Result<(), ProtoError> {
    if got == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ProtoError::UnsupportedVersion {
            got,
            supported: PROTOCOL_VERSION,
        })
    }
}

/// Appends a length-prefixed frame to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // Serializing these plain structs into a Vec cannot fail.
    let _ = rmp_serde::encode::write_named(out, frame);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Sans-IO frame decoder: push bytes as they arrive, pop whole frames.
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the first byte not yet decoded is: whole frames are consumed
    /// by moving this, not by shifting the buffer each time.
    start: usize,
    max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME)
    }
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // A frame of announced length is buffered in exactly that much
        // memory, not in a doubled vector.
        if let Some(len) = self.announced().filter(|&l| l <= self.max) {
            let want = (4 + len).saturating_sub(self.buf.len() - self.start);
            if want > bytes.len() {
                self.buf.reserve_exact(want);
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The length the incomplete frame in the buffer announces (so a
    /// receiver can budget its memory before buffering it).
    pub fn announced(&self) -> Option<usize> {
        let h = self.buf.get(self.start..self.start + 4)?;
        Some(u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize)
    }

    /// The next whole frame, `None` if more bytes are needed. After an error
    /// the stream is unusable: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        let Some(len) = self.announced() else {
            return Ok(None);
        };
        if len > self.max {
            return Err(ProtoError::Oversized { len, max: self.max });
        }
        let body = self.start + 4;
        if self.buf.len() < body + len {
            return Ok(None);
        }
        let frame = rmp_serde::from_slice(&self.buf[body..body + len])
            .map_err(|e| ProtoError::Malformed(e.to_string()));
        self.start = body + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                version: 1,
                agent_id: "a".into(),
                host: "h".into(),
                agent_version: "0.1.0".into(),
                capabilities: vec!["cols1+zstd".into()],
                stream: "folder-1".into(),
                epoch: 77,
            }),
            Frame::HelloAck(HelloAck {
                version: 1,
                last_seq: 7,
            }),
            Frame::Batch(Batch {
                seq: 8,
                records: 2,
                block: vec![1, 2, 3],
                source_drops: 5,
                follows: Some(6),
            }),
            Frame::Ack(Ack { seq: 8 }),
            Frame::Heartbeat(Heartbeat {}),
            Frame::Refused(Refused {
                reason: "no".into(),
            }),
        ]
    }

    #[test]
    fn frames_round_trip_through_any_split() {
        let mut wire = Vec::new();
        for f in all() {
            encode_frame(&f, &mut wire);
        }
        for chunk in [1, 3, 7, wire.len()] {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, all());
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn kinds_are_named_as_on_the_wire() {
        for f in all() {
            let v = serde_json::to_value(&f).unwrap();
            assert_eq!(v["type"], f.kind().to_string());
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        #[derive(Serialize)]
        struct Future {
            #[serde(rename = "type")]
            ty: &'static str,
            seq: u64,
            window: u32,
        }
        let payload = rmp_serde::to_vec_named(&Future {
            ty: "ack",
            seq: 9,
            window: 64,
        })
        .unwrap();
        let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&payload);
        let mut d = FrameDecoder::default();
        d.push(&wire);
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Ack(Ack { seq: 9 })));
    }

    #[test]
    fn oversized_garbage_and_versions_are_errors() {
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 8, 0, 1]);
        assert_eq!(
            d.next_frame(),
            Err(ProtoError::Oversized {
                len: 2048,
                max: 1024
            })
        );
        let mut d = FrameDecoder::default();
        d.push(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]);
        assert!(matches!(d.next_frame(), Err(ProtoError::Malformed(_))));
        assert!(check_version(1).is_ok());
        let e = check_version(2).unwrap_err().to_string();
        assert!(e.contains("version 2") && e.contains("speaks 1"), "{e}");
    }
}
