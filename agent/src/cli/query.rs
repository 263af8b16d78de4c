//! `vmflow query`: records from the collector's output (or any NDJSON)
//! filtered, grouped and sorted; `--agents` lists what the collector keeps
//! per agent.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Args;

use crate::error::Error;
use crate::net::Cidr;
use crate::query::filter::{parse_direction, parse_host, parse_proto};
use crate::query::output::Output;
use crate::query::{self, Filter, GroupBy, Groups, QueryError, SortBy};

#[derive(Args)]
pub(super) struct QueryArgs {
    /// Where the records are: the collector's output directory (read
    /// recursively: agents, streams, hour files), NDJSON or blocks files
    /// (`replay --format blocks`), or `-` (standard input, either kind).
    #[arg(required = true)]
    paths: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Totals per group instead of records: src, dst, remote, local,
    /// service (tcp/443), port (the responder's), proto, agent, pair, direction.
    #[arg(long, value_enum)]
    group_by: Option<GroupBy>,
    /// Groups largest first by this.
    #[arg(long, value_enum, default_value_t = SortBy::Bytes)]
    sort: SortBy,
    /// Only the first N groups (default: 20 in a table, all otherwise; 0: all).
    #[arg(long)]
    top: Option<usize>,
    /// table, ndjson or csv. Without --group-by, ndjson and csv give the
    /// matching records themselves and a table their totals.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Threads reading files (default: the cores).
    #[arg(long)]
    threads: Option<usize>,
    /// List the agents in a collector's output directory instead: last
    /// seen, last batch, records, drops (table, or NDJSON with --output ndjson).
    #[arg(long)]
    agents: bool,
}

/// The record filters (shared with `vmflow report`).
#[derive(Args, Clone)]
pub(super) struct FilterArgs {
    /// Records that end at or after this time (RFC 3339, e.g.
    /// 2026-12-03T06:00:00Z, or unix seconds).
    #[arg(long, value_parser = query::time::parse)]
    since: Option<u64>,
    /// Records that begin before this time.
    #[arg(long, value_parser = query::time::parse)]
    until: Option<u64>,
    /// Either end is this address or in this CIDR (repeat: any of them).
    #[arg(long, value_parser = parse_host)]
    host: Vec<Cidr>,
    /// Either port is this (repeat: any of them).
    #[arg(long)]
    port: Vec<u16>,
    /// tcp, udp, icmp, icmpv6, sctp, gre, esp or a number (repeat: any).
    #[arg(long, value_parser = parse_proto)]
    proto: Vec<u8>,
    /// outbound, inbound, internal or external (repeat: any).
    #[arg(long, value_parser = parse_direction)]
    direction: Vec<String>,
    /// Records of this agent (its certificate's name; repeat: any).
    #[arg(long)]
    agent: Vec<String>,
}

impl FilterArgs {
    /// The filter as the command line gave it (for the report's header).
    pub(super) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = self.since {
            parts.push(format!("since {}", query::time::format(t)));
        }
        if let Some(t) = self.until {
            parts.push(format!("until {}", query::time::format(t)));
        }
        let list = |name: &str, v: Vec<String>, parts: &mut Vec<String>| {
            if !v.is_empty() {
                parts.push(format!("{name} {}", v.join(" or ")));
            }
        };
        list(
            "host",
            self.host.iter().map(|c| c.to_string()).collect(),
            &mut parts,
        );
        list(
            "port",
            self.port.iter().map(|p| p.to_string()).collect(),
            &mut parts,
        );
        list(
            "proto",
            self.proto
                .iter()
                .map(|p| query::filter::proto_name(*p))
                .collect(),
            &mut parts,
        );
        list("direction", self.direction.clone(), &mut parts);
        list("agent", self.agent.clone(), &mut parts);
        parts.join(", ")
    }

    pub(super) fn filter(&self) -> Filter {
        Filter {
            since: self.since,
            until: self.until,
            hosts: self.host.clone(),
            ports: self.port.clone(),
            protos: self.proto.clone(),
            directions: self.direction.clone(),
            agents: self.agent.clone(),
        }
    }
}

pub(super) fn cmd(a: QueryArgs) -> Result<ExitCode, Error> {
    match query(a) {
        // `vmflow query … | head`: the reader has what it wanted.
        Err(QueryError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        other => other.map_err(Error::from),
    }
}

fn query(a: QueryArgs) -> Result<ExitCode, QueryError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout.lock());
    if a.agents {
        let (mut all, mut damaged) = (Vec::new(), Vec::new());
        for p in &a.paths {
            let (found, bad) = query::agents::list(std::path::Path::new(p))?;
            all.extend(found);
            damaged.extend(bad);
        }
        query::agents::write(&mut out, &all, a.output == Output::Ndjson)?;
        out.flush().map_err(QueryError::Output)?;
        for e in &damaged {
            eprintln!("query: {e}");
        }
        return Ok(if damaged.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let filter = a.filter.filter();
    let inputs = query::read::inputs(&a.paths)?;
    let records_out = a.group_by.is_none() && a.output != Output::Table;
    if records_out && (a.top.is_some() || a.sort != SortBy::Bytes) {
        return Err(QueryError::Usage(
            "--sort and --top order groups: give --group-by too (or --output table for totals)"
                .into(),
        ));
    }
    let scan = if records_out {
        let csv = a.output == Output::Csv;
        let mut line = Vec::with_capacity(512);
        if csv {
            crate::export::csv::header_line(&mut line);
            out.write_all(&line).map_err(QueryError::Output)?;
        }
        query::each(&inputs, &filter, |input, _, raw| {
            if csv {
                // Only the records asked for are parsed whole.
                let r: vmflow_proto::FlowRecord =
                    serde_json::from_slice(raw).map_err(|e| QueryError::Damaged {
                        path: input.name(),
                        why: format!("a record that does not read whole: {e}"),
                    })?;
                line.clear();
                crate::export::csv::encode(&r, &mut line);
                line.push(b'\n');
                out.write_all(&line).map_err(QueryError::Output)
            } else {
                out.write_all(raw)
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(QueryError::Output)
            }
        })?
    } else {
        let threads = a.threads.unwrap_or_else(query::default_threads);
        let (groups, scan) = query::fold(&inputs, &filter, threads, || Groups::new(a.group_by))?;
        let mut rows = groups.rows(a.sort);
        let top = match (a.top, a.output) {
            (Some(0), _) => usize::MAX,
            (Some(n), _) => n,
            (None, Output::Table) if a.group_by.is_some() => 20,
            (None, _) => usize::MAX,
        };
        rows.truncate(top);
        if a.group_by.is_none() {
            rows = vec![(query::Key::All, groups.total())];
        }
        query::output::groups(&mut out, a.output, a.group_by, &rows, &inputs)?;
        if groups.unusable > 0 {
            eprintln!(
                "query: {} records with an address or direction that does not read were left out",
                groups.unusable
            );
        }
        scan
    };
    out.flush().map_err(QueryError::Output)?;
    if let Some(w) = scan.warning() {
        eprintln!("query: {w}");
    }
    eprintln!(
        "query: files={} lines={} matched={}",
        scan.files, scan.lines, scan.matched
    );
    Ok(ExitCode::SUCCESS)
}
