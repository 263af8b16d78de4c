//! Real traffic between two network namespaces, captured by tcpdump, replayed
//! by vmflow and checked against tshark (an independent decoder) and against
//! what the clients did. Needs root, iproute2, tcpdump, tshark, curl, ping and
//! python3; the README's test command installs them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use common::netns::*;
use common::*;
use serde_json::Value;

/// tshark's view: per TCP client port, (packets, IP bytes) in each direction,
/// plus the totals over all frames.
struct Tshark {
    frames: u64,
    ip_bytes: u64,
    tcp: BTreeMap<u16, [(u64, u64); 2]>,
}

fn tshark(cap: &Path) -> Tshark {
    let out = sh(&format!(
        "tshark -r {} -T fields -E separator=, -e ip.len -e ipv6.plen -e tcp.srcport -e tcp.dstport 2>/dev/null",
        cap.display()
    ));
    let mut t = Tshark {
        frames: 0,
        ip_bytes: 0,
        tcp: BTreeMap::new(),
    };
    for line in out.lines() {
        t.frames += 1;
        let f: Vec<&str> = line.split(',').collect();
        let num = |i: usize| {
            f.get(i)
                .and_then(|s| s.split(';').next())
                .and_then(|s| s.parse::<u64>().ok())
        };
        let bytes = match (num(0), num(1)) {
            (Some(l), _) => l,
            (None, Some(p)) => p + 40,
            _ => continue,
        };
        t.ip_bytes += bytes;
        if let (Some(sp), Some(dp)) = (num(2), num(3)) {
            let (client, dir) = if dp == 8080 {
                (sp, 0)
            } else if sp == 8080 {
                (dp, 1)
            } else {
                continue;
            };
            let e = t.tcp.entry(client as u16).or_default();
            e[dir].0 += 1;
            e[dir].1 += bytes;
        }
    }
    t
}

#[test]
fn live_traffic_matches_tshark_and_the_clients() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("live.pcap");
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let body = vec![b'x'; 200_000];
    std::fs::write(www.join("file"), &body).unwrap();
    let ns = Netns::new();

    // Header-only capture, as a capture agent would take it.
    let mut dump = ns
        .exec(&ns.server)
        .args(["tcpdump", "-i", &ns.server_if, "-U", "-s", "128", "-w"])
        .arg(&cap)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(dump.stderr.take().unwrap(), "listening on");
    let dump = Bg(dump);

    let _http = http_server(&ns, &www);

    let udp_server = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.77.0.2',5300))\nprint('ready',flush=True)\nfor _ in range(3):\n d,a=s.recvfrom(2048)\n s.sendto(d*2,a)\n";
    let mut udp = ns
        .exec(&ns.server)
        .args(["python3", "-u", "-c", udp_server])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(udp.stdout.take().unwrap(), "ready");
    let _udp = Bg(udp);

    const REQUESTS: usize = 5;
    curl_n(&ns, "http://10.77.0.2:8080/file", REQUESTS);
    let out = ns
        .exec(&ns.client)
        .args(["ping", "-c", "3", "-i", "0.2", "10.77.0.2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = ns
        .exec(&ns.client)
        .args(["ping", "-6", "-c", "2", "-i", "0.2", "fd77::2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let udp_client = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(10)\nfor i in range(3):\n s.sendto(b'q'*(100+i),('10.77.0.2',5300))\n s.recvfrom(4096)\n";
    let out = ns
        .exec(&ns.client)
        .args(["python3", "-c", udp_client])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "udp client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A marker datagram: once it is in the file, everything before it is too.
    mark_and_wait(&ns, &cap);
    let mut dump = dump;
    sh(&format!("kill -INT {}", dump.0.id()));
    let _ = dump.0.wait();

    let (recs, err, ok) = replay(std::slice::from_ref(&cap), &[]);
    assert!(ok, "{err}");
    let ts = tshark(&cap);

    // Totals agree with tshark.
    assert_eq!(summary(&err, "packets"), Some(ts.frames), "{err}");
    assert_eq!(summary(&err, "ip_bytes"), Some(ts.ip_bytes), "{err}");
    let rec_bytes: u64 = recs
        .iter()
        .map(|r| r["fwd_bytes"].as_u64().unwrap() + r["rev_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(rec_bytes, ts.ip_bytes);

    // N requests: N TCP flows, each matching tshark per direction, each
    // carrying the whole file even though only 128 bytes per packet were kept.
    let http: Vec<&Value> = recs
        .iter()
        .filter(|r| r["proto"] == 6 && r["dst_port"] == 8080)
        .collect();
    assert_eq!(http.len(), REQUESTS, "{http:?}");
    assert_eq!(ts.tcp.len(), REQUESTS);
    for r in &http {
        let port = r["src_port"].as_u64().unwrap() as u16;
        let t = ts.tcp[&port];
        assert_eq!(r["src_addr"], "10.77.0.1");
        assert_eq!(r["direction"], "internal");
        assert_eq!(r["end_reason"], "fin");
        assert_eq!(
            (
                r["fwd_packets"].as_u64().unwrap(),
                r["fwd_bytes"].as_u64().unwrap()
            ),
            t[0]
        );
        assert_eq!(
            (
                r["rev_packets"].as_u64().unwrap(),
                r["rev_bytes"].as_u64().unwrap()
            ),
            t[1]
        );
        assert!(r["rev_bytes"].as_u64().unwrap() > body.len() as u64);
        assert_eq!(
            r["fwd_tcp_flags"].as_u64().unwrap() & 0x03,
            0x03,
            "SYN and FIN from the client"
        );
    }
    let echo4: Vec<&Value> = recs
        .iter()
        .filter(|r| r["proto"] == 1 && r["icmp_type"] == 8)
        .collect();
    assert_eq!(echo4.len(), 1, "one ping run is one flow");
    assert_eq!(
        (
            echo4[0]["fwd_packets"].as_u64(),
            echo4[0]["rev_packets"].as_u64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(echo4[0]["icmp_type"], 8);
    let echo6: Vec<&Value> = recs
        .iter()
        .filter(|r| r["proto"] == 58 && r["icmp_type"] == 128)
        .collect();
    assert_eq!(echo6.len(), 1);
    assert_eq!(
        (
            echo6[0]["fwd_packets"].as_u64(),
            echo6[0]["rev_packets"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let dns: Vec<&Value> = recs
        .iter()
        .filter(|r| r["proto"] == 17 && r["dst_port"] == 5300)
        .collect();
    assert_eq!(dns.len(), 1);
    assert_eq!(
        (
            dns[0]["fwd_packets"].as_u64(),
            dns[0]["rev_packets"].as_u64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(dns[0]["fwd_bytes"], (128 + 129 + 130) as u64);
    assert_eq!(dns[0]["rev_bytes"], (228 + 230 + 232) as u64);
}
