//! The agent ↔ collector protocol as two state machines with no I/O, in the
//! manner of quinn-proto: a session owns no socket and no clock. Its driver
//! feeds it the peer's bytes (`handle_input`), the time when it asks for it
//! (`handle_timeout`, at the instant `poll_timeout` named), and the
//! application's decisions (which batch to send next, whether to accept an
//! agent); it takes back what to write (`poll_transmit`) and what happened
//! (`poll_event`). The tokio + TLS drivers are `agent/src/export/ship.rs`
//! and `agent/src/collect/mod.rs`; `proto/tests/session.rs` runs both
//! sessions against each other in memory, with simulated time.
//!
//! What is protocol lives here: hello and the version check, resuming after
//! the collector's `last_seq`, the window of unacknowledged batches and the
//! `follows` each batch names, cumulative acks, the ack timeout, heartbeats,
//! refusals, which frame may come when. What is the driver's stays there:
//! connect, TLS and hello-read timeouts, the collector's idle timeout and
//! frame memory budget, the spool, the store, logging.
//!
//! The two sides decode at different moments, each for its driver:
//! [`AgentSession`] decodes and acts on every whole frame in `handle_input`
//! (acks must stop the ack clock at the time they arrive);
//! [`CollectorSession`] buffers in `handle_input` and decodes one frame per
//! `poll_event`, so its driver decides how much is decoded at once (group
//! commit, the frame budget) and an error behind a good frame surfaces only
//! once that frame was handled.

mod agent;
mod collector;
mod error;

pub use agent::{AgentConfig, AgentEvent, AgentSession, Blocked};
pub use collector::{CollectorEvent, CollectorSession};
pub use error::SessionError;
