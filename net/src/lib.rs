//! Peers network layer.
//!
//! For now: [`SecureChannel`], a TCP (or any byte stream) connection on which
//! both sides proved their ed25519 [`peers_engine::Identity`] through a Noise
//! XX handshake, then exchange encrypted, length-limited messages. The sync
//! protocol, node API and LAN discovery build on it (issue 4).
//! docs/PROTOCOL.md specifies every byte on the wire.

mod channel;
mod error;
mod frame;
mod handshake;

pub use channel::{ChannelOptions, HANDSHAKE_TIMEOUT, RECV_TIMEOUT, SEND_TIMEOUT, SecureChannel};
pub use error::{Error, Result, Stage};
pub use frame::{FRAME_BYTES_MAX, MESSAGE_BYTES_MAX, NOISE_MESSAGE_BYTES_MAX};
pub use handshake::{CHANNEL_VERSION, CHANNEL_VERSION_MIN, IDENTITY_PROOF_DOMAIN, NOISE_PARAMS};
