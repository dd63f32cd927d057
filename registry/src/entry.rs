//! A log entry: a claim, rotation or revocation of a handle, signed by the
//! key that may make it, and the rules a handle's chain of entries follows
//! (docs/SERVICES.md "Public key registry: entries").
//!
//! ```text
//! Format (registry format 1), byte order little-endian:
//! { version u8 = 1 | kind u8 | handle length u8 | handle | key [32]
//!   | discoverability u8 | expires u64 | recovery flag u8 | recovery key [32]?
//!   | previous [32] | signer u8 | signature [64] }
//! ```
//! The signature is ed25519 over [`SIGNATURE_CONTEXT`] followed by every byte
//! before the signature. An entry's hash is SHA-256 of all its bytes; the
//! next entry for the handle names it in `previous`.

use peers_engine::Identity;
use sha2::{Digest, Sha256};

use crate::error::{Error, Refusal, Result};
use crate::merkle::Hash;

/// The entry format this build writes and reads.
pub const REGISTRY_FORMAT_VERSION: u8 = 1;
/// What every entry signature covers first (so it verifies for nothing else).
pub const SIGNATURE_CONTEXT: &[u8] = b"peers-registry v1 entry\n";
/// The longest handle, bytes.
pub const HANDLE_BYTES_MAX: usize = 64;
/// The longest an entry can be, bytes.
pub const ENTRY_BYTES_MAX: usize = 3 + HANDLE_BYTES_MAX + 32 + 1 + 8 + 1 + 32 + 32 + 1 + 64;
/// The most entries one handle may have (its claim, then rotations and a
/// revocation): every lookup carries them all, with a proof each.
pub const ENTRIES_PER_HANDLE_MAX: usize = 64;
/// The furthest in the future a claim or rotation may expire, seconds (two years).
pub const EXPIRY_SECS_MAX: u64 = 2 * 365 * 86_400;

const _: () = assert!(ENTRIES_PER_HANDLE_MAX <= u8::MAX as usize);
const _: () = assert!(HANDLE_BYTES_MAX == peers_keys::USER_BYTES_MAX);

/// Leaf data tag: the entry itself follows.
pub const LEAF_ENTRY: u8 = 1;
/// Leaf data tag: only the entry's hash follows (lookup-only and private handles).
pub const LEAF_COMMITMENT: u8 = 2;

/// What an entry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Takes a free handle for a key, signed by that key.
    Claim = 1,
    /// Moves the handle to a new key (or renews it), signed by the current key or the recovery key.
    Rotate = 2,
    /// Ends the handle for good, signed by the current key or the recovery key.
    Revoke = 3,
}

/// Who may find a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discoverability {
    /// Listed (`LIST`), resolvable by anyone, and in the log in clear.
    Public = 1,
    /// Resolvable by anyone who knows the handle; never listed, and the log
    /// holds only a hash of each entry.
    LookupOnly = 2,
    /// Resolvable only by someone who already knows one of its keys (to check
    /// that key is still current); otherwise as lookup-only.
    Private = 3,
}

impl Discoverability {
    fn from_byte(byte: u8) -> Option<Discoverability> {
        match byte {
            1 => Some(Discoverability::Public),
            2 => Some(Discoverability::LookupOnly),
            3 => Some(Discoverability::Private),
            _ => None,
        }
    }

    /// Its name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Discoverability::Public => "public",
            Discoverability::LookupOnly => "lookup-only",
            Discoverability::Private => "private",
        }
    }
}

impl std::str::FromStr for Discoverability {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Discoverability, String> {
        match text {
            "public" => Ok(Discoverability::Public),
            "lookup-only" => Ok(Discoverability::LookupOnly),
            "private" => Ok(Discoverability::Private),
            other => Err(format!(
                "discoverability {other:?}: use public, lookup-only or private"
            )),
        }
    }
}

/// Which key signed an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    /// The claimed key (a claim), or the handle's current key.
    Key = 1,
    /// The recovery key named in the handle's claim.
    Recovery = 2,
}

/// One log entry. Build with [`Entry::claim`], [`Entry::rotate`] and
/// [`Entry::revoke`]; read with [`Entry::decode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What it does.
    pub kind: Kind,
    /// The handle.
    pub handle: String,
    /// Claim: the key claimed; rotation: the new key; revocation: zeros.
    pub key: [u8; 32],
    /// Who may find the handle from now on (a revocation repeats the current one).
    pub discoverability: Discoverability,
    /// When the handle stops resolving, Unix seconds (revocation: 0).
    pub expires: u64,
    /// A claim's recovery key, if any (never in other kinds).
    pub recovery: Option<[u8; 32]>,
    /// The hash of the handle's previous entry (a claim: zeros).
    pub previous: Hash,
    /// Which key signed.
    pub signer: Signer,
    /// The signature.
    pub signature: [u8; 64],
}

