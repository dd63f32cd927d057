//! Settlement (docs/FORMAT.md "Settlement: merging past a standing
//! checkpoint"): once the owner's checkpoint stands, a revocation reaching
//! below its frontier takes effect above it only, a change off its frontier
//! is refused, changes held off it from before are left out, and every
//! replica reaches the same state whatever order the changes came in.

use peers_engine::{Change, ChangeHash, CheckpointVerdict, Db, Identity, Op, Refusal, Role, Value};
use peers_tests::{all_changes, commit_ops, craft, exchange, key, members_only, set, signing_as};

fn commit(db: &Db, ops: &[Op]) -> Change {
    let hash = commit_ops(db, ops);
    db.get_change(&hash).expect("lookup").expect("held")
}

fn n(db: &Db) -> Option<Value> {
    db.get_field("notes", "w", "n").expect("get")
}

fn standing(db: &Db) -> Option<ChangeHash> {
    db.standing_checkpoint(&mut |_, _| {})
        .expect("standing checkpoint")
}

/// An owner (key 1), an admin A (key 5) and a writer W (key 3). W writes
/// w1; every replica sees it. Then W writes w2 and w3 (row `w`, field `n`
/// = 2, 3) and the owner, holding them, checkpoints: K stands at W's w3.
/// A, who saw only w1, revokes W (`last_seq` 1): a revocation reaching
/// below K's frontier.
struct Story {
    dir: tempfile::TempDir,
    owner: Db,
    w_key: Identity,
    w2: Change,
    w3: Change,
    checkpoint: Change,
    revocation: Change,
}

fn story() -> Story {
    let dir = tempfile::tempdir().expect("tempdir");
    let (owner_key, a_key, w_key) = (key(1), key(5), key(3));
    let owner = Db::create(dir.path().join("owner"), signing_as(&owner_key)).expect("create");
    let admin = Db::join(
        dir.path().join("admin"),
        owner.database_id(),
        signing_as(&a_key),
    )
    .expect("join");
    let writer = Db::join(
        dir.path().join("writer"),
        owner.database_id(),
        signing_as(&w_key),
    )
    .expect("join");
    owner.grant(a_key.author(), Role::Admin).expect("grant");
    owner.grant(w_key.author(), Role::Writer).expect("grant");
    exchange(&owner, &writer);
    commit(&writer, &[set("notes", "w", "n", 1)]);
    exchange(&writer, &owner);
    exchange(&owner, &admin);
    let w2 = commit(&writer, &[set("notes", "w", "n", 2)]);
    let w3 = commit(&writer, &[set("notes", "w", "n", 3)]);
    exchange(&writer, &owner);
    let checkpoint = owner.checkpoint(&mut |_, _| {}).expect("checkpoint");
    let checkpoint = owner.get_change(&checkpoint).expect("get").expect("held");
    assert_eq!(standing(&owner), Some(checkpoint.hash()));
    let revocation = admin.revoke(w_key.author()).expect("revoke");
    let revocation = admin.get_change(&revocation).expect("get").expect("held");
    assert_eq!(
        revocation.ops(),
        &[Op::Revoke {
            key: w_key.author(),
            last_seq: 1
        }][..]
    );
    Story {
        dir,
        owner,
        w_key,
        w2,
        w3,
        checkpoint,
        revocation,
    }
}

impl Story {
    fn replica(&self, name: &str) -> Db {
        Db::join(
            self.dir.path().join(name),
            self.owner.database_id(),
            members_only(),
        )
        .expect("join")
    }

    /// Everything the owner holds, but the checkpoint.
    fn history(&self) -> Vec<Change> {
        all_changes(&self.owner)
            .into_iter()
            .filter(|change| change.hash() != self.checkpoint.hash())
            .collect()
    }
}

fn apply_all(db: &Db, changes: Vec<Change>) {
    let report = db.apply(changes).expect("apply");
    assert!(report.refused.is_empty(), "{report:?}");
}

