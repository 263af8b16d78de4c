//! The reader stage alone, on a real capture file: what `vmflow replay`'s
//! reader thread does for every packet (read the file, take each pcap record,
//! decode, hash, route into per-shard batches) with the batches dropped
//! instead of handed to flow tables, and no output. No run of the whole
//! pipeline can be faster than this on the same file, so it is the floor any
//! replay target has to clear (issue 16: "20× nfpcapd").
//!
//!     cargo bench --bench reader_floor -- FILE [RUNS]
//!
//! Prints the median, minimum and maximum wall time of RUNS (default 7) runs
//! and the packet rate at the median. Batches are dropped on the reading
//! thread (the pipeline sends them to a shard thread), which only makes the
//! floor lower.

use std::path::PathBuf;
use std::time::Instant;

use vmflow::capture::CaptureFiles;
use vmflow::config::Config;
use vmflow_engine::{Dispatch, Feed, Ingest, Routed};
use vmflow_proto::EndReason;

/// Takes every batch and forgets its packets, keeping the vectors.
struct Discard {
    shards: usize,
}

impl Dispatch for Discard {
    fn shards(&self) -> usize {
        self.shards
    }

    fn dispatch(&mut self, batches: &mut [Vec<Routed>], _: u64, _: bool, _: EndReason) -> bool {
        for b in batches {
            std::hint::black_box(b.as_slice());
            b.clear();
        }
        true
    }
}

fn main() {
    // `cargo bench` passes `--bench` to every bench binary; skip flags.
    let all: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&String> = all.iter().filter(|a| !a.starts_with("--")).collect();
    let Some(file) = args.first() else {
        // `cargo test --benches` runs bench binaries without `--bench` and
        // without arguments: there is nothing to measure then.
        if all.iter().any(|a| a == "--bench") {
            eprintln!("usage: cargo bench --bench reader_floor -- FILE [RUNS]");
            std::process::exit(2);
        }
        return;
    };
    let runs: usize = args.get(1).map_or(7, |r| r.parse().expect("RUNS"));
    assert!(runs > 0, "RUNS must be at least 1");
    let cfg = Config::default();
    let settings = cfg.engine_settings().expect("default settings");
    let mut walls = Vec::new();
    let mut packets = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let mut files = CaptureFiles::new(vec![PathBuf::from(file)]);
        let mut ingest = Ingest::new(
            &settings,
            None,
            Discard {
                shards: cfg.threads(),
            },
        );
        files
            .for_each(|p| ingest.packet(p))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let (counts, _) = ingest.finish(EndReason::EndOfInput);
        walls.push(t.elapsed().as_secs_f64());
        packets = counts.packets;
    }
    walls.sort_by(f64::total_cmp);
    let median = walls[walls.len() / 2];
    println!(
        "reader_floor {file}: {packets} packets, median {median:.3} s (min {:.3}, max {:.3}) over {runs} runs, {:.2} Mpps",
        walls[0],
        walls[walls.len() - 1],
        packets as f64 / median / 1e6
    );
}
