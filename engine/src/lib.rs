//! vmflow's flow engine: what a packet is (`packet`), how frames become
//! packets (`decode`), and the flow tables that turn packets into
//! bidirectional flow records (`flow`), with the local-network settings they
//! judge direction by (`net`).
//!
//! No threads, no files, no clocks: packet time comes in with the packets, so
//! the same input gives the same records on every machine. The agent drives
//! it (from capture files, live rings or followed sources) and ships what it
//! produces. Unsafe code is denied; the one exception is a cache hint in
//! `flow::index::prefetch`, with its proof beside it.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod decode;
pub mod flow;
pub mod net;
pub mod packet;
pub mod rng;
