//! Snapshot files (docs/FORMAT.md "Snapshot file, format 1"): the snapshot
//! state of a checkpoint's frontier, with the checkpoint and the genesis in
//! a self-checking header, in checksummed blocks of entries in key order.
//!
//! [`SnapshotWriter`] writes one; [`SnapshotReader`] reads one block at a
//! time (memory bounded by one block) and trusts nothing: a caller uses the
//! entries only once [`SnapshotReader::finish`] has checked the end, the
//! end of the file, and the snapshot hash against the signed checkpoint.

use std::io::{ErrorKind, Read, Write};

use bincode::config::{Configuration, LittleEndian, Varint};

use crate::change::{Change, DatabaseId, FormatError, SnapshotHash};
use crate::checkpoint::SnapshotHasher;
use crate::signature::{SignatureFault, verify_signature};

/// File magic.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"PEERSNAP";
/// Version of the snapshot file format.
pub const SNAPSHOT_FILE_VERSION: u32 = 1;
/// The largest block payload a reader accepts (and so the memory it holds
/// at once). An entry larger than this cannot be written.
pub const SNAPSHOT_BLOCK_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// Where the writer closes a block: blocks hold about this many bytes.
pub const SNAPSHOT_BLOCK_TARGET_BYTES: usize = 1024 * 1024;

/// One block's entries: (key, value) pairs in key order.
pub type SnapshotBlock = Vec<(Vec<u8>, Vec<u8>)>;

/// The block payload's encoding: the format's varints, with a limit so a
/// hostile length cannot make the decoder allocate past the block.
const fn block_config() -> Configuration<
    LittleEndian,
    Varint,
    bincode::config::Limit<{ SNAPSHOT_BLOCK_BYTES_MAX as usize }>,
> {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<{ SNAPSHOT_BLOCK_BYTES_MAX as usize }>()
}

/// Why a snapshot file is refused. The reader checks in the order of the
/// variants' first use in FORMAT.md "Snapshot file, format 1".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Not a snapshot file.
    #[error("not a Peers snapshot file (bad magic)")]
    BadMagic,
    /// A version this build does not read.
    #[error("snapshot file version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// In the file.
        found: u32,
        /// This build's.
        supported: u32,
    },
    /// The file ends early: in the header, a block or the end.
    #[error("snapshot file is truncated (in {part})")]
    Truncated {
        /// Where.
        part: &'static str,
    },
    /// The header names a change longer than a change may be.
    #[error("snapshot header: the {part} claims {bytes} bytes, over the change limit")]
    HeaderTooLarge {
        /// Which change.
        part: &'static str,
        /// Claimed length.
        bytes: u32,
    },
    /// The header's checksum does not match its bytes.
    #[error("snapshot header checksum mismatch")]
    HeaderChecksum,
    /// Flags this build does not know.
    #[error("snapshot header flags {0:#x} are not supported")]
    UnsupportedFlags(u32),
    /// The genesis is not a change, not a genesis, badly signed, or not the
    /// header's database.
    #[error("snapshot header: bad genesis: {reason}")]
    BadGenesis {
        /// Why.
        reason: String,
    },
    /// The checkpoint is not a change, badly signed, not a checkpoint of
    /// the genesis author, or of another database.
    #[error("snapshot header: bad checkpoint: {reason}")]
    BadCheckpoint {
        /// Why.
        reason: String,
    },
    /// A block length of 0 where a block was due, or over the limit.
    #[error("block {index} claims {bytes} bytes (1 to {max} allowed)")]
    BlockLength {
        /// Block number (0-based).
        index: u64,
        /// Claimed length.
        bytes: u32,
        /// The limit.
        max: u32,
    },
    /// A block's checksum does not match its bytes.
    #[error("block {index}: checksum mismatch")]
    BlockChecksum {
        /// Block number (0-based).
        index: u64,
    },
    /// A block's payload does not decode, holds no entry, has bytes after
    /// its entries, or is not in its shortest encoding.
    #[error("block {index}: bad payload: {reason}")]
    BadBlock {
        /// Block number (0-based).
        index: u64,
        /// Why.
        reason: String,
    },
    /// A key not above the one before it.
    #[error("entry {entry}: key not above the previous key")]
    Unordered {
        /// Entry number (0-based, across blocks).
        entry: u64,
    },
    /// The end's checksum does not match.
    #[error("end marker checksum mismatch")]
    EndChecksum,
    /// The end's entry count disagrees with the entries read.
    #[error("end marker says {expected} entries, the blocks hold {actual}")]
    CountMismatch {
        /// From the end marker.
        expected: u64,
        /// Read.
        actual: u64,
    },
    /// Bytes after the end marker.
    #[error("bytes after the end marker")]
    TrailingBytes,
    /// The entries do not hash to the checkpoint's snapshot hash.
    #[error("the entries hash to {actual}, but the checkpoint signs {expected}")]
    HashMismatch {
        /// The checkpoint's.
        expected: SnapshotHash,
        /// The entries'.
        actual: SnapshotHash,
    },
    /// The state's author record of a frontier author does not end at its
    /// entry's seq: a state its checkpoint's owner signed wrong.
    #[error("the snapshot state does not hold author {author}'s chain up to its frontier entry")]
    FrontierMismatch {
        /// The frontier author.
        author: crate::Author,
    },
    /// The writer was given an entry over the block limit, or keys out of
    /// order.
    #[error("cannot write the snapshot: {reason}")]
    CannotWrite {
        /// Why.
        reason: String,
    },
}

