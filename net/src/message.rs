//! The sync protocol's messages and their bincode layout
//! (docs/PROTOCOL.md "Sync protocol").
//!
//! Format of every message: `bincode 2.0.1, standard config (varint integers,
//! little endian)` of [`Message`]: a varint variant index, then the variant's
//! fields in order. A message is one [`crate::SecureChannel`] message, so it
//! is never longer than [`MESSAGE_BYTES_MAX`]; [`Message::decode`] also
//! refuses trailing bytes and any container that claims more than that.

use bincode::{Decode, Encode};
use peers_engine::{Author, ChangeHash, DatabaseId, Head, VersionVector};

use crate::error::{Error, Result};
use crate::frame::MESSAGE_BYTES_MAX;

/// The sync protocol version this build speaks (lowest and highest).
pub const SYNC_VERSION: u16 = 1;
/// The lowest sync protocol version this build speaks.
pub const SYNC_VERSION_MIN: u16 = 1;
/// A `Changes` message holds at most this many changes...
pub const BATCH_CHANGES_MAX: usize = 4096;
/// ...and stops growing once its changes reach this many bytes (a single
/// larger change still travels alone: [`MESSAGE_BYTES_MAX`] has room for it).
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Most authors a `Vector` message may list: 72 bytes each must fit in one
/// message. Larger author sets need range-based reconciliation (PROTOCOL.md).
pub const VECTOR_AUTHORS_MAX: usize = MESSAGE_BYTES_MAX / 80;

const _: () = assert!(BATCH_BYTES_MAX + BATCH_CHANGES_MAX * 8 < MESSAGE_BYTES_MAX);

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
    /// The database the sender syncs over this connection.
    pub database: [u8; 32],
    /// [`VersionVector::digest`] of the sender's vector.
    pub digest: [u8; 32],
    /// Whether the sender wants the connection to stay open after catching
    /// up; it does only when both say so.
    pub live: bool,
}

/// One author's entry in a `Vector` message.
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
    /// The peer's database is not the sender's.
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
        })
    }
}

/// A sync protocol message. The variant order is the wire's variant index.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Message {
    /// Index 0: see [`Hello`].
    Hello(Hello),
    /// Index 1: the sender's version vector, in author order.
    Vector(Vec<VectorEntry>),
    /// Index 2: encoded changes (FORMAT.md "Change"), in the sender's log
    /// order.
    Changes(Vec<Vec<u8>>),
    /// Index 3: the sender has sent every change the receiver lacked when
    /// the vectors were exchanged; `changes` counts them.
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
}

impl Message {
    /// Short name for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Vector(_) => "Vector",
            Message::Changes(_) => "Changes",
            Message::CaughtUp { .. } => "CaughtUp",
            Message::Keepalive => "Keepalive",
            Message::Bye(_) => "Bye",
            Message::Applied { .. } => "Applied",
        }
    }

    /// The message's bytes (at most [`MESSAGE_BYTES_MAX`]).
    pub fn encode(&self) -> Vec<u8> {
        let bytes = bincode::encode_to_vec(self, config()).expect("encoding into a Vec");
        assert!(
            bytes.len() <= MESSAGE_BYTES_MAX,
            "we build bounded messages"
        );
        bytes
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
            Message::Vector(entries) if entries.len() > VECTOR_AUTHORS_MAX => {
                Err(malformed(format!("vector of {} authors", entries.len())))
            }
            Message::Changes(changes) if changes.len() > BATCH_CHANGES_MAX => {
                Err(malformed(format!("batch of {} changes", changes.len())))
            }
            _ => Ok(message),
        }
    }
}

/// A version vector as `Vector` entries.
pub(crate) fn vector_entries(vector: &VersionVector) -> Vec<VectorEntry> {
    vector
        .iter()
        .map(|(author, head)| VectorEntry {
            author: author.0,
            seq: head.seq,
            hash: head.hash.0,
        })
        .collect()
}

/// `Vector` entries as a version vector; a repeated author is malformed.
pub(crate) fn vector_from_entries(entries: &[VectorEntry]) -> Result<VersionVector> {
    let mut vector = VersionVector::new();
    for entry in entries {
        let author = Author(entry.author);
        if vector.get(&author).is_some() {
            return Err(Error::MalformedMessage {
                bytes: 0,
                reason: format!("author {author} twice in a vector"),
            });
        }
        vector.insert(
            author,
            Head {
                seq: entry.seq,
                hash: ChangeHash(entry.hash),
            },
        );
    }
    Ok(vector)
}

