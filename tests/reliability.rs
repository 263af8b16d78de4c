//! Issue 10, storage: full disks on either side, a damaged collector store,
//! a spool reused for another stream or replaced by a fresh one, and file
//! permissions — with the real binaries, real TLS on loopback and real small
//! tmpfs mounts. Each case failed on the code before the fix (see the
//! commit); what they assert is what a user of the agent relies on: every
//! record once, or counted as lost, and nothing committed ever truncated.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::agents::*;
use common::tmpfs::Tmpfs;

fn lines_of(out: &Path, agent: &str) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(out.join(agent)).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ndjson") {
            m.insert(
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            );
        }
    }
    m
}

/// Item 1: the collector's disk fills up mid-run. Batches are refused (not
/// half written), the agent keeps them and retries, and once there is room
/// the output is exact — also after a collector restart.
#[test]
fn a_full_collector_disk_loses_and_doubles_nothing() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(d.path(), 200_000);
    let want = replayed(&cap);
    let bytes: usize = want.keys().map(|k| k.len() + 1).sum();
    assert!(bytes > 3 << 20, "the output outgrows the disk: {bytes}");
    let fs = Tmpfs::mount(&d.path().join("out"), "2m");
    let out = fs.dir.join("o");
    let (mut c, addr) = collector(&certs, &out, "127.0.0.1:0");
    let cfg = agent_config(d.path(), "a", &cap, &certs, "agent-1", &addr, "");
    let mut a = agent(&cfg);
    c.wait_line("cannot store batch", Duration::from_secs(60));
    a.wait_line("the collector cannot store batch", Duration::from_secs(60));
    fs.resize("200m");
    assert_eq!(
        a.wait_code(Duration::from_secs(120)),
        Some(0),
        "{}",
        a.text()
    );
    assert_eq!(collected(&out, "agent-1"), want);
    // A restart finds nothing uncommitted: every byte was committed whole.
    c.kill();
    let before = lines_of(&out, "agent-1");
    let (c2, _) = collector(&certs, &out, &addr);
    let mut again = agent(&cfg);
    assert!(again.wait(Duration::from_secs(60)), "{}", again.text());
    assert!(!c2.text().contains("uncommitted"), "{}", c2.text());
    assert_eq!(lines_of(&out, "agent-1"), before);
    assert_eq!(collected(&out, "agent-1"), want);
}

/// Item 2: a short disk-full spell on the spool. The batches that could not
/// be written are counted (and the run says so in its exit code); those
/// after them keep their record positions, so a rerun with the same spool
/// skips exactly what was handed over: nothing doubled.
#[test]
fn a_full_spool_disk_keeps_record_positions() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(d.path(), 2_000_000);
    let want = replayed(&cap);
    let total: u64 = want.values().sum();
    let out = d.path().join("out");
    let (_c, addr) = collector(&certs, &out, "127.0.0.1:0");
    // The engine spools faster than one batch in flight ships, so the 2 MiB
    // fill up; acknowledged segments free room again.
    let fs = Tmpfs::mount(&d.path().join("spoolfs"), "2m");
    let text = format!(
        "[source]\nfiles = [{cap:?}]\n[export]\ncollector = {addr:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
         spool_dir = {:?}\nspool_max_mib = 4\nbatch_records = 64\nwindow = 1\n",
        certs.join("ca.pem"),
        certs.join("agent-1.pem"),
        certs.join("agent-1-key.pem"),
        fs.dir.join("spool"),
    );
    let cfg = common::write(d.path(), "a.toml", text.as_bytes());
    let mut a = agent(&cfg);
    assert_eq!(
        a.wait_code(Duration::from_secs(180)),
        Some(3),
        "a lossy run: {}",
        a.text()
    );
    let failed = stat(&a.text(), "append_errors");
    assert!(failed > 0 && failed < total, "{}", a.text());
    // Logged once per episode, not once per batch.
    let logged = a.text().matches("spool append failed").count();
    assert!((1..=20).contains(&logged), "{}", a.text());
    let got = collected(&out, "agent-1");
    assert!(got.iter().all(|(k, n)| *n == 1 && want.contains_key(k)));
    assert_eq!(got.values().sum::<u64>() + failed, total);
    // The same run again skips exactly what was handed over: records
    // refused after the last batch that made it are produced again (they
    // were never shipped), nothing is doubled.
    let mut b = agent(&cfg);
    assert!(b.wait(Duration::from_secs(120)), "{}", b.text());
    let resumed = stat(&b.text(), "resumed_after");
    assert!(
        resumed <= total && total - resumed <= failed,
        "{}",
        b.text()
    );
    let again = collected(&out, "agent-1");
    assert!(again.iter().all(|(k, n)| *n == 1 && want.contains_key(k)));
    assert_eq!(
        again.values().sum::<u64>() + failed - (total - resumed),
        total
    );
}

