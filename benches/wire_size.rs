//! Bytes per flow record on the wire, for the `vmflow synth` default mix:
//! vmflow record blocks (columnar + zstd, as sent in `Batch` frames) against
//! the same records as IPFIX biflow records (RFC 7011 + RFC 5103, full-size
//! fields) and as NDJSON. Prints a Markdown table for BENCHMARKS.md.
//!
//!   cargo bench --bench wire_size [-- PACKETS CONCURRENT]

use std::time::Instant;

use vmflow::capture::CaptureReader;
use vmflow::config::Config;
use vmflow::export::VecSink;
use vmflow::pipeline;
use vmflow::synth::{generate, SynthParams};
use vmflow_proto::{encode_frame, encode_records, Batch, FlowRecord, Frame};

fn records(packets: u64, concurrent: usize) -> Vec<FlowRecord> {
    let mut pcap = Vec::new();
    let p = SynthParams::new(packets, concurrent);
    generate(&p, &Config::default(), &mut pcap, false).unwrap();
    let mut sink = VecSink::default();
    let cfg = Config::default();
    // Collect through a channel-free path: replay into a Vec.
    let report = pipeline::run(&cfg, &mut sink, |feed| {
        let mut r = CaptureReader::open(std::io::Cursor::new(pcap)).expect("valid capture");
        while let Some(p) = r.next_packet().expect("valid capture") {
            feed.packet(p);
        }
        Ok::<_, vmflow::pipeline::PipelineError>(())
    });
    assert!(report.error.is_none());
    sink.0
}

/// IPFIX message(s) for `recs`: one template set per IP version, then data
/// sets, messages split below 64 KiB as the standard requires.
fn ipfix_bytes(recs: &[FlowRecord]) -> usize {
    const PEN_REVERSE: u32 = 29305;
    // (IE, length, enterprise) — v4 template; v6 swaps the address IEs.
    let fields = |v6: bool| -> Vec<(u16, u16, u32)> {
        vec![
            (156, 8, 0),
            (157, 8, 0),
            (if v6 { 27 } else { 8 }, if v6 { 16 } else { 4 }, 0),
            (if v6 { 28 } else { 12 }, if v6 { 16 } else { 4 }, 0),
            (7, 2, 0),
            (11, 2, 0),
            (4, 1, 0),
            (58, 2, 0),
            (2, 8, 0),
            (1, 8, 0),
            (2, 8, PEN_REVERSE),
            (1, 8, PEN_REVERSE),
            (6, 2, 0),
            (6, 2, PEN_REVERSE),
            (if v6 { 139 } else { 32 }, 2, 0),
            (136, 1, 0),
            (239, 1, 0),
            (148, 8, 0),
        ]
    };
    let template_len = |v6: bool| -> usize {
        4 + fields(v6)
            .iter()
            .map(|f| if f.2 != 0 { 8 } else { 4 })
            .sum::<usize>()
    };
    let rec_len = |v6: bool| -> usize { fields(v6).iter().map(|f| usize::from(f.1)).sum() };
    let mut total = 16 + 4 + template_len(false) + template_len(true);
    let mut msg = 16usize;
    let mut set: Option<bool> = None;
    for r in recs {
        let v6 = r.ip_version == 6;
        let len = rec_len(v6);
        if msg + 4 + len > 65_535 {
            total += msg;
            msg = 16;
            set = None;
        }
        if set != Some(v6) {
            msg += 4;
            set = Some(v6);
        }
        msg += len;
    }
    total + msg
}

fn main() {
    let args: Vec<u64> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let packets = args.first().copied().unwrap_or(1_000_000);
    let concurrent = args.get(1).copied().unwrap_or(10_000) as usize;
    let recs = records(packets, concurrent);
    let n = recs.len() as f64;
    println!("records: {} (synth --packets {packets} --concurrent {concurrent} --snaplen 128 --seed 1)\n", recs.len());
    println!("| encoding | batch (records) | bytes/record | encode (records/s) |");
    println!("|---|---|---|---|");
    let ndjson: usize = recs
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap().len() + 1)
        .sum();
    println!("| NDJSON | — | {:.1} | — |", ndjson as f64 / n);
    println!(
        "| IPFIX biflow (RFC 5103), full-size fields | ≤ 64 KiB messages | {:.1} | — |",
        ipfix_bytes(&recs) as f64 / n
    );
    for level in [1, 3] {
        for batch in [256usize, 1024, 4096] {
            let t = Instant::now();
            let mut wire = Vec::new();
            for (i, chunk) in recs.chunks(batch).enumerate() {
                let block = encode_records(chunk, level);
                let f = Frame::Batch(Batch {
                    seq: i as u64 + 1,
                    records: chunk.len() as u32,
                    block,
                    source_drops: 0,
                    follows: Some(i as u64),
                });
                encode_frame(&f, &mut wire);
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "| vmflow frames (columnar + zstd {level}) | {batch} | {:.1} | {:.2} M |",
                wire.len() as f64 / n,
                n / secs / 1e6
            );
        }
    }
}
