//! Capture filters off Unix: Npcap's wpcap.dll has the same compiler, but
//! vmflow is not tested against it, so a filter is refused plainly rather
//! than half supported.

use super::program::Insn;
use super::CompileFailure;

/// The same targets as on Linux; nothing is compiled for them here.
#[allow(dead_code)]
#[derive(Clone, Copy)]
pub enum Target {
    Live { dlt: u32 },
    File { linktype: u32 },
}

pub fn compile(_expr: &str, _target: Target, _snaplen: u32) -> Result<Vec<Insn>, CompileFailure> {
    Err(CompileFailure::Unsupported)
}
