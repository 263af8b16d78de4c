//! The decoder's fast path against its general path, on the synthetic mix
//! (which lives here, above the engine).

use crate::capture::CaptureReader;
use crate::config::Config;
use crate::decode::fast::packet;
use crate::decode::{decode, Fragment};
use crate::flow::Packet;
use crate::synth::Rng;

fn general(ts: u64, linktype: u32, data: &[u8], orig_len: u32) -> Option<Packet> {
    let d = decode(linktype, data, orig_len).ok()?;
    (d.fragment == Fragment::None).then(|| Packet::new(ts, &d))
}

fn same(a: &Packet, b: &Packet) -> bool {
    a.ts_ns == b.ts_ns
        && a.key == b.key
        && a.hash == b.hash
        && a.from_src == b.from_src
        && a.ip_bytes == b.ip_bytes
        && a.tcp_flags == b.tcp_flags
        && a.icmp == b.icmp
}

/// Every frame of the synthetic mix and thousands of mutations of each
/// (bytes flipped in the headers, cut short, lengths rewritten): where the
/// fast path answers, the general path answers the same.
#[test]
fn agrees_with_the_general_path_on_every_frame_it_takes() {
    let mut pcap = Vec::new();
    let p = crate::synth::SynthParams::new(3_000, 200).seed(9);
    crate::synth::generate(&p, &Config::default(), &mut pcap, false).unwrap();
    let mut r = CaptureReader::open(std::io::Cursor::new(pcap)).unwrap();
    let mut frames = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        frames.push((p.ts_ns, p.linktype, p.orig_len, p.data.to_vec()));
    }
    let mut rng = Rng::new(4);
    let (mut taken, mut declined) = (0u64, 0u64);
    for (ts, lt, orig, data) in &frames {
        for round in 0..40 {
            let mut d = data.clone();
            let mut orig = *orig;
            if round > 0 {
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(d.len().min(60) as u64) as usize;
                    d[at] ^= 1 << rng.below(8);
                }
                match rng.below(4) {
                    0 => d.truncate(rng.below(d.len() as u64 + 1) as usize),
                    1 => orig = rng.below(2_000) as u32,
                    _ => {}
                }
            }
            let fast = packet(*ts, *lt, &d, orig);
            match (&fast, general(*ts, *lt, &d, orig)) {
                (Some(f), Some(g)) => {
                    assert!(same(f, &g), "round {round}: {f:?} vs {g:?}");
                    taken += 1;
                }
                (Some(f), None) => {
                    panic!("fast path took a frame the general path refuses: {f:?}")
                }
                (None, _) => declined += 1,
            }
        }
    }
    // The synthetic mix is mostly Ethernet/IPv4/TCP+UDP: most unmutated
    // frames and many mutated ones take the fast path.
    assert!(
        taken > 40_000 && declined > 10_000,
        "taken {taken}, declined {declined}"
    );
}
