//! End to end on synthetic captures: exact ground truth, file splits, thread
//! counts, configuration errors.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn synth(
    dir: &Path,
    packets: u64,
    concurrent: u64,
    seed: u64,
    config: Option<&Path>,
) -> (PathBuf, PathBuf) {
    let cap = dir.join(format!("s{seed}.pcap"));
    let truth = dir.join(format!("s{seed}.truth"));
    let mut cmd = vmflow();
    cmd.args([
        "synth",
        "--packets",
        &packets.to_string(),
        "--concurrent",
        &concurrent.to_string(),
    ])
    .args(["--snaplen", "128", "--seed", &seed.to_string()])
    .arg("--out")
    .arg(&cap)
    .arg("--truth")
    .arg(&truth);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cap, truth)
}

fn raw_replay(files: &[PathBuf], extra: &[&str]) -> (Vec<u8>, String) {
    let out = run(vmflow().arg("replay").args(extra).args(files));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (out.stdout, err)
}

fn parse(ndjson: &[u8]) -> Vec<vmflow_proto::FlowRecord> {
    let mut v: Vec<vmflow_proto::FlowRecord> = std::str::from_utf8(ndjson)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    v.sort_by_key(|r| (r.flow_id, r.segment));
    v
}

#[test]
fn synthetic_capture_matches_ground_truth_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, truth) = synth(dir.path(), 300_000, 3_000, 1, None);
    let (out, err) = raw_replay(&[cap], &[]);
    let got = parse(&out);
    let want = parse(&std::fs::read(truth).unwrap());
    assert!(want.len() > 10_000, "a meaningful number of flows");
    assert_eq!(summary(&err, "packets"), Some(300_000));
    assert_eq!(summary(&err, "skipped"), Some(0));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    // The mix is what the generator promises.
    for (what, n) in [
        (
            "tcp fin",
            want.iter()
                .filter(|r| r.proto == 6 && r.end_reason == vmflow_proto::EndReason::Fin)
                .count(),
        ),
        (
            "tcp rst",
            want.iter()
                .filter(|r| r.end_reason == vmflow_proto::EndReason::Rst)
                .count(),
        ),
        ("udp", want.iter().filter(|r| r.proto == 17).count()),
        (
            "icmp",
            want.iter()
                .filter(|r| r.proto == 1 || r.proto == 58)
                .count(),
        ),
        ("ipv6", want.iter().filter(|r| r.ip_version == 6).count()),
        ("vlan", want.iter().filter(|r| r.vlan.is_some()).count()),
        (
            "inbound",
            want.iter()
                .filter(|r| r.direction == vmflow_proto::Direction::Inbound)
                .count(),
        ),
    ] {
        assert!(n > 50, "{what}: {n}");
    }
}

/// `synth --lengths short` (the shape where the cost per record shows) is
/// exact too, and its flows are as short as promised, the default's long.
#[test]
fn short_flows_match_ground_truth_and_are_short() {
    let dir = tempfile::tempdir().unwrap();
    let mut per_flow = Vec::new();
    for lengths in ["short", "long"] {
        let cap = dir.path().join(format!("{lengths}.pcap"));
        let truth = dir.path().join(format!("{lengths}.truth"));
        let out = run(vmflow()
            .args(["synth", "--packets", "200000", "--concurrent", "5000"])
            .args(["--snaplen", "128", "--lengths", lengths, "--out"])
            .arg(&cap)
            .arg("--truth")
            .arg(&truth));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (got, _) = raw_replay(&[cap], &[]);
        let want = parse(&std::fs::read(truth).unwrap());
        assert_eq!(parse(&got), want, "{lengths}");
        let flows = want.iter().filter(|r| r.segment == 0).count();
        per_flow.push(200_000.0 / flows as f64);
    }
    let [short, long] = per_flow[..] else {
        unreachable!()
    };
    assert!(
        (5.0..9.0).contains(&short),
        "short: {short:.1} packets a flow"
    );
    assert!(long > 12.0, "long: {long:.1} packets a flow");
}

