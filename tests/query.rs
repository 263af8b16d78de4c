//! `vmflow query` over a real collector's output: every grouping and every
//! filter against an independent, naive computation (serde_json values,
//! flows as distinct flow ids per stream), CSV against NDJSON, standard
//! input, and `--agents` against the collector's state.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use common::fleet::*;
use common::*;
use serde_json::Value;

/// One collector output for every test in this file (written once).
fn fleet() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        collected_fleet(d.path());
        d
    })
    .path()
}

fn out() -> std::path::PathBuf {
    fleet().join("out")
}

fn query(args: &[&str]) -> (String, String) {
    let o = run(vmflow().arg("query").args(args));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?}: {err}");
    (String::from_utf8(o.stdout).unwrap(), err)
}

const GROUPS: [&str; 10] = [
    "src",
    "dst",
    "remote",
    "local",
    "service",
    "port",
    "proto",
    "agent",
    "pair",
    "direction",
];

#[test]
fn every_grouping_equals_a_naive_count() {
    let recs = naive_records(&out());
    assert!(recs.len() > 5_000);
    // Long flows are split: records and flows differ, which `flows` must see.
    let split = recs.iter().filter(|r| u(&r.v, "segment") > 0).count();
    assert!(split > 100, "{split} later segments");
    for by in GROUPS {
        let (rows, got) = query_groups(by, &[&out()], &[]);
        let want = naive_groups(by, recs.iter());
        assert!(
            want.len() > 1 || by == "proto",
            "{by}: {} groups",
            want.len()
        );
        assert_eq!(got, want, "--group-by {by}");
        // Largest first, by bytes.
        let bytes: Vec<u64> = rows.iter().map(|r| u(r, "bytes")).collect();
        assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "{by}: {bytes:?}");
    }
    let total: u64 = naive_groups("agent", recs.iter())
        .values()
        .map(|t| t[1])
        .sum();
    let records = recs.len() as u64;
    assert!(total < records, "flows {total} records {records}");
    // Without --group-by: the one row of everything, flows counted once.
    let (table, _) = query(&[out().to_str().unwrap()]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], total.to_string(), "{table}");
    assert_eq!(row[1], records.to_string(), "{table}");
}

#[test]
fn sort_and_top_pick_the_largest_groups() {
    let recs = naive_records(&out());
    for (sort, col) in [("bytes", 3), ("packets", 2), ("flows", 1), ("records", 0)] {
        let want = naive_groups("service", recs.iter());
        let mut order: Vec<(&String, &[u64; 8])> = want.iter().collect();
        order.sort_by(|a, b| b.1[col].cmp(&a.1[col]));
        let (rows, _) = query_groups("service", &[&out()], &["--sort", sort, "--top", "3"]);
        assert_eq!(rows.len(), 3);
        let got: Vec<u64> = rows
            .iter()
            .map(|r| u(r, ["records", "flows", "packets", "bytes"][col]))
            .collect();
        let top: Vec<u64> = order.iter().take(3).map(|(_, t)| t[col]).collect();
        assert_eq!(got, top, "--sort {sort}");
    }
}

/// `--output ndjson` without grouping: the matching records, as lines.
fn matching(extra: &[&str]) -> BTreeMap<String, u64> {
    let (text, _) = query(&[&[out().to_str().unwrap(), "--output", "ndjson"], extra].concat());
    common::agents::multiset(&text)
}

fn naive_matching(keep: impl Fn(&Naive) -> bool) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in naive_records(&out()).iter().filter(|r| keep(r)) {
        *m.entry(r.v.to_string()).or_insert(0) += 1;
    }
    m
}

#[test]
fn each_filter_selects_what_a_naive_filter_selects() {
    let recs = naive_records(&out());
    let all = recs.len() as u64;
    let (lo, hi) = (
        recs.iter().map(|r| u(&r.v, "first_ns")).min().unwrap(),
        recs.iter().map(|r| u(&r.v, "last_ns")).max().unwrap(),
    );
    let third = lo + (hi - lo) / 3;
    let two_thirds = lo + 2 * (hi - lo) / 3;
    let secs = |ns: u64| format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000);
    // RFC 3339 with an offset, for the same instant.
    let rfc = |ns: u64| {
        let s = ns / 1_000_000_000;
        let days = (s / 86_400) as i64;
        // Howard Hinnant's civil_from_days, apart from the agent's copy.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let t = s % 86_400 + 3_600; // shown at +01:00
        let (y, m, d, t) = if t >= 86_400 {
            panic!("test data near midnight")
        } else {
            (y, m, d, t)
        };
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}+01:00",
            t / 3_600,
            t % 3_600 / 60,
            t % 60,
            ns % 1_000_000_000
        )
    };
    let host = s(&recs[recs.len() / 2].v, "dst_addr");
    type Keep = Box<dyn Fn(&Naive) -> bool>;
    let cases: Vec<(Vec<String>, Keep)> = vec![
        (
            vec!["--since".into(), secs(third)],
            Box::new(move |r| u(&r.v, "last_ns") >= third),
        ),
        (
            vec!["--until".into(), rfc(two_thirds)],
            Box::new(move |r| u(&r.v, "first_ns") < two_thirds),
        ),
        (
            vec!["--host".into(), host.clone()],
            Box::new({
                let h = host.clone();
                move |r| s(&r.v, "src_addr") == h || s(&r.v, "dst_addr") == h
            }),
        ),
        (
            vec![
                "--host".into(),
                "198.51.100.0/24".into(),
                "--host".into(),
                "2001:db8::/32".into(),
            ],
            Box::new(|r| {
                let inside = |a: String| a.starts_with("198.51.100.") || a.starts_with("2001:db8:");
                inside(s(&r.v, "src_addr")) || inside(s(&r.v, "dst_addr"))
            }),
        ),
        (
            vec!["--port".into(), "443".into()],
            Box::new(|r| u(&r.v, "src_port") == 443 || u(&r.v, "dst_port") == 443),
        ),
        (
            vec!["--proto".into(), "udp".into()],
            Box::new(|r| u(&r.v, "proto") == 17),
        ),
        (
            vec!["--direction".into(), "inbound".into()],
            Box::new(|r| s(&r.v, "direction") == "inbound"),
        ),
        (
            vec!["--agent".into(), AGENTS[1].into()],
            Box::new(|r| r.agent == AGENTS[1]),
        ),
        (
            vec![
                "--proto".into(),
                "tcp".into(),
                "--direction".into(),
                "outbound".into(),
                "--since".into(),
                secs(third),
            ],
            Box::new(move |r| {
                u(&r.v, "proto") == 6
                    && s(&r.v, "direction") == "outbound"
                    && u(&r.v, "last_ns") >= third
            }),
        ),
    ];
    for (args, keep) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let want = naive_matching(&keep);
        let n: u64 = want.values().sum();
        assert!(
            n > 0 && n < all,
            "{args:?} keeps {n} of {all}: not a test of it"
        );
        assert_eq!(matching(&args), want, "{args:?}");
        // Grouped, the same filter gives the naive groups of the same records.
        let (_, got) = query_groups("agent", &[&out()], &args);
        assert_eq!(
            got,
            naive_groups("agent", recs.iter().filter(|r| keep(r))),
            "{args:?}"
        );
    }
}

