use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::disk::sim::SimFs;
use crate::disk::Fs;
use crate::rng::Rng;

const H: u64 = 3_600_000_000_000;

fn rec(first_ns: u64) -> FlowRecord {
    crate::testkit::record(first_ns, first_ns)
}

fn batch(seq: u64) -> BatchInfo {
    BatchInfo {
        epoch: 9,
        seq,
        follows: seq - 1,
        source_drops: 0,
    }
}

const DIR: &str = "/out/agent-1";

fn sim() -> (Arc<SimFs>, SharedFs) {
    let fs = Arc::new(SimFs::new());
    fs.create_dir_all(Path::new("/out")).unwrap();
    let shared: SharedFs = fs.clone();
    (fs, shared)
}

/// Every line of every hour file: valid JSON, as flow ids.
fn lines(fs: &dyn Fs) -> Vec<u64> {
    crate::testkit::hour_file_ids(fs, Path::new(DIR))
}

fn open(fs: &SharedFs) -> Result<StreamStore, StoreError> {
    open_as(fs, StoreFormat::Ndjson)
}

fn open_as(fs: &SharedFs, f: StoreFormat) -> Result<StreamStore, StoreError> {
    StreamStore::open(fs.clone(), Path::new(DIR), f)
}

/// The model tests run for both ways of writing records.
const FORMATS: [StoreFormat; 2] = [StoreFormat::Ndjson, StoreFormat::Blocks];

/// The name of the hour file records of `ns` go to.
fn hour_name(f: StoreFormat, ns: u64) -> String {
    match f {
        StoreFormat::Ndjson => hour_file(ns),
        StoreFormat::Blocks => hour_blocks_file(ns),
    }
}

fn dec(records: Vec<FlowRecord>) -> Decoded {
    Decoded {
        records,
        ..Decoded::default()
    }
}

/// Batch `seq`: a record and an observation in hour `seq`.
fn observed(seq: u64) -> Decoded {
    let line = format!(
        "{{\"kind\":\"scan\",\"first_ns\":{},\"n\":{seq}}}\n",
        seq * H
    );
    Decoded {
        records: vec![rec(seq * H)],
        observations: line.into_bytes(),
        hours: vec![seq],
    }
}

fn write_observed(
    s: &mut StreamStore,
    seq: u64,
    f: StoreFormat,
) -> Result<Vec<Outcome>, StoreError> {
    let mut states = s.states();
    let mut pool = Vec::new();
    let p = prepare(
        &mut states,
        vec![batch(seq)],
        vec![observed(seq)],
        &mut pool,
        f,
    );
    s.commit(p, &mut pool)
}

/// The `n` of every line of every observations file.
fn observations(fs: &dyn Fs) -> Vec<u64> {
    let dir = Path::new(DIR).join("observations");
    let mut ns = Vec::new();
    for n in fs.list(&dir).unwrap_or_default() {
        let text = String::from_utf8(fs.read(&dir.join(n)).unwrap()).unwrap();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("a whole JSON line");
            ns.push(v["n"].as_u64().unwrap());
        }
    }
    ns.sort_unstable();
    ns
}

/// Observations go to `observations/` by their own hour, with their batch:
/// power loss at any point of a write leaves exactly the observations of
/// the batches held, and the resend of the one in flight adds its own once.
#[test]
fn observations_are_held_exactly_with_their_batch() {
    for f in FORMATS {
        for seed in 0..200 {
            let (sfs, fs) = sim();
            let mut dice = Rng::new(seed);
            let mut s = open_as(&fs, f).unwrap();
            let n = 1 + dice.below(4);
            for seq in 1..=n {
                write_observed(&mut s, seq, f).unwrap();
            }
            let next = n + 1;
            sfs.fail_next(
                ["append", "sync", "sync_dir", "write_new", "rename", "x"][dice.below(6) as usize],
                libc::EIO,
            );
            let _ = write_observed(&mut s, next, f);
            sfs.crash(&mut dice);
            let mut s = open_as(&fs, f).unwrap_or_else(|e| panic!("{f:?} seed {seed}: {e}"));
            let held = s.epoch(9).last_seq;
            assert!(held == n || held == next, "seed {seed}: {held}");
            let want: Vec<u64> = (1..=held).collect();
            assert_eq!(observations(&*fs), want, "seed {seed}");
            let hours: Vec<u64> = want.iter().map(|q| q * H).collect();
            assert_eq!(lines(&*fs), hours, "seed {seed}");
            // Resent, and resent again: once.
            for _ in 0..2 {
                write_observed(&mut s, next, f).unwrap();
            }
            assert_eq!(
                observations(&*fs),
                (1..=next).collect::<Vec<_>>(),
                "seed {seed}"
            );
            let names = fs.list(&Path::new(DIR).join("observations")).unwrap();
            assert!(names.contains(&hour_file(next * H)), "{names:?}");
        }
    }
}

