//! The file back end (the default): each agent stream is a [`StreamStore`]
//! under the output directory, opened once and shared by the stream's
//! connections. `vmflow sink` writes through the same back end.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use vmflow_proto::Batch;

use super::error::{ConnectionFailure, OpenError, StoreFailure};
use super::names;
use super::sink::{
    decode_group, BoxFuture, Held, Opened, Pending, Reject, Sink, StreamSink, Written,
};
use super::store::{prepare, BatchInfo, EpochState, Prepared, StoreFormat, StreamStore};
use crate::disk::SharedFs;

pub struct FileSink {
    inner: Arc<Inner>,
}

struct Inner {
    out: PathBuf,
    fs: SharedFs,
    /// How new records are written.
    format: StoreFormat,
    stores: Mutex<HashMap<PathBuf, Arc<Mutex<StreamStore>>>>,
    /// One store is opened at a time: two connections of one stream must
    /// not both create it.
    opening: tokio::sync::Mutex<()>,
    /// Groups decoded and formatted at once (the cores' work).
    decoders: Semaphore,
    /// Groups between being decoded and committed, across all connections
    /// (each holds its records and NDJSON: this bounds the memory).
    groups: Arc<Semaphore>,
    /// NDJSON buffers kept between groups.
    buffers: Mutex<Vec<Vec<u8>>>,
}

/// Groups in flight at once, at most; with at most 4,096 records each
/// (about 2.5 MB decoded and formatted) that is about 40 MB.
const GROUPS: usize = 16;

impl Inner {
    fn take_buffers(&self) -> Vec<Vec<u8>> {
        match self.buffers.lock() {
            Ok(mut b) => {
                let keep = b.len().saturating_sub(2);
                b.split_off(keep)
            }
            Err(_) => Vec::new(),
        }
    }

    /// Keeps buffers for later groups: allocating megabytes of fresh pages
    /// for every group costs more than formatting into them.
    fn keep_buffers(&self, bufs: Vec<Vec<u8>>) {
        if let Ok(mut b) = self.buffers.lock() {
            b.extend(bufs);
            b.truncate(GROUPS);
        }
    }
}

impl FileSink {
    pub fn new(out: PathBuf, fs: SharedFs, format: StoreFormat) -> FileSink {
        FileSink {
            inner: Arc::new(Inner {
                out,
                fs,
                format,
                stores: Mutex::default(),
                opening: tokio::sync::Mutex::new(()),
                decoders: Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
                ),
                groups: Arc::new(Semaphore::new(GROUPS)),
                buffers: Mutex::default(),
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
            let (held, predicted) = {
                let st = store.lock().map_err(|_| OpenError::Poisoned)?;
                let held = Held {
                    state: st.epoch(epoch),
                    new_epoch: st.is_new_epoch(epoch),
                    epochs: st.epochs(),
                };
                (held, st.states())
            };
            let (jobs, queue) = mpsc::channel(QUEUE);
            tokio::spawn(commit_worker(self.inner.clone(), dir, store, queue));
            let s: Box<dyn StreamSink> = Box::new(FileStream {
                inner: self.inner.clone(),
                predicted,
                stopped: false,
                jobs,
            });
            Ok((s, held))
        })
    }
}

/// One connection's stream. Groups are prepared (decoded, judged,
/// formatted) as they are submitted, on the connection's turn, and
/// committed in order by the stream's commit worker: the next group is
/// prepared while the one before it is written and synced.
struct FileStream {
    inner: Arc<Inner>,
    /// The stream's epochs as the groups submitted so far leave them.
    predicted: BTreeMap<u64, EpochState>,
    /// A group submitted ended in a refusal or a batch that does not
    /// decode: nothing after it is written.
    stopped: bool,
    jobs: mpsc::Sender<Job>,
}

/// A prepared group on its way to the commit worker.
struct Job {
    prepared: Prepared,
    /// The group's first batch, named by a failed commit.
    first: u64,
    /// Why the group ends early (a batch that does not decode).
    error: Option<Reject>,
    /// The group's share of the collector's memory for groups in flight.
    memory: OwnedSemaphorePermit,
    done: oneshot::Sender<Result<Written, ConnectionFailure>>,
}

/// Groups waiting for the commit worker, per connection (the connection
/// keeps fewer in flight).
const QUEUE: usize = 4;

