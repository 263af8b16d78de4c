//! IPFIX out, read by a real collector: `vmflow replay --format ipfix`
//! messages sent over UDP to nfdump's nfcapd on loopback, read back with
//! `nfdump -o raw`, equal the replay's NDJSON records field by field
//! (addresses, ports, protocol, packets and bytes both ways, millisecond
//! times, forward TCP flags, initiator, end reason, VLAN) in both modes.

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

struct Nfcapd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nfcapd {
    fn start(dir: &Path) -> Nfcapd {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let flows = dir.join("flows");
        std::fs::create_dir_all(&flows).unwrap();
        let log = std::fs::File::create(dir.join("nfcapd.log")).unwrap();
        let child = Command::new("nfcapd")
            .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-w"])
            .arg(&flows)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nfcapd (Debian package nfdump) runs");
        let n = Nfcapd {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        n.wait_until(|| n.bound(), "nfcapd listening");
        n
    }

    fn wait_until(&self, mut cond: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The collector's socket and its receive queue, from /proc/net/udp.
    fn rx_queue(&self) -> Option<u64> {
        let table = std::fs::read_to_string("/proc/net/udp").unwrap();
        let want = format!("0100007F:{:04X}", self.port);
        table.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&want.as_str())).then(|| {
                let q = f[4].split(':').nth(1).unwrap();
                u64::from_str_radix(q, 16).unwrap()
            })
        })
    }

    fn bound(&self) -> bool {
        self.rx_queue().is_some()
    }

    /// Sends each message and waits until nfcapd has read it, so no
    /// datagram is lost to a full socket buffer.
    fn send_all(&self, messages: &[&[u8]]) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for m in messages {
            s.send_to(m, ("127.0.0.1", self.port)).unwrap();
            self.wait_until(|| self.rx_queue() == Some(0), "nfcapd to read");
        }
    }

    /// Stops nfcapd (it writes its file on SIGTERM) and returns the flows
    /// nfdump reads from it.
    fn stop_and_read(mut self) -> Vec<HashMap<String, String>> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "nfcapd exit {st:?}");
        let files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("flows"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("nfcapd.2")
            })
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let out = Command::new("nfdump")
            .arg("-r")
            .arg(&files[0])
            .args(["-o", "raw", "-q"])
            .env("TZ", "UTC")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success());
        parse_raw(&String::from_utf8(out.stdout).unwrap())
    }
}

/// `nfdump -o raw`: one "Flow Record:" block per flow, `key = value` lines.
fn parse_raw(text: &str) -> Vec<HashMap<String, String>> {
    let mut flows = Vec::new();
    let mut cur: Option<HashMap<String, String>> = None;
    for line in text.lines() {
        if line.starts_with("Flow Record") {
            flows.extend(cur.take());
            cur = Some(HashMap::new());
        } else if let (Some(c), Some((k, v))) = (cur.as_mut(), line.split_once(" = ")) {
            let v = v.trim();
            let v = v.split(" [").next().unwrap().split(' ').next().unwrap();
            c.insert(k.trim().to_string(), v.to_string());
        }
    }
    flows.extend(cur);
    flows
}

fn end_code(r: &Value) -> u64 {
    match r["end_reason"].as_str().unwrap() {
        "idle" => 1,
        "active" => 2,
        "fin" | "rst" => 3,
        "evicted" => 5,
        _ => 4,
    }
}

fn u(r: &Value, k: &str) -> u64 {
    r[k].as_u64().unwrap()
}

