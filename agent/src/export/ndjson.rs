//! One JSON object per line. Records are formatted by hand rather than through
//! serde: the output stage shares two cores with the engine, and this is about
//! three times cheaper. A test holds it byte-for-byte equal to serde_json's
//! encoding of the same record, which stays the definition.

use std::io::{self, Write};
use std::net::IpAddr;

use vmflow_proto::{Decision, Direction, EndReason, FlowRecord};

use super::line::{self, Line};
use super::RecordSink;

pub struct NdjsonSink<W: Write> {
    out: W,
    /// Lines are formatted straight into this buffer (zeroed once) and it
    /// goes out in one write(2) once `WRITE_AT` bytes are in it: no copy of
    /// each line through a `BufWriter`.
    buf: Box<[u8]>,
    len: usize,
    flushed: std::time::Instant,
}

/// Records reach the file at most this long after the engine produced them.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Bytes per write(2), as the `BufWriter` before it had: that is ~1,500
/// system calls for the 100 MB of a 4 M-packet replay, not where the output
/// thread's time goes, and a larger buffer would add to the peak memory,
/// which is at its bar.
const WRITE_AT: usize = 64 << 10;

impl<W: Write> NdjsonSink<W> {
    pub fn new(w: W) -> Self {
        NdjsonSink {
            out: w,
            buf: vec![0; WRITE_AT + line::MAX].into_boxed_slice(),
            len: 0,
            flushed: std::time::Instant::now(),
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        let n = std::mem::take(&mut self.len);
        self.out.write_all(&self.buf[..n])
    }

    /// A line with free text (a rule name, an enriched remote) is
    /// formatted on its own.
    #[cold]
    fn put_long(&mut self, r: &FlowRecord) -> io::Result<()> {
        let mut v = Vec::new();
        encode(r, &mut v);
        v.push(b'\n');
        if self.len + v.len() > self.buf.len() {
            self.write_out()?;
        }
        if v.len() > self.buf.len() {
            return self.out.write_all(&v);
        }
        self.buf[self.len..self.len + v.len()].copy_from_slice(&v);
        self.len += v.len();
        Ok(())
    }
}

/// Like `BufWriter`: what is buffered is written when the sink goes away
/// without `finish` (errors there have nowhere to go).
impl<W: Write> Drop for NdjsonSink<W> {
    fn drop(&mut self) {
        let _ = self.write_out();
    }
}

impl<W: Write + Send> RecordSink for NdjsonSink<W> {
    fn write(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        self.write_parts(&[records])
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> io::Result<()> {
        for r in parts.iter().copied().flatten() {
            if r.rule.is_some() || r.remote.is_some() {
                self.put_long(r)?;
            } else {
                let mut l = Line::at(&mut self.buf, self.len);
                head(r, &mut l);
                tail(r, &mut l);
                l.push(b'\n');
                self.len = l.len;
            }
            if self.len >= WRITE_AT {
                self.write_out()?;
            }
        }
        // Live capture calls this at least every tick: records become visible
        // to readers of the file within FLUSH_EVERY, at a write(2) per
        // FLUSH_EVERY rather than one per batch.
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flushed = std::time::Instant::now();
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush()
    }
}

/// Appends records' lines to any buffer, each formatted in a scratch line
/// zeroed once: [`encode`] zeroes a line's worth of room in the buffer for
/// every record, which on the collector cost more than the copy.
pub struct Lines {
    scratch: Box<[u8]>,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            scratch: vec![0; line::MAX].into_boxed_slice(),
        }
    }
}

impl Lines {
    /// Appends `r`'s line, newline included.
    pub fn append(&mut self, r: &FlowRecord, out: &mut Vec<u8>) {
        if r.rule.is_some() || r.remote.is_some() {
            encode(r, out);
            out.push(b'\n');
            return;
        }
        let mut l = Line::at(&mut self.scratch, 0);
        head(r, &mut l);
        tail(r, &mut l);
        l.push(b'\n');
        let n = l.len;
        out.extend_from_slice(&self.scratch[..n]);
    }
}

