//! Live capture's stand-in where there is no AF_PACKET (Windows): the same
//! items as `live`, so the capture loop and the jobs compile unchanged, and
//! every way in refuses with [`LiveError::Unsupported`], which tells the
//! operator to follow Network Watcher's capture files instead. A [`Ring`]
//! cannot exist here: it wraps an empty enum.

use super::RawPacket;

pub use super::live_common::{
    IfaceStats, LiveError, RingOptions, DEFAULT_BLOCKS, DEFAULT_BLOCK_KIB,
};

/// Live capture does not work here.
pub fn available() -> Result<(), LiveError> {
    Err(LiveError::Unsupported)
}

enum Never {}

pub struct Ring(Never);

pub fn ifindex(_name: &str) -> Option<u32> {
    None
}

pub fn default_interfaces() -> Vec<String> {
    Vec::new()
}

impl Ring {
    pub fn open(_iface: &str, _opts: &RingOptions) -> Result<Ring, LiveError> {
        Err(LiveError::Unsupported)
    }

    pub fn name(&self) -> &str {
        match self.0 {}
    }

    pub fn ifindex(&self) -> u32 {
        match self.0 {}
    }

    pub fn drain<F: FnMut(RawPacket<'_>)>(&mut self, _f: &mut F) -> usize {
        match self.0 {}
    }

    pub fn drops(&self) -> u64 {
        match self.0 {}
    }

    pub fn kernel_stats(&mut self) -> IfaceStats {
        match self.0 {}
    }
}

pub fn wait(_rings: &[Ring], timeout_ms: i32) {
    std::thread::sleep(std::time::Duration::from_millis(timeout_ms.max(0) as u64));
}