#[test]
fn short_active_timeout_segments_match_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        b"[flow]\nactive_timeout = 0.5\nidle_timeout = 30\n",
    );
    let (cap, truth) = synth(dir.path(), 200_000, 500, 2, Some(&cfg));
    let (out, _) = raw_replay(&[cap], &["--config", cfg.to_str().unwrap()]);
    let got = parse(&out);
    let want = parse(&std::fs::read(truth).unwrap());
    assert!(want.iter().filter(|r| r.segment > 0).count() > 1_000);
    assert_eq!(got, want);
}

/// Splits a libpcap file into `n` files at record boundaries.
fn split_pcap(path: &Path, n: usize) -> Vec<PathBuf> {
    let bytes = std::fs::read(path).unwrap();
    let (hdr, mut rest) = bytes.split_at(24);
    let mut records = Vec::new();
    while rest.len() >= 16 {
        let incl = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
        records.push(&rest[..16 + incl]);
        rest = &rest[16 + incl..];
    }
    let per = records.len().div_ceil(n);
    records
        .chunks(per)
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = hdr.to_vec();
            for r in chunk {
                f.extend_from_slice(r);
            }
            write(path.parent().unwrap(), &format!("part{i}.pcap"), &f)
        })
        .collect()
}

#[test]
fn split_files_and_thread_counts_give_identical_output() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, _) = synth(dir.path(), 250_000, 2_000, 3, None);
    let (whole, _) = raw_replay(std::slice::from_ref(&cap), &["--threads", "1"]);
    let parts = split_pcap(&cap, 3);
    assert_eq!(parts.len(), 3);
    let (split, err) = raw_replay(&parts, &["--threads", "1"]);
    assert_eq!(summary(&err, "packets"), Some(250_000));
    assert!(whole == split, "splitting the capture changed the records");
    for t in ["2", "4"] {
        let (threaded, err) = raw_replay(std::slice::from_ref(&cap), &["--threads", t]);
        assert_eq!(summary(&err, "threads"), Some(t.parse().unwrap()));
        assert!(whole == threaded, "--threads {t} changed the records");
    }
}

/// The records of a libpcap file (header, then each record's bytes).
fn pcap_records(bytes: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let (hdr, mut rest) = bytes.split_at(24);
    let mut records = Vec::new();
    while rest.len() >= 16 {
        let incl = u32::from_le_bytes(rest[8..12].try_into().unwrap()) as usize;
        records.push(&rest[..16 + incl]);
        rest = &rest[16 + incl..];
    }
    (hdr, records)
}

fn ts_of(record: &[u8]) -> (u32, u32) {
    let w = |at: usize| u32::from_le_bytes(record[at..at + 4].try_into().unwrap());
    (w(0), w(4))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    ::zstd::encode_all(bytes, 1).unwrap()
}

/// `replay -` with `input` on standard input.
fn replay_stdin(input: &[u8], files: &[PathBuf]) -> std::process::Output {
    common::run_with_stdin(
        vmflow()
            .args(["replay", "--threads", "1"])
            .args(files)
            .arg("-"),
        input,
    )
}

