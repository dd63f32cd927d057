//! Round trips: what is appended is read back, in order, across segment rotations
//! and reopens, by position and by iteration.

mod common;

use common::{
    FRAME_HEADER_BYTES, HEADER_BYTES, all_records, file_len, open, record, segment_paths,
};
use peers_wal::{Error, Options, Position, SyncMode, Wal};
use proptest::prelude::*;

// Guards that records survive many rotations and a reopen unchanged, in order, and
// that positions stay valid and keep growing after the reopen.
#[test]
fn round_trip_across_rotations_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, report) = open(dir.path(), 256);
    assert_eq!(report.records, 0);
    assert_eq!(wal.start(), Position(HEADER_BYTES));
    assert_eq!(wal.end(), wal.start());
    let mut expected = Vec::new();
    for index in 0..100 {
        let position = wal.append(&record(index)).expect("append");
        expected.push((position, record(index)));
    }
    assert!(segment_paths(dir.path()).len() > 5, "rotated several times");
    for (position, payload) in &expected {
        assert_eq!(&wal.read_at(*position).expect("read_at"), payload);
    }
    assert_eq!(all_records(&wal), expected);
    let end = wal.end();
    drop(wal);

    let (wal, report) = open(dir.path(), 256);
    assert!(report.torn_tail.is_none());
    assert_eq!(report.records, 100);
    assert_eq!(report.end, end);
    assert_eq!(report.segments, segment_paths(dir.path()).len());
    assert_eq!(all_records(&wal), expected);
    let position = wal.append(b"after reopen").expect("append");
    assert!(position >= end);
    expected.push((position, b"after reopen".to_vec()));
    assert_eq!(all_records(&wal), expected);
}

// Guards that every segment but a record-less last one respects the size limit,
// and that a record larger than the limit gets a segment of its own.
#[test]
fn rotation_respects_the_segment_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path(), 200);
    for index in 0..50 {
        wal.append(&record(index)).expect("append");
    }
    let big = vec![7u8; 1000];
    let big_position = wal.append(&big).expect("append big");
    wal.append(b"small").expect("append small");
    let paths = segment_paths(dir.path());
    let big_segment = paths
        .iter()
        .find(|path| common::base_of(path) + HEADER_BYTES == big_position.0)
        .expect("the big record starts its own segment");
    assert_eq!(
        file_len(big_segment),
        HEADER_BYTES + FRAME_HEADER_BYTES + 1000
    );
    for path in &paths {
        if path != big_segment {
            assert!(file_len(path) <= 200, "{} too long", path.display());
        }
    }
    assert_eq!(wal.read_at(big_position).expect("read big"), big);
}

// Guards iter_from from a record in the middle, from end(), from an end() saved
// before a rotation (a segment base), and from Position(0).
#[test]
fn iter_from_middle_end_and_old_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path(), 300);
    let mut expected = Vec::new();
    for index in 0..40 {
        expected.push((wal.append(&record(index)).expect("append"), record(index)));
    }
    let from_middle: Vec<_> = wal
        .iter_from(expected[17].0)
        .expect("iter_from middle")
        .collect::<Result<_, _>>()
        .expect("iterate");
    assert_eq!(from_middle, expected[17..]);
    assert_eq!(wal.iter_from(wal.end()).expect("iter_from end").count(), 0);
    let from_zero: Vec<_> = wal
        .iter_from(Position(0))
        .expect("iter_from 0")
        .collect::<Result<_, _>>()
        .expect("iterate");
    assert_eq!(from_zero, expected);

    // Save end(), then force a rotation: the current segment holds a record, so a
    // 278-byte frame cannot fit under the 300-byte limit.
    let old_end = wal.end();
    let segments_before = segment_paths(dir.path()).len();
    let next = wal.append(&[1u8; 270]).expect("append rotating");
    assert_eq!(segment_paths(dir.path()).len(), segments_before + 1);
    assert_eq!(
        next.0,
        old_end.0 + HEADER_BYTES,
        "old end is the new segment's base"
    );
    let after: Vec<_> = wal
        .iter_from(old_end)
        .expect("iter_from old end")
        .collect::<Result<_, _>>()
        .expect("iterate");
    assert_eq!(after, vec![(next, vec![1u8; 270])]);
}

// Guards that an iterator stops at end() as of its creation.
#[test]
fn iterator_is_bounded_by_end_at_creation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path(), 1 << 20);
    wal.append(b"one").expect("append");
    let iter = wal.iter_from(wal.start()).expect("iter");
    wal.append(b"two").expect("append");
    let records: Vec<_> = iter.collect::<Result<_, _>>().expect("iterate");
    assert_eq!(records.len(), 1);
}

// Guards that positions without a record frame are refused, not misread.
#[test]
fn read_at_refuses_positions_without_a_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path(), 1 << 20);
    let position = wal.append(b"a record of some length").expect("append");
    for bad in [
        Position(0),
        Position(5),
        wal.end(),
        Position(wal.end().0 + 100),
    ] {
        let result = wal.read_at(bad);
        assert!(matches!(result, Err(Error::InvalidPosition { position }) if position == bad));
    }
    // iter_from also accepts a segment base and the end, but nothing else outside.
    for bad in [Position(5), Position(wal.end().0 + 100)] {
        let result = wal.iter_from(bad);
        assert!(matches!(result, Err(Error::InvalidPosition { position }) if position == bad));
    }
    // Inside the frame: a random length or a checksum mismatch, never a payload.
    for inside in 1..30 {
        assert!(wal.read_at(Position(position.0 + inside)).is_err());
    }
}

