//! Things the library's own tests share.

use vmflow_proto::{Direction, EndReason, FlowRecord};

/// A plain UDP record with this flow id and start time.
pub fn record(flow_id: u64, first_ns: u64) -> FlowRecord {
    FlowRecord {
        flow_id,
        segment: 0,
        is_final: true,
        ip_version: 4,
        proto: 17,
        vlan: None,
        src_addr: "10.0.0.1".parse().unwrap(),
        src_port: 1,
        dst_addr: "10.0.0.2".parse().unwrap(),
        dst_port: 2,
        direction: Direction::Internal,
        first_ns,
        last_ns: first_ns,
        fwd_packets: 1,
        fwd_bytes: 50,
        rev_packets: 0,
        rev_bytes: 0,
        fwd_tcp_flags: 0,
        rev_tcp_flags: 0,
        icmp_type: None,
        icmp_code: None,
        end_reason: EndReason::Idle,
        gap: false,
        rule: None,
        decision: None,
    }
}
