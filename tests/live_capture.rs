//! Live capture on a real veth in network namespaces: vmflow's records
//! against tcpdump capturing the same interface at the same time (replayed by
//! vmflow) and against what the clients did, on the veth and on loopback
//! (which hands every packet to a capture twice); an idle flow is exported on time
//! with no further packets; a missing capability is a clear error.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::netns::*;
use common::nfcapd::Nfcapd;
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

    let mut vm = capture_in(&ns, &live, &[]);
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
    let _http = http_server(&ns, &www);

    const REQUESTS: usize = 4;
    curl_n(&ns, "http://10.77.0.2:8080/file", REQUESTS);
    assert!(ns
        .exec(&ns.client)
        .args(["ping", "-c", "3", "-i", "0.2", "10.77.0.2"])
        .output()
        .unwrap()
        .status
        .success());
    mark_and_wait(&ns, &cap);
    // Both saw the marker's interface traffic; stop both.
    let mut dump = dump;
    sh(&format!("kill -INT {}", dump.0.id()));
    let _ = dump.0.wait();
    stop(&mut vm.child);

    let got = records(&live);
    let (want, err, ok) = replay(std::slice::from_ref(&cap), &[]);
    assert!(ok, "{err}");
    let ours = |recs: &[Value]| -> Vec<Value> {
        recs.iter()
            .filter(|r| r["ip_version"] == 4)
            .cloned()
            .collect()
    };
    let (g, w) = (by_key(&ours(&got)), by_key(&ours(&want)));
    // vmflow starts before tcpdump and stops after it, so IPv6 housekeeping
    // (MLD, neighbour discovery) can straddle the two captures. The test's own
    // IPv4 traffic all happens while both run: it must match exactly.
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

/// Echo requests and replies of `ping -c PINGS` with the default 56 data
/// bytes: 20 (IPv4) + 8 (ICMP) + 56 = 84 IP bytes each.
const PINGS: u64 = 4;
const PING_IP_BYTES: u64 = 84;
/// Pinged on loopback from 127.0.0.1 (the source the kernel picks for all of
/// 127/8): with a distinct address requests and replies are two directions,
/// where a ping of 127.0.0.1 itself has the same addresses and identifier
/// both ways (the engine tells them apart by the echo type).
const LO_PEER: &str = "127.0.0.2";
const LO_SELF: &str = "127.0.0.1";

/// The one echo flow to `dst` among `recs`: (fwd packets, fwd bytes, rev
/// packets, rev bytes).
fn echo_counts(recs: &[Value], dst: &str) -> (u64, u64, u64, u64) {
    let echo: Vec<&Value> = recs
        .iter()
        .filter(|r| r["proto"] == 1 && r["icmp_type"] == 8 && r["dst_addr"] == dst)
        .collect();
    assert_eq!(echo.len(), 1, "{recs:?}");
    let n = |f: &str| echo[0][f].as_u64().unwrap();
    (
        n("fwd_packets"),
        n("fwd_bytes"),
        n("rev_packets"),
        n("rev_bytes"),
    )
}

