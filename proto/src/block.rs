//! Record blocks: a batch of flow records encoded column by column (small
//! integers as varints, timestamps as deltas, the flow id left out where the
//! receiver can recompute it), then compressed with zstd. Columns put similar
//! bytes next to each other, which is what makes the compressor effective.
//!
//! Records are sent in order of `first_ns` (a block is a set: the order in
//! which the agent produced them carries no meaning), so time deltas are
//! small, and times are stored in the largest power-of-ten unit that divides
//! all of them (µs for libpcap captures).
//!
//! Layout before compression: `count`, the time unit exponent, then each
//! column as `len` + bytes (all lengths and counts LEB128). The compressed
//! block is prefixed with a one-byte block version.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::record::{flow_id, Decision, Direction, EndReason, FlowRecord, Remote};
use crate::ProtoError;

pub const BLOCK_VERSION: u8 = 1;
/// No block decompresses to more than this (a guard against compression bombs).
pub const MAX_BLOCK_RAW: usize = 64 << 20;

const FINAL: u8 = 1;
const V6: u8 = 2;
const VLAN: u8 = 4;
const ICMP: u8 = 8;
const EXPLICIT_ID: u8 = 16;
const SEGMENT: u8 = 32;
const GAP: u8 = 64;
/// The record has a rule or a decision (flow-log sources), in the policy
/// column: a 20th column, written only when some record has one, so that a
/// block without them is byte for byte what it was before they existed and
/// an older decoder (which reads 19 columns and ignores the rest and this
/// bit) still reads a block with them.
const POLICY: u8 = 128;

/// In the policy column, per record with `POLICY`: which parts follow.
const HAS_DECISION: u8 = 1;
const DENY: u8 = 2;
const HAS_RULE: u8 = 4;

/// In the remote column (a 21st, after the policy column, which is then
/// written even if empty; only when some record has a `remote`), one u8 per
/// record saying which of the remote's fields follow: no meta bit is left,
/// and a byte per record of a block that has them compresses to little.
const HAS_COUNTRY: u8 = 1;
const HAS_ASN: u8 = 2;
const HAS_AS_ORG: u8 = 4;
const HAS_WATCHLISTS: u8 = 8;

// The observations raised with a batch's records (their own stream, issue
// 17) follow as a 22nd column, NDJSON lines as the agent wrote them, only
// when there are some (the policy and remote columns are then written even
// if empty: a 0 byte per record). Decoders that predate it read 21 columns
// and ignore the rest, so they keep reading the records.

const DIRECTIONS: [Direction; 4] = Direction::ALL;
const REASONS: [EndReason; 7] = EndReason::ALL;

#[derive(Default)]
struct Cols {
    meta: Vec<u8>,
    kind: Vec<u8>,
    proto: Vec<u8>,
    vlan: Vec<u8>,
    src: Vec<u8>,
    dst: Vec<u8>,
    sport: Vec<u8>,
    dport: Vec<u8>,
    first: Vec<u8>,
    dur: Vec<u8>,
    fpk: Vec<u8>,
    rpk: Vec<u8>,
    fby: Vec<u8>,
    rby: Vec<u8>,
    fflags: Vec<u8>,
    rflags: Vec<u8>,
    icmp: Vec<u8>,
    segment: Vec<u8>,
    id: Vec<u8>,
    policy: Vec<u8>,
    remote: Vec<u8>,
}

impl Cols {
    fn all(&self) -> [&Vec<u8>; 19] {
        [
            &self.meta,
            &self.kind,
            &self.proto,
            &self.vlan,
            &self.src,
            &self.dst,
            &self.sport,
            &self.dport,
            &self.first,
            &self.dur,
            &self.fpk,
            &self.rpk,
            &self.fby,
            &self.rby,
            &self.fflags,
            &self.rflags,
            &self.icmp,
            &self.segment,
            &self.id,
        ]
    }
}

/// Encodes records into a compressed block. Decoding gives the same records
/// ordered by `first_ns` (ties keep their order).
pub fn encode_records(records: &[FlowRecord], level: i32) -> Vec<u8> {
    encode_block(records, &[], level)
}

