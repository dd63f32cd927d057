//! Hostile peers against a listening node over real sockets (issue 4): a bad
//! handshake, a frame over the limit, garbage after the handshake, a change
//! with a bad signature, a change of another database, and a flood of
//! pending changes with gaps.
//!
//! The attacker is hand-rolled: a bare TCP socket for the handshake cases, a
//! [`SecureChannel`] speaking (or breaking) the sync protocol for the rest.
//! Every case checks that
//! 1. the node reports the specific [`Error`] as an [`Event::PeerError`] (it
//!    also logs it with `tracing::warn`),
//! 2. the connection is dropped promptly, with the `Bye` the protocol gives
//!    for that fault or with none,
//! 3. the node's state hash and version vector are unchanged, and
//! 4. the node still syncs with an honest peer afterwards.
//!
//! A wrong key for a pinned peer is `pinned_key_mismatch_refused` in
//! net_sync.rs; a forged identity proof is in net/tests/channel.rs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use peers_engine::{
    Author, Change, DatabaseId, Db, Identity, Options, Refusal, StateHash, VersionVector,
};
use peers_net::{
    ByeReason, ChannelOptions, Error, Event, FRAME_BYTES_MAX, Hello, Message,
    NOISE_MESSAGE_BYTES_MAX, Node, NodeConfig, Range, RangeKind, SYNC_VERSION, SecureChannel,
    Stage, database_proof,
};
use peers_tests::{all_changes, relaxed, replica_of, sync_into};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

const TABLE: &str = "notes";
/// Longest wait for anything the node should do at once (report, hang up).
const PROMPTLY: Duration = Duration::from_secs(5);
/// The honest node's pending limit in the flood test (small, so it is fast).
const PENDING_CHANGES_MAX: usize = 100;

/// `count` commits on `db` (a row named after `tag`, and the shared
/// counter); returns them in order.
fn write(db: &Db, tag: &str, count: usize) -> Vec<Change> {
    (0..count)
        .map(|index| {
            let mut tx = db.transaction();
            tx.set(
                TABLE,
                &format!("{tag}-{index}"),
                "text",
                format!("{tag} {index}"),
            );
            tx.increment(TABLE, "shared", "count", 1);
            let hash = tx.commit().expect("commit");
            db.get_change(&hash).expect("lookup").expect("held")
        })
        .collect()
}

fn listening(channel: ChannelOptions) -> NodeConfig {
    NodeConfig {
        listen: Some("127.0.0.1:0".parse().expect("address")),
        channel,
        ..NodeConfig::default()
    }
}

/// The node under attack, on a database with some data, and what it held
/// before the attack.
struct Honest {
    dir: TempDir,
    db: Db,
    node: Node,
    address: SocketAddr,
    events: broadcast::Receiver<Event>,
    state: StateHash,
    vector: VersionVector,
}

async fn honest(options: Options, channel: ChannelOptions) -> Honest {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::create(dir.path().join("honest"), options).expect("create");
    write(&db, "honest", 5);
    let node = Node::start(db.clone(), listening(channel))
        .await
        .expect("node");
    let address = node.local_addr().expect("listens");
    // Subscribed before any attack: no event is missed.
    let events = node.events();
    let state = db.state_hash().expect("state hash");
    let vector = db.version_vector().expect("version vector");
    Honest {
        dir,
        db,
        node,
        address,
        events,
        state,
        vector,
    }
}

