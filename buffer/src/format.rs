//! The buffer's byte formats (docs/SERVICES.md "Blind sync buffer"): the
//! keys a member derives, the sealed envelope, and the wire's requests and
//! responses. This module is their only implementation; every decoder takes
//! bytes from an adversary (a client, for the server; the server, for a
//! client) and returns a typed error.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use peers_engine::{CHANGE_BYTES_MAX, DatabaseId, Identity};

use crate::error::{EnvelopeFault, WireError};

/// Version of every format on SERVICES.md's buffer page (envelope, wire,
/// and the store's object names). A reader refuses any other. Version 2
/// files envelopes under time buckets (see `Server`).
pub const BUFFER_FORMAT_VERSION: u8 = 2;

/// blake3 `derive_key` context of a database's buffer key.
pub(crate) const BUFFER_KEY_CONTEXT: &str = "peers-buffer v1 buffer key";
/// Prefix of the message a space key signs for a put.
pub(crate) const PUT_SIGNATURE_DOMAIN: &[u8] = b"peers-buffer v1 put\0";
/// Magic of a sealed envelope.
pub(crate) const ENVELOPE_MAGIC: [u8; 8] = *b"PEERSENV";

/// Length of one epoch: a week. A space (and its keys) is per epoch, so
/// the server cannot link one week's envelopes of a database to the next's.
pub const EPOCH_MS: u64 = 7 * 24 * 3600 * 1000;
/// Epochs a reader fetches: the current one and the two before it, which
/// cover the default two weeks a buffer keeps.
pub const EPOCHS_READ: u64 = 3;

/// `magic | version u32 | nonce[24]` before an envelope's ciphertext.
pub(crate) const ENVELOPE_HEADER_BYTES: usize = 8 + 4 + 24;
/// The Poly1305 tag after the ciphertext.
pub(crate) const TAG_BYTES: usize = 16;
/// What sealing adds to a padded plaintext.
pub const ENVELOPE_OVERHEAD_BYTES: usize = ENVELOPE_HEADER_BYTES + TAG_BYTES;
/// The smallest padded plaintext.
pub const PADDED_BYTES_MIN: usize = 256;
/// The largest padded plaintext: the next power of two above the largest
/// change and its length prefix.
pub const PADDED_BYTES_MAX: usize = (CHANGE_BYTES_MAX + 4).next_power_of_two();
/// The largest envelope.
pub const ENVELOPE_BYTES_MAX: usize = PADDED_BYTES_MAX + ENVELOPE_OVERHEAD_BYTES;
/// The smallest envelope.
pub const ENVELOPE_BYTES_MIN: usize = PADDED_BYTES_MIN + ENVELOPE_OVERHEAD_BYTES;

/// Largest frame either side sends (one put or one get answer): a
/// largest envelope and room for the rest.
pub const FRAME_BYTES_MAX: usize = ENVELOPE_BYTES_MAX + 64 * 1024;
/// Most envelopes one put carries.
pub const PUT_ENVELOPES_MAX: usize = 1024;
/// Most envelopes one get answer carries.
pub const GET_ENVELOPES_MAX: usize = 1024;
/// A get answer stops adding envelopes once it holds this many bytes (it
/// always carries at least one, if there is one).
pub const GET_ANSWER_BYTES_SOFT: usize = 4 * 1024 * 1024;
/// Longest error message in an answer.
pub const MESSAGE_BYTES_MAX: usize = 1024;

/// Request kinds.
const KIND_PUT: u8 = 1;
const KIND_GET: u8 = 2;
/// Answer statuses.
const STATUS_OK: u8 = 0;
const STATUS_ERROR: u8 = 1;

const _: () = assert!(PADDED_BYTES_MAX == 8 * 1024 * 1024);
const _: () = assert!(PUT_ENVELOPES_MAX <= u16::MAX as usize);
const _: () = assert!(GET_ENVELOPES_MAX <= u16::MAX as usize);

