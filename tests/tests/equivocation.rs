//! Equivocation: one key K, used on two replicas E1 and E2, signs two
//! different changes for seq 3 (branch A on E1; branch B, seq 3 and 4, on
//! E2), touching the same rows and fields as the owner O. docs/DESIGN.md
//! "Changes": every replica that holds both cuts K at seq 2, the view
//! becomes what it would be had K's seq >= 3 never been applied, the log
//! keeps them, and O's change that lists a cut change in `deps` stays valid.
//! The verdict depends only on which changes a replica holds, never on the
//! order they came in.

use std::collections::{BTreeMap, BTreeSet};

use peers_engine::{
    ApplyReport, Change, ChangeHash, Db, Error, Identity, Op, Options, Row, StateHash, Value,
};
use peers_tests::{
    all_changes, commit_ops, delete, increment, reference_model, relaxed, replica_of, rows, set,
    shuffle, sync_into,
};
use proptest::prelude::*;
use tempfile::TempDir;

const TABLES: &[&str] = &["notes", "tasks"];

/// The ops of O_a, K1, K2, K3a, K3b, K4b and O_b, in that order.
type ScenarioOps = [Vec<Op>; 7];

/// The change set of one equivocation, and the replicas that wrote it.
struct Scenario {
    dir: TempDir,
    owner: Db,
    e1: Db,
    e2: Db,
    key: Identity,
    /// O's genesis, O_a, K1, K2: what both branches share.
    shared: Vec<Change>,
    /// K3a, written on E1.
    branch_a: Change,
    /// K3b and K4b, written on E2.
    branch_b: Vec<Change>,
    /// O_b, written by O after syncing from E2: its deps name K4b.
    owner_late: Change,
    /// Every change: O's log (a causal order), then K3a.
    all: Vec<Change>,
}

impl Scenario {
    /// K's changes from the fork on: cut from every view that holds the fork.
    fn cut(&self) -> BTreeSet<ChangeHash> {
        self.all
            .iter()
            .filter(|change| self.is_cut(change))
            .map(Change::hash)
            .collect()
    }

    fn is_cut(&self, change: &Change) -> bool {
        change.author() == self.key.author() && change.seq() >= 3
    }

    fn valid(&self) -> Vec<Change> {
        self.all
            .iter()
            .filter(|change| !self.is_cut(change))
            .cloned()
            .collect()
    }

    fn replica(&self, name: &str) -> Db {
        replica_of(&self.owner, &self.dir.path().join(name))
    }
}

fn commit(db: &Db, ops: &[Op]) -> Change {
    let hash = commit_ops(db, ops);
    db.get_change(&hash).expect("lookup").expect("held")
}

/// O writes; E1 (key K) syncs and writes K1, K2; E2 (key K) syncs from E1;
/// E1 writes K3a; E2 writes K3b, K4b; O syncs from E2 and writes O_b.
fn build(ops: &ScenarioOps) -> Scenario {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = Db::create(dir.path().join("owner"), relaxed()).expect("create");
    let key = Identity::generate();
    let as_k = || Options {
        identity: Some(key.clone()),
        ..relaxed()
    };
    let e1 = Db::join(dir.path().join("e1"), owner.database_id(), as_k()).expect("join");
    let e2 = Db::join(dir.path().join("e2"), owner.database_id(), as_k()).expect("join");
    assert_eq!(e1.author(), key.author());
    assert_eq!(e2.author(), key.author());
    let o_a = commit(&owner, &ops[0]);
    sync_into(&owner, &e1);
    let k1 = commit(&e1, &ops[1]);
    let k2 = commit(&e1, &ops[2]);
    sync_into(&e1, &e2);
    let branch_a = commit(&e1, &ops[3]);
    let k3b = commit(&e2, &ops[4]);
    let k4b = commit(&e2, &ops[5]);
    assert_eq!((branch_a.seq(), k3b.seq(), k4b.seq()), (3, 3, 4));
    assert_ne!(branch_a.hash(), k3b.hash());
    sync_into(&e2, &owner);
    let owner_late = commit(&owner, &ops[6]);
    assert!(
        owner_late.body().deps.contains(&k4b.hash()),
        "O_b names branch B in its deps"
    );
    let mut all = all_changes(&owner);
    let genesis = all[0].clone();
    all.push(branch_a.clone());
    Scenario {
        dir,
        owner,
        e1,
        e2,
        key,
        shared: vec![genesis, o_a, k1, k2],
        branch_a,
        branch_b: vec![k3b, k4b],
        owner_late,
        all,
    }
}

