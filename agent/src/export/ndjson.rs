//! One JSON object per line.

use std::io::{self, BufWriter, Write};

use vmflow_proto::FlowRecord;

use super::RecordSink;

pub struct NdjsonSink<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> NdjsonSink<W> {
    pub fn new(w: W) -> Self {
        NdjsonSink {
            out: BufWriter::with_capacity(1 << 16, w),
        }
    }
}

impl<W: Write + Send> RecordSink for NdjsonSink<W> {
    fn write(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        for r in records {
            serde_json::to_writer(&mut self.out, r)?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
