//! vmflow: turns captured packets into bidirectional flow records.
//!
//! Data moves one way: source → decode → flow table → export.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod azure;
pub mod calendar;
pub mod capture;
pub mod certs;
pub mod check;
pub mod cli;
pub mod collect;
pub mod config;
#[cfg(test)]
mod delivery_model;
pub mod disk;
pub mod episode;
pub mod error;
pub mod export;
pub mod extension;
pub mod flowlog;
pub mod follow;
pub mod identity;
pub mod metrics;
pub mod observe;
pub mod pipeline;
pub mod platform;
pub mod query;
pub mod report;
pub mod run;
pub mod synth;
#[cfg(test)]
mod testkit;
pub mod tls;

pub use error::Error;

// The engine crate's rooms, under the names the agent has always used for
// them (`crate::flow::FlowTable`, …).
pub use vmflow_engine::{decode, flow, net, packet, rng, settings, sink};