/// The revocation reaches below K's frontier: where K stands, W's w2 and
/// w3 stay valid (settled) and the revocation takes effect above the
/// frontier only, whether the revocation came before K or after it; a
/// replica without K applies the revocation in full.
#[test]
fn a_revocation_reaching_below_a_standing_checkpoint_is_clamped() {
    let story = story();

    // K, then the revocation.
    let after = story.replica("after");
    apply_all(&after, all_changes(&story.owner));
    assert_eq!(standing(&after), Some(story.checkpoint.hash()));
    apply_all(&after, vec![story.revocation.clone()]);
    assert_eq!(n(&after), Some(Value::Int(3)), "w2 and w3 are settled");

    // The revocation, then K: settling lets w2 and w3 back in.
    let before = story.replica("before");
    apply_all(&before, story.history());
    apply_all(&before, vec![story.revocation.clone()]);
    assert_eq!(n(&before), Some(Value::Int(1)), "revoked after w1");
    let mut revived = before.subscribe();
    apply_all(&before, vec![story.checkpoint.clone()]);
    assert_eq!(standing(&before), Some(story.checkpoint.hash()));
    assert_eq!(n(&before), Some(Value::Int(3)), "settled by K");
    let mut let_back_in = Vec::new();
    while let Ok(change) = revived.try_recv() {
        let_back_in.push(change.hash());
    }
    assert!(
        let_back_in.contains(&story.w2.hash()) && let_back_in.contains(&story.w3.hash()),
        "subscribers learn of the changes let back in: {let_back_in:?}"
    );
    assert_eq!(
        before.state_hash().expect("state hash"),
        after.state_hash().expect("state hash")
    );

    // Without K the revocation holds from w2 on.
    let without = story.replica("without");
    apply_all(&without, story.history());
    apply_all(&without, vec![story.revocation.clone()]);
    assert_eq!(n(&without), Some(Value::Int(1)));

    // Above the frontier the revocation wins: W's next change is inert.
    let w4 = craft(
        &after,
        &story.w_key,
        Some(&story.w3),
        &[],
        vec![set("notes", "w", "n", 4)],
    );
    for db in [&after, &before] {
        let report = db.apply(vec![w4.clone()]).expect("apply");
        assert_eq!(report.inert, vec![w4.hash()], "{report:?}");
        assert_eq!(n(db), Some(Value::Int(3)));
    }

    // A replica trimmed at K (its settled changes gone) takes the
    // revocation the same way: nothing below the frontier is recomputed.
    let trimmed_path = story.dir.path().join("trimmed");
    {
        let trimmed = story.replica("trimmed");
        apply_all(&trimmed, all_changes(&story.owner));
    }
    Db::trim(&trimmed_path, members_only(), &mut |_, _, _| {}).expect("trim");
    let trimmed = Db::open(&trimmed_path, members_only()).expect("open trimmed");
    assert_eq!(standing(&trimmed), Some(story.checkpoint.hash()));
    apply_all(&trimmed, vec![story.revocation.clone()]);
    let report = trimmed.apply(vec![w4.clone()]).expect("apply");
    assert_eq!(report.inert, vec![w4.hash()], "{report:?}");
    assert_eq!(n(&trimmed), Some(Value::Int(3)));
    assert_eq!(
        trimmed.state_hash().expect("state hash"),
        after.state_hash().expect("state hash")
    );

    // It all survives a reopen, a rebuild and a verify.
    let hash = after.state_hash().expect("state hash");
    let path = story.dir.path().join("after");
    drop(after);
    let after = Db::open(&path, members_only()).expect("reopen");
    assert_eq!(standing(&after), Some(story.checkpoint.hash()));
    assert_eq!(after.state_hash().expect("state hash"), hash);
    let (_, rebuilt) = after.rebuild(&mut |_, _| {}).expect("rebuild");
    assert_eq!(rebuilt, hash);
    assert!(after.verify(&mut |_, _| {}).expect("verify").ok());
}

