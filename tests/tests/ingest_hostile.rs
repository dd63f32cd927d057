//! Hostile ingest: every kind of bad change a peer (or a file) can hand a
//! replica is refused with its own typed reason, or held back, and never
//! changes what the replica shows. Each case checks that the state hash, the
//! log and the version vector are the same before and after, and then that
//! the genuine change is still accepted: a refusal leaves nothing behind.
//!
//! The changes are hand-crafted with `Identity::sign` for an author K whose
//! chain no `Db` drives, so each rule of docs/DESIGN.md "Changes" can be broken
//! on its own.

use std::collections::BTreeMap;

use peers_engine::{
    ApplyReport, CHANGE_BYTES_MAX, CHANGE_FORMAT_VERSION, Change, ChangeBody, ChangeHash, Db,
    FormatError, Identity, Op, Options, Refusal, Row, SignatureFault, StateHash, Value,
    VersionVector,
};
use peers_tests::{all_changes, commit_ops, relaxed, replica_of, rows, sync_into};
use tempfile::TempDir;

const TABLES: &[&str] = &["notes"];
/// Bytes of the ed25519 signature that ends every encoded change.
const SIGNATURE_BYTES: usize = 64;
/// Offset of the author key in an encoded change: after the version (a
/// one-byte varint) and the 32-byte database id (docs/FORMAT.md "Change").
const AUTHOR_OFFSET: usize = 1 + 32;

/// A database (the replica under attack) that holds the owner's genesis, one
/// owner change and K's seq 1; K's seq 2 is built but not applied.
struct Fixture {
    dir: TempDir,
    db: Db,
    key: Identity,
    owner_change: Change,
    k1: Change,
    k2: Change,
}

fn set(row: &str, field: &str, value: impl Into<Value>) -> Op {
    Op::Set {
        table: "notes".into(),
        row: row.into(),
        field: field.into(),
        value: value.into(),
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::create(dir.path().join("db"), relaxed()).expect("create");
    let owner_hash = commit_ops(
        &db,
        &[
            set("a", "title", "owner"),
            Op::Increment {
                table: "notes".into(),
                row: "a".into(),
                field: "views".into(),
                delta: 1,
            },
        ],
    );
    let owner_change = db.get_change(&owner_hash).expect("lookup").expect("held");
    let key = Identity::from_secret_bytes([7; 32]);
    let k1 = key.sign(ChangeBody {
        version: CHANGE_FORMAT_VERSION,
        database: db.database_id(),
        author: key.author(),
        seq: 1,
        prev: None,
        deps: vec![owner_hash],
        lamport: owner_change.lamport() + 1,
        wall_ms: 1_700_000_000_000,
        ops: vec![set("a", "title", "k1")],
    });
    let report = db.apply(vec![k1.clone()]).expect("apply");
    assert_eq!(report.accepted, vec![k1.hash()], "{report:?}");
    let k2 = key.sign(k2_body(&db, &key, &k1));
    Fixture {
        dir,
        db,
        key,
        owner_change,
        k1,
        k2,
    }
}

/// A valid body for K's seq 2 (no deps: K has seen nothing new).
fn k2_body(db: &Db, key: &Identity, k1: &Change) -> ChangeBody {
    ChangeBody {
        version: CHANGE_FORMAT_VERSION,
        database: db.database_id(),
        author: key.author(),
        seq: 2,
        prev: Some(k1.hash()),
        deps: Vec::new(),
        lamport: k1.lamport() + 1,
        wall_ms: 1_700_000_000_001,
        ops: vec![
            set("b", "title", "k2"),
            Op::Delete {
                table: "notes".into(),
                row: "a".into(),
            },
        ],
    }
}

impl Fixture {
    /// A valid body for K's seq 2.
    fn k2_body(&self) -> ChangeBody {
        k2_body(&self.db, &self.key, &self.k1)
    }

    /// After a refusal, the genuine K seq 2 is still accepted and applied.
    fn assert_still_accepts_k2(&self) {
        let report = self.db.apply(vec![self.k2.clone()]).expect("apply");
        assert_eq!(report.accepted, vec![self.k2.hash()], "{report:?}");
        assert!(report.refused.is_empty() && report.pending.is_empty() && report.inert.is_empty());
        assert_eq!(
            self.db.get_field("notes", "b", "title").expect("read"),
            Some(Value::from("k2"))
        );
    }
}

/// Everything a replica shows and holds (pending changes aside).
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: StateHash,
    rows: BTreeMap<(String, String), Row>,
    log: Vec<ChangeHash>,
    vector: VersionVector,
}

