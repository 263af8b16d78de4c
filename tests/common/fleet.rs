//! A collector's output directory written by the real binaries (two agents
//! over mutual TLS, one with a name the collector must percent-encode, short
//! active timeouts so long flows are split into segments), and an
//! independent reading of it with serde_json for the query and report tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::agents::*;

pub const AGENTS: [&str; 2] = ["agent-1", "Web.2"];

/// `OUT` with both agents' records delivered and the agents stopped.
pub fn collected_fleet(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    certs_init(&certs, &AGENTS);
    let out = dir.join("out");
    let (mut c, addr) = collector(&certs, &out, "127.0.0.1:0");
    for (i, name) in AGENTS.iter().enumerate() {
        let cap = synth_cap_seeded(
            dir,
            &format!("{i}.pcap"),
            60_000 + 20_000 * i as u64,
            21 + i as u64,
        );
        let source = format!("[flow]\nactive_timeout = 0.5\n[source]\nfiles = [{cap:?}]\n");
        let cfg = agent_config_with(dir, &format!("a{i}"), &source, &certs, name, &addr, "");
        let mut a = agent(&cfg);
        assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
        assert_eq!(stat(&a.text(), "dropped_records"), 0);
    }
    c.kill();
    out
}

/// A collector directory name back to the agent's name (percent-decoding).
fn agent_name(dir_name: &str) -> String {
    let b = dir_name.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&dir_name[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// One record as read naively: the JSON, its agent and its stream (directory).
pub struct Naive {
    pub v: Value,
    pub agent: String,
    pub stream: PathBuf,
}

/// Every record under `out` (`OUT/<agent>/…/*.ndjson`).
pub fn naive_records(out: &Path) -> Vec<Naive> {
    fn walk(p: &Path, files: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, files);
            } else if p.extension().is_some_and(|x| x == "ndjson") {
                files.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(out, &mut files);
    let mut recs = Vec::new();
    for f in files {
        let rel = f.strip_prefix(out).unwrap();
        let agent = agent_name(
            rel.components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap(),
        );
        let text = std::fs::read_to_string(&f).unwrap();
        for l in text.lines() {
            recs.push(Naive {
                v: serde_json::from_str(l).unwrap(),
                agent: agent.clone(),
                stream: f.parent().unwrap().to_path_buf(),
            });
        }
    }
    recs
}

pub fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

pub fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .to_string()
}

/// The query's group key of a record, as the README defines it (`None`:
/// the `-` group), as the JSON value the query's NDJSON output carries.
pub fn naive_key(by: &str, r: &Naive) -> Vec<Value> {
    let v = &r.v;
    let dir = s(v, "direction");
    let (src, dst) = (Value::from(s(v, "src_addr")), Value::from(s(v, "dst_addr")));
    match by {
        "src" => vec![src],
        "dst" => vec![dst],
        "remote" => vec![match dir.as_str() {
            "outbound" => dst,
            "inbound" => src,
            _ => Value::Null,
        }],
        "local" => vec![match dir.as_str() {
            "outbound" | "internal" => src,
            "inbound" => dst,
            _ => Value::Null,
        }],
        "service" => {
            let p = u(v, "proto");
            let name = match p {
                6 => "tcp".to_string(),
                17 => "udp".to_string(),
                1 => "icmp".to_string(),
                58 => "icmpv6".to_string(),
                n => n.to_string(),
            };
            vec![Value::from(if p == 6 || p == 17 {
                format!("{name}/{}", u(v, "dst_port"))
            } else {
                name
            })]
        }
        "port" => vec![Value::from(u(v, "dst_port"))],
        "proto" => vec![Value::from(u(v, "proto"))],
        "agent" => vec![Value::from(r.agent.clone())],
        "pair" => vec![src, dst],
        "direction" => vec![Value::from(dir)],
        other => panic!("no key {other}"),
    }
}

/// Per group: records, flows (distinct flow_id per stream), packets,
/// bytes, fwd_bytes, rev_bytes, first_ns, last_ns.
pub fn naive_groups<'a>(
    by: &str,
    recs: impl Iterator<Item = &'a Naive>,
) -> std::collections::BTreeMap<String, [u64; 8]> {
    use std::collections::{BTreeMap, BTreeSet};
    type Flows = BTreeSet<(PathBuf, u64)>;
    let mut m: BTreeMap<String, ([u64; 8], Flows)> = BTreeMap::new();
    for r in recs {
        let k = Value::from(naive_key(by, r)).to_string();
        let (t, flows) = m
            .entry(k)
            .or_insert(([0, 0, 0, 0, 0, 0, u64::MAX, 0], BTreeSet::new()));
        let v = &r.v;
        t[0] += 1;
        flows.insert((r.stream.clone(), u(v, "flow_id")));
        t[2] += u(v, "fwd_packets") + u(v, "rev_packets");
        t[3] += u(v, "fwd_bytes") + u(v, "rev_bytes");
        t[4] += u(v, "fwd_bytes");
        t[5] += u(v, "rev_bytes");
        t[6] = t[6].min(u(v, "first_ns"));
        t[7] = t[7].max(u(v, "last_ns"));
    }
    m.into_iter()
        .map(|(k, (mut t, flows))| {
            t[1] = flows.len() as u64;
            (k, t)
        })
        .collect()
}

/// `vmflow query … --output ndjson` grouped by `by`, as `naive_groups` has it.
pub fn query_groups(
    by: &str,
    paths: &[&Path],
    extra: &[&str],
) -> (Vec<Value>, std::collections::BTreeMap<String, [u64; 8]>) {
    let o = super::run(
        super::vmflow()
            .arg("query")
            .args(paths)
            .args(["--group-by", by, "--output", "ndjson"])
            .args(if extra.contains(&"--top") {
                &[][..]
            } else {
                &["--top", "0"]
            })
            .args(extra),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cols: Vec<&str> = if by == "pair" {
        vec!["src", "dst"]
    } else {
        vec![by]
    };
    let map = rows
        .iter()
        .map(|r| {
            let key =
                Value::from(cols.iter().map(|c| r[*c].clone()).collect::<Vec<_>>()).to_string();
            let t = [
                "records",
                "flows",
                "packets",
                "bytes",
                "fwd_bytes",
                "rev_bytes",
                "first_ns",
                "last_ns",
            ]
            .map(|c| u(r, c));
            (key, t)
        })
        .collect();
    (rows, map)
}
