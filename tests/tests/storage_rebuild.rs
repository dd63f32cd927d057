//! The log is the truth, RocksDB is the view (docs/DESIGN.md "Storage"): after
//! any workload, `rebuild()` and deleting `view/` then reopening both give
//! back the same view (state hash, rows, history, version vector, heads),
//! a database dropped and reopened at any moment reads what it read before,
//! and `verify()` agrees with the live view.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use peers_engine::{
    Change, ChangeHash, DEPS_MAX, Db, Op, Options, Row, StateHash, Value, VersionVector,
};
use peers_tests::{all_changes, commit_ops, reference_model, relaxed, replica_of, rows, sync_into};
use proptest::prelude::*;

const TABLES: &[&str] = &["notes", "tasks"];
const ROWS: usize = 3;

/// Everything the view answers that must survive a rebuild.
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: StateHash,
    rows: BTreeMap<(String, String), Row>,
    vector: VersionVector,
    /// Per row: its history as (change, valid).
    history: BTreeMap<(String, String), Vec<(ChangeHash, bool)>>,
    log: Vec<ChangeHash>,
}

fn snapshot(db: &Db) -> Snapshot {
    let mut history = BTreeMap::new();
    for table in TABLES {
        for row in 0..ROWS {
            let row = format!("r{row}");
            let entries = db.history(table, &row).expect("history");
            history.insert(
                (table.to_string(), row),
                entries
                    .into_iter()
                    .map(|entry| (entry.hash, entry.valid))
                    .collect(),
            );
        }
    }
    Snapshot {
        state: db.state_hash().expect("state hash"),
        rows: rows(db, TABLES),
        vector: db.version_vector().expect("version vector"),
        history,
        log: all_changes(db).iter().map(Change::hash).collect(),
    }
}

/// Closes `db` (every handle must be gone) and opens it again.
fn reopen(db: Db, options: &Options) -> Db {
    let path = db.dir().to_owned();
    drop(db);
    Db::open(&path, options.clone()).expect("reopen")
}

/// Closes `db`, deletes its `view/` directory and opens it again.
fn reopen_without_view(db: Db, options: &Options) -> Db {
    let path: PathBuf = db.dir().to_owned();
    drop(db);
    delete_view(&path);
    Db::open(&path, options.clone()).expect("reopen without a view")
}

fn delete_view(path: &Path) {
    let view = path.join("view");
    assert!(view.is_dir(), "{} is the view directory", view.display());
    std::fs::remove_dir_all(&view).expect("delete the view");
}

/// The deps the next commit of `db` must name: the heads of the other
/// authors (held changes that no held change names), as docs/DESIGN.md says.
fn expected_deps(db: &Db) -> Vec<ChangeHash> {
    let held = all_changes(db);
    let named: BTreeSet<ChangeHash> = held.iter().flat_map(Change::predecessors).collect();
    let mut heads: Vec<(u64, ChangeHash)> = held
        .iter()
        .filter(|change| !named.contains(&change.hash()) && change.author() != db.author())
        .map(|change| (change.lamport(), change.hash()))
        .collect();
    heads.sort_unstable_by(|a, b| b.cmp(a));
    heads.truncate(DEPS_MAX);
    let mut deps: Vec<ChangeHash> = heads.into_iter().map(|(_, hash)| hash).collect();
    deps.sort_unstable();
    deps
}

/// The view equals the one rebuilt in place, and `verify` agrees.
fn check_rebuild_and_verify(db: &Db, expected: &Snapshot) {
    let report = db.verify(&mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.changes, expected.log.len() as u64);
    let (replayed, rebuilt) = db.rebuild(&mut |_, _| {}).expect("rebuild");
    assert_eq!(replayed, expected.log.len() as u64);
    assert_eq!(rebuilt, expected.state);
    assert_eq!(&snapshot(db), expected, "view after rebuild");
}

#[derive(Debug, Clone)]
enum Action {
    /// Author commits one transaction of these ops.
    Write(usize, Vec<Op>),
    /// Author `to` receives everything author `from` holds.
    See { to: usize, from: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let table = prop_oneof![Just("notes"), Just("tasks")];
    let row = (0..ROWS).prop_map(|row| format!("r{row}"));
    let field = (0..3usize).prop_map(|field| format!("f{field}"));
    let name = |t: &str, r: String| (t.to_owned(), r);
    prop_oneof![
        4 => (table.clone(), row.clone(), field.clone(), -3..3i64).prop_map(move |(t, r, f, v)| {
            let (table, row) = name(t, r);
            Op::Set { table, row, field: f, value: Value::Int(v) }
        }),
        1 => (table.clone(), row.clone(), field.clone(), -3..3i64).prop_map(move |(t, r, f, v)| {
            let (table, row) = name(t, r);
            Op::Set { table, row, field: f, value: Value::Counter(v) }
        }),
        1 => (table.clone(), row.clone()).prop_map(move |(t, r)| {
            let (table, row) = name(t, r);
            Op::Delete { table, row }
        }),
        2 => (table, row, field, -5..5i64).prop_map(move |(t, r, f, delta)| {
            let (table, row) = name(t, r);
            Op::Increment { table, row, field: f, delta }
        }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..2usize, prop::collection::vec(op(), 1..4)).prop_map(|(author, ops)| Action::Write(author, ops)),
        1 => (0..2usize).prop_map(|from| Action::See { to: 1 - from, from }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: peers_tests::proptest_cases(16), ..ProptestConfig::default() })]