impl Honest {
    /// The next `PeerError` the node reports about a connection that `about`
    /// picks (by address or key), skipping other events.
    async fn peer_error(
        &mut self,
        about: impl Fn(SocketAddr, Option<Author>) -> bool,
    ) -> Arc<Error> {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(Event::PeerError {
                    address,
                    peer,
                    error,
                })) if about(address, peer) => return error,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => panic!("events: {error}"),
                Err(_) => panic!("no PeerError within {PROMPTLY:?}"),
            }
        }
    }

    /// Checks that the node hangs up on `attacker` (see
    /// [`Attacker::assert_dropped`]), then returns the error it reported.
    /// In this order: the node reports once the connection is closed.
    async fn refused(&mut self, attacker: Attacker, bye: Option<ByeReason>) -> Arc<Error> {
        let author = attacker.author;
        attacker.assert_dropped(bye).await;
        self.peer_error(|_, peer| peer == Some(author)).await
    }

    /// The node shows and holds what it did before the attack (pending
    /// changes aside: they are not state).
    fn assert_unchanged(&self) {
        assert_eq!(self.db.state_hash().expect("state hash"), self.state);
        assert_eq!(
            self.db.version_vector().expect("version vector"),
            self.vector
        );
    }

    /// A new replica with changes of its own syncs once, pinning the node's
    /// key, and both end in one state; then the node shuts down.
    async fn assert_serves_a_new_replica(self) {
        let replica = replica_of(&self.db, &self.dir.path().join("replica"));
        write(&replica, "replica", 3);
        self.assert_serves(&replica).await;
    }

    /// `peer` syncs once with the node, pinning its key; both end in one
    /// state. Then the node shuts down.
    async fn assert_serves(self, peer: &Db) {
        let client = Node::start(peer.clone(), NodeConfig::default())
            .await
            .expect("node");
        let address = self.address.to_string();
        let sync = client.sync_once(&address, Some(self.db.author()));
        let report = tokio::time::timeout(PROMPTLY, sync)
            .await
            .expect("honest sync in time")
            .expect("honest sync");
        client.shutdown().await;
        self.node.shutdown().await;
        assert!(report.changes_sent > 0, "{report:?}");
        assert_eq!(
            peer.state_hash().expect("state hash"),
            self.db.state_hash().expect("state hash")
        );
        assert_eq!(
            peer.version_vector().expect("version vector"),
            self.db.version_vector().expect("version vector")
        );
    }
}

/// A hand-rolled peer on a secure channel, under a fresh identity.
struct Attacker {
    author: Author,
    channel: SecureChannel<TcpStream>,
}

impl Attacker {
    /// Dials and completes the handshake; says nothing yet.
    async fn connect(address: SocketAddr) -> Attacker {
        let identity = Identity::generate();
        let channel = SecureChannel::connect(address, &identity, None, ChannelOptions::default())
            .await
            .expect("handshake");
        Attacker {
            author: identity.author(),
            channel,
        }
    }

    /// Dials and opens a sync session of `database` as the protocol asks:
    /// `Hello` claiming an empty vector, the node's `Hello`, a reconciliation
    /// that lists nothing on our side. The node then streams its catch-up and
    /// reads batches.
    async fn open_sync(address: SocketAddr, database: DatabaseId) -> Attacker {
        let mut attacker = Attacker::connect(address).await;
        let handshake_hash = attacker.channel.handshake_hash();
        attacker
            .send(&Message::Hello(Hello {
                version_min: SYNC_VERSION,
                version_max: SYNC_VERSION,
                database_proof: database_proof(database, &handshake_hash, &attacker.author),
                digest: VersionVector::new().digest(),
                live: false,
            }))
            .await;
        let node = attacker.channel.remote_author();
        match attacker.recv().await {
            Message::Hello(hello) => assert_eq!(
                hello.database_proof,
                database_proof(database, &handshake_hash, &node)
            ),
            other => panic!("expected Hello, got {other:?}"),
        }
        // The dialer starts the reconciliation: it holds nothing.
        attacker
            .send(&Message::Reconcile(vec![Range {
                upper: None,
                kind: RangeKind::Items(Vec::new()),
            }]))
            .await;
        match attacker.recv().await {
            Message::Reconcile(ranges) => assert!(
                ranges.iter().any(
                    |range| matches!(&range.kind, RangeKind::ItemsFinal(items) if !items.is_empty())
                ),
                "{ranges:?}"
            ),
            other => panic!("expected Reconcile, got {other:?}"),
        }
        attacker.send(&Message::Reconcile(Vec::new())).await;
        attacker
    }

    async fn send(&mut self, message: &Message) {
        let bytes = message.encode().expect("encodes");
        self.channel.send(&bytes).await.expect("send");
    }

