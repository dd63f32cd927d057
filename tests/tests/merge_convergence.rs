//! Convergence: replicas that apply the same set of changes, in any order,
//! with duplicates, in any batching, hold byte-identical state, equal to the
//! reference model of the merge rules. Changes come from 3-4 authors who
//! each commit after seeing a random subset of the others' changes, so deps
//! and lamports are realistic and writes are concurrent.

use peers_engine::{Change, Db};
use peers_tests::{all_changes, reference_model, relaxed, replica_of, rows, shuffle, sync_into};
use proptest::prelude::*;

mod common;

use common::{OpSpec, TABLES, commit, op_spec};

#[derive(Debug, Clone)]
enum Action {
    /// Author commits one transaction of these ops.
    Write(usize, Vec<OpSpec>),
    /// Author `to` receives everything author `from` holds.
    See { to: usize, from: usize },
}

fn action(authors: usize) -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..authors, prop::collection::vec(op_spec(), 1..4)).prop_map(|(a, ops)| Action::Write(a, ops)),
        2 => (0..authors, 0..authors).prop_map(|(to, from)| Action::See { to, from }),
    ]
}

/// Runs the actions on one writer replica per author; returns every change.
fn generate(dir: &std::path::Path, authors: usize, actions: &[Action]) -> (Db, Vec<Change>) {
    let first = Db::create(dir.join("w0"), relaxed()).expect("create");
    let mut writers = vec![first.clone()];
    for index in 1..authors {
        let writer = replica_of(&first, &dir.join(format!("w{index}")));
        sync_into(&first, &writer);
        writers.push(writer);
    }
    for action in actions {
        match action {
            Action::Write(author, ops) => commit(&writers[*author], ops),
            Action::See { to, from } if to != from => sync_into(&writers[*from], &writers[*to]),
            Action::See { .. } => {}
        }
    }
    for writer in &writers[1..] {
        sync_into(writer, &first);
    }
    let changes = all_changes(&first);
    (first, changes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: peers_tests::proptest_cases(24), ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_in_any_order(
        authors in 3..5usize,
        actions in prop::collection::vec(action(4), 4..40),
        orders in prop::collection::vec((any::<u64>(), 1..8usize, 0..8usize), 3),
    ) {
        let actions: Vec<Action> = actions
            .into_iter()
            .map(|action| match action {
                Action::Write(a, ops) => Action::Write(a % authors, ops),
                Action::See { to, from } => Action::See { to: to % authors, from: from % authors },
            })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let (complete, changes) = generate(dir.path(), authors, &actions);
        let expected_rows = reference_model(&changes);
        let expected_hash = complete.state_hash().expect("state hash");
        prop_assert_eq!(rows(&complete, TABLES), expected_rows.clone());
        for (index, (seed, batch, duplicates)) in orders.into_iter().enumerate() {
            let replica = replica_of(&complete, &dir.path().join(format!("replica{index}")));
            // Duplicates of changes from anywhere in the history, mixed in
            // anywhere (a copy may arrive before its original, and the
            // original is then the duplicate).
            let mut shuffled = changes.clone();
            let from = (seed % changes.len() as u64) as usize;
            shuffled.extend(changes.iter().cycle().skip(from).take(duplicates).cloned());
            shuffle(&mut shuffled, seed);
            for chunk in shuffled.chunks(batch) {
                let report = replica.apply(chunk.to_vec()).expect("apply");
                prop_assert!(report.refused.is_empty(), "refused: {:?}", report.refused);
            }
            prop_assert_eq!(replica.pending_len(), 0);
            prop_assert_eq!(replica.state_hash().expect("state hash"), expected_hash);
            prop_assert_eq!(rows(&replica, TABLES), expected_rows.clone());
        }
    }
}
