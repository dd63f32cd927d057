//! Recovery on open: a torn tail in the last segment is cut and reported, and the
//! log works on; any other damage is an error, never skipped.

mod common;

use std::path::Path;

use common::{
    FRAME_HEADER_BYTES, HEADER_BYTES, all_records, append_bytes, base_of, file_len, flip_byte,
    open, record, segment_paths, set_len,
};
use peers_wal::{CorruptReason, Error, Position, RECORD_BYTES_MAX};

const SEGMENT_BYTES_MAX: u64 = 1 << 20;

/// Writes three records into a single-segment log and returns their positions.
fn three_records(dir: &Path) -> Vec<Position> {
    let (wal, _) = open(dir, SEGMENT_BYTES_MAX);
    let positions = (1..4)
        .map(|index| wal.append(&record(index)).expect("append"))
        .collect();
    assert_eq!(segment_paths(dir).len(), 1);
    positions
}

/// Reopens a log with a torn tail and checks the cut, that the next append works
/// and that both survive another reopen.
fn assert_tail_cut(dir: &Path, kept_records: usize, cut_at: u64, bytes_cut: u64) {
    let (wal, report) = open(dir, SEGMENT_BYTES_MAX);
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!(torn.segment, segment_paths(dir)[0]);
    assert_eq!(torn.offset, cut_at);
    assert_eq!(torn.bytes_cut, bytes_cut);
    assert!(!torn.segment_removed);
    assert_eq!(report.records, kept_records as u64);
    assert_eq!(wal.end(), Position(cut_at));
    assert_eq!(file_len(&segment_paths(dir)[0]), cut_at);
    let position = wal.append(b"after the cut").expect("append after cut");
    assert_eq!(position, Position(cut_at));
    drop(wal);

    let (wal, report) = open(dir, SEGMENT_BYTES_MAX);
    assert!(report.torn_tail.is_none());
    let records = all_records(&wal);
    assert_eq!(records.len(), kept_records + 1);
    for (index, (_, payload)) in records.iter().take(kept_records).enumerate() {
        assert_eq!(payload, &record(index + 1));
    }
    assert_eq!(records[kept_records], (position, b"after the cut".to_vec()));
}

/// Asserts that opening fails with `Error::Corrupt` at `offset` for `reason`.
fn assert_corrupt(dir: &Path, segment: &Path, offset: u64, reason: CorruptReason) {
    let error = peers_wal::Wal::open(dir, peers_wal::Options::default()).expect_err("corrupt");
    match error {
        Error::Corrupt {
            segment: found_segment,
            offset: found_offset,
            reason: found_reason,
        } => {
            assert_eq!(found_segment, segment);
            assert_eq!(found_offset, offset);
            assert_eq!(found_reason, reason);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

// Guards the crash mid-append: a frame cut short at the end of the file is cut off.
#[test]
fn truncated_last_frame_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let positions = three_records(dir.path());
    let path = &segment_paths(dir.path())[0];
    let len = file_len(path);
    set_len(path, len - 3);
    assert_tail_cut(dir.path(), 2, positions[2].0, len - 3 - positions[2].0);
}

// Guards a partial frame of garbage: fewer than 8 bytes, and a length that runs
// past the end of the file.
#[test]
fn garbage_partial_frame_is_cut() {
    for garbage in [
        &[0xffu8, 0x01, 0x02][..],
        &[0x00, 0x10, 0x00, 0x00, 1, 2, 3, 4, 5, 6],
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        three_records(dir.path());
        let path = &segment_paths(dir.path())[0];
        let len = file_len(path);
        append_bytes(path, garbage);
        assert_tail_cut(dir.path(), 3, len, garbage.len() as u64);
    }
}

// Guards a file extended with zeros past its last frame (allocated, never written).
#[test]
fn zero_filled_tail_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_records(dir.path());
    let path = &segment_paths(dir.path())[0];
    let len = file_len(path);
    set_len(path, len + 4096);
    assert_tail_cut(dir.path(), 3, len, 4096);
}

// Guards a checksum mismatch on the frame that ends the file: a torn write, cut.
#[test]
fn bad_checksum_on_the_final_frame_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let positions = three_records(dir.path());
    let path = &segment_paths(dir.path())[0];
    let len = file_len(path);
    flip_byte(path, len - 1, 0x40);
    assert_tail_cut(dir.path(), 2, positions[2].0, len - positions[2].0);
}

