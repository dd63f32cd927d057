//! Peers signaling: a blind, stateless rendezvous for WebRTC offers between
//! ed25519 keys, its client, and a STUN binding responder.
//!
//! - [`Server`] accepts WebSocket connections, has each prove its ed25519 key over
//!   a fresh nonce, and forwards a `Send` to the registered connections of the
//!   recipient key (up to [`REGISTRATIONS_PER_KEY_MAX`] per key). It stores nothing:
//!   an offline recipient is an error to the sender. It sees key ids, sizes,
//!   timing and IP addresses, never a body: payloads are sealed end to end.
//! - [`Client`] registers, stays registered (redialing with backoff), seals bodies
//!   to the recipient's key and signs them, and opens incoming payloads with
//!   [`open`]: a tampered, forged, replayed, reordered or stale payload surfaces as
//!   [`Delivery::Rejected`], never as a [`Delivery::Message`].
//! - [`stun`] answers RFC 5389 Binding requests (the server) and builds and parses
//!   them (sans-IO, for a client's server-reflexive candidate).
//!
//! The wire format (frames, registration proof, sealed payload, checks, limits)
//! is specified byte for byte in `docs/PROTOCOL.md` "Signaling".
//!
//! # Memory
//!
//! An idle registered client costs the server 6.8 KiB of RSS (measured on the
//! project's 2-core Linux machine, 10 000 clients from one process against a server
//! in another: 3 748 KiB at start, 38 944 KiB with 5 000, 73 092 KiB with 10 000), with
//! [`CONNECTION_READ_BUFFER_BYTES`] = 2 KiB of it the WebSocket read buffer. The
//! kernel's socket buffers come on top and are not in RSS. To measure again:
//!
//! ```sh
//! cargo run --release -p peers-signal --example idle_clients -- 10000
//! ```

mod client;
mod error;
mod frame;
mod seal;
mod server;
pub mod stun;

pub use client::{
    CLIENT_MESSAGE_BYTES_MAX, CONNECT_TIMEOUT, Client, Delivery, INCOMING_QUEUED_MAX, Incoming,
    PENDING_SENDS_MAX, PING_INTERVAL, REDIAL_DELAY_MAX, REDIAL_DELAY_MIN, SEND_TIMEOUT,
    SERVER_SILENCE_MAX,
};
pub use error::{Error, FrameError, Result, SealError};
pub use frame::{
    CHALLENGE_BYTES, DELIVER_HEADER_BYTES, Frame, PROTOCOL_VERSION, REFUSED_BYTES, REGISTER_BYTES,
    REGISTER_DOMAIN, REGISTERED_BYTES, RESULT_BYTES, RefuseReason, SEND_HEADER_BYTES, Status,
};
pub use seal::{
    Freshness, Keys, Opened, PAYLOAD_DOMAIN, REPLAY_ENTRIES_MAX, ReplayGuard, SEAL_KEY_CONTEXT,
    SEAL_OVERHEAD_BYTES, SEAL_VERSION, TIMESTAMP_SKEW_MS_MAX, open,
};
pub use server::{
    CLIENTS_MAX, CONNECTION_READ_BUFFER_BYTES, CONNECTIONS_PER_IP_MAX, DELIVERIES_QUEUED_MAX,
    IDLE_TIMEOUT, Limits, MESSAGE_BYTES_MAX, MESSAGES_BURST, MESSAGES_PER_SECOND, REFUSING_MAX,
    REGISTRATION_TIMEOUT, REGISTRATIONS_PER_KEY_MAX, Server, ServerConfig,
};
