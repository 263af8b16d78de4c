//! Decoder throughput: vmflow's decoder (pnet packet views, a chosen
//! package) against the hand-written wire views it replaced, on the synthetic
//! traffic mix (Ethernet, some VLAN tags, IPv4/IPv6, TCP/UDP/ICMP, 128-byte
//! snap length). Both produce identical `Decoded` values, checked first.

#[path = "hand/mod.rs"]
mod hand;

use std::hint::black_box;
use std::io::Cursor;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vmflow::capture::CaptureReader;
use vmflow::config::Config;
use vmflow::decode::{decode, Decoded, Skip};
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

/// Folds the fields the flow table uses into one value, as the pipeline
/// consumes them, rather than copying whole results out.
#[inline]
fn fold(acc: u64, d: Result<Decoded, Skip>) -> u64 {
    match d {
        Ok(d) => acc.wrapping_add(
            u64::from(d.key.src_port)
                ^ u64::from(d.key.dst_port) << 16
                ^ u64::from(d.ip_bytes) << 32
                ^ u64::from(d.key.src[3] ^ d.key.dst[15] ^ d.tcp_flags ^ d.key.proto),
        ),
        Err(_) => acc,
    }
}

fn bench(c: &mut Criterion) {
    let frames = frames();
    for (f, orig) in &frames {
        assert_eq!(decode(1, f, *orig), hand::decode(1, f, *orig));
    }
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("pnet_views", |b| {
        b.iter(|| {
            let acc = frames
                .iter()
                .fold(0, |a, (f, o)| fold(a, decode(1, black_box(f), *o)));
            black_box(acc)
        })
    });
    g.bench_function("hand_written", |b| {
        b.iter(|| {
            let acc = frames
                .iter()
                .fold(0, |a, (f, o)| fold(a, hand::decode(1, black_box(f), *o)));
            black_box(acc)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
