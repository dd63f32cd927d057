//! Limits: oversized records and batches are refused before anything is written.

mod common;

use common::{all_records, file_len, open, segment_paths};
use peers_wal::{BATCH_BYTES_MAX, Error, RECORD_BYTES_MAX};

// Guards the record limit: one byte over is refused with RecordTooLarge and
// nothing reaches the file; exactly the limit is accepted and read back.
#[test]
fn record_over_the_limit_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path(), 1 << 30);
    wal.append(b"before").expect("append");
    let end = wal.end();
    let path = segment_paths(dir.path())[0].clone();
    let len = file_len(&path);

    let too_large = vec![1u8; RECORD_BYTES_MAX as usize + 1];
    let error = wal.append(&too_large).expect_err("refused");
    assert!(matches!(
        error,
        Error::RecordTooLarge { bytes, max: RECORD_BYTES_MAX } if bytes == u64::from(RECORD_BYTES_MAX) + 1
    ));
    // In a batch, one oversized record refuses the whole batch.
    let error = wal
        .append_batch(&[b"fine", &too_large])
        .expect_err("refused");
    assert!(matches!(error, Error::RecordTooLarge { .. }));
    assert_eq!(wal.end(), end);
    assert_eq!(file_len(&path), len);

    let largest = vec![2u8; RECORD_BYTES_MAX as usize];
    let position = wal.append(&largest).expect("largest record");
    assert_eq!(wal.read_at(position).expect("read"), largest);
    drop(wal);
    let (wal, _) = open(dir.path(), 1 << 30);
    assert_eq!(all_records(&wal).len(), 2);
}

// Guards the batch limit: a batch whose frames exceed BATCH_BYTES_MAX is written
// in several writes of at most that many bytes, every record where its frame
// says, and all of it read back after a reopen.
#[test]
fn batch_over_the_limit_is_split_into_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = open(dir.path(), 1 << 30);
    let record = vec![3u8; RECORD_BYTES_MAX as usize];
    let count = (BATCH_BYTES_MAX / u64::from(RECORD_BYTES_MAX) + 1) as usize;
    let batch: Vec<&[u8]> = vec![&record; count];
    let frames = wal.append_batch(&batch).expect("appended");
    assert_eq!(frames.len(), count);
    for pair in frames.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "consecutive frames");
    }
    assert_eq!(frames[count - 1].end, wal.end());
    drop(wal);
    let (wal, _) = open(dir.path(), 1 << 30);
    let records = all_records(&wal);
    assert_eq!(records.len(), count);
    assert!(records.iter().all(|(_, payload)| *payload == record));
}
