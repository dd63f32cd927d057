//! What the convergence property tests share: the ops a generated
//! transaction holds, their proptest strategy, and committing them.

use peers_engine::{Db, Value};
use proptest::prelude::*;

/// The tables the generated ops write.
pub const TABLES: &[&str] = &["notes", "tasks"];

/// One op of a generated transaction: table, row, field (indexes) and value.
#[derive(Debug, Clone)]
pub enum OpSpec {
    Set(usize, usize, usize, i64),
    SetCounter(usize, usize, usize, i64),
    Delete(usize, usize),
    Increment(usize, usize, usize, i64),
}

/// The strategy of one op.
pub fn op_spec() -> impl Strategy<Value = OpSpec> {
    prop_oneof![
        4 => (0..2usize, 0..3usize, 0..3usize, -3..3i64).prop_map(|(t, r, f, v)| OpSpec::Set(t, r, f, v)),
        1 => (0..2usize, 0..3usize, 0..3usize, -3..3i64).prop_map(|(t, r, f, v)| OpSpec::SetCounter(t, r, f, v)),
        1 => (0..2usize, 0..3usize).prop_map(|(t, r)| OpSpec::Delete(t, r)),
        2 => (0..2usize, 0..3usize, 0..3usize, -5..5i64).prop_map(|(t, r, f, d)| OpSpec::Increment(t, r, f, d)),
    ]
}

/// Commits `ops` as one transaction of `db` (nothing when the writer
/// refuses an increment of a non-counter field).
pub fn commit(db: &Db, ops: &[OpSpec]) {
    let mut tx = db.transaction();
    for op in ops {
        let name = |table: usize, row: usize| (TABLES[table], format!("r{row}"));
        match *op {
            OpSpec::Set(t, r, f, v) => {
                let (table, row) = name(t, r);
                tx.set(table, &row, &format!("f{f}"), Value::Int(v));
            }
            OpSpec::SetCounter(t, r, f, v) => {
                let (table, row) = name(t, r);
                tx.set(table, &row, &format!("f{f}"), Value::Counter(v));
            }
            OpSpec::Delete(t, r) => {
                let (table, row) = name(t, r);
                tx.delete(table, &row);
            }
            OpSpec::Increment(t, r, f, d) => {
                let (table, row) = name(t, r);
                tx.increment(table, &row, &format!("f{f}"), d);
            }
        }
    }
    match tx.commit() {
        // The writer refuses an increment of a field holding a non-counter
        // value (it would do nothing); the action signs nothing.
        Ok(_) | Err(peers_engine::Error::NotACounter { .. }) => {}
        Err(error) => panic!("commit: {error}"),
    }
}
