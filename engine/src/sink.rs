//! Where the engine hands its records: anything that takes them in their
//! final order (an NDJSON writer, the batcher in front of the spool, a test's
//! vector). Defined here, with the engine, so that what consumes records
//! depends on the engine and never the other way round.

use vmflow_proto::FlowRecord;

/// Receives records in their final, deterministic order.
pub trait RecordSink: Send {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()>;
    /// One write of `parts` joined, in order (an epoch's records, one part
    /// per flow table). Sinks that take records one at a time override it
    /// and spare the engine a copy of the epoch; the default joins them.
    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> std::io::Result<()> {
        match parts {
            [] => self.write(&[]),
            [one] => self.write(one),
            _ => self.write(&parts.concat()),
        }
    }
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
    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> std::io::Result<()> {
        (**self).write_parts(parts)
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
    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> std::io::Result<()> {
        (**self).write_parts(parts)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        (**self).flush()
    }
    fn finish(&mut self) -> std::io::Result<()> {
        (**self).finish()
    }
}
