//! vmflow's flow engine: what a packet is (`packet`), how frames become
//! packets (`decode`), and the flow tables that turn packets into
//! bidirectional flow records (`flow`), with the local-network settings they
//! judge direction by (`net`). On top, the engine proper: one entry point for
//! packets and time ([`Ingest`], fed through [`Feed`]), batches cut by packet
//! count and handed to a [`Dispatch`] (the tables on the caller's thread,
//! [`Inline`], or the agent's shard threads), records to a [`RecordSink`],
//! and for the inline engine checkpoints ([`EngineState`]), restore and
//! reconfiguration ([`InlineFeed`]).
//!
//! No threads, no files, no clocks: packet time comes in with the packets, so
//! the same input gives the same records on every machine. The agent drives
//! it (from capture files, live rings or followed sources) and ships what it
//! produces. Unsafe code is denied; the one exception is a cache hint in
//! `flow::index::prefetch`, with its proof beside it.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod batch;
pub mod decode;
pub mod error;
pub mod feed;
pub mod flow;
pub mod ingest;
pub mod inline;
pub mod net;
pub mod packet;
pub mod records;
pub mod rng;
mod router;
pub mod settings;
pub mod sink;
pub mod state;

pub use batch::{process, Dispatch, Routed};
pub use error::EngineError;
pub use feed::{Feed, InlineFeed, Progress, TablesNow};
pub use ingest::{Counts, Ingest};
pub use inline::Inline;
pub use records::{sum_stats, write_piece, Pieces, Written, PIECE_RECORDS};
pub use settings::{FlowSettings, Settings};
pub use sink::RecordSink;
pub use state::EngineState;