    /// Two authors write and exchange changes; each replica is dropped and
    /// reopened after every step and reads the same view and the reference
    /// model of what it holds. At the end `rebuild()`, `verify()` and a
    /// deleted-then-rebuilt `view/` all give back the same view, and the
    /// next commit names the same heads as deps.
    #[test]
    fn the_view_is_rebuilt_from_the_log(actions in prop::collection::vec(action(), 1..24)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = relaxed();
        let owner = Db::create(dir.path().join("a"), options.clone()).expect("create");
        let other = replica_of(&owner, &dir.path().join("b"));
        sync_into(&owner, &other);
        let mut replicas = vec![owner, other];
        for action in &actions {
            let touched = match action {
                Action::Write(author, ops) => {
                    commit_ops(&replicas[*author], ops);
                    *author
                }
                Action::See { to, from } => {
                    sync_into(&replicas[*from], &replicas[*to]);
                    *to
                }
            };
            // Reopen the replica this step wrote to (the other is unchanged).
            let db = replicas.remove(touched);
            let before = snapshot(&db);
            let db = reopen(db, &options);
            prop_assert_eq!(&snapshot(&db), &before, "after reopen");
            prop_assert_eq!(&before.rows, &reference_model(&all_changes(&db)), "the view is the model of the log");
            replicas.insert(touched, db);
        }
        sync_into(&replicas[0], &replicas[1]);
        sync_into(&replicas[1], &replicas[0]);
        let expected_rows = reference_model(&all_changes(&replicas[0]));
        let snapshots: Vec<Snapshot> = replicas.iter().map(snapshot).collect();
        prop_assert_eq!(snapshots[0].state, snapshots[1].state);
        prop_assert_eq!(&snapshots[0].rows, &expected_rows);
        prop_assert_eq!(&snapshots[1].rows, &expected_rows);
        for (db, expected) in replicas.iter().zip(&snapshots) {
            check_rebuild_and_verify(db, expected);
        }
        let deps: Vec<Vec<ChangeHash>> = replicas.iter().map(expected_deps).collect();
        let replicas: Vec<Db> = replicas.into_iter().map(|db| reopen_without_view(db, &options)).collect();
        for ((db, expected), deps) in replicas.iter().zip(&snapshots).zip(deps) {
            prop_assert_eq!(&snapshot(db), expected, "view rebuilt from the log on open");
            let report = db.verify(&mut |_, _| {}).expect("verify");
            prop_assert!(report.ok(), "{:?}", report);
            let next = commit_ops(db, &[Op::Set { table: "notes".into(), row: "r0".into(), field: "f0".into(), value: Value::Int(9) }]);
            let next = db.get_change(&next).expect("lookup").expect("held");
            prop_assert_eq!(&next.body().deps, &deps, "the rebuilt heads give the deps");
        }
    }
}

/// Holds each replayed group's RocksDB write (engine `Writer::write_view`,
/// on its own thread) 200 ms at the fail point `engine::view-write`, so the
/// next group certainly reads through it before it lands. The caller holds
/// a `fail::FailScenario`.
fn hold_background_view_writes() {
    fail::cfg_callback("engine::view-write", || {
        // Only the replay's write thread (not a commit's write).
        if std::thread::current().name() == Some("peers-view-write") {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    })
    .expect("fail point");
}

/// A log of many segments and more changes than one replay group
/// (REPLAY_GROUP_CHANGES), from two authors: deleting `view/` and reopening
/// rebuilds the same view, and so does `rebuild()`, although each group
/// reads the rows the group before wrote before that group's write lands
/// ([`hold_background_view_writes`]).
#[test]
fn many_segments_and_replay_groups_rebuild_the_same_view() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        segment_bytes_max: 64 * 1024,
        ..relaxed()
    };
    let owner = Db::create(dir.path().join("a"), options.clone()).expect("create");
    let other = Db::join(dir.path().join("b"), owner.database_id(), options.clone()).expect("join");
    sync_into(&owner, &other);
    let changes = peers_engine::REPLAY_GROUP_CHANGES + 500;
    for index in 0..changes {
        let db = if index % 3 == 0 { &other } else { &owner };
        let row = format!("r{}", index % 7);
        let mut tx = db.transaction();
        tx.set("notes", &row, "last", i64::try_from(index).expect("small"));
        tx.increment("notes", &row, "count", 1);
        if index % 97 == 0 {
            tx.delete("tasks", &row);
        } else {
            tx.set("tasks", &row, &format!("f{}", index % 5), "x");
        }
        tx.commit().expect("commit");
        if index % 1000 == 999 {
            sync_into(&other, &owner);
            sync_into(&owner, &other);
        }
    }
    sync_into(&other, &owner);
    let segments = std::fs::read_dir(dir.path().join("a").join("log"))
        .expect("log dir")
        .count();
    assert!(segments > 4, "the log spans several segments: {segments}");
    let expected = snapshot(&owner);
    assert_eq!(expected.log.len(), changes + 1);
    assert_eq!(expected.rows, reference_model(&all_changes(&owner)));
    let deps = expected_deps(&owner);
    hold_background_view_writes();
    let owner = reopen_without_view(owner, &options);
    assert_eq!(snapshot(&owner), expected, "view rebuilt on open");
    check_rebuild_and_verify(&owner, &expected);
    let next = commit_ops(
        &owner,
        &[Op::Set {
            table: "notes".into(),
            row: "r0".into(),
            field: "last".into(),
            value: Value::Int(-1),
        }],
    );
    assert_eq!(
        owner
            .get_change(&next)
            .expect("lookup")
            .expect("held")
            .body()
            .deps,
        deps
    );
    fail::remove("engine::view-write");
    scenario.teardown();
}