/// Appends the JSON object for `r` (no newline).
pub fn encode(r: &FlowRecord, o: &mut Vec<u8>) {
    let start = o.len();
    o.resize(start + line::MAX, 0);
    let mut l = Line::at(o, start);
    head(r, &mut l);
    let end = l.len;
    o.truncate(end);
    if let Some(rule) = &r.rule {
        o.extend_from_slice(b",\"rule\":");
        // Rule names are the user's: serde_json escapes them as the
        // definition (serde's encoding of the record) does.
        let _ = serde_json::to_writer(&mut *o, rule);
    }
    let Some(remote) = &r.remote else {
        let start = o.len();
        o.resize(start + line::MAX, 0);
        let mut l = Line::at(o, start);
        tail(r, &mut l);
        let end = l.len;
        o.truncate(end);
        return;
    };
    match r.decision {
        Some(Decision::Allow) => o.extend_from_slice(b",\"decision\":\"allow\""),
        Some(Decision::Deny) => o.extend_from_slice(b",\"decision\":\"deny\""),
        None => {}
    }
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
    o.push(b'}');
}

/// The object up to the rule name (which is free text).
#[inline]
fn head(r: &FlowRecord, l: &mut Line) {
    l.lit(b"{\"flow_id\":");
    l.u64(r.flow_id);
    l.lit(b",\"segment\":");
    l.u64(u64::from(r.segment));
    l.lit(if r.is_final {
        b",\"final\":true"
    } else {
        b",\"final\":false"
    });
    l.lit(b",\"ip_version\":");
    l.u64(u64::from(r.ip_version));
    l.lit(b",\"proto\":");
    l.u64(u64::from(r.proto));
    match r.vlan {
        Some(v) => {
            l.lit(b",\"vlan\":");
            l.u64(u64::from(v));
        }
        None => l.lit(b",\"vlan\":null"),
    }
    l.lit(b",\"src_addr\":\"");
    l.ip(r.src_addr);
    l.lit(b"\",\"src_port\":");
    l.u64(u64::from(r.src_port));
    l.lit(b",\"dst_addr\":\"");
    l.ip(r.dst_addr);
    l.lit(b"\",\"dst_port\":");
    l.u64(u64::from(r.dst_port));
    l.lit(match r.direction {
        Direction::Outbound => b",\"direction\":\"outbound\"".as_slice(),
        Direction::Inbound => b",\"direction\":\"inbound\"",
        Direction::Internal => b",\"direction\":\"internal\"",
        Direction::External => b",\"direction\":\"external\"",
    });
    l.lit(b",\"first_ns\":");
    l.u64(r.first_ns);
    l.lit(b",\"last_ns\":");
    l.u64(r.last_ns);
    l.lit(b",\"fwd_packets\":");
    l.u64(r.fwd_packets);
    l.lit(b",\"fwd_bytes\":");
    l.u64(r.fwd_bytes);
    l.lit(b",\"rev_packets\":");
    l.u64(r.rev_packets);
    l.lit(b",\"rev_bytes\":");
    l.u64(r.rev_bytes);
    l.lit(b",\"fwd_tcp_flags\":");
    l.u64(u64::from(r.fwd_tcp_flags));
    l.lit(b",\"rev_tcp_flags\":");
    l.u64(u64::from(r.rev_tcp_flags));
    match r.icmp_type {
        Some(v) => {
            l.lit(b",\"icmp_type\":");
            l.u64(u64::from(v));
        }
        None => l.lit(b",\"icmp_type\":null"),
    }
    match r.icmp_code {
        Some(v) => {
            l.lit(b",\"icmp_code\":");
            l.u64(u64::from(v));
        }
        None => l.lit(b",\"icmp_code\":null"),
    }
    l.lit(match r.end_reason {
        EndReason::Idle => b",\"end_reason\":\"idle\"".as_slice(),
        EndReason::Active => b",\"end_reason\":\"active\"",
        EndReason::Fin => b",\"end_reason\":\"fin\"",
        EndReason::Rst => b",\"end_reason\":\"rst\"",
        EndReason::Evicted => b",\"end_reason\":\"evicted\"",
        EndReason::EndOfInput => b",\"end_reason\":\"end_of_input\"",
        EndReason::Shutdown => b",\"end_reason\":\"shutdown\"",
    });
    if r.gap {
        l.lit(b",\"gap\":true");
    }
}

/// The object after the rule name.
#[inline]
fn tail(r: &FlowRecord, l: &mut Line) {
    match r.decision {
        Some(Decision::Allow) => l.lit(b",\"decision\":\"allow\""),
        Some(Decision::Deny) => l.lit(b",\"decision\":\"deny\""),
        None => {}
    }
    l.push(b'}');
}

/// Appends the address as `Display` writes it.
pub(super) fn ip(a: IpAddr, o: &mut Vec<u8>) {
    let start = o.len();
    o.resize(start + line::MAX, 0);
    let mut l = Line::at(o, start);
    l.ip(a);
    let end = l.len;
    o.truncate(end);
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
