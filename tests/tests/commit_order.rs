//! Local commits sign on the committing threads, outside the writer lock,
//! and commit in seq order (engine/src/db/commit.rs). These tests hold one
//! commit between its reservation and its signature (the fail point
//! `engine::commit-sign`) while others go on, and check what a user relies
//! on: a commit waits for the one before it and they land in order; a
//! commit refused while it was being signed leaves nothing behind, and
//! neither do the commits reserved after it; our key never forks. (Many
//! threads at once forming one chain: tests/tests/db_api.rs.)

use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peers_engine::{Db, Error, Options, Role, SyncMode};
use peers_tests::{relaxed, sync_into};

/// Arms `engine::commit-sign` so that the first commit to reach it stops
/// there until the returned sender is dropped or sent to; later commits
/// pass. The receiver says when the first one has stopped.
fn hold_first_commit() -> (std::sync::mpsc::Sender<()>, Receiver<()>) {
    hold_first_at("engine::commit-sign")
}

/// Arms `fail_point` so that the first thread to reach it stops there until
/// the returned sender is dropped or sent to; later ones pass. The receiver
/// says when the first one has stopped.
fn hold_first_at(fail_point: &str) -> (std::sync::mpsc::Sender<()>, Receiver<()>) {
    let (release, released) = channel::<()>();
    let (stopped, on_stop) = channel::<()>();
    let first = Arc::new(Mutex::new(Some((released, stopped))));
    fail::cfg_callback(fail_point, move || {
        let taken = first.lock().expect("lock").take();
        if let Some((released, stopped)) = taken {
            stopped.send(()).expect("test waits");
            let _ = released.recv();
        }
    })
    .expect("fail point");
    (release, on_stop)
}

fn commit(db: &Db, row: &str) -> Result<peers_engine::ChangeHash, Error> {
    let mut tx = db.transaction();
    tx.set("notes", row, "text", row);
    tx.commit()
}

type Commit = std::thread::JoinHandle<Result<peers_engine::ChangeHash, Error>>;

/// Starts a commit of `rows[0]`, which stops before signing (armed by
/// [`hold_first_commit`]), then one of `rows[1]`, reserved after it, and
/// checks that the second does not return while the first is held.
fn second_waits_for_first(
    db: &Db,
    rows: [&'static str; 2],
    on_stop: &Receiver<()>,
) -> (Commit, Commit) {
    let first = std::thread::spawn({
        let db = db.clone();
        move || commit(&db, rows[0])
    });
    on_stop
        .recv()
        .expect("the first commit stops before signing");
    let (done, second_done) = channel();
    let second = std::thread::spawn({
        let db = db.clone();
        move || {
            let result = commit(&db, rows[1]);
            let _ = done.send(());
            result
        }
    });
    assert!(
        second_done
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "the second commit returned before the first was signed"
    );
    (first, second)
}

/// A commit reserved after one still being signed waits for it, and the
/// two land as one group in seq order, sharing one fsync.
#[test]
fn a_commit_waits_for_the_one_before_it_and_they_land_together() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        sync: SyncMode::Always,
        ..relaxed()
    };
    let db = Db::create(dir.path().join("a"), options).expect("create");
    commit(&db, "n0").expect("commit");
    let (release, on_stop) = hold_first_commit();

    let (first, second) = second_waits_for_first(&db, ["n1", "n2"], &on_stop);
    let fsyncs = db.log_fsync_count();
    release.send(()).expect("release");
    let first = first.join().expect("thread").expect("first commit");
    let second = second.join().expect("thread").expect("second commit");
    assert_eq!(db.log_fsync_count(), fsyncs + 1, "one group, one fsync");

    let n2 = db.get_change(&second).expect("read").expect("in the log");
    assert_eq!(
        n2.body().prev,
        Some(first),
        "the second chains on the first"
    );
    assert_eq!(n2.seq(), 4, "genesis, n0, n1, n2");
    let report = db.verify(&mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{report:?}");
    scenario.teardown();
}

