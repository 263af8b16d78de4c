use vmflow_proto::FlowRecord;

use super::*;
use crate::capture::CaptureReader;
use crate::export::VecSink;

/// Runs the capture through an inline or a threaded engine into `sink`,
/// then, with `tick_after`, a tick that far past its last packet.
fn run_capture<S: RecordSink>(
    cfg: &Config,
    pcap: &[u8],
    inline: bool,
    sink: S,
    tick_after: Option<u64>,
) -> Summary {
    let all = |feed: &mut dyn Feed| {
        let mut r = CaptureReader::open(std::io::Cursor::new(pcap)).expect("valid");
        let mut last = 0;
        while let Some(p) = r.next_packet().expect("valid") {
            last = p.ts_ns;
            feed.packet(p);
        }
        if let Some(t) = tick_after {
            feed.tick(last + t);
        }
        Ok::<_, PipelineError>(())
    };
    let report = if inline {
        run_inline(cfg, sink, InlineOptions::default(), |feed| all(feed))
    } else {
        run_with(cfg, sink, RunOptions::default(), all)
    };
    assert!(report.error.is_none());
    report.summary
}

fn records(cfg: &Config, pcap: &[u8], inline: bool) -> Vec<FlowRecord> {
    let mut sink = VecSink::default();
    run_capture(cfg, pcap, inline, &mut sink, None);
    sink.0
}

#[test]
fn a_restored_checkpoint_continues_exactly_where_the_run_stopped() {
    let mut pcap = Vec::new();
    let p = crate::synth::SynthParams::new(60_000, 1_500).seed(5);
    let mut cfg = Config::default();
    crate::synth::generate(&p, &cfg, &mut pcap, false).unwrap();
    cfg.flow.max_flows = 700;
    cfg.flow.tcp_linger = crate::config::Seconds(0.001);
    cfg.flow.idle_timeout = crate::config::Seconds(0.05);
    cfg.pipeline.batch_packets = 1000;
    let by_count = {
        let mut c = cfg.clone();
        c.pipeline.batch_time = crate::config::Seconds(0.0);
        c
    };
    // Batches closed by packet time as well: the file spans 76 s, so 0.1 s
    // closes most batches before 1,000 packets.
    let by_time = {
        let mut c = cfg.clone();
        c.pipeline.batch_time = crate::config::Seconds(0.1);
        c
    };
    let whole_count = records(&by_count, &pcap, true);
    let whole_time = records(&by_time, &pcap, true);
    assert!(
        whole_time != whole_count,
        "closing batches by time changed nothing"
    );
    // Cut mid-batch and at a batch boundary.
    for (cfg, cut, whole) in [
        (&by_count, 23_456usize, &whole_count),
        (&by_count, 30_000, &whole_count),
        (&by_time, 23_456, &whole_time),
        (&by_time, 30_000, &whole_time),
    ] {
        let mut first = VecSink::default();
        let mut state = None;
        let report = run_inline(cfg, &mut first, InlineOptions::default(), |feed| {
            let mut r = CaptureReader::open(std::io::Cursor::new(&pcap[..])).unwrap();
            for _ in 0..cut {
                let p = r.next_packet().unwrap().unwrap();
                feed.packet(p);
            }
            state = Some(feed.checkpoint().unwrap());
            Ok::<_, PipelineError>(())
        });
        assert!(report.error.is_none());
        let state = state.expect("inline runs checkpoint");
        let bytes = rmp_serde::to_vec(&state).unwrap();
        let state: EngineState = rmp_serde::from_slice(&bytes).unwrap();
        let at = state.records as usize;
        assert!(at > 1_000, "records before the checkpoint: {at}");
        assert_eq!(&first.0[..at], &whole[..at]);
        let mut rest = VecSink::default();
        let opts = InlineOptions {
            restore: Some(Box::new(state)),
            ..InlineOptions::default()
        };
        let report = run_inline(cfg, &mut rest, opts, |feed| {
            let mut r = CaptureReader::open(std::io::Cursor::new(&pcap[..])).unwrap();
            for _ in 0..cut {
                r.next_packet().unwrap().unwrap();
            }
            while let Some(p) = r.next_packet().unwrap() {
                feed.packet(p);
            }
            Ok::<_, PipelineError>(())
        });
        assert!(report.error.is_none());
        assert!(whole.len() > at + 1_000, "cut {cut}");
        assert!(rest.0 == whole[at..], "cut {cut}");
    }
}

#[test]
fn inline_mode_gives_the_same_records_in_the_same_order() {
    let mut pcap = Vec::new();
    let p = crate::synth::SynthParams::new(100_000, 2_000).seed(21);
    let mut cfg = Config::default();
    crate::synth::generate(&p, &cfg, &mut pcap, false).unwrap();
    cfg.flow.max_flows = 500;
    for threads in [1, 3] {
        cfg.pipeline.threads = threads;
        let threaded = records(&cfg, &pcap, false);
        let inline = records(&cfg, &pcap, true);
        assert!(threaded.len() > 1_000);
        assert!(threaded == inline, "threads {threads}");
    }
}

