//! Sealed payloads: what one client sends another through the server, encrypted to
//! the recipient's key and signed by the sender's. The server never parses them.
//!
//! ```text
//! Format: { version u8 = 1 | ephemeral X25519 public [32] | nonce [24] | XChaCha20-Poly1305 ciphertext }
//! Plaintext: { instance [16] | counter u64 | timestamp_ms u64 | body | signature [64] }
//! ```
//!
//! The checks [`open`] makes, in order, are listed on it and in `docs/PROTOCOL.md`.

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::error::SealError;

/// The sealed payload's version byte.
pub const SEAL_VERSION: u8 = 1;
/// blake3 `derive_key` context for the payload key.
pub const SEAL_KEY_CONTEXT: &str = "peers signal seal v1";
/// Domain tag of the payload signature (24 bytes; the last is 0x00).
pub const PAYLOAD_DOMAIN: &[u8] = b"peers signal payload v1\0";
/// How far a payload's timestamp may be from the receiver's clock, either way.
pub const TIMESTAMP_SKEW_MS_MAX: u64 = 120_000;
/// How many (sender, instance) pairs the replay guard remembers (least recently used goes first).
pub const REPLAY_ENTRIES_MAX: usize = 4096;

const EPHEMERAL_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
const INSTANCE_BYTES: usize = 16;
const SIGNATURE_BYTES: usize = 64;
/// Header before the ciphertext: version, ephemeral key, nonce.
const HEADER_BYTES: usize = 1 + EPHEMERAL_BYTES + NONCE_BYTES;
/// Plaintext fields before the body: instance, counter, timestamp.
const PLAIN_HEADER_BYTES: usize = INSTANCE_BYTES + 8 + 8;
/// Bytes a sealed payload adds to its body.
pub const SEAL_OVERHEAD_BYTES: usize =
    HEADER_BYTES + TAG_BYTES + PLAIN_HEADER_BYTES + SIGNATURE_BYTES;

const _: () = assert!(SEAL_OVERHEAD_BYTES == 169);

/// What a client proves and unseals with. net implements it over its Identity.
pub trait Keys: Send + Sync + 'static {
    /// Our ed25519 public key.
    fn public(&self) -> [u8; 32];
    /// An ed25519 signature of `message` with our key.
    fn sign(&self, message: &[u8]) -> [u8; 64];
    /// X25519 Diffie-Hellman between our ed25519 secret converted to X25519
    /// (ed25519-dalek's `SigningKey::to_scalar_bytes()`, used with
    /// `MontgomeryPoint::mul_clamped`) and `public` (an X25519 public key).
    fn agree(&self, public: &[u8; 32]) -> [u8; 32];
}

impl Keys for SigningKey {
    fn public(&self) -> [u8; 32] {
        self.verifying_key().to_bytes()
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        Signer::sign(self, message).to_bytes()
    }

    fn agree(&self, public: &[u8; 32]) -> [u8; 32] {
        MontgomeryPoint(*public)
            .mul_clamped(self.to_scalar_bytes())
            .to_bytes()
    }
}

/// The plaintext fields that make a payload fresh and ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Random per sending client (per `Client::connect`).
    pub instance: [u8; 16],
    /// Increases by one per payload from that instance.
    pub counter: u64,
    /// Sender's clock when sealing, Unix ms.
    pub timestamp_ms: u64,
}

/// A payload that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Its freshness fields.
    pub freshness: Freshness,
    /// The body the sender sealed.
    pub body: Vec<u8>,
}

/// Converts an ed25519 key to X25519 if it is a valid, strong (not small-order) key.
fn strong_x25519(key: &[u8; 32]) -> Option<MontgomeryPoint> {
    let key = VerifyingKey::from_bytes(key).ok()?;
    if key.is_weak() {
        return None;
    }
    Some(key.to_montgomery())
}

fn payload_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> [u8; 32] {
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(ephemeral);
    material[64..].copy_from_slice(recipient);
    blake3::derive_key(SEAL_KEY_CONTEXT, &material)
}

fn associated_data(from: &[u8; 32], to: &[u8; 32]) -> [u8; 64] {
    let mut ad = [0u8; 64];
    ad[..32].copy_from_slice(from);
    ad[32..].copy_from_slice(to);
    ad
}

fn signed_bytes(to: &[u8; 32], ephemeral: &[u8; 32], unsigned: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(PAYLOAD_DOMAIN.len() + 64 + unsigned.len());
    message.extend_from_slice(PAYLOAD_DOMAIN);
    message.extend_from_slice(to);
    message.extend_from_slice(ephemeral);
    message.extend_from_slice(unsigned);
    message
}

