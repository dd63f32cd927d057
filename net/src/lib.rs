//! Peers network layer.
//!
//! For now: [`SecureChannel`], a TCP (or any byte stream) connection on which
//! both sides proved their ed25519 [`peers_engine::Identity`] through a Noise
//! XX handshake, then exchange encrypted, length-limited messages. The sync
//! protocol, node API and LAN discovery build on it (issue 4).
//! docs/PROTOCOL.md specifies every byte on the wire.

mod channel;
mod discovery;
mod error;
mod frame;
mod handshake;
pub mod invite;
mod known_peers;
mod message;
mod node;
mod reconcile;
mod session;
pub mod webrtc;

pub use channel::{
    ChannelOptions, HANDSHAKE_TIMEOUT, RECV_TIMEOUT, RecvHalf, SEND_TIMEOUT, SecureChannel,
    SendHalf,
};
pub use discovery::{
    DISCOVERIES_QUEUED_MAX, DISCOVERY_EPOCH_SECONDS, DISCOVERY_KEY_CONTEXT, DISCOVERY_TOKEN_BYTES,
    Discovered, Discovery, SERVICE_TYPE, TXT_KEY_AUTHOR, TXT_KEY_NONCE, TXT_KEY_TOKEN,
    discovery_key,
};
pub use error::{Error, Result, Stage};
pub use frame::{FRAME_BYTES_MAX, MESSAGE_BYTES_MAX, NOISE_MESSAGE_BYTES_MAX};
pub use handshake::{
    CHANNEL_VERSION, CHANNEL_VERSION_MIN, HANDSHAKE_HASH_BYTES, IDENTITY_PROOF_DOMAIN, NOISE_PARAMS,
};
pub use known_peers::{How, KNOWN_PEERS_FILE, KNOWN_PEERS_MAX, KnownPeer, known_peers};
pub use message::{
    BATCH_BYTES_MAX, BATCH_CHANGES_MAX, ByeReason, DATABASE_PROOF_DOMAIN, Hello, Message,
    SNAPSHOT_PART_BYTES_MAX, SNAPSHOT_VERSION, SYNC_VERSION, SYNC_VERSION_MIN, VectorEntry,
    WANT_HASHES_MAX, WANT_VERSION, database_proof,
};
pub use node::{
    DISCOVERED_DIAL_FAILURES_MAX, EVENTS_BUFFER, Event, HANDSHAKES_MAX, HANDSHAKES_PER_ADDRESS_MAX,
    INBOUND_SESSIONS_MAX, KEEPALIVE_INTERVAL, Node, NodeConfig, NodeStats, OUTBOUND_MAX,
    PEER_STATS_MAX, PeerStats, RECONNECT_DELAY_MAX, RECONNECT_DELAY_MIN, SESSIONS_PER_KEY_MAX,
};
pub use reconcile::{
    Difference, Heads, ITEM_CONTEXT, RANGE_CONTEXT, RECONCILE_DIFFERENCES_MAX, RECONCILE_ITEMS_MAX,
    RECONCILE_RANGES_MAX, RECONCILE_REPLY_BYTES, RECONCILE_ROUNDS_MAX, RECONCILE_SPLIT, Range,
    RangeKind, Reconciler, fingerprint,
};
pub use session::{PENDING_SHARES, ReceivedSnapshot, SyncReport};

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
