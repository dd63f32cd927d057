//! Sync is gated by membership (issue 5): a stranger's connection ends right
//! after the handshake with `Bye(NotAMember)` and nothing else; a live
//! session with a key that gets revoked ends at the revocation; and a
//! revoked writer's later change never reaches a third peer through an
//! honest one.

use std::time::Duration;

use peers_engine::{Db, Identity, Options, Role};
use peers_net::{
    ByeReason, ChannelOptions, Error, Event, Message, Node, NodeConfig, SecureChannel,
};
use peers_tests::members_only;

fn listening() -> NodeConfig {
    NodeConfig {
        listen: Some("127.0.0.1:0".parse().expect("address")),
        ..NodeConfig::default()
    }
}

/// A replica of `owner`'s database for `identity`, holding its genesis.
fn member(owner: &Db, dir: &std::path::Path, identity: Identity) -> Db {
    let db = Db::join(
        dir,
        owner.database_id(),
        Options {
            identity: Some(identity),
            ..members_only()
        },
    )
    .expect("join");
    let genesis = owner
        .get_change(&peers_engine::ChangeHash(owner.database_id().0))
        .expect("read")
        .expect("genesis");
    db.apply(vec![genesis]).expect("genesis");
    db
}

/// Whether a node reports, within 10 s, a `PeerError` that `wanted` picks
/// (other events are skipped).
async fn peer_error(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    wanted: impl Fn(&Error) -> bool,
) -> bool {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(Event::PeerError { error, .. }) if wanted(&error) => return,
                Ok(_) => {}
                Err(error) => panic!("events ended: {error}"),
            }
        }
    })
    .await;
    found.is_ok()
}

/// The peer ended the session because our key holds no role.
fn assert_told_not_a_member(error: &Error) {
    assert!(
        matches!(
            error,
            Error::PeerBye {
                reason: ByeReason::NotAMember
            }
        ),
        "{error}"
    );
}

async fn sync_once(db: &Db, address: &str) -> Result<peers_net::SyncReport, Error> {
    let node = Node::start(db.clone(), NodeConfig::default())
        .await
        .expect("node");
    let result = node.sync_once(address, None).await;
    node.shutdown().await;
    result
}

/// A stranger (a valid identity, no role) that completes the handshake gets
/// `Bye(NotAMember)` as the first and only message: no Hello, no digest, no
/// change; then the connection closes. Through the Node API it is the typed
/// `PeerBye { NotAMember }`, and the stranger's replica stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_gets_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let owner = Db::create(dir.path().join("owner"), members_only()).expect("create");
    let mut tx = owner.transaction();
    tx.set("notes", "secret", "text", "members only");
    tx.commit().expect("commit");
    let node = Node::start(owner.clone(), listening()).await.expect("node");
    let address = node.local_addr().expect("listens");

    let stranger = Identity::generate();
    let mut channel = SecureChannel::connect(address, &stranger, None, ChannelOptions::default())
        .await
        .expect("the handshake itself succeeds");
    let first = Message::decode(&channel.recv().await.expect("one message")).expect("decodes");
    assert_eq!(first, Message::Bye(ByeReason::NotAMember));
    assert!(
        matches!(channel.recv().await, Err(Error::Closed | Error::Io(_))),
        "then the connection ends"
    );

    let replica = Db::join(
        dir.path().join("stranger"),
        owner.database_id(),
        members_only(),
    )
    .expect("join");
    let error = sync_once(&replica, &address.to_string())
        .await
        .expect_err("refused");
    assert_told_not_a_member(&error);
    assert!(replica.version_vector().expect("vector").is_empty());
    assert_eq!(replica.get_row("notes", "secret").expect("read"), None);
    node.shutdown().await;
}

/// A writer live-connected to the owner is disconnected when the owner
/// revokes it; its change written afterwards is refused at the gate, held
/// inert if it reaches the owner another way, and never forwarded to a
/// third member that syncs with the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_writer_is_cut_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let owner = Db::create(dir.path().join("owner"), members_only()).expect("create");
    let (b_key, c_key) = (Identity::generate(), Identity::generate());
    owner.grant(b_key.author(), Role::Writer).expect("grant b");
    owner.grant(c_key.author(), Role::Writer).expect("grant c");
    let b = member(&owner, &dir.path().join("b"), b_key);
    let c = member(&owner, &dir.path().join("c"), c_key);
    let node = Node::start(owner.clone(), listening()).await.expect("node");
    let address = node.local_addr().expect("listens").to_string();
    let mut owner_events = node.events();

    let b_node = Node::start(b.clone(), NodeConfig::default())
        .await
        .expect("node");
    let mut b_events = b_node.events();
    b_node
        .connect(&address, Some(owner.author()))
        .await
        .expect("dial");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.role_of(&b.author()) != Some(Role::Writer) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never got its grant"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tx = b.transaction();
    tx.set("notes", "from-b", "text", "before the revocation");
    tx.commit().expect("b writes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while owner.get_row("notes", "from-b").expect("read").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b's write never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    owner.revoke(b.author()).expect("revoke");
    // The owner's side ends the session with NotAMember.
    assert!(
        peer_error(&mut owner_events, |error| matches!(
            error,
            Error::NotAMember { .. }
        ))
        .await,
        "the revoked peer was not disconnected"
    );
    let told = peer_error(&mut b_events, |error| {
        matches!(
            error,
            Error::PeerBye {
                reason: ByeReason::NotAMember
            }
        )
    })
    .await;
    assert!(told, "b was told why");
    b_node.shutdown().await;

    // b does not know yet that it is revoked, and writes on.
    let mut tx = b.transaction();
    tx.set("notes", "late", "text", "after the revocation");
    let late = tx.commit().expect("b's replica does not know yet");
    let error = sync_once(&b, &address).await.expect_err("gate");
    assert_told_not_a_member(&error);
    // The change reaches the owner another way (a file): held inert.
    let late_change = b.get_change(&late).expect("read").expect("held");
    let report = owner.apply(vec![late_change]).expect("apply");
    assert_eq!(report.inert, vec![late], "{report:?}");
    assert_eq!(owner.get_row("notes", "late").expect("read"), None);

    // c syncs with the owner: gets b's valid write and the revocation, never
    // the late change.
    sync_once(&c, &address).await.expect("c is a member");
    assert!(c.get_row("notes", "from-b").expect("read").is_some());
    assert_eq!(c.get_change(&late).expect("read"), None);
    assert_eq!(c.role_of(&b.author()), None);
    assert_eq!(
        c.state_hash().expect("hash"),
        owner.state_hash().expect("hash")
    );
    assert!(owner.verify(&mut |_, _| {}).expect("verify").ok());
    node.shutdown().await;
}

