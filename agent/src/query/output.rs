//! A query's result as a table (for people), NDJSON or CSV (for tools).
//! Grouped rows have the key's columns, then `records`, `flows`,
//! `packets`, `bytes`, `fwd_bytes`, `rev_bytes`, `first_ns`, `last_ns`.

use std::io::Write;

use super::group::{GroupBy, Key, KeyValue, Totals};
use super::read::Inputs;
use super::QueryError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Ndjson,
    Csv,
}

const COUNTS: [&str; 8] = [
    "records",
    "flows",
    "packets",
    "bytes",
    "fwd_bytes",
    "rev_bytes",
    "first_ns",
    "last_ns",
];

fn counts(t: &Totals) -> [u64; 8] {
    [
        t.records,
        t.flows,
        t.packets,
        t.bytes,
        t.fwd_bytes,
        t.rev_bytes,
        t.first_ns,
        t.last_ns,
    ]
}

/// Writes grouped rows (`by` None: the one row of everything).
pub fn groups(
    out: &mut dyn Write,
    format: Output,
    by: Option<GroupBy>,
    rows: &[(Key, Totals)],
    inputs: &Inputs,
) -> Result<(), QueryError> {
    let cols: &[&str] = by.map_or(&[], GroupBy::columns);
    let w = |r: std::io::Result<()>| r.map_err(QueryError::Output);
    match format {
        Output::Ndjson => {
            let mut line = String::new();
            for (k, t) in rows {
                line.clear();
                line.push('{');
                for (c, v) in cols.iter().zip(k.values(inputs)) {
                    line.push_str(&format!("\"{c}\":"));
                    match v {
                        KeyValue::Text(s) => line.push_str(&serde_json::Value::from(s).to_string()),
                        KeyValue::Number(n) => line.push_str(&n.to_string()),
                        KeyValue::Absent => line.push_str("null"),
                    }
                    line.push(',');
                }
                for (c, n) in COUNTS.iter().zip(counts(t)) {
                    line.push_str(&format!("\"{c}\":{n},"));
                }
                line.pop();
                line.push_str("}\n");
                w(out.write_all(line.as_bytes()))?;
            }
        }
        Output::Csv => {
            let header: Vec<&str> = cols.iter().chain(COUNTS.iter()).copied().collect();
            w(writeln!(out, "{}", header.join(",")))?;
            let mut line = Vec::new();
            for (k, t) in rows {
                line.clear();
                for v in k.values(inputs) {
                    match v {
                        KeyValue::Text(s) => crate::export::csv::field(&s, &mut line),
                        KeyValue::Number(n) => line.extend_from_slice(n.to_string().as_bytes()),
                        KeyValue::Absent => {}
                    }
                    line.push(b',');
                }
                for n in counts(t) {
                    line.extend_from_slice(n.to_string().as_bytes());
                    line.push(b',');
                }
                line.pop();
                line.push(b'\n');
                w(out.write_all(&line))?;
            }
        }
        Output::Table => {
            let mut header: Vec<String> = cols.iter().map(|c| c.to_uppercase()).collect();
            header.extend(
                ["FLOWS", "RECORDS", "PACKETS", "BYTES", "FIRST", "LAST"].map(String::from),
            );
            let mut table = vec![header];
            for (k, t) in rows {
                let mut row: Vec<String> = k
                    .values(inputs)
                    .into_iter()
                    .map(|v| match v {
                        KeyValue::Text(s) => s,
                        KeyValue::Number(n) => n.to_string(),
                        KeyValue::Absent => "-".into(),
                    })
                    .collect();
                if by == Some(GroupBy::Proto) {
                    if let Key::Proto(p) = k {
                        row[0] = super::filter::proto_name(*p);
                    }
                }
                row.extend([
                    t.flows.to_string(),
                    t.records.to_string(),
                    t.packets.to_string(),
                    t.bytes.to_string(),
                ]);
                let when = |ns: u64| {
                    if t.records == 0 {
                        "-".into()
                    } else {
                        super::time::format(ns)
                    }
                };
                row.extend([when(t.first_ns), when(t.last_ns)]);
                table.push(row);
            }
            w(write_table(out, &table, cols.len()))?;
        }
    }
    Ok(())
}

/// Columns padded to their widest cell: the key columns left-aligned, the
/// numbers right-aligned.
pub fn write_table(out: &mut dyn Write, table: &[Vec<String>], left: usize) -> std::io::Result<()> {
    let n = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            table
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in table {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i < left {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(pad));
                }
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
