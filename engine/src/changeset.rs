//! Change-set files: what `peers export` writes and `peers import` reads.
//!
//! Format (docs/FORMAT.md "Change-set file"), integers little endian:
//! `magic "PEERSSET" | version u32 | database id [32] | record* | end`
//! where `record = length u32 (1..=CHANGE_BYTES_MAX) | change bytes` and
//! `end = length 0 u32 | record count u64`. The end marker makes a file cut
//! at a record boundary detectable. Changes carry their own hash and
//! signature, so records have no checksum of their own.

use std::io::{Read, Write};

use crate::change::{CHANGE_BYTES_MAX, Change, DatabaseId};

/// File magic.
pub const CHANGE_SET_MAGIC: &[u8; 8] = b"PEERSSET";
/// Version of the change-set file format.
pub const CHANGE_SET_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 32;

/// Why a change-set file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeSetError {
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Not a change-set file.
    #[error("not a Peers change-set file (bad magic)")]
    BadMagic,
    /// A version this build does not read.
    #[error("change-set version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// In the file.
        found: u32,
        /// This build's.
        supported: u32,
    },
    /// A record length over the change limit.
    #[error("record {index} claims {bytes} bytes, over the limit of {max}")]
    RecordTooLarge {
        /// Record number (0-based).
        index: u64,
        /// Claimed length.
        bytes: u32,
        /// The limit.
        max: usize,
    },
    /// The file ends before its end marker.
    #[error("file is truncated after {records} records")]
    Truncated {
        /// Records read completely.
        records: u64,
    },
    /// The end marker's count disagrees with the records read.
    #[error("end marker says {expected} records, file holds {actual}")]
    CountMismatch {
        /// From the marker.
        expected: u64,
        /// Read.
        actual: u64,
    },
    /// Bytes after the end marker.
    #[error("bytes after the end marker")]
    TrailingBytes,
}

/// Writes a change-set file.
pub struct ChangeSetWriter<W: Write> {
    out: W,
    records: u64,
}

impl<W: Write> ChangeSetWriter<W> {
    /// Writes the header.
    pub fn new(mut out: W, database: DatabaseId) -> Result<Self, ChangeSetError> {
        out.write_all(CHANGE_SET_MAGIC)?;
        out.write_all(&CHANGE_SET_VERSION.to_le_bytes())?;
        out.write_all(&database.0)?;
        Ok(ChangeSetWriter { out, records: 0 })
    }

