//! The board as Prometheus metrics: a prometheus-client `Collector` that
//! reads a snapshot at each scrape and encodes it (OpenMetrics text).
//! Counters get `_total` appended by the encoder.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use vmflow_proto::EndReason;

use super::board::{Board, Snapshot};
use crate::collect::live::COMMIT_BUCKETS;
use crate::pipeline::live::end_reason_name;

/// A registry holding the board's collector.
pub fn registry(board: Arc<Board>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(BoardCollector(board)));
    r
}

/// The exposition of everything on the board now.
pub fn text(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug
    // in what we hand it, and a short page is still an answer.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

struct BoardCollector(Arc<Board>);

impl std::fmt::Debug for BoardCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoardCollector")
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// One metric family: its descriptor once, then a value per label set.
fn family<'a, T: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels<'a>, T)>,
    put: impl Fn(MetricEncoder, T) -> std::fmt::Result,
) -> std::fmt::Result {
    let rows: Vec<_> = rows.into_iter().collect();
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in &rows {
        put(m.encode_family(labels)?, *v)?;
    }
    Ok(())
}

fn counters<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> std::fmt::Result {
    family(enc, name, help, MetricType::Counter, rows, |mut m, v| {
        m.encode_counter::<NoLabelSet, u64, f64>(&v, None)
    })
}

fn gauges<'a, T: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels<'a>, T)>,
) -> std::fmt::Result {
    family(enc, name, help, MetricType::Gauge, rows, |mut m, v| {
        m.encode_gauge(&v)
    })
}

impl Collector for BoardCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let snap = self.0.snapshot();
        engine(&mut enc, &snap)?;
        flowlogs(&mut enc, &snap)?;
        lanes(&mut enc, &snap)?;
        collector(&mut enc, &snap)?;
        let ready = u64::from(self.0.health.problems(&self.0).is_empty());
        gauges(
            &mut enc,
            "vmflow_ready",
            "1 when /healthz answers ok (source open, directories writable, collector reachable)",
            [(vec![], ready)],
        )
    }
}

fn engine(enc: &mut DescriptorEncoder, snap: &Snapshot) -> std::fmt::Result {
    let e = &snap.engines;
    fn s(n: &str) -> Labels<'_> {
        vec![("stream", n)]
    }
    let each = |f: fn(&crate::pipeline::live::EngineNow) -> u64| {
        e.iter()
            .map(move |(n, x)| (vec![("stream", n.as_str())], f(x)))
    };
    counters(
        enc,
        "vmflow_packets",
        "Packets read from the source",
        each(|x| x.progress.packets),
    )?;
    counters(
        enc,
        "vmflow_flow_packets",
        "Packets that reached the flow table",
        each(|x| x.progress.flow_packets),
    )?;
    counters(
        enc,
        "vmflow_ip_bytes",
        "IP-layer bytes of the packets that reached the flow table",
        each(|x| x.progress.ip_bytes),
    )?;
    counters(
        enc,
        "vmflow_packets_skipped",
        "Packets left out of flows, by reason",
        e.iter().flat_map(|(n, x)| {
            x.progress
                .skipped
                .iter()
                .map(move |(r, v)| (vec![("stream", n.as_str()), ("reason", r.as_str())], *v))
        }),
    )?;
    gauges(
        enc,
        "vmflow_open_flows",
        "Flows in the flow table now (live capture, followed sources, flow-log stitchers)",
        e.iter()
            .filter_map(|(n, x)| Some((s(n), x.progress.tables?.open_flows))),
    )?;
    counters(
        enc,
        "vmflow_flows_evicted",
        "Flows evicted because the table was full (live capture, followed sources, flow-log stitchers)",
        e.iter()
            .filter_map(|(n, x)| Some((s(n), x.progress.tables?.evicted))),
    )?;
    counters(
        enc,
        "vmflow_records",
        "Flow records produced, by end reason",
        e.iter().flat_map(|(n, x)| {
            EndReason::ALL.iter().zip(x.by_end).map(move |(r, v)| {
                (
                    vec![("stream", n.as_str()), ("end_reason", end_reason_name(*r))],
                    v,
                )
            })
        }),
    )?;
    counters(
        enc,
        "vmflow_flows",
        "Flows ended (records with final set)",
        each(|x| x.flows),
    )?;
    counters(
        enc,
        "vmflow_gap_records",
        "Records of flows open during a coverage gap (gap: true)",
        each(|x| x.gap_records),
    )?;
    counters(
        enc,
        "vmflow_coverage_gaps",
        "Coverage gaps reported (kernel drops in live capture; packet time no capture file covers in followed folders and containers)",
        each(|x| x.gaps),
    )?;
    counters(
        enc,
        "vmflow_iface_packets",
        "Packets captured per interface",
        e.iter().flat_map(|(_, x)| {
            x.ifaces
                .iter()
                .map(|i| (vec![("iface", i.iface.as_str())], i.packets))
        }),
    )?;
    counters(
        enc,
        "vmflow_kernel_drops",
        "Packets the kernel dropped per interface (ring full)",
        e.iter().flat_map(|(_, x)| {
            x.ifaces
                .iter()
                .map(|i| (vec![("iface", i.iface.as_str())], i.kernel_drops))
        }),
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    gauges(
        enc,
        "vmflow_checkpoint_age_seconds",
        "Seconds since the last checkpoint of a followed source",
        e.iter()
            .filter_map(|(n, x)| Some((s(n), now.saturating_sub(x.checkpoint_unix?) as f64))),
    )
}

