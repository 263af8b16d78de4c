//! Records per second through agent → TLS 1.3 (loopback) → collector, with
//! CPU per record on each side and bytes per record on the wire. The agent
//! side runs in this process (spool + shipper, as `vmflow run` does); the
//! collector is the real `vmflow collect` process, writing NDJSON with fsync
//! (with `blocks` among the arguments: `--store blocks`).
//! Prints a Markdown table for BENCHMARKS.md.
//!
//!   cargo bench --bench ship_throughput [-- RECORDS BATCH [AGENTS] [blocks]]
//!
//! With AGENTS (even 1), that many agents (each its own certificate, spool,
//! thread and runtime, as separate `vmflow run` processes would be) share
//! RECORDS among them and ship to the one collector at once: total records/s
//! and collector CPU per record, for the spool-filled-first phase and for
//! the concurrent (spooling while shipping) phase.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use vmflow::capture::CaptureReader;
use vmflow::config::Config;
use vmflow::export::batcher::SpoolSink;
use vmflow::export::ship::{ship, ShipOptions};
use vmflow::export::spool::Spool;
use vmflow::export::{RecordSink, VecSink};
use vmflow::synth::{generate, SynthParams};
use vmflow_proto::FlowRecord;

fn base_records() -> Vec<FlowRecord> {
    let mut pcap = Vec::new();
    let p = SynthParams::new(1_000_000, 10_000);
    generate(&p, &Config::default(), &mut pcap, false).unwrap();
    let mut sink = VecSink::default();
    let r = vmflow::pipeline::run(&Config::default(), &mut sink, |feed| {
        let mut r = CaptureReader::open(std::io::Cursor::new(pcap)).unwrap();
        while let Some(p) = r.next_packet().unwrap() {
            feed.packet(p);
        }
        Ok::<_, vmflow::pipeline::PipelineError>(())
    });
    assert!(r.error.is_none());
    sink.0
}

/// user+sys CPU seconds of a process, from /proc.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// `n` distinct records: the synthetic ones, shifted by whole hours.
fn distinct_records(n: usize) -> Vec<FlowRecord> {
    let base = base_records();
    (0..)
        .flat_map(|k: u64| {
            base.iter().map(move |r| {
                let mut r = r.clone();
                r.first_ns += k * 3_600_000_000_000;
                r.last_ns += k * 3_600_000_000_000;
                r.flow_id = vmflow_proto::flow_id(
                    r.vlan, r.proto, r.src_addr, r.src_port, r.dst_addr, r.dst_port, r.first_ns,
                );
                r
            })
        })
        .take(n)
        .collect()
}

/// How the collector stores records: `blocks` if an argument says so.
fn store() -> &'static str {
    if std::env::args().any(|a| a == "blocks") {
        "blocks"
    } else {
        "ndjson"
    }
}

/// A `vmflow collect` process on loopback writing into `dir/out`, and its
/// address.
fn start_collector(
    dir: &std::path::Path,
    certs: &std::path::Path,
) -> (std::process::Child, String) {
    let mut coll = Command::new(env!("CARGO_BIN_EXE_vmflow"))
        .args(["collect", "--listen", "127.0.0.1:0"])
        .arg("--cert")
        .arg(certs.join("collector.pem"))
        .arg("--key")
        .arg(certs.join("collector-key.pem"))
        .arg("--client-ca")
        .arg(certs.join("ca.pem"))
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--store")
        .arg(store())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(coll.stderr.take().unwrap()).lines();
    let addr = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some(a) = l.strip_prefix("collect: listening on ") {
            break a.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (coll, addr)
}

/// What every agent of the fleet shares.
struct Fleet<'a> {
    dir: &'a std::path::Path,
    certs: &'a std::path::Path,
    addr: &'a str,
    records: &'a [FlowRecord],
    batch: usize,
}

