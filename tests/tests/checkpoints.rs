//! Checkpoints (docs/FORMAT.md "Checkpoints, trimming and snapshots"), as
//! far as they are built: only the owner signs one; `Db::checkpoint` signs
//! the state of a closed frontier; every replica that holds the frontier
//! confirms it, whatever else it holds and in whatever order it came; and
//! each way a checkpoint can be wrong has its one verdict.

use peers_engine::{
    Change, ChangeHash, CheckpointVerdict, Db, Error, FrontierEntry, Identity, Op, Options,
    Refusal, Role, SnapshotError, SnapshotHash, SnapshotReader, SnapshotWriter, Value, VoidReason,
};
use peers_tests::{
    commit_ops, craft, craft_checkpoint, exchange, increment, key, members_only, relaxed, set,
    signing_as,
};

/// A snapshot hash no state has.
const BOGUS: SnapshotHash = SnapshotHash([0x5A; 32]);

fn commit(db: &Db, ops: &[Op]) -> Change {
    let hash = commit_ops(db, ops);
    db.get_change(&hash).expect("lookup").expect("held")
}

fn grant(db: &Db, who: &Identity, role: Role) -> Change {
    held(db, &db.grant(who.author(), role).expect("grant"))
}

fn assert_accepted(db: &Db, change: &Change) {
    let report = db.apply(vec![change.clone()]).expect("apply");
    assert_eq!(report.accepted, vec![change.hash()], "{report:?}");
}

fn assert_refused(db: &Db, change: &Change, expected: Refusal, name: &str) {
    let before = db.state_hash().expect("state hash");
    let report = db.apply(vec![change.clone()]).expect("apply");
    assert_eq!(
        report.refused,
        vec![(Some(change.hash()), expected)],
        "{name}: {report:?}"
    );
    assert_eq!(
        db.get_change(&change.hash()).expect("lookup"),
        None,
        "{name}"
    );
    assert_eq!(db.state_hash().expect("state hash"), before, "{name}");
}

fn held(db: &Db, hash: &ChangeHash) -> Change {
    db.get_change(hash).expect("lookup").expect("held")
}

fn verdict(db: &Db, checkpoint: &ChangeHash) -> CheckpointVerdict {
    db.checkpoint_verdict(checkpoint, &mut |_, _| {})
        .expect("verdict")
}

fn frontier_of(change: &Change) -> Vec<FrontierEntry> {
    let (frontier, _) = change.checkpoint().expect("a checkpoint");
    frontier.to_vec()
}

/// Only the owner checkpoints (FORMAT.md "The Checkpoint op"): an admin's or
/// a writer's checkpoint is refused, `NotTheOwner`, and changes nothing, in a
/// members-only database as in an open one; the owner's is held, and touches
/// no row.
#[test]
fn only_the_owner_signs_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, admin_key, writer_key) = (key(1), key(2), key(3));
    let owner = Db::create(dir.path().join("owner"), signing_as(&owner_key)).expect("create");
    let grant_admin = grant(&owner, &admin_key, Role::Admin);
    let grant_writer = grant(&owner, &writer_key, Role::Writer);
    let admin_write = craft(
        &owner,
        &admin_key,
        None,
        &[&grant_admin],
        vec![set("notes", "a", "by", "admin")],
    );
    let writer_write = craft(
        &owner,
        &writer_key,
        None,
        &[&grant_writer],
        vec![set("notes", "w", "by", "writer")],
    );
    assert_accepted(&owner, &admin_write);
    assert_accepted(&owner, &writer_write);
    for (name, signer, prev) in [
        ("admin", &admin_key, &admin_write),
        ("writer", &writer_key, &writer_write),
    ] {
        let checkpoint = craft_checkpoint(&owner, signer, prev, &[&grant_writer], BOGUS);
        let expected = Refusal::NotTheOwner {
            author: signer.author(),
        };
        assert_refused(&owner, &checkpoint, expected, name);
    }

    let replica = Db::join(
        dir.path().join("replica"),
        owner.database_id(),
        members_only(),
    )
    .expect("join");
    exchange(&owner, &replica);
    let before = replica.state_hash().expect("state hash");
    let checkpoint = craft_checkpoint(
        &owner,
        &owner_key,
        &grant_writer,
        &[&admin_write, &writer_write],
        BOGUS,
    );
    assert_accepted(&replica, &checkpoint);
    assert_eq!(
        replica.state_hash().expect("state hash"),
        before,
        "no row moves"
    );
    assert_eq!(held(&replica, &checkpoint.hash()), checkpoint);

    // An open database: any key may write, only the owner checkpoints.
    let open = Db::create(
        dir.path().join("open"),
        Options {
            identity: Some(owner_key.clone()),
            ..relaxed()
        },
    )
    .expect("create");
    let first = craft(
        &open,
        &writer_key,
        None,
        &[],
        vec![set("notes", "o", "by", "w")],
    );
    assert_accepted(&open, &first);
    let checkpoint = craft_checkpoint(&open, &writer_key, &first, &[], BOGUS);
    let expected = Refusal::NotTheOwner {
        author: writer_key.author(),
    };
    assert_refused(&open, &checkpoint, expected, "open database");

    // Nor does `Db::checkpoint` sign one for anyone else.
    let writer = Db::join(
        dir.path().join("writer"),
        owner.database_id(),
        signing_as(&writer_key),
    )
    .expect("join");
    exchange(&owner, &writer);
    match writer.checkpoint(&mut |_, _| {}) {
        Err(Error::NotAllowed(Refusal::NotTheOwner { author })) => {
            assert_eq!(author, writer_key.author());
        }
        other => panic!("a writer's checkpoint: {other:?}"),
    }
}

