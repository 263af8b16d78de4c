//! `vmflow demo`: the whole path on one machine (synthetic capture, CA and
//! certificates, a collector, the agent shipping to it) checked against the
//! generator's ground truth.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::config::Config;
use crate::error::Error;
use crate::synth::{self, SynthParams};

#[derive(Args)]
pub(super) struct DemoArgs {
    /// Keep the synthetic capture, certificates and records in this
    /// directory (without it they go to a temporary one, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Packets in the synthetic capture.
    #[arg(long, default_value_t = 200_000)]
    packets: u64,
}

/// A temporary directory removed when the demo ends, however it ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn cmd(a: DemoArgs) -> Result<ExitCode, Error> {
    let (dir, _scratch) = match a.dir {
        Some(d) => {
            println!("demo: working in {} (kept)", d.display());
            (d, None)
        }
        None => {
            let d = std::env::temp_dir().join(format!("vmflow-demo-{}", std::process::id()));
            println!(
                "demo: working in {} (removed at the end; --dir DIR keeps it)",
                d.display()
            );
            (d.clone(), Some(Scratch(d)))
        }
    };
    if dir.exists() && !dir.is_dir() {
        let e = std::io::Error::other("--dir is not a directory");
        return Err(Error::io(&dir, e));
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let cap = dir.join("demo.pcap");
    let params = SynthParams::new(a.packets, 2_000).seed(7);
    let f = File::create(&cap).map_err(|e| Error::io(&cap, e))?;
    let synth =
        synth::generate(&params, &Config::default(), f, true).map_err(|e| Error::io(&cap, e))?;
    println!(
        "demo: 1/4 wrote a synthetic capture {} ({} packets, {} flows, snap length 128)",
        cap.display(),
        synth.packets,
        synth.flows
    );

    let certs = dir.join("certs");
    // The demo's own scratch CA: a rerun in the same --dir replaces it.
    let opts = crate::certs::CertOptions {
        force: true,
        ..Default::default()
    };
    crate::certs::init(&certs, &opts)?;
    let out = dir.join("collector");
    let tls = crate::tls::server_config(
        &certs.join("collector.pem"),
        &certs.join("collector-key.pem"),
        &certs.join("ca.pem"),
    )?;
    let addr = crate::run::spawn_collector(
        "127.0.0.1:0".parse().map_err(|_| Error::Usage("listen"))?,
        tls,
        out.clone(),
    )?;
    println!("demo: 2/4 made a CA and certificates in {}; collector listening on {addr} (mutual TLS 1.3)", certs.display());

    let mut cfg = Config::default();
    cfg.source.files = vec![cap.clone()];
    cfg.export = Some(crate::config::ExportConfig {
        collector: addr.to_string(),
        server_name: "localhost".into(),
        ca: certs.join("ca.pem"),
        cert: certs.join("agent-1.pem"),
        key: certs.join("agent-1-key.pem"),
        spool_dir: dir.join("spool"),
        spool_max_mib: 64,
        batch_records: 1024,
        batch_age: crate::config::Seconds(1.0),
        window: 32,
        agent_id: "demo-agent".into(),
    });
    let r = crate::run::run_agent(&cfg, None)?;
    if let Some(e) = r.error {
        return Err(e);
    }
    println!(
        "demo: 3/4 agent replayed it: {} packets → {} flow records, {} batches sent and acknowledged ({:.2} Mpps)",
        r.summary.packets,
        r.summary.records,
        r.ship.batches_acked,
        r.summary.mpps()
    );

    let mut got = Vec::new();
    let agent_dir = out.join("agent-1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&agent_dir)
        .map_err(|e| Error::io(&agent_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    for f in &files {
        got.extend(read_ndjson(f)?);
    }
    got.sort_by_key(|r| (r.flow_id, r.segment));
    let exact = got == synth.truth;
    println!(
        "demo: 4/4 collector wrote {} records for agent-1 in {} ({} hourly file(s)); equal to the generator's ground truth: {}",
        got.len(),
        agent_dir.display(),
        files.len(),
        if exact { "yes" } else { "NO" }
    );
    if got.len() as u64 != synth.flows {
        println!(
            "demo: {} flows became {} records: a flow that lasts longer than the active timeout \
             ({} s) is exported in segments (segment 0, 1, …; the last one says final)",
            synth.flows,
            got.len(),
            Config::default().flow.active_timeout
        );
    }
    println!("demo: a few of them:");
    for r in got.iter().take(3) {
        println!("  {}", serde_json::to_string(r).unwrap_or_default());
    }
    Ok(if exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn read_ndjson(path: &Path) -> Result<Vec<vmflow_proto::FlowRecord>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| Error::io(path, io::Error::new(io::ErrorKind::InvalidData, e)))
        })
        .collect()
}
