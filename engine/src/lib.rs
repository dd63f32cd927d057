//! Peers engine: signed, content-hashed changes; last-write-wins merge per
//! field; the change log in `peers-wal`; the materialized view in RocksDB;
//! and the [`Db`] API embedders open.
//!
//! Start with [`Db::create`] (a new database), [`Db::join`] (an empty
//! replica of one) or [`Db::open`]. docs/FORMAT.md specifies every byte.

/// The engine's hash maps and sets, keyed by change hashes and keys: hashed
/// with foldhash (seeded per process) rather than SipHash, which took ~18%
/// of the apply stage's instructions (benches/README.md).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// See [`HashMap`].
pub(crate) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

mod access;
mod change;
mod changeset;
mod checkpoint;
mod db;
mod error;
mod identity;
mod ingest;
mod keys;
mod log;
mod pending;
mod reads;
mod records;
mod signature;
mod snapshot;
#[cfg(feature = "testing")]
pub mod testing;
mod value;
mod version_vector;
mod view;

pub use change::{
    Author, CHANGE_BYTES_MAX, CHANGE_FORMAT_VERSION, CHANGE_FORMAT_VERSION_MAX,
    CHANGE_FORMAT_VERSION_MIN, CHECKPOINT_FORMAT_VERSION, Change, ChangeBody, ChangeHash, DEPS_MAX,
    DatabaseId, FRONTIER_MAX, FormatError, FrontierEntry, HASH_CONTEXT, NAME_BYTES_MAX, OPS_MAX,
    Op, OpPart, Role, SIGNATURE_DOMAIN, SnapshotHash, StateHash,
};
pub use changeset::{
    CHANGE_SET_MAGIC, CHANGE_SET_VERSION, ChangeSetError, ChangeSetReader, ChangeSetWriter,
};
pub use checkpoint::{CheckpointVerdict, SNAPSHOT_HASH_CONTEXT, VoidReason};
pub use db::{
    Db, LOCK_FILE, Member, Options, RECEIVED_SNAPSHOT_FILE, RECEIVING_SNAPSHOT_PREFIX, Recovery,
    SUBSCRIBE_BUFFER_CHANGES, Transaction, TrimReport, TrimStep, VerifyReport,
};
pub use error::{Error, Refusal, Result};
pub use identity::Identity;
pub use ingest::{ApplyReport, Progress, REPLAY_GROUP_CHANGES};
pub use keys::{Stamp, VIEW_FORMAT_VERSION};
pub use peers_wal::{
    FORMAT_VERSION as LOG_FORMAT_VERSION, Position, SegmentInfo as LogSegment, SyncMode, TornTail,
};
pub use pending::{PENDING_BYTES_MAX, PENDING_CHANGES_MAX};
pub use reads::{ChangesSince, HistoryEntry, Row, Scan};
pub use signature::{SignatureFault, verify_ed25519_strict, verify_signature, verify_signatures};
pub use snapshot::{
    SNAPSHOT_BLOCK_BYTES_MAX, SNAPSHOT_BLOCK_TARGET_BYTES, SNAPSHOT_FILE_VERSION, SNAPSHOT_MAGIC,
    SnapshotBlock, SnapshotError, SnapshotReader, SnapshotWriter,
};
pub use value::{UnknownScalar, Value};
pub use version_vector::{Head, VectorDigest, VersionVector};

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Str(text.to_owned())
    }
}
impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Str(text)
    }
}
impl From<i64> for Value {
    fn from(int: i64) -> Self {
        Value::Int(int)
    }
}
impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Value::Bool(flag)
    }
}
impl From<f64> for Value {
    fn from(float: f64) -> Self {
        Value::F64(float)
    }
}