    async fn recv(&mut self) -> Message {
        let bytes = tokio::time::timeout(PROMPTLY, self.channel.recv())
            .await
            .expect("a message in time")
            .expect("recv");
        Message::decode(&bytes).expect("the node sends well-formed messages")
    }

    /// Writes a frame header announcing `bytes` bytes, then `body`.
    async fn write_raw_frame(&mut self, bytes: usize, body: &[u8]) {
        let mut raw = u32::try_from(bytes).expect("fits").to_be_bytes().to_vec();
        raw.extend_from_slice(body);
        self.channel.test_write_raw(&raw).await.expect("raw write");
    }

    /// Reads until the node hangs up, which it must do within [`PROMPTLY`].
    /// The node's catch-up may come first; `bye` is the last message it
    /// sends (`None`: no `Bye` at all).
    async fn assert_dropped(mut self, bye: Option<ByeReason>) {
        let mut said = None;
        loop {
            let received = tokio::time::timeout(PROMPTLY, self.channel.recv())
                .await
                .unwrap_or_else(|_| panic!("connection still open after {PROMPTLY:?}"));
            match received {
                Ok(bytes) => {
                    let message = Message::decode(&bytes).expect("well-formed");
                    assert_eq!(said, None, "{} after Bye", message.kind());
                    match message {
                        Message::Bye(reason) => said = Some(reason),
                        Message::Changes(_) | Message::CaughtUp { .. } | Message::Keepalive => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
                Err(Error::Closed | Error::Io(_)) => break,
                Err(other) => panic!("expected the node to hang up, got {other}"),
            }
        }
        assert_eq!(said, bye, "the node's last word");
    }
}

/// `count` pseudo-random bytes (splitmix64), so garbage is reproducible.
fn garbage(count: usize, seed: u64) -> Vec<u8> {
    let mut random = peers_tests::SplitMix(seed);
    (0..count)
        .map(|_| random.next_u64().to_le_bytes()[0])
        .collect()
}

/// Connects a bare socket, writes `bytes` (then half-closes if `hang_up`),
/// and waits for the node to close the connection. Returns the socket's
/// address, as the node sees it.
async fn raw_handshake_attack(address: SocketAddr, bytes: &[u8], hang_up: bool) -> SocketAddr {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let local = stream.local_addr().expect("local address");
    stream.write_all(bytes).await.expect("write");
    if hang_up {
        stream.shutdown().await.expect("half-close");
    }
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(PROMPTLY, stream.read(&mut buffer))
        .await
        .expect("the node hangs up in time");
    // The responder speaks only after a valid first message: it sends
    // nothing before it hangs up (EOF, or a reset if it left bytes unread).
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    local
}

/// Bad handshakes on a bare socket (an HTTP request, a Noise message too
/// short to hold a key, an offer of the wrong length, EOF inside a frame, a
/// hang-up, silence) are each reported with their own error and the
/// connection closed, before the node says anything or touches its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_refused() {
    let channel = ChannelOptions {
        handshake_timeout: Duration::from_millis(300),
        ..ChannelOptions::default()
    };
    let mut honest = honest(relaxed(), channel).await;
    let address = honest.address;

    // "GET " read as a frame length is about 1.2 GB: refused from the header.
    let http = b"GET / HTTP/1.1\r\nHost: peers\r\n\r\n";
    let from = raw_handshake_attack(address, http, false).await;
    let error = honest.peer_error(|address, _| address == from).await;
    let announced = u64::from(u32::from_be_bytes(*b"GET "));
    assert!(
        matches!(*error, Error::FrameTooLarge { bytes, max }
            if bytes == announced && max == NOISE_MESSAGE_BYTES_MAX as u64),
        "{error:?}"
    );

    // Message 1 must start with a 32-byte ephemeral key.
    let mut short = 8u32.to_be_bytes().to_vec();
    short.extend(garbage(8, 1));
    let from = raw_handshake_attack(address, &short, false).await;
    let error = honest.peer_error(|address, _| address == from).await;
    assert!(matches!(*error, Error::Noise(_)), "{error:?}");

    // A key, then a 5-byte offer where the protocol has 4.
    let mut long_offer = 37u32.to_be_bytes().to_vec();
    long_offer.extend(garbage(37, 2));
    let from = raw_handshake_attack(address, &long_offer, false).await;
    let error = honest.peer_error(|address, _| address == from).await;
    assert!(
        matches!(
            *error,
            Error::MalformedHandshake {
                message: 1,
                bytes: 5,
                expected: 4
            }
        ),
        "{error:?}"
    );

    // A header for 50 bytes, 3 of them, then EOF.
    let from = raw_handshake_attack(address, &[0, 0, 0, 50, 1, 2, 3], true).await;
    let error = honest.peer_error(|address, _| address == from).await;
    assert!(matches!(*error, Error::Io(_)), "{error:?}");

    // Connects and hangs up at once (a port scan).
    let from = raw_handshake_attack(address, &[], true).await;
    let error = honest.peer_error(|address, _| address == from).await;
    assert!(matches!(*error, Error::Closed), "{error:?}");

    // Says nothing: the handshake times out and frees the slot.
    let from = raw_handshake_attack(address, &[], false).await;
    let error = honest.peer_error(|address, _| address == from).await;
    assert!(
        matches!(
            *error,
            Error::Timeout {
                stage: Stage::Handshake,
                after_ms: 300
            }
        ),
        "{error:?}"
    );

    honest.assert_unchanged();
    honest.assert_serves_a_new_replica().await;
}

/// After the handshake, a frame header over FRAME_BYTES_MAX (its body never
/// sent) is refused as FrameTooLarge as soon as the header arrives, before
/// anything is allocated for it; the node hangs up without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_the_limit_refused() {
    let mut honest = honest(relaxed(), ChannelOptions::default()).await;
    let mut attacker = Attacker::open_sync(honest.address, honest.db.database_id()).await;
    let too_large = FRAME_BYTES_MAX + 1;
    attacker.write_raw_frame(too_large, &[]).await;
    let error = honest.refused(attacker, None).await;
    assert!(
        matches!(*error, Error::FrameTooLarge { bytes, max }
            if bytes == too_large as u64 && max == FRAME_BYTES_MAX as u64),
        "{error:?}"
    );
    honest.assert_unchanged();
    honest.assert_serves_a_new_replica().await;
}