/// Fixed ops: branch A and B both rewrite fields O and K1/K2 wrote, delete
/// rows O later writes to, and increment a counter O increments.
fn fixed_ops() -> ScenarioOps {
    [
        // O_a
        vec![
            set("notes", "r1", "title", "o"),
            set("notes", "r2", "n", Value::Counter(10)),
            set("tasks", "t1", "done", false),
        ],
        // K1, K2
        vec![
            set("notes", "r1", "title", "k1"),
            increment("notes", "r2", "n", 1),
        ],
        vec![
            set("notes", "r3", "x", "k2"),
            set("tasks", "t1", "done", true),
        ],
        // K3a (branch A)
        vec![
            set("notes", "r1", "title", "k3a"),
            delete("notes", "r3"),
            increment("notes", "r2", "n", 100),
        ],
        // K3b, K4b (branch B)
        vec![
            set("notes", "r1", "title", "k3b"),
            set("notes", "r4", "y", "k3b"),
            delete("tasks", "t1"),
        ],
        vec![
            delete("notes", "r2"),
            set("notes", "r3", "x", "k4b"),
            increment("notes", "r2", "n", 7),
        ],
        // O_b
        vec![
            set("notes", "r1", "body", "o"),
            increment("notes", "r2", "n", 5),
            set("notes", "r4", "y", "o"),
            set("notes", "r3", "z", "o"),
        ],
    ]
}

/// Applies each batch; no refusal is expected. Returns the reports.
fn deliver(db: &Db, batches: &[Vec<Change>]) -> Vec<ApplyReport> {
    batches
        .iter()
        .map(|batch| {
            let report = db.apply(batch.clone()).expect("apply");
            assert!(report.refused.is_empty(), "refused: {report:?}");
            report
        })
        .collect()
}

/// Every (table, row) some change touches.
fn touched_rows(changes: &[Change]) -> BTreeSet<(String, String)> {
    changes
        .iter()
        .flat_map(|change| {
            change
                .ops()
                .iter()
                .filter_map(Op::row)
                .map(|(t, r)| (t.to_owned(), r.to_owned()))
        })
        .collect()
}

