//! Any frame on any supported link type, through both decoders: the one-pass
//! path must never panic, and where it takes a frame it must give exactly
//! what the general decoder gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmflow::decode::{decode, fast, Fragment};
use vmflow::flow::Packet;

const LINKTYPES: [u32; 10] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let lt = LINKTYPES[usize::from(sel) % LINKTYPES.len()];
    let orig = frame.len() as u32 + u32::from(sel);
    let general = decode(lt, frame, orig);
    if let Some(f) = fast::packet(7, lt, frame, orig) {
        let d = general.expect("the general decoder refused a frame the fast path took");
        assert_eq!(d.fragment, Fragment::None);
        let g = Packet::new(7, &d);
        assert_eq!(
            (f.key, f.hash, f.from_src, f.ip_bytes, f.tcp_flags, f.icmp),
            (g.key, g.hash, g.from_src, g.ip_bytes, g.tcp_flags, g.icmp)
        );
    }
});