/// A database's buffer key: what every member derives from the database
/// id (a secret members hold, which never travels on the wire) and the
/// buffer never learns.
#[derive(Clone)]
pub struct BufferKey([u8; 32]);

impl std::fmt::Debug for BufferKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BufferKey(..)")
    }
}

impl BufferKey {
    /// The buffer key of `database`.
    pub fn of(database: &DatabaseId) -> BufferKey {
        BufferKey(blake3::derive_key(BUFFER_KEY_CONTEXT, &database.0))
    }

    fn mac(&self, label: &[u8], epoch: u64) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(label);
        hasher.update(&epoch.to_le_bytes());
        *hasher.finalize().as_bytes()
    }

    /// The space of `epoch`: its tag, its write key and its sealing keys.
    pub fn space(&self, epoch: u64) -> Space {
        let writer = Identity::from_secret_bytes(self.mac(b"space", epoch));
        Space {
            epoch,
            tag: writer.author().0,
            writer,
            seal_key: self.mac(b"seal", epoch),
            nonce_key: self.mac(b"nonce", epoch),
        }
    }
}

/// The epoch of a time (ms since the Unix epoch).
pub fn epoch_of(unix_ms: u64) -> u64 {
    unix_ms / EPOCH_MS
}

/// One database's space in one epoch: where its members put and get
/// envelopes. The tag is the public key of the space's write key, which
/// only members can derive; the server checks a put's signature against
/// the tag, so strangers cannot fill a space.
pub struct Space {
    epoch: u64,
    tag: [u8; 32],
    writer: Identity,
    seal_key: [u8; 32],
    nonce_key: [u8; 32],
}

impl std::fmt::Debug for Space {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Space")
            .field("epoch", &self.epoch)
            .field("tag", &hex::encode(&self.tag[..6]))
            .finish_non_exhaustive()
    }
}

impl Space {
    /// Its epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Its tag: what the server files its envelopes under.
    pub fn tag(&self) -> [u8; 32] {
        self.tag
    }

    fn aad(&self) -> [u8; 8 + 4 + 32] {
        let mut aad = [0u8; 44];
        aad[..8].copy_from_slice(&ENVELOPE_MAGIC);
        aad[8..12].copy_from_slice(&u32::from(BUFFER_FORMAT_VERSION).to_le_bytes());
        aad[12..].copy_from_slice(&self.tag);
        aad
    }

    /// Seals one signed change's bytes into an envelope. The nonce is a MAC
    /// of the padded plaintext, so the same change seals to the same
    /// envelope in a space (the server keeps one copy however many members
    /// push it). `None` if the change is over [`CHANGE_BYTES_MAX`].
    pub fn seal(&self, change: &[u8]) -> Option<Vec<u8>> {
        if change.len() > CHANGE_BYTES_MAX {
            return None;
        }
        let padded_len = padded_size(change.len());
        let mut plaintext = Vec::with_capacity(padded_len);
        plaintext.extend_from_slice(&(change.len() as u32).to_le_bytes());
        plaintext.extend_from_slice(change);
        plaintext.resize(padded_len, 0);
        let mac = blake3::keyed_hash(&self.nonce_key, &plaintext);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&mac.as_bytes()[..24]);
        let aad = self.aad();
        let ciphertext = XChaCha20Poly1305::new((&self.seal_key).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .ok()?;
        let mut envelope = Vec::with_capacity(ENVELOPE_HEADER_BYTES + ciphertext.len());
        envelope.extend_from_slice(&ENVELOPE_MAGIC);
        envelope.extend_from_slice(&u32::from(BUFFER_FORMAT_VERSION).to_le_bytes());
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&ciphertext);
        Some(envelope)
    }

    /// Opens an envelope of this space: the change's bytes (not yet
    /// decoded nor verified: the engine does both, as for any peer's).
    pub fn open(&self, envelope: &[u8]) -> Result<Vec<u8>, EnvelopeFault> {
        check_envelope(envelope)?;
        let (header, ciphertext) = envelope.split_at(ENVELOPE_HEADER_BYTES);
        let aad = self.aad();
        let plaintext = XChaCha20Poly1305::new((&self.seal_key).into())
            .decrypt(
                XNonce::from_slice(&header[12..36]),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| EnvelopeFault::Unauthentic)?;
        let (prefix, rest) = plaintext
            .split_first_chunk::<4>()
            .ok_or(EnvelopeFault::Malformed("no length"))?;
        let len = u32::from_le_bytes(*prefix) as usize;
        if len > rest.len() || len > CHANGE_BYTES_MAX {
            return Err(EnvelopeFault::Malformed("length past the padding"));
        }
        let (change, padding) = rest.split_at(len);
        if plaintext.len() != padded_size(len) || padding.iter().any(|byte| *byte != 0) {
            return Err(EnvelopeFault::Malformed("padding not canonical"));
        }
        Ok(change.to_vec())
    }

    /// The signature a put of `envelopes` to this space carries.
    pub fn sign_put(&self, envelopes: &[Vec<u8>]) -> [u8; 64] {
        self.writer
            .sign_bytes(&put_message(&self.tag, envelopes.iter().map(Vec::as_slice)))
    }
}

