//! Restore: a new replica from a backup, built in a temporary directory
//! beside the target and renamed into place only once it verifies, so a
//! failed restore never leaves something that looks whole.

use std::path::{Path, PathBuf};

use peers_engine::{Author, DatabaseId, Db, Options, StateHash};

use crate::error::{Error, ObjectFault, Result};
use crate::format::{self, Entry, Manifest, SEAL_OVERHEAD_BYTES};
use crate::keys::RecoveryKey;
use crate::service::{Unlock, read_manifests, unlock};
use crate::store::Store;

/// Which backup to restore.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Restore this device's newest run (default: the device whose newest
    /// run is the most recent).
    pub device: Option<Author>,
    /// Refuse a newest run below this number (a run known to exist, as
    /// `peers backup run` or `list` printed it): what catches a store that
    /// hides every newer manifest.
    pub min_run: Option<u64>,
}

/// What a restore is doing, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Downloading and checking objects.
    Download,
    /// Verifying the restored replica (every signature, a rebuilt view).
    Verify,
}

/// What [`restore`] made.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The database.
    pub database: DatabaseId,
    /// The device whose backup it is.
    pub device: Author,
    /// The run restored.
    pub run: u64,
    /// When that run was made.
    pub created_ms: u64,
    /// The log's bytes.
    pub log_bytes: u64,
    /// Changes in the restored log, every one verified.
    pub changes: u64,
    /// The restored replica's state hash.
    pub state_hash: StateHash,
    /// The new replica's own key (a new identity: the backed-up device's key
    /// is never copied, so the two never sign the same seq twice).
    pub author: Author,
}

/// The manifest to restore among all of them.
fn choose(manifests: Vec<(String, Manifest)>, options: RestoreOptions) -> Result<Manifest> {
    // Each device's newest run (by number), then, across devices, the most
    // recent of those.
    let mut newest_by_device: std::collections::BTreeMap<Author, Manifest> = Default::default();
    for (_, manifest) in manifests {
        if options
            .device
            .is_some_and(|device| manifest.device != device)
        {
            continue;
        }
        let newest = newest_by_device
            .entry(manifest.device)
            .or_insert_with(|| manifest.clone());
        if manifest.run > newest.run {
            *newest = manifest;
        }
    }
    let newest = newest_by_device
        .into_values()
        .max_by_key(|manifest| (manifest.created_ms, manifest.run));
    let Some(manifest) = newest else {
        return Err(Error::NoBackup {
            device: options.device,
        });
    };
    if let Some(min_run) = options.min_run
        && manifest.run < min_run
    {
        return Err(Error::Rollback {
            device: manifest.device,
            found: manifest.run,
            expected: min_run,
        });
    }
    Ok(manifest)
}

/// Restores the backup in `store` into `dir`, a new directory: the newest
/// run (see [`RestoreOptions`]), every object checked against its signed
/// manifest, the replica rebuilt from the log and verified. The new replica
/// has a new identity. Any missing, truncated, altered, swapped or
/// rolled-back object is an error naming it, and `dir` is then not created.
pub async fn restore(
    store: &Store,
    recovery: &RecoveryKey,
    dir: &Path,
    options: RestoreOptions,
    progress: &mut (dyn FnMut(Stage, u64, u64) + Send),
) -> Result<RestoreReport> {
    if dir.exists() {
        return Err(Error::TargetExists {
            path: dir.to_owned(),
        });
    }
    let (database, key) = unlock(store, Unlock::Recovery(recovery)).await?;
    let manifest = choose(read_manifests(store, &key, &database).await?, options)?;
    let temporary = temporary_dir(dir)?;
    if temporary.exists() {
        tracing::warn!(path = %temporary.display(), "removing a restore left unfinished");
        std::fs::remove_dir_all(&temporary).map_err(Error::io(&temporary))?;
    }
    let result = build(store, &key, &database, &manifest, &temporary, progress).await;
    let (changes, state_hash, author) = match result {
        Ok(built) => built,
        Err(error) => {
            // Best effort: what is left is a hidden temporary directory.
            let _ = std::fs::remove_dir_all(&temporary);
            return Err(error);
        }
    };
    std::fs::rename(&temporary, dir).map_err(Error::io(dir))?;
    if let Some(parent) = dir.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::File::open(parent)
            .and_then(|directory| directory.sync_all())
            .map_err(Error::io(parent))?;
    }
    Ok(RestoreReport {
        database,
        device: manifest.device,
        run: manifest.run,
        created_ms: manifest.created_ms,
        log_bytes: manifest.log_end(),
        changes,
        state_hash,
        author,
    })
}

