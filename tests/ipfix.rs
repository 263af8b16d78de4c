//! IPFIX out, read by a real collector: `vmflow replay --format ipfix`
//! messages sent over UDP to nfdump's nfcapd on loopback, and `vmflow run`
//! exporting to it through `[[export.ipfix]]`, read back with `nfdump -o
//! raw`, equal the replay's NDJSON records field by field (addresses,
//! ports, protocol, packets and bytes both ways, millisecond times, forward
//! TCP flags, initiator, end reason, VLAN) in both modes. A collector that
//! starts late decodes everything after the next template refresh; over TCP
//! (plain, and TLS with a client certificate) the stream decodes with the
//! independent decoder.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::agents::*;
use common::capture_files::*;
use common::nfcapd::*;
use common::*;
use serde_json::Value;

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

    assert_same(&records, &flows, mode == "biflow", mode);
}

/// nfdump's flows are the records, in IPFIX's terms, nothing more or less.
fn assert_same(records: &[Value], flows: &[HashMap<String, String>], biflow: bool, what: &str) {
    let mut want: Vec<Vec<String>> = Vec::new();
    for r in records {
        want.push(expected(r, false, biflow));
        if !biflow && u(r, "rev_packets") > 0 {
            want.push(expected(r, true, biflow));
        }
    }
    let mut have: Vec<Vec<String>> = flows.iter().map(|f| got(f, biflow)).collect();
    want.sort();
    have.sort();
    assert_eq!(have.len(), want.len(), "flows nfdump read ({what})");
    for (h, w) in have.iter().zip(&want) {
        assert_eq!(h, w, "{what}");
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

/// `vmflow run` with capture files and only `[[export.ipfix]]` (no mTLS
/// export, no spool): nfcapd holds every record the replay gives.
fn run_to_nfcapd(mode: &str, max_message: usize) {
    let d = tempfile::tempdir().unwrap();
    let cap = synth_cap_seeded(d.path(), "in.pcap", 12_000, 5);
    let (records, _, ok) = replay(std::slice::from_ref(&cap), &[]);
    assert!(ok && records.len() > 300);
    let nf = Nfcapd::start(d.path());
    let cfg = write(
        d.path(),
        "agent.toml",
        format!(
            "[source]\nfiles = [{cap:?}]\n[[export.ipfix]]\ncollector = \"127.0.0.1:{}\"\n\
             mode = \"{mode}\"\nmax_message = {max_message}\nobservation_domain = 3\n",
            nf.port
        )
        .as_bytes(),
    );
    let out = run(vmflow().arg("run").arg("--config").arg(&cfg));
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{text}");
    let sent = if mode == "biflow" {
        records.len() as u64
    } else {
        records.len() as u64 + records.iter().filter(|r| u(r, "rev_packets") > 0).count() as u64
    };
    assert_eq!(
        stat(&text, "ipfix.0.records"),
        records.len() as u64,
        "{text}"
    );
    assert_eq!(stat(&text, "ipfix.0.dropped_records"), 0, "{text}");
    assert_eq!(stat(&text, "ipfix.0.send_errors"), 0, "{text}");
    assert!(
        stat(&text, "ipfix.0.messages") * max_message as u64 >= sent * 40,
        "{text}"
    );
    nf.wait_until(|| nf.rx_queue() == Some(0), "nfcapd to read");
    let flows = nf.stop_and_read();
    assert_same(&records, &flows, mode == "biflow", mode);
}

#[test]
fn run_exports_every_biflow_to_nfcapd_over_udp() {
    run_to_nfcapd("biflow", 1400);
}

#[test]
fn run_exports_both_halves_to_nfcapd_over_udp_in_uniflow_mode() {
    run_to_nfcapd("uniflow", 8000);
}

/// Debug lines the sender writes when templates go out.
fn template_sends(p: &Proc) -> usize {
    p.text().matches("IPFIX templates sent").count()
}

#[test]
fn a_collector_started_late_decodes_every_record_after_the_next_template_refresh() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(dir, 16_000);
    let (header, recs) = split_records(&std::fs::read(&cap).unwrap());
    let half = recs.len() / 2;
    let probe = write(dir, "probe.pcap", &file_of(&header, &recs[half..half + 1]));
    let second_starts_ns = frames_of(&probe)[0].ts_ns;
    let caps = dir.join("caps");
    std::fs::create_dir_all(&caps).unwrap();
    let out = dir.join("out");
    let (_collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    let port = free_udp_port();
    let source = format!(
        "[flow]\nidle_timeout = 0.02\n[source.folder]\npath = {caps:?}\npoll_interval = 0.01\n\
         on_stop = \"finish\"\nshutdown_grace = 60\n"
    );
    let ipfix =
        format!("[[export.ipfix]]\ncollector = \"127.0.0.1:{port}\"\ntemplate_refresh = 0.2\n");
    let cfg = agent_config_with(dir, "a", &source, &certs, "agent-1", &addr, &ipfix);
    let mut a = Proc::spawn(
        vmflow()
            .env("RUST_LOG", "info,vmflow::export::ipfix_sender=debug")
            .arg("run")
            .arg("--config")
            .arg(&cfg),
    );
    // The first half exported while nothing listens: lost, as UDP is.
    write_in_pieces(
        &caps.join("packetcapture_00_00_01_000.cap"),
        &file_of(&header, &recs[..half]),
        1,
        40_000,
        Duration::ZERO,
    );
    wait_seq(&out, "agent-1", 1);
    let nf = Nfcapd::start_on(dir, port);
    // A refresh after nfcapd is listening, then the second half.
    let before = template_sends(&a);
    let deadline = Instant::now() + Duration::from_secs(30);
    while template_sends(&a) <= before {
        assert!(
            Instant::now() < deadline,
            "no template refresh: {}",
            a.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    write_in_pieces(
        &caps.join("packetcapture_00_00_02_000.cap"),
        &file_of(&header, &recs[half..]),
        2,
        4_096,
        // As a capture is written: a burst of a whole file's records at
        // once would overflow nfcapd's socket buffer, as UDP may.
        Duration::from_millis(1),
    );
    a.wait_line(
        "packetcapture_00_00_02_000.cap: reading",
        Duration::from_secs(60),
    );
    a.sigterm();
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    let text = a.text();
    assert!(stat(&text, "ipfix.0.template_sends") >= 2, "{text}");
    nf.wait_until(|| nf.rx_queue() == Some(0), "nfcapd to read");
    let drops = nf.drops();
    let log_path = nf.dir.join("nfcapd.log");
    let flows = nf.stop_and_read();
    let text = format!(
        "{text}\nnfcapd drops {drops:?}\n{}",
        std::fs::read_to_string(log_path).unwrap()
    );
    // Every record the collector got over mTLS is also at nfcapd if it
    // started in the second half (it was exported after the refresh); none
    // nfcapd holds is anything but one of them.
    let all: Vec<Value> = collected(&out, "agent-1")
        .into_keys()
        .map(|k| serde_json::from_str(&k).unwrap())
        .collect();
    let late: Vec<&Value> = all
        .iter()
        .filter(|r| u(r, "first_ns") >= second_starts_ns)
        .collect();
    assert!(
        late.len() > 100,
        "{} records in the second half",
        late.len()
    );
    let have: std::collections::HashSet<Vec<String>> = flows.iter().map(|f| got(f, true)).collect();
    let any: std::collections::HashSet<Vec<String>> =
        all.iter().map(|r| expected(r, false, true)).collect();
    let missing: Vec<&&Value> = late
        .iter()
        .filter(|r| !have.contains(&expected(r, false, true)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} missing at nfcapd (it holds {}), e.g. {}\n{text}",
        missing.len(),
        late.len(),
        have.len(),
        missing[0]
    );
    for h in &have {
        assert!(
            any.contains(h),
            "nfcapd holds a flow the agent never made: {h:?}"
        );
    }
}

/// A TCP collector stand-in: one connection's bytes, split into messages at
/// their length fields and read by the independent decoder.
fn read_stream(stream: impl std::io::Read) -> Vec<vmflow_proto::ipfix::DataRecord> {
    let mut bytes = Vec::new();
    let mut stream = stream;
    std::io::Read::read_to_end(&mut stream, &mut bytes).unwrap();
    let mut dec = vmflow_proto::ipfix::IpfixDecoder::new();
    let mut records = Vec::new();
    let mut first = true;
    for m in vmflow_proto::ipfix::messages(&bytes).expect("whole messages") {
        let m = dec.message(m).unwrap();
        assert_eq!(!m.templates.is_empty(), first, "templates once, first");
        assert_eq!(m.unknown_sets, 0);
        first = false;
        records.extend(m.records);
    }
    records
}

/// (addresses, ports, protocol, counters both ways, ms times) of a decoded
/// biflow record, as the replay's record would give them.
fn decoded_key(r: &vmflow_proto::ipfix::DataRecord) -> String {
    let addr = |v4: u16, v6: u16| -> String {
        match r.bytes(v4, None).or(r.bytes(v6, None)).unwrap() {
            b if b.len() == 4 => {
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap()).to_string()
            }
            b => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap()).to_string(),
        }
    };
    let n = |id: u16| r.uint(id, None).unwrap();
    let rev = |id: u16| r.uint(id, Some(29305)).unwrap();
    let (sp, dp) = (n(7), n(11));
    format!(
        "{} {} {sp} {dp} {} {} {} {} {} {} {}",
        addr(8, 27),
        addr(12, 28),
        n(4),
        n(2),
        n(1),
        rev(2),
        rev(1),
        n(152),
        n(153)
    )
}

fn replayed_key(r: &Value) -> String {
    // ICMP: type and code in the destination port, as NetFlow had them.
    let (sp, dp) = match r["icmp_type"].as_u64() {
        Some(t) => (0, t << 8 | r["icmp_code"].as_u64().unwrap_or(0)),
        None => (u(r, "src_port"), u(r, "dst_port")),
    };
    format!(
        "{} {} {sp} {dp} {} {} {} {} {} {} {}",
        r["src_addr"].as_str().unwrap(),
        r["dst_addr"].as_str().unwrap(),
        u(r, "proto"),
        u(r, "fwd_packets"),
        u(r, "fwd_bytes"),
        u(r, "rev_packets"),
        u(r, "rev_bytes"),
        u(r, "first_ns") / 1_000_000,
        u(r, "last_ns") / 1_000_000
    )
}

fn tcp_run(dir: &Path, port: u16, extra: &str) -> (Vec<Value>, String) {
    tcp_run_of(dir, port, extra, 12_000)
}

fn tcp_run_of(dir: &Path, port: u16, extra: &str, packets: u64) -> (Vec<Value>, String) {
    let cap = synth_cap_seeded(dir, "in.pcap", packets, 9);
    // Short timeouts and small engine batches: records leave in many
    // writes, as from a long capture.
    let flow = "[flow]\nidle_timeout = 0.02\n[pipeline]\nbatch_packets = 500\n";
    let flow_cfg = write(dir, "flow.toml", flow.as_bytes());
    let (records, _, ok) = replay(
        std::slice::from_ref(&cap),
        &["--config", flow_cfg.to_str().unwrap()],
    );
    assert!(ok && records.len() > 300);
    let cfg = write(
        dir,
        "agent.toml",
        format!(
            "{flow}[source]\nfiles = [{cap:?}]\n[[export.ipfix]]\n\
             collector = \"127.0.0.1:{port}\"\ntransport = \"tcp\"\n{extra}"
        )
        .as_bytes(),
    );
    let out = run(vmflow().arg("run").arg("--config").arg(&cfg));
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{text}");
    (records, text)
}

fn assert_decoded(records: &[Value], decoded: &[vmflow_proto::ipfix::DataRecord]) {
    let mut want: Vec<String> = records.iter().map(replayed_key).collect();
    let mut have: Vec<String> = decoded.iter().map(decoded_key).collect();
    want.sort();
    have.sort();
    assert_eq!(have.len(), want.len(), "records decoded");
    for (h, w) in have.iter().zip(&want) {
        assert_eq!(h, w);
    }
}

#[test]
fn run_exports_over_tcp_with_templates_once_per_connection() {
    let d = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || read_stream(listener.accept().unwrap().0));
    let (records, text) = tcp_run(d.path(), port, "");
    assert_eq!(
        stat(&text, "ipfix.0.records"),
        records.len() as u64,
        "{text}"
    );
    assert_eq!(stat(&text, "ipfix.0.dropped_records"), 0, "{text}");
    assert_eq!(stat(&text, "ipfix.0.connections"), 1, "{text}");
    assert_decoded(&records, &reader.join().unwrap());
}

#[test]
fn run_exports_over_tls_to_a_server_that_checks_the_agent_certificate() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    // The collector's side of TLS (rustls, as `vmflow collect` has it):
    // it requires a client certificate from the same CA, and reads to a
    // close_notify (a bare TCP close is an error).
    let server = vmflow::tls::server_config(
        &certs.join("collector.pem"),
        &certs.join("collector-key.pem"),
        &certs.join("ca.pem"),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        let conn = rustls::ServerConnection::new(server).unwrap();
        read_stream(rustls::StreamOwned::new(conn, listener.accept().unwrap().0))
    });
    let tls = format!(
        "tls = true\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        certs.join("ca.pem"),
        certs.join("agent-1.pem"),
        certs.join("agent-1-key.pem")
    );
    let (records, text) = tcp_run(d.path(), port, &tls);
    assert_eq!(
        stat(&text, "ipfix.0.records"),
        records.len() as u64,
        "{text}"
    );
    assert_eq!(stat(&text, "ipfix.0.dropped_records"), 0, "{text}");
    assert_decoded(&records, &reader.join().unwrap());
}