/// Writes a snapshot file: [`SnapshotWriter::new`] the header, then each
/// entry in strictly ascending key order, then [`SnapshotWriter::finish`].
pub struct SnapshotWriter<W: Write> {
    out: W,
    block: SnapshotBlock,
    block_bytes: usize,
    entries: u64,
    last_key: Option<Vec<u8>>,
    hasher: SnapshotHasher,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the header. `checkpoint` must be a checkpoint change of
    /// `genesis`'s database.
    pub fn new(
        mut out: W,
        genesis: &Change,
        checkpoint: &Change,
    ) -> Result<SnapshotWriter<W>, SnapshotError> {
        let (frontier, _) = checkpoint
            .checkpoint()
            .ok_or(SnapshotError::BadCheckpoint {
                reason: "it holds no checkpoint".into(),
            })?;
        let database = DatabaseId(genesis.hash().0);
        let mut header = Vec::with_capacity(64 + checkpoint.bytes().len() + genesis.bytes().len());
        header.extend_from_slice(SNAPSHOT_MAGIC);
        header.extend_from_slice(&SNAPSHOT_FILE_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&database.0);
        for change in [checkpoint, genesis] {
            let length = u32::try_from(change.bytes().len()).expect("a change fits in u32");
            header.extend_from_slice(&length.to_le_bytes());
            header.extend_from_slice(change.bytes());
        }
        let crc = crc32c::crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        out.write_all(&header)?;
        Ok(SnapshotWriter {
            out,
            block: Vec::new(),
            block_bytes: 0,
            entries: 0,
            last_key: None,
            hasher: SnapshotHasher::new(database, frontier),
        })
    }

    /// Adds one entry; keys must ascend strictly.
    pub fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(SnapshotError::CannotWrite {
                reason: format!("entry {} is not above the previous key", self.entries),
            });
        }
        // A generous bound on the entry's encoded size (two lengths of at
        // most 9 bytes): a block never exceeds the reader's limit.
        let bytes = key.len() + value.len() + 18;
        if bytes + 9 > SNAPSHOT_BLOCK_BYTES_MAX as usize {
            return Err(SnapshotError::CannotWrite {
                reason: format!(
                    "entry {} holds {bytes} bytes, over the block limit",
                    self.entries
                ),
            });
        }
        if self.block_bytes + bytes + 9 > SNAPSHOT_BLOCK_BYTES_MAX as usize {
            self.flush()?;
        }
        self.hasher.entry(key, value);
        self.block.push((key.to_vec(), value.to_vec()));
        self.block_bytes += bytes;
        self.entries += 1;
        self.last_key = Some(key.to_vec());
        if self.block_bytes >= SNAPSHOT_BLOCK_TARGET_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SnapshotError> {
        if self.block.is_empty() {
            return Ok(());
        }
        let payload = bincode::encode_to_vec(&self.block, block_config())
            .expect("encoding into a Vec cannot fail");
        let length = u32::try_from(payload.len()).expect("bounded by the block limit");
        self.out.write_all(&length.to_le_bytes())?;
        self.out
            .write_all(&peers_wal::frame_crc(length, &payload).to_le_bytes())?;
        self.out.write_all(&payload)?;
        self.block.clear();
        self.block_bytes = 0;
        Ok(())
    }

    /// Writes the last block and the end; returns the output, the number of
    /// entries and their snapshot hash.
    pub fn finish(mut self) -> Result<(W, u64, SnapshotHash), SnapshotError> {
        self.flush()?;
        let mut end = [0u8; 16];
        end[4..12].copy_from_slice(&self.entries.to_le_bytes());
        let crc = crc32c::crc32c(&end[..12]);
        end[12..].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&end)?;
        self.out.flush()?;
        Ok((self.out, self.entries, self.hasher.finish()))
    }
}

