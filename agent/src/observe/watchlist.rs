//! A watchlist: named addresses and networks, looked up per record. Lists
//! run to hundreds of thousands of entries (Tor exits, threat feeds), so
//! they are kept as sorted, merged ranges over one 128-bit space (IPv4 as
//! IPv4-mapped IPv6) and found by binary search.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WatchlistError {
    #[error("watchlist {name:?}: {}: {source}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("watchlist {name:?}: {}:{line}: {text:?} is not an IP address or network (a.b.c.d, a.b.c.d/n, IPv6, IPv6/n; # starts a comment)", path.display())]
    Entry {
        name: String,
        path: PathBuf,
        line: usize,
        text: String,
    },
}

pub struct Watchlist {
    pub name: String,
    /// Inclusive ranges, sorted, not overlapping, not adjacent.
    ranges: Vec<(u128, u128)>,
}

impl Watchlist {
    pub fn load(name: &str, path: &Path) -> Result<Watchlist, WatchlistError> {
        let text = std::fs::read_to_string(path).map_err(|source| WatchlistError::Read {
            name: name.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        Watchlist::parse(name, &text).map_err(|(line, text)| WatchlistError::Entry {
            name: name.to_string(),
            path: path.to_path_buf(),
            line,
            text,
        })
    }

    /// One entry a line; blank lines and `#` comments (whole or trailing)
    /// are skipped. A bad line is returned with its 1-based number.
    pub fn parse(name: &str, text: &str) -> Result<Watchlist, (usize, String)> {
        let mut ranges = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            ranges.push(range(entry).ok_or_else(|| (i + 1, entry.to_string()))?);
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        merged.shrink_to_fit();
        Ok(Watchlist {
            name: name.to_string(),
            ranges: merged,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let x = key(ip);
        // The last range starting at or before x is the only candidate.
        let i = self.ranges.partition_point(|&(lo, _)| lo <= x);
        i > 0 && self.ranges[i - 1].1 >= x
    }

    /// Disjoint ranges after merging (for tests and the start-up log).
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// `a.b.c.d`, `a.b.c.d/n`, `v6`, `v6/n` as an inclusive range.
fn range(entry: &str) -> Option<(u128, u128)> {
    let (addr, len) = match entry.split_once('/') {
        Some((a, n)) => (a, Some(n.parse::<u32>().ok()?)),
        None => (entry, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    // Bits of the 128-bit key the prefix fixes.
    let fixed = match (ip, len) {
        (IpAddr::V4(_), Some(n)) if n <= 32 => 96 + n,
        (IpAddr::V6(_), Some(n)) if n <= 128 => n,
        (_, Some(_)) => return None,
        (_, None) => 128,
    };
    let host_mask = if fixed == 128 { 0 } else { u128::MAX >> fixed };
    let lo = key(ip) & !host_mask;
    Some((lo, lo | host_mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_networks_comments_and_both_families() {
        let w = Watchlist::parse(
            "t",
            "# tor exits\n192.0.2.7\n198.51.100.0/24  # a whole net\n\n2001:db8::/32\n10.0.0.0/8\n10.1.0.0/16\n",
        )
        .unwrap();
        for yes in [
            "192.0.2.7",
            "198.51.100.0",
            "198.51.100.255",
            "2001:db8::1",
            "10.1.2.3",
        ] {
            assert!(w.contains(ip(yes)), "{yes}");
        }
        for no in [
            "192.0.2.6",
            "192.0.2.8",
            "198.51.101.0",
            "2001:db9::",
            "11.0.0.0",
            "::ffff:0:0",
        ] {
            assert!(!w.contains(ip(no)), "{no}");
        }
        // 10.1/16 lies inside 10/8: merged.
        assert_eq!(w.ranges(), 4);
        // An IPv4 entry does not match the IPv6 address that merely shares bits.
        assert!(!w.contains(ip("::c000:207")));
    }

    #[test]
    fn adjacent_ranges_merge_and_the_ends_of_the_space_work() {
        let w = Watchlist::parse("t", "0.0.0.0/1\n128.0.0.0/1\n::/0\n").unwrap();
        assert_eq!(w.ranges(), 1);
        assert!(w.contains(ip("255.255.255.255")) && w.contains(ip("ffff::")));
        let w = Watchlist::parse(
            "t",
            "255.255.255.255\nffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n",
        )
        .unwrap();
        assert!(w.contains(ip("255.255.255.255")));
        assert!(w.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!w.contains(ip("255.255.255.254")));
    }

    #[test]
    fn a_bad_line_is_named_by_number() {
        for bad in [
            "10.0.0.0/33",
            "300.1.1.1",
            "2001:db8::/129",
            "host.example",
            "10.0.0.0/x",
            "/8",
        ] {
            let e = Watchlist::parse("t", &format!("# header\n1.2.3.4\n{bad}\n"))
                .err()
                .unwrap();
            assert_eq!(e, (3, bad.to_string()));
        }
    }

    #[test]
    fn a_large_list_is_looked_up_by_search() {
        // 200,000 single addresses, every other one: nothing merges.
        let text: String = (0..200_000u32)
            .map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i)))
            .collect();
        let w = Watchlist::parse("t", &text).unwrap();
        assert_eq!(w.ranges(), 200_000);
        assert!(w.contains(ip("10.0.0.2")));
        assert!(!w.contains(ip("10.0.0.3")));
        assert!(w.contains(IpAddr::V4(std::net::Ipv4Addr::from(
            0x0a00_0000 + 2 * 199_999
        ))));
    }
}
