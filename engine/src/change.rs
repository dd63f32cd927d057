//! Changes: the signed, content-hashed unit of every write.
//!
//! A change is one transaction by one author. Its canonical bytes are
//! `body || signature` where `body` is the bincode encoding (varint integers,
//! little endian, pinned bincode 2.0.1) of [`ChangeBody`], laid out byte by byte
//! in docs/FORMAT.md "Change". The hash is blake3 (derive-key mode, context
//! [`HASH_CONTEXT`]) of `body`; the signature is ed25519 over
//! `SIGNATURE_DOMAIN || hash`.
//!
//! Decoding is strict: the body must re-encode to exactly the bytes received,
//! and every structural rule below holds, or the change is refused before its
//! hash or signature is even looked at by the rest of the engine.

use std::fmt;
use std::sync::Arc;

use bincode::{Decode, Encode};
use ed25519_dalek::{Signer, SigningKey};

use crate::value::Value;

/// Version of the change format written into every change body but a
/// checkpoint's: the lowest version that has all of its ops, so that builds of
/// format 2 still read every ordinary change.
pub const CHANGE_FORMAT_VERSION: u16 = 2;
/// Version of a change that holds a [`Op::Checkpoint`] (FORMAT.md
/// "Checkpoints, trimming and snapshots").
pub const CHECKPOINT_FORMAT_VERSION: u16 = 3;
/// The newest change format version this build reads.
pub const CHANGE_FORMAT_VERSION_MAX: u16 = 3;
/// Most entries of a checkpoint's frontier (72 bytes each in memory, so a
/// whole frontier stays far below the decoder's allocation limit).
pub const FRONTIER_MAX: usize = 16_384;
/// The oldest change format version this build reads (FORMAT.md "Version
/// changes"): version 1 changes are version 2 without the membership ops.
pub const CHANGE_FORMAT_VERSION_MIN: u16 = 1;
/// Most deps a change may list (its causal context).
pub const DEPS_MAX: usize = 16;
/// Most ops one change may hold.
pub const OPS_MAX: usize = 65_536;
/// Largest encoded change (body and signature), in bytes.
pub const CHANGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Longest table, row or field name, in bytes.
pub const NAME_BYTES_MAX: usize = 1024;
/// blake3 derive-key context for change hashes.
pub const HASH_CONTEXT: &str = "peers 2026-11-28 change hash v1";
/// Prefix of the message an author signs: `SIGNATURE_DOMAIN || hash`.
pub const SIGNATURE_DOMAIN: &[u8; 26] = b"peers change signature v1\0";
/// Bytes of an ed25519 signature, the last bytes of an encoded change.
pub const SIGNATURE_BYTES: usize = 64;

/// The bincode configuration that *is* the format: varint integers, little
/// endian, and a limit so a hostile length cannot make the decoder allocate.
pub(crate) const fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<CHANGE_BYTES_MAX>,
> {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<CHANGE_BYTES_MAX>()
}

macro_rules! hash_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lower-case hex of the 32 bytes.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses 64 hex digits.
            pub fn from_hex(text: &str) -> Result<Self, hex::FromHexError> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut bytes)?;
                Ok(Self(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..12])
            }
        }
    };
}

hash_type!(
    /// blake3 hash of a change body: the change's address everywhere.
    ChangeHash
);
hash_type!(
    /// An author: the 32 bytes of an ed25519 public key.
    Author
);
hash_type!(
    /// A database's id: the hash of its genesis change.
    DatabaseId
);

hash_type!(
    /// Digest of a materialized view ([`crate::Db::state_hash`]).
    StateHash
);
hash_type!(
    /// Digest of the snapshot state at a checkpoint's frontier (FORMAT.md
    /// "Frontier, closure, snapshot hash").
    SnapshotHash
);

/// One author's place in a checkpoint's frontier: its change `seq`, whose
/// hash is `hash`. Field order is the byte order of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct FrontierEntry {
    /// The author.
    pub author: Author,
    /// Its highest change at or below the frontier.
    pub seq: u64,
    /// That change's hash (which of a forked author's changes it is).
    pub hash: ChangeHash,
}

impl DatabaseId {
    /// The id written into the genesis change itself, which cannot name its
    /// own hash.
    pub const GENESIS: DatabaseId = DatabaseId([0; 32]);
}

