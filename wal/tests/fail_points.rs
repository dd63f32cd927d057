//! Faults injected at the wal's fail points (feature `failpoints`; the names are
//! in `peers_wal::FAIL_POINTS`). Fail points are global to the process, so every
//! test holds a `fail::FailScenario`, which runs them one at a time.
//!
//! For each point: the caller gets a typed error (`Error::Io` with the injected
//! errno), nothing unacknowledged is reported as written, the log is poisoned
//! after a failed write or fsync, and a reopen finds every acknowledged record
//! and no record whose append failed. `every_point_fires_100_times_in_random_workloads`
//! then hits every point at least 100 times across random workloads on the
//! simulated disk, some followed by a power cut; run with `--nocapture` to see
//! the hits per point.

mod common;

use std::path::{Path, PathBuf};

use common::{all_records, append_bytes, file_len, segment_paths};
use peers_wal::testing::{Rng, SimFs};
use peers_wal::{Error, FAIL_POINTS, OpenReport, Options, Position, SyncMode, Wal};

/// ENOSPC, the errno the fail points inject by default.
const ENOSPC: i32 = 28;
/// EIO, injected with `return(5)`.
const EIO: i32 = 5;
/// Hits every point must reach in the random workloads.
const HITS_MIN: u64 = 100;

fn options(segment_bytes_max: u64, sync: SyncMode) -> Options {
    Options {
        segment_bytes_max,
        sync,
    }
}

fn open(dir: &Path, options: Options) -> (Wal, OpenReport) {
    Wal::open(dir, options).expect("open wal")
}

/// Asserts `error` is the injected I/O error.
#[track_caller]
fn assert_injected(error: &Error, errno: i32) {
    match error {
        Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(errno), "{error}"),
        other => panic!("expected the injected I/O error, got {other:?}"),
    }
}

/// Asserts every call of a poisoned log fails with `Poisoned`.
#[track_caller]
fn assert_poisoned(wal: &Wal) {
    assert!(matches!(wal.append(b"after"), Err(Error::Poisoned)));
    assert!(matches!(wal.sync(), Err(Error::Poisoned)));
    assert!(matches!(wal.iter_from(wal.start()), Err(Error::Poisoned)));
}

/// A log with `count` acknowledged records `record i`; returns their positions.
fn acknowledged(wal: &Wal, count: usize) -> Vec<(Position, Vec<u8>)> {
    (0..count)
        .map(|index| {
            let record = format!("record {index}").into_bytes();
            (wal.append(&record).expect("append"), record)
        })
        .collect()
}

/// Reopens and asserts the log holds exactly `expected`, then that it takes an
/// append again.
#[track_caller]
fn assert_reopens_with(
    dir: &Path,
    options: Options,
    expected: &[(Position, Vec<u8>)],
) -> OpenReport {
    let (wal, report) = open(dir, options);
    assert_eq!(all_records(&wal), expected);
    let position = wal.append(b"after reopen").expect("append after reopen");
    assert_eq!(wal.read_at(position).expect("read"), b"after reopen");
    report
}

// Guards a failed write: typed error, poisoned, and the file as before it.
#[test]
fn failed_write_poisons_and_leaves_nothing() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let options = options(1 << 20, SyncMode::Always);
    let (wal, _) = open(dir.path(), options);
    let kept = acknowledged(&wal, 3);
    let path = segment_paths(dir.path())[0].clone();
    let len = file_len(&path);

    fail::cfg("wal::write", "return(5)").expect("cfg");
    assert_injected(&wal.append(b"lost").expect_err("fails"), EIO);
    fail::remove("wal::write");
    assert_poisoned(&wal);
    assert_eq!(file_len(&path), len);
    drop(wal);
    let report = assert_reopens_with(dir.path(), options, &kept);
    assert!(report.torn_tail.is_none());
    scenario.teardown();
}

// Guards a short write (ENOSPC part way through a batch): the part written is cut
// off before the log is poisoned, so a reopen finds no frame of the batch.
#[test]
fn short_write_is_cut_back() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let options = options(1 << 20, SyncMode::Always);
    let (wal, _) = open(dir.path(), options);
    let kept = acknowledged(&wal, 3);
    let path = segment_paths(dir.path())[0].clone();
    let len = file_len(&path);

    // 21 bytes: the whole first frame (8 + 5) and part of the second.
    fail::cfg("wal::short-write", "return(21)").expect("cfg");
    let error = wal.append_batch(&[b"first", b"second"]).expect_err("fails");
    fail::remove("wal::short-write");
    assert_injected(&error, ENOSPC);
    assert_poisoned(&wal);
    assert_eq!(file_len(&path), len, "the partial batch is cut off");
    drop(wal);
    let report = assert_reopens_with(dir.path(), options, &kept);
    assert!(report.torn_tail.is_none());
    scenario.teardown();
}

