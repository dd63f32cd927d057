//! Helpers shared by the signaling scenario tests: a server on 127.0.0.1 port 0,
//! keys from seeds, and a raw WebSocket client that speaks frames directly.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use peers_signal::{Client, Delivery, Frame, Incoming, Keys, Limits, Server, ServerConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn key(seed: u8) -> Arc<SigningKey> {
    Arc::new(SigningKey::from_bytes(&[seed; 32]))
}

pub fn public(seed: u8) -> [u8; 32] {
    key(seed).public()
}

pub async fn server(limits: Limits) -> Server {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    Server::start(ServerConfig::new(listen).with_limits(limits))
        .await
        .expect("server starts")
}

pub fn url(server: &Server) -> String {
    format!("ws://{}", server.local_addr())
}

pub async fn connect(url: &str, seed: u8) -> (Client, Incoming) {
    Client::connect(url, key(seed))
        .await
        .expect("client connects and registers")
}

/// The next delivery, failing the test after `WAIT`.
pub async fn next(incoming: &mut Incoming) -> Delivery {
    tokio::time::timeout(WAIT, incoming.recv())
        .await
        .expect("a delivery in time")
        .expect("the client is open")
}

/// Asserts nothing more arrives for a short while.
pub async fn nothing_more(incoming: &mut Incoming) {
    if let Ok(delivery) = tokio::time::timeout(Duration::from_millis(300), incoming.recv()).await {
        panic!("unexpected delivery {delivery:?}");
    }
}

/// Polls `condition` until it holds or `WAIT` passes.
pub async fn eventually(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket client that speaks frames directly, to send what `Client` never would.
pub struct Raw {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Raw {
    pub async fn dial(url: &str) -> Raw {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connects");
        Raw { socket }
    }

    pub async fn send(&mut self, frame: &Frame) {
        self.send_bytes(frame.encode()).await;
    }

    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.socket
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// The next frame, or `None` once the server closed the connection.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the server answers in time");
            match message {
                Some(Ok(Message::Binary(bytes))) => {
                    return Some(Frame::decode(&bytes).expect("a valid frame"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    }

    pub async fn challenge(&mut self) -> [u8; 32] {
        match self.next().await {
            Some(Frame::Challenge { version: 1, nonce }) => nonce,
            other => panic!("expected a Challenge, got {other:?}"),
        }
    }

    /// The Register frame `signer` makes for `key` over `nonce`.
    pub fn register_frame(key: [u8; 32], signer: &SigningKey, nonce: &[u8; 32]) -> Frame {
        let mut message = peers_signal::REGISTER_DOMAIN.to_vec();
        message.extend_from_slice(nonce);
        Frame::Register {
            version: 1,
            key,
            signature: Keys::sign(signer, &message),
        }
    }

    /// Dials and registers with the key of `seed`.
    pub async fn registered(url: &str, seed: u8) -> Raw {
        let mut raw = Raw::dial(url).await;
        let nonce = raw.challenge().await;
        let signer = key(seed);
        raw.send(&Raw::register_frame(signer.public(), &signer, &nonce))
            .await;
        match raw.next().await {
            Some(Frame::Registered { .. }) => raw,
            other => panic!("expected Registered, got {other:?}"),
        }
    }
}