/// Item 3: the spool's disk is full when the collector comes back: the
/// acknowledgements still free the spool (no free space needed), on one
/// connection, and leave no temporary files.
#[test]
fn acknowledgements_free_a_full_spool_disk() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(d.path(), 300_000);
    let out = d.path().join("out");
    let addr = free_port();
    let fs = Tmpfs::mount(&d.path().join("spoolfs"), "8m");
    let spool = fs.dir.join("spool");
    let text = format!(
        "[source]\nfiles = [{cap:?}]\n[export]\ncollector = {addr:?}\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
         spool_dir = {spool:?}\nspool_max_mib = 6\nbatch_records = 256\n",
        certs.join("ca.pem"),
        certs.join("agent-1.pem"),
        certs.join("agent-1-key.pem"),
    );
    let cfg = common::write(d.path(), "a.toml", text.as_bytes());
    let mut a = agent(&cfg);
    a.wait_line("source finished", Duration::from_secs(60));
    fs.fill("filler");
    assert!(fs.free() < 8192, "full: {}", fs.free());
    let (_c, _) = collector(&certs, &out, &addr);
    assert!(a.wait(Duration::from_secs(120)), "{}", a.text());
    assert_eq!(collected(&out, "agent-1"), replayed(&cap));
    assert_eq!(stat(&a.text(), "connections"), 1, "{}", a.text());
    let left: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["ledger".to_string()], "acknowledged data freed");
}

/// Item 4: a collector store whose state is missing or empty is damaged,
/// not new: the collector refuses the agent with a reason (and logs the
/// file and what to do) and truncates nothing.
#[test]
fn a_lost_store_state_is_refused_and_nothing_truncated() {
    for damage in ["empty", "missing"] {
        let d = tempfile::tempdir().unwrap();
        let certs = d.path().join("certs");
        certs_init(&certs, &["agent-1"]);
        let cap = synth_cap(d.path(), 50_000);
        let out = d.path().join("out");
        let (mut c, addr) = collector(&certs, &out, "127.0.0.1:0");
        let cfg = agent_config(d.path(), "a", &cap, &certs, "agent-1", &addr, "");
        let mut a = agent(&cfg);
        assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
        c.kill();
        let state = out.join("agent-1").join("state");
        match damage {
            "empty" => std::fs::write(&state, b"").unwrap(),
            _ => std::fs::remove_file(&state).unwrap(),
        }
        let kept = lines_of(&out, "agent-1");
        assert!(!kept.is_empty());
        let (c2, _) = collector(&certs, &out, &addr);
        let b = agent(&cfg);
        let why = c2.wait_line("damaged", Duration::from_secs(30));
        assert!(why.contains(&state.display().to_string()), "{why}");
        assert!(why.contains("move"), "says what to do: {why}");
        b.wait_line(
            "refused: the collector cannot open",
            Duration::from_secs(30),
        );
        assert_eq!(
            lines_of(&out, "agent-1"),
            kept,
            "{damage}: nothing truncated"
        );
    }
}

