//! Trimming (docs/FORMAT.md "Trimming"): `Db::trim` writes the next
//! generation (snapshot file, the log above the standing checkpoint, a view
//! of both) and switches to it; the trimmed replica has the untrimmed one's
//! state and merges every later change as it does; a failure at any step
//! leaves the old generation or the new one, never a mix. Fail points are
//! global to a process: each test holds a `fail::FailScenario`.

use std::path::Path;

use peers_engine::{Change, ChangeHash, Db, Error, Identity, Op, Role, TrimStep, VersionVector};
use peers_tests::{
    commit_ops, copy_dir, craft, delete, exchange, increment, key, rows, set, signing_as,
};

const TABLES: &[&str] = &["notes", "tasks"];

fn held(db: &Db, hash: &ChangeHash) -> Change {
    db.get_change(hash).expect("lookup").expect("held")
}

fn commit(db: &Db, ops: &[Op]) -> Change {
    let hash = commit_ops(db, ops);
    held(db, &hash)
}

/// An owner and a writer that wrote rows (sets, increments, a delete) and
/// exchanged everything; the owner then checkpoints. Returns both, the
/// checkpoint and a settled change of the writer.
fn checkpointed(
    dir: &Path,
    owner_key: &Identity,
    writer_key: &Identity,
) -> (Db, Db, ChangeHash, Change) {
    let owner = Db::create(dir.join("owner"), signing_as(owner_key)).expect("create");
    let writer = Db::join(
        dir.join("writer"),
        owner.database_id(),
        signing_as(writer_key),
    )
    .expect("join");
    owner
        .grant(writer_key.author(), Role::Writer)
        .expect("grant");
    exchange(&owner, &writer);
    let settled = commit(
        &writer,
        &[
            set("notes", "w", "title", "from the writer"),
            set("notes", "w", "views", peers_engine::Value::Counter(10)),
        ],
    );
    commit(&writer, &[increment("notes", "w", "views", 3)]);
    commit(&owner, &[set("notes", "o", "title", "from the owner")]);
    commit(&owner, &[set("tasks", "gone", "title", "deleted below")]);
    commit(&owner, &[delete("tasks", "gone")]);
    exchange(&writer, &owner);
    exchange(&owner, &writer);
    let checkpoint = owner.checkpoint(&mut |_, _| {}).expect("checkpoint");
    exchange(&owner, &writer);
    (owner, writer, checkpoint, settled)
}

fn no_progress() -> impl FnMut(TrimStep, u64, u64) {
    |_, _, _| {}
}

