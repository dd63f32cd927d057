//! Byte layout of segment files: the header, the record frame, and file names.
//!
//! This module is the only place that knows byte offsets; `docs/FORMAT.md` is
//! its specification. All integers are little-endian.
//!
//! ```text
//! segment header (32 bytes):
//!   { magic "PEERSWAL" | version u32 | flags u32 | base u64 | crc32c(bytes 0..24) u32 | reserved u32 }
//! record frame (8 + length bytes):
//!   { length u32 | crc32c(length bytes || payload) u32 | payload }
//! ```

use std::path::Path;

use crate::error::{CorruptReason, Error};

/// Format version written in every segment header; the only version this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// Largest record payload, in bytes. Checked before writing and before allocating
/// on read.
pub const RECORD_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// Largest total of frame bytes (8-byte frame headers plus payloads) written
/// with one write: [`Wal::append_batch`](crate::Wal::append_batch) splits a
/// larger batch into writes of at most this many bytes (one buffer each).
pub const BATCH_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Magic bytes at the start of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"PEERSWAL";

/// Bytes of a segment header.
pub(crate) const HEADER_BYTES: u64 = 32;

/// Bytes of a frame header (length and checksum) before the payload.
pub(crate) const FRAME_HEADER_BYTES: u64 = 8;

/// Largest position (and so largest segment base plus length) the wal accepts.
/// 4 EiB: far beyond any real log, and low enough that adding a batch to any valid
/// position cannot overflow a `u64`.
pub(crate) const POSITION_MAX: u64 = 1 << 62;

/// File name extension of segment files.
pub(crate) const SEGMENT_EXTENSION: &str = "wal";

/// Decimal digits of the base in a segment file name.
const SEGMENT_NAME_DIGITS: usize = 20;

// Offsets of the header fields.
const HEADER_MAGIC_OFFSET: usize = 0;
const HEADER_VERSION_OFFSET: usize = 8;
const HEADER_FLAGS_OFFSET: usize = 12;
const HEADER_BASE_OFFSET: usize = 16;
const HEADER_CRC_OFFSET: usize = 24;
const HEADER_RESERVED_OFFSET: usize = 28;
const HEADER_BYTES_USIZE: usize = 32;

// Offsets of the frame header fields.
const FRAME_LENGTH_OFFSET: usize = 0;
const FRAME_CRC_OFFSET: usize = 4;
const FRAME_HEADER_BYTES_USIZE: usize = 8;

const _: () = assert!(HEADER_BYTES as usize == HEADER_BYTES_USIZE);
const _: () = assert!(HEADER_RESERVED_OFFSET + 4 == HEADER_BYTES_USIZE);
const _: () = assert!(FRAME_HEADER_BYTES as usize == FRAME_HEADER_BYTES_USIZE);
const _: () = assert!(FRAME_CRC_OFFSET + 4 == FRAME_HEADER_BYTES_USIZE);
// Any single valid record must fit in a batch.
const _: () = assert!(RECORD_BYTES_MAX as u64 + FRAME_HEADER_BYTES <= BATCH_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX < POSITION_MAX);

/// The decoded header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Logical position of the segment file's first byte.
    pub(crate) base: u64,
}

impl SegmentHeader {
    /// Encodes the header with the current format version and no flags.
    pub(crate) fn encode(&self) -> [u8; HEADER_BYTES_USIZE] {
        let mut bytes = [0u8; HEADER_BYTES_USIZE];
        bytes[HEADER_MAGIC_OFFSET..HEADER_VERSION_OFFSET].copy_from_slice(&MAGIC);
        put_u32(&mut bytes, HEADER_VERSION_OFFSET, FORMAT_VERSION);
        put_u32(&mut bytes, HEADER_FLAGS_OFFSET, 0);
        bytes[HEADER_BASE_OFFSET..HEADER_CRC_OFFSET].copy_from_slice(&self.base.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..HEADER_CRC_OFFSET]);
        put_u32(&mut bytes, HEADER_CRC_OFFSET, crc);
        put_u32(&mut bytes, HEADER_RESERVED_OFFSET, 0);
        bytes
    }

    /// Decodes and checks a header read from `segment`.
    ///
    /// Checks, in order: magic, version (before the checksum, because a later
    /// version may lay out or checksum its header differently), checksum, flags,
    /// reserved field.
    pub(crate) fn decode(bytes: &[u8; HEADER_BYTES_USIZE], segment: &Path) -> Result<Self, Error> {
        if bytes[HEADER_MAGIC_OFFSET..HEADER_VERSION_OFFSET] != MAGIC {
            return Err(Error::BadMagic {
                segment: segment.to_path_buf(),
            });
        }
        let version = get_u32(bytes, HEADER_VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                segment: segment.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let stored = get_u32(bytes, HEADER_CRC_OFFSET);
        let computed = crc32c::crc32c(&bytes[..HEADER_CRC_OFFSET]);
        if stored != computed {
            let reason = CorruptReason::HeaderChecksumMismatch { stored, computed };
            return Err(Error::corrupt(segment, 0, reason));
        }
        let flags = get_u32(bytes, HEADER_FLAGS_OFFSET);
        if flags != 0 {
            let reason = CorruptReason::UnknownFlags { flags };
            return Err(Error::corrupt(segment, 0, reason));
        }
        let reserved = get_u32(bytes, HEADER_RESERVED_OFFSET);
        if reserved != 0 {
            let reason = CorruptReason::ReservedNotZero { reserved };
            return Err(Error::corrupt(segment, 0, reason));
        }
        let base = get_u64(bytes, HEADER_BASE_OFFSET);
        Ok(Self { base })
    }
}