#[test]
fn an_empty_standard_input_is_an_error_with_no_summary() {
    let out = replay_stdin(&[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("-: not a capture"), "{err}");
    assert!(
        !err.contains("packets="),
        "no summary of a run that read nothing: {err}"
    );
}

#[test]
fn compressed_and_piped_captures_give_identical_records() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, _) = synth(dir.path(), 50_000, 500, 11, None);
    let plain = std::fs::read(&cap).unwrap();
    let (whole, _) = raw_replay(std::slice::from_ref(&cap), &["--threads", "1"]);
    assert!(!whole.is_empty());
    // Told by the magic bytes, not the name: neither file says it.
    let gz = write(dir.path(), "g.cap", &gzip(&plain));
    let zst = write(dir.path(), "z.cap", &zstd(&plain));
    for f in [&gz, &zst] {
        let (got, err) = raw_replay(std::slice::from_ref(f), &["--threads", "1"]);
        assert_eq!(summary(&err, "packets"), Some(50_000), "{err}");
        assert!(
            got == whole,
            "{}: records differ from the plain file",
            f.display()
        );
    }
    for input in [plain.clone(), gzip(&plain), zstd(&plain)] {
        let out = replay_stdin(&input, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(out.stdout == whole, "standard input changed the records");
    }
    // Standard input can be read once only.
    let out = run(vmflow().args(["replay", "-", "-"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input"));
}

#[test]
fn a_truncated_compressed_capture_is_an_error_that_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, _) = synth(dir.path(), 50_000, 500, 12, None);
    let plain = std::fs::read(&cap).unwrap();
    let (_, records) = pcap_records(&plain);
    for (name, packed) in [
        ("cut.pcap.gz", gzip(&plain)),
        ("cut.pcap.zst", zstd(&plain)),
    ] {
        let cut = write(dir.path(), name, &packed[..packed.len() * 2 / 3]);
        let out = run(vmflow().args(["replay", "--threads", "1"]).arg(&cut));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {err}");
        assert!(err.contains(name) && err.contains("truncated"), "{err}");
        // Every complete record in the bytes decompressed before the damage.
        let at: usize = err
            .split("after ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no offset in {err}"));
        let mut end = 24;
        let complete = records
            .iter()
            .take_while(|r| {
                end += r.len();
                end <= at
            })
            .count() as u64;
        assert!(complete > 0 && complete < 50_000, "{name}: {complete}");
        assert_eq!(summary(&err, "packets"), Some(complete), "{name}: {err}");
        let pkts: u64 = parse(&out.stdout)
            .iter()
            .map(|r| r.fwd_packets + r.rev_packets)
            .sum();
        assert_eq!(pkts, complete, "{name}: every packet read is in a record");
    }
}

#[test]
fn files_out_of_order_or_interleaved_are_merged_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, _) = synth(dir.path(), 100_000, 1_000, 13, None);
    let (whole, _) = raw_replay(std::slice::from_ref(&cap), &["--threads", "1"]);
    let bytes = std::fs::read(&cap).unwrap();
    let (hdr, records) = pcap_records(&bytes);
    assert!(records.windows(2).all(|w| ts_of(w[0]) <= ts_of(w[1])));
    // Packets of the same time stay in one file: across files the merge
    // breaks such ties by file order, which these shuffles do not keep.
    let groups: Vec<&[&[u8]]> = records.chunk_by(|a, b| ts_of(a) == ts_of(b)).collect();
    assert!(groups.len() > 1_000);
    let file = |name: &str, groups: &mut dyn Iterator<Item = &&[&[u8]]>| {
        let mut f = hdr.to_vec();
        groups.for_each(|g| g.iter().for_each(|r| f.extend_from_slice(r)));
        write(dir.path(), name, &f)
    };
    let per = groups.len().div_ceil(4);
    let parts: Vec<PathBuf> = groups
        .chunks(per)
        .enumerate()
        .map(|(i, c)| file(&format!("piece{i}.pcap"), &mut c.iter()))
        .collect();
    let shuffled = [&parts[2], &parts[0], &parts[3], &parts[1]].map(|p| p.clone());
    let (got, err) = raw_replay(&shuffled, &["--threads", "1"]);
    assert_eq!(summary(&err, "packets"), Some(100_000));
    assert!(
        got == whole,
        "pieces given out of order changed the records"
    );
    // Two captures over the same time (every other time each), one of
    // them compressed and one on standard input.
    let even = file("even.pcap", &mut groups.iter().step_by(2));
    let odd = file("odd.pcap", &mut groups.iter().skip(1).step_by(2));
    let (got, _) = raw_replay(&[odd.clone(), even.clone()], &["--threads", "1"]);
    assert!(
        got == whole,
        "interleaved captures differ from the merged one"
    );
    let out = replay_stdin(&gzip(&std::fs::read(&odd).unwrap()), &[even]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == whole,
        "merging with standard input changed the records"
    );
}