/// The trimmed replica has the untrimmed one's state and rows; its log holds
/// only the changes above the checkpoint; a settled change is `Trimmed`
/// wherever it would be read from the log; later changes, a fork above the
/// frontier among them (whose rows are recomputed from the snapshot's
/// entries), merge identically; rebuild and verify start from the snapshot.
#[test]
fn a_trimmed_replica_keeps_the_state_and_merges_like_a_full_one() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, writer_key) = (key(1), key(3));
    let (owner, writer, checkpoint, settled) = checkpointed(dir.path(), &owner_key, &writer_key);
    let path = owner.dir().to_owned();
    let options = signing_as(&owner_key);
    drop(owner);
    let full_path = dir.path().join("full");
    copy_dir(&path, &full_path);
    let full = Db::open(&full_path, options.clone()).expect("open full");

    let mut steps = Vec::new();
    let report = Db::trim(&path, options.clone(), &mut |step, _, _| {
        if steps.last() != Some(&step) {
            steps.push(step);
        }
    })
    .expect("trim");
    // The checkpoint stands already (settled when it was made): it is not
    // judged again.
    assert_eq!(
        steps,
        vec![TrimStep::Snapshot, TrimStep::Log, TrimStep::View]
    );
    assert_eq!(report.checkpoint, checkpoint);
    assert_eq!(report.generation, 1);
    assert_eq!(
        report.changes_kept, 1,
        "only the checkpoint is above its frontier"
    );
    assert_eq!(report.changes_off_frontier, 0);
    assert!(report.changes_settled > 5, "{report:?}");
    assert!(
        report.log_bytes_after < report.log_bytes_before,
        "{report:?}"
    );
    assert!(!path.join("log").exists() && !path.join("view").exists());
    assert!(path.join("log-1").is_dir() && path.join("snapshot-1").is_file());

    let trimmed = Db::open(&path, options.clone()).expect("open trimmed");
    assert_eq!(trimmed.generation(), 1);
    assert_eq!(trimmed.trimmed_at().map(Change::hash), Some(checkpoint));
    assert_eq!(
        trimmed.state_hash().expect("hash"),
        full.state_hash().expect("hash")
    );
    assert_eq!(rows(&trimmed, TABLES), rows(&full, TABLES));
    assert_eq!(
        trimmed.version_vector().expect("vv"),
        full.version_vector().expect("vv")
    );
    let logged: Vec<ChangeHash> = trimmed
        .log()
        .expect("log")
        .map(|item| item.expect("record").1.hash())
        .collect();
    assert_eq!(logged, vec![checkpoint]);
    assert_eq!(
        trimmed
            .standing_checkpoint(&mut |_, _| {})
            .expect("standing"),
        Some(checkpoint)
    );
    assert_eq!(
        trimmed.checkpoints().expect("checkpoints"),
        vec![held(&full, &checkpoint)]
    );

    // Settled changes are known, not readable: a typed error, never garbage;
    // a `Want` of one is answered without it.
    assert_eq!(
        trimmed.changes_by_hash(&[settled.hash()]).expect("by hash"),
        Vec::<Change>::new()
    );
    for error in [
        trimmed.get_change(&settled.hash()).expect_err("settled"),
        trimmed
            .changes_since(&VersionVector::default())
            .and_then(|changes| changes.collect::<Result<Vec<Change>, Error>>())
            .expect_err("a peer lacking settled changes"),
    ] {
        assert!(
            matches!(error, Error::Trimmed { checkpoint: at, .. } if at == checkpoint),
            "{error}"
        );
    }
    let (copy, entries) = trimmed
        .write_snapshot(&checkpoint, Vec::new(), &mut |_, _| {})
        .expect("the trimmed replica's snapshot file");
    assert_eq!(entries, report.snapshot_entries);
    assert_eq!(
        copy,
        std::fs::read(path.join("snapshot-1")).expect("read snapshot-1")
    );
    assert!(
        trimmed.history("notes", "w").expect("history").is_empty(),
        "the row's history is all settled: trimmed"
    );
    assert_eq!(
        trimmed.get_change(&checkpoint).expect("kept"),
        Some(held(&full, &checkpoint))
    );

    // Later changes, and a fork of the writer above the frontier, which
    // recomputes a row that holds settled state.
    let w1 = commit(&writer, &[set("notes", "w", "title", "later")]);
    let w2 = commit(&writer, &[increment("notes", "w", "views", 5)]);
    let fork = craft(
        &full,
        &writer_key,
        Some(&w1),
        &[],
        vec![set("notes", "w", "title", "the other branch")],
    );
    assert_ne!(fork.hash(), w2.hash());
    for db in [&full, &trimmed] {
        exchange(&writer, db);
        let report = db.apply(vec![fork.clone()]).expect("apply fork");
        assert_eq!(report.accepted, vec![fork.hash()], "{report:?}");
    }
    assert_eq!(
        trimmed.fork_cut(&writer_key.author()),
        Some(w1.seq()),
        "the fork cuts the writer"
    );
    assert_eq!(
        trimmed.state_hash().expect("hash"),
        full.state_hash().expect("hash")
    );
    assert_eq!(rows(&trimmed, TABLES), rows(&full, TABLES));
    assert_eq!(
        trimmed.get_field("notes", "w", "views").expect("get"),
        Some(peers_engine::Value::Counter(13)),
        "the settled counter and increment, the cut one gone"
    );
    // The trimmed replica (the owner) writes on, and serves what a peer
    // holding the settled changes lacks.
    let later = commit(&trimmed, &[set("notes", "o", "title", "after the trim")]);
    let report = exchange(&trimmed, &writer);
    assert!(report.accepted.contains(&later.hash()), "{report:?}");
    exchange(&trimmed, &full);

    let hash = trimmed.state_hash().expect("hash");
    let (_, rebuilt) = trimmed.rebuild(&mut |_, _| {}).expect("rebuild");
    assert_eq!(rebuilt, hash);
    let verified = trimmed.verify(&mut |_, _| {}).expect("verify");
    assert!(verified.ok(), "{verified:?}");
    drop(trimmed);
    let reopened = Db::open(&path, options.clone()).expect("reopen");
    assert_eq!(reopened.state_hash().expect("hash"), hash);
    drop(reopened);
    assert!(matches!(
        Db::trim(&path, options, &mut no_progress()),
        Err(Error::AlreadyTrimmed { checkpoint: at }) if at == checkpoint
    ));
}

