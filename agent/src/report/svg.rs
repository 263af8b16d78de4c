//! The report's two charts as inline SVG (no script, no fonts to fetch):
//! traffic per time bucket stacked by direction, and a coverage lane per
//! agent. Each mark carries a `<title>`, which browsers show on hover.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::html::{esc, human_bytes};
use super::tally::MINUTE_NS;

pub const DIRECTION_COLOURS: [&str; 4] = ["#2f6fb3", "#e07b28", "#3a9a5b", "#8a63c7"];

const W: f64 = 1000.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 16.0;

/// Bucket sizes a chart may use, in minutes.
const BUCKETS: [u64; 12] = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440];

/// The time axis shared by both charts: whole buckets from `start`.
pub struct Axis {
    pub start_min: u64,
    pub bucket_min: u64,
    pub buckets: u64,
}

impl Axis {
    /// At most ~120 buckets over [first_min, last_min].
    pub fn new(first_min: u64, last_min: u64) -> Axis {
        let span = last_min.saturating_sub(first_min) + 1;
        let bucket_min = BUCKETS
            .iter()
            .copied()
            .find(|b| span.div_ceil(*b) <= 120)
            .unwrap_or_else(|| span.div_ceil(120));
        let start_min = first_min / bucket_min * bucket_min;
        let buckets = (last_min - start_min) / bucket_min + 1;
        Axis {
            start_min,
            bucket_min,
            buckets,
        }
    }

    fn x(&self, minute: u64) -> f64 {
        let span = (self.buckets * self.bucket_min) as f64;
        LEFT + (minute.saturating_sub(self.start_min) as f64) / span * (W - LEFT - RIGHT)
    }

    fn bucket_of(&self, minute: u64) -> u64 {
        (minute - self.start_min) / self.bucket_min
    }

    /// Tick labels along the bottom at `y`.
    fn ticks(&self, s: &mut String, top: f64, y: f64) {
        let span = self.buckets * self.bucket_min;
        let step = [
            1u64, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080,
        ]
        .into_iter()
        .find(|st| span / st <= 8)
        .unwrap_or(span / 8 + 1);
        let multi_day = span > 1440 || (self.start_min / 1440) != ((self.start_min + span) / 1440);
        let mut m = self.start_min.div_ceil(step) * step;
        while m <= self.start_min + span {
            let x = self.x(m);
            let t = crate::query::time::format(m * MINUTE_NS);
            let label = if multi_day {
                format!("{} {}", &t[5..10], &t[11..16])
            } else {
                t[11..16].to_string()
            };
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{y0}" stroke="#e4e7eb"/><text x="{x:.1}" y="{ty}" class="tick" text-anchor="middle">{label}</text>"##,
                y0 = y,
                ty = y + 16.0
            );
            m += step;
        }
    }
}

/// A round number of bytes at least `v` for the top of the y axis, in
/// the binary units the labels use, whose quarters read well.
fn nice_max(v: u64) -> u64 {
    let v = v.max(1);
    let mut unit = 1u64;
    while v / unit >= 1024 {
        unit *= 1024;
    }
    let x = v as f64 / unit as f64;
    let m = [
        1.0, 2.0, 4.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0, 400.0, 600.0, 800.0, 1024.0,
    ]
    .into_iter()
    .find(|m| *m >= x)
    .unwrap_or(1024.0);
    (m * unit as f64) as u64
}