/// Refuses a handle outside the allowed form: 1 to 64 of a-z, 0-9, '.', '_'
/// and '-' (the key server's user names, `peers_keys::check_user`).
pub fn check_handle(handle: &str) -> Result<()> {
    peers_keys::check_user(handle).map_err(|_| Error::BadHandle(handle.to_owned()))
}

impl Entry {
    /// A claim of `handle` for `identity`'s key, signed by it.
    pub fn claim(
        identity: &Identity,
        handle: &str,
        discoverability: Discoverability,
        expires: u64,
        recovery: Option<[u8; 32]>,
    ) -> Result<Entry> {
        check_handle(handle)?;
        Ok(Entry {
            kind: Kind::Claim,
            handle: handle.to_owned(),
            key: identity.author().0,
            discoverability,
            expires,
            recovery,
            previous: [0; 32],
            signer: Signer::Key,
            signature: [0; 64],
        }
        .signed(identity))
    }

    /// A rotation of `handle` (whose latest entry has hash `previous`) to
    /// `key`, signed by `identity` as `signer`.
    pub fn rotate(
        identity: &Identity,
        signer: Signer,
        handle: &str,
        previous: Hash,
        key: [u8; 32],
        discoverability: Discoverability,
        expires: u64,
    ) -> Result<Entry> {
        check_handle(handle)?;
        Ok(Entry {
            kind: Kind::Rotate,
            handle: handle.to_owned(),
            key,
            discoverability,
            expires,
            recovery: None,
            previous,
            signer,
            signature: [0; 64],
        }
        .signed(identity))
    }

    /// A revocation of `handle` (latest entry hash `previous`, current
    /// `discoverability`), signed by `identity` as `signer`.
    pub fn revoke(
        identity: &Identity,
        signer: Signer,
        handle: &str,
        previous: Hash,
        discoverability: Discoverability,
    ) -> Result<Entry> {
        check_handle(handle)?;
        Ok(Entry {
            kind: Kind::Revoke,
            handle: handle.to_owned(),
            key: [0; 32],
            discoverability,
            expires: 0,
            recovery: None,
            previous,
            signer,
            signature: [0; 64],
        }
        .signed(identity))
    }

    fn signed(mut self, identity: &Identity) -> Entry {
        self.signature = identity.sign_bytes(&self.signed_bytes());
        self
    }

    /// Every byte before the signature.
    fn body(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(ENTRY_BYTES_MAX);
        bytes.push(REGISTRY_FORMAT_VERSION);
        bytes.push(self.kind as u8);
        let length = u8::try_from(self.handle.len()).expect("a checked handle fits a byte");
        bytes.push(length);
        bytes.extend_from_slice(self.handle.as_bytes());
        bytes.extend_from_slice(&self.key);
        bytes.push(self.discoverability as u8);
        bytes.extend_from_slice(&self.expires.to_le_bytes());
        match &self.recovery {
            Some(key) => {
                bytes.push(1);
                bytes.extend_from_slice(key);
            }
            None => bytes.push(0),
        }
        bytes.extend_from_slice(&self.previous);
        bytes.push(self.signer as u8);
        bytes
    }