/// No standing checkpoint: a typed error that says what to do; a database
/// held by another handle: `InUse`, and nothing is written.
#[test]
fn trim_needs_a_standing_checkpoint_and_the_directory() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let owner_key = key(1);
    let path = dir.path().join("owner");
    let owner = Db::create(&path, signing_as(&owner_key)).expect("create");
    commit(&owner, &[set("notes", "o", "title", "x")]);
    let error =
        Db::trim(&path, signing_as(&owner_key), &mut no_progress()).expect_err("held elsewhere");
    assert!(matches!(error, Error::InUse { .. }), "{error}");
    drop(owner);
    let error =
        Db::trim(&path, signing_as(&owner_key), &mut no_progress()).expect_err("no checkpoint");
    assert!(matches!(error, Error::NoStandingCheckpoint), "{error}");
    assert!(error.to_string().contains("peers checkpoint"), "{error}");
    let owner = Db::open(&path, signing_as(&owner_key)).expect("open");
    assert_eq!(owner.generation(), 0);
    assert!(!path.join("log-1").exists() && !path.join("snapshot-1").exists());
}

/// A failure at each step of a trim leaves a database that opens to the old
/// generation (before the switch) or the new one (after it), with the same
/// state hash, and the other generation's files removed at open.
#[test]
fn a_failed_trim_leaves_the_old_generation_or_the_new_one() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, writer_key) = (key(1), key(3));
    let (owner, _writer, _, _) = checkpointed(dir.path(), &owner_key, &writer_key);
    let source = owner.dir().to_owned();
    let options = signing_as(&owner_key);
    let expected = owner.state_hash().expect("hash");
    drop(owner);
    for (point, generation) in [
        ("engine::trim-snapshot", 0),
        ("engine::trim-log", 0),
        ("engine::trim-view", 0),
        ("engine::trim-switch", 1),
    ] {
        let path = dir.path().join(point.replace("::", "-"));
        copy_dir(&source, &path);
        fail::cfg(point, "return").expect("fail point");
        let error = Db::trim(&path, options.clone(), &mut no_progress()).expect_err(point);
        fail::remove(point);
        assert!(error.to_string().contains(point), "{point}: {error}");
        let db = Db::open(&path, options.clone()).expect("open after a failed trim");
        assert_eq!(db.generation(), generation, "{point}");
        assert_eq!(db.state_hash().expect("hash"), expected, "{point}");
        let (old, new) = (path.join("log").exists(), path.join("log-1").exists());
        assert_eq!((old, new), (generation == 0, generation == 1), "{point}");
        assert_eq!(path.join("view").exists(), generation == 0, "{point}");
        assert_eq!(path.join("snapshot-1").exists(), generation == 1, "{point}");
        drop(db);
        if generation == 0 {
            let report = Db::trim(&path, options.clone(), &mut no_progress())
                .expect("a later trim succeeds");
            assert_eq!(report.generation, 1, "{point}");
            let db = Db::open(&path, options.clone()).expect("open");
            assert_eq!(db.state_hash().expect("hash"), expected, "{point}");
        }
    }
    scenario.teardown();
}

