//! Peers write-ahead log: an append-only log of byte records in segment files.
//!
//! The wal knows nothing of what it stores. Each record is framed as
//! `length | crc32c | payload` and appended to the current segment file; segments
//! rotate by size. A record is addressed by its [`Position`], the logical byte
//! offset of its frame in the whole log, which stays valid for the life of the log.
//!
//! - **Durability.** With [`SyncMode::Always`] (the default) [`Wal::append`] returns
//!   only after an fsync covers the record. Concurrent appenders share fsyncs (group
//!   commit): one fsync covers every append whose write finished before it began.
//! - **Recovery.** [`Wal::open`] checks every frame of every segment. A torn tail in
//!   the last segment (the trace of a crash mid-append) is cut and reported in
//!   [`OpenReport::torn_tail`]; any other damage is [`Error::Corrupt`], never skipped.
//! - **Failure.** A failed write or fsync poisons the log: every later call returns
//!   [`Error::Poisoned`] until it is reopened. An fsync is never retried. Before
//!   poisoning, the last segment is cut back to the bytes known good (the end of
//!   the last complete write, or of the last successful fsync), so a reopen does
//!   not report a record whose append failed.
//!
//! Features for tests: `failpoints` adds fail points on every write, fsync,
//! creation, truncation and removal ([`FAIL_POINTS`]); `testing` adds
//! `peers_wal::testing`, a simulated disk that loses what was not fsynced when
//! the power is cut. `docs/RELIABILITY.md` lists the guarantees and their tests.
//!
//! The byte layout is specified in `docs/FORMAT.md`.
//!
//! ```no_run
//! # fn main() -> Result<(), peers_wal::Error> {
//! use peers_wal::{Options, Wal};
//!
//! let (wal, report) = Wal::open(std::path::Path::new("log"), Options::default())?;
//! assert!(report.torn_tail.is_none());
//! let position = wal.append(b"hello")?;
//! assert_eq!(wal.read_at(position)?, b"hello");
//! for record in wal.iter_from(wal.start())? {
//!     let (_position, _payload) = record?;
//! }
//! # Ok(())
//! # }
//! ```

mod error;
mod fault;
mod format;
mod fs;
mod options;
mod read;
mod recovery;
mod segment;
#[cfg(feature = "testing")]
pub mod testing;
mod wal;

pub use crate::error::{CorruptReason, Error};
pub use crate::fault::FAIL_POINTS;
#[cfg(feature = "failpoints")]
pub use crate::fault::hits as fail_point_hits;
pub use crate::format::{BATCH_BYTES_MAX, FORMAT_VERSION, RECORD_BYTES_MAX, frame_crc};
pub use crate::options::{OpenReport, Options, Position, SegmentInfo, SyncMode, TornTail};
pub use crate::read::Iter;
pub use crate::wal::Wal;
