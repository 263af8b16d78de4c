//! The periodic one-line stats in the log (`stats: packets=… records=…`),
//! from the same board as the metrics: one line per record stream, and one
//! for the collector.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::board::{Board, Snapshot};
use super::MetricsError;

pub struct StatsLine {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StatsLine {
    pub fn start(every: Duration, board: Arc<Board>) -> Result<StatsLine, MetricsError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("stats".into())
            .spawn(move || {
                // A message or a dropped sender both mean stop.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    for l in lines(&board.snapshot()) {
                        tracing::info!("stats: {l}");
                    }
                }
            })
            .map_err(MetricsError::Thread)?;
        Ok(StatsLine {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for StatsLine {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The lines for one snapshot: `key=value` pairs.
pub fn lines(s: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let several = s.engines.len() > 1;
    for (name, e) in &s.engines {
        let mut l = String::new();
        if several {
            l.push_str(&format!("stream={name} "));
        }
        l.push_str(&format!(
            "packets={} records={} flows={}",
            e.progress.packets, e.records, e.flows
        ));
        if let Some(t) = e.progress.tables {
            l.push_str(&format!(" open_flows={}", t.open_flows));
        }
        if let Some((_, f)) = s.flowlogs.iter().find(|(n, _)| n == name) {
            l.push_str(&format!(" flowlog_tuples={}", f.read.tuples));
        }
        if !e.ifaces.is_empty() {
            let drops: u64 = e.ifaces.iter().map(|i| i.kernel_drops).sum();
            l.push_str(&format!(" kernel_drops={drops}"));
        }
        if let Some(x) = s.lanes.iter().find(|x| x.stream == *name) {
            l.push_str(&format!(
                " spool_batches={} spool_records={} acked_seq={} connected={}",
                x.spool.batches, x.spool.records, x.acked_seq, x.ship.connected
            ));
        }
        out.push(l);
    }
    if let Some(c) = &s.collector {
        out.push(format!(
            "agents_connected={} batches_written={} records_written={}",
            c.agents_connected, c.batches_written, c.records_written
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_stream_and_one_for_the_collector() {
        let board = Board::default();
        board.engine("").publish(vmflow_engine::Progress {
            packets: 9,
            tables: Some(vmflow_engine::TablesNow {
                open_flows: 4,
                evicted: 0,
            }),
            ..Default::default()
        });
        board.collector(Arc::default());
        let l = lines(&board.snapshot());
        assert_eq!(
            l,
            vec![
                "packets=9 records=0 flows=0 open_flows=4".to_string(),
                "agents_connected=0 batches_written=0 records_written=0".to_string()
            ]
        );
    }
}
