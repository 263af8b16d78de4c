//! The files the agent's spool and the collector's store read back after a
//! crash or damage: a segment, a ledger, a store state, as any bytes. Never
//! a panic; a segment's entries lie inside the file, in order, and each one
//! parses again where the scan says it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmflow::collect::store::state_reads;
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
});