fn snapshot(db: &Db) -> Snapshot {
    Snapshot {
        state: db.state_hash().expect("state hash"),
        rows: rows(db, TABLES),
        log: all_changes(db).iter().map(Change::hash).collect(),
        vector: db.version_vector().expect("version vector"),
    }
}

/// The report says only "refused", once; returns the refusal.
fn only_refusal(report: &ApplyReport) -> (Option<ChangeHash>, Refusal) {
    assert!(report.accepted.is_empty(), "accepted: {report:?}");
    assert!(report.inert.is_empty(), "inert: {report:?}");
    assert!(report.duplicates.is_empty(), "duplicates: {report:?}");
    assert!(report.pending.is_empty(), "pending: {report:?}");
    assert_eq!(report.refused.len(), 1, "one refusal: {report:?}");
    report.refused[0].clone()
}

fn apply_bytes(db: &Db, bytes: &[u8]) -> ApplyReport {
    db.apply_encoded(&[bytes]).expect("apply_encoded")
}

/// A flipped byte anywhere in a valid change (three masks per position) is
/// refused as malformed or as a bad signature, never accepted nor held.
#[test]
fn every_flipped_byte_is_refused() {
    let fx = fixture();
    let before = snapshot(&fx.db);
    let genuine = fx.k2.bytes();
    let signature_start = genuine.len() - SIGNATURE_BYTES;
    let (mut malformed, mut bad_signature) = (0, 0);
    for index in 0..genuine.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bytes = genuine.to_vec();
            bytes[index] ^= mask;
            let report = apply_bytes(&fx.db, &bytes);
            let (hash, refusal) = only_refusal(&report);
            match refusal {
                Refusal::Malformed(_) => {
                    assert!(
                        index < signature_start,
                        "signature bytes are not decoded, flip at {index}: {refusal}"
                    );
                    assert_eq!(hash, None);
                    malformed += 1;
                }
                Refusal::BadSignature { .. } => {
                    if index >= signature_start {
                        assert_eq!(
                            hash,
                            Some(fx.k2.hash()),
                            "a signature flip keeps the body's hash"
                        );
                    } else {
                        assert_ne!(hash, Some(fx.k2.hash()), "a body flip changes the hash");
                    }
                    bad_signature += 1;
                }
                other => panic!("flip {mask:#04x} at {index}: unexpected refusal {other:?}"),
            }
            assert_eq!(
                fx.db.state_hash().expect("state hash"),
                before.state,
                "flip at {index}"
            );
        }
    }
    assert!(
        malformed > 0 && bad_signature > 0,
        "both kinds seen: {malformed} malformed, {bad_signature} bad signatures"
    );
    assert_eq!(fx.db.pending_len(), 0);
    assert_eq!(snapshot(&fx.db), before);
    fx.assert_still_accepts_k2();
}

/// A well-formed change whose signature was made by another key is refused
/// as BadSignature (Mismatch), whether it comes decoded or encoded.
#[test]
fn signature_by_another_key_is_refused() {
    let fx = fixture();
    let before = snapshot(&fx.db);
    let other = Identity::from_secret_bytes([9; 32]);
    let mut other_body = fx.k2_body();
    other_body.author = other.author();
    let other_change = other.sign(other_body);
    let body_end = fx.k2.bytes().len() - SIGNATURE_BYTES;
    let mut forged = fx.k2.bytes()[..body_end].to_vec();
    forged.extend_from_slice(other_change.signature());
    let decoded = Change::decode(&forged).expect("well formed");
    assert_eq!(decoded.hash(), fx.k2.hash(), "same body, other signature");
    let report = fx.db.apply(vec![decoded]).expect("apply");
    let (hash, refusal) = only_refusal(&report);
    assert_eq!(hash, Some(fx.k2.hash()));
    assert!(
        matches!(refusal, Refusal::BadSignature { author, fault: SignatureFault::Mismatch } if author == fx.key.author()),
        "{refusal:?}"
    );
    let (_, refusal) = only_refusal(&apply_bytes(&fx.db, &forged));
    assert!(
        matches!(
            refusal,
            Refusal::BadSignature {
                fault: SignatureFault::Mismatch,
                ..
            }
        ),
        "{refusal:?}"
    );
    assert_eq!(snapshot(&fx.db), before);
    fx.assert_still_accepts_k2();
}