#[test]
fn loopback_packets_are_counted_once_like_tcpdump() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.ndjson");
    let cap = dir.path().join("ref.pcap");
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("file"), vec![b'y'; 100_000]).unwrap();
    // The server namespace's own loopback: nothing else talks on it.
    let ns = Netns::new();
    let mut vm = capture_on(&ns, "lo", &live, &[]);
    let mut dump = ns
        .exec(&ns.server)
        .args([
            "tcpdump",
            "-i",
            "lo",
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
    let mut dump = Bg(dump);
    let _http = http_server_on(&ns, "127.0.0.1", &www);

    run_in(
        &ns,
        &ns.server,
        &[
            "curl",
            "-sf",
            "-o",
            "/dev/null",
            "http://127.0.0.1:8080/file",
        ],
    );
    for peer in [LO_PEER, LO_SELF] {
        run_in(
            &ns,
            &ns.server,
            &["ping", "-c", &PINGS.to_string(), "-i", "0.2", peer],
        );
    }
    mark_and_wait_from(&ns, &ns.server, "127.0.0.1", &cap);
    sh(&format!("kill -INT {}", dump.0.id()));
    let _ = dump.0.wait();
    stop(&mut vm.child);

    let got = records(&live);
    for peer in [LO_PEER, LO_SELF] {
        assert_eq!(
            echo_counts(&got, peer),
            (PINGS, PINGS * PING_IP_BYTES, PINGS, PINGS * PING_IP_BYTES),
            "{peer}: each echo once, not once leaving and once arriving, \
             requests forward and replies reverse"
        );
    }
    // Loopback never leaves the host: local, whatever local_nets says.
    for r in got.iter().filter(|r| r["ip_version"] == 4) {
        assert_eq!(r["direction"], "internal", "{r}");
    }
    let (want, err, ok) = replay(std::slice::from_ref(&cap), &[]);
    assert!(ok, "{err}");
    let v4 = |recs: &[Value]| -> Vec<Value> {
        recs.iter()
            .filter(|r| r["ip_version"] == 4)
            .cloned()
            .collect()
    };
    let (g, w) = (by_key(&v4(&got)), by_key(&v4(&want)));
    let http: Vec<&String> = w.keys().filter(|k| k.ends_with(":8080")).collect();
    assert_eq!(http.len(), 1, "tcpdump saw the download: {w:?}");
    for (k, v) in &w {
        let mine = g.get(k).unwrap_or_else(|| panic!("vmflow missed {k}"));
        assert_eq!(
            (mine.0, mine.1, mine.2, mine.3, &mine.5),
            (v.0, v.1, v.2, v.3, &v.5),
            "{k}: vmflow vs tcpdump"
        );
    }
    assert!(w[http[0]].3 > 100_000, "{w:?}");
}

#[test]
fn the_agent_on_loopback_ships_each_packet_once() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    // The export connection crosses the veth: the loopback carries only the pings.
    let (_coll, mut agent, out, _) = agent_and_collector(&ns, dir.path(), "lo");
    run_in(
        &ns,
        &ns.server,
        &["ping", "-c", &PINGS.to_string(), "-i", "0.2", LO_PEER],
    );
    sh(&format!("kill -TERM {}", agent.child.0.id()));
    let ok = agent.child.0.wait().unwrap().success();
    let text = agent.text();
    assert!(ok, "{text}");
    assert_eq!(
        echo_counts(&collected(&out), LO_PEER),
        (PINGS, PINGS * PING_IP_BYTES, PINGS, PINGS * PING_IP_BYTES),
        "{text}"
    );
}

#[test]
fn an_idle_flow_is_exported_after_its_idle_timeout_without_more_packets() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.ndjson");
    let cfg = write(dir.path(), "c.toml", b"[flow]\nidle_timeout = 1\n");
    let ns = Netns::new();
    let mut vm = capture_in(&ns, &live, &["--config", cfg.to_str().unwrap()]);
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
    stop(&mut vm.child);
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

