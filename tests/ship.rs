//! The shipping path end to end, with the real binaries over real TLS on
//! loopback: what reaches the collector equals `vmflow replay`'s output
//! exactly (as a set), through collector restarts, agent kills and a full
//! spool, and the collector refuses what it must refuse.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::agents::*;

#[test]
fn records_arrive_exactly_once() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(d.path(), 200_000);
    let out = d.path().join("out");
    let (_c, addr) = collector(&certs, &out, "127.0.0.1:0");
    let cfg = agent_config(d.path(), "a", &cap, &certs, "agent-1", &addr, "");
    let mut a = agent(&cfg);
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    let want = replayed(&cap);
    assert!(want.len() > 5_000);
    assert_eq!(collected(&out, "agent-1"), want);
    assert_eq!(stat(&a.text(), "dropped_records"), 0);
    // Every batch sent was acknowledged once (it once counted 1,762 for 525).
    assert_eq!(
        stat(&a.text(), "batches_acked"),
        stat(&a.text(), "batches_sent")
    );
}

/// `collect --store blocks`: the hour files hold exactly the records replay
/// gives, about 25 times smaller than as text; `vmflow cat` prints them,
/// `vmflow query` reads the store (and an hour file piped to it) as it reads
/// NDJSON, and `query --agents` counts its records.
#[test]
fn a_blocks_store_holds_the_same_records_compactly() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(d.path(), 200_000);
    let out = d.path().join("out");
    let (_c, addr) = collector_with(&certs, &out, "127.0.0.1:0", "", &["--store", "blocks"]);
    let cfg = agent_config(d.path(), "a", &cap, &certs, "agent-1", &addr, "");
    let mut a = agent(&cfg);
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    let want = replayed(&cap);
    assert!(want.len() > 5_000);
    let dir = out.join("agent-1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "state"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    assert!(
        files
            .iter()
            .all(|p| p.extension().is_some_and(|x| x == "blocks")),
        "{files:?}"
    );
    let cat = common::run(common::vmflow().arg("cat").args(&files));
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_eq!(multiset(&String::from_utf8(cat.stdout).unwrap()), want);
    let stored: u64 = files.iter().map(|p| p.metadata().unwrap().len()).sum();
    let total: u64 = want.values().sum();
    assert!(stored < total * 40, "{stored} bytes for {total} records");
    let query = |args: &[&str], path: &Path| {
        let o = common::run(common::vmflow().arg("query").args(args).arg(path));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(multiset(&query(&["--output", "ndjson"], &out)), want);
    // An hour file on standard input (a pipe) reads as the file does.
    let piped = common::run_with_stdin(
        common::vmflow().args(["query", "-", "--output", "ndjson"]),
        &std::fs::read(&files[0]).unwrap(),
    );
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let from_pipe = String::from_utf8(piped.stdout).unwrap();
    assert!(!from_pipe.is_empty());
    assert_eq!(from_pipe, query(&["--output", "ndjson"], &files[0]));
    // Grouped, the store gives what replay's own NDJSON gives.
    let text = d.path().join("replayed.ndjson");
    let r = common::run(
        common::vmflow()
            .arg("replay")
            .arg("--out")
            .arg(&text)
            .arg(&cap),
    );
    assert!(r.status.success());
    for by in ["service", "pair"] {
        let args = ["--group-by", by, "--top", "0", "--output", "ndjson"];
        assert_eq!(query(&args, &out), query(&args, &text), "{by}");
    }
    let agents = common::run(
        common::vmflow()
            .args(["query", "--agents", "--output", "ndjson"])
            .arg(&out),
    );
    let row: serde_json::Value = serde_json::from_slice(&agents.stdout).unwrap();
    assert_eq!(row["records"].as_u64(), Some(total), "{row}");
    assert_eq!(
        row["hour_files"].as_u64(),
        Some(files.len() as u64),
        "{row}"
    );
}

