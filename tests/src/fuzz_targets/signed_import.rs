//! The `signed_import` target: [`changeset_import`](super::changeset_import)
//! by a hostile peer that holds the fixture keys.

use std::sync::OnceLock;

use peers_engine::{Change, Identity, StateHash};

use super::SplitMix;
use super::changeset_import::{apply_to_replica, read_changeset};
use super::fixtures::{batches, fnv1a, identity, join_fixture, scratch_dir};

/// [`changeset_import`](super::changeset_import) by a hostile peer that
/// holds the fixture keys: every record that decodes and names a fixture
/// author is re-signed first, so forged seqs, prevs, deps, lamports and forks
/// (equivocations) reach the engine's admission rules instead of stopping at
/// the signature. Besides [`changeset_import`](super::changeset_import)'s
/// checks: rows equal the reference model over the changes that survive the
/// equivocation cuts (docs/DESIGN.md "Changes"), and a second replica that
/// receives the accepted changes in another order and batching holds the same
/// state hash.
pub fn signed_import(data: &[u8]) {
    let Some(records) = read_changeset(data) else {
        return;
    };
    let records: Vec<Vec<u8>> = records.iter().map(|record| resigned(record)).collect();
    apply_to_replica(&records, |held, state| {
        check_other_order(held, state, &mut SplitMix(fnv1a(data)));
    });
}

/// The record signed again by its author, if it decodes and its author is
/// a fixture identity (ed25519 is deterministic: a genuine change comes back
/// unchanged); else the record as is.
fn resigned(record: &[u8]) -> Vec<u8> {
    static KEYS: OnceLock<Vec<Identity>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| (0..4).map(identity).collect());
    let Ok(change) = Change::decode(record) else {
        return record.to_vec();
    };
    match keys.iter().find(|key| key.author() == change.author()) {
        Some(key) => key.sign(change.body().clone()).bytes().to_vec(),
        None => record.to_vec(),
    }
}

/// A second empty replica receives `held` shuffled, in batches of 1-4: it
/// accepts them all and ends with the same state hash.
fn check_other_order(held: &[Change], state: StateHash, random: &mut SplitMix) {
    let mut changes = held.to_vec();
    random.shuffle(&mut changes);
    let dir = scratch_dir();
    let other = join_fixture(&dir.path().join("other"), 3);
    let mut accepted = 0;
    for batch in batches(&changes, random) {
        let report = other.apply(batch.to_vec()).expect("apply");
        assert!(report.refused.is_empty(), "refused: {report:?}");
        accepted += report.accepted.len();
    }
    assert_eq!(accepted, held.len(), "every held change is accepted again");
    assert_eq!(other.pending_len(), 0);
    assert_eq!(
        other.state_hash().expect("state hash"),
        state,
        "the same changes in another order give the same state"
    );
}