/// One operation of a change. Variant order is part of the format.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
#[non_exhaustive]
pub enum Op {
    /// Set a field of a row.
    Set {
        /// Table name.
        table: String,
        /// Row id.
        row: String,
        /// Field name.
        field: String,
        /// New value.
        value: Value,
    },
    /// Delete a row: clears every field stamped below this op.
    Delete {
        /// Table name.
        table: String,
        /// Row id.
        row: String,
    },
    /// Add `delta` to a counter field.
    Increment {
        /// Table name.
        table: String,
        /// Row id.
        row: String,
        /// Field name.
        field: String,
        /// Amount added (wrapping).
        delta: i64,
    },
    /// The only op of a genesis change; the nonce makes each database unique.
    Genesis {
        /// Random bytes.
        nonce: [u8; 16],
    },
    /// Gives `key` a role (format version 2). Signed by the owner or an admin,
    /// always below the signer's own role.
    Grant {
        /// The key that receives the role.
        key: Author,
        /// The role.
        role: Role,
    },
    /// Ends `key`'s rights (format version 2): its changes after `last_seq`
    /// are invalid, on every replica, whenever they arrive.
    Revoke {
        /// The key revoked.
        key: Author,
        /// Its last change that stays valid (0: none).
        last_seq: u64,
    },
    /// Second op of a genesis change (format version 2): the database is
    /// members-only. Without it (and in every version 1 database) any key
    /// that knows the database id may write.
    MembersOnly,
    /// The owner's signed statement (format version 3, the only op of its
    /// change) that the state at `frontier` hashes to `snapshot` (FORMAT.md
    /// "Checkpoints, trimming and snapshots").
    Checkpoint {
        /// One entry per author, sorted by author; the signer's own is the
        /// change's `prev`.
        frontier: Vec<FrontierEntry>,
        /// The snapshot hash of the state at the frontier.
        snapshot: SnapshotHash,
    },
}

/// One named part of an op, for showing it (see [`Op::parts`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OpPart<'a> {
    /// A name (table, row, field).
    Name(&'static str, &'a str),
    /// A field value.
    Value(&'static str, &'a Value),
    /// A signed number.
    Int(&'static str, i64),
    /// An unsigned number.
    Uint(&'static str, u64),
    /// A key.
    Key(&'static str, &'a Author),
    /// A role.
    Role(&'static str, Role),
    /// Raw bytes (shown as hex).
    Bytes(&'static str, &'a [u8]),
    /// A checkpoint's frontier.
    Frontier(&'static str, &'a [FrontierEntry]),
}

impl Op {
    /// The op's kind, as the CLI and its JSON name it: `set`, `delete`,
    /// `increment`, `genesis`, `grant`, `revoke`, `members-only`, `checkpoint`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Set { .. } => "set",
            Op::Delete { .. } => "delete",
            Op::Increment { .. } => "increment",
            Op::Genesis { .. } => "genesis",
            Op::Grant { .. } => "grant",
            Op::Revoke { .. } => "revoke",
            Op::MembersOnly => "members-only",
            Op::Checkpoint { .. } => "checkpoint",
        }
    }

    /// Every part of the op, named, in order: the one description that the
    /// text ([`Op`]'s `Display`) and the CLI's JSON are made from, so a new
    /// op cannot be shown as "unknown" anywhere.
    pub fn parts(&self) -> Vec<OpPart<'_>> {
        match self {
            Op::Set {
                table,
                row,
                field,
                value,
            } => vec![
                OpPart::Name("table", table),
                OpPart::Name("row", row),
                OpPart::Name("field", field),
                OpPart::Value("value", value),
            ],
            Op::Delete { table, row } => {
                vec![OpPart::Name("table", table), OpPart::Name("row", row)]
            }
            Op::Increment {
                table,
                row,
                field,
                delta,
            } => vec![
                OpPart::Name("table", table),
                OpPart::Name("row", row),
                OpPart::Name("field", field),
                OpPart::Int("delta", *delta),
            ],
            Op::Genesis { nonce } => vec![OpPart::Bytes("nonce", nonce)],
            Op::Grant { key, role } => vec![OpPart::Key("key", key), OpPart::Role("role", *role)],
            Op::Revoke { key, last_seq } => {
                vec![OpPart::Key("key", key), OpPart::Uint("last_seq", *last_seq)]
            }
            Op::MembersOnly => Vec::new(),
            Op::Checkpoint { frontier, snapshot } => vec![
                OpPart::Frontier("frontier", frontier),
                OpPart::Bytes("snapshot", &snapshot.0),
            ],
        }
    }
}

