//! Bootstrap over sync (docs/FORMAT.md "Bootstrap", PROTOCOL.md
//! "Bootstrap"): a peer that lacks history its partner trimmed receives the
//! partner's snapshot file in the session, checked as it arrives and kept;
//! once installed (`Db::install_snapshot`) the replica syncs the changes
//! above it and converges, keeping its own changes above the frontier. A
//! damaged, cut or foreign snapshot is refused and nothing is kept.

use std::path::{Path, PathBuf};

use peers_engine::{ChangeHash, Db, Error as EngineError, RECEIVED_SNAPSHOT_FILE, Role, TrimStep};
use peers_net::{Error, Node, NodeConfig, SyncReport};
use peers_tests::{commit_ops, exchange, increment, key, rows, set, signing_as};

const TABLES: &[&str] = &["notes"];

fn listening() -> NodeConfig {
    NodeConfig {
        listen: Some("127.0.0.1:0".parse().expect("address")),
        ..NodeConfig::default()
    }
}

/// Dials `address` from a short-lived node on `db` and syncs once.
async fn sync_once(db: &Db, address: &str) -> peers_net::Result<SyncReport> {
    let node = Node::start(db.clone(), NodeConfig::default())
        .await
        .expect("node");
    let report = node.sync_once(address, None).await;
    node.shutdown().await;
    report
}

fn no_progress() -> impl FnMut(TrimStep, u64, u64) {
    |_, _, _| {}
}

/// `count` commits by `db` on rows named after `tag`, with a shared counter.
fn write(db: &Db, tag: &str, count: usize) {
    for index in 0..count {
        commit_ops(
            db,
            &[
                set(
                    "notes",
                    &format!("{tag}-{}", index % 7),
                    "text",
                    format!("{tag} {index}"),
                ),
                increment("notes", "shared", "count", 1),
            ],
        );
    }
}

/// An owner (key `owner_key`) that granted `members` writer roles, wrote,
/// made a checkpoint, trimmed at it, and wrote a little more: reopened at
/// `dir`. Returns it and its checkpoint.
fn trimmed_owner(dir: &Path, owner_key: u8, members: &[u8]) -> (Db, ChangeHash) {
    let path = dir.join("owner");
    let owner = Db::create(&path, signing_as(&key(owner_key))).expect("create");
    for member in members {
        owner
            .grant(key(*member).author(), Role::Writer)
            .expect("grant");
    }
    write(&owner, "below", 40);
    let checkpoint = owner.checkpoint(&mut |_, _| {}).expect("checkpoint");
    drop(owner);
    let report = Db::trim(&path, signing_as(&key(owner_key)), &mut no_progress()).expect("trim");
    assert_eq!(report.checkpoint, checkpoint);
    let owner = Db::open(&path, signing_as(&key(owner_key))).expect("reopen");
    write(&owner, "above", 5);
    (owner, checkpoint)
}

/// What a replica's directory holds besides its generation: the received
/// snapshot, and no temporary file of one.
fn received(db_dir: &Path) -> (bool, Vec<PathBuf>) {
    let temporary = std::fs::read_dir(db_dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("snapshot-receiving"))
        })
        .collect();
    (db_dir.join(RECEIVED_SNAPSHOT_FILE).exists(), temporary)
}