/// Garbage after the handshake, at each layer: bytes that fail Noise
/// authentication (in place of Hello, and mid-session), a frame too short
/// to hold a tag, an encrypted message that is no sync message, a message
/// out of turn, and a batch holding bytes that are no change. Channel-level
/// faults end the connection without a word (the cipher state is lost);
/// protocol faults with Bye(ProtocolViolation) or Bye(RefusedChange).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_handshake_refused() {
    let mut honest = honest(relaxed(), ChannelOptions::default()).await;
    let (address, database) = (honest.address, honest.db.database_id());

    // Noise garbage where Hello should be: the node's Hello is all it says.
    let mut attacker = Attacker::connect(address).await;
    attacker.write_raw_frame(64, &garbage(64, 3)).await;
    match attacker.recv().await {
        Message::Hello(_) => {}
        other => panic!("expected Hello, got {other:?}"),
    }
    let error = honest.refused(attacker, None).await;
    assert!(matches!(*error, Error::Noise(_)), "{error:?}");

    // Noise garbage mid-session.
    let mut attacker = Attacker::open_sync(address, database).await;
    attacker.write_raw_frame(200, &garbage(200, 4)).await;
    let error = honest.refused(attacker, None).await;
    assert!(matches!(*error, Error::Noise(_)), "{error:?}");

    // A frame shorter than one authentication tag.
    let mut attacker = Attacker::open_sync(address, database).await;
    attacker.write_raw_frame(10, &garbage(10, 5)).await;
    let error = honest.refused(attacker, None).await;
    assert!(
        matches!(*error, Error::MalformedFrame { bytes: 10 }),
        "{error:?}"
    );

    // Well encrypted, but no sync message (variant index 255).
    let mut attacker = Attacker::open_sync(address, database).await;
    attacker
        .channel
        .send(&[0xFF, 0xFF, 0xFF])
        .await
        .expect("send");
    let error = honest
        .refused(attacker, Some(ByeReason::ProtocolViolation))
        .await;
    assert!(
        matches!(*error, Error::MalformedMessage { bytes: 3, .. }),
        "{error:?}"
    );

    // A second Hello where batches belong.
    let mut attacker = Attacker::open_sync(address, database).await;
    let hello = Message::Hello(Hello {
        version_min: SYNC_VERSION,
        version_max: SYNC_VERSION,
        database_proof: [0; 32],
        digest: [0; 32],
        live: false,
    });
    attacker.send(&hello).await;
    let error = honest
        .refused(attacker, Some(ByeReason::ProtocolViolation))
        .await;
    assert!(
        matches!(
            *error,
            Error::UnexpectedMessage {
                expected: "Changes",
                found: "Hello"
            }
        ),
        "{error:?}"
    );

    // A batch whose bytes are no change.
    let mut attacker = Attacker::open_sync(address, database).await;
    attacker
        .send(&Message::Changes(vec![garbage(150, 6)]))
        .await;
    let error = honest
        .refused(attacker, Some(ByeReason::RefusedChange))
        .await;
    assert!(
        matches!(
            *error,
            Error::RefusedChange {
                hash: None,
                refusal: Refusal::Malformed(_)
            }
        ),
        "{error:?}"
    );

    honest.assert_unchanged();
    honest.assert_serves_a_new_replica().await;
}

