//! Checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, signed
//! with the operator's ed25519 key (docs/SERVICES.md "Public key registry:
//! checkpoints").
//!
//! ```text
//! <origin>\n<size, decimal>\n<root, standard base64>\n
//! \n
//! — <origin> <base64(key id [4] || ed25519 signature [64])>\n
//! ```
//! The signature covers the body (the three lines). The key id is the first
//! four bytes of SHA-256(`origin` || "\n" || 0x01 || public key), 0x01 being
//! signed-note's ed25519 algorithm byte. Signature lines of other keys
//! (witnesses) are allowed and ignored; extension lines after the root are
//! refused (this log writes none).

use data_encoding::BASE64;
use peers_engine::Identity;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::merkle::Hash;

/// The longest note a client reads, bytes.
pub const NOTE_BYTES_MAX: usize = 2048;
/// The most signature lines a note may carry.
pub const SIGNATURES_MAX: usize = 16;
/// signed-note's algorithm byte for ed25519.
pub const ALGORITHM_ED25519: u8 = 1;
/// The longest origin, bytes.
pub const ORIGIN_BYTES_MAX: usize = 255;

const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// A tree head: which log, how many entries, and their root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name (the operator's key's name in the note).
    pub origin: String,
    /// Entries in the log.
    pub size: u64,
    /// The RFC 6962 root of those entries.
    pub root: Hash,
}

/// The log's name for an operator key: `peers-registry/` and the first 16
/// hex digits of the key.
pub fn origin_for(key: &[u8; 32]) -> String {
    format!("peers-registry/{}", hex::encode(&key[..8]))
}

/// signed-note's key id of an ed25519 `key` named `name`.
pub fn key_id(name: &str, key: &[u8; 32]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ALGORITHM_ED25519]);
    hasher.update(key);
    let digest: [u8; 32] = hasher.finalize().into();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// signed-note's verifier key: `name+<key id, 8 hex>+<base64(0x01 || key)>`.
pub fn verifier_key(name: &str, key: &[u8; 32]) -> String {
    let id = key_id(name, key);
    let mut encoded = vec![ALGORITHM_ED25519];
    encoded.extend_from_slice(key);
    format!("{name}+{}+{}", hex::encode(id), BASE64.encode(&encoded))
}

/// The name and ed25519 key of a verifier key, checking its key id.
pub fn parse_verifier_key(text: &str) -> Result<(String, [u8; 32])> {
    let bad = Error::BadCheckpoint;
    // The name comes first and holds no '+'; base64 may.
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(_id), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("a verifier key is name+id+key"));
    };
    let decoded = BASE64
        .decode(encoded.as_bytes())
        .map_err(|_| bad("a verifier key's key is not base64"))?;
    let (&algorithm, key) = decoded.split_first().ok_or(bad("an empty verifier key"))?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| bad("a verifier key's key is not 32 bytes"))?;
    if algorithm != ALGORITHM_ED25519 {
        return Err(bad("a verifier key of another algorithm"));
    }
    if name.is_empty() || name.len() > ORIGIN_BYTES_MAX || verifier_key(name, &key) != text {
        return Err(bad(
            "a verifier key whose id does not match its name and key",
        ));
    }
    Ok((name.to_owned(), key))
}

