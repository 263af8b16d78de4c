//! Where a lane's records go: the spool in front of the mTLS shipper (when
//! `[export]` is configured) and every `[[export.ipfix]]` collector, each
//! given the same records in the same order.

use vmflow_proto::FlowRecord;

use super::batcher::Skips;
use super::ipfix_sender::{IpfixSender, IpfixSink};
use super::RecordSink;

pub struct Outputs<S> {
    pub spool: Option<S>,
    ipfix: Vec<IpfixSink>,
}

impl<S: RecordSink> Outputs<S> {
    pub fn new(spool: Option<S>, ipfix: &[IpfixSender]) -> Outputs<S> {
        Outputs {
            spool,
            ipfix: ipfix.iter().map(IpfixSender::sink).collect(),
        }
    }
}

/// A spool's skipping of records an earlier run already spooled; the IPFIX
/// collectors get every record (best effort: a restart may repeat some).
impl<S: Skips> Skips for Outputs<S> {
    fn pending_skip(&self) -> u64 {
        self.spool.as_ref().map_or(0, Skips::pending_skip)
    }

    fn set_skip(&mut self, n: u64) {
        if let Some(s) = &mut self.spool {
            s.set_skip(n);
        }
    }
}

impl<S: RecordSink> RecordSink for Outputs<S> {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        for x in &mut self.ipfix {
            x.write(records)?;
        }
        match &mut self.spool {
            Some(s) => s.write(records),
            None => Ok(()),
        }
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> std::io::Result<()> {
        for x in &mut self.ipfix {
            x.write_parts(parts)?;
        }
        match &mut self.spool {
            Some(s) => s.write_parts(parts),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.spool {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        for x in &mut self.ipfix {
            x.finish()?;
        }
        match &mut self.spool {
            Some(s) => s.finish(),
            None => Ok(()),
        }
    }
}