// Guards a short write whose cut back fails too: the open finds the partial
// frame as a torn tail and cuts it.
#[test]
fn short_write_without_cut_back_is_cut_on_open() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let options = options(1 << 20, SyncMode::Always);
    let (wal, _) = open(dir.path(), options);
    let kept = acknowledged(&wal, 3);
    let path = segment_paths(dir.path())[0].clone();
    let len = file_len(&path);

    fail::cfg("wal::short-write", "return(10)").expect("cfg");
    fail::cfg("wal::truncate", "return").expect("cfg");
    let error = wal.append_batch(&[b"first", b"second"]).expect_err("fails");
    fail::remove("wal::short-write");
    fail::remove("wal::truncate");
    assert_injected(&error, ENOSPC);
    assert_poisoned(&wal);
    assert_eq!(file_len(&path), len + 10);
    drop(wal);
    let report = assert_reopens_with(dir.path(), options, &kept);
    let torn = report.torn_tail.expect("torn tail");
    assert_eq!((torn.offset, torn.bytes_cut), (len, 10));
    scenario.teardown();
}

// Guards a failed fsync (fsyncgate): the append is not acknowledged, the log is
// poisoned and never retries, and the bytes the fsync was to cover are cut off:
// they may be in the page cache but not on disk, so a reopen must not report
// them. In relaxed mode that includes appends that returned but were not synced.
#[test]
fn failed_fsync_poisons_and_drops_what_it_covered() {
    let scenario = fail::FailScenario::setup();
    for sync in [SyncMode::Always, SyncMode::Relaxed] {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = options(1 << 20, sync);
        let (wal, _) = open(dir.path(), options);
        let kept = acknowledged(&wal, 3);
        wal.sync().expect("sync");
        let path = segment_paths(dir.path())[0].clone();
        let len = file_len(&path);

        fail::cfg("wal::fsync", "return").expect("cfg");
        let error = match sync {
            SyncMode::Always => wal.append(b"not durable").expect_err("fails"),
            SyncMode::Relaxed => {
                wal.append(b"written, not synced").expect("relaxed append");
                wal.sync().expect_err("fails")
            }
        };
        fail::remove("wal::fsync");
        assert_injected(&error, ENOSPC);
        assert_poisoned(&wal);
        assert_eq!(file_len(&path), len, "{sync:?}: cut back to the synced end");
        drop(wal);
        assert_reopens_with(dir.path(), options, &kept);
    }
    scenario.teardown();
}

/// A log with small segments (200 bytes), filled to 132: the next 80-byte record
/// rotates.
fn about_to_rotate(dir: &Path) -> (Wal, Vec<(Position, Vec<u8>)>, Options) {
    let options = options(200, SyncMode::Always);
    let (wal, _) = open(dir, options);
    let kept = acknowledged(&wal, 2);
    let record = vec![7u8; 60];
    let position = wal.append(&record).expect("append");
    let mut kept = kept;
    kept.push((position, record));
    assert_eq!(segment_paths(dir).len(), 1);
    (wal, kept, options)
}

// Guards the failures of a rotation, at each of its steps: the fsync of the old
// segment, creating the new file, writing its header, the directory fsync. Each
// is a typed error that poisons; the reopen finds every acknowledged record, and
// a new segment left without a complete header is removed.
#[test]
fn failed_rotation_steps() {
    let scenario = fail::FailScenario::setup();
    for (point, action, new_segment_left) in [
        ("wal::fsync", "return", false),
        ("wal::segment-create", "return", false),
        ("wal::write", "return", true),
        ("wal::short-write", "return(7)", true),
        ("wal::dir-sync", "return", true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, kept, options) = about_to_rotate(dir.path());
        fail::cfg(point, action).expect("cfg");
        let error = wal.append(&[8u8; 80]).expect_err("rotation fails");
        fail::remove(point);
        assert_injected(&error, ENOSPC);
        assert_poisoned(&wal);
        drop(wal);
        let segments = segment_paths(dir.path()).len();
        assert_eq!(segments, 1 + usize::from(new_segment_left), "{point}");
        let report = assert_reopens_with(dir.path(), options, &kept);
        let removed = report.torn_tail.is_some_and(|torn| torn.segment_removed);
        assert_eq!(
            removed,
            point != "wal::dir-sync" && new_segment_left,
            "{point}"
        );
    }
    scenario.teardown();
}