/// Item 14: a spool that carried another capture. Everything delivered: a
/// new record stream starts (nothing skipped). Batches still pending: the
/// run is refused, naming both, and nothing of the new capture is skipped.
#[test]
fn a_spool_of_another_capture_is_never_silently_skipped() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let a_cap = synth_cap_seeded(d.path(), "a.pcap", 20_000, 1);
    let b_cap = synth_cap_seeded(d.path(), "b.pcap", 20_000, 2);
    let out = d.path().join("out");
    let (_c, addr) = collector(&certs, &out, "127.0.0.1:0");
    let cfg_a = agent_config(d.path(), "s", &a_cap, &certs, "agent-1", &addr, "");
    let mut a = agent(&cfg_a);
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    let cfg_b = agent_config(d.path(), "s", &b_cap, &certs, "agent-1", &addr, "");
    let mut b = agent(&cfg_b);
    assert!(b.wait(Duration::from_secs(60)), "{}", b.text());
    assert!(
        b.text().contains("starting a new record stream"),
        "{}",
        b.text()
    );
    assert_eq!(stat(&b.text(), "resumed_after"), 0);
    let mut want = replayed(&a_cap);
    for (k, n) in replayed(&b_cap) {
        *want.entry(k).or_insert(0) += n;
    }
    assert_eq!(collected(&out, "agent-1"), want);

    // With batches of capture A still unacknowledged (no collector), a run
    // for capture B is refused.
    let down = free_port();
    let cfg_a = agent_config(d.path(), "t", &a_cap, &certs, "agent-1", &down, "");
    let a = agent(&cfg_a);
    a.wait_line("source finished", Duration::from_secs(60));
    drop(a);
    let cfg_b = agent_config(d.path(), "t", &b_cap, &certs, "agent-1", &down, "");
    let mut b = agent(&cfg_b);
    assert_eq!(
        b.wait_code(Duration::from_secs(60)),
        Some(1),
        "{}",
        b.text()
    );
    let t = b.text();
    assert!(t.contains("a.pcap") && t.contains("b.pcap"), "{t}");
    assert!(t.contains("unacknowledged"), "{t}");
}

/// Item 15: a fresh spool with a known identity (a reimaged VM, a wiped
/// disk) is a new record stream: its records arrive, not taken for repeats.
#[test]
fn a_fresh_spool_of_a_known_agent_is_new_data() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(d.path(), 5_000);
    let out = d.path().join("out");
    let (c, addr) = collector(&certs, &out, "127.0.0.1:0");
    let mut want = BTreeMap::new();
    for (round, spool) in ["one", "two"].iter().enumerate() {
        let cfg = agent_config(d.path(), spool, &cap, &certs, "agent-1", &addr, "");
        let mut a = agent(&cfg);
        assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
        assert!(
            stat(&a.text(), "batches_sent") > 0,
            "round {round}: {}",
            a.text()
        );
        for (k, n) in replayed(&cap) {
            *want.entry(k).or_insert(0) += n;
        }
        assert_eq!(collected(&out, "agent-1"), want, "round {round}");
    }
    c.wait_line("a new record stream", Duration::from_secs(10));
}

/// Item 9: records, state, spool and ledger are the owner's only, whatever
/// the umask (000 here).
#[cfg(unix)]
#[test]
fn records_and_state_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    certs_init(&certs, &["agent-1"]);
    let cap = synth_cap(d.path(), 5_000);
    let out = d.path().join("out");
    let (_c, addr) = collector_with(&certs, &out, "127.0.0.1:0", "umask 000;", &[]);
    let cfg = agent_config(d.path(), "a", &cap, &certs, "agent-1", &addr, "");
    let mut a = agent_with(&cfg, "umask 000;");
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut checked = 0;
    for dir in [out.clone(), out.join("agent-1"), d.path().join("spool-a")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let want = if p.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&p), want, "{}", p.display());
            checked += 1;
        }
    }
    assert!(checked >= 4, "hour files, state, ledger, agent dir");
}
