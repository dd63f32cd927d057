//! The key envelope (the sealed identity), user names and recovery codes.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use peers_engine::Identity;

use crate::error::{Error, Result};

/// Keys format version (envelopes, records, the wire protocol).
pub const KEYS_FORMAT_VERSION: u8 = 1;
/// An envelope's size: version, slot, nonce, the 32-byte secret, the tag.
pub const ENVELOPE_BYTES: usize = 1 + 1 + 24 + 32 + 16;
/// The longest user name, bytes.
pub const USER_BYTES_MAX: usize = 64;
/// The shortest password, characters.
pub const PASSWORD_CHARS_MIN: usize = 8;
/// A recovery code's entropy, bytes (160 bits).
pub const RECOVERY_CODE_BYTES: usize = 20;

const SEAL_KEY_CONTEXT: &str = "peers-keys v1 envelope seal key";
const AD_PREFIX: &[u8] = b"peers-keys envelope";

/// Which secret opens an envelope: each user has one of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The password.
    Password = 1,
    /// The recovery code.
    Recovery = 2,
}

impl Slot {
    /// From its byte.
    pub fn from_byte(byte: u8) -> Result<Slot> {
        match byte {
            1 => Ok(Slot::Password),
            2 => Ok(Slot::Recovery),
            _ => Err(Error::Protocol("unknown slot")),
        }
    }
}

/// Checks a user name: 1 to 64 bytes of `a-z 0-9 . _ -`.
pub fn check_user(user: &str) -> Result<()> {
    let fits = !user.is_empty()
        && user.len() <= USER_BYTES_MAX
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if fits {
        Ok(())
    } else {
        Err(Error::BadUser(user.to_owned()))
    }
}

/// OPAQUE's credential identifier of a user's slot: `user || 0x00 || slot`.
pub(crate) fn credential_id(user: &str, slot: Slot) -> Vec<u8> {
    let mut id = user.as_bytes().to_vec();
    id.push(0);
    id.push(slot as u8);
    id
}

/// The envelope's associated data: the prefix, the version, the slot, the
/// user name's length (one byte) and the user name.
fn associated_data(user: &str, slot: Slot) -> Vec<u8> {
    let mut ad = AD_PREFIX.to_vec();
    ad.push(KEYS_FORMAT_VERSION);
    ad.push(slot as u8);
    ad.push(user.len() as u8);
    ad.extend_from_slice(user.as_bytes());
    ad
}

/// The seal key from OPAQUE's export key (64 bytes).
pub(crate) fn seal_key(export_key: &[u8]) -> [u8; 32] {
    blake3::derive_key(SEAL_KEY_CONTEXT, export_key)
}

/// Seals `secret` for `user`'s `slot` under the export key, with `nonce`.
pub fn seal(
    export_key: &[u8],
    user: &str,
    slot: Slot,
    secret: &[u8; 32],
    nonce: [u8; 24],
) -> [u8; ENVELOPE_BYTES] {
    let cipher = XChaCha20Poly1305::new(&seal_key(export_key).into());
    let ad = associated_data(user, slot);
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: &ad,
            },
        )
        .expect("XChaCha20-Poly1305 seals 32 bytes");
    let mut envelope = [0u8; ENVELOPE_BYTES];
    envelope[0] = KEYS_FORMAT_VERSION;
    envelope[1] = slot as u8;
    envelope[2..26].copy_from_slice(&nonce);
    envelope[26..].copy_from_slice(&sealed);
    envelope
}

/// Seals an identity with a fresh random nonce.
pub(crate) fn seal_identity(
    export_key: &[u8],
    user: &str,
    slot: Slot,
    identity: &Identity,
) -> [u8; ENVELOPE_BYTES] {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).expect("the operating system's random source is available");
    seal(export_key, user, slot, &identity.secret_bytes(), nonce)
}

