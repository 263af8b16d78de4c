//! Comma-separated values: a header line, then one record per line with the
//! NDJSON fields in the NDJSON order (`HEADER`). RFC 4180 quoting where a
//! field needs it (only `rule`, the one free-text field, ever does); lines
//! end in LF. Absent values (`vlan`, `icmp_type`, `icmp_code`, `rule`,
//! `decision`) are empty fields; `final` and `gap` are `true`/`false`.
//! Formatted by hand into one reused line buffer, like the NDJSON writer.

use std::io::{self, BufWriter, Write};

use vmflow_proto::{Decision, Direction, EndReason, FlowRecord};

use super::RecordSink;

/// The header line's fields, which are also the columns' order.
pub const HEADER: [&str; 25] = [
    "flow_id",
    "segment",
    "final",
    "ip_version",
    "proto",
    "vlan",
    "src_addr",
    "src_port",
    "dst_addr",
    "dst_port",
    "direction",
    "first_ns",
    "last_ns",
    "fwd_packets",
    "fwd_bytes",
    "rev_packets",
    "rev_bytes",
    "fwd_tcp_flags",
    "rev_tcp_flags",
    "icmp_type",
    "icmp_code",
    "end_reason",
    "gap",
    "rule",
    "decision",
];

pub struct CsvSink<W: Write> {
    out: BufWriter<W>,
    line: Vec<u8>,
    header_written: bool,
    flushed: std::time::Instant,
}

/// As for NDJSON: live capture's records reach the file within this.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl<W: Write> CsvSink<W> {
    pub fn new(w: W) -> Self {
        CsvSink {
            out: BufWriter::with_capacity(1 << 16, w),
            line: Vec::with_capacity(512),
            header_written: false,
            flushed: std::time::Instant::now(),
        }
    }

    /// The header goes out even when no record ever comes: an empty result
    /// is still a CSV file with its columns.
    fn header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.header_written = true;
            self.line.clear();
            header_line(&mut self.line);
            self.out.write_all(&self.line)?;
        }
        Ok(())
    }
}