/// One line per op, e.g. `set notes/n1.title = "Hello"`, `incr notes/n1.views
/// by 2`, `grant writer to <key>`, `revoke <key> after seq 4`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Set {
                table,
                row,
                field,
                value,
            } => write!(f, "set {table}/{row}.{field} = {value}"),
            Op::Delete { table, row } => write!(f, "delete {table}/{row}"),
            Op::Increment {
                table,
                row,
                field,
                delta,
            } => write!(f, "incr {table}/{row}.{field} by {delta}"),
            Op::Genesis { nonce } => write!(f, "genesis (nonce {})", hex::encode(nonce)),
            Op::Grant { key, role } => write!(f, "grant {role} to {}", key.to_hex()),
            Op::Revoke { key, last_seq } => {
                write!(f, "revoke {} after seq {last_seq}", key.to_hex())
            }
            Op::MembersOnly => f.write_str("members-only"),
            Op::Checkpoint { frontier, snapshot } => write!(
                f,
                "checkpoint at {} author{} (snapshot {})",
                frontier.len(),
                if frontier.len() == 1 { "" } else { "s" },
                snapshot.to_hex()
            ),
        }
    }
}

/// A key's rights in a members-only database. Order is rank: a reader may
/// sync, a writer may also write rows, an admin may also grant and revoke
/// writers and readers, the owner (the genesis author) may do everything.
/// Variant order is part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum Role {
    /// Syncs; signs no change.
    Reader,
    /// Writes rows.
    Writer,
    /// Writes rows; grants and revokes writers and readers.
    Admin,
    /// The genesis author: writes; grants and revokes anyone but itself.
    Owner,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
            Role::Owner => "owner",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            other => Err(format!("{other:?} is not a role (reader, writer, admin)")),
        }
    }
}

impl Op {
    /// The (table, row) this op touches, if it touches one.
    pub fn row(&self) -> Option<(&str, &str)> {
        match self {
            Op::Set { table, row, .. }
            | Op::Delete { table, row }
            | Op::Increment { table, row, .. } => Some((table, row)),
            Op::Genesis { .. }
            | Op::Grant { .. }
            | Op::Revoke { .. }
            | Op::MembersOnly
            | Op::Checkpoint { .. } => None,
        }
    }

    /// Whether this op grants or revokes a role.
    pub fn is_membership(&self) -> bool {
        matches!(self, Op::Grant { .. } | Op::Revoke { .. })
    }

    /// The oldest change format version that has this op.
    fn since_version(&self) -> u16 {
        match self {
            Op::Grant { .. } | Op::Revoke { .. } | Op::MembersOnly => 2,
            Op::Checkpoint { .. } => 3,
            _ => 1,
        }
    }
}

/// The format version a change holding `ops` is written with: the lowest
/// that has every op, and at least [`CHANGE_FORMAT_VERSION`].
pub(crate) fn version_for(ops: &[Op]) -> u16 {
    ops.iter()
        .map(Op::since_version)
        .fold(CHANGE_FORMAT_VERSION, u16::max)
}

/// The signed part of a change. Field order is the byte order of the format.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct ChangeBody {
    /// [`CHANGE_FORMAT_VERSION`].
    pub version: u16,
    /// The database; [`DatabaseId::GENESIS`] in the genesis change.
    pub database: DatabaseId,
    /// The author's public key.
    pub author: Author,
    /// 1, 2, 3, ... per author.
    pub seq: u64,
    /// Hash of the author's change `seq - 1`; `None` exactly when `seq == 1`.
    pub prev: Option<ChangeHash>,
    /// Other authors' changes the author had seen as heads; sorted, unique.
    pub deps: Vec<ChangeHash>,
    /// `1 + max(lamport of prev and of every dep)`; 1 with neither.
    pub lamport: u64,
    /// Wall clock at commit, ms since the epoch. Informational only.
    pub wall_ms: u64,
    /// The operations, applied in order; op index is the position here.
    pub ops: Vec<Op>,
}

