//! The restore drill (issue 16): back up, lose every replica, restore,
//! verify, and the state equals the original's; against a local directory
//! and a real S3 server in this process. Then the same with a missing,
//! truncated, altered, swapped or rolled-back object: an error naming it,
//! and no restored directory at all.

mod common;

use std::path::Path;

use common::{Place, database, init_new, local, restore, run, s3, write};
use peers_backup::{Error, ObjectFault, RecoveryKey, RestoreOptions, Store, Unlock};
use peers_engine::{Db, Options};

/// Two runs (the second incremental), the replica deleted, a restore: the
/// new replica verifies and has the original's state hash and log.
async fn drill(place: &Place) {
    let work = tempfile::tempdir().expect("tempdir");
    let original = work.path().join("original");
    let db = database(&original, 300);
    let store = place.store();
    let recovery = init_new(&db, &store).await;
    let first = run(&db, &store).await;
    assert_eq!(first.run, 1);
    assert!(first.segments_uploaded > 5, "{first:?}");
    assert_eq!(first.segments_kept, 0);
    write(&db, 300, 100);
    let second = run(&db, &store).await;
    assert_eq!(second.run, 2);
    assert!(
        second.segments_kept >= first.segments_uploaded,
        "incremental: {second:?} after {first:?}"
    );
    assert!(second.bytes_uploaded < first.bytes_uploaded, "{second:?}");
    let idle = run(&db, &store).await;
    assert_eq!(
        (idle.segments_uploaded, idle.tail_bytes),
        (0, 0),
        "nothing new, nothing but the manifest: {idle:?}"
    );
    let state_hash = db.state_hash().expect("hash");
    let log_end = db.log_end();
    drop(db);
    std::fs::remove_dir_all(&original).expect("lose every replica");

    let restored = work.path().join("restored");
    let report = restore(&store, &recovery, &restored, RestoreOptions::default())
        .await
        .expect("restore");
    assert_eq!(report.run, 3);
    assert_eq!(report.state_hash, state_hash);
    assert_eq!(report.log_bytes, log_end.0);
    assert_eq!(report.changes, 1 + 400, "the genesis and every write");
    let db = Db::open(&restored, Options::default()).expect("open the restored replica");
    assert!(db.verify(&mut |_, _| {}).expect("verify").ok());
    assert_eq!(db.state_hash().expect("hash"), state_hash);
    assert_eq!(db.log_end(), log_end);
    assert_ne!(
        db.author(),
        report.device,
        "a restored replica has its own key"
    );
    // Members only: the new key writes once the owner grants it a role.
    let mut tx = db.transaction();
    tx.set("notes", "after", "title", "restored");
    assert!(tx.commit().is_err(), "a new key has no role yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_local_directory() {
    let root = tempfile::tempdir().expect("tempdir");
    drill(&local(&root.path().join("backups"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_s3() {
    let root = tempfile::tempdir().expect("tempdir");
    let place = s3(root.path(), "peers/db1").await;
    drill(&place).await;
    assert!(
        place.objects.join("manifests").is_dir(),
        "the objects went through S3 into {}",
        place.objects.display()
    );
}

/// With one big segment (the default 64 MiB), each run uploads only what
/// was appended since the previous one, as a tail piece; a restore joins
/// the pieces back into the segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_pieces_upload_only_what_was_appended() {
    let work = tempfile::tempdir().expect("tempdir");
    let place = local(&work.path().join("backups"));
    let store = place.store();
    let db = Db::create(work.path().join("db"), Options::default()).expect("create");
    write(&db, 0, 200);
    let recovery = init_new(&db, &store).await;
    let first = run(&db, &store).await;
    assert_eq!(first.tail_bytes, db.log_end().0);
    for round in 1..5 {
        let before = db.log_end().0;
        write(&db, round * 1000, 3);
        let report = run(&db, &store).await;
        assert_eq!(report.tail_bytes, db.log_end().0 - before, "{report:?}");
        assert!(
            report.bytes_uploaded < first.bytes_uploaded / 10,
            "{report:?}"
        );
    }
    let listing = peers_backup::list(&store, Unlock::Device(&db))
        .await
        .expect("list");
    let newest = listing.runs.last().expect("a run");
    assert_eq!(newest.manifest.entries.len(), 5, "one piece per run");
    let state_hash = db.state_hash().expect("hash");
    drop(db);
    let report = restore(
        &store,
        &recovery,
        &work.path().join("restored"),
        RestoreOptions::default(),
    )
    .await
    .expect("restore");
    assert_eq!(report.state_hash, state_hash);
}

/// A store with two runs of one replica, and what a restore must produce.
struct Backed {
    _work: tempfile::TempDir,
    place: Place,
    recovery: RecoveryKey,
    runs: Vec<peers_backup::ListedRun>,
}

async fn backed_up(place_of: impl FnOnce(&Path) -> Place) -> Backed {
    let work = tempfile::tempdir().expect("tempdir");
    let place = place_of(&work.path().join("backups"));
    let db = database(&work.path().join("db"), 200);
    let store = place.store();
    let recovery = init_new(&db, &store).await;
    run(&db, &store).await;
    write(&db, 200, 50);
    run(&db, &store).await;
    let listing = peers_backup::list(&store, Unlock::Recovery(&recovery))
        .await
        .expect("list");
    assert_eq!(listing.runs.len(), 2);
    assert!(listing.runs.iter().all(|run| run.missing.is_empty()));
    Backed {
        _work: work,
        place,
        recovery,
        runs: listing.runs,
    }
}

/// Damages the backup (the objects `touched`), restores from it, then
/// puts the objects back: the error, and that nothing (not even the
/// temporary directory) is left.
async fn restore_damaged(backed: &Backed, touched: &[&str], damage: impl FnOnce(&Place)) -> Error {
    let saved: Vec<_> = touched
        .iter()
        .map(|name| {
            let path = backed.place.file(name);
            let bytes = std::fs::read(&path).expect("read");
            (path, bytes)
        })
        .collect();
    damage(&backed.place);
    let work = tempfile::tempdir().expect("tempdir");
    let target = work.path().join("restored");
    let error = restore(
        &backed.place.store(),
        &backed.recovery,
        &target,
        RestoreOptions::default(),
    )
    .await
    .expect_err("a damaged backup does not restore");
    assert!(!target.exists(), "nothing half-restored: {error}");
    assert!(!work.path().join(".restored.restoring").exists());
    for (path, bytes) in saved {
        std::fs::write(path, bytes).expect("undo the damage");
    }
    error
}

fn assert_rollback(error: &Error, found: u64, expected: u64) {
    assert!(
        matches!(error, Error::Rollback { found: f, expected: e, .. } if *f == found && *e == expected),
        "{error}"
    );
}

fn assert_object_error(error: &Error, name: &str, expected: fn(&ObjectFault) -> bool) {
    match error {
        Error::Object { name: found, fault } => {
            assert_eq!(found, name, "the error names the object: {error}");
            assert!(expected(fault), "{error}");
            assert!(error.to_string().contains(name), "{error}");
        }
        other => panic!("expected an error about {name}, got {other}"),
    }
}

/// An object moved from another name: it does not authenticate, or, when
/// its size differs from the one named, is refused for that first.
fn moved(fault: &ObjectFault) -> bool {
    matches!(
        fault,
        ObjectFault::Unauthentic | ObjectFault::TooLarge { .. } | ObjectFault::Truncated { .. }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_objects_are_named_and_nothing_is_half_restored() {
    let backed = backed_up(local).await;
    let newest = &backed.runs[1];
    let oldest = &backed.runs[0];
    let segment = newest.objects[2].clone();
    let other_segment = newest.objects[3].clone();
    let tail = newest.objects.last().expect("tail").clone();

    // Missing.
    let error = restore_damaged(&backed, &[&segment], |copy| {
        std::fs::remove_file(copy.file(&segment)).expect("remove");
    })
    .await;
    assert_object_error(&error, &segment, |fault| *fault == ObjectFault::Missing);

    // Truncated.
    let error = restore_damaged(&backed, &[&segment], |copy| {
        let bytes = std::fs::read(copy.file(&segment)).expect("read");
        std::fs::write(copy.file(&segment), &bytes[..bytes.len() - 7]).expect("write");
    })
    .await;
    assert_object_error(&error, &segment, |fault| {
        matches!(fault, ObjectFault::Truncated { .. })
    });

    // Altered: one flipped bit in the ciphertext.
    let error = restore_damaged(&backed, &[&segment], |copy| {
        let mut bytes = std::fs::read(copy.file(&segment)).expect("read");
        bytes[100] ^= 0x01;
        std::fs::write(copy.file(&segment), &bytes).expect("write");
    })
    .await;
    assert_object_error(&error, &segment, |fault| *fault == ObjectFault::Unauthentic);

    // Swapped: two segments trade places (a size that differs from the
    // manifest's is refused before the seal is even tried).
    let error = restore_damaged(&backed, &[&segment, &other_segment], |copy| {
        let a = std::fs::read(copy.file(&segment)).expect("read");
        let b = std::fs::read(copy.file(&other_segment)).expect("read");
        std::fs::write(copy.file(&segment), b).expect("write");
        std::fs::write(copy.file(&other_segment), a).expect("write");
    })
    .await;
    assert_object_error(&error, &segment, moved);

    // Mixed runs: the first run's tail served as the second's.
    let old_tail = oldest.objects.last().expect("tail").clone();
    let error = restore_damaged(&backed, &[&tail], |copy| {
        std::fs::copy(copy.file(&old_tail), copy.file(&tail)).expect("copy");
    })
    .await;
    assert_object_error(&error, &tail, moved);

    // Rolled back: the first run's manifest served under the second's name.
    let error = restore_damaged(&backed, &[&newest.name], |copy| {
        std::fs::copy(copy.file(&oldest.name), copy.file(&newest.name)).expect("copy");
    })
    .await;
    assert_object_error(&error, &newest.name, |fault| {
        *fault == ObjectFault::Unauthentic
    });

    // Every damage undone: the backup restores.
    let work = tempfile::tempdir().expect("tempdir");
    restore(
        &backed.place.store(),
        &backed.recovery,
        &work.path().join("restored"),
        RestoreOptions::default(),
    )
    .await
    .expect("the undamaged backup restores");
}

/// A store that hides the newest manifest altogether cannot be told from
/// one that never had it by a restorer with no state: `min_run` (the run
/// `peers backup run` printed) catches it; without it, the older run
/// restores, consistent and verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_newest_manifest_is_caught_with_min_run() {
    let backed = backed_up(local).await;
    let work = tempfile::tempdir().expect("tempdir");
    let copy = &backed.place;
    std::fs::remove_file(copy.file(&backed.runs[1].name)).expect("hide run 2");
    let error = restore(
        &copy.store(),
        &backed.recovery,
        &work.path().join("a"),
        RestoreOptions {
            min_run: Some(2),
            ..RestoreOptions::default()
        },
    )
    .await
    .expect_err("rollback");
    assert_rollback(&error, 1, 2);
    let report = restore(
        &copy.store(),
        &backed.recovery,
        &work.path().join("b"),
        RestoreOptions::default(),
    )
    .await
    .expect("the older run restores");
    assert_eq!(report.run, 1);
}

/// The device that wrote run 2 notices when the store loses it: its next
/// run is a rollback error, not a silent run 2 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_detects_a_rolled_back_store_on_its_next_run() {
    let work = tempfile::tempdir().expect("tempdir");
    let place = local(&work.path().join("backups"));
    let db = database(&work.path().join("db"), 50);
    let store = place.store();
    let recovery = init_new(&db, &store).await;
    run(&db, &store).await;
    run(&db, &store).await;
    let listing = peers_backup::list(&store, Unlock::Device(&db))
        .await
        .expect("list");
    std::fs::remove_file(place.file(&listing.runs[1].name)).expect("lose run 2");
    let error = peers_backup::run(&db, &store, &mut |_, _| {})
        .await
        .expect_err("rollback");
    assert_rollback(&error, 1, 2);
    // A configuration older than the store (a run it did not record):
    // the next run would reuse a run number, and is refused instead.
    let config = db.dir().join(peers_backup::CONFIG_FILE);
    let text = std::fs::read_to_string(&config).expect("read config");
    let rewound = text.replace("\"last_run\": 2", "\"last_run\": 0");
    assert_ne!(rewound, text);
    std::fs::write(&config, rewound).expect("rewind");
    let error = peers_backup::run(&db, &store, &mut |_, _| {})
        .await
        .expect_err("run 1 exists");
    assert!(matches!(error, Error::RunExists { run: 1, .. }), "{error}");
    // A wrong recovery key opens nothing.
    let error = restore(
        &store,
        &RecoveryKey::generate(),
        &work.path().join("r"),
        RestoreOptions::default(),
    )
    .await
    .expect_err("wrong key");
    assert!(matches!(error, Error::NoKey { .. }), "{error}");
    drop(recovery);
}

/// Damage through the S3 path too: a truncated object is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_truncated_object_is_named() {
    let root = tempfile::tempdir().expect("tempdir");
    let place = s3(root.path(), "p").await;
    let work = tempfile::tempdir().expect("tempdir");
    let db = database(&work.path().join("db"), 100);
    let store: Store = place.store();
    let recovery = init_new(&db, &store).await;
    run(&db, &store).await;
    let listing = peers_backup::list(&store, Unlock::Recovery(&recovery))
        .await
        .expect("list");
    let segment = listing.runs[0].objects[1].clone();
    let bytes = std::fs::read(place.file(&segment)).expect("the object is a file under s3s-fs");
    std::fs::write(place.file(&segment), &bytes[..bytes.len() / 2]).expect("truncate");
    let target = work.path().join("restored");
    let error = restore(&store, &recovery, &target, RestoreOptions::default())
        .await
        .expect_err("truncated");
    assert!(!target.exists());
    assert_object_error(&error, &segment, |fault| {
        matches!(fault, ObjectFault::Truncated { .. })
    });
}

/// A trimmed replica is not backed up (its log lacks the history below its
/// checkpoint, so a restore could not rebuild it): a run says so, and
/// uploads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_replica_is_refused_with_a_reason() {
    let work = tempfile::tempdir().expect("tempdir");
    let place = local(&work.path().join("backups"));
    let store = place.store();
    let path = work.path().join("db");
    let db = Db::create(&path, Options::default()).expect("create");
    write(&db, 0, 20);
    init_new(&db, &store).await;
    let checkpoint = db.checkpoint(&mut |_, _| {}).expect("checkpoint");
    drop(db);
    Db::trim(&path, Options::default(), &mut |_, _, _| {}).expect("trim");
    let db = Db::open(&path, Options::default()).expect("open");
    let error = peers_backup::run(&db, &store, &mut |_, _| {})
        .await
        .expect_err("a trimmed replica");
    assert!(
        matches!(&error, Error::Trimmed { checkpoint: at, .. } if *at == checkpoint),
        "{error}"
    );
    let listing = peers_backup::list(&store, Unlock::Device(&db))
        .await
        .expect("list");
    assert!(listing.runs.is_empty());
}
