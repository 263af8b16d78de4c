//! Which records a query looks at. Values of one option are alternatives
//! (`--port 80 --port 443`: either); different options must all hold.

use std::net::IpAddr;

use crate::net::Cidr;

use super::read::Rec;

#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// ns since the epoch: records that end at or after it.
    pub since: Option<u64>,
    /// ns since the epoch: records that begin before it.
    pub until: Option<u64>,
    /// Either end in one of these.
    pub hosts: Vec<Cidr>,
    /// Either port one of these.
    pub ports: Vec<u16>,
    pub protos: Vec<u8>,
    /// `outbound`, `inbound`, `internal`, `external`.
    pub directions: Vec<String>,
    /// Agent names as the collector's certificates give them.
    pub agents: Vec<String>,
}

pub const DIRECTIONS: [&str; 4] = ["outbound", "inbound", "internal", "external"];

/// `10.0.0.1` (one address) or `10.0.0.0/8`.
pub fn parse_host(s: &str) -> Result<Cidr, String> {
    if s.contains('/') {
        return s.parse();
    }
    let ip: IpAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is neither an address nor a CIDR"))?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    format!("{ip}/{bits}").parse()
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `gre`, `esp` or a number.
pub fn parse_proto(s: &str) -> Result<u8, String> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    Ok(match s.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "gre" => 47,
        "esp" => 50,
        _ => {
            return Err(format!(
                "{s:?} is not a protocol (tcp, udp, icmp, icmpv6, sctp, gre, esp or a number)"
            ))
        }
    })
}

/// The name `parse_proto` reads, or the number.
pub fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        n => n.to_string(),
    }
}

pub fn parse_direction(s: &str) -> Result<String, String> {
    DIRECTIONS
        .iter()
        .find(|d| **d == s)
        .map(|d| d.to_string())
        .ok_or_else(|| format!("{s:?} is not a direction ({})", DIRECTIONS.join(", ")))
}

impl Filter {
    /// Whether a file of this agent can hold matching records at all.
    pub fn wants_agent(&self, agent: Option<&str>) -> bool {
        self.agents.is_empty() || agent.is_some_and(|a| self.agents.iter().any(|x| x == a))
    }

    pub fn matches(&self, r: &Rec) -> bool {
        if self.since.is_some_and(|t| r.last_ns < t) || self.until.is_some_and(|t| r.first_ns >= t)
        {
            return false;
        }
        if !self.protos.is_empty() && !self.protos.contains(&r.proto) {
            return false;
        }
        if !self.ports.is_empty()
            && !self.ports.contains(&r.src_port)
            && !self.ports.contains(&r.dst_port)
        {
            return false;
        }
        if !self.directions.is_empty() && !self.directions.iter().any(|d| d == r.direction) {
            return false;
        }
        if !self.hosts.is_empty() {
            let hit = |a: &str| {
                a.parse::<IpAddr>()
                    .is_ok_and(|ip| self.hosts.iter().any(|c| c.contains(ip)))
            };
            if !hit(r.src_addr) && !hit(r.dst_addr) {
                return false;
            }
        }
        true
    }
}
