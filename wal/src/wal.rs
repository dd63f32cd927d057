//! The log handle: appends with group commit, segment rotation, and poisoning.
//!
//! # Group commit
//! Appenders write their frames under the writer mutex (one `write_all` per call)
//! and publish the new end. With [`SyncMode::Always`] each then calls
//! [`Shared::sync_until`] with its end: a second mutex serialises fsyncs, and
//! whoever holds it first re-checks whether an fsync that began after its write
//! already covered it. If not, it captures the current end and segment under the
//! writer mutex, fsyncs *outside* it (so appends continue meanwhile), and publishes
//! the captured end as synced. One fsync thus covers every append whose write
//! finished before it began.
//!
//! # Invariants
//! - `synced <= written`, both logical positions, both only grow.
//! - Every segment but the last is complete and fsynced: rotation fsyncs the old
//!   segment before it creates the next one. So an fsync of the last segment makes
//!   everything up to its end durable.
//! - Once `poisoned` is set it stays set; no write or fsync happens after.
//!
//! - Every fsync of a segment file (group commit and rotation) holds `sync_turn`,
//!   so two never run at once on one file and a failed one is seen (the log is
//!   poisoned) before any later one is trusted. After a failed fsync Linux may
//!   have marked the lost pages clean; a concurrent or later fsync can then return
//!   success without the data on disk.
//! - After a failed write or fsync the last segment is cut back to the bytes known
//!   good (the end of the last complete write, or the last successful fsync) before
//!   the log is poisoned, so a reopen does not find frames whose write failed, nor
//!   pages that a failed fsync left in the page cache but maybe not on disk.
//!
//! Lock order: `sync_turn` before `writer` before `segments`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::error::Error;
use crate::format::{
    BATCH_BYTES_MAX, HEADER_BYTES, POSITION_MAX, encode_frame, record_frame_bytes,
};
use crate::fs::{Fs, StdFs};
use crate::options::{OpenReport, Options, Position, SegmentInfo, SyncMode};
use crate::read::Iter;
use crate::recovery::recover;
use crate::segment::{Segment, Syncer};

/// Capacity kept by the writer's encode buffer between appends; a larger batch's
/// buffer is released after use so one big batch does not pin its memory.
const ENCODE_BUFFER_BYTES_KEPT: usize = 1024 * 1024;

/// An open write-ahead log. Cheap to clone (an `Arc` inside); `Send` and `Sync`.
///
/// One process at a time may open a directory: the wal takes no file lock, so the
/// embedder must ensure this (the engine holds its own lock on its directory).
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
}

/// The state all clones of a [`Wal`] share.
pub(crate) struct Shared {
    /// The file system: [`StdFs`], or a simulated one in tests.
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: Options,
    /// Position of the first record: the first segment's base plus its header.
    start: u64,
    /// The appending side; held while writing frames and while rotating.
    writer: Mutex<Writer>,
    /// Serialises fsyncs of the last segment (the group commit "turn").
    sync_turn: Mutex<()>,
    /// All segments in base order, shared with readers.
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    /// Position just after the last written frame: [`Wal::end`].
    pub(crate) written: AtomicU64,
    /// Everything before this position is known durable.
    synced: AtomicU64,
    /// Set by a failed write or fsync; never cleared.
    poisoned: AtomicBool,
    syncer: Syncer,
}

/// The last segment and what has been written to it.
struct Writer {
    segment: Arc<Segment>,
    /// Length of the segment file (header included).
    len: u64,
    /// Reused buffer for encoding frames.
    buffer: Vec<u8>,
}

impl Wal {
    /// Opens the log in `dir`, creating the directory and a first segment if there
    /// are none, and checks every segment (see `docs/FORMAT.md`, "Recovery").
    ///
    /// A torn tail in the last segment is cut and reported; any other damage is
    /// [`Error::Corrupt`] (or [`Error::BadMagic`], [`Error::UnsupportedVersion`]).
    pub fn open(dir: &Path, options: Options) -> Result<(Wal, OpenReport), Error> {
        Self::open_on(Arc::new(StdFs), dir, options)
    }

