//! Hostile load against a serving node while honest peers sync with it, on
//! loopback only, bounded in clients and time (issue 15, item 6):
//! `cargo run --release -p peers-benches --example hostile_load -- 20000 200 10`
//! (changes the node holds, hostile clients, seconds of load).
//!
//! The node serves a replica of `changes` changes (10 authors). Honest
//! peers are empty replicas that each sync it all once, one after another.
//! It prints their sync times without load, then with `clients` hostile
//! clients running at once for `seconds`. The clients come from many
//! loopback addresses (127.0.x.y) and cycle through three kinds:
//! - idle connections that never start a handshake, held for 5 s;
//! - garbage handshakes, then a hang-up;
//! - complete handshakes under a fresh key that then send garbage.
//!
//! It also prints the process's peak RSS and most open files (node, honest
//! peers and attackers all run in this process), and checks that every
//! honest replica ends with the node's state hash.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use peers_benches::{Spec, apply_all, generate, status_kib};
use peers_engine::{Db, Identity, Options};
use peers_net::{ChannelOptions, Node, NodeConfig, SecureChannel};
use tokio::io::AsyncWriteExt;

/// Honest syncs measured in each phase.
const HONEST_SYNCS: usize = 5;

fn main() {
    let mut args = std::env::args().skip(1);
    let changes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let clients: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(200)
        .min(4096);
    let seconds: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10)
        .min(120);
    let workload = generate(Spec {
        seed: 0x10ad_5eed,
        ..Spec::new(changes, 10)
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let served = Db::join(
        dir.path().join("served"),
        workload.database,
        Options::default(),
    )
    .expect("join");
    apply_all(&served, &workload.encoded());
    let expected = served.state_hash().expect("state hash");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let node = Node::start(
            served.clone(),
            NodeConfig {
                listen: Some("127.0.0.1:0".parse().expect("address")),
                ..NodeConfig::default()
            },
        )
        .await
        .expect("node");
        let address = node.local_addr().expect("listens");
        let peak_files = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = tokio::spawn(sample_open_files(
            Arc::clone(&peak_files),
            Arc::clone(&sampling),
        ));
        println!(
            "node holds {changes} changes; honest peers each sync all of it ({HONEST_SYNCS} per phase)"
        );
        let quiet = honest_syncs(&dir, &served, address, expected, "quiet").await;
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let attackers: Vec<_> = (0..clients)
            .map(|index| {
                tokio::spawn(attack(
                    index,
                    address,
                    Arc::clone(&stop),
                    Arc::clone(&counts),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let loaded = honest_syncs(&dir, &served, address, expected, "loaded").await;
        let remaining = Duration::from_secs(seconds).saturating_sub(started.elapsed());
        tokio::time::sleep(remaining).await;
        stop.store(true, Ordering::SeqCst);
        for attacker in attackers {
            let _ = attacker.await;
        }
        sampling.store(false, Ordering::SeqCst);
        let _ = sampler.await;
        node.shutdown().await;
        println!(
            "hostile clients: {clients} for {seconds} s: {} idle connections, {} garbage handshakes, {} keyed connections sending garbage ({} refused at connect)",
            counts.idle.load(Ordering::Relaxed),
            counts.garbage.load(Ordering::Relaxed),
            counts.keyed.load(Ordering::Relaxed),
            counts.refused.load(Ordering::Relaxed),
        );
        println!(
            "honest sync, median of {HONEST_SYNCS}: {:.0} ms quiet, {:.0} ms under load ({:.2}x)",
            quiet.as_secs_f64() * 1e3,
            loaded.as_secs_f64() * 1e3,
            loaded.as_secs_f64() / quiet.as_secs_f64()
        );
        println!(
            "process peak RSS {} MiB, most open files {}",
            status_kib("VmHWM:") / 1024,
            peak_files.load(Ordering::Relaxed)
        );
        println!("every honest replica holds the node's state: nothing honest was lost");
    });
}

#[derive(Default)]
struct Counts {
    idle: AtomicU64,
    garbage: AtomicU64,
    keyed: AtomicU64,
    refused: AtomicU64,
}

/// `HONEST_SYNCS` empty replicas, each syncing everything from the node;
/// returns the median time and checks each ends in the node's state.
async fn honest_syncs(
    dir: &tempfile::TempDir,
    served: &Db,
    address: SocketAddr,
    expected: peers_engine::StateHash,
    phase: &str,
) -> Duration {
    let mut times = Vec::new();
    for index in 0..HONEST_SYNCS {
        let replica = Db::join(
            dir.path().join(format!("{phase}-{index}")),
            served.database_id(),
            Options::default(),
        )
        .expect("join");
        let client = Node::start(replica.clone(), NodeConfig::default())
            .await
            .expect("node");
        let started = Instant::now();
        let report = client
            .sync_once(&address.to_string(), Some(served.author()))
            .await
            .unwrap_or_else(|error| panic!("honest sync {phase} {index}: {error}"));
        times.push(started.elapsed());
        client.shutdown().await;
        assert_eq!(
            replica.state_hash().expect("state hash"),
            expected,
            "{phase} {index}: {report:?}"
        );
    }
    times.sort();
    times[times.len() / 2]
}

/// One hostile client, until `stop`: from its own loopback address, in
/// turn an idle connection, a garbage handshake, a keyed connection that
/// sends garbage.
async fn attack(index: usize, address: SocketAddr, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let source = Ipv4Addr::new(127, 1 + (index / 250) as u8, (index % 250) as u8, 2);
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let socket = match tokio::net::TcpSocket::new_v4()
            .and_then(|socket| socket.bind(SocketAddr::from((source, 0))).map(|()| socket))
        {
            Ok(socket) => socket,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(mut stream) = socket.connect(address).await else {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        match (index as u64 + round) % 3 {
            0 => {
                counts.idle.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            1 => {
                counts.garbage.fetch_add(1, Ordering::Relaxed);
                let garbage: Vec<u8> = (0..512u64)
                    .map(|byte| (byte.wrapping_mul(round).wrapping_add(index as u64)) as u8)
                    .collect();
                let _ = stream.write_all(&garbage).await;
            }
            _ => {
                counts.keyed.fetch_add(1, Ordering::Relaxed);
                let identity = Identity::generate();
                if let Ok(mut channel) =
                    SecureChannel::initiate(stream, &identity, None, ChannelOptions::default())
                        .await
                {
                    let _ = channel.send(&[0xff; 64]).await;
                }
            }
        }
    }
}

/// Samples this process's open file descriptors every 100 ms, keeping the
/// most seen.
async fn sample_open_files(peak: Arc<AtomicU64>, running: Arc<AtomicBool>) {
    while running.load(Ordering::SeqCst) {
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            peak.fetch_max(entries.count() as u64, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