#[test]
fn the_agent_ships_live_flows_but_not_its_own_export_traffic() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    // The collector sits across the veth, so the agent's export connection
    // crosses the very interface it captures.
    let (_coll, mut agent, out, addr) = agent_and_collector(&ns, dir.path(), &ns.server_if);

    let _http = serve_file(&ns, dir.path());
    curl_n(&ns, FILE_URL, 3);
    sh(&format!("kill -TERM {}", agent.child.0.id()));
    let ok = agent.child.0.wait().unwrap().success();
    let text = agent.text();
    assert!(ok, "{text}");
    assert!(summary(&text, "batches_acked").unwrap() > 0, "{text}");
    let own = text
        .lines()
        .find_map(|l| l.strip_prefix("run: skipped.own_export="))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        own > 0,
        "the export connection crossed the captured veth: {text}"
    );

    let got = collected(&out);
    let port: u64 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        got.iter()
            .all(|r| r["src_port"] != port && r["dst_port"] != port),
        "own export traffic became a flow"
    );
    let http: Vec<&Value> = got.iter().filter(|r| r["dst_port"] == 8080).collect();
    assert_eq!(http.len(), 3, "{got:?}");
    assert!(http
        .iter()
        .all(|r| r["end_reason"] == "fin" && r["rev_bytes"].as_u64().unwrap() > 50_000));

    // Restarted with the same spool, live capture is new data: nothing of
    // it is skipped (it once skipped as many records as the spool had taken).
    let mut again = Logged::spawn(
        ns.exec(&ns.server)
            .arg(env!("CARGO_BIN_EXE_vmflow"))
            .args(["run", "--config"])
            .arg(dir.path().join("agent.toml")),
    );
    again.wait_log("connected to collector");
    curl_n(&ns, FILE_URL, 2);
    sh(&format!("kill -TERM {}", again.child.0.id()));
    assert!(again.child.0.wait().unwrap().success(), "{}", again.text());
    let text = again.text();
    assert_eq!(summary(&text, "resumed_after"), Some(0), "{text}");
    let got = collected(&out);
    let http = got.iter().filter(|r| r["dst_port"] == 8080).count();
    assert_eq!(http, 5, "{got:?}");
}

#[test]
fn live_capture_exports_to_nfcapd_alone_and_leaves_its_own_export_out() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    // nfcapd across the veth: the export datagrams cross the captured
    // interface, as on a VM whose collector is elsewhere.
    let nf = Nfcapd::start_in(&dir.path().join("nfcapd"), &ns.client, [10, 77, 0, 1], 4739);
    let cfg = write(
        dir.path(),
        "agent.toml",
        format!(
            "[flow]\ntcp_linger = 0.05\n[capture.live]\ninterfaces = [{:?}]\nshutdown_grace = 10\n\
             [[export.ipfix]]\ncollector = \"10.77.0.1:4739\"\n",
            ns.server_if
        )
        .as_bytes(),
    );
    let mut agent = Logged::spawn(
        ns.exec(&ns.server)
            .env("RUST_LOG", "info,vmflow::export::ipfix_sender=debug")
            .arg(env!("CARGO_BIN_EXE_vmflow"))
            .args(["run", "--config"])
            .arg(&cfg),
    );
    agent.wait_log("capturing on");
    let _http = serve_file(&ns, dir.path());
    curl_n(&ns, FILE_URL, 3);
    // Flows ended while capturing went out across the veth; one more
    // exchange after that, so the capture has passed the export datagram.
    agent.wait_log("IPFIX templates sent");
    curl_n(&ns, FILE_URL, 1);
    sh(&format!("kill -TERM {}", agent.child.0.id()));
    let ok = agent.child.0.wait().unwrap().success();
    let text = agent.text();
    assert!(ok, "{text}");
    assert_eq!(summary(&text, "ipfix.0.dropped_records"), Some(0), "{text}");
    let own = text
        .lines()
        .find_map(|l| l.strip_prefix("run: skipped.own_export="))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        own > Some(0),
        "the export crossed the captured veth: {text}"
    );
    let sent = summary(&text, "ipfix.0.records").unwrap();
    nf.wait_until(|| nf.rx_queue() == Some(0), "nfcapd to read");
    let flows = nf.stop_and_read();
    assert_eq!(flows.len() as u64, sent, "{flows:?}\n{text}");
    let http: Vec<_> = flows
        .iter()
        .filter(|f| f.get("dst port").map(String::as_str) == Some("8080"))
        .collect();
    assert_eq!(http.len(), 4, "{flows:?}");
    for f in http {
        assert_eq!(f["src addr"], "10.77.0.1");
        assert!(f["out bytes"].parse::<u64>().unwrap() > 50_000, "{f:?}");
    }
    assert!(
        flows
            .iter()
            .all(|f| f.get("dst port").map(String::as_str) != Some("4739")
                && f.get("src port").map(String::as_str) != Some("4739")),
        "own export traffic became a flow: {flows:?}"
    );
}

