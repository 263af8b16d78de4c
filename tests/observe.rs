//! Observations end to end: a capture mixing benign traffic with each
//! pattern at known times, replayed with `--observations`, gives exactly the
//! expected observations; the benign traffic alone gives none.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vmflow::synth::PcapWriter;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_760_000_000 * S;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;

/// TCP segments, written as Ethernet frames in time order.
#[derive(Default)]
struct Capture {
    pkts: Vec<(u64, Vec<u8>)>,
}

type End = ([u8; 4], u16);

/// An Ethernet frame of `ethertype` with room for an `ip_len`-byte IP
/// header (left for the caller), then a TCP header and `payload` zeros.
fn tcp_frame(
    ethertype: u16,
    ip_len: usize,
    ports: (u16, u16),
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let mut f = vec![0u8; 14 + ip_len + 20 + payload];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    let tcp = &mut f[14 + ip_len..14 + ip_len + 20];
    tcp[0..2].copy_from_slice(&ports.0.to_be_bytes());
    tcp[2..4].copy_from_slice(&ports.1.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    f
}

impl Capture {
    fn tcp(&mut self, t: u64, from: End, to: End, flags: u8, payload: usize) {
        let mut f = tcp_frame(0x0800, 20, (from.1, to.1), flags, payload);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&from.0);
        ip[16..20].copy_from_slice(&to.0);
        let sum = checksum(ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        self.pkts.push((t, f));
    }

    /// A whole connection: handshake, a request and answer, FIN both ways.
    fn connection(&mut self, t: u64, client: End, server: End) {
        self.connection_with(Capture::tcp, t, client, server);
    }

    /// `connection`'s segments, each written by `tcp` (IPv4 or IPv6).
    fn connection_with<E: Copy>(
        &mut self,
        tcp: fn(&mut Capture, u64, E, E, u8, usize),
        t: u64,
        client: E,
        server: E,
    ) {
        let ms = S / 1000;
        tcp(self, t, client, server, SYN, 0);
        tcp(self, t + ms, server, client, SYN | ACK, 0);
        tcp(self, t + 2 * ms, client, server, ACK, 0);
        tcp(self, t + 3 * ms, client, server, PSH | ACK, 300);
        tcp(self, t + 4 * ms, server, client, PSH | ACK, 1200);
        tcp(self, t + 5 * ms, client, server, FIN | ACK, 0);
        tcp(self, t + 6 * ms, server, client, FIN | ACK, 0);
        tcp(self, t + 7 * ms, client, server, ACK, 0);
    }

    /// `tcp` between IPv6 ends.
    fn tcp6(
        &mut self,
        t: u64,
        from: (std::net::Ipv6Addr, u16),
        to: (std::net::Ipv6Addr, u16),
        flags: u8,
        payload: usize,
    ) {
        let mut f = tcp_frame(0x86dd, 40, (from.1, to.1), flags, payload);
        let ip = &mut f[14..54];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&from.0.octets());
        ip[24..40].copy_from_slice(&to.0.octets());
        self.pkts.push((t, f));
    }

    /// A whole connection between two IPv4 or two IPv6 ends.
    fn connection_ip(
        &mut self,
        t: u64,
        client: (std::net::IpAddr, u16),
        server: (std::net::IpAddr, u16),
    ) {
        use std::net::IpAddr::{V4, V6};
        match (client.0, server.0) {
            (V4(c), V4(s)) => self.connection(t, (c.octets(), client.1), (s.octets(), server.1)),
            (V6(c), V6(s)) => self.connection_with(Capture::tcp6, t, (c, client.1), (s, server.1)),
            _ => panic!("{client:?} and {server:?} are of two IP versions"),
        }
    }

    /// A SYN the server refuses with a RST.
    fn refused(&mut self, t: u64, client: End, server: End) {
        self.tcp(t, client, server, SYN, 0);
        self.tcp(t + S / 1000, server, client, RST | ACK, 0);
    }

    fn write(mut self, path: &Path) {
        self.pkts.sort_by_key(|p| p.0);
        let mut w = PcapWriter::new(std::fs::File::create(path).unwrap(), 65535, 1).unwrap();
        for (t, f) in &self.pkts {
            w.write(*t, f.len() as u32, f).unwrap();
        }
    }
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

const HOST: [u8; 4] = [10, 0, 0, 5];
const OTHER: [u8; 4] = [10, 0, 0, 6];

/// Ordinary traffic over ten minutes: the host browsing (outbound HTTPS to
/// 200 addresses), serving HTTPS to 300 outside clients, a refused probe of
/// a closed port now and then, and traffic between the two local hosts.
fn benign(c: &mut Capture) {
    for i in 0..200u32 {
        let remote = Ipv4Addr::from(0x5db8_d800 + i).octets();
        c.connection(
            T0 + u64::from(i) * 3 * S,
            (HOST, 40_000 + i as u16),
            (remote, 443),
        );
    }
    for i in 0..300u32 {
        let remote = Ipv4Addr::from(0xc633_6400 + (i % 250)).octets(); // 198.51.100.x
        c.connection(
            T0 + u64::from(i) * 2 * S + S / 2,
            (remote, 50_000 + i as u16),
            (HOST, 443),
        );
    }
    for i in 0..5u32 {
        let remote = Ipv4Addr::from(0xcb00_7100 + i).octets(); // 203.0.113.x
        c.refused(T0 + u64::from(i) * 100 * S, (remote, 33_000), (HOST, 8080));
    }
    for i in 0..50u32 {
        c.connection(
            T0 + u64::from(i) * 10 * S,
            (OTHER, 45_000 + i as u16),
            (HOST, 22),
        );
    }
}

const ATTACKER: [u8; 4] = [203, 0, 113, 50];
const SCANNER: [u8; 4] = [203, 0, 113, 77];
const ADMIN: [u8; 4] = [198, 51, 100, 9];
const LISTED: [u8; 4] = [192, 0, 2, 66];

fn patterns(c: &mut Capture) {
    // 20 failed RDP attempts, one a second: 10 unanswered SYNs, 10 refused.
    for i in 0..20u16 {
        let t = T0 + 60 * S + u64::from(i) * S;
        if i % 2 == 0 {
            c.tcp(t, (ATTACKER, 60_000 + i), (HOST, 3389), SYN, 0);
        } else {
            c.refused(t, (ATTACKER, 60_000 + i), (HOST, 3389));
        }
    }
    // A completed SSH login path from outside.
    c.connection(T0 + 120 * S, (ADMIN, 52_222), (HOST, 22));
    // The host talks to a watchlisted address.
    c.connection(T0 + 150 * S, (HOST, 41_000), (LISTED, 443));
    // 200 ports of the other host probed within 20 s, each refused.
    for p in 0..200u16 {
        let t = T0 + 200 * S + u64::from(p) * S / 10;
        c.refused(t, (SCANNER, 61_000), (OTHER, 1_000 + p));
    }
}

fn replay(dir: &Path, cap: &Path) -> Vec<Value> {
    std::fs::write(
        dir.join("watch.txt"),
        "# test list\n192.0.2.64/28\n2001:db8:bad::/48\n",
    )
    .unwrap();
    let cfg = dir.join("observe.toml");
    std::fs::write(
        &cfg,
        "[[watchlist]]\nname = \"threats\"\nfile = \"watch.txt\"\n",
    )
    .unwrap();
    let obs = dir.join("obs.ndjson");
    let out = Command::new(env!("CARGO_BIN_EXE_vmflow"))
        .args(["replay", "--out", "/dev/null", "--config"])
        .arg(&cfg)
        .arg("--observations")
        .arg(&obs)
        .arg(cap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&obs)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What identifies an observation here: kind, remote, local address, local
/// port, count.
fn keyed(obs: &[Value]) -> BTreeSet<String> {
    obs.iter()
        .map(|o| {
            format!(
                "{} {} {} {} {}",
                o["kind"].as_str().unwrap(),
                o["remote_addr"].as_str().unwrap(),
                o["local_addr"],
                o["local_port"],
                o["count"]
            )
        })
        .collect()
}

#[test]
fn each_pattern_gives_exactly_its_observation_and_benign_traffic_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Capture::default();
    benign(&mut c);
    c.write(&dir.path().join("benign.pcap"));
    let benign_obs = replay(dir.path(), &dir.path().join("benign.pcap"));
    assert_eq!(benign_obs, Vec::<Value>::new(), "false positives");

    let mut c = Capture::default();
    benign(&mut c);
    patterns(&mut c);
    c.write(&dir.path().join("mixed.pcap"));
    let obs = replay(dir.path(), &dir.path().join("mixed.pcap"));
    let want: BTreeSet<String> = [
        "failed_access 203.0.113.50 \"10.0.0.5\" 3389 10",
        "exposed_service 198.51.100.9 \"10.0.0.5\" 22 1",
        "watchlist 192.0.2.66 \"10.0.0.5\" 41000 1",
        "scan 203.0.113.77 \"10.0.0.6\" null 100",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keyed(&obs), want, "{obs:#?}");
    assert_eq!(obs.len(), 4, "{obs:#?}");

    // The evidence and the times are the pattern's own.
    let failed = obs.iter().find(|o| o["kind"] == "failed_access").unwrap();
    assert_eq!(failed["flow_ids"].as_array().unwrap().len(), 10);
    // Records reach the observer as flows end (refused ones before
    // unanswered ones), so which ten are the evidence is the engine's order.
    let first = failed["first_ns"].as_u64().unwrap();
    assert!((T0 + 60 * S..=T0 + 79 * S).contains(&first), "{failed}");
    assert!(failed["summary"].as_str().unwrap().contains("RDP"));
    let listed = obs.iter().find(|o| o["kind"] == "watchlist").unwrap();
    assert_eq!(listed["watchlist"], "threats");
    assert_eq!(listed["direction"], "outbound");
    assert_eq!(listed["bytes"], 8 * 40 + 300 + 1200);
    let scan = obs.iter().find(|o| o["kind"] == "scan").unwrap();
    let (first, last) = (
        scan["first_ns"].as_u64().unwrap(),
        scan["last_ns"].as_u64().unwrap(),
    );
    assert!(
        first >= T0 + 200 * S && last <= T0 + 220 * S && last - first >= 99 * S / 10,
        "{scan}"
    );

    // Deterministic: the same file, the same bytes.
    let again = replay(dir.path(), &dir.path().join("mixed.pcap"));
    assert_eq!(again, obs);
}

#[test]
fn a_bad_watchlist_line_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Capture::default();
    c.connection(T0, (HOST, 40_000), (LISTED, 443));
    let cap = dir.path().join("c.pcap");
    c.write(&cap);
    std::fs::write(dir.path().join("w.txt"), "10.0.0.0/8\n10.0.0.0/40\n").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[[watchlist]]\nname = \"w\"\nfile = \"w.txt\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmflow"))
        .args(["replay", "--out", "/dev/null", "--config"])
        .arg(&cfg)
        .arg("--observations")
        .arg(dir.path().join("o.ndjson"))
        .arg(&cap)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("w.txt:2") && err.contains("10.0.0.0/40"),
        "{err}"
    );
}

