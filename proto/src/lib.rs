//! Wire types shared by every vmflow component. No I/O lives here: the agent,
//! the collector and the tests all agree on these shapes and on nothing else.

mod record;

pub use record::{flow_id, Direction, EndReason, FlowRecord};