/// Deleting `view/` of a database that was never written to beyond its
/// genesis (or of a replica that holds nothing yet) reopens to the same view.
#[test]
fn empty_and_fresh_databases_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = relaxed();
    let owner = Db::create(dir.path().join("a"), options.clone()).expect("create");
    let empty = replica_of(&owner, &dir.path().join("b"));
    for db in [owner, empty] {
        let expected = snapshot(&db);
        let db = reopen_without_view(db, &options);
        assert_eq!(snapshot(&db), expected);
        check_rebuild_and_verify(&db, &expected);
    }
}

/// A replay writes each group into RocksDB while it applies the next, which
/// reads through the group before until that write lands (engine
/// `view::Carried`). A fork found first thing in a group cuts changes the
/// group before applied: the chain and history entries it scans, and the
/// rows it recomputes, are that group's writes. Rebuilding, and reopening
/// without a view, give the view that applying the changes live gave. The
/// fail point `engine::view-write` holds each background write 200 ms, so
/// the next group certainly runs before the write lands.
#[test]
fn a_fork_at_a_replay_group_boundary_cuts_what_the_group_before_wrote() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = Db::create(dir.path().join("owner"), relaxed()).expect("create");
    let key = peers_engine::Identity::generate();
    let as_key = || Options {
        identity: Some(key.clone()),
        ..relaxed()
    };
    let e1 = Db::join(dir.path().join("e1"), owner.database_id(), as_key()).expect("join");
    let e2 = Db::join(dir.path().join("e2"), owner.database_id(), as_key()).expect("join");
    sync_into(&owner, &e1);
    // The genesis and K's first REPLAY_GROUP_CHANGES - 1 changes fill the
    // first replay group; the fork, at seq `fork_seq`, starts the second.
    let group = peers_engine::REPLAY_GROUP_CHANGES;
    let last_seq = u64::try_from(group - 1).expect("small");
    let fork_seq = last_seq - 7;
    let write = |db: &Db, index: u64, text: &str| {
        let row = format!("r{}", index % 3);
        let mut tx = db.transaction();
        tx.set("notes", &row, "text", format!("{text} {index}"));
        tx.increment("notes", &row, "count", 1);
        if index.is_multiple_of(50) {
            tx.delete("tasks", &row);
        } else {
            tx.set("tasks", &row, &format!("f{}", index % 3), "x");
        }
        tx.commit().expect("commit");
    };
    for index in 1..fork_seq {
        write(&e1, index, "e1");
    }
    sync_into(&e1, &e2);
    for index in fork_seq..=last_seq {
        write(&e1, index, "e1");
    }
    write(&e2, fork_seq, "e2's fork");
    let replica = replica_of(&owner, &dir.path().join("replica"));
    sync_into(&e1, &replica);
    // Sync by version vectors sends nothing at a seq the replica holds:
    // the fork is handed over as a peer would forward fork evidence.
    let fork = all_changes(&e2).pop().expect("e2's fork");
    assert_eq!((fork.author(), fork.seq()), (key.author(), fork_seq));
    let report = replica.apply(vec![fork]).expect("apply the fork");
    assert_eq!(report.accepted.len(), 1, "{report:?}");
    assert_eq!(replica.fork_cut(&key.author()), Some(fork_seq - 1));
    let expected = snapshot(&replica);
    assert_eq!(expected.log.len(), group + 1);
    let valid: Vec<Change> = all_changes(&replica)
        .into_iter()
        .filter(|change| change.author() != key.author() || change.seq() < fork_seq)
        .collect();
    assert_eq!(expected.rows, reference_model(&valid), "the cut view");
    hold_background_view_writes();
    check_rebuild_and_verify(&replica, &expected);
    let replica = reopen_without_view(replica, &relaxed());
    assert_eq!(snapshot(&replica), expected, "view rebuilt on open");
    fail::remove("engine::view-write");
    scenario.teardown();
}
