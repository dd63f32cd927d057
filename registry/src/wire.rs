//! The wire protocol between a client and `peers registry serve`
//! (docs/SERVICES.md "Public key registry: wire protocol"). Frames and
//! messages are peers-keys' ([`peers_keys::wire`]: a u32 LE length, then a
//! tag, a field count and u16 LE length-prefixed fields, 4096 bytes at
//! most); the tags and fields are this module's.

pub use peers_keys::wire::{FIELDS_MAX, FRAME_BYTES_MAX, Message, accept_bounded, read, write};

use crate::error::{Error, Refusal, Result};

/// Message tags. Client to server below 64; server to client from 64.
pub mod tag {
    /// `[handle, known key (empty or 32 bytes), seen size (u64 LE)]`
    pub const LOOKUP: u8 = 1;
    /// `[entry, seen size (u64 LE)]`
    pub const SUBMIT: u8 = 2;
    /// `[old size (u64 LE), new size (u64 LE)]`
    pub const CONSISTENCY: u8 = 3;
    /// `[first index (u64 LE)]`
    pub const LEAVES: u8 = 4;
    /// `[after (a handle, or empty for the first)]`
    pub const LIST: u8 = 5;
    /// `[verifier key, checkpoint note, consistency proof, entry count (u8)]`,
    /// then that many `ENTRY` messages.
    pub const STATE: u8 = 64;
    /// `[index (u64 LE), entry, inclusion proof]`
    pub const ENTRY: u8 = 65;
    /// `[consistency proof]`
    pub const PROOF: u8 = 66;
    /// `[leaf]` × 0 to 8 (fewer than 8: the log ends there)
    pub const LEAF_DATA: u8 = 67;
    /// `[handle]` × 0 to 8 (fewer than 8: the list ends there)
    pub const HANDLES: u8 = 68;
    /// `[code, detail]`: for `REFUSED` a [`crate::Refusal`] code, for
    /// `LIMITED` the seconds to wait (u64 LE), else 0
    pub const ERROR: u8 = 70;
}

/// Error codes in an `ERROR` message.
pub mod code {
    /// No such handle, or one the asker may not resolve (the same answer).
    pub const NOT_FOUND: u8 = 1;
    /// A submitted entry the rules refuse; the second field says why.
    pub const REFUSED: u8 = 2;
    /// Too many lookups from this address found nothing; the second field
    /// says how long to wait.
    pub const LIMITED: u8 = 3;
    /// A request out of order or malformed.
    pub const BAD_REQUEST: u8 = 4;
    /// The server failed (its store).
    pub const INTERNAL: u8 = 5;
}

/// An `ERROR` message.
pub fn error(code: u8, refusal: Option<Refusal>) -> Message {
    Message::new(
        tag::ERROR,
        vec![vec![code], vec![refusal.map_or(0, Refusal::code)]],
    )
}

/// An `ERROR LIMITED` message: wait `retry_after_secs`.
pub fn limited(retry_after_secs: u64) -> Message {
    Message::new(
        tag::ERROR,
        vec![vec![code::LIMITED], retry_after_secs.to_le_bytes().to_vec()],
    )
}

/// The fields of `message` if it has this tag and this many of them; the
/// error an `ERROR` message carries otherwise. `handle` names a lookup's
/// handle in [`Error::NotFound`].
pub fn expect(message: Message, tag: u8, count: usize, handle: &str) -> Result<Vec<Vec<u8>>> {
    if message.tag == tag::ERROR {
        let code = message
            .fields
            .first()
            .and_then(|field| field.first().copied());
        let refusal = message
            .fields
            .get(1)
            .and_then(|field| field.first().copied())
            .and_then(Refusal::from_code);
        if code == Some(code::LIMITED) {
            let retry_after_secs = message.fields.get(1).and_then(|field| read_u64(field));
            return Err(Error::Limited {
                retry_after_secs: retry_after_secs.unwrap_or(0),
            });
        }
        return Err(match (code, refusal) {
            (Some(code::NOT_FOUND), _) => Error::NotFound(handle.to_owned()),
            (Some(code::REFUSED), Some(refusal)) => Error::Refused(refusal),
            (Some(code::BAD_REQUEST), _) => Error::Server("a request out of order or malformed"),
            (Some(code::INTERNAL), _) => Error::Server("the server failed; try again later"),
            _ => Error::Server("an unknown error code"),
        });
    }
    if message.tag != tag || message.fields.len() != count {
        return Err(Error::Protocol("an unexpected message"));
    }
    Ok(message.fields)
}

/// A u64 field.
pub fn u64_field(value: u64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// Reads a u64 field (exactly 8 bytes).
pub fn read_u64(field: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(field).ok().map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal code round trips through an `ERROR` message.
    #[test]
    fn refusals_round_trip() {
        for code in 1..=10 {
            let refusal = Refusal::from_code(code).expect("a refusal");
            assert_eq!(refusal.code(), code);
            let message = error(code::REFUSED, Some(refusal));
            let decoded = Message::decode(&message.encode()).expect("decodes");
            assert!(matches!(
                expect(decoded, tag::STATE, 4, "x"),
                Err(Error::Refused(got)) if got == refusal
            ));
        }
        assert!(Refusal::from_code(0).is_none());
        assert!(matches!(
            expect(error(code::NOT_FOUND, None), tag::STATE, 4, "bob"),
            Err(Error::NotFound(handle)) if handle == "bob"
        ));
    }
}