// Guards the failures of an open: creating the directory, its first segment, the
// directory fsyncs, cutting a torn tail, removing a torn segment, the fsync of
// the last segment. Each is a typed error, changes nothing that a later open
// needs, and the next open succeeds with every record.
#[test]
fn failed_open_steps() {
    let scenario = fail::FailScenario::setup();
    let options = options(200, SyncMode::Always);
    let dir = tempfile::tempdir().expect("tempdir");
    for point in ["wal::create-dir", "wal::segment-create", "wal::dir-sync"] {
        let fresh = dir.path().join(point.replace("::", "-"));
        fail::cfg(point, "return").expect("cfg");
        let error = Wal::open(&fresh, options).expect_err("open fails");
        fail::remove(point);
        assert_injected(&error, ENOSPC);
        assert_reopens_with(&fresh, options, &[]);
    }

    // A rotation cut before the new segment's header: removing it fails, then
    // the directory fsync after removing it.
    let log = dir.path().join("log");
    let (wal, kept, _) = about_to_rotate(&log);
    drop(wal);
    let last = segment_paths(&log)[0].clone();
    let torn = log.join(format!("{:020}.wal", file_len(&last)));
    std::fs::write(&torn, b"PEER").expect("write torn segment");
    for point in ["wal::remove", "wal::dir-sync"] {
        fail::cfg(point, "return").expect("cfg");
        let error = Wal::open(&log, options).expect_err("open fails");
        fail::remove(point);
        assert_injected(&error, ENOSPC);
    }
    let (wal, _) = open(&log, options);
    assert_eq!(all_records(&wal), kept);
    assert!(!torn.exists());
    drop(wal);

    // A torn tail: cutting it fails, then the fsync after the cut.
    append_bytes(&last, &[1, 2, 3]);
    for point in ["wal::truncate", "wal::fsync"] {
        fail::cfg(point, "return").expect("cfg");
        let error = Wal::open(&log, options).expect_err("open fails");
        fail::remove(point);
        assert_injected(&error, ENOSPC);
    }
    assert_reopens_with(&log, options, &kept);
    scenario.teardown();
}

/// What the random workload knows of its log.
#[derive(Debug, Default)]
struct Model {
    /// Records that may be in the log, in write order.
    written: Vec<Vec<u8>>,
    /// Positions of the acknowledged records (a prefix of `written`).
    positions: Vec<Position>,
    counter: u64,
}

impl Model {
    fn next_record(&mut self, rng: &mut Rng) -> Vec<u8> {
        self.counter += 1;
        let mut record = self.counter.to_le_bytes().to_vec();
        record.extend((0..rng.below(150)).map(|_| rng.next_u64() as u8));
        record
    }

    /// Checks the log after a reopen and adopts it. With `exact`, the log must
    /// hold the acknowledged records and nothing else.
    #[track_caller]
    fn check(&mut self, wal: &Wal, exact: bool, context: &str) {
        let records = all_records(wal);
        let acknowledged = self.positions.len();
        assert!(
            records.len() >= acknowledged,
            "{context}: acknowledged records lost"
        );
        assert!(
            records.len() <= self.written.len(),
            "{context}: records invented"
        );
        if exact {
            assert_eq!(
                records.len(),
                acknowledged,
                "{context}: unacknowledged records kept"
            );
        }
        for (index, (position, payload)) in records.iter().enumerate() {
            assert!(
                payload == &self.written[index],
                "{context}: record {index} differs"
            );
            if let Some(acknowledged) = self.positions.get(index) {
                assert_eq!(position, acknowledged, "{context}: record {index} moved");
            }
        }
        self.written.truncate(records.len());
        self.positions = records.into_iter().map(|(position, _)| position).collect();
    }
}

/// Opens with `armed` fail points configured `return`: an error must be one of
/// theirs. Then opens with none, which must succeed.
fn open_through_faults(sim: &SimFs, dir: &Path, options: Options, armed: &[&str]) -> Wal {
    for point in armed {
        fail::cfg(*point, "return").expect("cfg");
    }
    let result = sim.open_wal(dir, options);
    for point in armed {
        fail::remove(*point);
    }
    match result {
        Ok((wal, _)) => wal,
        Err(error) => {
            assert_injected(&error, ENOSPC);
            sim.open_wal(dir, options).expect("open without faults").0
        }
    }
}

/// Appends random batches until one fails (a fault fired) or `appends` are done.
/// Returns whether one failed.
fn random_appends(
    wal: &Wal,
    sync: SyncMode,
    model: &mut Model,
    rng: &mut Rng,
    appends: u64,
) -> bool {
    for _ in 0..appends {
        if sync == SyncMode::Relaxed && rng.one_in(3) {
            match wal.sync() {
                Ok(()) => {
                    let positions: Vec<Position> =
                        all_records(wal).into_iter().map(|(p, _)| p).collect();
                    model.positions = positions;
                }
                Err(error) => return failed(wal, &error),
            }
            continue;
        }
        let count = if rng.one_in(3) { 1 + rng.below(3) } else { 1 };
        let batch: Vec<Vec<u8>> = (0..count).map(|_| model.next_record(rng)).collect();
        let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let result = wal.append_batch(&slices);
        model.written.extend(batch);
        match result {
            Ok(frames) if sync == SyncMode::Always => {
                model
                    .positions
                    .extend(frames.into_iter().map(|frame| frame.start));
            }
            Ok(_) => {}
            Err(error) => return failed(wal, &error),
        }
    }
    false
}