#[test]
fn hour_names() {
    assert_eq!(hour_file(0), "1970-01-01T00.ndjson");
    assert_eq!(hour_file(1_760_000_000_000_000_000), "2025-10-09T08.ndjson");
    assert_eq!(hour_file(951_782_400_000_000_000), "2000-02-29T00.ndjson");
}

#[test]
fn duplicates_and_interrupted_batches_are_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let fs = disk::real();
    let d = dir.path().join("a");
    let mut s = StreamStore::open(fs.clone(), &d, StoreFormat::Ndjson).unwrap();
    let w = |s: &mut StreamStore, seq, r: &[FlowRecord]| s.write_batch(batch(seq), r).unwrap();
    assert!(matches!(
        w(&mut s, 1, &[rec(H), rec(2 * H)]),
        Outcome::Written(_)
    ));
    assert_eq!(w(&mut s, 1, &[rec(H)]), Outcome::Duplicate);
    let mut b2 = batch(2);
    b2.source_drops = 7;
    assert!(matches!(
        s.write_batch(b2, &[rec(H + 1)]).unwrap(),
        Outcome::Written(_)
    ));
    // A crash after appending batch 3 but before its commit.
    let f = d.join(hour_file(H));
    let before = std::fs::read(&f).unwrap();
    let mut junk = before.clone();
    junk.extend_from_slice(b"{\"partial\":");
    std::fs::write(&f, &junk).unwrap();
    let mut s = StreamStore::open(fs, &d, StoreFormat::Ndjson).unwrap();
    assert_eq!(s.epoch(9).last_seq, 2);
    assert_eq!(s.epoch(9).source_drops, 7);
    assert_eq!(std::fs::read(&f).unwrap(), before);
    assert!(matches!(w(&mut s, 3, &[rec(H + 2)]), Outcome::Written(_)));
    assert_eq!(std::fs::read_to_string(&f).unwrap().lines().count(), 3);
}

/// Issue 10 item 1: a full disk refuses the batch and leaves every file at
/// its committed length; the retry after space returns writes it once.
#[test]
fn a_full_disk_leaves_no_partial_batch() {
    for f in FORMATS {
        let (sfs, fs) = sim();
        let mut s = open_as(&fs, f).unwrap();
        let recs = |from: u64| -> Vec<FlowRecord> {
            (from..from + 50)
                .map(|i| rec(H + i * 1_000_000_000 * 60))
                .collect()
        };
        assert!(matches!(
            s.write_batch(batch(1), &recs(0)).unwrap(),
            Outcome::Written(_)
        ));
        // Room for part of the next batch only (it also spans two hours).
        let room = match f {
            StoreFormat::Ndjson => 3_000,
            StoreFormat::Blocks => 100,
        };
        sfs.set_capacity(Some(sfs.used() + room));
        for _ in 0..3 {
            let e = s.write_batch(batch(2), &recs(50)).unwrap_err();
            assert!(e.to_string().contains("No space left"), "{e}");
            assert!(!s.is_broken());
            assert_eq!(
                lines(&*fs),
                (0..50).map(|i| H + i * 60_000_000_000).collect::<Vec<_>>()
            );
        }
        sfs.set_capacity(None);
        assert!(matches!(
            s.write_batch(batch(2), &recs(50)).unwrap(),
            Outcome::Written(_)
        ));
        let want: Vec<u64> = (0..100).map(|i| H + i * 60_000_000_000).collect();
        assert_eq!(lines(&*fs), want);
        drop(s);
        let s = open_as(&fs, f).unwrap();
        assert_eq!(s.epoch(9).last_seq, 2);
        assert_eq!(lines(&*fs), want);
    }
}

