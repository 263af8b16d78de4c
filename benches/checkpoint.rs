//! What a checkpoint of a followed source costs: time to take the engine's
//! state (flush + snapshot of every open flow) and to encode it, and its size,
//! for a table holding N open flows. Prints a Markdown table for BENCHMARKS.md.
//!
//!   cargo bench --bench checkpoint [-- CONCURRENT...]

use std::time::{Duration, Instant};

use vmflow::capture::CaptureReader;
use vmflow::config::Config;
use vmflow::export::CountSink;
use vmflow::follow::checkpoint::Checkpoint;
use vmflow::pipeline::{run_inline, InlineOptions};
use vmflow::synth::{generate, SynthParams};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000, 500_000]
    } else {
        sizes
    };
    println!("| open flows | take state | encode | size | bytes/flow |");
    println!("|---|---|---|---|---|");
    for concurrent in sizes {
        let mut pcap = Vec::new();
        // Long enough that every concurrent slot has a flow in flight.
        let p = SynthParams::new(concurrent as u64 * 4, concurrent).seed(7);
        let mut cfg = Config::default();
        generate(&p, &cfg, &mut pcap, false).unwrap();
        cfg.flow.idle_timeout = vmflow::config::Seconds(1e6);
        cfg.flow.active_timeout = vmflow::config::Seconds(1e6);
        let opts = InlineOptions::default();
        let (mut take, mut enc, mut size, mut flows) = (Duration::MAX, Duration::MAX, 0, 0);
        run_inline(&cfg, CountSink::default(), opts, |feed| {
            let mut r = CaptureReader::open(std::io::Cursor::new(&pcap[..])).unwrap();
            while let Some(p) = r.next_packet().unwrap() {
                feed.packet(p);
            }
            for _ in 0..5 {
                let t = Instant::now();
                let state = feed.checkpoint()?;
                take = take.min(t.elapsed());
                let ck = Checkpoint::new("bench".into(), state, 0u64);
                let t = Instant::now();
                let bytes = rmp_serde::to_vec(&ck).unwrap();
                enc = enc.min(t.elapsed());
                size = bytes.len();
                let back: Checkpoint<u64> = rmp_serde::from_slice(&bytes).unwrap();
                flows = back.engine.open_flows();
            }
            feed.keep_open();
            Ok::<_, vmflow::pipeline::PipelineError>(())
        });
        println!(
            "| {flows} | {:.1} ms | {:.1} ms | {:.1} MiB | {} |",
            take.as_secs_f64() * 1e3,
            enc.as_secs_f64() * 1e3,
            size as f64 / (1 << 20) as f64,
            size / flows.max(1)
        );
    }
}
