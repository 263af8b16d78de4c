//! Command-line interface.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::error::Error;
use crate::export::{CountSink, NdjsonSink, RecordSink};
use crate::pipeline::{Report, Summary};
use crate::synth::{self, SynthParams};

#[derive(Parser)]
#[command(
    name = "vmflow",
    version,
    about = "Flow agent: packets to bidirectional flow records"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Turn capture files (pcap, pcapng, NetMon 2.x) into flow records (NDJSON).
    Replay(ReplayArgs),
    /// Write a synthetic capture and, optionally, the exact expected records.
    Synth(SynthArgs),
    /// Synthesize a capture and replay it in one process; print packets/s and peak memory.
    Bench(BenchArgs),
    /// Show the whole path on this machine: synthesize a capture, replay it, summarize.
    Demo(DemoArgs),
    /// The agent: read the configured source, ship records to a collector.
    Run(RunArgs),
    /// Live capture on network interfaces, records as NDJSON, until SIGTERM/SIGINT.
    Capture(CaptureArgs),
    /// The collector: accept agents over mutual TLS, write their records.
    Collect(CollectCmd),
    /// Certificates for trying the shipping path out.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Azure: the Network Watcher packet-capture lifecycle ([azure.captures]).
    #[command(subcommand)]
    Azure(AzureCmd),
}

#[derive(Subcommand)]
enum AzureCmd {
    #[command(subcommand)]
    Captures(CapturesCmd),
}

#[derive(Subcommand)]
enum CapturesCmd {
    /// List the watcher's packet captures and their status.
    List(AzureArgs),
    /// One capture's status (queryStatus).
    Status {
        name: String,
        #[command(flatten)]
        a: AzureArgs,
    },
    /// Stop a capture (its files stay).
    Stop {
        name: String,
        #[command(flatten)]
        a: AzureArgs,
    },
    /// Delete a capture resource (its files stay).
    Delete {
        name: String,
        #[command(flatten)]
        a: AzureArgs,
    },
    /// Create the regional Network Watcher if it does not exist.
    EnsureWatcher(AzureArgs),
    /// Keep a capture running on every target, renewing before each stops,
    /// until SIGTERM/SIGINT.
    Run(AzureArgs),
}

#[derive(Args)]
struct AzureArgs {
    /// Configuration with [azure] and [azure.captures].
    #[arg(long)]
    config: PathBuf,
}

#[derive(Args)]
struct CaptureArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Interface to capture on; repeat for several. Default: every interface
    /// that is up, not loopback and has an address.
    #[arg(long = "interface", short = 'i')]
    interfaces: Vec<String>,
    #[arg(long, default_value_t = 128)]
    snaplen: u32,
    #[arg(long)]
    promiscuous: bool,
    /// Ring size per interface: this many blocks…
    #[arg(long, default_value_t = crate::capture::live::DEFAULT_BLOCKS)]
    ring_blocks: usize,
    /// …of this many KiB (a multiple of the page size).
    #[arg(long, default_value_t = crate::capture::live::DEFAULT_BLOCK_KIB)]
    ring_block_kib: usize,
    #[arg(long, default_value = "-")]
    out: String,
}

#[derive(Args)]
struct RunArgs {
    #[arg(long)]
    config: PathBuf,
}

#[derive(Args)]
struct CollectCmd {
    /// Address to listen on (port 0 picks one; the bound address is printed).
    #[arg(long)]
    listen: std::net::SocketAddr,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// Only agents with a certificate from this CA are accepted.
    #[arg(long = "client-ca")]
    client_ca: PathBuf,
    /// Output directory: one subdirectory per agent, hourly NDJSON files.
    #[arg(long)]
    out: PathBuf,
    /// Connections at once (default: the descriptor limit less 64); more
    /// wait in the listen backlog.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections still in their TLS handshake or hello; more are closed
    /// at once, so unauthenticated peers cannot crowd out agents.
    #[arg(long, default_value_t = 64)]
    max_handshakes: usize,
    /// Seconds an unauthenticated connection has for TLS and hello.
    #[arg(long, default_value_t = 5.0)]
    handshake_timeout: f64,
    /// MiB of incoming frames buffered across all connections.
    #[arg(long, default_value_t = 64)]
    max_buffer_mib: usize,
    /// Seconds a connection may go without a complete frame (agents send a
    /// heartbeat every 10 s).
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Make a CA, a collector certificate and agent certificates in DIR.
    Init {
        dir: PathBuf,
        /// Agent names (certificate CN); repeat for several. Default: agent-1.
        #[arg(long = "agent")]
        agents: Vec<String>,
    },
}