/// Encodes records and the observations raised with them (NDJSON lines,
/// each ending in `\n`; empty: none) into a compressed block. Without
/// observations the block is [`encode_records`]'s, byte for byte.
pub fn encode_block(records: &[FlowRecord], observations: &[u8], level: i32) -> Vec<u8> {
    let mut order: Vec<&FlowRecord> = records.iter().collect();
    order.sort_by_key(|r| r.first_ns);
    let exp = (0..=9u32)
        .rev()
        .find(|&e| {
            let unit = 10u64.pow(e);
            records
                .iter()
                .all(|r| r.first_ns % unit == 0 && r.last_ns % unit == 0)
        })
        .unwrap_or(0);
    let unit = 10u64.pow(exp);
    let mut c = Cols::default();
    let mut prev_first = 0u64;
    let with_observations = !observations.is_empty();
    let any_remote = with_observations || records.iter().any(|r| r.remote.is_some());
    for r in order {
        let derived = flow_id(
            r.vlan, r.proto, r.src_addr, r.src_port, r.dst_addr, r.dst_port, r.first_ns,
        );
        let v6 = r.src_addr.is_ipv6() || r.dst_addr.is_ipv6() || r.ip_version == 6;
        let mut meta = 0u8;
        for (on, bit) in [
            (r.is_final, FINAL),
            (v6, V6),
            (r.vlan.is_some(), VLAN),
            (r.icmp_type.is_some() || r.icmp_code.is_some(), ICMP),
            (r.flow_id != derived, EXPLICIT_ID),
            (r.segment != 0, SEGMENT),
            (r.gap, GAP),
            (r.rule.is_some() || r.decision.is_some(), POLICY),
        ] {
            if on {
                meta |= bit;
            }
        }
        c.meta.push(meta);
        let dir = DIRECTIONS
            .iter()
            .position(|d| *d == r.direction)
            .unwrap_or(0) as u8;
        let why = REASONS.iter().position(|d| *d == r.end_reason).unwrap_or(0) as u8;
        c.kind.push(dir | why << 2);
        c.proto.push(r.proto);
        if let Some(v) = r.vlan {
            varint(&mut c.vlan, u64::from(v));
        }
        addr(&mut c.src, r.src_addr, v6);
        addr(&mut c.dst, r.dst_addr, v6);
        c.sport.extend_from_slice(&r.src_port.to_be_bytes());
        c.dport.extend_from_slice(&r.dst_port.to_be_bytes());
        let (first, last) = (r.first_ns / unit, r.last_ns / unit);
        varint(&mut c.first, first.wrapping_sub(prev_first));
        prev_first = first;
        varint(&mut c.dur, zigzag(last.wrapping_sub(first) as i64));
        varint(&mut c.fpk, r.fwd_packets);
        varint(&mut c.rpk, r.rev_packets);
        varint(&mut c.fby, r.fwd_bytes);
        varint(&mut c.rby, r.rev_bytes);
        c.fflags.push(r.fwd_tcp_flags);
        c.rflags.push(r.rev_tcp_flags);
        if meta & ICMP != 0 {
            // Type and code each with a presence bit, so a half-set pair survives.
            c.icmp
                .push(u8::from(r.icmp_type.is_some()) | u8::from(r.icmp_code.is_some()) << 1);
            c.icmp.push(r.icmp_type.unwrap_or(0));
            c.icmp.push(r.icmp_code.unwrap_or(0));
        }
        if meta & SEGMENT != 0 {
            varint(&mut c.segment, u64::from(r.segment));
        }
        if meta & EXPLICIT_ID != 0 {
            c.id.extend_from_slice(&r.flow_id.to_le_bytes());
        }
        if meta & POLICY != 0 {
            let mut has = 0;
            if let Some(d) = r.decision {
                has |= HAS_DECISION;
                if d == Decision::Deny {
                    has |= DENY;
                }
            }
            if r.rule.is_some() {
                has |= HAS_RULE;
            }
            c.policy.push(has);
            if let Some(rule) = &r.rule {
                varint(&mut c.policy, rule.len() as u64);
                c.policy.extend_from_slice(rule.as_bytes());
            }
        }
        if any_remote {
            remote(&mut c.remote, r.remote.as_deref());
        }
    }
    let mut raw = Vec::new();
    varint(&mut raw, records.len() as u64);
    raw.push(exp as u8);
    for col in c.all() {
        varint(&mut raw, col.len() as u64);
        raw.extend_from_slice(col);
    }
    if !c.policy.is_empty() || any_remote {
        varint(&mut raw, c.policy.len() as u64);
        raw.extend_from_slice(&c.policy);
    }
    if any_remote {
        varint(&mut raw, c.remote.len() as u64);
        raw.extend_from_slice(&c.remote);
    }
    if with_observations {
        varint(&mut raw, observations.len() as u64);
        raw.extend_from_slice(observations);
    }
    let mut out = vec![BLOCK_VERSION];
    // Compressing a Vec into a Vec cannot fail short of allocation failure;
    // store the raw bytes with a marker if it ever does.
    match zstd::bulk::compress(&raw, level) {
        Ok(z) => out.extend_from_slice(&z),
        Err(_) => unreachable_compress(&mut out, &raw),
    }
    out
}