/// A new replica syncs with a trimmed owner: it receives the snapshot (and
/// no change), refuses to receive it again while it waits, installs it,
/// then syncs the changes above the frontier and converges; its own writes
/// then reach the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_bootstraps_from_a_trimmed_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner, checkpoint) = trimmed_owner(dir.path(), 1, &[5]);
    let node = Node::start(owner.clone(), listening()).await.expect("node");
    let address = node.local_addr().expect("listens").to_string();

    let path = dir.path().join("new");
    let fresh = Db::join(&path, owner.database_id(), signing_as(&key(5))).expect("join");
    let report = sync_once(&fresh, &address).await.expect("first sync");
    let snapshot = report.snapshot_received.clone().expect("a snapshot");
    assert_eq!(snapshot.checkpoint, checkpoint);
    assert_eq!(snapshot.path, path.join(RECEIVED_SNAPSHOT_FILE));
    assert_eq!(report.changes_received, 0, "{report:?}");
    assert_eq!(received(&path), (true, Vec::new()));

    // Not sent again while it waits to be installed.
    let again = sync_once(&fresh, &address).await;
    assert!(
        matches!(&again, Err(Error::SnapshotPending { checkpoint: pending, .. }) if *pending == checkpoint),
        "{again:?}"
    );

    drop(fresh);
    let installed = Db::install_snapshot(
        &path,
        path.join(RECEIVED_SNAPSHOT_FILE),
        signing_as(&key(5)),
        &mut no_progress(),
    )
    .expect("install");
    assert_eq!(installed.checkpoint, checkpoint);
    assert_eq!(installed.generation, 1);
    std::fs::remove_file(path.join(RECEIVED_SNAPSHOT_FILE)).expect("remove");
    let fresh = Db::open(&path, signing_as(&key(5))).expect("reopen");
    let report = sync_once(&fresh, &address).await.expect("second sync");
    assert_eq!(report.snapshot_received, None);
    // The checkpoint and the five changes above it.
    assert_eq!(report.changes_received, 6, "{report:?}");
    assert_eq!(rows(&fresh, TABLES), rows(&owner, TABLES));
    assert_eq!(
        fresh.state_hash().expect("hash"),
        owner.state_hash().expect("hash")
    );
    assert_eq!(
        fresh.standing_checkpoint(&mut |_, _| {}).expect("standing"),
        Some(checkpoint)
    );

    write(&fresh, "joiner", 3);
    let report = sync_once(&fresh, &address).await.expect("third sync");
    assert_eq!(report.changes_sent, 3, "{report:?}");
    assert_eq!(
        fresh.state_hash().expect("hash"),
        owner.state_hash().expect("hash")
    );
    node.shutdown().await;
}

/// A writer that went offline below the owner's checkpoint, and wrote on:
/// the owner trimmed. The writer receives the snapshot (its own new changes
/// reach the owner in the same session), installs it keeping its changes
/// above the frontier, and both converge.
/// A session that ends early (its reader finds the snapshot already
/// waiting) while its writer is in a database call returns only once that
/// call is over: right after the node stops, nothing holds the database,
/// and the snapshot installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_early_leaves_the_database_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner, _) = trimmed_owner(dir.path(), 1, &[5]);
    let node = Node::start(owner.clone(), listening()).await.expect("node");
    let address = node.local_addr().expect("listens").to_string();
    let path = dir.path().join("new");
    let fresh = Db::join(&path, owner.database_id(), signing_as(&key(5))).expect("join");
    sync_once(&fresh, &address).await.expect("first sync");
    // The writer's catch-up read now lasts 300 ms; the reader ends the
    // session as soon as the snapshot is announced.
    fail::cfg("engine::changes-since-heads", "sleep(300)").expect("fail point");
    let again = sync_once(&fresh, &address).await;
    fail::remove("engine::changes-since-heads");
    assert!(
        matches!(&again, Err(Error::SnapshotPending { .. })),
        "{again:?}"
    );
    drop(fresh);
    Db::install_snapshot(
        &path,
        path.join(RECEIVED_SNAPSHOT_FILE),
        signing_as(&key(5)),
        &mut no_progress(),
    )
    .expect("nothing holds the database");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_replica_installs_and_keeps_its_own_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner_path = dir.path().join("owner");
    let owner = Db::create(&owner_path, signing_as(&key(1))).expect("create");
    owner.grant(key(3).author(), Role::Writer).expect("grant");
    let path = dir.path().join("writer");
    let writer = Db::join(&path, owner.database_id(), signing_as(&key(3))).expect("join");
    exchange(&owner, &writer);
    write(&writer, "writer", 4);
    exchange(&writer, &owner);
    // Offline: each side writes on.
    write(&writer, "offline", 3);
    write(&owner, "owner", 30);
    let checkpoint = owner.checkpoint(&mut |_, _| {}).expect("checkpoint");
    drop(owner);
    Db::trim(&owner_path, signing_as(&key(1)), &mut no_progress()).expect("trim");
    let owner = Db::open(&owner_path, signing_as(&key(1))).expect("reopen");
    let node = Node::start(owner.clone(), listening()).await.expect("node");
    let address = node.local_addr().expect("listens").to_string();

    let report = sync_once(&writer, &address).await.expect("sync");
    assert!(report.snapshot_received.is_some(), "{report:?}");
    assert_eq!(
        report.changes_sent, 3,
        "the offline writes went: {report:?}"
    );
    drop(writer);
    let installed = Db::install_snapshot(
        &path,
        path.join(RECEIVED_SNAPSHOT_FILE),
        signing_as(&key(3)),
        &mut no_progress(),
    )
    .expect("install");
    assert_eq!(installed.checkpoint, checkpoint);
    assert_eq!(installed.changes_kept, 3, "{installed:?}");
    assert!(installed.changes_settled > 0, "{installed:?}");
    std::fs::remove_file(path.join(RECEIVED_SNAPSHOT_FILE)).expect("remove");
    let writer = Db::open(&path, signing_as(&key(3))).expect("reopen");
    // Installing the same snapshot again moves nothing: refused.
    let file = dir.path().join("copy");
    std::fs::copy(owner_path.join("snapshot-1"), &file).expect("copy");
    let writer_dir = writer.dir().to_owned();
    drop(writer);
    assert!(matches!(
        Db::install_snapshot(&writer_dir, &file, signing_as(&key(3)), &mut no_progress()),
        Err(EngineError::SnapshotNotNewer { .. })
    ));
    let writer = Db::open(&path, signing_as(&key(3))).expect("reopen");
    let report = sync_once(&writer, &address).await.expect("sync again");
    assert_eq!(report.snapshot_received, None);
    assert_eq!(
        writer.state_hash().expect("hash"),
        owner.state_hash().expect("hash")
    );
    assert_eq!(rows(&writer, TABLES), rows(&owner, TABLES));
    node.shutdown().await;
}