/// `PARENT/.NAME.restoring`: beside the target, so the final rename stays
/// on one file system.
fn temporary_dir(dir: &Path) -> Result<PathBuf> {
    let Some(name) = dir.file_name() else {
        return Err(Error::TargetExists {
            path: dir.to_owned(),
        });
    };
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(".restoring");
    Ok(dir.with_file_name(hidden))
}

/// Makes the replica in `temporary`: an empty replica of the database
/// (new identity), its log replaced by the manifest's segments, then
/// opened (which replays the log into a new view) and verified.
async fn build(
    store: &Store,
    key: &format::BackupKey,
    database: &DatabaseId,
    manifest: &Manifest,
    temporary: &Path,
    progress: &mut (dyn FnMut(Stage, u64, u64) + Send),
) -> Result<(u64, StateHash, Author)> {
    let author = {
        let db = Db::join(temporary, *database, Options::default())?;
        db.author()
    };
    let log = temporary.join("log");
    std::fs::remove_dir_all(&log).map_err(Error::io(&log))?;
    std::fs::create_dir(&log).map_err(Error::io(&log))?;
    let total = manifest.log_end();
    let mut done = 0;
    for (name, entry) in manifest.entry_names(key) {
        let bytes = download(store, key, database, &name, entry).await?;
        let path = log.join(format!("{:020}.wal", entry.base));
        // The manifest's entries chain: a piece at offset 0 starts its
        // file, a later one follows the piece before it.
        write_synced(&path, &bytes, entry.offset != 0)?;
        done += entry.bytes;
        progress(Stage::Download, done, total);
    }
    std::fs::File::open(&log)
        .and_then(|directory| directory.sync_all())
        .map_err(Error::io(&log))?;
    let db = Db::open(temporary, Options::default())?;
    let report = db.verify(&mut |done, total| progress(Stage::Verify, done, total))?;
    if !report.ok() {
        return Err(Error::VerifyFailed {
            rebuilt: report.rebuilt_state_hash,
            live: report.live_state_hash,
        });
    }
    Ok((report.changes, report.live_state_hash, author))
}

/// Downloads one segment or tail and checks it against its entry.
async fn download(
    store: &Store,
    key: &format::BackupKey,
    database: &DatabaseId,
    name: &str,
    entry: &Entry,
) -> Result<Vec<u8>> {
    let expected = entry.bytes + SEAL_OVERHEAD_BYTES;
    let object = store.get(name, expected).await?;
    if (object.len() as u64) < expected {
        return Err(Error::object(
            name,
            ObjectFault::Truncated {
                bytes: object.len() as u64,
            },
        ));
    }
    let bytes =
        format::open(key, database, name, &object).map_err(|fault| Error::object(name, fault))?;
    if bytes.len() as u64 != entry.bytes {
        return Err(Error::object(
            name,
            ObjectFault::LengthMismatch {
                expected: entry.bytes,
                found: bytes.len() as u64,
            },
        ));
    }
    if *blake3::hash(&bytes).as_bytes() != entry.hash {
        return Err(Error::object(name, ObjectFault::HashMismatch));
    }
    Ok(bytes)
}

fn write_synced(path: &Path, bytes: &[u8], append: bool) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(Error::io(path))?;
    file.write_all(bytes).map_err(Error::io(path))?;
    file.sync_all().map_err(Error::io(path))
}