/// Flow-log sources: reading the container and stitching its tuples (their
/// records, open flows and checkpoints are on the engine families).
fn flowlogs(enc: &mut DescriptorEncoder, snap: &Snapshot) -> std::fmt::Result {
    use crate::follow::flowlog::live::FlowlogNow;
    let f = &snap.flowlogs;
    let each = |f2: fn(&FlowlogNow) -> u64| {
        f.iter()
            .map(move |(n, x)| (vec![("stream", n.as_str())], f2(x)))
    };
    type Parts = &'static [(&'static str, fn(&FlowlogNow) -> u64)];
    let by = |label: &'static str, parts: Parts| {
        f.iter().flat_map(move |(n, x)| {
            parts
                .iter()
                .map(move |(k, g)| (vec![("stream", n.as_str()), (label, *k)], g(x)))
        })
    };
    counters(
        enc,
        "vmflow_flowlog_reads",
        "Ranged GETs of new committed blocks of flow-log blobs",
        each(|x| x.read.downloads),
    )?;
    counters(
        enc,
        "vmflow_flowlog_read_bytes",
        "Bytes those reads brought",
        each(|x| x.read.bytes),
    )?;
    counters(
        enc,
        "vmflow_flowlog_blocks",
        "Blocks of flow-log blobs parsed",
        each(|x| x.read.blocks),
    )?;
    counters(
        enc,
        "vmflow_flowlog_tuples",
        "Flow tuples read from flow logs",
        each(|x| x.read.tuples),
    )?;
    counters(
        enc,
        "vmflow_flowlog_skipped",
        "Parts of flow logs that could not be read, by what (logged each time)",
        by(
            "what",
            &[
                ("block", |x| x.read.bad_blocks),
                ("record", |x| x.read.bad_records),
                ("tuple", |x| x.read.bad_tuples),
            ],
        ),
    )?;
    counters(
        enc,
        "vmflow_flowlog_blob_events",
        "Flow-log blobs read again from their start (rewritten, shrunk), looked at again (raced), or whose pending read was lost (abandoned)",
        by(
            "event",
            &[
                ("rewritten", |x| x.read.rewritten),
                ("shrunk", |x| x.read.shrunk),
                ("raced", |x| x.read.raced),
                ("abandoned", |x| x.read.abandoned),
            ],
        ),
    )?;
    counters(
        enc,
        "vmflow_flowlog_stitch_events",
        "Stitching events: a continuation without its begin tuple, a flow begun again before its end, a flow closed idle",
        by(
            "event",
            &[
                ("without_begin", |x| x.stitch.without_begin),
                ("reopened", |x| x.stitch.reopened),
                ("idle_closed", |x| x.stitch.idle_closed),
            ],
        ),
    )
}

