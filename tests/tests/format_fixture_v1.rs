//! Backward compatibility: a database written by format version 1 (change
//! format 1, wal format 1) must open, replay into a fresh view, verify, and
//! read the same rows and state hash in every later build. The fixture
//! holds only what is durable truth (`database`, `identity.key`, `log/`);
//! the view is rebuilt from the log on open.
//!
//! The fixture was written once by a build that wrote format version 1, and
//! is never regenerated: today's writer writes a later version, so a
//! rewrite would silently replace the very thing this test keeps. The test
//! checks that every change in it is of version 1.

use std::path::{Path, PathBuf};

use peers_engine::{Db, Options, Value};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1/db")
}

/// The state hash the v1 fixture had when it was written.
const STATE_HASH_V1: &str = include_str!("../fixtures/v1/state-hash");

#[test]
fn v1_database_opens_and_reads_the_same() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("db");
    peers_tests::copy_dir(&fixture_dir(), &dir);
    let db = Db::open(&dir, Options::default()).expect("a v1 database opens");
    assert_eq!(
        db.state_hash().expect("state hash").to_hex(),
        STATE_HASH_V1.trim()
    );
    let n1 = db.get_row("notes", "n1").expect("get").expect("n1 exists");
    assert_eq!(n1.get("title"), Some(&Value::Str("hello again".into())));
    assert_eq!(n1.get("views"), Some(&Value::Counter(3)));
    assert_eq!(db.get_row("notes", "n2").expect("get"), None);
    assert_eq!(
        db.get_field("tasks", "t\0x", "due").expect("get"),
        Some(Value::Timestamp(1))
    );
    let report = db.verify(&mut |_, _| {}).expect("verify");
    assert!(report.ok());
    assert_eq!(report.changes, 3);
    for item in db.log().expect("log") {
        let (position, change) = item.expect("record");
        assert_eq!(
            change.body().version,
            1,
            "the change at {position} is not of format version 1: the fixture was rewritten"
        );
    }
}
