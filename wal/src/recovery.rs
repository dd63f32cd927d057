//! Recovery on open: list the segments, check every header and frame, cut a torn
//! tail off the last segment, and refuse anything else that is wrong.
//!
//! The policy (also in `docs/FORMAT.md`, "Recovery"):
//! - Bases must chain: each segment starts where the previous one ends.
//! - Only the last segment may end in a torn tail, which is cut (file truncated
//!   and fsynced) and reported. Torn means: fewer than 8 bytes left for a frame
//!   header, a frame running past the end of the file, or a checksum mismatch on a
//!   frame followed only by zero bytes (or by nothing).
//! - A last segment whose header is torn (shorter than 32 bytes, all zero bytes,
//!   or 32 bytes that are its expected header with some bytes zero) holds no
//!   record: it is removed and reported. The segment before it then gets
//!   no torn-tail allowance, because rotation fsyncs a segment before creating the
//!   next one.
//! - Everything else (a checksum mismatch followed by data, an oversized length
//!   within the file, any defect in an earlier segment) is [`Error::Corrupt`].
//! - What open reports is durable: the last segment and the directory (and the
//!   directory's entry in its parent) are fsynced before it returns.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptReason, Error};
use crate::format::{
    FRAME_HEADER_BYTES, FrameHeader, HEADER_BYTES, POSITION_MAX, RECORD_BYTES_MAX, SegmentHeader,
    SegmentName, parse_segment_file_name,
};
use crate::fs::Fs;
use crate::options::{OpenReport, Position, TornTail};
use crate::segment::{Segment, Syncer, create_dir_all, remove_file};

/// Read buffer for the sequential frame scan.
const SCAN_BUFFER_BYTES: usize = 256 * 1024;

/// Chunk size when checking that a file's remainder is all zero bytes.
const ZERO_CHECK_CHUNK_BYTES: u64 = 64 * 1024;

// Payload lengths (u32) are used as buffer lengths.
const _: () = assert!(usize::BITS >= u32::BITS);

/// The log as found (and repaired) on open.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// All segments in order, at least one. The last is open for appending.
    pub(crate) segments: Vec<Arc<Segment>>,
    /// Length of the last segment's file after recovery.
    pub(crate) last_len: u64,
    /// What was found.
    pub(crate) report: OpenReport,
}

/// Opens (or creates) the log in `dir` and checks it from the first byte to the last.
pub(crate) fn recover(fs: &dyn Fs, dir: &Path, syncer: &Syncer) -> Result<Recovered, Error> {
    ensure_dir(fs, dir, syncer)?;
    let mut listed = list_segments(fs, dir)?;
    let removed = remove_torn_last_segment(fs, dir, &mut listed, syncer)?;
    let removed_base = removed.as_ref().map(|(base, _)| *base);
    let mut torn_tail = removed.map(|(_, torn_tail)| torn_tail);
    if listed.is_empty() {
        // A fresh log, or one whose only segment was never completely created.
        let segment = Segment::create(fs, dir, removed_base.unwrap_or(0), syncer)?;
        return Ok(single_empty_segment(segment, torn_tail));
    }
    let last_index = listed.len() - 1;
    let mut segments = Vec::with_capacity(listed.len());
    let mut records = 0u64;
    let mut previous_end = None;
    let mut last_len = HEADER_BYTES;
    let mut end = 0;
    for (index, (base, path)) in listed.iter().enumerate() {
        let is_last = index == last_index;
        let tolerate_torn_tail = is_last && removed_base.is_none();
        let checked = check_segment(fs, path, *base, is_last, previous_end, tolerate_torn_tail)?;
        records += checked.scan.records;
        if checked.scan.valid_len < checked.file_len {
            torn_tail = Some(cut_torn_tail(&checked, syncer)?);
        }
        if is_last {
            // What was written before a crash of the process may still be only in
            // the page cache; make it durable before reporting it, as the caller
            // may act on it.
            syncer.sync_data(&checked.segment)?;
        }
        end = checked.segment.base + checked.scan.valid_len;
        previous_end = Some(end);
        last_len = checked.scan.valid_len;
        segments.push(Arc::new(checked.segment));
    }
    // The segments' names must be durable before they are reported: an earlier
    // rotation or open may have created the last one and failed before its
    // directory fsync.
    syncer.sync_dir(fs, dir)?;
    let report = OpenReport {
        torn_tail,
        segments: segments.len(),
        records,
        end: Position(end),
    };
    Ok(Recovered {
        segments,
        last_len,
        report,
    })
}