/// A commit that fails at any step leaves the store consistent: refused
/// now, written once by the retry, and intact after a reopen.
#[test]
fn every_failing_step_is_undone() {
    for f in FORMATS {
        for step in ["append", "sync", "sync_dir", "write_new", "rename"] {
            let (sfs, fs) = sim();
            let mut s = open_as(&fs, f).unwrap();
            s.write_batch(batch(1), &[rec(H)]).unwrap();
            sfs.fail_next(step, libc::EIO);
            assert!(s.write_batch(batch(2), &[rec(2 * H)]).is_err(), "{step}");
            if s.is_broken() {
                s = open_as(&fs, f).unwrap();
            }
            let r = s.write_batch(batch(2), &[rec(2 * H)]).unwrap();
            assert!(
                matches!(r, Outcome::Written(_) | Outcome::Duplicate),
                "{step}: {r:?}"
            );
            drop(s);
            let s = open_as(&fs, f).unwrap();
            assert_eq!(s.epoch(9).last_seq, 2, "{step}");
            assert_eq!(lines(&*fs), vec![H, 2 * H], "{step}");
        }
    }
}

/// Issue 10 item 4: a store whose state is missing or empty is damaged, not
/// new: it refuses to open, naming the file, and truncates nothing.
#[test]
fn a_lost_state_is_refused_not_taken_as_new() {
    for f in FORMATS {
        for damage in ["empty", "missing", "garbled", "short file", "missing file"] {
            let (_, fs) = sim();
            let mut s = open_as(&fs, f).unwrap();
            for seq in 1..=3 {
                s.write_batch(batch(seq), &[rec(seq * H), rec(seq * H + 1)])
                    .unwrap();
            }
            drop(s);
            let state = Path::new(DIR).join("state");
            let hour = Path::new(DIR).join(hour_name(f, 2 * H));
            match damage {
                "empty" => fs.write_new(&state, b"").unwrap(),
                "missing" => fs.remove(&state).unwrap(),
                "garbled" => {
                    let mut t = fs.read(&state).unwrap();
                    t[30] ^= 1;
                    fs.write_new(&state, &t).unwrap();
                }
                "short file" => fs.set_len(&hour, 10).unwrap(),
                _ => fs.remove(&hour).unwrap(),
            }
            let kept = lines_raw(&*fs);
            let e = open_as(&fs, f).err().expect(damage).to_string();
            assert!(e.contains("damaged") && e.contains(DIR), "{damage}: {e}");
            assert_eq!(lines_raw(&*fs), kept, "{damage}: nothing truncated");
        }
    }
}

fn lines_raw(fs: &dyn Fs) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".ndjson") || n.ends_with(BLOCKS_EXT))
        .map(|n| {
            let b = fs.read(&Path::new(DIR).join(&n)).unwrap();
            (n, b)
        })
        .collect();
    v.sort();
    v
}

