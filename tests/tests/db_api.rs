//! The embedder's API does what its docs promise: subscriptions see applied
//! changes, concurrent commits share fsyncs, history lists a row's changes,
//! `changes_since` sends only what is missing, automerge export/import
//! round-trips a table, and a replica reopened reads what it wrote.

use std::collections::BTreeSet;

use peers_engine::{Db, Options, Value, VersionVector};
use peers_tests::{relaxed, replica_of, sync_into};

/// Subscribers receive local commits and received changes, once each.
#[test]
fn subscribers_see_applied_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Db::create(dir.path().join("a"), relaxed()).expect("create");
    let b = Db::join(dir.path().join("b"), a.database_id(), relaxed()).expect("join");
    let mut events = b.subscribe();
    sync_into(&a, &b);
    let genesis = events.try_recv().expect("genesis applied on b");
    assert!(genesis.is_genesis());
    let mut tx = b.transaction();
    tx.set("t", "r", "f", 1);
    let local = tx.commit().expect("commit");
    assert_eq!(events.try_recv().expect("local commit").hash(), local);
    assert!(events.try_recv().is_err(), "nothing else was applied");
}

/// Commits from many threads at once are all durable, share fsyncs and
/// form one unbroken chain.
#[test]
fn concurrent_commits_share_group_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::create(dir.path().join("db"), Options::default()).expect("create");
    let before = db.log_fsync_count();
    let threads = 8;
    let per_thread = 50;
    let hashes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let db = db.clone();
                scope.spawn(move || {
                    (0..per_thread)
                        .map(|index| {
                            let mut tx = db.transaction();
                            tx.set("t", &format!("{thread}-{index}"), "v", index as i64);
                            tx.commit().expect("commit")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("thread"))
            .collect()
    });
    let unique: BTreeSet<_> = hashes.iter().collect();
    assert_eq!(unique.len(), threads * per_thread);
    let fsyncs = db.log_fsync_count() - before;
    assert!(
        fsyncs < (threads * per_thread) as u64,
        "{fsyncs} fsyncs for {} commits",
        threads * per_thread
    );
    let path = db.dir().to_owned();
    drop(db);
    let reopened = Db::open(&path, Options::default()).expect("reopen");
    for hash in &hashes {
        assert!(reopened.get_change(hash).expect("lookup").is_some());
    }
    assert_eq!(reopened.scan("t").count(), threads * per_thread);
    // One unbroken chain of this replica's key, though each thread signed
    // its own changes outside the writer lock (tests/tests/commit_order.rs).
    let mut chain: Vec<_> = peers_tests::all_changes(&reopened)
        .into_iter()
        .filter(|change| change.author() == reopened.author())
        .collect();
    chain.sort_by_key(|change| change.seq());
    assert_eq!(chain.len(), 1 + threads * per_thread, "genesis and commits");
    for pair in chain.windows(2) {
        assert_eq!(pair[1].seq(), pair[0].seq() + 1);
        assert_eq!(pair[1].body().prev, Some(pair[0].hash()));
    }
}

/// History lists every change that touched a row, with its ops on that row.
#[test]
fn history_lists_the_rows_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::create(dir.path().join("db"), relaxed()).expect("create");
    let mut hashes = Vec::new();
    for value in 0..3 {
        let mut tx = db.transaction();
        tx.set("t", "r", "f", value).set("t", "other", "f", value);
        hashes.push(tx.commit().expect("commit"));
    }
    let mut tx = db.transaction();
    tx.delete("t", "r");
    hashes.push(tx.commit().expect("commit"));
    let history = db.history("t", "r").expect("history");
    assert_eq!(
        history.iter().map(|entry| entry.hash).collect::<Vec<_>>(),
        hashes
    );
    assert!(
        history
            .iter()
            .all(|entry| entry.valid && entry.ops.len() == 1)
    );
    assert_eq!(db.get_row("t", "r").expect("get"), None);
}

