//! The Prometheus endpoint, /healthz and the stats line of the real
//! binaries: an agent following a capture folder and a collector, both
//! scraped with curl while they run; the numbers must equal the agent's
//! own summary and what the collector wrote. Readiness degrades with a
//! reason when the collector goes away or the spool stops taking writes,
//! and recovers when they come back.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::agents::*;
use common::netns::{require_tools, sh, Netns};
use common::scrape::*;
use common::tmpfs::Tmpfs;
use common::*;

/// Scrapes until `ok` holds, within `limit`; returns that scrape.
fn scrape_until(
    addr: &str,
    limit: Duration,
    what: &str,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + limit;
    loop {
        let m = scrape(addr);
        if ok(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "never {what}; last scrape:\n{m:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls /healthz until its status is `want`; returns the body.
fn health_until(addr: &str, want: u16, limit: Duration) -> String {
    health_until_in(None, addr, want, limit)
}

fn health_until_in(ns: Option<&str>, addr: &str, want: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (code, _, body) = curl_in(ns, &format!("http://{addr}/healthz"));
        if code == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered {want}; last: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn folder_source(dir: &Path) -> String {
    format!("[source.folder]\npath = {dir:?}\npoll_interval = 0.05\ncheckpoint_interval = 0.3\n")
}

const OBSERVED: &str =
    "batch_age = 0.2\n[metrics]\nlisten = \"127.0.0.1:0\"\n[log]\nstats_interval = 0.2\n";

#[test]
fn scrapes_agree_with_the_summary_and_the_collector() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = d.path().join("out");
    let (mut col, col_addr) = collector_with(
        &certs,
        &out,
        "127.0.0.1:0",
        "",
        &["--metrics-listen", "127.0.0.1:0", "--stats-interval", "0.2"],
    );
    let col_metrics = metrics_addr(&col);
    let caps = d.path().join("captures");
    std::fs::create_dir_all(&caps).unwrap();
    let cap = synth_cap(d.path(), 30_000);
    let (_, replay_err, ok) = replay(std::slice::from_ref(&cap), &[]);
    assert!(ok);
    let packets = stat(&replay_err, "packets");
    std::fs::copy(&cap, caps.join("a.pcap")).unwrap();
    let cfg = agent_config_with(
        d.path(),
        "a",
        &folder_source(&caps),
        &certs,
        "agent-1",
        &col_addr,
        OBSERVED,
    );
    let mut agent = agent(&cfg);
    let addr = metrics_addr(&agent);

    // During the run: a well-formed scrape, whatever it holds yet.
    scrape_until(&addr, Duration::from_secs(20), "showed the engine", |m| {
        m.contains_key("vmflow_packets_total{stream=\"\"}")
    });
    assert_eq!(health_until(&addr, 200, Duration::from_secs(30)), "ok\n");

    // Once the file is read, its records spooled and all acknowledged.
    let m = scrape_until(
        &addr,
        Duration::from_secs(60),
        "delivered everything",
        |m| {
            let records = total(m, "vmflow_records_total");
            total(m, "vmflow_packets_total") == packets
                && records > 0
                && total(m, "vmflow_spool_batches") == 0
                && total(m, "vmflow_batches_acked_total") > 0
                && total(m, "vmflow_acked_seq") == total(m, "vmflow_last_seq")
                && total(
                    &scrape(&col_metrics),
                    "vmflow_collect_records_written_total",
                ) == records
                // The first checkpoint may follow the last acknowledgement.
                && m.contains_key("vmflow_checkpoint_age_seconds{stream=\"\"}")
        },
    );
    let c = scrape(&col_metrics);
    assert_eq!(total(&m, "vmflow_connected"), 1);
    assert_eq!(total(&m, "vmflow_ready"), 1);
    assert_eq!(total(&c, "vmflow_collect_agents_connected"), 1);
    assert!(
        total(&m, "vmflow_open_flows") > 0,
        "flows stay open in a followed folder"
    );
    assert!(m.contains_key("vmflow_checkpoint_age_seconds{stream=\"\"}"));
    assert!(total(&c, "vmflow_collect_commit_seconds_count") > 0);
    assert_eq!(
        total(&c, "vmflow_collect_commit_seconds_bucket{le=\"+Inf\"}"),
        total(&c, "vmflow_collect_commit_seconds_count")
    );
    // Every commit of the file store syncs; its fsyncs are part of it.
    assert_eq!(
        total(&c, "vmflow_collect_fsync_seconds_count"),
        total(&c, "vmflow_collect_commit_seconds_count")
    );
    let sum = |k: &str| c.get(k).copied().unwrap_or_else(|| panic!("no {k}"));
    let (fsync, commit) = (
        sum("vmflow_collect_fsync_seconds_sum"),
        sum("vmflow_collect_commit_seconds_sum"),
    );
    assert!(fsync > 0.0 && fsync <= commit, "{fsync} {commit}");

    // The stats lines, with the small interval.
    let line = agent.wait_line("stats: packets=", Duration::from_secs(20));
    assert!(
        line.contains("spool_batches=") && line.contains("acked_seq="),
        "{line}"
    );
    col.wait_line("stats: agents_connected=", Duration::from_secs(20));

    // The last scrape equals the summary the agent prints when stopped
    // (on_stop = checkpoint: no record is made at the stop).
    agent.sigterm();
    assert!(agent.wait(Duration::from_secs(60)), "agent stops");
    // (Only the summary lines: the stats lines have some of these keys.)
    let s: Vec<String> = agent
        .text()
        .lines()
        .filter(|l| l.starts_with("run: "))
        .map(str::to_string)
        .collect();
    let s = s.join("\n");
    assert_eq!(stat(&s, "packets"), total(&m, "vmflow_packets_total"));
    assert_eq!(
        stat(&s, "flow_packets"),
        total(&m, "vmflow_flow_packets_total")
    );
    assert_eq!(stat(&s, "ip_bytes"), total(&m, "vmflow_ip_bytes_total"));
    assert_eq!(stat(&s, "records"), total(&m, "vmflow_records_total"));
    assert_eq!(stat(&s, "flows"), total(&m, "vmflow_flows_total"));
    assert_eq!(
        stat(&s, "skipped"),
        total(&m, "vmflow_packets_skipped_total")
    );
    assert_eq!(
        stat(&s, "batches_acked"),
        total(&m, "vmflow_batches_acked_total")
    );
    assert_eq!(
        stat(&s, "batches_sent"),
        total(&m, "vmflow_batches_sent_total")
    );
    assert_eq!(
        stat(&s, "connections"),
        total(&m, "vmflow_connections_total")
    );
    // The collector wrote exactly those records and batches.
    let written: u64 = collected(&out, "agent-1").values().sum();
    assert_eq!(written, total(&m, "vmflow_records_total"));
    let c = scrape_until(
        &col_metrics,
        Duration::from_secs(20),
        "saw the agent go",
        |c| total(c, "vmflow_collect_agents_connected") == 0,
    );
    assert_eq!(total(&c, "vmflow_collect_records_written_total"), written);
    assert_eq!(
        total(&c, "vmflow_collect_batches_written_total"),
        total(&m, "vmflow_batches_acked_total")
    );
    col.kill();
}

#[test]
fn health_names_a_missing_collector_and_recovers() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = d.path().join("out");
    let listen = free_port();
    let (mut col, col_addr) = collector(&certs, &out, &listen);
    let caps = d.path().join("captures");
    std::fs::create_dir_all(&caps).unwrap();
    let cfg = agent_config_with(
        d.path(),
        "a",
        &folder_source(&caps),
        &certs,
        "agent-1",
        &col_addr,
        OBSERVED,
    );
    let agent = agent(&cfg);
    let addr = metrics_addr(&agent);
    scrape_until(&addr, Duration::from_secs(30), "connected", |m| {
        total(m, "vmflow_connected") == 1
    });
    assert_eq!(health_until(&addr, 200, Duration::from_secs(30)), "ok\n");

    col.kill();
    let body = health_until(&addr, 503, Duration::from_secs(30));
    assert!(body.contains("collector not connected"), "{body}");
    assert!(body.contains(&col_addr), "names the collector: {body}");
    let m = scrape(&addr);
    assert_eq!(total(&m, "vmflow_ready"), 0);
    assert_eq!(total(&m, "vmflow_connected"), 0);
    assert!(total(&m, "vmflow_connect_failures_total") > 0);

    let (_col, _) = collector(&certs, &out, &listen);
    assert_eq!(health_until(&addr, 200, Duration::from_secs(60)), "ok\n");
}

#[test]
fn health_names_a_spool_that_takes_no_writes() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = d.path().join("out");
    let (_col, col_addr) = collector(&certs, &out, "127.0.0.1:0");
    let caps = d.path().join("captures");
    std::fs::create_dir_all(&caps).unwrap();
    // The spool on its own small filesystem, made read-only under the
    // running agent (root ignores permission bits; a read-only mount
    // refuses everyone).
    let spool = Tmpfs::mount(&d.path().join("spool-a"), "16m");
    let cfg = agent_config_with(
        d.path(),
        "a",
        &folder_source(&caps),
        &certs,
        "agent-1",
        &col_addr,
        OBSERVED,
    );
    let agent = agent(&cfg);
    let addr = metrics_addr(&agent);
    assert_eq!(health_until(&addr, 200, Duration::from_secs(30)), "ok\n");
    sh(&format!("mount -o remount,ro {}", spool.dir.display()));
    let body = health_until(&addr, 503, Duration::from_secs(30));
    sh(&format!("mount -o remount,rw {}", spool.dir.display()));
    assert!(
        body.starts_with("spool: ") && body.contains("is not writable"),
        "{body}"
    );
    assert!(body.contains(&spool.dir.display().to_string()), "{body}");
    assert_eq!(health_until(&addr, 200, Duration::from_secs(30)), "ok\n");
}

#[test]
fn the_endpoint_answers_mistakes_without_falling_over() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let (col, _) = collector_with(
        &certs,
        &d.path().join("out"),
        "127.0.0.1:0",
        "",
        &["--metrics-listen", "127.0.0.1:0", "--stats-interval", "0"],
    );
    let addr = metrics_addr(&col);
    let (code, _, body) = curl(&format!("http://{addr}/nope"));
    assert_eq!(code, 404, "{body}");
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
    // Raw garbage on the socket, then a real scrape still works.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"\x16\x03\x01garbage\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let (code, _, body) = curl(&format!("http://{addr}/healthz"));
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let m = scrape(&addr);
    assert_eq!(total(&m, "vmflow_collect_agents_connected"), 0);
    // --stats-interval 0: no stats line.
    assert!(!col.text().contains("stats: "), "{}", col.text());
}