/// What every replica that holds the whole scenario must show.
fn check_replica(
    name: &str,
    db: &Db,
    scenario: &Scenario,
    expected_rows: &BTreeMap<(String, String), Row>,
    expected: StateHash,
) {
    assert_eq!(db.pending_len(), 0, "{name}: nothing pending");
    assert_eq!(
        db.state_hash().expect("state hash"),
        expected,
        "{name}: state hash"
    );
    assert_eq!(&rows(db, TABLES), expected_rows, "{name}: rows");
    for change in &scenario.all {
        assert!(
            db.get_change(&change.hash()).expect("lookup").is_some(),
            "{name}: the log keeps {change:?}"
        );
    }
    let cut = scenario.cut();
    for (table, row) in touched_rows(&scenario.all) {
        let history = db.history(&table, &row).expect("history");
        let held: BTreeSet<ChangeHash> = history.iter().map(|entry| entry.hash).collect();
        let touching: BTreeSet<ChangeHash> = scenario
            .all
            .iter()
            .filter(|change| {
                change
                    .ops()
                    .iter()
                    .any(|op| op.row() == Some((&table, &row)))
            })
            .map(Change::hash)
            .collect();
        assert_eq!(held, touching, "{name}: history of {table}/{row}");
        for entry in &history {
            assert_eq!(
                entry.valid,
                !cut.contains(&entry.hash),
                "{name}: {table}/{row} {entry:?}"
            );
        }
    }
    let report = db.verify(&mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{name}: {report:?}");
    assert_eq!(
        report.changes,
        scenario.all.len() as u64,
        "{name}: every logged change re-verified"
    );
    assert_eq!(report.live_state_hash, expected);
    let (replayed, rebuilt) = db.rebuild(&mut |_, _| {}).expect("rebuild");
    assert_eq!(
        replayed,
        scenario.all.len() as u64,
        "{name}: rebuild replays the log"
    );
    assert_eq!(rebuilt, expected, "{name}: rebuilt state hash");
    assert_eq!(
        &rows(db, TABLES),
        expected_rows,
        "{name}: rows after rebuild"
    );
}

/// Each report's `inert` lists only accepted changes, all of them cut.
fn check_inert_sound(name: &str, reports: &[ApplyReport], cut: &BTreeSet<ChangeHash>) {
    for report in reports {
        for hash in &report.inert {
            assert!(
                report.accepted.contains(hash),
                "{name}: inert {hash} was accepted: {report:?}"
            );
            assert!(
                cut.contains(hash),
                "{name}: inert {hash} is a cut change: {report:?}"
            );
        }
    }
}

/// The fork is detected in any delivery order: three replicas receive the
/// same changes (branch A first; branch B and O_b first; all at once) and
/// end equal to each other, to O, E1, E2, and to the reference model of
/// every change but K's seq >= 3. The cut changes stay in the log, are
/// marked invalid in history, O_b stays applied, verify and rebuild agree,
/// and K can no longer write on either replica.
#[test]
fn fork_cuts_the_author_in_any_order() {
    let scenario = build(&fixed_ops());
    let expected_rows = reference_model(&scenario.valid());
    // Spot checks that the cut is visible: without it r2 would be deleted
    // by K4b, and r1's title would be K3a's or K3b's (the same stamp!).
    let r1 = &expected_rows[&("notes".to_owned(), "r1".to_owned())];
    assert_eq!(r1.get("title"), Some(&Value::from("k1")));
    assert_eq!(
        r1.get("body"),
        Some(&Value::from("o")),
        "O_b, which deps on a cut change, stays applied"
    );
    let r2 = &expected_rows[&("notes".to_owned(), "r2".to_owned())];
    assert_eq!(r2.get("n"), Some(&Value::Counter(10 + 1 + 5)));
    let cut = scenario.cut();
    assert_eq!(cut.len(), 3);

    let r1_db = scenario.replica("r1");
    let mut first = scenario.shared.clone();
    first.push(scenario.branch_a.clone());
    let r1_reports = deliver(&r1_db, &[first, scenario.all.clone()]);
    assert!(
        r1_reports[0].inert.is_empty(),
        "before the fork nothing is inert: {:?}",
        r1_reports[0]
    );
    for hash in scenario.branch_b.iter().map(Change::hash) {
        assert!(
            r1_reports[1].inert.contains(&hash),
            "branch B arrives after branch A: inert {:?}",
            r1_reports[1]
        );
    }

    let r2_db = scenario.replica("r2");
    let mut first: Vec<Change> = scenario.branch_b.clone();
    first.push(scenario.owner_late.clone());
    first.reverse();
    let mut r2_reports = deliver(&r2_db, &[first]);
    assert_eq!(
        r2_reports[0].pending.len(),
        3,
        "branch B and O_b wait for their predecessors: {:?}",
        r2_reports[0]
    );
    assert_eq!(
        r2_db.state_hash().expect("state hash"),
        replica_of_nothing_hash(&scenario),
        "nothing applied yet"
    );
    r2_reports.extend(deliver(&r2_db, std::slice::from_ref(&scenario.all)));
    assert!(
        r2_reports[1].inert.contains(&scenario.branch_a.hash()),
        "branch A arrives last: {:?}",
        r2_reports[1]
    );

    let r3_db = scenario.replica("r3");
    let r3_reports = deliver(&r3_db, std::slice::from_ref(&scenario.all));
    assert!(
        r3_reports[0].inert.contains(&scenario.branch_a.hash()),
        "{:?}",
        r3_reports[0]
    );

    let catch_up = |db: &Db| deliver(db, std::slice::from_ref(&scenario.all));
    let others: Vec<(&str, &Db, Vec<ApplyReport>)> = vec![
        ("owner", &scenario.owner, catch_up(&scenario.owner)),
        ("e1", &scenario.e1, catch_up(&scenario.e1)),
        ("e2", &scenario.e2, catch_up(&scenario.e2)),
    ];
    assert_eq!(
        all_changes(&scenario.owner),
        scenario.all,
        "`all` is the owner's log order"
    );

    let expected = r3_db.state_hash().expect("state hash");
    let replicas: Vec<(&str, &Db, Vec<ApplyReport>)> = vec![
        ("r1", &r1_db, r1_reports),
        ("r2", &r2_db, r2_reports),
        ("r3", &r3_db, r3_reports),
    ];
    for (name, db, reports) in replicas.iter().chain(&others) {
        check_inert_sound(name, reports, &cut);
        check_replica(name, db, &scenario, &expected_rows, expected);
    }
    reopen_without_view(r3_db, &scenario, &expected_rows, expected);
    for db in [&scenario.e1, &scenario.e2] {
        let mut tx = db.transaction();
        tx.set("notes", "r1", "title", "after the fork");
        match tx.commit() {
            Err(Error::IdentityCut { author, cut_seq: 2 }) => {
                assert_eq!(author, scenario.key.author())
            }
            other => panic!("a cut identity cannot write: {other:?}"),
        }
    }
}

/// A forked replica closed, its `view/` deleted and reopened rebuilds the
/// same view from the log: the cut is a function of the log alone.
fn reopen_without_view(
    db: Db,
    scenario: &Scenario,
    expected_rows: &BTreeMap<(String, String), Row>,
    expected: StateHash,
) {
    let path = db.dir().to_owned();
    drop(db);
    std::fs::remove_dir_all(path.join("view")).expect("delete the view");
    let db = Db::open(&path, relaxed()).expect("reopen");
    check_replica(
        "r3 without its view",
        &db,
        scenario,
        expected_rows,
        expected,
    );
}

/// The state hash of an empty replica (a view with nothing applied).
fn replica_of_nothing_hash(scenario: &Scenario) -> StateHash {
    scenario.replica("empty").state_hash().expect("state hash")
}

/// An apply that completes a fork reports in `inert` every change it
/// accepted that is not applied once it returns (ApplyReport: "Of
/// `accepted`, those that are not applied"), whatever the order inside the
/// batch. `Db::publish` relies on it: changes not in `inert` go to
/// subscribers as applied changes (and, of the inert ones, fork evidence).
#[test]
fn fork_in_one_apply_reports_every_cut_change_inert() {
    let scenario = build(&fixed_ops());
    let orders: Vec<(&str, Vec<Vec<Change>>)> = vec![
        (
            "branch A first",
            vec![
                [scenario.shared.clone(), vec![scenario.branch_a.clone()]].concat(),
                scenario.all.clone(),
            ],
        ),
        ("all at once", vec![scenario.all.clone()]),
        (
            "branch B first",
            vec![
                [scenario.branch_b.clone(), vec![scenario.owner_late.clone()]].concat(),
                scenario.all.clone(),
            ],
        ),
    ];
    for (name, batches) in orders {
        let db = scenario.replica(name);
        let mut events = db.subscribe();
        for batch in batches {
            let report = db.apply(batch).expect("apply");
            let not_applied: BTreeSet<ChangeHash> = report
                .accepted
                .iter()
                .copied()
                .filter(|hash| !is_applied(&db, &scenario, hash))
                .collect();
            let inert: BTreeSet<ChangeHash> = report.inert.iter().copied().collect();
            assert_eq!(inert, not_applied, "{name}: {report:?}");
            // Fork evidence is published too (live peers must learn of the
            // fork), and is the only cut change that is.
            while let Ok(published) = events.try_recv() {
                assert!(
                    !not_applied.contains(&published.hash()) || db.is_fork_evidence(&published),
                    "{name}: {published:?} published as applied, but cut"
                );
            }
        }
    }
}

/// Whether a held change counts in the view, as its rows' history says.
fn is_applied(db: &Db, scenario: &Scenario, hash: &ChangeHash) -> bool {
    let change = scenario
        .all
        .iter()
        .find(|change| change.hash() == *hash)
        .expect("a scenario change");
    let Some((table, row)) = change.ops().iter().find_map(Op::row) else {
        return true;
    };
    let history = db.history(table, row).expect("history");
    history
        .iter()
        .find(|entry| entry.hash == *hash)
        .expect("in its row's history")
        .valid
}

/// Sync ships the fork: after E1 and E2 (one branch each) sync both ways
/// with `changes_since`, each holds both branches, nothing is left pending,
/// K is cut on both, and they hold the same state (docs/DESIGN.md "Sync":
/// head hashes detect forks; "Authorization": the two changes that prove an
/// equivocation are shipped by sync like any change).
#[test]
fn sync_ships_the_fork_between_the_branches() {
    let scenario = build(&fixed_ops());
    sync_into(&scenario.e2, &scenario.e1);
    sync_into(&scenario.e1, &scenario.e2);
    for (name, db) in [("e1", &scenario.e1), ("e2", &scenario.e2)] {
        assert_eq!(db.pending_len(), 0, "{name}: waits on {:?}", db.missing());
        assert!(
            db.get_change(&scenario.branch_a.hash())
                .expect("lookup")
                .is_some(),
            "{name} holds branch A"
        );
        for change in &scenario.branch_b {
            assert!(
                db.get_change(&change.hash()).expect("lookup").is_some(),
                "{name} holds branch B"
            );
        }
    }
    assert_eq!(
        scenario.e1.state_hash().expect("state hash"),
        scenario.e2.state_hash().expect("state hash")
    );
    let held: Vec<Change> = scenario
        .all
        .iter()
        .filter(|change| **change != scenario.owner_late)
        .cloned()
        .collect();
    let valid: Vec<Change> = held
        .into_iter()
        .filter(|change| !scenario.is_cut(change))
        .collect();
    assert_eq!(rows(&scenario.e1, TABLES), reference_model(&valid));
}

/// A cut change that no valid change names is kept inert: "never applied,
/// never pushed to peers on its own" (docs/DESIGN.md "Authorization"), so a key
/// that forked cannot keep growing every replica's log through sync.
#[test]
fn sync_does_not_forward_cut_changes_on_their_own() {
    let scenario = build(&fixed_ops());
    // E2 does not know of the fork yet and writes on.
    let k5b = commit(&scenario.e2, &[set("notes", "r5", "spam", 1)]);
    let report = scenario
        .owner
        .apply(vec![scenario.branch_a.clone(), k5b.clone()])
        .expect("apply");
    assert_eq!(
        report.inert,
        vec![scenario.branch_a.hash(), k5b.hash()],
        "{report:?}"
    );
    let fresh = scenario.replica("fresh");
    sync_into(&scenario.owner, &fresh);
    assert_eq!(fresh.pending_len(), 0);
    assert_eq!(
        fresh.state_hash().expect("state hash"),
        scenario.owner.state_hash().expect("state hash")
    );
    let k4b = &scenario.branch_b[1];
    assert!(
        fresh.get_change(&k4b.hash()).expect("lookup").is_some(),
        "K4b is served: O_b names it"
    );
    assert!(
        fresh.get_change(&k5b.hash()).expect("lookup").is_none(),
        "K5b, cut and named by no valid change, stays behind"
    );
}

/// Detecting forks by head hash must not cost the common case: a replica
/// whose peer is simply ahead on an author (the peer's head hash is unknown
/// here, but nothing forked) has nothing to send for that author (docs/DESIGN.md
/// "Sync": bytes on the wire within a small constant of what is missing).
#[test]
fn sync_to_a_replica_that_is_ahead_sends_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ahead = Db::create(dir.path().join("ahead"), relaxed()).expect("create");
    let behind = replica_of(&ahead, &dir.path().join("behind"));
    for index in 0..5 {
        commit(&ahead, &[set("notes", "r1", "n", index)]);
    }
    sync_into(&ahead, &behind);
    for index in 5..8 {
        commit(&ahead, &[set("notes", "r1", "n", index)]);
    }
    let since = ahead.version_vector().expect("version vector");
    let sent: Vec<Change> = behind
        .changes_since(&since)
        .expect("changes since")
        .map(|change| change.expect("change"))
        .collect();
    assert!(
        sent.is_empty(),
        "resent {} changes the peer holds",
        sent.len()
    );
}