#[derive(Args)]
struct EngineArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Flow shard threads (default: config, else cores - 1).
    #[arg(long)]
    threads: Option<usize>,
    /// Local network (CIDR); repeat for several. Replaces the configured list.
    #[arg(long = "local-net", value_name = "CIDR")]
    local_net: Vec<String>,
}

#[derive(Args)]
struct ReplayArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Where to write records; `-` is standard output.
    #[arg(long, default_value = "-")]
    out: String,
    /// Capture files, read in order as one continuous stream.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Args)]
struct SynthArgs {
    #[arg(long)]
    packets: u64,
    #[arg(long)]
    concurrent: usize,
    #[arg(long, default_value_t = 65_535)]
    snaplen: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Timeouts and local networks for the expected records.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Write the expected flow records (NDJSON) here.
    #[arg(long)]
    truth: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    engine: EngineArgs,
    #[arg(long, default_value_t = 4_000_000)]
    packets: u64,
    #[arg(long, default_value_t = 50_000)]
    concurrent: usize,
    #[arg(long, default_value_t = 128)]
    snaplen: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct DemoArgs {
    /// Keep the synthetic capture and the records in this directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value_t = 200_000)]
    packets: u64,
}

pub fn main() -> ExitCode {
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()));
        tracing_subscriber::registry()
            .with(fmt.with_filter(log_filter()).with_filter(quiet_http()))
            .init();
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Replay(a) => replay(a),
        Cmd::Synth(a) => synth_cmd(a),
        Cmd::Bench(a) => bench(a),
        Cmd::Demo(a) => demo(a),
        Cmd::Run(a) => run_cmd(a),
        Cmd::Capture(a) => capture_cmd(a),
        Cmd::Collect(a) => crate::run::run_collector(crate::run::CollectArgs {
            listen: a.listen,
            cert: a.cert,
            key: a.key,
            client_ca: a.client_ca,
            out: a.out,
            max_connections: a.max_connections,
            max_handshakes: a.max_handshakes,
            handshake_timeout: Duration::from_secs_f64(a.handshake_timeout.clamp(0.1, 3600.0)),
            frame_budget: a.max_buffer_mib.clamp(17, 1 << 16) << 20,
            idle_timeout: Duration::from_secs_f64(a.idle_timeout.clamp(1.0, 86_400.0)),
        })
        .map(|_| ExitCode::SUCCESS),
        Cmd::Azure(AzureCmd::Captures(c)) => captures_cmd(c),
        Cmd::Certs(CertsCmd::Init { dir, agents }) => {
            let mut opts = crate::certs::CertOptions::default();
            if !agents.is_empty() {
                opts.agents = agents;
            }
            crate::certs::init(&dir, &opts)
                .map(|_| {
                    eprintln!(
                        "certs: wrote ca.pem, collector.pem and {} agent certificate(s) to {}",
                        opts.agents.len(),
                        dir.display()
                    );
                    ExitCode::SUCCESS
                })
                .map_err(Error::from)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmflow: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn captures_cmd(c: CapturesCmd) -> Result<ExitCode, Error> {
    let path = match &c {
        CapturesCmd::List(a) | CapturesCmd::EnsureWatcher(a) | CapturesCmd::Run(a) => &a.config,
        CapturesCmd::Status { a, .. }
        | CapturesCmd::Stop { a, .. }
        | CapturesCmd::Delete { a, .. } => &a.config,
    };
    let cfg = Config::load(path)?;
    let cc = cfg
        .azure
        .captures
        .clone()
        .ok_or(Error::Usage("no [azure.captures] section"))?;
    let mut m = crate::azure::lifecycle::manager(&cc, &cfg.azure)?;
    match c {
        CapturesCmd::List(_) => {
            for cap in m.list()? {
                let st = m.status(&cap.name)?;
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    cap.name,
                    cap.target,
                    cap.provisioning,
                    st.status,
                    st.stop_reason.unwrap_or_default()
                );
            }
        }
        CapturesCmd::Status { name, .. } => {
            let st = m.status(&name)?;
            println!(
                "{name}\tstatus={}\tstarted={}\tstop_reason={}\terrors={}",
                st.status,
                st.start.unwrap_or_default(),
                st.stop_reason.unwrap_or_default(),
                st.errors.join(",")
            );
        }
        CapturesCmd::Stop { name, .. } => m.stop(&name)?,
        CapturesCmd::Delete { name, .. } => m.delete(&name)?,
        CapturesCmd::EnsureWatcher(_) => m.ensure_watcher()?,
        CapturesCmd::Run(_) => {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, stop.clone())
                    .map_err(Error::setup("signal handler"))?;
            }
            crate::azure::lifecycle::run(m, cc.poll_interval.duration(), &stop);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `RUST_LOG` (default `info`). The HTTP client's own directives are capped
/// at warnings here, but a more specific directive in `RUST_LOG`
/// (`ureq::run=trace`) wins over them: [`quiet_http`] is what holds.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let mut f = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for d in ["ureq=warn", "ureq_proto=warn"] {
        if let Ok(d) = d.parse() {
            f = f.add_directive(d);
        }
    }
    f
}