/// The country database test.sh installs (ip-location-db, pinned).
fn ipdb(file: &str) -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ipdb/node_modules/@ip-location-db")
        .join(file);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh",
        p.display()
    );
    p
}

/// The rows of a range CSV (over 10,000 of them) clear of their
/// neighbours: the CSV lists some ranges inside others (a more specific one
/// wins in the database), so only those are an unambiguous answer. More
/// than `tenths` tenths of the rows are.
fn clear_ranges<'r, T>(
    rows: &'r [T],
    range: impl Fn(&T) -> (std::net::IpAddr, std::net::IpAddr),
    tenths: usize,
    csv: &str,
) -> Vec<&'r T> {
    assert!(rows.len() > 10_000, "{csv}: {} rows", rows.len());
    let clear: Vec<&T> = rows
        .windows(3)
        .filter(|w| range(&w[0]).1 < range(&w[1]).0 && range(&w[1]).1 < range(&w[2]).0)
        .map(|w| &w[1])
        .collect();
    assert!(
        clear.len() * 10 > rows.len() * tenths,
        "{csv}: {} clear",
        clear.len()
    );
    clear
}

/// `(first, last, country)` rows of the database's CSV edition.
fn csv_rows(file: &str) -> Vec<(std::net::IpAddr, std::net::IpAddr, String)> {
    std::fs::read_to_string(ipdb(file))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].to_string(),
            )
        })
        .collect()
}