/// A well-formed change whose signature does not verify is refused as
/// BadSignature, naming its hash and author, and the peer is dropped with
/// Bye(RefusedChange). The genuine change is not blacklisted: its author
/// then syncs it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_with_bad_signature_refused() {
    let mut honest = honest(relaxed(), ChannelOptions::default()).await;
    let writer = replica_of(&honest.db, &honest.dir.path().join("writer"));
    sync_into(&honest.db, &writer);
    let genuine = write(&writer, "writer", 1).remove(0);
    let mut forged = genuine.bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;

    let mut attacker = Attacker::open_sync(honest.address, honest.db.database_id()).await;
    attacker.send(&Message::Changes(vec![forged])).await;
    let error = honest
        .refused(attacker, Some(ByeReason::RefusedChange))
        .await;
    assert!(
        matches!(&*error, Error::RefusedChange {
                hash: Some(hash),
                refusal: Refusal::BadSignature { author, .. },
            } if *hash == genuine.hash() && *author == writer.author()),
        "{error:?}"
    );
    honest.assert_unchanged();
    assert!(
        honest
            .db
            .get_change(&genuine.hash())
            .expect("lookup")
            .is_none(),
        "the forged change is not held"
    );
    honest.assert_serves(&writer).await;
}

/// Changes of another database (its genesis and a commit), in a session
/// that claims ours, are refused as WrongDatabase naming both ids; the peer
/// is dropped with Bye(RefusedChange).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_of_another_database_refused() {
    let mut honest = honest(relaxed(), ChannelOptions::default()).await;
    let other = Db::create(honest.dir.path().join("other"), relaxed()).expect("create");
    write(&other, "other", 2);
    let foreign = all_changes(&other);
    assert_eq!(foreign.len(), 3, "genesis and two commits");

    let ours = honest.db.database_id();
    let mut attacker = Attacker::open_sync(honest.address, ours).await;
    let batch = foreign
        .iter()
        .map(|change| change.bytes().to_vec())
        .collect();
    attacker.send(&Message::Changes(batch)).await;
    let error = honest
        .refused(attacker, Some(ByeReason::RefusedChange))
        .await;
    assert!(
        matches!(&*error, Error::RefusedChange {
                hash: Some(hash),
                refusal: Refusal::WrongDatabase { expected, actual },
            } if *hash == foreign[0].hash() && *expected == ours && *actual == other.database_id()),
        "{error:?}"
    );
    honest.assert_unchanged();
    for change in &foreign {
        assert!(
            honest
                .db
                .get_change(&change.hash())
                .expect("lookup")
                .is_none()
        );
    }
    honest.assert_serves_a_new_replica().await;
}

