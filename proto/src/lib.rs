//! Wire types shared by every vmflow component. No I/O lives here: the agent,
//! the collector and the tests all agree on these shapes and on nothing else.
#![forbid(unsafe_code)]

mod block;
mod error;
mod frame;
pub mod ipfix;
mod record;
pub mod session;

pub use block::{
    decode_block, decode_records, encode_block, encode_records, BLOCK_VERSION, MAX_BLOCK_RAW,
};
pub use error::ProtoError;
pub use frame::{
    check_version, encode_frame, Ack, Batch, Frame, FrameDecoder, FrameKind, Heartbeat, Hello,
    HelloAck, Refused, MAX_FRAME, PROTOCOL_VERSION,
};
pub use record::{flow_id, Decision, Direction, EndReason, FlowRecord, Remote};
pub use session::SessionError;
