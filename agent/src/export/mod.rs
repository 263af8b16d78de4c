//! Where finished flow records go.

pub mod batcher;
pub mod blocks;
pub mod csv;
mod ipfix;
pub mod ipfix_exporter;
pub mod ipfix_sender;
mod line;
pub mod misfit;
mod ndjson;
pub mod outputs;
pub mod ship;
pub mod spool;

pub use blocks::BlockFileSink;
pub use csv::CsvSink;
pub use ipfix::IpfixFileSink;
pub use ndjson::{encode as encode_ndjson, Lines as NdjsonLines, NdjsonSink};

use vmflow_proto::FlowRecord;

pub use crate::sink::RecordSink;

/// Counts records and drops them (benchmarks).
#[derive(Default)]
pub struct CountSink(pub u64);

impl RecordSink for CountSink {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        self.0 += records.len() as u64;
        Ok(())
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> std::io::Result<()> {
        self.0 += parts.iter().map(|p| p.len() as u64).sum::<u64>();
        Ok(())
    }
}

/// Keeps every record in memory (tests, small runs).
#[derive(Default)]
pub struct VecSink(pub Vec<FlowRecord>);

impl RecordSink for VecSink {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        self.0.extend_from_slice(records);
        Ok(())
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> std::io::Result<()> {
        parts.iter().for_each(|p| self.0.extend_from_slice(p));
        Ok(())
    }
}
