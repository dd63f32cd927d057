//! Trimming (FORMAT.md "Trimming"): a new generation made of the standing
//! checkpoint's snapshot file, the log of the changes above it, and a view
//! loaded from the snapshot then replayed from that log; switched to by one
//! rename.

use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::sync::Arc;

use rocksdb::DB;

use super::directory::{
    io_error, lock_dir, open_view, prepare_new, read_database_file, sync_dir, write_database_file,
};
use super::generation::{
    log_dir, remove_other_generations, snapshot_path, switch_generation, view_dir,
};
use super::{Db, Options};
use crate::change::{Change, ChangeHash, DatabaseId};
use crate::checkpoint::{Hashes, OffFrontier};
use crate::error::{Error, Result};
use crate::ingest::{Select, Writer};
use crate::keys;
use crate::log::{Log, REAL_DISK};
use crate::snapshot::{SnapshotReader, SnapshotRows};

/// Changes appended to the new log per write.
const TRIM_APPEND_CHANGES: usize = 4096;

/// The steps of [`Db::trim`], for its progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrimStep {
    /// Finding the standing checkpoint (judging the owner's checkpoints).
    Judge,
    /// Writing the snapshot file (a replay of the checkpoint's closure).
    Snapshot,
    /// Copying the changes above the checkpoint into the new log.
    Log,
    /// Building the new view: the snapshot, then a replay of the new log.
    View,
}

/// What [`Db::trim`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrimReport {
    /// The checkpoint trimmed at (the standing one).
    pub checkpoint: ChangeHash,
    /// The generation now in use.
    pub generation: u64,
    /// Changes the new log holds (above the checkpoint's frontier).
    pub changes_kept: u64,
    /// Changes settled by the checkpoint, no longer in the log.
    pub changes_settled: u64,
    /// Changes off the frontier (FORMAT.md "Settlement"), dropped.
    pub changes_off_frontier: u64,
    /// Entries of the snapshot file.
    pub snapshot_entries: u64,
    /// Bytes of the old generation's log and view.
    pub log_bytes_before: u64,
    /// See `log_bytes_before`.
    pub view_bytes_before: u64,
    /// Bytes of the new generation's log, view and snapshot file.
    pub log_bytes_after: u64,
    /// See `log_bytes_after`.
    pub view_bytes_after: u64,
    /// See `log_bytes_after`.
    pub snapshot_bytes: u64,
}

impl TrimReport {
    /// Bytes freed on disk (negative if the new generation is larger).
    pub fn bytes_freed(&self) -> i128 {
        i128::from(self.log_bytes_before) + i128::from(self.view_bytes_before)
            - i128::from(self.log_bytes_after)
            - i128::from(self.view_bytes_after)
            - i128::from(self.snapshot_bytes)
    }
}

/// An injected failure at a fail point of the trim (tests).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn injected<T>(point: &str) -> Result<T> {
    Err(Error::Io {
        path: std::path::PathBuf::from(point),
        source: std::io::Error::other(format!("failpoint {point}")),
    })
}