/// What nfdump must show for one record (or one direction of it).
fn expected(r: &Value, reverse: bool, biflow: bool) -> Vec<String> {
    let icmp = r["icmp_type"].as_u64().is_some();
    let (sa, da, sp, dp, p, b, f) = if reverse {
        let (sp, dp) = (u(r, "dst_port"), u(r, "src_port"));
        (
            "dst_addr",
            "src_addr",
            sp,
            dp,
            "rev_packets",
            "rev_bytes",
            "rev_tcp_flags",
        )
    } else {
        let (sp, dp) = (u(r, "src_port"), u(r, "dst_port"));
        (
            "src_addr",
            "dst_addr",
            sp,
            dp,
            "fwd_packets",
            "fwd_bytes",
            "fwd_tcp_flags",
        )
    };
    // nfdump keeps icmpTypeCode in the destination port and no source port.
    let (sp, dp) = if icmp {
        let tc = u(r, "icmp_type") << 8 | r["icmp_code"].as_u64().unwrap_or(0);
        (0, tc)
    } else {
        (sp, dp)
    };
    let mut v = vec![
        r[sa].as_str().unwrap().to_string(),
        r[da].as_str().unwrap().to_string(),
        sp.to_string(),
        dp.to_string(),
        u(r, "proto").to_string(),
        u(r, p).to_string(),
        u(r, b).to_string(),
        (u(r, "first_ns") / 1_000_000).to_string(),
        (u(r, "last_ns") / 1_000_000).to_string(),
        format!("0x{:02x}", u(r, f)),
        end_code(r).to_string(),
        r["vlan"].as_u64().unwrap_or(0).to_string(),
    ];
    if biflow {
        v.push(u(r, "rev_packets").to_string());
        v.push(u(r, "rev_bytes").to_string());
        v.push("0x01".into());
    }
    v
}

fn got(f: &HashMap<String, String>, biflow: bool) -> Vec<String> {
    let g = |k: &str| {
        f.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("no {k} in {f:?}"))
    };
    // ICMP flows show `ICMP = type.code` instead of ports.
    let (sp, dp) = match f.get("ICMP") {
        Some(tc) => {
            let (t, c) = tc.split_once('.').unwrap();
            let tc = t.parse::<u64>().unwrap() << 8 | c.parse::<u64>().unwrap();
            ("0".to_string(), tc.to_string())
        }
        None => (g("src port"), g("dst port")),
    };
    let mut v = vec![
        g("src addr"),
        g("dst addr"),
        sp,
        dp,
        g("proto"),
        g("in packets"),
        g("in bytes"),
        g("first"),
        g("last"),
        g("tcp flags"),
        u64::from_str_radix(g("end reason").trim_start_matches("0x"), 16)
            .unwrap()
            .to_string(),
        g("src vlan"),
    ];
    if biflow {
        v.push(g("out packets"));
        v.push(g("out bytes"));
        v.push(g("biFlow Dir"));
    }
    v
}

fn round_trip(mode: &str) {
    let d = tempfile::tempdir().unwrap();
    let cap = d.path().join("in.pcap");
    let st = run(vmflow()
        .args([
            "synth",
            "--packets",
            "40000",
            "--concurrent",
            "600",
            "--seed",
            "11",
        ])
        .arg("--out")
        .arg(&cap));
    assert!(st.status.success());
    let (records, _, ok) = replay(std::slice::from_ref(&cap), &[]);
    assert!(ok && records.len() > 1_000);
    let file = d.path().join("out.ipfix");
    let st = run(vmflow()
        .args(["replay", "--format", "ipfix", "--ipfix-mode", mode, "--out"])
        .arg(&file)
        .arg(&cap));
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let bytes = std::fs::read(&file).unwrap();
    let nf = Nfcapd::start(d.path());
    nf.send_all(&vmflow_proto::ipfix::messages(&bytes).expect("whole messages"));
    let flows = nf.stop_and_read();

    let biflow = mode == "biflow";
    let mut want: Vec<Vec<String>> = Vec::new();
    for r in &records {
        want.push(expected(r, false, biflow));
        if !biflow && u(r, "rev_packets") > 0 {
            want.push(expected(r, true, biflow));
        }
    }
    let mut have: Vec<Vec<String>> = flows.iter().map(|f| got(f, biflow)).collect();
    want.sort();
    have.sort();
    assert_eq!(have.len(), want.len(), "flows nfdump read ({mode})");
    for (h, w) in have.iter().zip(&want) {
        assert_eq!(h, w, "{mode}");
    }
}

#[test]
fn nfdump_reads_every_biflow_as_replayed() {
    round_trip("biflow");
}

#[test]
fn nfdump_reads_both_halves_of_every_flow_in_uniflow_mode() {
    round_trip("uniflow");
}