/// Reads a snapshot file block by block (see the module's documentation).
pub struct SnapshotReader<R: Read> {
    input: R,
    database: DatabaseId,
    genesis: Change,
    checkpoint: Change,
    hasher: SnapshotHasher,
    blocks: u64,
    entries: u64,
    last_key: Option<Vec<u8>>,
    ended: Option<u64>,
}

/// Reads exactly `buffer.len()` bytes, or says where the file ended.
fn read_exact_or(
    input: &mut impl Read,
    buffer: &mut [u8],
    part: &'static str,
) -> Result<(), SnapshotError> {
    input.read_exact(buffer).map_err(|error| {
        if error.kind() == ErrorKind::UnexpectedEof {
            SnapshotError::Truncated { part }
        } else {
            SnapshotError::Io(error)
        }
    })
}

fn read_u32(input: &mut impl Read, part: &'static str) -> Result<u32, SnapshotError> {
    let mut bytes = [0u8; 4];
    read_exact_or(input, &mut bytes, part)?;
    Ok(u32::from_le_bytes(bytes))
}

/// A block after its length (checked by the caller: 1 to the limit): its
/// checksum, then its payload, checked as FORMAT.md "Snapshot file, format
/// 1" step 4 says (but for the order of keys across blocks).
fn read_block_body(
    input: &mut impl Read,
    index: u64,
    length: u32,
) -> Result<SnapshotBlock, SnapshotError> {
    let crc = read_u32(input, "a block")?;
    let mut payload = vec![0u8; length as usize];
    read_exact_or(input, &mut payload, "a block")?;
    if peers_wal::frame_crc(length, &payload) != crc {
        return Err(SnapshotError::BlockChecksum { index });
    }
    let bad = |reason: String| SnapshotError::BadBlock { index, reason };
    let (entries, read): (SnapshotBlock, usize) =
        bincode::decode_from_slice(&payload, block_config())
            .map_err(|error| bad(format!("undecodable ({error})")))?;
    if read != payload.len() {
        return Err(bad(format!(
            "{} bytes after its entries",
            payload.len() - read
        )));
    }
    if entries.is_empty() {
        return Err(bad("it holds no entry".into()));
    }
    let reencoded = bincode::encode_to_vec(&entries, block_config())
        .map_err(|error| bad(format!("undecodable ({error})")))?;
    if reencoded != payload {
        return Err(bad("not in its shortest encoding".into()));
    }
    Ok(entries)
}