/// `changes_since` yields exactly the changes the other side lacks, in log order.
#[test]
fn changes_since_sends_only_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Db::create(dir.path().join("a"), relaxed()).expect("create");
    let b = replica_of(&a, &dir.path().join("b"));
    for index in 0..5 {
        let mut tx = a.transaction();
        tx.set("t", "r", "f", index);
        tx.commit().expect("commit");
    }
    sync_into(&a, &b);
    let mut new = Vec::new();
    for index in 0..3 {
        let mut tx = a.transaction();
        tx.set("t", "r", "f", 10 + index);
        new.push(tx.commit().expect("commit"));
    }
    let missing: Vec<_> = a
        .changes_since(&b.version_vector().expect("vv"))
        .expect("since")
        .map(|c| c.expect("c").hash())
        .collect();
    assert_eq!(missing, new);
    let everything = a
        .changes_since(&VersionVector::new())
        .expect("since")
        .count();
    assert_eq!(everything, 1 + 5 + 3);
    sync_into(&a, &b);
    assert_eq!(
        a.version_vector().expect("vv"),
        b.version_vector().expect("vv")
    );
    assert_eq!(a.state_hash().expect("hash"), b.state_hash().expect("hash"));
}

/// With many authors interleaved (each writing after seeing the others),
/// `changes_since` merges the authors' chains back into log order: for an
/// empty vector it is the whole log, in order; for a replica that saw part
/// of it, the log's order restricted to what that replica lacks; and its
/// `remaining` counts what is left.
#[test]
fn changes_since_is_the_log_order_across_authors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Db::create(dir.path().join("hub"), relaxed()).expect("create");
    let writers: Vec<Db> = (0..4)
        .map(|index| replica_of(&hub, &dir.path().join(format!("w{index}"))))
        .collect();
    let behind = replica_of(&hub, &dir.path().join("behind"));
    for round in 0..30 {
        let writer = &writers[round % writers.len()];
        sync_into(&hub, writer);
        let mut tx = writer.transaction();
        tx.set("t", &format!("r{}", round % 7), "f", round as i64);
        tx.commit().expect("commit");
        sync_into(writer, &hub);
        if round == 12 {
            sync_into(&hub, &behind);
        }
    }
    let log: Vec<_> = peers_tests::all_changes(&hub)
        .iter()
        .map(|change| change.hash())
        .collect();
    let mut stream = hub.changes_since(&VersionVector::new()).expect("since");
    assert_eq!(stream.remaining(), log.len());
    let first = stream.next().expect("first").expect("read").hash();
    assert_eq!(stream.remaining(), log.len() - 1);
    let mut everything = vec![first];
    everything.extend(stream.map(|change| change.expect("read").hash()));
    assert_eq!(everything, log);

    let held: BTreeSet<_> = peers_tests::all_changes(&behind)
        .iter()
        .map(|change| change.hash())
        .collect();
    let lacking: Vec<_> = log
        .iter()
        .copied()
        .filter(|hash| !held.contains(hash))
        .collect();
    let sent: Vec<_> = hub
        .changes_since(&behind.version_vector().expect("vv"))
        .expect("since")
        .map(|change| change.expect("read").hash())
        .collect();
    assert_eq!(sent, lacking);
}

/// A table exported to automerge and imported into another table reads the same.
#[test]
fn automerge_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::create(dir.path().join("db"), relaxed()).expect("create");
    let mut tx = db.transaction();
    tx.set("notes", "a", "title", "hello")
        .set("notes", "a", "pinned", true)
        .set("notes", "b", "size", Value::Uint(7))
        .set("notes", "b", "blob", Value::Bytes(vec![1, 2]))
        .increment("notes", "b", "views", 3);
    tx.commit().expect("commit");
    let mut document = db.export_automerge("notes").expect("export");
    let bytes = document.save();
    let loaded = automerge::AutoCommit::load(&bytes).expect("automerge loads its own document");
    db.import_automerge("copy", &loaded).expect("import");
    let original: Vec<_> = db.scan("notes").map(|row| row.expect("row")).collect();
    let copy: Vec<_> = db.scan("copy").map(|row| row.expect("row")).collect();
    assert_eq!(original, copy);
    assert_eq!(copy.len(), 2);
}

