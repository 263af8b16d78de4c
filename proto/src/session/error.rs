//! Why a session ended.

use std::time::Duration;

use crate::{FrameKind, ProtoError};

/// Why a session ended, on either side. The texts are the ones the agent
/// and the collector log (and have logged since before the sessions).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer's bytes are not a frame: oversized, not MessagePack, an
    /// unknown `type` or a missing field.
    #[error(transparent)]
    Frame(ProtoError),
    /// The peer speaks another protocol version (from [`crate::check_version`]).
    #[error(transparent)]
    Version(ProtoError),

    /// Agent side: the collector's first frame was not `hello_ack`.
    #[error("expected hello_ack")]
    ExpectedHelloAck { got: FrameKind },
    /// Agent side: the collector refused this agent, and said why.
    #[error("refused: {reason}")]
    Refused { reason: String },
    /// Agent side: the collector sent a frame only an agent sends.
    #[error("unexpected frame from collector")]
    UnexpectedFromCollector { got: FrameKind },
    /// Agent side: batches were in flight and no ack came for this long.
    #[error("no acknowledgement for {} s", after.as_secs())]
    AckTimeout { after: Duration },

    /// Collector side: the agent's first frame was not `hello`.
    #[error("expected hello, got {got}")]
    ExpectedHello { got: FrameKind },
    /// Collector side: the agent sent `refused` (it gives up), and said why.
    #[error("agent gave up: {reason}")]
    AgentGaveUp { reason: String },
    /// Collector side: after hello, the agent sent a frame other than a
    /// batch, a heartbeat or a refusal.
    #[error("unexpected {got} frame")]
    UnexpectedFromAgent { got: FrameKind },
}