/// The sender's snapshot file damaged in a block, cut short, or replaced by
/// another database's: the receiver refuses it (`BadSnapshot`), keeps
/// nothing (no received file, no temporary one), and can still bootstrap
/// once the sender's file is whole again. A full replica that holds the
/// whole frontier is not given a snapshot to install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cut_or_foreign_snapshot_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner, _) = trimmed_owner(dir.path(), 1, &[5]);
    let other = tempfile::tempdir().expect("tempdir");
    let (foreign, _) = trimmed_owner(other.path(), 2, &[]);
    let foreign_file = std::fs::read(foreign.dir().join("snapshot-1")).expect("read");
    let node = Node::start(owner.clone(), listening()).await.expect("node");
    let address = node.local_addr().expect("listens").to_string();
    let file = owner.dir().join("snapshot-1");
    let whole = std::fs::read(&file).expect("read");

    let path = dir.path().join("new");
    let fresh = Db::join(&path, owner.database_id(), signing_as(&key(5))).expect("join");
    let mut damaged = whole.clone();
    let at = damaged.len() - 40;
    damaged[at] ^= 0x10;
    let cut = whole[..whole.len() / 2].to_vec();
    for (what, bytes) in [
        ("damaged", damaged),
        ("cut", cut),
        ("foreign", foreign_file),
    ] {
        std::fs::write(&file, &bytes).expect("write");
        let result = sync_once(&fresh, &address).await;
        assert!(
            matches!(result, Err(Error::BadSnapshot { .. })),
            "{what}: {result:?}"
        );
        assert_eq!(received(&path), (false, Vec::new()), "{what}");
    }
    std::fs::write(&file, &whole).expect("write");
    let report = sync_once(&fresh, &address).await.expect("sync");
    assert!(report.snapshot_received.is_some());

    // A replica that holds the frontier judges the checkpoint itself; one
    // where it stands already (its owner) needs nothing newer.
    let owner_dir = dir.path().join("full");
    let full = Db::create(&owner_dir, signing_as(&key(9))).expect("create");
    write(&full, "x", 3);
    let copy = peers_tests::replica_of(&full, &dir.path().join("copy"));
    exchange(&full, &copy);
    let copy_dir = copy.dir().to_owned();
    drop(copy);
    let checkpoint = full.checkpoint(&mut |_, _| {}).expect("checkpoint");
    let snapshot = dir.path().join("full.snapshot");
    let out = std::fs::File::create(&snapshot).expect("create");
    full.write_snapshot(&checkpoint, out, &mut |_, _| {})
        .expect("write snapshot");
    drop(full);
    assert!(matches!(
        Db::install_snapshot(
            &copy_dir,
            &snapshot,
            peers_tests::relaxed(),
            &mut no_progress()
        ),
        Err(EngineError::SnapshotNotNeeded { .. })
    ));
    assert!(matches!(
        Db::install_snapshot(
            &owner_dir,
            &snapshot,
            signing_as(&key(9)),
            &mut no_progress()
        ),
        Err(EngineError::SnapshotNotNewer { .. })
    ));
    // Another database's snapshot: refused before anything is written.
    assert!(matches!(
        Db::install_snapshot(&owner_dir, &file, signing_as(&key(9)), &mut no_progress()),
        Err(EngineError::BadFile { .. })
    ));
    node.shutdown().await;
}