#[test]
fn csv_output_equals_ndjson_output() {
    let o = out();
    let dir = o.to_str().unwrap();
    let (nd, _) = query(&[
        dir,
        "--group-by",
        "pair",
        "--top",
        "50",
        "--output",
        "ndjson",
    ]);
    let (csv, _) = query(&[dir, "--group-by", "pair", "--top", "50", "--output", "csv"]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let from_csv: Vec<Value> = lines
        .map(|l| {
            let mut obj = serde_json::Map::new();
            for (k, v) in header.iter().zip(l.split(',')) {
                let val = v
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(v));
                obj.insert(k.to_string(), val);
            }
            Value::Object(obj)
        })
        .collect();
    let from_nd: Vec<Value> = nd
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(from_nd.len(), 50);
    assert_eq!(from_csv, from_nd);
    // Records as CSV: one line per matching record, the replay's header.
    let (records, _) = query(&[dir, "--port", "53", "--output", "csv"]);
    let n = matching(&["--port", "53"]).values().sum::<u64>();
    assert_eq!(records.lines().count() as u64, n + 1);
    assert!(records.starts_with("flow_id,segment,final,"));
}

#[test]
fn files_and_standard_input_read_like_the_directory() {
    let o = out();
    let recs = naive_records(&o);
    let mut files = Vec::new();
    let mut text = String::new();
    for e in std::fs::read_dir(o.join("agent-1")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ndjson") {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
            files.push(p);
        }
    }
    let want = naive_groups("service", recs.iter().filter(|r| r.agent == "agent-1"));
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    assert_eq!(query_groups("service", &paths, &[]).1, want);
    let o = common::run_with_stdin(
        vmflow().args([
            "query",
            "-",
            "--group-by",
            "service",
            "--output",
            "ndjson",
            "--top",
            "0",
        ]),
        text.as_bytes(),
    );
    assert!(o.status.success());
    let rows = String::from_utf8(o.stdout).unwrap().lines().count();
    assert_eq!(rows, want.len());
    // A half-written last line is skipped and said so, not an error.
    let torn = fleet().join("torn.ndjson");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let keep = bytes.len() - 10;
    bytes.truncate(keep);
    std::fs::write(&torn, &bytes).unwrap();
    let (_, err) = query(&[torn.to_str().unwrap()]);
    assert!(err.contains("1 lines are not flow records"), "{err}");
}

#[test]
fn agents_lists_what_the_collector_keeps() {
    let o = out();
    let (text, _) = query(&[o.to_str().unwrap(), "--agents", "--output", "ndjson"]);
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let recs = naive_records(&o);
    let mut names: Vec<String> = rows.iter().map(|r| s(r, "agent")).collect();
    names.sort();
    let mut want_names: Vec<String> = AGENTS.iter().map(|a| a.to_string()).collect();
    want_names.sort();
    assert_eq!(names, want_names);
    for r in &rows {
        let agent = s(r, "agent");
        let dir = std::path::PathBuf::from(s(r, "dir"));
        assert_eq!(
            u(r, "records"),
            recs.iter().filter(|n| n.agent == agent).count() as u64,
            "{agent}"
        );
        assert_eq!(
            r["epochs"][0]["last_seq"].as_u64(),
            Some(common::agents::collector_seq(
                dir.parent().unwrap(),
                dir.file_name().unwrap().to_str().unwrap()
            )),
        );
        assert_eq!(u(r, "source_drops"), 0);
        assert!(u(r, "last_seen_ns") > 0);
    }
    let (table, _) = query(&[o.to_str().unwrap(), "--agents"]);
    assert!(table.starts_with("AGENT"), "{table}");
    assert!(table.contains("Web.2"), "{table}");
}
