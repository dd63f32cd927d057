//! The backup's byte formats (docs/SERVICES.md "Backup formats"): object
//! names, the sealed object envelope, the manifest, the key file and the
//! prune mark. This module is their only implementation; every decoder takes
//! bytes from an adversary (the store) and returns a typed error.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use peers_engine::{Author, DatabaseId, Identity};

use crate::error::ObjectFault;

/// Version of every format on this page. A reader refuses any other.
pub const BACKUP_FORMAT_VERSION: u32 = 1;

/// Magic of a sealed object (segment, tail, manifest, prune mark).
pub(crate) const OBJECT_MAGIC: [u8; 8] = *b"PEERSBAK";
/// Magic of a manifest's plaintext.
pub(crate) const MANIFEST_MAGIC: [u8; 8] = *b"PEERSMAN";
/// Magic of a key file's plaintext (inside age).
pub(crate) const KEY_MAGIC: [u8; 8] = *b"PEERSKEY";
/// Magic of a prune mark's plaintext.
pub(crate) const MARK_MAGIC: [u8; 8] = *b"PEERSPRN";

/// blake3 `derive_key` context of the key that names objects.
pub(crate) const NAME_KEY_CONTEXT: &str = "peers-backup v1 object name key";
/// blake3 `derive_key` context of the key that seals objects.
pub(crate) const SEAL_KEY_CONTEXT: &str = "peers-backup v1 object seal key";
/// Prefix of the message a device signs for a manifest (the domain tag).
pub(crate) const MANIFEST_SIGNATURE_DOMAIN: &[u8] = b"peers-backup v1 manifest\0";

/// `magic | version u32 | nonce[24]` before a sealed object's ciphertext.
pub(crate) const OBJECT_HEADER_BYTES: usize = 8 + 4 + 24;
/// The Poly1305 tag after the ciphertext.
pub(crate) const TAG_BYTES: usize = 16;
/// What sealing adds to a plaintext.
pub const SEAL_OVERHEAD_BYTES: u64 = (OBJECT_HEADER_BYTES + TAG_BYTES) as u64;

/// Largest wal segment a backup takes (the engine's default segment is
/// 64 MiB; a segment is held in memory whole while sealed or opened).
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// The wal's segment header: the least bytes a segment entry can have.
pub(crate) const WAL_HEADER_BYTES: u64 = 32;

/// Fixed part of a manifest before its entries.
pub(crate) const MANIFEST_FIXED_BYTES: usize = 8 + 4 + 32 + 32 + 8 + 8 + 4;
/// One manifest entry:
/// `kind u8 | base u64 | offset u64 | bytes u64 | run u64 | blake3[32]`.
pub(crate) const MANIFEST_ENTRY_BYTES: usize = 1 + 8 + 8 + 8 + 8 + 32;
/// An ed25519 signature.
pub(crate) const SIGNATURE_BYTES: usize = 64;
/// Most entries (segments) one manifest may name: 64 Ki segments, 4 TiB of
/// log at the default segment size.
pub const MANIFEST_ENTRIES_MAX: u32 = 1 << 16;
/// Largest manifest plaintext.
pub(crate) const MANIFEST_BYTES_MAX: u64 = (MANIFEST_FIXED_BYTES
    + MANIFEST_ENTRIES_MAX as usize * MANIFEST_ENTRY_BYTES
    + SIGNATURE_BYTES) as u64;
/// A key file's plaintext: `magic | version | database[32] | key[32]`.
pub(crate) const KEY_PLAINTEXT_BYTES: usize = 8 + 4 + 32 + 32;
/// Largest key file (an age file to one X25519 recipient is ~250 bytes).
pub(crate) const KEY_OBJECT_BYTES_MAX: u64 = 8 * 1024;
/// Largest prune mark plaintext.
pub(crate) const MARK_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most names one prune mark lists (the rest wait for the next prune).
pub(crate) const MARK_NAMES_MAX: usize = 100_000;
/// Longest object name a mark may list.
pub(crate) const NAME_BYTES_MAX: usize = 1024;

const _: () = assert!(MANIFEST_BYTES_MAX < MARK_BYTES_MAX);
/// The longest name a backup writes under a MAC: `manifests/` and 64 hex digits.
pub(crate) const NAMED_BYTES_MAX: usize = MANIFESTS_DIR.len() + 1 + 64;
const _: () = assert!(NAMED_BYTES_MAX <= NAME_BYTES_MAX);
const _: () = assert!((24 + MARK_NAMES_MAX * (2 + NAMED_BYTES_MAX + 8)) as u64 <= MARK_BYTES_MAX);
const _: () = assert!(WAL_HEADER_BYTES < SEGMENT_BYTES_MAX);