/// The padded plaintext size of a change of `len` bytes: its length
/// prefix and bytes, to the next power of two, at least
/// [`PADDED_BYTES_MIN`].
pub fn padded_size(len: usize) -> usize {
    (len + 4).next_power_of_two().max(PADDED_BYTES_MIN)
}

/// What the server checks of an envelope it cannot open: its size (a
/// padded size and the overhead), magic and version.
pub fn check_envelope(envelope: &[u8]) -> Result<(), EnvelopeFault> {
    let bytes = envelope.len();
    if bytes < ENVELOPE_BYTES_MIN {
        return Err(EnvelopeFault::Size { bytes });
    }
    if bytes > ENVELOPE_BYTES_MAX {
        return Err(EnvelopeFault::Size { bytes });
    }
    if !(bytes - ENVELOPE_OVERHEAD_BYTES).is_power_of_two() {
        return Err(EnvelopeFault::Size { bytes });
    }
    if envelope[..8] != ENVELOPE_MAGIC {
        return Err(EnvelopeFault::BadMagic);
    }
    let version = u32::from_le_bytes([envelope[8], envelope[9], envelope[10], envelope[11]]);
    if version != u32::from(BUFFER_FORMAT_VERSION) {
        return Err(EnvelopeFault::UnsupportedVersion { found: version });
    }
    Ok(())
}

/// An envelope's content hash: blake3 of its bytes.
pub fn envelope_hash(envelope: &[u8]) -> [u8; 32] {
    *blake3::hash(envelope).as_bytes()
}

/// What a put's signature covers: the domain, the tag, the count and each
/// envelope's hash.
pub(crate) fn put_message<'a>(
    tag: &[u8; 32],
    envelopes: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut message = Vec::with_capacity(PUT_SIGNATURE_DOMAIN.len() + 34 + 32 * envelopes.len());
    message.extend_from_slice(PUT_SIGNATURE_DOMAIN);
    message.extend_from_slice(tag);
    message.extend_from_slice(&(envelopes.len() as u16).to_le_bytes());
    for envelope in envelopes {
        message.extend_from_slice(&envelope_hash(envelope));
    }
    message
}

/// Where a reader is in a space: after the envelope the server received at
/// `received_ms` with this hash (the order the server lists them in).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// When the server received it (its clock, ms since the Unix epoch).
    pub received_ms: u64,
    /// Its content hash.
    pub hash: [u8; 32],
}

