//! Why a followed source stopped or a step failed: reading its captures, its
//! checkpoint, the service it reads from. Each names the file or service.

use super::checkpoint::CheckpointError;
use crate::azure::AzureError;
use crate::capture::SourceError;
use crate::pipeline::PipelineError;
use vmflow_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("azure: {0}")]
    Azure(#[from] AzureError),
    /// The spool could not make records durable before a checkpoint.
    #[error("spool: {0}")]
    Spool(#[source] std::io::Error),
    /// A state the source's own bookkeeping should make impossible.
    #[error("pipeline stage failed: {0}")]
    Invariant(&'static str),
}

impl From<EngineError> for FollowError {
    fn from(e: EngineError) -> Self {
        PipelineError::from(e).into()
    }
}

impl From<PipelineError> for FollowError {
    fn from(e: PipelineError) -> Self {
        FollowError::Source(e.into())
    }
}
