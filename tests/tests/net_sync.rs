//! Sync over real sockets on 127.0.0.1 (issue 4): convergence both ways,
//! transitivity through a middle node and along a chain, sending only the
//! missing history, live push, and random partitions that heal.

use std::time::Duration;

use peers_engine::{Db, Identity, Value};
use peers_net::{Event, Node, NodeConfig, SyncReport};
use peers_tests::{SplitMix, all_changes, relaxed, replica_of};
use tempfile::TempDir;

const TABLE: &str = "notes";

fn listening() -> NodeConfig {
    NodeConfig {
        listen: Some("127.0.0.1:0".parse().expect("address")),
        ..NodeConfig::default()
    }
}

async fn serve(db: &Db) -> (Node, String) {
    let node = Node::start(db.clone(), listening()).await.expect("node");
    let address = node.local_addr().expect("listens").to_string();
    (node, address)
}

/// `count` one-field commits on `db`, rows named after `tag`.
fn write(db: &Db, tag: &str, count: usize) {
    for index in 0..count {
        let mut tx = db.transaction();
        tx.set(
            TABLE,
            &format!("{tag}-{}", index % 50),
            "text",
            format!("{tag} {index}"),
        );
        tx.increment(TABLE, "shared", "count", 1);
        tx.commit().expect("commit");
    }
}

/// Dials `address` from a short-lived node on `db` and syncs once.
async fn sync_once(db: &Db, address: &str) -> SyncReport {
    let node = Node::start(db.clone(), NodeConfig::default())
        .await
        .expect("node");
    let report = node.sync_once(address, None).await.expect("sync");
    node.shutdown().await;
    report
}

fn state(db: &Db) -> peers_engine::StateHash {
    db.state_hash().expect("state hash")
}

/// A new database with `replicas` empty replicas of it, all in `dir`.
fn databases(dir: &TempDir, replicas: usize) -> Vec<Db> {
    let first = Db::create(dir.path().join("n0"), relaxed()).expect("create");
    let mut all = vec![first];
    for index in 1..=replicas {
        let db = replica_of(&all[0], &dir.path().join(format!("n{index}")));
        all.push(db);
    }
    all
}

/// Two nodes with concurrent writes on both sides meet once and end with
/// one state, each holding the other's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_both_ways() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 1);
    write(&dbs[0], "a", 300);
    write(&dbs[1], "b", 200);
    let (server, address) = serve(&dbs[0]).await;
    let report = sync_once(&dbs[1], &address).await;
    server.shutdown().await;
    assert_eq!(report.changes_sent, 200, "b sends its own changes");
    // a's 300 commits (b holds the genesis since it joined).
    assert_eq!(report.changes_received, 300);
    assert_eq!(state(&dbs[0]), state(&dbs[1]));
    assert_eq!(
        dbs[1].get_field(TABLE, "shared", "count").expect("read"),
        Some(Value::Counter(500))
    );
}

/// A syncs only with B, C only with B: after A–B, B–C, A–B, all three hold
/// everything; then a chain of 5 where each node meets only its neighbours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitive_through_middle_and_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 2);
    let (a, b, c) = (&dbs[0], &dbs[1], &dbs[2]);
    write(a, "a", 40);
    write(c, "c", 40);
    let (b_node, b_address) = serve(b).await;
    sync_once(a, &b_address).await;
    sync_once(c, &b_address).await;
    sync_once(a, &b_address).await;
    b_node.shutdown().await;
    assert_eq!(state(a), state(b));
    assert_eq!(state(b), state(c));
    assert!(
        a.get_row(TABLE, "c-1").expect("read").is_some(),
        "A got C's change through B"
    );
    assert!(
        c.get_row(TABLE, "a-1").expect("read").is_some(),
        "C got A's change through B"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let chain = databases(&dir, 4);
    for (index, db) in chain.iter().enumerate() {
        write(db, &format!("n{index}"), 20);
    }
    let mut nodes = Vec::new();
    let mut addresses = Vec::new();
    for db in &chain {
        let (node, address) = serve(db).await;
        nodes.push(node);
        addresses.push(address);
    }
    // Forward then backward along the chain: i dials i+1 only.
    for index in (0..4).chain((0..4).rev()) {
        sync_once(&chain[index], &addresses[index + 1]).await;
    }
    for node in nodes {
        node.shutdown().await;
    }
    let first = state(&chain[0]);
    for db in &chain {
        assert_eq!(state(db), first);
    }
}

