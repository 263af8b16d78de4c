//! The page: one HTML file with its CSS and SVG inline, readable without
//! script or network. Tables print exact numbers (grouped by commas) so
//! they can be checked against `vmflow query`.

use std::fmt::Write;

use crate::query::group::{Key, KeyValue, Totals};
use crate::query::Inputs;

use super::svg::{self, Axis, DIRECTION_COLOURS};
use super::tally::MINUTE_NS;
use super::Report;

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// 1234567 → "1,234,567".
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            o.push(',');
        }
        o.push(c);
    }
    o
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

const CSS: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f6f8; color: #1f2933; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #1f2d3d; color: #fff; padding: 22px 36px 18px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; letter-spacing: .2px; }
header p { margin: 0; color: #c5cfdb; font-size: 14px; }
main { max-width: 1120px; margin: 0 auto; padding: 20px 28px 40px; }
section { background: #fff; border: 1px solid #e1e5ea; border-radius: 8px; padding: 16px 20px 18px; margin: 0 0 18px; }
h2 { margin: 0 0 4px; font-size: 17px; font-weight: 600; }
.note { margin: 0 0 10px; color: #616e7c; font-size: 13px; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 14px; margin: 0 0 18px; }
.card { background: #fff; border: 1px solid #e1e5ea; border-radius: 8px; padding: 12px 16px; }
.card .label { color: #616e7c; font-size: 12px; text-transform: uppercase; letter-spacing: .6px; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .sub { color: #616e7c; font-size: 12px; }
.chart { width: 100%; height: auto; display: block; }
.chart .tick { font-size: 11px; fill: #616e7c; }
.chart .lane { font-size: 12px; fill: #1f2933; }
.legend { display: flex; gap: 18px; flex-wrap: wrap; font-size: 13px; margin: 6px 0 0 150px; }
.legend span::before { content: ""; display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; background: var(--c); }
.two { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 18px; }
.two section { margin: 0; }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
th { text-align: right; color: #616e7c; font-weight: 600; font-size: 11px; text-transform: uppercase; letter-spacing: .4px; padding: 6px 6px; border-bottom: 2px solid #e1e5ea; }
th.key, td.key { text-align: left; }
td { padding: 5px 6px; border-bottom: 1px solid #eef0f3; text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.key { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; overflow: hidden; text-overflow: ellipsis; max-width: 200px; }
td.bar { width: 14%; min-width: 40px; text-align: left; }
td.bar div { height: 9px; border-radius: 2px; background: #2f6fb3; opacity: .75; }
td.dim, .dim { color: #9aa5b1; }
tr:last-child td { border-bottom: 0; }
footer { color: #9aa5b1; font-size: 12px; text-align: center; margin-top: 8px; }
"#;

fn key_text(k: &Key, inputs: &Inputs) -> String {
    k.values(inputs)
        .into_iter()
        .map(|v| match v {
            KeyValue::Text(s) => s,
            KeyValue::Number(n) => n.to_string(),
            KeyValue::Absent => "-".into(),
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// A table of groups: key, flows, records, packets, bytes, share bar.
fn group_table(
    id: &str,
    key: &str,
    rows: &[(Key, Totals)],
    total_bytes: u64,
    inputs: &Inputs,
) -> String {
    let mut s = format!(
        r#"<table id="{id}"><thead><tr><th class="key">{key}</th><th>Flows</th><th>Records</th><th>Packets</th><th>Bytes</th><th class="key">Share</th></tr></thead><tbody>"#
    );
    // Bars are scaled to the largest row, so small shares stay visible;
    // the share of all bytes is in the tooltip.
    let widest = rows.iter().map(|(_, t)| t.bytes).max().unwrap_or(0).max(1);
    for (k, t) in rows {
        let share = if total_bytes == 0 {
            0.0
        } else {
            t.bytes as f64 / total_bytes as f64 * 100.0
        };
        let width = t.bytes as f64 / widest as f64 * 100.0;
        let _ = write!(
            s,
            r#"<tr><td class="key" title="{kt}">{kt}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num" title="{}">{}</td><td class="bar" title="{share:.1}% of bytes"><div style="width:{width:.1}%"></div></td></tr>"#,
            grouped(t.flows),
            grouped(t.records),
            grouped(t.packets),
            human_bytes(t.bytes),
            grouped(t.bytes),
            kt = esc(&key_text(k, inputs)),
        );
    }
    if rows.is_empty() {
        s.push_str(r#"<tr><td class="key dim" colspan="6">no records</td></tr>"#);
    }
    s.push_str("</tbody></table>");
    s
}

pub fn page(r: &Report) -> String {
    let t = &r.tally;
    let total = t.directions.total();
    let inputs = &r.inputs;
    let mut s = String::with_capacity(64 << 10);
    let span = if total.records == 0 {
        "no records".to_string()
    } else {
        format!(
            "{} – {}",
            crate::query::time::format(total.first_ns),
            crate::query::time::format(total.last_ns)
        )
    };
    let _ = write!(
        s,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>vmflow report: {title}</title><style>{CSS}</style></head><body><header><h1>vmflow report</h1><p>{title} · {span}{filter}</p></header><main>"#,
        title = esc(&r.title),
        filter = if r.filter_text.is_empty() {
            String::new()
        } else {
            format!(" · {}", esc(&r.filter_text))
        },
    );
    // Totals.
    let agents_n = t.agents.rows(crate::query::SortBy::Bytes).len();
    s.push_str(r#"<div class="cards" id="totals">"#);
    for (label, value, sub) in [
        ("Bytes", grouped(total.bytes), human_bytes(total.bytes)),
        ("Packets", grouped(total.packets), String::new()),
        (
            "Flows",
            grouped(total.flows),
            format!("{} records", grouped(total.records)),
        ),
        (
            "Agents",
            grouped(agents_n as u64),
            format!("{} files read", grouped(r.scan.files)),
        ),
    ] {
        let _ = write!(
            s,
            r#"<div class="card"><div class="label">{label}</div><div class="value">{value}</div><div class="sub">{sub}</div></div>"#
        );
    }
    s.push_str("</div>");
    if total.records > 0 {
        let first_min = total.first_ns / MINUTE_NS;
        let last_min = total.last_ns / MINUTE_NS;
        let axis = Axis::new(first_min, last_min);
        // Coverage.
        let lanes: Vec<(String, Option<u32>)> = {
            let mut seen: Vec<Option<u32>> = t.covered.iter().map(|(a, _)| *a).collect();
            seen.dedup();
            seen.into_iter()
                .map(|a| {
                    (
                        inputs
                            .agent_name(a)
                            .unwrap_or("(not from a collector)")
                            .to_string(),
                        a,
                    )
                })
                .collect()
        };
        let gap_minutes = t.gaps.len();
        let _ = write!(
            s,
            r#"<section id="coverage"><h2>Coverage</h2><p class="note">Times are UTC. Minutes in which each agent has records (green) and records the agent marked as open during a coverage gap — kernel drops, time no capture file covers, a cut file — whose counters may be short (red: {gap_minutes} agent-minutes). The collector keeps no coverage spans of its own, so a quiet minute without any flow shows as uncovered.</p>{}<div class="legend"><span style="--c:#3a9a5b">records</span><span style="--c:#d64545">coverage gap</span><span style="--c:#eef0f3">no records</span></div></section>"#,
            svg::coverage(&axis, &lanes, &t.covered, &t.gaps)
        );
        // Traffic.
        let _ = write!(
            s,
            r#"<section id="traffic"><h2>Traffic over time</h2><p class="note">Bytes (both directions of each flow) per {} by the flow's direction relative to the local networks, by the minute each record begins.</p>{}<div class="legend">"#,
            if axis.bucket_min.is_multiple_of(60) {
                format!("{} h", axis.bucket_min / 60)
            } else {
                format!("{} min", axis.bucket_min)
            },
            svg::traffic(&axis, &t.bytes)
        );
        let by_dir = t.directions.rows(crate::query::SortBy::Bytes);
        for (i, d) in crate::query::filter::DIRECTIONS.iter().enumerate() {
            let b = by_dir
                .iter()
                .find(|(k, _)| *k == Key::Direction(i as u8))
                .map_or(0, |(_, t)| t.bytes);
            let _ = write!(
                s,
                r#"<span style="--c:{}">{d} <b>{}</b></span>"#,
                DIRECTION_COLOURS[i],
                human_bytes(b)
            );
        }
        s.push_str("</div></section>");
    }
    let top = |g: &crate::query::Groups| {
        let mut rows = g.rows(crate::query::SortBy::Bytes);
        rows.truncate(r.top);
        rows
    };
    let _ = write!(
        s,
        r#"<div class="two"><section><h2>Top talkers</h2><p class="note">Initiator addresses by bytes (top {n}).</p>{}</section><section><h2>Top services</h2><p class="note">Protocol and responder port by bytes (top {n}).</p>{}</section></div>"#,
        group_table("talkers", "Address", &top(&t.talkers), total.bytes, inputs),
        group_table(
            "services",
            "Service",
            &top(&t.services),
            total.bytes,
            inputs
        ),
        n = r.top
    );
    // Per agent, with what the collector keeps about each.
    let agent_rows = t.agents.rows(crate::query::SortBy::Bytes);
    s.push_str(r#"<section style="margin-top:18px"><h2>Agents</h2><p class="note">Totals per agent; last seen, last batch and drops from the collector's state files (source drops: packets the agent's capture lost; dropped batches: batches its spool gave up).</p><table id="agents"><thead><tr><th class="key">Agent</th><th>Flows</th><th>Records</th><th>Packets</th><th>Bytes</th><th class="key">Last seen</th><th>Last seq</th><th>Source drops</th><th>Dropped batches</th></tr></thead><tbody>"#);
    for (k, tt) in &agent_rows {
        let name = key_text(k, inputs);
        let streams: Vec<&crate::query::agents::StreamInfo> =
            r.streams.iter().filter(|st| st.agent == name).collect();
        let (seen, seq, drops, dropped) = if streams.is_empty() {
            (
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
                "-".to_string(),
            )
        } else {
            (
                streams
                    .iter()
                    .filter_map(|st| st.last_seen_ns)
                    .max()
                    .map_or("-".into(), crate::query::time::format),
                streams
                    .iter()
                    .flat_map(|st| st.epochs.iter().map(|(_, e)| e.last_seq.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
                grouped(streams.iter().map(|st| st.source_drops()).sum()),
                grouped(streams.iter().map(|st| st.agent_dropped()).sum()),
            )
        };
        let _ = write!(
            s,
            r#"<tr><td class="key">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num" title="{}">{}</td><td class="key">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&name),
            grouped(tt.flows),
            grouped(tt.records),
            grouped(tt.packets),
            human_bytes(tt.bytes),
            grouped(tt.bytes),
            seen,
            seq,
            drops,
            dropped
        );
    }
    s.push_str("</tbody></table></section>");
    let _ = write!(
        s,
        r#"<footer>vmflow {} · {} records in {} files · generated from the records alone: no script, no network</footer></main></body></html>"#,
        env!("CARGO_PKG_VERSION"),
        grouped(r.scan.matched),
        grouped(r.scan.files)
    );
    s.push('\n');
    s
}
