//! Backup figures on this machine: a replica of N changes (one log
//! segment per 64 MiB), one full backup run, one incremental run after one
//! more change, and a restore, to a local directory and to an in-process S3
//! server (s3s-fs on 127.0.0.1). Prints throughput and bytes stored per
//! byte of log.
//!
//! `cargo run --release --workspace --example backup_figures -- 100000`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use peers_backup::{RestoreOptions, Store};
use peers_engine::{Db, Options};

fn megabytes_per_second(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e6
}

async fn figures(name: &str, store: &Store, db: &Db, work: &std::path::Path) {
    let recovery = common::init_new(db, store).await;
    let started = Instant::now();
    let full = common::run(db, store).await;
    let full_seconds = started.elapsed().as_secs_f64();
    let mut tx = db.transaction();
    tx.set("figures", "one", "more", 1);
    tx.commit().expect("commit");
    let started = Instant::now();
    let incremental = common::run(db, store).await;
    let incremental_seconds = started.elapsed().as_secs_f64();
    let listing = peers_backup::list(store, peers_backup::Unlock::Device(db))
        .await
        .expect("list");
    let started = Instant::now();
    let restored = common::restore(
        store,
        &recovery,
        &work.join(format!("restored-{name}")),
        RestoreOptions::default(),
    )
    .await
    .expect("restore");
    let restore_seconds = started.elapsed().as_secs_f64();
    assert_eq!(restored.state_hash, db.state_hash().expect("hash"));
    println!(
        "{name}: full run {} log bytes in {full_seconds:.2} s ({:.0} MB/s); incremental run {} bytes written in {incremental_seconds:.3} s; \
         store holds {} bytes for {} log bytes ({:.5} per byte, 2 runs); restore of {} changes in {restore_seconds:.2} s",
        full.log_bytes,
        megabytes_per_second(full.log_bytes, full_seconds),
        incremental.bytes_uploaded,
        listing.bytes,
        incremental.log_bytes,
        listing.bytes as f64 / incremental.log_bytes as f64,
        restored.changes,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let changes: u32 = std::env::args()
        .nth(1)
        .map_or(20_000, |text| text.parse().expect("N: a number of changes"));
    let work = tempfile::tempdir().expect("tempdir");
    let db = Db::create(
        work.path().join("db"),
        Options {
            sync: peers_engine::SyncMode::Relaxed,
            ..Options::default()
        },
    )
    .expect("create");
    common::write(&db, 0, changes);
    let local = common::local(&work.path().join("local"));
    figures("directory", &local.store(), &db, work.path()).await;
    std::fs::remove_file(db.dir().join(peers_backup::CONFIG_FILE)).expect("unconfigure");
    let s3 = common::s3(&work.path().join("s3"), "figures").await;
    figures("s3 (s3s-fs, in-process)", &s3.store(), &db, work.path()).await;
}