/// A flood of validly signed changes whose predecessors never come (every
/// other change of a writer's chain), in many batches: the flooder's
/// session may park at most its share of the pending set (1/16,
/// `PENDING_SHARES`); while it holds that share, another peer's
/// out-of-order changes still find room and apply; the batch that takes the
/// flooder past its share is refused as PendingFull (naming the share) and
/// the peer dropped with Bye(RefusedChange), and the changes it parked are
/// dropped with it. The state never holds a flooded change; the writer
/// itself then syncs normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_flood_bounded() {
    let options = Options {
        pending_changes_max: PENDING_CHANGES_MAX,
        ..relaxed()
    };
    let quota = PENDING_CHANGES_MAX / peers_net::PENDING_SHARES;
    let mut honest = honest(options, ChannelOptions::default()).await;
    let writer = replica_of(&honest.db, &honest.dir.path().join("writer"));
    sync_into(&honest.db, &writer);
    let chain = write(&writer, "writer", 2 * quota + 40);
    // Seq 2, 4, 6, ...: each waits on the odd seq before it.
    let gapped: Vec<Vec<u8>> = chain
        .iter()
        .skip(1)
        .step_by(2)
        .map(|change| change.bytes().to_vec())
        .collect();
    let batch_changes = 10;
    assert!(gapped.len() > quota + batch_changes);
    let (address, database) = (honest.address, honest.db.database_id());

    let mut attacker = Attacker::open_sync(address, database).await;
    let mut batches = gapped.chunks(batch_changes);
    let mut sent = 0;
    while sent + batch_changes <= quota {
        let batch = batches.next().expect("a batch");
        attacker.send(&Message::Changes(batch.to_vec())).await;
        sent += batch.len();
        // The node applies a batch before reading the next: wait for it.
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        while honest.db.pending_len() < sent {
            assert!(tokio::time::Instant::now() < deadline, "batch not applied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(honest.db.pending_len(), sent);
        honest.assert_unchanged();
    }

    // Another peer's changes, out of order, find room while the flooder
    // holds its share: the second waits, the first releases it.
    let other = replica_of(&honest.db, &honest.dir.path().join("other"));
    sync_into(&honest.db, &other);
    let pair = write(&other, "other", 2);
    let mut peer = Attacker::open_sync(address, database).await;
    peer.send(&Message::Changes(vec![pair[1].bytes().to_vec()]))
        .await;
    peer.send(&Message::Changes(vec![pair[0].bytes().to_vec()]))
        .await;
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while honest
        .db
        .get_change(&pair[1].hash())
        .expect("read")
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other peer's out-of-order changes were not applied"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        honest.db.pending_len(),
        sent,
        "the pair left nothing pending"
    );
    drop(peer);
    honest.state = honest.db.state_hash().expect("state hash");
    honest.vector = honest.db.version_vector().expect("version vector");

    // Past its share: the next batch is refused.
    let overflow = batches.next().expect("a batch");
    attacker.send(&Message::Changes(overflow.to_vec())).await;
    let error = honest
        .refused(attacker, Some(ByeReason::RefusedChange))
        .await;
    assert!(
        matches!(
            &*error,
            Error::RefusedChange {
                hash: Some(_),
                refusal: Refusal::PendingFull { limit },
            } if *limit == quota
        ),
        "{error:?}"
    );
    // The peer was dropped for it, and what it parked went with it: one
    // hostile peer cannot keep the shared pending set full for the others.
    assert_eq!(
        honest.db.pending_len(),
        0,
        "the flooder's changes are dropped"
    );
    honest.assert_unchanged();

    let db = honest.db.clone();
    honest.assert_serves(&writer).await;
    assert_eq!(db.pending_len(), 0);
}

