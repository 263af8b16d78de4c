//! IPFIX (RFC 7011) messages for the flow records, biflows as RFC 5103
//! describes them, with the template the common collectors actually read
//! (nfdump 1.7's `ipfix.c`, goflow2, ipfixcol2; see the README's mapping
//! table). Sans-IO: records and the export time in, whole messages out; the
//! exporter decides when templates go along and where messages go.

mod decode;

use std::net::IpAddr;

pub use decode::{messages, DataRecord, FieldSpec, IpfixDecoder, IpfixMessage};

use crate::record::{EndReason, FlowRecord};

/// IPFIX's version number, the first two bytes of every message.
pub const IPFIX_VERSION: u16 = 10;
/// The enterprise number RFC 5103 gives reverse information elements.
pub const REVERSE_PEN: u32 = 29305;
/// The template IDs: one per IP version.
pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;
/// The smallest message size an encoder accepts: the templates and one
/// record always fit.
pub const MIN_MESSAGE: usize = 512;
/// IPFIX lengths are 16 bits.
pub const MAX_MESSAGE: usize = 65_535;

const MSG_HEADER: usize = 16;
const SET_HEADER: usize = 4;
const TEMPLATE_SET: u16 = 2;

/// Information element numbers (IANA IPFIX registry).
mod ie {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const TCP_CONTROL_BITS: u16 = 6;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const ICMP_TYPE_CODE_IPV4: u16 = 32;
    pub const VLAN_ID: u16 = 58;
    pub const FLOW_END_REASON: u16 = 136;
    pub const ICMP_TYPE_CODE_IPV6: u16 = 139;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    pub const BIFLOW_DIRECTION: u16 = 239;
}

/// How a biflow is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpfixMode {
    /// One record per flow record, reverse counters as RFC 5103 reverse
    /// elements and `biflowDirection` = initiator.
    Biflow,
    /// Two records per flow record (the reverse one only when the responder
    /// sent anything), for collectors that ignore reverse elements.
    Uniflow,
}

/// A field specifier: element, length, and whether it is the RFC 5103
/// reverse of the element.
#[derive(Clone, Copy)]
struct Field(u16, u16, bool);

fn fields(v6: bool, mode: IpfixMode) -> Vec<Field> {
    let (src, dst, icmp, alen) = if v6 {
        (
            ie::SOURCE_IPV6_ADDRESS,
            ie::DESTINATION_IPV6_ADDRESS,
            ie::ICMP_TYPE_CODE_IPV6,
            16,
        )
    } else {
        (
            ie::SOURCE_IPV4_ADDRESS,
            ie::DESTINATION_IPV4_ADDRESS,
            ie::ICMP_TYPE_CODE_IPV4,
            4,
        )
    };
    let mut f = vec![
        Field(src, alen, false),
        Field(dst, alen, false),
        Field(ie::SOURCE_TRANSPORT_PORT, 2, false),
        Field(ie::DESTINATION_TRANSPORT_PORT, 2, false),
        Field(ie::PROTOCOL_IDENTIFIER, 1, false),
        Field(ie::OCTET_DELTA_COUNT, 8, false),
        Field(ie::PACKET_DELTA_COUNT, 8, false),
    ];
    if mode == IpfixMode::Biflow {
        f.push(Field(ie::OCTET_DELTA_COUNT, 8, true));
        f.push(Field(ie::PACKET_DELTA_COUNT, 8, true));
    }
    f.extend([
        Field(ie::FLOW_START_MILLISECONDS, 8, false),
        Field(ie::FLOW_END_MILLISECONDS, 8, false),
        // Forward flags only: nfdump 1.7 takes any other reverse element
        // for its forward one and would overwrite them.
        Field(ie::TCP_CONTROL_BITS, 2, false),
    ]);
    if mode == IpfixMode::Biflow {
        f.push(Field(ie::BIFLOW_DIRECTION, 1, false));
    }
    f.extend([
        Field(ie::FLOW_END_REASON, 1, false),
        Field(ie::VLAN_ID, 2, false),
        Field(icmp, 2, false),
    ]);
    f
}

/// flowEndReason (IE 136): 1 idle timeout, 2 active timeout, 3 end of flow
/// detected, 4 forced end, 5 lack of resources.
pub fn end_reason_code(r: EndReason) -> u8 {
    match r {
        EndReason::Idle => 1,
        EndReason::Active => 2,
        EndReason::Fin | EndReason::Rst => 3,
        EndReason::EndOfInput | EndReason::Shutdown => 4,
        EndReason::Evicted => 5,
    }
}

/// Turns flow records into IPFIX messages for one observation domain,
/// keeping its sequence number (data records sent before each message).
pub struct IpfixEncoder {
    domain: u32,
    mode: IpfixMode,
    max_message: usize,
    sequence: u32,
    templates: Vec<u8>,
}

