//! The pipelined commit keeps the store's rules: a group's result (and so
//! its acknowledgement) comes only once its records and state are synced,
//! groups are committed in order, nothing queued behind a failed group is
//! written, and a power cut while a group syncs loses nothing answered.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::FutureExt;

use super::*;
use crate::collect::sink::Sink;
use crate::collect::store::Outcome;
use crate::disk::sim::SimFs;
use crate::disk::Fs;
use crate::rng::Rng;

const H: u64 = 3_600_000_000_000;
const DIR: &str = "/out/agent-1";
/// How long a test waits for what must happen (a deadline, not a timing).
const WAIT: Duration = Duration::from_secs(30);

/// The model filesystem, with syncs of hour files held at a gate when it
/// is closed: the test sees the sync begin and lets it go on.
struct Gated {
    sim: Arc<SimFs>,
    closed: AtomicBool,
    entered: Mutex<mpsc::Sender<()>>,
    go: Mutex<mpsc::Receiver<()>>,
}

impl Fs for Gated {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.sim.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.sim.list(dir)
    }
    fn len(&self, path: &Path) -> io::Result<Option<u64>> {
        self.sim.len(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.sim.is_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.sim.read(path)
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.sim.read_at(path, offset, buf)
    }
    fn append(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.sim.append(path, data)
    }
    fn write_at(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        self.sim.write_at(path, offset, data)
    }
    fn write_new(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.sim.write_new(path, data)
    }
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        self.sim.set_len(path, len)
    }
    fn sync(&self, path: &Path) -> io::Result<()> {
        let hour = path.extension().is_some_and(|e| e == "ndjson");
        if hour && self.closed.swap(false, Ordering::SeqCst) {
            let _ = self.entered.lock().unwrap().send(());
            let _ = self.go.lock().unwrap().recv_timeout(WAIT);
        }
        self.sim.sync(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.sim.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.sim.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.sim.remove(path)
    }
    fn restrict(&self, path: &Path) -> io::Result<()> {
        self.sim.restrict(path)
    }
    fn share_with_group(&self, path: &Path, gid: u32) -> io::Result<()> {
        self.sim.share_with_group(path, gid)
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.sim.remove_dir(dir)
    }
}

struct Rig {
    sim: Arc<SimFs>,
    gated: Arc<Gated>,
    entered: mpsc::Receiver<()>,
    go: mpsc::Sender<()>,
}

impl Rig {
    fn new() -> Rig {
        let sim = Arc::new(SimFs::new());
        sim.create_dir_all(Path::new("/out")).unwrap();
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let gated = Arc::new(Gated {
            sim: sim.clone(),
            closed: AtomicBool::new(false),
            entered: Mutex::new(entered_tx),
            go: Mutex::new(go_rx),
        });
        Rig {
            sim,
            gated,
            entered,
            go,
        }
    }

    fn sink(&self) -> FileSink {
        FileSink::new("/out".into(), self.gated.clone(), StoreFormat::Ndjson)
    }

    /// Holds the next sync of an hour file at the gate.
    fn close(&self) {
        self.gated.closed.store(true, Ordering::SeqCst);
    }

    /// Waits (in a blocking task) until a sync is held at the gate.
    async fn held(&self) {
        let entered = &self.entered;
        tokio::task::block_in_place(|| entered.recv_timeout(WAIT)).expect("a sync at the gate");
    }

    fn open(&self) -> StreamStore {
        let fs: crate::disk::SharedFs = self.sim.clone();
        StreamStore::open(fs, Path::new(DIR), StoreFormat::Ndjson).unwrap()
    }
}

/// Batch `seq`, two records in hour `seq`.
fn batch(seq: u64) -> (BatchInfo, Batch) {
    let recs = [
        crate::testkit::record(seq * 10, seq * H),
        crate::testkit::record(seq * 10 + 1, seq * H + 1),
    ];
    let info = BatchInfo {
        epoch: 9,
        seq,
        follows: seq - 1,
        source_drops: 0,
    };
    let b = Batch {
        seq,
        records: 2,
        block: vmflow_proto::encode_records(&recs, 1),
        source_drops: 0,
        follows: None,
    };
    (info, b)
}

fn group(seqs: std::ops::RangeInclusive<u64>) -> (Vec<BatchInfo>, Vec<Batch>) {
    seqs.map(batch).unzip()
}

/// The flow ids in the stream's hour files.
fn ids(fs: &dyn Fs) -> Vec<u64> {
    crate::testkit::hour_file_ids(fs, Path::new(DIR))
}

fn ids_of(seqs: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    seqs.flat_map(|s| [s * 10, s * 10 + 1]).collect()
}

