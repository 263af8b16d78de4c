//! The files the agent's spool and the collector's store read back after a
//! crash or damage: a segment, a ledger, a store state, a record file (a
//! collector's blocks hour file), as any bytes. Never a panic; a segment's
//! entries lie inside the file, in order, and each one parses again where
//! the scan says it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmflow::collect::store::state_reads;
use vmflow::export::blocks::BlockReader;
use vmflow::export::spool::{ledger, segment};

fuzz_target!(|data: &[u8]| {
    let s = segment::scan(data);
    let mut prev = 0;
    for e in &s.entries {
        assert!(e.seq > prev || prev == 0);
        prev = e.seq;
        let at = e.offset as usize;
        assert!(at + e.size() as usize <= data.len());
        assert_eq!(segment::parse_entry(&data[at..], e.offset), Some(*e));
    }
    let _ = ledger::parse(data);
    let _ = state_reads(&String::from_utf8_lossy(data));
    let path = std::path::Path::new("fuzz.blocks");
    let len = data.len() as u64;
    if let Ok(mut r) = BlockReader::new(std::io::Cursor::new(data), len, path) {
        while let Ok(Some(_)) = r.next_block() {}
        assert!(r.stats.entries <= len / segment::ENTRY_HEADER as u64);
        assert!(r.stats.damaged_bytes <= len);
    }
});
