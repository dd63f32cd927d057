//! Fail points on the wal's I/O paths (feature `failpoints`, the `fail` crate).
//!
//! Each point sits where the wal calls the file system and, when configured with
//! `fail::cfg(name, "return")`, makes that call fail with ENOSPC instead;
//! `return(5)` picks another errno (here EIO). Without the feature the points
//! compile to nothing.
//!
//! | Point                | Operation that fails                                         |
//! |----------------------|--------------------------------------------------------------|
//! | `wal::write`         | a write of frames or of a segment header, before any byte    |
//! | `wal::short-write`   | the same write after part of the bytes (`return(n)`: `n` bytes, default half) |
//! | `wal::fsync`         | fdatasync/fsync of a segment file (appends, rotation, recovery) |
//! | `wal::dir-sync`      | fsync of the log directory or of its parent                  |
//! | `wal::segment-create`| creating a segment file                                      |
//! | `wal::create-dir`    | creating the log directory                                   |
//! | `wal::truncate`      | truncating a segment (a torn tail on open, or undoing a failed write or fsync) |
//! | `wal::remove`        | removing a last segment whose header is torn, on open        |
//!
//! [`hits`] counts how often each point fired, so tests can show their coverage.

/// Every fail point of the wal, in the order of the table above.
pub const FAIL_POINTS: [&str; 8] = [
    "wal::write",
    "wal::short-write",
    "wal::fsync",
    "wal::dir-sync",
    "wal::segment-create",
    "wal::create-dir",
    "wal::truncate",
    "wal::remove",
];

/// Returns early from the enclosing function (which returns `std::io::Result`)
/// with the injected error if the fail point `$point` is configured.
macro_rules! fail_io {
    ($point:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($point, |argument| Err($crate::fault::injected(
            $point, argument
        )));
    };
}
pub(crate) use fail_io;

#[cfg(feature = "failpoints")]
mod enabled {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// Hits per point since the process started.
    static HITS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

    /// ENOSPC, the default injected error.
    const ENOSPC: i32 = 28;

    /// Counts a hit of `point` and returns its error: the errno in `argument`,
    /// or ENOSPC.
    pub(crate) fn injected(point: &'static str, argument: Option<String>) -> std::io::Error {
        let errno = argument
            .and_then(|argument| argument.parse().ok())
            .unwrap_or(ENOSPC);
        let mut hits = HITS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *hits.entry(point).or_default() += 1;
        std::io::Error::from_raw_os_error(errno)
    }

    /// How often each fail point fired in this process (every point of
    /// [`FAIL_POINTS`](super::FAIL_POINTS), zeros included).
    pub fn hits() -> Vec<(&'static str, u64)> {
        let hits = HITS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        super::FAIL_POINTS
            .iter()
            .map(|point| (*point, hits.get(point).copied().unwrap_or(0)))
            .collect()
    }
}

#[cfg(feature = "failpoints")]
pub use enabled::hits;
#[cfg(feature = "failpoints")]
pub(crate) use enabled::injected;