/// An HTTP server in the server namespace with one 50,000-byte file.
fn serve_file(ns: &Netns, dir: &std::path::Path) -> Bg {
    let www = dir.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("f"), vec![b'z'; 50_000]).unwrap();
    http_server(ns, &www)
}

const FILE_URL: &str = "http://10.77.0.2:8080/f";

/// A collector in the client namespace and `vmflow run` in the server
/// namespace capturing `iface`, connected to each other across the veth:
/// (collector, agent, collector output directory, collector address).
fn agent_and_collector(
    ns: &Netns,
    dir: &std::path::Path,
    iface: &str,
) -> (Logged, Logged, std::path::PathBuf, String) {
    let certs = dir.join("certs");
    assert!(common::run(vmflow().args(["certs", "init"]).arg(&certs))
        .status
        .success());
    let out = dir.join("out");
    let mut coll = Logged::spawn(
        ns.exec(&ns.client)
            .arg(env!("CARGO_BIN_EXE_vmflow"))
            .args(["collect", "--listen", "10.77.0.1:0", "--out"])
            .arg(&out)
            .arg("--cert")
            .arg(certs.join("collector.pem"))
            .arg("--key")
            .arg(certs.join("collector-key.pem"))
            .arg("--client-ca")
            .arg(certs.join("ca.pem")),
    );
    let addr = coll
        .wait_log("listening on")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let cfg = write(
        dir,
        "agent.toml",
        format!(
            "[capture.live]\ninterfaces = [{iface:?}]\nshutdown_grace = 10\n[export]\ncollector = {addr:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\nspool_dir = {:?}\nbatch_age = 0.2\n",
            certs.join("ca.pem"),
            certs.join("agent-1.pem"),
            certs.join("agent-1-key.pem"),
            dir.join("spool"),
        )
        .as_bytes(),
    );
    let mut agent = Logged::spawn(
        ns.exec(&ns.server)
            .arg(env!("CARGO_BIN_EXE_vmflow"))
            .args(["run", "--config"])
            .arg(&cfg),
    );
    agent.wait_log("capturing on");
    agent.wait_log("connected to collector");
    (coll, agent, out, addr)
}

/// Every record the collector wrote for agent-1.
fn collected(out: &std::path::Path) -> Vec<Value> {
    let mut got = Vec::new();
    for e in std::fs::read_dir(out.join("agent-1")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ndjson") {
            got.extend(records(&p));
        }
    }
    got
}

fn capture_in(ns: &Netns, out: &std::path::Path, extra: &[&str]) -> Logged {
    capture_on(ns, &ns.server_if, out, extra)
}

/// `vmflow capture -i IFACE` in the server namespace.
fn capture_on(ns: &Netns, iface: &str, out: &std::path::Path, extra: &[&str]) -> Logged {
    let mut c = Logged::spawn(
        ns.exec(&ns.server)
            .arg(env!("CARGO_BIN_EXE_vmflow"))
            .args(["capture", "-i", iface])
            .args(extra)
            .arg("--out")
            .arg(out),
    );
    c.wait_log("capturing on");
    c
}

