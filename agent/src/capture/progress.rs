//! How far a replay has got, for whoever shows it (`replay`'s progress
//! bar): bytes read from the files (compressed bytes for a compressed
//! file), packets handed to the engine, records out. Updated per read call
//! and per few thousand packets, never per packet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct ReadProgress {
    bytes: AtomicU64,
    packets: AtomicU64,
    records: AtomicU64,
}

impl ReadProgress {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Relaxed)
    }

    pub fn records(&self) -> u64 {
        self.records.load(Relaxed)
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Relaxed);
    }

    pub fn add_packets(&self, n: u64) {
        self.packets.fetch_add(n, Relaxed);
    }

    pub fn add_records(&self, n: u64) {
        self.records.fetch_add(n, Relaxed);
    }
}
