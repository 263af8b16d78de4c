//! Flow-table update throughput on pre-decoded packets (no I/O, one thread):
//! the cost of `FlowTable::handle` per packet at two table sizes.

use std::hint::black_box;
use std::io::Cursor;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vmflow::capture::CaptureReader;
use vmflow::config::Config;
use vmflow::decode::decode;
use vmflow::flow::{Event, FlowTable, Packet};
use vmflow::net::LocalNets;
use vmflow::synth::{generate, SynthParams};

fn packets(n: u64, concurrent: usize) -> Vec<Packet> {
    let mut pcap = Vec::new();
    let p = SynthParams::new(n, concurrent).seed(5);
    generate(&p, &Config::default(), &mut pcap, false).unwrap();
    let mut r = CaptureReader::open(Cursor::new(pcap)).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        let d = decode(p.linktype, p.data, p.orig_len).unwrap();
        out.push(Packet::new(p.ts_ns, &d));
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_table");
    for (n, concurrent) in [(200_000u64, 1_000usize), (400_000, 50_000)] {
        let pkts = packets(n, concurrent);
        g.throughput(Throughput::Elements(pkts.len() as u64));
        g.bench_function(format!("handle_{concurrent}_concurrent"), |b| {
            b.iter_batched(
                || FlowTable::new(Config::default().table(), Arc::new(LocalNets::default())),
                |mut t| {
                    let mut out = Vec::with_capacity(1 << 16);
                    for p in &pkts {
                        t.handle(Event::Packet(black_box(p)), &mut out);
                        out.clear();
                    }
                    t
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