impl Checkpoint {
    /// The note's body: origin, size and root, a line each.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(&self.root)
        )
    }

    /// The signed note, signed by `operator` under the name `origin`.
    pub fn sign(&self, operator: &Identity) -> String {
        let body = self.body();
        let key = operator.author().0;
        let mut signature = key_id(&self.origin, &key).to_vec();
        signature.extend_from_slice(&operator.sign_bytes(body.as_bytes()));
        format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.origin,
            BASE64.encode(&signature)
        )
    }

    /// Reads a note and checks that `key`, named `origin`, signed it.
    pub fn open(note: &str, origin: &str, key: &[u8; 32]) -> Result<Checkpoint> {
        let bad = Error::BadCheckpoint;
        if note.len() > NOTE_BYTES_MAX {
            return Err(bad("longer than a checkpoint may be"));
        }
        let split = note
            .find("\n\n")
            .ok_or(bad("no blank line before the signatures"))?;
        let (body, signatures) = note.split_at(split + 1);
        let signatures = &signatures[1..];
        let checkpoint = Checkpoint::parse_body(body)?;
        if checkpoint.origin != origin {
            return Err(bad("a checkpoint of another log (origin)"));
        }
        if !signatures.ends_with('\n') {
            return Err(bad("signatures not ended by a newline"));
        }
        let id = key_id(origin, key);
        let mut lines = 0;
        let mut signed = false;
        for line in signatures.lines() {
            lines += 1;
            if lines > SIGNATURES_MAX {
                return Err(bad("too many signature lines"));
            }
            let line = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(bad("a signature line without its em dash"))?;
            let (name, encoded) = line
                .split_once(' ')
                .ok_or(bad("a signature line without a name"))?;
            let decoded = BASE64
                .decode(encoded.as_bytes())
                .map_err(|_| bad("a signature that is not base64"))?;
            if name != origin || decoded.get(..4) != Some(id.as_slice()) {
                continue;
            }
            let signature: [u8; 64] = decoded[4..]
                .try_into()
                .map_err(|_| bad("an ed25519 signature that is not 64 bytes"))?;
            signed |=
                peers_engine::verify_ed25519_strict(&[(body.as_bytes(), key, &signature)]).is_ok();
        }
        if !signed {
            return Err(Error::CheckpointSignature {
                origin: origin.to_owned(),
            });
        }
        Ok(checkpoint)
    }

    /// The body's three lines (the origin of a note is read before its key
    /// is known: [`Checkpoint::open`] checks the signature).
    pub fn parse_body(body: &str) -> Result<Checkpoint> {
        let bad = Error::BadCheckpoint;
        let mut lines = body.split_terminator('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("a body of fewer than three lines"));
        };
        if lines.next().is_some() || !body.ends_with('\n') {
            return Err(bad("a body of other than three lines"));
        }
        if origin.is_empty() || origin.len() > ORIGIN_BYTES_MAX {
            return Err(bad("an empty or overlong origin"));
        }
        let canonical = size == "0" || (!size.starts_with('0') && !size.is_empty());
        if !canonical || !size.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(bad("a size that is not a decimal number"));
        }
        let size: u64 = size.parse().map_err(|_| bad("a size beyond 64 bits"))?;
        let root = BASE64
            .decode(root.as_bytes())
            .map_err(|_| bad("a root that is not base64"))?;
        let root: Hash = root
            .try_into()
            .map_err(|_| bad("a root that is not 32 bytes"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signed checkpoint opens under its key and origin, and under no
    /// other; a flipped byte anywhere is refused.
    #[test]
    fn sign_open_and_flipped_bytes() {
        let operator = Identity::from_secret_bytes([7; 32]);
        let key = operator.author().0;
        let origin = origin_for(&key);
        let checkpoint = Checkpoint {
            origin: origin.clone(),
            size: 12,
            root: [5; 32],
        };
        let note = checkpoint.sign(&operator);
        assert_eq!(
            Checkpoint::open(&note, &origin, &key).expect("opens"),
            checkpoint
        );
        let other = Identity::from_secret_bytes([8; 32]).author().0;
        assert!(Checkpoint::open(&note, &origin, &other).is_err());
        assert!(Checkpoint::open(&note, "another", &key).is_err());
        let bytes = note.as_bytes();
        for at in 0..bytes.len() {
            let mut flipped = bytes.to_vec();
            flipped[at] ^= 0x01;
            if let Ok(text) = String::from_utf8(flipped) {
                assert!(
                    Checkpoint::open(&text, &origin, &key).is_err(),
                    "flip at {at}"
                );
            }
        }
    }

    /// A verifier key parses back to its name and key; a wrong id is refused.
    #[test]
    fn verifier_key_round_trip() {
        let key = Identity::from_secret_bytes([7; 32]).author().0;
        let text = verifier_key("peers-registry/x", &key);
        assert_eq!(
            parse_verifier_key(&text).expect("parses"),
            ("peers-registry/x".to_owned(), key)
        );
        let wrong = text.replacen("+", "+0", 1);
        assert!(parse_verifier_key(&wrong).is_err());
    }
}