/// The folder of each kind of object under the store's prefix.
pub(crate) const SEGMENTS_DIR: &str = "segments";
/// Tails (the unsealed last segment of one run).
pub(crate) const TAILS_DIR: &str = "tails";
/// Manifests (one per run).
pub(crate) const MANIFESTS_DIR: &str = "manifests";
/// Key files (the backup key wrapped to a device or a recovery key).
pub(crate) const KEYS_DIR: &str = "keys";
/// Prune marks (objects named for deletion after a grace period).
pub(crate) const MARKS_DIR: &str = "prune";

/// The secret of one database's backups: 32 random bytes. Its two
/// sub-keys name and seal objects.
#[derive(Clone)]
pub struct BackupKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(..)")
    }
}

impl BackupKey {
    /// A new random key.
    pub(crate) fn generate() -> BackupKey {
        BackupKey(random_bytes())
    }

    fn name_key(&self) -> [u8; 32] {
        blake3::derive_key(NAME_KEY_CONTEXT, &self.0)
    }

    fn seal_key(&self) -> [u8; 32] {
        blake3::derive_key(SEAL_KEY_CONTEXT, &self.0)
    }
}

/// `N` bytes from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes
}

/// What an object named by a MAC holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamedKind {
    /// A sealed wal segment; the number is its base.
    Segment = 1,
    /// A piece of the unsealed last segment, uploaded by one run; the
    /// number is the run.
    Tail = 2,
    /// One run's manifest; the number is the run.
    Manifest = 3,
}

impl NamedKind {
    fn dir(self) -> &'static str {
        match self {
            NamedKind::Segment => SEGMENTS_DIR,
            NamedKind::Tail => TAILS_DIR,
            NamedKind::Manifest => MANIFESTS_DIR,
        }
    }
}

/// The name of a segment, tail or manifest object:
/// `{dir}/{hex(blake3_keyed(name_key, kind u8 | device[32] | number u64 LE))}`.
/// Names reveal the kind, not the database, the device or the number.
pub(crate) fn object_name(
    key: &BackupKey,
    kind: NamedKind,
    device: &Author,
    number: u64,
) -> String {
    let mut input = [0u8; 1 + 32 + 8];
    input[0] = kind as u8;
    input[1..33].copy_from_slice(&device.0);
    input[33..].copy_from_slice(&number.to_le_bytes());
    let tag = blake3::keyed_hash(&key.name_key(), &input);
    format!("{}/{}", kind.dir(), tag.to_hex())
}

/// Whether `name` is one [`object_name`] could have made: `dir/` and 64
/// lowercase hex digits (prune deletes nothing else).
pub(crate) fn is_named(name: &str) -> bool {
    let Some((dir, tag)) = name.split_once('/') else {
        return false;
    };
    [SEGMENTS_DIR, TAILS_DIR, MANIFESTS_DIR].contains(&dir)
        && tag.len() == 64
        && tag
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// A random name in `dir` (key files and prune marks, which no reader needs
/// to find by content).
pub(crate) fn random_name(dir: &str) -> String {
    format!("{dir}/{}", hex::encode(random_bytes::<16>()))
}

/// The associated data of a sealed object: it binds the ciphertext to the
/// format, the database and the object's name, so an object moved to
/// another name, or from another database's backup, does not open.
/// `magic | version u32 | database[32] | name length u32 | name`.
fn associated_data(database: &DatabaseId, name: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + 4 + 32 + 4 + name.len());
    data.extend_from_slice(&OBJECT_MAGIC);
    data.extend_from_slice(&BACKUP_FORMAT_VERSION.to_le_bytes());
    data.extend_from_slice(&database.0);
    let length = u32::try_from(name.len()).unwrap_or(u32::MAX);
    data.extend_from_slice(&length.to_le_bytes());
    data.extend_from_slice(name.as_bytes());
    data
}

/// Seals `plaintext` as the object `name` with a random 24-byte nonce:
/// `magic | version u32 | nonce[24] | XChaCha20-Poly1305(plaintext) | tag[16]`.
pub(crate) fn seal(
    key: &BackupKey,
    database: &DatabaseId,
    name: &str,
    plaintext: &[u8],
) -> Vec<u8> {
    seal_with_nonce(key, database, name, plaintext, random_bytes())
}

