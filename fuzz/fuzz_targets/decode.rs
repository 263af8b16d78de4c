//! Any frame on any supported link type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmflow::decode::decode;

const LINKTYPES: [u32; 10] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let lt = LINKTYPES[usize::from(sel) % LINKTYPES.len()];
    let _ = decode(lt, frame, frame.len() as u32 + u32::from(sel));
});
