//! The v2 fixture (tests/fixtures/v2): a members-only database with grants
//! by the owner and by an admin, a reader, a revocation that undoes an
//! applied change, a fork with an inert change above it, a Set of every
//! value kind, increments above a counter, above a non-counter Set and after
//! a Delete, and the change-set file that `peers export` writes of it.
//!
//! Every file of the fixture was written by `tests/fixtures/v2/fixture.py`
//! from docs/FORMAT.md alone (no Rust): the changes, their hashes and
//! signatures, the wal segment, which changes are valid, the view entries
//! the state hash covers, the state hash and the change-set file. These
//! tests check that the engine reads the same: it opens the database,
//! reaches the same state hash and the same entries byte for byte, exports
//! the same change-set file, and a new replica that imports that file
//! reaches the same state. `python_fixture_agrees` runs the script again
//! (when python3 has `blake3` and `cryptography`) so that the files stay
//! what the page gives.
//!
//! The files are never rewritten by the engine: a change to any of them is a
//! change to the format, made in FORMAT.md and fixture.py first.

use std::path::{Path, PathBuf};

use peers_engine::{
    Author, ChangeSetReader, ChangeSetWriter, DatabaseId, Db, Identity, Options, Role, Value,
    VersionVector,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/v2")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|error| panic!("fixture {name}: {error}"))
}

fn read_text(name: &str) -> String {
    String::from_utf8(read(name)).expect("utf-8")
}

/// The fixture's database, copied into a scratch directory and opened.
fn open_fixture(scratch: &Path) -> Db {
    let dir = scratch.join("db");
    peers_tests::copy_dir(&fixture("db"), &dir);
    Db::open(&dir, Options::default()).expect("the v2 fixture opens")
}

/// The key fixture.py derives from 32 secret bytes of `seed`.
fn key(seed: u8) -> Author {
    Identity::from_secret_bytes([seed; 32]).author()
}

/// `view-entries`: `key value` hex pairs, `#` lines are notes.
fn expected_entries() -> Vec<(String, String)> {
    read_text("view-entries")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (key, value) = line.split_once(' ').expect("`key value` lines");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn v2_database_reaches_the_documented_state() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let db = open_fixture(scratch.path());
    assert_eq!(
        db.state_hash().expect("state hash").to_hex(),
        read_text("state-hash").trim(),
        "the engine's state hash differs from the one FORMAT.md gives"
    );
    let entries: Vec<(String, String)> = peers_engine::testing::state_entries(&db)
        .expect("entries")
        .into_iter()
        .map(|(key, value)| (hex(&key), hex(&value)))
        .collect();
    assert_eq!(entries, expected_entries(), "view entries differ");

    // Every value kind, read back.
    let n1 = db
        .get_row("notes", "n1")
        .expect("get")
        .expect("n1 is visible");
    let expected = [
        ("nothing", Value::Null),
        ("done", Value::Bool(true)),
        ("score", Value::Int(-42)),
        ("big", Value::Uint(u64::MAX)),
        ("ratio", Value::F64(-0.25)),
        ("title", Value::Str("h\u{e9}llo\0w\u{f6}rld".into())),
        ("blob", Value::Bytes(vec![0x00, 0xFF, 0x10])),
        ("due", Value::Timestamp(-1)),
        ("views", Value::Counter(13)),
    ];
    for (field, value) in &expected {
        assert_eq!(n1.get(*field), Some(value), "notes/n1.{field}");
    }
    assert_eq!(
        n1.len(),
        expected.len(),
        "notes/n1 has exactly these fields"
    );
    // The revoked key's second change is out; its first stays.
    assert_eq!(
        db.get_field("notes", "n2", "title").expect("get"),
        Some(Value::Str("by x".into()))
    );
    // The forker is cut at seq 1: neither branch of seq 2, nor seq 3.
    let n3 = db
        .get_row("notes", "n3")
        .expect("get")
        .expect("n3 is visible");
    assert_eq!(n3.len(), 1);
    assert_eq!(n3.get("a"), Some(&Value::Int(1)));
    // Deleted, then incremented: a counter from 0.
    let n4 = db
        .get_row("notes", "n4")
        .expect("get")
        .expect("n4 is visible");
    assert_eq!(n4.len(), 1);
    assert_eq!(n4.get("hits"), Some(&Value::Counter(2)));
    // A row whose only field is a Null is visible.
    let n5 = db
        .get_row("notes", "n5")
        .expect("get")
        .expect("n5 is visible");
    assert_eq!(n5.get("empty"), Some(&Value::Null));
    assert_eq!(
        db.get_field("tasks", "t\0x", "done").expect("get"),
        Some(Value::Bool(false))
    );

    // Roles: the owner, an admin, a writer, a reader, a revoked key.
    assert_eq!(db.role_of(&key(0x01)), Some(Role::Owner));
    assert_eq!(db.role_of(&key(0x02)), Some(Role::Admin));
    assert_eq!(db.role_of(&key(0x03)), Some(Role::Writer));
    assert_eq!(db.role_of(&key(0x04)), None, "revoked");
    assert_eq!(db.role_of(&key(0x06)), Some(Role::Reader));

    // The log: thirteen changes of format 2, every signature and every rule
    // checked again by a rebuild into a scratch view.
    let changes: Vec<_> = db
        .log()
        .expect("log")
        .map(|item| item.expect("record").1)
        .collect();
    assert_eq!(changes.len(), 13);
    assert!(changes.iter().all(|change| change.body().version == 2));
    assert_eq!(
        changes[0].hash().to_hex(),
        read_text("db/database").trim(),
        "the first record is the genesis, whose hash is the database id"
    );
    let report = db.verify(&mut |_, _| {}).expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.changes, 13);
}

#[test]
fn v2_export_is_the_documented_change_set() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let db = open_fixture(scratch.path());
    let mut writer = ChangeSetWriter::new(Vec::new(), db.database_id()).expect("header");
    for change in db.changes_since(&VersionVector::new()).expect("changes") {
        writer.write(&change.expect("change")).expect("write");
    }
    let bytes = writer.finish().expect("finish");
    assert!(
        bytes == read("export.peersset"),
        "the engine's export differs from export.peersset"
    );
}

#[test]
fn v2_change_set_imports_to_the_same_state() {
    let bytes = read("export.peersset");
    let reader = ChangeSetReader::new(bytes.as_slice()).expect("header");
    let database = reader.database();
    assert_eq!(
        database,
        DatabaseId::from_hex(&read_text("db/database")).expect("id")
    );
    let records: Vec<Vec<u8>> = reader.collect::<Result<_, _>>().expect("records");
    assert_eq!(records.len(), 11, "the log less two changes nothing names");
    let scratch = tempfile::tempdir().expect("tempdir");
    let db = Db::join(scratch.path().join("replica"), database, Options::default()).expect("join");
    let report = db.apply_encoded(&records).expect("apply");
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(report.accepted.len(), 11);
    assert_eq!(
        db.state_hash().expect("state hash").to_hex(),
        read_text("state-hash").trim()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Runs tests/fixtures/v2/fixture.py, which recomputes every file of the
/// fixture from FORMAT.md and compares. Skips (saying why) without python3
/// or its modules; with `PEERS_REQUIRE_PYTHON_VECTORS=1` a skip is a failure.
#[test]
fn python_fixture_agrees() {
    let script = fixture("fixture.py");
    let Some(stdout) = peers_wal::testing::python_vectors("python_fixture_agrees", &script) else {
        return;
    };
    assert_eq!(stdout.trim(), read_text("state-hash").trim());
}