/// A revocation in the middle of a burst stops the push at once: an admin's
/// write, its revocation of a live reader and a later write reach the owner
/// in one apply, and the reader's session, which drains the burst in one
/// go, sends none of it. Only the first change of a burst used to be
/// checked, so the reader received the write made after its revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_inside_a_burst_stops_the_push() {
    let dir = tempfile::tempdir().expect("temp dir");
    let owner = Db::create(dir.path().join("owner"), members_only()).expect("create");
    let (admin_key, reader_key) = (Identity::generate(), Identity::generate());
    owner
        .grant(admin_key.author(), Role::Admin)
        .expect("grant admin");
    owner
        .grant(reader_key.author(), Role::Reader)
        .expect("grant reader");
    let admin = member(&owner, &dir.path().join("admin"), admin_key);
    peers_tests::sync_into(&owner, &admin);
    let reader = member(&owner, &dir.path().join("reader"), reader_key);

    let node = Node::start(owner.clone(), listening()).await.expect("node");
    let address = node.local_addr().expect("listens").to_string();
    let mut owner_events = node.events();
    let reader_node = Node::start(reader.clone(), NodeConfig::default())
        .await
        .expect("node");
    reader_node
        .connect(&address, Some(owner.author()))
        .await
        .expect("dial");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reader.role_of(&reader.author()) != Some(Role::Reader) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reader never caught up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let before = peers_tests::all_changes(&admin).len();
    let mut tx = admin.transaction();
    tx.set("notes", "n1", "text", "before the revocation");
    tx.commit().expect("write");
    admin.revoke(reader.author()).expect("revoke");
    let mut tx = admin.transaction();
    tx.set("notes", "n2", "text", "after the revocation");
    let after = tx.commit().expect("write");
    let burst: Vec<_> = peers_tests::all_changes(&admin)
        .into_iter()
        .skip(before)
        .collect();
    assert_eq!(burst.len(), 3);
    let report = owner.apply(burst).expect("apply");
    assert_eq!(report.accepted.len(), 3, "{report:?}");

    assert!(
        peer_error(&mut owner_events, |error| matches!(
            error,
            Error::NotAMember { .. }
        ))
        .await,
        "the revoked reader was not disconnected"
    );
    reader_node.shutdown().await;
    assert_eq!(
        reader.get_change(&after).expect("read"),
        None,
        "a change applied after the revocation reached the revoked reader"
    );
    assert_eq!(reader.get_row("notes", "n2").expect("read"), None);
    node.shutdown().await;
}

/// A change delivered without what it names still gets it (PROTOCOL.md
/// "Want"). Key K forks: X holds branch A up to seq 3, S holds branch B up
/// to seq 2 and writes a change naming it. In one session S sends its change
/// but not branch B (X is ahead on K with a head S cannot place, so S
/// cannot tell a longer copy of its chain from a fork); X parks the change,
/// asks for what it waits on, gets branch B, finds the fork and applies
/// nothing of K past it. Without `Want`, X would wait for ever: a delivered
/// change is never sent again with what it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_change_gets_what_it_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let owner = Db::create(dir.path().join("owner"), members_only()).expect("create");
    let (k, s_key, x_key) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    for key in [&k, &s_key, &x_key] {
        owner.grant(key.author(), Role::Writer).expect("grant");
    }
    let replica = |name: &str, identity: &Identity| {
        let db = member(&owner, &dir.path().join(name), identity.clone());
        peers_tests::sync_into(&owner, &db);
        db
    };
    let (branch_a, branch_b) = (replica("k-a", &k), replica("k-b", &k));
    let (s, x) = (replica("s", &s_key), replica("x", &x_key));
    for seq in 0..3 {
        let mut tx = branch_a.transaction();
        tx.set("notes", "a", "n", seq);
        tx.commit().expect("branch A");
    }
    for seq in 0..2 {
        let mut tx = branch_b.transaction();
        tx.set("notes", "b", "n", seq);
        tx.commit().expect("branch B");
    }
    peers_tests::sync_into(&branch_a, &x);
    peers_tests::sync_into(&branch_b, &s);
    let mut tx = s.transaction();
    tx.set("notes", "s", "n", 1);
    let named = tx.commit().expect("s writes, naming branch B");

    let node = Node::start(s.clone(), listening()).await.expect("node");
    let address = node.local_addr().expect("listens").to_string();
    sync_once(&x, &address).await.expect("one session");
    node.shutdown().await;

    assert_eq!(x.pending_len(), 0, "x waits on {:?}", x.missing());
    assert!(
        x.get_change(&named).expect("lookup").is_some(),
        "S's change is held"
    );
    assert_eq!(x.fork_cut(&k.author()), Some(0), "K is cut below its fork");
}