/// In an open database the id is the capability to write, and any TCP peer
/// completes the handshake: so the id must never travel. A stranger that
/// does not know it receives the node's `Hello` (whose proof it cannot
/// check) and `Bye(WrongDatabase)`, and no byte it received contains the
/// id; a stranger that reflects the node's own `Hello` back (a proof made
/// on this very connection) is refused the same way, because a proof names
/// its sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_id_never_travels() {
    let mut honest = honest(relaxed(), ChannelOptions::default()).await;
    let (address, database) = (honest.address, honest.db.database_id());
    let holds_the_id = |bytes: &[u8]| bytes.windows(32).any(|window| window == database.0);

    // A guess.
    let mut attacker = Attacker::connect(address).await;
    let node_hello = attacker.channel.recv().await.expect("the node's Hello");
    assert!(!holds_the_id(&node_hello), "the node's Hello holds the id");
    assert!(matches!(
        Message::decode(&node_hello),
        Ok(Message::Hello(_))
    ));
    attacker
        .send(&Message::Hello(Hello {
            version_min: SYNC_VERSION,
            version_max: SYNC_VERSION,
            database_proof: [0x42; 32],
            digest: VersionVector::new().digest(),
            live: false,
        }))
        .await;
    let error = honest
        .refused(attacker, Some(ByeReason::WrongDatabase))
        .await;
    assert!(matches!(*error, Error::WrongDatabase { .. }), "{error:?}");

    // A reflection.
    let mut attacker = Attacker::connect(address).await;
    let node_hello = attacker.channel.recv().await.expect("the node's Hello");
    assert!(!holds_the_id(&node_hello));
    attacker
        .channel
        .send(&node_hello)
        .await
        .expect("send it back");
    let error = honest
        .refused(attacker, Some(ByeReason::WrongDatabase))
        .await;
    assert!(matches!(*error, Error::WrongDatabase { .. }), "{error:?}");

    honest.assert_unchanged();
    honest.assert_serves_a_new_replica().await;
}

/// One key may hold at most `SESSIONS_PER_KEY_MAX` sessions with a node: a
/// member cannot multiply the catch-ups it makes the node serve. The next
/// connection under the same key gets `Bye(TooManySessions)` right after the
/// handshake, the node reports it, and once one session ends the key is
/// served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_key_are_bounded() {
    let mut honest = honest(relaxed(), ChannelOptions::default()).await;
    let identity = Identity::generate();
    let address = honest.address;
    let connect = || SecureChannel::connect(address, &identity, None, ChannelOptions::default());
    let mut open = Vec::new();
    for _ in 0..peers_net::SESSIONS_PER_KEY_MAX {
        let mut channel = connect().await.expect("handshake");
        // The node's Hello: the session is up.
        let hello = channel.recv().await.expect("Hello");
        assert!(matches!(Message::decode(&hello), Ok(Message::Hello(_))));
        open.push(channel);
    }
    let mut extra = connect().await.expect("handshake");
    let bye = extra.recv().await.expect("a Bye");
    assert_eq!(
        Message::decode(&bye).expect("well-formed"),
        Message::Bye(ByeReason::TooManySessions)
    );
    let error = honest
        .peer_error(|_, peer| peer == Some(identity.author()))
        .await;
    assert!(matches!(*error, Error::TooManySessions { .. }), "{error:?}");

    drop(open.pop());
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let mut again = connect().await.expect("handshake");
        let first = Message::decode(&again.recv().await.expect("a message")).expect("decodes");
        if matches!(first, Message::Hello(_)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key was not served again after a session ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(open);
    honest.assert_unchanged();
    honest.assert_serves_a_new_replica().await;
}

/// Opens an idle TCP connection to `address` from `source` (any 127/8
/// address works on Linux's loopback), which never starts a handshake.
async fn idle_connection(source: std::net::Ipv4Addr, address: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    socket.connect(address).await.expect("connect")
}