#[cold]
fn unreachable_compress(out: &mut Vec<u8>, raw: &[u8]) {
    out[0] = 0;
    out.extend_from_slice(raw);
}

/// Decodes a block's records; never panics, whatever the input.
pub fn decode_records(block: &[u8]) -> Result<Vec<FlowRecord>, ProtoError> {
    decode_block(block).map(|(records, _)| records)
}

/// Decodes a block: its records, and the observations raised with them
/// (NDJSON lines; empty: none). Never panics, whatever the input. The
/// observations are checked to be UTF-8 lines, each ending in `\n`, none
/// empty; what they say is the reader's to check.
pub fn decode_block(block: &[u8]) -> Result<(Vec<FlowRecord>, Vec<u8>), ProtoError> {
    let bad = |m: &str| ProtoError::BadBlock(m.to_string());
    let (&version, body) = block.split_first().ok_or_else(|| bad("empty"))?;
    let raw = match version {
        BLOCK_VERSION => zstd::bulk::decompress(body, MAX_BLOCK_RAW)
            .map_err(|e| ProtoError::BadBlock(format!("decompression: {e}")))?,
        0 => body.to_vec(),
        v => return Err(ProtoError::BadBlock(format!("unknown block version {v}"))),
    };
    let mut top = Reader(&raw);
    let count = usize::try_from(top.varint()?).map_err(|_| bad("count"))?;
    if count > raw.len() {
        return Err(bad("count exceeds block size"));
    }
    let exp = u32::from(top.byte()?);
    if exp > 9 {
        return Err(bad("time unit"));
    }
    let unit = 10u64.pow(exp);
    let mut cols: Vec<Reader<'_>> = Vec::with_capacity(19);
    for _ in 0..19 {
        let len = usize::try_from(top.varint()?).map_err(|_| bad("column length"))?;
        cols.push(Reader(top.take(len)?));
    }
    let [meta, kind, proto, vlan, src, dst, sport, dport, first, dur, fpk, rpk, fby, rby, fflags, rflags, icmp, segment, id] =
        &mut cols[..]
    else {
        return Err(bad("columns"));
    };
    // Present only when some record has a rule or decision.
    let mut policy = if top.0.is_empty() {
        Reader(&[])
    } else {
        let len = usize::try_from(top.varint()?).map_err(|_| bad("column length"))?;
        Reader(top.take(len)?)
    };
    // Present only when some record has a remote: a byte for every record.
    let mut remotes = if top.0.is_empty() {
        None
    } else {
        let len = usize::try_from(top.varint()?).map_err(|_| bad("column length"))?;
        Some(Reader(top.take(len)?))
    };
    let observations = if top.0.is_empty() {
        Vec::new()
    } else {
        let len = usize::try_from(top.varint()?).map_err(|_| bad("column length"))?;
        let lines = top.take(len)?;
        if std::str::from_utf8(lines).is_err()
            || lines.last() != Some(&b'\n')
            || lines.starts_with(b"\n")
            || lines.windows(2).any(|w| w == b"\n\n")
        {
            return Err(bad("observations are not UTF-8 lines"));
        }
        lines.to_vec()
    };
    let mut out = Vec::with_capacity(count);
    let mut prev_first = 0u64;
    for _ in 0..count {
        let m = meta.byte()?;
        let k = kind.byte()?;
        let v6 = m & V6 != 0;
        let vl = if m & VLAN != 0 {
            Some(u16::try_from(vlan.varint()?).map_err(|_| bad("vlan"))?)
        } else {
            None
        };
        let p = proto.byte()?;
        let s = read_addr(src, v6)?;
        let d = read_addr(dst, v6)?;
        let sp = sport.u16()?;
        let dp = dport.u16()?;
        let fu = prev_first.wrapping_add(first.varint()?);
        prev_first = fu;
        let lu = fu.wrapping_add(unzigzag(dur.varint()?) as u64);
        let (f, l) = (fu.wrapping_mul(unit), lu.wrapping_mul(unit));
        let (it, ic) = if m & ICMP != 0 {
            let present = icmp.byte()?;
            let (t, c) = (icmp.byte()?, icmp.byte()?);
            (
                (present & 1 != 0).then_some(t),
                (present & 2 != 0).then_some(c),
            )
        } else {
            (None, None)
        };
        let seg = if m & SEGMENT != 0 {
            u32::try_from(segment.varint()?).map_err(|_| bad("segment"))?
        } else {
            0
        };
        let fid = if m & EXPLICIT_ID != 0 {
            u64::from_le_bytes(id.take(8)?.try_into().map_err(|_| bad("flow id"))?)
        } else {
            flow_id(vl, p, s, sp, d, dp, f)
        };
        let (rule, decision) = if m & POLICY != 0 {
            let has = policy.byte()?;
            let decision = (has & HAS_DECISION != 0).then_some(if has & DENY != 0 {
                Decision::Deny
            } else {
                Decision::Allow
            });
            let rule = if has & HAS_RULE != 0 {
                let len = usize::try_from(policy.varint()?).map_err(|_| bad("rule"))?;
                let bytes = policy.take(len)?;
                Some(String::from_utf8(bytes.to_vec()).map_err(|_| bad("rule is not UTF-8"))?)
            } else {
                None
            };
            (rule, decision)
        } else {
            (None, None)
        };
        let remote = match remotes.as_mut() {
            Some(col) => read_remote(col)?,
            None => None,
        };
        out.push(FlowRecord {
            flow_id: fid,
            segment: seg,
            is_final: m & FINAL != 0,
            ip_version: if v6 { 6 } else { 4 },
            proto: p,
            vlan: vl,
            src_addr: s,
            src_port: sp,
            dst_addr: d,
            dst_port: dp,
            direction: DIRECTIONS[usize::from(k & 3)],
            first_ns: f,
            last_ns: l,
            fwd_packets: fpk.varint()?,
            fwd_bytes: fby.varint()?,
            rev_packets: rpk.varint()?,
            rev_bytes: rby.varint()?,
            fwd_tcp_flags: fflags.byte()?,
            rev_tcp_flags: rflags.byte()?,
            icmp_type: it,
            icmp_code: ic,
            end_reason: *REASONS
                .get(usize::from(k >> 2))
                .ok_or_else(|| bad("end reason"))?,
            gap: m & GAP != 0,
            rule,
            decision,
            remote,
        });
    }
    Ok((out, observations))
}

