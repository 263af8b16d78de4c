//! What stops the engine: its output failing, or settings or a checkpoint
//! that do not fit the run.

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("writing records: {0}")]
    Output(#[source] std::io::Error),
    #[error("pipeline stage failed: output failed earlier: writing records: {0}")]
    OutputFailedEarlier(#[source] std::io::Error),
    #[error("config: pipeline.partitions cannot change without a restart; nothing was reloaded")]
    PartitionsFixed,
    #[error(
        "config: the checkpoint holds {held} flow-table partitions, this configuration {configured}; \
         keep pipeline.partitions or delete the checkpoint"
    )]
    PartitionsChanged { held: usize, configured: usize },
    #[error("checkpoint: the checkpoint names a partition that does not exist")]
    UnknownPartition,
}