/// A database of `owner_key` in `dir`, and a replica of it where
/// `writer_key`, granted writer, writes; both hold the grant.
fn owner_and_writer(
    dir: &std::path::Path,
    owner_key: &Identity,
    writer_key: &Identity,
) -> (Db, Db) {
    let owner = Db::create(dir.join("owner"), signing_as(owner_key)).expect("create");
    let writer = Db::join(
        dir.join("writer"),
        owner.database_id(),
        signing_as(writer_key),
    )
    .expect("join");
    grant(&owner, writer_key, Role::Writer);
    exchange(&owner, &writer);
    (owner, writer)
}

/// The owner checkpoints; the checkpoint moves no row; its frontier is every
/// author's chain; the owner and every replica holding the frontier confirm
/// it, also after more changes arrive above it and whatever order the
/// changes came in.
#[test]
fn every_replica_holding_the_frontier_confirms_the_owners_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, writer_key) = (key(1), key(3));
    let (owner, writer) = owner_and_writer(dir.path(), &owner_key, &writer_key);
    commit(&writer, &[set("notes", "w", "title", "from the writer")]);
    let writer_head = commit(&writer, &[set("notes", "w", "views", 3)]);
    commit(&owner, &[set("notes", "o", "title", "from the owner")]);
    exchange(&writer, &owner);
    let before = owner.state_hash().expect("state hash");

    let checkpoint = owner.checkpoint(&mut |_, _| {}).expect("checkpoint");
    let checkpoint = held(&owner, &checkpoint);
    assert_eq!(
        owner.state_hash().expect("state hash"),
        before,
        "no row moves"
    );
    let owner_entry = FrontierEntry {
        author: owner_key.author(),
        seq: checkpoint.seq() - 1,
        hash: checkpoint.body().prev.expect("a checkpoint has a prev"),
    };
    let writer_entry = FrontierEntry {
        author: writer_key.author(),
        seq: writer_head.seq(),
        hash: writer_head.hash(),
    };
    let mut expected = vec![owner_entry, writer_entry];
    expected.sort();
    assert_eq!(frontier_of(&checkpoint), expected);
    assert_eq!(
        owner.checkpoints().expect("checkpoints"),
        vec![checkpoint.clone()]
    );
    assert_eq!(
        verdict(&owner, &checkpoint.hash()),
        CheckpointVerdict::Confirmed
    );

    // The writer, then more changes above the frontier on both sides.
    exchange(&owner, &writer);
    assert_eq!(
        verdict(&writer, &checkpoint.hash()),
        CheckpointVerdict::Confirmed
    );
    commit(
        &writer,
        &[set("notes", "w", "title", "after the checkpoint")],
    );
    let owner_head = commit(
        &owner,
        &[Op::Delete {
            table: "notes".into(),
            row: "o".into(),
        }],
    );
    exchange(&writer, &owner);
    exchange(&owner, &writer);
    assert_eq!(
        verdict(&owner, &checkpoint.hash()),
        CheckpointVerdict::Confirmed
    );
    assert_eq!(
        verdict(&writer, &checkpoint.hash()),
        CheckpointVerdict::Confirmed
    );

    // A third replica that got everything from the writer, changes in
    // another order than the owner's log.
    let third = Db::join(
        dir.path().join("third"),
        owner.database_id(),
        members_only(),
    )
    .expect("join");
    exchange(&writer, &third);
    assert_eq!(
        verdict(&third, &checkpoint.hash()),
        CheckpointVerdict::Confirmed
    );
    assert_eq!(
        third.state_hash().expect("state hash"),
        owner.state_hash().expect("state hash")
    );
    for db in [&owner, &writer, &third] {
        assert_eq!(standing(db), Some(checkpoint.hash()));
    }

    // A later checkpoint whose frontier this replica lacks: the earlier one
    // keeps standing.
    let ghost = FrontierEntry {
        author: peers_engine::Author([0xEE; 32]),
        seq: 1,
        hash: ChangeHash([9; 32]),
    };
    let mut frontier = vec![
        FrontierEntry {
            author: owner_key.author(),
            seq: owner_head.seq(),
            hash: owner_head.hash(),
        },
        ghost,
    ];
    frontier.sort();
    let later = craft(
        &third,
        &owner_key,
        Some(&owner_head),
        &[],
        vec![Op::Checkpoint {
            frontier,
            snapshot: BOGUS,
        }],
    );
    assert_accepted(&third, &later);
    assert_eq!(
        verdict(&third, &later.hash()),
        CheckpointVerdict::Unconfirmed {
            missing: ghost.hash
        }
    );
    assert_eq!(standing(&third), Some(checkpoint.hash()));
}