fn op() -> impl Strategy<Value = Op> {
    let table = prop_oneof![Just("notes"), Just("tasks")];
    let row = (0..3usize).prop_map(|row| format!("r{row}"));
    let field = (0..3usize).prop_map(|field| format!("f{field}"));
    prop_oneof![
        4 => (table.clone(), row.clone(), field.clone(), -3..3i64).prop_map(|(t, r, f, v)| set(t, &r, &f, v)),
        1 => (table.clone(), row.clone(), field.clone(), -3..3i64).prop_map(|(t, r, f, v)| set(t, &r, &f, Value::Counter(v))),
        1 => (table.clone(), row.clone()).prop_map(|(t, r)| delete(t, &r)),
        2 => (table, row, field, -5..5i64).prop_map(|(t, r, f, d)| increment(t, &r, &f, d)),
    ]
}

/// K3a and K3b with the same ops would be one change (same key, seq, prev
/// and deps: the same bytes), not a fork.
fn scenario_ops() -> impl Strategy<Value = ScenarioOps> {
    prop::array::uniform7(prop::collection::vec(op(), 1..4))
        .prop_filter("the two branches' ops differ", |ops| ops[3] != ops[4])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: peers_tests::proptest_cases(16), ..ProptestConfig::default() })]

    /// Any delivery order and batching of a fork's change set (random ops
    /// over a few shared rows) gives one state hash, equal on two replicas,
    /// whose rows equal the reference model of the valid changes.
    #[test]
    fn fork_converges_in_any_delivery_order(
        ops in scenario_ops(),
        orders in prop::collection::vec((any::<u64>(), 1..6usize, 0..3usize), 2),
    ) {
        let scenario = build(&ops);
        let expected_rows = reference_model(&scenario.valid());
        let mut hashes = Vec::new();
        for (index, (seed, batch, duplicates)) in orders.into_iter().enumerate() {
            let db = scenario.replica(&format!("replica{index}"));
            let mut shuffled = scenario.all.clone();
            shuffle(&mut shuffled, seed);
            shuffled.extend(scenario.all.iter().rev().take(duplicates).cloned());
            for chunk in shuffled.chunks(batch) {
                let report = db.apply(chunk.to_vec()).expect("apply");
                prop_assert!(report.refused.is_empty(), "refused: {:?}", report.refused);
            }
            prop_assert_eq!(db.pending_len(), 0);
            prop_assert_eq!(rows(&db, TABLES), expected_rows.clone());
            for (table, row) in touched_rows(&scenario.all) {
                for entry in db.history(&table, &row).expect("history") {
                    let change = scenario.all.iter().find(|change| change.hash() == entry.hash).expect("known");
                    prop_assert_eq!(entry.valid, !scenario.is_cut(change));
                }
            }
            let verified = db.verify(&mut |_, _| {}).expect("verify");
            prop_assert!(verified.ok(), "{:?}", verified);
            hashes.push(db.state_hash().expect("state hash"));
        }
        prop_assert_eq!(hashes[0], hashes[1]);
        let owner_report = scenario.owner.apply(vec![scenario.branch_a.clone()]).expect("apply");
        prop_assert_eq!(owner_report.inert, vec![scenario.branch_a.hash()]);
        prop_assert_eq!(scenario.owner.state_hash().expect("state hash"), hashes[0]);
    }
}