/// A change claiming a small-order author key (the identity point) is
/// refused as BadSignature (WeakKey) before any equation is checked.
#[test]
fn small_order_author_key_is_refused() {
    let fx = fixture();
    let before = snapshot(&fx.db);
    let mut bytes = fx.k2.bytes().to_vec();
    assert_eq!(
        bytes[AUTHOR_OFFSET..AUTHOR_OFFSET + 32],
        fx.key.author().0,
        "author offset"
    );
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    bytes[AUTHOR_OFFSET..AUTHOR_OFFSET + 32].copy_from_slice(&identity_point);
    let (_, refusal) = only_refusal(&apply_bytes(&fx.db, &bytes));
    assert!(
        matches!(
            refusal,
            Refusal::BadSignature {
                fault: SignatureFault::WeakKey,
                ..
            }
        ),
        "{refusal:?}"
    );
    assert_eq!(snapshot(&fx.db), before);
    fx.assert_still_accepts_k2();
}

/// An overlong varint (the version 2 written as 0xfb 0x02 0x00) decodes in
/// bincode but is refused as Malformed(NonCanonical): one change, one hash.
#[test]
fn non_canonical_encoding_is_refused() {
    let fx = fixture();
    let before = snapshot(&fx.db);
    let mut bytes = fx.k2.bytes().to_vec();
    assert_eq!(bytes[0], 2, "the version is the first byte");
    bytes.splice(0..1, [0xfb, 0x02, 0x00]);
    let (hash, refusal) = only_refusal(&apply_bytes(&fx.db, &bytes));
    assert_eq!(hash, None);
    assert!(
        matches!(refusal, Refusal::Malformed(FormatError::NonCanonical)),
        "{refusal:?}"
    );
    assert_eq!(snapshot(&fx.db), before);
    fx.assert_still_accepts_k2();
}

/// Changes of another database (its genesis and a commit) are refused as
/// WrongDatabase naming both ids.
#[test]
fn change_of_another_database_is_refused() {
    let fx = fixture();
    let before = snapshot(&fx.db);
    let other = Db::create(fx.dir.path().join("other"), relaxed()).expect("create");
    commit_ops(&other, &[set("a", "title", "elsewhere")]);
    let foreign = all_changes(&other);
    assert_eq!(foreign.len(), 2);
    let report = fx.db.apply(foreign.clone()).expect("apply");
    assert!(
        report.accepted.is_empty() && report.pending.is_empty() && report.duplicates.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.refused.len(), 2, "{report:?}");
    for ((hash, refusal), change) in report.refused.iter().zip(&foreign) {
        assert_eq!(*hash, Some(change.hash()));
        assert!(
            matches!(refusal, Refusal::WrongDatabase { expected, actual }
                if *expected == fx.db.database_id() && *actual == other.database_id()),
            "{refusal:?}"
        );
    }
    assert_eq!(snapshot(&fx.db), before);
    fx.assert_still_accepts_k2();
}

/// A change already held (decoded or encoded, alone or with all the others)
/// is reported in `duplicates` and nothing else happens.
#[test]
fn replayed_changes_are_duplicates() {
    let fx = fixture();
    let before = snapshot(&fx.db);
    let held = all_changes(&fx.db);
    let report = fx.db.apply(held.clone()).expect("apply");
    let hashes: Vec<ChangeHash> = held.iter().map(Change::hash).collect();
    assert_eq!(
        report,
        ApplyReport {
            duplicates: hashes.clone(),
            ..ApplyReport::default()
        }
    );
    let encoded: Vec<&[u8]> = held.iter().map(Change::bytes).collect();
    let report = fx.db.apply_encoded(&encoded).expect("apply_encoded");
    assert_eq!(
        report,
        ApplyReport {
            duplicates: hashes,
            ..ApplyReport::default()
        }
    );
    assert_eq!(snapshot(&fx.db), before);
    fx.assert_still_accepts_k2();
}

