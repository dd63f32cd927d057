//! The `merge_model` target: a program of commits, syncs and reopens by
//! three writers, then the merge against [`crate::reference_model`]; and the
//! [`program`] builders of its seeds.

use std::collections::BTreeMap;

use peers_engine::{Change, Db, Value};

use super::SplitMix;
use super::fixtures::{Program, batches, fnv1a, genesis, join_fixture, options, scratch_dir};
use crate::{all_changes, reference_model, rows, sync_into};

/// Most program steps [`merge_model`] runs, so one input takes milliseconds.
pub const MERGE_STEPS_MAX: usize = 64;
/// Most reopens in one [`merge_model`] program (each costs a RocksDB open).
pub const MERGE_REOPENS_MAX: usize = 2;
/// Writers in [`merge_model`].
pub const AUTHORS: usize = 3;
/// Table names [`merge_model`] writes.
pub const TABLES: &[&str] = &["t0", "t1"];
const ROWS: &[&str] = &["r0", "r1", "r2"];
const FIELDS: &[&str] = &["f0", "f1"];

/// A value from a byte: every variant, NaN and the extremes included.
fn value(byte: u8) -> Value {
    let small = i64::from(byte as i8);
    match byte % 10 {
        0 => Value::Null,
        1 => Value::Bool(byte & 0x10 != 0),
        2 => Value::Int(small),
        3 => Value::Uint(u64::MAX - u64::from(byte)),
        4 => Value::F64(if byte & 0x10 != 0 { f64::NAN } else { -0.0 }),
        5 => Value::Str(format!("s{}", byte >> 4)),
        6 => Value::Bytes(vec![byte; usize::from(byte >> 5)]),
        7 => Value::Timestamp(small),
        8 => Value::Counter(delta(byte)),
        _ => Value::F64(f64::from(byte) / 4.0),
    }
}

/// A counter delta or base; 0x7f and 0x80 stand for the i64 extremes (wrapping).
fn delta(byte: u8) -> i64 {
    match byte {
        0x7f => i64::MAX,
        0x80 => i64::MIN,
        other => i64::from(other as i8),
    }
}

/// Three writers, each with its own replica of the fixture database.
pub struct Model {
    /// Writer `i` signs as [`identity`](super::identity)`(i)`; writer 0 holds the genesis.
    /// Declared before `dir`: databases close before their directory goes.
    pub writers: Vec<Db>,
    /// Holds `w0`, `w1`, `w2` (and `fresh` during the check).
    pub dir: tempfile::TempDir,
    reopens: usize,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    /// Three writers holding only the genesis (a replica writes once it
    /// knows the genesis).
    pub fn new() -> Model {
        let dir = scratch_dir();
        let writers: Vec<Db> = (0..AUTHORS as u8)
            .map(|index| join_fixture(&dir.path().join(format!("w{index}")), index))
            .collect();
        for writer in &writers {
            let report = writer.apply(vec![genesis()]).expect("apply genesis");
            assert_eq!(report.accepted.len(), 1, "{report:?}");
        }
        Model {
            writers,
            dir,
            reopens: 0,
        }
    }

    /// One step. Code bits: 0-2 the kind (0-4 commit, 5-6 sync, 7 reopen),
    /// 3-4 the author, 5-7 the author synced from. Reopens past
    /// [`MERGE_REOPENS_MAX`] do nothing.
    fn step(&mut self, code: u8, program: &mut Program<'_>) {
        let author = usize::from(code >> 3) % AUTHORS;
        let other = usize::from(code >> 5) % AUTHORS;
        match code & 7 {
            0..=4 => self.commit(author, program),
            5 | 6 if author != other => sync_into(&self.writers[other], &self.writers[author]),
            5 | 6 => {}
            _ if self.reopens < MERGE_REOPENS_MAX => self.reopen(author),
            _ => {}
        }
    }

    /// A transaction of 1-3 ops, each two bytes: what and where, then a value or delta.
    fn commit(&self, author: usize, program: &mut Program<'_>) {
        let count = 1 + usize::from(program.next_or_zero()) % 3;
        let mut tx = self.writers[author].transaction();
        for _ in 0..count {
            let (what, argument) = (program.next_or_zero(), program.next_or_zero());
            let table = TABLES[usize::from(what >> 2) % TABLES.len()];
            let row = ROWS[usize::from(what >> 3) % ROWS.len()];
            let field = FIELDS[usize::from(what >> 5) % FIELDS.len()];
            match what & 3 {
                0 => tx.set(table, row, field, value(argument)),
                1 => tx.delete(table, row),
                2 => tx.increment(table, row, field, delta(argument)),
                _ => tx.set(table, row, field, Value::Counter(delta(argument))),
            };
        }
        match tx.commit() {
            // An increment of a field that holds a non-counter value does
            // nothing: its replica refuses to sign it (nothing changes).
            Ok(_) | Err(peers_engine::Error::NotACounter { .. }) => {}
            Err(error) => panic!("a transaction of valid ops commits: {error}"),
        }
    }