fn standing(db: &Db) -> Option<ChangeHash> {
    db.standing_checkpoint(&mut |_, _| {})
        .expect("standing checkpoint")
}

/// A database with an owner (key 1), writers W (key 3) and X (key 4): X
/// writes x1; W, having seen it, writes w1 (naming its grant) and w2
/// (naming x1). Returns the owner's replica and those changes.
struct Story {
    dir: tempfile::TempDir,
    owner: Db,
    owner_key: Identity,
    owner_head: Change,
    w1: Change,
    w2: Change,
    x1: Change,
}

fn story() -> Story {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, w_key, x_key) = (key(1), key(3), key(4));
    let owner = Db::create(dir.path().join("owner"), signing_as(&owner_key)).expect("create");
    let grant_w = grant(&owner, &w_key, Role::Writer);
    let grant_x = grant(&owner, &x_key, Role::Writer);
    let x1 = craft(
        &owner,
        &x_key,
        None,
        &[&grant_x],
        vec![set("notes", "x", "n", 1)],
    );
    let w1 = craft(
        &owner,
        &w_key,
        None,
        &[&grant_w],
        vec![set("notes", "w", "n", 1)],
    );
    let w2 = craft(
        &owner,
        &w_key,
        Some(&w1),
        &[&x1],
        vec![set("notes", "w", "n", 2)],
    );
    let report = owner
        .apply(vec![x1.clone(), w1.clone(), w2.clone()])
        .expect("apply");
    assert_eq!(report.accepted.len(), 3, "{report:?}");
    Story {
        dir,
        owner,
        owner_key,
        owner_head: grant_x,
        w1,
        w2,
        x1,
    }
}

/// A fresh replica holding everything the owner holds (a checkpoint crafted
/// with the owner's key extends the owner's chain there only).
fn replica(story: &Story, name: &str) -> Db {
    let db = Db::join(
        story.dir.path().join(name),
        story.owner.database_id(),
        members_only(),
    )
    .expect("join");
    exchange(&story.owner, &db);
    db
}