// Guards mid-log corruption: a bad frame followed by another frame is never
// skipped or cut, even in the last segment.
#[test]
fn bad_checksum_followed_by_a_frame_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let positions = three_records(dir.path());
    let path = &segment_paths(dir.path())[0];
    flip_byte(path, positions[1].0 + FRAME_HEADER_BYTES, 0x01);
    let error = peers_wal::Wal::open(dir.path(), peers_wal::Options::default()).expect_err("open");
    assert!(matches!(
        error,
        Error::Corrupt { offset, reason: CorruptReason::ChecksumMismatch { .. }, .. }
            if offset == positions[1].0
    ));
    assert_eq!(
        file_len(path),
        positions[2].0 + FRAME_HEADER_BYTES + record(3).len() as u64
    );
}

// Guards that an oversized length is corruption even when the file is long enough
// (and even when zeros follow): it cannot come from a torn write of a valid frame.
#[test]
fn oversized_length_within_the_file_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_records(dir.path());
    let path = &segment_paths(dir.path())[0];
    let len = file_len(path);
    let length = RECORD_BYTES_MAX + 1;
    append_bytes(path, &length.to_le_bytes());
    set_len(path, len + FRAME_HEADER_BYTES + u64::from(length) + 10);
    let reason = CorruptReason::LengthTooLarge {
        length,
        max: RECORD_BYTES_MAX,
    };
    assert_corrupt(dir.path(), path, len, reason);
}

/// Writes records into several small segments; returns the segment paths.
fn several_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let (wal, _) = open(dir, 200);
    for index in 0..30 {
        wal.append(&record(index)).expect("append");
    }
    let paths = segment_paths(dir);
    assert!(paths.len() >= 3);
    paths
}

// Guards that a non-last segment gets no torn-tail allowance: a bad final frame
// there is corruption (rotation fsynced it whole).
#[test]
fn bad_frame_in_an_earlier_segment_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = several_segments(dir.path());
    let first = &paths[0];
    let len = file_len(first);
    flip_byte(first, len - 1, 0x01);
    let error = peers_wal::Wal::open(dir.path(), peers_wal::Options::default()).expect_err("open");
    assert!(matches!(
        error,
        Error::Corrupt { ref segment, reason: CorruptReason::ChecksumMismatch { .. }, .. }
            if segment == first
    ));
    assert_eq!(file_len(first), len, "nothing cut");
}

// Guards that a cut-short earlier segment is corruption, not a torn tail.
#[test]
fn truncated_earlier_segment_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = several_segments(dir.path());
    let len = file_len(&paths[1]);
    set_len(&paths[1], len - 1);
    let error = peers_wal::Wal::open(dir.path(), peers_wal::Options::default()).expect_err("open");
    assert!(matches!(
        error,
        Error::Corrupt {
            reason: CorruptReason::FrameTruncated { .. },
            ..
        }
    ));
}

// Guards the chain of bases: a missing segment is found, not papered over.
#[test]
fn missing_segment_is_a_base_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = several_segments(dir.path());
    std::fs::remove_file(&paths[1]).expect("remove");
    let reason = CorruptReason::BaseGap {
        expected: base_of(&paths[1]),
        found: base_of(&paths[2]),
    };
    assert_corrupt(dir.path(), &paths[2], 0, reason);
}

// Guards a crash during rotation: a last segment with a torn header (short, or all
// zeros) holds no record; it is removed and reported, and the log works on.
#[test]
fn torn_header_of_last_segment_is_removed() {
    for header in [vec![b'P', b'E', b'E'], vec![0u8; HEADER_BYTES as usize]] {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = several_segments(dir.path());
        let last = paths.last().expect("last");
        let end = base_of(last) + file_len(last);
        let torn_path = dir.path().join(format!("{end:020}.wal"));
        std::fs::write(&torn_path, &header).expect("write torn header");

        let (wal, report) = open(dir.path(), 200);
        let torn = report.torn_tail.expect("reported");
        assert_eq!(torn.segment, torn_path);
        assert!(torn.segment_removed);
        assert_eq!(torn.offset, 0);
        assert_eq!(torn.bytes_cut, header.len() as u64);
        assert!(!torn_path.exists());
        assert_eq!(wal.end(), Position(end));
        assert_eq!(all_records(&wal).len(), 30);
        let position = wal.append(&[9u8; 150]).expect("append rotates again");
        drop(wal);
        let (wal, report) = open(dir.path(), 200);
        assert!(report.torn_tail.is_none());
        assert_eq!(wal.read_at(position).expect("read"), vec![9u8; 150]);
    }
}

