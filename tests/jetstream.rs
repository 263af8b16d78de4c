//! Stateless collectors in front of a replicated JetStream stream, end to
//! end with the real binaries and real nats-server processes on loopback:
//! agents → two collectors → a 3-node JetStream cluster (R3) → `vmflow
//! sink` → hourly NDJSON files equal to `vmflow replay` of the capture,
//! through SIGKILLs of a collector, a NATS node and the sink.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::agents::*;
use common::nats::{Nats, Operator};
use common::write;

/// `vmflow collect` on a free port with the fleet's certificates,
/// publishing to `urls`.
fn collect_cmd(certs: &Path, urls: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmflow"));
    cmd.args(["collect", "--listen", "127.0.0.1:0"])
        .arg("--cert")
        .arg(certs.join("collector.pem"))
        .arg("--key")
        .arg(certs.join("collector-key.pem"))
        .arg("--client-ca")
        .arg(certs.join("ca.pem"))
        .args(["--jetstream", urls]);
    cmd
}

/// A collector publishing to JetStream (`extra`: the stream's flags).
fn js_collector(certs: &Path, urls: &str, extra: &[&str]) -> (Proc, String) {
    let p = Proc::spawn(collect_cmd(certs, urls).args(extra));
    let line = p.wait_line("listening on", Duration::from_secs(30));
    let addr = line.rsplit(' ').next().unwrap().to_string();
    (p, addr)
}

/// A collector that must stop at start (exit 1) with `args` added to the
/// JetStream flags, at the trace level, and must not print any of
/// `secrets`: what it said.
fn refused_collector(certs: &Path, urls: &str, args: &[String], secrets: &[&str]) -> String {
    let mut p = Proc::spawn(collect_cmd(certs, urls).env("RUST_LOG", "trace").args(args));
    assert_eq!(
        p.wait_code(Duration::from_secs(60)),
        Some(1),
        "{}",
        p.text()
    );
    let text = p.text();
    for secret in secrets {
        assert!(!text.contains(secret), "a secret in the output:\n{text}");
    }
    text
}

fn sink(urls: &str, out: &Path, extra: &[&str]) -> Proc {
    let p = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_vmflow"))
            .args(["sink", "--jetstream", urls])
            .arg("--out")
            .arg(out)
            .args(extra),
    );
    p.wait_line("delivering from message", Duration::from_secs(30));
    p
}