/// A gap in an author's chain (seq 3 without seq 2) waits in the pending set
/// without touching the view; a replay of it while pending is a duplicate;
/// seq 2 releases it and both are applied.
#[test]
fn gap_waits_then_is_released() {
    let fx = fixture();
    let writer = replica_of(&fx.db, &fx.dir.path().join("writer"));
    sync_into(&fx.db, &writer);
    let w: Vec<Change> = (1..=3)
        .map(|index| {
            let hash = commit_ops(
                &writer,
                &[
                    set("w", "n", i64::from(index)),
                    set(&format!("w{index}"), "x", true),
                ],
            );
            writer.get_change(&hash).expect("lookup").expect("held")
        })
        .collect();
    let report = fx.db.apply(vec![w[0].clone()]).expect("apply");
    assert_eq!(report.accepted, vec![w[0].hash()]);
    let before = snapshot(&fx.db);
    let report = fx.db.apply(vec![w[2].clone()]).expect("apply");
    assert_eq!(
        report,
        ApplyReport {
            pending: vec![w[2].hash()],
            ..ApplyReport::default()
        }
    );
    assert_eq!(fx.db.pending_len(), 1);
    assert_eq!(fx.db.missing(), vec![w[1].hash()]);
    assert_eq!(
        snapshot(&fx.db),
        before,
        "a pending change is not in the view, the log or the vector"
    );
    assert!(fx.db.get_change(&w[2].hash()).expect("lookup").is_none());
    let report = fx.db.apply(vec![w[2].clone()]).expect("apply");
    assert_eq!(
        report,
        ApplyReport {
            duplicates: vec![w[2].hash()],
            ..ApplyReport::default()
        }
    );
    let report = fx.db.apply(vec![w[1].clone()]).expect("apply");
    assert_eq!(
        report.accepted,
        vec![w[1].hash(), w[2].hash()],
        "{report:?}"
    );
    assert!(report.pending.is_empty() && report.refused.is_empty() && report.inert.is_empty());
    assert_eq!(fx.db.pending_len(), 0);
    assert_eq!(
        fx.db.state_hash().expect("state hash"),
        writer.state_hash().expect("state hash")
    );
    assert_eq!(rows(&fx.db, TABLES), rows(&writer, TABLES));
}

/// Lamport is verified, not trusted: one above the rule and one that ignores
/// a dep's lamport are both refused as Lamport { expected, actual }.
#[test]
fn lamport_off_the_rule_is_refused() {
    let fx = fixture();
    let mut ahead = fx.k2_body();
    ahead.lamport = fx.k1.lamport() + 1000;
    let before = snapshot(&fx.db);
    let (hash, refusal) = only_refusal(
        &fx.db
            .apply(vec![fx.key.sign(ahead.clone())])
            .expect("apply"),
    );
    assert_eq!(hash, Some(fx.key.sign(ahead).hash()));
    assert_eq!(
        refusal,
        Refusal::Lamport {
            expected: fx.k1.lamport() + 1,
            actual: fx.k1.lamport() + 1000
        }
    );
    assert!(matches!(refusal, Refusal::Lamport { .. }));
    assert_eq!(snapshot(&fx.db), before);

    // The owner writes after seeing K1, so its change has a higher lamport.
    let owner_hash = commit_ops(&fx.db, &[set("c", "title", "owner again")]);
    let owner_lamport = fx
        .db
        .get_change(&owner_hash)
        .expect("lookup")
        .expect("held")
        .lamport();
    assert_eq!(owner_lamport, fx.k1.lamport() + 1);
    let mut ignores_dep = fx.k2_body();
    ignores_dep.deps = vec![owner_hash];
    let before = snapshot(&fx.db);
    let (_, refusal) = only_refusal(
        &fx.db
            .apply(vec![fx.key.sign(ignores_dep.clone())])
            .expect("apply"),
    );
    assert!(
        matches!(refusal, Refusal::Lamport { expected, actual } if expected == owner_lamport + 1 && actual == fx.k1.lamport() + 1),
        "{refusal:?}"
    );
    assert_eq!(snapshot(&fx.db), before);
    ignores_dep.lamport = owner_lamport + 1;
    let report = fx.db.apply(vec![fx.key.sign(ignores_dep)]).expect("apply");
    assert_eq!(
        report.accepted.len(),
        1,
        "the same change with the right lamport is accepted: {report:?}"
    );
}