// ---------------------------------------------------------------------------
// Random forks: any key, any seq, any number of replicas, any topology.

/// Authors in [`random_forks_converge_through_any_topology`]: the owner (0)
/// and two others, each writing on its own replica (nodes 0-2).
const AUTHORS: usize = 3;
/// Node 3: the forking key's second replica, which signs branch B.
const SECOND: usize = AUTHORS;
/// Most replicas that only receive (nodes 4 and up).
const RECEIVERS_MAX: usize = 4;
/// Most rounds of the final gossip between all nodes.
const GOSSIP_ROUNDS_MAX: usize = 8;

/// One act of the random topology; node indexes are taken modulo the
/// number of nodes.
#[derive(Clone, Debug)]
enum Act {
    /// The node commits `ops` as its key (skipped on receivers, and once the
    /// node's own key is cut: `IdentityCut`).
    Write { node: usize, ops: Vec<Op> },
    /// `to` receives what `from` holds, by `changes_since` (sync).
    Sync { from: usize, to: usize },
    /// `to` receives everything `from` holds, shuffled by `seed`, in
    /// batches of `batch` (a hostile or careless relay).
    Send {
        from: usize,
        to: usize,
        seed: u64,
        batch: usize,
    },
}

/// A fork by key `forker` at seq `fork_seq`, branches of lengths
/// `branch_a` (on the key's replica) and `branch_b` (on its second one),
/// with `pre` acts among the authors' replicas before the fork and `post`
/// acts among every node after it.
#[derive(Clone, Debug)]
struct Topology {
    forker: usize,
    fork_seq: u64,
    branch_a: usize,
    branch_b: usize,
    receivers: usize,
    pre: Vec<Act>,
    post: Vec<Act>,
}