#[test]
fn country_lookups_agree_with_the_databases_csv_edition() {
    let mmdb = ipdb("geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb");
    let e = vmflow::observe::Enricher::open(&[mmdb]).unwrap();
    for csv in [
        "geo-whois-asn-country/geo-whois-asn-country-ipv4.csv",
        "geo-whois-asn-country/geo-whois-asn-country-ipv6.csv",
    ] {
        let rows = csv_rows(csv);
        // Both ends of every 50th unambiguous range.
        let clear = clear_ranges(&rows, |r| (r.0, r.1), 9, csv);
        for (first, last, country) in clear.into_iter().step_by(50) {
            for ip in [*first, *last] {
                assert_eq!(
                    e.lookup(ip).country.as_deref(),
                    Some(country.as_str()),
                    "{ip} in {csv}"
                );
            }
        }
    }
    // Private space is nowhere.
    assert_eq!(e.lookup("10.0.0.1".parse().unwrap()).country, None);
}

/// The ASN database test.sh builds from ip-location-db's ASN CSV (beside
/// the npm packages).
fn asn_db() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ipdb/asn.mmdb");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh",
        p.display()
    );
    p
}

/// `(first, last, asn, org)` rows of ip-location-db's ASN CSV (the org
/// quoted when it holds a comma, `""` for a quote inside).
fn asn_rows(file: &str) -> Vec<(std::net::IpAddr, std::net::IpAddr, u32, String)> {
    std::fs::read_to_string(ipdb(file))
        .unwrap()
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ',');
            let mut next = || f.next().unwrap();
            let (first, last, asn, org) = (next(), next(), next(), next());
            let org = match org.strip_prefix('"').and_then(|o| o.strip_suffix('"')) {
                Some(o) => o.replace("\"\"", "\""),
                None => org.to_string(),
            };
            (
                first.parse().unwrap(),
                last.parse().unwrap(),
                asn.parse().unwrap(),
                org,
            )
        })
        .collect()
}

/// The ASN database test.sh builds from ip-location-db's ASN CSV (npm has
/// no MaxMind-format edition of it) answers as the CSV does, and beside
/// the country database each field comes from the one that knows it.
#[test]
fn asn_lookups_agree_with_the_csv_and_combine_with_the_country_database() {
    let country = ipdb("geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb");
    let asn = asn_db();
    let only_country = vmflow::observe::Enricher::open(std::slice::from_ref(&country)).unwrap();
    let both = vmflow::observe::Enricher::open(&[country, asn]).unwrap();
    let mut checked = 0;
    for csv in ["asn/asn-ipv4.csv", "asn/asn-ipv6.csv"] {
        let rows = asn_rows(csv);
        let clear = clear_ranges(&rows, |r| (r.0, r.1), 8, csv);
        for (first, last, number, org) in clear.into_iter().step_by(100) {
            for ip in [*first, *last] {
                let p = both.lookup(ip);
                assert_eq!(
                    (p.asn, p.as_org.as_deref()),
                    (Some(*number), Some(org.as_str())),
                    "{ip} in {csv}"
                );
                assert_eq!(p.country, only_country.lookup(ip).country, "{ip}");
                checked += 1;
            }
        }
    }
    assert!(checked > 5_000, "{checked}");
    // Both kinds of field on one address, the same written as IPv6
    // (`::ffff:1.0.0.1`), and none on private space.
    let p = both.lookup("1.0.0.1".parse().unwrap());
    assert!(p.asn.is_some() && p.country.is_some(), "{p:?}");
    assert_eq!(both.lookup("::ffff:1.0.0.1".parse().unwrap()), p);
    assert_eq!(
        both.lookup("10.0.0.1".parse().unwrap()),
        vmflow::observe::Place::default()
    );
}

