//! The `wal_open` target: the segment files of a log, and the inverse that
//! makes its seeds from a real log.

use std::fs;
use std::path::Path;

use peers_engine::SyncMode;
use peers_wal::{Position, Wal};

use super::fixtures::memory_scratch_dir;

/// Name of the first segment [`wal_open`] writes.
pub const FIRST_SEGMENT: &str = "00000000000000000000.wal";
/// Most segments [`wal_open`] splits its input into.
pub const WAL_SEGMENTS_MAX: usize = 3;

/// Writes `data` as the segments of a log: byte 0 says how many segments
/// (1 + byte % [`WAL_SEGMENTS_MAX`]), then one u16 (little endian) length per
/// segment but the last, then the bytes of the segments back to back. Each
/// segment is named by its base (the sum of the lengths before it), so the
/// chain of bases is always right and the fuzzer reaches the frames.
pub fn write_wal_segments(dir: &Path, data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let segments = 1 + usize::from(mode) % WAL_SEGMENTS_MAX;
    let mut lengths = Vec::with_capacity(segments);
    for _ in 1..segments {
        let length = match rest {
            [low, high, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_le_bytes([*low, *high]))
            }
            _ => 0,
        };
        lengths.push(length);
    }
    let mut base = 0usize;
    for index in 0..segments {
        let length = lengths
            .get(index)
            .copied()
            .unwrap_or(usize::MAX)
            .min(rest.len());
        let (segment, tail) = rest.split_at(length);
        rest = tail;
        let path = dir.join(format!("{base:020}.wal"));
        fs::write(&path, segment).expect("write a segment file");
        base += length;
    }
}

/// The inverse of [`write_wal_segments`] for a real log directory: its
/// segments (at most [`WAL_SEGMENTS_MAX`], each under 64 KiB) as one input.
pub fn wal_input(dir: &Path) -> Vec<u8> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .expect("list the log")
        .map(|entry| entry.expect("log entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    names.sort();
    assert!(
        (1..=WAL_SEGMENTS_MAX).contains(&names.len()),
        "{} segments",
        names.len()
    );
    let segments: Vec<Vec<u8>> = names
        .iter()
        .map(|p| fs::read(p).expect("read segment"))
        .collect();
    let mut input = vec![u8::try_from(segments.len() - 1).expect("few segments")];
    for segment in &segments[..segments.len() - 1] {
        let length = u16::try_from(segment.len()).expect("a seed segment is under 64 KiB");
        input.extend_from_slice(&length.to_le_bytes());
    }
    for segment in &segments {
        input.extend_from_slice(segment);
    }
    input
}

fn wal_options() -> peers_wal::Options {
    peers_wal::Options {
        sync: SyncMode::Relaxed,
        ..peers_wal::Options::default()
    }
}

/// Every record of an opened log; an opened log checked every frame, so
/// each must read back.
fn read_all(wal: &Wal) -> Vec<(Position, Vec<u8>)> {
    wal.iter_from(wal.start())
        .expect("iterate an opened log from its start")
        .map(|item| item.expect("every record of an opened log reads"))
        .collect()
}

/// `Wal::open` on arbitrary segment files ([`write_wal_segments`]): never
/// panics; once open, every record reads back by iteration and by
/// position, odd positions give errors, and a second open finds the same
/// records and nothing to cut, also after one more append.
pub fn wal_open(data: &[u8]) {
    let dir = memory_scratch_dir();
    let log = dir.path().join("log");
    fs::create_dir(&log).expect("create the log directory");
    write_wal_segments(&log, data);
    let Ok((wal, report)) = Wal::open(&log, wal_options()) else {
        return;
    };
    let records = read_all(&wal);
    assert_eq!(
        records.len() as u64,
        report.records,
        "report counts the records"
    );
    assert_eq!(wal.end(), report.end);
    for (position, payload) in &records {
        assert_eq!(&wal.read_at(*position).expect("read_at a record"), payload);
    }
    probe_positions(&wal, &records, data);
    let end = wal.end();
    drop(wal);
    let (wal, report) = Wal::open(&log, wal_options()).expect("an opened log opens again");
    assert_eq!(report.torn_tail, None, "the first open left nothing to cut");
    assert_eq!(read_all(&wal), records, "the same records after a reopen");
    assert_eq!(wal.end(), end);
    let appended: &[u8] = b"appended after recovery";
    let Ok(position) = wal.append(appended) else {
        return;
    };
    drop(wal);
    let (wal, report) = Wal::open(&log, wal_options()).expect("reopen after an append");
    assert_eq!(report.torn_tail, None, "an append leaves nothing to cut");
    let mut expected = records;
    expected.push((position, appended.to_vec()));
    assert_eq!(read_all(&wal), expected, "the append follows the records");
}

/// `read_at` and `iter_from` at positions that are not records: errors or
/// records, never a panic or an iteration that does not move forward.
fn probe_positions(wal: &Wal, records: &[(Position, Vec<u8>)], data: &[u8]) {
    let mut probes = vec![
        0,
        1,
        31,
        wal.start().0,
        wal.end().0,
        wal.end().0 + 1,
        u64::MAX,
    ];
    probes.extend(records.iter().map(|(position, _)| position.0 + 1));
    probes.extend(records.iter().map(|(position, _)| position.0 + 8));
    probes.extend(
        data.get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
    );
    // A frame takes at least 8 bytes, so no iteration yields more than this
    // (a position inside a payload may yield frames nested in it: allowed).
    let most = usize::try_from((wal.end().0 - wal.start().0) / 8 + 1).unwrap_or(usize::MAX);
    for probe in probes {
        let _ = wal.read_at(Position(probe));
        if let Ok(iter) = wal.iter_from(Position(probe)) {
            assert!(
                iter.take(most + 1).count() <= most,
                "iteration moves forward"
            );
        }
    }
}
