//! The `snapshot_read` target: a snapshot file (docs/FORMAT.md "Snapshot
//! file, format 1"), read block by block as trim and bootstrap read one.

use peers_engine::{SnapshotReader, SnapshotWriter};

/// `SnapshotReader` on arbitrary bytes: never panics; stops at the first
/// error; after an error or the end it hands out nothing more; and a file
/// it accepts whole holds entries in strictly ascending key order that,
/// written again under the same header, give the count and the snapshot
/// hash its checkpoint signs.
pub fn snapshot_read(data: &[u8]) {
    let Ok(mut reader) = SnapshotReader::open(data) else {
        return;
    };
    let genesis = reader.genesis().clone();
    let checkpoint = reader.checkpoint().clone();
    let (_, signed) = checkpoint
        .checkpoint()
        .expect("the reader accepts only a checkpoint in the header");
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        match reader.next_block() {
            Ok(Some(block)) => {
                assert!(!block.is_empty(), "a block holds at least one entry");
                entries.extend(block);
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    assert!(
        matches!(reader.next_block(), Ok(None)),
        "nothing after the end marker"
    );
    let Ok(count) = reader.finish() else {
        return;
    };
    assert_eq!(count, entries.len() as u64);
    assert!(
        entries.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "accepted keys ascend strictly"
    );
    let mut writer =
        SnapshotWriter::new(Vec::new(), &genesis, &checkpoint).expect("an accepted header writes");
    for (key, value) in &entries {
        writer.entry(key, value).expect("accepted entries write");
    }
    let (bytes, written, hash) = writer.finish().expect("finish");
    assert_eq!((written, hash), (count, signed));
    let reread = SnapshotReader::open(bytes.as_slice())
        .and_then(SnapshotReader::finish)
        .expect("what the writer writes reads back");
    assert_eq!(reread, count);
}
