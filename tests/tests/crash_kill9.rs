//! Crash safety: a child process commits durable changes from 4 threads and
//! prints each acknowledged hash; we SIGKILL it at random moments, many
//! cycles, each once the child has acknowledged a write and while commits are
//! in flight (begun, not acknowledged: the test fails a cycle without one).
//! After every kill the database reopens (replaying the log into the view),
//! holds every acknowledged change, and `verify` passes.
//!
//! Cycles: 40 by default. The long run (docs/RELIABILITY.md):
//! `PEERS_CRASH_CYCLES=2000 cargo test --release --workspace --test crash_kill9 -- --nocapture`

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
    let mut in_flight_total = 0;
    let mut seed: u64 = 0x5eed_c0de;
    for cycle in 0..cycles {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let run_for = Duration::from_millis((seed >> 33) % 100);
        let killed = run_and_kill(&path, run_for);
        assert!(
            killed.in_flight > 0,
            "cycle {cycle}: no commit was in flight at the kill"
        );
        in_flight_total += killed.in_flight;
        let checked_from = acknowledged.len();
        acknowledged.extend(killed.acknowledged);
        let db = Db::open(&path, Options::default())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        // This cycle's acknowledged changes, and at doubling cycles every
        // earlier one too, so a long run stays linear.
        let full = (cycle + 1).is_power_of_two() || cycle + 1 == cycles;
        let check = if full {
            &acknowledged[..]
        } else {
            &acknowledged[checked_from..]
        };
        for hash in check {
            assert!(
                db.get_change(hash).expect("lookup").is_some(),
                "cycle {cycle}: acknowledged {hash} lost"
            );
        }
        // Verify replays the whole log with full checks.
        if full {
            let report = db.verify(&mut |_, _| {}).expect("verify");
            assert!(report.ok(), "cycle {cycle}: view differs from a rebuild");
        }
    }
    assert!(
        acknowledged.len() as u64 > cycles,
        "the child acknowledged too few changes to test anything"
    );
    eprintln!(
        "{cycles} kill -9 cycles, {} acknowledged changes, none lost; {in_flight_total} commits in flight at the kills",
        acknowledged.len()
    );
}

/// What a killed child had said.
struct Killed {
    /// Hashes of the commits it acknowledged.
    acknowledged: Vec<ChangeHash>,
    /// Commits begun and not acknowledged when it died.
    in_flight: usize,
}

/// Runs the child until it has acknowledged a write, then for `run_for`
/// more, SIGKILLs it, and returns what it had printed (complete lines only).
fn run_and_kill(path: &std::path::Path, run_for: Duration) -> Killed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(path)
        .arg("4")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash-writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (first_ack, first_acked) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut killed = Killed {
            acknowledged: Vec::new(),
            in_flight: 0,
        };
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // A line cut by the kill has no newline and fails to parse: it
            // was never fully acknowledged to us, so it is not counted.
            if line == "+" {
                killed.in_flight += 1;
            } else if let Ok(hash) = ChangeHash::from_hex(&line) {
                killed.in_flight -= 1;
                killed.acknowledged.push(hash);
                let _ = first_ack.send(());
            }
        }
        killed
    });
    let started = Instant::now();
    while first_acked.try_recv().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "crash-writer acknowledged nothing in 60 s"
        );
        if child.try_wait().expect("try_wait").is_some() {
            panic!("crash-writer exited by itself");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(run_for);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    reader.join().expect("reader thread")
}