/// The pending set is bounded: with room for 3, a chain of 4 changes whose
/// first dep never arrives leaves 3 pending and refuses the 4th as
/// PendingFull, and keeps refusing. When the dep arrives, all are applied.
#[test]
fn pending_set_is_bounded() {
    let fx = fixture();
    let options = Options {
        pending_changes_max: 3,
        ..relaxed()
    };
    let target =
        Db::join(fx.dir.path().join("target"), fx.db.database_id(), options).expect("join");
    sync_into(&fx.db, &target);
    let writer = replica_of(&fx.db, &fx.dir.path().join("writer"));
    sync_into(&fx.db, &writer);
    // K2 reaches the writer, never (for now) the target.
    assert_eq!(
        writer.apply(vec![fx.k2.clone()]).expect("apply").accepted,
        vec![fx.k2.hash()]
    );
    let w: Vec<Change> = (1..=4)
        .map(|index| {
            let hash = commit_ops(&writer, &[set("w", "n", i64::from(index))]);
            writer.get_change(&hash).expect("lookup").expect("held")
        })
        .collect();
    assert_eq!(
        w[0].body().deps,
        vec![fx.k2.hash()],
        "the writer's first change names K2"
    );
    let before = snapshot(&target);
    let report = target.apply(w.clone()).expect("apply");
    assert_eq!(
        report.pending,
        vec![w[0].hash(), w[1].hash(), w[2].hash()],
        "{report:?}"
    );
    assert!(
        report.accepted.is_empty() && report.duplicates.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].0, Some(w[3].hash()));
    assert!(
        matches!(report.refused[0].1, Refusal::PendingFull { limit: 3 }),
        "{report:?}"
    );
    assert_eq!(target.pending_len(), 3);
    assert!(target.missing().contains(&fx.k2.hash()));
    assert_eq!(snapshot(&target), before);
    let (_, refusal) = only_refusal(&target.apply(vec![w[3].clone()]).expect("apply"));
    assert!(
        matches!(refusal, Refusal::PendingFull { limit: 3 }),
        "{refusal:?}"
    );
    assert_eq!(target.pending_len(), 3);
    assert_eq!(snapshot(&target), before);

    let report = target.apply(vec![fx.k2.clone()]).expect("apply");
    assert_eq!(
        report.accepted,
        vec![fx.k2.hash(), w[0].hash(), w[1].hash(), w[2].hash()],
        "{report:?}"
    );
    assert_eq!(target.pending_len(), 0);
    assert_eq!(
        target.apply(vec![w[3].clone()]).expect("apply").accepted,
        vec![w[3].hash()]
    );
    assert_eq!(
        target.state_hash().expect("state hash"),
        writer.state_hash().expect("state hash")
    );
}

/// Truncated bytes (every prefix of a valid change) are Malformed:
/// Truncated below a signature's length, Undecodable above it.
#[test]
fn truncated_bytes_are_refused() {
    let fx = fixture();
    let before = snapshot(&fx.db);
    let genuine = fx.k2.bytes();
    for length in 0..genuine.len() {
        let (hash, refusal) = only_refusal(&apply_bytes(&fx.db, &genuine[..length]));
        assert_eq!(hash, None);
        assert!(
            matches!(
                refusal,
                Refusal::Malformed(FormatError::Truncated { .. } | FormatError::Undecodable { .. })
            ),
            "prefix of {length}: {refusal:?}"
        );
        if length < SIGNATURE_BYTES {
            assert_eq!(
                refusal,
                Refusal::Malformed(FormatError::Truncated { bytes: length })
            );
        }
    }
    assert_eq!(snapshot(&fx.db), before);
    fx.assert_still_accepts_k2();
}

