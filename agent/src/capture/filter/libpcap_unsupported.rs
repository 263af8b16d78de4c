//! Capture filters off Unix: Npcap's wpcap.dll has the same compiler, but
//! vmflow is not tested against it, so a filter is refused plainly rather
//! than half supported.

use super::program::Insn;
use super::CompileFailure;

pub fn compile(_expr: &str, _linktype: u32, _snaplen: u32) -> Result<Vec<Insn>, CompileFailure> {
    Err(CompileFailure::Unsupported)
}
