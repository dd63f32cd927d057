//! Power loss under a whole database (docs/RELIABILITY.md "Database"): the
//! log on the wal's simulated disk (`peers_engine::testing`), which keeps
//! only what was fsynced when the power is cut, and a view that loses what
//! RocksDB had not flushed. Each cycle runs a random workload (commits from
//! one to three threads, changes received from a peer, view flushes at random
//! moments), cuts the power after a random number of disk operations (or when
//! the workload ends), restarts the disk and reopens the database. Then:
//! - every acknowledged change is there (`SyncMode::Always`: the commit or
//!   apply returned `Ok`; `Relaxed`: it returned before a `Db::sync` that
//!   returned `Ok`);
//! - the log holds no hole: our own chain is a prefix of what we committed,
//!   and replaying the log leaves nothing waiting for a predecessor;
//! - the view equals a rebuild from the log (`verify`), and a clean replica
//!   that receives the same changes reaches the same state hash;
//! - the next commit extends our chain: no seq of ours is reused (the view
//!   once held a relaxed group that the log had lost, so the replica forked
//!   its own key), and `verify` still accepts the log.
//!
//! Cycles: 60 by default; `PEERS_POWER_LOSS_CYCLES=2000` for a long run,
//! `PEERS_POWER_LOSS_SEED` for another sequence.

use std::collections::BTreeSet;
use std::sync::Mutex;

use peers_engine::testing::{self, SimFs};
use peers_engine::{ChangeHash, Db, Options, SyncMode};
use peers_tests::{SplitMix, all_changes, relaxed};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[derive(Default, Debug)]
struct Totals {
    cycles: u64,
    /// Cycles whose power cut fell inside the workload (not after it).
    cut_mid_workload: u64,
    acknowledged_checked: u64,
    /// Relaxed commits that returned but were lost with the power.
    relaxed_lost: u64,
    /// Cycles whose reopened view held more than the log (relaxed commits
    /// flushed to the view, lost from the log) and was rebuilt.
    view_ahead: u64,
}

#[test]
fn acknowledged_changes_survive_power_loss_and_the_replica_never_forks() {
    let cycles = env("PEERS_POWER_LOSS_CYCLES", 60);
    let seed = env("PEERS_POWER_LOSS_SEED", 0x9017_e2c0);
    let mut totals = Totals::default();
    for cycle in 0..cycles {
        run_cycle(seed.wrapping_add(cycle), cycle, &mut totals);
    }
    eprintln!("power loss under a database: {totals:?}");
    assert_eq!(totals.cycles, cycles);
    assert!(
        totals.acknowledged_checked > cycles,
        "too few acknowledged changes to test anything: {totals:?}"
    );
    if cycles >= 60 {
        assert!(
            totals.cut_mid_workload * 2 > cycles,
            "most cuts must fall inside a workload: {totals:?}"
        );
        assert!(
            totals.view_ahead > 0,
            "no cycle left the view ahead of the log: the case this test exists for never ran"
        );
    }
}

