//! What goes wrong between vmflow and a JetStream stream. Server addresses
//! are shown without any user or password they carry.

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JetStreamError {
    #[error("NATS {servers}: cannot connect: {source}")]
    Connect {
        servers: String,
        #[source]
        source: Cause,
    },
    /// A NATS authentication file that cannot be used (its content is
    /// never shown).
    #[error("NATS authentication file {}: {reason}", path.display())]
    AuthFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("NATS server address {0:?}: expected nats://HOST:PORT (or tls://), comma-separated")]
    Address(String),
    #[error("JetStream subject prefix {0:?}: expected tokens of letters, digits, '-' and '_' separated by '.'")]
    Prefix(String),
    #[error("JetStream stream {stream}: {what}: {source}")]
    Request {
        stream: String,
        what: &'static str,
        #[source]
        source: Cause,
    },
    /// The stream exists with settings that differ from the ones asked for.
    #[error(
        "JetStream stream {stream} exists with {what}: refusing to start (change the flags to \
         match, or change the stream, e.g. `nats stream edit {stream}`)"
    )]
    Conflict { stream: String, what: String },
    #[error("JetStream subject {subject}: {what}: {source}")]
    Subject {
        subject: String,
        what: &'static str,
        #[source]
        source: Cause,
    },
    /// Another collector wrote to the agent stream since this connection
    /// read where it stands.
    #[error(
        "JetStream subject {subject}: another writer appended to it since this connection began"
    )]
    Raced { subject: String },
    /// A message in the stream that vmflow did not write (or is damaged).
    #[error("JetStream stream {stream}, message {seq} ({subject}): {why}")]
    Message {
        stream: String,
        seq: u64,
        subject: String,
        why: String,
    },
}
