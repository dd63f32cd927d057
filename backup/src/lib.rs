//! Peers backups: encrypted, signed, incremental copies of a replica's log
//! in object storage (S3, or a local directory), and restore from them.
//!
//! What travels is the change log, as the wal lays it out: each sealed
//! segment once (its bytes never change), the unsealed last segment (the
//! tail) once per run, and a manifest per run that names them all with
//! their blake3 hashes, is signed by the device's key, and is numbered.
//! Every object is sealed with XChaCha20-Poly1305 under a backup key per
//! database, its associated data binding the format, the database and the
//! object's name; names are keyed MACs that reveal neither the database, the
//! device nor the position. The backup key is wrapped (age, X25519) to each
//! device and to a printable recovery key.
//!
//! The store is treated as an adversary that may drop, delay, replay or
//! alter objects: each of these is detected and named (or, for a store that
//! hides every newer manifest from a restorer with no state, caught with
//! `RestoreOptions::min_run`). docs/SERVICES.md has the threat model, the
//! byte formats and their test vectors.
//!
//! - [`init`] configures a replica (`DIR/backup.json`);
//! - [`run`] backs it up (incremental);
//! - [`list`] shows the runs a store holds;
//! - [`prune`] removes old runs in two phases with a grace period;
//! - [`restore`] makes a new replica from a backup, verified before it is
//!   renamed into place.

mod config;
mod error;
mod format;
mod keys;
mod restore;
mod service;
mod store;

pub use crate::config::CONFIG_FILE;
pub use crate::error::{Error, ObjectFault, Result};
pub use crate::format::{
    BACKUP_FORMAT_VERSION, Entry, EntryKind, MANIFEST_ENTRIES_MAX, Manifest, SEAL_OVERHEAD_BYTES,
    SEGMENT_BYTES_MAX,
};
pub use crate::keys::{KEY_FILES_MAX, RecoveryKey};
pub use crate::restore::{RestoreOptions, RestoreReport, Stage, restore};
pub use crate::service::{
    InitReport, LastRun, ListedRun, Listing, Progress, PruneOptions, PruneReport, RunReport,
    TAIL_PIECES_MAX, Unlock, configured_url, init, last_run, list, now_ms, prune, run,
};
pub use crate::store::{LIST_OBJECTS_MAX, Listed, Store};