/// Only the missing history crosses: B holds a prefix of A's log; the
/// bytes A sends are within 1.2x of the missing changes' own size plus a
/// fixed overhead, and equal peers finish in one round trip. Prints the
/// figures for 1%, 10% and 100% missing of 10,000 changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_only_missing_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = Db::create(dir.path().join("source"), relaxed()).expect("create");
    let writers: Vec<Db> = (0..3)
        .map(|index| replica_of(&source, &dir.path().join(format!("w{index}"))))
        .collect();
    for (index, writer) in writers.iter().enumerate() {
        write(writer, &format!("w{index}"), 3333);
        peers_tests::sync_into(writer, &source);
    }
    let log = all_changes(&source);
    assert!(log.len() >= 10_000);
    let (node, address) = serve(&source).await;
    for missing_percent in [1usize, 10, 100] {
        // Every replica holds the genesis (it writes only once it does).
        let held = (log.len() - log.len() * missing_percent / 100).max(1);
        let missing = log.len() - held;
        let replica = replica_of(&source, &dir.path().join(format!("r{missing_percent}")));
        let report = replica.apply(log[..held].to_vec()).expect("apply");
        assert!(report.refused.is_empty());
        let missing_bytes: usize = log[held..].iter().map(|c| c.bytes().len()).sum();
        let sync = sync_once(&replica, &address).await;
        assert_eq!(state(&replica), state(&source));
        assert_eq!(sync.changes_received, missing as u64);
        assert_eq!(sync.changes_sent, 0);
        assert_eq!(sync.round_trips, 2);
        // Hello, a 4-author vector, CaughtUp, and one frame per batch.
        let overhead = 4096;
        let ratio = sync.bytes_received as f64 / missing_bytes as f64;
        println!(
            "{missing_percent}% missing: {missing} changes, {missing_bytes} bytes; \
             received {} bytes ({ratio:.4}x), sent {} bytes, {} round trips",
            sync.bytes_received, sync.bytes_sent, sync.round_trips
        );
        assert!(
            sync.bytes_received as f64 <= 1.2 * missing_bytes as f64 + overhead as f64,
            "{} bytes for {missing_bytes} missing",
            sync.bytes_received
        );
        let again = sync_once(&replica, &address).await;
        assert_eq!(again.round_trips, 1, "equal peers: one round trip");
        assert_eq!(again.changes_received + again.changes_sent, 0);
        println!(
            "equal: {} bytes sent, {} received, {} round trip",
            again.bytes_sent, again.bytes_received, again.round_trips
        );
    }
    node.shutdown().await;
}

/// Waits until `condition` holds, up to 10 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After a live connection catches up, a change committed on either side
/// appears on the other without another sync call, and one received from a
/// third peer is forwarded too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_push_both_ways_and_forwarded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 2);
    let (a, b, c) = (&dbs[0], &dbs[1], &dbs[2]);
    let (a_node, a_address) = serve(a).await;
    let b_node = Node::start(b.clone(), NodeConfig::default())
        .await
        .expect("node");
    let mut events = b_node.events();
    b_node
        .connect(&a_address, Some(a.author()))
        .await
        .expect("dial");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(Event::CaughtUp { .. })) => break,
            Ok(Ok(_)) => {}
            other => panic!("no catch-up: {other:?}"),
        }
    }
    let mut tx = a.transaction();
    tx.set(TABLE, "live", "from", "a");
    tx.commit().expect("commit");
    eventually("a's change on b", || {
        b.get_field(TABLE, "live", "from").expect("read") == Some(Value::from("a"))
    })
    .await;
    let mut tx = b.transaction();
    tx.set(TABLE, "live", "back", "b");
    tx.commit().expect("commit");
    eventually("b's change on a", || {
        a.get_field(TABLE, "live", "back").expect("read") == Some(Value::from("b"))
    })
    .await;
    // C meets A once; A pushes C's change on to B live.
    write(c, "c", 5);
    sync_once(c, &a_address).await;
    eventually("c's changes on b through a", || state(a) == state(b)).await;
    assert!(b.get_row(TABLE, "c-4").expect("read").is_some());
    b_node.shutdown().await;
    a_node.shutdown().await;
}