/// The result of recovering into a single new segment.
fn single_empty_segment(segment: Segment, torn_tail: Option<TornTail>) -> Recovered {
    let report = OpenReport {
        torn_tail,
        segments: 1,
        records: 0,
        end: Position(segment.base + HEADER_BYTES),
    };
    Recovered {
        segments: vec![Arc::new(segment)],
        last_len: HEADER_BYTES,
        report,
    }
}

/// Creates `dir` if missing, with any missing parents, then fsyncs the parent of
/// each directory it created (outermost first) and the parent of `dir` in any
/// case: an earlier open may have created `dir` and failed before that fsync.
fn ensure_dir(fs: &dyn Fs, dir: &Path, syncer: &Syncer) -> Result<(), Error> {
    let mut missing: Vec<&Path> = dir
        .ancestors()
        .filter(|ancestor| !ancestor.as_os_str().is_empty())
        .take_while(|ancestor| !fs.is_dir(ancestor))
        .collect();
    if missing.is_empty() {
        missing.push(dir);
    } else {
        create_dir_all(fs, dir)?;
    }
    for created in missing.iter().rev() {
        let parent = created
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        syncer.sync_dir(fs, parent)?;
    }
    Ok(())
}

/// The segment files in `dir`, sorted by base. Files not ending in `.wal` are
/// ignored; a `.wal` file with a malformed name is refused rather than ignored,
/// because it may be a segment someone renamed.
fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let names = fs.list_dir(dir).map_err(|source| Error::io(dir, source))?;
    let mut listed = Vec::new();
    for name in names {
        let path = dir.join(&name);
        match parse_segment_file_name(Path::new(&name)) {
            SegmentName::Other => {}
            SegmentName::Invalid => {
                return Err(Error::corrupt(&path, 0, CorruptReason::FileName));
            }
            SegmentName::Segment(base) => listed.push((base, path)),
        }
    }
    listed.sort_unstable_by_key(|(base, _)| *base);
    Ok(listed)
}

/// Removes the last segment if its header is torn: a crash while rotation was
/// creating it. Such a file holds no record. Returns its base and the report.
fn remove_torn_last_segment(
    fs: &dyn Fs,
    dir: &Path,
    listed: &mut Vec<(u64, PathBuf)>,
    syncer: &Syncer,
) -> Result<Option<(u64, TornTail)>, Error> {
    let Some((base, path)) = listed.last().cloned() else {
        return Ok(None);
    };
    let segment = Segment::open(fs, &path, base, false)?;
    let file_len = segment.file_len()?;
    let header_torn = file_len < HEADER_BYTES
        || zero_filled(&segment, 0, file_len)?
        || (file_len == HEADER_BYTES && header_partly_zero(&segment, base)?);
    if !header_torn {
        return Ok(None);
    }
    drop(segment);
    remove_file(fs, &path)?;
    syncer.sync_dir(fs, dir)?;
    tracing::warn!(
        segment = %path.display(),
        bytes_cut = file_len,
        "wal: removed a last segment with a torn header"
    );
    listed.pop();
    let torn_tail = TornTail {
        segment: path,
        offset: 0,
        bytes_cut: file_len,
        segment_removed: true,
    };
    Ok(Some((base, torn_tail)))
}

/// Whether the 32 bytes of a segment file are the header a segment with this
/// `base` starts with, except that some of them are zero: its creation was cut
/// before the header's fsync (the length reached the disk, not all of the data).
/// Rotation writes no frame before that fsync returns, so such a file holds no
/// record.
fn header_partly_zero(segment: &Segment, base: u64) -> Result<bool, Error> {
    let mut bytes = [0u8; HEADER_BYTES as usize];
    segment.read_exact_at(&mut bytes, 0)?;
    let expected = SegmentHeader { base }.encode();
    let consistent = bytes
        .iter()
        .zip(&expected)
        .all(|(byte, expected)| byte == expected || *byte == 0);
    Ok(consistent && bytes != expected)
}