/// A revocation that arrives while a commit is being signed refuses it when
/// it reaches the writer, as it would have been refused before signing; the
/// commit reserved after it fails too (it chains on the refused one).
/// Nothing of either reaches the log, and the replica's chain stays whole.
#[test]
fn a_revocation_while_signing_refuses_the_commit_and_those_after_it() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let owner = Db::create(
        dir.path().join("owner"),
        Options {
            sync: SyncMode::Relaxed,
            ..Options::default()
        },
    )
    .expect("create");
    let writer = peers_tests::replica_of(&owner, &dir.path().join("writer"));
    owner.grant(writer.author(), Role::Writer).expect("grant");
    sync_into(&owner, &writer);
    commit(&writer, "w1").expect("a writer writes");
    sync_into(&writer, &owner);
    let before = writer.version_vector().expect("vector");

    let (release, on_stop) = hold_first_commit();
    let (first, second) = second_waits_for_first(&writer, ["w2", "w3"], &on_stop);
    owner.revoke(writer.author()).expect("revoke");
    sync_into(&owner, &writer);
    release.send(()).expect("release");

    let first = first.join().expect("thread");
    assert!(
        matches!(first, Err(Error::NotAllowed(_))),
        "the first commit is refused: {first:?}"
    );
    let second = second.join().expect("thread");
    assert!(
        matches!(second, Err(Error::CommitFailed { .. })),
        "the commit after it fails: {second:?}"
    );
    assert_eq!(
        writer
            .version_vector()
            .expect("vector")
            .seq(&writer.author()),
        before.seq(&writer.author()),
        "nothing of either reached the log"
    );
    assert!(writer.get_row("notes", "w2").expect("read").is_none());
    let report = writer.verify(&mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{report:?}");
    scenario.teardown();
}

/// The same key committing on another replica while a commit is being
/// signed here: when its change arrives first, ours no longer continues our
/// head, and committing it would fork our own key (every replica would cut
/// us). It fails instead; the next commit chains on the new head.
#[test]
fn a_commit_whose_chain_moved_while_signing_fails_instead_of_forking() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let here = Db::create(dir.path().join("here"), relaxed()).expect("create");
    commit(&here, "h1").expect("commit");
    let elsewhere = Db::join(
        dir.path().join("elsewhere"),
        here.database_id(),
        Options {
            identity: Some(here.identity().clone()),
            ..relaxed()
        },
    )
    .expect("join with the same key");
    sync_into(&here, &elsewhere);

    let (release, on_stop) = hold_first_commit();
    let held = std::thread::spawn({
        let here = here.clone();
        move || commit(&here, "h2")
    });
    on_stop.recv().expect("the commit stops before signing");
    fail::remove("engine::commit-sign");
    commit(&elsewhere, "e2").expect("the same key commits elsewhere");
    sync_into(&elsewhere, &here);
    release.send(()).expect("release");

    let held = held.join().expect("thread");
    assert!(
        matches!(held, Err(Error::CommitFailed { .. })),
        "the commit whose chain moved fails: {held:?}"
    );
    assert_eq!(
        here.fork_cut(&here.author()),
        None,
        "no fork of our own key"
    );
    let next = commit(&here, "h3").expect("the next commit chains on the new head");
    let next = here.get_change(&next).expect("read").expect("in the log");
    assert_eq!(next.seq(), 4, "genesis, h1, e2 (from elsewhere), h3");
    let report = here.verify(&mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{report:?}");
    scenario.teardown();
}

/// A commit reserves and signs while another commit's group is being
/// written (engine/src/db/commit.rs: a reservation reads what the writer
/// last published, not the writer itself), so two committing threads
/// overlap; the second still chains on the first.
#[test]
fn a_commit_is_reserved_and_signed_while_another_group_is_written() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::create(dir.path().join("a"), relaxed()).expect("create");
    commit(&db, "n0").expect("commit");
    // The first group to write the view stops there, the writer lock held.
    let (release, on_stop) = hold_first_at("engine::view-write");
    let first = std::thread::spawn({
        let db = db.clone();
        move || commit(&db, "n1")
    });
    on_stop
        .recv()
        .expect("the first commit stops writing the view");

    // Every commit that reaches its signature says so.
    let (signing, on_sign) = channel::<()>();
    let signing = Mutex::new(signing);
    fail::cfg_callback("engine::commit-sign", move || {
        let _ = signing.lock().expect("lock").send(());
    })
    .expect("fail point");
    let second = std::thread::spawn({
        let db = db.clone();
        move || commit(&db, "n2")
    });
    let reached = on_sign.recv_timeout(Duration::from_secs(20));
    release.send(()).expect("release");
    assert!(
        reached.is_ok(),
        "the second commit did not reach its signature while the first group was written"
    );
    let first = first.join().expect("thread").expect("first commit");
    let second = second.join().expect("thread").expect("second commit");
    let n2 = db.get_change(&second).expect("read").expect("in the log");
    assert_eq!(
        (n2.seq(), n2.body().prev),
        (4, Some(first)),
        "genesis, n0, n1, n2: the second chains on the first"
    );
    let report = db.verify(&mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{report:?}");
    scenario.teardown();
}
