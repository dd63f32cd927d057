//! Checkpoints (docs/FORMAT.md "Checkpoints, trimming and snapshots"), as
//! far as they are built: only the owner signs one; `Db::checkpoint` signs
//! the state of a closed frontier; every replica that holds the frontier
//! confirms it, whatever else it holds and in whatever order it came; and
//! each way a checkpoint can be wrong has its one verdict.

use peers_engine::{
    Change, ChangeHash, CheckpointVerdict, Db, Error, FrontierEntry, Identity, Op, Options,
    Refusal, Role, SnapshotHash, VoidReason,
};
use peers_tests::{
    commit_ops, craft, craft_checkpoint, exchange, key, members_only, relaxed, set, signing_as,
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
    match change.ops() {
        [Op::Checkpoint { frontier, .. }] => frontier.clone(),
        other => panic!("not a checkpoint: {other:?}"),
    }
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

/// The owner checkpoints; the checkpoint moves no row; its frontier is every
/// author's chain; the owner and every replica holding the frontier confirm
/// it, also after more changes arrive above it and whatever order the
/// changes came in.
#[test]
fn every_replica_holding_the_frontier_confirms_the_owners_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, writer_key) = (key(1), key(3));
    let owner = Db::create(dir.path().join("owner"), signing_as(&owner_key)).expect("create");
    let writer = Db::join(
        dir.path().join("writer"),
        owner.database_id(),
        signing_as(&writer_key),
    )
    .expect("join");
    grant(&owner, &writer_key, Role::Writer);
    exchange(&owner, &writer);
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
    commit(
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
