//! Bounded, deterministic fuzzing that runs with the test suite: mutated
//! captures of every format go through the readers, the decoder and the whole
//! engine. Nothing may panic, and every packet that reaches the flow table
//! must come out in exactly one record. `fuzz/` has the open-ended
//! cargo-fuzz targets for longer runs.

use std::io::Cursor;

use super::CaptureReader;
use super::SourceError;
use crate::config::Config;
use crate::decode::decode;
use crate::export::VecSink;
use crate::pipeline;
use crate::synth::{self, Rng, SynthParams};

pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let mut pcap = Vec::new();
    let params = SynthParams::new(300, 20).seed(9).snaplen(96);
    synth::generate(&params, &Config::default(), &mut pcap, false).unwrap();
    // The same packets as pcapng (one interface, ns resolution) and NetMon 2.3.
    let mut ng = Vec::new();
    let block = |out: &mut Vec<u8>, ty: u32, body: &[u8]| {
        let mut b = body.to_vec();
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        let len = (b.len() + 12) as u32;
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&b);
        out.extend_from_slice(&len.to_le_bytes());
    };
    block(
        &mut ng,
        0x0a0d_0d0a,
        &[
            0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
    );
    block(
        &mut ng,
        1,
        &[1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0],
    );
    let mut nm = vec![0u8; 128];
    nm[..4].copy_from_slice(b"GMBU");
    nm[4] = 3;
    nm[5] = 2;
    nm[6] = 1;
    let mut table = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let incl = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let sec = u64::from(u32::from_le_bytes(pcap[at..at + 4].try_into().unwrap()));
        let usec = u64::from(u32::from_le_bytes(pcap[at + 4..at + 8].try_into().unwrap()));
        let ns = sec * 1_000_000_000 + usec * 1_000;
        let rec = &pcap[at..at + 16 + incl];
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&((ns >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(ns as u32).to_le_bytes());
        b.extend_from_slice(&rec[8..16]);
        b.extend_from_slice(&rec[16..]);
        block(&mut ng, 6, &b);
        table.push(nm.len() as u32);
        nm.extend_from_slice(&(usec).to_le_bytes());
        nm.extend_from_slice(&rec[12..16]);
        nm.extend_from_slice(&rec[8..12]);
        nm.extend_from_slice(&rec[16..]);
        nm.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
        nm.extend_from_slice(&(ns / 100 + 116_444_736_000_000_000).to_le_bytes());
        nm.push(0);
        at += 16 + incl;
    }
    let off = nm.len() as u32;
    for t in &table {
        nm.extend_from_slice(&t.to_le_bytes());
    }
    nm[24..28].copy_from_slice(&off.to_le_bytes());
    nm[28..32].copy_from_slice(&((table.len() * 4) as u32).to_le_bytes());
    vec![pcap, ng, nm]
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        if b.is_empty() {
            b.push(rng.next_u64() as u8);
        }
        let i = rng.below(b.len() as u64) as usize;
        match rng.below(6) {
            0 => b[i] ^= 1 << rng.below(8),
            1 => b[i] = rng.next_u64() as u8,
            2 => b.truncate(i),
            3 => {
                // Length-like fields are where parsers break: write extremes.
                let v: u32 = [0, 1, 0xffff, 0x7fff_ffff, u32::MAX][rng.below(5) as usize];
                for (k, x) in v.to_le_bytes().iter().enumerate() {
                    if let Some(y) = b.get_mut(i + k) {
                        *y = *x;
                    }
                }
            }
            4 => {
                let n = rng.below(64) as usize;
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(i..i, bytes);
            }
            _ => {
                let j = rng.below(b.len() as u64) as usize;
                let (lo, hi) = (i.min(j), i.max(j));
                b.drain(lo..hi.min(lo + 128));
            }
        }
    }
    b
}

fn run_engine(bytes: Vec<u8>, cfg: &Config) -> pipeline::Report<SourceError> {
    pipeline::run(cfg, VecSink::default(), move |feed| {
        let wrap = |source| SourceError::Capture {
            path: "fuzz-input".into(),
            source,
        };
        let mut r = CaptureReader::open(Cursor::new(bytes)).map_err(wrap)?;
        while let Some(p) = r.next_packet().map_err(wrap)? {
            feed.packet(p);
        }
        Ok(())
    })
}

#[test]
fn mutated_captures_never_panic_and_lose_nothing() {
    let mut rng = Rng::new(0xf022);
    let mut cfg = Config::default();
    cfg.pipeline.threads = 2;
    cfg.pipeline.batch_packets = 64;
    cfg.flow.max_flows = 64;
    let seeds = seeds();
    for s in &seeds {
        let r = run_engine(s.clone(), &cfg);
        assert!(r.error.is_none(), "seed must be valid: {:?}", r.error);
        assert!(r.summary.packets >= 300, "{}", r.summary.packets);
    }
    for round in 0..1_500 {
        let seed = &seeds[round % seeds.len()];
        let input = mutate(&mut rng, seed);
        let rep = run_engine(input, &cfg);
        let s = &rep.summary;
        assert_eq!(s.table.packets, s.flow_packets, "round {round}");
        assert_eq!(s.table.bytes, s.ip_bytes, "round {round}");
        assert_eq!(s.record_packets, s.flow_packets, "round {round}");
        assert_eq!(s.record_bytes, s.ip_bytes, "round {round}");
        assert!(
            s.flow_packets + s.skipped_total() <= s.packets + s.frag.later,
            "round {round}"
        );
    }
}

#[test]
fn random_frames_never_panic_the_decoder() {
    let mut rng = Rng::new(77);
    let linktypes = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 105];
    let mut buf = vec![0u8; 256];
    for _ in 0..300_000 {
        let n = rng.below(buf.len() as u64) as usize;
        for b in buf.iter_mut().take(n) {
            *b = rng.next_u64() as u8;
        }
        // Steer towards deep paths: plausible link and IP headers.
        if n > 20 && rng.chance(0.7) {
            buf[12] = 0x08;
            buf[13] = if rng.chance(0.5) { 0x00 } else { 0xdd };
            if buf[13] == 0xdd {
                buf[12] = 0x86;
                buf[14] = 0x60;
            } else {
                buf[14] = 0x45;
            }
        }
        let lt = linktypes[rng.below(linktypes.len() as u64) as usize];
        let _ = decode(lt, &buf[..n], rng.next_u64() as u32);
    }
}