#[test]
fn capture_shows_packets_per_interface_while_it_runs() {
    require_tools();
    let d = tempfile::tempdir().unwrap();
    let ns = Netns::new();
    let out = d.path().join("records.ndjson");
    let mut cap = Proc::spawn(
        ns.exec(&ns.server)
            .arg(env!("CARGO_BIN_EXE_vmflow"))
            .args(["capture", "-i", &ns.server_if])
            .args(["--metrics-listen", "127.0.0.1:0", "--stats-interval", "0.2"])
            .arg("--out")
            .arg(&out),
    );
    let addr = metrics_addr(&cap);
    // Ready once the ring is open.
    let ok = health_until_in(Some(&ns.server), &addr, 200, Duration::from_secs(20));
    assert_eq!(ok, "ok\n");
    sh(&format!(
        "ip netns exec {} ping -c 5 -i 0.2 -q 10.77.0.2",
        ns.client
    ));
    // Ten echo packets (and whatever else crossed the veth) reach the
    // metrics within a few 200 ms ticks; the ping is one open flow.
    let iface = format!("vmflow_iface_packets_total{{iface=\"{}\"}}", ns.server_if);
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = scrape_in(Some(&ns.server), &addr);
        if total(&m, &iface) >= 10 && total(&m, "vmflow_packets_total") >= 10 {
            break m;
        }
        assert!(Instant::now() < deadline, "{m:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(total(&m, "vmflow_open_flows") >= 1, "{m:#?}");
    assert_eq!(total(&m, "vmflow_kernel_drops_total"), 0);
    // (The first lines may come before the first tick has published.)
    let line = cap.wait_line("kernel_drops=0", Duration::from_secs(20));
    assert!(
        line.contains("stats: packets=") && line.contains("open_flows="),
        "{line}"
    );
    cap.sigterm();
    assert!(cap.wait(Duration::from_secs(30)), "{}", cap.text());
    let text = cap.text();
    // Counters only grow: the summary holds at least what was scraped.
    let on_iface = stat(&text, &format!("iface.{}.packets", ns.server_if));
    assert!(on_iface >= total(&m, &iface), "{text}");
    assert_eq!(
        stat(&text, &format!("iface.{}.kernel_drops", ns.server_if)),
        0
    );
    let packets = text
        .lines()
        .find_map(|l| l.strip_prefix("capture: packets="))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap();
    assert!(packets >= total(&m, "vmflow_packets_total"), "{text}");
    let icmp = std::fs::read_to_string(&out).unwrap();
    assert!(icmp.lines().any(|l| l.contains("\"proto\":1,")), "{icmp}");
}
