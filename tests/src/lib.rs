//! Shared helpers of the scenario tests: replicas, exchange, and a reference
//! model of the merge rules (docs/DESIGN.md "Merge") written as plainly as possible.

use std::collections::BTreeMap;
use std::path::Path;

use peers_engine::{
    ApplyReport, Author, CHANGE_FORMAT_VERSION, CHECKPOINT_FORMAT_VERSION, Change, ChangeBody,
    ChangeHash, Db, FrontierEntry, Identity, Op, Options, Row, SnapshotHash, Stamp, SyncMode,
    Value,
};

/// Cases for a property test: `PROPTEST_CASES` when set (a nightly campaign
/// raises it: `PROPTEST_CASES=10000 cargo test --release -p peers-tests`),
/// else `default` (CI's small count).
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

/// Copies a fixture directory (recursively) to `to`, which is created.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A change signed by hand by `key`: it extends `prev` (or starts the
/// chain), names `deps`, and obeys the lamport rule; a checkpoint is
/// written as change format 3, anything else as 2.
pub fn craft(
    db: &Db,
    key: &Identity,
    prev: Option<&Change>,
    deps: &[&Change],
    ops: Vec<Op>,
) -> Change {
    let lamport_max = prev
        .iter()
        .chain(deps)
        .map(|change| change.lamport())
        .max()
        .unwrap_or(0);
    let mut dep_hashes: Vec<ChangeHash> = deps.iter().map(|change| change.hash()).collect();
    dep_hashes.sort_unstable();
    dep_hashes.dedup();
    let checkpoint = ops.iter().any(|op| matches!(op, Op::Checkpoint { .. }));
    key.sign(ChangeBody {
        version: if checkpoint {
            CHECKPOINT_FORMAT_VERSION
        } else {
            CHANGE_FORMAT_VERSION
        },
        database: db.database_id(),
        author: key.author(),
        seq: prev.map_or(1, |prev| prev.seq() + 1),
        prev: prev.map(Change::hash),
        deps: dep_hashes,
        lamport: lamport_max + 1,
        wall_ms: 1_700_000_000_000,
        ops,
    })
}

/// A checkpoint by `key` after `prev` (FORMAT.md "The Checkpoint op"),
/// naming `deps`, whose frontier is `prev` and `deps` and whose snapshot
/// hash is `snapshot` (whether or not it is the right one).
pub fn craft_checkpoint(
    db: &Db,
    key: &Identity,
    prev: &Change,
    deps: &[&Change],
    snapshot: SnapshotHash,
) -> Change {
    let mut frontier: Vec<FrontierEntry> = std::iter::once(prev)
        .chain(deps.iter().copied())
        .map(|change| FrontierEntry {
            author: change.author(),
            seq: change.seq(),
            hash: change.hash(),
        })
        .collect();
    frontier.sort();
    let op = Op::Checkpoint { frontier, snapshot };
    craft(db, key, Some(prev), deps, vec![op])
}

/// Options of a members-only database (`relaxed()` makes open ones).
pub fn members_only() -> Options {
    Options {
        members_only: true,
        ..relaxed()
    }
}

/// Options of a members-only replica that signs as `identity`.
pub fn signing_as(identity: &Identity) -> Options {
    Options {
        identity: Some(identity.clone()),
        ..members_only()
    }
}

/// A fixed identity per test role (its secret: 32 bytes `byte`), so
/// failures name the same keys each run.
pub fn key(byte: u8) -> Identity {
    Identity::from_secret_bytes([byte; 32])
}

/// Options for tests: fsync relaxed (a process crash still loses nothing),
/// and an open database (any key may write) for the tests of merging,
/// storage and sync; tests/tests/authorization.rs creates members-only ones.
pub fn relaxed() -> Options {
    Options {
        sync: SyncMode::Relaxed,
        members_only: false,
        ..Options::default()
    }
}

/// Every change `db` holds, in its log order.
pub fn all_changes(db: &Db) -> Vec<Change> {
    db.log()
        .expect("log")
        .map(|item| item.expect("log record").1)
        .collect()
}