/// `[source] files` goes through replay's reader: pieces given out of
/// order, one of them gzip compressed, ship the whole capture's records.
#[test]
fn source_files_out_of_order_and_compressed_ship_the_whole_capture() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(d.path(), 50_000);
    let bytes = std::fs::read(&cap).unwrap();
    // Cut at the first record past the middle whose time differs from the
    // one before (packets of one time stay together).
    let ts = |at: usize| &bytes[at..at + 8];
    let incl = |at: usize| u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
    let (mut at, mut prev) = (24, 24);
    while at < bytes.len() && (at < bytes.len() / 2 || ts(at) == ts(prev)) {
        prev = at;
        at += 16 + incl(at);
    }
    assert!(at < bytes.len());
    let first = [&bytes[..at]].concat();
    let second = [&bytes[..24], &bytes[at..]].concat();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&second).unwrap();
    let later = d.path().join("later.pcap.gz");
    std::fs::write(&later, gz.finish().unwrap()).unwrap();
    let earlier = d.path().join("earlier.pcap");
    std::fs::write(&earlier, first).unwrap();
    let out = d.path().join("out");
    let (_c, addr) = collector(&certs, &out, "127.0.0.1:0");
    let source = format!("[source]\nfiles = [{later:?}, {earlier:?}]\n");
    let cfg = agent_config_with(d.path(), "a", &source, &certs, "agent-1", &addr, "");
    let mut a = agent(&cfg);
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    let want = replayed(&cap);
    assert!(want.len() > 1_000);
    assert_eq!(collected(&out, "agent-1"), want);
}

/// A collector and an agent configured for a long run (small batches, one
/// in flight: many round trips), so a kill lands mid-run.
struct Slow {
    certs: PathBuf,
    cap: PathBuf,
    out: PathBuf,
    collector: Proc,
    addr: String,
    cfg: PathBuf,
}

fn slow_run(dir: &Path) -> Slow {
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(dir, 300_000);
    let out = dir.join("out");
    let (collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    let cfg = agent_config(
        dir,
        "a",
        &cap,
        &certs,
        "agent-1",
        &addr,
        "batch_records = 32\nwindow = 1\n",
    );
    Slow {
        certs,
        cap,
        out,
        collector,
        addr,
        cfg,
    }
}

#[test]
fn collector_killed_and_restarted_mid_run() {
    let d = tempfile::tempdir().unwrap();
    let Slow {
        certs,
        cap,
        out,
        collector: mut c,
        addr,
        cfg,
    } = slow_run(d.path());
    let mut a = agent(&cfg);
    wait_seq(&out, "agent-1", 40);
    c.kill();
    let at_kill = collector_seq(&out, "agent-1");
    let (_c2, _) = collector(&certs, &out, &addr);
    assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
    assert!(
        collector_seq(&out, "agent-1") > at_kill + 10,
        "the kill came mid-run"
    );
    assert!(stat(&a.text(), "connections") >= 2);
    assert_eq!(collected(&out, "agent-1"), replayed(&cap));
}

#[test]
fn agent_killed_hard_and_restarted() {
    let d = tempfile::tempdir().unwrap();
    let Slow {
        cap,
        out,
        collector: _c,
        cfg,
        ..
    } = slow_run(d.path());
    let mut a = agent(&cfg);
    wait_seq(&out, "agent-1", 40);
    a.kill(); // SIGKILL
    let at_kill = collector_seq(&out, "agent-1");
    let mut b = agent(&cfg);
    assert!(b.wait(Duration::from_secs(120)), "{}", b.text());
    assert!(
        collector_seq(&out, "agent-1") > at_kill + 10,
        "the kill came mid-run"
    );
    assert!(stat(&b.text(), "resumed_after") > 0, "{}", b.text());
    assert_eq!(collected(&out, "agent-1"), replayed(&cap));
}

#[test]
fn a_collector_down_longer_than_the_spool_loses_exactly_the_dropped_count() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(d.path(), 2_000_000);
    let out = d.path().join("out");
    // Reserve a port, then leave it closed while the agent runs.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cfg = agent_config(
        d.path(),
        "a",
        &cap,
        &certs,
        "agent-1",
        &addr,
        "spool_max_mib = 1\nbatch_records = 256\n",
    );
    let mut a = agent(&cfg);
    a.wait_line("source finished", Duration::from_secs(60));
    let (_c, _) = collector(&certs, &out, &addr);
    // A lossy run says so in its exit code.
    assert_eq!(
        a.wait_code(Duration::from_secs(120)),
        Some(3),
        "{}",
        a.text()
    );
    let dropped = stat(&a.text(), "dropped_records");
    assert_eq!(stat(&a.text(), "lost_records"), dropped);
    let want = replayed(&cap);
    let got = collected(&out, "agent-1");
    assert!(dropped > 1_000, "the spool overflowed: {}", a.text());
    let total: u64 = want.values().sum();
    let delivered: u64 = got.values().sum();
    assert_eq!(delivered + dropped, total);
    for (rec, n) in &got {
        assert_eq!(
            want.get(rec),
            Some(n),
            "delivered something replay did not produce"
        );
    }
    assert!(
        a.text().matches("spool full").count() == 1,
        "logged once per episode:\n{}",
        a.text()
    );
}

