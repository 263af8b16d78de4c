//! Local networks: the CIDR list that decides a flow's direction.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: u128,
    mask: u128,
    v4: bool,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) if self.v4 => u128::from(u32::from(a)) & self.mask == self.addr,
            IpAddr::V6(a) if !self.v4 => u128::from(a) & self.mask == self.addr,
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (expected ADDR/PREFIX)"))?;
        let ip: IpAddr = a.parse().map_err(|_| format!("{s:?}: bad address {a:?}"))?;
        let prefix: u8 = p.parse().map_err(|_| format!("{s:?}: bad prefix {p:?}"))?;
        let (bits, value, v4) = match ip {
            IpAddr::V4(x) => (32u32, u128::from(u32::from(x)), true),
            IpAddr::V6(x) => (128u32, u128::from(x), false),
        };
        if u32::from(prefix) > bits {
            return Err(format!("{s:?}: prefix longer than {bits} bits"));
        }
        let mask = if prefix == 0 {
            0
        } else {
            (u128::MAX << (bits - u32::from(prefix))) & (u128::MAX >> (128 - bits))
        };
        if value & !mask != 0 {
            return Err(format!("{s:?}: host bits set below the prefix"));
        }
        Ok(Cidr {
            addr: value,
            mask,
            v4,
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip: IpAddr = if self.v4 {
            IpAddr::V4((self.addr as u32).into())
        } else {
            IpAddr::V6(self.addr.into())
        };
        write!(f, "{ip}/{}", self.prefix)
    }
}

/// The configured local networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNets(Vec<Cidr>);

/// RFC 1918, CGNAT (RFC 6598), IPv4 link-local, ULA and IPv6 link-local.
pub const DEFAULT_LOCAL_NETS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

impl LocalNets {
    pub fn new(nets: Vec<Cidr>) -> Self {
        LocalNets(nets)
    }

    /// Whether `ip` is local: in a configured network, or an address that
    /// cannot leave the host or the link (loopback, link-local) whatever the
    /// configuration says, so such traffic is never labelled as crossing to
    /// or from the outside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        never_remote(ip) || self.0.iter().any(|c| c.contains(ip))
    }

    pub fn nets(&self) -> &[Cidr] {
        &self.0
    }
}

/// Loopback (127.0.0.0/8, ::1) and link-local (169.254.0.0/16, fe80::/10,
/// which routers do not forward) addresses, IPv4-mapped ones included.
pub fn never_remote(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.is_loopback() || v4.is_link_local(),
            None => a.is_loopback() || a.segments()[0] & 0xffc0 == 0xfe80,
        },
    }
}

impl Default for LocalNets {
    fn default() -> Self {
        LocalNets(
            DEFAULT_LOCAL_NETS
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let c: Cidr = "100.64.0.0/10".parse().unwrap();
        assert!(c.contains("100.127.255.255".parse().unwrap()));
        assert!(!c.contains("100.128.0.0".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let v6: Cidr = "fc00::/7".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert_eq!(c.to_string(), "100.64.0.0/10");
    }

    #[test]
    fn rejects_bad_cidrs() {
        for bad in ["10.0.0.0", "10.0.0.1/8", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_cover_private_space() {
        let n = LocalNets::default();
        assert_eq!(n.nets().len(), DEFAULT_LOCAL_NETS.len());
        for ip in [
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fe80::1",
            "fd00::1",
        ] {
            assert!(n.contains(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "2001:db8::1"] {
            assert!(!n.contains(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn loopback_and_link_local_are_local_whatever_the_list() {
        let only: LocalNets = LocalNets::new(vec!["10.1.0.0/16".parse().unwrap()]);
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "febf::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(only.contains(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["128.0.0.1", "169.255.0.1", "fec0::1", "::2", "10.2.0.1"] {
            assert!(!only.contains(ip.parse().unwrap()), "{ip}");
        }
    }
}