/// Applies everything `from` holds to `to`; panics on any refusal.
pub fn sync_into(from: &Db, to: &Db) {
    let report = exchange(from, to);
    assert!(report.refused.is_empty(), "refused: {:?}", report.refused);
}

/// Applies what `from` holds and `to` lacks, as sync does, and returns the
/// report: unlike [`sync_into`], refusals are the caller's to check. Like a
/// session, `to` then asks `from` for what its pending changes wait on
/// (PROTOCOL.md "Want") while that brings something new.
pub fn exchange(from: &Db, to: &Db) -> ApplyReport {
    let since = to.version_vector().expect("version vector");
    let changes: Vec<Change> = from
        .changes_since(&since)
        .expect("changes since")
        .map(|change| change.expect("change"))
        .collect();
    let mut report = to.apply(changes).expect("apply");
    loop {
        let missing = to.missing();
        if missing.is_empty() {
            break;
        }
        let found = from.changes_by_hash(&missing).expect("changes by hash");
        let more = to.apply(found).expect("apply");
        let progress = !more.accepted.is_empty();
        report.accepted.extend(more.accepted);
        report.inert.extend(more.inert);
        report.duplicates.extend(more.duplicates);
        report.refused.extend(more.refused);
        report.pending = more.pending;
        if !progress {
            break;
        }
    }
    report
}

/// A `Set` op.
pub fn set(table: &str, row: &str, field: &str, value: impl Into<Value>) -> Op {
    Op::Set {
        table: table.into(),
        row: row.into(),
        field: field.into(),
        value: value.into(),
    }
}

/// An `Increment` op.
pub fn increment(table: &str, row: &str, field: &str, delta: i64) -> Op {
    Op::Increment {
        table: table.into(),
        row: row.into(),
        field: field.into(),
        delta,
    }
}

/// A `Delete` op.
pub fn delete(table: &str, row: &str) -> Op {
    Op::Delete {
        table: table.into(),
        row: row.into(),
    }
}

/// Commits `ops` (Set, Delete, Increment) as one transaction of `db`. A
/// replica refuses to sign an increment of a field that holds a non-counter
/// value (it would do nothing): such an op of a generated script becomes a
/// set of a counter to its delta, so each call still signs one change.
pub fn commit_ops(db: &Db, ops: &[Op]) -> ChangeHash {
    let mut ops = ops.to_vec();
    loop {
        match transaction_with(db, &ops).commit() {
            Ok(hash) => return hash,
            Err(peers_engine::Error::NotACounter {
                table, row, field, ..
            }) => {
                let refused = ops
                    .iter()
                    .position(|op| {
                        matches!(op, Op::Increment { table: t, row: r, field: f, .. }
                            if *t == table && *r == row && *f == field)
                    })
                    .expect("the refused increment is in the transaction");
                if let Op::Increment { delta, .. } = ops[refused] {
                    ops[refused] = set(&table, &row, &field, Value::Counter(delta));
                }
            }
            Err(error) => panic!("commit: {error}"),
        }
    }
}

/// A transaction of `db` holding `ops` (Set, Delete, Increment), not yet
/// committed.
pub fn transaction_with<'a>(db: &'a Db, ops: &[Op]) -> peers_engine::Transaction<'a> {
    let mut tx = db.transaction();
    for op in ops {
        match op {
            Op::Set {
                table,
                row,
                field,
                value,
            } => tx.set(table, row, field, value.clone()),
            Op::Delete { table, row } => tx.delete(table, row),
            Op::Increment {
                table,
                row,
                field,
                delta,
            } => tx.increment(table, row, field, *delta),
            other => panic!("not a transaction op: {other:?}"),
        };
    }
    tx
}

/// A new replica of `db`'s database holding its genesis change (a replica
/// writes only once it knows the genesis).
pub fn replica_of(db: &Db, dir: &Path) -> Db {
    let replica = Db::join(dir, db.database_id(), relaxed()).expect("join");
    let genesis = db
        .get_change(&peers_engine::ChangeHash(db.database_id().0))
        .expect("read genesis")
        .expect("db holds its genesis");
    let report = replica.apply(vec![genesis]).expect("apply genesis");
    assert!(report.refused.is_empty(), "{report:?}");
    replica
}

