//! Crash during sync: the receiving process is SIGKILLed in the middle of
//! the stream, several times. After each restart it resumes from what it
//! had applied (its version vector says so) and in the end converges with
//! the sender. Nothing it acknowledged is lost: its own writes from before
//! the kills survive and reach the sender, and every change it had applied
//! at one kill is still there at the next.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use peers_engine::{Db, Options};
use peers_net::{Node, NodeConfig};
use peers_tests::{relaxed, replica_of};

const SENDER_CHANGES: usize = 40_000;
const RECEIVER_CHANGES: usize = 50;

fn held(dir: &Path) -> (usize, Db) {
    let db = Db::open(dir, Options::default()).expect("reopen after kill");
    let held = db
        .version_vector()
        .expect("vector")
        .iter()
        .map(|(_, head)| usize::try_from(head.seq).expect("small"))
        .sum();
    (held, db)
}

/// Bytes in the receiver's change log: grows as it applies what it receives.
fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("log"))
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits until the receiver's log grew past `bytes`, or the child exited.
async fn applied_past(dir: &Path, bytes: u64, process: &mut Child) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while log_bytes(dir) < bytes && process.try_wait().expect("poll child").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "receiver stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_mid_stream_resumes_and_converges() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sender = Db::create(dir.path().join("sender"), relaxed()).expect("create");
    for index in 0..SENDER_CHANGES {
        let mut tx = sender.transaction();
        tx.set(
            "notes",
            &format!("r{}", index % 500),
            "text",
            format!("change {index} of the sender"),
        );
        tx.commit().expect("commit");
    }
    let receiver_dir = dir.path().join("receiver");
    {
        let receiver = replica_of(&sender, &receiver_dir);
        for index in 0..RECEIVER_CHANGES {
            let mut tx = receiver.transaction();
            tx.set(
                "mine",
                &format!("m{index}"),
                "text",
                "acknowledged before the kills",
            );
            tx.commit().expect("commit");
        }
    }
    let node = Node::start(
        sender.clone(),
        NodeConfig {
            listen: Some("127.0.0.1:0".parse().expect("address")),
            ..NodeConfig::default()
        },
    )
    .await
    .expect("node");
    let address = node.local_addr().expect("listens").to_string();
    let child = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_sync-peer"))
            .arg(dir)
            .arg(&address)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sync-peer")
    };

    // A joined replica holds only its own changes until it syncs the genesis.
    let mut last_held = RECEIVER_CHANGES;
    let mut killed_mid_stream = 0;
    for cycle in 0..3 {
        let mut process = child(&receiver_dir);
        let target = log_bytes(&receiver_dir) + 1_000_000 * (cycle + 1);
        applied_past(&receiver_dir, target, &mut process).await;
        let finished = process.try_wait().expect("poll child").is_some();
        process.kill().expect("SIGKILL");
        process.wait().expect("reap");
        let (now_held, db) = held(&receiver_dir);
        assert!(now_held >= last_held, "cycle {cycle}: applied changes lost");
        for index in 0..RECEIVER_CHANGES {
            assert!(
                db.get_row("mine", &format!("m{index}"))
                    .expect("read")
                    .is_some(),
                "cycle {cycle}: acknowledged write m{index} lost"
            );
        }
        drop(db);
        if !finished && now_held < 1 + SENDER_CHANGES + RECEIVER_CHANGES {
            killed_mid_stream += 1;
        }
        println!("cycle {cycle}: receiver held {now_held} changes after SIGKILL");
        last_held = now_held;
    }
    assert!(killed_mid_stream > 0, "no kill landed mid-stream");

    let output = tokio::task::spawn_blocking({
        let process = child(&receiver_dir);
        move || process.wait_with_output().expect("child runs")
    })
    .await
    .expect("join");
    assert!(output.status.success(), "final sync failed");
    node.shutdown().await;
    let (now_held, receiver) = held(&receiver_dir);
    assert_eq!(now_held, 1 + SENDER_CHANGES + RECEIVER_CHANGES);
    assert_eq!(
        receiver.state_hash().expect("state"),
        sender.state_hash().expect("state")
    );
    assert!(sender.get_row("mine", "m0").expect("read").is_some());
}
