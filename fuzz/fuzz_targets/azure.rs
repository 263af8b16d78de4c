//! What Azure sends back, as any bytes: a Blob listing (XML) and an ARM or
//! token error body (XML or JSON) give results or errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = vmflow::azure::blob::parse_listing(&text);
    let _ = vmflow::azure::error_text(&text, &["secret"]);
    let _ = vmflow::azure::redact(&text, &["secret"]);
});