mod refusals {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Connects with `tls` and writes `payload` after the handshake; returns
    /// whether the collector answered with anything (a hello_ack).
    async fn try_tls(addr: &str, tls: Arc<rustls::ClientConfig>, payload: &[u8]) -> bool {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let Ok(mut s) = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
        else {
            return false;
        };
        let _ = s.write_all(payload).await;
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await,
            Ok(Ok(n)) if n > 0
        )
    }

    fn hello() -> Vec<u8> {
        hello_on("")
    }

    fn hello_on(stream: &str) -> Vec<u8> {
        let mut v = Vec::new();
        vmflow_proto::encode_frame(
            &vmflow_proto::Frame::Hello(vmflow_proto::Hello {
                version: vmflow_proto::PROTOCOL_VERSION,
                agent_id: "x".into(),
                host: "h".into(),
                agent_version: "t".into(),
                capabilities: vec![],
                stream: stream.into(),
                epoch: 0,
            }),
            &mut v,
        );
        v
    }

    #[test]
    fn bad_clients_are_refused_and_others_keep_being_served() {
        let d = tempfile::tempdir().unwrap();
        let certs = d.path().join("certs");
        let opts = vmflow::certs::CertOptions {
            agents: vec!["agent-1".into(), "stale".into()],
            expired_agents: vec!["stale".into()],
            ..Default::default()
        };
        vmflow::certs::init(&certs, &opts).unwrap();
        let other = d.path().join("other");
        certs_init(&other, &["agent-1"]);
        let out = d.path().join("out");
        let (c, addr) = collector(&certs, &out, "127.0.0.1:0");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let cfg = |dir: &Path, agent: &str| {
            vmflow::tls::client_config(
                &certs.join("ca.pem"),
                &dir.join(format!("{agent}.pem")),
                &dir.join(format!("{agent}-key.pem")),
            )
            .unwrap()
        };
        rt.block_on(async {
            // A slow client holds a connection open without a byte: it must
            // not stop anyone else.
            let _slow = TcpStream::connect(&addr).await.unwrap();

            // No client certificate at all.
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_file_iter(certs.join("ca.pem")).unwrap()
            {
                roots.add(c.unwrap()).unwrap();
            }
            use rustls::pki_types::pem::PemObject;
            let anon = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            assert!(!try_tls(&addr, Arc::new(anon), &hello()).await);
            c.wait_line("peer sent no certificates", Duration::from_secs(10));

            // A certificate from another CA (each CA has its own name, so
            // its issuer is unknown here), and an expired one.
            assert!(!try_tls(&addr, cfg(&other, "agent-1"), &hello()).await);
            c.wait_line(
                "invalid peer certificate: UnknownIssuer",
                Duration::from_secs(10),
            );
            assert!(!try_tls(&addr, cfg(&certs, "stale"), &hello()).await);
            c.wait_line("certificate expired", Duration::from_secs(10));

            // Plaintext.
            let mut plain = TcpStream::connect(&addr).await.unwrap();
            plain
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 16];
            let _ = tokio::time::timeout(Duration::from_secs(10), plain.read(&mut buf)).await;
            c.wait_line("TLS handshake failed", Duration::from_secs(10));

            // A valid certificate, then an oversized frame, then garbage.
            let mut huge = hello();
            huge.extend_from_slice(&u32::MAX.to_be_bytes());
            assert!(
                try_tls(&addr, cfg(&certs, "agent-1"), &huge).await,
                "hello_ack comes first"
            );
            c.wait_line("exceeds the limit", Duration::from_secs(10));
            let mut junk = hello();
            junk.extend_from_slice(&[0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1]);
            try_tls(&addr, cfg(&certs, "agent-1"), &junk).await;
            c.wait_line("malformed frame", Duration::from_secs(10));

            // A different protocol version is refused by name.
            let mut v2 = Vec::new();
            vmflow_proto::encode_frame(
                &vmflow_proto::Frame::Hello(vmflow_proto::Hello {
                    version: 2,
                    agent_id: "x".into(),
                    host: "h".into(),
                    agent_version: "t".into(),
                    capabilities: vec![],
                    stream: String::new(),
                    epoch: 0,
                }),
                &mut v2,
            );
            try_tls(&addr, cfg(&certs, "agent-1"), &v2).await;
            c.wait_line("unsupported protocol version 2", Duration::from_secs(10));

            // A stream name that would leave the agent's directory.
            try_tls(&addr, cfg(&certs, "agent-1"), &hello_on("../agent-2")).await;
            c.wait_line(
                "stream name \"../agent-2\" is not allowed",
                Duration::from_secs(10),
            );
        });
        // With the slow connection still open, a real agent ships everything.
        let cap = synth_cap(d.path(), 50_000);
        let acfg = agent_config(d.path(), "a", &cap, &certs, "agent-1", &addr, "");
        let mut a = agent(&acfg);
        assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
        assert_eq!(collected(&out, "agent-1"), replayed(&cap));
        assert!(
            !c.text().contains("stale"),
            "an expired certificate never names an agent"
        );
    }

    #[test]
    fn the_agent_refuses_a_collector_of_another_version() {
        let d = tempfile::tempdir().unwrap();
        let certs = d.path().join("certs");
        certs_init(&certs, &["agent-1"]);
        let tls = vmflow::tls::server_config(
            &certs.join("collector.pem"),
            &certs.join("collector-key.pem"),
            &certs.join("ca.pem"),
        )
        .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // A collector from the future: answers every hello with version 9.
        rt.spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 256];
                    let _ = s.read(&mut buf).await;
                    let mut out = Vec::new();
                    vmflow_proto::encode_frame(
                        &vmflow_proto::Frame::HelloAck(vmflow_proto::HelloAck {
                            version: 9,
                            last_seq: 0,
                        }),
                        &mut out,
                    );
                    let _ = s.write_all(&out).await;
                }
            }
        });
        let cap = synth_cap(d.path(), 5_000);
        let cfg = agent_config(d.path(), "a", &cap, &certs, "agent-1", &addr, "");
        let a = agent(&cfg);
        a.wait_line(
            "unsupported protocol version 9 (this side speaks 1)",
            Duration::from_secs(20),
        );
    }
}