/// Five nodes, rounds of random links (each up link syncs once) and random
/// writes; after the partitions heal (a ring of syncs), every state hash is
/// equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_partitions_heal() {
    for seed in [1u64, 2, 3] {
        let dir = tempfile::tempdir().expect("temp dir");
        let dbs = databases(&dir, 4);
        let mut nodes = Vec::new();
        let mut addresses = Vec::new();
        for db in &dbs {
            let (node, address) = serve(db).await;
            nodes.push(node);
            addresses.push(address);
        }
        let mut random = SplitMix(seed);
        for round in 0..8 {
            for (index, db) in dbs.iter().enumerate() {
                let writes = random.below(4);
                write(db, &format!("s{seed}r{round}n{index}"), writes);
            }
            // Each directed link is up in this round with probability 1/5.
            for (from, db) in dbs.iter().enumerate() {
                for (to, address) in addresses.iter().enumerate() {
                    if from != to && random.below(5) == 0 {
                        sync_once(db, address).await;
                    }
                }
            }
        }
        // Heal: around the ring twice reaches everyone.
        for step in 0..2 * dbs.len() {
            let from = step % dbs.len();
            sync_once(&dbs[from], &addresses[(from + 1) % dbs.len()]).await;
        }
        for node in nodes {
            node.shutdown().await;
        }
        let first = state(&dbs[0]);
        for db in &dbs {
            assert_eq!(state(db), first, "seed {seed}");
        }
    }
}

/// A pinned dial to a node with another key is refused, and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_key_mismatch_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 1);
    write(&dbs[0], "a", 3);
    let (server, address) = serve(&dbs[0]).await;
    let before = state(&dbs[1]);
    let node = Node::start(dbs[1].clone(), NodeConfig::default())
        .await
        .expect("node");
    let stranger = Identity::generate().author();
    let error = node
        .sync_once(&address, Some(stranger))
        .await
        .expect_err("wrong key");
    assert!(
        matches!(error, peers_net::Error::UnexpectedKey { .. }),
        "{error}"
    );
    node.shutdown().await;
    server.shutdown().await;
    assert_eq!(state(&dbs[1]), before);
}

/// A node of another database is refused after the handshake with
/// `WrongDatabase`, and neither side's state changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_database_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = Db::create(dir.path().join("ours"), relaxed()).expect("create");
    let theirs = Db::create(dir.path().join("theirs"), relaxed()).expect("create");
    write(&theirs, "t", 3);
    let (server, address) = serve(&theirs).await;
    let (before_ours, before_theirs) = (state(&ours), state(&theirs));
    let node = Node::start(ours.clone(), NodeConfig::default())
        .await
        .expect("node");
    let error = node.sync_once(&address, None).await.expect_err("refused");
    assert!(
        matches!(error, peers_net::Error::WrongDatabase { .. }),
        "{error}"
    );
    node.shutdown().await;
    server.shutdown().await;
    assert_eq!(state(&ours), before_ours);
    assert_eq!(state(&theirs), before_theirs);
}

/// Graceful shutdown in the middle of a catch-up loses nothing that was
/// acknowledged: every change the node reported as received is held when
/// `shutdown` returns, a reopened database holds exactly those, and the
/// next sync finishes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_stream_keeps_acknowledged_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 1);
    write(&dbs[0], "a", 20_000);
    let (server, address) = serve(&dbs[0]).await;
    let b_dir = dbs[1].dir().to_owned();
    let node = Node::start(dbs[1].clone(), NodeConfig::default())
        .await
        .expect("node");
    let mut events = node.events();
    node.connect(&address, None).await.expect("dial");
    let mut received = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(Event::Received { changes, .. })) => {
                received += changes;
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("nothing received: {other:?}"),
        }
    }
    node.shutdown().await;
    // The node is gone: the remaining events are what it reported.
    while let Ok(event) = events.recv().await {
        if let Event::Received { changes, .. } = event {
            received += changes;
        }
    }
    let a_author = dbs[0].author();
    let held = |db: &Db| {
        db.version_vector()
            .expect("vector")
            .get(&a_author)
            .map_or(0, |head| head.seq)
    };
    // Plus the genesis, which b held since it joined.
    assert_eq!(held(&dbs[1]), received + 1, "acknowledged = held");
    assert!(received < 20_001, "shutdown landed mid-stream");
    let mut dbs = dbs;
    let b = dbs.pop().expect("b");
    drop(b);
    let b = Db::open(&b_dir, relaxed()).expect("reopen");
    assert_eq!(held(&b), received + 1, "held after reopen");
    sync_once(&b, &address).await;
    server.shutdown().await;
    assert_eq!(state(&b), state(&dbs[0]));
}