impl<W: Write + Send> RecordSink for CsvSink<W> {
    fn write(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        self.write_parts(&[records])
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> io::Result<()> {
        self.header()?;
        for r in parts.iter().copied().flatten() {
            self.line.clear();
            encode(r, &mut self.line);
            self.line.push(b'\n');
            self.out.write_all(&self.line)?;
        }
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flushed = std::time::Instant::now();
            self.out.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.header()?;
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.header()?;
        self.out.flush()
    }
}

/// Appends the header line, newline included.
pub fn header_line(o: &mut Vec<u8>) {
    o.extend_from_slice(HEADER.join(",").as_bytes());
    o.push(b'\n');
}

/// Appends the CSV fields of `r` (no newline).
pub fn encode(r: &FlowRecord, o: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    let mut num = |o: &mut Vec<u8>, v: u64| {
        o.extend_from_slice(n.format(v).as_bytes());
        o.push(b',');
    };
    num(o, r.flow_id);
    num(o, u64::from(r.segment));
    o.extend_from_slice(if r.is_final { b"true," } else { b"false," });
    num(o, u64::from(r.ip_version));
    num(o, u64::from(r.proto));
    match r.vlan {
        Some(v) => num(o, u64::from(v)),
        None => o.push(b','),
    }
    super::ndjson::ip(r.src_addr, o);
    o.push(b',');
    num(o, u64::from(r.src_port));
    super::ndjson::ip(r.dst_addr, o);
    o.push(b',');
    num(o, u64::from(r.dst_port));
    o.extend_from_slice(match r.direction {
        Direction::Outbound => b"outbound,".as_slice(),
        Direction::Inbound => b"inbound,",
        Direction::Internal => b"internal,",
        Direction::External => b"external,",
    });
    num(o, r.first_ns);
    num(o, r.last_ns);
    num(o, r.fwd_packets);
    num(o, r.fwd_bytes);
    num(o, r.rev_packets);
    num(o, r.rev_bytes);
    num(o, u64::from(r.fwd_tcp_flags));
    num(o, u64::from(r.rev_tcp_flags));
    match r.icmp_type {
        Some(v) => num(o, u64::from(v)),
        None => o.push(b','),
    }
    match r.icmp_code {
        Some(v) => num(o, u64::from(v)),
        None => o.push(b','),
    }
    o.extend_from_slice(match r.end_reason {
        EndReason::Idle => b"idle,".as_slice(),
        EndReason::Active => b"active,",
        EndReason::Fin => b"fin,",
        EndReason::Rst => b"rst,",
        EndReason::Evicted => b"evicted,",
        EndReason::EndOfInput => b"end_of_input,",
        EndReason::Shutdown => b"shutdown,",
    });
    o.extend_from_slice(if r.gap { b"true," } else { b"false," });
    if let Some(rule) = &r.rule {
        field(rule, o);
    }
    o.push(b',');
    match r.decision {
        Some(Decision::Allow) => o.extend_from_slice(b"allow"),
        Some(Decision::Deny) => o.extend_from_slice(b"deny"),
        None => {}
    }
}

/// One text field, quoted (RFC 4180: doubled quotes inside) only when it
/// holds a comma, a quote or a line break, or would read as empty (an empty
/// rule name is not an absent one).
pub fn field(s: &str, o: &mut Vec<u8>) {
    let quote = s.is_empty() || s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !quote {
        o.extend_from_slice(s.as_bytes());
        return;
    }
    o.push(b'"');
    for b in s.bytes() {
        if b == b'"' {
            o.push(b'"');
        }
        o.push(b);
    }
    o.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::Rng;
    use crate::testkit::random_record;

    /// An RFC 4180 reader, independent of the writer: fields of one line
    /// (quoted fields may hold anything), `None` for an unquoted empty one.
    fn parse_line(line: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            let mut f = String::new();
            let mut quoted = false;
            if chars.peek() == Some(&'"') {
                quoted = true;
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '"' {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            f.push('"');
                        } else {
                            break;
                        }
                    } else {
                        f.push(c);
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    f.push(c);
                    chars.next();
                }
            }
            out.push((quoted || !f.is_empty()).then_some(f));
            match chars.next() {
                Some(',') => continue,
                None => return out,
                Some(c) => panic!("unexpected {c:?} after a field in {line:?}"),
            }
        }
    }

    /// The CSV fields of a record, as the NDJSON (serde) encoding has them.
    fn from_serde(r: &FlowRecord) -> Vec<Option<String>> {
        let v: serde_json::Value = serde_json::to_value(r).unwrap();
        HEADER
            .iter()
            .map(|k| match v.get(*k) {
                None | Some(serde_json::Value::Null) if *k == "gap" => Some("false".into()),
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            })
            .collect()
    }

    #[test]
    fn fields_equal_the_serde_encoding() {
        let mut rng = Rng::new(12);
        let mut line = Vec::new();
        header_line(&mut line);
        assert_eq!(
            parse_line(std::str::from_utf8(&line).unwrap().trim_end()),
            HEADER
                .iter()
                .map(|h| Some(h.to_string()))
                .collect::<Vec<_>>()
        );
        for _ in 0..5_000 {
            let r = random_record(
                &mut rng,
                &[
                    "AllowWeb",
                    "Deny \"all\", then, some",
                    "",
                    "two\nlines\r",
                    " é ",
                ],
            );
            line.clear();
            encode(&r, &mut line);
            let got = parse_line(std::str::from_utf8(&line).unwrap());
            assert_eq!(got, from_serde(&r), "{}", String::from_utf8_lossy(&line));
        }
    }

    #[test]
    fn an_empty_run_still_has_its_header() {
        let mut buf = Vec::new();
        {
            let mut s = CsvSink::new(&mut buf);
            s.finish().unwrap();
        }
        assert_eq!(String::from_utf8(buf).unwrap(), HEADER.join(",") + "\n");
    }
}
