//! Segment files: creating, opening, appending, positioned reads, and counted
//! fsyncs. Every file system call of the wal goes through this module (and
//! [`crate::fs`]), which adds the path to errors and holds the fail points.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;
use crate::fault::fail_io;
use crate::format::{SegmentHeader, segment_file_name};
use crate::fs::{Fs, FsFile};

/// An open segment file. Shared (behind an `Arc`) by the writer and readers: the
/// writer appends at the end of the file, readers use positioned reads.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Logical position of the file's first byte.
    pub(crate) base: u64,
    /// Path of the file, for errors.
    pub(crate) path: PathBuf,
    /// The open file: read-only, or read and append for the last segment.
    file: Box<dyn FsFile>,
}

impl Segment {
    /// Opens an existing segment file; `writable` opens it for appending too.
    pub(crate) fn open(fs: &dyn Fs, path: &Path, base: u64, writable: bool) -> Result<Self, Error> {
        let file = fs
            .open(path, writable)
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
    /// removes (it cannot hold a record yet), or no file at all.
    pub(crate) fn create(
        fs: &dyn Fs,
        dir: &Path,
        base: u64,
        syncer: &Syncer,
    ) -> Result<Self, Error> {
        let path = dir.join(segment_file_name(base));
        let file = create_new(fs, &path).map_err(|source| Error::io(&path, source))?;
        let segment = Self { base, path, file };
        segment.write_all(&SegmentHeader { base }.encode())?;
        syncer.sync_data(&segment)?;
        syncer.sync_dir(fs, dir)?;
        Ok(segment)
    }

    /// Appends all of `bytes` at the end of the file, in as many writes as the
    /// file system needs. On error, any prefix of `bytes` may be in the file.
    pub(crate) fn write_all(&self, bytes: &[u8]) -> Result<(), Error> {
        self.write_all_io(bytes)
            .map_err(|source| Error::io(&self.path, source))
    }

    fn write_all_io(&self, mut bytes: &[u8]) -> io::Result<()> {
        fail_io!("wal::write");
        #[cfg(feature = "failpoints")]
        fail::fail_point!("wal::short-write", |argument: Option<String>| {
            let part = argument
                .and_then(|argument| argument.parse().ok())
                .unwrap_or(bytes.len() / 2)
                .min(bytes.len().saturating_sub(1));
            let error = crate::fault::injected("wal::short-write", None);
            self.file.write(&bytes[..part])?;
            Err(error)
        });
        // Bounded: each pass writes at least one byte, or returns.
        while !bytes.is_empty() {
            match self.file.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => bytes = &bytes[written..],
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Truncates the file to `len` bytes (the caller fsyncs if it must last).
    pub(crate) fn set_len(&self, len: u64) -> Result<(), Error> {
        let set_len = || {
            fail_io!("wal::truncate");
            self.file.set_len(len)
        };
        set_len().map_err(|source| Error::io(&self.path, source))
    }

    /// Length of the file as the file system reports it.
    pub(crate) fn file_len(&self) -> Result<u64, Error> {
        self.file
            .len()
            .map_err(|source| Error::io(&self.path, source))
    }

    /// Fills `buffer` from file offset `offset`.
    pub(crate) fn read_exact_at(
        &self,
        mut buffer: &mut [u8],
        mut offset: u64,
    ) -> Result<(), Error> {
        let io_error = |source| Error::io(&self.path, source);
        // Bounded: each pass reads at least one byte, or returns.
        while !buffer.is_empty() {
            match self.file.read_at(buffer, offset) {
                Ok(0) => return Err(io_error(io::ErrorKind::UnexpectedEof.into())),
                Ok(read) => {
                    buffer = &mut buffer[read..];
                    offset += read as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(io_error(error)),
            }
        }
        Ok(())
    }

    /// A sequential reader of the file from `offset` (for the recovery scan).
    pub(crate) fn reader_at(&self, offset: u64) -> SegmentReader<'_> {
        SegmentReader {
            file: &*self.file,
            offset,
        }
    }
}

/// Creates a new file, through the `wal::segment-create` fail point.
fn create_new(fs: &dyn Fs, path: &Path) -> io::Result<Box<dyn FsFile>> {
    fail_io!("wal::segment-create");
    fs.create_new(path)
}

/// Reads a segment file sequentially with positioned reads.
pub(crate) struct SegmentReader<'a> {
    file: &'a dyn FsFile,
    offset: u64,
}

impl Read for SegmentReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
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
    pub(crate) fn sync_data(&self, segment: &Segment) -> Result<(), Error> {
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        let sync = || {
            fail_io!("wal::fsync");
            segment.file.sync_data()
        };
        sync().map_err(|source| Error::io(&segment.path, source))
    }

    /// fsync: data and all metadata. Used after truncating, to be sure the new
    /// length is on disk.
    pub(crate) fn sync_all(&self, segment: &Segment) -> Result<(), Error> {
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        let sync = || {
            fail_io!("wal::fsync");
            segment.file.sync_all()
        };
        sync().map_err(|source| Error::io(&segment.path, source))
    }

    /// fsyncs a directory, so that files created or removed in it stay so.
    pub(crate) fn sync_dir(&self, fs: &dyn Fs, dir: &Path) -> Result<(), Error> {
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        let sync = || {
            fail_io!("wal::dir-sync");
            fs.sync_dir(dir)
        };
        sync().map_err(|source| Error::io(dir, source))
    }

    /// fsyncs issued so far.
    pub(crate) fn count(&self) -> u64 {
        self.fsync_count.load(Ordering::Relaxed)
    }
}

/// Creates `dir` and missing parents, through the `wal::create-dir` fail point.
pub(crate) fn create_dir_all(fs: &dyn Fs, dir: &Path) -> Result<(), Error> {
    let create = || {
        fail_io!("wal::create-dir");
        fs.create_dir_all(dir)
    };
    create().map_err(|source| Error::io(dir, source))
}

/// Removes a segment file, through the `wal::remove` fail point.
pub(crate) fn remove_file(fs: &dyn Fs, path: &Path) -> Result<(), Error> {
    let remove = || {
        fail_io!("wal::remove");
        fs.remove_file(path)
    };
    remove().map_err(|source| Error::io(path, source))
}