/// One agent of the fleet: its spool, shipped (after filling it, or while
/// filling it) on a runtime of its own with one worker, like `vmflow run`.
fn fleet_agent(f: &Fleet, name: &str, concurrent: bool, start: &std::sync::Barrier) -> Instant {
    let (dir, certs, addr, records, batch) = (f.dir, f.certs, f.addr, f.records, f.batch);
    let spool_dir = dir.join(format!("spool-{name}-{concurrent}"));
    let spool = Arc::new(Mutex::new(
        Spool::open(vmflow::disk::real(), &spool_dir, 4 << 30).unwrap(),
    ));
    let notify = Arc::new(Notify::new());
    let fill = |spool: Arc<Mutex<Spool>>, notify: Arc<Notify>| {
        let mut sink = SpoolSink::new(spool, notify, batch, Duration::from_secs(3600));
        for chunk in records.chunks(10_000) {
            sink.write(chunk).unwrap();
        }
        sink.finish().unwrap();
    };
    if !concurrent {
        fill(spool.clone(), notify.clone());
    }
    let tls = vmflow::tls::client_config(
        &certs.join("ca.pem"),
        &certs.join(format!("{name}.pem")),
        &certs.join(format!("{name}-key.pem")),
    )
    .unwrap();
    let opts = ShipOptions::new(addr.to_string(), "localhost".into(), tls);
    let (done_tx, done_rx) = watch::channel(!concurrent);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    start.wait();
    let shipper = rt.spawn(ship(opts, spool.clone(), notify.clone(), done_rx, stop_rx));
    if concurrent {
        fill(spool, notify);
        let _ = done_tx.send(true);
    }
    let stats = rt.block_on(shipper).unwrap();
    let end = Instant::now();
    assert_eq!(stats.batches_acked as usize, records.len().div_ceil(batch));
    end
}

fn fleet(total: usize, batch: usize, n: usize) {
    let per = total / n;
    let records = distinct_records(per);
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let names: Vec<String> = (1..=n).map(|i| format!("agent-{i}")).collect();
    let copts = vmflow::certs::CertOptions {
        agents: names.clone(),
        ..Default::default()
    };
    vmflow::certs::init(&certs, &copts).unwrap();
    let (mut coll, addr) = start_collector(dir.path(), &certs);
    let shipped = (per * n) as f64;
    let shared = Fleet {
        dir: dir.path(),
        certs: &certs,
        addr: &addr,
        records: &records,
        batch,
    };
    println!(
        "agents: {n}, {per} records each ({} in all), batch {batch} records, one collector\n",
        per * n
    );
    println!(
        "| phase | records/s (all agents) | collector CPU µs/record | agents' CPU µs/record |"
    );
    println!("|---|---|---|---|");
    for concurrent in [false, true] {
        let start = std::sync::Barrier::new(n + 1);
        let (ends, coll_cpu0, self_cpu0) = std::thread::scope(|s| {
            let hs: Vec<_> = names
                .iter()
                .map(|name| {
                    let (f, st) = (&shared, &start);
                    s.spawn(move || fleet_agent(f, name, concurrent, st))
                })
                .collect();
            start.wait();
            let t0 = Instant::now();
            // (Filling the spools first is not part of the phase.)
            let cpu0 = (cpu_of(coll.id()), cpu_of(std::process::id()));
            let ends: Vec<Instant> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            let ends: Vec<Duration> = ends.into_iter().map(|e| e - t0).collect();
            (ends, cpu0.0, cpu0.1)
        });
        let wall = ends.iter().max().unwrap().as_secs_f64();
        let coll_cpu = cpu_of(coll.id()) - coll_cpu0;
        let agent_cpu = cpu_of(std::process::id()) - self_cpu0;
        let phase = if concurrent {
            "concurrent: spooling while shipping (as `vmflow run`)"
        } else {
            "ship: spools filled first"
        };
        println!(
            "| {phase} | {:.2} M | {:.3} | {:.3} |",
            shipped / wall / 1e6,
            coll_cpu * 1e6 / shipped,
            agent_cpu * 1e6 / shipped
        );
    }
    let _ = coll.kill();
    let _ = coll.wait();
    let (bytes, files) = stored(&dir.path().join("out"));
    println!(
        "\ncollector's files: {bytes} bytes in {files} hour files, {:.1} bytes a record ({})",
        bytes as f64 / (2.0 * shipped),
        store()
    );
}

/// Bytes and count of the record files under `dir` (both phases' records).
fn stored(dir: &std::path::Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            let (b, f) = stored(&p);
            (bytes, files) = (bytes + b, files + f);
        } else if p
            .extension()
            .is_some_and(|x| x == "ndjson" || x == "blocks")
        {
            bytes += e.metadata().map_or(0, |m| m.len());
            files += 1;
        }
    }
    (bytes, files)
}

