//! Live capture on a real veth in network namespaces: vmflow's records
//! against tcpdump capturing the same interface at the same time (replayed by
//! vmflow) and against what the clients did; an idle flow is exported on time
//! with no further packets; a missing capability is a clear error.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::netns::*;
use common::*;
use serde_json::Value;

fn records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Per conversation: (proto, src, sport, dst, dport) → (packets and bytes each way, first_ns, end).
fn by_key(recs: &[Value]) -> BTreeMap<String, (u64, u64, u64, u64, u64, String)> {
    let mut m = BTreeMap::new();
    for r in recs {
        let k = format!(
            "{} {}:{} > {}:{}",
            r["proto"], r["src_addr"], r["src_port"], r["dst_addr"], r["dst_port"]
        );
        let end = match r["end_reason"].as_str().unwrap() {
            "shutdown" | "end_of_input" => "open".to_string(),
            other => other.to_string(),
        };
        let n = |f: &str| r[f].as_u64().unwrap();
        let prev = m.insert(
            k.clone(),
            (
                n("fwd_packets"),
                n("fwd_bytes"),
                n("rev_packets"),
                n("rev_bytes"),
                n("first_ns"),
                end,
            ),
        );
        assert!(prev.is_none(), "one record per conversation here: {k}");
    }
    m
}

fn start_capture(ns: &Netns, out: &std::path::Path, extra: &[&str]) -> Bg {
    let mut c = ns
        .exec(&ns.server)
        .arg(env!("CARGO_BIN_EXE_vmflow"))
        .args(["capture", "-i", &ns.server_if, "--out"])
        .arg(out)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = c.stderr.take().unwrap();
    let mut reader = std::io::BufReader::new(err);
    {
        use std::io::BufRead;
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("capturing on"), "{line}");
    }
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        eprint!("{rest}");
    });
    Bg(c)
}

fn stop(bg: &mut Bg) {
    sh(&format!("kill -TERM {}", bg.0.id()));
    let st = bg.0.wait().unwrap();
    assert!(st.success(), "vmflow capture exited with {st}");
}

#[test]
fn live_records_match_tcpdump_and_the_clients() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.ndjson");
    let cap = dir.path().join("ref.pcap");
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("file"), vec![b'y'; 100_000]).unwrap();
    let ns = Netns::new();

    let mut vm = start_capture(&ns, &live, &[]);
    let mut dump = ns
        .exec(&ns.server)
        .args([
            "tcpdump",
            "-i",
            &ns.server_if,
            "-U",
            "-s",
            "128",
            "--time-stamp-precision=nano",
            "-w",
        ])
        .arg(&cap)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(dump.stderr.take().unwrap(), "listening on");
    let dump = Bg(dump);
    let mut http = ns
        .exec(&ns.server)
        .args([
            "python3",
            "-u",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "10.77.0.2",
            "--directory",
        ])
        .arg(&www)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_line(http.stdout.take().unwrap(), "Serving HTTP");
    let _http = Bg(http);

    const REQUESTS: usize = 4;
    for _ in 0..REQUESTS {
        let out = ns
            .exec(&ns.client)
            .args([
                "curl",
                "-sf",
                "-o",
                "/dev/null",
                "http://10.77.0.2:8080/file",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    assert!(ns
        .exec(&ns.client)
        .args(["ping", "-c", "3", "-i", "0.2", "10.77.0.2"])
        .output()
        .unwrap()
        .status
        .success());
    let marker = "import socket\nsocket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'vmflow-capture-marker',('10.77.0.2',9))\n";
    assert!(ns
        .exec(&ns.client)
        .args(["python3", "-c", marker])
        .output()
        .unwrap()
        .status
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read(&cap)
        .unwrap_or_default()
        .windows(21)
        .any(|w| w == b"vmflow-capture-marker")
    {
        assert!(
            Instant::now() < deadline,
            "tcpdump never wrote the marker packet"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Both saw the marker's interface traffic; stop both.
    let mut dump = dump;
    sh(&format!("kill -INT {}", dump.0.id()));
    let _ = dump.0.wait();
    stop(&mut vm);

    let got = records(&live);
    let (want, err, ok) = replay(std::slice::from_ref(&cap), &[]);
    assert!(ok, "{err}");
    let (g, w) = (by_key(&got), by_key(&want));
    // vmflow may have seen a packet or two after tcpdump stopped (IPv6
    // housekeeping): every conversation tcpdump saw must match exactly.
    // Timestamps come from two sockets' own stamping: equal to within a
    // millisecond, everything else exactly.
    for (k, v) in &w {
        let mine = g.get(k).unwrap_or_else(|| panic!("vmflow missed {k}"));
        assert_eq!(
            (mine.0, mine.1, mine.2, mine.3, &mine.5),
            (v.0, v.1, v.2, v.3, &v.5),
            "{k}"
        );
        assert!(
            mine.4.abs_diff(v.4) < 1_000_000,
            "{k}: first_ns {} vs {}",
            mine.4,
            v.4
        );
    }
    assert!(w.len() >= REQUESTS + 2, "tcpdump saw the traffic: {w:?}");
    let http: Vec<&Value> = got.iter().filter(|r| r["dst_port"] == 8080).collect();
    assert_eq!(http.len(), REQUESTS);
    for r in http {
        assert_eq!(r["end_reason"], "fin");
        assert!(r["rev_bytes"].as_u64().unwrap() > 100_000);
    }
    let echo: Vec<&Value> = got
        .iter()
        .filter(|r| r["proto"] == 1 && r["icmp_type"] == 8)
        .collect();
    assert_eq!(echo.len(), 1);
    assert_eq!(
        (
            echo[0]["fwd_packets"].as_u64(),
            echo[0]["rev_packets"].as_u64()
        ),
        (Some(3), Some(3))
    );
}

#[test]
fn an_idle_flow_is_exported_after_its_idle_timeout_without_more_packets() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.ndjson");
    let cfg = write(dir.path(), "c.toml", b"[flow]\nidle_timeout = 1\n");
    let ns = Netns::new();
    let mut vm = start_capture(&ns, &live, &["--config", cfg.to_str().unwrap()]);
    let send = "import socket\nsocket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b'x'*100,('10.77.0.2',5300))\n";
    assert!(ns
        .exec(&ns.client)
        .args(["python3", "-c", send])
        .output()
        .unwrap()
        .status
        .success());
    let sent = Instant::now();
    // No more traffic: the record must appear while the capture runs.
    let rec = loop {
        if let Some(r) = records(&live).into_iter().find(|r| r["dst_port"] == 5300) {
            break r;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "idle flow never exported"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let waited = sent.elapsed();
    assert_eq!(rec["end_reason"], "idle");
    assert_eq!(rec["fwd_packets"], 1);
    assert!(
        waited >= Duration::from_millis(900),
        "exported before its timeout: {waited:?}"
    );
    stop(&mut vm);
}

#[test]
fn without_cap_net_raw_the_error_says_so() {
    require_tools();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_vmflow"))
        .args(["capture", "-i", "lo"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("needs CAP_NET_RAW"), "{err}");
}