/// A live connection survives the other node restarting: `connect` redials
/// with backoff, catches up, and pushes live again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_connection_redials_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 1);
    let (a, b) = (&dbs[0], &dbs[1]);
    let (a_node, address) = serve(a).await;
    let fast = NodeConfig {
        reconnect_delay_min: Duration::from_millis(20),
        reconnect_delay_max: Duration::from_millis(100),
        ..NodeConfig::default()
    };
    let b_node = Node::start(b.clone(), fast).await.expect("node");
    let mut events = b_node.events();
    b_node
        .connect(&address, Some(a.author()))
        .await
        .expect("dial");
    write(a, "before", 3);
    eventually("first session", || state(a) == state(b)).await;

    a_node.shutdown().await;
    write(a, "while-down", 3);
    write(b, "b-while-down", 3);
    let restarted = Node::start(
        a.clone(),
        NodeConfig {
            listen: Some(address.parse().expect("address")),
            ..NodeConfig::default()
        },
    )
    .await
    .expect("restart on the same port");
    eventually("caught up after the restart", || state(a) == state(b)).await;
    let mut tx = a.transaction();
    tx.set(TABLE, "after", "text", "live again");
    tx.commit().expect("commit");
    eventually("live push after the restart", || {
        b.get_row(TABLE, "after").expect("read").is_some()
    })
    .await;
    let mut connected = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event, Event::Connected { .. }) {
            connected += 1;
        }
    }
    assert!(connected >= 2, "redialed: {connected} connections");
    b_node.shutdown().await;
    restarted.shutdown().await;
}

/// A change too big to share a message with a full batch still travels:
/// one of ~900 KB then one of ~3.5 MB (under `CHANGE_BYTES_MAX`) once in a
/// catch-up and once pushed live. Each used to go into one message past
/// `MESSAGE_BYTES_MAX`, and the sender panicked (a remote crash any writer
/// could cause, and a replica that never finished its catch-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_changes_after_a_full_batch_travel() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 2);
    let (a, fresh, live) = (&dbs[0], &dbs[1], &dbs[2]);
    let big = |db: &Db, row: &str, bytes: usize| {
        let mut tx = db.transaction();
        tx.set(TABLE, row, "blob", "x".repeat(bytes));
        tx.commit().expect("commit");
    };
    let (node, address) = serve(a).await;
    let live_node = Node::start(live.clone(), NodeConfig::default())
        .await
        .expect("node");
    live_node
        .connect(&address, Some(a.author()))
        .await
        .expect("dial");
    eventually("the live session is up", || state(live) == state(a)).await;

    big(a, "first", 900 * 1024);
    big(a, "second", 3500 * 1024);
    eventually("the live push of both", || state(live) == state(a)).await;

    let report = sync_once(fresh, &address).await;
    assert!(report.changes_received >= 2, "{report:?}");
    assert_eq!(state(fresh), state(a));
    live_node.shutdown().await;
    node.shutdown().await;
}

