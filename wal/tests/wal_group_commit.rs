//! Group commit: concurrent appenders with SyncMode::Always all get durable,
//! readable records, and share fsyncs.

mod common;

use std::sync::Arc;
use std::thread;

use peers_wal::{Options, Position, SyncMode, Wal};

const THREADS: usize = 8;
const APPENDS_PER_THREAD: usize = 200;

fn payload(thread: usize, index: usize) -> Vec<u8> {
    format!("thread {thread} record {index}").into_bytes()
}

// Guards group commit: 8 threads x 200 appends, every returned position holds the
// right bytes after reopen, and one fsync covered many appends.
#[test]
fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        sync: SyncMode::Always,
        ..Options::default()
    };
    let (wal, _) = Wal::open(dir.path(), options).expect("open");
    let fsyncs_before = wal.fsync_count();
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|thread| {
            let wal = wal.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                (0..APPENDS_PER_THREAD)
                    .map(|index| {
                        let position = wal.append(&payload(thread, index)).expect("append");
                        (position, thread, index)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut written: Vec<(Position, usize, usize)> = handles
        .into_iter()
        .flat_map(|handle| handle.join().expect("thread"))
        .collect();
    let appends = (THREADS * APPENDS_PER_THREAD) as u64;
    let fsyncs = wal.fsync_count() - fsyncs_before;
    assert!(fsyncs < appends, "{fsyncs} fsyncs for {appends} appends");
    drop(wal);

    let (wal, report) = Wal::open(dir.path(), options).expect("reopen");
    assert!(report.torn_tail.is_none());
    assert_eq!(report.records, appends);
    for (position, thread, index) in &written {
        assert_eq!(
            wal.read_at(*position).expect("read"),
            payload(*thread, *index)
        );
    }
    // Each thread's records are in its own order, and positions are distinct.
    written.sort();
    let iterated = common::all_records(&wal);
    assert_eq!(iterated.len(), written.len());
    for ((position, thread, index), (iter_position, bytes)) in written.iter().zip(&iterated) {
        assert_eq!(position, iter_position);
        assert_eq!(bytes, &payload(*thread, *index));
    }
    println!("group commit: {fsyncs} fsyncs for {appends} appends");
}
