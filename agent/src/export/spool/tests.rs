use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::disk::sim::SimFs;
use crate::disk::Fs;
use crate::rng::Rng;

fn block(i: u64) -> Vec<u8> {
    (0..(100 + i % 50)).map(|k| (k ^ i) as u8).collect()
}

fn sim() -> (Arc<SimFs>, SharedFs) {
    let fs = Arc::new(SimFs::new());
    let shared: SharedFs = fs.clone();
    (fs, shared)
}

const DIR: &str = "/spool";

fn open(fs: &SharedFs, max: u64) -> Spool {
    Spool::open(fs.clone(), Path::new(DIR), max).unwrap()
}

fn segments(fs: &SimFs) -> Vec<String> {
    let mut v: Vec<String> = fs
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("seg-"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_read_ack_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let fs = disk::real();
    let mut s = Spool::open(fs.clone(), dir.path(), 1 << 20).unwrap();
    for i in 1..=100u64 {
        assert_eq!(s.append(i as u32, i * 3, &block(i)).unwrap(), i);
    }
    // Nothing is sendable before it is durable.
    assert_eq!(s.next_after(0), None);
    s.sync_now().unwrap();
    assert_eq!(
        s.read(42).unwrap(),
        Some(Stored {
            records: 42,
            source_drops: 126,
            block: block(42)
        })
    );
    assert_eq!(s.ack(60), 60);
    assert_eq!(s.ack(60), 0);
    assert_eq!(s.read(42).unwrap(), None);
    assert_eq!(s.pending_after(0), (61..=100).collect::<Vec<_>>());
    assert_eq!(s.next_after(0), Some(61));
    assert_eq!(s.next_after(70), Some(71));
    assert_eq!(s.next_after(100), None);
    let epoch = s.epoch();
    drop(s);
    let mut s = Spool::open(fs.clone(), dir.path(), 1 << 20).unwrap();
    assert_eq!(s.epoch(), epoch);
    assert!(s.acked() <= 60);
    s.collector_holds(60);
    assert_eq!(s.pending_after(0), (61..=100).collect::<Vec<_>>());
    assert_eq!(s.read(77).unwrap().unwrap().records, 77);
    assert_eq!(s.append(1, 0, b"x").unwrap(), 101);
    assert_eq!(s.end_record(), (1..=100).sum::<u64>() + 1);
    assert_eq!(s.ack(101), 41);
    assert_eq!(s.stats().batches, 0);
    drop(s);
    // Sequence numbers and the stream position survive an empty spool.
    let mut s = Spool::open(fs, dir.path(), 1 << 20).unwrap();
    assert_eq!(s.end_record(), (1..=100).sum::<u64>() + 1);
    assert_eq!(s.append(1, 0, b"y").unwrap(), 102);
    assert_eq!(s.epoch(), epoch);
}

#[test]
fn a_torn_tail_is_cut_and_its_number_given_out_again() {
    let (sfs, fs) = sim();
    let mut s = open(&fs, 1 << 20);
    for i in 1..=10u64 {
        s.append(1, 0, &block(i)).unwrap();
    }
    drop(s);
    let seg = Path::new(DIR).join(&segments(&sfs)[0]);
    let len = fs.len(&seg).unwrap().unwrap();
    fs.set_len(&seg, len - 7).unwrap();
    let mut s = open(&fs, 1 << 20);
    assert_eq!(s.pending_after(0), (1..=9).collect::<Vec<_>>());
    assert!(s.stats().recovered_tail_bytes > 0);
    assert_eq!(s.stats().corrupt_batches, 0);
    // Safe: a batch is sent only once durable, so a torn one never reached
    // the collector.
    assert_eq!(s.append(1, 0, b"z").unwrap(), 10);
}

#[test]
fn a_full_spool_drops_the_oldest_and_counts_it() {
    let (_, fs) = sim();
    let mut s = open(&fs, 1 << 16);
    let big = vec![7u8; 1000];
    for _ in 0..200 {
        s.append(10, 0, &big).unwrap();
    }
    let st = s.stats();
    assert!(st.bytes <= 1 << 16, "{st:?}");
    assert!(st.dropped_batches > 0);
    assert_eq!(st.dropped_records, st.dropped_batches * 10);
    assert_eq!(st.batches + st.dropped_batches, 200);
    let pending = s.pending_after(0);
    assert_eq!(*pending.last().unwrap(), 200);
    assert_eq!(pending.len() as u64, st.batches);
    // The ledger knows where the dropped batches ended.
    drop(s);
    let s = open(&fs, 1 << 16);
    assert_eq!(s.end_record(), 2000);
    assert_eq!(s.pending_after(0), pending);
}

/// Issue 10 item 2: a batch the disk refused keeps its record positions, so
/// the batches after it (and a restart's skip count) do not shift.
#[test]
fn a_failed_append_keeps_positions() {
    let (sfs, fs) = sim();
    let mut s = open(&fs, 1 << 20);
    s.append(5, 0, &block(1)).unwrap();
    sfs.set_capacity(Some(sfs.used() + 20));
    assert!(s.append(7, 0, &block(2)).is_err());
    assert!(s.append(9, 0, &block(3)).is_err());
    assert_eq!(s.stats().failed_batches, 2);
    assert_eq!(s.stats().failed_records, 16);
    sfs.set_capacity(None);
    assert_eq!(s.append(11, 0, &block(4)).unwrap(), 2);
    assert_eq!(s.end_record(), 5 + 7 + 9 + 11);
    s.sync_now().unwrap();
    drop(s);
    let s = open(&fs, 1 << 20);
    assert_eq!(
        s.end_record(),
        32,
        "a restart skips every record handed over"
    );
    // No half entry was left behind by the failures.
    assert_eq!(s.stats().corrupt_batches, 0);
    assert_eq!(s.pending_after(0), vec![1, 2]);
}

/// Issue 10 item 3: acknowledged segments are freed on a full disk, with no
/// temporary file left behind.
#[test]
fn acks_free_space_on_a_full_disk() {
    let (sfs, fs) = sim();
    let mut s = open(&fs, 1 << 20);
    for i in 1..=2_000u64 {
        s.append(1, 0, &block(i)).unwrap();
    }
    s.sync_now().unwrap();
    let before = segments(&sfs).len();
    assert!(before > 3);
    sfs.set_capacity(Some(sfs.used()));
    assert!(s.append(1, 0, &block(0)).is_err());
    assert_eq!(s.ack(1_500), 1_500);
    assert!(segments(&sfs).len() < before);
    assert!(sfs.used() < (1 << 20) / 2, "{}", sfs.used());
    assert_eq!(s.stats().ledger_errors, 0);
    assert!(!fs
        .list(Path::new(DIR))
        .unwrap()
        .iter()
        .any(|n| n.ends_with(".tmp")));
    // With room again, appends go on.
    assert_eq!(s.append(1, 0, &block(1)).unwrap(), 2_001);
}

/// Issue 10 item 6: one flipped byte in an older segment loses that batch
/// only, counted and logged, not the rest of the segment.
#[test]
fn a_damaged_entry_costs_only_itself() {
    let (sfs, fs) = sim();
    let mut s = open(&fs, 1 << 20);
    for i in 1..=1_000u64 {
        s.append(100, 0, &block(i)).unwrap();
    }
    s.sync_now().unwrap();
    let segs = segments(&sfs);
    assert!(segs.len() >= 2);
    let first = Path::new(DIR).join(&segs[0]);
    let third = s.segments[0].entries[2];
    drop(s);
    sfs.flip(&first, third.offset + 40 + 10);
    let mut s = open(&fs, 1 << 20);
    let want: Vec<u64> = (1..=1_000).filter(|&q| q != 3).collect();
    assert_eq!(s.pending_after(0), want);
    // Lost only once the collector turns out not to hold it.
    assert_eq!(s.stats().corrupt_batches, 0);
    s.collector_holds(2);
    s.declare_gap(2, 4);
    assert_eq!(s.stats().corrupt_batches, 1);
    assert_eq!(s.stats().corrupt_records, 100);
    // Damage found when reading back costs that batch only, too.
    let second = Path::new(DIR).join(&segs[1]);
    let e = s.segments[1].entries[0];
    sfs.flip(&second, e.offset + 45);
    assert_eq!(s.read(e.seq).unwrap(), None);
    assert_eq!(s.stats().corrupt_batches, 2);
    assert!(s.read(e.seq + 1).unwrap().is_some());
    drop(s);
    let s = open(&fs, 1 << 20);
    assert_eq!(s.pending_after(0).len(), 998);
}

/// The orderings exactness rests on: entries are synced before they can be
/// sent, and the ledger is synced before a segment is removed.
#[test]
fn syncs_come_before_sends_and_ledger_before_removal() {
    let (sfs, fs) = sim();
    let mut s = open(&fs, 1 << 18);
    for i in 1..=1_000u64 {
        s.append(1, 0, &block(i)).unwrap();
    }
    assert_eq!(s.next_after(0), None);
    sfs.clear_log();
    let job = s.sync_job().unwrap();
    job.run().unwrap();
    s.synced_through(job.upto);
    let log = sfs.log();
    for seg in segments(&sfs) {
        assert!(log.contains(&format!("sync {DIR}/{seg}")), "{log:?}");
    }
    // Then the ledger's synced watermark, last: only then may they be sent.
    let dir = log.iter().position(|l| l == &format!("sync_dir {DIR}"));
    assert!(dir.unwrap() < log.len() - 1, "{log:?}");
    assert_eq!(log.last().unwrap(), &format!("sync {DIR}/ledger"));
    assert_eq!(s.next_after(0), Some(1));
    sfs.clear_log();
    s.ack(700);
    let log = sfs.log();
    let ledger = log.iter().position(|l| l == &format!("sync {DIR}/ledger"));
    let removal = log.iter().position(|l| l.starts_with("remove"));
    assert!(ledger.unwrap() < removal.unwrap(), "{log:?}");
}

/// Issue 10 item 5: after power loss at any point, the spool opens (never
/// "bad state"), keeps its epoch, never goes back before what the
/// collector acknowledged, and its position covers every durable batch.
#[test]
fn power_loss_never_loses_the_position() {
    for seed in 0..300 {
        let (sfs, fs) = sim();
        let mut dice = Rng::new(seed);
        let mut s = open(&fs, 1 << 17);
        let epoch = s.epoch();
        let mut durable_end = 0;
        let mut acked = 0;
        for i in 1..=(200 + dice.below(400)) {
            s.append(3, 0, &block(i)).unwrap();
            if dice.below(10) == 0 {
                s.sync_now().unwrap();
                durable_end = s.end_record();
            }
            if dice.below(7) == 0 && s.next_after(acked).is_some() {
                // The collector can only hold what was sent: durable batches.
                acked = s.synced;
                s.ack(acked);
            }
        }
        sfs.crash(&mut dice);
        let mut s = open(&fs, 1 << 17);
        assert_eq!(s.epoch(), epoch, "seed {seed}");
        assert!(s.end_record() >= durable_end, "seed {seed}");
        assert!(s.end_record() >= acked * 3, "seed {seed}");
        // It never forgets a batch the collector holds.
        assert!(s.next_seq > acked, "seed {seed}");
        s.collector_holds(acked);
        assert!(s.pending_after(0).iter().all(|&q| q > acked), "seed {seed}");
        assert_eq!(s.stats().corrupt_batches, 0, "seed {seed}");
    }
}

#[test]
fn a_spool_of_the_old_format_continues_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let fs = disk::real();
    // Two entries of the old format (no segment header), then the old state.
    let mut seg = Vec::new();
    for (seq, first) in [(7u64, 600u64), (8, 610)] {
        seg.extend_from_slice(&segment::encode_entry(seq, first, 0, 10, &block(seq)));
        seg.extend_from_slice(&block(seq));
    }
    std::fs::write(dir.path().join("seg-00000000000000000007.spool"), &seg).unwrap();
    std::fs::write(dir.path().join("state"), "6 600\n").unwrap();
    let mut s = Spool::open(fs.clone(), dir.path(), 1 << 20).unwrap();
    assert_eq!(s.epoch(), 0);
    assert_eq!(s.pending_after(0), vec![7, 8]);
    assert_eq!(s.end_record(), 620);
    assert_eq!(s.read(8).unwrap().unwrap().block, block(8));
    assert!(!dir.path().join("state").exists());
    assert_eq!(s.append(1, 0, b"n").unwrap(), 9);
    drop(s);
    let s = Spool::open(fs, dir.path(), 1 << 20).unwrap();
    assert_eq!(s.epoch(), 0);
    assert_eq!(s.pending_after(0), vec![7, 8, 9]);
}

