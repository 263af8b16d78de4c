//! Observations on their way into the record stream's own batches (`vmflow
//! run`): the observing sink writes each one right after the record that
//! raised it has gone on, and the spool's batcher takes them into the batch
//! it fills next. One batch, one sequence number: an observation is
//! delivered, acknowledged and repeated exactly like the records beside it.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

/// NDJSON lines written and not yet taken (shared by one lane's observing
/// sink and its batcher, on one thread).
#[derive(Clone, Debug, Default)]
pub struct Carried(Arc<Mutex<Vec<u8>>>);

impl Carried {
    /// The lines written since the last take.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Write for Carried {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
