//! The proof that a restructuring changed nothing: `vmflow replay` output
//! for a fixed set of captures (synthetic ones of several seeds and sizes,
//! every capture format, every link type) and the record blocks `vmflow run`
//! would send for a fixed capture, hashed and compared with
//! `tests/golden/expected.txt`. The inputs are generated here, the same every
//! time; only their hashes are stored.
//!
//! After an intended change of output, regenerate with `GOLDEN_UPDATE=1
//! cargo test --release --test golden` and say why in the commit.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::capture_files::*;
use common::*;

/// FNV-1a 64: stable, and plenty to tell outputs apart.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn synth(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let out = run(vmflow().arg("synth").args(args).arg("--out").arg(&p));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

/// Every input: its name and file.
fn inputs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    for (seed, packets, concurrent, snaplen) in [
        (1, "60000", "500", "128"),
        (2, "60000", "3000", "96"),
        (3, "30000", "200", "1500"),
    ] {
        let name = format!("synth-{seed}.pcap");
        let p = synth(
            dir,
            &name,
            &[
                "--packets",
                packets,
                "--concurrent",
                concurrent,
                "--snaplen",
                snaplen,
                "--seed",
                &seed.to_string(),
            ],
        );
        v.push((name, p));
    }
    // One capture in every format the readers take.
    let base = synth(
        dir,
        "base.pcap",
        &["--packets", "20000", "--concurrent", "300", "--seed", "4"],
    );
    let fr = frames_of(&base);
    for (name, bytes) in [
        ("pcap-be-ns", pcap(&fr, true, true)),
        ("pcapng-le-res9", pcapng(&fr, false, &[9], 7)),
        ("pcapng-be-res6", pcapng(&fr, true, &[6], 0)),
        ("netmon-2.1", netmon(&fr, 1, true)),
        ("netmon-2.3-scan", netmon(&fr, 3, false)),
    ] {
        v.push((name.into(), write(dir, &format!("{name}.cap"), &bytes)));
    }
    // Every link type, with TCP, UDP over IPv6 and ICMP.
    let mut pkts = Vec::new();
    for i in 0..20u64 {
        pkts.extend(tcp_conversation(T0 + i * 40 * MS));
        pkts.extend(mixed(T0 + i * 40 * MS + 20 * MS));
    }
    for (name, link) in [
        ("link-ethernet", Link::Ethernet),
        ("link-vlan2", Link::Vlan(&[(0x88a8, 10), (0x8100, 20)])),
        ("link-sll", Link::Sll),
        ("link-sll2", Link::Sll2),
        ("link-raw", Link::Raw),
        ("link-null-le", Link::NullLe),
        ("link-null-be", Link::NullBe),
        ("link-loop", Link::Loop),
    ] {
        let bytes = pcap(&frames(&pkts, link), false, false);
        v.push((name.into(), write(dir, &format!("{name}.pcap"), &bytes)));
    }
    v
}

/// The record blocks a spool gets for `cap` (fixed batch size, no age
/// limit): what `vmflow run` sends.
fn wire(cap: &Path) -> (u64, u64) {
    use vmflow::export::batcher::SpoolSink;
    use vmflow::export::spool::Spool;
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(vmflow::disk::real(), d.path(), 1 << 30).unwrap();
    let spool = Arc::new(Mutex::new(spool));
    let mut sink = SpoolSink::new(
        spool.clone(),
        Arc::new(tokio::sync::Notify::new()),
        256,
        Duration::from_secs(86_400),
    );
    let cfg = vmflow::config::Config::default();
    let r = vmflow::capture::replay(vec![cap.to_path_buf()], &cfg, &mut sink);
    assert!(r.error.is_none());
    let mut s = spool.lock().unwrap();
    let mut all = Vec::new();
    let mut n = 0;
    let mut at = 0;
    while let Some(seq) = s.next_after(at) {
        let b = s.read(seq).unwrap().unwrap();
        all.extend_from_slice(&b.records.to_le_bytes());
        all.extend_from_slice(&b.block);
        n += 1;
        at = seq;
    }
    (n, fnv(&all))
}

#[test]
fn replay_output_and_wire_blocks_are_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let mut got = BTreeMap::new();
    let ins = inputs(d.path());
    for (name, path) in &ins {
        let out = run(vmflow().arg("replay").arg(path));
        assert!(out.status.success(), "{name}");
        let lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
        got.insert(
            format!("replay {name}"),
            format!("{lines} {:016x}", fnv(&out.stdout)),
        );
    }
    let (batches, h) = wire(&ins[0].1);
    got.insert("wire synth-1.pcap".into(), format!("{batches} {h:016x}"));
    let text: String = got.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    let expected = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/expected.txt");
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::write(&expected, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&expected).unwrap();
    let differ: Vec<String> = text
        .lines()
        .zip(want.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  now {a}\n  was {b}"))
        .collect();
    assert!(
        text == want,
        "output changed (if intended, regenerate with GOLDEN_UPDATE=1 and say why):\n{}",
        differ.join("\n")
    );
}