/// A request, client to server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Store envelopes in a space.
    Put {
        /// The space's tag.
        tag: [u8; 32],
        /// The envelopes, 1 ..= [`PUT_ENVELOPES_MAX`].
        envelopes: Vec<Vec<u8>>,
        /// The space key's signature over [`put_message`].
        signature: [u8; 64],
    },
    /// Read a space's envelopes after a cursor.
    Get {
        /// The space's tag.
        tag: [u8; 32],
        /// Envelopes strictly after this one (all, from the default).
        after: Cursor,
        /// At most this many, 1 ..= [`GET_ENVELOPES_MAX`].
        max: u16,
    },
}

/// One envelope as the server lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// When it was received (the server's clock).
    pub received_ms: u64,
    /// When the server deletes it.
    pub expiry_ms: u64,
    /// The envelope.
    pub envelope: Vec<u8>,
}

/// Why the server refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The request does not decode.
    #[error("malformed request")]
    Malformed,
    /// Another wire version.
    #[error("unsupported wire version")]
    Version,
    /// The put's signature does not verify for the space's tag: the writer
    /// does not hold the space's key.
    #[error("no capability to write this space")]
    Capability,
    /// The space holds its quota.
    #[error("the space is over its quota")]
    SpaceQuota,
    /// This client wrote its quota for now.
    #[error("this client is over its quota; try later")]
    ClientQuota,
    /// An envelope is not one (size, magic, version).
    #[error("not an envelope")]
    Envelope,
    /// The server's store failed.
    #[error("the buffer's store failed")]
    Store,
    /// Too many requests at once.
    #[error("busy")]
    Busy,
}

impl Refused {
    fn code(self) -> u8 {
        match self {
            Refused::Malformed => 1,
            Refused::Version => 2,
            Refused::Capability => 3,
            Refused::SpaceQuota => 4,
            Refused::ClientQuota => 5,
            Refused::Envelope => 6,
            Refused::Store => 7,
            Refused::Busy => 8,
        }
    }

    fn from_code(code: u8) -> Option<Refused> {
        Some(match code {
            1 => Refused::Malformed,
            2 => Refused::Version,
            3 => Refused::Capability,
            4 => Refused::SpaceQuota,
            5 => Refused::ClientQuota,
            6 => Refused::Envelope,
            7 => Refused::Store,
            8 => Refused::Busy,
            _ => return None,
        })
    }
}

/// An answer, server to client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A put was stored: how many envelopes were new, and how many the
    /// space already held.
    Stored {
        /// New envelopes.
        stored: u16,
        /// Envelopes the space already held.
        duplicates: u16,
    },
    /// Envelopes after the cursor, in order; `more` if there are others.
    Envelopes {
        /// The envelopes.
        envelopes: Vec<Stored>,
        /// Whether the space holds more after the last.
        more: bool,
    },
    /// The request was refused.
    Refused {
        /// Why.
        reason: Refused,
        /// Details for a person.
        message: String,
    },
}

/// Reads bytes off a frame, each read checked against what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn end(&self) -> Result<(), WireError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }

    fn version(&mut self) -> Result<(), WireError> {
        let version = self.u8()?;
        if version != BUFFER_FORMAT_VERSION {
            return Err(WireError::Version { found: version });
        }
        Ok(())
    }
}