/// The decoded header of a record frame. Not yet checked: see [`FrameHeader::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Payload bytes, as stored.
    pub(crate) length: u32,
    /// Checksum of the length bytes and the payload, as stored.
    pub(crate) crc: u32,
}

impl FrameHeader {
    /// Decodes the 8 bytes in front of a payload.
    pub(crate) fn decode(bytes: &[u8; FRAME_HEADER_BYTES_USIZE]) -> Self {
        Self {
            length: get_u32(bytes, FRAME_LENGTH_OFFSET),
            crc: get_u32(bytes, FRAME_CRC_OFFSET),
        }
    }

    /// Bytes of the whole frame: header and payload.
    pub(crate) fn frame_bytes(&self) -> u64 {
        FRAME_HEADER_BYTES + u64::from(self.length)
    }

    /// Checks the payload read for this header against the stored checksum.
    pub(crate) fn check(&self, payload: &[u8]) -> Result<(), CorruptReason> {
        debug_assert_eq!(payload.len() as u64, u64::from(self.length));
        let computed = frame_crc(self.length, payload);
        if computed == self.crc {
            Ok(())
        } else {
            Err(CorruptReason::ChecksumMismatch {
                stored: self.crc,
                computed,
            })
        }
    }
}

/// The frame checksum: crc32c over the 4 length bytes, then the payload.
/// The snapshot file's blocks use it too (docs/FORMAT.md "Snapshot file").
pub fn frame_crc(length: u32, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&length.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Checks a record's length against [`RECORD_BYTES_MAX`] and returns its frame
/// bytes.
pub(crate) fn record_frame_bytes(record: &[u8]) -> Result<u64, Error> {
    let bytes = u64::try_from(record.len()).unwrap_or(u64::MAX);
    if bytes > u64::from(RECORD_BYTES_MAX) {
        return Err(Error::RecordTooLarge {
            bytes,
            max: RECORD_BYTES_MAX,
        });
    }
    Ok(FRAME_HEADER_BYTES + bytes)
}

/// Appends the frame of `record` to `out`.
///
/// # Panics
/// If the record is longer than [`RECORD_BYTES_MAX`]: callers check with
/// [`record_frame_bytes`] first.
pub(crate) fn encode_frame(record: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(record.len()).unwrap_or(u32::MAX);
    assert!(
        length <= RECORD_BYTES_MAX,
        "record length checked by the caller"
    );
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&frame_crc(length, record).to_le_bytes());
    out.extend_from_slice(record);
}

/// What a directory entry's name says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentName {
    /// Not a `.wal` file: not the wal's business.
    Other,
    /// A `.wal` file whose name is not `{base:020}.wal`.
    Invalid,
    /// A segment with this base.
    Segment(u64),
}

/// The file name of the segment starting at `base`.
pub(crate) fn segment_file_name(base: u64) -> String {
    format!(
        "{base:0width$}.{SEGMENT_EXTENSION}",
        width = SEGMENT_NAME_DIGITS
    )
}

/// Classifies a directory entry's file name.
pub(crate) fn parse_segment_file_name(name: &Path) -> SegmentName {
    if name.extension().and_then(|extension| extension.to_str()) != Some(SEGMENT_EXTENSION) {
        return SegmentName::Other;
    }
    let Some(stem) = name.file_stem().and_then(|stem| stem.to_str()) else {
        return SegmentName::Invalid;
    };
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return SegmentName::Invalid;
    }
    match stem.parse::<u64>() {
        Ok(base) => SegmentName::Segment(base),
        Err(_) => SegmentName::Invalid,
    }
}

fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn get_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

