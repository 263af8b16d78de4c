//! Sources followed over time: a capture folder, a Blob container, a growing
//! capture file. Each is a [`Tailed`] source: stepped by the [`runner`],
//! its overlap and coverage kept by [`sequence`], its position saved with
//! the engine's state in a [`checkpoint`] so a restart resumes exactly.

pub mod blob;
pub mod checkpoint;
mod error;
pub mod folder;
pub mod growing;
pub mod runner;
pub mod sequence;
pub mod tailed;

pub use error::FollowError;
pub use tailed::{Step, Tailed};
