//! Sources followed over time: a capture folder, a Blob container, a growing
//! capture file. Each is a [`FollowedSource`]: stepped by the [`runner`],
//! its overlap and coverage kept by [`sequence`], its position saved with
//! the engine's state in a [`checkpoint`] so a restart resumes exactly.
//! A container of flow logs ([`flowlog`]) gives records, not packets: it
//! has its own runner, with the same checkpoint discipline.

pub mod blob;
pub mod checkpoint;
mod error;
pub mod failures;
pub mod flowlog;
pub mod folder;
pub mod growing;
pub mod runner;
pub mod sequence;
pub mod source;

pub use error::FollowError;
pub use source::{FollowedSource, Step};
