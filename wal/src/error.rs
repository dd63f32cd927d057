//! The wal's one error enum.
//!
//! Corruption and refusals carry fields (segment, offset, stored and computed
//! checksums, limits) rather than a message, so an embedder can match on them.

use std::path::PathBuf;

use crate::options::Position;

/// Everything that can go wrong in the wal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a file or directory failed.
    #[error("wal I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A segment holds bytes that are not a valid segment or frame, at a place where
    /// the recovery policy does not allow cutting them as a torn tail.
    #[error("corrupt wal segment {} at offset {offset}: {reason}", segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset in the segment file of the header or frame found bad.
        offset: u64,
        /// What is wrong.
        reason: CorruptReason,
    },

    /// A segment file does not start with the magic bytes `PEERSWAL`.
    #[error("{} is not a wal segment (bad magic)", segment.display())]
    BadMagic {
        /// The segment file.
        segment: PathBuf,
    },

    /// A segment was written in a format version this build cannot read.
    #[error(
        "wal segment {} has format version {found}; this build reads version {supported}",
        segment.display()
    )]
    UnsupportedVersion {
        /// The segment file.
        segment: PathBuf,
        /// The version in the segment header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// A record is longer than [`RECORD_BYTES_MAX`](crate::RECORD_BYTES_MAX); nothing
    /// was written.
    #[error("wal record of {bytes} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Length of the refused record.
        bytes: u64,
        /// The limit.
        max: u32,
    },

    /// An earlier write or fsync failed, so what is on disk is unknown: the log
    /// refuses all work until it is reopened (which re-checks the files).
    #[error("wal is poisoned by an earlier write or fsync failure; reopen it")]
    Poisoned,

    /// No record frame starts at this position.
    #[error("no wal record at position {position}")]
    InvalidPosition {
        /// The position asked for.
        position: Position,
    },
}

/// Why a segment was found corrupt (see [`Error::Corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptReason {
    /// A file ending in `.wal` whose name is not `{base:020}.wal`.
    #[error("file name is not a segment name (20 decimal digits then .wal)")]
    FileName,
    /// A segment that is not the last one is shorter than a segment header.
    #[error("segment header is truncated: {bytes} of 32 bytes")]
    HeaderTruncated {
        /// Length of the file.
        bytes: u64,
    },
    /// The segment header's checksum does not match its bytes.
    #[error("segment header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksumMismatch {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum of the header bytes as read.
        computed: u32,
    },
    /// The header has flag bits this version does not define.
    #[error("segment header has unknown flags {flags:#010x}")]
    UnknownFlags {
        /// The flags field.
        flags: u32,
    },
    /// The header's reserved field is not zero.
    #[error("segment header reserved field is {reserved:#010x}, not zero")]
    ReservedNotZero {
        /// The reserved field.
        reserved: u32,
    },
    /// The base in the header differs from the base in the file name.
    #[error("segment header base {header_base} differs from the file name's base {name_base}")]
    BaseMismatch {
        /// Base parsed from the file name.
        name_base: u64,
        /// Base stored in the header.
        header_base: u64,
    },
    /// A segment does not start where the previous one ends (a segment is missing
    /// or was cut short).
    #[error("segment base {found} does not follow the previous segment, which ends at {expected}")]
    BaseGap {
        /// End position of the previous segment.
        expected: u64,
        /// Base of this segment.
        found: u64,
    },
    /// The segment's base plus its length is beyond the largest position the wal uses.
    #[error("segment base {base} is out of range")]
    BaseOutOfRange {
        /// Base of the segment.
        base: u64,
    },
    /// A frame runs past the end of a segment that is not the last one.
    #[error("frame truncated: needs {bytes_needed} bytes, {bytes_left} left in the segment")]
    FrameTruncated {
        /// Bytes the frame needs (frame header, then header and payload).
        bytes_needed: u64,
        /// Bytes left in the segment from the frame's start.
        bytes_left: u64,
    },
    /// A frame's length field is larger than
    /// [`RECORD_BYTES_MAX`](crate::RECORD_BYTES_MAX).
    #[error("record length {length} exceeds the limit of {max} bytes")]
    LengthTooLarge {
        /// The length field.
        length: u32,
        /// The limit.
        max: u32,
    },
    /// A frame's checksum does not match its length and payload.
    #[error("record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// Checksum stored in the frame.
        stored: u32,
        /// Checksum of the length and payload as read.
        computed: u32,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A corruption error in `segment` at `offset`.
    pub(crate) fn corrupt(segment: &std::path::Path, offset: u64, reason: CorruptReason) -> Self {
        Self::Corrupt {
            segment: segment.to_path_buf(),
            offset,
            reason,
        }
    }
}
