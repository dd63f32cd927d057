//! The change log: signed changes over the wal (`peers-wal`), the truth a
//! database's view is derived from.
//!
//! The wal frames, checksums and fsyncs records; this module gives them
//! their meaning: a record is one change's canonical bytes (FORMAT.md
//! "Change"), read back by position and checked against the hash the view
//! indexed it under. A record that does not decode, or a change the rules
//! refuse where the log says it was accepted, is [`Error::LogCorrupt`] at
//! its position.

use std::ops::Range;
use std::path::Path;

use peers_wal::{Position, Wal};

use crate::change::{Change, ChangeHash};
use crate::error::{Error, Refusal, Result};

/// Opens a database's log directory: [`Wal::open`] on the real disk, or
/// (with the `testing` feature) the wal on a simulated disk that can lose
/// power.
pub(crate) type OpenLog<'a> = &'a (
        dyn Fn(
    &Path,
    peers_wal::Options,
) -> std::result::Result<(Wal, peers_wal::OpenReport), peers_wal::Error>
            + Sync
    );

/// [`OpenLog`] on the real disk.
pub(crate) const REAL_DISK: OpenLog<'static> = &Wal::open;

/// The change log of one database. Cheap to clone (a handle on the wal).
#[derive(Clone)]
pub(crate) struct Log {
    wal: Wal,
    /// The checkpoint whose settled changes this log no longer holds (a
    /// trimmed generation's snapshot), if any.
    trimmed: Option<ChangeHash>,
}

impl Log {
    /// `trimmed`: the checkpoint of the generation's snapshot, for a
    /// trimmed log (FORMAT.md "Trimming").
    pub(crate) fn new(wal: Wal, trimmed: Option<ChangeHash>) -> Log {
        Log { wal, trimmed }
    }

    /// The checkpoint this log was trimmed at, if it was.
    pub(crate) fn trimmed(&self) -> Option<ChangeHash> {
        self.trimmed
    }

    /// Reads the change at `position` and checks it is `hash`. Position 0
    /// (where no record starts: a segment starts with its header) is what
    /// a trimmed view records for a settled change: [`Error::Trimmed`].
    pub(crate) fn read(&self, position: u64, hash: &ChangeHash) -> Result<Change> {
        if position == 0 {
            return Err(match self.trimmed {
                Some(checkpoint) => Error::Trimmed {
                    hash: *hash,
                    checkpoint,
                },
                None => Error::MissingChange { hash: *hash },
            });
        }
        let bytes = self.wal.read_at(Position(position))?;
        let change = Change::decode(&bytes)
            .map_err(|error| corrupt_at(Position(position), Refusal::Malformed(error)))?;
        if change.hash() != *hash {
            return Err(Error::MissingChange { hash: *hash });
        }
        Ok(change)
    }

    /// Appends `changes` in order (one fsync with [`peers_wal::SyncMode::Always`])
    /// and returns each one's frame: where it starts and where a reader that
    /// applied it has reached.
    pub(crate) fn append(&self, changes: &[Change]) -> Result<Vec<Range<Position>>> {
        let records: Vec<&[u8]> = changes.iter().map(Change::bytes).collect();
        Ok(self.wal.append_batch(&records)?)
    }

    /// The changes from `position` (a record's start, or [`Log::end`]), in
    /// log order, decoded, each with its frame.
    pub(crate) fn changes_from(&self, position: Position) -> Result<Changes> {
        Ok(Changes {
            iter: self.wal.iter_from(position)?,
        })
    }

    /// Where the first change is (or will be).
    pub(crate) fn start(&self) -> Position {
        self.wal.start()
    }

    /// Where the next change will be appended.
    pub(crate) fn end(&self) -> Position {
        self.wal.end()
    }

    /// Makes every change appended so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        Ok(self.wal.sync()?)
    }

    /// The log's segment files as of now (`Wal::segments`).
    pub(crate) fn segments(&self) -> Result<Vec<peers_wal::SegmentInfo>> {
        Ok(self.wal.segments()?)
    }

    /// Bytes of one segment file (`Wal::read_segment`).
    pub(crate) fn read_segment(&self, base: u64, offset: u64, buffer: &mut [u8]) -> Result<()> {
        Ok(self.wal.read_segment(base, offset, buffer)?)
    }

    /// fsyncs since open (a statistic).
    pub(crate) fn fsync_count(&self) -> u64 {
        self.wal.fsync_count()
    }
}

/// The log's changes in order, from [`Log::changes_from`]: each with its
/// frame (where it starts, where a reader that applied it has reached).
pub(crate) struct Changes {
    iter: peers_wal::Iter,
}

impl Changes {
    /// The next record undecoded, with its frame: for a reader that decodes
    /// on other threads ([`decode_at`]).
    pub(crate) fn next_record(&mut self) -> Option<Result<(Range<Position>, Vec<u8>)>> {
        let (position, bytes) = match self.iter.next()? {
            Ok(record) => record,
            Err(error) => return Some(Err(error.into())),
        };
        let end = self.iter.frame_end().expect("a record was just read");
        Some(Ok((position..end, bytes)))
    }

    /// The records undecoded, as an iterator ([`Changes::next_record`]).
    pub(crate) fn records(
        &mut self,
    ) -> impl Iterator<Item = Result<(Range<Position>, Vec<u8>)>> + '_ {
        std::iter::from_fn(|| self.next_record())
    }
}

impl Iterator for Changes {
    type Item = Result<(Range<Position>, Change)>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_record()?.and_then(|(frame, bytes)| {
            let change = decode_at(frame.start, &bytes)?;
            Ok((frame, change))
        }))
    }
}

/// Decodes the record at `position`: one that does not decode is
/// [`Error::LogCorrupt`] there.
pub(crate) fn decode_at(position: Position, bytes: &[u8]) -> Result<Change> {
    Change::decode(bytes).map_err(|error| corrupt_at(position, Refusal::Malformed(error)))
}

/// The log at `position` holds what the rules refuse: a change that does
/// not decode, or one the engine accepted once and refuses now.
pub(crate) fn corrupt_at(position: Position, refusal: Refusal) -> Error {
    Error::LogCorrupt {
        position: position.0,
        reason: Box::new(refusal),
    }
}