    /// [`Wal::open`] on the file system `fs`.
    pub(crate) fn open_on(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: Options,
    ) -> Result<(Wal, OpenReport), Error> {
        let syncer = Syncer::default();
        let recovered = recover(&*fs, dir, &syncer)?;
        let (Some(first), Some(last)) = (recovered.segments.first(), recovered.segments.last())
        else {
            unreachable!("recovery yields at least one segment");
        };
        let start = first.base + HEADER_BYTES;
        let end = recovered.report.end.0;
        assert_eq!(end, last.base + recovered.last_len);
        let writer = Writer {
            segment: Arc::clone(last),
            len: recovered.last_len,
            buffer: Vec::new(),
        };
        let shared = Shared {
            fs,
            dir: dir.to_path_buf(),
            options,
            start,
            writer: Mutex::new(writer),
            sync_turn: Mutex::new(()),
            segments: RwLock::new(recovered.segments),
            written: AtomicU64::new(end),
            // Recovery fsynced the last segment.
            synced: AtomicU64::new(end),
            poisoned: AtomicBool::new(false),
            syncer,
        };
        let wal = Wal {
            shared: Arc::new(shared),
        };
        Ok((wal, recovered.report))
    }

    /// Appends one record and returns its position. With [`SyncMode::Always`] the
    /// record is fsynced when this returns.
    ///
    /// A record longer than [`RECORD_BYTES_MAX`](crate::RECORD_BYTES_MAX) is refused
    /// with [`Error::RecordTooLarge`] and nothing is written.
    pub fn append(&self, record: &[u8]) -> Result<Position, Error> {
        let appended = self.append_batch(&[record])?;
        match appended.as_slice() {
            [frame] => Ok(frame.start),
            _ => unreachable!("one frame per record"),
        }
    }

    /// Appends records in order and returns each one's frame: where it
    /// starts (the position to read it back) and where it ends (the
    /// position a reader that applied it has reached). With
    /// [`SyncMode::Always`] one fsync at the end, possibly shared with
    /// concurrent appends, covers them all.
    ///
    /// The frames are encoded into one buffer and written with one write per
    /// [`BATCH_BYTES_MAX`] of frames (so a batch may span segments, each
    /// write within one). Every record is checked before anything is
    /// written: if one is too large ([`Error::RecordTooLarge`]), nothing is.
    pub fn append_batch(&self, records: &[&[u8]]) -> Result<Vec<Range<Position>>, Error> {
        self.shared.check_not_poisoned()?;
        let sizes = records
            .iter()
            .map(|record| record_frame_bytes(record))
            .collect::<Result<Vec<u64>, Error>>()?;
        let mut frames = Vec::with_capacity(records.len());
        let mut first = 0;
        let mut end = None;
        while first < records.len() {
            let mut last = first;
            let mut bytes = 0;
            while last < records.len() && (last == first || bytes + sizes[last] <= BATCH_BYTES_MAX)
            {
                bytes += sizes[last];
                last += 1;
            }
            let (positions, written) = self.shared.write_frames(&records[first..last], bytes)?;
            for (start, size) in positions.into_iter().zip(&sizes[first..last]) {
                frames.push(start..Position(start.0 + size));
            }
            end = Some(written);
            first = last;
        }
        if let Some(end) = end
            && self.shared.options.sync == SyncMode::Always
        {
            self.shared.sync_until(end)?;
        }
        Ok(frames)
    }

    /// Position of the first record (where it will be, if the log is empty).
    pub fn start(&self) -> Position {
        Position(self.shared.start)
    }

    /// Position just after the last appended record: where the next append lands,
    /// unless it rotates to a new segment (then it lands after that one's header).
    pub fn end(&self) -> Position {
        Position(self.shared.written.load(Ordering::Acquire))
    }

