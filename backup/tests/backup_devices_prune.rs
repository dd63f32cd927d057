//! Several devices back up one database to one place without overwriting
//! each other; a second device needs the recovery key to join; and prune
//! works in two phases, so a run in flight keeps every object it will name.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{database, init_new, local, restore, run, small_segments, write};
use peers_backup::{Error, PruneOptions, RestoreOptions, Unlock};
use peers_engine::{Change, Db};

/// Two replicas of one database, each backing up to the same directory:
/// their objects are disjoint, both appear in `list`, and either restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_share_a_place() {
    let work = tempfile::tempdir().expect("tempdir");
    let place = local(&work.path().join("backups"));
    let store = place.store();
    let a = database(&work.path().join("a"), 120);
    let recovery = init_new(&a, &store).await;
    run(&a, &store).await;

    let b = Db::join(work.path().join("b"), a.database_id(), small_segments()).expect("join");
    let changes: Vec<Change> = a
        .log()
        .expect("log")
        .map(|item| item.expect("change").1)
        .collect();
    b.apply(changes).expect("apply");
    let error = peers_backup::init(&b, &store, None)
        .await
        .expect_err("joining needs the recovery key");
    assert!(
        matches!(error, Error::NeedRecoveryKey { keys: 2 }),
        "{error}"
    );
    let report = peers_backup::init(&b, &store, Some(&recovery))
        .await
        .expect("init with the recovery key");
    assert!(report.new_recovery_key.is_none());
    assert_eq!(report.last_run, 0);
    run(&b, &store).await;
    run(&a, &store).await;

    let listing = peers_backup::list(&store, Unlock::Device(&b))
        .await
        .expect("list");
    let devices: BTreeSet<_> = listing.runs.iter().map(|run| run.manifest.device).collect();
    assert_eq!(devices, BTreeSet::from([a.author(), b.author()]));
    assert_eq!(listing.runs.len(), 3);
    let objects_of = |device| -> BTreeSet<String> {
        listing
            .runs
            .iter()
            .filter(|run| run.manifest.device == device)
            .flat_map(|run| run.objects.iter().cloned().chain([run.name.clone()]))
            .collect()
    };
    assert!(
        objects_of(a.author()).is_disjoint(&objects_of(b.author())),
        "no device writes a name another does"
    );
    let state_hash = a.state_hash().expect("hash");
    assert_eq!(b.state_hash().expect("hash"), state_hash);
    for device in [a.author(), b.author()] {
        let target = work
            .path()
            .join(format!("restored-{}", &device.to_hex()[..8]));
        let restored = restore(
            &store,
            &recovery,
            &target,
            RestoreOptions {
                device: Some(device),
                min_run: None,
            },
        )
        .await
        .expect("restore");
        assert_eq!(restored.device, device);
        assert_eq!(restored.state_hash, state_hash);
    }
}

/// Prune keeps the newest runs; objects only older runs named are marked
/// first and deleted by a later prune after the grace period. An object
/// that a run in flight uploaded before its manifest existed is marked,
/// but once that manifest lands it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_is_two_phase_and_spares_a_run_in_flight() {
    let work = tempfile::tempdir().expect("tempdir");
    let place = local(&work.path().join("backups"));
    let store = place.store();
    let db = database(&work.path().join("db"), 100);
    let recovery = init_new(&db, &store).await;
    for round in 0..3 {
        write(&db, 100 + round * 20, 20);
        run(&db, &store).await;
    }
    let keep_one = PruneOptions {
        keep: 1,
        grace: Duration::ZERO,
    };
    let listing = peers_backup::list(&store, Unlock::Device(&db))
        .await
        .expect("list");
    let newest = listing.runs.last().expect("a run").clone();

    // A run in flight: its objects are uploaded, its manifest not yet.
    let manifest_bytes = std::fs::read(place.file(&newest.name)).expect("read");
    std::fs::remove_file(place.file(&newest.name)).expect("hide");
    let first = peers_backup::prune(&db, &store, keep_one)
        .await
        .expect("prune");
    assert!(first.deleted.is_empty(), "phase one only marks: {first:?}");
    assert!(first.marked > 0);
    // The run finishes.
    std::fs::write(place.file(&newest.name), &manifest_bytes).expect("land");

    let second = peers_backup::prune(&db, &store, keep_one)
        .await
        .expect("prune");
    assert!(!second.deleted.is_empty(), "{second:?}");
    for name in newest.objects.iter().chain([&newest.name]) {
        assert!(
            place.file(name).exists(),
            "{name}, named by the run that landed, is kept"
        );
    }
    // Run 2 was kept by the first prune (the newest then): the second
    // marked it, a third deletes it.
    let third = peers_backup::prune(&db, &store, keep_one)
        .await
        .expect("prune");
    assert!(third.deleted.contains(&listing.runs[1].name), "{third:?}");
    let after = peers_backup::list(&store, Unlock::Device(&db))
        .await
        .expect("list");
    assert_eq!(after.runs.len(), 1, "only the newest run is left");
    assert_eq!(after.runs[0].name, newest.name);
    assert!(after.bytes < listing.bytes);

    // The grace period holds deletions back.
    write(&db, 500, 5);
    run(&db, &store).await;
    let long = PruneOptions {
        keep: 1,
        grace: Duration::from_secs(3600),
    };
    let marking = peers_backup::prune(&db, &store, long).await.expect("prune");
    assert!(marking.marked > 0);
    let waiting = peers_backup::prune(&db, &store, long).await.expect("prune");
    assert!(waiting.deleted.is_empty());
    assert_eq!(waiting.waiting, marking.marked);

    let state_hash = db.state_hash().expect("hash");
    drop(db);
    let restored = restore(
        &store,
        &recovery,
        &work.path().join("restored"),
        RestoreOptions::default(),
    )
    .await
    .expect("restore after prune");
    assert_eq!(restored.state_hash, state_hash);
}
