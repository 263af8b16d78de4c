//! What a followed source (a capture folder, a Blob container) offers the
//! runner that steps it and checkpoints it (`runner`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::sequence::Sequence;
use super::FollowError;
use crate::pipeline::Feed;

pub trait FollowedSource {
    type Position: Serialize + DeserializeOwned;
    /// One look for new data; `Idle` when there was none.
    fn step(&mut self, feed: &mut dyn Feed) -> Result<Step, FollowError>;
    fn position(&self) -> &Self::Position;
    fn sequence(&self) -> &Sequence;
    /// A checkpoint holding the current position is on disk: what it
    /// records as finished may now be removed for good.
    fn checkpointed(&mut self) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Progress,
    Idle,
}