    /// Appends one change.
    pub fn write(&mut self, change: &Change) -> Result<(), ChangeSetError> {
        let length =
            u32::try_from(change.bytes().len()).expect("changes are at most CHANGE_BYTES_MAX");
        self.out.write_all(&length.to_le_bytes())?;
        self.out.write_all(change.bytes())?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end marker and returns the writer.
    pub fn finish(mut self) -> Result<W, ChangeSetError> {
        self.out.write_all(&0u32.to_le_bytes())?;
        self.out.write_all(&self.records.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// Reads a change-set file record by record, in bounded memory.
pub struct ChangeSetReader<R: Read> {
    input: R,
    database: DatabaseId,
    records: u64,
    bytes_read: u64,
    done: bool,
}

impl<R: Read> ChangeSetReader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Self, ChangeSetError> {
        let mut header = [0u8; HEADER_BYTES];
        read_exact_or(&mut input, &mut header, ChangeSetError::BadMagic)?;
        if &header[..8] != CHANGE_SET_MAGIC {
            return Err(ChangeSetError::BadMagic);
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != CHANGE_SET_VERSION {
            return Err(ChangeSetError::UnsupportedVersion {
                found: version,
                supported: CHANGE_SET_VERSION,
            });
        }
        let database = DatabaseId(header[12..44].try_into().expect("32 bytes"));
        Ok(ChangeSetReader {
            input,
            database,
            records: 0,
            bytes_read: HEADER_BYTES as u64,
            done: false,
        })
    }

    /// The database the file says it holds changes of.
    pub fn database(&self) -> DatabaseId {
        self.database
    }

    /// Bytes consumed so far (for progress).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    fn next_record(&mut self) -> Result<Option<Vec<u8>>, ChangeSetError> {
        let truncated = ChangeSetError::Truncated {
            records: self.records,
        };
        let mut length = [0u8; 4];
        read_exact_or(&mut self.input, &mut length, truncated)?;
        let length = u32::from_le_bytes(length);
        if length == 0 {
            return self.read_end().map(|()| None);
        }
        if usize::try_from(length).map_or(true, |bytes| bytes > CHANGE_BYTES_MAX) {
            return Err(ChangeSetError::RecordTooLarge {
                index: self.records,
                bytes: length,
                max: CHANGE_BYTES_MAX,
            });
        }
        let mut record = vec![0u8; length as usize];
        read_exact_or(
            &mut self.input,
            &mut record,
            ChangeSetError::Truncated {
                records: self.records,
            },
        )?;
        self.records += 1;
        self.bytes_read += 4 + u64::from(length);
        Ok(Some(record))
    }

    fn read_end(&mut self) -> Result<(), ChangeSetError> {
        let mut count = [0u8; 8];
        read_exact_or(
            &mut self.input,
            &mut count,
            ChangeSetError::Truncated {
                records: self.records,
            },
        )?;
        let expected = u64::from_le_bytes(count);
        if expected != self.records {
            return Err(ChangeSetError::CountMismatch {
                expected,
                actual: self.records,
            });
        }
        let mut extra = [0u8; 1];
        if self.input.read(&mut extra)? != 0 {
            return Err(ChangeSetError::TrailingBytes);
        }
        self.bytes_read += 12;
        Ok(())
    }
}

impl<R: Read> Iterator for ChangeSetReader<R> {
    type Item = Result<Vec<u8>, ChangeSetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

fn read_exact_or<R: Read>(
    input: &mut R,
    buffer: &mut [u8],
    on_eof: ChangeSetError,
) -> Result<(), ChangeSetError> {
    match input.read_exact(buffer) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Err(on_eof),
        Err(error) => Err(ChangeSetError::Io(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(records: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(CHANGE_SET_MAGIC);
        bytes.extend_from_slice(&CHANGE_SET_VERSION.to_le_bytes());
        bytes.extend_from_slice(&[9; 32]);
        for record in records {
            bytes.extend_from_slice(&(record.len() as u32).to_le_bytes());
            bytes.extend_from_slice(record);
        }
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(records.len() as u64).to_le_bytes());
        bytes
    }

    /// Records come back in order, and the end marker is checked.
    #[test]
    fn reads_records() {
        let bytes = file_with(&[b"one", b"two"]);
        let reader = ChangeSetReader::new(bytes.as_slice()).expect("header");
        assert_eq!(reader.database(), DatabaseId([9; 32]));
        let records: Vec<Vec<u8>> = reader.collect::<Result<_, _>>().expect("reads");
        assert_eq!(records, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    /// A file cut anywhere is an error, never a shorter success.
    #[test]
    fn every_truncation_is_detected() {
        let bytes = file_with(&[b"one", b"two"]);
        for cut in 0..bytes.len() {
            let result = ChangeSetReader::new(&bytes[..cut])
                .and_then(|reader| reader.collect::<Result<Vec<_>, _>>());
            assert!(result.is_err(), "cut at {cut} went unnoticed");
        }
    }

    /// A hostile length is refused before anything is allocated for it.
    #[test]
    fn oversized_record_refused() {
        let mut bytes = file_with(&[]);
        bytes.truncate(HEADER_BYTES);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut reader = ChangeSetReader::new(bytes.as_slice()).expect("header");
        assert!(matches!(
            reader.next(),
            Some(Err(ChangeSetError::RecordTooLarge { .. }))
        ));
        assert!(reader.next().is_none());
    }
}