/// [`seal`] with a given nonce (test vectors). Nonces are random: with 192
/// bits, devices sharing a key never need to coordinate.
pub(crate) fn seal_with_nonce(
    key: &BackupKey,
    database: &DatabaseId,
    name: &str,
    plaintext: &[u8],
    nonce: [u8; 24],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&key.seal_key().into());
    let aad = associated_data(database, name);
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any message under 2^38 bytes");
    let mut object = Vec::with_capacity(OBJECT_HEADER_BYTES + ciphertext.len());
    object.extend_from_slice(&OBJECT_MAGIC);
    object.extend_from_slice(&BACKUP_FORMAT_VERSION.to_le_bytes());
    object.extend_from_slice(&nonce);
    object.extend_from_slice(&ciphertext);
    object
}

/// Opens the object `name`: checks magic and version, then authenticates
/// and decrypts. Any change to the bytes, the name or the database fails.
pub(crate) fn open(
    key: &BackupKey,
    database: &DatabaseId,
    name: &str,
    object: &[u8],
) -> Result<Vec<u8>, ObjectFault> {
    if object.len() < OBJECT_HEADER_BYTES + TAG_BYTES {
        return Err(ObjectFault::Truncated {
            bytes: object.len() as u64,
        });
    }
    if object[..8] != OBJECT_MAGIC {
        return Err(ObjectFault::BadMagic);
    }
    let version = read_u32(object, 8);
    if version != BACKUP_FORMAT_VERSION {
        return Err(ObjectFault::UnsupportedVersion { found: version });
    }
    let cipher = XChaCha20Poly1305::new(&key.seal_key().into());
    let aad = associated_data(database, name);
    cipher
        .decrypt(
            XNonce::from_slice(&object[12..OBJECT_HEADER_BYTES]),
            Payload {
                msg: &object[OBJECT_HEADER_BYTES..],
                aad: &aad,
            },
        )
        .map_err(|_| ObjectFault::Unauthentic)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn read_32(bytes: &[u8], at: usize) -> [u8; 32] {
    let mut word = [0u8; 32];
    word.copy_from_slice(&bytes[at..at + 32]);
    word
}

/// What a manifest entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A sealed segment, whole (object named by its base).
    Segment,
    /// A piece of the unsealed last segment (object named by the run that
    /// uploaded it): each run uploads only the bytes appended since.
    Tail,
}

/// One piece of a wal segment file a manifest names: a whole sealed
/// segment, or a range of the last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Sealed segment or tail piece.
    pub kind: EntryKind,
    /// The segment's base (its file name).
    pub base: u64,
    /// Where in the file the piece starts (0 for a sealed segment).
    pub offset: u64,
    /// The piece's bytes.
    pub bytes: u64,
    /// For a tail piece, the run that uploaded it (its name); 0 for a
    /// sealed segment.
    pub run: u64,
    /// blake3 of those bytes.
    pub hash: [u8; 32],
}

impl Entry {
    /// The log position just past this piece.
    pub fn end(&self) -> u64 {
        self.base
            .saturating_add(self.offset)
            .saturating_add(self.bytes)
    }
}

