//! Faults injected into the engine's write path (the `failpoints` feature of
//! peers-engine, the `fail` crate as raft-engine uses it). One test per
//! binary: fail points are global to a process.

use peers_engine::{Db, Error};
use peers_tests::relaxed;

/// A view write that fails after the group reached the log must not let the
/// replica fork its own key: the next commit would reuse the seq that is in
/// the log with another hash, and a rebuild would then cut us for good. The
/// failing commit reports the fault, every later write is refused with
/// `Poisoned` (reads still answer), and a reopen replays the log: the change
/// that reached the log is there once, the next commit follows it, and
/// `verify` accepts the log.
#[test]
fn a_failed_view_write_poisons_until_reopen() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("a");
    let db = Db::create(&path, relaxed()).expect("create");
    let mut tx = db.transaction();
    tx.set("notes", "n1", "text", "before");
    tx.commit().expect("commit");
    let head = db.version_vector().expect("vector").seq(&db.author());

    fail::cfg("engine::view-write", "return").expect("fail point");
    let mut tx = db.transaction();
    tx.set("notes", "n2", "text", "in the log, not in the view");
    let error = tx.commit().expect_err("the view write fails");
    assert!(matches!(error, Error::Io { .. }), "{error}");
    fail::remove("engine::view-write");

    let mut tx = db.transaction();
    tx.set("notes", "n3", "text", "after");
    let error = tx.commit().expect_err("poisoned");
    assert!(matches!(error, Error::Poisoned { .. }), "{error}");
    assert!(error.to_string().contains("reopen"), "{error}");
    let refused = db.apply(Vec::new());
    assert!(
        matches!(refused, Ok(_) | Err(Error::Poisoned { .. })),
        "{refused:?}"
    );
    // Reads answer from the view as it was.
    assert!(db.get_row("notes", "n1").expect("read").is_some());
    drop(db);

    let db = Db::open(&path, relaxed()).expect("reopen");
    assert!(
        db.get_row("notes", "n2").expect("read").is_some(),
        "the change that reached the log is replayed"
    );
    assert_eq!(
        db.version_vector().expect("vector").seq(&db.author()),
        head + 1
    );
    let mut tx = db.transaction();
    tx.set("notes", "n3", "text", "after the reopen");
    tx.commit().expect("commit after the reopen");
    assert_eq!(db.fork_cut(&db.author()), None, "no fork of our own key");
    let report = db.verify(&mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{report:?}");
    db.rebuild(&mut |_, _| {}).expect("rebuild");
    assert_eq!(
        db.fork_cut(&db.author()),
        None,
        "not after a rebuild either"
    );
    scenario.teardown();
}