/// A catch-up whose apply takes longer than the peer's receive timeout
/// completes: while one side applies, its writer sends keepalives to the
/// other, which waits for `Applied`. The dialer sends 20 000 changes that
/// the listener applies (about half a second here) against a 150 ms receive
/// timeout: the dialer's wait for `Applied` used to be silent and end the
/// sync with `Timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_longer_than_the_receive_timeout_completes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 1);
    let (a, b) = (&dbs[0], &dbs[1]);
    write(b, "bulk", 20_000);
    let impatient = NodeConfig {
        channel: peers_net::ChannelOptions {
            recv_timeout: Duration::from_millis(150),
            ..peers_net::ChannelOptions::default()
        },
        keepalive: Duration::from_millis(30),
        ..NodeConfig::default()
    };
    // The listener must send keepalives often; only the dialer, which
    // waits, is impatient (its other waits are short: a Hello, a two-author
    // Vector, the listener's immediate CaughtUp).
    let server = Node::start(
        a.clone(),
        NodeConfig {
            keepalive: Duration::from_millis(30),
            ..listening()
        },
    )
    .await
    .expect("node");
    let address = server.local_addr().expect("listens").to_string();
    let client = Node::start(b.clone(), impatient).await.expect("node");
    let started = std::time::Instant::now();
    let report = client.sync_once(&address, None).await.expect("sync");
    let took = started.elapsed();
    client.shutdown().await;
    server.shutdown().await;
    assert_eq!(report.changes_sent, 20_000, "{report:?}");
    assert_eq!(state(a), state(b));
    println!("catch-up of 20 000 changes took {took:?} against a 150 ms receive timeout");
}

/// A peer that ends every live session at once with `Bye(Shutdown)` is
/// redialed with growing delays, not at the minimum delay each time: only a
/// session that did work resets the backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_grows_against_a_peer_that_hangs_up_at_once() {
    use peers_net::{ByeReason, ChannelOptions, Hello, Message, SecureChannel};
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 0);
    let db = dbs[0].clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let identity = Identity::generate();
    let (database, digest) = (
        db.database_id(),
        db.version_vector().expect("vector").digest(),
    );
    let dials = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&dials);
    let rude = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Ok(mut channel) =
                SecureChannel::accept(stream, &identity, ChannelOptions::default()).await
            else {
                continue;
            };
            // The same digest as the dialer (so a live session starts at
            // once), then goodbye.
            let hello = Message::Hello(Hello {
                version_min: peers_net::SYNC_VERSION,
                version_max: peers_net::SYNC_VERSION,
                database_proof: peers_net::database_proof(
                    database,
                    &channel.handshake_hash(),
                    &identity.author(),
                ),
                digest,
                live: true,
            });
            let _ = channel.send(&hello.encode().expect("encodes")).await;
            let _ = channel.recv().await;
            let bye = Message::Bye(ByeReason::Shutdown).encode().expect("encodes");
            let _ = channel.send(&bye).await;
        }
    });
    let node = Node::start(
        db.clone(),
        NodeConfig {
            reconnect_delay_min: Duration::from_millis(25),
            reconnect_delay_max: Duration::from_millis(800),
            ..NodeConfig::default()
        },
    )
    .await
    .expect("node");
    node.connect(&address.to_string(), None)
        .await
        .expect("dial");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.shutdown().await;
    rude.abort();
    // Backoff: dials at about 0, 25, 75, 175, 375, 775 ms, then every
    // 800 ms: 7 in 1.5 s. Reset after each session: one every ~25 ms.
    let dials = dials.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=10).contains(&dials), "{dials} dials in 1.5 s");
}

