//! Syncs a generated workload from one node to an empty replica over TCP on
//! 127.0.0.1 and prints changes/s and bytes on the wire per change byte:
//! `cargo run --release -p peers-benches --example sync_throughput -- 100000 10`
//! (changes, authors). Both nodes run in this process, on 2 worker threads;
//! the receiver verifies every signature and fsyncs each applied batch.
//! A third argument `webrtc` dials by key over WebRTC through an in-process
//! signaling server on loopback instead, and also prints how long the
//! connection took to open (an empty sync of a second replica).

use std::time::Instant;

use peers_benches::{Spec, apply_all, generate};
use peers_engine::{Db, Options};
use peers_net::webrtc::WebRtcConfig;
use peers_net::{Node, NodeConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let changes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let authors: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let webrtc = args.next().as_deref() == Some("webrtc");
    let workload = generate(Spec::new(changes, authors));
    let encoded = workload.encoded();
    let change_bytes: usize = encoded.iter().map(Vec::len).sum();
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Db::join(
        dir.path().join("source"),
        workload.database,
        Options::default(),
    )
    .expect("join");
    apply_all(&source, &encoded);
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
        let signal = if webrtc {
            let config = peers_signal::ServerConfig::new("127.0.0.1:0".parse().expect("address"));
            Some(
                peers_signal::Server::start(config)
                    .await
                    .expect("signaling"),
            )
        } else {
            None
        };
        let by_key = |url: &str| NodeConfig {
            signal: vec![url.to_owned()],
            webrtc: WebRtcConfig {
                interfaces: Some(vec!["127.0.0.1".parse().expect("ip")]),
                stun_servers: Vec::new(),
            },
            ..NodeConfig::default()
        };
        let (server_config, client_config) = match &signal {
            Some(signal) => {
                let url = format!("ws://{}", signal.local_addr());
                (by_key(&url), by_key(&url))
            }
            None => (
                NodeConfig {
                    listen: Some("127.0.0.1:0".parse().expect("address")),
                    ..NodeConfig::default()
                },
                NodeConfig::default(),
            ),
        };
        let server = Node::start(source.clone(), server_config)
            .await
            .expect("serve");
        let address = server.local_addr().map(|a| a.to_string());
        let client = Node::start(replica.clone(), client_config)
            .await
            .expect("node");
        // Set-up time: from the dial to the handshake's end (the first
        // `Connected` event), before any change moves.
        let mut events = client.events();
        let connected = tokio::spawn(async move {
            let started = Instant::now();
            while let Ok(event) = events.recv().await {
                if matches!(event, peers_net::Event::Connected { .. }) {
                    return Some(started.elapsed());
                }
            }
            None
        });
        let started = Instant::now();
        let report = match &address {
            Some(address) => client.sync_once(address, None).await.expect("sync"),
            None => client.sync_key(source.author()).await.expect("sync"),
        };
        let elapsed = started.elapsed();
        assert_eq!(
            replica.state_hash().expect("hash"),
            source.state_hash().expect("hash")
        );
        println!(
            "{} synced {} changes ({change_bytes} bytes) in {elapsed:?}: {:.0} changes/s, \
             {:.4} wire bytes per change byte, {} round trips",
            if webrtc { "webrtc" } else { "tcp" },
            report.changes_received,
            report.changes_received as f64 / elapsed.as_secs_f64(),
            report.bytes_received as f64 / change_bytes as f64,
            report.round_trips
        );
        if let Ok(Some(setup)) = connected.await {
            println!("connection set-up (dial to authenticated channel): {setup:?}");
        }
        client.shutdown().await;
        server.shutdown().await;
        if let Some(signal) = signal {
            signal.shutdown().await;
        }
    });
}
