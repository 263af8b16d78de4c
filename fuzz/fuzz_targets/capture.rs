//! Any bytes as a capture file: readers and decoder must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmflow::capture::CaptureReader;
use vmflow::decode::decode;

fuzz_target!(|data: &[u8]| {
    let Ok(mut r) = CaptureReader::open(std::io::Cursor::new(data)) else {
        return;
    };
    while let Ok(Some(p)) = r.next_packet() {
        let _ = decode(p.linktype, p.data, p.orig_len);
    }
});