/// Drops the HTTP client's events below warnings whatever `RUST_LOG` says:
/// its debug and trace lines print request URLs, and a Blob URL carries the
/// SAS token. A filter of its own, applied after `RUST_LOG`'s, so no
/// directive can switch them back on. (Its warnings carry no URL.)
fn quiet_http() -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|m: &tracing::Metadata<'_>| {
        !(m.target().starts_with("ureq") && *m.level() > tracing::Level::WARN)
    })
}

fn engine_config(a: &EngineArgs) -> Result<Config, Error> {
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(t) = a.threads {
        if t == 0 {
            return Err(Error::Usage("--threads must be at least 1"));
        }
        cfg.pipeline.threads = t;
    }
    if !a.local_net.is_empty() {
        cfg.local_nets = Some(a.local_net.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}

fn replay(a: ReplayArgs) -> Result<ExitCode, Error> {
    let cfg = engine_config(&a.engine)?;
    let sink: Box<dyn RecordSink> = if a.out == "-" {
        Box::new(NdjsonSink::new(io::stdout()))
    } else {
        let f = File::create(&a.out).map_err(|e| Error::io(&a.out, e))?;
        Box::new(NdjsonSink::new(f))
    };
    let report = crate::capture::replay(a.files, &cfg, sink);
    finish("replay", report)
}

fn finish<E: Into<Error>>(what: &str, report: Report<E>) -> Result<ExitCode, Error> {
    print_summary(what, &report.summary);
    match report.error {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.into()),
    }
}

/// One `key=value` line, then one line per skip reason: easy for people and scripts.
pub fn print_summary(what: &str, s: &Summary) {
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "{what}: packets={} flow_packets={} ip_bytes={} skipped={} flows={} records={} \
         record_packets={} record_bytes={} evicted={} emergency_expired={} frag_first={} \
         frag_later={} frag_orphaned={} \
         warnings={} threads={} elapsed_s={:.3} mpps={:.2}",
        s.packets,
        s.flow_packets,
        s.ip_bytes,
        s.skipped_total(),
        s.flows,
        s.records,
        s.record_packets,
        s.record_bytes,
        s.table.evicted,
        s.table.emergency_expired,
        s.frag.first,
        s.frag.later,
        s.frag.orphaned,
        s.warnings.len(),
        s.threads,
        s.elapsed.as_secs_f64(),
        s.mpps(),
    );
    for (reason, n) in &s.skipped {
        let _ = writeln!(err, "{what}: skipped.{reason}={n}");
    }
}

