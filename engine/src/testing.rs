//! Test support (the `testing` feature): a [`Db`] whose log is on the wal's
//! simulated disk ([`SimFs`]), which keeps only what was fsynced when the
//! power is cut, and whose view keeps only what RocksDB had flushed.
//!
//! The view's files stay on the real disk. RocksDB (its own WAL off, as
//! always here) makes a flush durable before it uses it, so after a power
//! loss the view holds the state of its last flush. [`flush_view`] flushes at
//! a chosen moment, as RocksDB does on its own when its memtable fills, and
//! keeps a copy of what that flush made durable; [`power_loss`] closes the
//! database and puts that copy (or, with no flush yet, nothing) in place of
//! the view. Cut the [`SimFs`]'s power before, restart it after.
//!
//! docs/RELIABILITY.md "Database" says what the tests built on this show.

use std::path::{Path, PathBuf};

pub use peers_wal::testing::SimFs;

use crate::change::DatabaseId;
use crate::db::{Db, Options, VIEW_DIR};
use crate::error::{Error, Result};
use crate::log::OpenLog;

/// Runs `with` with a log opener for `disk`, on the database in `dir`. The
/// view on disk is what its last close made durable: a copy of an earlier
/// flush is forgotten.
fn on<T>(disk: &SimFs, dir: &Path, with: impl FnOnce(OpenLog<'_>) -> Result<T>) -> Result<T> {
    let copy = flushed_copy(dir);
    if copy.exists() {
        std::fs::remove_dir_all(&copy).map_err(io(&copy))?;
    }
    with(&|log: &Path, options| disk.open_wal(log, options))
}

/// [`Db::create`] with the log on `disk`. `dir` must be absolute.
pub fn create(disk: &SimFs, dir: &Path, options: Options) -> Result<Db> {
    on(disk, dir, |open_log| Db::create_on(dir, options, open_log))
}

/// [`Db::join`] with the log on `disk`. `dir` must be absolute.
pub fn join(disk: &SimFs, dir: &Path, database: DatabaseId, options: Options) -> Result<Db> {
    on(disk, dir, |open_log| {
        Db::join_on(dir, database, options, open_log)
    })
}

/// [`Db::open`] with the log on `disk`. `dir` must be absolute.
pub fn open(disk: &SimFs, dir: &Path, options: Options) -> Result<Db> {
    on(disk, dir, |open_log| Db::open_on(dir, options, open_log))
}

/// Where the copy of the view's last flush is kept: beside the database
/// directory, so the database's own files never include it.
fn flushed_copy(db_dir: &Path) -> PathBuf {
    let mut name = db_dir.as_os_str().to_owned();
    name.push(".view-at-last-flush");
    PathBuf::from(name)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Flushes the view now and remembers what the flush made durable.
pub fn flush_view(db: &Db) -> Result<()> {
    let copy = flushed_copy(db.dir());
    let fresh = copy.with_extension("new");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(io(&fresh))?;
    }
    db.flush_view_into(&fresh)?;
    if copy.exists() {
        std::fs::remove_dir_all(&copy).map_err(io(&copy))?;
    }
    std::fs::rename(&fresh, &copy).map_err(io(&copy))
}

/// Closes `db` (its last handle) as a power loss would leave it: the view
/// as of the last [`flush_view`], or none if it never flushed (a new view is
/// then built from the log on open). The log is whatever the [`SimFs`]
/// kept.
pub fn power_loss(db: Db) -> Result<()> {
    assert!(db.is_last_handle(), "power_loss needs the last handle");
    let dir = db.dir().to_owned();
    drop(db);
    let view = dir.join(VIEW_DIR);
    std::fs::remove_dir_all(&view).map_err(io(&view))?;
    let copy = flushed_copy(&dir);
    if copy.exists() {
        std::fs::rename(&copy, &view).map_err(io(&view))?;
    }
    Ok(())
}

/// Every entry of `db`'s view that its state hash covers (the families
/// `0x02` fields, `0x03` tombstones and `0x04` increments of FORMAT.md
/// "View"), in key order: what a fixture's expected entries are compared
/// with.
pub fn state_entries(db: &Db) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    db.state_entries()
}
