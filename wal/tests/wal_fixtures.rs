//! Old formats stay readable, and the writer produces the documented bytes.
//!
//! `tests/fixtures/v1/` holds the test vector of docs/FORMAT.md as a log
//! directory. Every later format version must still read it (or refuse it with
//! `UnsupportedVersion`, if the project decides to drop version 1).

mod common;

use std::path::Path;

use common::{all_records, open, segment_paths};
use peers_wal::Position;

const FIXTURE_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1");

/// Copies a fixture log into a fresh directory, so opening it cannot alter it.
fn copy_fixture(fixture: &str, to: &Path) {
    for path in segment_paths(Path::new(fixture)) {
        let name = path.file_name().expect("file name");
        std::fs::copy(&path, to.join(name)).expect("copy");
    }
}

// Guards backward compatibility: the version 1 fixture opens cleanly and reads back.
#[test]
fn version_1_fixture_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture(FIXTURE_V1, dir.path());
    let (wal, report) = open(dir.path(), 1 << 20);
    assert!(report.torn_tail.is_none());
    assert_eq!(report.records, 2);
    assert_eq!(report.end, Position(53));
    let expected = vec![
        (Position(32), b"hello".to_vec()),
        (Position(45), Vec::new()),
    ];
    assert_eq!(all_records(&wal), expected);
}

// Guards the writer path end to end: a fresh log holding b"hello" and b"" is
// byte for byte the documented test vector.
#[test]
fn fresh_log_matches_the_fixture_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path(), 1 << 20);
    assert_eq!(wal.append(b"hello").expect("append"), Position(32));
    assert_eq!(wal.append(b"").expect("append"), Position(45));
    drop(wal);
    let name = "00000000000000000000.wal";
    let written = std::fs::read(dir.path().join(name)).expect("read written");
    let fixture = std::fs::read(Path::new(FIXTURE_V1).join(name)).expect("read fixture");
    assert_eq!(written, fixture);
}
