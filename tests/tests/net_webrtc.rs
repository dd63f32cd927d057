//! Sync over WebRTC through an in-process signaling server (issue 12): the
//! sync suite's main scenarios with nodes that dial each other by key only
//! (no node listens on TCP): convergence both ways, transitive through a
//! third peer, live push, redial after a restart, bulk transfer, and the
//! gate that refuses strangers and other databases before any socket.

use std::time::Duration;

use peers_engine::{Db, Value};
use peers_net::webrtc::{RefuseReason, WebRtcConfig};
use peers_net::{Error, Event, Node, NodeConfig};
use peers_signal::{Server, ServerConfig};
use peers_tests::{relaxed, replica_of};
use tempfile::TempDir;

const TABLE: &str = "notes";

async fn signaling() -> (Server, String) {
    let server = Server::start(ServerConfig::new("127.0.0.1:0".parse().expect("address")))
        .await
        .expect("signaling server");
    let url = format!("ws://{}", server.local_addr());
    (server, url)
}

/// A node that listens nowhere on TCP: it is reached by key only.
fn by_key(url: &str) -> NodeConfig {
    NodeConfig {
        signal: vec![url.to_owned()],
        webrtc: WebRtcConfig {
            interfaces: Some(vec!["127.0.0.1".parse().expect("ip")]),
            stun_servers: Vec::new(),
        },
        reconnect_delay_min: Duration::from_millis(50),
        reconnect_delay_max: Duration::from_millis(400),
        ..NodeConfig::default()
    }
}

async fn node(db: &Db, url: &str) -> Node {
    let node = Node::start(db.clone(), by_key(url)).await.expect("node");
    assert_eq!(node.signaling_servers(), vec![url.to_owned()], "registered");
    node
}

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

fn state(db: &Db) -> peers_engine::StateHash {
    db.state_hash().expect("state hash")
}

fn databases(dir: &TempDir, replicas: usize) -> Vec<Db> {
    let first = Db::create(dir.path().join("n0"), relaxed()).expect("create");
    let mut all = vec![first];
    for index in 1..=replicas {
        let db = replica_of(&all[0], &dir.path().join(format!("n{index}")));
        all.push(db);
    }
    all
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two replicas with concurrent writes meet once by key, and both ends
/// record how the other was reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_converge_both_ways_by_key() {
    let (server, url) = signaling().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 1);
    write(&dbs[0], "a", 300);
    write(&dbs[1], "b", 200);
    let a = node(&dbs[0], &url).await;
    let b = node(&dbs[1], &url).await;
    let report = b.sync_key(dbs[0].author()).await.expect("sync by key");
    assert_eq!(report.changes_sent, 200);
    assert_eq!(report.changes_received, 300);
    assert_eq!(state(&dbs[0]), state(&dbs[1]));
    assert_eq!(
        dbs[1].get_field(TABLE, "shared", "count").expect("read"),
        Some(Value::Counter(500))
    );
    let how = |node: &Node, peer| {
        node.known_peers()
            .into_iter()
            .find(|known| known.author == peer)
            .map(|known| known.how)
    };
    assert_eq!(how(&b, dbs[0].author()), Some(peers_net::How::WebRtc));
    assert_eq!(how(&a, dbs[1].author()), Some(peers_net::How::WebRtc));
    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
}

/// A and C never meet: each syncs with B by key, and both end with all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitive_through_a_third_peer() {
    let (server, url) = signaling().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 2);
    write(&dbs[0], "a", 40);
    write(&dbs[2], "c", 40);
    let nodes = [
        node(&dbs[0], &url).await,
        node(&dbs[1], &url).await,
        node(&dbs[2], &url).await,
    ];
    let b = dbs[1].author();
    nodes[0].sync_key(b).await.expect("a-b");
    nodes[2].sync_key(b).await.expect("c-b");
    nodes[0].sync_key(b).await.expect("a-b again");
    assert_eq!(state(&dbs[0]), state(&dbs[1]));
    assert_eq!(state(&dbs[1]), state(&dbs[2]));
    assert!(dbs[0].get_row(TABLE, "c-1").expect("read").is_some());
    for node in nodes {
        node.shutdown().await;
    }
    server.shutdown().await;
}

/// A live connection by key pushes commits both ways; when the peer's
/// node restarts, the live loop redials through signaling and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_push_and_redial_after_restart() {
    let (server, url) = signaling().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 1);
    let (a, b) = (&dbs[0], &dbs[1]);
    let a_node = node(a, &url).await;
    let b_node = node(b, &url).await;
    let mut events = b_node.events();
    b_node
        .connect_key(a.author())
        .await
        .expect("connect by key");
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Ok(Event::CaughtUp { .. })) => break,
            Ok(Ok(_)) => {}
            other => panic!("no catch-up: {other:?}"),
        }
    }
    write(a, "from-a", 3);
    eventually("a's change on b", || state(a) == state(b)).await;
    write(b, "from-b", 3);
    eventually("b's change on a", || state(a) == state(b)).await;

    a_node.shutdown().await;
    write(a, "while-down", 3);
    write(b, "b-while-down", 3);
    let restarted = node(a, &url).await;
    eventually("caught up after the restart", || state(a) == state(b)).await;
    write(a, "after", 1);
    eventually("live push after the restart", || state(a) == state(b)).await;
    b_node.shutdown().await;
    restarted.shutdown().await;
    server.shutdown().await;
}

