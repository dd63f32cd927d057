//! A database directory on disk: its files, its lock, and the view's
//! RocksDB (opened, checked against the database, reset for a rebuild).
//!
//! A database directory holds `database` (the id, hex), `identity.key` (this
//! replica's secret key, owner-only), `lock` (who has it open), `log/` (the
//! wal: the truth) and `view/` (RocksDB: rebuildable from the log).

use std::path::Path;

use peers_wal::Position;
use rocksdb::DB;

use super::Options;
use crate::change::DatabaseId;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::keys::{self, VIEW_FORMAT_VERSION};

pub(crate) const DATABASE_FILE: &str = "database";
pub(crate) const IDENTITY_FILE: &str = "identity.key";
pub(crate) const LOG_DIR: &str = "log";
pub(crate) const VIEW_DIR: &str = "view";
/// The file whose advisory lock makes one process the directory's user; it
/// holds that process's id and command line, for the error another gets.
pub const LOCK_FILE: &str = "lock";
/// A snapshot file received in a sync (FORMAT.md "Bootstrap"), checked,
/// waiting for [`crate::Db::install_snapshot`] (which `peers` runs when it
/// next opens the directory itself).
pub const RECEIVED_SNAPSHOT_FILE: &str = "snapshot-received";

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Takes the directory's lock (an advisory lock on `DIR/lock`, released by
/// the OS when the process ends, however it ends) and writes this process's
/// id and command line into it; a directory locked elsewhere is
/// [`Error::InUse`], naming the holder from what it wrote.
pub(crate) fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // Best effort: the holder writes its line just after locking.
            let _ = file.take(1024).read_to_string(&mut holder);
            let mut lines = holder.lines();
            return Err(Error::InUse {
                path: dir.to_owned(),
                pid: lines.next().and_then(|pid| pid.trim().parse().ok()),
                command: lines.next().unwrap_or_default().to_owned(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => return Err(io_error(&path)(source)),
    }
    let command: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let holder = format!("{}\n{}\n", std::process::id(), command.join(" "));
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(holder.as_bytes()))
        .map_err(io_error(&path))?;
    Ok(file)
}

pub(crate) fn prepare_new(dir: &Path, options: &Options) -> Result<Identity> {
    if dir.join(DATABASE_FILE).exists() {
        return Err(Error::AlreadyExists {
            path: dir.to_owned(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let identity = options.identity.clone().unwrap_or_else(Identity::generate);
    identity.save(&dir.join(IDENTITY_FILE))?;
    Ok(identity)
}

/// Writes `database` and makes it durable (the file, then the directory
/// entries of the new directory), so a power loss after `create` or `join`
/// returned cannot leave a directory that does not open.
pub(crate) fn write_database_file(dir: &Path, database: DatabaseId) -> Result<()> {
    let path = dir.join(DATABASE_FILE);
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&path)?;
        file.write_all(format!("{database}\n").as_bytes())?;
        file.sync_all()
    };
    write().map_err(io_error(&path))?;
    sync_dir(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// fsyncs a directory: the entries created in it so far stay after a power
/// loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error(dir))
}

pub(crate) fn read_database_file(dir: &Path) -> Result<DatabaseId> {
    let path = dir.join(DATABASE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                path: dir.to_owned(),
            });
        }
        Err(source) => return Err(Error::Io { path, source }),
    };
    DatabaseId::from_hex(&text).map_err(|_| Error::BadFile {
        path,
        what: "64 hex digits of a database id",
    })
}

/// The view's block cache (RocksDB's default is 32 MiB). With partitioned
/// indexes and filters, 16 MiB kept `verify` and `rebuild` of 1M changes
/// under 128 MiB (117 and 120 MiB peak, from 153 and 149) for 10-13% of
/// their time.
const VIEW_BLOCK_CACHE_BYTES: usize = 16 << 20;

/// Size of one RocksDB memtable of the view (two at most).
const VIEW_MEMTABLE_BYTES: usize = 32 << 20;

