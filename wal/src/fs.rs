//! The file operations the wal uses, behind a small trait.
//!
//! Normal builds use [`StdFs`], a thin layer over `std::fs`. The `testing` feature
//! adds a simulated disk (`crate::testing::SimFs`) that keeps only what was
//! fsynced when the power is cut. Everything above this module (segments,
//! recovery, the log) is the same code for both.
//!
//! The traits work on `std::io` results; `crate::segment` adds paths to errors,
//! counts fsyncs and holds the fail points.

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A file system as the wal sees it: one directory of segment files.
pub(crate) trait Fs: Send + Sync + fmt::Debug {
    /// Whether `path` is an existing directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Creates `dir` and any missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Opens an existing file for reading and, if `writable`, appending.
    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn FsFile>>;
    /// Creates a new file for reading and appending; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// fsyncs a directory: entries created or removed in it before stay so.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file. Writes append at the end of the file; reads are positioned.
pub(crate) trait FsFile: Send + Sync + fmt::Debug {
    /// Reads into `buffer` from `offset`; returns the bytes read (0 at the end).
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize>;
    /// One `write(2)` at the end of the file; returns the bytes written, which
    /// may be fewer than `bytes.len()`.
    fn write(&self, bytes: &[u8]) -> io::Result<usize>;
    /// Length of the file.
    fn len(&self) -> io::Result<u64>;
    /// Truncates (or extends with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: the data and the length.
    fn sync_data(&self) -> io::Result<()>;
    /// fsync: the data and all metadata.
    fn sync_all(&self) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default)]
pub(crate) struct StdFs;

impl Fs for StdFs {
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(dir)?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect()
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new().read(true).append(writable).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A file of [`StdFs`], opened with `O_APPEND` when writable.
#[derive(Debug)]
struct StdFile(File);

impl FsFile for StdFile {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buffer, offset)
    }

    fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        (&self.0).write(bytes)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}
