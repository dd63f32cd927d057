//! Backward compatibility: a database written by format version 1 (change
//! format 1, wal format 1) must open, replay into a fresh view, verify, and
//! read the same rows and state hash in every later build. The fixture
//! holds only what is durable truth (`database`, `identity.key`, `log/`);
//! the view is rebuilt from the log on open.
//!
//! Regenerate (only when deliberately starting a new fixture version):
//! `PEERS_WRITE_FIXTURE=1 cargo test --release -p peers-tests --test format_fixture_v1`

use std::path::{Path, PathBuf};

use peers_engine::{Db, Identity, Options, Value};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1/db")
}

/// The state hash the v1 fixture had when it was written.
const STATE_HASH_V1: &str = include_str!("../fixtures/v1/state-hash");

fn write_fixture(dir: &Path) {
    let options = Options {
        identity: Some(Identity::from_secret_bytes([0x11; 32])),
        ..Options::default()
    };
    let db = Db::create(dir, options).expect("create");
    let mut tx = db.transaction();
    tx.set("notes", "n1", "title", "hello")
        .set("notes", "n1", "pinned", true)
        .increment("notes", "n1", "views", 3);
    tx.set("notes", "n2", "blob", Value::Bytes(vec![0, 1, 2]))
        .set("notes", "n2", "size", Value::Uint(7));
    tx.commit().expect("commit");
    let mut tx = db.transaction();
    tx.set("notes", "n1", "title", "hello again")
        .delete("notes", "n2")
        .set("tasks", "t\0x", "due", Value::Timestamp(1));
    tx.commit().expect("commit");
    let hash = db.state_hash().expect("state hash");
    drop(db);
    std::fs::remove_dir_all(dir.join("view"))
        .expect("drop the view: it is not part of the fixture");
    std::fs::write(
        dir.parent().expect("parent").join("state-hash"),
        hash.to_hex(),
    )
    .expect("write hash");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn v1_database_opens_and_reads_the_same() {
    if std::env::var_os("PEERS_WRITE_FIXTURE").is_some() {
        let dir = fixture_dir();
        let _ = std::fs::remove_dir_all(&dir);
        write_fixture(&dir);
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("db");
    copy_dir(&fixture_dir(), &dir);
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
}