/// One run's manifest: which device made it, its number, and the log's
/// segments, signed by the device's key.
///
/// # Invariants
/// Entries chain from position 0 (each starts where the previous ends);
/// sealed segments come first, whole; then the last segment's pieces, at
/// least one, from offset 0, each from an earlier run than the next and
/// none from a later run than this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The database backed up.
    pub database: DatabaseId,
    /// The device (replica key) that ran the backup and signed this.
    pub device: Author,
    /// The run's number: 1, 2, … per device.
    pub run: u64,
    /// When the run started (wall clock, informational).
    pub created_ms: u64,
    /// The log's segments, the tail last.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// The log's end as of the run: where its last entry ends.
    pub fn log_end(&self) -> u64 {
        self.entries.last().map_or(0, Entry::end)
    }

    /// The object name of each entry, with the entry.
    pub(crate) fn entry_names<'a>(
        &'a self,
        key: &'a BackupKey,
    ) -> impl Iterator<Item = (String, &'a Entry)> + 'a {
        self.entries.iter().map(move |entry| {
            let name = match entry.kind {
                EntryKind::Segment => {
                    object_name(key, NamedKind::Segment, &self.device, entry.base)
                }
                EntryKind::Tail => object_name(key, NamedKind::Tail, &self.device, entry.run),
            };
            (name, entry)
        })
    }

    /// The body (everything the signature covers).
    fn encode_body(&self) -> Vec<u8> {
        debug_assert!(check_entries(&self.entries, self.run).is_ok());
        let mut bytes =
            Vec::with_capacity(MANIFEST_FIXED_BYTES + self.entries.len() * MANIFEST_ENTRY_BYTES);
        bytes.extend_from_slice(&MANIFEST_MAGIC);
        bytes.extend_from_slice(&BACKUP_FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&self.database.0);
        bytes.extend_from_slice(&self.device.0);
        bytes.extend_from_slice(&self.run.to_le_bytes());
        bytes.extend_from_slice(&self.created_ms.to_le_bytes());
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&count.to_le_bytes());
        for entry in &self.entries {
            bytes.push(match entry.kind {
                EntryKind::Segment => 1,
                EntryKind::Tail => 2,
            });
            bytes.extend_from_slice(&entry.base.to_le_bytes());
            bytes.extend_from_slice(&entry.offset.to_le_bytes());
            bytes.extend_from_slice(&entry.bytes.to_le_bytes());
            bytes.extend_from_slice(&entry.run.to_le_bytes());
            bytes.extend_from_slice(&entry.hash);
        }
        bytes
    }

    /// `body | ed25519 signature[64]` over `MANIFEST_SIGNATURE_DOMAIN | body`,
    /// by `identity`, which must be the manifest's device.
    pub(crate) fn encode_signed(&self, identity: &Identity) -> Vec<u8> {
        assert_eq!(
            identity.author(),
            self.device,
            "a device signs its own manifests"
        );
        let mut bytes = self.encode_body();
        let signature = identity.sign_bytes(&signed_message(&bytes));
        bytes.extend_from_slice(&signature);
        bytes
    }

    /// Decodes and checks a manifest's plaintext (docs/SERVICES.md
    /// "Manifest"): layout, limits (checked before allocating), the entries'
    /// invariants, and the device's signature. Every failure is an
    /// [`ObjectFault`], never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ObjectFault> {
        if bytes.len() < MANIFEST_FIXED_BYTES + SIGNATURE_BYTES {
            return Err(ObjectFault::Malformed(
                "manifest shorter than its fixed fields",
            ));
        }
        if bytes[..8] != MANIFEST_MAGIC {
            return Err(ObjectFault::Malformed("not a manifest (magic)"));
        }
        let version = read_u32(bytes, 8);
        if version != BACKUP_FORMAT_VERSION {
            return Err(ObjectFault::UnsupportedVersion { found: version });
        }
        let count = read_u32(bytes, MANIFEST_FIXED_BYTES - 4);
        if count > MANIFEST_ENTRIES_MAX {
            return Err(ObjectFault::Malformed(
                "manifest names more entries than allowed",
            ));
        }
        let body_bytes = MANIFEST_FIXED_BYTES + count as usize * MANIFEST_ENTRY_BYTES;
        if bytes.len() != body_bytes + SIGNATURE_BYTES {
            return Err(ObjectFault::Malformed(
                "manifest length does not match its entry count",
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for index in 0..count as usize {
            let at = MANIFEST_FIXED_BYTES + index * MANIFEST_ENTRY_BYTES;
            let kind = match bytes[at] {
                1 => EntryKind::Segment,
                2 => EntryKind::Tail,
                _ => return Err(ObjectFault::Malformed("unknown manifest entry kind")),
            };
            entries.push(Entry {
                kind,
                base: read_u64(bytes, at + 1),
                offset: read_u64(bytes, at + 9),
                bytes: read_u64(bytes, at + 17),
                run: read_u64(bytes, at + 25),
                hash: read_32(bytes, at + 33),
            });
        }
        let manifest = Manifest {
            database: DatabaseId(read_32(bytes, 12)),
            device: Author(read_32(bytes, 44)),
            run: read_u64(bytes, 76),
            created_ms: read_u64(bytes, 84),
            entries,
        };
        if manifest.run == 0 {
            return Err(ObjectFault::Malformed("manifest run 0 (runs count from 1)"));
        }
        check_entries(&manifest.entries, manifest.run)?;
        let mut signature = [0u8; SIGNATURE_BYTES];
        signature.copy_from_slice(&bytes[body_bytes..]);
        let message = signed_message(&bytes[..body_bytes]);
        peers_engine::verify_ed25519_strict(&[(&message, &manifest.device.0, &signature)])
            .map_err(|_| ObjectFault::BadSignature)?;
        Ok(manifest)
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(MANIFEST_SIGNATURE_DOMAIN.len() + body.len());
    message.extend_from_slice(MANIFEST_SIGNATURE_DOMAIN);
    message.extend_from_slice(body);
    message
}

/// The manifest invariants (see [`Manifest`]).
fn check_entries(entries: &[Entry], run: u64) -> Result<(), ObjectFault> {
    let pieces_from = entries
        .iter()
        .position(|entry| entry.kind == EntryKind::Tail)
        .ok_or(ObjectFault::Malformed("manifest names no tail piece"))?;
    let (sealed, pieces) = entries.split_at(pieces_from);
    let mut end = 0u64;
    for entry in sealed {
        if entry.base != end || entry.offset != 0 || entry.run != 0 {
            return Err(ObjectFault::Malformed("manifest's segments do not chain"));
        }
        if entry.bytes < WAL_HEADER_BYTES || entry.bytes > SEGMENT_BYTES_MAX {
            return Err(ObjectFault::Malformed("manifest segment size out of range"));
        }
        end = entry.end();
    }
    let tail_base = end;
    let mut previous_run = 0;
    for entry in pieces {
        if entry.kind != EntryKind::Tail {
            return Err(ObjectFault::Malformed(
                "a sealed segment after a tail piece",
            ));
        }
        if entry.base != tail_base || entry.base.checked_add(entry.offset) != Some(end) {
            return Err(ObjectFault::Malformed(
                "manifest's tail pieces do not chain",
            ));
        }
        if entry.run <= previous_run || entry.run > run {
            return Err(ObjectFault::Malformed(
                "manifest's tail pieces are not in run order",
            ));
        }
        let least = if entry.offset == 0 {
            WAL_HEADER_BYTES
        } else {
            1
        };
        let piece_end = entry.offset.checked_add(entry.bytes);
        if entry.bytes < least || piece_end.is_none_or(|piece_end| piece_end > SEGMENT_BYTES_MAX) {
            return Err(ObjectFault::Malformed(
                "manifest tail piece size out of range",
            ));
        }
        previous_run = entry.run;
        end = entry.end();
    }
    Ok(())
}

/// A key file's plaintext: `magic | version u32 | database[32] | key[32]`.
pub(crate) fn encode_key(database: &DatabaseId, key: &BackupKey) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(KEY_PLAINTEXT_BYTES);
    bytes.extend_from_slice(&KEY_MAGIC);
    bytes.extend_from_slice(&BACKUP_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&database.0);
    bytes.extend_from_slice(&key.0);
    bytes
}

/// Decodes a key file's plaintext.
pub(crate) fn decode_key(bytes: &[u8]) -> Result<(DatabaseId, BackupKey), ObjectFault> {
    if bytes.len() != KEY_PLAINTEXT_BYTES {
        return Err(ObjectFault::Malformed("key file is not 76 bytes"));
    }
    if bytes[..8] != KEY_MAGIC {
        return Err(ObjectFault::Malformed("not a key file (magic)"));
    }
    let version = read_u32(bytes, 8);
    if version != BACKUP_FORMAT_VERSION {
        return Err(ObjectFault::UnsupportedVersion { found: version });
    }
    Ok((
        DatabaseId(read_32(bytes, 12)),
        BackupKey(read_32(bytes, 44)),
    ))
}

/// A prune mark: the objects that were unreferenced at `created_ms`, each
/// with the modification time the store listed for it then (so an object
/// written again since, by a run in flight, is not deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    /// When the mark was made (the marking device's clock).
    pub(crate) created_ms: u64,
    /// The object names marked, with their listed modification times (ms).
    pub(crate) names: Vec<(String, u64)>,
}