/// Issue 10 item 7: a batch must follow the last one held.
#[test]
fn only_the_next_batch_is_accepted() {
    for f in FORMATS {
        let (_, fs) = sim();
        let mut s = open_as(&fs, f).unwrap();
        let mut out = Vec::new();
        for seq in [1u64, 2, 2, 1, 5, 3, 4, 6] {
            let o = s.write_batch(batch(seq), &[rec(seq * H)]).unwrap();
            out.push(match o {
                Outcome::Written(_) => 'w',
                Outcome::Duplicate => 'd',
                Outcome::Refused(_) => 'r',
            });
        }
        assert_eq!(out.iter().collect::<String>(), "wwddrwwr");
        assert_eq!(lines(&*fs), vec![H, 2 * H, 3 * H, 4 * H]);
        let Outcome::Refused(why) = s.write_batch(batch(u64::MAX), &[rec(H)]).unwrap() else {
            panic!()
        };
        assert!(why.contains("reserved"), "{why}");
        // A declared jump (the agent dropped 5 and 6 from its spool) is taken
        // and counted.
        let jump = BatchInfo {
            follows: 4,
            ..batch(7)
        };
        assert!(matches!(
            s.write_batch(jump, &[rec(7 * H)]).unwrap(),
            Outcome::Written(_)
        ));
        assert_eq!(s.epoch(9).agent_dropped, 2);
        // Another epoch (a new spool of the same agent) is a new sequence space.
        let other = BatchInfo {
            epoch: 10,
            ..batch(1)
        };
        assert!(s.is_new_epoch(10));
        assert!(matches!(
            s.write_batch(other, &[rec(8 * H)]).unwrap(),
            Outcome::Written(_)
        ));
        drop(s);
        let s = open_as(&fs, f).unwrap();
        assert_eq!(s.epoch(9).last_seq, 7);
        assert_eq!(s.epoch(10).last_seq, 1);
    }
}

/// The order exactness rests on: records synced, then the state replaced
/// and its directory synced; nothing of it before the records are durable.
#[test]
fn records_are_durable_before_the_state_names_them() {
    for f in FORMATS {
        let (sfs, fs) = sim();
        let mut s = open_as(&fs, f).unwrap();
        sfs.clear_log();
        s.write_batch(batch(1), &[rec(H), rec(2 * H)]).unwrap();
        let log = sfs.log();
        let pos = |l: &str| {
            log.iter()
                .position(|x| x == l)
                .unwrap_or_else(|| panic!("{l} in {log:?}"))
        };
        let a = pos(&format!("sync {DIR}/{}", hour_name(f, H)));
        let b = pos(&format!("sync {DIR}/{}", hour_name(f, 2 * H)));
        let tmp = pos(&format!("sync {DIR}/state.tmp"));
        let rename = pos(&format!("rename {DIR}/state.tmp {DIR}/state"));
        let dir = log
            .iter()
            .rposition(|x| x == &format!("sync_dir {DIR}"))
            .unwrap();
        assert!(
            a < tmp && b < tmp && tmp < rename && rename < dir,
            "{log:?}"
        );
    }
}

/// Power loss at any point of a write: the store opens, holds whole lines
/// only, and everything it holds was either acknowledged or is the batch in
/// flight (whose resend is then a duplicate).
#[test]
fn power_loss_leaves_whole_batches() {
    for f in FORMATS {
        for seed in 0..300 {
            let (sfs, fs) = sim();
            let mut dice = Rng::new(seed);
            let mut s = open_as(&fs, f).unwrap();
            let n = 1 + dice.below(6);
            for seq in 1..=n {
                s.write_batch(batch(seq), &[rec(seq * H), rec(seq * H + 1)])
                    .unwrap();
            }
            // The next batch is in flight when the power goes.
            let next = n + 1;
            sfs.fail_next(
                ["append", "sync", "sync_dir", "write_new", "rename", "x"][dice.below(6) as usize],
                libc::EIO,
            );
            let acked = match s.write_batch(batch(next), &[rec(next * H), rec(next * H + 1)]) {
                Ok(_) => next,
                Err(_) => n,
            };
            sfs.crash(&mut dice);
            let mut s = open_as(&fs, f).unwrap_or_else(|e| panic!("{f:?} seed {seed}: {e}"));
            let held = s.epoch(9).last_seq;
            assert!(held == acked || held == next, "seed {seed}: {held}");
            let want: Vec<u64> = (1..=held).flat_map(|q| [q * H, q * H + 1]).collect();
            assert_eq!(lines(&*fs), want, "seed {seed}");
            // The agent resends what was not acknowledged.
            s.write_batch(batch(next), &[rec(next * H), rec(next * H + 1)])
                .unwrap();
            let want: Vec<u64> = (1..=next).flat_map(|q| [q * H, q * H + 1]).collect();
            assert_eq!(lines(&*fs), want, "seed {seed}");
        }
    }
}