pub(crate) fn view_options() -> rocksdb::Options {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    // The log is the truth: RocksDB's own WAL is off on every write, and a
    // crash loses at most the memtable, which replay restores.
    options.set_manual_wal_flush(true);
    // Most point lookups on ingest miss (is this change new? is there a
    // tombstone?): bloom filters answer those without reading blocks.
    let mut table = rocksdb::BlockBasedOptions::default();
    // Memory (benches/README.md "A replica of 1M changes"): a bulk write (a
    // rebuild, a verify's scratch view, a catch-up) fills memtables as fast as
    // RocksDB flushes them, and two of the default 64 MiB were most of a
    // 204 MiB peak in a rebuild of 1M changes (163 MiB with two of 32 MiB;
    // with 16 MiB, 139 MiB but the rebuild took twice as long).
    options.set_write_buffer_size(VIEW_MEMTABLE_BYTES);
    options.set_max_write_buffer_number(2);
    table.set_bloom_filter(10.0, false);
    // Index and filter blocks live in the block cache, cut into 4 KiB
    // partitions under a pinned top level: memory stays flat as the replica
    // grows, and a cache smaller than a replica's indexes and filters costs
    // a 4 KiB read per miss. Whole index and filter blocks (RocksDB's
    // default) thrashed a 16 MiB cache: a rebuild of 1M changes took 691 s
    // instead of 22 s (benches/README.md "Memory").
    table.set_block_cache(&rocksdb::Cache::new_lru_cache(VIEW_BLOCK_CACHE_BYTES));
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_metadata_block_size(4096);
    options.set_block_based_table_factory(&table);
    options.set_memtable_whole_key_filtering(true);
    options.set_memtable_prefix_bloom_ratio(0.1);
    options
}

/// Opens the view. A view of another layout version or another database is
/// derived data that cannot be read as it is: it is dropped and rebuilt
/// from the log by the replay that follows (never misread).
pub(crate) fn open_view(path: &Path, database: DatabaseId) -> Result<DB> {
    let options = view_options();
    let view = DB::open(&options, path)?;
    let found = view
        .get(keys::meta(keys::META_VIEW_FORMAT))?
        .map(|bytes| <[u8; 4]>::try_from(bytes.as_slice()).map_or(0, u32::from_be_bytes));
    let stored = view.get(keys::meta(keys::META_DATABASE))?;
    let usable =
        found == Some(VIEW_FORMAT_VERSION) && stored.as_deref() == Some(database.0.as_slice());
    if found.is_some() && !usable {
        tracing::warn!(
            path = %path.display(),
            found = ?found,
            supported = VIEW_FORMAT_VERSION,
            "view of another format or database: rebuilding it from the log"
        );
        drop(view);
        DB::destroy(&options, path)?;
        return open_view(path, database);
    }
    if found.is_none() {
        write_view_identity(&view, database)?;
    }
    Ok(view)
}

/// The view's layout version and database, the first keys of every view.
pub(crate) fn write_view_identity(view: &DB, database: DatabaseId) -> Result<()> {
    view.put(
        keys::meta(keys::META_VIEW_FORMAT),
        VIEW_FORMAT_VERSION.to_be_bytes(),
    )?;
    view.put(keys::meta(keys::META_DATABASE), database.0)?;
    Ok(())
}

/// Empties the view but for its identity, ready for a replay from the start
/// of the log.
pub(crate) fn reset_view(view: &DB, database: DatabaseId) -> Result<()> {
    clear_view(view)?;
    write_view_identity(view, database)
}

pub(crate) fn applied_position(view: &DB) -> Result<Option<Position>> {
    let key = keys::meta(keys::META_APPLIED);
    match view.get(&key)? {
        None => Ok(None),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::ViewCorrupt { key })?;
            Ok(Some(Position(u64::from_be_bytes(bytes))))
        }
    }
}

/// Empties the view. The range delete is then flushed and compacted away:
/// left in place, its tombstone would sit in front of every lookup of the
/// replay that follows.
pub(crate) fn clear_view(view: &DB) -> Result<()> {
    let mut batch = rocksdb::WriteBatch::default();
    batch.delete_range(vec![0x00], vec![0xFF, 0xFF]);
    view.write(batch)?;
    view.flush()?;
    view.compact_range(None::<&[u8]>, None::<&[u8]>);
    Ok(())
}
