//! Where finished flow records go.

pub mod batcher;
mod ndjson;
pub mod ship;
pub mod spool;

pub use ndjson::{encode as encode_ndjson, NdjsonSink};

use vmflow_proto::FlowRecord;

/// Receives records in their final, deterministic order.
pub trait RecordSink: Send {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()>;
    /// Makes every record written so far durable (a checkpoint follows).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Counts records and drops them (benchmarks).
#[derive(Default)]
pub struct CountSink(pub u64);

impl RecordSink for CountSink {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        self.0 += records.len() as u64;
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
}

impl<S: RecordSink + ?Sized> RecordSink for Box<S> {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        (**self).write(records)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        (**self).flush()
    }
    fn finish(&mut self) -> std::io::Result<()> {
        (**self).finish()
    }
}

impl<S: RecordSink + ?Sized> RecordSink for &mut S {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        (**self).write(records)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        (**self).flush()
    }
    fn finish(&mut self) -> std::io::Result<()> {
        (**self).finish()
    }
}
