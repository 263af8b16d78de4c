//! Azure NSG (version 2) and VNet flow logs as a source, against Azurite:
//! a generator writes hourly PT1H.json blobs block by block as the service
//! does while the agent follows them; the agent is killed hard mid-stream
//! and restarted, and the collector ends up with exactly the records the
//! generator's own model says (nothing lost, nothing doubled). Damaged
//! blocks, a rewritten blob and a shrunk block list are counted and logged,
//! and the agent keeps going.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::agents::*;
use common::azurite::*;
use common::flowlogs::*;
use common::scrape::{metrics_addr, scrape};
use common::*;
use vmflow::azure::blob::{BlobAuth, BlobClient};
use vmflow_proto::FlowRecord;

const CONTAINER: &str = "insights-logs-flowlogflowevent";
/// 2 December 2026, 10:50:00 UTC: the rounds cross into the next hour.
const T0_MS: u64 = 1_796_208_600_000;
const ROUND_MS: u64 = 60_000;

fn client(az: &Azurite) -> BlobClient {
    BlobClient::new(&az.account_url, CONTAINER, BlobAuth::Sas(full_sas())).unwrap()
}

/// A collector and an agent following the container (debug logs: each
/// read is a line the test can wait for).
fn rig(dir: &Path, az: &Azurite, extra: &str) -> (Proc, PathBuf, PathBuf) {
    rig_with(dir, az, extra, "")
}

/// The same with `tables` (TOML sections) after the agent's own.
fn rig_with(dir: &Path, az: &Azurite, extra: &str, tables: &str) -> (Proc, PathBuf, PathBuf) {
    let certs = dir.join("certs");
    certs_init(&certs, &["agent-1"]);
    let out = dir.join("out");
    let (collector, addr) = collector(&certs, &out, "127.0.0.1:0");
    let sas_file = write(dir, "sas", full_sas().as_bytes());
    let source = format!(
        "[[source.flowlog]]\naccount_url = {:?}\ncontainer = {CONTAINER:?}\nsas_token_file = {sas_file:?}\n\
         poll_interval = 0.02\nretention = 1000000000\n{extra}",
        az.account_url
    );
    let cfg = agent_config_with(
        dir,
        "a",
        &source,
        &certs,
        "agent-1",
        &addr,
        &format!("batch_records = 16\n{tables}"),
    );
    (collector, out, cfg)
}

fn start(cfg: &Path) -> Proc {
    Proc::spawn(
        vmflow()
            .env("RUST_LOG", "info,vmflow::follow::flowlog=debug")
            .arg("run")
            .arg("--config")
            .arg(cfg),
    )
}

fn multiset_of(records: &[FlowRecord]) -> BTreeMap<String, u64> {
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    multiset(&text)
}

fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