impl Request {
    /// The request's frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![BUFFER_FORMAT_VERSION];
        match self {
            Request::Put {
                tag,
                envelopes,
                signature,
            } => {
                out.push(KIND_PUT);
                out.extend_from_slice(tag);
                out.extend_from_slice(&(envelopes.len() as u16).to_le_bytes());
                for envelope in envelopes {
                    out.extend_from_slice(&(envelope.len() as u32).to_le_bytes());
                    out.extend_from_slice(envelope);
                }
                out.extend_from_slice(signature);
            }
            Request::Get { tag, after, max } => {
                out.push(KIND_GET);
                out.extend_from_slice(tag);
                out.extend_from_slice(&after.received_ms.to_le_bytes());
                out.extend_from_slice(&after.hash);
                out.extend_from_slice(&max.to_le_bytes());
            }
        }
        out
    }

    /// Decodes a frame body from a client. Envelopes are only
    /// length-checked here; the server checks each with [`check_envelope`].
    pub fn decode(bytes: &[u8]) -> Result<Request, WireError> {
        if bytes.len() > FRAME_BYTES_MAX {
            return Err(WireError::TooLarge { bytes: bytes.len() });
        }
        let mut reader = Reader { bytes };
        reader.version()?;
        let request = match reader.u8()? {
            KIND_PUT => {
                let tag = reader.array()?;
                let count = reader.u16()? as usize;
                if count == 0 || count > PUT_ENVELOPES_MAX {
                    return Err(WireError::Count { count });
                }
                // Each envelope takes at least its length and the smallest
                // envelope: refuse a count the frame cannot hold before
                // allocating for it.
                if count.saturating_mul(4 + ENVELOPE_BYTES_MIN) > reader.bytes.len() {
                    return Err(WireError::Truncated);
                }
                let mut envelopes = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = reader.u32()? as usize;
                    if len > ENVELOPE_BYTES_MAX {
                        return Err(WireError::TooLarge { bytes: len });
                    }
                    envelopes.push(reader.take(len)?.to_vec());
                }
                let signature = reader.array()?;
                Request::Put {
                    tag,
                    envelopes,
                    signature,
                }
            }
            KIND_GET => {
                let tag = reader.array()?;
                let after = Cursor {
                    received_ms: reader.u64()?,
                    hash: reader.array()?,
                };
                let max = reader.u16()?;
                if max == 0 || max as usize > GET_ENVELOPES_MAX {
                    return Err(WireError::Count {
                        count: max as usize,
                    });
                }
                Request::Get { tag, after, max }
            }
            kind => return Err(WireError::Kind { kind }),
        };
        reader.end()?;
        Ok(request)
    }
}