/// Why bytes are not a well-formed change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than a signature.
    #[error("change of {bytes} bytes is shorter than its signature")]
    Truncated {
        /// Bytes received.
        bytes: usize,
    },
    /// Larger than [`CHANGE_BYTES_MAX`].
    #[error("change of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Bytes received.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The body did not decode.
    #[error("change body does not decode: {message}")]
    Undecodable {
        /// The decoder's description.
        message: String,
    },
    /// Bytes left after the body.
    #[error("{extra} bytes after the change body")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// Decoded, but re-encodes to other bytes (e.g. an overlong varint).
    #[error("change body is not in canonical form")]
    NonCanonical,
    /// A version this build does not know.
    #[error("change format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Found in the change.
        found: u16,
        /// What this build reads.
        supported: u16,
    },
    /// A structural rule is broken.
    #[error("change breaks a structural rule: {rule}")]
    Invalid {
        /// Which rule (see docs/FORMAT.md "Structural rules").
        rule: &'static str,
    },
}

/// A decoded change with its hash and signature.
///
/// # Invariants
/// `bytes` is the canonical encoding of `body` followed by `signature`, and
/// `hash` is the hash of the body bytes. The signature is *not* implied valid:
/// see [`crate::verify_signatures`].
#[derive(Clone)]
pub struct Change {
    body: Arc<ChangeBody>,
    hash: ChangeHash,
    signature: [u8; SIGNATURE_BYTES],
    bytes: Arc<[u8]>,
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("hash", &self.hash)
            .field("author", &self.body.author)
            .field("seq", &self.body.seq)
            .field("lamport", &self.body.lamport)
            .field("ops", &self.body.ops.len())
            .finish()
    }
}

impl PartialEq for Change {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for Change {}

fn hash_body(body_bytes: &[u8]) -> ChangeHash {
    let mut hasher = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    hasher.update(body_bytes);
    ChangeHash(*hasher.finalize().as_bytes())
}

pub(crate) fn signed_message(hash: &ChangeHash) -> [u8; 58] {
    let mut message = [0u8; 58];
    message[..SIGNATURE_DOMAIN.len()].copy_from_slice(SIGNATURE_DOMAIN);
    message[SIGNATURE_DOMAIN.len()..].copy_from_slice(&hash.0);
    message
}
const _: () = assert!(SIGNATURE_DOMAIN.len() + 32 == 58);

/// A change encoded and hashed but not yet signed: its hash is what the
/// next change of its chain names, so a chain can be built first and its
/// changes signed afterwards, on several threads (`db::commit`).
pub(crate) struct Unsigned {
    body: ChangeBody,
    bytes: Vec<u8>,
    hash: ChangeHash,
}

impl Unsigned {
    /// Encodes and hashes `body`. Panics if `body` breaks a structural rule
    /// or the signed change would exceed [`CHANGE_BYTES_MAX`]: building one
    /// is a bug in the caller, not bad input.
    pub(crate) fn new(body: ChangeBody) -> Unsigned {
        if let Err(rule) = check_structure(&body) {
            panic!("built a change that breaks a structural rule: {rule}");
        }
        let bytes = bincode::encode_to_vec(&body, bincode_config())
            .expect("encoding into a Vec cannot fail");
        assert!(
            bytes.len() + SIGNATURE_BYTES <= CHANGE_BYTES_MAX,
            "change of {} bytes exceeds the limit",
            bytes.len() + SIGNATURE_BYTES
        );
        let hash = hash_body(&bytes);
        Unsigned { body, bytes, hash }
    }

    /// The hash the change will have.
    pub(crate) fn hash(&self) -> ChangeHash {
        self.hash
    }

    /// Signs with `key`, which must be the author's.
    pub(crate) fn sign(self, key: &SigningKey) -> Change {
        assert_eq!(
            self.body.author.0,
            key.verifying_key().to_bytes(),
            "author must be the signer"
        );
        let signature = key.sign(&signed_message(&self.hash)).to_bytes();
        let mut bytes = self.bytes;
        bytes.extend_from_slice(&signature);
        Change {
            body: Arc::new(self.body),
            hash: self.hash,
            signature,
            bytes: bytes.into(),
        }
    }
}

impl Change {
    /// Encodes and signs `body` with `key`. Panics if `body` breaks a
    /// structural rule: building one is a bug in the caller, not bad input.
    pub(crate) fn sign(body: ChangeBody, key: &SigningKey) -> Change {
        Unsigned::new(body).sign(key)
    }

