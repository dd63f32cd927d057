//! The sync protocol's messages and their bincode layout
//! (docs/PROTOCOL.md "Sync protocol").
//!
//! Format of every message: `bincode 2.0.1, standard config (varint integers,
//! little endian)` of [`Message`]: a varint variant index, then the variant's
//! fields in order. A message is one [`crate::SecureChannel`] message, so it
//! is never longer than [`MESSAGE_BYTES_MAX`]; [`Message::decode`] also
//! refuses trailing bytes and any container that claims more than that.

use bincode::{Decode, Encode};
use peers_engine::{Author, ChangeHash, DatabaseId};

use crate::error::{Error, Result};
use crate::frame::MESSAGE_BYTES_MAX;
use crate::reconcile::Range;

/// The highest sync protocol version this build speaks.
/// Version 3 added `Redeem` (invites by ticket) and the invite `Bye`
/// reasons; a version 2 peer never receives them (only a joiner holding a
/// ticket from a version 3 node sends `Redeem`). Version 4 added `Want`;
/// it is sent only when both sides speak version 4. Version 5 added
/// `Snapshot` and `SnapshotPart` (bootstrap from a trimmed replica), sent
/// only when both speak version 5, and `Bye(SnapshotPending)`.
pub const SYNC_VERSION: u16 = 5;
/// The first version with [`Message::Want`].
pub const WANT_VERSION: u16 = 4;
/// The first version with [`Message::Snapshot`].
pub const SNAPSHOT_VERSION: u16 = 5;
/// A `SnapshotPart` holds 1 to this many bytes of the file.
pub const SNAPSHOT_PART_BYTES_MAX: usize = 1024 * 1024;
/// A `Want` names at most this many changes.
pub const WANT_HASHES_MAX: usize = 1024;
/// The lowest sync protocol version this build speaks. Version 1 is no
/// longer spoken: its `Hello` sent the database id in clear, and in an open
/// database the id is the capability to write (PROTOCOL.md "Version
/// changes").
pub const SYNC_VERSION_MIN: u16 = 2;
/// Prefixed to what [`database_proof`] MACs, so the MAC means nothing in
/// any other protocol.
pub const DATABASE_PROOF_DOMAIN: &[u8] = b"peers sync hello database proof v2";
/// A `Changes` message holds at most this many changes...
pub const BATCH_CHANGES_MAX: usize = 4096;
/// ...and at most this many bytes of changes, unless it holds one change
/// alone (a change of up to `CHANGE_BYTES_MAX` still travels:
/// [`MESSAGE_BYTES_MAX`] has room for it, but not for it and a full batch).
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;

const _: () = assert!(BATCH_BYTES_MAX + BATCH_CHANGES_MAX * 8 < MESSAGE_BYTES_MAX);
const _: () = assert!(peers_engine::CHANGE_BYTES_MAX + 16 < MESSAGE_BYTES_MAX);
const _: () = assert!(SNAPSHOT_PART_BYTES_MAX + 16 < MESSAGE_BYTES_MAX);

/// Bincode's configuration for sync messages. The limit bounds what a
/// decoder allocates for any claimed container length.
const fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MESSAGE_BYTES_MAX>,
> {
    bincode::config::standard().with_limit::<MESSAGE_BYTES_MAX>()
}

/// The first message each side sends, both at once.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// Lowest sync version the sender speaks.
    pub version_min: u16,
    /// Highest sync version the sender speaks.
    pub version_max: u16,
    /// Proves that the sender knows the database id without revealing it:
    /// see [`database_proof`].
    pub database_proof: [u8; 32],
    /// `VersionVector::digest` of the sender's vector (its advertised heads).
    pub digest: [u8; 32],
    /// Whether the sender wants the connection to stay open after catching
    /// up; it does only when both say so.
    pub live: bool,
}

