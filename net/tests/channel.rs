//! Secure channel scenarios over real 127.0.0.1 sockets and in-memory duplex
//! pipes: honest round trips, pinning, forged proofs, garbage, oversized
//! frames and silent peers. Every hostile case must be a typed error, never a
//! panic or a hang.

use std::time::Duration;

use peers_engine::Identity;
use peers_net::{ChannelOptions, Error, FRAME_BYTES_MAX, MESSAGE_BYTES_MAX, SecureChannel, Stage};
use tokio::io::{AsyncWriteExt, DuplexStream, duplex};
use tokio::net::TcpListener;

const PIPE_BYTES: usize = 64 * 1024;

fn short_timeouts() -> ChannelOptions {
    ChannelOptions {
        handshake_timeout: Duration::from_millis(300),
        recv_timeout: Duration::from_millis(300),
        send_timeout: Duration::from_millis(300),
    }
}

/// Handshakes both ends of a duplex pipe concurrently.
async fn pair(
    initiator: &Identity,
    responder: &Identity,
) -> (SecureChannel<DuplexStream>, SecureChannel<DuplexStream>) {
    let (a, b) = duplex(PIPE_BYTES);
    let options = ChannelOptions::default();
    let (dialer, listener) = tokio::join!(
        SecureChannel::initiate(a, initiator, Some(responder.author()), options),
        SecureChannel::accept(b, responder, options),
    );
    (dialer.expect("initiator"), listener.expect("responder"))
}

fn pattern(bytes: usize, seed: u8) -> Vec<u8> {
    (0..bytes)
        .map(|index| (index as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Messages of every size class (empty, one byte, both sides of a chunk
/// boundary, the maximum) arrive intact and in order, in both directions.
/// (`send` and `recv` take `&mut self`, so each direction runs as its own
/// phase: a peer must read while the other writes a large message.)
#[tokio::test]
async fn round_trip_both_ways_over_duplex() {
    let alice = Identity::generate();
    let bob = Identity::generate();
    let (mut a, mut b) = pair(&alice, &bob).await;
    assert_eq!(a.remote_author(), bob.author());
    assert_eq!(b.remote_author(), alice.author());
    let sizes = [0, 1, 65_515, 65_516, 200_000, MESSAGE_BYTES_MAX];
    for seed in 0..2u8 {
        let (sender, receiver) = if seed == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let messages: Vec<Vec<u8>> = sizes.iter().map(|&n| pattern(n, seed)).collect();
        let send_all = async {
            for message in &messages {
                sender.send(message).await.expect("sends");
            }
        };
        let receive_all = async {
            let mut got = Vec::new();
            for _ in 0..messages.len() {
                got.push(receiver.recv().await.expect("receives"));
            }
            got
        };
        let ((), got) = tokio::join!(send_all, receive_all);
        assert_eq!(got, messages, "direction {seed}");
    }
}

/// Over real TCP each side learns the other's identity, a pinned dialer
/// accepts the right key, and messages flow both ways.
#[tokio::test]
async fn tcp_round_trip_and_remote_author() {
    let alice = Identity::generate();
    let bob = Identity::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let bob_server = bob.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut channel = SecureChannel::accept(stream, &bob_server, ChannelOptions::default())
            .await
            .expect("responder handshake");
        for _ in 0..3 {
            let message = channel.recv().await.expect("server receives");
            channel.send(&message).await.expect("server echoes");
        }
        channel.remote_author()
    });
    let options = ChannelOptions::default();
    let mut channel = SecureChannel::connect(address, &alice, Some(bob.author()), options)
        .await
        .expect("initiator handshake");
    assert_eq!(channel.remote_author(), bob.author());
    assert_eq!(channel.version(), peers_net::CHANNEL_VERSION);
    for message in [b"one".to_vec(), pattern(300_000, 9), Vec::new()] {
        channel.send(&message).await.expect("client sends");
        assert_eq!(channel.recv().await.expect("client receives"), message);
    }
    assert_eq!(server.await.expect("server task"), alice.author());
}

/// A dialer that pins a key refuses a responder proving another one, and
/// the responder sees the connection dropped.
#[tokio::test]
async fn wrong_pinned_key_is_refused() {
    let alice = Identity::generate();
    let bob = Identity::generate();
    let mallory = Identity::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        SecureChannel::accept(stream, &mallory, short_timeouts()).await
    });
    let refused = SecureChannel::connect(address, &alice, Some(bob.author()), short_timeouts())
        .await
        .expect_err("refused");
    match refused {
        Error::UnexpectedKey { expected, actual } => {
            assert_eq!(expected, bob.author());
            assert_ne!(actual, bob.author());
        }
        other => panic!("expected UnexpectedKey, got {other:?}"),
    }
    let server_side = server.await.expect("server task").expect_err("dropped");
    assert!(
        matches!(server_side, Error::Closed | Error::Io(_)),
        "responder sees a dropped connection, got {server_side:?}"
    );
}