/// A record of CHANGE_BYTES_MAX + 1 bytes is refused as TooLarge before any
/// decoding; one of exactly CHANGE_BYTES_MAX bytes is decoded (and refused
/// for its trailing bytes).
#[test]
fn oversized_record_is_refused() {
    let fx = fixture();
    let before = snapshot(&fx.db);
    let mut bytes = fx.k2.bytes().to_vec();
    bytes.resize(CHANGE_BYTES_MAX + 1, 0);
    let (hash, refusal) = only_refusal(&apply_bytes(&fx.db, &bytes));
    assert_eq!(hash, None);
    assert!(
        matches!(refusal, Refusal::Malformed(FormatError::TooLarge { bytes, max })
            if bytes == CHANGE_BYTES_MAX + 1 && max == CHANGE_BYTES_MAX),
        "{refusal:?}"
    );
    bytes.truncate(CHANGE_BYTES_MAX);
    let (_, refusal) = only_refusal(&apply_bytes(&fx.db, &bytes));
    assert!(
        matches!(
            refusal,
            Refusal::Malformed(FormatError::TrailingBytes { .. })
        ),
        "{refusal:?}"
    );
    assert_eq!(snapshot(&fx.db), before);
    fx.assert_still_accepts_k2();
}

/// `prev` must be the author's own change `seq - 1`: naming another author's
/// change, or an own change of another seq, is BrokenChain.
#[test]
fn broken_chain_is_refused() {
    let fx = fixture();
    let before = snapshot(&fx.db);
    let mut other_authors = fx.k2_body();
    other_authors.prev = Some(fx.owner_change.hash());
    let (_, refusal) = only_refusal(
        &fx.db
            .apply(vec![fx.key.sign(other_authors)])
            .expect("apply"),
    );
    assert!(
        matches!(refusal, Refusal::BrokenChain { author, seq: 2, expected_seq: 1 } if author == fx.key.author()),
        "{refusal:?}"
    );
    let mut skips_a_seq = fx.k2_body();
    skips_a_seq.seq = 3;
    let (_, refusal) = only_refusal(&fx.db.apply(vec![fx.key.sign(skips_a_seq)]).expect("apply"));
    assert!(
        matches!(
            refusal,
            Refusal::BrokenChain {
                seq: 3,
                expected_seq: 2,
                ..
            }
        ),
        "{refusal:?}"
    );
    assert_eq!(snapshot(&fx.db), before);
    fx.assert_still_accepts_k2();
}

/// An author's own change belongs in `prev`, never in `deps`: OwnDep.
#[test]
fn own_dep_is_refused() {
    let fx = fixture();
    let before = snapshot(&fx.db);
    let mut own_dep = fx.k2_body();
    own_dep.deps = vec![fx.k1.hash()];
    let (hash, refusal) = only_refusal(
        &fx.db
            .apply(vec![fx.key.sign(own_dep.clone())])
            .expect("apply"),
    );
    assert_eq!(hash, Some(fx.key.sign(own_dep).hash()));
    assert!(
        matches!(refusal, Refusal::OwnDep { author, seq: 2, dep } if author == fx.key.author() && dep == fx.k1.hash()),
        "{refusal:?}"
    );
    assert_eq!(snapshot(&fx.db), before);
    fx.assert_still_accepts_k2();
}