#[test]
fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, _) = synth(dir.path(), 1_000, 10, 4, None);
    for (text, needle) in [
        ("[flow]\nidle_timout = 5\n", "idle_timout"),
        ("[flow]\nactive_timeout = 0\n", "flow.active_timeout"),
        ("[pipeline]\nthreads = \"four\"\n", "threads"),
        ("local_nets = [\"10.0.0.0/40\"]\n", "local_nets"),
    ] {
        let cfg = write(dir.path(), "bad.toml", text.as_bytes());
        let out = run(vmflow().arg("replay").arg("--config").arg(&cfg).arg(&cap));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            err.contains(needle) && err.contains("bad.toml"),
            "{text}: {err}"
        );
    }
    let out = run(vmflow()
        .args(["replay", "--local-net", "nonsense"])
        .arg(&cap));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));
    let out = run(vmflow().args(["replay", "/nonexistent/file.pcap"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.pcap"));
    // Not a capture at all: refused before the run, the good file unread.
    let junk = write(dir.path(), "junk.bin", &[0x42; 64]);
    let out = run(vmflow().arg("replay").arg(&cap).arg(&junk));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("junk.bin") && err.contains("not a capture file"),
        "{err}"
    );
    assert!(out.stdout.is_empty() && !err.contains("packets="), "{err}");
}

#[test]
fn a_corrupt_second_file_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, _) = synth(dir.path(), 20_000, 100, 5, None);
    // A capture header, then garbage: found corrupt once reading reaches
    // it (a file that is no capture at all is refused before the run).
    let mut bad = std::fs::read(&cap).unwrap()[..24].to_vec();
    bad.extend_from_slice(&[0x42; 64]);
    let junk = write(dir.path(), "junk.pcap", &bad);
    let out = run(vmflow().arg("replay").arg(&cap).arg(&junk));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("junk.pcap"), "{err}");
    assert_eq!(summary(&err, "packets"), Some(20_000));
    let recs = parse(&out.stdout);
    let pkts: u64 = recs.iter().map(|r| r.fwd_packets + r.rev_packets).sum();
    assert_eq!(pkts, 20_000, "every packet of the good file is in a record");
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    let out = run(vmflow().arg("--version"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with(&format!(
            "vmflow {} (commit {}",
            env!("CARGO_PKG_VERSION"),
            head.trim()
        )),
        "{text}"
    );
}

#[test]
fn demo_without_a_dir_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(vmflow()
        .env("TMPDIR", tmp.path())
        .args(["demo", "--packets", "3000"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("removed at the end"), "{text}");
    assert!(text.contains("ground truth: yes"), "{text}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(vmflow()
        .args(["demo", "--packets", "20000", "--dir"])
        .arg(dir.path()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("equal to the generator's ground truth: yes"),
        "{text}"
    );
}

#[test]
fn table_pressure_is_deterministic_across_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, _) = synth(dir.path(), 150_000, 3_000, 6, None);
    let cfg = write(
        dir.path(),
        "small.toml",
        b"[flow]\nmax_flows = 800\nemergency_threshold = 0.5\nemergency_idle_timeout = 0.02\n",
    );
    let c = cfg.to_str().unwrap();
    let (one, err) = raw_replay(
        std::slice::from_ref(&cap),
        &["--threads", "1", "--config", c],
    );
    assert!(summary(&err, "evicted").unwrap() > 100, "{err}");
    assert!(summary(&err, "emergency_expired").unwrap() > 100, "{err}");
    assert_eq!(summary(&err, "record_packets"), Some(150_000));
    let (three, _) = raw_replay(
        std::slice::from_ref(&cap),
        &["--threads", "3", "--config", c],
    );
    assert!(one == three, "eviction under --threads 3 differs");
}