/// Commits `ops` on `db`, skipping what the API refuses: an increment of a
/// non-counter, or a key cut for a fork it learned of.
fn try_commit(db: &Db, ops: &[Op]) -> Option<ChangeHash> {
    match peers_tests::transaction_with(db, ops).commit() {
        Ok(hash) => Some(hash),
        Err(Error::NotACounter { .. } | Error::IdentityCut { .. }) => None,
        Err(other) => panic!("commit failed: {other}"),
    }
}

/// The fork cut of every author in `changes`: the lowest seq at which it
/// signed two different changes, minus one.
fn expected_cuts(changes: &[Change]) -> BTreeMap<peers_engine::Author, u64> {
    let mut seen: BTreeMap<(peers_engine::Author, u64), ChangeHash> = BTreeMap::new();
    let mut cuts = BTreeMap::new();
    for change in changes {
        let key = (change.author(), change.seq());
        if let Some(other) = seen.insert(key, change.hash())
            && other != change.hash()
        {
            let cut = cuts.entry(change.author()).or_insert(change.seq() - 1);
            *cut = (*cut).min(change.seq() - 1);
        }
    }
    cuts
}

/// What `db` must show for the changes it holds: each author's fork cut as
/// the held set says, and the reference model's rows over the held changes
/// within those cuts (a change of another author naming a cut change stays
/// valid).
fn check_held(name: &str, db: &Db, forker: &peers_engine::Author) -> Result<(), TestCaseError> {
    let held = all_changes(db);
    let cuts = expected_cuts(&held);
    prop_assert_eq!(
        db.fork_cut(forker),
        cuts.get(forker).copied(),
        "{}: fork cut",
        name
    );
    let valid: Vec<Change> = held
        .iter()
        .filter(|change| {
            cuts.get(&change.author())
                .is_none_or(|cut| change.seq() <= *cut)
        })
        .cloned()
        .collect();
    prop_assert_eq!(rows(db, TABLES), reference_model(&valid), "{}: rows", name);
    Ok(())
}

