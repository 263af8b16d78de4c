//! Capture filter cost per packet: libpcap's programs for a few common
//! expressions run by vmflow's interpreter over the synthetic traffic mix
//! (Ethernet, some VLAN tags, IPv4/IPv6, TCP/UDP/ICMP, 128-byte snap
//! length), with the decoder beside them for scale. Needs libpcap.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vmflow::capture::filter::{compile_for_file, LINKTYPE_ETHERNET};
use vmflow::capture::CaptureReader;
use vmflow::config::Config;
use vmflow::decode::decode;
use vmflow::synth::{generate, SynthParams};

fn frames() -> Vec<(Vec<u8>, u32)> {
    let mut pcap = Vec::new();
    let p = SynthParams::new(20_000, 2_000);
    generate(&p, &Config::default(), &mut pcap, false).unwrap();
    let mut r = CaptureReader::open(Cursor::new(pcap)).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        out.push((p.data.to_vec(), p.orig_len));
    }
    out
}

fn bench(c: &mut Criterion) {
    let frames = frames();
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(frames.len() as u64));
    for expr in ["tcp port 443", "not port 53", "port 1", "vlan and tcp"] {
        let prog = compile_for_file(expr, LINKTYPE_ETHERNET).unwrap();
        g.bench_function(format!("{expr} ({} insns)", prog.insns().len()), |b| {
            b.iter(|| {
                frames
                    .iter()
                    .filter(|(f, orig)| prog.accepts(black_box(f), *orig))
                    .count()
            })
        });
    }
    g.bench_function("decode (for scale)", |b| {
        b.iter(|| {
            frames
                .iter()
                .filter(|(f, orig)| decode(1, black_box(f), *orig).is_ok())
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
