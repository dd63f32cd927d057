//! Power loss on a simulated disk (`peers_wal::testing::SimFs`): what was not
//! fsynced is dropped or torn at a random byte, directory entries not made
//! durable by a directory fsync are kept or undone. Random workloads (single
//! appends, batches, group commit from several threads, `SyncMode::Relaxed` with
//! `sync`) run with small segments so rotations are frequent; the power is cut
//! after a random number of file system operations (so also during rotations and
//! during recovery itself), the disk restarts and the log is reopened.
//!
//! After every reopen: every acknowledged record is there, at its position, in
//! order; the records are exactly a prefix of what was written, in write order
//! (nothing past a hole, nothing invented); nothing panicked, and every error
//! was a typed error caused by the power cut.
//!
//! `WAL_POWER_LOSS_CYCLES` sets the number of cycles (default 2000) and
//! `WAL_POWER_LOSS_SEED` the seed. Run with `--nocapture` to see the figures.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use peers_wal::testing::{Rng, SimFs};
use peers_wal::{Error, Options, Position, SyncMode, Wal};

/// Cycles run by default (a few seconds in release).
const CYCLES_DEFAULT: u64 = 2000;
/// A fresh disk every so many cycles, so logs stay small and scans fast.
const CYCLES_PER_DISK: u64 = 40;
/// Threads in a group commit cycle.
const THREADS: usize = 3;

/// What the test knows of the log.
#[derive(Debug, Default)]
struct Model {
    /// The records that may be in the log, in write order: those recovered on the
    /// last open, then every record whose append was attempted since.
    written: Vec<Vec<u8>>,
    /// How many of `written` are acknowledged: their append (or a later `sync`)
    /// returned `Ok`, or an open reported them.
    acknowledged: usize,
    /// Positions of the acknowledged records, as returned.
    positions: Vec<Position>,
    /// Appends attempted so far; makes every payload unique.
    counter: u64,
}

