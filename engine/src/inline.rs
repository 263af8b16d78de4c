//! The inline engine: flow tables and output on the reader's thread, for
//! live capture and followed sources at moderate rates: no hand-off between
//! threads, no wake-ups, the same records in the same order.

use std::ops::Range;
use std::sync::Arc;

use vmflow_proto::{EndReason, FlowRecord};

use crate::batch::{process, Dispatch, Routed, TablesNow};
use crate::error::EngineError;
use crate::flow::{FlowTable, TableSnapshot};
use crate::net::LocalNets;
use crate::records::{sum_stats, write_piece, Pieces, Written};
use crate::settings::Settings;
use crate::sink::RecordSink;

/// Every partition's table on the caller's thread, and the sink.
pub struct Inline<'s> {
    pub(crate) tables: Vec<FlowTable>,
    pub(crate) sink: Box<dyn RecordSink + 's>,
    /// Each table's records of the current batch.
    out: Vec<Vec<FlowRecord>>,
    pub(crate) written: Written,
    /// The output's first failure; nothing is written after it.
    pub(crate) error: Option<std::io::Error>,
    /// End the run with its flows open ([`crate::InlineFeed::keep_open`]).
    pub(crate) keep_open: bool,
}

impl<'s> Inline<'s> {
    /// Empty tables, or the tables of a checkpoint with the output position
    /// it recorded.
    pub(crate) fn new(
        settings: &Settings,
        local: Arc<LocalNets>,
        sink: Box<dyn RecordSink + 's>,
        restore: Option<(Vec<TableSnapshot>, Written)>,
    ) -> Self {
        let table = settings.flow.table(settings.partitions);
        let (tables, written): (Vec<FlowTable>, Written) = match restore {
            Some((snaps, written)) => (
                snaps
                    .into_iter()
                    .map(|t| FlowTable::restore(table.clone(), local.clone(), t))
                    .collect(),
                written,
            ),
            None => (
                (0..settings.partitions)
                    .map(|_| FlowTable::new(table.clone(), local.clone()))
                    .collect(),
                Written::default(),
            ),
        };
        let out = vec![Vec::new(); tables.len()];
        Inline {
            tables,
            sink,
            out,
            written,
            error: None,
            keep_open: false,
        }
    }

    /// What the run wrote, or the output's first failure.
    pub fn into_written(self) -> Result<Written, EngineError> {
        match self.error {
            Some(e) => Err(EngineError::Output(e)),
            None => Ok(self.written),
        }
    }

    fn submit(&mut self, pkts: &[Routed], now: u64, last: bool, end: EndReason) {
        let (sink, written, error) = (&mut self.sink, &mut self.written, &mut self.error);
        let mut pieces = Pieces::default();
        let mut put = |tables: Range<usize>, out: &mut [Vec<FlowRecord>]| {
            let out = &mut out[tables];
            if error.is_none() {
                let parts: Vec<&[FlowRecord]> = out.iter().map(Vec::as_slice).collect();
                if let Err(e) = write_piece(&parts, written, sink) {
                    *error = Some(e);
                }
            }
            // Nothing is written after a failure.
            out.iter_mut().for_each(Vec::clear);
        };
        process(
            &mut self.tables,
            pkts,
            now,
            last,
            end,
            &mut self.out,
            |at, out| {
                if let Some(r) = pieces.table(at, out[at].len()) {
                    put(r, out);
                }
            },
        );
        put(pieces.rest(self.out.len()), &mut self.out);
        if last {
            self.finish_output();
        }
    }

    fn finish_output(&mut self) {
        self.written.table = sum_stats(self.tables.iter().map(|t| t.stats()));
        if let Err(e) = self.sink.finish() {
            self.error.get_or_insert(e);
        }
    }
}

impl Dispatch for Inline<'_> {
    fn shards(&self) -> usize {
        1
    }

    fn dispatch(
        &mut self,
        batches: &mut [Vec<Routed>],
        now: u64,
        last: bool,
        end: EndReason,
    ) -> bool {
        self.submit(&batches[0], now, last, end);
        batches[0].clear();
        self.error.is_none()
    }

    fn keeps_open(&self) -> bool {
        self.keep_open
    }

    fn end_kept_open(&mut self) {
        self.finish_output();
    }

    fn tables_now(&self) -> Option<TablesNow> {
        Some(TablesNow {
            open_flows: self.tables.iter().map(|t| t.len() as u64).sum(),
            evicted: self.tables.iter().map(|t| t.stats().evicted).sum(),
        })
    }
}
