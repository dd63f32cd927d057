//! The errors of the managed-key service, on both sides.

/// What went wrong. A failed login says only [`Error::LoginFailed`], whether
/// the user exists or not.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user does not exist or the password (or recovery code) is wrong:
    /// the server cannot tell which, and does not say.
    #[error("login failed: wrong user name or password")]
    LoginFailed,
    /// Too many attempts for this account or from this address.
    #[error("too many login attempts: try again in {retry_after_secs} s")]
    Limited {
        /// Seconds until the next attempt is allowed.
        retry_after_secs: u32,
    },
    /// Registration of a name that is already registered.
    #[error("the user name {0:?} is taken")]
    Taken(String),
    /// A user name outside the allowed form.
    #[error("user name {0:?}: use 1 to 64 of a-z, 0-9, '.', '_' and '-'")]
    BadUser(String),
    /// A password below the minimum length.
    #[error("the password is too short: at least {0} characters")]
    WeakPassword(usize),
    /// A recovery code that is not one (wrong length or letters).
    #[error("not a recovery code: 8 groups of 4 letters and digits, e.g. ABCD-EFGH-…")]
    BadRecoveryCode,
    /// A frame or message that breaks the protocol (either side).
    #[error("protocol: {0}")]
    Protocol(&'static str),
    /// The server answered with an error code this build does not know, or
    /// one it reports for a request it refused.
    #[error("the key server refused: {0}")]
    Refused(&'static str),
    /// An answer whose session MAC does not verify: altered or not from the
    /// server this session logged in to.
    #[error("an answer from the key server does not authenticate (altered in transit?)")]
    Unauthenticated,
    /// An envelope that does not open under the key the login produced.
    #[error("the key envelope does not open: the server altered or swapped it")]
    EnvelopeDoesNotOpen,
    /// An envelope whose layout is wrong.
    #[error("envelope: {0}")]
    BadEnvelope(&'static str),
    /// OPAQUE failed on the client's own side (its random source, its
    /// key-stretching function).
    #[error("OPAQUE: {0}")]
    Opaque(String),
    /// The server's OPAQUE answer does not decode or is not a valid
    /// message (an invalid group element, a reflected value): altered on
    /// the way, or not from a peers key server. An answer that decodes but
    /// does not verify fails as a wrong password does ([`Error::LoginFailed`]):
    /// the password is what checks it.
    #[error(
        "the key server's {what} is not a valid OPAQUE message (altered, or not a peers key server): {reason}"
    )]
    BadAnswer {
        /// Which answer.
        what: &'static str,
        /// What OPAQUE said.
        reason: String,
    },
    /// The server's store.
    #[error("key store: {0}")]
    Store(#[from] rocksdb::Error),
    /// A stored record that does not decode.
    #[error("key store: a damaged record ({0})")]
    Corrupt(&'static str),
    /// The network.
    #[error("key server connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not answer in time.
    #[error("the key server did not answer within {0} s")]
    Timeout(u64),
}

impl Error {
    /// The error for an OPAQUE failure on the server's `what`: a wrong
    /// password (or an answer that does not verify) is [`Error::LoginFailed`],
    /// anything else [`Error::BadAnswer`].
    pub(crate) fn answer(
        what: &'static str,
    ) -> impl FnOnce(opaque_ke::errors::ProtocolError) -> Error {
        move |error| match error {
            opaque_ke::errors::ProtocolError::InvalidLoginError => Error::LoginFailed,
            other => Error::BadAnswer {
                what,
                // Debug: its Display says only "Internal error encountered".
                reason: format!("{other:?}"),
            },
        }
    }
}

impl From<opaque_ke::errors::ProtocolError> for Error {
    fn from(error: opaque_ke::errors::ProtocolError) -> Error {
        match error {
            opaque_ke::errors::ProtocolError::InvalidLoginError => Error::LoginFailed,
            other => Error::Opaque(other.to_string()),
        }
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
