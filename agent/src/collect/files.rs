//! The file back end (the default): each agent stream is a [`StreamStore`]
//! under the output directory, opened once and shared by the stream's
//! connections. `vmflow sink` writes through the same back end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use vmflow_proto::Batch;

use super::error::{ConnectionFailure, OpenError, StoreFailure};
use super::names;
use super::sink::{decode_group, BoxFuture, Held, Opened, Reject, Sink, StreamSink, Written};
use super::store::{BatchInfo, StreamStore};
use crate::disk::SharedFs;

pub struct FileSink {
    inner: Arc<Inner>,
}

struct Inner {
    out: PathBuf,
    fs: SharedFs,
    stores: Mutex<HashMap<PathBuf, Arc<Mutex<StreamStore>>>>,
    /// One store is opened at a time: two connections of one stream must
    /// not both create it.
    opening: tokio::sync::Mutex<()>,
    /// At most two groups are decoded and written at once.
    decoders: Semaphore,
}

impl FileSink {
    pub fn new(out: PathBuf, fs: SharedFs) -> FileSink {
        FileSink {
            inner: Arc::new(Inner {
                out,
                fs,
                stores: Mutex::default(),
                opening: tokio::sync::Mutex::new(()),
                decoders: Semaphore::new(2),
            }),
        }
    }
}

impl Sink for FileSink {
    fn check_agent(&self, cn: &str) -> Result<(), String> {
        names::agent_dir(&self.inner.out, cn).map(|_| ())
    }

    fn open<'a>(
        &'a self,
        cn: &'a str,
        stream: &'a str,
        epoch: u64,
    ) -> BoxFuture<'a, Result<Opened, OpenError>> {
        Box::pin(async move {
            let agent_dir = names::agent_dir(&self.inner.out, cn).map_err(OpenError::Name)?;
            let dir = names::stream_dir(&agent_dir, stream);
            let store = open_store(&self.inner, &agent_dir, stream, &dir).await?;
            let held = {
                let st = store.lock().map_err(|_| OpenError::Poisoned)?;
                Held {
                    state: st.epoch(epoch),
                    new_epoch: st.is_new_epoch(epoch),
                    epochs: st.epochs(),
                }
            };
            let s: Box<dyn StreamSink> = Box::new(FileStream {
                inner: self.inner.clone(),
                dir,
                store,
            });
            Ok((s, held))
        })
    }
}

struct FileStream {
    inner: Arc<Inner>,
    dir: PathBuf,
    store: Arc<Mutex<StreamStore>>,
}

impl StreamSink for FileStream {
    fn write(
        &mut self,
        infos: Vec<BatchInfo>,
        batches: Vec<Batch>,
    ) -> BoxFuture<'_, Result<Written, ConnectionFailure>> {
        Box::pin(async move {
            let _decoding = self
                .inner
                .decoders
                .acquire()
                .await
                .map_err(ConnectionFailure::Decoders)?;
            let st = self.store.clone();
            let (written, broken) =
                tokio::task::spawn_blocking(move || store_batches(&st, &infos, &batches))
                    .await
                    .map_err(ConnectionFailure::Task)?;
            if broken {
                forget_store(&self.inner, &self.dir, &self.store);
            }
            Ok(written)
        })
    }
}

/// Decodes a group of batches and writes them with one commit. A batch that
/// does not decode ends the group there: the ones before it are written.
/// Also says whether the store must be reopened.
fn store_batches(
    store: &Mutex<StreamStore>,
    infos: &[BatchInfo],
    batches: &[Batch],
) -> (Written, bool) {
    let (decoded, error) = decode_group(batches);
    let group: Vec<(BatchInfo, &[vmflow_proto::FlowRecord])> = infos
        .iter()
        .copied()
        .zip(decoded.iter().map(Vec::as_slice))
        .collect();
    let first = batches.first().map_or(0, |b| b.seq);
    let mut st = match store.lock() {
        Ok(st) => st,
        Err(_) => {
            let error = Some(Reject::Store {
                seq: first,
                why: StoreFailure::Poisoned,
            });
            let outcomes = Vec::new();
            let took = None;
            return (
                Written {
                    outcomes,
                    error,
                    took,
                },
                true,
            );
        }
    };
    let started = std::time::Instant::now();
    let r = st.write_batches(&group);
    let took = Some(started.elapsed());
    match r {
        Ok(outcomes) => (
            Written {
                outcomes,
                error,
                took,
            },
            false,
        ),
        Err(e) => {
            let error = Some(Reject::Store {
                seq: first,
                why: e.into(),
            });
            let outcomes = Vec::new();
            (
                Written {
                    outcomes,
                    error,
                    took,
                },
                st.is_broken(),
            )
        }
    }
}

/// The stream's store, opened once and shared by its connections. An
/// earlier version kept named streams in `OUT/<agent>/<stream>`: moved to
/// their own namespace on first use.
async fn open_store(
    sh: &Inner,
    agent_dir: &Path,
    stream: &str,
    dir: &Path,
) -> Result<Arc<Mutex<StreamStore>>, OpenError> {
    let _one_at_a_time = sh.opening.lock().await;
    if let Some(s) = sh.stores.lock().map_err(|_| OpenError::Poisoned)?.get(dir) {
        return Ok(s.clone());
    }
    let fs = sh.fs.clone();
    let (agent_dir, stream, d) = (
        agent_dir.to_path_buf(),
        stream.to_string(),
        dir.to_path_buf(),
    );
    let opened = tokio::task::spawn_blocking(move || {
        // ("streams" itself is the new namespace: a stream of that name
        // from before is left where it is.)
        if !stream.is_empty() && stream != "streams" && !fs.is_dir(&d) {
            let old = names::legacy_stream_dir(&agent_dir, &stream);
            let state = old.join("state");
            if !fs.is_dir(&state) && fs.len(&state).ok().flatten().is_some() {
                let parent = crate::disk::parent(&d).to_path_buf();
                fs.create_dir_all(&parent)
                    .and_then(|_| fs.rename(&old, &d))
                    .and_then(|_| fs.sync_dir(&parent))
                    .and_then(|_| fs.sync_dir(&agent_dir))
                    .map_err(|source| OpenError::Move {
                        from: old.clone(),
                        to: d.clone(),
                        source,
                    })?;
                tracing::info!(
                    "{}: moved to {} (streams now have their own namespace)",
                    old.display(),
                    d.display()
                );
            }
        }
        StreamStore::open(fs, &d).map_err(OpenError::Store)
    })
    .await
    .map_err(OpenError::Task)??;
    let mut map = sh.stores.lock().map_err(|_| OpenError::Poisoned)?;
    Ok(map
        .entry(dir.to_path_buf())
        .or_insert_with(|| Arc::new(Mutex::new(opened)))
        .clone())
}

/// A store whose state on disk is unknown after a failed write: the next
/// connection opens it afresh.
fn forget_store(sh: &Inner, dir: &Path, store: &Arc<Mutex<StreamStore>>) {
    if let Ok(mut map) = sh.stores.lock() {
        if map.get(dir).is_some_and(|s| Arc::ptr_eq(s, store)) {
            map.remove(dir);
        }
    }
}
