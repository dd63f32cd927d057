//! A tampering server: a WebSocket proxy between the recipient and a real server
//! rewrites `Deliver` frames. Altering a payload byte, replaying a payload,
//! reordering two, or substituting `from` each surfaces as `Delivery::Rejected`
//! with the matching `SealError`, never as a `Message`.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use futures_util::{SinkExt, StreamExt};
use peers_signal::{Delivery, Frame, Limits, SealError};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Rewrites one `Deliver` into the frames to pass on.
type Tamper = Box<dyn FnMut(Frame) -> Vec<Frame> + Send>;

/// Starts a proxy to `upstream` for one connection; returns its ws:// URL.
async fn proxy(upstream: String, tamper: Tamper) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let tamper = Arc::new(Mutex::new(tamper));
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let downstream = tokio_tungstenite::accept_async(stream)
            .await
            .expect("handshake");
        let (upstream, _) = tokio_tungstenite::connect_async(upstream)
            .await
            .expect("upstream");
        let (mut down_sink, mut down_stream) = downstream.split();
        let (mut up_sink, mut up_stream) = upstream.split();
        let client_to_server = async move {
            while let Some(Ok(message)) = down_stream.next().await {
                if up_sink.send(message).await.is_err() {
                    break;
                }
            }
        };
        let server_to_client = async move {
            while let Some(Ok(message)) = up_stream.next().await {
                let frames = match &message {
                    Message::Binary(bytes) => match Frame::decode(bytes) {
                        Ok(frame @ Frame::Deliver { .. }) => (tamper.lock().expect("lock"))(frame),
                        _ => vec![Frame::decode(bytes).expect("the server's frames decode")],
                    },
                    _ => continue,
                };
                for frame in frames {
                    if down_sink
                        .send(Message::Binary(frame.encode().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        };
        tokio::join!(client_to_server, server_to_client);
    });
    url
}

/// Sends "one" then "two" from client 1 to client 2 (behind a proxy doing
/// `tamper`) and returns what client 2 receives.
async fn deliveries_through(tamper: Tamper, expected: usize) -> Vec<Delivery> {
    let server = server(Limits::default()).await;
    let proxied = proxy(url(&server), tamper).await;
    let (_bob, mut bob_in) = connect(&proxied, 2).await;
    let (alice, _alice_in) = connect(&url(&server), 1).await;
    let (_carol, _carol_in) = connect(&url(&server), 3).await;
    alice
        .send(public(2), b"one")
        .await
        .expect("handed to the proxy");
    alice
        .send(public(2), b"two")
        .await
        .expect("handed to the proxy");
    let mut received = Vec::new();
    for _ in 0..expected {
        received.push(next(&mut bob_in).await);
    }
    nothing_more(&mut bob_in).await;
    received
}

fn message(body: &[u8]) -> Delivery {
    Delivery::Message {
        from: public(1),
        body: body.to_vec(),
    }
}

/// Control: an honest proxy changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_proxy_delivers() {
    let received = deliveries_through(Box::new(|frame| vec![frame]), 2).await;
    assert_eq!(received, vec![message(b"one"), message(b"two")]);
}

/// A flipped ciphertext byte fails authenticated decryption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_payload_is_rejected() {
    let mut first = true;
    let tamper = Box::new(move |frame| match frame {
        Frame::Deliver { from, mut payload } if std::mem::take(&mut first) => {
            let last = payload.len() - 1;
            payload[last] ^= 0x40;
            vec![Frame::Deliver { from, payload }]
        }
        other => vec![other],
    });
    let received = deliveries_through(tamper, 2).await;
    assert_eq!(
        received,
        vec![
            Delivery::Rejected {
                from: public(1),
                error: SealError::Decrypt
            },
            message(b"two")
        ]
    );
}

/// A payload delivered twice: the copy is a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_payload_is_rejected() {
    let received = deliveries_through(Box::new(|frame| vec![frame.clone(), frame]), 4).await;
    assert_eq!(
        received,
        vec![
            message(b"one"),
            Delivery::Rejected {
                from: public(1),
                error: SealError::Replayed {
                    counter: 1,
                    last: 1
                }
            },
            message(b"two"),
            Delivery::Rejected {
                from: public(1),
                error: SealError::Replayed {
                    counter: 2,
                    last: 2
                }
            },
        ]
    );
}

/// Two payloads swapped: the later one opens, the earlier one is then out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_payloads_are_rejected() {
    let mut held: Option<Frame> = None;
    let tamper = Box::new(move |frame| match held.take() {
        None => {
            held = Some(frame);
            vec![]
        }
        Some(earlier) => vec![frame, earlier],
    });
    let received = deliveries_through(tamper, 2).await;
    assert_eq!(
        received,
        vec![
            message(b"two"),
            Delivery::Rejected {
                from: public(1),
                error: SealError::Replayed {
                    counter: 1,
                    last: 2
                }
            }
        ]
    );
}

/// `from` replaced by another registered key: the associated data no longer matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substituted_sender_is_rejected() {
    let tamper = Box::new(|frame| match frame {
        Frame::Deliver { payload, .. } => vec![Frame::Deliver {
            from: public(3),
            payload,
        }],
        other => vec![other],
    });
    let received = deliveries_through(tamper, 2).await;
    let rejected = Delivery::Rejected {
        from: public(3),
        error: SealError::Decrypt,
    };
    assert_eq!(received, vec![rejected.clone(), rejected]);
}

/// A payload the server makes up (random bytes as from a real key) is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_payload_is_rejected() {
    let tamper = Box::new(|frame| match frame {
        Frame::Deliver { from, payload } => vec![Frame::Deliver {
            from,
            payload: vec![1; payload.len()],
        }],
        other => vec![other],
    });
    let received = deliveries_through(tamper, 2).await;
    assert!(
        received
            .iter()
            .all(|delivery| matches!(delivery, Delivery::Rejected { .. })),
        "{received:?}"
    );
}
