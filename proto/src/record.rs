//! The flow record contract. Field names are relied on by exporters, the
//! collector and external checks, so they change only with a version bump.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Where a flow's initiator and responder sit relative to the configured local networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Local initiator, remote responder.
    Outbound,
    /// Remote initiator, local responder.
    Inbound,
    /// Both ends local.
    Internal,
    /// Neither end local (transit or mirrored traffic).
    External,
}

impl Direction {
    /// Every value, in wire order (see PROTOCOL.md).
    pub const ALL: [Direction; 4] = [
        Direction::Outbound,
        Direction::Inbound,
        Direction::Internal,
        Direction::External,
    ];

    pub fn from_locality(src_local: bool, dst_local: bool) -> Self {
        match (src_local, dst_local) {
            (true, false) => Direction::Outbound,
            (false, true) => Direction::Inbound,
            (true, true) => Direction::Internal,
            (false, false) => Direction::External,
        }
    }
}

/// Why a record was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// No packet for the idle timeout (or the half-open timeout for a lone SYN).
    Idle,
    /// The active timeout split a long flow; more segments follow.
    Active,
    /// FIN seen in both directions, after the linger.
    Fin,
    /// RST seen, after the linger.
    Rst,
    /// The flow table was full and this was the least recently seen flow.
    Evicted,
    /// The capture input ended while the flow was open.
    EndOfInput,
    /// The agent was stopped while the flow was open.
    Shutdown,
}

impl EndReason {
    /// Every value, in wire order (see PROTOCOL.md).
    pub const ALL: [EndReason; 7] = [
        EndReason::Idle,
        EndReason::Active,
        EndReason::Fin,
        EndReason::Rst,
        EndReason::Evicted,
        EndReason::EndOfInput,
        EndReason::Shutdown,
    ];
}

/// One record of one flow. A flow longer than the active timeout yields several
/// records (`segment` 0, 1, 2…) that share `flow_id`; counters are deltas since
/// the previous segment and only the last one has `final` set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowRecord {
    pub flow_id: u64,
    pub segment: u32,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub ip_version: u8,
    pub proto: u8,
    pub vlan: Option<u16>,
    pub src_addr: IpAddr,
    pub src_port: u16,
    pub dst_addr: IpAddr,
    pub dst_port: u16,
    pub direction: Direction,
    pub first_ns: u64,
    pub last_ns: u64,
    pub fwd_packets: u64,
    pub fwd_bytes: u64,
    pub rev_packets: u64,
    pub rev_bytes: u64,
    pub fwd_tcp_flags: u8,
    pub rev_tcp_flags: u8,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub end_reason: EndReason,
    /// The flow was open while its source had a coverage gap (packets the
    /// agent never saw: a kernel drop, time no capture file covers, a cut
    /// file), so its counters may be short. Omitted when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub gap: bool,
    /// The network security rule that logged the flow (flow-log sources:
    /// Azure NSG and VNet flow logs). Omitted when unknown; decoders that
    /// predate it ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What that rule decided (flow-log sources). Omitted when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// What the agent knows of the remote end (`remote_country`,
    /// `remote_asn`, `remote_as_org`, `watchlists`): flat in JSON, each
    /// omitted when unknown. Boxed: most records have none, and the record's
    /// size is what the engine moves around.
    #[serde(
        flatten,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "remote_if_any"
    )]
    pub remote: Option<Box<Remote>>,
}

/// Where a record's remote end (the side outside the local networks) is,
/// and which watchlists name it; the agent adds it when `[enrich]` or
/// `[[watchlist]]` is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Remote {
    /// ISO 3166-1 alpha-2.
    #[serde(
        rename = "remote_country",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub country: Option<String>,
    #[serde(
        rename = "remote_asn",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub asn: Option<u32>,
    #[serde(
        rename = "remote_as_org",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub as_org: Option<String>,
    /// The names of the `[[watchlist]]`s that list the remote address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watchlists: Vec<String>,
}

impl Remote {
    pub fn is_empty(&self) -> bool {
        self.country.is_none()
            && self.asn.is_none()
            && self.as_org.is_none()
            && self.watchlists.is_empty()
    }
}

/// A record without any of the remote's fields has no `remote`, as
/// before the fields existed (flattened fields always "deserialize").
fn remote_if_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<Remote>>, D::Error> {
    let r = Remote::deserialize(d)?;
    Ok((!r.is_empty()).then(|| Box::new(r)))
}