    /// What the signature covers: [`SIGNATURE_CONTEXT`] then the body.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut message = SIGNATURE_CONTEXT.to_vec();
        message.extend_from_slice(&self.body());
        message
    }

    /// The entry's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = self.body();
        bytes.extend_from_slice(&self.signature);
        debug_assert!(bytes.len() <= ENTRY_BYTES_MAX);
        bytes
    }

    /// SHA-256 of the entry's bytes: what the next entry names as `previous`.
    pub fn hash(&self) -> Hash {
        Sha256::digest(self.encode()).into()
    }

    /// The log's leaf for this entry: the entry in clear for a public
    /// handle, else only its hash (which names no handle and, holding a
    /// signature, cannot be guessed).
    pub fn leaf(&self) -> Vec<u8> {
        match self.discoverability {
            Discoverability::Public => {
                let mut leaf = vec![LEAF_ENTRY];
                leaf.extend_from_slice(&self.encode());
                leaf
            }
            Discoverability::LookupOnly | Discoverability::Private => {
                let mut leaf = vec![LEAF_COMMITMENT];
                leaf.extend_from_slice(&self.hash());
                leaf
            }
        }
    }

    /// Reads an entry, refusing anything but the exact layout (the signature
    /// is checked by [`HandleState::apply`], which knows the signing key).
    pub fn decode(bytes: &[u8]) -> Result<Entry> {
        let bad = Error::BadEntry;
        if bytes.len() > ENTRY_BYTES_MAX {
            return Err(bad("longer than an entry can be"));
        }
        let mut reader = Reader { bytes };
        if reader.byte()? != REGISTRY_FORMAT_VERSION {
            return Err(bad("an unknown format version"));
        }
        let kind = match reader.byte()? {
            1 => Kind::Claim,
            2 => Kind::Rotate,
            3 => Kind::Revoke,
            _ => return Err(bad("an unknown kind")),
        };
        let length = usize::from(reader.byte()?);
        let handle = std::str::from_utf8(reader.take(length)?)
            .map_err(|_| bad("a handle that is not UTF-8"))?
            .to_owned();
        check_handle(&handle).map_err(|_| bad("a handle outside the allowed form"))?;
        let key = reader.array::<32>()?;
        let discoverability =
            Discoverability::from_byte(reader.byte()?).ok_or(bad("an unknown discoverability"))?;
        let expires = u64::from_le_bytes(reader.array::<8>()?);
        let recovery = match reader.byte()? {
            0 => None,
            1 => Some(reader.array::<32>()?),
            _ => return Err(bad("a recovery flag other than 0 or 1")),
        };
        let previous = reader.array::<32>()?;
        let signer = match reader.byte()? {
            1 => Signer::Key,
            2 => Signer::Recovery,
            _ => return Err(bad("an unknown signer")),
        };
        let signature = reader.array::<64>()?;
        if !reader.bytes.is_empty() {
            return Err(bad("bytes after the signature"));
        }
        if kind != Kind::Claim && recovery.is_some() {
            return Err(bad("a recovery key outside a claim"));
        }
        if kind == Kind::Revoke && (key != [0; 32] || expires != 0) {
            return Err(bad("a revocation with a key or an expiry"));
        }
        Ok(Entry {
            kind,
            handle,
            key,
            discoverability,
            expires,
            recovery,
            previous,
            signer,
            signature,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8]> {
        let (taken, rest) = self
            .bytes
            .split_at_checked(count)
            .ok_or(Error::BadEntry("truncated"))?;
        self.bytes = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }
}

/// A handle's state after its entries so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandleState {
    /// The handle.
    pub handle: String,
    /// The current key (after a revocation, the last one it had).
    pub key: [u8; 32],
    /// Who may find it.
    pub discoverability: Discoverability,
    /// When it stops resolving, Unix seconds.
    pub expires: u64,
    /// The claim's recovery key.
    pub recovery: Option<[u8; 32]>,
    /// Revoked for good.
    pub revoked: bool,
    /// Every key the handle has had, oldest first (a private handle answers
    /// a lookup that names one of them, or the recovery key).
    pub keys: Vec<[u8; 32]>,
    /// The hash of its latest entry.
    pub latest: Hash,
    /// Its entries so far.
    pub entries: usize,
}

impl HandleState {
    /// The state after `entry`, given the state before it (`None`: the
    /// handle has no entry yet), or why `entry` may not follow. Checks the
    /// signature against the key the rules name; time is not checked here
    /// (the server checks expiry bounds when it accepts an entry).
    pub fn apply(before: Option<&HandleState>, entry: &Entry) -> Result<HandleState, Refusal> {
        let signed = entry.signed_bytes();
        let verifies = |key: &[u8; 32]| {
            peers_engine::verify_ed25519_strict(&[(signed.as_slice(), key, &entry.signature)])
                .is_ok()
        };
        let Some(before) = before else {
            if entry.kind != Kind::Claim {
                return Err(Refusal::NotClaimed);
            }
            if entry.previous != [0; 32] || entry.signer != Signer::Key {
                return Err(Refusal::Malformed);
            }
            if !verifies(&entry.key) {
                return Err(Refusal::BadSignature);
            }
            return Ok(HandleState {
                handle: entry.handle.clone(),
                key: entry.key,
                discoverability: entry.discoverability,
                expires: entry.expires,
                recovery: entry.recovery,
                revoked: false,
                keys: vec![entry.key],
                latest: entry.hash(),
                entries: 1,
            });
        };
        if entry.handle != before.handle {
            return Err(Refusal::Malformed);
        }
        if entry.kind == Kind::Claim {
            return Err(Refusal::Taken);
        }
        if before.revoked {
            return Err(Refusal::Revoked);
        }
        if entry.previous != before.latest {
            return Err(Refusal::Stale);
        }
        if before.entries >= ENTRIES_PER_HANDLE_MAX {
            return Err(Refusal::TooManyEntries);
        }
        let signer_key = match entry.signer {
            Signer::Key => before.key,
            Signer::Recovery => before.recovery.ok_or(Refusal::NoRecoveryKey)?,
        };
        if !verifies(&signer_key) {
            return Err(Refusal::NotOwner);
        }
        let mut after = before.clone();
        after.latest = entry.hash();
        after.entries += 1;
        match entry.kind {
            Kind::Rotate => {
                after.key = entry.key;
                after.discoverability = entry.discoverability;
                after.expires = entry.expires;
                if !after.keys.contains(&entry.key) {
                    after.keys.push(entry.key);
                }
            }
            Kind::Revoke => {
                if entry.discoverability != before.discoverability {
                    return Err(Refusal::Malformed);
                }
                after.revoked = true;
            }
            Kind::Claim => unreachable!("refused above"),
        }
        Ok(after)
    }