    /// Makes everything appended so far durable. Needed only with
    /// [`SyncMode::Relaxed`].
    pub fn sync(&self) -> Result<(), Error> {
        self.shared.check_not_poisoned()?;
        self.shared
            .sync_until(self.shared.written.load(Ordering::Acquire))
    }

    /// Reads the record at `position`, checking its checksum.
    ///
    /// [`Error::InvalidPosition`] if `position` is outside the log, inside a
    /// segment header, or its frame's length does not fit in the segment; a
    /// checksum mismatch is [`Error::Corrupt`]. (Positions are meant to come from
    /// [`Wal::append`] or [`Iter`]: a position inside a frame is almost always
    /// caught by one of the two, but the wal cannot tell which it is.)
    pub fn read_at(&self, position: Position) -> Result<Vec<u8>, Error> {
        self.shared.check_not_poisoned()?;
        let end = self.shared.written.load(Ordering::Acquire);
        let (payload, _next) = self.shared.read_record(position.0, end)?;
        Ok(payload)
    }

    /// Iterates over the records from `position` (a record's position,
    /// [`Wal::start`], [`Wal::end`], or any earlier value of `end`) up to
    /// [`Wal::end`] as of this call, across segments, in order.
    ///
    /// The first record is read here, so a bad `position` is an error now. The
    /// iterator may yield records whose append has written but not yet returned.
    pub fn iter_from(&self, position: Position) -> Result<Iter, Error> {
        self.shared.check_not_poisoned()?;
        Iter::new(Arc::clone(&self.shared), position.0)
    }

    /// The segment files as of this call, in base order: every sealed
    /// segment with its file length, and the last one with the bytes up to
    /// [`Wal::end`] (complete frames only). For copying the log (backups):
    /// a sealed segment never changes again; read any of them with
    /// [`Wal::read_segment`].
    pub fn segments(&self) -> Result<Vec<SegmentInfo>, Error> {
        self.shared.check_not_poisoned()?;
        // The writer's lock holds rotation still, so the list and the last
        // segment's length belong to one moment (lock order: writer, then
        // segments).
        let writer = self.shared.lock_writer()?;
        let segments = self
            .shared
            .segments
            .read()
            .map_err(|_| Error::Poisoned)?
            .clone();
        let mut infos = Vec::with_capacity(segments.len());
        for segment in &segments {
            let sealed = segment.base != writer.segment.base;
            let bytes = if sealed {
                segment.file_len()?
            } else {
                writer.len
            };
            infos.push(SegmentInfo {
                base: segment.base,
                bytes,
                sealed,
            });
        }
        drop(writer);
        debug_assert!(infos.last().is_some_and(|last| !last.sealed));
        Ok(infos)
    }