/// A security rule's verdict on a flow, as a flow log reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The stable identifier of a flow: a 64-bit mix of its initiator-oriented key
/// and the timestamp of its first packet. Defined here, not in the agent, because
/// it is part of the record contract: anyone holding the key and the first
/// timestamp can recompute it.
#[allow(clippy::too_many_arguments)]
pub fn flow_id(
    vlan: Option<u16>,
    proto: u8,
    src: IpAddr,
    src_port: u16,
    dst: IpAddr,
    dst_port: u16,
    first_ns: u64,
) -> u64 {
    let mut h = Mix::new();
    h.word(u64::from(vlan.map_or(0x1_0000, u32::from)) << 8 | u64::from(proto));
    for (addr, port) in [(src, src_port), (dst, dst_port)] {
        let bytes = match addr {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        h.word(u64::from_le_bytes(
            bytes[..8].try_into().unwrap_or_default(),
        ));
        h.word(u64::from_le_bytes(
            bytes[8..].try_into().unwrap_or_default(),
        ));
        h.word(u64::from(port) | u64::from(addr.is_ipv4()) << 16);
    }
    h.word(first_ns);
    // Zero is kept free so consumers can use it as "no flow".
    h.finish().max(1)
}

/// A small, fixed (never seeded) 64-bit mixer so ids are identical on every
/// machine and in every version of Rust.
struct Mix(u64);

impl Mix {
    fn new() -> Self {
        Mix(0x243f_6a88_85a3_08d3)
    }
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FlowRecord {
        FlowRecord {
            flow_id: 7,
            segment: 0,
            is_final: true,
            ip_version: 4,
            proto: 6,
            vlan: None,
            src_addr: "10.0.0.1".parse().unwrap(),
            src_port: 40000,
            dst_addr: "203.0.113.9".parse().unwrap(),
            dst_port: 443,
            direction: Direction::Outbound,
            first_ns: 1,
            last_ns: 2,
            fwd_packets: 3,
            fwd_bytes: 180,
            rev_packets: 2,
            rev_bytes: 120,
            fwd_tcp_flags: 0x1b,
            rev_tcp_flags: 0x12,
            icmp_type: None,
            icmp_code: None,
            end_reason: EndReason::Fin,
            gap: false,
            rule: None,
            decision: None,
            remote: None,
        }
    }

    #[test]
    fn json_uses_contract_names() {
        let v: serde_json::Value = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["final"], true);
        assert_eq!(v["end_reason"], "fin");
        assert_eq!(v["direction"], "outbound");
        assert_eq!(v["src_addr"], "10.0.0.1");
        assert!(v["vlan"].is_null());
        let back: FlowRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    /// Records without a rule or decision serialize as before the fields
    /// existed; with them, under their contract names.
    #[test]
    fn rule_and_decision_are_optional_fields() {
        let plain = serde_json::to_string(&sample()).unwrap();
        assert!(
            !plain.contains("rule") && !plain.contains("decision"),
            "{plain}"
        );
        let mut r = sample();
        r.rule = Some("DefaultRule_DenyAllInBound".into());
        r.decision = Some(Decision::Deny);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["rule"], "DefaultRule_DenyAllInBound");
        assert_eq!(v["decision"], "deny");
        let back: FlowRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        // An older reader's JSON (no such keys) still reads.
        let old: FlowRecord = serde_json::from_str(&plain).unwrap();
        assert_eq!(old, sample());
    }

    /// The remote's fields are flat, omitted one by one when unknown, and a
    /// record without any reads back without `remote`.
    #[test]
    fn remote_fields_are_flat_and_optional() {
        let plain = serde_json::to_string(&sample()).unwrap();
        assert!(!plain.contains("remote") && !plain.contains("watchlists"));
        let mut r = sample();
        r.remote = Some(Box::new(Remote {
            country: Some("NL".into()),
            asn: Some(64_500),
            as_org: None,
            watchlists: vec!["tor-exits".into()],
        }));
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.ends_with(r#""end_reason":"fin","remote_country":"NL","remote_asn":64500,"watchlists":["tor-exits"]}"#),
            "{text}"
        );
        let back: FlowRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let old: FlowRecord = serde_json::from_str(&plain).unwrap();
        assert_eq!(old, sample());
    }

    #[test]
    fn flow_id_depends_on_every_key_part() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let base = flow_id(None, 6, a, 1, b, 2, 100);
        assert_ne!(base, flow_id(Some(0), 6, a, 1, b, 2, 100));
        assert_ne!(base, flow_id(None, 17, a, 1, b, 2, 100));
        assert_ne!(base, flow_id(None, 6, b, 1, a, 2, 100));
        assert_ne!(base, flow_id(None, 6, a, 2, b, 1, 100));
        assert_ne!(base, flow_id(None, 6, a, 1, b, 2, 101));
        assert_eq!(base, flow_id(None, 6, a, 1, b, 2, 100));
    }

    #[test]
    fn direction_from_locality() {
        assert_eq!(Direction::from_locality(true, false), Direction::Outbound);
        assert_eq!(Direction::from_locality(false, true), Direction::Inbound);
        assert_eq!(Direction::from_locality(true, true), Direction::Internal);
        assert_eq!(Direction::from_locality(false, false), Direction::External);
    }
}