#[test]
fn sighup_reloads_settings_and_keeps_open_flows() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.ndjson");
    let cfg = write(dir.path(), "c.toml", b"[flow]\nidle_timeout = 60\n");
    let ns = Netns::new();
    let mut c = capture_in(&ns, &live, &["--config", cfg.to_str().unwrap()]);
    // A fixed source port: both datagrams belong to one flow.
    let send = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.77.0.1',40001))\ns.sendto(b'x'*100,('10.77.0.2',5301))\n";
    run_in(&ns, &ns.client, &["python3", "-c", send]);
    // Same flow, new settings: a 10 s idle timeout instead of 60 s. Long
    // enough that the second datagram (a reload and a Python start later,
    // on a loaded machine) still finds the flow open; short enough that the
    // record coming within the deadline below proves the new timeout.
    std::fs::write(&cfg, b"[flow]\nidle_timeout = 10\n").unwrap();
    sh(&format!("kill -HUP {}", c.child.0.id()));
    c.wait_log("configuration reloaded");
    run_in(&ns, &ns.client, &["python3", "-c", send]);
    let sent = Instant::now();
    let rec = loop {
        if let Some(r) = records(&live).into_iter().find(|r| r["dst_port"] == 5301) {
            break r;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(40),
            "the new idle timeout never applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rec["end_reason"], "idle");
    assert_eq!(
        rec["fwd_packets"], 2,
        "the flow open across the reload is one flow"
    );
    // A file that no longer parses is refused; the capture goes on.
    std::fs::write(&cfg, b"[flow]\nidle_timeout = \"soon\"\n").unwrap();
    sh(&format!("kill -HUP {}", c.child.0.id()));
    c.wait_log("old settings stay");
    stop(&mut c.child);
}

#[test]
fn kernel_drops_are_counted_and_reported_as_a_coverage_gap() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.ndjson");
    let ns = Netns::new();
    let mut c = capture_in(
        &ns,
        &live,
        &["--ring-blocks", "2", "--ring-block-kib", "64"],
    );
    // The flow opens before the freeze (a ring that is still empty takes
    // these), so it is certainly open across the gap whatever the blast
    // below leaves of it: on a loaded machine the frozen capture may hold
    // both blocks and every blasted packet is dropped.
    let send = |n: u32| {
        format!("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.77.0.1',40002))\nfor i in range({n}):\n s.sendto(b'x'*200,('10.77.0.2',5302))\n")
    };
    run_in(&ns, &ns.client, &["python3", "-c", &send(10)]);
    // Freeze the capture, overflow its 128 KiB ring, let it go again.
    sh(&format!("kill -STOP {}", c.child.0.id()));
    run_in(&ns, &ns.client, &["python3", "-c", &send(5000)]);
    sh(&format!("kill -CONT {}", c.child.0.id()));
    c.wait_log("coverage gap");
    stop(&mut c.child);
    let text = c.text();
    let field = |key: &str| -> u64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("iface.{}.{key}=", ns.server_if)))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    let (drops, seen) = (field("kernel_drops"), field("packets"));
    assert!(drops > 1_000, "{text}");
    // Everything sent was either seen or counted as dropped. Drops are not
    // attributed to flows, so a stray IPv6 housekeeping packet lost in the
    // same window would count too: allow a handful above 5010, never below.
    let flow: u64 = records(&live)
        .iter()
        .filter(|r| r["dst_port"] == 5302)
        .map(|r| r["fwd_packets"].as_u64().unwrap())
        .sum();
    assert!(
        (5_010..=5_020).contains(&(flow + drops)),
        "flow {flow} + dropped {drops} (seen {seen}): {text}"
    );
    // The flow that lost packets says so.
    let recs = records(&live);
    let lossy: Vec<_> = recs.iter().filter(|r| r["dst_port"] == 5302).collect();
    assert!(!lossy.is_empty());
    assert!(lossy.iter().all(|r| r["gap"] == true), "{lossy:?}");
}