/// A segment whose header and frames were checked.
#[derive(Debug)]
struct CheckedSegment {
    segment: Segment,
    file_len: u64,
    scan: Scan,
}

/// Opens a segment and checks its header, its place in the chain and its frames.
fn check_segment(
    fs: &dyn Fs,
    path: &Path,
    name_base: u64,
    writable: bool,
    previous_end: Option<u64>,
    tolerate_torn_tail: bool,
) -> Result<CheckedSegment, Error> {
    let segment = Segment::open(fs, path, name_base, writable)?;
    let file_len = segment.file_len()?;
    if file_len < HEADER_BYTES {
        let reason = CorruptReason::HeaderTruncated { bytes: file_len };
        return Err(Error::corrupt(path, 0, reason));
    }
    let mut header_bytes = [0u8; HEADER_BYTES as usize];
    segment.read_exact_at(&mut header_bytes, 0)?;
    let header = SegmentHeader::decode(&header_bytes, path)?;
    if let Some(reason) = check_placement(name_base, header.base, previous_end, file_len) {
        return Err(Error::corrupt(path, 0, reason));
    }
    let scan = scan_frames(&segment, file_len, tolerate_torn_tail)?;
    Ok(CheckedSegment {
        segment,
        file_len,
        scan,
    })
}

/// Checks that a segment's header agrees with its name, that it starts where the
/// previous segment ends, and that its positions are in range.
fn check_placement(
    name_base: u64,
    header_base: u64,
    previous_end: Option<u64>,
    file_len: u64,
) -> Option<CorruptReason> {
    if header_base != name_base {
        return Some(CorruptReason::BaseMismatch {
            name_base,
            header_base,
        });
    }
    if let Some(expected) = previous_end
        && expected != name_base
    {
        return Some(CorruptReason::BaseGap {
            expected,
            found: name_base,
        });
    }
    if name_base > POSITION_MAX || file_len > POSITION_MAX - name_base {
        return Some(CorruptReason::BaseOutOfRange { base: name_base });
    }
    None
}

/// What a frame scan found.
#[derive(Debug)]
struct Scan {
    /// Valid frames.
    records: u64,
    /// File offset just after the last valid frame. Less than the file length only
    /// if the rest is a torn tail.
    valid_len: u64,
}

/// Reads every frame after the header, checking lengths and checksums.
fn scan_frames(segment: &Segment, file_len: u64, tolerate_torn_tail: bool) -> Result<Scan, Error> {
    let io_error = |source| Error::io(&segment.path, source);
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_BYTES, segment.reader_at(HEADER_BYTES));
    let mut payload = Vec::new();
    let mut scan = Scan {
        records: 0,
        valid_len: HEADER_BYTES,
    };
    // Bounded: each pass consumes at least a frame header of the file, or stops.
    while scan.valid_len < file_len {
        let offset = scan.valid_len;
        match read_frame(&mut reader, offset, file_len, &mut payload).map_err(io_error)? {
            Frame::Valid { frame_bytes } => {
                scan.records += 1;
                scan.valid_len += frame_bytes;
            }
            Frame::Defect(defect) => {
                judge_defect(segment, offset, file_len, defect, tolerate_torn_tail)?;
                return Ok(scan);
            }
        }
    }
    debug_assert_eq!(scan.valid_len, file_len);
    Ok(scan)
}

/// One step of the frame scan.
#[derive(Debug)]
enum Frame {
    /// A frame whose checksum matched.
    Valid { frame_bytes: u64 },
    /// A frame that is not valid.
    Defect(Defect),
}

/// How a frame is not valid.
#[derive(Debug)]
enum Defect {
    /// Fewer bytes left than a frame header.
    ShortHeader { bytes_left: u64 },
    /// The length runs past the end of the file.
    PastEnd { bytes_needed: u64, bytes_left: u64 },
    /// The length is over the limit yet within the file.
    TooLarge { length: u32 },
    /// The checksum does not match; the frame ends at file offset `frame_end`.
    Checksum {
        reason: CorruptReason,
        frame_end: u64,
    },
}