    /// Whether someone who names `key` may resolve this handle.
    pub fn answers(&self, key: Option<&[u8; 32]>) -> bool {
        match self.discoverability {
            Discoverability::Public | Discoverability::LookupOnly => true,
            Discoverability::Private => key
                .is_some_and(|key| self.keys.contains(key) || self.recovery.as_ref() == Some(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::from_secret_bytes([1; 32])
    }

    /// An entry decodes to itself; every truncation, a trailing byte and a
    /// flipped signature byte are refused (the last by `apply`).
    #[test]
    fn round_trip_and_flipped_byte() {
        let claim = Entry::claim(
            &alice(),
            "alice",
            Discoverability::Public,
            100,
            Some([9; 32]),
        )
        .expect("claim");
        let bytes = claim.encode();
        assert_eq!(Entry::decode(&bytes).expect("decodes"), claim);
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Entry::decode(&longer).is_err());
        assert!(HandleState::apply(None, &claim).is_ok());
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let flipped = Entry::decode(&flipped).expect("still decodes");
        assert_eq!(
            HandleState::apply(None, &flipped),
            Err(Refusal::BadSignature)
        );
    }

    /// The chain rules: a claim by another key, a rotation by a stranger, a
    /// stale rotation and anything after a revocation are refused; the
    /// recovery key may rotate.
    #[test]
    fn chain_rules() {
        let bob = Identity::from_secret_bytes([2; 32]);
        let recovery = Identity::from_secret_bytes([3; 32]);
        let mut forged =
            Entry::claim(&alice(), "alice", Discoverability::Public, 100, None).expect("claim");
        forged.key = bob.author().0;
        assert_eq!(
            HandleState::apply(None, &forged),
            Err(Refusal::BadSignature)
        );
        let claim = Entry::claim(
            &alice(),
            "alice",
            Discoverability::LookupOnly,
            100,
            Some(recovery.author().0),
        )
        .expect("claim");
        let state = HandleState::apply(None, &claim).expect("claims");
        assert_eq!(
            HandleState::apply(Some(&state), &claim),
            Err(Refusal::Taken)
        );
        let by_bob = Entry::rotate(
            &bob,
            Signer::Key,
            "alice",
            state.latest,
            bob.author().0,
            Discoverability::Public,
            100,
        )
        .expect("rotation");
        assert_eq!(
            HandleState::apply(Some(&state), &by_bob),
            Err(Refusal::NotOwner)
        );
        let stale = Entry::rotate(
            &alice(),
            Signer::Key,
            "alice",
            [0; 32],
            bob.author().0,
            Discoverability::Public,
            100,
        )
        .expect("rotation");
        assert_eq!(
            HandleState::apply(Some(&state), &stale),
            Err(Refusal::Stale)
        );
        let recovered = Entry::rotate(
            &recovery,
            Signer::Recovery,
            "alice",
            state.latest,
            bob.author().0,
            Discoverability::LookupOnly,
            200,
        )
        .expect("rotation");
        let state = HandleState::apply(Some(&state), &recovered).expect("recovery rotates");
        assert_eq!(state.key, bob.author().0);
        assert!(state.answers(None));
        let revoke = Entry::revoke(
            &bob,
            Signer::Key,
            "alice",
            state.latest,
            Discoverability::LookupOnly,
        )
        .expect("revocation");
        let state = HandleState::apply(Some(&state), &revoke).expect("revokes");
        assert!(state.revoked);
        let after = Entry::rotate(
            &bob,
            Signer::Key,
            "alice",
            state.latest,
            bob.author().0,
            Discoverability::Public,
            100,
        )
        .expect("rotation");
        assert_eq!(
            HandleState::apply(Some(&state), &after),
            Err(Refusal::Revoked)
        );
    }

    /// A hidden entry's leaf holds neither the handle nor the key.
    #[test]
    fn hidden_leaf_names_nothing() {
        let claim =
            Entry::claim(&alice(), "alice", Discoverability::LookupOnly, 100, None).expect("claim");
        let leaf = claim.leaf();
        assert_eq!(leaf.len(), 33);
        assert!(!leaf.windows(5).any(|window| window == b"alice"));
        let public =
            Entry::claim(&alice(), "alice", Discoverability::Public, 100, None).expect("claim");
        assert_eq!(public.leaf()[1..], public.encode()[..]);
    }
}