/// Free databases differ in their fields' types: a field of an unexpected
/// type is unknown, the entry's other fields still count, and a country
/// written as a plain code is taken. The database is written with
/// mmdb-writer (installed by scripts/test.sh beside the ASN database).
#[test]
fn a_field_of_an_unexpected_type_loses_only_that_field() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("odd.mmdb");
    common::write_mmdb(
        &db,
        r#"
w.insert_network(IPSet(["198.51.100.0/24"]), {"country": "DE", "autonomous_system_number": "64500", "autonomous_system_organization": "Example Org"})
w.insert_network(IPSet(["203.0.113.0/24"]), {"country": {"iso_code": "FR"}, "autonomous_system_number": MmdbU32(64501), "autonomous_system_organization": [1, 2]})
w.insert_network(IPSet(["192.0.2.0/24"]), {"country_code": "NL", "autonomous_system_number": MmdbU32(64502), "autonomous_system_organization": "Fine"})
"#,
    );
    let e = vmflow::observe::Enricher::open(std::slice::from_ref(&db)).unwrap();
    let place = |ip: &str| e.lookup(ip.parse().unwrap());
    let want = |country: &str, asn: Option<u32>, org: Option<&str>| vmflow::observe::Place {
        country: Some(country.into()),
        asn,
        as_org: org.map(String::from),
    };
    assert_eq!(place("192.0.2.1"), want("NL", Some(64502), Some("Fine")));
    assert_eq!(e.odd_entries(), 0);
    assert_eq!(place("198.51.100.7"), want("DE", None, Some("Example Org")));
    assert_eq!(place("203.0.113.9"), want("FR", Some(64501), None));
    assert_eq!(e.odd_entries(), 2);
}

