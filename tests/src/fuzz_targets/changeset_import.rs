//! The `changeset_import` target: a change-set file, read and applied as
//! `peers import` does. [`signed_import`](super::signed_import) runs the
//! same import (this module's [`apply_to_replica`]) on re-signed records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};

use peers_engine::{Change, ChangeHash, ChangeSetReader, ChangeSetWriter, Db, Op, StateHash};

use super::fixtures::{join_fixture, scratch_dir};
use crate::{reference_model, rows};

/// A replica of the fixture database, reused across calls while no call
/// changes it (so every call starts from the same empty state).
struct Replica {
    db: Db,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn fresh() -> Replica {
        let dir = scratch_dir();
        let db = join_fixture(&dir.path().join("replica"), 3);
        Replica { db, _dir: dir }
    }
}

static REPLICA: Mutex<Option<Replica>> = Mutex::new(None);

/// `ChangeSetReader` then `Db::apply_encoded`, as `peers import` does, on
/// arbitrary bytes: never panics; a file that reads cleanly writes back to
/// the same bytes; applying never fails, leaves the state hash alone when
/// nothing is accepted, and otherwise gives the reference model's rows.
pub fn changeset_import(data: &[u8]) {
    let Some(records) = read_changeset(data) else {
        return;
    };
    apply_to_replica(&records, |_, _| {});
}

/// The records of a change-set file (as many as read before an error), or
/// `None` without a valid header. Checks the reader: fused after its end or
/// an error, and a file that reads cleanly writes back byte for byte.
pub(super) fn read_changeset(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut reader = ChangeSetReader::new(data).ok()?;
    let mut records = Vec::new();
    let mut clean = true;
    for item in reader.by_ref() {
        match item {
            Ok(record) => records.push(record),
            Err(_) => clean = false,
        }
    }
    assert!(
        reader.next().is_none(),
        "the reader stops after its end or an error"
    );
    let decoded: Vec<Change> = records
        .iter()
        .filter_map(|r| Change::decode(r).ok())
        .collect();
    if clean && decoded.len() == records.len() {
        assert_eq!(reader.bytes_read(), data.len() as u64);
        let mut writer = ChangeSetWriter::new(Vec::new(), reader.database()).expect("header");
        for change in &decoded {
            writer.write(change).expect("write to memory");
        }
        assert_eq!(
            writer.finish().expect("finish"),
            data,
            "a clean file writes back the same"
        );
    }
    Some(records)
}

/// Applies `records` to the (empty) per-process replica and checks the
/// result; when it accepted something, `also` checks more, given the
/// changes it holds and its state hash.
pub(super) fn apply_to_replica(records: &[Vec<u8>], also: impl FnOnce(&[Change], StateHash)) {
    let decoded: Vec<Change> = records
        .iter()
        .filter_map(|r| Change::decode(r).ok())
        .collect();
    let mut slot = REPLICA.lock().unwrap_or_else(PoisonError::into_inner);
    let replica = slot.get_or_insert_with(Replica::fresh);
    let before = replica.db.state_hash().expect("state hash");
    let report = replica
        .db
        .apply_encoded(records)
        .expect("bad input is refused, never an error");
    let after = replica.db.state_hash().expect("state hash");
    if report.accepted.is_empty() {
        assert_eq!(
            before, after,
            "nothing accepted, nothing changed: {report:?}"
        );
    } else {
        // The replica was empty, so it holds exactly what it accepted.
        let by_hash: BTreeMap<ChangeHash, &Change> =
            decoded.iter().map(|c| (c.hash(), c)).collect();
        let held: Vec<Change> = report.accepted.iter().map(|h| by_hash[h].clone()).collect();
        check_model(&replica.db, &held);
        also(&held, after);
    }
    if !report.accepted.is_empty() || replica.db.pending_len() > 0 {
        *slot = None;
    }
}

/// The changes that stay in the view: an author who has two held changes
/// with one seq is cut at the lowest such seq minus one.
pub fn valid_after_cuts(held: &[Change]) -> Vec<Change> {
    let mut seen: BTreeMap<(peers_engine::Author, u64), ChangeHash> = BTreeMap::new();
    let mut cuts: BTreeMap<peers_engine::Author, u64> = BTreeMap::new();
    for change in held {
        let key = (change.author(), change.seq());
        if seen
            .insert(key, change.hash())
            .is_some_and(|h| h != change.hash())
        {
            let cut = cuts.entry(change.author()).or_insert(u64::MAX);
            *cut = (*cut).min(change.seq() - 1);
        }
    }
    held.iter()
        .filter(|c| cuts.get(&c.author()).is_none_or(|cut| c.seq() <= *cut))
        .cloned()
        .collect()
}

fn check_model(db: &Db, held: &[Change]) {
    let valid = valid_after_cuts(held);
    let tables = tables_of(held);
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    assert_eq!(
        format!("{:?}", rows(db, &tables)),
        format!("{:?}", reference_model(&valid)),
        "held changes merge as the reference model says (after cuts)"
    );
}

fn tables_of(changes: &[Change]) -> BTreeSet<String> {
    changes
        .iter()
        .flat_map(|change| change.ops().iter().filter_map(Op::row))
        .map(|(table, _)| table.to_owned())
        .collect()
}
