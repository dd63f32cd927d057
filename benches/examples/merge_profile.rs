//! Applies one generated workload to a fresh replica and prints changes/s,
//! for profiling the remote-merge path alone:
//! `cargo run --release -p peers-benches --example merge_profile -- 10000 10`
//! (changes, authors), or under `perf record -g`. With `REBUILD=1` it then
//! times a rebuild of the view from the log (no signature checks); with
//! `MEMBERS_ONLY=1` the database is members-only (every author granted);
//! with `KEEP=DIR` the replica is made in DIR and kept (for `peers` to open);
//! `ROWS=N` writes to N rows per table (default: a quarter of the changes).
//! `SINGLE=N` times only the last N changes, applied one at a time (relaxed),
//! the `scale/one_at_a_time_relaxed` bench's path.
//! `COMMITS=N` instead times N local commits of one set each (relaxed), the
//! `local_commit/relaxed/1_ops` bench's path, for profiling it; `THREADS=T`
//! splits them among T committing threads.

use std::time::Instant;

use peers_benches::{Spec, generate};
use peers_engine::{Db, Options};

fn main() {
    if let Some(commits) = std::env::var("COMMITS").ok().and_then(|n| n.parse().ok()) {
        return time_commits(commits);
    }
    let mut args = std::env::args().skip(1);
    let changes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let authors: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let started = Instant::now();
    let workload = generate(Spec {
        members_only: std::env::var_os("MEMBERS_ONLY").is_some(),
        rows: std::env::var("ROWS")
            .ok()
            .and_then(|rows| rows.parse().ok())
            .unwrap_or((changes / 4).max(4)),
        ..Spec::new(changes, authors)
    });
    let encoded = workload.encoded();
    eprintln!(
        "generated {} changes in {:?}",
        encoded.len(),
        started.elapsed()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = std::env::var_os("KEEP").map_or_else(|| dir.path().join("db"), Into::into);
    let db = Db::join(&path, workload.database, Options::default()).expect("join");
    let started = Instant::now();
    // `SINGLE=N`: the last N changes arrive one at a time (relaxed), as a
    // live peer sends them, after the others in batches (not timed).
    let single: usize = std::env::var("SINGLE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let (db, encoded, started) = if single > 0 {
        let (batched, alone) = encoded.split_at(encoded.len().saturating_sub(single));
        peers_benches::apply_all(&db, batched);
        drop(db);
        let options = Options {
            sync: peers_engine::SyncMode::Relaxed,
            ..Options::default()
        };
        let db = Db::open(&path, options).expect("reopen");
        // Said when it starts, for a profiler to attach to this phase alone.
        eprintln!("applying {} changes one at a time", alone.len());
        let started = Instant::now();
        for change in alone {
            db.apply_encoded(std::slice::from_ref(change))
                .expect("apply");
        }
        (db, alone.to_vec(), started)
    } else {
        peers_benches::apply_all(&db, &encoded);
        (db, encoded, started)
    };
    let elapsed = started.elapsed();
    println!(
        "merged {} changes ({} ops) in {:?}: {:.0} changes/s",
        encoded.len(),
        workload.ops,
        elapsed,
        encoded.len() as f64 / elapsed.as_secs_f64()
    );
    if std::env::var_os("REBUILD").is_some() {
        let started = Instant::now();
        let (changes, _) = db.rebuild(&mut |_, _| {}).expect("rebuild");
        let elapsed = started.elapsed();
        println!(
            "rebuilt {changes} changes in {elapsed:?}: {:.0} changes/s",
            changes as f64 / elapsed.as_secs_f64()
        );
    }
}

fn time_commits(commits: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        sync: peers_engine::SyncMode::Relaxed,
        ..Options::default()
    };
    let db = Db::create(dir.path().join("db"), options).expect("create");
    let threads: u64 = std::env::var("THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let started = Instant::now();
    peers_benches::commit_from_threads(&db, threads, commits / threads);
    let commits = commits / threads * threads;
    let elapsed = started.elapsed();
    println!(
        "committed {commits} changes in {elapsed:?}: {:.0} changes/s",
        commits as f64 / elapsed.as_secs_f64()
    );
}