fn signature_reason(fault: SignatureFault) -> String {
    format!("its signature does not verify ({fault})")
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header: magic, version, checksum, flags, then
    /// the genesis (a signed genesis whose hash is the database) and the
    /// checkpoint (a signed checkpoint of the genesis author, of that
    /// database).
    pub fn open(mut input: R) -> Result<SnapshotReader<R>, SnapshotError> {
        let mut fixed = [0u8; 48];
        read_exact_or(&mut input, &mut fixed[..8], "header")?;
        if &fixed[..8] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        read_exact_or(&mut input, &mut fixed[8..48], "header")?;
        let version = u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes"));
        if version != SNAPSHOT_FILE_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: version,
                supported: SNAPSHOT_FILE_VERSION,
            });
        }
        let mut crc = crc32c::crc32c(&fixed);
        let mut changes = Vec::with_capacity(2);
        for part in ["checkpoint", "genesis"] {
            let length = read_u32(&mut input, "header")?;
            if length as usize > crate::CHANGE_BYTES_MAX {
                return Err(SnapshotError::HeaderTooLarge {
                    part,
                    bytes: length,
                });
            }
            let mut bytes = vec![0u8; length as usize];
            read_exact_or(&mut input, &mut bytes, "header")?;
            crc = crc32c::crc32c_append(crc, &length.to_le_bytes());
            crc = crc32c::crc32c_append(crc, &bytes);
            changes.push(bytes);
        }
        if read_u32(&mut input, "header")? != crc {
            return Err(SnapshotError::HeaderChecksum);
        }
        let flags = u32::from_le_bytes(fixed[12..16].try_into().expect("4 bytes"));
        if flags != 0 {
            return Err(SnapshotError::UnsupportedFlags(flags));
        }
        let database = DatabaseId(fixed[16..48].try_into().expect("32 bytes"));
        let bad_genesis = |reason: String| SnapshotError::BadGenesis { reason };
        let genesis = Change::decode(&changes[1])
            .map_err(|error: FormatError| bad_genesis(format!("not a change ({error})")))?;
        if !genesis.is_genesis() || genesis.hash().0 != database.0 {
            return Err(bad_genesis(format!(
                "{} is not the genesis of database {database}",
                genesis.hash()
            )));
        }
        verify_signature(&genesis).map_err(|fault| bad_genesis(signature_reason(fault)))?;
        let bad_checkpoint = |reason: String| SnapshotError::BadCheckpoint { reason };
        let checkpoint = Change::decode(&changes[0])
            .map_err(|error| bad_checkpoint(format!("not a change ({error})")))?;
        if checkpoint.body().database != database {
            return Err(bad_checkpoint(format!(
                "it belongs to database {}",
                checkpoint.body().database
            )));
        }
        let Some((frontier, _)) = checkpoint.checkpoint() else {
            return Err(bad_checkpoint("it holds no checkpoint".into()));
        };
        if checkpoint.author() != genesis.author() {
            return Err(bad_checkpoint(format!(
                "signed by {}, not the owner {}",
                checkpoint.author(),
                genesis.author()
            )));
        }
        verify_signature(&checkpoint).map_err(|fault| bad_checkpoint(signature_reason(fault)))?;
        let hasher = SnapshotHasher::new(database, frontier);
        Ok(SnapshotReader {
            input,
            database,
            genesis,
            checkpoint,
            hasher,
            blocks: 0,
            entries: 0,
            last_key: None,
            ended: None,
        })
    }

    /// The database the snapshot is of.
    pub fn database(&self) -> DatabaseId {
        self.database
    }

    /// The database's genesis change (signature checked).
    pub fn genesis(&self) -> &Change {
        &self.genesis
    }

    /// The checkpoint whose state the file holds (signature checked; its
    /// state not yet: see [`SnapshotReader::finish`]).
    pub fn checkpoint(&self) -> &Change {
        &self.checkpoint
    }

    /// The reader's input (how far it has read, for an index of blocks).
    pub(crate) fn input(&self) -> &R {
        &self.input
    }

    /// The next block's entries, in key order, or `None` at the end marker
    /// (then call [`SnapshotReader::finish`]). Unverified until `finish`.
    pub fn next_block(&mut self) -> Result<Option<SnapshotBlock>, SnapshotError> {
        if self.ended.is_some() {
            return Ok(None);
        }
        let index = self.blocks;
        let length = read_u32(&mut self.input, "a block")?;
        if length == 0 {
            let mut rest = [0u8; 12];
            read_exact_or(&mut self.input, &mut rest, "the end marker")?;
            let mut end = [0u8; 12];
            end[4..].copy_from_slice(&rest[..8]);
            let crc = u32::from_le_bytes(rest[8..].try_into().expect("4 bytes"));
            if crc32c::crc32c(&end) != crc {
                return Err(SnapshotError::EndChecksum);
            }
            self.ended = Some(u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")));
            return Ok(None);
        }
        if length > SNAPSHOT_BLOCK_BYTES_MAX {
            return Err(SnapshotError::BlockLength {
                index,
                bytes: length,
                max: SNAPSHOT_BLOCK_BYTES_MAX,
            });
        }
        let entries = read_block_body(&mut self.input, index, length)?;
        for (key, value) in &entries {
            if self
                .last_key
                .as_deref()
                .is_some_and(|last| last >= key.as_slice())
            {
                return Err(SnapshotError::Unordered {
                    entry: self.entries,
                });
            }
            self.hasher.entry(key, value);
            self.entries += 1;
            self.last_key = Some(key.clone());
        }
        self.blocks += 1;
        Ok(Some(entries))
    }

    /// Checks what follows the entries: the end marker's count, nothing
    /// after it, and the snapshot hash against the checkpoint's. Reads any
    /// blocks not yet read (so it can check a whole file on its own).
    /// Returns the number of entries.
    pub fn finish(mut self) -> Result<u64, SnapshotError> {
        while self.next_block()?.is_some() {}
        let expected = self.ended.expect("next_block returned None at the end");
        if expected != self.entries {
            return Err(SnapshotError::CountMismatch {
                expected,
                actual: self.entries,
            });
        }
        let mut extra = [0u8; 1];
        loop {
            match self.input.read(&mut extra) {
                Ok(0) => break,
                Ok(_) => return Err(SnapshotError::TrailingBytes),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(SnapshotError::Io(error)),
            }
        }
        let (_, signed) = self.checkpoint.checkpoint().expect("checked on open");
        let actual = self.hasher.finish();
        if actual != signed {
            return Err(SnapshotError::HashMismatch {
                expected: signed,
                actual,
            });
        }
        Ok(self.entries)
    }
}

