//! Scenarios against a real signaling server on 127.0.0.1: exchange, refusals,
//! limits, fan-out, redial after a restart, and the STUN responder.

mod common;

use std::time::Duration;

use common::*;
use peers_signal::{Delivery, Error, Frame, Limits, RefuseReason, ServerConfig, Status, stun};

/// Two clients exchange messages both ways; the server counts them as registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_exchange_both_ways() {
    let server = server(Limits::default()).await;
    let (alice, mut alice_in) = connect(&url(&server), 1).await;
    let (bob, mut bob_in) = connect(&url(&server), 2).await;
    assert!(alice.is_registered() && bob.is_registered());
    assert_eq!(server.clients(), 2);
    assert_eq!(alice.url(), url(&server));

    alice.send(public(2), b"offer").await.expect("delivered");
    assert_eq!(
        next(&mut bob_in).await,
        Delivery::Message {
            from: public(1),
            body: b"offer".to_vec()
        }
    );
    bob.send(public(1), b"answer").await.expect("delivered");
    assert_eq!(
        next(&mut alice_in).await,
        Delivery::Message {
            from: public(2),
            body: b"answer".to_vec()
        }
    );
    for index in 0..20u8 {
        alice.send(public(2), &[index]).await.expect("delivered");
    }
    for index in 0..20u8 {
        assert_eq!(
            next(&mut bob_in).await,
            Delivery::Message {
                from: public(1),
                body: vec![index]
            }
        );
    }
    // Sending to oneself reaches one's own connection.
    alice.send(public(1), b"me").await.expect("delivered");
    assert_eq!(
        next(&mut alice_in).await,
        Delivery::Message {
            from: public(1),
            body: b"me".to_vec()
        }
    );

    alice.close().await;
    assert!(!alice.is_registered());
    assert_eq!(
        alice
            .send(public(2), b"x")
            .await
            .expect_err("closed")
            .to_string(),
        Error::Closed.to_string()
    );
    eventually(
        || server.clients() == 1,
        "the closed client is unregistered",
    )
    .await;
    server.shutdown().await;
}

/// A recipient with no registered connection is an error to the sender, not a queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_is_an_error() {
    let server = server(Limits::default()).await;
    let (alice, _alice_in) = connect(&url(&server), 1).await;
    match alice.send(public(9), b"hello?").await {
        Err(Error::Offline { to }) => assert_eq!(to, public(9)),
        other => panic!("expected Offline, got {other:?}"),
    }
    // Coming online later does not deliver the earlier message.
    let (_bob, mut bob_in) = connect(&url(&server), 9).await;
    nothing_more(&mut bob_in).await;
}

/// A Register signed by another key, one replaying an earlier connection's
/// signature, a weak key, a wrong version and a malformed frame are each refused
/// and the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_registrations_are_refused() {
    let server = server(Limits::default()).await;
    let url = url(&server);

    // Signed by key 2 for key 1.
    let mut raw = Raw::dial(&url).await;
    let nonce = raw.challenge().await;
    raw.send(&Raw::register_frame(public(1), &key(2), &nonce))
        .await;
    assert_eq!(
        raw.next().await,
        Some(Frame::Refused {
            reason: RefuseReason::BadProof
        })
    );
    assert_eq!(raw.next().await, None, "closed after Refused");

    // A valid registration, then its exact frame replayed on a new connection.
    let mut first = Raw::dial(&url).await;
    let nonce = first.challenge().await;
    let genuine = Raw::register_frame(public(1), &key(1), &nonce);
    first.send(&genuine).await;
    assert!(matches!(
        first.next().await,
        Some(Frame::Registered {
            message_bytes_max: 65_536
        })
    ));
    let mut replay = Raw::dial(&url).await;
    let _fresh_nonce = replay.challenge().await;
    replay.send(&genuine).await;
    assert_eq!(
        replay.next().await,
        Some(Frame::Refused {
            reason: RefuseReason::BadProof
        })
    );
    assert_eq!(replay.next().await, None);

    // The identity point as a key id (a small-order key: any signature "verifies" loosely).
    let mut weak = Raw::dial(&url).await;
    let _ = weak.challenge().await;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut signature = [0u8; 64];
    signature[0] = 1;
    weak.send(&Frame::Register {
        version: 1,
        key: identity,
        signature,
    })
    .await;
    assert_eq!(
        weak.next().await,
        Some(Frame::Refused {
            reason: RefuseReason::BadProof
        })
    );

    // A later version, and something that is not a Register.
    let mut version = Raw::dial(&url).await;
    let nonce = version.challenge().await;
    let mut bytes = Raw::register_frame(public(3), &key(3), &nonce).encode();
    bytes[1] = 2;
    version.send_bytes(bytes).await;
    assert_eq!(
        version.next().await,
        Some(Frame::Refused {
            reason: RefuseReason::UnsupportedVersion
        })
    );
    let mut malformed = Raw::dial(&url).await;
    let _ = malformed.challenge().await;
    malformed
        .send(&Frame::Send {
            id: 1,
            to: public(1),
            payload: vec![],
        })
        .await;
    assert_eq!(
        malformed.next().await,
        Some(Frame::Refused {
            reason: RefuseReason::Malformed
        })
    );

    assert_eq!(server.clients(), 1, "only the genuine registration counts");
}