/// Runs `act` on `nodes` (`writers` of them sign).
fn run_act(nodes: &[Db], writers: usize, act: &Act) {
    let count = nodes.len();
    match act {
        Act::Write { node, ops } if node % count < writers => {
            try_commit(&nodes[node % count], ops);
        }
        Act::Write { .. } => {}
        Act::Sync { from, to } if from % count != to % count => {
            let report = peers_tests::exchange(&nodes[from % count], &nodes[to % count]);
            assert!(report.refused.is_empty(), "refused: {report:?}");
        }
        Act::Send {
            from,
            to,
            seed,
            batch,
        } if from % count != to % count => {
            let mut changes = all_changes(&nodes[from % count]);
            shuffle(&mut changes, *seed);
            for chunk in changes.chunks(*batch) {
                let report = nodes[to % count].apply(chunk.to_vec()).expect("apply");
                assert!(report.refused.is_empty(), "refused: {report:?}");
            }
        }
        Act::Sync { .. } | Act::Send { .. } => {}
    }
}

fn act(nodes: usize) -> impl Strategy<Value = Act> {
    let ops = prop::collection::vec(op(), 1..3);
    prop_oneof![
        2 => (0..nodes, ops).prop_map(|(node, ops)| Act::Write { node, ops }),
        2 => (0..nodes, 0..nodes).prop_map(|(from, to)| Act::Sync { from, to }),
        1 => (0..nodes, 0..nodes, any::<u64>(), 1..5usize)
            .prop_map(|(from, to, seed, batch)| Act::Send { from, to, seed, batch }),
    ]
}

fn topology() -> impl Strategy<Value = Topology> {
    let nodes = SECOND + 1 + RECEIVERS_MAX;
    (
        (0..AUTHORS, 1..5u64, 1..4usize, 1..4usize, 1..=RECEIVERS_MAX),
        prop::collection::vec(act(AUTHORS), 0..10),
        prop::collection::vec(act(nodes), 5..30),
    )
        .prop_map(
            |((forker, fork_seq, branch_a, branch_b, receivers), pre, post)| Topology {
                forker,
                // The owner's seq 1 is the genesis, which names the database.
                fork_seq: if forker == 0 {
                    fork_seq.max(2)
                } else {
                    fork_seq
                },
                branch_a,
                branch_b,
                receivers,
                pre,
                post,
            },
        )
}

