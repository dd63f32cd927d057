//! Reading records back: by position, and by iterating from a position.
//!
//! Reads use positioned reads (`pread`) on the segment files the log keeps open, so
//! they never take the writer lock and never disturb appends. Every read checks the
//! length against [`RECORD_BYTES_MAX`] before allocating, and the checksum after.
//! A read never goes past the end published after a completed write, so it never
//! sees a half-written frame.

use std::fmt;
use std::iter::FusedIterator;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::Error;
use crate::format::{FRAME_HEADER_BYTES, FrameHeader, HEADER_BYTES, RECORD_BYTES_MAX};
use crate::options::Position;
use crate::segment::Segment;
use crate::wal::Shared;

/// Iterator over records, returned by [`Wal::iter_from`](crate::Wal::iter_from).
///
/// Yields `(position, payload)` in log order up to the end of the log as of its
/// creation. After yielding an error it yields nothing more.
pub struct Iter {
    shared: Arc<Shared>,
    /// The first record, read when the iterator was made (to check the position).
    pending: Option<(Position, Vec<u8>)>,
    /// Position of the next record to read.
    next: u64,
    /// End of the frame of the record yielded last.
    yielded_end: Option<u64>,
    /// End of the log when the iterator was made.
    end: u64,
    /// Set after an error.
    done: bool,
}

impl Iter {
    /// Starts at `position`: a record's position, a segment base (meaning its first
    /// record), or the current end.
    pub(crate) fn new(shared: Arc<Shared>, position: u64) -> Result<Self, Error> {
        let end = shared.written.load(Ordering::Acquire);
        let mut iter = Self {
            shared,
            pending: None,
            next: end,
            yielded_end: None,
            end,
            done: false,
        };
        if position == end {
            return Ok(iter);
        }
        let first = iter.shared.skip_header(position, end)?;
        if first >= end {
            return Ok(iter);
        }
        let (payload, next) = iter.shared.read_record(first, end)?;
        iter.pending = Some((Position(first), payload));
        iter.next = next;
        Ok(iter)
    }
}

impl Iter {
    /// Where the frame of the record yielded last ends: the position a
    /// reader that has applied it has reached (the next record's start, or
    /// the end of its segment). `None` before the first record.
    pub fn frame_end(&self) -> Option<Position> {
        self.yielded_end.map(Position)
    }
}

impl Iterator for Iter {
    type Item = Result<(Position, Vec<u8>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(record) = self.pending.take() {
            // Made with the first record read: `next` is still its end.
            self.yielded_end = Some(self.next);
            return Some(Ok(record));
        }
        if self.done || self.next >= self.end {
            return None;
        }
        let position = self.next;
        let result = self
            .shared
            .check_not_poisoned()
            .and_then(|()| self.shared.read_record(position, self.end));
        match result {
            Ok((payload, next)) => {
                debug_assert!(next > position);
                self.next = next;
                self.yielded_end = Some(next);
                Some(Ok((Position(position), payload)))
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

impl FusedIterator for Iter {}

impl fmt::Debug for Iter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("next", &self.next)
            .field("end", &self.end)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Where a position falls.
struct Located {
    segment: Arc<Segment>,
    /// Offset of the position in the segment file.
    offset: u64,
    /// File offset no frame may run past: the segment's end, or the log's end.
    limit: u64,
    /// Base of the following segment, if there is one.
    next_base: Option<u64>,
}

impl Shared {
    /// Finds the segment holding `position`, which must be before `end`.
    fn locate(&self, position: u64, end: u64) -> Result<Located, Error> {
        let invalid = Error::InvalidPosition {
            position: Position(position),
        };
        if position >= end {
            return Err(invalid);
        }
        let segments = self.segments.read().map_err(|_| Error::Poisoned)?;
        let after = segments.partition_point(|segment| segment.base <= position);
        let Some(index) = after.checked_sub(1) else {
            return Err(invalid);
        };
        let segment = Arc::clone(&segments[index]);
        let next_base = segments.get(index + 1).map(|next| next.base);
        let segment_end = next_base.map_or(end, |next_base| next_base.min(end));
        Ok(Located {
            offset: position - segment.base,
            limit: segment_end - segment.base,
            segment,
            next_base,
        })
    }

    /// Maps a segment's base to its first record's position; other positions are
    /// returned as they are.
    fn skip_header(&self, position: u64, end: u64) -> Result<u64, Error> {
        let located = self.locate(position, end)?;
        if located.offset == 0 {
            Ok(position + HEADER_BYTES)
        } else {
            Ok(position)
        }
    }

    /// Reads and checks the record at `position`. Returns its payload and the
    /// position of the next record (past the next segment's header when this record
    /// ends its segment).
    pub(crate) fn read_record(&self, position: u64, end: u64) -> Result<(Vec<u8>, u64), Error> {
        let invalid = || Error::InvalidPosition {
            position: Position(position),
        };
        let located = self.locate(position, end)?;
        let Located {
            segment,
            offset,
            limit,
            next_base,
        } = located;
        if offset < HEADER_BYTES || limit - offset < FRAME_HEADER_BYTES {
            return Err(invalid());
        }
        let mut header_bytes = [0u8; FRAME_HEADER_BYTES as usize];
        segment.read_exact_at(&mut header_bytes, offset)?;
        let header = FrameHeader::decode(&header_bytes);
        // Bounds before allocating: a bad position reads a random length.
        if header.length > RECORD_BYTES_MAX || header.frame_bytes() > limit - offset {
            return Err(invalid());
        }
        let mut payload = vec![0u8; header.length as usize];
        segment.read_exact_at(&mut payload, offset + FRAME_HEADER_BYTES)?;
        header
            .check(&payload)
            .map_err(|reason| Error::corrupt(&segment.path, offset, reason))?;
        let frame_end = position + header.frame_bytes();
        let next = match next_base {
            Some(next_base) if frame_end == next_base => next_base + HEADER_BYTES,
            _ => frame_end,
        };
        Ok((payload, next))
    }
}
