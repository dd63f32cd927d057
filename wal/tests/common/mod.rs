//! Helpers shared by the wal's integration tests.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use peers_wal::{OpenReport, Options, Position, SyncMode, Wal};

/// Bytes of a segment header (the format's constant, restated: tests check the spec).
pub const HEADER_BYTES: u64 = 32;
/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: u64 = 8;

/// Opens `dir` with the given segment size limit.
pub fn open(dir: &Path, segment_bytes_max: u64) -> (Wal, OpenReport) {
    let options = Options {
        segment_bytes_max,
        sync: SyncMode::Always,
    };
    Wal::open(dir, options).expect("open wal")
}

/// A deterministic record of varying length (0 to 99 bytes) for index `index`.
pub fn record(index: usize) -> Vec<u8> {
    let length = (index * 37) % 100;
    (0..length).map(|byte| (byte + index) as u8).collect()
}

/// All records from the start of the log.
pub fn all_records(wal: &Wal) -> Vec<(Position, Vec<u8>)> {
    wal.iter_from(wal.start())
        .expect("iter_from start")
        .collect::<Result<Vec<_>, _>>()
        .expect("iterate")
}

/// Segment files in `dir`, in base order.
pub fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "wal"))
        .collect();
    paths.sort();
    paths
}

/// The base encoded in a segment file's name.
pub fn base_of(path: &Path) -> u64 {
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .expect("stem");
    stem.parse().expect("base")
}

/// Length of a file.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

/// XORs `mask` into the byte at `offset` of a file.
pub fn flip_byte(path: &Path, offset: u64, mask: u8) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read");
    byte[0] ^= mask;
    file.write_all_at(&byte, offset).expect("write");
}

/// Appends raw bytes to a file.
pub fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(path).expect("open");
    file.write_all(bytes).expect("write");
}

/// Sets a file's length (cutting or extending with zeros).
pub fn set_len(path: &Path, len: u64) {
    let file = OpenOptions::new().write(true).open(path).expect("open");
    file.set_len(len).expect("set_len");
}