/// One author's advertised head, as a `Reconcile` list carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct VectorEntry {
    /// The author's key.
    pub author: [u8; 32],
    /// Highest seq held.
    pub seq: u64,
    /// Hash of that change.
    pub hash: [u8; 32],
}

/// Why a side ends the session on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ByeReason {
    /// The sender is shutting down (a clean close).
    Shutdown = 0,
    /// The peer's database is not the sender's (or the peer does not know
    /// its id).
    WrongDatabase = 1,
    /// No common sync protocol version.
    UnsupportedVersion = 2,
    /// The peer sent something the protocol does not allow.
    ProtocolViolation = 3,
    /// The peer sent a change the sender's engine refused.
    RefusedChange = 4,
    /// The peer's key holds no role in the sender's members-only database
    /// (a stranger, or revoked).
    NotAMember = 5,
    /// The peer's key already holds as many sessions with the sender as it
    /// may (`SESSIONS_PER_KEY_MAX`).
    TooManySessions = 6,
    /// The `Redeem` named no invite the sender holds, or its proof did not
    /// match (version 3).
    InviteUnknown = 7,
    /// The invite the `Redeem` named has expired (version 3).
    InviteExpired = 8,
    /// Every use of the invite was spent (version 3).
    InviteUsed = 9,
    /// The sender already holds the snapshot the peer began to send, and
    /// has yet to install it (version 5): the rest would be sent in vain.
    SnapshotPending = 10,
}

impl std::fmt::Display for ByeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ByeReason::Shutdown => "it is shutting down",
            ByeReason::WrongDatabase => "it syncs another database",
            ByeReason::UnsupportedVersion => "no common sync protocol version",
            ByeReason::ProtocolViolation => "it says we broke the protocol",
            ByeReason::RefusedChange => "it refused a change we sent",
            ByeReason::NotAMember => {
                "our key is not a member of its database (ask its owner or an admin for a grant)"
            }
            ByeReason::TooManySessions => {
                "our key already holds as many sessions with it as it allows"
            }
            ByeReason::InviteUnknown => {
                "it knows no such invite (a forged ticket, or one from another replica)"
            }
            ByeReason::InviteExpired => "the invite has expired; ask for a new one",
            ByeReason::InviteUsed => "the invite was already used; ask for a new one",
            ByeReason::SnapshotPending => {
                "it holds this snapshot already and has yet to install it (it installs when `peers` next opens its database)"
            }
        })
    }
}

/// A sync protocol message. The variant order is the wire's variant index.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Message {
    /// Index 0: see [`Hello`].
    Hello(Hello),
    /// Index 1: a round of range-based reconciliation (PROTOCOL.md
    /// "Reconciliation"); empty: the sender is done.
    Reconcile(Vec<Range>),
    /// Index 2: encoded changes (FORMAT.md "Change"), in the sender's log
    /// order.
    Changes(Vec<Vec<u8>>),
    /// Index 3: the sender has sent every change the receiver lacked when
    /// the reconciliation ended; `changes` counts them.
    CaughtUp {
        /// Changes sent during the catch-up.
        changes: u64,
    },
    /// Index 4: nothing to say; keeps an idle live connection open.
    Keepalive,
    /// Index 5: the sender closes the session.
    Bye(ByeReason),
    /// Index 6: the sender has applied every change the receiver sent
    /// before its `CaughtUp`; `changes` counts the new ones. A one-shot
    /// session is complete when each side has received `CaughtUp` and
    /// `Applied`.
    Applied {
        /// New changes the sender applied from the catch-up.
        changes: u64,
    },
    /// Index 7 (version 3): a joiner redeems an invite; sent before its
    /// `Hello`, and only to the inviter whose ticket it holds. The inviter
    /// grants the role before its own `Hello`, or ends with `Bye`.
    Redeem {
        /// The invite's id (`invite::invite_id`).
        invite: [u8; 16],
        /// `invite::redeem_proof` on this channel.
        proof: [u8; 32],
    },
    /// Index 8 (version 4): changes the sender's pending changes wait on
    /// (at most [`WANT_HASHES_MAX`]); the receiver answers with those it
    /// holds, whatever their validity, in `Changes`, then `CaughtUp`.
    Want(Vec<ChangeHash>),
    /// Index 9 (version 5): the receiver lacks changes below the frontier
    /// of the checkpoint the sender trimmed at, which the sender no longer
    /// holds: instead of its catch-up's changes, the sender sends the
    /// snapshot file of `checkpoint` (FORMAT.md "Snapshot file"), `bytes`
    /// long, in `SnapshotPart`s, then `CaughtUp { changes: 0 }`. The
    /// receiver checks the file as it arrives and keeps it, to install once
    /// nothing holds its database (PROTOCOL.md "Bootstrap").
    Snapshot {
        /// The checkpoint the file is of.
        checkpoint: ChangeHash,
        /// The file's length (at least 1).
        bytes: u64,
    },
    /// Index 10 (version 5): the next bytes of the snapshot file, 1 to
    /// [`SNAPSHOT_PART_BYTES_MAX`].
    SnapshotPart(Vec<u8>),
}