fn get_u64(bytes: &[u8], offset: usize) -> u64 {
    let low = u64::from(get_u32(bytes, offset));
    let high = u64::from(get_u32(bytes, offset + 4));
    low | (high << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of docs/FORMAT.md: a segment with base 0 holding the
    /// records b"hello" and b"". Guards the byte layout against silent change.
    const VECTOR_HEX: &str = concat!(
        "504545525357414c", // magic "PEERSWAL"
        "01000000",         // version 1
        "00000000",         // flags 0
        "0000000000000000", // base 0
        "789617c5",         // crc32c of the 24 bytes above
        "00000000",         // reserved
        "05000000",         // frame 1 (position 32): length 5
        "a1b1174e",         // crc32c(05000000 68656c6c6f)
        "68656c6c6f",       // "hello"
        "00000000",         // frame 2 (position 45): length 0
        "c74b6748",         // crc32c(00000000)
    );

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn vector_bytes() -> Vec<u8> {
        let mut bytes = SegmentHeader { base: 0 }.encode().to_vec();
        encode_frame(b"hello", &mut bytes);
        encode_frame(b"", &mut bytes);
        bytes
    }

    // Guards the documented test vector: these exact bytes are the format.
    #[test]
    fn test_vector_matches_format_doc() {
        assert_eq!(hex(&vector_bytes()), VECTOR_HEX);
    }

    // Guards the crc32c variant: the standard check value of CRC-32C (Castagnoli).
    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    // Guards encode/decode symmetry of the segment header.
    #[test]
    fn header_round_trip() {
        let path = Path::new("x.wal");
        for base in [0, 32, 1 << 40, POSITION_MAX] {
            let header = SegmentHeader { base };
            let decoded = SegmentHeader::decode(&header.encode(), path);
            assert_eq!(decoded.ok(), Some(header));
        }
    }

    // Guards that every flipped header byte is refused, never misread.
    #[test]
    fn header_flipped_byte_is_refused() {
        let path = Path::new("x.wal");
        let bytes = SegmentHeader { base: 1234 }.encode();
        for index in 0..HEADER_BYTES_USIZE {
            let mut flipped = bytes;
            flipped[index] ^= 0x01;
            let result = SegmentHeader::decode(&flipped, path);
            match index {
                0..8 => assert!(matches!(result, Err(Error::BadMagic { .. }))),
                8..12 => assert!(matches!(result, Err(Error::UnsupportedVersion { .. }))),
                _ => assert!(matches!(result, Err(Error::Corrupt { offset: 0, .. }))),
            }
        }
    }

    // Guards encode/decode symmetry of the frame and its checksum check.
    #[test]
    fn frame_round_trip() {
        let mut bytes = Vec::new();
        encode_frame(b"payload", &mut bytes);
        let mut header_bytes = [0u8; FRAME_HEADER_BYTES_USIZE];
        header_bytes.copy_from_slice(&bytes[..FRAME_HEADER_BYTES_USIZE]);
        let header = FrameHeader::decode(&header_bytes);
        assert_eq!(header.length, 7);
        assert_eq!(header.frame_bytes(), bytes.len() as u64);
        assert_eq!(header.check(&bytes[FRAME_HEADER_BYTES_USIZE..]), Ok(()));
    }

    // Guards that a flipped bit anywhere in a frame fails its checksum.
    #[test]
    fn frame_flipped_byte_fails_checksum() {
        let mut bytes = Vec::new();
        encode_frame(b"payload", &mut bytes);
        for index in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[index] ^= 0x10;
            let mut header_bytes = [0u8; FRAME_HEADER_BYTES_USIZE];
            header_bytes.copy_from_slice(&flipped[..FRAME_HEADER_BYTES_USIZE]);
            let header = FrameHeader::decode(&header_bytes);
            if header.length != 7 {
                continue; // a flipped length is caught by bounds, not the checksum
            }
            let result = header.check(&flipped[FRAME_HEADER_BYTES_USIZE..]);
            assert!(matches!(
                result,
                Err(CorruptReason::ChecksumMismatch { .. })
            ));
        }
    }

    // Guards the file naming scheme and that foreign files are told apart.
    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(0), "00000000000000000000.wal");
        assert_eq!(segment_file_name(u64::MAX), "18446744073709551615.wal");
        let parse = |name: &str| parse_segment_file_name(Path::new(name));
        assert_eq!(
            parse("00000000000000004096.wal"),
            SegmentName::Segment(4096)
        );
        assert_eq!(
            parse("18446744073709551615.wal"),
            SegmentName::Segment(u64::MAX)
        );
        assert_eq!(parse("99999999999999999999.wal"), SegmentName::Invalid);
        assert_eq!(parse("4096.wal"), SegmentName::Invalid);
        assert_eq!(parse("0000000000000000409a.wal"), SegmentName::Invalid);
        assert_eq!(parse("00000000000000004096.tmp"), SegmentName::Other);
        assert_eq!(parse("LOCK"), SegmentName::Other);
    }
}