/// A TLS failure that is a configuration error — the collector's
/// certificate from another CA than export.ca, a server_name it does not
/// carry, this agent's certificate from a CA the collector does not take —
/// is one ERROR naming what to check, while the agent keeps retrying
/// (quietly) until stopped.
#[test]
fn tls_configuration_errors_are_told_once_per_outage_with_what_to_check() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let other = d.path().join("other");
    certs_init(&other, &["agent-1"]);
    let other_ca = vmflow::tls::cert_names(&other.join("ca.pem")).remove(0);
    let cap = synth_cap(d.path(), 2_000);
    let out = d.path().join("out");
    let (_c, addr) = collector(&certs, &out, "127.0.0.1:0");
    let cases = [
        // (name, CA dir, cert dir, server_name, what the error must say)
        (
            "ca",
            &other,
            &certs,
            "localhost",
            vec!["is not signed by export.ca", &other_ca, "vmflow certs init"],
        ),
        (
            "name",
            &certs,
            &certs,
            "wrong.example",
            vec!["not valid for export.server_name = \"wrong.example\""],
        ),
        (
            "client",
            &certs,
            &other,
            "localhost",
            vec![
                "the collector refused this agent's certificate",
                "--client-ca",
            ],
        ),
    ];
    for (name, ca, cert, server_name, want) in cases {
        let text = format!(
            "[source]\nfiles = [{cap:?}]\n[export]\ncollector = {addr:?}\nserver_name = {server_name:?}\n\
             ca = {:?}\ncert = {:?}\nkey = {:?}\nspool_dir = {:?}\n",
            ca.join("ca.pem"),
            cert.join("agent-1.pem"),
            cert.join("agent-1-key.pem"),
            d.path().join(format!("spool-{name}")),
        );
        let cfg = common::write(d.path(), &format!("{name}.toml"), text.as_bytes());
        let a = Proc::spawn(
            common::vmflow()
                .env("RUST_LOG", "vmflow=debug")
                .args(["run", "--config"])
                .arg(&cfg),
        );
        let line = a.wait_line("ERROR", Duration::from_secs(30));
        for w in &want {
            assert!(line.contains(w), "{name}: {w:?} not in {line}");
        }
        // It keeps retrying: wait for three more attempts, told quietly.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while a.text().matches("retrying in").count() < 3 {
            assert!(std::time::Instant::now() < deadline, "{name}: {}", a.text());
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = a.text();
        assert_eq!(text.matches("ERROR").count(), 1, "{name}: {text}");
        assert!(!text.contains("WARN"), "{name}: {text}");
        a.sigterm();
    }
}

/// `collect --listen` takes a host name as the agent's `collector` does.
#[test]
fn host_names_work_on_both_ends() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(d.path(), 5_000);
    let out = d.path().join("out");
    let (_c, addr) = collector(&certs, &out, "localhost:0");
    let port = addr.rsplit(':').next().unwrap();
    let cfg = agent_config(
        d.path(),
        "a",
        &cap,
        &certs,
        "agent-1",
        &format!("localhost:{port}"),
        "",
    );
    let mut a = agent(&cfg);
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    assert_eq!(collected(&out, "agent-1"), replayed(&cap));
}