/// Each way a checkpoint can be wrong has its verdict (FORMAT.md
/// "Confirming a checkpoint"), and a right one is confirmed.
#[test]
fn each_wrong_checkpoint_has_its_verdict() {
    let story = story();
    let key = &story.owner_key;

    // Every replica first, before the owner's chain grows.
    let [right_db, mismatch_db, open_db, unheld_db, regress_db] =
        ["right", "mismatch", "open", "unheld", "regress"].map(|name| replica(&story, name));

    // The right state: confirmed, and `Db::checkpoint` on the owner signs
    // the same snapshot hash for the same frontier.
    let db = right_db;
    let made = held(
        &story.owner,
        &story.owner.checkpoint(&mut |_, _| {}).expect("checkpoint"),
    );
    let [Op::Checkpoint { snapshot, .. }] = made.ops() else {
        panic!("a checkpoint")
    };
    let right = craft_checkpoint(
        &db,
        key,
        &story.owner_head,
        &[&story.w2, &story.x1],
        *snapshot,
    );
    assert_eq!(frontier_of(&right), frontier_of(&made));
    assert_accepted(&db, &right);
    assert_eq!(verdict(&db, &right.hash()), CheckpointVerdict::Confirmed);
    assert_eq!(standing(&db), Some(right.hash()));

    // A wrong snapshot hash.
    let db = mismatch_db;
    let wrong = craft_checkpoint(&db, key, &story.owner_head, &[&story.w2, &story.x1], BOGUS);
    assert_accepted(&db, &wrong);
    assert_eq!(
        verdict(&db, &wrong.hash()),
        CheckpointVerdict::Void(VoidReason::StateMismatch {
            expected: BOGUS,
            actual: *snapshot,
        })
    );
    // After a void checkpoint, no later one on its chain stands, even one
    // whose frontier covers it (check 2, `AfterVoid`).
    let after = craft_checkpoint(&db, key, &wrong, &[&story.w2, &story.x1], BOGUS);
    assert_accepted(&db, &after);
    assert_eq!(
        verdict(&db, &after.hash()),
        CheckpointVerdict::Void(VoidReason::AfterVoid {
            previous: wrong.hash(),
        })
    );
    assert_eq!(standing(&db), None, "no checkpoint stands");

    // A frontier that omits X, whose x1 w2 names.
    let db = open_db;
    let open = craft_checkpoint(&db, key, &story.owner_head, &[&story.w2], BOGUS);
    assert_accepted(&db, &open);
    assert_eq!(
        verdict(&db, &open.hash()),
        CheckpointVerdict::Void(VoidReason::NotClosed {
            change: story.w2.hash(),
            names: story.x1.hash(),
        })
    );

    // A frontier naming a change nobody holds: never confirmed.
    let db = unheld_db;
    let ghost = ChangeHash([9; 32]);
    let mut frontier = frontier_of(&craft_checkpoint(&db, key, &story.owner_head, &[], BOGUS));
    frontier.push(FrontierEntry {
        author: peers_engine::Author([0xEE; 32]),
        seq: 1,
        hash: ghost,
    });
    frontier.sort();
    let unheld = craft(
        &db,
        key,
        Some(&story.owner_head),
        &[],
        vec![Op::Checkpoint {
            frontier,
            snapshot: BOGUS,
        }],
    );
    assert_accepted(&db, &unheld);
    assert_eq!(
        verdict(&db, &unheld.hash()),
        CheckpointVerdict::Unconfirmed { missing: ghost }
    );

    // A checkpoint whose frontier falls below the owner's previous one.
    let db = regress_db;
    let mut frontier = frontier_of(&craft_checkpoint(
        &db,
        key,
        &story.owner_head,
        &[&story.w2, &story.x1],
        BOGUS,
    ));
    frontier.sort();
    let first = craft(
        &db,
        key,
        Some(&story.owner_head),
        &[],
        vec![Op::Checkpoint {
            frontier,
            snapshot: BOGUS,
        }],
    );
    assert_accepted(&db, &first);
    let second = craft_checkpoint(&db, key, &first, &[&story.w1], BOGUS);
    assert_accepted(&db, &second);
    // It names the first entry of the previous frontier (by author) that
    // this closure lacks: w2 or x1.
    let lacks: Vec<ChangeHash> = frontier_of(&first)
        .into_iter()
        .map(|entry| entry.hash)
        .filter(|hash| [story.w2.hash(), story.x1.hash()].contains(hash))
        .collect();
    assert_eq!(
        verdict(&db, &second.hash()),
        CheckpointVerdict::Void(VoidReason::Regresses {
            previous: first.hash(),
            missing: lacks[0],
        })
    );

    // Not a checkpoint at all.
    assert!(matches!(
        db.checkpoint_verdict(&story.w1.hash(), &mut |_, _| {}),
        Err(Error::NotACheckpoint { .. })
    ));
}

