//! Why a connection to the collector ended, and why an agent was refused.
//! The texts are the ones the collector logs (and has logged) and, for
//! refusals, the reason it sends the agent.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use vmflow_proto::{ProtoError, SessionError};

use super::jetstream::JetStreamError;
use super::store::StoreError;

/// The collector could not start: its output directory is not usable.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", out.display())]
pub struct ServeError {
    pub out: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A connection that ended badly: who it came from, which agent it was (as
/// far as the log names it), and what went wrong. Displays as logged.
#[derive(Debug)]
pub struct ConnectionError {
    pub peer: SocketAddr,
    /// The agent, from its certificate (and stream). `None` before it is
    /// known, and for errors reading the hello, which have always been
    /// logged without it.
    pub agent: Option<String>,
    pub cause: ConnectionFailure,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: connection closed: ", self.peer)?;
        if let Some(agent) = &self.agent {
            write!(f, "{agent}: ")?;
        }
        write!(f, "{}", self.cause)
    }
}

impl std::error::Error for ConnectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionFailure {
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("client certificate has no usable subject common name")]
    NoCommonName,
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("{0}")]
    Write(#[source] std::io::Error),
    /// The protocol ended the session: a frame out of place or not a frame,
    /// another version, the agent giving up.
    #[error(transparent)]
    Protocol(#[from] SessionError),
    /// The collector refused the agent (and told it this).
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// Storing a group of batches did not finish (the task panicked).
    #[error("{0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("store lock poisoned")]
    StorePoisoned,
    /// The session reported what its state rules out (a bug, not the
    /// peer's doing): the connection ends, the collector goes on.
    #[error("internal: {0}")]
    Invariant(&'static str),
    /// A group of batches was dropped unwritten: an earlier group of the
    /// connection failed to commit.
    #[error("a group of batches was not committed: an earlier one failed")]
    Abandoned,
    /// The decoding slots are gone (the collector is shutting down).
    #[error("{0}")]
    Decoders(#[source] tokio::sync::AcquireError),
}

/// Reading a frame failed or took too long.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Between frames: the agent is done.
    #[error("connection closed by peer")]
    Eof,
    #[error("connection closed inside a frame")]
    ClosedInsideFrame,
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// A frame began and did not end before the deadline.
    #[error("frame not completed in time (slow client)")]
    SlowFrame,
    #[error("idle timeout")]
    Idle,
    /// A large frame could not be given memory from the shared budget
    /// before the deadline.
    #[error("the collector's frame memory stayed taken by other connections; closing")]
    NoFrameMemory,
}

/// Why the collector refuses an agent: sent to it as `refused.reason`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The certificate's name cannot name a directory (from `names`).
    #[error("{0}")]
    AgentName(String),
    #[error("stream name {0:?} is not allowed")]
    StreamName(String),
    #[error("the collector cannot open this stream's output: {0}")]
    OpenStore(#[source] OpenError),
    /// The store does not take the batch (not the next one, a reserved
    /// number): its reason, naming the batch it expected.
    #[error("{0}")]
    Batch(String),
    #[error("batch {seq}: claims {claims} records, holds {holds}")]
    RecordCount { seq: u64, claims: u32, holds: usize },
    #[error("batch {seq}: {source}")]
    BadBlock { seq: u64, source: ProtoError },
    #[error("batch {seq}: observation {line}: {why}")]
    BadObservation { seq: u64, line: usize, why: String },
    #[error("the collector cannot store batch {seq}: {why}")]
    Store { seq: u64, why: StoreFailure },
}

/// The store failed to write a group of batches.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    #[error("store lock poisoned")]
    Poisoned,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
}

/// A stream's store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("store lock poisoned")]
    Poisoned,
    /// Moving a stream's directory from where an earlier version kept it.
    #[error("moving {} to {}: {source}", from.display(), to.display())]
    Move {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Task(#[source] tokio::task::JoinError),
    /// The agent's name cannot name its output (from `names`).
    #[error("{0}")]
    Name(String),
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
}