/// Once K stands, a second change of W at a settled seq, or the owner's
/// second change at K's own seq, is refused (`OffCheckpoint`); a replica
/// without K holds the first as fork evidence and cuts W.
#[test]
fn a_change_off_a_standing_frontier_is_refused() {
    let story = story();
    let with = story.replica("with");
    apply_all(&with, all_changes(&story.owner));
    let fork = craft(
        &with,
        &story.w_key,
        Some(&story.w2),
        &[],
        vec![set("notes", "w", "n", 33)],
    );
    let report = with.apply(vec![fork.clone()]).expect("apply");
    assert_eq!(
        report.refused,
        vec![(
            Some(fork.hash()),
            Refusal::OffCheckpoint {
                author: story.w_key.author(),
                seq: 3,
                checkpoint: story.checkpoint.hash(),
            }
        )]
    );
    assert_eq!(with.fork_cut(&story.w_key.author()), None);

    let owner_prev = with
        .get_change(&story.checkpoint.body().prev.expect("prev"))
        .expect("get")
        .expect("held");
    let owner_fork = craft(
        &with,
        &key(1),
        Some(&owner_prev),
        &[],
        vec![set("notes", "o", "n", 1)],
    );
    let report = with.apply(vec![owner_fork.clone()]).expect("apply");
    assert!(
        matches!(
            report.refused.as_slice(),
            [(_, Refusal::OffCheckpoint { seq, .. })] if *seq == story.checkpoint.seq()
        ),
        "{report:?}"
    );

    let without = story.replica("without");
    apply_all(&without, story.history());
    let report = without.apply(vec![fork.clone()]).expect("apply");
    assert_eq!(report.inert, vec![fork.hash()], "fork evidence");
    assert_eq!(without.fork_cut(&story.w_key.author()), Some(2));
}

/// A replica that held a fork of W below K's frontier before K came (W
/// signed w3 and w3'; the owner's frontier has w3) leaves w3' out when K
/// stands: W is no longer cut, and its state is the owner's, also after a
/// reopen, a rebuild and a verify. A later checkpoint, whose closure holds
/// the revocation reaching below K, is confirmed by every replica: each
/// builds its state with K standing.
#[test]
fn changes_held_off_the_frontier_are_left_out_and_later_checkpoints_agree() {
    let story = story();
    let forked = story.replica("forked");
    let fork = craft(
        &forked,
        &story.w_key,
        Some(&story.w2),
        &[],
        vec![set("notes", "w", "n", 33)],
    );
    let mut held = story.history();
    held.push(fork.clone());
    apply_all(&forked, held);
    assert_eq!(forked.fork_cut(&story.w_key.author()), Some(2));
    assert_eq!(n(&forked), Some(Value::Int(2)));

    apply_all(&forked, vec![story.checkpoint.clone()]);
    assert_eq!(standing(&forked), Some(story.checkpoint.hash()));
    assert_eq!(forked.fork_cut(&story.w_key.author()), None);
    assert_eq!(n(&forked), Some(Value::Int(3)));
    assert_eq!(
        forked.state_hash().expect("state hash"),
        story.owner.state_hash().expect("state hash")
    );
    assert!(
        forked.get_change(&fork.hash()).expect("get").is_none(),
        "left out of the view (it stays in the log)"
    );

    let hash = forked.state_hash().expect("state hash");
    let path = story.dir.path().join("forked");
    drop(forked);
    let forked = Db::open(&path, members_only()).expect("reopen");
    assert_eq!(forked.state_hash().expect("state hash"), hash);
    assert_eq!(forked.fork_cut(&story.w_key.author()), None);
    let (_, rebuilt) = forked.rebuild(&mut |_, _| {}).expect("rebuild");
    assert_eq!(rebuilt, hash);
    assert!(forked.verify(&mut |_, _| {}).expect("verify").ok());

    // K2: the owner holds the revocation; its closure's state has K settled.
    apply_all(&story.owner, vec![story.revocation.clone()]);
    assert_eq!(n(&story.owner), Some(Value::Int(3)));
    let k2 = story.owner.checkpoint(&mut |_, _| {}).expect("checkpoint");
    assert_eq!(standing(&story.owner), Some(k2));
    exchange(&story.owner, &forked);
    assert_eq!(
        forked
            .checkpoint_verdict(&k2, &mut |_, _| {})
            .expect("verdict"),
        CheckpointVerdict::Confirmed
    );
    assert_eq!(standing(&forked), Some(k2));
    assert_eq!(
        forked.state_hash().expect("state hash"),
        story.owner.state_hash().expect("state hash")
    );
}