impl Message {
    /// Short name for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Reconcile(_) => "Reconcile",
            Message::Changes(_) => "Changes",
            Message::CaughtUp { .. } => "CaughtUp",
            Message::Keepalive => "Keepalive",
            Message::Bye(_) => "Bye",
            Message::Applied { .. } => "Applied",
            Message::Redeem { .. } => "Redeem",
            Message::Want(_) => "Want",
            Message::Snapshot { .. } => "Snapshot",
            Message::SnapshotPart(_) => "SnapshotPart",
        }
    }

    /// The message's bytes. [`Error::MessageTooLarge`] when they would be
    /// more than [`MESSAGE_BYTES_MAX`]: the session that built it ends with
    /// that error (no input, ours or a peer's, may panic a node).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let bytes =
            bincode::encode_to_vec(self, bincode::config::standard()).expect("encoding into a Vec");
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(Error::MessageTooLarge {
                bytes: bytes.len() as u64,
                max: MESSAGE_BYTES_MAX as u64,
            });
        }
        Ok(bytes)
    }

    /// Decodes one message; refuses trailing bytes and oversized claims.
    pub fn decode(bytes: &[u8]) -> Result<Message> {
        let malformed = |reason: String| Error::MalformedMessage {
            bytes: bytes.len() as u64,
            reason,
        };
        let (message, read): (Message, usize) =
            bincode::decode_from_slice(bytes, config()).map_err(|e| malformed(e.to_string()))?;
        if read != bytes.len() {
            return Err(malformed(format!(
                "{} trailing bytes after {}",
                bytes.len() - read,
                message.kind()
            )));
        }
        match &message {
            Message::Reconcile(ranges) => match crate::reconcile::validate(ranges) {
                Ok(()) => Ok(message),
                Err(error) => Err(malformed(error.to_string())),
            },
            Message::Changes(changes) if changes.len() > BATCH_CHANGES_MAX => {
                Err(malformed(format!("batch of {} changes", changes.len())))
            }
            Message::Want(hashes) if hashes.is_empty() || hashes.len() > WANT_HASHES_MAX => {
                Err(malformed(format!("a Want of {} hashes", hashes.len())))
            }
            Message::Snapshot { bytes: 0, .. } => Err(malformed("an empty Snapshot".to_owned())),
            Message::SnapshotPart(part)
                if part.is_empty() || part.len() > SNAPSHOT_PART_BYTES_MAX =>
            {
                Err(malformed(format!("a SnapshotPart of {} bytes", part.len())))
            }
            _ => Ok(message),
        }
    }
}

/// The sync version two sides agree on, if any: the highest both speak.
pub(crate) fn negotiate(ours: (u16, u16), theirs: (u16, u16)) -> Option<u16> {
    let high = ours.1.min(theirs.1);
    let low = ours.0.max(theirs.0);
    (high >= low).then_some(high)
}