/// A collector that reads only after the agent has exited, through a
/// small receive window: most of the session is still queued in the agent's
/// kernel when it closes, behind session tickets it never asked for. Closing
/// a socket with unread bytes resets the connection and throws that queue
/// away; the agent has to half-close and read the collector's side first.
#[test]
fn a_tls_session_ends_without_losing_what_the_collector_has_not_read_yet() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let server = vmflow::tls::server_config(
        &certs.join("collector.pem"),
        &certs.join("collector-key.pem"),
        &certs.join("ca.pem"),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let small: libc::c_int = 4096;
    // SAFETY: a valid listening socket's descriptor, and a pointer to an
    // int that lives across the call with its size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&listener),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let (exited, agent_gone) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(server).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).unwrap();
        }
        // The session tickets rustls sends once the handshake is done.
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
        agent_gone.recv().unwrap();
        read_stream(rustls::StreamOwned::new(conn, sock))
    });
    let tls = format!(
        "tls = true\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        certs.join("ca.pem"),
        certs.join("agent-1.pem"),
        certs.join("agent-1-key.pem")
    );
    let (records, text) = tcp_run_of(d.path(), port, &tls, 3_000);
    exited.send(()).unwrap();
    assert_eq!(stat(&text, "ipfix.0.dropped_records"), 0, "{text}");
    assert_decoded(&records, &reader.join().unwrap());
}