/// A live session that receives a snapshot ends once the catch-ups are
/// done (nothing pushed could be applied before the install), and the node
/// tells its embedder (`Event::SnapshotReceived`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_reports_the_snapshot_and_ends_the_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner, checkpoint) = trimmed_owner(dir.path(), 1, &[5]);
    let serving = Node::start(owner.clone(), listening()).await.expect("node");
    let address = serving.local_addr().expect("listens").to_string();
    let path = dir.path().join("new");
    let fresh = Db::join(&path, owner.database_id(), signing_as(&key(5))).expect("join");
    let node = Node::start(fresh.clone(), NodeConfig::default())
        .await
        .expect("node");
    let mut events = node.events();
    node.connect(&address, None).await.expect("connect");
    // The snapshot, then the end of that session (a clean one).
    let event = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut received = None;
        loop {
            match events.recv().await {
                Ok(peers_net::Event::SnapshotReceived {
                    checkpoint, path, ..
                }) => received = Some((checkpoint, path)),
                Ok(peers_net::Event::Disconnected { .. }) if received.is_some() => {
                    break received.expect("checked");
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(error) => panic!("events ended: {error}"),
            }
        }
    })
    .await
    .expect("a snapshot, then the session's end, within a minute");
    assert_eq!(event, (checkpoint, path.join(RECEIVED_SNAPSHOT_FILE)));
    assert!(path.join(RECEIVED_SNAPSHOT_FILE).exists());
    node.shutdown().await;
    serving.shutdown().await;
}

/// A snapshot whose state the owner signed wrong (its author record does
/// not end at the frontier entry the checkpoint names) passes the file's own
/// checks, since the hash is the signed one, but is refused when it is
/// installed (`FrontierMismatch`, where an assertion used to stand), and the
/// replica stays at its generation.
#[test]
fn a_snapshot_signed_over_a_wrong_state_is_refused_at_install() {
    use peers_engine::{SnapshotError, SnapshotReader, SnapshotWriter};
    let dir = tempfile::tempdir().expect("tempdir");
    let owner_key = key(1);
    let owner = Db::create(dir.path().join("owner"), signing_as(&owner_key)).expect("create");
    let early: Vec<peers_engine::Change> = (0..3)
        .map(|index| {
            let hash = commit_ops(&owner, &[set("notes", "n", "text", format!("{index}"))]);
            owner.get_change(&hash).expect("read").expect("held")
        })
        .collect();
    write(&owner, "later", 3);
    let checkpoint = owner.checkpoint(&mut |_, _| {}).expect("checkpoint");
    let mut real = Vec::new();
    owner
        .write_snapshot(&checkpoint, &mut real, &mut |_, _| {})
        .expect("write snapshot");
    let mut reader = SnapshotReader::open(real.as_slice()).expect("open");
    let genesis = reader.genesis().clone();
    let mut entries = Vec::new();
    while let Some(block) = reader.next_block().expect("block") {
        entries.extend(block);
    }
    // The real state, signed over a frontier that ends earlier on the
    // owner's chain: the hash of those entries with that frontier.
    let file_of = |forged: &peers_engine::Change| {
        let mut writer = SnapshotWriter::new(Vec::new(), &genesis, forged).expect("writer");
        for (key, value) in &entries {
            writer.entry(key, value).expect("entry");
        }
        writer.finish().expect("finish")
    };
    let placeholder = peers_tests::craft_checkpoint(
        &owner,
        &owner_key,
        &early[1],
        &[],
        peers_engine::SnapshotHash([0; 32]),
    );
    let (_, _, hash) = file_of(&placeholder);
    let forged = peers_tests::craft_checkpoint(&owner, &owner_key, &early[1], &[], hash);
    let (bytes, _, _) = file_of(&forged);
    let file = dir.path().join("forged.peerssnap");
    std::fs::write(&file, bytes).expect("write");
    SnapshotReader::open(std::fs::File::open(&file).expect("open"))
        .expect("a well-formed header")
        .finish()
        .expect("the hash is the signed one");

    let path = dir.path().join("new");
    drop(peers_tests::replica_of(&owner, &path));
    let refused = Db::install_snapshot(&path, &file, peers_tests::relaxed(), &mut no_progress());
    assert!(
        matches!(
            refused,
            Err(EngineError::Snapshot(SnapshotError::FrontierMismatch { author })) if author == owner_key.author()
        ),
        "{refused:?}"
    );
    let replica = Db::open(&path, peers_tests::relaxed()).expect("reopen");
    assert_eq!(replica.generation(), 0);
    assert_eq!(replica.trimmed_at(), None);
}