impl IpfixEncoder {
    /// `max_message` is clamped to `MIN_MESSAGE..=MAX_MESSAGE` (an MTU's
    /// worth for UDP is the caller's choice).
    pub fn new(domain: u32, mode: IpfixMode, max_message: usize) -> Self {
        let mut templates = Vec::new();
        let set_at = templates.len();
        put16(&mut templates, TEMPLATE_SET);
        put16(&mut templates, 0);
        for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
            let f = fields(v6, mode);
            put16(&mut templates, id);
            put16(&mut templates, f.len() as u16);
            for Field(id, len, reverse) in f {
                if reverse {
                    put16(&mut templates, id | 0x8000);
                    put16(&mut templates, len);
                    put32(&mut templates, REVERSE_PEN);
                } else {
                    put16(&mut templates, id);
                    put16(&mut templates, len);
                }
            }
        }
        let len = (templates.len() - set_at) as u16;
        templates[set_at + 2..set_at + 4].copy_from_slice(&len.to_be_bytes());
        IpfixEncoder {
            domain,
            mode,
            max_message: max_message.clamp(MIN_MESSAGE, MAX_MESSAGE),
            sequence: 0,
            templates,
        }
    }

    /// Data records sent so far in this domain, mod 2^32: the next
    /// message's sequence number.
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// Encodes `records` into as many messages as their size needs, each
    /// appended to `out`. With `with_templates` the first message starts with
    /// the template set (the first message to a collector, and every refresh
    /// over UDP). Nothing is appended for no records and no templates.
    pub fn encode(
        &mut self,
        records: &[FlowRecord],
        export_time: u32,
        with_templates: bool,
        out: &mut Vec<Vec<u8>>,
    ) {
        let mut msg = Message::new(self, export_time);
        if with_templates {
            msg.buf.extend_from_slice(&self.templates);
        }
        let mut rec = Vec::with_capacity(128);
        for r in records {
            for reverse in [false, true] {
                rec.clear();
                let Some(template) = self.record(r, reverse, &mut rec) else {
                    continue;
                };
                let set_cost = if msg.set == Some(template) {
                    0
                } else {
                    SET_HEADER
                };
                if msg.buf.len() + set_cost + rec.len() > self.max_message {
                    let sent = msg.finish(out);
                    self.sequence = self.sequence.wrapping_add(sent);
                    msg = Message::new(self, export_time);
                }
                msg.add(template, &rec);
            }
        }
        if msg.records > 0 || with_templates {
            let sent = msg.finish(out);
            self.sequence = self.sequence.wrapping_add(sent);
        }
    }

    /// One data record of `r` (its reverse half in uniflow mode), or `None`
    /// when there is none to send.
    fn record(&self, r: &FlowRecord, reverse: bool, out: &mut Vec<u8>) -> Option<u16> {
        let uniflow = self.mode == IpfixMode::Uniflow;
        if reverse && (!uniflow || r.rev_packets == 0) {
            return None;
        }
        let (src, dst, sport, dport, bytes, packets, flags) = if reverse {
            let f = u16::from(r.rev_tcp_flags);
            (
                r.dst_addr,
                r.src_addr,
                r.dst_port,
                r.src_port,
                r.rev_bytes,
                r.rev_packets,
                f,
            )
        } else {
            let f = u16::from(r.fwd_tcp_flags);
            (
                r.src_addr,
                r.dst_addr,
                r.src_port,
                r.dst_port,
                r.fwd_bytes,
                r.fwd_packets,
                f,
            )
        };
        let template = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                TEMPLATE_V4
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                TEMPLATE_V6
            }
            // A record's two ends share a version; one that does not
            // cannot be expressed in either template.
            _ => return None,
        };
        let icmp = match (r.icmp_type, r.icmp_code) {
            (Some(t), c) => Some(u16::from(t) << 8 | u16::from(c.unwrap_or(0))),
            (None, _) => None,
        };
        // ICMP has no ports (the record's hold the echo identifier): the
        // type and code go where NetFlow put them, in the destination port,
        // which is also where nfdump keeps icmpTypeCode and where it falls
        // back to when icmpTypeCode is 0 (an echo reply).
        let (sport, dport) = match icmp {
            Some(tc) => (0, tc),
            None => (sport, dport),
        };
        put16(out, sport);
        put16(out, dport);
        out.push(r.proto);
        put64(out, bytes);
        put64(out, packets);
        if !uniflow {
            put64(out, r.rev_bytes);
            put64(out, r.rev_packets);
        }
        put64(out, r.first_ns / 1_000_000);
        put64(out, r.last_ns / 1_000_000);
        put16(out, flags);
        if !uniflow {
            out.push(1); // biflowDirection: initiator
        }
        out.push(end_reason_code(r.end_reason));
        put16(out, r.vlan.unwrap_or(0));
        put16(out, icmp.unwrap_or(0));
        Some(template)
    }
}

/// A message being filled.
struct Message {
    buf: Vec<u8>,
    /// The open data set: its template and where its header sits.
    set: Option<u16>,
    set_at: usize,
    records: u32,
}

impl Message {
    fn new(enc: &IpfixEncoder, export_time: u32) -> Message {
        let mut buf = Vec::with_capacity(enc.max_message);
        put16(&mut buf, IPFIX_VERSION);
        put16(&mut buf, 0); // length, at the end
        put32(&mut buf, export_time);
        put32(&mut buf, enc.sequence);
        put32(&mut buf, enc.domain);
        Message {
            buf,
            set: None,
            set_at: 0,
            records: 0,
        }
    }

    fn add(&mut self, template: u16, rec: &[u8]) {
        if self.set != Some(template) {
            self.close_set();
            self.set = Some(template);
            self.set_at = self.buf.len();
            put16(&mut self.buf, template);
            put16(&mut self.buf, 0);
        }
        self.buf.extend_from_slice(rec);
        self.records += 1;
    }

    fn close_set(&mut self) {
        if self.set.take().is_some() {
            let len = (self.buf.len() - self.set_at) as u16;
            self.buf[self.set_at + 2..self.set_at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    /// Closes the message into `out`; returns its data records.
    fn finish(mut self, out: &mut Vec<Vec<u8>>) -> u32 {
        self.close_set();
        debug_assert!(self.buf.len() >= MSG_HEADER && self.buf.len() <= MAX_MESSAGE);
        let len = self.buf.len() as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        out.push(self.buf);
        self.records
    }
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests;