fn synth_cmd(a: SynthArgs) -> Result<ExitCode, Error> {
    let cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let out = File::create(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let params = SynthParams {
        packets: a.packets,
        concurrent: a.concurrent,
        snaplen: a.snaplen,
        seed: a.seed,
    };
    let res =
        synth::generate(&params, &cfg, out, a.truth.is_some()).map_err(|e| Error::io(&a.out, e))?;
    if let Some(t) = &a.truth {
        let f = File::create(t).map_err(|e| Error::io(t, e))?;
        let mut sink = NdjsonSink::new(f);
        sink.write(&res.truth)
            .and_then(|_| sink.finish())
            .map_err(|e| Error::io(t, e))?;
    }
    eprintln!(
        "synth: packets={} flows={} truth_records={}",
        res.packets,
        res.flows,
        res.truth.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn bench(a: BenchArgs) -> Result<ExitCode, Error> {
    let cfg = engine_config(&a.engine)?;
    let dir = std::env::temp_dir().join(format!("vmflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join("bench.pcap");
    let t0 = Instant::now();
    let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
    let params = SynthParams {
        packets: a.packets,
        concurrent: a.concurrent,
        snaplen: a.snaplen,
        seed: a.seed,
    };
    synth::generate(&params, &cfg, f, false).map_err(|e| Error::io(&path, e))?;
    let synth_s = t0.elapsed().as_secs_f64();
    let report = crate::capture::replay(vec![path.clone()], &cfg, CountSink::default());
    let _ = std::fs::remove_dir_all(&dir);
    let s = &report.summary;
    println!(
        "bench: packets={} flows={} records={} threads={} synth_s={synth_s:.2} replay_s={:.3} \
         packets_per_s={:.0} peak_rss_mib={:.1}",
        s.packets,
        s.flows,
        s.records,
        s.threads,
        s.elapsed.as_secs_f64(),
        s.packets as f64 / s.elapsed.as_secs_f64().max(1e-9),
        peak_rss_mib().unwrap_or(f64::NAN),
    );
    finish("bench", report)
}

fn demo(a: DemoArgs) -> Result<ExitCode, Error> {
    let dir = match a.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("vmflow-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let cap = dir.join("demo.pcap");
    let params = SynthParams {
        packets: a.packets,
        concurrent: 2_000,
        snaplen: 128,
        seed: 7,
    };
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
    crate::certs::init(&certs, &crate::certs::CertOptions::default())?;
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

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `vmflow run` exits 3 when it ran to the end but records were lost
/// (spool overflow, a disk that refused them, damage found in the spool):
/// a supervisor can tell a clean run from a lossy one.
pub const EXIT_LOSSY: u8 = 3;

fn run_cmd(a: RunArgs) -> Result<ExitCode, Error> {
    let cfg = Config::load(&a.config)?;
    let r = crate::run::run_agent(&cfg, Some(a.config.clone()))?;
    print_run("run", &r);
    for (name, s) in &r.streams {
        print_run(&format!("run[{name}]"), s);
    }
    if let Some(e) = r.error {
        return Err(e);
    }
    let lost = r.spool.lost_records();
    if lost > 0 {
        eprintln!("run: {lost} records were lost (lost_records); exit code {EXIT_LOSSY}");
        return Ok(ExitCode::from(EXIT_LOSSY));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_run(what: &str, r: &crate::run::RunReport) {
    print_summary(what, &r.summary);
    eprintln!(
        "{what}: resumed_after={} spooled_batches={} spooled_records={} batches_sent={} batches_acked={} \
         connections={} connect_failures={} dropped_batches={} dropped_records={} append_errors={} \
         corrupt_batches={} corrupt_records={} lost_records={}",
        r.resumed_after,
        r.spool.batches,
        r.spool.records,
        r.ship.batches_sent,
        r.ship.batches_acked,
        r.ship.connections,
        r.ship.connect_failures,
        r.spool.dropped_batches,
        r.spool.dropped_records,
        r.spool.failed_records,
        r.spool.corrupt_batches,
        r.spool.corrupt_records,
        r.spool.lost_records(),
    );
    for s in &r.ifaces {
        eprintln!(
            "{what}: iface.{}.packets={} iface.{}.kernel_drops={}",
            s.iface, s.packets, s.iface, s.kernel_drops
        );
    }
    if let Some(b) = &r.blob {
        eprintln!(
            "{what}: blob.listings={} blob.downloaded={} blob.bytes={} blob.deleted={} blob.vanished={} blob.errors={} blob.late={} blob.late_packets={}",
            b.listings, b.downloaded, b.bytes, b.deleted, b.vanished, b.errors, b.late, b.late_packets
        );
    }
    if let Some((c, gaps)) = &r.coverage {
        eprintln!(
            "{what}: coverage.files={} coverage.packets={} coverage.duplicates={} coverage.gaps={} coverage.gap_ns={}",
            c.files, c.packets, c.duplicates, c.gaps, c.gap_ns
        );
        for g in gaps {
            eprintln!(
                "{what}: gap start_ns={} end_ns={} reason={:?}",
                g.start_ns, g.end_ns, g.reason
            );
        }
    }
    for (start, end) in &r.covered {
        eprintln!("{what}: covered start_ns={start} end_ns={end}");
    }
}

fn capture_cmd(a: CaptureArgs) -> Result<ExitCode, Error> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let cfg = engine_config(&a.engine)?;
    let ifaces = if a.interfaces.is_empty() {
        crate::capture::live::default_interfaces()
    } else {
        a.interfaces.clone()
    };
    if ifaces.is_empty() {
        return Err(crate::capture::live::LiveError::NothingToCapture.into());
    }
    let opts = crate::capture::live::RingOptions {
        snaplen: a.snaplen,
        promiscuous: a.promiscuous,
        blocks: a.ring_blocks.max(2),
        block_size: a.ring_block_kib.clamp(4, 1 << 20) << 10,
        ..Default::default()
    };
    let mut rings = ifaces
        .iter()
        .map(|i| crate::capture::live::Ring::open(i, &opts))
        .collect::<Result<Vec<_>, _>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(Error::setup("signal handler"))?;
    }
    let sink: Box<dyn RecordSink> = if a.out == "-" {
        Box::new(NdjsonSink::new(io::stdout()))
    } else {
        let f = File::create(&a.out).map_err(|e| Error::io(&a.out, e))?;
        Box::new(NdjsonSink::new(f))
    };
    eprintln!(
        "capture: capturing on {} (snap length {}); SIGTERM or SIGINT stops",
        ifaces.join(", "),
        a.snaplen
    );
    let tick = std::time::Duration::from_millis(200);
    // SIGHUP re-reads the file; command-line overrides keep applying.
    let mut from_file = crate::run::reloader(a.engine.config.clone());
    let (threads, local_net) = (a.engine.threads, a.engine.local_net.clone());
    let mut reload = move || {
        from_file().map(|mut c| {
            if let Some(t) = threads {
                c.pipeline.threads = t;
            }
            if !local_net.is_empty() {
                c.local_nets = Some(local_net.clone());
            }
            c
        })
    };
    let (report, stats) = crate::run::capture(
        &cfg,
        &mut rings,
        sink,
        None,
        &stop,
        &mut reload,
        &std::sync::atomic::AtomicU64::new(0),
        tick,
        opts.block_timeout_ms,
        Some(&crate::run::IfaceWatch {
            configured: a.interfaces.clone(),
            ring: opts.clone(),
            every: std::time::Duration::from_secs(2),
        }),
    );
    print_summary("capture", &report.summary);
    for s in &stats {
        eprintln!(
            "capture: iface.{}.packets={} iface.{}.kernel_drops={}",
            s.iface, s.packets, s.iface, s.kernel_drops
        );
    }
    match report.error {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.into()),
    }
}
