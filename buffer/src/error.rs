//! The buffer's errors: what is wrong with an envelope, with a frame, and
//! with an operation.

use crate::format::Refused;

/// What is wrong with one envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeFault {
    /// Not a padded size plus the overhead, or out of bounds.
    #[error("{bytes} bytes is not an envelope's size")]
    Size {
        /// Its size.
        bytes: usize,
    },
    /// Does not start with the envelope magic.
    #[error("not a peers buffer envelope (bad magic)")]
    BadMagic,
    /// Another format version.
    #[error(
        "buffer format version {found}, this build reads {}",
        crate::BUFFER_FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The version it claims.
        found: u32,
    },
    /// Authentication failed: altered, or sealed for another space (another
    /// epoch, another database), or by someone without the key.
    #[error("does not authenticate: altered, or not this space's")]
    Unauthentic,
    /// It opened, but its plaintext breaks the format.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// What is wrong with a frame on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Ends before a field.
    #[error("truncated frame")]
    Truncated,
    /// Bytes after the last field.
    #[error("trailing bytes after the frame")]
    TrailingBytes,
    /// Over a limit.
    #[error("{bytes} bytes, over the limit")]
    TooLarge {
        /// The size.
        bytes: usize,
    },
    /// Another wire version.
    #[error(
        "wire version {found}, this build speaks {}",
        crate::BUFFER_FORMAT_VERSION
    )]
    Version {
        /// The version it claims.
        found: u8,
    },
    /// An unknown request kind or answer status.
    #[error("unknown kind {kind}")]
    Kind {
        /// The byte.
        kind: u8,
    },
    /// A count out of bounds.
    #[error("count {count} out of bounds")]
    Count {
        /// The count.
        count: usize,
    },
    /// A flag that is neither 0 nor 1.
    #[error("a flag that is neither 0 nor 1")]
    Flag,
}

/// An operation's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer address that does not parse or resolve.
    #[error("buffer address {url}: {reason}")]
    Url {
        /// The address as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// A store URL that does not open.
    #[error("buffer store {url}: {reason}")]
    StoreUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing the network or a file.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The buffer's answer does not decode.
    #[error("the buffer's answer: {0}")]
    Wire(#[from] WireError),
    /// The buffer took too long to answer.
    #[error("the buffer did not answer within {seconds} s")]
    Timeout {
        /// The limit.
        seconds: u64,
    },
    /// The buffer refused a request.
    #[error("the buffer refused: {reason} ({message})")]
    Refused {
        /// Why.
        reason: Refused,
        /// Its words.
        message: String,
    },
    /// The buffer answered a put with envelopes or the other way round.
    #[error("the buffer answered another request")]
    Unexpected,
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The database failed.
    #[error(transparent)]
    Engine(#[from] peers_engine::Error),
    /// The buffer state file (`DIR/buffer.json`) does not parse.
    #[error("{path}: {reason}")]
    State {
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// The buffer's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