#[test]
fn the_block_format_holds_the_same_records_in_a_fraction_of_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, _) = synth(dir.path(), 200_000, 2_000, 11, None);
    let (ndjson, _) = raw_replay(std::slice::from_ref(&cap), &[]);
    let blocks = dir.path().join("r.blocks");
    let (_, err) = raw_replay(
        std::slice::from_ref(&cap),
        &["--format", "blocks", "--out", blocks.to_str().unwrap()],
    );
    let records = summary(&err, "records").unwrap();
    let size = std::fs::metadata(&blocks).unwrap().len();
    assert!(
        size * 10 < ndjson.len() as u64,
        "{size} bytes of blocks for {} of NDJSON",
        ndjson.len()
    );
    // `cat` prints them back: the same records (in time order within each block).
    let out = run(vmflow().arg("cat").arg(&blocks));
    let cerr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cerr}");
    assert_eq!(summary(&cerr, "records"), Some(records), "{cerr}");
    assert_eq!(summary(&cerr, "damaged_bytes"), Some(0), "{cerr}");
    assert!(
        parse(&out.stdout) == parse(&ndjson),
        "cat of the blocks differs from the NDJSON replay"
    );
    // Damage: every intact block still printed, the loss told, exit non-zero.
    let mut bytes = std::fs::read(&blocks).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let damaged = write(dir.path(), "d.blocks", &bytes);
    let out = run(vmflow().arg("cat").arg(&damaged));
    let derr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{derr}");
    assert!(
        derr.contains("d.blocks") && derr.contains("damaged"),
        "{derr}"
    );
    let got = parse(&out.stdout);
    assert!(
        got.len() as u64 >= records - 4096 && (got.len() as u64) < records,
        "{} of {records} records after one damaged byte",
        got.len()
    );
    let whole = parse(&ndjson);
    assert!(got.iter().all(|r| whole
        .binary_search_by_key(&(r.flow_id, r.segment), |w| (w.flow_id, w.segment))
        .is_ok()));
    // Not a record file: refused by name.
    let out = run(vmflow().arg("cat").arg(&cap));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("s11.pcap") && e.contains("not a vmflow"),
        "{e}"
    );
}

/// An RFC 4180 line reader written apart from the writer: fields, with
/// `None` for an empty unquoted one.
fn csv_fields(line: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut in_quotes, mut chars) = (false, false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => in_quotes = false,
            ('"', false) if field.is_empty() => (quoted, in_quotes) = (true, true),
            (',', false) => {
                out.push((quoted || !field.is_empty()).then(|| std::mem::take(&mut field)));
                quoted = false;
            }
            (c, _) => field.push(c),
        }
    }
    out.push((quoted || !field.is_empty()).then_some(field));
    out
}

#[test]
fn csv_rows_equal_the_ndjson_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", b"[flow]\nactive_timeout = 0.5\n");
    let (cap, _) = synth(dir.path(), 50_000, 500, 5, Some(&cfg));
    let c = ["--config", cfg.to_str().unwrap()];
    let (ndjson, _) = raw_replay(std::slice::from_ref(&cap), &c);
    let (csv, _) = raw_replay(&[cap], &[&c[..], &["--format", "csv"]].concat());
    let text = String::from_utf8(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = csv_fields(lines.next().unwrap())
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let mut from_csv: Vec<vmflow_proto::FlowRecord> = lines
        .map(|l| {
            let fields = csv_fields(l);
            assert_eq!(fields.len(), header.len(), "{l}");
            // Back to the NDJSON shape: numbers and booleans bare, text
            // quoted, empty fields absent.
            let mut obj = serde_json::Map::new();
            for (k, v) in header.iter().zip(fields) {
                let Some(v) = v else { continue };
                let value = match k.as_str() {
                    "src_addr" | "dst_addr" | "direction" | "end_reason" | "rule" | "decision" => {
                        serde_json::Value::String(v)
                    }
                    _ => serde_json::from_str(&v).unwrap_or_else(|e| panic!("{k}={v}: {e}")),
                };
                obj.insert(k.clone(), value);
            }
            serde_json::from_value(serde_json::Value::Object(obj)).unwrap()
        })
        .collect();
    from_csv.sort_by_key(|r| (r.flow_id, r.segment));
    let want = parse(&ndjson);
    assert!(want.iter().filter(|r| r.segment > 0).count() > 10);
    assert!(want.len() > 1_000);
    assert_eq!(from_csv, want);
    // The header is the NDJSON field order.
    let first = std::str::from_utf8(ndjson.split(|&b| b == b'\n').next().unwrap()).unwrap();
    let at: Vec<usize> = header
        .iter()
        .filter_map(|k| first.find(&format!("\"{k}\":")))
        .collect();
    assert_eq!(
        at.len(),
        header.len() - 3,
        "all but gap, rule, decision: {first}"
    );
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{header:?} vs {first}");
}
