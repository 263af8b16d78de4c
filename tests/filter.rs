//! Capture filters (`--filter`, `filter =`) against tcpdump's own: for each
//! expression, `tcpdump -r IN -w OUT EXPR` then `vmflow replay OUT` gives
//! byte for byte what `vmflow replay --filter EXPR IN` gives, on a synthetic
//! capture with VLAN tags and IPv6 and on captures of other link types; a
//! kernel filter on a live veth lets only matching packets in; a bad
//! expression is a clear error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::agents::*;
use common::netns::*;
use common::*;

const EXPRESSIONS: &[&str] = &[
    "tcp port 443",
    "udp",
    "net 10.0.0.0/8",
    "ip6",
    "vlan and tcp",
    "tcp[tcpflags] & tcp-syn != 0",
    "not port 53",
];

/// `vmflow replay` of `files`: (stdout, stderr, success).
fn replay_bytes(files: &[PathBuf], extra: &[&str]) -> (Vec<u8>, String, bool) {
    let out = run(vmflow().arg("replay").args(extra).args(files));
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// tcpdump's filtering of `input` into `out` (nanosecond timestamps kept);
/// its stderr if it refuses the expression.
fn tcpdump_filter(input: &Path, out: &Path, expr: &str) -> Result<(), String> {
    let o = Command::new("tcpdump")
        .args(["--time-stamp-precision=nano", "-r"])
        .arg(input)
        .arg("-w")
        .arg(out)
        .arg(expr)
        .output()
        .expect("tcpdump runs");
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn packets_in(input: &Path) -> u64 {
    let (_, err, ok) = replay_bytes(&[input.to_path_buf()], &[]);
    assert!(ok, "{err}");
    summary(&err, "packets").unwrap()
}

/// The same records with vmflow's filter as with tcpdump's, and the packets
/// tcpdump dropped counted as `filtered`. Returns (kept, total) packets, or
/// None when tcpdump refused the expression (then vmflow must refuse too).
fn compare(dir: &Path, input: &Path, expr: &str) -> Option<(u64, u64)> {
    let total = packets_in(input);
    let out = dir.join(format!(
        "{}-{}.pcap",
        input.file_stem().unwrap().to_string_lossy(),
        expr.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let (ours, err, ok) = replay_bytes(&[input.to_path_buf()], &["--filter", expr]);
    if let Err(why) = tcpdump_filter(input, &out, expr) {
        assert!(
            !ok,
            "{expr}: tcpdump refused ({why}) but vmflow replayed: {err}"
        );
        assert!(
            err.contains(&format!("filter {expr:?}")),
            "{expr}: the error names the expression: {err}"
        );
        return None;
    }
    assert!(ok, "{expr}: {err}");
    let (theirs, terr, tok) = replay_bytes(&[out], &[]);
    assert!(tok, "{terr}");
    assert!(
        ours == theirs,
        "{expr} on {}: vmflow's filter and tcpdump's give different records",
        input.display()
    );
    let kept = summary(&terr, "packets").unwrap();
    assert_eq!(summary(&err, "packets"), Some(kept), "{expr}: {err}");
    assert_eq!(
        summary(&err, "filtered"),
        Some(total - kept),
        "{expr}: {err}"
    );
    Some((kept, total))
}

fn synth_capture(dir: &Path) -> PathBuf {
    let cap = dir.join("synth.pcap");
    let out = run(vmflow()
        .args([
            "synth",
            "--packets",
            "40000",
            "--concurrent",
            "400",
            "--seed",
            "15",
            "--out",
        ])
        .arg(&cap));
    assert!(out.status.success(), "{out:?}");
    cap
}

#[test]
fn replay_filters_exactly_like_tcpdump() {
    let dir = tempfile::tempdir().unwrap();
    let cap = synth_capture(dir.path());
    for expr in EXPRESSIONS {
        let (kept, total) = compare(dir.path(), &cap, expr)
            .unwrap_or_else(|| panic!("tcpdump refused {expr} on Ethernet"));
        // Each expression keeps some of the synthetic capture and leaves
        // some out: a filter that did nothing could not fail the test.
        assert!(0 < kept && kept < total, "{expr}: kept {kept} of {total}");
    }
}

#[test]
fn each_link_type_is_filtered_like_tcpdump() {
    let dir = tempfile::tempdir().unwrap();
    let mut pkts = tcp_conversation(S);
    pkts.extend(mixed(2 * S));
    let links = [
        ("ether", Link::Ethernet),
        ("vlan", Link::Vlan(&[(0x8100, 7)])),
        ("qinq", Link::Vlan(&[(0x88a8, 100), (0x8100, 7)])),
        ("sll", Link::Sll),
        ("sll2", Link::Sll2),
        ("raw", Link::Raw),
        ("null", Link::NullLe),
    ];
    let mut refused = 0;
    for (name, link) in links {
        let cap = write(
            dir.path(),
            &format!("{name}.pcap"),
            &pcap(&frames(&pkts, link), false, true),
        );
        for expr in EXPRESSIONS.iter().chain(&["icmp", "ip and not tcp"]) {
            refused += usize::from(compare(dir.path(), &cap, expr).is_none());
        }
    }
    // `vlan` means nothing on cooked, raw or null frames: libpcap refuses
    // it there, for tcpdump and for us alike.
    assert!(refused > 0);
}

#[test]
fn several_files_are_filtered_before_they_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth_capture(dir.path());
    let raw = write(
        dir.path(),
        "raw.pcap",
        &pcap(&frames(&mixed(S), Link::Raw), false, true),
    );
    let expr = "udp or icmp";
    let outs: Vec<PathBuf> = [&synth, &raw]
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let o = dir.path().join(format!("out{i}.pcap"));
            tcpdump_filter(f, &o, expr).unwrap();
            o
        })
        .collect();
    let (ours, err, ok) = replay_bytes(&[synth.clone(), raw.clone()], &["--filter", expr]);
    assert!(ok, "{err}");
    let (theirs, terr, tok) = replay_bytes(&outs, &[]);
    assert!(tok, "{terr}");
    assert!(ours == theirs, "{err}\n{terr}");
    assert!(summary(&err, "filtered").unwrap() > 0, "{err}");
}

#[test]
fn a_bad_expression_is_a_clear_error_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cap = write(
        dir.path(),
        "c.pcap",
        &pcap(&frames(&tcp_conversation(S), Link::Ethernet), false, true),
    );
    let out = run(vmflow().args(["replay", "--filter", "tcp port"]).arg(&cap));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("filter \"tcp port\""), "{err}");
    assert!(err.contains("syntax error"), "libpcap's reason: {err}");
    assert!(out.stdout.is_empty() && !err.contains("packets="), "{err}");
    // A keyword the file's link type has no meaning for names the file.
    let raw = write(
        dir.path(),
        "raw.pcap",
        &pcap(&frames(&tcp_conversation(S), Link::Raw), false, true),
    );
    let out = run(vmflow().args(["replay", "--filter", "vlan"]).arg(&raw));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("raw.pcap") && err.contains("link type 101"),
        "{err}"
    );
    // Live capture compiles before it opens a socket.
    let out = run(vmflow().args(["capture", "-i", "lo", "--filter", "port 99999"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("filter \"port 99999\"") && err.contains("port"),
        "{err}"
    );
}

#[test]
fn a_kernel_filter_lets_only_matching_packets_in() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.ndjson");
    // `filter =` of [capture.live]; a short idle timeout so the matching
    // flow's record comes out while the capture runs.
    let cfg = write(
        dir.path(),
        "c.toml",
        b"[flow]\nidle_timeout = 1\n[capture.live]\nfilter = \"udp port 5301\"\n",
    );
    let ns = Netns::new();
    let mut c = Logged::spawn(
        ns.exec(&ns.server)
            .arg(env!("CARGO_BIN_EXE_vmflow"))
            .args(["capture", "-i", &ns.server_if, "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&live),
    );
    let started = c.wait_log("capturing on");
    assert!(started.contains("kernel filter"), "{started}");
    let send = |sport: u16, dport: u16, n: usize| {
        format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('10.77.0.1',{sport}))\n\
             for _ in range({n}): s.sendto(b'x'*100,('10.77.0.2',{dport}))\n"
        )
    };
    // Left out: another port, pings (and the port unreachables both
    // datagrams draw, and IPv6 housekeeping).
    run_in(&ns, &ns.client, &["python3", "-c", &send(40002, 5302, 3)]);
    run_in(
        &ns,
        &ns.client,
        &["ping", "-c", "2", "-i", "0.2", "10.77.0.2"],
    );
    // Let in, last: once its record is out, everything sent before it has
    // passed the ring.
    run_in(&ns, &ns.client, &["python3", "-c", &send(40001, 5301, 3)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&live)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    while !read().iter().any(|r| r["dst_port"] == 5301) {
        assert!(
            Instant::now() < deadline,
            "the udp 5301 flow never came out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sh(&format!("kill -TERM {}", c.child.0.id()));
    assert!(c.child.0.wait().unwrap().success());
    let text = c.text();
    let recs = read();
    assert_eq!(recs.len(), 1, "only the matching flow: {recs:?}");
    assert_eq!(
        (
            &recs[0]["proto"],
            &recs[0]["dst_port"],
            &recs[0]["fwd_packets"],
            &recs[0]["rev_packets"]
        ),
        (&17.into(), &5301.into(), &3.into(), &0.into()),
        "{recs:?}"
    );
    // The kernel handed over only the matching packets.
    assert_eq!(
        summary(&text, &format!("iface.{}.packets", ns.server_if)),
        Some(3),
        "{text}"
    );
}

#[test]
fn check_compiles_every_configured_filter() {
    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    std::fs::create_dir(&caps).unwrap();
    let text = format!(
        "[[source.folder]]\nname = \"a\"\npath = {caps:?}\nfilter = \"tcp port 443\"\n\
         [[source.folder]]\nname = \"b\"\npath = {caps:?}\nfilter = \"tcp port\"\n"
    );
    let cfg = write(dir.path(), "c.toml", text.as_bytes());
    let out = run(vmflow().args(["check", "--config"]).arg(&cfg));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("only packets matching \"tcp port 443\""),
        "{all}"
    );
    assert!(
        all.contains("source.folder.filter: filter \"tcp port\"") && all.contains("syntax error"),
        "{all}"
    );
}

/// A followed folder with `filter =` gives the records of tcpdump's
/// filtering of the same file, and counts what it left out.
#[test]
fn a_followed_folder_filters_like_tcpdump() {
    use std::sync::atomic::AtomicBool;
    use vmflow::capture::filter::PacketFilter;
    use vmflow::config::{Config, FolderConfig, OnStop};
    use vmflow::export::VecSink;
    use vmflow::follow::folder::{FolderPosition, FolderSource};
    use vmflow::follow::runner::{self, RunnerOptions};
    use vmflow_proto::{EndReason, FlowRecord};

    let dir = tempfile::tempdir().unwrap();
    let caps = dir.path().join("caps");
    std::fs::create_dir(&caps).unwrap();
    let synth = synth_capture(dir.path());
    std::fs::copy(&synth, caps.join("a.pcap")).unwrap();
    let expr = "tcp port 443 or icmp";
    let theirs = dir.path().join("theirs.pcap");
    tcpdump_filter(&synth, &theirs, expr).unwrap();

    let f = FolderConfig {
        path: caps.clone(),
        on_stop: OnStop::Finish,
        filter: Some(expr.into()),
        ..FolderConfig::default()
    };
    let cfg = Config::default();
    let mut src = FolderSource::new(f.clone(), FolderPosition::new(&f));
    src.filter = PacketFilter::new(f.filter.as_deref()).unwrap();
    let mut sink = VecSink::default();
    let opts = RunnerOptions {
        fs: vmflow::disk::real(),
        key: "folder:test".into(),
        checkpoint: dir.path().join("ckpt"),
        poll: Duration::from_millis(1),
        interval: Duration::from_secs(3600),
        on_stop: OnStop::Finish,
        live: None,
        observer: None,
    };
    // Stopped from the start: on_stop = finish reads what is there, then ends.
    let t = runner::run(
        &cfg,
        &mut src,
        None,
        &mut sink,
        &opts,
        &AtomicBool::new(true),
    );
    assert!(t.report.error.is_none(), "{:?}", t.report.error);

    let canon = |mut v: Vec<FlowRecord>| {
        for r in &mut v {
            if r.end_reason == EndReason::Shutdown {
                r.end_reason = EndReason::EndOfInput;
            }
        }
        v.sort();
        v
    };
    let mut want = VecSink::default();
    let r = vmflow::capture::replay(vec![theirs.clone()], &cfg, &mut want);
    assert!(r.error.is_none());
    assert!(!want.0.is_empty());
    assert!(
        canon(sink.0) == canon(want.0),
        "folder vs tcpdump's filtering"
    );
    let kept = r.summary.packets;
    let filtered = src.filter.as_ref().unwrap().filtered;
    assert_eq!(kept + filtered, packets_in(&synth));
    assert_eq!(t.report.summary.packets, kept);
    // Coverage still counts every packet read.
    assert_eq!(src.pos.sequence.stats.packets, kept + filtered);
}

/// `[source] files` with `filter =` in `vmflow run`: the collector gets the
/// records of tcpdump's filtering of the same file, and the summary counts
/// what the filter left out.
#[test]
fn run_filters_its_files_like_tcpdump() {
    let dir = tempfile::tempdir().unwrap();
    let synth = synth_capture(dir.path());
    let expr = "tcp port 443 or icmp";
    let theirs = dir.path().join("theirs.pcap");
    tcpdump_filter(&synth, &theirs, expr).unwrap();
    let (want, _, ok) = replay(std::slice::from_ref(&theirs), &[]);
    assert!(ok && !want.is_empty());
    let certs = dir.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = dir.path().join("out");
    let (_collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    let source = format!("[source]\nfiles = [{synth:?}]\nfilter = {expr:?}\n");
    let cfg = agent_config_with(dir.path(), "a", &source, &certs, "agent-1", &addr, "");
    let o = run(vmflow().arg("run").arg("--config").arg(&cfg));
    let text = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{text}");
    let want: std::collections::BTreeMap<String, u64> = multiset(
        &want
            .iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    );
    let got = as_replayed(collected(&out, "agent-1"));
    assert!(got == want, "run's records vs tcpdump's filtering");
    let kept = packets_in(&theirs);
    assert_eq!(stat(&text, "packets"), kept, "{text}");
    assert_eq!(stat(&text, "filtered") + kept, packets_in(&synth), "{text}");

    // Another expression on the same spool is another stream: nothing of
    // the first run is skipped for it.
    let source = format!("[source]\nfiles = [{synth:?}]\nfilter = \"udp\"\n");
    let cfg = agent_config_with(dir.path(), "a", &source, &certs, "agent-1", &addr, "");
    let o = run(vmflow().arg("run").arg("--config").arg(&cfg));
    let text = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{text}");
    assert_eq!(stat(&text, "resumed_after"), 0, "{text}");
    assert!(stat(&text, "records") > 0, "{text}");
}
