//! Invites by ticket (issue 12): a new device joins a members-only database
//! with nothing but a ticket, over TCP or over WebRTC through signaling, and
//! every way a redemption can be wrong is refused with its reason.

use std::time::Duration;

use peers_engine::{Db, Role, Value};
use peers_net::invite::{InviteError, InviteOptions, Ticket};
use peers_net::webrtc::{RefuseReason, WebRtcConfig};
use peers_net::{ByeReason, Error, Node, NodeConfig};
use peers_signal::{Server, ServerConfig};
use peers_tests::members_only;

const TABLE: &str = "notes";

/// The owner's replica with a few rows, and its node listening on loopback.
async fn inviter(dir: &std::path::Path) -> (Db, Node) {
    let db = Db::create(dir.join("owner"), members_only()).expect("create");
    for index in 0..5 {
        let mut tx = db.transaction();
        tx.set(TABLE, &format!("r{index}"), "text", format!("row {index}"));
        tx.commit().expect("commit");
    }
    let config = NodeConfig {
        listen: Some("127.0.0.1:0".parse().expect("address")),
        ..NodeConfig::default()
    };
    let node = Node::start(db.clone(), config).await.expect("node");
    (db, node)
}

/// A new device: a replica created from the ticket's database id, and a
/// node that listens nowhere.
async fn joiner(
    dir: &std::path::Path,
    name: &str,
    ticket: &Ticket,
    config: NodeConfig,
) -> (Db, Node) {
    let db = Db::join(dir.join(name), ticket.database, members_only()).expect("join");
    let node = Node::start(db.clone(), config).await.expect("node");
    (db, node)
}

fn tcp_invite(node: &Node, role: Role, uses: u32) -> Ticket {
    node.invite(&InviteOptions {
        role,
        uses,
        addresses: vec![node.local_addr().expect("listens")],
        ..InviteOptions::default()
    })
    .expect("invite")
}

fn bye(result: peers_net::Result<peers_net::SyncReport>) -> ByeReason {
    match result {
        Err(Error::PeerBye { reason }) => reason,
        other => panic!("expected the inviter's Bye, got {other:?}"),
    }
}

/// The join story over TCP: the joiner gets the role and every row in its
/// first sync, writes, and its write reaches the inviter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_joins_by_ticket_and_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (owner, node) = inviter(dir.path()).await;
    let ticket = Ticket::decode(&tcp_invite(&node, Role::Writer, 1).encode()).expect("decodes");
    let (db, device) = joiner(dir.path(), "phone", &ticket, NodeConfig::default()).await;
    let report = device.redeem(&ticket).await.expect("redeems");
    assert_eq!(report.peer, Some(owner.author()));
    // Genesis, five rows, and the grant.
    assert_eq!(report.changes_received, 7, "{report:?}");
    assert_eq!(db.role_of(&db.author()), Some(Role::Writer));
    assert_eq!(owner.role_of(&db.author()), Some(Role::Writer));
    assert_eq!(
        db.get_field(TABLE, "r4", "text").expect("read"),
        Some(Value::from("row 4"))
    );
    let mut tx = db.transaction();
    tx.set(TABLE, "from-phone", "text", "hello");
    tx.commit().expect("a writer writes");
    let address = node.local_addr().expect("listens").to_string();
    device
        .sync_once(&address, Some(owner.author()))
        .await
        .expect("a member syncs");
    assert_eq!(
        owner.get_field(TABLE, "from-phone", "text").expect("read"),
        Some(Value::from("hello"))
    );
    // Redeeming again after the grant (a joiner whose first session broke)
    // is a plain sync: the Redeem is ignored, no use is spent.
    device
        .redeem(&ticket)
        .await
        .expect("a member redeems again");
    device.shutdown().await;
    node.shutdown().await;
}

/// Each refusal, with the reason the joiner is told, and nothing granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_expired_and_forged_tickets_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (owner, node) = inviter(dir.path()).await;

    // Used: two uses, two devices, the third is refused.
    let ticket = tcp_invite(&node, Role::Reader, 2);
    for name in ["one", "two"] {
        let (db, device) = joiner(dir.path(), name, &ticket, NodeConfig::default()).await;
        device.redeem(&ticket).await.expect("a use left");
        assert_eq!(owner.role_of(&db.author()), Some(Role::Reader));
        device.shutdown().await;
    }
    let (db, device) = joiner(dir.path(), "three", &ticket, NodeConfig::default()).await;
    assert_eq!(bye(device.redeem(&ticket).await), ByeReason::InviteUsed);
    assert_eq!(owner.role_of(&db.author()), None);

    // Forged: another secret names no invite.
    let mut forged = tcp_invite(&node, Role::Writer, 1);
    forged.secret[0] ^= 1;
    assert_eq!(bye(device.redeem(&forged).await), ByeReason::InviteUnknown);

    // Expired at the inviter, even when the ticket claims otherwise.
    let mut expired = node
        .invite(&InviteOptions {
            expires: Duration::from_millis(200),
            addresses: vec![node.local_addr().expect("listens")],
            ..InviteOptions::default()
        })
        .expect("invite");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        matches!(
            device.redeem(&expired).await,
            Err(Error::InviteRefused { .. })
        ),
        "the joiner sees the expiry before dialing"
    );
    expired.expires_ms = u64::MAX;
    assert_eq!(bye(device.redeem(&expired).await), ByeReason::InviteExpired);

    // Without any ticket, a stranger is still a stranger.
    let address = node.local_addr().expect("listens").to_string();
    assert_eq!(
        bye(device.sync_once(&address, None).await),
        ByeReason::NotAMember
    );
    assert_eq!(owner.role_of(&db.author()), None);
    device.shutdown().await;
    node.shutdown().await;
}