/// Reads the frame at `offset` (where `reader` stands). The length is checked
/// against the bytes left and the limit before the payload buffer grows.
fn read_frame(
    reader: &mut impl Read,
    offset: u64,
    file_len: u64,
    payload: &mut Vec<u8>,
) -> std::io::Result<Frame> {
    let bytes_left = file_len - offset;
    if bytes_left < FRAME_HEADER_BYTES {
        return Ok(Frame::Defect(Defect::ShortHeader { bytes_left }));
    }
    let mut header_bytes = [0u8; FRAME_HEADER_BYTES as usize];
    reader.read_exact(&mut header_bytes)?;
    let header = FrameHeader::decode(&header_bytes);
    let frame_bytes = header.frame_bytes();
    if frame_bytes > bytes_left {
        let defect = Defect::PastEnd {
            bytes_needed: frame_bytes,
            bytes_left,
        };
        return Ok(Frame::Defect(defect));
    }
    if header.length > RECORD_BYTES_MAX {
        let length = header.length;
        return Ok(Frame::Defect(Defect::TooLarge { length }));
    }
    payload.resize(header.length as usize, 0);
    reader.read_exact(payload)?;
    match header.check(payload) {
        Ok(()) => Ok(Frame::Valid { frame_bytes }),
        Err(reason) => {
            let frame_end = offset + frame_bytes;
            Ok(Frame::Defect(Defect::Checksum { reason, frame_end }))
        }
    }
}

/// Decides whether a defect at `offset` is a torn tail (returns `Ok`, the caller
/// cuts there) or corruption.
fn judge_defect(
    segment: &Segment,
    offset: u64,
    file_len: u64,
    defect: Defect,
    tolerate_torn_tail: bool,
) -> Result<(), Error> {
    let torn = match defect {
        Defect::ShortHeader { .. } | Defect::PastEnd { .. } => true,
        Defect::TooLarge { .. } => false,
        // A write that was cut short can leave a whole frame header and a file
        // extended with zeros; data after the frame means it was not the tail.
        Defect::Checksum { frame_end, .. } => zero_filled(segment, frame_end, file_len)?,
    };
    if torn && tolerate_torn_tail {
        return Ok(());
    }
    let reason = match defect {
        Defect::ShortHeader { bytes_left } => CorruptReason::FrameTruncated {
            bytes_needed: FRAME_HEADER_BYTES,
            bytes_left,
        },
        Defect::PastEnd {
            bytes_needed,
            bytes_left,
        } => CorruptReason::FrameTruncated {
            bytes_needed,
            bytes_left,
        },
        Defect::TooLarge { length } => CorruptReason::LengthTooLarge {
            length,
            max: RECORD_BYTES_MAX,
        },
        Defect::Checksum { reason, .. } => reason,
    };
    Err(Error::corrupt(&segment.path, offset, reason))
}

/// Whether the file bytes in `from..to` are all zero (true when empty).
fn zero_filled(segment: &Segment, from: u64, to: u64) -> Result<bool, Error> {
    let mut buffer = vec![0u8; ZERO_CHECK_CHUNK_BYTES.min(to.saturating_sub(from)) as usize];
    let mut offset = from;
    // Bounded: each pass advances by a non-empty chunk.
    while offset < to {
        let chunk_bytes = (to - offset).min(ZERO_CHECK_CHUNK_BYTES);
        let chunk = &mut buffer[..chunk_bytes as usize];
        segment.read_exact_at(chunk, offset)?;
        if chunk.iter().any(|byte| *byte != 0) {
            return Ok(false);
        }
        offset += chunk_bytes;
    }
    Ok(true)
}

/// Truncates the last segment after its last valid frame, fsyncs, and reports.
fn cut_torn_tail(checked: &CheckedSegment, syncer: &Syncer) -> Result<TornTail, Error> {
    let segment = &checked.segment;
    let offset = checked.scan.valid_len;
    let bytes_cut = checked.file_len - offset;
    segment.set_len(offset)?;
    syncer.sync_all(segment)?;
    tracing::warn!(
        segment = %segment.path.display(),
        offset,
        bytes_cut,
        "wal: cut a torn tail off the last segment"
    );
    Ok(TornTail {
        segment: segment.path.clone(),
        offset,
        bytes_cut,
        segment_removed: false,
    })
}