/// A progress callback that, the first time it is called, commits to `db`
/// from another thread and requires that commit to finish within 30 s,
/// while the call it reports on still runs.
fn commit_while_running(db: &Db, row: &'static str) -> impl FnMut(u64, u64) + use<> {
    let db = db.clone();
    let mut committed = false;
    move |_, _| {
        if committed {
            return;
        }
        committed = true;
        let db = db.clone();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let hash = commit_ops(&db, &[set("notes", row, "during", true)]);
            let _ = sender.send(hash);
        });
        receiver
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a commit completes while the checkpoint is judged");
    }
}

/// Judging a checkpoint and writing its snapshot file hold no lock (each
/// builds its closure in a scratch view of its own), so a served replica
/// goes on writing and syncing meanwhile; the commits land above the
/// frontier and change neither the verdict nor the file. (Judging runs as
/// the checkpoint arrives; writing a snapshot builds the closure the same
/// way, and is what a commit from the progress callback proves here.)
#[test]
fn writes_go_on_while_a_checkpoint_is_judged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, writer_key) = (key(1), key(3));
    let (owner, writer) = owner_and_writer(dir.path(), &owner_key, &writer_key);
    commit(&writer, &[set("notes", "w", "title", "before")]);
    exchange(&writer, &owner);
    let checkpoint = owner.checkpoint(&mut |_, _| {}).expect("checkpoint");
    let (before, _) = owner
        .write_snapshot(&checkpoint, Vec::new(), &mut |_, _| {})
        .expect("snapshot");
    exchange(&owner, &writer);

    // The writer judged it as it arrived (and settled it): judging and
    // writing a snapshot build the closure the same way (a scratch view).
    let verdict = writer
        .checkpoint_verdict(&checkpoint, &mut |_, _| {})
        .expect("verdict");
    assert_eq!(verdict, CheckpointVerdict::Confirmed);
    let (first, _) = writer
        .write_snapshot(
            &checkpoint,
            Vec::new(),
            &mut commit_while_running(&writer, "a"),
        )
        .expect("snapshot");
    assert!(
        first == before,
        "the snapshot depends on the checkpoint alone"
    );
    let (during, _) = writer
        .write_snapshot(
            &checkpoint,
            Vec::new(),
            &mut commit_while_running(&writer, "b"),
        )
        .expect("snapshot");
    assert!(
        during == before,
        "the snapshot depends on the checkpoint alone"
    );
    for row in ["a", "b"] {
        assert_eq!(
            writer.get_field("notes", row, "during").expect("get"),
            Some(Value::Bool(true))
        );
    }

    // A scratch view a crash left behind is removed at the next open.
    let leftover = dir.path().join("writer/checkpoint-scratch-7");
    std::fs::create_dir(&leftover).expect("mkdir");
    std::fs::write(leftover.join("CURRENT"), b"x").expect("write");
    drop(writer);
    let writer = Db::open(dir.path().join("writer"), signing_as(&writer_key)).expect("reopen");
    assert!(
        !leftover.exists(),
        "a crash's scratch view is removed on open"
    );
    assert_eq!(
        writer
            .checkpoint_verdict(&checkpoint, &mut |_, _| {})
            .expect("verdict"),
        CheckpointVerdict::Confirmed
    );
}