#[test]
fn a_damaged_or_missing_ledger_is_rebuilt_from_the_segments() {
    for damage in ["flip", "empty", "remove"] {
        let (sfs, fs) = sim();
        let mut s = open(&fs, 1 << 20);
        let epoch = s.epoch();
        for i in 1..=50u64 {
            s.append(2, 0, &block(i)).unwrap();
        }
        s.sync_now().unwrap();
        s.ack(20);
        drop(s);
        let ledger = Path::new(DIR).join("ledger");
        match damage {
            "flip" => {
                sfs.flip(&ledger, 100);
                sfs.flip(&ledger, 612);
            }
            "empty" => fs.set_len(&ledger, 0).unwrap(),
            _ => fs.remove(&ledger).unwrap(),
        }
        let mut s = open(&fs, 1 << 20);
        assert_eq!(s.epoch(), epoch, "{damage}");
        s.collector_holds(20);
        assert_eq!(
            s.pending_after(0),
            (21..=50).collect::<Vec<_>>(),
            "{damage}"
        );
        assert_eq!(s.end_record(), 100);
    }
}

#[test]
fn a_new_stream_needs_an_empty_spool() {
    let (_, fs) = sim();
    let mut s = open(&fs, 1 << 20);
    let a = StreamId {
        text: "files: a".into(),
        fingerprint: 1,
    };
    let b = StreamId {
        text: "files: b".into(),
        fingerprint: 2,
    };
    s.set_identity(&a).unwrap();
    s.append(4, 0, b"r").unwrap();
    let e = s.new_stream(&b).unwrap_err().to_string();
    assert!(e.contains("files: a") && e.contains("files: b"), "{e}");
    s.sync_now().unwrap();
    s.ack(1);
    let epoch = s.epoch();
    s.new_stream(&b).unwrap();
    assert_ne!(s.epoch(), epoch);
    assert_eq!(s.end_record(), 0);
    assert_eq!(s.append(1, 0, b"q").unwrap(), 1);
    drop(s);
    let s = open(&fs, 1 << 20);
    assert_eq!(s.identity(), b);
    assert_eq!(s.pending_after(0), vec![1]);
}