/// Seals with a fresh random ephemeral secret and nonce.
pub(crate) fn seal(
    keys: &dyn Keys,
    to: &[u8; 32],
    freshness: Freshness,
    body: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut ephemeral_secret = [0u8; 32];
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut ephemeral_secret)
        .expect("the operating system's random source is available");
    getrandom::fill(&mut nonce).expect("the operating system's random source is available");
    seal_with(keys, to, ephemeral_secret, nonce, freshness, body)
}

/// Seals with the given ephemeral secret and nonce (fixed ones make test vectors).
pub(crate) fn seal_with(
    keys: &dyn Keys,
    to: &[u8; 32],
    ephemeral_secret: [u8; 32],
    nonce: [u8; NONCE_BYTES],
    freshness: Freshness,
    body: &[u8],
) -> Result<Vec<u8>, SealError> {
    seal_as(
        keys,
        &keys.public(),
        to,
        ephemeral_secret,
        nonce,
        freshness,
        body,
    )
}

/// Seals claiming to be `from` while signing with `signer`: `from` equals
/// `signer.public()` except in tests of forgery.
fn seal_as(
    signer: &dyn Keys,
    from: &[u8; 32],
    to: &[u8; 32],
    ephemeral_secret: [u8; 32],
    nonce: [u8; NONCE_BYTES],
    freshness: Freshness,
    body: &[u8],
) -> Result<Vec<u8>, SealError> {
    let recipient = strong_x25519(to)
        .ok_or(SealError::WeakRecipientKey)?
        .to_bytes();
    let ephemeral = MontgomeryPoint::mul_base_clamped(ephemeral_secret).to_bytes();
    let shared = MontgomeryPoint(recipient)
        .mul_clamped(ephemeral_secret)
        .to_bytes();
    // Not reachable with a strong recipient key and a clamped scalar; checked anyway.
    if shared == [0u8; 32] {
        return Err(SealError::WeakRecipientKey);
    }
    let key = payload_key(&shared, &ephemeral, &recipient);

    let mut plaintext = Vec::with_capacity(PLAIN_HEADER_BYTES + body.len() + SIGNATURE_BYTES);
    plaintext.extend_from_slice(&freshness.instance);
    plaintext.extend_from_slice(&freshness.counter.to_le_bytes());
    plaintext.extend_from_slice(&freshness.timestamp_ms.to_le_bytes());
    plaintext.extend_from_slice(body);
    let signature = signer.sign(&signed_bytes(to, &ephemeral, &plaintext));
    plaintext.extend_from_slice(&signature);

    let cipher = XChaCha20Poly1305::new(&key.into());
    let aad = associated_data(from, to);
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any message under 256 GiB");

    let mut sealed = Vec::with_capacity(HEADER_BYTES + ciphertext.len());
    sealed.push(SEAL_VERSION);
    sealed.extend_from_slice(&ephemeral);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// Remembers the last counter accepted per (sender, instance), for the
/// [`REPLAY_ENTRIES_MAX`] most recently used pairs.
///
/// # Invariants
/// `entries.len() <= capacity`; every entry's `used` is below `tick`.
#[derive(Debug)]
pub struct ReplayGuard {
    entries: HashMap<([u8; 32], [u8; 16]), Entry>,
    tick: u64,
    capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    counter: u64,
    used: u64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(REPLAY_ENTRIES_MAX)
    }
}

impl ReplayGuard {
    /// A guard remembering up to `capacity` (sender, instance) pairs.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a replay guard remembers at least one sender");
        Self {
            entries: HashMap::new(),
            tick: 0,
            capacity,
        }
    }

    /// How many (sender, instance) pairs it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn check(&self, from: &[u8; 32], instance: &[u8; 16], counter: u64) -> Result<(), SealError> {
        match self.entries.get(&(*from, *instance)) {
            Some(entry) if counter <= entry.counter => Err(SealError::Replayed {
                counter,
                last: entry.counter,
            }),
            _ => Ok(()),
        }
    }

    fn accept(&mut self, from: &[u8; 32], instance: &[u8; 16], counter: u64) {
        let key = (*from, *instance);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            // Linear in the capacity, once per new sender instance beyond it.
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| *key)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            key,
            Entry {
                counter,
                used: self.tick,
            },
        );
        self.tick += 1;
        debug_assert!(self.entries.len() <= self.capacity);
    }
}

