//! Azure NSG and VNet flow logs turned into flow records, without I/O:
//! [`parse`] takes a committed block of an hourly `PT1H.json` blob and gives
//! its tuples ([`schema`] says what one tuple holds in each schema), and
//! [`stitch`] joins the begin, continuing and end tuples of one flow into
//! segments shaped like those of captured flows. The source that reads the
//! blobs is `follow::flowlog`.

mod error;
pub mod parse;
pub mod schema;
pub mod stitch;

pub use error::{FlowlogError, TupleError};
pub use parse::{parse_block, Entry, Parsed};
pub use schema::{FlowState, Schema, Tuple};
pub use stitch::{StitchSettings, StitchState, StitchStats, Stitcher};