#[test]
fn a_store_of_the_first_format_is_epoch_zero() {
    let (_, fs) = sim();
    fs.create_dir_all(Path::new(DIR)).unwrap();
    let line = "{\"x\":1}\n";
    fs.write_new(&Path::new(DIR).join(hour_file(H)), line.as_bytes())
        .unwrap();
    let state = format!("seq 4\ndrops 2\nfile {} {}\n", hour_file(H), line.len());
    fs.write_new(&Path::new(DIR).join("state"), state.as_bytes())
        .unwrap();
    let mut s = open(&fs).unwrap();
    assert_eq!(
        s.epoch(0),
        EpochState {
            last_seq: 4,
            source_drops: 2,
            agent_dropped: 0
        }
    );
    let b = BatchInfo {
        epoch: 0,
        ..batch(5)
    };
    assert!(matches!(
        s.write_batch(b, &[rec(H)]).unwrap(),
        Outcome::Written(_)
    ));
    drop(s);
    let s = open(&fs).unwrap();
    assert_eq!(s.epoch(0).last_seq, 5);
}

/// Group commit: consecutive batches share one commit; a repeat in the
/// group is skipped, a refusal ends it there (the ones before it are
/// written), and a failing write leaves nothing of the group behind.
#[test]
fn a_group_commits_together_or_not_at_all() {
    for f in FORMATS {
        let (sfs, fs) = sim();
        let mut s = open_as(&fs, f).unwrap();
        s.write_batch(batch(1), &[rec(H)]).unwrap();
        let r: Vec<Vec<FlowRecord>> = (0..6).map(|i| vec![rec(H + 10 + i)]).collect();
        let group: Vec<(BatchInfo, &[FlowRecord])> = vec![
            (batch(1), &r[0]),
            (batch(2), &r[1]),
            (batch(3), &r[2]),
            (batch(5), &r[3]),
            (batch(4), &r[4]),
        ];
        sfs.clear_log();
        let out = s.write_batches(&group).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], Outcome::Duplicate);
        assert!(matches!(out[1], Outcome::Written(_)) && matches!(out[2], Outcome::Written(_)));
        assert!(matches!(out[3], Outcome::Refused(_)));
        assert_eq!(lines(&*fs), vec![H, H + 11, H + 12]);
        let renames = sfs.log().iter().filter(|l| l.starts_with("rename")).count();
        assert_eq!(renames, 1, "one commit for the group");
        sfs.fail_next("sync", libc::EIO);
        let group: Vec<(BatchInfo, &[FlowRecord])> = vec![(batch(4), &r[4]), (batch(5), &r[5])];
        assert!(s.write_batches(&group).is_err());
        assert_eq!(lines(&*fs), vec![H, H + 11, H + 12]);
        assert_eq!(s.epoch(9).last_seq, 3);
    }
}

/// A group prepared outside the store (pipelined) is judged again when
/// the store has moved meanwhile (another connection of the stream wrote):
/// nothing is written twice, nothing after a gap.
#[test]
fn a_prepared_group_is_judged_again_if_the_store_moved() {
    for f in FORMATS {
        let (_, fs) = sim();
        let mut s = open_as(&fs, f).unwrap();
        s.write_batch(batch(1), &[rec(H)]).unwrap();
        let mut states = s.states();
        let mut pool = Vec::new();
        let p = prepare(
            &mut states,
            vec![batch(2), batch(3)],
            vec![dec(vec![rec(H + 2)]), dec(vec![rec(H + 3)])],
            &mut pool,
            f,
        );
        assert_eq!(states.get(&9).map(|e| e.last_seq), Some(3));
        // Another connection writes batch 2 first.
        s.write_batch(batch(2), &[rec(H + 2)]).unwrap();
        let out = s.commit(p, &mut pool).unwrap();
        assert_eq!(out[0], Outcome::Duplicate);
        assert!(matches!(out[1], Outcome::Written(_)));
        assert_eq!(lines(&*fs), vec![H, H + 2, H + 3]);
        // Prepared to follow batch 5, which never came: refused, not written.
        let mut ahead = s.states();
        ahead.insert(
            9,
            EpochState {
                last_seq: 5,
                ..Default::default()
            },
        );
        let p = prepare(
            &mut ahead,
            vec![batch(6)],
            vec![dec(vec![rec(H + 6)])],
            &mut pool,
            f,
        );
        let out = s.commit(p, &mut pool).unwrap();
        assert!(matches!(out[0], Outcome::Refused(_)), "{out:?}");
        assert_eq!(lines(&*fs), vec![H, H + 2, H + 3]);
        assert_eq!(s.epoch(9).last_seq, 3);
    }
}