/// A new replica made from a snapshot file (`Db::create_from_snapshot`)
/// holds the state at the checkpoint with an empty log, its own identity,
/// and syncs the changes above the frontier like any replica; a damaged
/// file is refused before anything is written.
#[test]
fn a_replica_starts_from_a_snapshot_file() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, writer_key) = (key(1), key(3));
    let (owner, writer, checkpoint, settled) = checkpointed(dir.path(), &owner_key, &writer_key);
    let file = dir.path().join("at.peerssnap");
    let out = std::fs::File::create(&file).expect("create");
    owner
        .write_snapshot(&checkpoint, out, &mut |_, _| {})
        .expect("write snapshot");
    let mut damaged = std::fs::read(&file).expect("read");
    let last = damaged.len() - 20;
    damaged[last] ^= 1;
    let bad = dir.path().join("bad.peerssnap");
    std::fs::write(&bad, &damaged).expect("write");
    let refused = dir.path().join("refused");
    assert!(matches!(
        Db::create_from_snapshot(&refused, &bad, peers_tests::relaxed()),
        Err(Error::Snapshot(_))
    ));
    assert!(!refused.exists(), "nothing written");

    let fresh = Db::create_from_snapshot(dir.path().join("fresh"), &file, peers_tests::relaxed())
        .expect("from snapshot");
    assert_eq!(fresh.generation(), 1);
    assert_eq!(fresh.database_id(), owner.database_id());
    assert_ne!(fresh.author(), owner_key.author());
    assert_eq!(fresh.log().expect("log").count(), 0);
    assert_eq!(
        fresh.state_hash().expect("hash"),
        owner.state_hash().expect("hash")
    );
    assert_eq!(rows(&fresh, TABLES), rows(&owner, TABLES));
    assert!(matches!(
        fresh.get_change(&settled.hash()),
        Err(Error::Trimmed { .. })
    ));
    let later = commit(&writer, &[set("notes", "w", "title", "above the frontier")]);
    exchange(&writer, &owner);
    let report = exchange(&owner, &fresh);
    assert!(report.refused.is_empty(), "{report:?}");
    assert!(report.accepted.contains(&checkpoint), "{report:?}");
    assert!(report.accepted.contains(&later.hash()), "{report:?}");
    assert_eq!(
        fresh.state_hash().expect("hash"),
        owner.state_hash().expect("hash")
    );
    assert_eq!(
        fresh.standing_checkpoint(&mut |_, _| {}).expect("standing"),
        Some(checkpoint)
    );
    let verified = fresh.verify(&mut |_, _| {}).expect("verify");
    assert!(verified.ok(), "{verified:?}");
}

/// A replica trimmed at one checkpoint judges a later one on top of its
/// snapshot file (FORMAT.md "Trimming"): a trimmed writer confirms the
/// owner's next checkpoint, the trimmed owner makes it, and both trim
/// again; their snapshot files of it are the full replica's byte for byte,
/// and the state is the full replica's.
#[test]
fn a_trimmed_replica_judges_a_later_checkpoint_and_trims_again() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, writer_key) = (key(1), key(3));
    let (owner, writer, first, _) = checkpointed(dir.path(), &owner_key, &writer_key);
    let full = peers_tests::replica_of(&writer, &dir.path().join("full"));
    exchange(&writer, &full);
    let (owner_path, writer_path) = (owner.dir().to_owned(), writer.dir().to_owned());
    drop((owner, writer));
    for (path, identity) in [(&owner_path, &owner_key), (&writer_path, &writer_key)] {
        Db::trim(path, signing_as(identity), &mut no_progress()).expect("first trim");
    }
    let owner = Db::open(&owner_path, signing_as(&owner_key)).expect("open");
    let writer = Db::open(&writer_path, signing_as(&writer_key)).expect("open");
    commit(&writer, &[set("notes", "w", "title", "above the first")]);
    commit(&writer, &[increment("notes", "w", "views", 4)]);
    commit(&owner, &[delete("notes", "o")]);
    exchange(&writer, &owner);
    exchange(&owner, &writer);
    // Made on a trimmed replica: judged there on top of its snapshot.
    let second = owner.checkpoint(&mut |_, _| {}).expect("second checkpoint");
    assert_ne!(second, first);
    exchange(&owner, &writer);
    exchange(&owner, &full);
    exchange(&writer, &full);
    for db in [&owner, &writer, &full] {
        assert_eq!(
            db.standing_checkpoint(&mut |_, _| {}).expect("standing"),
            Some(second),
            "{}",
            db.dir().display()
        );
    }
    let expected = full.state_hash().expect("hash");
    let full_file = dir.path().join("full.peerssnap");
    full.write_snapshot(
        &second,
        std::fs::File::create(&full_file).expect("create"),
        &mut |_, _| {},
    )
    .expect("full snapshot");
    drop((owner, writer));
    for (path, identity) in [(&owner_path, &owner_key), (&writer_path, &writer_key)] {
        let report = Db::trim(path, signing_as(identity), &mut no_progress()).expect("trim again");
        assert_eq!(report.checkpoint, second);
        assert_eq!(report.generation, 2);
        assert_eq!(
            std::fs::read(path.join("snapshot-2")).expect("read"),
            std::fs::read(&full_file).expect("read"),
            "the same snapshot file as the full replica's"
        );
        let db = Db::open(path, signing_as(identity)).expect("open");
        assert_eq!(db.trimmed_at().map(Change::hash), Some(second));
        assert_eq!(db.state_hash().expect("hash"), expected);
        assert_eq!(rows(&db, TABLES), rows(&full, TABLES));
        let verified = db.verify(&mut |_, _| {}).expect("verify");
        assert!(verified.ok(), "{verified:?}");
    }
}