fn main() {
    let args: Vec<u64> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let total = args.first().copied().unwrap_or(1_000_000) as usize;
    let batch = args.get(1).copied().unwrap_or(4096) as usize;
    if let Some(&agents) = args.get(2) {
        fleet(total, batch, agents.max(1) as usize);
        return;
    }
    let records = distinct_records(total);

    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    vmflow::certs::init(&certs, &Default::default()).unwrap();
    let (mut coll, addr) = start_collector(dir.path(), &certs);

    let spool = Arc::new(Mutex::new(
        Spool::open(vmflow::disk::real(), &dir.path().join("spool"), 4 << 30).unwrap(),
    ));
    let notify = Arc::new(Notify::new());
    let t0 = Instant::now();
    let mut sink = SpoolSink::new(
        spool.clone(),
        notify.clone(),
        batch,
        Duration::from_secs(3600),
    );
    sink.write(&records).unwrap();
    sink.finish().unwrap();
    let spool_s = t0.elapsed().as_secs_f64();
    let wire_bytes = spool.lock().unwrap().stats().bytes;

    let tls = vmflow::tls::client_config(
        &certs.join("ca.pem"),
        &certs.join("agent-1.pem"),
        &certs.join("agent-1-key.pem"),
    )
    .unwrap();
    let coll_addr = addr.clone();
    let opts = ShipOptions::new(addr, "localhost".into(), tls);
    let (_done_tx, done_rx) = watch::channel(true);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let coll_cpu0 = cpu_of(coll.id());
    let self_cpu0 = cpu_of(std::process::id());
    let t1 = Instant::now();
    let stats = rt.block_on(ship(opts, spool.clone(), notify, done_rx, stop_rx));
    let ship_s = t1.elapsed().as_secs_f64();
    let coll_cpu = cpu_of(coll.id()) - coll_cpu0;
    let agent_cpu = cpu_of(std::process::id()) - self_cpu0;
    assert_eq!(stats.batches_acked as usize, total.div_ceil(batch));

    let n = total as f64;
    println!("records: {total}, batch {batch} records, zstd level 1, TLS 1.3 over loopback, collector fsyncs every batch\n");
    println!("| stage | records/s | CPU µs/record |");
    println!("|---|---|---|");
    println!(
        "| agent: encode + spool append | {:.2} M | {:.3} (wall) |",
        n / spool_s / 1e6,
        spool_s * 1e6 / n
    );
    println!(
        "| ship: spool → TLS → collector → ack (agent side) | {:.2} M | {:.3} |",
        n / ship_s / 1e6,
        agent_cpu * 1e6 / n
    );
    println!(
        "| collector: decode + {} + fsync | — | {:.3} |",
        store(),
        coll_cpu * 1e6 / n
    );
    println!(
        "| end to end (encode, spool, ship) | {:.2} M | — |",
        n / (spool_s + ship_s) / 1e6
    );
    println!(
        "\nbytes/record on the wire (spool entries = batch frames' blocks): {:.1}",
        wire_bytes as f64 / n
    );

    // As `vmflow run` does it: the engine spools while the shipper syncs
    // what was appended (segment fsync, then the ledger's watermark fsync)
    // and sends it. A new spool, so a new epoch at the same collector.
    let spool = Arc::new(Mutex::new(
        Spool::open(vmflow::disk::real(), &dir.path().join("spool2"), 4 << 30).unwrap(),
    ));
    let notify = Arc::new(Notify::new());
    let (done_tx, done_rx) = watch::channel(false);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let opts = ShipOptions::new(
        coll_addr.clone(),
        "localhost".into(),
        vmflow::tls::client_config(
            &certs.join("ca.pem"),
            &certs.join("agent-1.pem"),
            &certs.join("agent-1-key.pem"),
        )
        .unwrap(),
    );
    let t2 = Instant::now();
    let shipper = rt.spawn(ship(opts, spool.clone(), notify.clone(), done_rx, stop_rx));
    let (sp, nt) = (spool.clone(), notify.clone());
    let engine = std::thread::spawn(move || {
        let mut sink = SpoolSink::new(sp, nt, batch, Duration::from_secs(3600));
        for chunk in records.chunks(10_000) {
            sink.write(chunk).unwrap();
        }
        sink.finish().unwrap();
    });
    engine.join().unwrap();
    let _ = done_tx.send(true);
    let stats = rt.block_on(shipper).unwrap();
    let both_s = t2.elapsed().as_secs_f64();
    assert_eq!(stats.batches_acked as usize, total.div_ceil(batch));
    println!(
        "\nconcurrent (engine spooling while the shipper syncs and sends, as `vmflow run`): {:.2} M records/s end to end",
        n / both_s / 1e6
    );
    let _ = coll.kill();
    let _ = coll.wait();
}