    /// Decodes canonical change bytes. Checks form only, not the signature.
    pub fn decode(bytes: &[u8]) -> Result<Change, FormatError> {
        if bytes.len() > CHANGE_BYTES_MAX {
            return Err(FormatError::TooLarge {
                bytes: bytes.len(),
                max: CHANGE_BYTES_MAX,
            });
        }
        let body_len = bytes
            .len()
            .checked_sub(SIGNATURE_BYTES)
            .ok_or(FormatError::Truncated { bytes: bytes.len() })?;
        let (body_bytes, signature_bytes) = bytes.split_at(body_len);
        let (body, read): (ChangeBody, usize) =
            bincode::decode_from_slice(body_bytes, bincode_config()).map_err(|error| {
                FormatError::Undecodable {
                    message: error.to_string(),
                }
            })?;
        if read != body_bytes.len() {
            return Err(FormatError::TrailingBytes {
                extra: body_bytes.len() - read,
            });
        }
        if !(CHANGE_FORMAT_VERSION_MIN..=CHANGE_FORMAT_VERSION_MAX).contains(&body.version) {
            return Err(FormatError::UnsupportedVersion {
                found: body.version,
                supported: CHANGE_FORMAT_VERSION_MAX,
            });
        }
        let reencoded = bincode::encode_to_vec(&body, bincode_config()).map_err(|error| {
            FormatError::Undecodable {
                message: error.to_string(),
            }
        })?;
        if reencoded != body_bytes {
            return Err(FormatError::NonCanonical);
        }
        check_structure(&body).map_err(|rule| FormatError::Invalid { rule })?;
        let mut signature = [0u8; SIGNATURE_BYTES];
        signature.copy_from_slice(signature_bytes);
        Ok(Change {
            body: Arc::new(body),
            hash: hash_body(body_bytes),
            signature,
            bytes: bytes.into(),
        })
    }

    /// The change's address.
    pub fn hash(&self) -> ChangeHash {
        self.hash
    }
    /// The signed body.
    pub fn body(&self) -> &ChangeBody {
        &self.body
    }
    /// The author.
    pub fn author(&self) -> Author {
        self.body.author
    }
    /// Sequence number in the author's chain.
    pub fn seq(&self) -> u64 {
        self.body.seq
    }
    /// Lamport timestamp.
    pub fn lamport(&self) -> u64 {
        self.body.lamport
    }
    /// The operations.
    pub fn ops(&self) -> &[Op] {
        &self.body.ops
    }
    /// Canonical bytes: body then signature.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The 64 signature bytes.
    pub fn signature(&self) -> &[u8; SIGNATURE_BYTES] {
        &self.signature
    }
    /// Whether this is a genesis change (its hash is a database id).
    pub fn is_genesis(&self) -> bool {
        self.body.database == DatabaseId::GENESIS
    }
    /// The frontier and snapshot hash of a checkpoint change (one that
    /// holds a `Checkpoint` op, which then is its only op); `None` for any
    /// other change.
    pub fn checkpoint(&self) -> Option<(&[FrontierEntry], SnapshotHash)> {
        match self.ops() {
            [Op::Checkpoint { frontier, snapshot }] => Some((frontier, *snapshot)),
            _ => None,
        }
    }
    /// Every change this one names: `prev` first, then deps.
    pub fn predecessors(&self) -> impl Iterator<Item = ChangeHash> + '_ {
        self.body
            .prev
            .iter()
            .copied()
            .chain(self.body.deps.iter().copied())
    }
}

/// Rules a change must meet whatever else is known (docs/FORMAT.md
/// "Structural rules"). Returns the broken rule's name.
fn check_structure(body: &ChangeBody) -> Result<(), &'static str> {
    if body.seq == 0 {
        return Err("seq starts at 1");
    }
    if (body.seq == 1) != body.prev.is_none() {
        return Err("prev is absent exactly when seq is 1");
    }
    if body.deps.len() > DEPS_MAX {
        return Err("at most DEPS_MAX deps");
    }
    if !body.deps.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err("deps are sorted and unique");
    }
    if body.lamport == 0 {
        return Err("lamport starts at 1");
    }
    if body.ops.len() > OPS_MAX {
        return Err("at most OPS_MAX ops");
    }
    if body.ops.iter().any(|op| op.since_version() > body.version) {
        return Err("an op newer than the change's format version");
    }
    if body.database == DatabaseId::GENESIS {
        return check_genesis(body);
    }
    check_ops(&body.ops)?;
    check_checkpoint(body)
}