/// A document written by another automerge program: a string made as
/// collaborative text (what automerge's JavaScript library makes of one)
/// imports as its text; a list in a field, or a root entry that is not a
/// map, is refused with the place named, and nothing is written.
#[test]
fn automerge_import_reads_text_and_refuses_what_has_no_peers_form() {
    use automerge::transaction::Transactable;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::create(dir.path().join("db"), relaxed()).expect("create");
    let mut document = automerge::AutoCommit::new();
    let row = document
        .put_object(automerge::ROOT, "n1", automerge::ObjType::Map)
        .expect("row");
    let title = document
        .put_object(&row, "title", automerge::ObjType::Text)
        .expect("text");
    document
        .splice_text(&title, 0, 0, "Call Ada")
        .expect("splice");
    document.put(&row, "done", false).expect("put");
    db.import_automerge("notes", &document).expect("import");
    assert_eq!(
        db.get_field("notes", "n1", "title").expect("read"),
        Some(Value::Str("Call Ada".into()))
    );
    assert_eq!(
        db.get_field("notes", "n1", "done").expect("read"),
        Some(Value::Bool(false))
    );

    let before = db.state_hash().expect("hash");
    document
        .put_object(&row, "tags", automerge::ObjType::List)
        .expect("list");
    let error = db.import_automerge("notes", &document).expect_err("a list");
    assert!(error.to_string().contains("n1.tags is a list"), "{error}");
    let mut flat = automerge::AutoCommit::new();
    flat.put(automerge::ROOT, "title", "not a row")
        .expect("put");
    let error = db.import_automerge("notes", &flat).expect_err("not a map");
    assert!(
        error.to_string().contains("\"title\" is not a map"),
        "{error}"
    );
    assert_eq!(db.state_hash().expect("hash"), before, "nothing written");
}

/// Honest writes: an increment of a field that holds a non-counter value
/// would be signed and synced and never shown, so it is refused before
/// signing (`NotACounter`), judged after the earlier ops of the same
/// transaction; a transaction too large for one change is refused with
/// `TransactionTooLarge` (it used to panic while signing). Nothing reaches
/// the log either way.
#[test]
fn useless_or_oversized_writes_are_refused_before_signing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::create(dir.path().join("a"), relaxed()).expect("create");
    let mut tx = db.transaction();
    tx.set("t", "r", "title", "text");
    tx.set("t", "r", "views", Value::Counter(1));
    tx.commit().expect("commit");
    let logged = || peers_tests::all_changes(&db).len();
    let before = logged();

    let mut tx = db.transaction();
    tx.increment("t", "r", "title", 1);
    match tx.commit() {
        Err(peers_engine::Error::NotACounter {
            table,
            row,
            field,
            current,
        }) => {
            assert_eq!(
                (table.as_str(), row.as_str(), field.as_str()),
                ("t", "r", "title")
            );
            assert_eq!(current, Value::Str("text".into()));
        }
        other => panic!("expected NotACounter, got {other:?}"),
    }
    let mut tx = db.transaction();
    tx.set("t", "r", "views", "now text");
    tx.increment("t", "r", "views", 1);
    assert!(matches!(
        tx.commit(),
        Err(peers_engine::Error::NotACounter { .. })
    ));
    assert_eq!(logged(), before, "nothing refused was signed");

    // Allowed: a counter, a field never set, a counter set earlier in the
    // same transaction, a field of a row deleted earlier in it.
    for setup in 0..4 {
        let mut tx = db.transaction();
        match setup {
            0 => {}
            1 => {}
            2 => {
                tx.set("t", "r", "title", Value::Counter(0));
            }
            _ => {
                tx.delete("t", "r");
            }
        }
        let field = if setup == 1 {
            "fresh"
        } else if setup == 0 {
            "views"
        } else {
            "title"
        };
        tx.increment("t", "r", field, 2);
        tx.commit()
            .unwrap_or_else(|error| panic!("setup {setup}: {error}"));
    }

    let before = logged();
    let mut tx = db.transaction();
    tx.set(
        "t",
        "big",
        "blob",
        "x".repeat(peers_engine::CHANGE_BYTES_MAX),
    );
    assert!(matches!(
        tx.commit(),
        Err(peers_engine::Error::TransactionTooLarge { .. })
    ));
    assert_eq!(logged(), before);
    // Just under the limit still commits.
    let mut tx = db.transaction();
    tx.set(
        "t",
        "big",
        "blob",
        "x".repeat(peers_engine::CHANGE_BYTES_MAX - 4096),
    );
    tx.commit().expect("a change just under the limit");
}

