//! The backup service's errors: one enum, with the object a failure is
//! about named in it, so an operator knows what the store did wrong.

use std::path::PathBuf;

use peers_engine::{Author, DatabaseId, StateHash};

/// What is wrong with one object the store served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectFault {
    /// The store does not have it.
    #[error("missing from the store")]
    Missing,
    /// Larger than any object of its kind may be (not downloaded).
    #[error("{bytes} bytes, over the limit of {max} for its kind")]
    TooLarge {
        /// Its size as the store reported it.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Shorter than its header and tag.
    #[error("truncated ({bytes} bytes)")]
    Truncated {
        /// Its size.
        bytes: u64,
    },
    /// Does not start with the backup object magic.
    #[error("not a peers backup object (bad magic)")]
    BadMagic,
    /// Another format version.
    #[error(
        "backup format version {found}, this build reads {}",
        crate::BACKUP_FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The version it claims.
        found: u32,
    },
    /// Authentication failed: its bytes were altered, it was moved from
    /// another name (a swap, or an old object served under a newer name), or
    /// it belongs to another database's backup.
    #[error(
        "does not authenticate: altered, moved from another name (swapped or rolled back), or not this database's"
    )]
    Unauthentic,
    /// It opened, but its content breaks the format.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// It opened, but it is not the size the manifest names.
    #[error("{found} bytes where the manifest names {expected}")]
    LengthMismatch {
        /// What the manifest names.
        expected: u64,
        /// What the object holds.
        found: u64,
    },
    /// It opened, but its hash is not the one the manifest names.
    #[error("its content is not what the manifest names (blake3 mismatch)")]
    HashMismatch,
    /// A manifest whose signature does not verify under its device key.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// A manifest that opened under a name that is not its own (device, run).
    #[error("holds run {run} of device {device}, which is stored under another name")]
    Misplaced {
        /// The device it names.
        device: Author,
        /// The run it names.
        run: u64,
    },
}

/// An error of the backup service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// One object the store served (or did not) is wrong.
    #[error("backup object {name}: {fault}")]
    Object {
        /// The object's name under the store's prefix.
        name: String,
        /// What is wrong with it.
        fault: ObjectFault,
    },
    /// The object store failed (network, permissions, a missing bucket).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// The backup URL is not one this build reads.
    #[error("backup URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A local file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The database.
    #[error(transparent)]
    Engine(#[from] peers_engine::Error),
    /// The replica was trimmed (FORMAT.md "Trimming"): its log no longer
    /// holds the history below its checkpoint, and backups copy the log
    /// only, so a restore could not rebuild it. Not supported yet.
    #[error(
        "{} is trimmed at checkpoint {checkpoint}: backups copy the log, which no longer holds the history below it, so a trimmed replica cannot be backed up yet (back up a replica that is not trimmed)",
        dir.display()
    )]
    Trimmed {
        /// The database directory.
        dir: PathBuf,
        /// The checkpoint it was trimmed at.
        checkpoint: peers_engine::ChangeHash,
    },
    /// This replica has no backup configured.
    #[error("no backup is configured for {}: run `peers backup init --to URL` first", dir.display())]
    NotConfigured {
        /// The database directory.
        dir: PathBuf,
    },
    /// This replica already has a backup configured.
    #[error("{} already backs up to {url}: remove {} to configure another place", dir.display(), file.display())]
    AlreadyConfigured {
        /// The database directory.
        dir: PathBuf,
        /// Its configuration file.
        file: PathBuf,
        /// Where it backs up.
        url: String,
    },
    /// The backup configuration file cannot be read.
    #[error("{}: not a backup configuration: {reason}", path.display())]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store already holds a backup key, and no recovery key was given
    /// to open it.
    #[error(
        "the store already holds a backup ({keys} key files): pass the recovery key printed by the first `peers backup init` (--recovery-key or PEERS_RECOVERY_KEY) to add this device, or back up under another prefix"
    )]
    NeedRecoveryKey {
        /// Key files found.
        keys: usize,
    },
    /// No key file opens with the key given.
    #[error(
        "no key file in the store opens with this key ({keys} tried): is it the recovery key of this backup?"
    )]
    NoKey {
        /// Key files tried.
        keys: usize,
    },
    /// A recovery key that does not parse.
    #[error("not a recovery key (expected AGE-SECRET-KEY-1…): {reason}")]
    BadRecoveryKey {
        /// What the parser said.
        reason: String,
    },
    /// The store holds another database's backup.
    #[error(
        "the store holds a backup of database {found}, not of {expected}: back up under another prefix"
    )]
    OtherDatabase {
        /// The database the store's key names.
        found: DatabaseId,
        /// Ours.
        expected: DatabaseId,
    },
    /// The store holds no manifest (of the device asked for).
    #[error("the store holds no backup{}", device.map(|device| format!(" of device {device}")).unwrap_or_default())]
    NoBackup {
        /// The device asked for, if any.
        device: Option<Author>,
    },
    /// The newest manifest is older than it must be: the store lost or
    /// rolled back newer ones.
    #[error(
        "rollback: the newest manifest of device {device} in the store is run {found}, but run {expected} or later was written (the store lost or hid newer manifests)"
    )]
    Rollback {
        /// The device.
        device: Author,
        /// The newest run found.
        found: u64,
        /// The run known to exist.
        expected: u64,
    },
    /// The store already holds the run this device was about to write.
    #[error(
        "the store already holds run {run} of this device ({name}): another copy of this replica backs up here, or the last run could not record itself in backup.json; to go on from the store's newest run, remove backup.json and run `peers backup init --to URL` with the recovery key"
    )]
    RunExists {
        /// The run.
        run: u64,
        /// Its manifest's name.
        name: String,
    },
    /// A segment larger than a backup takes.
    #[error("log segment {base} is {bytes} bytes, over the backup limit of {max}")]
    SegmentTooLarge {
        /// Its base.
        base: u64,
        /// Its size.
        bytes: u64,
        /// [`crate::SEGMENT_BYTES_MAX`].
        max: u64,
    },
    /// The restore target exists.
    #[error("{} already exists: restore makes a new directory", path.display())]
    TargetExists {
        /// The path.
        path: PathBuf,
    },
    /// The restored replica does not verify.
    #[error(
        "the restored replica does not verify (rebuilt state {rebuilt}, live {live}): nothing was restored"
    )]
    VerifyFailed {
        /// State hash of a rebuild with every signature checked.
        rebuilt: StateHash,
        /// State hash of the view.
        live: StateHash,
    },
    /// The store lists more objects than a backup may hold.
    #[error("the store lists over {max} objects under {dir}/: refusing to read them all")]
    TooManyObjects {
        /// The folder.
        dir: String,
        /// The limit.
        max: usize,
    },
}

impl Error {
    pub(crate) fn object(name: impl Into<String>, fault: ObjectFault) -> Error {
        Error::Object {
            name: name.into(),
            fault,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// The backup service's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