/// Waits until the collector holds at least `n` records.
fn wait_collected(out: &Path, n: u64, agent: &Proc) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = collected(out, "agent-1");
        if total(&got) >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the collector has {} of {n} records; agent log:\n{}",
            total(&got),
            agent.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The flows of the test: per NIC, a few new ones each round (allowed ones
/// begin, continue and end over a few rounds; some are denied), every one
/// finished before the last round.
fn plan(nics: &[Nic], rounds: u64) -> Vec<Flow> {
    let mut rng = Rng(0x5eed_f10e);
    let mut flows = Vec::new();
    for (n, nic) in nics.iter().enumerate() {
        for r in 0..rounds - 6 {
            for k in 0..3 {
                let denied = rng.below(5) == 0;
                let inbound = rng.below(2) == 0;
                let local: std::net::IpAddr = format!("10.0.{n}.4").parse().unwrap();
                let remote: std::net::IpAddr =
                    format!("203.0.113.{}", 1 + rng.below(200)).parse().unwrap();
                let (src, dst) = if inbound {
                    (remote, local)
                } else {
                    (local, remote)
                };
                let at = |round: u64, rng: &mut Rng| {
                    T0_MS + round * ROUND_MS - 50_000 + rng.below(40_000)
                };
                let mut tuples = Vec::new();
                if denied {
                    tuples.push((at(r, &mut rng), 'D', [0; 4]));
                } else {
                    tuples.push((at(r, &mut rng), 'B', [0; 4]));
                    let len = 1 + rng.below(5);
                    for j in 1..=len {
                        let st = if j == len { 'E' } else { 'C' };
                        let c = [
                            1 + rng.below(50),
                            100 + rng.below(100_000),
                            rng.below(50),
                            rng.below(100_000),
                        ];
                        tuples.push((at(r + j, &mut rng), st, c));
                    }
                }
                flows.push(Flow {
                    mac: nic.mac.clone(),
                    kind: nic.kind,
                    proto: if rng.below(4) == 0 { 17 } else { 6 },
                    src,
                    sport: (20_000 + r * 10 + k) as u16,
                    dst,
                    dport: if inbound { 22 } else { 443 },
                    inbound,
                    rule: if denied {
                        "DefaultRule_DenyAllInBound".into()
                    } else if inbound {
                        "UserRule_AllowSsh".into()
                    } else {
                        "DefaultRule_AllowInternetOutBound".into()
                    },
                    tuples,
                });
            }
        }
    }
    flows
}

/// The record (one block) each NIC writes in `round`: every tuple whose
/// time falls in that round.
fn round_tuples(flows: &[Flow], mac: &str, round: u64) -> Vec<(String, String)> {
    let (from, to) = (
        T0_MS + round * ROUND_MS - ROUND_MS,
        T0_MS + round * ROUND_MS,
    );
    let mut out = Vec::new();
    for f in flows.iter().filter(|f| f.mac == mac) {
        for (i, t) in f.tuples.iter().enumerate() {
            if (from..to).contains(&t.0) {
                out.push((f.rule.clone(), f.tuple(i)));
            }
        }
    }
    out
}

/// Writes `round` for every NIC; the blob each record went to and how many
/// blocks (opening and records, not the closing) it now has.
fn write_round(
    c: &mut BlobClient,
    nics: &mut [Nic],
    flows: &[Flow],
    round: u64,
    blocks: &mut BTreeMap<String, usize>,
) -> Vec<(String, usize)> {
    let mut written = Vec::new();
    for nic in nics.iter_mut() {
        let tuples = round_tuples(flows, &nic.mac, round);
        if tuples.is_empty() {
            continue;
        }
        let name = nic.append(c, T0_MS + round * ROUND_MS - 1, &tuples);
        let n = blocks.entry(name.clone()).or_insert(1);
        *n += 1;
        written.push((name, *n));
    }
    written
}

#[test]
fn flow_logs_followed_while_written_are_delivered_exactly_once_across_a_hard_kill() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let az = Azurite::start();
    let mut c = client(&az);
    c.create_container().unwrap();
    let mut nics = vec![
        Nic::new(
            Kind::Vnet,
            "000D3A000001",
            "flowLogResourceID=/SUBSCRIPTIONS/S/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_EASTUS/FLOWLOGS/FL/",
        ),
        Nic::new(
            Kind::NsgV2,
            "000D3A000002",
            "resourceId=/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG/",
        ),
    ];
    // Not a flow log: never read.
    c.upload("insights-logs-readme.txt", b"not a flow log")
        .unwrap();
    let rounds = 30;
    let flows = plan(&nics, rounds);
    let mut truth: Vec<FlowRecord> = flows.iter().flat_map(Flow::truth).collect();
    // Remotes 203.0.113.1-15 are on a watchlist: their records carry it,
    // and each raises one watchlist observation, shipped with it.
    let listed = |r: &FlowRecord| {
        let remote = match r.direction {
            vmflow_proto::Direction::Inbound => r.src_addr,
            _ => r.dst_addr,
        };
        matches!(remote, std::net::IpAddr::V4(a) if a.octets()[..3] == [203, 0, 113] && a.octets()[3] < 16)
    };
    // A country database puts the remotes in four countries by quarter of
    // 203.0.113.0/24; the SSH services hear from all four before and after
    // the kill, so each new country is raised once only if the observer's
    // tables survive the restart (the checkpoint carries them).
    let countries = ["DE", "FR", "JP", "BR"];
    let db = dir.join("countries.mmdb");
    let inserts: String = countries
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "w.insert_network(IPSet(['203.0.113.{}/26']), {{'country': {{'iso_code': '{c}'}}}})\n",
                i * 64
            )
        })
        .collect();
    write_mmdb(&db, &inserts);
    let country_of = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => countries[usize::from(a.octets()[3] / 64)],
        _ => unreachable!(),
    };
    let mut watched: Vec<u64> = Vec::new();
    let mut heard: BTreeMap<(std::net::IpAddr, u16, u8), std::collections::BTreeSet<&str>> =
        BTreeMap::new();
    for r in truth.iter_mut() {
        let (local, port, remote) = match r.direction {
            vmflow_proto::Direction::Inbound => (r.dst_addr, r.dst_port, r.src_addr),
            _ => (r.src_addr, r.src_port, r.dst_addr),
        };
        let is_listed = listed(r);
        r.remote = Some(Box::new(vmflow_proto::Remote {
            country: Some(country_of(remote).into()),
            watchlists: if is_listed { vec!["w".into()] } else { vec![] },
            ..Default::default()
        }));
        if is_listed {
            watched.push(r.flow_id);
        }
        heard
            .entry((local, port, r.proto))
            .or_default()
            .insert(country_of(remote));
    }
    // Each service's first country is its baseline; every other one is new once.
    let new_countries: usize = heard.values().map(|c| c.len() - 1).sum();
    assert!(new_countries > 10, "{new_countries}");
    watched.sort_unstable();
    assert!(watched.len() > 5, "{}", watched.len());
    let want = multiset_of(&truth);
    assert!(truth.len() > 200, "{}", truth.len());
    let mut blocks = BTreeMap::new();

    let watch = write(dir, "watch.txt", b"203.0.113.0/28\n");
    let tables = format!(
        "[observe]\nship = true\n[enrich]\nmmdb = [{db:?}]\n[[watchlist]]\nname = \"w\"\nfile = {watch:?}\n"
    );
    let (_collector, out, cfg) = rig_with(dir, &az, "", &tables);
    for r in 0..12 {
        write_round(&mut c, &mut nics, &flows, r, &mut blocks);
    }
    let mut a = start(&cfg);
    // Followed while the service appends: each round's blocks are read
    // before the next is written.
    for r in 12..18 {
        for (name, n) in write_round(&mut c, &mut nics, &flows, r, &mut blocks) {
            a.wait_line(&format!("..{n} of {name}"), Duration::from_secs(60));
        }
    }
    // Killed hard while it reads the next round.
    write_round(&mut c, &mut nics, &flows, 18, &mut blocks);
    a.kill();
    for r in 19..=rounds {
        write_round(&mut c, &mut nics, &flows, r, &mut blocks);
    }
    let mut b = start(&cfg);
    let got = wait_collected(&out, total(&want), &b);
    b.sigterm();
    assert!(b.wait(Duration::from_secs(60)), "{}", b.text());
    let text = b.text();
    assert!(text.contains("resuming from"), "{text}");
    // Exactly: a record doubled would make the collector's count exceed
    // the truth's, one lost would leave it short.
    let got = if total(&got) == total(&want) {
        collected(&out, "agent-1")
    } else {
        got
    };
    assert_eq!(total(&got), total(&want), "{text}");
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(3)
        .collect();
    assert!(
        got == want,
        "collector records differ from the generator's; missing e.g. {missing:?}"
    );
    // One watchlist observation per listed record, and each service's new
    // countries once, across the kill.
    let mut seen: Vec<u64> = Vec::new();
    let mut new_seen = 0;
    for f in std::fs::read_dir(out.join("agent-1").join("observations")).unwrap() {
        for l in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            match v["kind"].as_str() {
                Some("watchlist") => seen.push(v["flow_ids"][0].as_u64().unwrap()),
                Some("new_country") => new_seen += 1,
                _ => panic!("{l}"),
            }
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, watched);
    assert_eq!(new_seen, new_countries);
    // The records say what the flow logs said.
    assert!(got.keys().any(|k| k.contains("\"decision\":\"deny\"")));
    assert!(got
        .keys()
        .any(|k| k.contains("\"rule\":\"UserRule_AllowSsh\"")));
    assert!(
        text.contains("skipped 0 blocks, 0 records, 0 tuples; 0 rewritten, 0 shrunk"),
        "{text}"
    );
}

