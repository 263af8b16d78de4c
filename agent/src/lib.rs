//! vmflow: turns captured packets into bidirectional flow records.
//!
//! Data moves one way: source → decode → flow table → export.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod azure;
pub mod calendar;
pub mod certs;
pub mod checkpoint;
pub mod cli;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod decode;
#[cfg(test)]
mod delivery_model;
pub mod disk;
pub mod episode;
pub mod error;
pub mod export;
pub mod flow;
pub mod identity;
pub mod net;
pub mod packet;
pub mod pipeline;
pub mod rng;
pub mod sink;
pub mod source;
pub mod synth;
pub mod tail;
#[cfg(test)]
mod testkit;
pub mod tls;

pub use error::Error;
