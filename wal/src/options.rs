//! Small public value types: positions, options and the open report.

use std::fmt;
use std::path::PathBuf;

/// Default [`Options::segment_bytes_max`]: 64 MiB.
const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// A logical position in the log: the base of a segment plus the byte offset of a
/// record frame in that segment's file.
///
/// Positions grow with every append and never repeat, across segments and reopens.
/// The first record of a fresh log is at `Position(32)`, just after the first
/// segment's header. A position returned by [`Wal::end`](crate::Wal::end) (or any
/// segment base, such as `Position(0)`) is also accepted by
/// [`Wal::iter_from`](crate::Wal::iter_from), meaning "from the next record on".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// When an append is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// An append returns only after an fsync covers it. Concurrent appends share
    /// fsyncs (group commit).
    #[default]
    Always,
    /// An append returns after its write(2): the record survives a crash of the
    /// process but maybe not of the machine. [`Wal::sync`](crate::Wal::sync) makes
    /// everything appended so far durable. Segment rotation always fsyncs. If an
    /// fsync fails, what it was to cover is cut off (crate documentation, "Failure"):
    /// relaxed appends not yet synced are then lost even without a crash.
    Relaxed,
}

/// How a [`Wal`](crate::Wal) is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// A segment is rotated before an append would make its file longer than this,
    /// unless it holds no record yet (so a large record gets a segment of its own).
    /// Default 64 MiB.
    pub segment_bytes_max: u64,
    /// When an append is durable. Default [`SyncMode::Always`].
    pub sync: SyncMode,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            sync: SyncMode::default(),
        }
    }
}

/// A torn tail cut off the last segment when the log was opened: the trace of a
/// crash during an append or a rotation. What was cut had never been acknowledged
/// as durable (see `docs/FORMAT.md`, "Recovery").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The segment file that was cut (or removed).
    pub segment: PathBuf,
    /// File offset where the cut was made: the end of the last valid frame. `0`
    /// when the whole segment was removed.
    pub offset: u64,
    /// Bytes cut off.
    pub bytes_cut: u64,
    /// The segment's header itself was torn (a crash while creating it), so the
    /// file, which held no record, was removed.
    pub segment_removed: bool,
}

/// What [`Wal::open`](crate::Wal::open) found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// The torn tail that was cut, if any. Also logged with `tracing::warn!`.
    pub torn_tail: Option<TornTail>,
    /// Number of segment files after recovery.
    pub segments: usize,
    /// Number of records in the log (every frame is checked on open anyway).
    pub records: u64,
    /// Position just after the last record: [`Wal::end`](crate::Wal::end).
    pub end: Position,
}

/// One segment file of the log, as [`Wal::segments`](crate::Wal::segments)
/// saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment's base: the position of its byte 0, and its file name.
    pub base: u64,
    /// Its bytes, header included: the file length of a sealed segment, or
    /// the last segment's complete frames.
    pub bytes: u64,
    /// Whether a later segment follows it: then its bytes never change.
    pub sealed: bool,
}