#[test]
fn a_wrong_tls_setting_is_an_error_at_start_that_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    let cap = synth_cap_seeded(d.path(), "in.pcap", 100, 1);
    let cfg = write(
        d.path(),
        "agent.toml",
        format!(
            "[source]\nfiles = [{cap:?}]\n[[export.ipfix]]\ncollector = \"127.0.0.1:9\"\n\
             transport = \"tcp\"\ntls = true\nca = \"nope/ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n"
        )
        .as_bytes(),
    );
    let out = run(vmflow().arg("run").arg("--config").arg(&cfg));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("nope/ca.pem"), "{text}");
}

#[test]
fn a_tcp_collector_that_drops_the_connection_gets_a_new_session_with_templates_first() {
    let d = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        // The first connection is closed at once, unread.
        drop(listener.accept().unwrap());
        read_stream(listener.accept().unwrap().0)
    });
    let (records, text) = tcp_run(d.path(), port, "max_message = 1000\n");
    assert_eq!(stat(&text, "ipfix.0.connections"), 2, "{text}");
    assert!(stat(&text, "ipfix.0.send_errors") >= 1, "{text}");
    assert!(text.contains("reachable again"), "{text}");
    // The second session reads from its start (templates first, checked by
    // read_stream), and carries only the run's records.
    let decoded = reader.join().unwrap();
    assert!(!decoded.is_empty());
    let all: std::collections::HashSet<String> = records.iter().map(replayed_key).collect();
    for r in &decoded {
        assert!(all.contains(&decoded_key(r)), "{}", decoded_key(r));
    }
    // What the collector read and what the agent counted as lost account
    // for every record but those written into the dead connection before
    // the kernel said it was dead.
    let (sent, dropped) = (
        stat(&text, "ipfix.0.records"),
        stat(&text, "ipfix.0.dropped_records"),
    );
    assert_eq!(sent + dropped, records.len() as u64, "{text}");
    assert!(decoded.len() as u64 <= sent, "{text}");
}

#[test]
fn a_followed_folder_with_ipfix_alone_is_refused_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write(
        d.path(),
        "agent.toml",
        format!(
            "[source.folder]\npath = {:?}\n[[export.ipfix]]\ncollector = \"127.0.0.1:4739\"\n",
            d.path()
        )
        .as_bytes(),
    );
    let out = run(vmflow().arg("run").arg("--config").arg(&cfg));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("checkpoints") && text.contains("[export]"),
        "{text}"
    );
    let none = write(d.path(), "none.toml", b"[source]\nfiles = [\"x.pcap\"]\n");
    let out = run(vmflow().arg("run").arg("--config").arg(&none));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("[[export.ipfix]]"), "{text}");
}
