//! Syncs a generated workload from one node to an empty replica over TCP on
//! 127.0.0.1 and prints changes/s and bytes on the wire per change byte:
//! `cargo run --release -p peers-benches --example sync_throughput -- 100000 10`
//! (changes, authors). Both nodes run in this process, on 2 worker threads;
//! the receiver verifies every signature and fsyncs each applied batch.

use std::time::Instant;

use peers_benches::{Spec, generate};
use peers_engine::{Db, Options};
use peers_net::{Node, NodeConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let changes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let authors: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let workload = generate(Spec {
        authors,
        changes,
        seed: 0x9ee7_5eed,
        automerge: false,
    });
    let encoded = workload.encoded();
    let change_bytes: usize = encoded.iter().map(Vec::len).sum();
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Db::join(
        dir.path().join("source"),
        workload.database,
        Options::default(),
    )
    .expect("join");
    for batch in encoded.chunks(8192) {
        let report = source.apply_encoded(batch).expect("apply");
        assert!(report.refused.is_empty() && report.pending.is_empty());
    }
    let replica = Db::join(
        dir.path().join("replica"),
        workload.database,
        Options::default(),
    )
    .expect("join");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listen = NodeConfig {
            listen: Some("127.0.0.1:0".parse().expect("address")),
            ..NodeConfig::default()
        };
        let server = Node::start(source.clone(), listen).await.expect("serve");
        let address = server.local_addr().expect("listens").to_string();
        let client = Node::start(replica.clone(), NodeConfig::default())
            .await
            .expect("node");
        let started = Instant::now();
        let report = client.sync_once(&address, None).await.expect("sync");
        let elapsed = started.elapsed();
        assert_eq!(
            replica.state_hash().expect("hash"),
            source.state_hash().expect("hash")
        );
        println!(
            "synced {} changes ({change_bytes} bytes) in {elapsed:?}: {:.0} changes/s, \
             {:.4} wire bytes per change byte, {} round trips",
            report.changes_received,
            report.changes_received as f64 / elapsed.as_secs_f64(),
            report.bytes_received as f64 / change_bytes as f64,
            report.round_trips
        );
        client.shutdown().await;
        server.shutdown().await;
    });
}
