//! Where the engine hands its records: anything that takes them in their
//! final order (an NDJSON writer, the batcher in front of the spool, a test's
//! vector). Defined here, with the engine, so that what consumes records
//! depends on the engine and never the other way round.

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
