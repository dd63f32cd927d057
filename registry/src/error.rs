//! The errors of the key registry, on both sides. A client's errors about
//! what a registry served name what was proven wrong.

/// Why an entry may not follow a handle's chain (the server refuses to log
/// it; a client refuses a chain that contains it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The handle is claimed already.
    #[error("the handle is taken")]
    Taken,
    /// A rotation or revocation of a handle nobody has claimed.
    #[error("the handle is not claimed")]
    NotClaimed,
    /// A claim whose signature does not verify under the key it claims.
    #[error("the claim is not signed by the key it claims (bad signature or key mismatch)")]
    BadSignature,
    /// A rotation or revocation not signed by the handle's current key nor its recovery key.
    #[error("not signed by the handle's current key nor by its recovery key")]
    NotOwner,
    /// Signed by a recovery key the claim did not name.
    #[error("the handle's claim named no recovery key")]
    NoRecoveryKey,
    /// A rotation or revocation that does not follow the handle's latest entry.
    #[error("the entry does not follow the handle's latest entry (look it up again)")]
    Stale,
    /// Anything after a revocation.
    #[error("the handle is revoked, for good")]
    Revoked,
    /// More entries than a handle may have.
    #[error("the handle has as many entries as it may have")]
    TooManyEntries,
    /// An expiry in the past or too far ahead.
    #[error("the expiry must be in the future and at most two years ahead")]
    BadExpiry,
    /// An entry that breaks a structural rule (a claim with a previous
    /// entry, a revocation that changes discoverability, another handle).
    #[error("the entry breaks a rule of its kind")]
    Malformed,
}