// Guards a crash during rotation that left the new segment's full length but
// only part of its header (the rest zeros), as the power-loss simulation found:
// the segment holds no record and is removed. A 32-byte header with a wrong
// non-zero byte is still corruption.
#[test]
fn partly_zero_header_of_last_segment_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = several_segments(dir.path());
    let last = paths.last().expect("last").clone();
    let base = base_of(&last);
    // Keep the header of the last segment only; its records are given up here.
    set_len(&last, HEADER_BYTES);
    let kept = all_records(&open(dir.path(), 200).0).len();
    flip_byte(&last, 24, 0x01);
    let error = peers_wal::Wal::open(dir.path(), peers_wal::Options::default()).expect_err("open");
    assert!(matches!(
        error,
        Error::Corrupt {
            reason: CorruptReason::HeaderChecksumMismatch { .. },
            ..
        }
    ));
    flip_byte(&last, 24, 0x01);
    // Zero the checksum and the reserved field: a torn header write.
    set_len(&last, 24);
    set_len(&last, HEADER_BYTES);

    let (wal, report) = open(dir.path(), 200);
    let torn = report.torn_tail.expect("reported");
    assert_eq!(torn.segment, last);
    assert!(torn.segment_removed);
    assert_eq!(torn.bytes_cut, HEADER_BYTES);
    assert!(!last.exists());
    assert_eq!(wal.end(), Position(base));
    assert_eq!(all_records(&wal).len(), kept);
}

// Guards the magic check: a file that is not a segment is refused.
#[test]
fn wrong_magic_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_records(dir.path());
    let path = &segment_paths(dir.path())[0];
    flip_byte(path, 0, 0x20);
    let error = peers_wal::Wal::open(dir.path(), peers_wal::Options::default()).expect_err("open");
    assert!(matches!(error, Error::BadMagic { ref segment } if segment == path));
}

// Guards the version check: an unknown version is refused, never guessed at.
#[test]
fn unknown_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_records(dir.path());
    let path = &segment_paths(dir.path())[0];
    flip_byte(path, 8, 0x03); // version 1 -> 2
    let error = peers_wal::Wal::open(dir.path(), peers_wal::Options::default()).expect_err("open");
    assert!(matches!(
        error,
        Error::UnsupportedVersion { found: 2, supported: 1, ref segment } if segment == path
    ));
}

// Guards the header checksum and the name/header agreement.
#[test]
fn header_damage_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_records(dir.path());
    let path = segment_paths(dir.path())[0].clone();
    flip_byte(&path, 16, 0x01); // base 0 -> 1, checksum now wrong
    let error = peers_wal::Wal::open(dir.path(), peers_wal::Options::default()).expect_err("open");
    assert!(matches!(
        error,
        Error::Corrupt {
            offset: 0,
            reason: CorruptReason::HeaderChecksumMismatch { .. },
            ..
        }
    ));
    flip_byte(&path, 16, 0x01);
    let renamed = dir.path().join(format!("{:020}.wal", 64));
    std::fs::rename(&path, &renamed).expect("rename");
    let reason = CorruptReason::BaseMismatch {
        name_base: 64,
        header_base: 0,
    };
    assert_corrupt(dir.path(), &renamed, 0, reason);
}

// Guards the directory listing: foreign files are ignored, a malformed segment
// name is refused rather than ignored.
#[test]
fn directory_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    three_records(dir.path());
    std::fs::write(dir.path().join("LOCK"), b"x").expect("write");
    let (wal, report) = open(dir.path(), SEGMENT_BYTES_MAX);
    assert_eq!(report.records, 3);
    drop(wal);
    let odd = dir.path().join("12.wal");
    std::fs::write(&odd, b"x").expect("write");
    assert_corrupt(dir.path(), &odd, 0, CorruptReason::FileName);
}