/// Whether the node closed `stream` (it reads end of file) within a moment.
async fn closed_by_node(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Idle connections that never finish a handshake cannot starve a node
/// (issue 15, item 6). From one address they hold at most
/// `HANDSHAKES_PER_ADDRESS_MAX` handshakes (the rest are closed at once).
/// From many addresses they fill the `HANDSHAKES_MAX` slots, but a new
/// connection ends the oldest handshake and takes its place, so an honest
/// peer is still served while they stay; and the node's own dials never
/// wait on them (all of these used to share 64 slots, first come first
/// served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_handshakes_starve_neither_honest_peers_nor_dials() {
    use peers_net::{HANDSHAKES_MAX, HANDSHAKES_PER_ADDRESS_MAX};
    use std::net::Ipv4Addr;
    let honest = honest(relaxed(), ChannelOptions::default()).await;

    // One host: 80 idle connections; only the first few stay open.
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle = Vec::new();
    for _ in 0..80 {
        idle.push(idle_connection(attacker, honest.address).await);
    }
    let mut open = 0;
    for stream in &mut idle {
        if !closed_by_node(stream).await {
            open += 1;
        }
    }
    assert_eq!(
        open, HANDSHAKES_PER_ADDRESS_MAX,
        "idle connections left open"
    );

    // Many hosts: every handshake slot taken, and more waiting.
    for host in 0..(2 * HANDSHAKES_MAX / HANDSHAKES_PER_ADDRESS_MAX) {
        let source = Ipv4Addr::new(127, 0, 1 + host as u8, 2);
        for _ in 0..HANDSHAKES_PER_ADDRESS_MAX {
            idle.push(idle_connection(source, honest.address).await);
        }
    }
    // The node still dials: a replica elsewhere syncs with it.
    let other_dir = honest.dir.path().join("dialed");
    let other = replica_of(&honest.db, &other_dir);
    write(&other, "dialed", 2);
    let other_node = Node::start(other.clone(), listening(ChannelOptions::default()))
        .await
        .expect("node");
    let other_address = other_node.local_addr().expect("listens").to_string();
    let report = tokio::time::timeout(
        PROMPTLY,
        honest.node.sync_once(&other_address, Some(other.author())),
    )
    .await
    .expect("a dial does not wait on inbound handshakes")
    .expect("the dial syncs");
    assert_eq!(report.changes_received, 2, "{report:?}");
    other_node.shutdown().await;

    // An honest peer is served while they all stay connected.
    honest.assert_serves_a_new_replica().await;
    drop(idle);
}

/// `Want` (sync version 4) is answered with what the node holds of it and
/// nothing more: a hash it does not hold is skipped, and the answer ends
/// with `CaughtUp` counting what was sent; a `Want` past `WANT_HASHES_MAX`
/// is malformed and drops the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn want_is_answered_with_what_is_held_only() {
    let mut honest = honest(relaxed(), ChannelOptions::default()).await;
    let genesis = peers_engine::ChangeHash(honest.db.database_id().0);
    let mut attacker = Attacker::open_sync(honest.address, honest.db.database_id()).await;
    // The node's catch-up first: every change it holds, then CaughtUp.
    loop {
        match attacker.recv().await {
            Message::Changes(_) | Message::Keepalive => {}
            Message::CaughtUp { .. } => break,
            other => panic!("expected the catch-up, got {other:?}"),
        }
    }
    let unknown = peers_engine::ChangeHash([0xEE; 32]);
    attacker.send(&Message::Want(vec![unknown, genesis])).await;
    let mut answered = Vec::new();
    loop {
        match attacker.recv().await {
            Message::Changes(batch) => answered.extend(batch),
            Message::Keepalive => {}
            Message::CaughtUp { changes } => {
                assert_eq!(changes, 1, "the genesis only");
                break;
            }
            other => panic!("expected the answer, got {other:?}"),
        }
    }
    let answered: Vec<_> = answered
        .iter()
        .map(|bytes| {
            peers_engine::Change::decode(bytes)
                .expect("a change")
                .hash()
        })
        .collect();
    assert_eq!(answered, vec![genesis]);

    let too_many = vec![genesis; peers_net::WANT_HASHES_MAX + 1];
    attacker.send(&Message::Want(too_many)).await;
    let error = honest
        .refused(attacker, Some(ByeReason::ProtocolViolation))
        .await;
    assert!(
        matches!(*error, Error::MalformedMessage { .. }),
        "{error:?}"
    );
    honest.assert_unchanged();
    honest.assert_serves_a_new_replica().await;
}