/// Who may invite: the owner any role, an admin readers and writers, a
/// writer nobody; and a ticket must say how to reach the inviter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_those_who_may_grant_can_invite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_owner, node) = inviter(dir.path()).await;
    let nowhere = node.invite(&InviteOptions::default());
    assert!(
        matches!(nowhere, Err(InviteError::NoWayToReach)),
        "{nowhere:?}"
    );
    let owner_grants_owner = node.invite(&InviteOptions {
        role: Role::Owner,
        addresses: vec![node.local_addr().expect("listens")],
        ..InviteOptions::default()
    });
    assert!(matches!(
        owner_grants_owner,
        Err(InviteError::CannotGrant { .. })
    ));
    let admin = tcp_invite(&node, Role::Admin, 1);
    let writer = tcp_invite(&node, Role::Writer, 1);
    let (admin_db, admin_node) = joiner(dir.path(), "admin", &admin, NodeConfig::default()).await;
    admin_node.redeem(&admin).await.expect("admin joins");
    let (writer_db, writer_node) =
        joiner(dir.path(), "writer", &writer, NodeConfig::default()).await;
    writer_node.redeem(&writer).await.expect("writer joins");
    let reach = vec!["127.0.0.1:9".parse().expect("address")];
    let ask = |role| InviteOptions {
        role,
        addresses: reach.clone(),
        ..InviteOptions::default()
    };
    assert!(admin_node.invite(&ask(Role::Writer)).is_ok());
    assert!(matches!(
        admin_node.invite(&ask(Role::Admin)),
        Err(InviteError::CannotGrant { .. })
    ));
    assert!(matches!(
        writer_node.invite(&ask(Role::Reader)),
        Err(InviteError::CannotGrant { .. })
    ));
    drop((admin_db, writer_db));
    admin_node.shutdown().await;
    writer_node.shutdown().await;
    node.shutdown().await;
}

/// Over WebRTC: the inviter listens nowhere on TCP, the ticket names only a
/// signaling server; a Join offer passes the gate with an open invite, and a
/// forged one is refused before any socket is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_through_signaling_only() {
    let server = Server::start(ServerConfig::new("127.0.0.1:0".parse().expect("address")))
        .await
        .expect("signaling server");
    let url = format!("ws://{}", server.local_addr());
    let by_key = || NodeConfig {
        signal: vec![url.clone()],
        webrtc: WebRtcConfig {
            interfaces: Some(vec!["127.0.0.1".parse().expect("ip")]),
            stun_servers: Vec::new(),
        },
        ..NodeConfig::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let owner = Db::create(dir.path().join("owner"), members_only()).expect("create");
    let mut tx = owner.transaction();
    tx.set(TABLE, "r", "text", "behind NAT");
    tx.commit().expect("commit");
    let node = Node::start(owner.clone(), by_key()).await.expect("node");
    let ticket = node.invite(&InviteOptions::default()).expect("invite");
    assert_eq!(ticket.signal, vec![url.clone()], "the node's servers");
    assert!(ticket.addresses.is_empty());

    let mut forged = ticket.clone();
    forged.secret[5] ^= 0x40;
    let (db, device) = joiner(dir.path(), "phone", &ticket, by_key()).await;
    match device.redeem(&forged).await {
        Err(Error::Refused { reason, .. }) => assert_eq!(reason, RefuseReason::InviteUnknown),
        other => panic!("expected a refused offer, got {other:?}"),
    }
    let report = device.redeem(&ticket).await.expect("joins over WebRTC");
    assert_eq!(report.changes_received, 3, "genesis, the row, the grant");
    assert_eq!(db.role_of(&db.author()), Some(Role::Writer));
    assert_eq!(
        db.get_field(TABLE, "r", "text").expect("read"),
        Some(Value::from("behind NAT"))
    );
    device.shutdown().await;
    node.shutdown().await;
    server.shutdown().await;
}