/// The tables of a threaded run are on the shard threads; the feeding side
/// still sees them (published after each batch), and sees what an inline
/// engine over the same packets holds.
#[test]
fn a_threaded_run_shows_its_shards_tables_like_an_inline_one() {
    let mut pcap = Vec::new();
    let p = crate::synth::SynthParams::new(50_000, 2_000).seed(5);
    let mut cfg = Config::default();
    crate::synth::generate(&p, &cfg, &mut pcap, false).unwrap();
    cfg.flow.max_flows = 500;
    cfg.pipeline.threads = 3;
    // Every packet in, then a tick at the last one's time sends the last
    // partial batch on.
    let feed_all = |feed: &mut dyn Feed| {
        let mut r = CaptureReader::open(std::io::Cursor::new(&pcap[..])).expect("valid");
        let mut last = 0;
        while let Some(p) = r.next_packet().expect("valid") {
            last = p.ts_ns;
            feed.packet(p);
        }
        feed.tick(last);
    };
    let mut inline = None;
    let report = run_inline(&cfg, VecSink::default(), InlineOptions::default(), |feed| {
        feed_all(feed);
        inline = feed.progress().tables;
        Ok::<_, PipelineError>(())
    });
    assert!(report.error.is_none());
    let inline = inline.expect("an inline engine shows its tables");
    assert!(inline.open_flows > 0 && inline.evicted > 0, "{inline:?}");

    let mut threaded = None;
    let report = run_with(&cfg, VecSink::default(), RunOptions::default(), |feed| {
        feed_all(feed);
        // The shards publish once they are through their batches.
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        loop {
            threaded = feed.progress().tables;
            if threaded == Some(inline) || Instant::now() > deadline {
                break;
            }
            std::thread::yield_now();
        }
        Ok::<_, PipelineError>(())
    });
    assert!(report.error.is_none());
    assert_eq!(threaded, Some(inline));
}

/// Every write's record count, and the records.
#[derive(Default)]
struct Writes(Vec<usize>, Vec<FlowRecord>);

impl RecordSink for Writes {
    fn write(&mut self, records: &[FlowRecord]) -> std::io::Result<()> {
        self.write_parts(&[records])
    }

    fn write_parts(&mut self, parts: &[&[FlowRecord]]) -> std::io::Result<()> {
        self.0.push(parts.iter().map(|p| p.len()).sum());
        parts.iter().for_each(|p| self.1.extend_from_slice(p));
        Ok(())
    }
}

/// A tick far past the last packet ends every open flow at once: the
/// records leave in pieces of about `PIECE_RECORDS`, cut at the same places
/// by the inline engine and by any number of shard threads, instead of as
/// one write the whole burst sits in memory for.
#[test]
fn a_burst_of_records_is_written_in_the_same_pieces_for_every_thread_count() {
    let mut pcap = Vec::new();
    let p = crate::synth::SynthParams::new(200_000, 80_000)
        .seed(9)
        .lengths(crate::synth::FlowLengths::Short);
    let mut cfg = Config::default();
    crate::synth::generate(&p, &cfg, &mut pcap, false).unwrap();
    let run = |cfg: &Config, inline: bool| {
        let mut sink = Writes::default();
        let summary = run_capture(cfg, &pcap, inline, &mut sink, Some(600_000_000_000));
        assert_eq!(summary.records as usize, sink.1.len());
        sink
    };
    let inline = run(&cfg, true);
    // The capture spans less than the idle timeout: every idle record is
    // the tick's.
    let first = inline.1.iter().map(|r| r.first_ns).min().unwrap();
    let last = inline.1.iter().map(|r| r.last_ns).max().unwrap();
    assert!(last - first < cfg.table().idle_ns, "span {}", last - first);
    let burst = inline
        .1
        .iter()
        .filter(|r| r.end_reason == EndReason::Idle)
        .count();
    let piece = vmflow_engine::PIECE_RECORDS;
    assert!(burst > 2 * piece, "flows the tick ended: {burst}");
    // No write holds more than a piece and one table's share of them.
    let largest = inline.0.iter().copied().max().unwrap_or(0);
    assert!(
        largest < piece + burst / 8 && largest < burst / 2,
        "largest write: {largest} of a burst of {burst}"
    );
    assert!(inline.0.iter().filter(|&&n| n >= piece).count() >= 2);
    for threads in [1, 2, 3] {
        cfg.pipeline.threads = threads;
        let threaded = run(&cfg, false);
        assert_eq!(threaded.0, inline.0, "threads {threads}: writes");
        assert!(threaded.1 == inline.1, "threads {threads}: records");
    }
}
