//! What the targets share: the fixed identities and the fixture database
//! every seed belongs to, scratch directories, the byte reader of
//! [`merge_model`](super::merge_model) programs and
//! [`authorization_model`](super::authorization_model) scripts, and the
//! input-seeded receive orders.
//!
//! Databases live in the system temp dir and bare logs in `/dev/shm` when it
//! exists (see [`scratch_dir`]); `PEERS_FUZZ_SCRATCH=DIR` puts both in DIR.

use std::path::Path;

use peers_engine::{Change, ChangeBody, DatabaseId, Db, Identity, Op, Options, SyncMode};

use super::SplitMix;

/// The fixed identity number `index`: authors are 0, 1, 2; replicas that
/// only receive use 3.
pub fn identity(index: u8) -> Identity {
    Identity::from_secret_bytes([index.wrapping_add(1); 32])
}

/// Options of every database here: relaxed fsync, a fixed identity.
pub fn options(identity_index: u8) -> Options {
    Options {
        sync: SyncMode::Relaxed,
        identity: Some(identity(identity_index)),
        ..Options::default()
    }
}

/// The genesis change of the fixture database: fixed nonce, clock and
/// author, so [`database_id`] is the same in every process and every seed.
/// Change format version 1 (an open database), as the committed seeds were
/// made with.
pub fn genesis() -> Change {
    let author = identity(0);
    author.sign(ChangeBody {
        version: 1,
        database: DatabaseId::GENESIS,
        author: author.author(),
        seq: 1,
        prev: None,
        deps: Vec::new(),
        lamport: 1,
        wall_ms: 1_700_000_000_000,
        ops: vec![Op::Genesis {
            nonce: *b"peers fuzz nonce",
        }],
    })
}

/// The fixture database every seed and replica here belongs to.
pub fn database_id() -> DatabaseId {
    DatabaseId(genesis().hash().0)
}

/// A new temporary directory for databases: under `$PEERS_FUZZ_SCRATCH` if
/// set, else the system temp dir. (Not `/dev/shm`: RocksDB preallocates its
/// files, which on tmpfs allocates real pages and makes each open ~2x slower.)
pub fn scratch_dir() -> tempfile::TempDir {
    let builder = || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("peers-fuzz-");
        builder
    };
    match std::env::var_os("PEERS_FUZZ_SCRATCH") {
        Some(root) => builder().tempdir_in(root),
        None => builder().tempdir(),
    }
    .expect("a temporary directory")
}

/// A new temporary directory for a bare log: in memory (`/dev/shm`) when
/// possible, where its fsyncs cost nothing; `$PEERS_FUZZ_SCRATCH` overrides.
pub fn memory_scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if std::env::var_os("PEERS_FUZZ_SCRATCH").is_none()
        && shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("peers-fuzz-")
            .tempdir_in(shm)
    {
        return dir;
    }
    scratch_dir()
}

/// An empty replica of the fixture database (not even the genesis).
pub fn join_fixture(dir: &Path, identity_index: u8) -> Db {
    Db::join(dir, database_id(), options(identity_index)).expect("join the fixture database")
}

/// Reads a program's (or a script's) bytes; past the end, every byte is 0.
pub(super) struct Program<'a> {
    pub(super) bytes: &'a [u8],
}

impl Program<'_> {
    pub(super) fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    pub(super) fn next_or_zero(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }
}

/// FNV-1a of the input: the seed of the receive orders an input chooses.
pub(super) fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Splits `changes` into consecutive batches of 1 to 4.
pub(super) fn batches<'a>(changes: &'a [Change], random: &mut SplitMix) -> Vec<&'a [Change]> {
    let mut out = Vec::new();
    let mut rest = changes;
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at((1 + random.below(4)).min(rest.len()));
        out.push(batch);
        rest = tail;
    }
    out
}
