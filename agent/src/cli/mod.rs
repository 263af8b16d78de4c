//! Command-line interface. This file routes a command line to its
//! subcommand (one file each) and is the one place a command's error
//! becomes the exit status and the `vmflow: error: …` line.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{LogConfig, LogFormat};

mod azure;
mod bench;
mod capture;
mod cat;
mod certs;
mod check;
mod collect;
mod demo;
mod docs;
mod engine_args;
mod extension;
mod jetstream;
mod logging;
mod observe_args;
mod progress;
mod query;
mod replay;
mod report;
mod run;
mod service;
mod sink;
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
    about = "Flow agent: packets to bidirectional flow records",
    after_help = LOG_HELP
)]
struct Cli {
    /// Log line format on stderr (or the service's log file): text, or one
    /// JSON object a line. Default: `[log] format` of `--config`, else text.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// The top-level `--help` ends with how to choose what is logged.
const LOG_HELP: &str = "\
Logging:
  RUST_LOG sets which lines are logged (default: info), e.g. RUST_LOG=debug,
  RUST_LOG=warn or RUST_LOG=info,vmflow::export=debug. Lines go to stderr
  (the Windows service: its log file); --log-format json writes one JSON
  object a line, as does `[log] format = \"json\"` in the file `--config` names.";

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
    /// Check a configuration as `run` would use it: list what it would do and every problem.
    Check(check::CheckArgs),
    /// Live capture on network interfaces, records as NDJSON or CSV, until SIGTERM/SIGINT.
    Capture(capture::CaptureArgs),
    /// Print record files (`replay --format blocks`) and spool segments as NDJSON.
    Cat(cat::CatArgs),
    /// The collector: accept agents over mutual TLS, write their records.
    Collect(collect::CollectCmd),
    /// Write what collectors published to a JetStream stream as the collector's files.
    Sink(sink::SinkCmd),
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
    /// Print a shell completion script (e.g. `vmflow completions bash`).
    Completions(docs::CompletionsArgs),
    /// Write the manual pages (roff) to a directory.
    Man(docs::ManArgs),
}

/// `[log] format` of the file `run`/`capture --config` names, read before
/// logging starts so every line has one format.
fn configured_format(cmd: &Cmd) -> LogFormat {
    let path = match cmd {
        Cmd::Run(a) => Some(a.config_path().to_path_buf()),
        Cmd::Capture(a) => a.config_path().map(|p| p.to_path_buf()),
        Cmd::Service(service::ServiceCmd::Run(a)) => Some(a.path()),
        _ => None,
    };
    path.map_or_else(LogFormat::default, |p| LogConfig::peek(&p).format)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli
        .log_format
        .unwrap_or_else(|| configured_format(&cli.cmd));
    match &cli.cmd {
        Cmd::Service(c) if service::is_entry_point(c) => {
            logging::init_file(&service::log_file(), format)
        }
        _ => logging::init(format),
    }
    let result = match cli.cmd {
        Cmd::Replay(a) => replay::cmd(a),
        Cmd::Synth(a) => synth::cmd(a),
        Cmd::Bench(a) => bench::cmd(a),
        Cmd::Demo(a) => demo::cmd(a),
        Cmd::Run(a) => run::cmd(a),
        Cmd::Check(a) => check::cmd(a),
        Cmd::Capture(a) => capture::cmd(a),
        Cmd::Cat(a) => cat::cmd(a),
        Cmd::Collect(a) => collect::cmd(a),
        Cmd::Sink(a) => sink::cmd(a),
        Cmd::Query(a) => query::cmd(a),
        Cmd::Report(a) => report::cmd(a),
        Cmd::Azure(c) => azure::cmd(c),
        Cmd::Certs(c) => certs::cmd(c),
        Cmd::Extension(c) => extension::cmd(c),
        Cmd::Service(c) => service::cmd(c),
        Cmd::Completions(a) => docs::completions(a, Cli::command()),
        Cmd::Man(a) => docs::man(a, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmflow: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every command says what it is for in
    /// `--help` (and so in the manual pages and completions).
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            // clap's own `help` subcommand documents itself.
            for s in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                if s.get_about().is_none() && s.get_long_about().is_none() {
                    missing.push(format!("{path} {} (the command itself)", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "vmflow", &mut missing);
        assert!(
            missing.is_empty(),
            "no help text for:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