    /// Closes and reopens a writer: replay from the log.
    fn reopen(&mut self, author: usize) {
        self.reopens += 1;
        let old = self.writers.remove(author);
        let before = old.state_hash().expect("state hash");
        let path = old.dir().to_owned();
        drop(old);
        let db = Db::open(&path, options(author as u8)).expect("reopen a writer");
        assert_eq!(
            db.state_hash().expect("state hash"),
            before,
            "reopen keeps the state"
        );
        self.writers.insert(author, db);
    }

    /// Runs a program of at most [`MERGE_STEPS_MAX`] steps.
    pub fn run(&mut self, data: &[u8]) {
        let mut program = Program { bytes: data };
        for _ in 0..MERGE_STEPS_MAX {
            let Some(code) = program.next() else {
                break;
            };
            self.step(code, &mut program);
        }
    }

    /// Every change any writer holds, by hash.
    pub fn all_changes(&self) -> Vec<Change> {
        let mut all = BTreeMap::new();
        for writer in &self.writers {
            for change in all_changes(writer) {
                all.insert(change.hash(), change);
            }
        }
        all.into_values().collect()
    }

    /// A fresh replica gets every change in a shuffled order and random
    /// batches; it and the fully synced writer 0 must both hold the reference
    /// model's rows, the same state hash, and nothing pending.
    fn check(&self, random: &mut SplitMix) {
        let mut changes = self.all_changes();
        random.shuffle(&mut changes);
        let fresh = join_fixture(&self.dir.path().join("fresh"), 3);
        for batch in batches(&changes, random) {
            let report = fresh.apply(batch.to_vec()).expect("apply");
            assert!(report.refused.is_empty(), "refused: {report:?}");
        }
        assert_eq!(fresh.pending_len(), 0, "every predecessor arrived");
        let expected = format!("{:?}", reference_model(&changes));
        assert_eq!(
            format!("{:?}", rows(&fresh, TABLES)),
            expected,
            "fresh replica vs model"
        );
        let state = fresh.state_hash().expect("state hash");
        let again = changes[random.below(changes.len())..].to_vec();
        let report = fresh.apply(again).expect("apply duplicates");
        assert!(
            report.accepted.is_empty(),
            "duplicates are not new: {report:?}"
        );
        assert_eq!(
            fresh.state_hash().expect("state hash"),
            state,
            "duplicates change nothing"
        );
        for other in &self.writers[1..] {
            sync_into(other, &self.writers[0]);
        }
        let writer = &self.writers[0];
        assert_eq!(
            format!("{:?}", rows(writer, TABLES)),
            expected,
            "synced writer vs model"
        );
        assert_eq!(
            writer.state_hash().expect("state hash"),
            state,
            "writer vs fresh replica"
        );
    }
}

/// The merge on a program of at most [`MERGE_STEPS_MAX`] steps by three
/// writers (commits of Set, Delete, Increment and counter Sets on a few
/// tables, rows and fields; syncs between writers; reopens), then a check
/// against [`reference_model`] in a receive order chosen by the input.
pub fn merge_model(data: &[u8]) {
    let mut model = Model::new();
    model.run(data);
    model.check(&mut SplitMix(fnv1a(data)));
}

/// Builders of [`merge_model`] programs (the inverse of its decoding), for seeds.
pub mod program {
    /// Op kind: set a field to a value chosen by the argument byte.
    pub const SET: u8 = 0;
    /// Op kind: delete the row.
    pub const DELETE: u8 = 1;
    /// Op kind: increment the field by the argument (0x7f and 0x80: the i64 extremes).
    pub const INCREMENT: u8 = 2;
    /// Op kind: set the field to a counter with the argument as base.
    pub const SET_COUNTER: u8 = 3;

    /// The "what" byte of an op: kind, table 0-1, row 0-2, field 0-1.
    pub fn what(kind: u8, table: u8, row: u8, field: u8) -> u8 {
        kind | table << 2 | row << 3 | field << 5
    }

    /// Author 0-2 commits 1-3 ops, each `(what, argument)`.
    pub fn commit(author: u8, ops: &[(u8, u8)]) -> Vec<u8> {
        assert!((1..=3).contains(&ops.len()), "1 to 3 ops");
        let mut bytes = vec![author << 3, (ops.len() - 1) as u8];
        for (what, argument) in ops {
            bytes.extend_from_slice(&[*what, *argument]);
        }
        bytes
    }

    /// Author `to` receives everything author `from` holds.
    pub fn sync(to: u8, from: u8) -> Vec<u8> {
        vec![5 | to << 3 | from << 5]
    }

    /// Author closes and reopens its database.
    pub fn reopen(author: u8) -> Vec<u8> {
        vec![7 | author << 3]
    }
}