impl Refusal {
    /// Its code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Refusal::Taken => 1,
            Refusal::NotClaimed => 2,
            Refusal::BadSignature => 3,
            Refusal::NotOwner => 4,
            Refusal::NoRecoveryKey => 5,
            Refusal::Stale => 6,
            Refusal::Revoked => 7,
            Refusal::TooManyEntries => 8,
            Refusal::BadExpiry => 9,
            Refusal::Malformed => 10,
        }
    }

    /// The refusal with this wire code.
    pub fn from_code(code: u8) -> Option<Refusal> {
        Some(match code {
            1 => Refusal::Taken,
            2 => Refusal::NotClaimed,
            3 => Refusal::BadSignature,
            4 => Refusal::NotOwner,
            5 => Refusal::NoRecoveryKey,
            6 => Refusal::Stale,
            7 => Refusal::Revoked,
            8 => Refusal::TooManyEntries,
            9 => Refusal::BadExpiry,
            10 => Refusal::Malformed,
            _ => return None,
        })
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A handle outside the allowed form.
    #[error("handle {0:?}: use 1 to 64 of a-z, 0-9, '.', '_' and '-'")]
    BadHandle(String),
    /// Entry bytes that do not decode.
    #[error("a registry entry that does not decode: {0}")]
    BadEntry(&'static str),
    /// The registry refused an entry.
    #[error("the registry refused the entry: {0}")]
    Refused(Refusal),
    /// The registry served a chain for the handle that breaks the rules.
    #[error("the registry served an invalid chain for {handle:?}: entry {position}: {refusal}")]
    BadChain {
        /// The handle.
        handle: String,
        /// Which entry of the chain (0: the claim).
        position: usize,
        /// The rule it breaks.
        refusal: Refusal,
    },
    /// No such handle, or one this client may not resolve.
    #[error("no handle {0:?} in this registry (or it is private: give one of its keys with --key)")]
    NotFound(String),
    /// Too many lookups from this address found nothing lately.
    #[error(
        "too many lookups of unknown handles from this address: try again in {retry_after_secs} s"
    )]
    Limited {
        /// Seconds until lookups are answered again.
        retry_after_secs: u64,
    },
    /// The handle is revoked.
    #[error("the handle {0:?} is revoked")]
    Revoked(String),
    /// The handle expired.
    #[error(
        "the handle {handle:?} expired at {expires} (Unix seconds): its owner can renew it with `peers registry rotate`"
    )]
    Expired {
        /// The handle.
        handle: String,
        /// When.
        expires: u64,
    },
    /// A checkpoint (signed note) that does not parse.
    #[error("a registry checkpoint that does not parse: {0}")]
    BadCheckpoint(&'static str),
    /// A checkpoint without a valid signature by the operator's key.
    #[error("the checkpoint is not signed by the registry's key ({origin})")]
    CheckpointSignature {
        /// The log's name.
        origin: String,
    },
    /// The registry at an address now signs with another key than the one
    /// this client pinned.
    #[error(
        "the registry at {address} signs with {offered}, not the key this client pinned ({pinned}); if the operator really changed keys, remove {address} from {state}"
    )]
    OperatorKeyChanged {
        /// The address.
        address: String,
        /// The pinned verifier key.
        pinned: String,
        /// The one it offered.
        offered: String,
        /// The state file.
        state: String,
    },
    /// The log is shorter than a checkpoint this client saw before: the
    /// operator rolled it back or serves another view.
    #[error(
        "the registry's log has {offered} entries but it showed this client {seen} before: it dropped entries or serves a split view"
    )]
    Rollback {
        /// The size seen before.
        seen: u64,
        /// The size offered now.
        offered: u64,
    },
    /// Two signed checkpoints of the same size with different roots: a fork,
    /// proven by the operator's own signatures.
    #[error(
        "the registry signed two different logs of {size} entries (roots {seen} and {offered}): it forked its log"
    )]
    Fork {
        /// The size.
        size: u64,
        /// The root seen before (hex).
        seen: String,
        /// The root offered now (hex).
        offered: String,
    },
    /// A consistency proof that does not verify: the newer log does not
    /// extend the older one.
    #[error(
        "the registry's log of {new} entries does not extend the log of {old} entries it showed before: it rewrote history or serves a split view"
    )]
    Inconsistent {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
    /// The registry cannot prove that a checkpoint another party was shown
    /// extends (or is extended by) its own log.
    #[error(
        "the registry does not prove that its log extends from {old} to {new} entries, which another party was shown: it serves a split view"
    )]
    Unproven {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
    /// An inclusion proof that does not verify.
    #[error(
        "entry {index} is not in the registry's log of {size} entries (its inclusion proof fails)"
    )]
    NotIncluded {
        /// The entry's index.
        index: u64,
        /// The log's size.
        size: u64,
    },
    /// A lookup that no longer shows an entry this client saw for the handle.
    #[error(
        "the registry no longer shows entry {index} of {handle:?}, which it showed this client before: it hides or rewrote the handle's history"
    )]
    HandleRollback {
        /// The handle.
        handle: String,
        /// The entry's index.
        index: u64,
    },
    /// A frame or message that breaks the protocol (either side).
    #[error("registry protocol: {0}")]
    Protocol(&'static str),
    /// The server answered with an error code.
    #[error("the registry refused: {0}")]
    Server(&'static str),
    /// The client's state file.
    #[error("registry state {path}: {what}")]
    State {
        /// The file.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// The server's store.
    #[error("registry store: {0}")]
    Store(#[from] rocksdb::Error),
    /// A stored record that does not decode or replay.
    #[error("registry store: a damaged record ({0})")]
    Corrupt(&'static str),
    /// The operator's key file.
    #[error("the registry's key: {0}")]
    OperatorKey(#[from] peers_engine::Error),
    /// The network.
    #[error("registry connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not answer in time.
    #[error("the registry did not answer within {0} s")]
    Timeout(u64),
}

impl From<peers_keys::Error> for Error {
    /// The shared framing (peers-keys' wire) reports these.
    fn from(error: peers_keys::Error) -> Error {
        match error {
            peers_keys::Error::Io(error) => Error::Io(error),
            peers_keys::Error::Protocol(what) => Error::Protocol(what),
            peers_keys::Error::Timeout(secs) => Error::Timeout(secs),
            _ => Error::Protocol("an unexpected framing error"),
        }
    }
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
