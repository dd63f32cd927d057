//! Crash safety: a child process commits durable changes from 4 threads and
//! prints each acknowledged hash; we SIGKILL it at random moments, many
//! cycles. After every kill the database reopens (replaying the log into
//! the view), holds every acknowledged change, and `verify` passes.
//!
//! Cycles: 40 by default; `PEERS_CRASH_CYCLES=2000` for a long run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peers_engine::{ChangeHash, Db, Options};

#[test]
fn acknowledged_changes_survive_sigkill() {
    let cycles: u64 = std::env::var("PEERS_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    drop(Db::create(&path, Options::default()).expect("create"));
    let mut acknowledged: Vec<ChangeHash> = Vec::new();
    let mut seed: u64 = 0x5eed_c0de;
    for cycle in 0..cycles {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let run_for = Duration::from_millis(20 + (seed >> 33) % 180);
        acknowledged.extend(run_and_kill(&path, run_for));
        let db = Db::open(&path, Options::default())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        for hash in &acknowledged {
            assert!(
                db.get_change(hash).expect("lookup").is_some(),
                "cycle {cycle}: acknowledged {hash} lost"
            );
        }
        // Verify replays the whole log with full checks: at doubling cycles,
        // so a long run stays linear.
        if (cycle + 1).is_power_of_two() || cycle + 1 == cycles {
            let report = db.verify(&mut |_, _| {}).expect("verify");
            assert!(report.ok(), "cycle {cycle}: view differs from a rebuild");
        }
    }
    assert!(
        acknowledged.len() as u64 > cycles,
        "the child acknowledged too few changes to test anything"
    );
    eprintln!(
        "{cycles} kill -9 cycles, {} acknowledged changes, none lost",
        acknowledged.len()
    );
}

/// Runs the child for about `run_for`, SIGKILLs it, returns the hashes it
/// acknowledged (every complete line it printed).
fn run_and_kill(path: &std::path::Path, run_for: Duration) -> Vec<ChangeHash> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(path)
        .arg("4")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash-writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut hashes = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // A line cut by the kill has no newline and fails to parse: it
            // was never fully acknowledged to us, so it is not counted.
            if let Ok(hash) = ChangeHash::from_hex(&line) {
                hashes.push(hash);
            }
        }
        hashes
    });
    let started = Instant::now();
    while started.elapsed() < run_for {
        if child.try_wait().expect("try_wait").is_some() {
            panic!("crash-writer exited by itself");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    reader.join().expect("reader thread")
}