/// Counts reported at the end.
#[derive(Debug, Default)]
struct Figures {
    cycles: u64,
    acknowledged_checked: u64,
    cuts_during_open: u64,
    torn_tails: u64,
    segments_removed: u64,
    group_commit_cycles: u64,
    relaxed_cycles: u64,
    process_crashes: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A unique record of random length (sometimes larger than a segment).
fn next_record(model: &mut Model, rng: &mut Rng) -> Vec<u8> {
    model.counter += 1;
    let mut record = model.counter.to_le_bytes().to_vec();
    let length = if rng.one_in(20) {
        rng.below(1500)
    } else {
        rng.below(120)
    };
    record.extend((0..length).map(|_| rng.next_u64() as u8));
    record
}

/// Opens the log, checks it against the model and makes what it holds the new
/// model. `None` if the power was cut during the open.
fn reopen(
    sim: &SimFs,
    options: Options,
    model: &mut Model,
    figures: &mut Figures,
    context: &str,
) -> Option<Wal> {
    let (wal, report) = match sim.open_wal(Path::new("/log"), options) {
        Ok(opened) => opened,
        Err(error) => {
            assert!(
                !sim.is_powered(),
                "{context}: open failed with power on: {error}"
            );
            assert!(matches!(error, Error::Io { .. }), "{context}: {error:?}");
            figures.cuts_during_open += 1;
            return None;
        }
    };
    if let Some(torn) = &report.torn_tail {
        figures.torn_tails += 1;
        figures.segments_removed += u64::from(torn.segment_removed);
    }
    let records: Vec<(Position, Vec<u8>)> = match wal.iter_from(wal.start()) {
        Ok(iter) => iter.collect::<Result<_, _>>(),
        Err(error) => Err(error),
    }
    .unwrap_or_else(|error| panic!("{context}: reading the log: {error}"));
    assert_eq!(records.len() as u64, report.records, "{context}");
    assert!(
        records.len() >= model.acknowledged,
        "{context}: {} records after reopen, {} acknowledged",
        records.len(),
        model.acknowledged
    );
    assert!(
        records.len() <= model.written.len(),
        "{context}: {} records after reopen, only {} written",
        records.len(),
        model.written.len()
    );
    for (index, (position, payload)) in records.iter().enumerate() {
        assert!(
            payload == &model.written[index],
            "{context}: record {index} at {position} is not the one written there"
        );
        if let Some(acknowledged) = model.positions.get(index) {
            assert_eq!(position, acknowledged, "{context}: record {index} moved");
        }
    }
    figures.acknowledged_checked += model.acknowledged as u64;
    model.written.truncate(records.len());
    model.positions = records.iter().map(|(position, _)| *position).collect();
    model.acknowledged = records.len();
    Some(wal)
}

/// Appends from one thread until the power goes off or the workload is done.
fn single_thread_workload(
    wal: &Wal,
    sync: SyncMode,
    sim: &SimFs,
    model: &mut Model,
    rng: &mut Rng,
    context: &str,
) {
    for _ in 0..rng.below(40) {
        if sync == SyncMode::Relaxed && rng.one_in(4) {
            match wal.sync() {
                Ok(()) => acknowledge_written(wal, model),
                Err(error) => return expect_cut(sim, &error, context),
            }
            continue;
        }
        let records = if rng.one_in(3) { 1 + rng.below(4) } else { 1 };
        let batch: Vec<Vec<u8>> = (0..records).map(|_| next_record(model, rng)).collect();
        let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let result = wal.append_batch(&slices);
        let records = batch.len();
        model.written.extend(batch);
        match result {
            Ok(positions) => {
                assert_eq!(positions.len(), records, "{context}");
                if sync == SyncMode::Always {
                    model
                        .positions
                        .extend(positions.into_iter().map(|frame| frame.start));
                    model.acknowledged = model.written.len();
                    assert_eq!(model.positions.len(), model.acknowledged, "{context}");
                }
            }
            Err(error) => return expect_cut(sim, &error, context),
        }
    }
}

/// After a successful `sync` in relaxed mode: every record written so far is
/// acknowledged (their positions were not kept, so they are read back).
fn acknowledge_written(wal: &Wal, model: &mut Model) {
    let positions: Vec<Position> = wal
        .iter_from(wal.start())
        .expect("iter")
        .map(|record| record.expect("read").0)
        .collect();
    assert_eq!(positions.len(), model.written.len());
    model.positions = positions;
    model.acknowledged = model.written.len();
}

/// An error during a workload must come from the power cut.
fn expect_cut(sim: &SimFs, error: &Error, context: &str) {
    assert!(!sim.is_powered(), "{context}: error with power on: {error}");
    assert!(
        matches!(error, Error::Io { .. } | Error::Poisoned),
        "{context}: {error:?}"
    );
}

/// What a group commit workload did.
struct GroupCommit {
    /// Records whose append returned, at their positions.
    acknowledged: Vec<(Position, Vec<u8>)>,
    /// Every record an append was attempted for.
    attempted: HashSet<Vec<u8>>,
}

/// Several threads append at once (group commit) until the power goes off.
fn group_commit_workload(wal: &Wal, sim: &SimFs, model: &mut Model, rng: &mut Rng) -> GroupCommit {
    let batches: Vec<Vec<Vec<u8>>> = (0..THREADS)
        .map(|_| {
            (0..rng.below(15))
                .map(|_| next_record(model, rng))
                .collect()
        })
        .collect();
    let attempted = batches.iter().flatten().cloned().collect();
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let handles: Vec<_> = batches
        .into_iter()
        .map(|records| {
            let wal = wal.clone();
            let sim = sim.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let mut acknowledged = Vec::new();
                for record in records {
                    match wal.append(&record) {
                        Ok(position) => acknowledged.push((position, record)),
                        Err(error) => {
                            expect_cut(&sim, &error, "group commit");
                            break;
                        }
                    }
                }
                acknowledged
            })
        })
        .collect();
    let acknowledged = handles
        .into_iter()
        .flat_map(|handle| handle.join().expect("appender thread"))
        .collect();
    GroupCommit {
        acknowledged,
        attempted,
    }
}

/// Reopens after a group commit workload, whose write order is known only from
/// the positions: checks the records known in order, the acknowledged records at
/// their positions, that every other new record is one attempted (once), then
/// adopts the log as the model. `None` if the power was cut during the open.
fn reopen_after_group_commit(
    sim: &SimFs,
    model: &mut Model,
    group: &GroupCommit,
    figures: &mut Figures,
    context: &str,
) -> Option<Wal> {
    let (wal, _report) = match sim.open_wal(Path::new("/log"), Options::default()) {
        Ok(opened) => opened,
        Err(error) => {
            assert!(
                !sim.is_powered(),
                "{context}: open failed with power on: {error}"
            );
            figures.cuts_during_open += 1;
            return None;
        }
    };
    let records: Vec<(Position, Vec<u8>)> = wal
        .iter_from(wal.start())
        .expect("iter")
        .collect::<Result<_, _>>()
        .expect("read");
    assert!(
        records.len() >= model.acknowledged,
        "{context}: records lost"
    );
    for (index, (position, payload)) in records.iter().enumerate() {
        if let Some(written) = model.written.get(index) {
            assert_eq!(payload, written, "{context}: record {index}");
        }
        if let Some(acknowledged) = model.positions.get(index) {
            assert_eq!(position, acknowledged, "{context}: record {index} moved");
        }
    }
    for (position, payload) in &group.acknowledged {
        let found = records.iter().find(|(found, _)| found == position);
        assert!(
            found.is_some_and(|(_, found)| found == payload),
            "{context}: acknowledged record at {position} lost"
        );
    }
    let mut seen = HashSet::new();
    for (index, (position, payload)) in records.iter().enumerate().skip(model.written.len()) {
        assert!(
            group.attempted.contains(payload) && seen.insert(payload.clone()),
            "{context}: record {index} at {position} was never written, or twice"
        );
    }
    figures.acknowledged_checked += (model.acknowledged + group.acknowledged.len()) as u64;
    model.written = records.iter().map(|(_, payload)| payload.clone()).collect();
    model.positions = records.iter().map(|(position, _)| *position).collect();
    model.acknowledged = records.len();
    Some(wal)
}