/// Opens an envelope of `user`'s `slot` with the export key.
pub fn open(export_key: &[u8], user: &str, slot: Slot, envelope: &[u8]) -> Result<[u8; 32]> {
    if envelope.len() != ENVELOPE_BYTES {
        return Err(Error::BadEnvelope("not 74 bytes"));
    }
    let (header, rest) = envelope.split_at(2);
    if header != [KEYS_FORMAT_VERSION, slot as u8] {
        return Err(Error::BadEnvelope("another version or slot"));
    }
    let (nonce, sealed) = rest.split_at(24);
    let cipher = XChaCha20Poly1305::new(&seal_key(export_key).into());
    let ad = associated_data(user, slot);
    let secret = cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &ad,
            },
        )
        .map_err(|_| Error::EnvelopeDoesNotOpen)?;
    secret
        .try_into()
        .map_err(|_| Error::BadEnvelope("the secret is not 32 bytes"))
}

/// A recovery code: 160 random bits, printed as 8 groups of 4 base32
/// letters and digits (`ABCD-EFGH-…`). It is OPAQUE's password for the
/// recovery slot (its 20 bytes, so case and dashes do not matter).
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode([u8; RECOVERY_CODE_BYTES]);

impl std::fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryCode(…)")
    }
}

impl RecoveryCode {
    /// A new random code.
    pub fn generate() -> RecoveryCode {
        let mut bytes = [0u8; RECOVERY_CODE_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random source is available");
        RecoveryCode(bytes)
    }

    /// From its 20 bytes.
    pub fn from_bytes(bytes: [u8; RECOVERY_CODE_BYTES]) -> RecoveryCode {
        RecoveryCode(bytes)
    }

    /// Its 20 bytes (the recovery slot's OPAQUE password).
    pub fn as_bytes(&self) -> &[u8; RECOVERY_CODE_BYTES] {
        &self.0
    }

    /// Reads a printed code: base32 (RFC 4648), any case, dashes and spaces
    /// ignored.
    pub fn parse(text: &str) -> Result<RecoveryCode> {
        let letters: String = text
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(letters.as_bytes())
            .map_err(|_| Error::BadRecoveryCode)?;
        bytes
            .try_into()
            .map(RecoveryCode)
            .map_err(|_| Error::BadRecoveryCode)
    }
}

impl std::fmt::Display for RecoveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let letters = data_encoding::BASE32_NOPAD.encode(&self.0);
        let groups: Vec<&str> = letters
            .as_bytes()
            .chunks(4)
            .map(|chunk| std::str::from_utf8(chunk).unwrap_or(""))
            .collect();
        f.write_str(&groups.join("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An envelope opens for its user and slot only, and not once altered.
    #[test]
    fn envelope_binds_user_slot_and_bytes() {
        let export = [7u8; 64];
        let secret = [9u8; 32];
        let envelope = seal(&export, "alice", Slot::Password, &secret, [1; 24]);
        assert_eq!(
            open(&export, "alice", Slot::Password, &envelope).expect("opens"),
            secret
        );
        assert!(open(&export, "alicf", Slot::Password, &envelope).is_err());
        assert!(open(&export, "alice", Slot::Recovery, &envelope).is_err());
        assert!(open(&[8u8; 64], "alice", Slot::Password, &envelope).is_err());
        for index in 0..ENVELOPE_BYTES {
            let mut altered = envelope;
            altered[index] ^= 1;
            assert!(
                open(&export, "alice", Slot::Password, &altered).is_err(),
                "byte {index}"
            );
        }
        assert!(open(&export, "alice", Slot::Password, &envelope[..73]).is_err());
    }

    /// A printed recovery code reads back, whatever the case and dashes.
    #[test]
    fn recovery_code_round_trip() {
        let code = RecoveryCode::generate();
        let text = code.to_string();
        assert_eq!(text.len(), 39, "{text}");
        assert_eq!(RecoveryCode::parse(&text).expect("parses"), code);
        assert_eq!(
            RecoveryCode::parse(&text.to_lowercase().replace('-', " ")).expect("parses"),
            code
        );
        assert!(RecoveryCode::parse(&text[..30]).is_err());
        assert!(RecoveryCode::parse("not a code at all").is_err());
    }

    /// User names: the allowed form only.
    #[test]
    fn user_names() {
        for good in ["alice", "a", "bob.smith_2-x", &"a".repeat(64)] {
            assert!(check_user(good).is_ok(), "{good}");
        }
        for bad in ["", "Alice", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(check_user(bad).is_err(), "{bad}");
        }
    }
}