/// Runs `topology`: returns every node (authors' replicas, the forker's
/// second replica, the receivers) and the directory they live in.
fn run_topology(topology: &Topology) -> (TempDir, Vec<Db>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let identities: Vec<Identity> = (0..AUTHORS)
        .map(|index| Identity::from_secret_bytes([0x70 + index as u8; 32]))
        .collect();
    let as_key = |index: usize| Options {
        identity: Some(identities[index].clone()),
        ..relaxed()
    };
    let owner = Db::create(dir.path().join("a0"), as_key(0)).expect("create");
    let mut nodes = vec![owner];
    for index in 1..AUTHORS {
        let path = dir.path().join(format!("a{index}"));
        let db = Db::join(path, nodes[0].database_id(), as_key(index)).expect("join");
        sync_into(&nodes[0], &db);
        nodes.push(db);
    }
    for act in &topology.pre {
        // Before the fork the forker's chain stays below the fork seq.
        if let Act::Write { node, .. } = act
            && node % AUTHORS == topology.forker
            && own_head(&nodes[topology.forker]) + 1 >= topology.fork_seq
        {
            continue;
        }
        run_act(&nodes, AUTHORS, act);
    }
    let forker = &nodes[topology.forker];
    let mut filler = 0;
    while own_head(forker) + 1 < topology.fork_seq {
        try_commit(forker, &[set("notes", "filler", "n", filler)]).expect("commit");
        filler += 1;
    }
    let path = dir.path().join("second");
    let second = Db::join(path, forker.database_id(), as_key(topology.forker)).expect("join");
    let report = second.apply(all_changes(forker)).expect("apply");
    assert!(
        report.refused.is_empty() && report.pending.is_empty(),
        "{report:?}"
    );
    for (db, branch, length) in [
        (forker, "a", topology.branch_a),
        (&second, "b", topology.branch_b),
    ] {
        for index in 0..length {
            let ops = [set("tasks", "fork", branch, index as i64)];
            try_commit(db, &ops).expect("a branch commits before the fork is known");
        }
    }
    nodes.push(second);
    for index in 0..topology.receivers {
        nodes.push(replica_of(&nodes[0], &dir.path().join(format!("r{index}"))));
    }
    (dir, nodes)
}

/// The highest seq of its own key `db` holds.
fn own_head(db: &Db) -> u64 {
    all_changes(db)
        .iter()
        .filter(|change| change.author() == db.author())
        .map(Change::seq)
        .max()
        .unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: peers_tests::proptest_cases(24), ..ProptestConfig::default() })]

    /// Any key (the owner's too) forks at any seq, with branches of any
    /// length signed on two replicas, while the other keys write on; the
    /// changes reach one to four more replicas through any sequence of
    /// syncs and raw relays (shuffled, batched) between any nodes. After
    /// every act, every node's fork cut and rows are what the set of
    /// changes it holds says (the cut of a held pair, the reference model
    /// of the changes within the cuts), whatever the order they came in;
    /// after gossip every node holds the fork, is cut at `fork_seq - 1`,
    /// waits on nothing and shows one state hash, the model's.
    #[test]
    fn random_forks_converge_through_any_topology(topology in topology()) {
        let (_dir, nodes) = run_topology(&topology);
        let forker = nodes[topology.forker].author();
        let writers = SECOND + 1;
        for act in &topology.post {
            run_act(&nodes, writers, act);
            for (index, db) in nodes.iter().enumerate() {
                check_held(&format!("node {index} after {act:?}"), db, &forker)?;
            }
        }
        for round in 0.. {
            prop_assert!(round < GOSSIP_ROUNDS_MAX, "gossip does not settle");
            let mut moved = 0;
            for index in 0..nodes.len() {
                let next = (index + 1) % nodes.len();
                for (from, to) in [(index, next), (next, index)] {
                    let report = peers_tests::exchange(&nodes[from], &nodes[to]);
                    prop_assert!(report.refused.is_empty(), "refused: {:?}", report);
                    moved += report.accepted.len();
                }
            }
            if moved == 0 {
                break;
            }
        }
        let mut everything = Vec::new();
        let mut seen = BTreeSet::new();
        for db in &nodes {
            for change in all_changes(db) {
                if seen.insert(change.hash()) {
                    everything.push(change);
                }
            }
        }
        let cuts = expected_cuts(&everything);
        prop_assert_eq!(cuts.get(&forker).copied(), Some(topology.fork_seq - 1));
        let valid: Vec<Change> = everything
            .iter()
            .filter(|change| cuts.get(&change.author()).is_none_or(|cut| change.seq() <= *cut))
            .cloned()
            .collect();
        let expected_rows = reference_model(&valid);
        let expected = nodes[0].state_hash().expect("state hash");
        for (index, db) in nodes.iter().enumerate() {
            prop_assert_eq!(db.pending_len(), 0, "node {}", index);
            prop_assert_eq!(db.fork_cut(&forker), Some(topology.fork_seq - 1), "node {}", index);
            prop_assert_eq!(rows(db, TABLES), expected_rows.clone(), "node {}", index);
            prop_assert_eq!(db.state_hash().expect("state hash"), expected, "node {}", index);
        }
        let last = &nodes[nodes.len() - 1];
        let verified = last.verify(&mut |_, _| {}).expect("verify");
        prop_assert!(verified.ok(), "{:?}", verified);
    }
}