/// A peer that claims an identity but signs its static key with another key
/// is refused, whichever side it plays.
#[tokio::test]
async fn forged_identity_proof_is_refused() {
    let honest = Identity::generate();
    let claimed = Identity::generate();
    let forger = Identity::generate();
    let options = short_timeouts();

    let (a, b) = duplex(PIPE_BYTES);
    let (forged, verifier) = tokio::join!(
        SecureChannel::test_initiate_forged(a, &claimed, &forger, options),
        SecureChannel::accept(b, &honest, options),
    );
    match verifier.expect_err("responder refuses") {
        Error::BadIdentityProof { author, .. } => assert_eq!(author, claimed.author()),
        other => panic!("expected BadIdentityProof, got {other:?}"),
    }
    // The forger already sent message 3; it only learns of the refusal when
    // the channel is used, as with any dropped connection.
    if let Ok(mut forged) = forged {
        assert!(forged.recv().await.is_err());
    }

    let (a, b) = duplex(PIPE_BYTES);
    let (verifier, _forged) = tokio::join!(
        SecureChannel::initiate(a, &honest, None, options),
        SecureChannel::test_accept_forged(b, &claimed, &forger, options),
    );
    match verifier.expect_err("initiator refuses") {
        Error::BadIdentityProof { author, .. } => assert_eq!(author, claimed.author()),
        other => panic!("expected BadIdentityProof, got {other:?}"),
    }
}

/// Bytes that are not a handshake give an error, not a panic or a hang:
/// a plausible frame of junk, a frame header over the handshake limit, and a
/// stream that ends early.
#[tokio::test]
async fn garbage_instead_of_handshake() {
    let bob = Identity::generate();
    let mut junk_frame = 40u32.to_be_bytes().to_vec();
    junk_frame.extend(pattern(40, 5));
    let cases: Vec<Vec<u8>> = vec![
        junk_frame,
        u32::MAX.to_be_bytes().to_vec(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0, 0],
    ];
    for garbage in cases {
        let (mut a, b) = duplex(PIPE_BYTES);
        a.write_all(&garbage).await.expect("write garbage");
        a.shutdown().await.expect("half-close");
        let error = SecureChannel::accept(b, &bob, short_timeouts())
            .await
            .expect_err("garbage refused");
        assert!(
            !matches!(error, Error::Timeout { .. }),
            "refused promptly, got {error:?} for {garbage:?}"
        );
    }
    let (mut a, b) = duplex(PIPE_BYTES);
    a.write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("write header");
    let error = SecureChannel::accept(b, &bob, short_timeouts())
        .await
        .expect_err("refused");
    assert!(
        matches!(error, Error::FrameTooLarge { bytes, max: 65_535 } if bytes == u64::from(u32::MAX)),
        "got {error:?}"
    );
}

/// After the handshake a frame header over FRAME_BYTES_MAX is refused as
/// soon as the header arrives (its body is never sent), and a frame of junk
/// fails authentication.
#[tokio::test]
async fn oversized_or_junk_frame_after_handshake() {
    let alice = Identity::generate();
    let bob = Identity::generate();
    let (mut a, mut b) = pair(&alice, &bob).await;
    let too_big = u32::try_from(FRAME_BYTES_MAX + 1).expect("fits");
    a.test_write_raw(&too_big.to_be_bytes())
        .await
        .expect("raw header");
    match b.recv().await {
        Err(Error::FrameTooLarge { bytes, max }) => {
            assert_eq!(bytes, u64::from(too_big));
            assert_eq!(max, FRAME_BYTES_MAX as u64);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }

    let (mut a, mut b) = pair(&alice, &bob).await;
    let mut junk = 100u32.to_be_bytes().to_vec();
    junk.extend(pattern(100, 3));
    a.test_write_raw(&junk).await.expect("raw junk");
    assert!(matches!(b.recv().await, Err(Error::Noise(_))));
}

/// A message over MESSAGE_BYTES_MAX is refused on send, before encryption.
#[tokio::test]
async fn oversized_message_refused_on_send() {
    let (mut a, _b) = pair(&Identity::generate(), &Identity::generate()).await;
    let error = a
        .send(&vec![0; MESSAGE_BYTES_MAX + 1])
        .await
        .expect_err("refused");
    assert!(
        matches!(error, Error::MessageTooLarge { .. }),
        "got {error:?}"
    );
}

/// A peer that says nothing makes the handshake time out; a silent peer
/// after the handshake makes recv time out; a closed peer gives Closed.
#[tokio::test]
async fn silent_peer_times_out_and_closed_peer_is_closed() {
    let bob = Identity::generate();
    let (_silent, b) = duplex(PIPE_BYTES);
    let error = SecureChannel::accept(b, &bob, short_timeouts())
        .await
        .expect_err("times out");
    assert!(
        matches!(
            error,
            Error::Timeout {
                stage: Stage::Handshake,
                after_ms: 300
            }
        ),
        "got {error:?}"
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let _held = tokio::spawn(async move {
        let accepted = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(accepted);
    });
    let error = SecureChannel::connect(address, &Identity::generate(), None, short_timeouts())
        .await
        .expect_err("times out over TCP");
    assert!(
        matches!(
            error,
            Error::Timeout {
                stage: Stage::Handshake,
                ..
            }
        ),
        "got {error:?}"
    );

    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (a, b) = duplex(PIPE_BYTES);
    let (a, b) = tokio::join!(
        SecureChannel::initiate(a, &alice, None, short_timeouts()),
        SecureChannel::accept(b, &bob, short_timeouts()),
    );
    let (a, mut b) = (a.expect("a"), b.expect("b"));
    let error = b.recv().await.expect_err("times out");
    assert!(
        matches!(
            error,
            Error::Timeout {
                stage: Stage::Recv,
                ..
            }
        ),
        "got {error:?}"
    );
    drop(a);
    assert!(matches!(b.recv().await, Err(Error::Closed)));
}