/// Thousands of changes (several MiB) cross one data channel: the flow
/// control between str0m's SCTP and the secure channel neither stalls nor
/// loses a byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_catch_up_over_one_data_channel() {
    let (server, url) = signaling().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 1);
    let mut tx_count = 0;
    for chunk in 0..40 {
        let mut tx = dbs[0].transaction();
        for row in 0..100 {
            tx.set(
                TABLE,
                &format!("bulk-{chunk}-{row}"),
                "text",
                "x".repeat(200),
            );
        }
        tx.commit().expect("commit");
        tx_count += 1;
    }
    write(&dbs[0], "many", 2000);
    let a = node(&dbs[0], &url).await;
    let b = node(&dbs[1], &url).await;
    let report = b.sync_key(dbs[0].author()).await.expect("sync by key");
    assert_eq!(report.changes_received, 2000 + tx_count);
    assert!(report.bytes_received > 1_000_000, "{report:?}");
    assert_eq!(state(&dbs[0]), state(&dbs[1]));
    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
}

/// The acceptor's gate runs on the offer, before any socket: a key without
/// a role in a members-only database, and a replica of another database,
/// are refused with their reason; an unregistered key is offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_other_databases_are_refused_at_the_offer() {
    let (server, url) = signaling().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let members_only = peers_engine::Options {
        members_only: true,
        ..relaxed()
    };
    let owner = Db::create(dir.path().join("owner"), members_only).expect("create");
    let stranger = replica_of(&owner, &dir.path().join("stranger"));
    let other = Db::create(dir.path().join("other"), relaxed()).expect("create");
    let owner_node = node(&owner, &url).await;
    let stranger_node = node(&stranger, &url).await;
    let other_node = node(&other, &url).await;

    let error = stranger_node
        .sync_key(owner.author())
        .await
        .expect_err("refused");
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: RefuseReason::NotAMember,
                ..
            }
        ),
        "{error}"
    );
    let error = other_node
        .sync_key(owner.author())
        .await
        .expect_err("refused");
    assert!(
        matches!(
            error,
            Error::Refused {
                reason: RefuseReason::OtherDatabase,
                ..
            }
        ),
        "{error}"
    );
    let nobody = peers_engine::Identity::generate().author();
    let error = owner_node.sync_key(nobody).await.expect_err("offline");
    assert!(matches!(error, Error::PeerOffline { .. }), "{error}");
    assert!(
        error.to_string().contains("--signal"),
        "says what to do: {error}"
    );

    // Granted a role, the same key syncs.
    owner
        .grant(stranger.author(), peers_engine::Role::Writer)
        .expect("grant");
    stranger_node
        .sync_key(owner.author())
        .await
        .expect("member now");
    assert_eq!(state(&owner), state(&stranger));
    for node in [owner_node, stranger_node, other_node] {
        node.shutdown().await;
    }
    server.shutdown().await;
}

/// A member that sends offers and never finishes them holds at most
/// `SESSIONS_PER_KEY_MAX` attempts: the next offer is refused as busy, so
/// it cannot take every connection slot of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_cannot_hold_more_than_its_share_of_attempts() {
    use peers_net::webrtc::{IceParams, Rendezvous, offer_proof};
    let (server, url) = signaling().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs = databases(&dir, 0);
    let owner = node(&dbs[0], &url).await;
    let secret = [42u8; 32];
    let member = peers_engine::Identity::from_secret_bytes(secret).author();
    let keys = std::sync::Arc::new(ed25519_dalek::SigningKey::from_bytes(&secret));
    let (client, mut incoming) = peers_signal::Client::connect(&url, keys)
        .await
        .expect("client");
    let attempts = peers_net::SESSIONS_PER_KEY_MAX + 1;
    for index in 0..attempts {
        let session = [index as u8; 16];
        let offer = Rendezvous::Offer {
            session,
            database_proof: offer_proof(dbs[0].database_id(), &session, &member, &dbs[0].author()),
            invite: None,
            ice: IceParams {
                ufrag: "ufrag".into(),
                password: "p".repeat(24),
                fingerprint: [1; 32],
            },
            candidates: Vec::new(),
        };
        client
            .send(dbs[0].author().0, &offer.encode().expect("encodes"))
            .await
            .expect("delivered");
    }
    let (mut answers, mut busy) = (0, 0);
    while answers + busy < attempts {
        let delivery = tokio::time::timeout(Duration::from_secs(10), incoming.recv())
            .await
            .expect("a reply to every offer")
            .expect("client open");
        let peers_signal::Delivery::Message { body, .. } = delivery else {
            panic!("rejected: {delivery:?}");
        };
        match Rendezvous::decode(&body).expect("decodes") {
            Rendezvous::Answer { .. } => answers += 1,
            Rendezvous::Refuse {
                reason: RefuseReason::Busy,
                ..
            } => busy += 1,
            Rendezvous::Trickle { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((answers, busy), (attempts - 1, 1));
    client.close().await;
    owner.shutdown().await;
    server.shutdown().await;
}