#[test]
fn damaged_blocks_a_rewritten_blob_and_a_shrunk_block_list_are_counted_and_logged() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let az = Azurite::start();
    let mut c = client(&az);
    c.create_container().unwrap();
    let mut x = Nic::new(
        Kind::Vnet,
        "000D3A0000AA",
        "flowLogResourceID=/S_NETWORKWATCHERRG/NETWORKWATCHER_EASTUS_FL/",
    );
    let mut y = Nic::new(
        Kind::Vnet,
        "000D3A0000BB",
        "flowLogResourceID=/S_NETWORKWATCHERRG/NETWORKWATCHER_EASTUS_FL/",
    );
    let t = T0_MS;
    let denied = |port: u16| {
        (
            "DefaultRule_DenyAllInBound".to_string(),
            format!("{t},198.51.100.7,10.0.0.4,{port},22,6,I,D,NX,0,0,0,0"),
        )
    };
    // X: a good record, a block that is not JSON, a record with a bad tuple
    // beside a good one, a record of another category.
    let xname = x.append(&mut c, t, &[denied(1)]);
    x.append_raw(
        &mut c,
        t,
        b",{\"time\": \"2026-12-02T10:50:00Z\", \"flowRecords\": {",
    );
    x.append(
        &mut c,
        t,
        &[
            denied(2),
            (
                "r".into(),
                format!("{t},198.51.100.7,10.0.0.4,3,22,6,Q,D,NX,0,0,0,0"),
            ),
        ],
    );
    x.append_raw(
        &mut c,
        t,
        b",{\"category\":\"Other\",\"properties\":{\"Version\":9}}",
    );
    // Y: three good records.
    let yname = y.append(&mut c, t, &[denied(10)]);
    y.append(&mut c, t, &[denied(11)]);
    y.append(&mut c, t, &[denied(12)]);

    let (_collector, out, cfg) = rig(dir, &az, "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let mut a = start(&cfg);
    let metrics = metrics_addr(&a);
    a.wait_line(&format!("..5 of {xname}"), Duration::from_secs(60));
    a.wait_line(&format!("..4 of {yname}"), Duration::from_secs(60));
    wait_collected(&out, 5, &a);
    let log = a.text();
    assert!(
        log.contains(&format!("{xname}: block 2: not JSON records")),
        "{log}"
    );
    assert!(log.contains(&format!("{xname}: block 3: tuple")), "{log}");
    assert!(
        log.contains(&format!(
            "{xname}: block 4: record 0: properties.Version is not 1 or 2"
        )),
        "{log}"
    );

    // X rewritten with more blocks than were read, none of them the same.
    let ids: Vec<String> = (100..107).map(block_id).collect();
    c.put_block(&xname, &ids[0], br#"{"records":["#).unwrap();
    for (i, id) in ids.iter().enumerate().take(6).skip(1) {
        let rec = format!(
            "{}{{\"flowRecords\":{{\"flows\":[{{\"flowGroups\":[{{\"rule\":\"again\",\"flowTuples\":[\"{}\"]}}]}}]}},\"macAddress\":\"000D3A0000AA\"}}",
            if i == 1 { "" } else { "," },
            denied(20 + i as u16).1
        );
        c.put_block(&xname, id, rec.as_bytes()).unwrap();
    }
    c.put_block(&xname, &ids[6], b"]}").unwrap();
    c.put_block_list(&xname, &ids).unwrap();
    // Y's list cut to its first record.
    let mut cut = y.ids(&yname);
    let close = cut.pop().unwrap();
    cut.truncate(2);
    cut.push(close);
    c.put_block_list(&yname, &cut).unwrap();
    a.wait_line(&format!("{xname}: rewritten"), Duration::from_secs(60));
    a.wait_line(
        &format!("{yname}: its block list got shorter"),
        Duration::from_secs(60),
    );
    a.wait_line(&format!("..6 of {xname}"), Duration::from_secs(60));
    a.wait_line(&format!("..2 of {yname}"), Duration::from_secs(60));
    // The rewritten blob's five records and the shrunk blob's first again.
    let got = wait_collected(&out, 11, &a);
    // The endpoint says what the stop line below says, and what the
    // collector holds.
    let m = scrape(&metrics);
    let at = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in {m:#?}"))
    };
    for what in ["block", "record", "tuple"] {
        let k = format!("vmflow_flowlog_skipped_total{{stream=\"\",what=\"{what}\"}}");
        assert_eq!(at(&k), 1.0, "{k}");
    }
    for (event, n) in [("rewritten", 1.0), ("shrunk", 1.0), ("abandoned", 0.0)] {
        let k = format!("vmflow_flowlog_blob_events_total{{stream=\"\",event=\"{event}\"}}");
        assert_eq!(at(&k), n, "{k}");
    }
    assert_eq!(
        common::scrape::total(&m, "vmflow_records_total"),
        total(&got),
        "{m:#?}"
    );
    assert!(at("vmflow_flowlog_tuples_total{stream=\"\"}") >= total(&got) as f64);
    assert!(at("vmflow_flowlog_reads_total{stream=\"\"}") >= 4.0);
    assert!(m.contains_key("vmflow_open_flows{stream=\"\"}"), "{m:#?}");
    assert!(m.contains_key("vmflow_checkpoint_age_seconds{stream=\"\"}"));
    a.sigterm();
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    let text = a.text();
    assert!(
        text.contains("skipped 1 blocks, 1 records, 1 tuples; 1 rewritten, 1 shrunk"),
        "{text}"
    );
    assert!(
        got.keys().any(|k| k.contains("\"rule\":\"again\"")),
        "{got:?}"
    );
    assert!(!text.contains("panicked"), "{text}");
    // The SAS never reaches the log.
    let sig = full_sas();
    let sig = sig.split("sig=").nth(1).unwrap();
    assert!(!text.contains(sig));
}

/// The agent dies in the middle of a read: the checkpoint that names the
/// read is on disk and part of the read's records are in the spool, the
/// checkpoint that records it done is not. (Done here in-process, with the
/// agent's own source, spool and checkpoint code, so that the crash falls
/// exactly there; a kill -9 lands there only by luck.) The restarted agent
/// reads those blocks again, skips the records the spool holds, follows the
/// blobs as they grow, and the collector gets every record once.
#[test]
fn a_read_cut_between_its_two_checkpoints_is_done_again_and_skipped_exactly() {
    use std::sync::{Arc, Mutex};
    use vmflow::export::batcher::SpoolSink;
    use vmflow::export::spool::Spool;
    use vmflow::export::RecordSink;
    use vmflow::flowlog::{StitchSettings, Stitcher};
    use vmflow::follow::flowlog::position::{self, FlowlogCheckpoint};
    use vmflow::follow::flowlog::{checkpoint_key, FlowlogSource};

    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let az = Azurite::start();
    let mut c = client(&az);
    c.create_container().unwrap();
    let mut nics = vec![
        Nic::new(Kind::Vnet, "000D3A000011", "flowLogResourceID=/S_NETWORKWATCHERRG/NETWORKWATCHER_EASTUS_FL/"),
        Nic::new(
            Kind::NsgV2,
            "000D3A000012",
            "resourceId=/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG/",
        ),
        // Written only after the cut, and listed before the cut read's blob:
        // a restart that did not do the cut read first would skip this
        // NIC's records instead of those the spool holds.
        Nic::new(Kind::Vnet, "000D3A000013", "a/"),
    ];
    let rounds = 24;
    let flows = plan(&nics, rounds);
    let want = multiset_of(&flows.iter().flat_map(Flow::truth).collect::<Vec<_>>());
    let mut blocks = BTreeMap::new();
    for r in 0..10 {
        write_round(&mut c, &mut nics[..2], &flows, r, &mut blocks);
    }
    let (_collector, out, cfg_path) = rig(dir, &az, "");
    let cfg = vmflow::config::Config::load(&cfg_path).unwrap();
    let f = cfg.source.flowlog[0].clone();
    let spool_dir = dir.join("spool-a");

    // The first read, cut: intent on disk, half its records spooled.
    let half = {
        let client = vmflow::azure::credentials::blob_client(&f.storage(), &cfg.azure).unwrap();
        let settings = StitchSettings {
            idle_ns: f.idle_timeout.ns(),
            max_open: f.max_open_flows,
        };
        let mut src = FlowlogSource::new(
            f.clone(),
            client,
            Default::default(),
            Stitcher::new(settings),
        );
        let work = src.prepare().unwrap().expect("blocks to read");
        src.pos.pending = Some(work.pending());
        let ck =
            FlowlogCheckpoint::new(checkpoint_key(&f), 0, src.stitcher.state(), src.pos.clone());
        position::save(
            &vmflow::disk::StdFs,
            &spool_dir.join("flowlog.checkpoint"),
            &ck,
        )
        .unwrap();
        let mut records = Vec::new();
        assert!(src.read(&work, &mut records).unwrap());
        assert!(records.len() > 20, "{}", records.len());
        let spool = Spool::open(vmflow::disk::real(), &spool_dir, 64 << 20).unwrap();
        let mut sink = SpoolSink::new(
            Arc::new(Mutex::new(spool)),
            Arc::new(tokio::sync::Notify::new()),
            16,
            Duration::from_secs(3600),
        );
        let half = records.len() / 2;
        sink.write(&records[..half]).unwrap();
        sink.flush().unwrap();
        half
    };
    for r in 0..10 {
        write_round(&mut c, &mut nics[2..], &flows, r, &mut blocks);
    }

    let mut a = start(&cfg_path);
    a.wait_line(
        &format!("({half} records spooled after it)"),
        Duration::from_secs(60),
    );
    for r in 10..=rounds {
        for (name, n) in write_round(&mut c, &mut nics, &flows, r, &mut blocks) {
            a.wait_line(&format!("..{n} of {name}"), Duration::from_secs(60));
        }
    }
    wait_collected(&out, total(&want), &a);
    a.sigterm();
    assert!(a.wait(Duration::from_secs(60)), "{}", a.text());
    let got = collected(&out, "agent-1");
    assert_eq!(total(&got), total(&want), "{}", a.text());
    assert!(got == want, "collector records differ from the generator's");
}