fn run_cycle(seed: u64, cycle: u64, totals: &mut Totals) {
    let mut random = SplitMix(seed);
    let disk = SimFs::new(seed);
    let temp = tempfile::tempdir().expect("temp dir");
    let path = temp.path().join("db");
    let sync = if random.below(2) == 0 {
        SyncMode::Always
    } else {
        SyncMode::Relaxed
    };
    let options = Options {
        sync,
        // Small segments: rotations (and their fsyncs) inside most workloads.
        segment_bytes_max: 2048,
        ..relaxed()
    };
    let db = testing::create(&disk, &path, options.clone()).expect("create");
    let peer = peers_tests::replica_of(&db, &temp.path().join("peer"));

    // What we committed, in seq order (one writer at a time per seq: the
    // engine assigns seqs under its lock, so Ok results of concurrent
    // commits are collected and sorted by seq below).
    let committed = Mutex::new(Vec::<(Option<u64>, ChangeHash)>::new());
    let mut acknowledged: Vec<ChangeHash> = Vec::new();
    // Relaxed: returned, not yet covered by a `sync` that returned.
    let mut unsynced: Vec<ChangeHash> = Vec::new();
    let mut cut = false;
    disk.cut_power_after(random.below(150) as u64);
    for _step in 0..random.below(40) + 5 {
        match random.below(8) {
            0..=2 => {
                let threads = random.below(3) + 1;
                let per_thread = random.below(4) + 1;
                let acks = Mutex::new(Vec::new());
                std::thread::scope(|scope| {
                    for thread in 0..threads {
                        let (db, acks, committed) = (&db, &acks, &committed);
                        let base = random.next_u64();
                        scope.spawn(move || {
                            for index in 0..per_thread {
                                let row = format!("r{}", (base + index as u64) % 7);
                                let mut tx = db.transaction();
                                tx.set("t", &row, "thread", thread as i64)
                                    .increment("t", "total", "n", 1);
                                if (base + index as u64).is_multiple_of(5) {
                                    tx.delete("t", &format!("r{}", base % 7));
                                }
                                let Ok(hash) = tx.commit() else { return };
                                // The seq, while the log still answers (a
                                // failure in another thread may poison it).
                                let seq = db
                                    .get_change(&hash)
                                    .ok()
                                    .flatten()
                                    .map(|change| change.body().seq);
                                committed.lock().expect("lock").push((seq, hash));
                                acks.lock().expect("lock").push(hash);
                            }
                        });
                    }
                });
                let acks = acks.into_inner().expect("lock");
                if sync == SyncMode::Always {
                    acknowledged.extend(acks);
                } else {
                    unsynced.extend(acks);
                }
            }
            3 => {
                let mut tx = peer.transaction();
                tx.set(
                    "p",
                    &format!("p{}", random.below(5)),
                    "v",
                    random.below(100) as i64,
                );
                tx.commit().expect("peer commit");
                let since = db.version_vector();
                let Ok(since) = since else { break };
                let changes: Vec<_> = peer
                    .changes_since(&since)
                    .expect("changes since")
                    .map(|change| change.expect("change"))
                    .collect();
                match db.apply(changes) {
                    Ok(report) if sync == SyncMode::Always => acknowledged.extend(report.accepted),
                    Ok(report) => unsynced.extend(report.accepted),
                    Err(_) => {}
                }
            }
            4..=6 => {
                let _ = testing::flush_view(&db);
            }
            _ => {
                // What returned before a sync that returned is durable.
                let before = unsynced.len();
                if db.sync().is_ok() {
                    acknowledged.extend(unsynced.drain(..before));
                }
            }
        }
        if !disk.is_powered() {
            cut = true;
            break;
        }
    }
    if cut {
        totals.cut_mid_workload += 1;
    } else {
        disk.cut_power();
    }
    let author = db.author();
    let database = db.database_id();
    testing::power_loss(db).expect("power loss");
    disk.restart();

    let db = testing::open(&disk, &path, options.clone())
        .unwrap_or_else(|error| panic!("cycle {cycle} (seed {seed}): reopen failed: {error}"));
    let context = format!("cycle {cycle} (seed {seed}, {sync:?})");
    for hash in &acknowledged {
        assert!(
            db.get_change(hash).expect("lookup").is_some(),
            "{context}: acknowledged {hash} lost"
        );
    }
    totals.acknowledged_checked += acknowledged.len() as u64;

    // Our chain is a prefix of what we committed: nothing past a hole,
    // nothing invented.
    let mut committed = committed.into_inner().expect("lock");
    committed.sort();
    let held_seq = db.version_vector().expect("vector").seq(&author);
    for (seq, hash) in &committed {
        let held = db.get_change(hash).expect("lookup").is_some();
        if let Some(seq) = seq {
            assert_eq!(
                held,
                *seq <= held_seq,
                "{context}: our change at seq {seq} (held up to {held_seq})"
            );
        }
        if !held {
            totals.relaxed_lost += 1;
            assert_eq!(sync, SyncMode::Relaxed, "{context}: a durable commit lost");
        }
    }
    assert_eq!(db.pending_len(), 0, "{context}: the log has a hole");
    if db.recovery().view_rebuilt {
        totals.view_ahead += 1;
        assert_eq!(sync, SyncMode::Relaxed, "{context}: {:?}", db.recovery());
    }

    let report = db.verify(&mut |_, _| {}).expect("verify");
    assert!(
        report.ok(),
        "{context}: view differs from the log: {report:?}"
    );
    let clean = Db::join(temp.path().join("clean"), database, relaxed()).expect("join");
    let report = clean.apply(all_changes(&db)).expect("apply");
    assert!(report.refused.is_empty(), "{context}: {report:?}");
    assert_eq!(
        clean.state_hash().expect("hash"),
        db.state_hash().expect("hash"),
        "{context}: a clean replica of the same changes differs"
    );

    // The next commit extends our chain.
    let mut tx = db.transaction();
    tx.set("t", "after", "cycle", cycle as i64);
    let next = tx.commit().expect("commit after the power loss");
    let next = db.get_change(&next).expect("lookup").expect("held");
    assert_eq!(next.body().seq, held_seq + 1, "{context}");
    let reused: BTreeSet<_> = committed
        .iter()
        .filter(|(seq, hash)| *seq == Some(next.body().seq) && *hash != next.hash())
        .collect();
    if !reused.is_empty() {
        // Allowed only because that change was lost with the power; it must
        // not be anywhere now.
        for (_, hash) in &reused {
            assert!(db.get_change(hash).expect("lookup").is_none(), "{context}");
        }
    }
    assert_eq!(
        db.fork_cut(&author),
        None,
        "{context}: we forked our own key"
    );
    let report = db.verify(&mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{context}: after the next commit: {report:?}");
    drop(db);
    totals.cycles += 1;
}