/// Where a snapshot file's header ends and each block starts (FORMAT.md
/// "Snapshot file, format 1"), read from its lengths.
fn layout(file: &[u8]) -> (usize, Vec<std::ops::Range<usize>>) {
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().expect("4")) as usize;
    let mut at = 48;
    for _ in 0..2 {
        at += 4 + u32_at(at);
    }
    let header_end = at + 4;
    let mut blocks = Vec::new();
    at = header_end;
    while u32_at(at) != 0 {
        let end = at + 8 + u32_at(at);
        blocks.push(at..end);
        at = end;
    }
    (header_end, blocks)
}

/// Rewrites the header checksum after an edit of the header.
fn fix_header_crc(file: &mut [u8]) {
    let (header_end, _) = layout(file);
    let crc = crc32c::crc32c(&file[..header_end - 4]);
    file[header_end - 4..header_end].copy_from_slice(&crc.to_le_bytes());
}

/// Rewrites the end marker for `entries` entries.
fn fix_end(file: &mut Vec<u8>, entries: u64) {
    let at = file.len() - 16;
    file.truncate(at);
    let mut end = [0u8; 12];
    end[4..].copy_from_slice(&entries.to_le_bytes());
    file.extend_from_slice(&end);
    file.extend_from_slice(&crc32c::crc32c(&end).to_le_bytes());
}

fn read_snapshot(file: &[u8]) -> Result<u64, SnapshotError> {
    SnapshotReader::open(file)?.finish()
}