fn written(w: &Written) -> usize {
    assert!(w.error.is_none());
    w.outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Written(_)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_group_is_prepared_while_one_syncs_and_answers_wait_for_the_sync() {
    let rig = Rig::new();
    let sink = rig.sink();
    let (mut s, held) = sink.open("agent-1", "", 9).await.unwrap();
    assert_eq!(held.state.last_seq, 0);
    rig.sim.clear_log();
    rig.close();
    let (i, b) = group(1..=2);
    let mut first = s.submit(i, b).await.unwrap();
    rig.held().await;
    // Group 1's records are appended, their sync has begun and not ended:
    // group 2 is taken (decoded, judged, formatted) meanwhile.
    let (i, b) = group(3..=4);
    let second = s.submit(i, b).await.unwrap();
    assert!(
        (&mut first).now_or_never().is_none(),
        "group 1 answered before its sync ended"
    );
    assert!(!rig.sim.log().iter().any(|l| l.contains("rename")));
    rig.go.send(()).unwrap();
    let w = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    assert_eq!(written(&w), 2);
    let w = tokio::time::timeout(WAIT, second).await.unwrap().unwrap();
    assert_eq!(written(&w), 2);
    drop(s);
    assert_eq!(rig.open().epoch(9).last_seq, 4);
    assert_eq!(ids(&*rig.sim), ids_of(1..=4));
}

/// A group queued behind one whose commit fails was prepared as if that
/// one were written: it is dropped, not written after the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_queued_behind_a_failed_group_is_written() {
    let rig = Rig::new();
    let sink = rig.sink();
    let (mut s, _) = sink.open("agent-1", "", 9).await.unwrap();
    let (i, b) = group(1..=1);
    let w = s.submit(i, b).await.unwrap().await.unwrap();
    assert_eq!(written(&w), 1);
    rig.close();
    let (i, b) = group(2..=3);
    let failing = s.submit(i, b).await.unwrap();
    rig.held().await;
    let (i, b) = group(4..=5);
    let behind = s.submit(i, b).await.unwrap();
    rig.sim.fail_next("sync", libc::EIO);
    rig.go.send(()).unwrap();
    let w = tokio::time::timeout(WAIT, failing).await.unwrap().unwrap();
    assert!(
        matches!(w.error, Some(Reject::Store { seq: 2, .. })),
        "the sync failed"
    );
    assert!(w.outcomes.is_empty(), "nothing of the group is answered");
    let r = tokio::time::timeout(WAIT, behind).await.unwrap();
    assert!(matches!(r, Err(ConnectionFailure::Abandoned)), "dropped");
    drop(s);
    assert_eq!(rig.open().epoch(9).last_seq, 1);
    assert_eq!(ids(&*rig.sim), ids_of(1..=1));
}

/// Power lost while a group syncs and the next one waits: everything
/// answered is held, the rest is whole batches or nothing, and the resend
/// completes the stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_a_sync_loses_nothing_answered() {
    for seed in 0..40 {
        let rig = Rig::new();
        let sink = rig.sink();
        let (mut s, _) = sink.open("agent-1", "", 9).await.unwrap();
        let (i, b) = group(1..=2);
        let w = s.submit(i, b).await.unwrap().await.unwrap();
        assert_eq!(written(&w), 2);
        rig.close();
        let (i, b) = group(3..=4);
        let mut syncing = s.submit(i, b).await.unwrap();
        rig.held().await;
        let (i, b) = group(5..=6);
        let _queued = s.submit(i, b).await.unwrap();
        assert!((&mut syncing).now_or_never().is_none());
        rig.sim.crash(&mut Rng::new(seed));
        let mut st = rig.open();
        let held = st.epoch(9).last_seq;
        assert!(held == 2 || held == 4, "seed {seed}: {held}");
        assert_eq!(ids(&*rig.sim), ids_of(1..=held), "seed {seed}");
        // The agent resends everything not answered.
        let recs: Vec<Vec<vmflow_proto::FlowRecord>> = (3..=6)
            .map(|q| vmflow_proto::decode_records(&batch(q).1.block).unwrap())
            .collect();
        let again: Vec<(BatchInfo, &[vmflow_proto::FlowRecord])> = (3..=6)
            .zip(&recs)
            .map(|(q, r)| (batch(q).0, r.as_slice()))
            .collect();
        st.write_batches(&again).unwrap();
        assert_eq!(ids(&*rig.sim), ids_of(1..=6), "seed {seed}");
        // Let the old commit go on (into the crashed model): nothing checked.
        let _ = rig.go.send(());
    }
}

/// Groups that queue while a commit syncs go into the next commit together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_queued_behind_a_sync_share_the_next_commit() {
    let rig = Rig::new();
    let sink = rig.sink();
    let (mut s, _) = sink.open("agent-1", "", 9).await.unwrap();
    rig.sim.clear_log();
    rig.close();
    let (i, b) = group(1..=1);
    let first = s.submit(i, b).await.unwrap();
    rig.held().await;
    let mut queued = Vec::new();
    for q in 2..=4 {
        let (i, b) = group(q..=q);
        queued.push(s.submit(i, b).await.unwrap());
    }
    rig.go.send(()).unwrap();
    let w = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    assert_eq!(written(&w), 1);
    for p in queued {
        let w = tokio::time::timeout(WAIT, p).await.unwrap().unwrap();
        assert_eq!(written(&w), 1);
    }
    let renames = rig
        .sim
        .log()
        .iter()
        .filter(|l| l.starts_with("rename"))
        .count();
    assert_eq!(renames, 2, "{:?}", rig.sim.log());
    drop(s);
    assert_eq!(rig.open().epoch(9).last_seq, 4);
    assert_eq!(ids(&*rig.sim), ids_of(1..=4));
}