/// Total bytes of the files under `path` (0 if it does not exist).
fn bytes_under(path: &Path) -> Result<u64> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !metadata.is_dir() {
        return Ok(metadata.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(io_error(path))? {
        let entry = entry.map_err(io_error(path))?;
        total += bytes_under(&entry.path())?;
    }
    Ok(total)
}

/// Opens a snapshot file and checks its header (magic, checksums, the
/// genesis and checkpoint signatures) and that it is of `database`.
pub(super) fn open_snapshot(
    path: &Path,
    database: DatabaseId,
) -> Result<SnapshotReader<BufReader<std::fs::File>>> {
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    let reader = SnapshotReader::open(BufReader::new(file))?;
    if reader.database() != database {
        return Err(Error::BadFile {
            path: path.to_owned(),
            what: "a snapshot file of this database",
        });
    }
    Ok(reader)
}

/// A trimmed generation's rows, for the writer (`Writer::snapshot_rows`).
pub(super) fn snapshot_rows(path: std::path::PathBuf) -> Arc<SnapshotRows> {
    Arc::new(SnapshotRows::new(path))
}

/// The checkpoint of a generation's snapshot file (its header checked).
pub(super) fn snapshot_checkpoint(path: &Path, database: DatabaseId) -> Result<Change> {
    Ok(open_snapshot(path, database)?.checkpoint().clone())
}

/// Loads the snapshot file's entries into `view` (empty but for its
/// identity), then, once the reader's last check (the snapshot hash against
/// the signed checkpoint) passes, records `log_start` as the applied log
/// position. On any failure the view holds unchecked entries and no applied
/// position: whoever opens it next empties it and loads it again.
pub(super) fn load_snapshot(
    view: &DB,
    path: &Path,
    database: DatabaseId,
    log_start: peers_wal::Position,
) -> Result<u64> {
    let mut reader = open_snapshot(path, database)?;
    let mut write_options = rocksdb::WriteOptions::default();
    write_options.disable_wal(true);
    let checkpoint = reader.checkpoint().clone();
    while let Some(block) = reader.next_block()? {
        let mut batch = rocksdb::WriteBatch::default();
        for (key, value) in &block {
            batch.put(key, value);
        }
        view.write_opt(batch, &write_options)?;
    }
    let entries = reader.finish()?;
    // The checkpoint stands from here on: what it settles is read from the
    // snapshot state just loaded (FORMAT.md "Settlement").
    crate::checkpoint::record_standing(view, &checkpoint)?;
    view.put_opt(
        keys::meta(keys::META_APPLIED),
        log_start.0.to_be_bytes(),
        &write_options,
    )?;
    view.flush()?;
    Ok(entries)
}

impl Db {
    /// Makes a new replica (its own new identity, or `options.identity`) in
    /// a new directory from a snapshot file (the local half of FORMAT.md
    /// "Bootstrap"): the file is read with every check first, and nothing
    /// is written if one fails; then it is copied to `snapshot-1`, the
    /// directory switched to generation 1 with an empty log, and the
    /// database opened, which loads the view from the snapshot (checked
    /// again). The replica then syncs the changes above the checkpoint's
    /// frontier like any replica.
    pub fn create_from_snapshot(
        dir: impl AsRef<Path>,
        snapshot: impl AsRef<Path>,
        options: Options,
    ) -> Result<Db> {
        let (dir, snapshot) = (dir.as_ref(), snapshot.as_ref());
        let file = std::fs::File::open(snapshot).map_err(io_error(snapshot))?;
        let reader = SnapshotReader::open(BufReader::new(file))?;
        let database = reader.database();
        reader.finish()?;
        prepare_new(dir, &options)?;
        let copy = snapshot_path(dir, 1);
        std::fs::copy(snapshot, &copy)
            .and_then(|_| std::fs::File::open(&copy)?.sync_all())
            .map_err(io_error(&copy))?;
        switch_generation(dir, 1)?;
        write_database_file(dir, database)?;
        Db::open(dir, options)
    }

    /// Trims the database in `dir` (not open elsewhere: a holder makes it
    /// [`Error::InUse`]) at its standing checkpoint (none:
    /// [`Error::NoStandingCheckpoint`]; already trimmed at it:
    /// [`Error::AlreadyTrimmed`]): writes the next generation (the
    /// checkpoint's snapshot file, a log of the changes above its frontier,
    /// a view of both), switches to it atomically and removes the old one
    /// (FORMAT.md "Trimming").
    pub fn trim(
        dir: impl AsRef<Path>,
        options: Options,
        progress: &mut dyn FnMut(TrimStep, u64, u64),
    ) -> Result<TrimReport> {
        let dir = dir.as_ref();
        // A directory that holds no database says so before it is locked.
        read_database_file(dir)?;
        // Held until the end, across the switch, beyond the `Db`'s life.
        let lock = Arc::new(lock_dir(dir)?);
        let db = Db::open_with(dir, options.clone(), REAL_DISK, Some(Arc::clone(&lock)))?;
        let checkpoint_hash = db
            .standing_checkpoint(&mut |done, total| progress(TrimStep::Judge, done, total))?
            .ok_or(Error::NoStandingCheckpoint)?;
        if db.inner.log.trimmed() == Some(checkpoint_hash) {
            return Err(Error::AlreadyTrimmed {
                checkpoint: checkpoint_hash,
            });
        }
        let checkpoint = db
            .get_change(&checkpoint_hash)?
            .ok_or(Error::MissingChange {
                hash: checkpoint_hash,
            })?;
        if checkpoint.checkpoint().is_none() {
            return Err(Error::NotACheckpoint {
                hash: checkpoint_hash,
            });
        }
        // Its closure is walked when its snapshot file is written (a
        // checkpoint this replica cannot confirm fails there, before the
        // switch).
        next_generation(
            db,
            lock,
            &options,
            &checkpoint,
            SnapshotSource::Write,
            progress,
        )
    }

    /// Installs the snapshot file `snapshot` (a checkpoint of this
    /// database, by its owner: FORMAT.md "Bootstrap") into the database in
    /// `dir` (not open elsewhere: [`Error::InUse`]): the file is read with
    /// every check first (its state hash against the owner's signature),
    /// and nothing is written if one fails; then the next generation is
    /// made of it, as a trim makes one, keeping the held changes outside
    /// its closure that are not off its frontier. Refused
    /// ([`Error::SnapshotNotNewer`]) when a checkpoint as late stands here
    /// already, or the file's frontier lies below the standing one's; and
    /// ([`Error::SnapshotNotNeeded`]) when the replica holds the whole
    /// frontier, and so judges the checkpoint itself. The
    /// replica then syncs the changes above the frontier like any replica.
    pub fn install_snapshot(
        dir: impl AsRef<Path>,
        snapshot: impl AsRef<Path>,
        options: Options,
        progress: &mut dyn FnMut(TrimStep, u64, u64),
    ) -> Result<TrimReport> {
        let (dir, snapshot) = (dir.as_ref(), snapshot.as_ref());
        let database = read_database_file(dir)?;
        let lock = Arc::new(lock_dir(dir)?);
        let db = Db::open_with(dir, options.clone(), REAL_DISK, Some(Arc::clone(&lock)))?;
        // Every check of the file, and the closure it settles (its
        // `changes` entries), before anything is written.
        let mut reader = open_snapshot(snapshot, database)?;
        let checkpoint = reader.checkpoint().clone();
        let total = std::fs::metadata(snapshot)
            .map_err(io_error(snapshot))?
            .len();
        let mut closure = Vec::new();
        while let Some(block) = reader.next_block()? {
            for (key, _) in &block {
                if let Some(hash) = keys::change_of(key) {
                    closure.push(hash);
                }
            }
            let mut file: &std::fs::File = reader.input().get_ref();
            let read = std::io::Seek::stream_position(&mut file).unwrap_or(0);
            progress(TrimStep::Judge, read.min(total), total);
        }
        reader.finish()?;
        progress(TrimStep::Judge, total, total);
        let (frontier, _) = checkpoint.checkpoint().ok_or(Error::NotACheckpoint {
            hash: checkpoint.hash(),
        })?;
        if let Some(standing) = crate::checkpoint::Standing::load(&db.inner.view)? {
            let below = standing.settled.iter().any(|(author, settled)| {
                frontier
                    .iter()
                    .find(|entry| entry.author == *author)
                    .is_none_or(|entry| entry.seq < settled.seq)
            });
            if standing.seq >= checkpoint.seq() || below {
                return Err(Error::SnapshotNotNewer {
                    standing: standing.checkpoint,
                    offered: checkpoint.hash(),
                });
            }
        }
        // A replica that holds the whole frontier (settled changes of a
        // trimmed one count) judges the checkpoint itself rather than trust
        // the signature alone.
        let mut holds_frontier = true;
        for entry in frontier {
            holds_frontier &= db.inner.view.get(keys::change(&entry.hash))?.is_some();
        }
        if holds_frontier {
            return Err(Error::SnapshotNotNeeded {
                checkpoint: checkpoint.hash(),
            });
        }
        next_generation(
            db,
            lock,
            &options,
            &checkpoint,
            SnapshotSource::Copy(snapshot, Hashes::from(closure)),
            progress,
        )
    }
}

/// Where the next generation's snapshot file comes from.
enum SnapshotSource<'a> {
    /// Written from the checkpoint's closure, which the replica holds.
    Write,
    /// Copied from a file already checked, with the closure it settles
    /// (its `changes` entries).
    Copy(&'a Path, Hashes),
}

/// Writes generation N+1 of `db`'s directory (FORMAT.md "Trimming"): the
/// snapshot file of `checkpoint`, a log of the held changes outside its
/// closure and not off its frontier, and a view of both;
/// then switches to it and removes the old generation. `lock` is the
/// directory's, held across the switch.
fn next_generation(
    db: Db,
    lock: Arc<std::fs::File>,
    options: &Options,
    checkpoint: &Change,
    source: SnapshotSource<'_>,
    progress: &mut dyn FnMut(TrimStep, u64, u64),
) -> Result<TrimReport> {
    let dir = db.inner.dir.clone();
    let dir = dir.as_path();
    let database = db.inner.database;
    let checkpoint_hash = checkpoint.hash();
    let current = db.inner.generation;
    let next = current + 1;
    let log_bytes_before = bytes_under(&log_dir(dir, current))?;
    let view_bytes_before = bytes_under(&view_dir(dir, current))?;

    // 1. The snapshot file.
    let snapshot_path = snapshot_path(dir, next);
    let (snapshot_entries, closure) = match source {
        SnapshotSource::Write => {
            let file = std::fs::File::create(&snapshot_path).map_err(io_error(&snapshot_path))?;
            let (file, entries, closure) = db.write_snapshot_of(
                &checkpoint_hash,
                BufWriter::new(file),
                &mut |done, total| progress(TrimStep::Snapshot, done, total),
            )?;
            file.into_inner()
                .map_err(|error| error.into_error())
                .and_then(|file| file.sync_all())
                .map_err(io_error(&snapshot_path))?;
            // Copied only on a replica trimmed at this checkpoint already,
            // which `Db::trim` refuses before.
            let closure = closure.ok_or(Error::AlreadyTrimmed {
                checkpoint: checkpoint_hash,
            })?;
            (entries, closure)
        }
        SnapshotSource::Copy(from, closure) => {
            std::fs::copy(from, &snapshot_path)
                .and_then(|_| std::fs::File::open(&snapshot_path)?.sync_all())
                .map_err(io_error(&snapshot_path))?;
            // Checked again where it now lies: the view loads from it.
            (open_snapshot(&snapshot_path, database)?.finish()?, closure)
        }
    };
    sync_dir(dir)?;
    fail::fail_point!("engine::trim-snapshot", |_| injected(
        "engine::trim-snapshot"
    ));

    // 2. The new log: the changes outside the closure and not off the
    // frontier, in log order.
    let log_path = log_dir(dir, next);
    let wal_options = peers_wal::Options {
        segment_bytes_max: options.segment_bytes_max,
        sync: peers_wal::SyncMode::Relaxed,
    };
    let (wal, _) = peers_wal::Wal::open(&log_path, wal_options)?;
    let log = Log::new(wal, Some(checkpoint_hash));
    let mut off = OffFrontier::new(checkpoint, closure)?;
    let (mut kept, mut settled) = (0u64, 0u64);
    let mut group = Vec::with_capacity(TRIM_APPEND_CHANGES);
    let (start, end) = (db.inner.log.start().0, db.inner.log.end().0);
    for item in db.log()? {
        let (position, change) = item?;
        let hash = change.hash();
        if off.closure.contains(&hash) {
            settled += 1;
            continue;
        }
        if off.is_off(&change) {
            continue;
        }
        group.push(change);
        kept += 1;
        if group.len() == TRIM_APPEND_CHANGES {
            log.append(&group)?;
            group.clear();
            progress(TrimStep::Log, position.0 - start, end - start);
        }
    }
    if !group.is_empty() {
        log.append(&group)?;
    }
    log.sync()?;
    sync_dir(dir)?;
    progress(TrimStep::Log, end - start, end - start);
    fail::fail_point!("engine::trim-log", |_| injected("engine::trim-log"));

    // 3. The new view: the snapshot's entries (checked against the
    // signed hash before anything else is written), then the new log.
    let view_path = view_dir(dir, next);
    {
        let view = Arc::new(open_view(&view_path, database)?);
        load_snapshot(&view, &snapshot_path, database, log.start())?;
        let mut writer = Writer::new(log.clone(), Arc::clone(&view), database, 0)?;
        writer.snapshot_rows = Some(snapshot_rows(snapshot_path.clone()));
        writer.replay(log.start(), false, Select::All, &mut |done, total| {
            progress(TrimStep::View, done, total)
        })?;
        view.flush()?;
    }
    drop(log);
    sync_dir(dir)?;
    fail::fail_point!("engine::trim-view", |_| injected("engine::trim-view"));

    // 4. The switch, then the old generation's files go.
    drop(db);
    switch_generation(dir, next)?;
    fail::fail_point!("engine::trim-switch", |_| injected("engine::trim-switch"));
    remove_other_generations(dir, next)?;
    drop(lock);
    Ok(TrimReport {
        checkpoint: checkpoint_hash,
        generation: next,
        changes_kept: kept,
        changes_settled: settled,
        changes_off_frontier: off.off.len() as u64,
        snapshot_entries,
        log_bytes_before,
        view_bytes_before,
        log_bytes_after: bytes_under(&log_path)?,
        view_bytes_after: bytes_under(&view_path)?,
        snapshot_bytes: bytes_under(&snapshot_path)?,
    })
}