impl Mark {
    /// `magic | version u32 | created_ms u64 | count u32 |
    /// (length u16 | name | modified_ms u64)*`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MARK_MAGIC);
        bytes.extend_from_slice(&BACKUP_FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&self.created_ms.to_le_bytes());
        let count = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&count.to_le_bytes());
        for (name, modified_ms) in &self.names {
            assert!(name.len() <= NAME_BYTES_MAX, "object names are short");
            let length = u16::try_from(name.len()).unwrap_or(u16::MAX);
            bytes.extend_from_slice(&length.to_le_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&modified_ms.to_le_bytes());
        }
        bytes
    }

    /// Decodes a mark; every length is checked before it is used.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Mark, ObjectFault> {
        const FIXED: usize = 8 + 4 + 8 + 4;
        if bytes.len() < FIXED || bytes[..8] != MARK_MAGIC {
            return Err(ObjectFault::Malformed("not a prune mark"));
        }
        let version = read_u32(bytes, 8);
        if version != BACKUP_FORMAT_VERSION {
            return Err(ObjectFault::UnsupportedVersion { found: version });
        }
        let created_ms = read_u64(bytes, 12);
        let count = read_u32(bytes, 20) as usize;
        // Each name takes at least its length and time bytes.
        if count > (bytes.len() - FIXED) / 10 {
            return Err(ObjectFault::Malformed("prune mark count past its end"));
        }
        let mut names = Vec::with_capacity(count);
        let mut at = FIXED;
        for _ in 0..count {
            let Some(length_bytes) = bytes.get(at..at + 2) else {
                return Err(ObjectFault::Malformed("prune mark truncated"));
            };
            let length = usize::from(u16::from_le_bytes([length_bytes[0], length_bytes[1]]));
            if length > NAME_BYTES_MAX {
                return Err(ObjectFault::Malformed("prune mark name too long"));
            }
            let Some(name) = bytes.get(at + 2..at + 2 + length) else {
                return Err(ObjectFault::Malformed("prune mark truncated"));
            };
            let name = std::str::from_utf8(name)
                .map_err(|_| ObjectFault::Malformed("prune mark name is not UTF-8"))?;
            if bytes.len() < at + 2 + length + 8 {
                return Err(ObjectFault::Malformed("prune mark truncated"));
            }
            let modified_ms = read_u64(bytes, at + 2 + length);
            names.push((name.to_owned(), modified_ms));
            at += 2 + length + 8;
        }
        if at != bytes.len() {
            return Err(ObjectFault::Malformed("bytes after the prune mark's names"));
        }
        Ok(Mark { created_ms, names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> DatabaseId {
        DatabaseId([0x11; 32])
    }

    fn identity() -> Identity {
        Identity::from_secret_bytes([0x22; 32])
    }

    /// An entry: `[base, offset, bytes, run]`.
    fn entry(kind: EntryKind, [base, offset, bytes, run]: [u64; 4], hash: [u8; 32]) -> Entry {
        Entry {
            kind,
            base,
            offset,
            bytes,
            run,
            hash,
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            database: database(),
            device: identity().author(),
            run: 3,
            created_ms: 1_764_288_000_000,
            entries: vec![
                entry(EntryKind::Segment, [0, 0, 4096, 0], [0x44; 32]),
                entry(EntryKind::Tail, [4096, 0, 45, 1], [0x55; 32]),
                entry(EntryKind::Tail, [4096, 45, 13, 3], [0x66; 32]),
            ],
        }
    }

    /// A sealed object opens only under its own key, database and name,
    /// and any flipped byte is refused.
    #[test]
    fn seal_round_trip_and_every_flipped_byte_fails() {
        let key = BackupKey([0x33; 32]);
        let object = seal(&key, &database(), "segments/ab", b"hello");
        assert_eq!(object.len() as u64, 5 + SEAL_OVERHEAD_BYTES);
        assert_eq!(
            open(&key, &database(), "segments/ab", &object).as_deref(),
            Ok(&b"hello"[..])
        );
        assert_eq!(
            open(&key, &database(), "segments/ac", &object),
            Err(ObjectFault::Unauthentic)
        );
        assert_eq!(
            open(&key, &DatabaseId([0x12; 32]), "segments/ab", &object),
            Err(ObjectFault::Unauthentic)
        );
        assert_eq!(
            open(&BackupKey([0x34; 32]), &database(), "segments/ab", &object),
            Err(ObjectFault::Unauthentic)
        );
        for index in 0..object.len() {
            let mut flipped = object.clone();
            flipped[index] ^= 0x01;
            assert!(
                open(&key, &database(), "segments/ab", &flipped).is_err(),
                "byte {index}"
            );
        }
        for length in 0..object.len() {
            assert!(open(&key, &database(), "segments/ab", &object[..length]).is_err());
        }
    }

    /// Two seals of one plaintext differ (random nonces): devices sharing a
    /// key never reuse a nonce by construction.
    #[test]
    fn nonces_are_fresh() {
        let key = BackupKey([0x33; 32]);
        let first = seal(&key, &database(), "n", b"same");
        let second = seal(&key, &database(), "n", b"same");
        assert_ne!(first[12..36], second[12..36]);
    }

    #[test]
    fn manifest_round_trip_and_flipped_bytes() {
        let manifest = manifest();
        let bytes = manifest.encode_signed(&identity());
        assert_eq!(
            bytes.len(),
            MANIFEST_FIXED_BYTES + 3 * MANIFEST_ENTRY_BYTES + 64
        );
        assert_eq!(Manifest::decode(&bytes), Ok(manifest.clone()));
        assert_eq!(manifest.log_end(), 4096 + 45 + 13);
        for index in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[index] ^= 0x80;
            assert!(Manifest::decode(&flipped).is_err(), "byte {index}");
        }
        for length in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..length]).is_err());
        }
    }

    #[test]
    fn manifest_count_past_the_limit_is_refused_before_allocating() {
        let mut bytes = manifest().encode_signed(&identity());
        bytes[MANIFEST_FIXED_BYTES - 4..MANIFEST_FIXED_BYTES]
            .copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Manifest::decode(&bytes),
            Err(ObjectFault::Malformed(_))
        ));
    }

    /// Entries that break the manifest's invariants are refused even under
    /// a valid layout (checked before the signature).
    #[test]
    fn manifest_invariants_are_checked() {
        let bytes = manifest().encode_signed(&identity());
        let entry = |index: usize| MANIFEST_FIXED_BYTES + index * MANIFEST_ENTRY_BYTES;
        let patch = |at: usize, value: &[u8]| {
            let mut patched = bytes.clone();
            patched[at..at + value.len()].copy_from_slice(value);
            Manifest::decode(&patched)
        };
        let malformed = |result: Result<Manifest, ObjectFault>| {
            matches!(result, Err(ObjectFault::Malformed(_)))
        };
        // The second piece from the same run as the first.
        assert!(malformed(patch(entry(2) + 25, &1u64.to_le_bytes())));
        // A piece from a later run than the manifest's.
        assert!(malformed(patch(entry(2) + 25, &4u64.to_le_bytes())));
        // A gap between the pieces.
        assert!(malformed(patch(entry(2) + 9, &46u64.to_le_bytes())));
        // A sealed segment after the tail.
        assert!(malformed(patch(entry(2), &[1])));
        // A tail piece where a sealed segment must be.
        assert!(malformed(patch(entry(0), &[2])));
        // A segment that does not start the log.
        assert!(malformed(patch(entry(0) + 1, &1u64.to_le_bytes())));
    }

    /// The decoders of downloaded plaintexts never panic and never accept
    /// what they should not: thousands of mutations (flipped bytes, cuts,
    /// extensions, overwritten length fields) of valid encodings, from a
    /// fixed pseudo-random stream.
    #[test]
    fn decoders_survive_mutations() {
        let valid = [
            manifest().encode_signed(&identity()),
            Mark {
                created_ms: 9,
                names: vec![("segments/aa".into(), 1), ("tails/bb".into(), 2)],
            }
            .encode(),
            encode_key(&database(), &BackupKey([7; 32])),
        ];
        let mut stream =
            blake3::Hasher::new_derive_key("peers-backup test mutations").finalize_xof();
        let mut next = || {
            let mut word = [0u8; 8];
            stream.fill(&mut word);
            u64::from_le_bytes(word)
        };
        for round in 0..6000 {
            let mut bytes = valid[round % valid.len()].clone();
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 4 {
                0 => bytes[at] ^= 1 << (next() % 8),
                1 => bytes.truncate(at),
                2 => bytes.extend((0..next() % 70).map(|_| next() as u8)),
                _ => {
                    let end = (at + 4).min(bytes.len());
                    for byte in &mut bytes[at..end] {
                        *byte = 0xFF;
                    }
                }
            }
            let changed = !valid.contains(&bytes);
            let manifest = Manifest::decode(&bytes);
            let mark = Mark::decode(&bytes);
            let key = decode_key(&bytes);
            if changed && round % valid.len() == 0 {
                assert!(
                    manifest.is_err(),
                    "a changed manifest is refused (its signature)"
                );
            }
            // The others have no signature: a mutation may decode, but only
            // into something that encodes back to the same bytes.
            if let Ok(mark) = mark {
                assert_eq!(mark.encode(), bytes);
            }
            if let Ok((database, key)) = key {
                assert_eq!(encode_key(&database, &key), bytes);
            }
        }
    }

    #[test]
    fn key_and_mark_round_trips() {
        let key = BackupKey([0x66; 32]);
        let bytes = encode_key(&database(), &key);
        let (database_read, key_read) = decode_key(&bytes).expect("decode");
        assert_eq!(database_read, database());
        assert_eq!(key_read.0, key.0);
        assert!(decode_key(&bytes[..75]).is_err());
        let mark = Mark {
            created_ms: 7,
            names: vec![("segments/aa".into(), 5), ("tails/bb".into(), 6)],
        };
        let bytes = mark.encode();
        assert_eq!(Mark::decode(&bytes), Ok(mark));
        for length in 0..bytes.len() {
            assert!(Mark::decode(&bytes[..length]).is_err());
        }
        let mut huge = bytes.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Mark::decode(&huge).is_err());
    }

    /// FORMAT.md's wal test vector: the plaintext of the vectors below.
    const SEGMENT_HEX: &str = "504545525357414c01000000000000000000000000000000789617c5000000000500\
                               0000a1b1174e68656c6c6f00000000c74b6748";

    // Computed by scripts/backup-vectors.py from docs/SERVICES.md alone
    // (HChaCha20 written out, checked on the XChaCha draft's vector; the
    // rest from Python's `blake3` and `cryptography`).
    const VECTORS: &[(&str, &str)] = &[
        (
            "name_key",
            "5a6e52efa007610dc8bcf827f376ec9bcbe4a82670b6c67efa8953d1670f57f7",
        ),
        (
            "seal_key",
            "e5af51eefcc23b35315d465e14848888c6ee10f873be85133d2646ab55759633",
        ),
        (
            "device",
            "a09aa5f47a6759802ff955f8dc2d2a14a5c99d23be97f864127ff9383455a4f0",
        ),
        (
            "segment_name",
            "segments/15b2b8010f417094b1a86a10bc74d09be6b4eb1040f547f2b036a72822f47b5e",
        ),
        (
            "tail_name",
            "tails/c59796ec4547ffcdb7b47649a62ee9015af7cd884f1dba9bf43c004c27e90eca",
        ),
        (
            "manifest_name",
            "manifests/3f2b1b249343db7148250af8363fbdade20235eb7fa019b87b184fb79db2c167",
        ),
        (
            "sealed_segment",
            "504545525342414b01000000000102030405060708090a0b0c0d0e0f1011121314151617\
             1147b740b42231c64a86f47303d157dd6295ecf223c72d3d4c396e5666fd32c85d1c4642\
             ede5ad72da3680503e7832c1459a960eb8fa0d33c89617001293619a7564d86741",
        ),
        (
            "manifest",
            "50454552534d414e010000001111111111111111111111111111111111111111111111111111111111111111\
             a09aa5f47a6759802ff955f8dc2d2a14a5c99d23be97f864127ff9383455a4f0\
             03000000000000000070c2c79a010000\
             02000000\
             01000000000000000000000000000000003500000000000000000000000000000025759243821022ff32d023ea09da632234116bb1c089a720f0a815fdc9d889d5\
             02350000000000000000000000000000003500000000000000030000000000000025759243821022ff32d023ea09da632234116bb1c089a720f0a815fdc9d889d5\
             a91955af94fc992ef651ce64add0d4a68298148f7c99b75a70e8f1a8408f9bf2e982fd28306b8e46edf8d2f9852386456791c0449d25486e2b95e40ebbfe060c",
        ),
        (
            "sealed_manifest_blake3",
            "973e4fd0ff87c6dd4c47eb9c3ca58b9787be9ebb656f1e133a5b224bd63373df",
        ),
    ];

    fn vector(label: &str) -> String {
        peers_wal::testing::vector(VECTORS, label)
    }

    /// What this crate computes for each vector's inputs.
    fn computed() -> Vec<(&'static str, String)> {
        let key = BackupKey([0x33; 32]);
        let device = identity();
        let author = device.author();
        let segment = hex::decode(SEGMENT_HEX.split_whitespace().collect::<String>()).expect("hex");
        let nonce: [u8; 24] = std::array::from_fn(|index| index as u8);
        let segment_name = object_name(&key, NamedKind::Segment, &author, 0);
        let manifest_name = object_name(&key, NamedKind::Manifest, &author, 3);
        let hash = *blake3::hash(&segment).as_bytes();
        let manifest = Manifest {
            database: database(),
            device: author,
            run: 3,
            created_ms: 1_764_288_000_000,
            entries: vec![
                entry(EntryKind::Segment, [0, 0, 53, 0], hash),
                entry(EntryKind::Tail, [53, 0, 53, 3], hash),
            ],
        };
        let manifest_bytes = manifest.encode_signed(&device);
        let sealed_manifest =
            seal_with_nonce(&key, &database(), &manifest_name, &manifest_bytes, nonce);
        vec![
            ("name_key", hex::encode(key.name_key())),
            ("seal_key", hex::encode(key.seal_key())),
            ("device", author.to_hex()),
            ("segment_name", segment_name.clone()),
            ("tail_name", object_name(&key, NamedKind::Tail, &author, 3)),
            ("manifest_name", manifest_name),
            (
                "sealed_segment",
                hex::encode(seal_with_nonce(
                    &key,
                    &database(),
                    &segment_name,
                    &segment,
                    nonce,
                )),
            ),
            ("manifest", hex::encode(&manifest_bytes)),
            (
                "sealed_manifest_blake3",
                blake3::hash(&sealed_manifest).to_hex().to_string(),
            ),
        ]
    }

    /// The crate's bytes equal the vectors docs/SERVICES.md lists.
    #[test]
    fn vectors_match_services_doc() {
        for (label, value) in computed() {
            assert_eq!(value, vector(label), "{label}");
        }
        let manifest = hex::decode(vector("manifest")).expect("hex");
        assert!(Manifest::decode(&manifest).is_ok());
    }

    /// Runs scripts/backup-vectors.py (independent of this crate) and
    /// compares each line with the vectors; says why when it cannot run.
    #[test]
    fn python_vectors_agree() {
        peers_wal::testing::python_vectors_match(
            "python_vectors_agree",
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/backup-vectors.py"),
            VECTORS.len(),
            vector,
        );
    }
}
