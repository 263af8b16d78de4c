//! One JSON object per line. Records are formatted by hand rather than through
//! serde: the output stage shares two cores with the engine, and this is about
//! three times cheaper. A test holds it byte-for-byte equal to serde_json's
//! encoding of the same record, which stays the definition.

use std::io::{self, BufWriter, Write};
use std::net::IpAddr;

use vmflow_proto::{Decision, Direction, EndReason, FlowRecord};

use super::RecordSink;

pub struct NdjsonSink<W: Write> {
    out: BufWriter<W>,
    line: Vec<u8>,
    flushed: std::time::Instant,
}

/// Records reach the file at most this long after the engine produced them.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl<W: Write> NdjsonSink<W> {
    pub fn new(w: W) -> Self {
        NdjsonSink {
            out: BufWriter::with_capacity(1 << 16, w),
            line: Vec::with_capacity(512),
            flushed: std::time::Instant::now(),
        }
    }
}

impl<W: Write + Send> RecordSink for NdjsonSink<W> {
    fn write(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        self.write_parts(&[records])
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> io::Result<()> {
        for r in parts.iter().copied().flatten() {
            self.line.clear();
            encode(r, &mut self.line);
            self.line.push(b'\n');
            self.out.write_all(&self.line)?;
        }
        // Live capture calls this at least every tick: records become visible
        // to readers of the file within FLUSH_EVERY, at a write(2) per
        // FLUSH_EVERY rather than one per batch.
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flushed = std::time::Instant::now();
            self.out.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Appends the JSON object for `r` (no newline).
pub fn encode(r: &FlowRecord, o: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    let mut num = |o: &mut Vec<u8>, key: &str, v: u64| {
        o.extend_from_slice(key.as_bytes());
        o.extend_from_slice(n.format(v).as_bytes());
    };
    num(o, "{\"flow_id\":", r.flow_id);
    num(o, ",\"segment\":", u64::from(r.segment));
    o.extend_from_slice(if r.is_final {
        b",\"final\":true"
    } else {
        b",\"final\":false"
    });
    num(o, ",\"ip_version\":", u64::from(r.ip_version));
    num(o, ",\"proto\":", u64::from(r.proto));
    match r.vlan {
        Some(v) => num(o, ",\"vlan\":", u64::from(v)),
        None => o.extend_from_slice(b",\"vlan\":null"),
    }
    o.extend_from_slice(b",\"src_addr\":\"");
    ip(r.src_addr, o);
    num(o, "\",\"src_port\":", u64::from(r.src_port));
    o.extend_from_slice(b",\"dst_addr\":\"");
    ip(r.dst_addr, o);
    num(o, "\",\"dst_port\":", u64::from(r.dst_port));
    o.extend_from_slice(match r.direction {
        Direction::Outbound => b",\"direction\":\"outbound\"".as_slice(),
        Direction::Inbound => b",\"direction\":\"inbound\"",
        Direction::Internal => b",\"direction\":\"internal\"",
        Direction::External => b",\"direction\":\"external\"",
    });
    num(o, ",\"first_ns\":", r.first_ns);
    num(o, ",\"last_ns\":", r.last_ns);
    num(o, ",\"fwd_packets\":", r.fwd_packets);
    num(o, ",\"fwd_bytes\":", r.fwd_bytes);
    num(o, ",\"rev_packets\":", r.rev_packets);
    num(o, ",\"rev_bytes\":", r.rev_bytes);
    num(o, ",\"fwd_tcp_flags\":", u64::from(r.fwd_tcp_flags));
    num(o, ",\"rev_tcp_flags\":", u64::from(r.rev_tcp_flags));
    match r.icmp_type {
        Some(v) => num(o, ",\"icmp_type\":", u64::from(v)),
        None => o.extend_from_slice(b",\"icmp_type\":null"),
    }
    match r.icmp_code {
        Some(v) => num(o, ",\"icmp_code\":", u64::from(v)),
        None => o.extend_from_slice(b",\"icmp_code\":null"),
    }
    o.extend_from_slice(match r.end_reason {
        EndReason::Idle => b",\"end_reason\":\"idle\"".as_slice(),
        EndReason::Active => b",\"end_reason\":\"active\"",
        EndReason::Fin => b",\"end_reason\":\"fin\"",
        EndReason::Rst => b",\"end_reason\":\"rst\"",
        EndReason::Evicted => b",\"end_reason\":\"evicted\"",
        EndReason::EndOfInput => b",\"end_reason\":\"end_of_input\"",
        EndReason::Shutdown => b",\"end_reason\":\"shutdown\"",
    });
    if r.gap {
        o.extend_from_slice(b",\"gap\":true");
    }
    if let Some(rule) = &r.rule {
        o.extend_from_slice(b",\"rule\":");
        // Rule names are the user's: serde_json escapes them as the
        // definition (serde's encoding of the record) does.
        let _ = serde_json::to_writer(&mut *o, rule);
    }
    match r.decision {
        Some(Decision::Allow) => o.extend_from_slice(b",\"decision\":\"allow\""),
        Some(Decision::Deny) => o.extend_from_slice(b",\"decision\":\"deny\""),
        None => {}
    }
    if let Some(remote) = &r.remote {
        // Enriched records only, and partly the user's text (list names):
        // serde's object of the remote's fields, spliced into the record's
        // (its braces dropped, a comma in front unless it is empty).
        let at = o.len();
        let _ = serde_json::to_writer(&mut *o, remote);
        if o.len() - at <= 2 {
            o.truncate(at);
        } else {
            o[at] = b',';
            o.pop();
        }
    }
    o.push(b'}');
}

pub(super) fn ip(a: IpAddr, o: &mut Vec<u8>) {
    match a {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, b) in v4.octets().iter().enumerate() {
                if i > 0 {
                    o.push(b'.');
                }
                o.extend_from_slice(n.format(*b).as_bytes());
            }
        }
        // RFC 5952 text form; rare enough that the std formatter is fine.
        IpAddr::V6(v6) => {
            let _ = write!(o, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Rng;
    use crate::testkit::random_record;

    #[test]
    fn equals_serde_encoding() {
        let mut rng = Rng::new(11);
        for _ in 0..5_000 {
            let r = random_record(&mut rng, &["AllowWeb", "Deny \"all\" \\ \u{1}é", ""]);
            let mut mine = Vec::new();
            encode(&r, &mut mine);
            assert_eq!(
                String::from_utf8(mine).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
        }
    }
}