/// Every row of every table in `tables`, from the engine.
pub fn rows(db: &Db, tables: &[&str]) -> BTreeMap<(String, String), Row> {
    let mut out = BTreeMap::new();
    for table in tables {
        for item in db.scan(table) {
            let (row, fields) = item.expect("scan");
            out.insert((table.to_string(), row), fields);
        }
    }
    out
}

/// The merge rules computed from scratch over a set of valid changes.
pub fn reference_model(changes: &[Change]) -> BTreeMap<(String, String), Row> {
    let mut ops: Vec<(Stamp, &Op)> = Vec::new();
    for change in changes {
        for (index, op) in change.ops().iter().enumerate() {
            let stamp = Stamp {
                lamport: change.lamport(),
                author: change.author(),
                op_index: index as u32,
            };
            ops.push((stamp, op));
        }
    }
    let mut deletes: BTreeMap<(String, String), Stamp> = BTreeMap::new();
    for (stamp, op) in &ops {
        if let Op::Delete { table, row } = op {
            let entry = deletes
                .entry((table.clone(), row.clone()))
                .or_insert(*stamp);
            *entry = (*entry).max(*stamp);
        }
    }
    let zero = Stamp {
        lamport: 0,
        author: Author([0; 32]),
        op_index: 0,
    };
    let deleted_at = |table: &str, row: &str| {
        deletes
            .get(&(table.to_owned(), row.to_owned()))
            .copied()
            .unwrap_or(zero)
    };
    let mut sets: BTreeMap<(String, String, String), (Stamp, Value)> = BTreeMap::new();
    for (stamp, op) in &ops {
        if let Op::Set {
            table,
            row,
            field,
            value,
        } = op
            && *stamp > deleted_at(table, row)
        {
            let key = (table.clone(), row.clone(), field.clone());
            if sets.get(&key).is_none_or(|(current, _)| current < stamp) {
                sets.insert(key, (*stamp, value.clone()));
            }
        }
    }
    let mut counters: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for (stamp, op) in &ops {
        if let Op::Increment {
            table,
            row,
            field,
            delta,
        } = op
        {
            let key = (table.clone(), row.clone(), field.clone());
            let set_stamp = sets.get(&key).map_or(zero, |(stamp, _)| *stamp);
            if *stamp > deleted_at(table, row) && *stamp > set_stamp {
                let sum = counters.entry(key).or_insert(0);
                *sum = sum.wrapping_add(*delta);
            }
        }
    }
    let mut out: BTreeMap<(String, String), Row> = BTreeMap::new();
    for ((table, row, field), (_, value)) in &sets {
        let value = match value {
            Value::Counter(base) => Value::Counter(
                base.wrapping_add(
                    counters
                        .get(&(table.clone(), row.clone(), field.clone()))
                        .copied()
                        .unwrap_or(0),
                ),
            ),
            other => other.clone(),
        };
        out.entry((table.clone(), row.clone()))
            .or_default()
            .insert(field.clone(), value);
    }
    for ((table, row, field), sum) in counters {
        if !sets.contains_key(&(table.clone(), row.clone(), field.clone())) {
            out.entry((table, row))
                .or_default()
                .insert(field, Value::Counter(sum));
        }
    }
    out
}

/// The reference model of authorization (docs/FORMAT.md "Authorization").
pub mod authorization_model;

/// Runs authorization scripts on per-key replicas (the proptest's and the
/// fuzz target's shared runner).
pub mod authorization_runner;

/// libFuzzer targets, one module each, listed in [`fuzz_targets::TARGETS`];
/// also run over fuzz/seeds by tests/fuzz_corpus.rs.
pub mod fuzz_targets;

/// splitmix64: a small seeded generator for orders, batchings and mutations.
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `bound` (which must not be 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    /// Fisher-Yates shuffle of `items`, drawing from this generator (so
    /// that what is drawn next, batch sizes say, follows on from it).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            let other = self.below(index + 1);
            items.swap(index, other);
        }
    }
}

/// Deterministic Fisher-Yates shuffle driven by [`SplitMix`].
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    SplitMix(seed).shuffle(items);
}