impl StreamSink for FileStream {
    fn write(
        &mut self,
        infos: Vec<BatchInfo>,
        batches: Vec<Batch>,
    ) -> BoxFuture<'_, Result<Written, ConnectionFailure>> {
        Box::pin(async move { self.submit(infos, batches).await?.await })
    }

    fn submit(
        &mut self,
        infos: Vec<BatchInfo>,
        batches: Vec<Batch>,
    ) -> BoxFuture<'_, Result<Pending, ConnectionFailure>> {
        Box::pin(async move {
            if self.stopped {
                let nothing = Written {
                    outcomes: Vec::new(),
                    error: None,
                    took: None,
                    synced: None,
                };
                return Ok(Box::pin(std::future::ready(Ok(nothing))) as Pending);
            }
            let first = batches.first().map_or(0, |b| b.seq);
            let memory = self
                .inner
                .groups
                .clone()
                .acquire_owned()
                .await
                .map_err(ConnectionFailure::Decoders)?;
            let decoding = self
                .inner
                .decoders
                .acquire()
                .await
                .map_err(ConnectionFailure::Decoders)?;
            let mut states = std::mem::take(&mut self.predicted);
            let pool = self.inner.clone();
            let (prepared, error, states) = tokio::task::spawn_blocking(move || {
                let (decoded, error) = decode_group(&batches);
                drop(batches);
                let mut infos = infos;
                infos.truncate(decoded.len());
                let mut bufs = pool.take_buffers();
                let p = prepare(&mut states, infos, decoded, &mut bufs, pool.format);
                pool.keep_buffers(bufs);
                (p, error, states)
            })
            .await
            .map_err(ConnectionFailure::Task)?;
            drop(decoding);
            self.predicted = states;
            self.stopped = prepared.refuses() || error.is_some();
            let (done, result) = oneshot::channel();
            let job = Job {
                prepared,
                first,
                error,
                memory,
                done,
            };
            self.jobs
                .send(job)
                .await
                .map_err(|_| ConnectionFailure::Abandoned)?;
            Ok(
                Box::pin(async move { result.await.unwrap_or(Err(ConnectionFailure::Abandoned)) })
                    as Pending,
            )
        })
    }
}

/// Commits a stream's groups in the order they were submitted: all the
/// groups that queued while the commit before them ran go into the next
/// commit together (one set of syncs). After a commit that fails, the
/// groups queued behind it (prepared as if it had been written) are
/// dropped unwritten.
async fn commit_worker(
    inner: Arc<Inner>,
    dir: PathBuf,
    store: Arc<Mutex<StreamStore>>,
    mut jobs: mpsc::Receiver<Job>,
) {
    while let Some(job) = jobs.recv().await {
        let mut queued = vec![job];
        while let Ok(j) = jobs.try_recv() {
            queued.push(j);
        }
        let (st, pool) = (store.clone(), inner.clone());
        let r = tokio::task::spawn_blocking(move || commit_jobs(&st, &pool, queued)).await;
        let (answers, broken) = match r {
            Ok(r) => r,
            // The jobs' answers are gone with the task: their connection
            // sees them abandoned.
            Err(e) => {
                tracing::error!("{}: a commit did not finish: {e}", dir.display());
                break;
            }
        };
        if broken {
            forget_store(&inner, &dir, &store);
        }
        let mut failed = false;
        for (done, r) in answers {
            failed |= !matches!(&r, Ok(w) if !matches!(w.error, Some(Reject::Store { .. })));
            let _ = done.send(r);
        }
        if failed {
            break;
        }
    }
}

/// A failed commit: the first group says why, the others are abandoned.
fn failed(why: StoreFailure, took: Option<std::time::Duration>, rest: Vec<JobRest>) -> Vec<Answer> {
    let mut why = Some(why);
    rest.into_iter()
        .map(|(seq, _, _, done)| {
            let r = match why.take() {
                Some(why) => Ok(Written {
                    outcomes: Vec::new(),
                    error: Some(Reject::Store { seq, why }),
                    took,
                    synced: None,
                }),
                None => Err(ConnectionFailure::Abandoned),
            };
            (done, r)
        })
        .collect()
}

/// A job without its prepared group: its first batch, decoding error,
/// memory and answer.
type JobRest = (
    u64,
    Option<Reject>,
    OwnedSemaphorePermit,
    oneshot::Sender<Result<Written, ConnectionFailure>>,
);

type Answer = (
    oneshot::Sender<Result<Written, ConnectionFailure>>,
    Result<Written, ConnectionFailure>,
);

/// Writes prepared groups with one commit: each group's answer, and
/// whether the store must be reopened. When the commit fails, the first
/// group says why and the others are abandoned.
fn commit_jobs(store: &Mutex<StreamStore>, inner: &Inner, jobs: Vec<Job>) -> (Vec<Answer>, bool) {
    let mut prepared = Vec::with_capacity(jobs.len());
    let mut rest: Vec<JobRest> = Vec::with_capacity(jobs.len());
    for j in jobs {
        prepared.push(j.prepared);
        rest.push((j.first, j.error, j.memory, j.done));
    }
    let mut st = match store.lock() {
        Ok(st) => st,
        Err(_) => {
            return (failed(StoreFailure::Poisoned, None, rest), true);
        }
    };
    let mut bufs = Vec::new();
    // Syncs made before this commit (opening the store) are not its own.
    st.take_synced();
    let started = std::time::Instant::now();
    let r = st.commit_all(prepared, &mut bufs);
    let took = Some(started.elapsed());
    let synced = Some(st.take_synced());
    inner.keep_buffers(bufs);
    match r {
        Ok(outcomes) => {
            let answers = rest
                .into_iter()
                .zip(outcomes)
                .enumerate()
                .map(|(i, ((_, error, _, done), outcomes))| {
                    // The commit's latency is counted once.
                    let (took, synced) = if i == 0 { (took, synced) } else { (None, None) };
                    let w = Written {
                        outcomes,
                        error,
                        took,
                        synced,
                    };
                    (done, Ok(w))
                })
                .collect();
            (answers, false)
        }
        Err(e) => (failed(e.into(), took, rest), st.is_broken()),
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
    let (fs, format) = (sh.fs.clone(), sh.format);
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
        StreamStore::open(fs, &d, format).map_err(OpenError::Store)
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

#[cfg(test)]
mod tests;