#[test]
fn enriched_observations_name_the_country_and_a_new_one_is_raised() {
    let dir = tempfile::tempdir().unwrap();
    // Two sources from one country, then one from another, by the CSV.
    let rows = csv_rows("geo-whois-asn-country/geo-whois-asn-country-ipv4.csv");
    let v4 = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => a.octets(),
        _ => unreachable!(),
    };
    let (a1, _, home) = rows[0].clone();
    let (a2, _, _) = rows
        .iter()
        .find(|r| r.2 == home && r.0 != a1)
        .unwrap()
        .clone();
    let (b, _, away) = rows.iter().find(|r| r.2 != home).unwrap().clone();
    let mut c = Capture::default();
    c.connection(T0, (v4(a1), 50_001), (HOST, 443));
    c.connection(T0 + 10 * S, (v4(a2), 50_002), (HOST, 443));
    c.connection(T0 + 20 * S, (v4(b), 50_003), (HOST, 443));
    // An SSH handshake from the second country: exposed, with its country.
    c.connection(T0 + 30 * S, (v4(b), 50_004), (HOST, 22));
    let cap = dir.path().join("c.pcap");
    c.write(&cap);
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[enrich]\nmmdb = [{:?}]\n",
            ipdb("geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb")
        ),
    )
    .unwrap();
    let obs_path = dir.path().join("o.ndjson");
    common::run_ok(
        Command::new(env!("CARGO_BIN_EXE_vmflow"))
            .args(["replay", "--out", "/dev/null", "--config"])
            .arg(&cfg)
            .arg("--observations")
            .arg(&obs_path)
            .arg(&cap),
    );
    let obs: Vec<Value> = std::fs::read_to_string(&obs_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, String, String)> = obs
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["remote_addr"].as_str().unwrap().to_string(),
                o["remote_country"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let mut want = vec![
        ("new_country".to_string(), b.to_string(), away.clone()),
        ("exposed_service".to_string(), b.to_string(), away.clone()),
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort();
    want.sort();
    assert_eq!(got_sorted, want, "{obs:#?}");
    let new = obs.iter().find(|o| o["kind"] == "new_country").unwrap();
    assert_eq!(
        (new["local_port"].as_u64(), new["first_ns"].as_u64()),
        (Some(443), Some(T0 + 20 * S))
    );
}

/// Records name where their remote end is and the watchlists that list it,
/// in NDJSON and through the spool's block format alike; records without a
/// remote (between local hosts) or one the database does not know carry
/// none of the fields.
#[test]
fn records_carry_the_remotes_country_and_watchlists() {
    let dir = tempfile::tempdir().unwrap();
    let rows = csv_rows("geo-whois-asn-country/geo-whois-asn-country-ipv4.csv");
    let (far, _, country) = rows[rows.len() / 2].clone();
    let far = match far {
        std::net::IpAddr::V4(a) => a.octets(),
        _ => unreachable!(),
    };
    let mut c = Capture::default();
    c.connection(T0, (far, 50_001), (HOST, 443));
    c.connection(T0 + S, (HOST, 41_000), (LISTED, 443));
    c.connection(T0 + 2 * S, (OTHER, 45_000), (HOST, 22));
    let cap = dir.path().join("c.pcap");
    c.write(&cap);
    std::fs::write(dir.path().join("watch.txt"), "192.0.2.64/28\n").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "local_nets = [\"10.0.0.0/8\"]\n[enrich]\nmmdb = [{:?}]\n[[watchlist]]\nname = \"threats\"\nfile = \"watch.txt\"\n",
            ipdb("geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb")
        ),
    )
    .unwrap();
    let run = |format: &str, out: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_vmflow"))
            .args(["replay", "--format", format, "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(out)
            .arg(&cap)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let ndjson = dir.path().join("r.ndjson");
    run("ndjson", &ndjson);
    let text = std::fs::read_to_string(&ndjson).unwrap();
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_remote = |a: [u8; 4]| {
        let a = Ipv4Addr::from(a).to_string();
        recs.iter()
            .find(|r| r["src_addr"] == a.as_str() || r["dst_addr"] == a.as_str())
            .unwrap()
            .clone()
    };
    let inbound = by_remote(far);
    assert_eq!(inbound["direction"], "inbound");
    assert_eq!(inbound["remote_country"], country.as_str(), "{inbound}");
    assert!(inbound.get("watchlists").is_none(), "{inbound}");
    let listed = by_remote(LISTED);
    assert_eq!(listed["direction"], "outbound");
    assert_eq!(listed["watchlists"], serde_json::json!(["threats"]));
    // 192.0.2.0/24 is documentation space: no country.
    assert!(listed.get("remote_country").is_none(), "{listed}");
    let internal = by_remote(OTHER);
    assert_eq!(internal["direction"], "internal");
    for k in [
        "remote_country",
        "remote_asn",
        "remote_as_org",
        "watchlists",
    ] {
        assert!(internal.get(k).is_none(), "{internal}");
    }
    // The block format (what the spool ships) keeps them: `vmflow cat`
    // prints the same records.
    let blocks = dir.path().join("r.blocks");
    run("blocks", &blocks);
    let cat = common::run_ok(
        Command::new(env!("CARGO_BIN_EXE_vmflow"))
            .arg("cat")
            .arg(&blocks),
    );
    let mut a: Vec<&str> = text.lines().collect();
    let cat = String::from_utf8(cat.stdout).unwrap();
    let mut b: Vec<&str> = cat.lines().collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
}

/// `replay` with `[enrich] mmdb = [country, asn]` over ~6,000 remotes,
/// each inside a different unambiguous range of the ASN CSV (IPv4 and
/// IPv6, every 100th and every 50th range at a deterministic offset in it,
/// plus organisations with quotes and non-ASCII letters), half of them
/// clients of a local service and half servers a local host calls: every
/// record's `remote_asn` and `remote_as_org` are the CSV's for its remote
/// and its `remote_country` is the country database's alone; so are the
/// observations'; the block format keeps them, and listing the databases
/// the other way round changes nothing (neither knows the other's fields).
#[test]
fn replayed_records_take_the_asn_from_the_asn_database_and_the_country_from_the_country_one() {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let country = ipdb("geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb");
    let asn = asn_db();
    let countries = vmflow::observe::Enricher::open(std::slice::from_ref(&country)).unwrap();

    // remote -> (AS number, organisation), by the CSV.
    let mut want: HashMap<IpAddr, (u32, String)> = HashMap::new();
    let mut remotes: Vec<IpAddr> = Vec::new();
    for (csv, step) in [("asn/asn-ipv4.csv", 100), ("asn/asn-ipv6.csv", 50)] {
        let rows = asn_rows(csv);
        let clear = clear_ranges(&rows, |r| (r.0, r.1), 8, csv);
        let quoted = clear.iter().position(|r| r.3.contains('"')).unwrap();
        let unicode = clear.iter().position(|r| !r.3.is_ascii()).unwrap();
        let picked = (0..clear.len())
            .step_by(step)
            .chain([quoted, unicode])
            .map(|i| (i, clear[i]));
        for (i, (first, last, number, org)) in picked {
            let n = |ip: &IpAddr| match ip {
                IpAddr::V4(a) => u128::from(u32::from(*a)),
                IpAddr::V6(a) => u128::from(*a),
            };
            // A deterministic spot in the range (splitmix64 of its index).
            let mut h = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
            h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h ^= h >> 31;
            let spot = n(first) + u128::from(h) % (n(last) - n(first) + 1);
            let ip = match first {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(spot as u32)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(spot)),
            };
            assert!(*first <= ip && ip <= *last, "{ip} outside {first}-{last}");
            if want.insert(ip, (*number, org.clone())).is_none() {
                remotes.push(ip);
            }
        }
    }
    assert!(remotes.len() > 6_000, "{}", remotes.len());

    // Even remotes call a local HTTPS service, odd ones are called by a
    // local host; the first of each IP version also logs in over SSH (an
    // exposed_service observation). Many countries reach the service:
    // new_country observations too.
    let local = |ip: &IpAddr| match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(HOST)),
        IpAddr::V6(_) => IpAddr::V6("fd00::5".parse().unwrap()),
    };
    let mut c = Capture::default();
    let mut flows = 0;
    for (i, r) in remotes.iter().enumerate() {
        let t = T0 + i as u64 * 10 * S / 1000;
        let port = 20_000 + (i % 40_000) as u16;
        if i % 2 == 0 {
            c.connection_ip(t, (*r, port), (local(r), 443));
        } else {
            c.connection_ip(t, (local(r), port), (*r, 443));
        }
        flows += 1;
    }
    let v6 = remotes.iter().position(IpAddr::is_ipv6).unwrap();
    for r in [remotes[0], remotes[v6]] {
        let t = T0 + remotes.len() as u64 * 10 * S / 1000;
        c.connection_ip(t, (r, 50_022), (local(&r), 22));
        flows += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("c.pcap");
    c.write(&cap);
    let config = |name: &str, dbs: &[&Path]| {
        let cfg = dir.path().join(name);
        std::fs::write(
            &cfg,
            format!("local_nets = [\"10.0.0.0/8\", \"fd00::/8\"]\n[enrich]\nmmdb = {dbs:?}\n"),
        )
        .unwrap();
        cfg
    };
    let replay = |cfg: &Path, format: &str, out: &Path, obs: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmflow"));
        cmd.args(["replay", "--format", format, "--config"])
            .arg(cfg)
            .arg("--out")
            .arg(out);
        if let Some(obs) = obs {
            cmd.arg("--observations").arg(obs);
        }
        let o = cmd.arg(&cap).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let both = config("both.toml", &[&country, &asn]);
    let obs_path = dir.path().join("o.ndjson");
    let ndjson = dir.path().join("r.ndjson");
    replay(&both, "ndjson", &ndjson, Some(&obs_path));
    let text = std::fs::read_to_string(&ndjson).unwrap();

    // A record or observation names what the databases say of its remote.
    let mut with_country = 0;
    let check = |v: &Value, remote: IpAddr, with_country: &mut usize| {
        let (number, org) = &want[&remote];
        assert_eq!(
            (v["remote_asn"].as_u64(), v["remote_as_org"].as_str()),
            (Some(u64::from(*number)), Some(org.as_str())),
            "{remote}: {v}"
        );
        let country = countries.lookup(remote).country;
        assert_eq!(
            v["remote_country"].as_str(),
            country.as_deref(),
            "{remote}: {v}"
        );
        *with_country += usize::from(country.is_some());
    };
    let recs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), flows);
    let mut seen = std::collections::HashSet::new();
    for r in &recs {
        let addr = |k: &str| r[k].as_str().unwrap().parse::<IpAddr>().unwrap();
        let remote = match r["direction"].as_str() {
            Some("inbound") => addr("src_addr"),
            Some("outbound") => addr("dst_addr"),
            _ => panic!("{r}"),
        };
        check(r, remote, &mut with_country);
        seen.insert(remote);
    }
    assert_eq!(seen.len(), remotes.len());
    // Nearly every address with an AS has a country too: the field is
    // there to be checked, not absent throughout.
    assert!(with_country * 10 > flows * 9, "{with_country} of {flows}");

    let obs: Vec<Value> = std::fs::read_to_string(&obs_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: BTreeSet<&str> = obs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["exposed_service", "new_country"]),
        "{obs:#?}"
    );
    for o in &obs {
        check(
            o,
            o["remote_addr"].as_str().unwrap().parse().unwrap(),
            &mut 0,
        );
    }
    let exposed: BTreeSet<IpAddr> = obs
        .iter()
        .filter(|o| o["kind"] == "exposed_service")
        .map(|o| o["remote_addr"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(exposed, BTreeSet::from([remotes[0], remotes[v6]]));

    // The block format carries the same fields, organisations with quotes
    // and non-ASCII letters included.
    let blocks = dir.path().join("r.blocks");
    replay(&both, "blocks", &blocks, None);
    let cat = common::run_ok(
        Command::new(env!("CARGO_BIN_EXE_vmflow"))
            .arg("cat")
            .arg(&blocks),
    );
    let sorted = |s: &str| {
        let mut l: Vec<String> = s.lines().map(str::to_string).collect();
        l.sort_unstable();
        l
    };
    assert_eq!(
        sorted(&String::from_utf8(cat.stdout).unwrap()),
        sorted(&text)
    );

    // The other order: each field still from the one database that knows it.
    let swapped = config("swapped.toml", &[&asn, &country]);
    let other = dir.path().join("s.ndjson");
    replay(&swapped, "ndjson", &other, None);
    assert_eq!(
        sorted(&std::fs::read_to_string(&other).unwrap()),
        sorted(&text)
    );
}

/// Peak resident memory of a finished child, in MiB (`wait4`'s rusage: the
/// child's own high-water mark, read when it is reaped).
#[cfg(target_os = "linux")]
fn wait_peak_mib(child: std::process::Child) -> (i32, f64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in; the pid is our
    // own child, not yet reaped (the `Child` is consumed and never waited).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(got, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(child);
    (status, usage.ru_maxrss as f64 / 1024.0)
}

/// A million SYNs to RDP from a million spoofed sources within ten seconds
/// of packet time: the observer's tables stop at `max_tracked`, the rest is
/// counted as untracked in the log, and the whole replay stays under its
/// memory cap. Nothing is raised (no source tries twice).
#[cfg(target_os = "linux")]
#[test]
fn a_million_spoofed_sources_stay_under_the_memory_cap_and_are_counted() {
    const SOURCES: u32 = 1_000_000;
    const TRACKED: u32 = 10_000;
    /// What the replay may take at its peak: the engine's table of a
    /// million half-open flows and the observer's capped tables (measured:
    /// 190 MiB; with `max_tracked` at a million, 1.1 GiB).
    const CAP_MIB: f64 = 300.0;
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("spoofed.pcap");
    {
        let mut w = PcapWriter::new(
            std::io::BufWriter::new(std::fs::File::create(&cap).unwrap()),
            65535,
            1,
        )
        .unwrap();
        let mut c = Capture::default();
        for i in 0..SOURCES {
            c.pkts.clear();
            let src = Ipv4Addr::from(0x0b00_0000 + i).octets();
            c.tcp(0, (src, 40_000), (HOST, 3389), SYN, 0);
            let f = &c.pkts[0].1;
            w.write(T0 + u64::from(i) * 10_000, f.len() as u32, f)
                .unwrap();
        }
    }
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("[observe]\nmax_tracked = {TRACKED}\n")).unwrap();
    let obs = dir.path().join("o.ndjson");
    let child = Command::new(env!("CARGO_BIN_EXE_vmflow"))
        .args(["replay", "--threads", "1", "--out", "/dev/null", "--config"])
        .arg(&cfg)
        .arg("--observations")
        .arg(&obs)
        .arg(&cap)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("err.txt")).unwrap())
        .spawn()
        .unwrap();
    let (status, peak) = wait_peak_mib(child);
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    assert_eq!(status, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&obs).unwrap(), "");
    // Both the failed-access and the scan table turned the rest away.
    let untracked = 2 * u64::from(SOURCES - TRACKED);
    assert!(err.contains(&format!("untracked={untracked}")), "{err}");
    eprintln!("peak RSS {peak:.0} MiB");
    assert!(peak < CAP_MIB, "peak RSS {peak:.0} MiB ≥ {CAP_MIB} MiB");
}