/// What `sender` puts in its `Hello` to show that it knows `database`, on
/// the connection whose Noise handshake hash is `handshake_hash`:
///
/// ```text
/// blake3::keyed_hash(key = database id,
///                    DATABASE_PROOF_DOMAIN || handshake hash (32) || sender's key (32))
/// ```
///
/// Only a holder of the id can make it or check it; it is good on one
/// connection only (the handshake hash is), and for one direction only (a
/// peer that reflects our own proof back names our key, not its own).
pub fn database_proof(
    database: DatabaseId,
    handshake_hash: &[u8; 32],
    sender: &Author,
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(&database.0);
    hasher.update(DATABASE_PROOF_DOMAIN);
    hasher.update(handshake_hash);
    hasher.update(&sender.0);
    *hasher.finalize().as_bytes()
}

/// Whether `hello` proves that its sender, `peer`, knows `database`
/// (compared in constant time).
pub(crate) fn proves_database(
    hello: &Hello,
    database: DatabaseId,
    handshake_hash: &[u8; 32],
    peer: &Author,
) -> bool {
    blake3::Hash::from_bytes(database_proof(database, handshake_hash, peer))
        == blake3::Hash::from_bytes(hello.database_proof)
}

/// Our `Hello` on a connection, with our vector's `digest`.
pub(crate) fn hello(
    database: DatabaseId,
    handshake_hash: &[u8; 32],
    us: &Author,
    digest: [u8; 32],
    live: bool,
) -> Hello {
    Hello {
        version_min: SYNC_VERSION_MIN,
        version_max: SYNC_VERSION,
        database_proof: database_proof(database, handshake_hash, us),
        digest,
        live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_hello() -> Message {
        Message::Hello(Hello {
            version_min: 2,
            version_max: 2,
            database_proof: [7; 32],
            digest: [9; 32],
            live: true,
        })
    }

    /// Every variant survives a round trip.
    #[test]
    fn round_trip() {
        let messages = [
            sample_hello(),
            Message::Reconcile(vec![
                Range {
                    upper: Some(vec![1; 32]),
                    kind: crate::RangeKind::Fingerprint([3; 16]),
                },
                Range {
                    upper: None,
                    kind: crate::RangeKind::Items(vec![VectorEntry {
                        author: [1; 32],
                        seq: 300,
                        hash: [2; 32],
                    }]),
                },
            ]),
            Message::Reconcile(Vec::new()),
            Message::Changes(vec![vec![1, 2, 3], vec![]]),
            Message::CaughtUp { changes: 70_000 },
            Message::Keepalive,
            Message::Bye(ByeReason::RefusedChange),
            Message::Applied { changes: 3 },
        ];
        for message in messages {
            assert_eq!(
                Message::decode(&message.encode().expect("encodes")).expect("decodes"),
                message
            );
        }
    }

    /// The byte layout PROTOCOL.md draws: variant index, then the fields;
    /// varints below 251 are one byte, 251 prefixes a u16.
    #[test]
    fn layout_vectors() {
        let encode = |message: Message| message.encode().expect("encodes");
        let mut expected = vec![0u8, 2, 2];
        expected.extend_from_slice(&[7; 32]);
        expected.extend_from_slice(&[9; 32]);
        expected.push(1);
        assert_eq!(encode(sample_hello()), expected);
        // Reconcile: count 2; range 1: upper Some (1), length 32, 32 bytes, kind 1
        // (Fingerprint) + 16 bytes; range 2: upper None (0), kind 2 (Items),
        // count 1, the head: author, seq 300 (fb 2c 01), hash.
        let reconcile = Message::Reconcile(vec![
            Range {
                upper: Some(vec![1; 32]),
                kind: crate::RangeKind::Fingerprint([3; 16]),
            },
            Range {
                upper: None,
                kind: crate::RangeKind::Items(vec![VectorEntry {
                    author: [4; 32],
                    seq: 300,
                    hash: [2; 32],
                }]),
            },
        ]);
        let mut expected = vec![1u8, 2, 1, 32];
        expected.extend_from_slice(&[1; 32]);
        expected.push(1);
        expected.extend_from_slice(&[3; 16]);
        expected.extend_from_slice(&[0, 2, 1]);
        expected.extend_from_slice(&[4; 32]);
        expected.extend_from_slice(&[251, 0x2C, 0x01]);
        expected.extend_from_slice(&[2; 32]);
        assert_eq!(encode(reconcile), expected);
        assert_eq!(encode(Message::Reconcile(Vec::new())), [1, 0]);
        assert_eq!(
            encode(Message::Changes(vec![vec![0xAA, 0xBB]])),
            [2, 1, 2, 0xAA, 0xBB]
        );
        assert_eq!(encode(Message::CaughtUp { changes: 5 }), [3, 5]);
        assert_eq!(encode(Message::Keepalive), [4]);
        assert_eq!(encode(Message::Bye(ByeReason::WrongDatabase)), [5, 1]);
        assert_eq!(
            encode(Message::Applied { changes: 300 }),
            [6, 251, 0x2C, 0x01]
        );
        let mut redeem = vec![7];
        redeem.extend([1; 16]);
        redeem.extend([2; 32]);
        assert_eq!(
            encode(Message::Redeem {
                invite: [1; 16],
                proof: [2; 32]
            }),
            redeem
        );
        assert_eq!(encode(Message::Bye(ByeReason::InviteUsed)), [5, 9]);
        // Want: index 8, count 1, one 32-byte hash.
        let mut want = vec![8, 1];
        want.extend([5; 32]);
        assert_eq!(encode(Message::Want(vec![ChangeHash([5; 32])])), want);
        // Snapshot: index 9, the checkpoint's hash, bytes 300 (fb 2c 01);
        // SnapshotPart: index 10, length 2, the bytes.
        let mut snapshot = vec![9];
        snapshot.extend([6; 32]);
        snapshot.extend([251, 0x2C, 0x01]);
        assert_eq!(
            encode(Message::Snapshot {
                checkpoint: ChangeHash([6; 32]),
                bytes: 300
            }),
            snapshot
        );
        assert_eq!(
            encode(Message::SnapshotPart(vec![0xAB, 0xCD])),
            [10, 2, 0xAB, 0xCD]
        );
        assert_eq!(encode(Message::Bye(ByeReason::SnapshotPending)), [5, 10]);
    }

    /// A `Snapshot` announces at least one byte; a `SnapshotPart` holds 1
    /// to `SNAPSHOT_PART_BYTES_MAX`.
    #[test]
    fn snapshot_bounds() {
        let decode = |message: Message| Message::decode(&message.encode().expect("encodes"));
        assert!(matches!(
            decode(Message::Snapshot {
                checkpoint: ChangeHash([1; 32]),
                bytes: 0
            }),
            Err(Error::MalformedMessage { .. })
        ));
        for (bytes, ok) in [
            (0, false),
            (1, true),
            (SNAPSHOT_PART_BYTES_MAX, true),
            (SNAPSHOT_PART_BYTES_MAX + 1, false),
        ] {
            assert_eq!(
                decode(Message::SnapshotPart(vec![7; bytes])).is_ok(),
                ok,
                "{bytes}"
            );
        }
    }

    /// Trailing bytes, an unknown variant, a truncated message and a
    /// container claiming more than a message can hold are all refused.
    #[test]
    fn hostile_bytes_refused() {
        let mut trailing = Message::Keepalive.encode().expect("encodes");
        trailing.push(0);
        assert!(matches!(
            Message::decode(&trailing),
            Err(Error::MalformedMessage { .. })
        ));
        for bytes in [&[8u8][..], &[5, 11], &[7, 1], &[], &[0, 1], &[11]] {
            assert!(
                matches!(Message::decode(bytes), Err(Error::MalformedMessage { .. })),
                "{bytes:?}"
            );
        }
        // Changes claiming u32::MAX entries: refused without allocating.
        let claim = [2u8, 252, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            Message::decode(&claim),
            Err(Error::MalformedMessage { .. })
        ));
    }

    /// Too many changes in one batch is a protocol error even when small.
    #[test]
    fn oversized_batch_refused() {
        let message = Message::Changes(vec![Vec::new(); BATCH_CHANGES_MAX + 1]);
        assert!(matches!(
            Message::decode(&message.encode().expect("encodes")),
            Err(Error::MalformedMessage { .. })
        ));
    }

    /// A `Want` names 1 to `WANT_HASHES_MAX` changes: an empty one, or one
    /// naming more, is refused at decode.
    #[test]
    fn want_bounds() {
        let decode = |count: usize| {
            let message = Message::Want(vec![ChangeHash([1; 32]); count]);
            Message::decode(&message.encode().expect("encodes"))
        };
        assert!(matches!(decode(0), Err(Error::MalformedMessage { .. })));
        assert!(decode(1).is_ok());
        assert!(decode(WANT_HASHES_MAX).is_ok());
        assert!(matches!(
            decode(WANT_HASHES_MAX + 1),
            Err(Error::MalformedMessage { .. })
        ));
    }

    /// A message over the limit is an error to the caller, not a panic.
    #[test]
    fn oversized_message_is_an_error() {
        let message = Message::Changes(vec![vec![0; MESSAGE_BYTES_MAX]]);
        assert!(matches!(
            message.encode(),
            Err(Error::MessageTooLarge { max, .. }) if max == MESSAGE_BYTES_MAX as u64
        ));
    }

    /// The proof of the database id: a vector computed with blake3's keyed
    /// hash directly, over the bytes PROTOCOL.md lists; and it binds the
    /// database, the connection and the sender.
    #[test]
    fn database_proof_vector_and_binding() {
        let database = DatabaseId([7; 32]);
        let handshake_hash = [8; 32];
        let sender = Author([9; 32]);
        let mut input = b"peers sync hello database proof v2".to_vec();
        input.extend_from_slice(&[8; 32]);
        input.extend_from_slice(&[9; 32]);
        let expected = blake3::keyed_hash(&[7; 32], &input);
        let proof = database_proof(database, &handshake_hash, &sender);
        assert_eq!(&proof, expected.as_bytes());
        assert_eq!(
            hex::encode(proof),
            "45100e360249c4ca38bd1328c6a12bcf14b848cf59ea4f0f68c64a39c8f8ebb1",
            "PROTOCOL.md's vector"
        );
        let hello = hello(database, &handshake_hash, &sender, [0; 32], true);
        assert!(proves_database(&hello, database, &handshake_hash, &sender));
        assert!(!proves_database(
            &hello,
            DatabaseId([6; 32]),
            &handshake_hash,
            &sender
        ));
        assert!(!proves_database(&hello, database, &[0; 32], &sender));
        // Reflected: the proof names its sender, not the peer that echoes it.
        assert!(!proves_database(
            &hello,
            database,
            &handshake_hash,
            &Author([1; 32])
        ));
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate((1, 1), (1, 1)), Some(1));
        assert_eq!(negotiate((1, 3), (2, 5)), Some(3));
        assert_eq!(negotiate((1, 1), (2, 2)), None);
    }

    /// A `Reconcile` whose shape is wrong is malformed at decoding.
    #[test]
    fn malformed_reconcile_refused() {
        let bounded_last = Message::Reconcile(vec![Range {
            upper: Some(vec![1; 32]),
            kind: crate::RangeKind::Skip,
        }]);
        let bytes = bounded_last.encode().expect("encodes");
        assert!(matches!(
            Message::decode(&bytes),
            Err(Error::MalformedMessage { .. })
        ));
    }
}