/// A transaction of many small ops fits the bytes limit but not the
/// decoder's allocation limit (FORMAT.md "The decoder's allocation limit":
/// 104 bytes of memory per op). It used to be signed, logged and applied,
/// then refused by every peer and by this replica's own `verify`. Now it is
/// refused before signing; one just below the limit commits and verifies.
#[test]
fn a_transaction_no_decoder_would_take_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::create(dir.path().join("a"), relaxed()).expect("create");
    let logged = || peers_tests::all_changes(&db).len();
    let before = logged();
    let deletes = |count: usize| {
        let mut tx = db.transaction();
        for row in 0..count {
            tx.delete("t", &row.to_string());
        }
        tx
    };
    match deletes(41_000).commit() {
        Err(error @ peers_engine::Error::TransactionUndecodable { ops: 41_000 }) => {
            assert!(error.to_string().contains("split it"), "{error}");
        }
        other => panic!("expected TransactionUndecodable, got {other:?}"),
    }
    assert_eq!(logged(), before, "nothing signed or logged");
    let hash = deletes(40_000).commit().expect("40,000 ops decode");
    let change = db.get_change(&hash).expect("read").expect("held");
    peers_engine::Change::decode(change.bytes()).expect("its bytes decode");
    assert!(db.verify(&mut |_, _| {}).expect("verify").ok());
}

/// The log's segments, copied byte for byte into another directory's `log/`
/// (what a backup restores), make a replica of the same database with the
/// same state; and the copy API refuses reads past what it listed.
#[test]
fn a_copy_of_the_log_segments_is_a_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        segment_bytes_max: 4096,
        ..Options::default()
    };
    let db = Db::create(dir.path().join("a"), options).expect("create");
    for index in 0i64..200 {
        let mut tx = db.transaction();
        tx.set("t", &format!("r{index}"), "f", index);
        tx.commit().expect("commit");
    }
    let segments = db.log_segments().expect("segments");
    assert!(segments.len() > 3, "the log rotated: {segments:?}");
    assert_eq!(
        segments.iter().map(|s| s.bytes).sum::<u64>(),
        db.log_end().0
    );
    let copy = dir.path().join("b");
    Db::join(&copy, db.database_id(), Options::default()).expect("join");
    std::fs::remove_dir_all(copy.join("log")).expect("remove log");
    std::fs::create_dir(copy.join("log")).expect("mkdir");
    for segment in &segments {
        let mut bytes = vec![0; usize::try_from(segment.bytes).expect("usize")];
        db.read_log_segment(segment.base, 0, &mut bytes)
            .expect("read");
        std::fs::write(
            copy.join("log").join(format!("{:020}.wal", segment.base)),
            bytes,
        )
        .expect("write");
    }
    let last = segments.last().expect("a segment");
    assert!(
        db.read_log_segment(last.base, last.bytes, &mut [0u8; 1])
            .is_err()
    );
    let restored = Db::open(&copy, Options::default()).expect("open the copy");
    assert!(restored.verify(&mut |_, _| {}).expect("verify").ok());
    assert_eq!(
        restored.state_hash().expect("hash"),
        db.state_hash().expect("hash")
    );
}