/// The rules on a change that holds a checkpoint (FORMAT.md "The Checkpoint
/// op"), in the order the spec lists them.
fn check_checkpoint(body: &ChangeBody) -> Result<(), &'static str> {
    let Some(frontier) = body.ops.iter().find_map(|op| match op {
        Op::Checkpoint { frontier, .. } => Some(frontier),
        _ => None,
    }) else {
        return Ok(());
    };
    if body.ops.len() != 1 {
        return Err("a Checkpoint is the only op of its change");
    }
    if frontier.is_empty() || frontier.len() > FRONTIER_MAX {
        return Err("a frontier holds 1 to FRONTIER_MAX entries");
    }
    if !frontier
        .windows(2)
        .all(|pair| pair[0].author < pair[1].author)
    {
        return Err("a frontier is sorted by author, one entry each");
    }
    if frontier.iter().any(|entry| entry.seq == 0) {
        return Err("a frontier entry's seq starts at 1");
    }
    let own = frontier
        .binary_search_by(|entry| entry.author.cmp(&body.author))
        .ok()
        .and_then(|index| frontier.get(index));
    if own.is_none_or(|own| own.seq + 1 != body.seq || Some(own.hash) != body.prev) {
        return Err("a checkpoint's frontier names its signer's prev");
    }
    Ok(())
}

/// Most bytes a change's ops may take: [`CHANGE_BYTES_MAX`] less room for
/// the largest possible rest of a change (its fixed fields, `DEPS_MAX`
/// deps, the ops' count and the signature), so ops within it always make a
/// change within the limit.
pub(crate) const OPS_BYTES_MAX: usize =
    CHANGE_BYTES_MAX - (2 + 3 * 33 + 10 * 3 + 5 + DEPS_MAX * 32 + 5 + SIGNATURE_BYTES);

/// What `ops` take encoded (as in a change body), counted without
/// building the bytes (a commit encodes them once, when it signs).
pub(crate) fn ops_bytes(ops: &[Op]) -> usize {
    use bincode::Encode;
    let mut encoder = bincode::enc::EncoderImpl::new(
        bincode::enc::write::SizeWriter::default(),
        bincode::config::standard(),
    );
    for op in ops {
        if op.encode(&mut encoder).is_err() {
            return usize::MAX;
        }
    }
    encoder.into_writer().bytes_written
}

/// Whether a change holding `ops` decodes: the decoder's allocation limit
/// (FORMAT.md "The decoder's allocation limit") counts the decoded value's
/// memory, which for many small ops passes 4 MiB long before their bytes
/// do. Decides by decoding a change of the largest possible other fields
/// (`DEPS_MAX` deps, a prev, the widest integers) with these ops; `bytes`
/// is [`ops_bytes`] of them, and only changes near the limit pay for that.
pub(crate) fn ops_decode(ops: &[Op], bytes: usize) -> bool {
    // The count is at most the ops' bytes plus 104 per op (an op's memory,
    // claimed when the op count is read) plus 8 per integer or length of an
    // op (at most 64 more per op), plus under 1 KiB for the other fields.
    let bound = bytes
        .saturating_add(ops.len().saturating_mul(std::mem::size_of::<Op>() + 64))
        .saturating_add(1024);
    if bound <= CHANGE_BYTES_MAX {
        return true;
    }
    let body = ChangeBody {
        version: CHANGE_FORMAT_VERSION,
        database: DatabaseId([0xff; 32]),
        author: Author([0xff; 32]),
        seq: u64::MAX,
        prev: Some(ChangeHash([0xff; 32])),
        deps: vec![ChangeHash([0xff; 32]); DEPS_MAX],
        lamport: u64::MAX,
        wall_ms: u64::MAX,
        ops: ops.to_vec(),
    };
    let encoded = bincode::encode_to_vec(&body, bincode::config::standard())
        .expect("encoding into a Vec cannot fail");
    bincode::decode_from_slice::<ChangeBody, _>(&encoded, bincode_config()).is_ok()
}

/// The rules on the ops of a non-genesis change.
pub(crate) fn check_ops(ops: &[Op]) -> Result<(), &'static str> {
    if ops.is_empty() {
        return Err("a change holds at least one op");
    }
    if ops.len() > OPS_MAX {
        return Err("at most OPS_MAX ops");
    }
    for op in ops {
        check_op(op)?;
    }
    Ok(())
}

