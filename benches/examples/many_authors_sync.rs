//! Two replicas of a database with many one-change authors, differing in a
//! few, sync over TCP on 127.0.0.1: `cargo run --release -p peers-benches
//! --example many_authors_sync -- 1000000 10` (authors, authors that
//! differ). Prints the session's round trips, bytes and time, and how much
//! the process's peak resident memory grew during the sync (Linux: the peak
//! is reset through /proc/self/clear_refs just before it).

use std::time::Instant;

use peers_engine::{
    CHANGE_FORMAT_VERSION, Change, ChangeBody, Db, Identity, Op, Options, SyncMode, Value,
};
use peers_net::{Node, NodeConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let authors: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let differ: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || Options {
        members_only: false,
        sync: SyncMode::Relaxed,
        ..Options::default()
    };
    let source = Db::create(dir.path().join("source"), options()).expect("create");
    let replica =
        Db::join(dir.path().join("replica"), source.database_id(), options()).expect("join");
    let genesis = source
        .get_change(&peers_engine::ChangeHash(source.database_id().0))
        .expect("read")
        .expect("genesis");
    replica.apply(vec![genesis]).expect("genesis");
    let started = Instant::now();
    let database = source.database_id();
    let sign = |index: u64| -> Change {
        let mut secret = [9u8; 32];
        secret[..8].copy_from_slice(&index.to_le_bytes());
        let identity = Identity::from_secret_bytes(secret);
        identity.sign(ChangeBody {
            version: CHANGE_FORMAT_VERSION,
            database,
            author: identity.author(),
            seq: 1,
            prev: None,
            deps: Vec::new(),
            lamport: 1,
            wall_ms: 0,
            ops: vec![Op::Set {
                table: "t".into(),
                row: format!("r{index}"),
                field: "f".into(),
                value: Value::Int(index as i64),
            }],
        })
    };
    let step = (authors / differ.max(1)).max(1);
    let mut chunk = Vec::with_capacity(8192);
    for index in 0..authors {
        chunk.push(sign(index));
        if chunk.len() == 8192 || index + 1 == authors {
            let batch = std::mem::take(&mut chunk);
            let for_replica: Vec<Change> = batch
                .iter()
                .zip(index + 1 - batch.len() as u64..)
                .filter(|(_, at)| at % step != 0 || at / step >= differ)
                .map(|(change, _)| change.clone())
                .collect();
            source.apply(batch).expect("apply");
            replica.apply(for_replica).expect("apply");
        }
    }
    println!(
        "built two replicas of {authors} authors ({differ} only on one) in {:.1?}",
        started.elapsed()
    );
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
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = peers_benches::status_kib("VmRSS:");
        let started = Instant::now();
        let report = client.sync_once(&address, None).await.expect("sync");
        let took = started.elapsed();
        let peak = peers_benches::status_kib("VmHWM:");
        assert_eq!(
            replica.state_hash().expect("hash"),
            source.state_hash().expect("hash")
        );
        println!(
            "sync: {} changes received, {} round trips, {} bytes sent + {} received, {took:.2?}; \
             peak resident memory +{} KiB over the {} KiB before (both sides in this process)",
            report.changes_received,
            report.round_trips,
            report.bytes_sent,
            report.bytes_received,
            peak.saturating_sub(before),
            before
        );
        client.shutdown().await;
        server.shutdown().await;
    });
}
