//! The one error type of `peers-net`. Refusals carry fields, not strings, so
//! an embedder can match on them (STYLE habit 6).

use std::fmt;

use peers_engine::{Author, ChangeHash, DatabaseId, Refusal, SignatureFault};

use crate::message::ByeReason;

/// Shorthand for `Result<T, peers_net::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which step of a connection ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// The whole Noise handshake, including the identity proofs.
    Handshake,
    /// Waiting for one encrypted message.
    Recv,
    /// Writing one encrypted message (the peer does not read).
    Send,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Handshake => "handshake",
            Stage::Recv => "receive",
            Stage::Send => "send",
        })
    }
}

/// Everything that can go wrong on a secure channel. After any error the
/// channel must be dropped: its cipher state may be out of step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed (includes a connection reset or EOF inside a frame).
    #[error("network I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A step took longer than its timeout; the connection is dropped.
    #[error("{stage} timed out after {after_ms} ms")]
    Timeout {
        /// The step that timed out.
        stage: Stage,
        /// The timeout that expired, in milliseconds.
        after_ms: u64,
    },
    /// The Noise state machine refused a message: garbage, a wrong key, or a
    /// message that fails authentication.
    #[error("noise protocol: {0}")]
    Noise(#[source] snow::Error),
    /// The peer's signature over its Noise static key does not verify under
    /// the ed25519 key it claims.
    #[error("identity proof of {author} does not verify: {fault}")]
    BadIdentityProof {
        /// The key the peer claimed.
        author: Author,
        /// Why the signature was refused.
        fault: SignatureFault,
    },
    /// The dialer pinned a key and the peer proved another one.
    #[error("expected peer {expected}, but it is {actual}")]
    UnexpectedKey {
        /// The pinned key.
        expected: Author,
        /// The key the peer proved.
        actual: Author,
    },
    /// A frame header announces more bytes than allowed; refused before
    /// allocating.
    #[error("frame of {bytes} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The length the header announced.
        bytes: u64,
        /// The limit in force (handshake or transport).
        max: u64,
    },
    /// The caller tried to send a message larger than [`crate::MESSAGE_BYTES_MAX`].
    #[error("message of {bytes} bytes exceeds the maximum of {max}")]
    MessageTooLarge {
        /// The message's length.
        bytes: u64,
        /// [`crate::MESSAGE_BYTES_MAX`].
        max: u64,
    },
    /// The peer speaks no channel protocol version we do.
    #[error(
        "peer speaks channel protocol version {found}, we speak {supported_min}..={supported_max}"
    )]
    UnsupportedVersion {
        /// The highest version the peer offered (or the one it chose).
        found: u16,
        /// The lowest version we speak.
        supported_min: u16,
        /// The highest version we speak.
        supported_max: u16,
    },
    /// A handshake payload has the wrong length for its version.
    #[error("handshake message {message} has a payload of {bytes} bytes, expected {expected}")]
    MalformedHandshake {
        /// 1, 2 or 3: which Noise XX message.
        message: u8,
        /// Its decrypted payload's length.
        bytes: u64,
        /// The length its version requires.
        expected: u64,
    },
    /// An encrypted frame's layout is impossible (a chunk shorter than a tag,
    /// or the authenticated length disagrees with the frame length).
    #[error("malformed encrypted frame of {bytes} bytes")]
    MalformedFrame {
        /// The frame's length on the wire.
        bytes: u64,
    },
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed by peer")]
    Closed,
    /// The mDNS daemon of LAN discovery could not start or refused our
    /// service (see [`crate::Discovery`]).
    #[error("LAN discovery: {0}")]
    Discovery(#[source] mdns_sd::Error),
    /// A sync message does not decode (bad layout, trailing bytes, or a
    /// container over its limit).
    #[error("malformed sync message of {bytes} bytes: {reason}")]
    MalformedMessage {
        /// The message's length.
        bytes: u64,
        /// What the decoder found.
        reason: String,
    },
    /// A well-formed sync message that the protocol's state does not allow.
    #[error("expected a {expected} message, got {found}")]
    UnexpectedMessage {
        /// What the state machine waited for.
        expected: &'static str,
        /// What arrived.
        found: &'static str,
    },
    /// The peer's `Hello` does not prove that it knows our database's id:
    /// it syncs another database (the id itself never travels).
    #[error("peer syncs another database than {ours} (it does not prove knowing its id)")]
    WrongDatabase {
        /// Ours.
        ours: DatabaseId,
    },
    /// The peer speaks no sync protocol version we do.
    #[error(
        "peer speaks sync protocol versions {found_min}..={found_max}, we speak {supported_min}..={supported_max}"
    )]
    UnsupportedSyncVersion {
        /// The peer's lowest.
        found_min: u16,
        /// The peer's highest.
        found_max: u16,
        /// Our lowest.
        supported_min: u16,
        /// Our highest.
        supported_max: u16,
    },
    /// The peer sent a change our engine refused; the connection is dropped
    /// (an honest peer only forwards verified changes).
    #[error("peer sent a refused change {}: {refusal}", hash.map_or_else(|| "(undecodable)".to_owned(), |h| h.to_string()))]
    RefusedChange {
        /// The change's hash, when it had one.
        hash: Option<ChangeHash>,
        /// Why the engine refused it.
        refusal: Refusal,
    },
    /// A redemption of an invite was refused: on the inviter's side, a
    /// stranger's; on the joiner's, an expired ticket before dialing.
    #[error("invite refused: {reason}")]
    InviteRefused {
        /// Why.
        reason: crate::invite::InviteRefusal,
    },
    /// The peer ended the session for a reason other than shutting down.
    #[error("peer ended the session: {reason}")]
    PeerBye {
        /// The reason it sent.
        reason: ByeReason,
    },
    /// The peer's key holds no role in this members-only database: nothing
    /// is served to it (or it was revoked during the session).
    #[error("peer {peer} is not a member of this database")]
    NotAMember {
        /// The peer's key.
        peer: Author,
    },
    /// The peer's key already holds [`crate::SESSIONS_PER_KEY_MAX`]
    /// sessions with this node; the connection is refused after the
    /// handshake with `Bye(TooManySessions)`.
    #[error("peer {peer} already holds the most sessions one key may")]
    TooManySessions {
        /// The peer's key.
        peer: Author,
    },
    /// This node already runs its most inbound sessions; the connection
    /// was closed after the handshake.
    #[error("this node already serves its most inbound sessions ({limit})")]
    NodeBusy {
        /// [`crate::INBOUND_SESSIONS_MAX`].
        limit: usize,
    },
    /// The peer's snapshot file (sync version 5) was refused as it
    /// arrived: not a snapshot of this database, not the checkpoint it
    /// announced, more bytes than announced, or a failed check of its
    /// format (FORMAT.md "Snapshot file"). Nothing of it is kept.
    #[error("the peer's snapshot was refused: {reason}")]
    BadSnapshot {
        /// Why.
        reason: String,
    },
    /// The peer began to send a snapshot this replica already holds,
    /// waiting to be installed; the session ends (`Bye(SnapshotPending)`).
    #[error(
        "the peer trimmed history this replica lacks, and its snapshot (checkpoint {checkpoint}) is already received, at {}: it is installed when `peers` next opens this database itself (stop the process that holds it, then run any command), or by Db::install_snapshot",
        path.display()
    )]
    SnapshotPending {
        /// The snapshot's checkpoint.
        checkpoint: ChangeHash,
        /// Where it waits.
        path: std::path::PathBuf,
    },
    /// The local database failed.
    #[error(transparent)]
    Engine(#[from] peers_engine::Error),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// Dialing by key needs a signaling server, and none is registered.
    #[error(
        "no signaling server is registered: start the node with a signaling server (peers serve --signal ws://HOST:PORT) or dial an address"
    )]
    NoSignaling,
    /// No signaling server this node uses has the peer registered.
    #[error(
        "peer {peer} is not registered with our signaling servers: is its node running with the same --signal server?"
    )]
    PeerOffline {
        /// The peer's key.
        peer: Author,
    },
    /// A signaling server failed or refused us.
    #[error("signaling: {0}")]
    Signal(#[source] peers_signal::Error),
    /// A rendezvous message could not be made (a bug) or read.
    #[error("rendezvous message: {0}")]
    Rendezvous(#[source] crate::webrtc::RendezvousError),
    /// The peer refused our WebRTC offer.
    #[error("peer {peer} refused the connection: {reason}")]
    Refused {
        /// The peer's key.
        peer: Author,
        /// Its reason.
        reason: crate::webrtc::RefuseReason,
    },
    /// No WebRTC path opened between us and the peer.
    #[error(
        "no WebRTC path to {peer}: {reason}. If both sides are behind symmetric NATs (or a firewall drops UDP), they cannot connect without a relay; sync through a peer both can reach (peers sync HOST:PORT), or on the same LAN"
    )]
    NoPath {
        /// The peer's key.
        peer: Author,
        /// What happened.
        reason: String,
    },
    /// The node runs the most connection attempts it allows at once.
    #[error("too many connection attempts in progress")]
    Busy,
}

impl From<snow::Error> for Error {
    fn from(error: snow::Error) -> Self {
        Error::Noise(error)
    }
}