    /// Reads `buffer.len()` bytes of the segment whose base is `base`, from
    /// `offset` in its file (the header is at offset 0). The range must lie
    /// within the bytes [`Wal::segments`] reported for it (a sealed
    /// segment's file length, or the last segment's end as of now):
    /// otherwise [`Error::InvalidPosition`].
    pub fn read_segment(&self, base: u64, offset: u64, buffer: &mut [u8]) -> Result<(), Error> {
        self.shared.check_not_poisoned()?;
        let segment = {
            let segments = self.shared.segments.read().map_err(|_| Error::Poisoned)?;
            let index = segments
                .binary_search_by_key(&base, |segment| segment.base)
                .map_err(|_| Error::InvalidPosition {
                    position: Position(base),
                })?;
            Arc::clone(&segments[index])
        };
        let written = self.shared.written.load(Ordering::Acquire);
        let limit = segment
            .file_len()?
            .min(written.saturating_sub(base).max(HEADER_BYTES));
        let length = u64::try_from(buffer.len()).map_err(|_| Error::InvalidPosition {
            position: Position(base),
        })?;
        let in_range = offset
            .checked_add(length)
            .is_some_and(|range_end| range_end <= limit);
        if !in_range {
            return Err(Error::InvalidPosition {
                position: Position(base.saturating_add(offset)),
            });
        }
        segment.read_exact_at(buffer, offset)
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Number of fsyncs (of files and directories) issued since open: a statistic,
    /// for tests and metrics. With group commit it stays below the number of appends.
    pub fn fsync_count(&self) -> u64 {
        self.shared.syncer.count()
    }
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("start", &self.shared.start)
            .field("end", &self.shared.written.load(Ordering::Acquire))
            .field("poisoned", &self.shared.poisoned.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// Checks every record's length and the batch total; returns the total frame bytes.
impl Shared {
    /// Fails if a write or fsync has failed before.
    pub(crate) fn check_not_poisoned(&self) -> Result<(), Error> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Marks the log as unusable until reopen, and passes the error on.
    fn poison(&self, error: Error) -> Error {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(dir = %self.dir.display(), %error, "wal: poisoned");
        error
    }

    /// Locks the writer. A panic while it was held leaves its state unknown, so
    /// that counts as poisoned too.
    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, Error> {
        let writer = self.writer.lock().map_err(|_| Error::Poisoned)?;
        self.check_not_poisoned()?;
        Ok(writer)
    }

    /// Cuts the last segment back to the logical end `keep` after a failed write or
    /// fsync (the log is already poisoned). If the cut fails too, reopen checks the
    /// tail as after a crash.
    fn cut_back(&self, writer: &mut Writer, keep: u64) {
        let len = keep.saturating_sub(writer.segment.base).max(HEADER_BYTES);
        debug_assert!(len <= writer.len);
        match writer.segment.set_len(len) {
            Ok(()) => writer.len = len,
            Err(error) => tracing::error!(
                %error,
                "wal: could not cut back the last segment after a failure; reopen checks it"
            ),
        }
    }

    /// Whether `frames_bytes` more bytes must go to a new segment: the last one
    /// holds a record and would grow past the limit.
    fn needs_rotation(&self, writer: &Writer, frames_bytes: u64) -> bool {
        writer.len > HEADER_BYTES && writer.len + frames_bytes > self.options.segment_bytes_max
    }

    /// Writes the frames of `records` with one write, rotating first if needed.
    /// Returns their positions and the end after them.
    fn write_frames(
        &self,
        records: &[&[u8]],
        frames_bytes: u64,
    ) -> Result<(Vec<Position>, u64), Error> {
        let mut writer = self.lock_writer()?;
        // Rotation fsyncs the last segment, so it takes the sync turn (first, by the
        // lock order) like every fsync of a segment.
        let _turn = if self.needs_rotation(&writer, frames_bytes) {
            drop(writer);
            let turn = self.sync_turn.lock().map_err(|_| Error::Poisoned)?;
            writer = self.lock_writer()?;
            if self.needs_rotation(&writer, frames_bytes) {
                self.rotate(&mut writer)?;
            }
            Some(turn)
        } else {
            None
        };
        let writer = &mut *writer;
        let first = writer.segment.base + writer.len;
        debug_assert!(first + frames_bytes <= POSITION_MAX);
        writer.buffer.clear();
        let mut positions = Vec::with_capacity(records.len());
        for record in records {
            positions.push(Position(first + writer.buffer.len() as u64));
            encode_frame(record, &mut writer.buffer);
        }
        debug_assert_eq!(writer.buffer.len() as u64, frames_bytes);
        if let Err(error) = writer.segment.write_all(&writer.buffer) {
            // Part of the frames may be in the file: cut them off.
            let error = self.poison(error);
            self.cut_back(writer, first);
            return Err(error);
        }
        writer.len += frames_bytes;
        let end = first + frames_bytes;
        self.written.store(end, Ordering::Release);
        if writer.buffer.capacity() > ENCODE_BUFFER_BYTES_KEPT {
            writer.buffer.clear();
            writer.buffer.shrink_to(ENCODE_BUFFER_BYTES_KEPT);
        }
        Ok((positions, end))
    }

    /// Closes the last segment and starts the next, at its end. Called with the
    /// sync turn and the writer locked.
    fn rotate(&self, writer: &mut Writer) -> Result<(), Error> {
        let old = Arc::clone(&writer.segment);
        // The old segment must be complete on disk before a newer one exists:
        // recovery allows a torn tail only in the last segment.
        if let Err(error) = self.syncer.sync_data(&old) {
            let error = self.poison(error);
            self.cut_back(writer, self.synced.load(Ordering::Acquire));
            return Err(error);
        }
        let base = old.base + writer.len;
        self.synced.fetch_max(base, Ordering::AcqRel);
        // A failure here leaves no file, or a new last segment with a torn or
        // complete header and no record: reopen removes or keeps it.
        let segment = match Segment::create(&*self.fs, &self.dir, base, &self.syncer) {
            Ok(segment) => Arc::new(segment),
            Err(error) => return Err(self.poison(error)),
        };
        let mut segments = self
            .segments
            .write()
            .map_err(|_| self.poison(Error::Poisoned))?;
        segments.push(Arc::clone(&segment));
        drop(segments);
        writer.segment = segment;
        writer.len = HEADER_BYTES;
        // The new header is fsynced, and readers find the segment before the end
        // moves into it.
        self.synced.fetch_max(base + HEADER_BYTES, Ordering::AcqRel);
        self.written.store(base + HEADER_BYTES, Ordering::Release);
        Ok(())
    }

    /// Returns once everything before `end` is durable, issuing an fsync only if no
    /// fsync that began after `end` was written has covered it (group commit).
    fn sync_until(&self, end: u64) -> Result<(), Error> {
        if self.synced.load(Ordering::Acquire) >= end {
            return Ok(());
        }
        let _turn = self.sync_turn.lock().map_err(|_| Error::Poisoned)?;
        // A failed fsync may have covered our write: its data may be lost.
        self.check_not_poisoned()?;
        if self.synced.load(Ordering::Acquire) >= end {
            return Ok(());
        }
        let (segment, target) = {
            let writer = self.lock_writer()?;
            (
                Arc::clone(&writer.segment),
                writer.segment.base + writer.len,
            )
        };
        debug_assert!(target >= end);
        // Outside the writer lock: appends go on while the disk works.
        if let Err(error) = self.syncer.sync_data(&segment) {
            let error = self.poison(error);
            // Rotation takes the sync turn, so the segment is still the last.
            if let Ok(mut writer) = self.writer.lock() {
                debug_assert!(Arc::ptr_eq(&writer.segment, &segment));
                self.cut_back(&mut writer, self.synced.load(Ordering::Acquire));
            }
            return Err(error);
        }
        self.synced.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Guards the poisoning rule: after a failed write or fsync (simulated here, as
    // std offers no fault injection) every call fails with Poisoned, including an
    // iterator made before, until the log is reopened.
    #[test]
    fn poisoned_log_refuses_everything_until_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _) = Wal::open(dir.path(), Options::default()).expect("open");
        let position = wal.append(b"durable").expect("append");
        wal.append(b"second").expect("append");
        let mut iter = wal.iter_from(wal.start()).expect("iter");
        assert!(iter.next().is_some(), "the first record was read before");

        let _ = wal.shared.poison(Error::Poisoned);
        assert!(matches!(wal.append(b"x"), Err(Error::Poisoned)));
        assert!(matches!(wal.append_batch(&[b"x"]), Err(Error::Poisoned)));
        assert!(matches!(wal.sync(), Err(Error::Poisoned)));
        assert!(matches!(wal.read_at(position), Err(Error::Poisoned)));
        assert!(matches!(wal.iter_from(wal.start()), Err(Error::Poisoned)));
        assert!(matches!(iter.next(), Some(Err(Error::Poisoned))));
        assert!(iter.next().is_none(), "fused after an error");
        drop(wal);

        let (wal, report) = Wal::open(dir.path(), Options::default()).expect("reopen");
        assert_eq!(report.records, 2);
        assert_eq!(wal.read_at(position).expect("read"), b"durable");
    }
}