/// After a failed append or sync: the injected error, then a poisoned log.
fn failed(wal: &Wal, error: &Error) -> bool {
    assert_injected(error, ENOSPC);
    assert!(matches!(wal.append(b"x"), Err(Error::Poisoned)));
    true
}

// Guards the fault handling across random workloads: every fail point fires at
// least 100 times (appends, batches, relaxed syncs, rotations of small segments,
// reopens, some after a power cut of the simulated disk), every failure is the
// injected typed error followed by a poisoned log, and every reopen finds all
// acknowledged records in order, and without a power cut nothing else.
#[test]
fn every_point_fires_100_times_in_random_workloads() {
    let scenario = fail::FailScenario::setup();
    let before = peers_wal::fail_point_hits();
    let hits_since = |point: &str| {
        let now = peers_wal::fail_point_hits();
        let count = |hits: &[(&str, u64)]| {
            hits.iter()
                .find(|(name, _)| *name == point)
                .map_or(0, |(_, n)| *n)
        };
        count(&now) - count(&before)
    };
    let mut rng = Rng::new(0xfa11_0000_0015);
    let mut sim = SimFs::new(rng.next_u64());
    let mut dir = PathBuf::from("/log-0");
    let mut model = Model::default();
    let mut iterations = 0u64;
    while let Some(point) = FAIL_POINTS
        .iter()
        .copied()
        .find(|point| hits_since(point) < HITS_MIN)
    {
        iterations += 1;
        assert!(
            iterations < 20_000,
            "{point} fired only {} times",
            hits_since(point)
        );
        let context = format!("iteration {iterations}, target {point}");
        if iterations.is_multiple_of(25) || point == "wal::create-dir" {
            sim = SimFs::new(rng.next_u64());
            dir = PathBuf::from(format!("/log-{iterations}"));
            model = Model::default();
        }
        let sync = if rng.one_in(4) {
            SyncMode::Relaxed
        } else {
            SyncMode::Always
        };
        let options = options([256, 1024][rng.below(2) as usize], sync);
        let recovery_points: &[&str] = match point {
            "wal::create-dir" | "wal::remove" | "wal::truncate" | "wal::dir-sync"
            | "wal::fsync" => &[point],
            "wal::segment-create" if model.written.is_empty() => &[point],
            _ => &[],
        };
        let wal = open_through_faults(&sim, &dir, options, recovery_points);
        model.check(&wal, false, &context);
        let appends = rng.below(6);
        random_appends(&wal, sync, &mut model, &mut rng, appends);

        // The fault: the target point, and for `truncate` the failure whose cut
        // back it breaks; `remove` needs a torn new segment, which a failed
        // header write in a rotation leaves.
        let faults: Vec<(&str, String)> = match point {
            "wal::truncate" => vec![
                (point, "return".into()),
                (
                    ["wal::write", "wal::short-write", "wal::fsync"][rng.below(3) as usize],
                    "30%return".into(),
                ),
            ],
            "wal::remove" | "wal::create-dir" => vec![("wal::write", "30%return".into())],
            "wal::short-write" => vec![(point, format!("30%return({})", rng.below(200)))],
            _ => vec![(point, "30%return".into())],
        };
        for (name, action) in &faults {
            fail::cfg(*name, action).expect("cfg");
        }
        let failed = random_appends(&wal, sync, &mut model, &mut rng, 30);
        for (name, _) in &faults {
            fail::remove(*name);
        }
        drop(wal);
        let power_cut = rng.one_in(3);
        if power_cut {
            sim.cut_power();
            sim.restart();
        }
        let wal = open_through_faults(&sim, &dir, options, recovery_points);
        // Without a power cut, a failed append leaves nothing unacknowledged,
        // unless its cut back was made to fail.
        let exact = failed && sync == SyncMode::Always && !power_cut && point != "wal::truncate";
        model.check(&wal, exact, &context);
    }
    let hits: Vec<(&str, u64)> = FAIL_POINTS
        .iter()
        .map(|point| (*point, hits_since(point)))
        .collect();
    eprintln!("fail points: {iterations} random workloads; hits per point: {hits:?}");
    scenario.teardown();
}