/// A client that never registers is refused with Timeout when the registration timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_times_out() {
    let server = server(Limits {
        registration_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut raw = Raw::dial(&url(&server)).await;
    let _ = raw.challenge().await;
    assert_eq!(
        raw.next().await,
        Some(Frame::Refused {
            reason: RefuseReason::Timeout
        })
    );
    assert_eq!(raw.next().await, None);
}

/// A frame over the limit gets Result(TooLarge); one over twice the limit closes
/// the connection; the client refuses a too-large body before sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused() {
    let limits = Limits {
        message_bytes_max: 4096,
        ..Limits::default()
    };
    let server = server(limits).await;
    let url = url(&server);
    let (_bob, mut bob_in) = connect(&url, 2).await;

    let mut raw = Raw::registered(&url, 1).await;
    raw.send(&Frame::Send {
        id: 1,
        to: public(2),
        payload: vec![0; 4096],
    })
    .await;
    assert_eq!(
        raw.next().await,
        Some(Frame::Result {
            id: 1,
            status: Status::TooLarge
        })
    );
    raw.send(&Frame::Send {
        id: 2,
        to: public(2),
        payload: vec![0; 4096 - 41],
    })
    .await;
    assert_eq!(
        raw.next().await,
        Some(Frame::Result {
            id: 2,
            status: Status::Delivered
        })
    );
    assert!(
        matches!(next(&mut bob_in).await, Delivery::Rejected { .. }),
        "zeros are not a sealed payload"
    );
    raw.send(&Frame::Send {
        id: 3,
        to: public(2),
        payload: vec![0; 3 * 4096],
    })
    .await;
    assert_eq!(raw.next().await, None, "closed");

    let (alice, _alice_in) = connect(&url, 1).await;
    match alice.send(public(2), &[0; 4096]).await {
        Err(Error::TooLarge { bytes, max: 4096 }) => assert!(bytes > 4096),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    alice
        .send(public(2), &[0; 4096 - 41 - 169])
        .await
        .expect("the largest body that fits");
}

/// A flooding client gets RateLimited; another client's sends are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_is_rate_limited() {
    // A queue deeper than the burst, so the recipient is never Busy here.
    let limits = Limits {
        messages_per_second: 1,
        burst: 20,
        deliveries_queued: 64,
        ..Limits::default()
    };
    let server = server(limits).await;
    let url = url(&server);
    let (flooder, _flooder_in) = connect(&url, 1).await;
    let (_bob, mut bob_in) = connect(&url, 2).await;
    let (carol, _carol_in) = connect(&url, 3).await;

    let mut sends = tokio::task::JoinSet::new();
    for index in 0..100u8 {
        let flooder = flooder.clone();
        sends.spawn(async move { flooder.send(public(2), &[index]).await });
    }
    let (mut delivered, mut limited) = (0, 0);
    while let Some(result) = sends.join_next().await {
        match result.expect("task") {
            Ok(()) => delivered += 1,
            Err(Error::RateLimited) => limited += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!((20..25).contains(&delivered), "delivered {delivered}");
    assert_eq!(delivered + limited, 100);
    carol
        .send(public(2), b"still fine")
        .await
        .expect("another client is not limited");
    let mut from_carol = false;
    for _ in 0..delivered + 1 {
        if let Delivery::Message { from, .. } = next(&mut bob_in).await {
            from_carol |= from == public(3);
        }
    }
    assert!(from_carol);
}

/// Connections per IP are limited; a refused client learns why; a slot frees on close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_are_limited() {
    let server = server(Limits {
        connections_per_ip: 3,
        ..Limits::default()
    })
    .await;
    let url = url(&server);
    let mut clients = Vec::new();
    for seed in 1..=3 {
        clients.push(connect(&url, seed).await);
    }
    match peers_signal::Client::connect(&url, key(4)).await {
        Err(Error::Refused {
            reason: RefuseReason::TooManyConnections,
        }) => {}
        other => panic!("expected TooManyConnections, got {other:?}"),
    }
    clients[0].0.close().await;
    eventually(|| server.clients() == 2, "a closed client frees its slot").await;
    let mut admitted = false;
    for _ in 0..50 {
        if peers_signal::Client::connect(&url, key(4)).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted);
}

/// Up to four connections register one key and each gets every delivery; a fifth is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_registers_four_times_and_fans_out() {
    let server = server(Limits::default()).await;
    let url = url(&server);
    let mut bobs = Vec::new();
    for _ in 0..4 {
        bobs.push(connect(&url, 2).await);
    }
    match peers_signal::Client::connect(&url, key(2)).await {
        Err(Error::Refused {
            reason: RefuseReason::TooManyRegistrations,
        }) => {}
        other => panic!("expected TooManyRegistrations, got {other:?}"),
    }
    let (alice, _alice_in) = connect(&url, 1).await;
    alice
        .send(public(2), b"to all of bob")
        .await
        .expect("delivered");
    for (_, incoming) in &mut bobs {
        assert_eq!(
            next(incoming).await,
            Delivery::Message {
                from: public(1),
                body: b"to all of bob".to_vec()
            }
        );
    }
    assert_eq!(server.clients(), 5);
}