/// Waits until the sink's files hold exactly the capture's records (they
/// only grow toward it: a record too many stays too many).
fn wait_exact(out: &Path, cap: &Path, sink: &Proc) {
    let want = replayed(cap);
    assert!(want.len() > 5_000);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = collected(out, "agent-1");
        if got == want {
            return;
        }
        let total: u64 = got.values().sum();
        let doubled = got
            .iter()
            .filter(|(k, n)| want.get(*k).is_none_or(|w| *n > w))
            .count();
        assert_eq!(doubled, 0, "records doubled or unknown\n{}", sink.text());
        assert!(
            Instant::now() < deadline,
            "the sink holds {total} of {} records\n{}",
            want.values().sum::<u64>(),
            sink.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the sink holds batch `at_least` of agent-1 (showing what
/// every process said if it does not come).
fn wait_batch(out: &Path, at_least: u64, procs: &[(&str, &Proc)], nats: &Nats) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while collector_seq(out, "agent-1") < at_least {
        if Instant::now() > deadline {
            let mut text = String::new();
            for (name, p) in procs {
                text.push_str(&format!("--- {name}\n{}\n", p.text()));
            }
            for i in 0..3 {
                text.push_str(&format!("--- nats {i}\n{}\n", nats.log(i)));
            }
            panic!(
                "the sink never reached batch {at_least} (at {}):\n{text}",
                collector_seq(out, "agent-1")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The collector of the list the agent is connected to now.
fn connected_to(agent: &Proc, after: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = agent.text();
        let line = text
            .lines()
            .filter(|l| l.contains("connected to collector"))
            .nth(after);
        if let Some(l) = line {
            let at = l.find("connected to collector ").unwrap() + 23;
            return l[at..].split(';').next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "agent never connected:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Fleet {
    dir: PathBuf,
    certs: PathBuf,
    cap: PathBuf,
    out: PathBuf,
}

fn fleet(dir: &Path, packets: u64) -> Fleet {
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    Fleet {
        dir: dir.to_path_buf(),
        certs,
        cap: synth_cap(dir, packets),
        out: dir.join("out"),
    }
}

#[test]
fn kills_of_a_collector_a_nats_node_and_the_sink_lose_and_double_nothing() {
    let d = tempfile::tempdir().unwrap();
    let f = fleet(d.path(), 1_000_000);
    let mut nats = Nats::start(&f.dir, 3);
    let urls = nats.urls();
    let r3 = ["--jetstream-replicas", "3"];
    let (c1, a1) = js_collector(&f.certs, &urls, &r3);
    let (c2, a2) = js_collector(&f.certs, &urls, &r3);
    let mut s = sink(&urls, &f.out, &r3);
    let cfg = agent_config_with(
        &f.dir,
        "a",
        &format!("[source]\nfiles = [{:?}]\n", f.cap),
        &f.certs,
        "agent-1",
        "",
        "batch_records = 8\nwindow = 1\n",
    );
    // `collector` is a list of both.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("collector = \"\"", &format!("collector = [{a1:?}, {a2:?}]"));
    std::fs::write(&cfg, text).unwrap();
    let mut a = agent(&cfg);

    // Kills are timed by what the stream holds (the agent's progress)
    // and by what the sink wrote (its own).
    let stream = "VMFLOW";

    // A collector dies under the agent: it goes on with the other.
    nats.wait_messages(stream, 500);
    let first = connected_to(&a, 0);
    let (mut dead, other) = if first == a1 { (c1, c2) } else { (c2, c1) };
    dead.kill();
    let second = connected_to(&a, 1);
    assert_ne!(second, first, "{}", a.text());

    // A NATS node dies and comes back: the stream (R3) carries on.
    nats.wait_messages(stream, nats.messages(stream) + 500);
    nats.kill_node(0);
    nats.wait_messages(stream, nats.messages(stream) + 500);
    nats.start_node(0);
    nats.wait_healthy(0);
    let nats_back = nats.messages(stream);

    // The sink dies and starts again.
    let procs = [("agent", &a), ("collector", &other), ("sink", &s)];
    wait_batch(
        &f.out,
        collector_seq(&f.out, "agent-1") + 300,
        &procs,
        &nats,
    );
    s.kill();
    let at_sink_kill = collector_seq(&f.out, "agent-1");
    let s2 = sink(&urls, &f.out, &r3);

    assert!(a.wait(Duration::from_secs(300)), "{}", a.text());
    wait_exact(&f.out, &f.cap, &s2);
    let batches = collector_seq(&f.out, "agent-1");
    assert!(
        nats.messages(stream) > nats_back + 100 && batches > at_sink_kill + 100,
        "the kills came mid-run: NATS node back at message {nats_back}, sink killed at \
         batch {at_sink_kill}, of {batches}"
    );
    assert_eq!(stat(&a.text(), "dropped_records"), 0);
    assert!(stat(&a.text(), "connections") >= 2);
    drop(other);
}

#[test]
fn with_nats_away_the_collector_refuses_the_agent_spools_and_delivery_resumes_exactly() {
    let d = tempfile::tempdir().unwrap();
    let f = fleet(d.path(), 300_000);
    let mut nats = Nats::start(&f.dir, 1);
    let urls = nats.urls();
    let (c, addr) = js_collector(&f.certs, &urls, &[]);
    let s = sink(&urls, &f.out, &[]);
    let cfg = agent_config(
        &f.dir,
        "a",
        &f.cap,
        &f.certs,
        "agent-1",
        &addr,
        "batch_records = 8\nwindow = 1\n",
    );
    let mut a = agent(&cfg);
    wait_seq(&f.out, "agent-1", 40);
    nats.stop_node(0);
    // Nothing is acknowledged that JetStream does not hold: the collector
    // refuses, and the agent keeps its batches.
    c.wait_line("cannot store batch", Duration::from_secs(60));
    a.wait_line("the collector cannot", Duration::from_secs(60));
    nats.start_node(0);
    nats.wait_healthy(0);
    assert!(a.wait(Duration::from_secs(300)), "{}", a.text());
    wait_exact(&f.out, &f.cap, &s);

    // A collector asking for another shape of the stream does not start.
    let mut other = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_vmflow"))
            .args(["collect", "--listen", "127.0.0.1:0"])
            .arg("--cert")
            .arg(f.certs.join("collector.pem"))
            .arg("--key")
            .arg(f.certs.join("collector-key.pem"))
            .arg("--client-ca")
            .arg(f.certs.join("ca.pem"))
            .args(["--jetstream", &urls, "--jetstream-max-age", "3600"]),
    );
    assert_eq!(other.wait_code(Duration::from_secs(30)), Some(1));
    let text = other.text();
    assert!(
        text.contains("VMFLOW exists with max age 0 s, not 3600 s"),
        "{text}"
    );
}

/// Two sinks share the work by `--shard I/N`: each agent's records are in
/// exactly one sink's files, whole.
#[test]
fn sharded_sinks_each_write_their_agents_whole() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    // (crc32: agent-1 goes to shard 1, agent-4 to shard 0.)
    certs_init(&certs, &["agent-1", "agent-4"]);
    let nats = Nats::start(d.path(), 1);
    let urls = nats.urls();
    let (_c, addr) = js_collector(&certs, &urls, &[]);
    let out = [d.path().join("out0"), d.path().join("out1")];
    // One of them stores blocks: the sink writes through the same store.
    let store = ["ndjson", "blocks"];
    let sinks: Vec<Proc> = (0..2)
        .map(|i| {
            let shard = format!("{i}/2");
            sink(&urls, &out[i], &["--shard", &shard, "--store", store[i]])
        })
        .collect();
    let mut want = Vec::new();
    for (agent, seed) in [("agent-1", 3), ("agent-4", 4)] {
        let cap = synth_cap_seeded(d.path(), &format!("{agent}.pcap"), 100_000, seed);
        let cfg = agent_config(d.path(), agent, &cap, &certs, agent, &addr, "");
        let mut a = common::agents::agent(&cfg);
        assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
        want.push((agent, replayed(&cap)));
    }
    for (shard, agent) in [(1, "agent-1"), (0, "agent-4")] {
        let w = &want.iter().find(|(a, _)| *a == agent).unwrap().1;
        let deadline = Instant::now() + Duration::from_secs(60);
        while collected(&out[shard], agent) != *w {
            assert!(
                Instant::now() < deadline,
                "sink {shard} never held {agent}'s records\n{}",
                sinks[shard].text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let blocks = std::fs::read_dir(out[1].join("agent-1"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "blocks")
        })
        .count();
    assert!(blocks > 0, "sink 1 stores blocks");
    // By now both sinks have been given every message (agent-4's came
    // last, and sink 0 holds them all).
    for (shard, other) in [(1, "agent-4"), (0, "agent-1")] {
        assert!(
            !out[shard].join(other).exists(),
            "sink {shard} wrote {other}"
        );
    }
}

/// NATS over TLS that checks the client's certificate, with users known by
/// an nkey (collector) and by a password (sink), each secret in a file:
/// delivery is exact. A wrong password, a missing client certificate and a
/// file that holds no seed stop a collector at start with an error that
/// says why, and no secret reaches its output even at the trace level.
#[test]
fn tls_and_file_held_secrets_reach_nats_and_wrong_ones_are_refused_unshown() {
    let d = tempfile::tempdir().unwrap();
    let f = fleet(d.path(), 100_000);
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let seed_file = write(&f.dir, "collector.nk", seed.as_bytes());
    let pass_file = write(&f.dir, "sink.auth", b"vmflow-sink:right-horse-battery\n");
    let wrong_file = write(&f.dir, "wrong.auth", b"vmflow-sink:wrong-horse-staple\n");
    let c = |n: &str| f.certs.join(n);
    let conf = format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true, timeout: 5 }}\n\
         authorization {{ users = [ {{ nkey: {:?} }}, \
         {{ user: \"vmflow-sink\", password: \"right-horse-battery\" }} ] }}\n",
        c("collector.pem"),
        c("collector-key.pem"),
        c("ca.pem"),
        user.public_key()
    );
    let nats = Nats::start_with(&f.dir, 1, &conf, "tls");
    let urls = nats.urls();
    assert!(urls.starts_with("tls://"), "{urls}");
    let path = |p: PathBuf| p.to_str().unwrap().to_string();
    let tls = [
        "--jetstream-ca".to_string(),
        path(c("ca.pem")),
        "--jetstream-cert".into(),
        path(c("agent-1.pem")),
        "--jetstream-key".into(),
        path(c("agent-1-key.pem")),
    ];
    let with = |more: &[String]| -> Vec<String> { tls.iter().chain(more).cloned().collect() };
    let nkey = with(&["--jetstream-nkey".into(), path(seed_file.clone())]);
    let refs = |v: &[String]| -> Vec<String> { v.to_vec() };
    let nk: Vec<&str> = nkey.iter().map(String::as_str).collect();
    let (collector, addr) = js_collector(&f.certs, &urls, &nk);
    let pw = with(&["--jetstream-auth-file".into(), path(pass_file)]);
    let pw: Vec<&str> = pw.iter().map(String::as_str).collect();
    let s = sink(&urls, &f.out, &pw);
    let cfg = agent_config(&f.dir, "a", &f.cap, &f.certs, "agent-1", &addr, "");
    let mut a = agent(&cfg);
    assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
    wait_exact(&f.out, &f.cap, &s);
    // The same agent with a new spool (reinstalled): the collector reads
    // from the stream that another epoch came before, and says so.
    let cfg = agent_config(&f.dir, "b", &f.cap, &f.certs, "agent-1", &addr, "");
    let mut b = agent(&cfg);
    assert!(b.wait(Duration::from_secs(120)), "{}", b.text());
    collector.wait_line("a new record stream (epoch", Duration::from_secs(30));

    let secrets = ["wrong-horse-staple", "right-horse-battery", seed.as_str()];
    let refused =
        |args: Vec<String>| -> String { refused_collector(&f.certs, &urls, &args, &secrets) };
    let text = refused(with(&["--jetstream-auth-file".into(), path(wrong_file)]));
    assert!(text.to_lowercase().contains("authorization"), "{text}");
    // TLS without this client's certificate: the server hangs up.
    let text = refused(refs(&[
        "--jetstream-ca".into(),
        path(c("ca.pem")),
        "--jetstream-nkey".into(),
        path(seed_file),
    ]));
    assert!(text.contains("cannot connect"), "{text}");
    // A password file where a seed belongs: named, not shown.
    let text = refused(with(&["--jetstream-nkey".into(), path(c("../sink.auth"))]));
    assert!(text.contains("sink.auth: not a user nkey seed"), "{text}");
}

/// Observations shipped with the records (`[observe] ship`) go through the
/// collector and JetStream inside their batches' blocks, and the sink
/// writes them to `observations/`: exactly the lines `replay
/// --observations` writes for the capture, beside exactly its records.
#[test]
fn observations_reach_the_sink_through_jetstream_with_their_batches() {
    let d = tempfile::tempdir().unwrap();
    let f = fleet(d.path(), 20_000);
    let nats = Nats::start(&f.dir, 1);
    let urls = nats.urls();
    let (_c, addr) = js_collector(&f.certs, &urls, &[]);
    let s = sink(&urls, &f.out, &[]);
    // Every IPv4 remote is listed: a watchlist observation per such record.
    let watch = write(&f.dir, "watch.txt", b"0.0.0.0/0\n");
    let tables =
        format!("[observe]\nship = true\n[[watchlist]]\nname = \"all\"\nfile = {watch:?}\n");
    let replay_cfg = write(&f.dir, "replay.toml", tables.as_bytes());
    let obs = f.dir.join("obs.ndjson");
    let replayed = Command::new(env!("CARGO_BIN_EXE_vmflow"))
        .args(["replay", "--config"])
        .arg(&replay_cfg)
        .arg("--observations")
        .arg(&obs)
        .arg(&f.cap)
        .output()
        .unwrap();
    assert!(replayed.status.success());
    let records = multiset(&String::from_utf8(replayed.stdout).unwrap());
    let mut want: Vec<String> = std::fs::read_to_string(&obs)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    want.sort();
    assert!(want.len() > 100, "{}", want.len());
    let cfg = agent_config(&f.dir, "a", &f.cap, &f.certs, "agent-1", &addr, &tables);
    let mut a = agent(&cfg);
    assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
    let shipped = || -> Vec<String> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(f.out.join("agent-1").join("observations"))
            .into_iter()
            .flatten()
        {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            v.extend(text.lines().map(String::from));
        }
        v.sort();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while collected(&f.out, "agent-1") != records || shipped() != want {
        assert!(
            shipped().len() <= want.len(),
            "observations doubled\n{}",
            s.text()
        );
        assert!(
            Instant::now() < deadline,
            "the sink holds {} of {} observations\n{}",
            shipped().len(),
            want.len(),
            s.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fleet and a single operator-mode nats-server trusting the operator's
/// account.
fn operator_fleet(dir: &Path) -> (Fleet, Operator, Nats) {
    let f = fleet(dir, 100_000);
    let op = Operator::new();
    let nats = Nats::start_with(&f.dir, 1, &op.conf, "nats");
    (f, op, nats)
}

/// Decentralized authentication: collector and sink each log in with a
/// credentials file (user JWT and seed) of an account the operator-mode
/// server trusts, and delivery is exact. A user of an account the server
/// does not know is refused at start with an error that says so, and a
/// file that is not a credentials file is named, not shown; neither the
/// seed nor the JWT reaches the output, even at the trace level.
#[test]
fn credentials_files_reach_an_operator_mode_server_and_strangers_are_refused_unshown() {
    let d = tempfile::tempdir().unwrap();
    let (f, op, nats) = operator_fleet(d.path());
    let urls = nats.urls();
    let creds = |p: PathBuf| p.to_str().unwrap().to_string();
    let c = creds(op.creds(&f.dir, "collector"));
    let (_collector, addr) = js_collector(&f.certs, &urls, &["--jetstream-creds", &c]);
    let s_creds = creds(op.creds(&f.dir, "sink"));
    let s = sink(&urls, &f.out, &["--jetstream-creds", &s_creds]);
    let cfg = agent_config(&f.dir, "a", &f.cap, &f.certs, "agent-1", &addr, "");
    let mut a = agent(&cfg);
    assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
    wait_exact(&f.out, &f.cap, &s);

    let refused = |file: &Path| -> String {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        // The JWT and the seed (and the garbage file's "password").
        let secrets: Vec<&str> = text.lines().filter(|l| l.len() > 40).collect();
        let args = ["--jetstream-creds".to_string(), file.display().to_string()];
        refused_collector(&f.certs, &urls, &args, &secrets)
    };
    let stranger = Operator::stranger_creds(&f.dir, "stranger");
    let text = refused(&stranger);
    assert!(text.to_lowercase().contains("authorization"), "{text}");
    let garbage = write(
        &f.dir,
        "garbage.creds",
        b"user: someone, password: not-a-jwt-at-all-but-secret-enough\n",
    );
    let text = refused(&garbage);
    assert!(
        text.contains("garbage.creds") && text.contains("not a NATS credentials file"),
        "{text}"
    );
    // A file that is not there is reported as such, not as a bad file.
    let missing = f.dir.join("renewed-elsewhere.creds");
    let text = refused(&missing);
    assert!(
        text.contains("renewed-elsewhere.creds")
            && text.contains("No such file")
            && !text.contains("not a NATS credentials file"),
        "{text}"
    );
}

/// A user JWT that expires while the collector runs, its credentials file
/// renewed before that (as a refresher job would): the server closes the
/// connection at the expiry, the collector reconnects with the renewed file,
/// and an agent that connects afterwards is delivered exactly, without a
/// restart. (A collector that read the file only at start reconnected with
/// the expired JWT forever and refused every batch.)
#[test]
fn a_renewed_credentials_file_is_used_when_the_old_jwt_expires() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let d = tempfile::tempdir().unwrap();
    let (f, op, nats) = operator_fleet(d.path());
    let urls = nats.urls();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = op.creds_until(&f.dir, "collector", now + 10);
    let (collector, addr) =
        js_collector(&f.certs, &urls, &["--jetstream-creds", c.to_str().unwrap()]);
    let renewed = op.creds(&f.dir, "collector-renewed");
    std::fs::rename(&renewed, &c).unwrap();
    nats.wait_closed(0, "Authentication Expired");
    let s_creds = op.creds(&f.dir, "sink");
    let s = sink(
        &urls,
        &f.out,
        &["--jetstream-creds", s_creds.to_str().unwrap()],
    );
    let cfg = agent_config(&f.dir, "a", &f.cap, &f.certs, "agent-1", &addr, "");
    let mut a = agent(&cfg);
    assert!(
        a.wait(Duration::from_secs(120)),
        "{}\n--- collector\n{}",
        a.text(),
        collector.text()
    );
    wait_exact(&f.out, &f.cap, &s);
}