/// Forks settle. Key K signs two changes at seq 2 on two devices. Replicas
/// C and D each hold the fork (so K is cut at seq 1 on both) but C holds a
/// longer branch: they advertise K at its cut, so their digests are equal
/// and they sync in one round trip, sending nothing (K's chain used to be
/// re-sent on every session). And the evidence of a fork found on a node
/// reaches its live peer at once, although that peer already holds a longer
/// branch at that seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_settle_and_their_evidence_is_pushed() {
    use peers_engine::Options;
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 3);
    let (a, b, c, d) = (&dbs[0], &dbs[1], &dbs[2], &dbs[3]);
    let k = Identity::generate();
    let device = |name: &str| {
        let db = Db::join(
            dir.path().join(name),
            a.database_id(),
            Options {
                identity: Some(k.clone()),
                ..relaxed()
            },
        )
        .expect("join");
        peers_tests::sync_into(a, &db);
        db
    };
    let (k1, k2) = (device("k1"), device("k2"));
    write(&k1, "k", 1);
    peers_tests::sync_into(&k1, &k2);
    write(&k1, "branch-one", 3);
    write(&k2, "branch-two", 1);
    let (one, two) = (all_changes(&k1), all_changes(&k2));

    // A serves B live; A holds branch one, then learns branch two.
    let (a_node, address) = serve(a).await;
    let b_node = Node::start(b.clone(), NodeConfig::default())
        .await
        .expect("node");
    b_node
        .connect(&address, Some(a.author()))
        .await
        .expect("dial");
    a.apply(one.clone()).expect("branch one");
    eventually("B holds branch one", || state(b) == state(a)).await;
    let report = a.apply(two.clone()).expect("branch two");
    assert_eq!(report.inert.len(), 1, "{report:?}");
    assert_eq!(a.fork_cut(&k.author()), Some(1));
    eventually("B learns of the fork live", || {
        b.fork_cut(&k.author()) == Some(1)
    })
    .await;
    assert_eq!(state(b), state(a));
    b_node.shutdown().await;
    a_node.shutdown().await;

    // C: branch one whole, then branch two's change. D: the other way round.
    c.apply(one.clone()).expect("apply");
    c.apply(two.clone()).expect("apply");
    d.apply(two).expect("apply");
    // The genesis, K's seq 1 and branch one's seq 2.
    d.apply(one.into_iter().take(3).collect()).expect("apply");
    assert_eq!(
        (c.fork_cut(&k.author()), d.fork_cut(&k.author())),
        (Some(1), Some(1))
    );
    assert_eq!(
        c.version_vector().expect("vector"),
        d.version_vector().expect("vector")
    );
    let (c_node, address) = serve(c).await;
    let report = sync_once(d, &address).await;
    c_node.shutdown().await;
    assert_eq!(report.round_trips, 1, "{report:?}");
    assert_eq!((report.changes_sent, report.changes_received), (0, 0));
    assert_eq!(state(c), state(d));
}

/// A database with more authors than one message could ever list (60 000;
/// sync v1's `Vector` stopped at 53 248 and panicked past ~60 000, so that
/// anyone could break every sync of an open database with ~12 MB of
/// one-change authors) syncs, and two replicas that differ in five authors
/// find them in a few round trips and a few KB, not a 4 MB vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_authors_reconcile_in_a_few_kilobytes() {
    use peers_engine::{CHANGE_FORMAT_VERSION, ChangeBody};
    const AUTHORS: u64 = 60_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 1);
    let (a, b) = (&dbs[0], &dbs[1]);
    let one_change = |index: u64| {
        let mut secret = [7u8; 32];
        secret[..8].copy_from_slice(&index.to_le_bytes());
        let identity = Identity::from_secret_bytes(secret);
        identity.sign(ChangeBody {
            version: CHANGE_FORMAT_VERSION,
            database: a.database_id(),
            author: identity.author(),
            seq: 1,
            prev: None,
            deps: Vec::new(),
            lamport: 1,
            wall_ms: 0,
            ops: vec![peers_tests::set(
                TABLE,
                &format!("r{index}"),
                "n",
                index as i64,
            )],
        })
    };
    let changes: Vec<_> = (0..AUTHORS + 2).map(one_change).collect();
    // A holds all but the last two; B all but three in the middle, and the
    // last two.
    for chunk in changes[..AUTHORS as usize].chunks(8192) {
        a.apply(chunk.to_vec()).expect("apply");
    }
    let skipped = [10usize, 30_000, 59_999];
    let for_b: Vec<_> = changes
        .iter()
        .enumerate()
        .filter(|(index, _)| !skipped.contains(index))
        .map(|(_, change)| change.clone())
        .collect();
    for chunk in for_b.chunks(8192) {
        b.apply(chunk.to_vec()).expect("apply");
    }
    let (node, address) = serve(a).await;
    let report = sync_once(b, &address).await;
    node.shutdown().await;
    assert_eq!(state(a), state(b));
    assert_eq!(
        (report.changes_sent, report.changes_received),
        (2, 3),
        "{report:?}"
    );
    let bytes = report.bytes_sent + report.bytes_received;
    println!(
        "{} authors, 5 differ: {} round trips, {bytes} bytes both ways",
        AUTHORS + 3,
        report.round_trips
    );
    assert!(report.round_trips <= 6, "{report:?}");
    assert!(bytes < 32 * 1024, "{bytes} bytes");
}
