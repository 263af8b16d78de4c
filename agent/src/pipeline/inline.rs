//! The inline engine: flow tables and output on the reader's thread, for
//! live capture and followed sources at moderate rates: no hand-off between
//! threads, no wake-ups, the same records in the same order.

use vmflow_proto::{EndReason, FlowRecord};

use super::records::{sum_stats, write_epoch, Written};
use super::router::Routed;
use super::shards::process;
use crate::flow::FlowTable;
use crate::sink::RecordSink;

/// Everything on the reader's thread, for live capture at moderate rates:
/// no hand-off between threads, no wake-ups, the same records in the same order.
pub(super) struct Inline<'s> {
    pub(super) tables: Vec<FlowTable>,
    pub(super) sink: Box<dyn RecordSink + 's>,
    pub(super) recs: Vec<FlowRecord>,
    pub(super) tagged: Vec<(u16, FlowRecord)>,
    pub(super) plain: Vec<FlowRecord>,
    pub(super) written: Written,
    /// The output's first failure; nothing is written after it.
    pub(super) error: Option<std::io::Error>,
}

impl Inline<'_> {
    pub(super) fn submit(&mut self, pkts: &[Routed], now: u64, last: bool, end: EndReason) {
        process(
            0,
            1,
            &mut self.tables,
            pkts,
            now,
            last,
            end,
            &mut self.recs,
            &mut self.tagged,
        );
        if self.error.is_none() {
            if let Err(e) = write_epoch(
                &mut self.tagged,
                &mut self.plain,
                &mut self.written,
                &mut self.sink,
            ) {
                self.error = Some(e);
            }
        }
        self.tagged.clear();
        if last {
            self.written.table = sum_stats(self.tables.iter().map(|t| t.stats()));
            if let Err(e) = self.sink.finish() {
                self.error.get_or_insert(e);
            }
        }
    }
}

impl Inline<'_> {
    /// The end of a run whose open flows stay in its checkpoint.
    pub(super) fn close_kept_open(&mut self) {
        self.written.table = sum_stats(self.tables.iter().map(|t| t.stats()));
        if let Err(e) = self.sink.finish() {
            self.error.get_or_insert(e);
        }
    }
}
