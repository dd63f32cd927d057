//! Segment files: creating, opening, positioned reads, and counted fsyncs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;
use crate::format::{SegmentHeader, segment_file_name};

/// An open segment file. Shared (behind an `Arc`) by the writer and readers: the
/// writer appends through the file cursor (`O_APPEND`), readers use positioned
/// reads, which never move the cursor.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Logical position of the file's first byte.
    pub(crate) base: u64,
    /// Path of the file, for errors.
    pub(crate) path: PathBuf,
    /// The open file: read-only, or read and append for the last segment.
    pub(crate) file: File,
}

impl Segment {
    /// Opens an existing segment file; `writable` opens it for appending too.
    pub(crate) fn open(path: &Path, base: u64, writable: bool) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .read(true)
            .append(writable)
            .open(path)
            .map_err(|source| Error::io(path, source))?;
        Ok(Self {
            base,
            path: path.to_path_buf(),
            file,
        })
    }

    /// Creates the segment starting at `base` in `dir`: writes its header, fsyncs
    /// the file, then fsyncs the directory so the new name survives a crash.
    ///
    /// A crash part way leaves a last segment with a torn header, which recovery
    /// removes (it cannot hold a record yet).
    pub(crate) fn create(dir: &Path, base: u64, syncer: &Syncer) -> Result<Self, Error> {
        let path = dir.join(segment_file_name(base));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| Error::io(&path, source))?;
        file.write_all(&SegmentHeader { base }.encode())
            .map_err(|source| Error::io(&path, source))?;
        syncer.sync_data(&file, &path)?;
        syncer.sync_dir(dir)?;
        Ok(Self { base, path, file })
    }

    /// Length of the file as the file system reports it.
    pub(crate) fn file_len(&self) -> Result<u64, Error> {
        let metadata = self
            .file
            .metadata()
            .map_err(|source| Error::io(&self.path, source))?;
        Ok(metadata.len())
    }

    /// Fills `buffer` from file offset `offset`.
    pub(crate) fn read_exact_at(&self, buffer: &mut [u8], offset: u64) -> Result<(), Error> {
        self.file
            .read_exact_at(buffer, offset)
            .map_err(|source| Error::io(&self.path, source))
    }
}

/// Issues fsyncs and counts them (a statistic: group commit shows as fewer fsyncs
/// than appends).
#[derive(Debug, Default)]
pub(crate) struct Syncer {
    fsync_count: AtomicU64,
}

impl Syncer {
    /// fdatasync: the data and the metadata needed to read it back (the length).
    pub(crate) fn sync_data(&self, file: &File, path: &Path) -> Result<(), Error> {
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        file.sync_data().map_err(|source| Error::io(path, source))
    }

    /// fsync: data and all metadata. Used after truncating, to be sure the new
    /// length is on disk.
    pub(crate) fn sync_all(&self, file: &File, path: &Path) -> Result<(), Error> {
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        file.sync_all().map_err(|source| Error::io(path, source))
    }

    /// fsyncs a directory, so that files created or removed in it stay so.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<(), Error> {
        let handle = File::open(dir).map_err(|source| Error::io(dir, source))?;
        self.sync_all(&handle, dir)
    }

    /// fsyncs issued so far.
    pub(crate) fn count(&self) -> u64 {
        self.fsync_count.load(Ordering::Relaxed)
    }
}