/// One batch mixing a valid change with hostile ones: the valid change is
/// applied, each hostile one is refused with its own reason, and the
/// verdicts do not leak into each other.
#[test]
fn mixed_batch_refuses_only_the_hostile_changes() {
    let fx = fixture();
    let mut flipped = fx.k2.bytes().to_vec();
    let last = flipped.len() - 1;
    flipped[last - 10] ^= 0x40;
    let mut non_canonical = fx.k2.bytes().to_vec();
    non_canonical.splice(0..1, [0xfb, 0x01, 0x00]);
    let mut ahead = fx.k2_body();
    ahead.lamport += 1;
    ahead.wall_ms += 1;
    let ahead = fx.key.sign(ahead);
    let truncated = &fx.k2.bytes()[..10];
    let batch: Vec<&[u8]> = vec![
        &flipped,
        &non_canonical,
        ahead.bytes(),
        fx.k2.bytes(),
        truncated,
    ];
    let report = fx.db.apply_encoded(&batch).expect("apply_encoded");
    assert_eq!(report.accepted, vec![fx.k2.hash()], "{report:?}");
    assert!(
        report.pending.is_empty() && report.inert.is_empty() && report.duplicates.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.refused.len(), 4, "{report:?}");
    let reason = |hash: Option<ChangeHash>| -> Vec<&Refusal> {
        report
            .refused
            .iter()
            .filter(|(refused, _)| *refused == hash)
            .map(|(_, refusal)| refusal)
            .collect()
    };
    let malformed = reason(None);
    assert_eq!(malformed.len(), 2, "{report:?}");
    assert!(
        malformed
            .iter()
            .any(|refusal| matches!(refusal, Refusal::Malformed(FormatError::NonCanonical)))
    );
    assert!(malformed.iter().any(|refusal| matches!(
        refusal,
        Refusal::Malformed(FormatError::Truncated { bytes: 10 })
    )));
    assert!(
        matches!(
            reason(Some(fx.k2.hash())).as_slice(),
            [Refusal::BadSignature { .. }]
        ),
        "{report:?}"
    );
    assert!(
        matches!(
            reason(Some(ahead.hash())).as_slice(),
            [Refusal::Lamport { .. }]
        ),
        "{report:?}"
    );
    assert_eq!(
        fx.db.get_field("notes", "b", "title").expect("read"),
        Some(Value::from("k2"))
    );
}

/// A batch large enough to be decoded and verified in several jobs on
/// several threads (`Db::apply`'s pipeline) keeps every change's verdict:
/// held changes are duplicates, a malformed one and a forged one are
/// refused (in the order they came), every other change is accepted, and
/// the replica ends with the source's state.
#[test]
fn a_large_batch_keeps_every_verdict_across_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Db::create(dir.path().join("source"), relaxed()).expect("create");
    for index in 0..1_200 {
        commit_ops(
            &source,
            &[set(&format!("row{}", index % 97), "n", index as i64)],
        );
    }
    let changes = all_changes(&source);
    assert_eq!(changes.len(), 1_201);
    let other = replica_of(&source, &dir.path().join("other"));
    commit_ops(&other, &[set("b", "n", 1)]);
    let forged = all_changes(&other)
        .into_iter()
        .find(|change| change.author() == other.identity().author())
        .expect("the other replica's change");
    let mut forged_bytes = forged.bytes().to_vec();
    let last = forged_bytes.len() - 1;
    forged_bytes[last] ^= 0x01;
    let truncated = changes[900].bytes()[..20].to_vec();

    let replica = replica_of(&source, &dir.path().join("replica"));
    let held = replica.apply(changes[1..301].to_vec()).expect("apply");
    assert_eq!(held.accepted.len(), 300, "{held:?}");
    let mut batch: Vec<&[u8]> = changes.iter().map(Change::bytes).collect();
    batch.insert(700, &truncated);
    batch.insert(1_000, &forged_bytes);
    let report = replica.apply_encoded(&batch).expect("apply_encoded");

    assert_eq!(report.duplicates.len(), 301, "{:?}", report.refused);
    assert_eq!(report.accepted.len(), 900);
    let expected_accepted: Vec<ChangeHash> = changes[301..].iter().map(Change::hash).collect();
    assert_eq!(report.accepted, expected_accepted, "accepted in log order");
    assert!(report.pending.is_empty() && report.inert.is_empty());
    assert!(
        matches!(
            report.refused.as_slice(),
            [
                (None, Refusal::Malformed(FormatError::Truncated { bytes: 20 })),
                (Some(hash), Refusal::BadSignature { .. }),
            ] if *hash == forged.hash()
        ),
        "{:?}",
        report.refused
    );
    assert_eq!(
        replica.state_hash().expect("state hash"),
        source.state_hash().expect("state hash")
    );
}