/// Bytes per bucket, stacked by direction.
pub fn traffic(axis: &Axis, bytes: &BTreeMap<u64, [u64; 4]>) -> String {
    let mut buckets = vec![[0u64; 4]; axis.buckets as usize];
    for (m, b) in bytes {
        if let Some(slot) = buckets.get_mut(axis.bucket_of(*m) as usize) {
            for (s, x) in slot.iter_mut().zip(b) {
                *s += x;
            }
        }
    }
    let max = nice_max(
        buckets
            .iter()
            .map(|b| b.iter().sum::<u64>())
            .max()
            .unwrap_or(0),
    );
    let (top, bottom) = (12.0, 232.0);
    let h = bottom - top;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {W} 260" role="img" aria-label="bytes per {} minutes by direction">"#,
        axis.bucket_min
    );
    for i in 0..=4 {
        let y = bottom - h * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="{c}"/><text x="{lx}" y="{ty:.1}" class="tick" text-anchor="end">{label}</text>"##,
            x2 = W - RIGHT,
            c = if i == 0 { "#9aa5b1" } else { "#e4e7eb" },
            lx = LEFT - 8.0,
            ty = y + 4.0,
            label = human_bytes(max / 4 * i)
        );
    }
    axis.ticks(&mut s, top, bottom);
    let bw = (W - LEFT - RIGHT) / axis.buckets as f64;
    for (i, b) in buckets.iter().enumerate() {
        let mut y = bottom;
        let x = LEFT + bw * i as f64;
        let start = (axis.start_min + i as u64 * axis.bucket_min) * MINUTE_NS;
        for (d, v) in b.iter().enumerate() {
            if *v == 0 {
                continue;
            }
            let bh = h * *v as f64 / max as f64;
            y -= bh;
            let _ = write!(
                s,
                r#"<rect x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{bh:.2}" fill="{c}"><title>{t} {dir}: {v} bytes ({hb})</title></rect>"#,
                w = (bw * 0.86).max(0.5),
                c = DIRECTION_COLOURS[d],
                t = crate::query::time::format(start),
                dir = crate::query::filter::DIRECTIONS[d],
                hb = human_bytes(*v)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// One lane per agent: minutes with records (green), with records marked
/// `gap` (red), over the whole span (grey).
pub fn coverage(
    axis: &Axis,
    lanes: &[(String, Option<u32>)],
    covered: &BTreeSet<(Option<u32>, u64)>,
    gaps: &BTreeSet<(Option<u32>, u64)>,
) -> String {
    let lane_h = 26.0;
    let top = 8.0;
    let bottom = top + lane_h * lanes.len() as f64;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {W} {h}" role="img" aria-label="coverage per agent">"#,
        h = bottom + 26.0
    );
    axis.ticks(&mut s, top, bottom);
    let end_min = axis.start_min + axis.buckets * axis.bucket_min;
    for (i, (name, agent)) in lanes.iter().enumerate() {
        let y = top + lane_h * i as f64 + 4.0;
        let _ = write!(
            s,
            r##"<text x="{lx}" y="{ty:.1}" class="lane" text-anchor="end">{n}</text><rect x="{LEFT}" y="{y:.1}" width="{w:.1}" height="{bh}" fill="#eef0f3"/>"##,
            lx = LEFT - 8.0,
            ty = y + 13.0,
            n = esc(name),
            w = W - LEFT - RIGHT,
            bh = lane_h - 8.0
        );
        for (set, colour, what) in [
            (covered, "#3a9a5b", "records"),
            (gaps, "#d64545", "coverage gap"),
        ] {
            for (a, b) in runs(set, *agent) {
                let (x0, x1) = (axis.x(a), axis.x((b + 1).min(end_min)));
                let _ = write!(
                    s,
                    r#"<rect x="{x0:.2}" y="{y:.1}" width="{w:.2}" height="{bh}" fill="{colour}"><title>{n}: {what} {from} – {to}</title></rect>"#,
                    w = (x1 - x0).max(1.0),
                    bh = lane_h - 8.0,
                    n = esc(name),
                    from = crate::query::time::format(a * MINUTE_NS),
                    to = crate::query::time::format((b + 1) * MINUTE_NS),
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// Consecutive minutes of one agent as inclusive (first, last) runs.
pub fn runs(set: &BTreeSet<(Option<u32>, u64)>, agent: Option<u32>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(_, m) in set.range((agent, 0)..=(agent, u64::MAX)) {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == m => *last = m,
            _ => out.push((m, m)),
        }
    }
    out
}
