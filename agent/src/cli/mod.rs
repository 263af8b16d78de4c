//! Command-line interface. This file routes a command line to its
//! subcommand (one file each) and is the one place a command's error
//! becomes the exit status and the `vmflow: error: …` line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod azure;
mod bench;
mod capture;
mod certs;
mod collect;
mod demo;
mod engine_args;
mod extension;
mod logging;
mod query;
mod replay;
mod report;
mod run;
mod service;
mod summary;
mod synth;

pub use bench::peak_rss_mib;
pub use demo::read_ndjson;
pub use run::EXIT_LOSSY;
pub use summary::print_summary;

/// `vmflow --version`: the release, the commit and its date (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("VMFLOW_COMMIT"),
    ", ",
    env!("VMFLOW_COMMIT_DATE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "vmflow",
    version = VERSION,
    about = "Flow agent: packets to bidirectional flow records"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Turn capture files (pcap, pcapng, NetMon 2.x) into flow records (NDJSON).
    Replay(replay::ReplayArgs),
    /// Write a synthetic capture and, optionally, the exact expected records.
    Synth(synth::SynthArgs),
    /// Synthesize a capture and replay it in one process; print packets/s and peak memory.
    Bench(bench::BenchArgs),
    /// Show the whole path on this machine: synthesize a capture, replay it, summarize.
    Demo(demo::DemoArgs),
    /// The agent: read the configured source, ship records to a collector.
    Run(run::RunArgs),
    /// Live capture on network interfaces, records as NDJSON or CSV, until SIGTERM/SIGINT.
    Capture(capture::CaptureArgs),
    /// The collector: accept agents over mutual TLS, write their records.
    Collect(collect::CollectCmd),
    /// Read records back (the collector's output or NDJSON): filter, group, sort.
    Query(query::QueryArgs),
    /// An HTML page of the records: coverage, traffic over time, top talkers and services, agents.
    Report(report::ReportArgs),
    /// Certificates for trying the shipping path out.
    #[command(subcommand)]
    Certs(certs::CertsCmd),
    /// Azure: the Network Watcher packet-capture lifecycle ([azure.captures]).
    #[command(subcommand)]
    Azure(azure::AzureCmd),
    /// The Azure VM extension handler: the commands HandlerManifest.json names.
    #[command(subcommand)]
    Extension(extension::ExtensionCmd),
    /// Windows: install, remove, start or stop the vmflow service.
    #[command(subcommand)]
    Service(service::ServiceCmd),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Service(c) if service::is_entry_point(c) => logging::init_file(&service::log_file()),
        _ => logging::init(),
    }
    let result = match cli.cmd {
        Cmd::Replay(a) => replay::cmd(a),
        Cmd::Synth(a) => synth::cmd(a),
        Cmd::Bench(a) => bench::cmd(a),
        Cmd::Demo(a) => demo::cmd(a),
        Cmd::Run(a) => run::cmd(a),
        Cmd::Capture(a) => capture::cmd(a),
        Cmd::Collect(a) => collect::cmd(a),
        Cmd::Query(a) => query::cmd(a),
        Cmd::Report(a) => report::cmd(a),
        Cmd::Azure(c) => azure::cmd(c),
        Cmd::Certs(c) => certs::cmd(c),
        Cmd::Extension(c) => extension::cmd(c),
        Cmd::Service(c) => service::cmd(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmflow: error: {e}");
            ExitCode::FAILURE
        }
    }
}