#[test]
fn a_bulk_iperf3_transfer_is_counted_in_full() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.ndjson");
    let ns = Netns::new();
    let mut vm = capture_in(&ns, &live, &[]);
    let mut srv = ns
        .exec(&ns.server)
        .args(["iperf3", "-s", "-1", "-B", "10.77.0.2", "--forceflush"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = srv.stdout.take().unwrap();
    // Keep reading after the ready line: iperf3 goes on writing to stdout.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if l.contains("Server listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("iperf3 server ready");
    let _srv = Bg(srv);
    let out = ns
        .exec(&ns.client)
        .args(["iperf3", "-c", "10.77.0.2", "-n", "200M", "-J"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let payload = report["end"]["sum_sent"]["bytes"].as_u64().unwrap();
    let retransmits = report["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .unwrap_or(0);
    stop(&mut vm.child);
    let text = vm.text();
    let recs = records(&live);
    // The data connection is the big one to port 5201 (the other is control).
    let data = recs
        .iter()
        .filter(|r| r["dst_port"] == 5201)
        .max_by_key(|r| r["fwd_bytes"].as_u64().unwrap())
        .expect("iperf3 data flow");
    let ip_bytes = data["fwd_bytes"].as_u64().unwrap();
    let packets = data["fwd_packets"].as_u64().unwrap();
    let drops: u64 = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("iface.{}.kernel_drops=", ns.server_if)))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(drops, 0, "{text}");
    // IP bytes = payload + one IP+TCP header (40 to 80 bytes) per packet
    // (offload makes them few and large), plus whatever TCP sent twice: a
    // header-only capture still counts every byte.
    let most = payload + 80 * packets + retransmits * 1_500;
    assert!(
        ip_bytes <= most,
        "{ip_bytes} > {most} ({retransmits} retransmits)"
    );
    match data["end_reason"].as_str() {
        Some("fin") => {
            assert!(
                ip_bytes >= payload + 40 * packets,
                "{ip_bytes} < {payload} + 40 × {packets}"
            )
        }
        // iperf3's server sometimes resets the data connection at the end;
        // the client's unsent queue (at most its socket buffer) is then
        // discarded: iperf3 counted it as sent, it never reached the wire.
        Some("rst") => assert!(
            ip_bytes + (8 << 20) >= payload,
            "{ip_bytes} ≪ {payload}: {data}"
        ),
        _ => panic!("{data}"),
    }
}

#[test]
fn interfaces_that_appear_and_go_away_are_followed() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.ndjson");
    let cfg = write(dir.path(), "c.toml", b"[flow]\nidle_timeout = 1\n");
    let ns = Netns::new();
    // No -i: every interface that is up and has an address, as they come and go.
    let mut c = Logged::spawn(
        ns.exec(&ns.server)
            .arg(env!("CARGO_BIN_EXE_vmflow"))
            .args(["capture", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&live),
    );
    c.wait_log("capturing on");
    // A second link between the namespaces, after the capture started.
    let (a, b) = (format!("{}a", ns.client_if), format!("{}b", ns.server_if));
    for cmd in [
        format!(
            "ip link add {a} netns {} type veth peer name {b} netns {}",
            ns.client, ns.server
        ),
        format!("ip -n {} addr add 10.78.0.1/24 dev {a}", ns.client),
        format!("ip -n {} addr add 10.78.0.2/24 dev {b}", ns.server),
        format!("ip -n {} link set {a} up", ns.client),
        format!("ip -n {} link set {b} up", ns.server),
    ] {
        sh(&cmd);
    }
    c.wait_log(&format!("{b}: interface appeared"));
    run_in(
        &ns,
        &ns.client,
        &["ping", "-c", "3", "-i", "0.2", "10.78.0.2"],
    );
    // The ping flow is exported (1 s idle) before the link goes away.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ping = loop {
        let found = records(&live)
            .into_iter()
            .find(|r| r["dst_addr"] == "10.78.0.2" && r["proto"] == 1);
        if let Some(r) = found {
            break r;
        }
        assert!(Instant::now() < deadline, "no ping record: {:?}", c.lines);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (ping["fwd_packets"].as_u64(), ping["rev_packets"].as_u64()),
        (Some(3), Some(3))
    );
    sh(&format!("ip -n {} link del {b}", ns.server));
    c.wait_log(&format!("{b}: interface went away"));
    // The first link is still captured.
    run_in(&ns, &ns.client, &["ping", "-c", "1", "10.77.0.2"]);
    stop(&mut c.child);
    let text = c.text();
    let seen = |iface: &str| -> u64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("iface.{iface}.packets=")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {iface} in {text}"))
    };
    assert!(seen(&b) >= 6, "{text}");
    assert!(seen(&ns.server_if) >= 2, "{text}");
    assert!(records(&live)
        .iter()
        .any(|r| r["dst_addr"] == "10.77.0.2" && r["proto"] == 1));
}