fn text(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn remote(out: &mut Vec<u8>, r: Option<&Remote>) {
    let Some(r) = r else {
        out.push(0);
        return;
    };
    let mut has = 0;
    for (on, bit) in [
        (r.country.is_some(), HAS_COUNTRY),
        (r.asn.is_some(), HAS_ASN),
        (r.as_org.is_some(), HAS_AS_ORG),
        (!r.watchlists.is_empty(), HAS_WATCHLISTS),
    ] {
        if on {
            has |= bit;
        }
    }
    out.push(has);
    if let Some(c) = &r.country {
        text(out, c);
    }
    if let Some(a) = r.asn {
        varint(out, u64::from(a));
    }
    if let Some(o) = &r.as_org {
        text(out, o);
    }
    if !r.watchlists.is_empty() {
        varint(out, r.watchlists.len() as u64);
        for w in &r.watchlists {
            text(out, w);
        }
    }
}

fn read_text(col: &mut Reader<'_>, what: &str) -> Result<String, ProtoError> {
    let bad = || ProtoError::BadBlock(format!("{what} is not UTF-8"));
    let len = usize::try_from(col.varint()?).map_err(|_| bad())?;
    String::from_utf8(col.take(len)?.to_vec()).map_err(|_| bad())
}

fn read_remote(col: &mut Reader<'_>) -> Result<Option<Box<Remote>>, ProtoError> {
    let has = col.byte()?;
    if has == 0 {
        return Ok(None);
    }
    let country = (has & HAS_COUNTRY != 0)
        .then(|| read_text(col, "remote_country"))
        .transpose()?;
    let asn = (has & HAS_ASN != 0)
        .then(|| {
            u32::try_from(col.varint()?).map_err(|_| ProtoError::BadBlock("remote_asn".into()))
        })
        .transpose()?;
    let as_org = (has & HAS_AS_ORG != 0)
        .then(|| read_text(col, "remote_as_org"))
        .transpose()?;
    let mut watchlists = Vec::new();
    if has & HAS_WATCHLISTS != 0 {
        let n = col.varint()?;
        // Each name takes at least its length byte: a count beyond the
        // column is damage, not an allocation.
        if n > col.0.len() as u64 {
            return Err(ProtoError::BadBlock("watchlists".into()));
        }
        for _ in 0..n {
            watchlists.push(read_text(col, "watchlists")?);
        }
    }
    Ok(Some(Box::new(Remote {
        country,
        asn,
        as_org,
        watchlists,
    })))
}

fn addr(out: &mut Vec<u8>, a: IpAddr, v6: bool) {
    match (a, v6) {
        (IpAddr::V4(x), false) => out.extend_from_slice(&x.octets()),
        (IpAddr::V4(x), true) => out.extend_from_slice(&x.to_ipv6_mapped().octets()),
        (IpAddr::V6(x), _) => out.extend_from_slice(&x.octets()),
    }
}

fn read_addr(r: &mut Reader<'_>, v6: bool) -> Result<IpAddr, ProtoError> {
    if v6 {
        let b: [u8; 16] = r
            .take(16)?
            .try_into()
            .map_err(|_| ProtoError::BadBlock("address".into()))?;
        Ok(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        let b: [u8; 4] = r
            .take(4)?
            .try_into()
            .map_err(|_| ProtoError::BadBlock("address".into()))?;
        Ok(IpAddr::V4(Ipv4Addr::from(b)))
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.0.len() < n {
            return Err(ProtoError::BadBlock("column ends early".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn byte(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtoError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::BadBlock("varint longer than 10 bytes".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> FlowRecord {
        let src: IpAddr = if i.is_multiple_of(5) {
            format!("fd00::{:x}", i + 1).parse().unwrap()
        } else {
            format!("10.0.{}.{}", i / 250, i % 250 + 1).parse().unwrap()
        };
        let dst: IpAddr = if i.is_multiple_of(5) {
            "2001:db8::1".parse().unwrap()
        } else {
            "198.51.100.7".parse().unwrap()
        };
        let first = 1_760_000_000_000_000_000 + i * 1_000_003;
        FlowRecord {
            flow_id: flow_id(None, 6, src, (40_000 + i) as u16, dst, 443, first),
            segment: 0,
            is_final: true,
            ip_version: if i.is_multiple_of(5) { 6 } else { 4 },
            proto: 6,
            vlan: None,
            src_addr: src,
            src_port: (40_000 + i) as u16,
            dst_addr: dst,
            dst_port: 443,
            direction: DIRECTIONS[(i % 4) as usize],
            first_ns: first,
            last_ns: first + i * 977,
            fwd_packets: i,
            fwd_bytes: i * 1_000,
            rev_packets: i / 2,
            rev_bytes: u64::MAX - i,
            fwd_tcp_flags: 0x1b,
            rev_tcp_flags: 0x12,
            icmp_type: None,
            icmp_code: None,
            end_reason: REASONS[(i % 7) as usize],
            gap: i % 11 == 3,
            rule: None,
            decision: None,
            remote: None,
        }
    }

    #[test]
    fn round_trips_every_field() {
        let mut recs: Vec<FlowRecord> = (0..2_000).map(rec).collect();
        recs[3].segment = 4;
        recs[3].is_final = false;
        recs[4].vlan = Some(4095);
        recs[5].icmp_type = Some(8);
        recs[5].icmp_code = Some(0);
        recs[6].icmp_type = Some(3);
        recs[7].first_ns = 0;
        recs[7].last_ns = u64::MAX;
        recs[8].flow_id = 1;
        recs[9].rule = Some("UserRule_AllowWeb \"ü\"".into());
        recs[9].decision = Some(Decision::Allow);
        recs[10].decision = Some(Decision::Deny);
        recs[11].rule = Some(String::new());
        recs[12].remote = Some(Box::new(Remote {
            country: Some("DE".into()),
            asn: Some(u32::MAX),
            as_org: Some("Example \"AS\" é".into()),
            watchlists: vec!["tor-exits".into(), String::new()],
        }));
        recs[13].remote = Some(Box::new(Remote {
            asn: Some(0),
            ..Remote::default()
        }));
        recs[9].remote = Some(Box::new(Remote {
            watchlists: vec!["w".into()],
            ..Remote::default()
        }));
        let block = encode_records(&recs, 3);
        recs.sort_by_key(|r| r.first_ns);
        assert_eq!(decode_records(&block).unwrap(), recs);
        // A block of µs-aligned times is stored in µs and comes back exact.
        let mut coarse: Vec<FlowRecord> = (0..100).map(rec).collect();
        for r in &mut coarse {
            r.first_ns -= r.first_ns % 1_000;
            r.last_ns = r.first_ns + 5_000;
        }
        coarse.sort_by_key(|r| r.first_ns);
        assert_eq!(decode_records(&encode_records(&coarse, 3)).unwrap(), coarse);
        assert_eq!(decode_records(&encode_records(&[], 3)).unwrap(), vec![]);
    }

    /// Records without a rule or decision encode exactly as before the
    /// fields existed (19 columns, bit 7 clear), and a block with them is
    /// still read by a decoder that knows only the 19 columns.
    #[test]
    fn policy_fields_are_compatible() {
        let recs: Vec<FlowRecord> = (0..50).map(rec).collect();
        let raw = |block: &[u8]| zstd::bulk::decompress(&block[1..], MAX_BLOCK_RAW).unwrap();
        let plain = raw(&encode_records(&recs, 3));
        let mut with = recs.clone();
        with[7].rule = Some("DefaultRule_AllowVnetOutBound".into());
        with[7].decision = Some(Decision::Allow);
        let tagged = raw(&encode_records(&with, 3));
        // What an older decoder reads (it takes 19 columns, ignores what
        // follows and tests no bit 7) is the plain block: the tagged one is
        // the plain one with bit 7 set on the record that has a rule, and
        // one more column after the 19.
        let meta_at = 3; // count (1 byte: 50), time unit, meta column length
        assert_eq!(plain[..meta_at], tagged[..meta_at]);
        let mut untagged = tagged.clone();
        for b in &mut untagged[meta_at..meta_at + 50] {
            *b &= !POLICY;
        }
        assert_eq!(untagged[..plain.len()], plain[..]);
        assert!(untagged.len() > plain.len());
        let mut back = decode_records(&[&[0u8][..], &tagged[..]].concat()).unwrap();
        with.sort_by_key(|r| r.first_ns);
        assert_eq!(back, with);
        back.retain(|r| r.rule.is_some());
        assert_eq!(back[0].decision, Some(Decision::Allow));
        // A block without any: no trailing column at all.
        let cut = decode_records(&[&[0u8][..], &plain[..]].concat()).unwrap();
        assert!(cut.iter().all(|r| r.rule.is_none() && r.decision.is_none()));
    }

    /// A block whose records have a remote is the block without it plus
    /// the (here empty) policy column and the remote column: what an older
    /// decoder reads of it is the plain block.
    #[test]
    fn remote_fields_are_compatible() {
        let recs: Vec<FlowRecord> = (0..50).map(rec).collect();
        let raw = |block: &[u8]| zstd::bulk::decompress(&block[1..], MAX_BLOCK_RAW).unwrap();
        let plain = raw(&encode_records(&recs, 3));
        let mut with = recs.clone();
        with[3].remote = Some(Box::new(Remote {
            country: Some("NL".into()),
            ..Remote::default()
        }));
        let tagged = raw(&encode_records(&with, 3));
        assert_eq!(tagged[..plain.len()], plain[..]);
        // An empty policy column, then a byte per record and "NL".
        assert_eq!(tagged[plain.len()..plain.len() + 2], [0, 50 + 3]);
        let mut back = decode_records(&[&[0u8][..], &tagged[..]].concat()).unwrap();
        with.sort_by_key(|r| r.first_ns);
        assert_eq!(back, with);
        back.retain(|r| r.remote.is_some());
        assert_eq!(back.len(), 1);
    }

    /// Observations ride in a 22nd column: the records read back the same
    /// (also by a decoder that stops after the remote column), a block
    /// without them has no such column, and a batch may carry observations
    /// and no records.
    #[test]
    fn observations_ride_beside_the_records() {
        let recs: Vec<FlowRecord> = (0..50).map(rec).collect();
        let lines = b"{\"kind\":\"scan\",\"first_ns\":1}\n{\"kind\":\"watchlist\"}\n";
        let raw = |block: &[u8]| zstd::bulk::decompress(&block[1..], MAX_BLOCK_RAW).unwrap();
        let plain = raw(&encode_records(&recs, 3));
        let with = encode_block(&recs, lines, 3);
        let raw_with = raw(&with);
        assert_eq!(raw_with[..plain.len()], plain[..]);
        // An empty policy column, a 0 byte per record, then the lines.
        let tail = &raw_with[plain.len()..];
        assert_eq!(tail[..2], [0, 50]);
        assert!(tail[2..52].iter().all(|&b| b == 0));
        assert_eq!(&tail[52 + 1..], lines);
        let mut sorted = recs.clone();
        sorted.sort_by_key(|r| r.first_ns);
        assert_eq!(
            decode_block(&with).unwrap(),
            (sorted.clone(), lines.to_vec())
        );
        assert_eq!(decode_records(&with).unwrap(), sorted);
        assert_eq!(decode_block(&encode_records(&recs, 3)).unwrap().1, b"");
        assert_eq!(
            decode_block(&encode_block(&[], lines, 3)).unwrap(),
            (vec![], lines.to_vec())
        );
        // Lines that are not lines are damage.
        for bad in [&b"{}"[..], b"\n{}\n", b"{}\n\n{}\n", b"\xff\n"] {
            let e = decode_block(&encode_block(&recs, bad, 3)).unwrap_err();
            assert!(e.to_string().contains("observations"), "{e}");
        }
    }

    #[test]
    fn derived_flow_ids_are_not_sent() {
        let recs: Vec<FlowRecord> = (0..1_000).map(rec).collect();
        let mut explicit = recs.clone();
        for r in &mut explicit {
            r.flow_id ^= 0x5555;
        }
        let a = encode_records(&recs, 3).len();
        let b = encode_records(&explicit, 3).len();
        assert!(b > a + 6_000, "{a} vs {b}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let block = encode_block(&(0..300).map(rec).collect::<Vec<_>>(), b"{}\n", 3);
        let mut state = 0x1234_5678u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2_000 {
            let mut b = block.clone();
            let i = (next() % b.len() as u64) as usize;
            b[i] ^= next() as u8 | 1;
            let _ = decode_block(&b);
            b.truncate(i);
            let _ = decode_block(&b);
        }
        // Raw (version 0) blocks exercise the column parser directly.
        for _ in 0..20_000 {
            let n = (next() % 64) as usize;
            let mut b = vec![0u8];
            b.extend((0..n).map(|_| next() as u8));
            let _ = decode_records(&b);
        }
    }
}
