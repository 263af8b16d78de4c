//! The exporting process's decisions, sans-IO: which messages records
//! become at a given wall-clock time, and when templates go along. Over UDP
//! templates are resent every `refresh` (RFC 7011 §8.4), with the next data
//! or alone when there is none; over TCP they start each connection, whose
//! sequence numbers start over (a new transport session, §10.4.1), and are
//! never withdrawn over UDP (§8.1).

use std::time::Duration;

use vmflow_proto::ipfix::{IpfixEncoder, IpfixMode};
use vmflow_proto::FlowRecord;

pub struct IpfixExporter {
    domain: u32,
    mode: IpfixMode,
    max_message: usize,
    enc: IpfixEncoder,
    /// `None`: templates once per session (TCP).
    refresh: Option<Duration>,
    /// Wall-clock ns when templates last went out in this session.
    templates_at: Option<u64>,
}

impl IpfixExporter {
    pub fn new(
        domain: u32,
        mode: IpfixMode,
        max_message: usize,
        refresh: Option<Duration>,
    ) -> Self {
        IpfixExporter {
            domain,
            mode,
            max_message,
            enc: IpfixEncoder::new(domain, mode, max_message),
            refresh,
            templates_at: None,
        }
    }

    /// A new transport session: sequence numbers from 0, templates first.
    pub fn new_session(&mut self) {
        self.enc = IpfixEncoder::new(self.domain, self.mode, self.max_message);
        self.templates_at = None;
    }

    fn templates_due(&self, now_ns: u64) -> bool {
        match (self.templates_at, self.refresh) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(t), Some(r)) => now_ns.saturating_sub(t) >= r.as_nanos() as u64,
        }
    }

    /// How long until templates are due again with no data to carry them
    /// (`None`: not on this transport, or not yet sent at all).
    pub fn until_refresh(&self, now_ns: u64) -> Option<Duration> {
        let (t, r) = (self.templates_at?, self.refresh?);
        let due = t.saturating_add(r.as_nanos() as u64);
        Some(Duration::from_nanos(due.saturating_sub(now_ns)))
    }

    /// Appends the messages for `records` at wall-clock `now_ns` (export
    /// time in seconds) to `out`; with no records, a template refresh alone
    /// if one is due. Returns whether templates went along.
    pub fn encode(&mut self, records: &[FlowRecord], now_ns: u64, out: &mut Vec<Vec<u8>>) -> bool {
        let templates = self.templates_due(now_ns);
        if records.is_empty() && !templates {
            return false;
        }
        let export_time = u32::try_from(now_ns / 1_000_000_000).unwrap_or(u32::MAX);
        self.enc.encode(records, export_time, templates, out);
        if templates {
            self.templates_at = Some(now_ns);
        }
        templates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmflow_proto::ipfix::{messages, IpfixDecoder};

    const S: u64 = 1_000_000_000;

    fn record(i: u64) -> FlowRecord {
        crate::testkit::record(i, 1_700_000_000 * S + i)
    }

    /// (template sets, data records, sequence numbers, export times) of
    /// messages, read by the independent decoder.
    fn read(out: &[Vec<u8>]) -> (usize, usize, Vec<u32>, Vec<u32>) {
        let mut d = IpfixDecoder::new();
        let (mut t, mut n, mut seq, mut at) = (0, 0, Vec::new(), Vec::new());
        for m in out {
            let m = d.message(m).unwrap();
            t += usize::from(!m.templates.is_empty());
            n += m.records.len();
            seq.push(m.sequence);
            at.push(m.export_time);
        }
        (t, n, seq, at)
    }

    #[test]
    fn udp_sends_templates_first_then_every_refresh_with_data_or_alone() {
        let mut e = IpfixExporter::new(7, IpfixMode::Biflow, 1400, Some(Duration::from_secs(60)));
        let mut out = Vec::new();
        let t0 = 1_800_000_000 * S;
        assert!(e.encode(&[record(1)], t0, &mut out));
        assert!(!e.encode(&[record(2)], t0 + 59 * S, &mut out));
        assert_eq!(e.until_refresh(t0 + 59 * S), Some(Duration::from_secs(1)));
        // Nothing to send and nothing due: no message.
        assert!(!e.encode(&[], t0 + 59 * S, &mut out));
        // Due: templates alone.
        assert!(e.encode(&[], t0 + 60 * S, &mut out));
        assert!(e.encode(&[record(3)], t0 + 121 * S, &mut out));
        let (t, n, seq, at) = read(&out);
        assert_eq!((t, n), (3, 3));
        // Sequence: data records before each message, across refreshes.
        assert_eq!(seq, [0, 1, 2, 2]);
        assert_eq!(
            at,
            [1_800_000_000, 1_800_000_059, 1_800_000_060, 1_800_000_121]
        );
        let whole: Vec<u8> = out.concat();
        assert_eq!(messages(&whole).unwrap().len(), 4);
    }

    #[test]
    fn tcp_sends_templates_once_per_session_and_starts_its_sequence_over() {
        let mut e = IpfixExporter::new(1, IpfixMode::Uniflow, 65535, None);
        let mut out = Vec::new();
        let mut answered = record(2);
        answered.rev_packets = 1;
        answered.rev_bytes = 40;
        assert!(e.encode(&[record(1), answered], S, &mut out));
        assert!(!e.encode(&[record(3)], 10_000 * S, &mut out));
        assert_eq!(e.until_refresh(10_000 * S), None);
        assert!(!e.encode(&[], 20_000 * S, &mut out));
        e.new_session();
        assert!(e.encode(&[record(4)], 20_000 * S, &mut out));
        let (t, n, seq, _) = read(&out);
        assert_eq!((t, n), (2, 5), "uniflow: a record per direction that sent");
        assert_eq!(seq, [0, 3, 0]);
    }
}