impl Answer {
    /// The answer's frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![BUFFER_FORMAT_VERSION];
        match self {
            Answer::Stored { stored, duplicates } => {
                out.push(STATUS_OK);
                out.push(KIND_PUT);
                out.extend_from_slice(&stored.to_le_bytes());
                out.extend_from_slice(&duplicates.to_le_bytes());
            }
            Answer::Envelopes { envelopes, more } => {
                out.push(STATUS_OK);
                out.push(KIND_GET);
                out.extend_from_slice(&(envelopes.len() as u16).to_le_bytes());
                for stored in envelopes {
                    out.extend_from_slice(&stored.received_ms.to_le_bytes());
                    out.extend_from_slice(&stored.expiry_ms.to_le_bytes());
                    out.extend_from_slice(&(stored.envelope.len() as u32).to_le_bytes());
                    out.extend_from_slice(&stored.envelope);
                }
                out.push(u8::from(*more));
            }
            Answer::Refused { reason, message } => {
                out.push(STATUS_ERROR);
                out.push(reason.code());
                let mut end = message.len().min(MESSAGE_BYTES_MAX);
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                out.extend_from_slice(&(end as u16).to_le_bytes());
                out.extend_from_slice(&message.as_bytes()[..end]);
            }
        }
        out
    }

    /// Decodes a frame body from the server.
    pub fn decode(bytes: &[u8]) -> Result<Answer, WireError> {
        if bytes.len() > FRAME_BYTES_MAX {
            return Err(WireError::TooLarge { bytes: bytes.len() });
        }
        let mut reader = Reader { bytes };
        reader.version()?;
        let answer = match reader.u8()? {
            STATUS_OK => match reader.u8()? {
                KIND_PUT => Answer::Stored {
                    stored: reader.u16()?,
                    duplicates: reader.u16()?,
                },
                KIND_GET => {
                    let count = reader.u16()? as usize;
                    if count > GET_ENVELOPES_MAX {
                        return Err(WireError::Count { count });
                    }
                    if count.saturating_mul(20 + ENVELOPE_BYTES_MIN) > reader.bytes.len() {
                        return Err(WireError::Truncated);
                    }
                    let mut envelopes = Vec::with_capacity(count);
                    for _ in 0..count {
                        let received_ms = reader.u64()?;
                        let expiry_ms = reader.u64()?;
                        let len = reader.u32()? as usize;
                        if len > ENVELOPE_BYTES_MAX {
                            return Err(WireError::TooLarge { bytes: len });
                        }
                        envelopes.push(Stored {
                            received_ms,
                            expiry_ms,
                            envelope: reader.take(len)?.to_vec(),
                        });
                    }
                    let more = match reader.u8()? {
                        0 => false,
                        1 => true,
                        _ => return Err(WireError::Flag),
                    };
                    Answer::Envelopes { envelopes, more }
                }
                kind => return Err(WireError::Kind { kind }),
            },
            STATUS_ERROR => {
                let code = reader.u8()?;
                let reason = Refused::from_code(code).ok_or(WireError::Kind { kind: code })?;
                let len = reader.u16()? as usize;
                if len > MESSAGE_BYTES_MAX {
                    return Err(WireError::TooLarge { bytes: len });
                }
                let message = String::from_utf8_lossy(reader.take(len)?).into_owned();
                Answer::Refused { reason, message }
            }
            status => return Err(WireError::Kind { kind: status }),
        };
        reader.end()?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/SERVICES.md "Blind sync buffer", "Test vectors": inputs.
    const DATABASE: [u8; 32] = [0x11; 32];
    const EPOCH: u64 = 2900;
    /// FORMAT.md's first change test vector would do as well; any bytes
    /// seal, since the buffer does not decode them.
    const CHANGE: &[u8] = b"hello, buffer";

    fn space() -> Space {
        BufferKey::of(&DatabaseId(DATABASE)).space(EPOCH)
    }

    fn put() -> Request {
        let space = space();
        let envelopes = vec![space.seal(CHANGE).expect("seals")];
        let signature = space.sign_put(&envelopes);
        Request::Put {
            tag: space.tag(),
            envelopes,
            signature,
        }
    }

    fn get() -> Request {
        Request::Get {
            tag: space().tag(),
            after: Cursor {
                received_ms: 1_764_288_000_000,
                hash: [0x44; 32],
            },
            max: 256,
        }
    }

    fn answer() -> Answer {
        Answer::Envelopes {
            envelopes: vec![Stored {
                received_ms: 1_764_288_000_000,
                expiry_ms: 1_765_497_600_000,
                envelope: space().seal(CHANGE).expect("seals"),
            }],
            more: false,
        }
    }

    /// The values of SERVICES.md's vectors, by label.
    fn vector(label: &str) -> String {
        let key = BufferKey::of(&DatabaseId(DATABASE));
        let space = key.space(EPOCH);
        match label {
            "buffer_key" => hex::encode(key.0),
            "space_seed" => hex::encode(key.mac(b"space", EPOCH)),
            "tag" => hex::encode(space.tag),
            "seal_key" => hex::encode(space.seal_key),
            "nonce_key" => hex::encode(space.nonce_key),
            "envelope" => hex::encode(space.seal(CHANGE).expect("seals")),
            "envelope_hash" => hex::encode(envelope_hash(&space.seal(CHANGE).expect("seals"))),
            "put" => hex::encode(put().encode()),
            "get" => hex::encode(get().encode()),
            "answer" => hex::encode(answer().encode()),
            // Where a server files the answer's envelope (not hex: a path).
            "object_name" => crate::server::object_name(
                &space.tag(),
                1_764_288_000_000,
                &envelope_hash(&space.seal(CHANGE).expect("seals")),
                1_765_497_600_000,
            ),
            other => panic!("no vector {other}"),
        }
    }

    const VECTORS: [&str; 11] = [
        "buffer_key",
        "space_seed",
        "tag",
        "seal_key",
        "nonce_key",
        "envelope",
        "envelope_hash",
        "put",
        "get",
        "answer",
        "object_name",
    ];

    /// Every vector, as SERVICES.md prints it (`label hex` lines in its
    /// vector block).
    #[test]
    fn vectors_match_services_doc() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/SERVICES.md"),
        )
        .expect("docs/SERVICES.md");
        let section = doc
            .split_once("<!-- buffer vectors -->")
            .and_then(|(_, rest)| rest.split_once("<!-- /buffer vectors -->"))
            .expect("SERVICES.md has the buffer vectors block")
            .0;
        let mut seen = 0;
        for line in section.lines() {
            let Some((label, value)) = line.trim().split_once(' ') else {
                continue;
            };
            if VECTORS.contains(&label) {
                assert_eq!(value.trim(), vector(label), "{label}");
                seen += 1;
            }
        }
        assert_eq!(seen, VECTORS.len(), "every vector is in SERVICES.md");
    }

    #[test]
    fn python_vectors_agree() {
        peers_wal::testing::python_vectors_match(
            "python_vectors_agree",
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/buffer-vectors.py"),
            VECTORS.len(),
            vector,
        );
    }

    #[test]
    fn seal_open_round_trip_and_refusals() {
        let space = space();
        for len in [0, 1, 251, 252, 253, 1000, 70_000] {
            let change = vec![7u8; len];
            let envelope = space.seal(&change).expect("seals");
            assert_eq!(envelope.len(), padded_size(len) + ENVELOPE_OVERHEAD_BYTES);
            assert_eq!(space.open(&envelope).expect("opens"), change);
            // The same change seals to the same envelope (the server dedupes).
            assert_eq!(space.seal(&change).expect("seals"), envelope);
        }
        let envelope = space.seal(CHANGE).expect("seals");
        let mut altered = envelope.clone();
        altered[100] ^= 1;
        assert_eq!(space.open(&altered), Err(EnvelopeFault::Unauthentic));
        // Another epoch's space, or another database's, cannot open it.
        let other = BufferKey::of(&DatabaseId(DATABASE)).space(EPOCH + 1);
        assert_eq!(other.open(&envelope), Err(EnvelopeFault::Unauthentic));
        let stranger = BufferKey::of(&DatabaseId([0x12; 32])).space(EPOCH);
        assert_eq!(stranger.open(&envelope), Err(EnvelopeFault::Unauthentic));
        assert_eq!(
            space.open(&envelope[..envelope.len() - 1]),
            Err(EnvelopeFault::Size {
                bytes: envelope.len() - 1
            })
        );
        assert!(space.seal(&vec![0; CHANGE_BYTES_MAX + 1]).is_none());
    }

    #[test]
    fn wire_round_trips_and_refuses() {
        for request in [put(), get()] {
            assert_eq!(Request::decode(&request.encode()), Ok(request));
        }
        let refused = Answer::Refused {
            reason: Refused::SpaceQuota,
            message: "full".into(),
        };
        for answer in [
            answer(),
            Answer::Stored {
                stored: 3,
                duplicates: 1,
            },
            refused,
        ] {
            assert_eq!(Answer::decode(&answer.encode()), Ok(answer));
        }
        let encoded = put().encode();
        for end in 0..encoded.len() {
            assert!(Request::decode(&encoded[..end]).is_err(), "{end}");
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(Request::decode(&longer), Err(WireError::TrailingBytes));
        let mut version = encoded;
        // A version 1 client (before the bucketed store) is refused.
        version[0] = 1;
        assert_eq!(
            Request::decode(&version),
            Err(WireError::Version { found: 1 })
        );
        // A count the frame cannot hold is refused before allocating.
        let mut huge = vec![BUFFER_FORMAT_VERSION, KIND_PUT];
        huge.extend_from_slice(&[0; 32]);
        huge.extend_from_slice(&1024u16.to_le_bytes());
        assert_eq!(Request::decode(&huge), Err(WireError::Truncated));
    }
}