/// The snapshot file of a confirmed checkpoint (FORMAT.md "Snapshot file,
/// format 1"): a function of the checkpoint alone (the owner's and another
/// replica's, which got the changes in another order and holds more, are
/// the same bytes); it reads back whole; and each kind of damage a disk or
/// a hostile peer can do is refused with its own error, never accepted.
#[test]
fn snapshot_files_check_out_and_each_damage_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, writer_key) = (key(1), key(3));
    let (owner, writer) = owner_and_writer(dir.path(), &owner_key, &writer_key);
    // Values of 400 KiB, so that the file holds several blocks of ~1 MiB.
    let mut last_write = None;
    for row in 0..6u8 {
        let big = Value::Bytes(vec![row; 400 * 1024]);
        last_write = Some(commit(
            &writer,
            &[set("files", &format!("f{row}"), "data", big)],
        ));
        commit(
            &owner,
            &[increment("files", &format!("f{row}"), "reads", 2)],
        );
    }
    let last_write = last_write.expect("six writes");
    exchange(&writer, &owner);
    let checkpoint = owner.checkpoint(&mut |_, _| {}).expect("checkpoint");
    let (file, entries) = owner
        .write_snapshot(&checkpoint, Vec::new(), &mut |_, _| {})
        .expect("snapshot of a confirmed checkpoint");
    let (header_end, blocks) = layout(&file);
    assert!(blocks.len() >= 3, "{} blocks", blocks.len());
    assert_eq!(read_snapshot(&file).expect("reads back"), entries);

    // The writer got the changes in another order, and writes more above
    // the frontier: the same file.
    exchange(&owner, &writer);
    commit(&writer, &[set("files", "f0", "data", "replaced")]);
    let (theirs, _) = writer
        .write_snapshot(&checkpoint, Vec::new(), &mut |_, _| {})
        .expect("snapshot on the writer");
    assert!(
        theirs == file,
        "the snapshot depends on the checkpoint alone"
    );

    // A void checkpoint has no snapshot file.
    let head = held(&owner, &checkpoint);
    let wrong = craft_checkpoint(&owner, &owner_key, &head, &[&last_write], BOGUS);
    assert_accepted(&owner, &wrong);
    match owner.write_snapshot(&wrong.hash(), Vec::new(), &mut |_, _| {}) {
        Err(Error::CheckpointNotConfirmed {
            verdict: CheckpointVerdict::Void(VoidReason::StateMismatch { .. }),
            ..
        }) => {}
        other => panic!("a void checkpoint's snapshot: {:?}", other.map(|(_, n)| n)),
    }

    let damaged = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut copy = file.clone();
        edit(&mut copy);
        read_snapshot(&copy).expect_err(name)
    };
    let flip = |at: usize| move |file: &mut Vec<u8>| file[at] ^= 0x10;
    assert!(matches!(
        damaged("magic", &flip(0)),
        SnapshotError::BadMagic
    ));
    assert!(matches!(
        damaged("version", &|f| f[8] = 2),
        SnapshotError::UnsupportedVersion { found: 2, .. }
    ));
    assert!(matches!(
        damaged("header byte", &flip(60)),
        SnapshotError::HeaderChecksum
    ));
    assert!(matches!(
        damaged("checkpoint length", &|f| f[51] = 0xFF),
        SnapshotError::HeaderTooLarge {
            part: "checkpoint",
            ..
        }
    ));
    assert!(matches!(
        damaged("flags", &|f| {
            f[12] = 1;
            fix_header_crc(f);
        }),
        SnapshotError::UnsupportedFlags(1)
    ));
    assert!(matches!(
        damaged("database", &|f| {
            f[20] ^= 1;
            fix_header_crc(f);
        }),
        SnapshotError::BadGenesis { .. }
    ));
    assert!(matches!(
        damaged("checkpoint signature", &|f| {
            f[48 + 4 + 100] ^= 1; // inside the checkpoint's body: its hash moves
            fix_header_crc(f);
        }),
        SnapshotError::BadCheckpoint { .. }
    ));
    assert!(matches!(
        damaged("block byte", &flip(blocks[1].start + 100)),
        SnapshotError::BlockChecksum { index: 1 }
    ));
    assert!(matches!(
        damaged("block length", &|f| f[blocks[0].start + 3] = 0x7F),
        SnapshotError::BlockLength { index: 0, .. }
    ));
    assert!(matches!(
        damaged("swapped blocks", &|f| {
            let (first, second) = (f[blocks[0].clone()].to_vec(), f[blocks[1].clone()].to_vec());
            let mut swapped = second;
            swapped.extend_from_slice(&first);
            f.splice(blocks[0].start..blocks[1].end, swapped);
        }),
        SnapshotError::Unordered { .. }
    ));
    assert!(matches!(
        damaged("end byte", &|f| {
            let at = f.len() - 10;
            f[at] ^= 1;
        }),
        SnapshotError::EndChecksum
    ));
    assert!(matches!(
        damaged("a block dropped", &|f| {
            f.drain(blocks[1].clone());
        }),
        SnapshotError::CountMismatch { .. }
    ));
    // A hostile writer drops a block and fixes the count: the hash catches it.
    let mut dropped = file.clone();
    let in_block: u64 = {
        let mut reader = SnapshotReader::open(file.as_slice()).expect("open");
        reader.next_block().expect("block 0");
        reader.next_block().expect("block 1").expect("some").len() as u64
    };
    dropped.drain(blocks[1].clone());
    fix_end(&mut dropped, entries - in_block);
    assert!(matches!(
        read_snapshot(&dropped),
        Err(SnapshotError::HashMismatch { .. })
    ));
    assert!(matches!(
        damaged("trailing byte", &|f| f.push(0)),
        SnapshotError::TrailingBytes
    ));
    // Cut anywhere: refused (mostly `Truncated`), never accepted.
    for cut in (0..file.len())
        .step_by(997)
        .chain([header_end, file.len() - 1])
    {
        let error = read_snapshot(&file[..cut]).expect_err("a cut file is accepted");
        if cut >= header_end {
            assert!(
                matches!(error, SnapshotError::Truncated { .. }),
                "cut at {cut}: {error}"
            );
        }
    }
    // A checkpoint the writer signed in the header: not the owner's.
    let forged = craft_checkpoint(&owner, &writer_key, &last_write, &[], BOGUS);
    let genesis = held(&owner, &ChangeHash(owner.database_id().0));
    let mut copy = Vec::new();
    let file_writer = SnapshotWriter::new(&mut copy, &genesis, &forged).expect("header");
    file_writer.finish().expect("finish");
    assert!(matches!(
        read_snapshot(&copy),
        Err(SnapshotError::BadCheckpoint { .. })
    ));
}