/// The sync version two sides agree on, if any: the highest both speak.
pub(crate) fn negotiate(ours: (u16, u16), theirs: (u16, u16)) -> Option<u16> {
    let high = ours.1.min(theirs.1);
    let low = ours.0.max(theirs.0);
    (high >= low).then_some(high)
}

/// Our `Hello` for `database` at `vector`.
pub(crate) fn hello(database: DatabaseId, vector: &VersionVector, live: bool) -> Hello {
    Hello {
        version_min: SYNC_VERSION_MIN,
        version_max: SYNC_VERSION,
        database: database.0,
        digest: vector.digest(),
        live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_hello() -> Message {
        Message::Hello(Hello {
            version_min: 1,
            version_max: 1,
            database: [7; 32],
            digest: [9; 32],
            live: true,
        })
    }

    /// Every variant survives a round trip.
    #[test]
    fn round_trip() {
        let messages = [
            sample_hello(),
            Message::Vector(vec![VectorEntry {
                author: [1; 32],
                seq: 300,
                hash: [2; 32],
            }]),
            Message::Changes(vec![vec![1, 2, 3], vec![]]),
            Message::CaughtUp { changes: 70_000 },
            Message::Keepalive,
            Message::Bye(ByeReason::RefusedChange),
            Message::Applied { changes: 3 },
        ];
        for message in messages {
            assert_eq!(
                Message::decode(&message.encode()).expect("decodes"),
                message
            );
        }
    }

    /// The byte layout PROTOCOL.md draws: variant index, then the fields;
    /// varints below 251 are one byte, 251 prefixes a u16.
    #[test]
    fn layout_vectors() {
        let mut expected = vec![0u8, 1, 1];
        expected.extend_from_slice(&[7; 32]);
        expected.extend_from_slice(&[9; 32]);
        expected.push(1);
        assert_eq!(sample_hello().encode(), expected);
        let vector = Message::Vector(vec![VectorEntry {
            author: [1; 32],
            seq: 300,
            hash: [2; 32],
        }]);
        let mut expected = vec![1u8, 1];
        expected.extend_from_slice(&[1; 32]);
        expected.extend_from_slice(&[251, 0x2C, 0x01]);
        expected.extend_from_slice(&[2; 32]);
        assert_eq!(vector.encode(), expected);
        assert_eq!(
            Message::Changes(vec![vec![0xAA, 0xBB]]).encode(),
            [2, 1, 2, 0xAA, 0xBB]
        );
        assert_eq!(Message::CaughtUp { changes: 5 }.encode(), [3, 5]);
        assert_eq!(Message::Keepalive.encode(), [4]);
        assert_eq!(Message::Bye(ByeReason::WrongDatabase).encode(), [5, 1]);
        assert_eq!(
            Message::Applied { changes: 300 }.encode(),
            [6, 251, 0x2C, 0x01]
        );
    }

    /// Trailing bytes, an unknown variant, a truncated message and a
    /// container claiming more than a message can hold are all refused.
    #[test]
    fn hostile_bytes_refused() {
        let mut trailing = Message::Keepalive.encode();
        trailing.push(0);
        assert!(matches!(
            Message::decode(&trailing),
            Err(Error::MalformedMessage { .. })
        ));
        for bytes in [&[7u8][..], &[5, 9], &[], &[0, 1]] {
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
            Message::decode(&message.encode()),
            Err(Error::MalformedMessage { .. })
        ));
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate((1, 1), (1, 1)), Some(1));
        assert_eq!(negotiate((1, 3), (2, 5)), Some(3));
        assert_eq!(negotiate((1, 1), (2, 2)), None);
    }

    /// A vector that names an author twice is malformed.
    #[test]
    fn repeated_author_refused() {
        let entry = VectorEntry {
            author: [1; 32],
            seq: 1,
            hash: [0; 32],
        };
        assert!(vector_from_entries(&[entry, entry]).is_err());
        let vector = vector_from_entries(&[entry]).expect("one author");
        assert_eq!(vector_entries(&vector), vec![entry]);
    }
}