fn check_genesis(body: &ChangeBody) -> Result<(), &'static str> {
    let genesis_ops = matches!(
        body.ops.as_slice(),
        [Op::Genesis { .. }] | [Op::Genesis { .. }, Op::MembersOnly]
    );
    if body.seq != 1 || !body.deps.is_empty() || body.lamport != 1 || !genesis_ops {
        return Err(
            "a genesis change is seq 1, lamport 1, no deps, a Genesis op and an optional MembersOnly",
        );
    }
    Ok(())
}

fn check_op(op: &Op) -> Result<(), &'static str> {
    let names: &[&str] = match op {
        Op::Set {
            table, row, field, ..
        }
        | Op::Increment {
            table, row, field, ..
        } => &[table, row, field],
        Op::Delete { table, row } => &[table, row],
        Op::Genesis { .. } => return Err("Genesis op only in a genesis change"),
        Op::MembersOnly => return Err("MembersOnly op only in a genesis change"),
        Op::Grant { .. } | Op::Revoke { .. } | Op::Checkpoint { .. } => &[],
    };
    for name in names {
        if name.is_empty() || name.len() > NAME_BYTES_MAX {
            return Err("names are 1 to NAME_BYTES_MAX bytes");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{verify_signature, verify_signatures};

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn body(key: &SigningKey) -> ChangeBody {
        ChangeBody {
            version: CHANGE_FORMAT_VERSION,
            database: DatabaseId([7; 32]),
            author: Author(key.verifying_key().to_bytes()),
            seq: 1,
            prev: None,
            deps: vec![],
            lamport: 1,
            wall_ms: 1_700_000_000_000,
            ops: vec![Op::Set {
                table: "t".into(),
                row: "r".into(),
                field: "f".into(),
                value: Value::Int(1),
            }],
        }
    }

    /// Encode then decode gives the same change, hash and bytes.
    #[test]
    fn round_trip() {
        let change = Change::sign(body(&key(1)), &key(1));
        let decoded = Change::decode(change.bytes()).expect("decodes");
        assert_eq!(decoded, change);
        assert_eq!(decoded.hash(), change.hash());
        assert_eq!(decoded.body(), change.body());
        verify_signature(&decoded).expect("signature verifies");
    }

    /// Flipping any single byte gives a decode error or a failed signature.
    #[test]
    fn every_flipped_byte_is_caught() {
        let change = Change::sign(body(&key(1)), &key(1));
        for index in 0..change.bytes().len() {
            let mut bytes = change.bytes().to_vec();
            bytes[index] ^= 0x01;
            match Change::decode(&bytes) {
                Err(_) => {}
                Ok(tampered) => assert!(
                    verify_signature(&tampered).is_err(),
                    "flip at {index} went unnoticed"
                ),
            }
        }
    }

    /// An overlong varint decodes in bincode but is refused as non-canonical.
    #[test]
    fn non_canonical_refused() {
        let change = Change::sign(body(&key(1)), &key(1));
        let mut bytes = change.bytes().to_vec();
        // The version (2) is the first byte: re-encode it as 0xfb 0x02 0x00.
        assert_eq!(bytes[0], 2);
        bytes.splice(0..1, [0xfb, 0x02, 0x00]);
        assert_eq!(
            Change::decode(&bytes).err(),
            Some(FormatError::NonCanonical)
        );
    }

    /// A batch with one forged signature names the forged change.
    #[test]
    fn batch_names_the_bad_change() {
        let changes: Vec<Change> = (1..=5u8)
            .map(|seed| Change::sign(body(&key(seed)), &key(seed)))
            .collect();
        verify_signatures(&changes).expect("all valid");
        let mut forged = changes.clone();
        let mut bytes = forged[3].bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last - 40] ^= 0x10;
        forged[3] = Change::decode(&bytes).expect("still well formed");
        let (index, _) = verify_signatures(&forged).expect_err("forged");
        assert_eq!(index, 3);
    }

    /// Structural rules are enforced on decode.
    #[test]
    fn structural_rules() {
        let mut bad = body(&key(1));
        bad.deps = vec![ChangeHash([2; 32]), ChangeHash([1; 32])];
        let bytes = bincode::encode_to_vec(&bad, bincode_config()).expect("encodes");
        let mut bytes = bytes;
        bytes.extend_from_slice(&[0; 64]);
        assert!(matches!(
            Change::decode(&bytes),
            Err(FormatError::Invalid { .. })
        ));
        assert!(matches!(
            Change::decode(&[1, 2, 3]),
            Err(FormatError::Truncated { .. })
        ));
    }
}
