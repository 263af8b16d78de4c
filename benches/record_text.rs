//! Formatting cost per record: the NDJSON and CSV sinks (and the
//! collector's way, lines appended to a buffer) writing the records of a
//! synthetic short-flow capture into `io::sink()`. The output thread of a
//! replay and the collector spend much of their time here.
//!
//!   cargo bench --bench record_text

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vmflow::config::Config;
use vmflow::export::{encode_ndjson, CsvSink, NdjsonLines, NdjsonSink, RecordSink};
use vmflow::synth::{generate, FlowLengths, SynthParams};
use vmflow_proto::FlowRecord;

/// The generator's expected records for a short-flow capture: the records
/// a replay of it writes.
fn records() -> Vec<FlowRecord> {
    let p = SynthParams::new(200_000, 5_000).lengths(FlowLengths::Short);
    let out = generate(&p, &Config::default(), std::io::sink(), true).unwrap();
    out.truth
}

fn bench(c: &mut Criterion) {
    let recs = records();
    let mut g = c.benchmark_group("record_text");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("ndjson", |b| {
        let mut s = NdjsonSink::new(std::io::sink());
        b.iter(|| s.write(black_box(&recs)).unwrap())
    });
    // The collector's way: lines appended to a buffer per hour file.
    g.bench_function("ndjson lines into a buffer", |b| {
        let (mut lines, mut out) = (NdjsonLines::default(), Vec::new());
        b.iter(|| {
            out.clear();
            for r in black_box(&recs) {
                lines.append(r, &mut out);
            }
        })
    });
    g.bench_function("ndjson encode into a buffer", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            for r in black_box(&recs) {
                encode_ndjson(r, &mut out);
                out.push(b'\n');
            }
        })
    });
    g.bench_function("csv", |b| {
        let mut s = CsvSink::new(std::io::sink());
        b.iter(|| s.write(black_box(&recs)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