/// A reader that counts the bytes read through it.
pub(crate) struct Counting<R> {
    inner: R,
    /// Bytes read so far.
    pub(crate) count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.count += read as u64;
        Ok(read)
    }
}

/// One row's entries in a trimmed generation's snapshot file (FORMAT.md
/// "Settlement" point 3: a row recomputed on a trimmed replica starts from
/// them). An index of every block's first key and offset is built on first
/// use (one pass over the file, checked as a reader checks it); then a
/// row's entries cost the blocks that cover its keys.
pub(crate) struct SnapshotRows {
    path: std::path::PathBuf,
    /// Each block's first key and where its length starts in the file.
    index: std::sync::OnceLock<Vec<(Vec<u8>, u64)>>,
}

impl SnapshotRows {
    pub(crate) fn new(path: std::path::PathBuf) -> SnapshotRows {
        SnapshotRows {
            path,
            index: std::sync::OnceLock::new(),
        }
    }

    fn open(&self) -> Result<std::io::BufReader<std::fs::File>, SnapshotError> {
        Ok(std::io::BufReader::new(std::fs::File::open(&self.path)?))
    }

    fn index(&self) -> Result<&[(Vec<u8>, u64)], SnapshotError> {
        if let Some(index) = self.index.get() {
            return Ok(index);
        }
        let mut reader = SnapshotReader::open(Counting {
            inner: self.open()?,
            count: 0,
        })?;
        let mut index = Vec::new();
        loop {
            let offset = reader.input().count;
            let Some(block) = reader.next_block()? else {
                break;
            };
            index.push((block[0].0.clone(), offset));
        }
        reader.finish()?;
        Ok(self.index.get_or_init(|| index).as_slice())
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub(crate) fn entries_with_prefix(
        &self,
        prefix: &[u8],
    ) -> Result<SnapshotBlock, SnapshotError> {
        use std::io::{Seek, SeekFrom};
        let index = self.index()?;
        // The last block starting at or below the prefix, then every block
        // that starts with it.
        let first = index
            .partition_point(|(key, _)| key.as_slice() <= prefix)
            .saturating_sub(1);
        let mut found = Vec::new();
        let mut input = self.open()?;
        for (number, (key, offset)) in index.iter().enumerate().skip(first) {
            if key.as_slice() > prefix && !key.starts_with(prefix) {
                break;
            }
            input.seek(SeekFrom::Start(*offset))?;
            let length = read_u32(&mut input, "a block")?;
            if length == 0 || length > SNAPSHOT_BLOCK_BYTES_MAX {
                return Err(SnapshotError::BlockLength {
                    index: number as u64,
                    bytes: length,
                    max: SNAPSHOT_BLOCK_BYTES_MAX,
                });
            }
            let block = read_block_body(&mut input, number as u64, length)?;
            found.extend(block.into_iter().filter(|(key, _)| key.starts_with(prefix)));
        }
        Ok(found)
    }
}
