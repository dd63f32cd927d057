//! Convergence across checkpoints and trimming (issue 18): replicas that
//! trim at random checkpoints and receive the rest of the history in random
//! orders and batchings (with the settled changes sent again after the trim)
//! hold the state of a replica that kept everything, which equals the
//! reference model of the merge rules; so does a replica made from a
//! snapshot file that receives everything. No valid change is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use peers_engine::{Change, ChangeHash, Db};
use peers_tests::{SplitMix, all_changes, reference_model, relaxed, replica_of, rows, sync_into};
use proptest::prelude::*;

mod common;

use common::{OpSpec, TABLES, commit, op_spec};

#[derive(Debug, Clone)]
enum Action {
    /// Author commits one transaction of these ops.
    Write(usize, Vec<OpSpec>),
    /// Author `to` receives everything author `from` holds.
    See { to: usize, from: usize },
    /// The owner (author 0) receives everything author `from` holds (when
    /// not 0), then signs a checkpoint.
    Checkpoint { from: usize },
}

fn action(authors: usize) -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..authors, prop::collection::vec(op_spec(), 1..4)).prop_map(|(a, ops)| Action::Write(a, ops)),
        2 => (0..authors, 0..authors).prop_map(|(to, from)| Action::See { to, from }),
    ]
}

/// Runs the actions on one writer replica per author (author 0 the owner);
/// returns the owner, every change, and the checkpoints in order.
fn generate(dir: &Path, authors: usize, actions: &[Action]) -> (Db, Vec<Change>, Vec<ChangeHash>) {
    let first = Db::create(dir.join("w0"), relaxed()).expect("create");
    let mut writers = vec![first.clone()];
    for index in 1..authors {
        let writer = replica_of(&first, &dir.join(format!("w{index}")));
        sync_into(&first, &writer);
        writers.push(writer);
    }
    let mut checkpoints = Vec::new();
    for action in actions {
        match action {
            Action::Write(author, ops) => commit(&writers[*author], ops),
            Action::See { to, from } if to != from => sync_into(&writers[*from], &writers[*to]),
            Action::See { .. } => {}
            Action::Checkpoint { from } => {
                if *from != 0 {
                    sync_into(&writers[*from], &first);
                }
                checkpoints.push(first.checkpoint(&mut |_, _| {}).expect("checkpoint"));
            }
        }
    }
    for writer in &writers[1..] {
        sync_into(writer, &first);
    }
    let changes = all_changes(&first);
    (first, changes, checkpoints)
}

/// `roots` and every change they reach through prev and deps.
fn closure(by_hash: &BTreeMap<ChangeHash, Change>, roots: &[ChangeHash]) -> BTreeSet<ChangeHash> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<ChangeHash> = roots.to_vec();
    while let Some(hash) = stack.pop() {
        if seen.insert(hash) {
            stack.extend(by_hash[&hash].predecessors());
        }
    }
    seen
}

/// Applies `changes` to `db` shuffled and in random batches; asserts no
/// refusal.
fn deliver(db: &Db, mut changes: Vec<Change>, rng: &mut SplitMix) -> Result<(), TestCaseError> {
    rng.shuffle(&mut changes);
    let batch = 1 + rng.below(7);
    for chunk in changes.chunks(batch) {
        let report = db.apply(chunk.to_vec()).expect("apply");
        prop_assert!(report.refused.is_empty(), "refused: {:?}", report.refused);
    }
    Ok(())
}

