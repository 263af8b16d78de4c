//! The capture-folder source with the real binaries: a capture written in
//! pieces while the agent follows it, rotated into several files, the agent
//! killed hard mid-file and restarted; what reaches the collector equals
//! `vmflow replay` of the whole capture. Overlapping captures and gaps are
//! checked through the library.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::agents::*;
use common::capture_files::*;
use common::*;
use vmflow::config::{Config, FolderConfig, OnStop};
use vmflow::export::VecSink;
use vmflow::follow::folder::{FolderPosition, FolderSource};
use vmflow::follow::runner::{self, RunnerOptions};
use vmflow_proto::FlowRecord;

#[test]
fn a_followed_rotated_folder_survives_a_hard_kill_mid_file() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(dir, 240_000);
    // Short timeouts: the synthetic capture is dense (80k packets in under a
    // second), and flows must end while the files are being written.
    let flow = "[flow]\nidle_timeout = 0.02\nhalf_open_timeout = 0.02\ntcp_linger = 0.001\n";
    let flow_cfg = write(dir, "flow.toml", flow.as_bytes());
    let out = run(vmflow()
        .arg("replay")
        .arg("--config")
        .arg(&flow_cfg)
        .arg(&cap));
    assert!(out.status.success());
    let want = multiset(&String::from_utf8(out.stdout).unwrap());
    let (header, recs) = split_records(&std::fs::read(&cap).unwrap());
    let third = recs.len() / 3;
    let files: Vec<Vec<u8>> = vec![
        file_of(&header, &recs[..third]),
        file_of(&header, &recs[third..2 * third]),
        file_of(&header, &recs[2 * third..]),
    ];
    let caps = dir.join("captures");
    std::fs::create_dir_all(&caps).unwrap();
    let names: Vec<PathBuf> = (1..=3)
        .map(|i| caps.join(format!("packetcapture_00_00_0{i}_000.cap")))
        .collect();
    // Not a capture: ignored by name.
    write(&caps, "notes.txt", b"not a capture");

    let out = dir.join("out");
    let (_collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    let source = format!(
        "{flow}[source.folder]\npath = {caps:?}\npoll_interval = 0.01\ncheckpoint_interval = 1.0\n\
         on_stop = \"finish\"\nshutdown_grace = 60\n"
    );
    let cfg = agent_config_with(
        dir,
        "a",
        &source,
        &certs,
        "agent-1",
        &addr,
        "batch_records = 64\n",
    );

    // File 1 whole, in pieces, while the agent follows it.
    let mut a = agent(&cfg);
    write_in_pieces(&names[0], &files[0], 1, 40_000, Duration::ZERO);
    // File 2 slowly; kill the agent while it is inside it.
    let (f2, n2) = (files[1].clone(), names[1].clone());
    let writer =
        std::thread::spawn(move || write_in_pieces(&n2, &f2, 2, 4_096, Duration::from_millis(1)));
    a.wait_line(
        "packetcapture_00_00_02_000.cap: reading",
        Duration::from_secs(60),
    );
    // Two checkpoints taken inside file 2, and records shipped from it.
    let ckpt = dir.join("spool-a").join("folder.checkpoint");
    let modified = || std::fs::metadata(&ckpt).and_then(|m| m.modified()).ok();
    for _ in 0..2 {
        let before = modified();
        while modified() == before {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let seq = collector_seq(&out, "agent-1");
    wait_seq(&out, "agent-1", seq + 5);
    a.kill_past_checkpoint(&dir.join("spool-a"), &ckpt);
    let killed_during_file_2 = !writer.is_finished();
    let mut b = agent(&cfg);
    writer.join().unwrap();
    assert!(killed_during_file_2, "the writer was still writing file 2");
    // Rotation: file 3 appears once file 2 is complete.
    write_in_pieces(&names[2], &files[2], 3, 40_000, Duration::ZERO);
    b.wait_line(
        "packetcapture_00_00_03_000.cap: reading",
        Duration::from_secs(60),
    );
    b.sigterm();
    assert!(b.wait(Duration::from_secs(120)), "{}", b.text());
    let text = b.text();
    assert!(
        text.contains("packetcapture_00_00_02_000.cap: resuming after packet"),
        "{text}"
    );
    // Records spooled after the last checkpoint were skipped, not repeated.
    assert!(stat(&text, "resumed_after") > 0, "{text}");
    assert_eq!(stat(&text, "coverage.gaps"), 0, "{text}");
    assert_eq!(stat(&text, "coverage.duplicates"), 0, "{text}");
    // One covered span of packet time: the three files leave no hole.
    assert_eq!(text.matches("run: covered start_ns=").count(), 1, "{text}");
    let got = as_replayed(collected(&out, "agent-1"));
    assert_eq!(got.values().sum::<u64>(), want.values().sum::<u64>());
    assert!(got == want, "collector records differ from the replay");
}

/// Follows `dir` in-process until everything in it is read, then ends the
/// flows; returns the records, the source and what the run published for
/// the metrics endpoint.
fn tail_once(
    dir: &Path,
    ckpt: &Path,
    tweak: impl Fn(&mut FolderConfig),
) -> (
    Vec<FlowRecord>,
    FolderSource,
    vmflow::pipeline::live::EngineNow,
) {
    let mut f = FolderConfig {
        path: dir.to_path_buf(),
        on_stop: OnStop::Finish,
        ..FolderConfig::default()
    };
    tweak(&mut f);
    let cfg = Config::default();
    let mut src = FolderSource::new(f.clone(), FolderPosition::new(&f));
    let mut sink = VecSink::default();
    let opts = RunnerOptions {
        fs: vmflow::disk::real(),
        key: "folder:test".into(),
        checkpoint: ckpt.to_path_buf(),
        poll: Duration::from_millis(1),
        interval: Duration::from_secs(3600),
        on_stop: OnStop::Finish,
        live: Some(vmflow::pipeline::live::EngineLive::new()),
        observer: None,
    };
    let stop = AtomicBool::new(true);
    let t = runner::run(&cfg, &mut src, None, &mut sink, &opts, &stop);
    assert!(t.report.error.is_none(), "{:?}", t.report.error);
    assert!(!stop.load(Ordering::Relaxed) || t.checkpoints >= 1);
    let live = opts.live.as_ref().unwrap().now();
    (sink.0, src, live)
}

fn replay_lib(paths: Vec<PathBuf>) -> Vec<FlowRecord> {
    let mut sink = VecSink::default();
    let r = vmflow::capture::replay(paths, &Config::default(), &mut sink);
    assert!(r.error.is_none());
    sink.0
}

fn canon(mut v: Vec<FlowRecord>) -> Vec<FlowRecord> {
    for r in &mut v {
        if r.end_reason == vmflow_proto::EndReason::Shutdown {
            r.end_reason = vmflow_proto::EndReason::EndOfInput;
        }
    }
    v.sort();
    v
}

#[test]
fn overlapping_captures_count_every_packet_once() {
    let d = tempfile::tempdir().unwrap();
    let cap = synth_cap(d.path(), 60_000);
    let want = canon(replay_lib(vec![cap.clone()]));
    let (header, recs) = split_records(&std::fs::read(&cap).unwrap());
    // A renewed capture: the second starts at 40 % while the first runs to 70 %.
    let n = recs.len();
    let caps = d.path().join("captures");
    std::fs::create_dir_all(&caps).unwrap();
    write(&caps, "pc1.cap", &file_of(&header, &recs[..n * 7 / 10]));
    write(&caps, "pc2.cap", &file_of(&header, &recs[n * 4 / 10..]));
    let (got, src, live) = tail_once(&caps, &d.path().join("ck"), |_| {});
    let overlap = (n * 7 / 10 - n * 4 / 10) as u64;
    assert_eq!(src.pos.sequence.stats.duplicates, overlap);
    assert_eq!(src.pos.sequence.stats.gaps, 0);
    assert_eq!(live.gaps, 0);
    assert!(got.iter().all(|r| !r.gap));
    assert!(canon(got) == want);
}

#[test]
fn time_no_file_covers_is_a_gap_and_marks_the_flows_open_across_it() {
    let d = tempfile::tempdir().unwrap();
    let caps = d.path().join("captures");
    std::fs::create_dir_all(&caps).unwrap();
    // One TCP conversation and one UDP exchange cut by 30 s that no file
    // covers; a new handshake after the gap is not marked.
    let t = T0;
    let udp_at = |ts: u64, id: u16| Pkt {
        ts_ns: ts,
        ip: ipv4(A, B, 17, &udp(5000, 53, 20), 28, &[], id, 0),
        ip_len: 48,
    };
    let tcp_from = |ts: u64, fwd: bool, flags: u8| {
        let (s, d, sp, dp) = if fwd {
            (A, B, 40_001, 443)
        } else {
            (B, A, 443, 40_001)
        };
        Pkt {
            ts_ns: ts,
            ip: ipv4(s, d, 6, &tcp(sp, dp, flags), 20, &[], 1, 0x4000),
            ip_len: 40,
        }
    };
    let mut before = tcp_conversation(t)[..4].to_vec();
    before.push(udp_at(t + 5 * MS, 1));
    let mut after = tcp_conversation(t)[4..].to_vec();
    for p in &mut after {
        p.ts_ns += 30 * S;
    }
    after.push(udp_at(t + 30 * S + 9 * MS, 2));
    let t2 = t + 31 * S;
    after.extend([
        tcp_from(t2, true, SYN),
        tcp_from(t2 + MS, false, SYN | ACK),
        tcp_from(t2 + 2 * MS, true, ACK),
        tcp_from(t2 + 3 * MS, true, FIN | ACK),
        tcp_from(t2 + 4 * MS, false, FIN | ACK),
        tcp_from(t2 + 5 * MS, true, ACK),
    ]);
    write(
        &caps,
        "a.cap",
        &pcap(&frames(&before, Link::Ethernet), false, true),
    );
    write(
        &caps,
        "b.cap",
        &pcap(&frames(&after, Link::Ethernet), false, true),
    );
    let (got, src, live) = tail_once(&caps, &d.path().join("ck"), |f| {
        f.max_silence = vmflow::config::Seconds(10.0)
    });
    assert_eq!(src.pos.sequence.stats.gaps, 1);
    // What vmflow_coverage_gaps says for a followed folder.
    assert_eq!(live.gaps, 1);
    let g = &src.pos.sequence.gaps[0];
    assert_eq!((g.start_ns, g.end_ns), (t + 5 * MS, t + 30 * S + 4 * MS));
    let marked: Vec<_> = got.iter().filter(|r| r.gap).collect();
    let unmarked: Vec<_> = got.iter().filter(|r| !r.gap).collect();
    assert_eq!(marked.len(), 2, "{got:#?}");
    assert!(marked.iter().any(|r| r.proto == 17));
    assert!(marked.iter().any(|r| r.proto == 6 && r.src_port != 40_001));
    assert_eq!(unmarked.len(), 1, "{got:#?}");
    assert_eq!(unmarked[0].src_port, 40_001);
}

#[test]
fn several_folders_at_once_each_arrive_as_their_own_stream() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = dir.join("out");
    let (_collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    // Two VMs' capture folders, different traffic.
    let mut source = String::new();
    let mut want = Vec::new();
    for (name, seed) in [("north", 3u64), ("south", 4)] {
        let caps = dir.join(name);
        std::fs::create_dir_all(&caps).unwrap();
        let cap = caps.join("packetcapture_00_00_01_000.cap");
        let st = run(vmflow()
            .args([
                "synth",
                "--packets",
                "30000",
                "--concurrent",
                "500",
                "--seed",
            ])
            .arg(seed.to_string())
            .arg("--out")
            .arg(&cap));
        assert!(st.status.success());
        want.push((name, replayed(&cap)));
        source.push_str(&format!(
            "[[source.folder]]\nname = {name:?}\npath = {caps:?}\npoll_interval = 0.01\non_stop = \"finish\"\nshutdown_grace = 60\n"
        ));
    }
    let cfg = agent_config_with(dir, "a", &source, &certs, "agent-1", &addr, "");
    let mut a = agent(&cfg);
    for name in ["north", "south"] {
        a.wait_line(
            &format!("{name}/packetcapture_00_00_01_000.cap: reading"),
            Duration::from_secs(60),
        );
    }
    a.sigterm();
    assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
    let text = a.text();
    for (name, want) in want {
        assert!(
            text.contains(&format!("run[{name}]: packets=30000")),
            "{text}"
        );
        let got = as_replayed(collected(&out.join("agent-1").join("streams"), name));
        assert!(got == want, "stream {name}");
        // Each stream has its own spool and checkpoint.
        assert!(dir
            .join("spool-a")
            .join(name)
            .join("folder.checkpoint")
            .exists());
    }
}

/// Follows `dir` in-process for `looks` rounds (each until nothing is new),
/// calling `between` with the round and the packets read so far; returns the
/// records (flows ended at the end) and the source.
fn step_until(
    dir: &Path,
    mut between: impl FnMut(usize, u64),
    looks: usize,
) -> (Vec<FlowRecord>, FolderSource) {
    use vmflow::follow::{FollowedSource, Step};
    let f = FolderConfig {
        path: dir.to_path_buf(),
        ..FolderConfig::default()
    };
    let mut src = FolderSource::new(f.clone(), FolderPosition::new(&f));
    let mut sink = VecSink::default();
    let opts = vmflow::pipeline::InlineOptions::default();
    let report = vmflow::pipeline::run_inline(&Config::default(), &mut sink, opts, |feed| {
        for i in 0..looks {
            while src.step(feed)? == Step::Progress {}
            between(i, src.sequence().stats.packets);
        }
        Ok::<_, vmflow::follow::FollowError>(())
    });
    assert!(report.error.is_none(), "{:?}", report.error);
    (sink.0, src)
}

#[test]
fn a_netmon_file_is_read_once_its_frame_table_is_written() {
    let d = tempfile::tempdir().unwrap();
    let caps = d.path().join("captures");
    std::fs::create_dir_all(&caps).unwrap();
    let first = frames(&tcp_conversation(T0), Link::Ethernet);
    let second = frames(&mixed(T0 + S), Link::Ethernet);
    // NetMon writers append the frame table (and point the header at it)
    // last: until then the file is not read, nor anything after it.
    write(&caps, "a.cap", &netmon(&first, 2, false));
    write(&caps, "b.cap", &pcap(&second, false, true));
    let whole = netmon(&first, 2, true);
    let mut while_unfinished = None;
    let (got, src) = step_until(
        &caps,
        |i, packets| {
            if i == 0 {
                while_unfinished = Some(packets);
                std::fs::write(caps.join("a.cap"), &whole).unwrap();
            }
        },
        2,
    );
    assert_eq!(while_unfinished, Some(0));
    assert_eq!(src.pos.sequence.stats.files, 1, "b.cap is still being read");
    assert_eq!(
        src.pos.sequence.stats.packets as usize,
        first.len() + second.len()
    );
    let mut want = replay_lib(vec![
        write(d.path(), "a.cap", &whole),
        write(d.path(), "b.cap", &pcap(&second, false, true)),
    ]);
    let mut got = got;
    got.sort();
    want.sort();
    assert!(got == want);
}

/// A folder that is not there yet is an error said once (not once per poll),
/// then followed like any other once it appears; the recovery is logged.
#[test]
fn a_missing_folder_is_said_once_and_its_recovery_logged() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = dir.join("out");
    let (_collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    let caps = dir.join("later");
    let source = format!(
        "[[source.folder]]\nname = \"later\"\npath = {caps:?}\npoll_interval = 0.01\non_stop = \"finish\"\nshutdown_grace = 60\n"
    );
    let cfg = agent_config_with(dir, "a", &source, &certs, "agent-1", &addr, "");
    let mut a = agent(&cfg);
    a.wait_line("retrying (further failures", Duration::from_secs(60));
    // Wait for a few more polls to fail (each 10 ms) before the folder
    // appears: the failures are counted, not logged.
    let staged = dir.join("staged");
    std::fs::create_dir_all(&staged).unwrap();
    let cap = staged.join("packetcapture_00_00_01_000.cap");
    let st = run(vmflow()
        .args([
            "synth",
            "--packets",
            "20000",
            "--concurrent",
            "300",
            "--seed",
            "9",
        ])
        .arg("--out")
        .arg(&cap));
    assert!(st.status.success());
    let want = replayed(&cap);
    std::fs::rename(&staged, &caps).unwrap();
    let line = a.wait_line("recovered after", Duration::from_secs(60));
    let n: u64 = line
        .split("recovered after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    assert!(n >= 1, "{line}");
    a.wait_line(
        "later/packetcapture_00_00_01_000.cap: reading",
        Duration::from_secs(60),
    );
    a.sigterm();
    assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
    let text = a.text();
    assert_eq!(
        text.matches("retrying (further failures").count(),
        1,
        "the missing folder is said once: {text}"
    );
    let got = as_replayed(collected(&out, "agent-1"));
    assert!(
        got == want,
        "records of the folder that appeared late: {} of {}; {text}",
        got.len(),
        want.len()
    );
}