/// Tagged records go through the spool, the shipper and the collector as
/// they are: with a watchlist and the country database, the collector's
/// files hold exactly what `replay` with the same lists writes.
#[test]
fn tagged_records_reach_the_collector_as_replay_writes_them() {
    use common::agents::{agent, agent_config, certs_init, collected, collector, multiset};
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = d.path().join("out");
    let (c, addr) = collector(&certs, &out, "127.0.0.1:0");
    let cap = common::agents::synth_cap(d.path(), 20_000);
    let watch = d.path().join("watch.txt");
    std::fs::write(&watch, "198.51.100.0/24\n").unwrap();
    let tables = format!(
        "[enrich]\nmmdb = [{:?}]\n[[watchlist]]\nname = \"docs\"\nfile = {watch:?}\n",
        ipdb("geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb")
    );
    let cfg = agent_config(d.path(), "a", &cap, &certs, "agent-1", &addr, &tables);
    let mut a = agent(&cfg);
    assert!(a.wait(std::time::Duration::from_secs(90)), "{}", a.text());
    let replay_cfg = d.path().join("replay.toml");
    std::fs::write(&replay_cfg, &tables).unwrap();
    let replayed = Command::new(env!("CARGO_BIN_EXE_vmflow"))
        .args(["replay", "--config"])
        .arg(&replay_cfg)
        .arg(&cap)
        .output()
        .unwrap();
    assert!(replayed.status.success());
    let replayed = String::from_utf8(replayed.stdout).unwrap();
    // Both kinds of tag are there to be carried.
    assert!(replayed.contains("\"watchlists\":[\"docs\"]"));
    assert!(replayed.contains("\"remote_country\":"));
    assert_eq!(collected(&out, "agent-1"), multiset(&replayed));
    drop(c);
}