/// When the server restarts on the same port the client redials, registers again and sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_redials_after_server_restart() {
    let first = server(Limits::default()).await;
    let address = first.local_addr();
    let url = url(&first);
    let (alice, _alice_in) = connect(&url, 1).await;
    let (bob, mut bob_in) = connect(&url, 2).await;
    first.shutdown().await;
    eventually(
        || !alice.is_registered() && !bob.is_registered(),
        "clients notice the server is gone",
    )
    .await;
    assert!(matches!(
        alice.send(public(2), b"x").await,
        Err(Error::Disconnected)
    ));

    let second = peers_signal::Server::start(ServerConfig::new(address))
        .await
        .expect("same port again");
    eventually(
        || alice.is_registered() && bob.is_registered(),
        "clients register again",
    )
    .await;
    assert_eq!(second.clients(), 2);
    alice
        .send(public(2), b"after restart")
        .await
        .expect("delivered");
    assert_eq!(
        next(&mut bob_in).await,
        Delivery::Message {
            from: public(1),
            body: b"after restart".to_vec()
        }
    );
}

/// The STUN responder answers a Binding request with the request's source address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_responder_reports_the_source_address() {
    let config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"))
        .with_stun("127.0.0.1:0".parse().expect("addr"));
    let server = peers_signal::Server::start(config).await.expect("server");
    let stun_addr = server.stun_addr().expect("a STUN responder");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    // Garbage is ignored (no answer), a Binding request is answered.
    socket
        .send_to(b"not stun at all, but 20+ bytes long", stun_addr)
        .await
        .expect("send");
    let (transaction, request) = stun::binding_request();
    socket.send_to(&request, stun_addr).await.expect("send");
    let mut buffer = [0u8; 1500];
    let (length, from) = tokio::time::timeout(WAIT, socket.recv_from(&mut buffer))
        .await
        .expect("an answer")
        .expect("recv");
    assert_eq!(from, stun_addr);
    assert_eq!(
        stun::binding_response(&buffer[..length], &transaction),
        Some(socket.local_addr().expect("addr"))
    );
    server.shutdown().await;
}

/// A URL that is not ws:// and a server that is not there are clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_clear_errors() {
    for url in ["wss://example.invalid", "http://127.0.0.1:1"] {
        match peers_signal::Client::connect(url, key(1)).await {
            Err(Error::Url { .. }) => {}
            other => panic!("{url}: expected Url, got {other:?}"),
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = format!("ws://{}", listener.local_addr().expect("addr"));
    drop(listener);
    match peers_signal::Client::connect(&closed, key(1)).await {
        Err(error @ Error::Connect { .. }) => {
            assert!(error.to_string().contains("check the address"))
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}