fn lanes(enc: &mut DescriptorEncoder, snap: &Snapshot) -> std::fmt::Result {
    let l = &snap.lanes;
    let each = |f: fn(&super::board::LaneNow) -> u64| {
        l.iter()
            .map(move |x| (vec![("stream", x.stream.as_str())], f(x)))
    };
    gauges(
        enc,
        "vmflow_spool_batches",
        "Batches in the spool not yet acknowledged",
        each(|x| x.spool.batches),
    )?;
    gauges(
        enc,
        "vmflow_spool_records",
        "Records in the spool not yet acknowledged",
        each(|x| x.spool.records),
    )?;
    gauges(
        enc,
        "vmflow_spool_bytes",
        "Bytes of spool segments on disk",
        each(|x| x.spool.bytes),
    )?;
    gauges(
        enc,
        "vmflow_spool_oldest_age_seconds",
        "Seconds the oldest unacknowledged batch has waited (0 when none)",
        l.iter().map(|x| {
            (
                vec![("stream", x.stream.as_str())],
                x.oldest_age.unwrap_or(0.0),
            )
        }),
    )?;
    counters(
        enc,
        "vmflow_spool_dropped_records",
        "Records dropped to keep the spool within spool_max_mib",
        each(|x| x.spool.dropped_records),
    )?;
    counters(
        enc,
        "vmflow_spool_failed_records",
        "Records of batches the spool could not write (disk full or failing)",
        each(|x| x.spool.failed_records),
    )?;
    counters(
        enc,
        "vmflow_spool_corrupt_records",
        "Records of batches found damaged in the spool",
        each(|x| x.spool.corrupt_records),
    )?;
    gauges(
        enc,
        "vmflow_acked_seq",
        "Highest batch number the collector acknowledged",
        each(|x| x.acked_seq),
    )?;
    gauges(
        enc,
        "vmflow_last_seq",
        "Number of the newest batch spooled",
        each(|x| x.last_seq),
    )?;
    gauges(
        enc,
        "vmflow_ack_lag_batches",
        "Batches spooled but not yet acknowledged (last_seq - acked_seq)",
        each(|x| x.last_seq.saturating_sub(x.acked_seq)),
    )?;
    counters(
        enc,
        "vmflow_batches_sent",
        "Batches sent to the collector (resends included)",
        each(|x| x.ship.stats.batches_sent),
    )?;
    counters(
        enc,
        "vmflow_batches_acked",
        "Batches the collector acknowledged during this run",
        each(|x| x.ship.stats.batches_acked),
    )?;
    counters(
        enc,
        "vmflow_connections",
        "Connections to the collector established",
        each(|x| x.ship.stats.connections),
    )?;
    counters(
        enc,
        "vmflow_connect_failures",
        "Connections to the collector that failed or broke",
        each(|x| x.ship.stats.connect_failures),
    )?;
    gauges(
        enc,
        "vmflow_connected",
        "1 while connected to the collector",
        each(|x| u64::from(x.ship.connected)),
    )
}

fn collector(enc: &mut DescriptorEncoder, snap: &Snapshot) -> std::fmt::Result {
    let Some(c) = &snap.collector else {
        return Ok(());
    };
    let one = |v: u64| [(Labels::new(), v)];
    gauges(
        enc,
        "vmflow_collect_agents_connected",
        "Agent connections past hello now",
        one(c.agents_connected),
    )?;
    counters(
        enc,
        "vmflow_collect_connections",
        "Agent connections accepted (past hello)",
        one(c.connections),
    )?;
    counters(
        enc,
        "vmflow_collect_batches_written",
        "Batches written durably and acknowledged",
        one(c.batches_written),
    )?;
    counters(
        enc,
        "vmflow_collect_records_written",
        "Records written durably and acknowledged",
        one(c.records_written),
    )?;
    counters(
        enc,
        "vmflow_collect_duplicate_batches",
        "Batches received again that were already durable",
        one(c.duplicates),
    )?;
    counters(
        enc,
        "vmflow_collect_refusals",
        "Connections refused, by reason",
        c.refusals.iter().map(|(r, v)| (vec![("reason", *r)], *v)),
    )?;
    histogram(
        enc,
        "vmflow_collect_commit_seconds",
        "Group commit latency: writing and fsyncing records and state",
        &c.commit_buckets,
        c.commit_seconds,
    )?;
    if c.sync_buckets.iter().any(|n| *n > 0) {
        histogram(
            enc,
            "vmflow_collect_fsync_seconds",
            "Time each group commit of the file store spent in fsync (its syncs summed)",
            &c.sync_buckets,
            c.sync_seconds,
        )?;
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    per_bucket: &[u64],
    sum: f64,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let buckets: Vec<(f64, u64)> = COMMIT_BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(per_bucket.iter().copied())
        .collect();
    let count = per_bucket.iter().sum();
    m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_encodes_as_openmetrics_text() {
        let board = Arc::new(Board::default());
        let live = board.engine("");
        live.publish(vmflow_engine::Progress {
            packets: 7,
            flow_packets: 6,
            ip_bytes: 600,
            skipped: [("non_ip".to_string(), 1)].into(),
            tables: None,
        });
        let c = Arc::new(crate::collect::live::CollectLive::default());
        c.written(5);
        c.committed(std::time::Duration::from_millis(3));
        board.collector(c);
        let t = text(&registry(board));
        assert!(t.contains("vmflow_packets_total{stream=\"\"} 7\n"), "{t}");
        assert!(
            t.contains("vmflow_packets_skipped_total{stream=\"\",reason=\"non_ip\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("vmflow_collect_records_written_total 5\n"),
            "{t}"
        );
        assert!(
            t.contains("vmflow_collect_commit_seconds_bucket{le=\"0.005\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("vmflow_collect_commit_seconds_count 1\n"), "{t}");
        assert!(!t.contains("# TYPE vmflow_open_flows"), "{t}");
        assert!(t.ends_with("# EOF\n"), "{t}");
    }
}