/// The flow ids of each entry of a blocks hour file, read as `vmflow cat`
/// reads them.
fn entries(fs: &dyn Fs, name: &str) -> (Vec<Vec<u64>>, crate::export::blocks::ReadStats) {
    let (blocks, stats) = crate::testkit::block_file(fs, &Path::new(DIR).join(name));
    let ids = blocks
        .iter()
        .map(|b| b.iter().map(|r| r.flow_id).collect())
        .collect();
    (ids, stats)
}

/// Blocks hour files are record files: a header, then one entry per batch
/// and hour, numbered so that readers take every one (numbers must rise
/// through a file) across groups, reopens and hours.
#[test]
fn blocks_hour_files_hold_an_entry_per_batch_and_hour() {
    let (_, fs) = sim();
    let mut s = open_as(&fs, StoreFormat::Blocks).unwrap();
    s.write_batch(batch(1), &[rec(H), rec(H + 1), rec(2 * H)])
        .unwrap();
    let r: Vec<Vec<FlowRecord>> = (2..5).map(|i| vec![rec(H + i)]).collect();
    let group: Vec<(BatchInfo, &[FlowRecord])> =
        (2..5).map(|i| (batch(i), &r[i as usize - 2][..])).collect();
    s.write_batches(&group).unwrap();
    drop(s);
    let mut s = open_as(&fs, StoreFormat::Blocks).unwrap();
    s.write_batch(batch(5), &[rec(H + 5), rec(2 * H + 5)])
        .unwrap();
    let (h1, st) = entries(&*fs, &hour_blocks_file(H));
    assert_eq!(
        h1,
        vec![
            vec![H, H + 1],
            vec![H + 2],
            vec![H + 3],
            vec![H + 4],
            vec![H + 5]
        ]
    );
    assert!(!st.damaged(), "{st:?}");
    let (h2, st) = entries(&*fs, &hour_blocks_file(2 * H));
    assert_eq!(h2, vec![vec![2 * H], vec![2 * H + 5]]);
    assert!(!st.damaged(), "{st:?}");
    // Much smaller than the same records as text.
    let blocks_len = fs
        .read(&Path::new(DIR).join(hour_blocks_file(H)))
        .unwrap()
        .len();
    assert!(blocks_len < 6 * 200, "{blocks_len} bytes");
}

/// A collector whose setting changed finds files of the other kind: it
/// keeps them (committed lengths and all) and writes new records its way.
#[test]
fn a_store_can_change_how_it_writes() {
    let (_, fs) = sim();
    let mut s = open_as(&fs, StoreFormat::Ndjson).unwrap();
    s.write_batch(batch(1), &[rec(H)]).unwrap();
    drop(s);
    let mut s = open_as(&fs, StoreFormat::Blocks).unwrap();
    s.write_batch(batch(2), &[rec(H + 2)]).unwrap();
    drop(s);
    let mut s = open_as(&fs, StoreFormat::Ndjson).unwrap();
    s.write_batch(batch(3), &[rec(H + 3)]).unwrap();
    assert_eq!(lines(&*fs), vec![H, H + 2, H + 3]);
    let mut names = fs.list(Path::new(DIR)).unwrap();
    names.sort();
    assert_eq!(
        names,
        vec![hour_blocks_file(H), hour_file(H), "state".to_string()]
    );
    assert_eq!(s.epoch(9).last_seq, 3);
}