// Guards that a batch is written as consecutive frames in one segment and read back.
#[test]
fn append_batch_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path(), 1 << 20);
    assert_eq!(wal.append_batch(&[]).expect("empty batch"), vec![]);
    let records: Vec<Vec<u8>> = (0..10).map(record).collect();
    let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    let frames = wal.append_batch(&slices).expect("append batch");
    for pair in frames.windows(2) {
        let length = wal.read_at(pair[0].start).expect("read").len() as u64;
        assert_eq!(pair[0].end.0, pair[0].start.0 + FRAME_HEADER_BYTES + length);
        assert_eq!(pair[1].start, pair[0].end);
    }
    let expected: Vec<_> = frames
        .into_iter()
        .map(|frame| frame.start)
        .zip(records)
        .collect();
    assert_eq!(all_records(&wal), expected);
}

// Guards Relaxed mode: appends are readable at once and durable after sync().
#[test]
fn relaxed_mode_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        segment_bytes_max: 500,
        sync: SyncMode::Relaxed,
    };
    let (wal, _) = Wal::open(dir.path(), options).expect("open");
    let before = wal.fsync_count();
    let positions: Vec<_> = (0..5)
        .map(|index| wal.append(&record(index)).expect("append"))
        .collect();
    assert_eq!(wal.fsync_count(), before, "no fsync without rotation");
    wal.sync().expect("sync");
    drop(wal);
    let (wal, report) = Wal::open(dir.path(), options).expect("reopen");
    assert_eq!(report.records, 5);
    for (index, position) in positions.into_iter().enumerate() {
        assert_eq!(wal.read_at(position).expect("read"), record(index));
    }
}

// Guards the documented auto traits and the Options default.
#[test]
fn wal_is_send_sync_clone_and_defaults() {
    fn assert_traits<T: Send + Sync + Clone>() {}
    assert_traits::<Wal>();
    let options = Options::default();
    assert_eq!(options.segment_bytes_max, 64 * 1024 * 1024);
    assert_eq!(options.sync, SyncMode::Always);
    assert_eq!(Position(32).to_string(), "32");
}

proptest! {
    // `PROPTEST_CASES` raises (or lowers) the count, as in peers-tests.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(32)
    ))]

    // Guards the round trip for arbitrary record sizes and contents, batch shapes
    // and segment limits: append, reopen, iterate, compare.
    #[test]
    fn random_records_round_trip(
        batches in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 1..4),
            0..30,
        ),
        segment_bytes_max in 40u64..3000,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = Options { segment_bytes_max, sync: SyncMode::Relaxed };
        let (wal, _) = Wal::open(dir.path(), options).expect("open");
        let mut expected = Vec::new();
        for batch in &batches {
            let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            let positions = wal.append_batch(&slices).expect("append").into_iter().map(|frame| frame.start);
            expected.extend(positions.into_iter().zip(batch.iter().cloned()));
        }
        wal.sync().expect("sync");
        let end = wal.end();
        drop(wal);
        let (wal, report) = Wal::open(dir.path(), options).expect("reopen");
        prop_assert!(report.torn_tail.is_none());
        prop_assert_eq!(report.records, expected.len() as u64);
        prop_assert_eq!(report.end, end);
        prop_assert_eq!(all_records(&wal), expected);
    }
}

// Guards the copy API (backups): `segments` lists every file with its bytes
// (sealed ones whole, the last one up to `end`), `read_segment` returns the
// files' bytes, a copy of those bytes opens as the same log, and a read past
// what was listed is refused.
#[test]
fn segments_copy_into_an_equal_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path(), 256);
    for index in 0..40 {
        wal.append(&record(index)).expect("append");
    }
    let segments = wal.segments().expect("segments");
    assert_eq!(segments.len(), segment_paths(dir.path()).len());
    assert!(segments.len() > 3, "rotated several times");
    let (last, sealed) = segments.split_last().expect("a segment");
    assert!(sealed.iter().all(|segment| segment.sealed));
    assert!(!last.sealed);
    assert_eq!(last.base + last.bytes, wal.end().0);
    let copy = tempfile::tempdir().expect("tempdir");
    let mut expected_base = 0;
    for (segment, path) in segments.iter().zip(segment_paths(dir.path())) {
        assert_eq!(segment.base, expected_base, "bases chain");
        expected_base += segment.bytes;
        let mut bytes = vec![0; usize::try_from(segment.bytes).expect("usize")];
        wal.read_segment(segment.base, 0, &mut bytes).expect("read");
        assert_eq!(bytes, std::fs::read(&path).expect("read file"));
        let name = path.file_name().expect("file name");
        std::fs::write(copy.path().join(name), &bytes).expect("write copy");
        let mut past = [0u8; 1];
        assert!(matches!(
            wal.read_segment(segment.base, segment.bytes, &mut past),
            Err(Error::InvalidPosition { .. })
        ));
    }
    assert!(matches!(
        wal.read_segment(1, 0, &mut [0u8; 1]),
        Err(Error::InvalidPosition { .. })
    ));
    let (copied, report) = open(copy.path(), 256);
    assert!(report.torn_tail.is_none());
    assert_eq!(all_records(&copied), all_records(&wal));
}
