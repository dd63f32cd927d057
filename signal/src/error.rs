//! The crate's errors: [`Error`] for the client and server, [`SealError`] for a
//! sealed payload that does not open, [`FrameError`] for a frame that does not decode.

use crate::frame::RefuseReason;

/// A result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn hex32(key: &[u8; 32]) -> String {
    hex::encode(key)
}

/// What went wrong talking to a signaling server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a `ws://host:port` URL this client can dial.
    #[error("invalid signaling server URL {url:?}: {reason}; give one like ws://host:port")]
    Url {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The WebSocket connection could not be opened or broke during registration.
    #[error(
        "cannot reach the signaling server at {url}: {detail}; check the address and that the server is running"
    )]
    Connect {
        /// The server's URL.
        url: String,
        /// What the WebSocket library or the OS said.
        detail: String,
    },
    /// The server refused our registration.
    #[error("the signaling server refused to register us: {reason}")]
    Refused {
        /// Why, as the server said.
        reason: RefuseReason,
    },
    /// The server speaks another protocol version.
    #[error(
        "the signaling server speaks protocol version {theirs}, we speak {ours}; upgrade the older side"
    )]
    UnsupportedVersion {
        /// Our version.
        ours: u16,
        /// The server's version.
        theirs: u16,
    },
    /// The server sent a frame that does not decode or does not fit the protocol state.
    #[error(
        "the signaling server broke the protocol: {0}; the connection was dropped and will be redialed"
    )]
    Protocol(#[from] FrameError),
    /// The recipient has no registered connection on the server.
    #[error("{} is not connected to the signaling server; it must be running and registered there, retry later", hex32(.to))]
    Offline {
        /// The recipient's key.
        to: [u8; 32],
    },
    /// The recipient's connections are not reading fast enough: its queue on the server is full.
    #[error("{} is connected but not keeping up; retry in a moment", hex32(.to))]
    Busy {
        /// The recipient's key.
        to: [u8; 32],
    },
    /// The server's rate limit for our connection was reached.
    #[error("the signaling server rate-limited this connection; send less often and retry")]
    RateLimited,
    /// The sealed message is larger than the server accepts.
    #[error(
        "the signaling message is {bytes} bytes, the server accepts at most {max}; send a smaller body"
    )]
    TooLarge {
        /// Size of the frame that would have been sent.
        bytes: usize,
        /// The server's limit.
        max: usize,
    },
    /// The recipient key cannot receive sealed payloads (not a valid, strong ed25519 key).
    #[error("cannot seal to {}: {source}", hex32(.to))]
    Recipient {
        /// The key given.
        to: [u8; 32],
        /// Why it is unusable.
        source: SealError,
    },
    /// The connection to the server is down (the client is redialing); retry later.
    #[error("not connected to the signaling server right now (redialing); retry later")]
    Disconnected,
    /// `close` was called or every handle dropped.
    #[error("the signaling client was closed")]
    Closed,
    /// The server did not answer in time.
    #[error("the signaling server did not answer within {ms} ms; retry later")]
    Timeout {
        /// How long we waited.
        ms: u64,
    },
}

/// Why a sealed payload was rejected. Each is a reason to drop the payload; none is
/// a reason to drop the connection (the server may be the one at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Shorter than the smallest sealed payload.
    #[error("sealed payload of {bytes} bytes is shorter than the minimum {min}")]
    Truncated {
        /// Its length.
        bytes: usize,
        /// The minimum length.
        min: usize,
    },
    /// A seal version we do not speak.
    #[error(
        "sealed payload version {version} is not supported (we speak {})",
        crate::seal::SEAL_VERSION
    )]
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
    /// The sender's key is not a valid ed25519 key, or is a weak (small-order) one.
    #[error("the sender key is not a valid strong ed25519 key")]
    WeakSenderKey,
    /// The recipient's key is not a valid ed25519 key, or is a weak (small-order) one.
    #[error("the recipient key is not a valid strong ed25519 key")]
    WeakRecipientKey,
    /// The ephemeral key gives an all-zero shared secret (a low-order point).
    #[error("the ephemeral key is a low-order point")]
    WeakEphemeralKey,
    /// Authenticated decryption failed: the payload or its `from`/`to` were altered, or it was sealed to another key.
    #[error(
        "the sealed payload does not decrypt: altered, or sealed for another key or from another sender"
    )]
    Decrypt,
    /// The inner signature is not by `from`.
    #[error("the sealed payload's signature is not by its sender")]
    BadSignature,
    /// The timestamp is too far from our clock.
    #[error(
        "the sealed payload's timestamp {timestamp_ms} ms is more than the allowed skew from our clock {now_ms} ms"
    )]
    Stale {
        /// The payload's timestamp (Unix ms).
        timestamp_ms: u64,
        /// Our clock (Unix ms).
        now_ms: u64,
    },
    /// The counter is not above the last one accepted from this sender instance: a replay or a reordering.
    #[error(
        "the sealed payload's counter {counter} is not above the last accepted {last}: replayed or reordered"
    )]
    Replayed {
        /// The payload's counter.
        counter: u64,
        /// The last counter accepted from this sender instance.
        last: u64,
    },
}

/// Why a frame did not decode. Decoders never panic; every length is checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A zero-length message.
    #[error("empty frame")]
    Empty,
    /// The first byte is not a frame type.
    #[error("unknown frame type {kind:#04x}")]
    UnknownType {
        /// The first byte.
        kind: u8,
    },
    /// Shorter than its type requires.
    #[error("frame type {kind:#04x} has {bytes} bytes, needs {expected}")]
    Truncated {
        /// The frame type.
        kind: u8,
        /// Its length.
        bytes: usize,
        /// Length needed.
        expected: usize,
    },
    /// Longer than its type allows.
    #[error("frame type {kind:#04x} has {bytes} bytes, at most {expected} allowed")]
    TrailingBytes {
        /// The frame type.
        kind: u8,
        /// Its length.
        bytes: usize,
        /// Its maximum length.
        expected: usize,
    },
    /// A `version` field we do not speak.
    #[error("protocol version {version} is not supported")]
    UnsupportedVersion {
        /// The version read.
        version: u16,
    },
    /// A `status` or `reason` byte with no meaning.
    #[error("frame type {kind:#04x} has an unknown code {value}")]
    UnknownCode {
        /// The frame type.
        kind: u8,
        /// The byte.
        value: u8,
    },
    /// A WebSocket text message (the protocol is binary only).
    #[error("a text message; the protocol is binary only")]
    Text,
    /// A frame valid in itself but not expected now (for example a second `Challenge`).
    #[error("frame type {kind:#04x} not expected now")]
    Unexpected {
        /// The frame type.
        kind: u8,
    },
}