/// Ends a cycle whose wal was dropped: mostly by cutting the power (if the
/// workload did not), sometimes as a crash of the process only, which keeps
/// what the page cache holds (the next open must make it durable before it
/// reports it).
fn end_cycle(sim: &SimFs, rng: &mut Rng, figures: &mut Figures) {
    if sim.is_powered() && rng.one_in(4) {
        figures.process_crashes += 1;
        return;
    }
    if sim.is_powered() {
        sim.cut_power();
    }
    sim.restart();
}

// Guards "acknowledged means durable" against the machine losing power, not only
// the process dying: every fsync and directory fsync the wal needs is checked by
// the simulated disk dropping whatever they did not cover.
#[test]
fn acknowledged_records_survive_power_loss() {
    let cycles = env_u64("WAL_POWER_LOSS_CYCLES", CYCLES_DEFAULT);
    let seed = env_u64("WAL_POWER_LOSS_SEED", 0x5eed_0f10_c5c5);
    let mut rng = Rng::new(seed);
    let mut figures = Figures::default();
    let mut sim = SimFs::new(rng.next_u64());
    let mut model = Model::default();
    for cycle in 0..cycles {
        if cycle % CYCLES_PER_DISK == 0 {
            sim = SimFs::new(rng.next_u64());
            model = Model::default();
        }
        let context = format!("seed {seed:#x} cycle {cycle}");
        let options = Options {
            segment_bytes_max: [256, 1024, 4096][rng.below(3) as usize],
            sync: if rng.one_in(4) {
                SyncMode::Relaxed
            } else {
                SyncMode::Always
            },
        };
        figures.cycles += 1;
        sim.cut_power_after(rng.below(80));
        let group_commit = options.sync == SyncMode::Always && rng.one_in(4);
        let Some(wal) = reopen(&sim, options, &mut model, &mut figures, &context) else {
            sim.restart();
            continue;
        };
        if group_commit {
            figures.group_commit_cycles += 1;
            let group = group_commit_workload(&wal, &sim, &mut model, &mut rng);
            drop(wal);
            end_cycle(&sim, &mut rng, &mut figures);
            // The next open may be cut too; the one after must still hold it all.
            sim.cut_power_after(rng.below(20));
            while reopen_after_group_commit(&sim, &mut model, &group, &mut figures, &context)
                .is_none()
            {
                sim.restart();
            }
            continue;
        }
        if options.sync == SyncMode::Relaxed {
            figures.relaxed_cycles += 1;
        }
        single_thread_workload(&wal, options.sync, &sim, &mut model, &mut rng, &context);
        drop(wal);
        end_cycle(&sim, &mut rng, &mut figures);
    }
    // The last cut is checked too.
    let context = format!("seed {seed:#x} final");
    let options = Options::default();
    while reopen(&sim, options, &mut model, &mut figures, &context).is_none() {
        sim.restart();
    }
    eprintln!(
        "power loss: {} cycles (seed {seed:#x}), {} acknowledged records checked after reopen; \
         {} cuts during open, {} torn tails cut ({} torn segments removed), \
         {} group commit cycles, {} relaxed cycles, {} ended by a process crash only",
        figures.cycles,
        figures.acknowledged_checked,
        figures.cuts_during_open,
        figures.torn_tails,
        figures.segments_removed,
        figures.group_commit_cycles,
        figures.relaxed_cycles,
        figures.process_crashes,
    );
    assert!(
        figures.acknowledged_checked > cycles,
        "the workloads acknowledged too little"
    );
    assert!(figures.torn_tails > 0, "no power cut tore a tail");
}