#[test]
fn the_oldest_waiting_batch_is_the_first_unacknowledged() {
    let (_sim, fs) = sim();
    let mut s = open(&fs, 1 << 20);
    assert_eq!(s.oldest_waiting_since(), None);
    let before = std::time::SystemTime::now();
    s.append(1, 0, &block(1)).unwrap();
    let first = s.oldest_waiting_since().unwrap();
    assert!(first >= before);
    s.append(1, 0, &block(2)).unwrap();
    // Still the first one's time while it waits.
    assert_eq!(s.oldest_waiting_since(), Some(first));
    s.sync_now().unwrap();
    s.ack(1);
    let second = s.oldest_waiting_since().unwrap();
    assert!(second >= first);
    s.ack(2);
    assert_eq!(s.oldest_waiting_since(), None);
    // Batches an earlier run left have waited at least since their segment
    // was last written, not since this run opened the spool.
    s.append(1, 0, &block(3)).unwrap();
    s.sync_now().unwrap();
    let written = std::time::SystemTime::now();
    drop(s);
    let opened = std::time::SystemTime::now();
    let s = open(&fs, 1 << 20);
    let since = s.oldest_waiting_since().unwrap();
    assert!(since >= second && since <= written, "{since:?}");
    assert!(since < opened);
}

#[test]
fn where_the_filesystem_keeps_no_times_a_left_batch_waits_since_the_spool_opened() {
    let (sim, fs) = sim();
    let mut s = open(&fs, 1 << 20);
    s.append(1, 0, &block(1)).unwrap();
    s.sync_now().unwrap();
    drop(s);
    sim.forget_times();
    let opened = std::time::SystemTime::now();
    let s = open(&fs, 1 << 20);
    assert!(s.oldest_waiting_since().unwrap() >= opened);
}