/// The observations of the collector's stream directory, one string a line.
fn shipped_observations(stream_dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(files) = std::fs::read_dir(stream_dir.join("observations")) else {
        return lines;
    };
    for f in files {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        lines.extend(text.lines().map(String::from));
    }
    lines.sort();
    lines
}

/// `[observe] ship = true`: `vmflow run` ships the observations with the
/// records, in the same batches (a few records each here, so they spread
/// over many), and the collector keeps them in `observations/` by hour:
/// exactly the lines `replay --observations` writes for the file. A second
/// run over the same spool (every record already spooled, so skipped) adds
/// neither records nor observations; `query` reads the records without
/// the observations and counts both.
#[test]
fn observations_ship_with_their_records_exactly_once() {
    use common::agents::{agent, agent_config, certs_init, collected, collector, multiset};
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut c = Capture::default();
    benign(&mut c);
    patterns(&mut c);
    let cap = dir.join("mixed.pcap");
    c.write(&cap);
    // The lines as replay wrote them: shipped, they are the same bytes.
    assert_eq!(replay(dir, &cap).len(), 4);
    let want = {
        let text = std::fs::read_to_string(dir.join("obs.ndjson")).unwrap();
        let mut v: Vec<String> = text.lines().map(String::from).collect();
        v.sort();
        v
    };
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = dir.join("out");
    let (col, addr) = collector(&certs, &out, "127.0.0.1:0");
    let extra = format!(
        "batch_records = 3\n[observe]\nship = true\n[[watchlist]]\nname = \"threats\"\nfile = {:?}\n",
        dir.join("watch.txt")
    );
    let cfg = agent_config(dir, "a", &cap, &certs, "agent-1", &addr, &extra);
    let records = {
        let out = Command::new(env!("CARGO_BIN_EXE_vmflow"))
            .args(["replay", "--config"])
            .arg(dir.join("observe.toml"))
            .arg(&cap)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let stream_dir = out.join("agent-1");
    for run in 0..2 {
        let mut a = agent(&cfg);
        assert!(a.wait(std::time::Duration::from_secs(90)), "{}", a.text());
        assert_eq!(shipped_observations(&stream_dir), want, "run {run}");
        assert_eq!(collected(&out, "agent-1"), multiset(&records), "run {run}");
    }
    // query: the records, not the observations; --agents counts both.
    let q = Command::new(env!("CARGO_BIN_EXE_vmflow"))
        .args(["query", "--agents", "--output", "ndjson"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&q.stdout);
    assert!(
        q.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&q.stderr)
    );
    let v: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(v["observations"], 4, "{v}");
    assert_eq!(v["records"], records.lines().count(), "{v}");
    let q = Command::new(env!("CARGO_BIN_EXE_vmflow"))
        .args(["query", "--output", "ndjson"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&q.stdout);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert_eq!(text.lines().count(), records.lines().count());
    assert!(text.lines().all(|l| l.contains("\"flow_id\"")), "{text}");
    drop(col);
}

/// A followed folder's observer windows live in its checkpoint: five
/// refused RDP attempts in one file, the agent stopped (and its checkpoint
/// taken), five more in the next file after it starts again — one
/// `failed_access` observation of ten attempts, exactly what `replay` of
/// both files raises. Without the observer's state in the checkpoint the
/// second run counts five and raises nothing.
#[test]
fn a_followed_folder_keeps_its_observation_windows_across_a_restart() {
    use common::agents::{agent, agent_config_with, certs_init, collected, collector};
    use std::time::{Duration, Instant};
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let caps = dir.join("captures");
    std::fs::create_dir_all(&caps).unwrap();
    // A refused connection from elsewhere marks how far the agent got (its
    // record comes out once a later packet passes its linger).
    const MARK: [u8; 4] = [10, 0, 0, 99];
    let mut one = Capture::default();
    for i in 0..5u16 {
        one.refused(
            T0 + (60 + u64::from(i)) * S,
            (ATTACKER, 60_000 + i),
            (HOST, 3389),
        );
    }
    one.refused(T0 + 70 * S, (MARK, 50_001), (OTHER, 8080));
    one.refused(T0 + 80 * S, (MARK, 50_002), (OTHER, 8080));
    let mut two = Capture::default();
    for i in 5..10u16 {
        two.refused(
            T0 + (80 + u64::from(i)) * S,
            (ATTACKER, 60_000 + i),
            (HOST, 3389),
        );
    }
    two.refused(T0 + 200 * S, (MARK, 50_003), (OTHER, 8080));
    two.refused(T0 + 210 * S, (MARK, 50_004), (OTHER, 8080));
    let (p1, p2) = (dir.join("one.pcap"), dir.join("two.pcap"));
    one.write(&p1);
    two.write(&p2);
    // Packets go through the engine one batch at a time, and a followed
    // file this sparse would not fill one: a batch a packet, here and in
    // the replay it is compared with.
    let pipeline = "[pipeline]\nbatch_packets = 1\n";
    let replay_cfg = dir.join("replay.toml");
    std::fs::write(&replay_cfg, pipeline).unwrap();
    let both = {
        let out = Command::new(env!("CARGO_BIN_EXE_vmflow"))
            .args(["replay", "--out", "/dev/null", "--config"])
            .arg(&replay_cfg)
            .arg("--observations")
            .arg(dir.join("want.ndjson"))
            .args([&p1, &p2])
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::read_to_string(dir.join("want.ndjson")).unwrap()
    };
    assert_eq!(both.lines().count(), 1, "{both}");
    assert!(both.contains("\"kind\":\"failed_access\"") && both.contains("\"count\":10"));

    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = dir.join("out");
    let (col, addr) = collector(&certs, &out, "127.0.0.1:0");
    let source = format!(
        "[source.folder]\npath = {caps:?}\npoll_interval = 0.01\ncheckpoint_interval = 0.2\n"
    );
    let cfg = agent_config_with(
        dir,
        "a",
        &source,
        &certs,
        "agent-1",
        &addr,
        &format!("batch_records = 1\nbatch_age = 0.05\n[observe]\nship = true\n{pipeline}"),
    );
    let marked = |port: u16, a: &common::agents::Proc| {
        let needle = format!("\"src_port\":{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !collected(&out, "agent-1")
            .keys()
            .any(|l| l.contains(&needle))
        {
            assert!(
                Instant::now() < deadline,
                "no record from port {port}:\n{}",
                a.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    std::fs::copy(&p1, caps.join("packetcapture_00_00_01_000.cap")).unwrap();
    let mut a = agent(&cfg);
    marked(50_001, &a);
    a.sigterm();
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    std::fs::copy(&p2, caps.join("packetcapture_00_00_02_000.cap")).unwrap();
    let mut a = agent(&cfg);
    marked(50_003, &a);
    a.sigterm();
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    let mut want: Vec<String> = both.lines().map(String::from).collect();
    want.sort();
    assert_eq!(shipped_observations(&out.join("agent-1")), want);
    drop(col);
}