/// Drops `db`, trims it at its standing checkpoint, reopens it, checks it.
fn trim_and_reopen(db: Db) -> Result<Db, TestCaseError> {
    let path = db.dir().to_owned();
    let before = db.state_hash().expect("state hash");
    let standing = db.standing_checkpoint(&mut |_, _| {}).expect("standing");
    drop(db);
    let report = Db::trim(&path, relaxed(), &mut |_, _, _| {}).expect("trim");
    prop_assert_eq!(Some(report.checkpoint), standing);
    let db = Db::open(&path, relaxed()).expect("reopen");
    prop_assert_eq!(db.trimmed_at().map(Change::hash), standing);
    prop_assert_eq!(db.state_hash().expect("state hash"), before);
    Ok(db)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: peers_tests::proptest_cases(12), ..ProptestConfig::default() })]

    #[test]
    fn trimmed_replicas_converge_with_a_full_one(
        authors in 3..5usize,
        actions in prop::collection::vec(action(4), 4..30),
        checkpoint_at in prop::collection::vec((any::<prop::sample::Index>(), 0..4usize), 1..3),
        seed in any::<u64>(),
    ) {
        let mut actions: Vec<Action> = actions
            .into_iter()
            .map(|action| match action {
                Action::Write(a, ops) => Action::Write(a % authors, ops),
                Action::See { to, from } => Action::See { to: to % authors, from: from % authors },
                other => other,
            })
            .collect();
        for (at, from) in checkpoint_at {
            let at = at.index(actions.len() + 1);
            actions.insert(at, Action::Checkpoint { from: from % authors });
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (owner, changes, checkpoints) = generate(dir.path(), authors, &actions);
        let by_hash: BTreeMap<ChangeHash, Change> =
            changes.iter().map(|change| (change.hash(), change.clone())).collect();
        let expected_rows = reference_model(&changes);
        let mut rng = SplitMix(seed);

        // The full replica: everything, in a random order and batching.
        let full = replica_of(&owner, &dir.path().join("full"));
        deliver(&full, changes.clone(), &mut rng)?;
        prop_assert_eq!(full.pending_len(), 0);
        let expected_hash = full.state_hash().expect("state hash");
        prop_assert_eq!(expected_hash, owner.state_hash().expect("state hash"));
        prop_assert_eq!(rows(&full, TABLES), expected_rows.clone());

        // Trimmed replicas: a prefix holding a checkpoint's closure (and a
        // random causally closed part of the rest), trimmed; then the rest
        // and the prefix again; maybe trimmed again at the last checkpoint
        // and given everything once more.
        for index in 0..2 {
            let replica = replica_of(&owner, &dir.path().join(format!("trimmed{index}")));
            let at = checkpoints[rng.below(checkpoints.len())];
            let mut roots = vec![at];
            for change in &changes {
                if rng.below(4) == 0 {
                    roots.push(change.hash());
                }
            }
            let prefix = closure(&by_hash, &roots);
            let (first, rest): (Vec<Change>, Vec<Change>) =
                changes.iter().cloned().partition(|change| prefix.contains(&change.hash()));
            deliver(&replica, first.clone(), &mut rng)?;
            prop_assert_eq!(replica.pending_len(), 0);
            let replica = trim_and_reopen(replica)?;
            let mut later = rest;
            later.extend(first.iter().filter(|_| rng.below(2) == 0).cloned());
            deliver(&replica, later, &mut rng)?;
            prop_assert_eq!(replica.pending_len(), 0);
            // A trimmed replica judges a later checkpoint on top of its
            // snapshot: the same one stands as on the full replica.
            let standing = replica.standing_checkpoint(&mut |_, _| {}).expect("standing");
            prop_assert_eq!(
                standing,
                full.standing_checkpoint(&mut |_, _| {}).expect("standing"),
                "replica {}", index
            );
            let replica = if index == 1 && standing != replica.trimmed_at().map(Change::hash) {
                let replica = trim_and_reopen(replica)?;
                deliver(&replica, changes.clone(), &mut rng)?;
                replica
            } else {
                replica
            };
            prop_assert_eq!(replica.pending_len(), 0);
            prop_assert_eq!(replica.state_hash().expect("state hash"), expected_hash, "replica {}", index);
            prop_assert_eq!(rows(&replica, TABLES), expected_rows.clone());
            let verified = replica.verify(&mut |_, _| {}).expect("verify");
            prop_assert!(verified.ok(), "{:?}", verified);
        }

        // A replica from the snapshot file at a random checkpoint, given
        // everything (the settled changes are duplicates).
        let at = checkpoints[rng.below(checkpoints.len())];
        let file = dir.path().join("at.peerssnap");
        let out = std::fs::File::create(&file).expect("create snapshot file");
        owner.write_snapshot(&at, out, &mut |_, _| {}).expect("write snapshot");
        let fresh = Db::create_from_snapshot(dir.path().join("fresh"), &file, relaxed())
            .expect("from snapshot");
        deliver(&fresh, changes.clone(), &mut rng)?;
        prop_assert_eq!(fresh.pending_len(), 0);
        prop_assert_eq!(fresh.state_hash().expect("state hash"), expected_hash);
        prop_assert_eq!(rows(&fresh, TABLES), expected_rows);
        let verified = fresh.verify(&mut |_, _| {}).expect("verify");
        prop_assert!(verified.ok(), "{:?}", verified);
    }
}
