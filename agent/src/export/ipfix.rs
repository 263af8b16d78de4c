//! Records as IPFIX messages (`vmflow_proto::ipfix`) to a file, back to back
//! as RFC 5655 stores them: the templates once at the start, then data.
//! The export time of each message is packet time (the latest record end in
//! it), so the file depends only on the capture and the config.

use std::io::{self, BufWriter, Write};

use vmflow_proto::ipfix::{IpfixEncoder, IpfixMode};
use vmflow_proto::FlowRecord;

use super::RecordSink;

pub struct IpfixFileSink<W: Write> {
    out: BufWriter<W>,
    enc: IpfixEncoder,
    templates_sent: bool,
    messages: Vec<Vec<u8>>,
}

impl<W: Write> IpfixFileSink<W> {
    /// Messages up to `max_message` bytes (clamped to what IPFIX allows).
    pub fn new(w: W, domain: u32, mode: IpfixMode, max_message: usize) -> Self {
        IpfixFileSink {
            out: BufWriter::with_capacity(1 << 16, w),
            enc: IpfixEncoder::new(domain, mode, max_message),
            templates_sent: false,
            messages: Vec::new(),
        }
    }

    fn emit(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        let end = records.iter().map(|r| r.last_ns).max().unwrap_or(0);
        let export_time = u32::try_from(end / 1_000_000_000).unwrap_or(u32::MAX);
        self.enc.encode(
            records,
            export_time,
            !self.templates_sent,
            &mut self.messages,
        );
        self.templates_sent = true;
        for m in self.messages.drain(..) {
            self.out.write_all(&m)?;
        }
        Ok(())
    }
}

impl<W: Write + Send> RecordSink for IpfixFileSink<W> {
    fn write(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.emit(records)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        // A file without a record still says what its records would be.
        if !self.templates_sent {
            self.emit(&[])?;
        }
        self.out.flush()
    }
}
