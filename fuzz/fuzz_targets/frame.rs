//! Any bytes from the network: frame decoding and record blocks must give an
//! error or a frame, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmflow_proto::{decode_block, Frame, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    let mut d = FrameDecoder::new(1 << 20);
    d.push(data);
    while let Ok(Some(f)) = d.next_frame() {
        if let Frame::Batch(b) = f {
            let _ = decode_block(&b.block);
        }
    }
    let _ = decode_block(data);
});