/// Opens a payload that the server delivered as from `from`, addressed to us
/// (`keys`). The checks, in order; the first that fails is the error:
///
/// 1. at least [`SEAL_OVERHEAD_BYTES`] long ([`SealError::Truncated`]);
/// 2. version byte is [`SEAL_VERSION`] ([`SealError::UnsupportedVersion`]);
/// 3. `from` is a valid, strong ed25519 key ([`SealError::WeakSenderKey`]);
/// 4. the X25519 agreement with the ephemeral key is not all zero ([`SealError::WeakEphemeralKey`]);
/// 5. XChaCha20-Poly1305 opens with associated data `from || to` ([`SealError::Decrypt`]);
/// 6. the signature verifies under `from` with `verify_strict` ([`SealError::BadSignature`]);
/// 7. the timestamp is within [`TIMESTAMP_SKEW_MS_MAX`] of `now_ms` ([`SealError::Stale`]);
/// 8. the counter is above the last accepted from (`from`, instance) ([`SealError::Replayed`]).
///
/// Only a payload that passes all of them updates `replay`.
pub fn open(
    keys: &dyn Keys,
    from: &[u8; 32],
    sealed: &[u8],
    now_ms: u64,
    replay: &mut ReplayGuard,
) -> Result<Opened, SealError> {
    if sealed.len() < SEAL_OVERHEAD_BYTES {
        return Err(SealError::Truncated {
            bytes: sealed.len(),
            min: SEAL_OVERHEAD_BYTES,
        });
    }
    let (header, ciphertext) = sealed.split_at(HEADER_BYTES);
    if header[0] != SEAL_VERSION {
        return Err(SealError::UnsupportedVersion { version: header[0] });
    }
    let mut ephemeral = [0u8; 32];
    ephemeral.copy_from_slice(&header[1..1 + EPHEMERAL_BYTES]);
    let nonce = XNonce::from_slice(&header[1 + EPHEMERAL_BYTES..]);
    let sender = VerifyingKey::from_bytes(from).map_err(|_| SealError::WeakSenderKey)?;
    if sender.is_weak() {
        return Err(SealError::WeakSenderKey);
    }
    let to = keys.public();
    let shared = keys.agree(&ephemeral);
    if shared == [0u8; 32] {
        return Err(SealError::WeakEphemeralKey);
    }
    let recipient = strong_x25519(&to)
        .ok_or(SealError::WeakRecipientKey)?
        .to_bytes();
    let key = payload_key(&shared, &ephemeral, &recipient);
    let aad = associated_data(from, &to);
    let plaintext = XChaCha20Poly1305::new(&key.into())
        .decrypt(
            nonce,
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Decrypt)?;

    // The length check above guarantees the plaintext holds the fixed fields.
    let (unsigned, signature) = plaintext.split_at(plaintext.len() - SIGNATURE_BYTES);
    let mut signature_bytes = [0u8; SIGNATURE_BYTES];
    signature_bytes.copy_from_slice(signature);
    sender
        .verify_strict(
            &signed_bytes(&to, &ephemeral, unsigned),
            &Signature::from_bytes(&signature_bytes),
        )
        .map_err(|_| SealError::BadSignature)?;

    let mut instance = [0u8; INSTANCE_BYTES];
    instance.copy_from_slice(&unsigned[..INSTANCE_BYTES]);
    let mut field = [0u8; 8];
    field.copy_from_slice(&unsigned[INSTANCE_BYTES..INSTANCE_BYTES + 8]);
    let counter = u64::from_le_bytes(field);
    field.copy_from_slice(&unsigned[INSTANCE_BYTES + 8..PLAIN_HEADER_BYTES]);
    let timestamp_ms = u64::from_le_bytes(field);
    if timestamp_ms.abs_diff(now_ms) > TIMESTAMP_SKEW_MS_MAX {
        return Err(SealError::Stale {
            timestamp_ms,
            now_ms,
        });
    }
    replay.check(from, &instance, counter)?;
    replay.accept(from, &instance, counter);
    Ok(Opened {
        freshness: Freshness {
            instance,
            counter,
            timestamp_ms,
        },
        body: unsigned[PLAIN_HEADER_BYTES..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, PROTOCOL_VERSION, REGISTER_DOMAIN};

    const NOW_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn sender() -> SigningKey {
        SigningKey::from_bytes(&[0x01; 32])
    }
    fn recipient() -> SigningKey {
        SigningKey::from_bytes(&[0x02; 32])
    }
    fn fresh(counter: u64) -> Freshness {
        Freshness {
            instance: [0x05; 16],
            counter,
            timestamp_ms: NOW_MS,
        }
    }

    /// The vector of docs/PROTOCOL.md "Signaling", computed independently by
    /// `tests/vectors/signal_vectors.py` (Python `cryptography` X25519/Ed25519/
    /// ChaCha20Poly1305 with HChaCha20 written out, and the `blake3` package).
    #[test]
    fn sealed_payload_vector() {
        let sealed = seal_with(
            &sender(),
            &recipient().public(),
            [0x03; 32],
            [0x04; 24],
            fresh(7),
            b"hello",
        )
        .expect("seal");
        assert_eq!(hex::encode(&sealed), SEALED_VECTOR);
        let opened = open(
            &recipient(),
            &sender().public(),
            &sealed,
            NOW_MS,
            &mut ReplayGuard::default(),
        )
        .expect("open");
        assert_eq!(opened.body, b"hello");
        assert_eq!(opened.freshness, fresh(7));
    }

    const SEALED_VECTOR: &str = include_str!("../tests/vectors/sealed_payload.hex");

    /// The Register frame of the vector: key of seed 01×32 over nonce 11×32.
    #[test]
    fn register_vector() {
        let key = sender();
        let nonce = [0x11; 32];
        let mut message = REGISTER_DOMAIN.to_vec();
        message.extend_from_slice(&nonce);
        let frame = Frame::Register {
            version: PROTOCOL_VERSION,
            key: key.public(),
            signature: Keys::sign(&key, &message),
        };
        assert_eq!(
            hex::encode(frame.encode()),
            include_str!("../tests/vectors/register_frame.hex")
        );
    }

    /// The X25519 agreement of `Keys for SigningKey` matches the ephemeral side.
    #[test]
    fn agreement_is_symmetric() {
        let secret = [0x09; 32];
        let ephemeral = MontgomeryPoint::mul_base_clamped(secret).to_bytes();
        let recipient_x = strong_x25519(&recipient().public())
            .expect("strong")
            .to_bytes();
        assert_eq!(
            recipient().agree(&ephemeral),
            MontgomeryPoint(recipient_x).mul_clamped(secret).to_bytes()
        );
    }

    fn sealed(counter: u64) -> Vec<u8> {
        seal(&sender(), &recipient().public(), fresh(counter), b"body").expect("seal")
    }

    /// Every flipped byte is rejected (Decrypt or UnsupportedVersion), never opened.
    #[test]
    fn flipped_bytes_are_rejected() {
        let good = sealed(1);
        for index in 0..good.len() {
            let mut bad = good.clone();
            bad[index] ^= 0x01;
            let error = open(
                &recipient(),
                &sender().public(),
                &bad,
                NOW_MS,
                &mut ReplayGuard::default(),
            )
            .expect_err("a flipped byte");
            let expected = if index == 0 {
                SealError::UnsupportedVersion { version: 0 }
            } else {
                SealError::Decrypt
            };
            assert!(
                error == expected || index > 0 && error == SealError::WeakEphemeralKey,
                "byte {index}: {error:?}"
            );
        }
    }

    /// Another `from` (server substitution) or another recipient fails to decrypt.
    #[test]
    fn substituted_from_or_to_is_rejected() {
        let payload = sealed(1);
        let other = SigningKey::from_bytes(&[0x07; 32]);
        assert_eq!(
            open(
                &recipient(),
                &other.public(),
                &payload,
                NOW_MS,
                &mut ReplayGuard::default()
            ),
            Err(SealError::Decrypt)
        );
        assert_eq!(
            open(
                &other,
                &sender().public(),
                &payload,
                NOW_MS,
                &mut ReplayGuard::default()
            ),
            Err(SealError::Decrypt)
        );
    }

    /// A payload encrypted correctly as from A but signed by M is a forgery.
    #[test]
    fn forged_signature_is_rejected() {
        let forger = SigningKey::from_bytes(&[0x08; 32]);
        let forged = seal_as(
            &forger,
            &sender().public(),
            &recipient().public(),
            [3; 32],
            [4; 24],
            fresh(1),
            b"x",
        )
        .expect("seal");
        assert_eq!(
            open(
                &recipient(),
                &sender().public(),
                &forged,
                NOW_MS,
                &mut ReplayGuard::default()
            ),
            Err(SealError::BadSignature)
        );
    }

    /// Timestamps beyond the skew either way are stale; at the edge they are fresh.
    #[test]
    fn stale_timestamps_are_rejected() {
        for (offset, ok) in [
            (0i64, true),
            (120_000, true),
            (-120_000, true),
            (120_001, false),
            (-120_001, false),
        ] {
            let timestamp_ms = NOW_MS.checked_add_signed(offset).expect("in range");
            let payload = seal(
                &sender(),
                &recipient().public(),
                Freshness {
                    timestamp_ms,
                    ..fresh(1)
                },
                b"",
            )
            .expect("seal");
            let result = open(
                &recipient(),
                &sender().public(),
                &payload,
                NOW_MS,
                &mut ReplayGuard::default(),
            );
            if ok {
                assert!(result.is_ok(), "{offset}");
            } else {
                assert_eq!(
                    result,
                    Err(SealError::Stale {
                        timestamp_ms,
                        now_ms: NOW_MS
                    })
                );
            }
        }
    }

    /// Replays and reorderings are rejected; a rejected payload does not move the counter.
    #[test]
    fn replay_and_reorder_are_rejected() {
        let mut guard = ReplayGuard::default();
        let (one, two, three) = (sealed(1), sealed(2), sealed(3));
        let open_ = |payload: &[u8], guard: &mut ReplayGuard| {
            open(&recipient(), &sender().public(), payload, NOW_MS, guard)
        };
        assert!(open_(&one, &mut guard).is_ok());
        assert_eq!(
            open_(&one, &mut guard),
            Err(SealError::Replayed {
                counter: 1,
                last: 1
            })
        );
        assert!(open_(&three, &mut guard).is_ok());
        assert_eq!(
            open_(&two, &mut guard),
            Err(SealError::Replayed {
                counter: 2,
                last: 3
            })
        );
        // Another instance of the same sender has its own counter.
        let other = seal(
            &sender(),
            &recipient().public(),
            Freshness {
                instance: [9; 16],
                ..fresh(1)
            },
            b"",
        )
        .expect("seal");
        assert!(open_(&other, &mut guard).is_ok());
        assert_eq!(guard.len(), 2);
    }

    /// The guard keeps at most its capacity and forgets the least recently used.
    #[test]
    fn replay_guard_is_bounded() {
        let mut guard = ReplayGuard::new(2);
        guard.accept(&[1; 32], &[0; 16], 1);
        guard.accept(&[2; 32], &[0; 16], 1);
        guard.accept(&[1; 32], &[0; 16], 2);
        guard.accept(&[3; 32], &[0; 16], 1);
        assert_eq!(guard.len(), 2);
        assert!(
            guard.check(&[2; 32], &[0; 16], 1).is_ok(),
            "the least recently used was forgotten"
        );
        assert!(guard.check(&[1; 32], &[0; 16], 2).is_err());
    }

    /// Weak and invalid keys are refused on both sides; short or unknown-version payloads too.
    #[test]
    fn weak_keys_and_bad_headers_are_rejected() {
        let identity = {
            let mut key = [0u8; 32];
            key[0] = 1; // the compressed identity point
            key
        };
        assert_eq!(
            seal(&sender(), &identity, fresh(1), b""),
            Err(SealError::WeakRecipientKey)
        );
        let payload = sealed(1);
        assert_eq!(
            open(
                &recipient(),
                &identity,
                &payload,
                NOW_MS,
                &mut ReplayGuard::default()
            ),
            Err(SealError::WeakSenderKey)
        );
        let mut zero_ephemeral = payload.clone();
        zero_ephemeral[1..33].fill(0);
        assert_eq!(
            open(
                &recipient(),
                &sender().public(),
                &zero_ephemeral,
                NOW_MS,
                &mut ReplayGuard::default()
            ),
            Err(SealError::WeakEphemeralKey)
        );
        let mut version = payload.clone();
        version[0] = 2;
        assert_eq!(
            open(
                &recipient(),
                &sender().public(),
                &version,
                NOW_MS,
                &mut ReplayGuard::default()
            ),
            Err(SealError::UnsupportedVersion { version: 2 })
        );
        for length in [0, 1, SEAL_OVERHEAD_BYTES - 1] {
            assert_eq!(
                open(
                    &recipient(),
                    &sender().public(),
                    &payload[..length],
                    NOW_MS,
                    &mut ReplayGuard::default()
                ),
                Err(SealError::Truncated {
                    bytes: length,
                    min: SEAL_OVERHEAD_BYTES
                })
            );
        }
    }
}
